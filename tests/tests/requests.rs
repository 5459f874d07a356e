//! Publish requests (发布申请) up the tree: a village clerk's emergency goes
//! to the town's approval queue as a signed request with its audio; the
//! town approves and issues it (it plays in that village only) or rejects
//! it (it plays nowhere); the village sees the outcome. Both sides restart
//! mid-way and the request is neither lost nor issued twice.

use std::time::Duration;

use certs::pki::Layout;
use serde_json::{json, Value};
use testbed::{LocalDistrict, LocalOptions};
use tests::*;

async fn get(http: &reqwest::Client, url: String, token: &str) -> Value {
    answer(http.get(url).bearer_auth(token)).await.1
}

async fn post(http: &reqwest::Client, url: String, token: &str, body: Value) -> (u16, Value) {
    answer(http.post(url).bearer_auth(token).json(&body)).await
}

fn base(p: &platform::PlatformHandle) -> String {
    format!("http://{}", p.http_addr.unwrap())
}

/// The town's draft filed for the village's request `request_id`, once it is there.
async fn filed(http: &reqwest::Client, town: &str, token: &str, request_id: u64) -> Vec<Value> {
    let all = get(http, format!("{town}/api/drafts?limit=1000"), token).await;
    all.as_array()
        .map(|a| {
            a.iter()
                .filter(|d| d["origin"]["request_id"].as_u64() == Some(request_id))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_for<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_village_request_is_approved_above_plays_there_only_and_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = LocalOptions::wav(
        Layout {
            towns: 1,
            villages: 2,
            terminals: 2,
        },
        dir.path(),
    );
    opts.configure = Box::new(|name, c| {
        if name.starts_with("village") {
            c.review.emergency.approver = platform::policy::Approver::Above;
        }
    });
    let mut district = LocalDistrict::start(opts).await.unwrap();
    assert_eq!(
        district.wait_connected(Duration::from_secs(20)).await,
        district.terminals.len()
    );
    let c = district.creds.clone();
    let http = reqwest::Client::new();
    let clip_path = dir.path().join("alert.wav");
    clip("alert-zh.wav", 3.0, &clip_path);
    let village_area = district.villages[0].area.to_string();
    let form = |title: &str| {
        vec![
            ("areas", village_area.clone()),
            ("class", "emergency".to_string()),
            ("severity", "2".to_string()),
            ("title", title.to_string()),
            ("submit", "true".to_string()),
        ]
    };
    let new_request = |title: &'static str, village: String| {
        let http = http.clone();
        let token = c.drafter.token.clone();
        let clip_path = clip_path.clone();
        let fields = form(title);
        async move {
            let f = testbed::client::form(&clip_path, &fields).unwrap();
            let r = http
                .post(format!("{village}/api/drafts"))
                .bearer_auth(&token)
                .multipart(f)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            let d: Value = r.json().await.unwrap();
            assert_eq!(d["state"], "requested", "{d}");
            (
                d["id"].as_u64().unwrap(),
                d["request"]["request_id"].as_u64().unwrap(),
            )
        }
    };

    // 1. Requested in the village, filed in the town's queue with where it came from.
    let village = base(&district.villages[0].platform);
    let town = base(&district.towns[0]);
    let (vdraft, rid) = new_request("山洪紧急转移（申请）", village.clone()).await;
    assert!(
        wait_for(Duration::from_secs(10), || async {
            filed(&http, &town, &c.approver.token, rid).await.len() == 1
        })
        .await,
        "the town filed the request"
    );
    let tdraft = filed(&http, &town, &c.approver.token, rid).await.remove(0);
    assert_eq!(tdraft["state"], "submitted", "{tdraft}");
    let village_name = district.villages[0]
        .platform
        .relay
        .identity
        .cert()
        .body()
        .name
        .clone();
    assert_eq!(
        tdraft["origin"]["platform_name"],
        village_name.as_str(),
        "{tdraft}"
    );
    assert_eq!(tdraft["origin"]["account"], "drafter");
    assert_eq!(
        tdraft["audio"]["duration_ms"].as_i64().unwrap() / 100,
        30,
        "{tdraft}"
    );
    // The village cannot approve its own request: it has gone up.
    let (status, _) = post(
        &http,
        format!("{village}/api/drafts/{vdraft}/approve"),
        &c.approver.token,
        json!({}),
    )
    .await;
    assert_eq!(status, 409);

    // 2. Approved above: the town signs and issues it; the village sees it.
    let tid = tdraft["id"].as_u64().unwrap();
    let (status, d) = post(
        &http,
        format!("{town}/api/drafts/{tid}/approve"),
        &c.approver.token,
        json!({"comment": "同意，立即播发"}),
    )
    .await;
    assert_eq!(
        (status, d["state"].as_str()),
        (200, Some("published")),
        "{d}"
    );
    let broadcast: protocol::BroadcastId = d["broadcast"].as_str().unwrap().parse().unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || async {
            let v = get(
                &http,
                format!("{village}/api/drafts/{vdraft}"),
                &c.drafter.token,
            )
            .await;
            v["state"] == "published" && v["broadcast"] == broadcast.to_string()
        })
        .await,
        "the village sees the approval"
    );
    let played = eventually(Duration::from_secs(20), || {
        district
            .terminals
            .iter()
            .filter(|t| t.village == 0)
            .all(|t| {
                t.handle()
                    .snapshot()
                    .records
                    .get(&broadcast)
                    .is_some_and(|r| r.finished)
            })
    })
    .await;
    assert!(played, "the village's terminals played it");
    for t in district.terminals.iter().filter(|t| t.village == 1) {
        assert!(
            !t.handle().snapshot().records.contains_key(&broadcast),
            "the other village got it"
        );
    }
    let header = district.towns[0].relay.broadcasts.get(broadcast).unwrap();
    assert_eq!(
        header.header.signer().serial(),
        district.towns[0].relay.identity.cert().serial(),
        "signed by the town"
    );

    // 3. Rejected above: it plays nowhere, and the village reads why.
    let before = district.towns[0].relay.broadcasts.all().len();
    let (vdraft2, rid2) = new_request("越级申请（应退回）", village.clone()).await;
    assert!(
        wait_for(Duration::from_secs(10), || async {
            filed(&http, &town, &c.approver.token, rid2).await.len() == 1
        })
        .await
    );
    let tid2 = filed(&http, &town, &c.approver.token, rid2).await[0]["id"]
        .as_u64()
        .unwrap();
    let (status, _) = post(
        &http,
        format!("{town}/api/drafts/{tid2}/reject"),
        &c.approver.token,
        json!({"comment": "内容需核实"}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        wait_for(Duration::from_secs(10), || async {
            let v = get(
                &http,
                format!("{village}/api/drafts/{vdraft2}"),
                &c.drafter.token,
            )
            .await;
            v["state"] == "rejected" && v["rejection"]["comment"] == "内容需核实"
        })
        .await,
        "the village sees the rejection"
    );
    assert_eq!(
        district.towns[0].relay.broadcasts.all().len(),
        before,
        "nothing issued"
    );

    // 4. Both sides restart mid-way: the village right after requesting,
    //    the town after filing; approved once, issued once.
    let (vdraft3, rid3) = new_request("重启期间的申请", village.clone()).await;
    district.restart_village(0).await.unwrap();
    let village = base(&district.villages[0].platform);
    assert!(
        wait_for(Duration::from_secs(15), || async {
            filed(&http, &town, &c.approver.token, rid3).await.len() == 1
        })
        .await,
        "filed despite the village's restart"
    );
    district.restart_town(0).await.unwrap();
    let town = base(&district.towns[0]);
    // The village reconnects and sends it again: still one draft above.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let drafts = filed(&http, &town, &c.approver.token, rid3).await;
    assert_eq!(drafts.len(), 1, "filed once: {drafts:?}");
    let tid3 = drafts[0]["id"].as_u64().unwrap();
    let (status, d) = post(
        &http,
        format!("{town}/api/drafts/{tid3}/approve"),
        &c.approver.token,
        json!({}),
    )
    .await;
    assert_eq!(
        (status, d["state"].as_str()),
        (200, Some("published")),
        "{d}"
    );
    let b3 = d["broadcast"].as_str().unwrap().to_string();
    assert!(
        wait_for(Duration::from_secs(15), || async {
            let v = get(
                &http,
                format!("{village}/api/drafts/{vdraft3}"),
                &c.drafter.token,
            )
            .await;
            v["state"] == "published" && v["broadcast"] == b3.as_str()
        })
        .await,
        "the village sees the approval after both restarts"
    );
    district.restart_village(0).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let drafts = filed(&http, &town, &c.approver.token, rid3).await;
    assert_eq!(drafts.len(), 1);
    let rows = get(&http, format!("{town}/api/broadcasts"), &c.approver.token).await;
    let from_request = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["draft"].as_u64() == Some(tid3))
        .count();
    assert_eq!(from_request, 1, "issued once: {rows}");
    assert!(
        district.villages[0]
            .platform
            .relay
            .store()
            .outbox()
            .unwrap()
            .is_empty(),
        "nothing left to send"
    );
    // 5. The town is down and the village fails over to the district: a
    //    request made now waits for the town, and goes to it alone.
    district.kill_town(0);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (vdraft4, rid4) = new_request("镇平台离线时的申请", village.clone()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    district.restart_town(0).await.unwrap();
    let town = base(&district.towns[0]);
    assert!(
        wait_for(Duration::from_secs(30), || async {
            filed(&http, &town, &c.approver.token, rid4).await.len() == 1
        })
        .await,
        "the town filed the request made while it was down"
    );
    let v = get(
        &http,
        format!("{village}/api/drafts/{vdraft4}"),
        &c.drafter.token,
    )
    .await;
    assert_eq!(v["state"], "requested", "{v}");
    // The district, the village's failover parent, never got a request to
    // approve: only the tier directly above may.
    let at_district = district.district.workflow.drafts.list(None, 1000).unwrap();
    assert!(
        at_district.iter().all(|d| d.origin.is_none()),
        "the district filed a request"
    );
    // Both trails say what happened.
    let town_trail = district.towns[0].workflow.audit.latest(200).unwrap();
    assert_eq!(
        town_trail
            .iter()
            .filter(|e| e.action == "request.receive" && e.outcome == platform::audit::Outcome::Ok)
            .count(),
        4
    );
    let village_trail = district.villages[0]
        .platform
        .workflow
        .audit
        .latest(200)
        .unwrap();
    for action in ["request.send", "request.approved", "request.rejected"] {
        assert!(
            village_trail.iter().any(|e| e.action == action),
            "no {action} in the village's trail"
        );
    }
}
