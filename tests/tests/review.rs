//! People on the platform, over HTTP against running platforms: two-person
//! review of an emergency (and the alert then plays, PCM compared), the
//! prepared cancel, local silence in one village seen at the district, the
//! audit trail of it all (verified, and broken by one changed byte).

use std::time::Duration;

use certs::pki::Layout;
use protocol::BroadcastId;
use serde_json::{json, Value};
use tests::*;

/// A request as `token`'s account; (status, JSON answer).
async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = http.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    answer(r).await
}

async fn draft(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    audio: &std::path::Path,
    fields: &[(&str, String)],
) -> (u16, Value) {
    let form = testbed::client::form(audio, fields).unwrap();
    answer(
        http.post(format!("{base}/api/drafts"))
            .bearer_auth(token)
            .multipart(form),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emergency_needs_a_second_person_then_plays_and_the_trail_shows_it_all() {
    let dir = tempfile::tempdir().unwrap();
    let district = small_district(
        dir.path(),
        Layout {
            towns: 1,
            villages: 1,
            terminals: 2,
        },
    )
    .await;
    let c = &district.creds;
    let base = format!("http://{}", district.district.http_addr.unwrap());
    let http = reqwest::Client::new();
    let post = reqwest::Method::POST;
    let clip_path = dir.path().join("alert.wav");
    clip("alert-zh.wav", 4.0, &clip_path);
    let county = district.district.relay.scope[0].to_string();
    let fields = |title: &str| {
        vec![
            ("areas", county.clone()),
            ("class", "emergency".to_string()),
            ("severity", "1".to_string()),
            ("title", title.to_string()),
        ]
    };

    // The drafter drafts and submits; alone, it cannot publish.
    let (status, d) = draft(
        &http,
        &base,
        &c.drafter.token,
        &clip_path,
        &fields("防汛紧急转移"),
    )
    .await;
    assert_eq!(status, 201, "{d}");
    assert_eq!(d["state"], "draft");
    let id = d["id"].as_u64().unwrap();
    let (status, d) = call(
        &http,
        post.clone(),
        format!("{base}/api/drafts/{id}/submit"),
        &c.drafter.token,
        None,
    )
    .await;
    assert_eq!(
        (status, d["state"].as_str()),
        (200, Some("submitted")),
        "{d}"
    );
    let (status, e) = call(
        &http,
        post.clone(),
        format!("{base}/api/drafts/{id}/approve"),
        &c.drafter.token,
        None,
    )
    .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (403, Some("forbidden")),
        "{e}"
    );
    assert!(
        district.district.relay.broadcasts.all().is_empty(),
        "nothing signed"
    );

    // An approver who drafted may not approve their own draft.
    let (status, a) = call(
        &http,
        post.clone(),
        format!("{base}/api/accounts"),
        &c.admin.token,
        Some(json!({"name": "chen", "display_name": "陈", "roles": ["drafter", "approver"], "password": "chen's long password"})),
    )
    .await;
    assert_eq!(status, 201, "{a}");
    let (status, t) = call(
        &http,
        post.clone(),
        format!("{base}/api/accounts/chen/tokens"),
        &c.admin.token,
        Some(json!({"label": "test"})),
    )
    .await;
    assert_eq!(status, 201, "{t}");
    let chen = t["token"].as_str().unwrap().to_string();
    let mut own = fields("自审测试");
    own.push(("submit", "true".into()));
    let (status, d2) = draft(&http, &base, &chen, &clip_path, &own).await;
    assert_eq!(
        (status, d2["state"].as_str()),
        (201, Some("submitted")),
        "{d2}"
    );
    let own_id = d2["id"].as_u64().unwrap();
    let (status, e) = call(
        &http,
        post.clone(),
        format!("{base}/api/drafts/{own_id}/approve"),
        &chen,
        None,
    )
    .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (403, Some("own_draft")),
        "{e}"
    );
    // chen may approve another's draft... but not edit it and then approve.
    let (status, e) = call(
        &http,
        post.clone(),
        format!("{base}/api/drafts/{own_id}/reject"),
        &c.approver.token,
        Some(json!({"comment": ""})),
    )
    .await;
    assert_eq!((status, e["field"].as_str()), (400, Some("comment")), "{e}");
    let (status, r) = call(
        &http,
        post.clone(),
        format!("{base}/api/drafts/{own_id}/reject"),
        &c.approver.token,
        Some(json!({"comment": "标题不规范"})),
    )
    .await;
    assert_eq!(
        (status, r["state"].as_str()),
        (200, Some("rejected")),
        "{r}"
    );
    assert_eq!(r["rejection"]["comment"], "标题不规范");

    // The reviewer hears exactly what will be signed.
    let wav = http
        .get(format!("{base}/api/drafts/{id}/audio"))
        .bearer_auth(&c.approver.token)
        .send()
        .await
        .unwrap();
    assert_eq!(wav.status(), 200);
    let preview_path = dir.path().join("preview.wav");
    std::fs::write(&preview_path, wav.bytes().await.unwrap()).unwrap();
    let reference = normalised(&clip_path);
    let preview = read_wav(&preview_path);
    let c_preview = correlation(&reference, &preview, 100);
    assert!(c_preview > 0.999, "preview correlation {c_preview}");

    // A different approver approves: signed, published, played everywhere.
    let (status, d) = call(
        &http,
        post.clone(),
        format!("{base}/api/drafts/{id}/approve"),
        &c.approver.token,
        Some(json!({"comment": "同意发布"})),
    )
    .await;
    assert_eq!(
        (status, d["state"].as_str()),
        (200, Some("published")),
        "{d}"
    );
    let broadcast: BroadcastId = d["broadcast"].as_str().unwrap().parse().unwrap();
    let finished = district
        .all_finished(broadcast, Duration::from_secs(30))
        .await;
    assert!(finished, "every terminal played the approved alert");

    // A scheduled, approved draft that is edited goes back to review.
    let mut later = fields("定时演练通知");
    later[1].1 = "drill".into();
    later.push(("start_at_ms", (platform::now_ms() + 3_600_000).to_string()));
    later.push(("submit", "true".into()));
    let (status, s) = draft(&http, &base, &c.drafter.token, &clip_path, &later).await;
    assert_eq!(status, 201, "{s}");
    assert_eq!(s["drill"], true, "a drill says so: {s}");
    let sid = s["id"].as_u64().unwrap();
    let (status, s) = call(
        &http,
        post.clone(),
        format!("{base}/api/drafts/{sid}/approve"),
        &c.approver.token,
        None,
    )
    .await;
    assert_eq!(
        (status, s["state"].as_str()),
        (200, Some("approved")),
        "{s}"
    );
    let form = testbed::client::form(&clip_path, &later[..4]).unwrap();
    let s: Value = http
        .put(format!("{base}/api/drafts/{sid}"))
        .bearer_auth(&c.drafter.token)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s["state"], "submitted", "{s}");
    assert_eq!(s["approvals"], json!([]), "{s}");

    // The prepared cancel: its drafter stops it; a second cancel says so.
    let (status, x) = call(
        &http,
        post.clone(),
        format!("{base}/api/broadcasts/{broadcast}/cancel"),
        &c.drafter.token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{x}");
    let (status, x) = call(
        &http,
        post.clone(),
        format!("{base}/api/broadcasts/{broadcast}/cancel"),
        &c.drafter.token,
        None,
    )
    .await;
    assert_eq!(status, 409, "{x}");
    assert!(
        x["message"].as_str().unwrap().contains("already cancelled"),
        "{x}"
    );
    // The maintainer is neither its author nor an approver.
    let (status, _) = call(
        &http,
        post.clone(),
        format!("{base}/api/broadcasts/{broadcast}/cancel"),
        &c.maintainer.token,
        None,
    )
    .await;
    assert_eq!(status, 403);

    // The audit trail holds all of it, refusals included...
    let (status, entries) = call(
        &http,
        reqwest::Method::GET,
        format!("{base}/api/audit?from=1&limit=5000"),
        &c.auditor.token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{entries}");
    let has = |action: &str, actor: &str, outcome: &str| {
        entries
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == action && e["actor"] == actor && e["outcome"] == outcome)
    };
    for (action, actor, outcome) in [
        ("draft.create", "drafter", "ok"),
        ("draft.submit", "drafter", "ok"),
        ("draft.approve", "drafter", "refused"),
        ("account.create", "admin", "ok"),
        ("token.create", "admin", "ok"),
        ("draft.approve", "chen", "refused"),
        ("draft.reject", "approver", "refused"),
        ("draft.reject", "approver", "ok"),
        ("draft.approve", "approver", "ok"),
        ("broadcast.publish", "approver", "ok"),
        ("draft.edit", "drafter", "ok"),
        ("broadcast.cancel", "drafter", "ok"),
        ("broadcast.cancel", "drafter", "refused"),
        ("broadcast.cancel", "maintainer", "refused"),
    ] {
        assert!(
            has(action, actor, outcome),
            "no {action} by {actor} ({outcome}) in {entries}"
        );
    }
    // Nobody else reads it.
    let (status, _) = call(
        &http,
        reqwest::Method::GET,
        format!("{base}/api/audit"),
        &c.drafter.token,
        None,
    )
    .await;
    assert_eq!(status, 403);
    // ...and its export verifies, and fails at the entry with one changed byte.
    let export = http
        .get(format!("{base}/api/audit/export"))
        .bearer_auth(&c.auditor.token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    district
        .district
        .workflow
        .audit
        .seal(platform::now_ms())
        .unwrap();
    let key = *district.district.relay.identity.cert().public_key();
    let keys = |_: &str| Some(key);
    let lines: Vec<Vec<u8>> = export
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let ok = platform::audit::verify(lines.clone(), &keys).expect("the export verifies");
    assert_eq!(ok.entries as usize, lines.len());
    let mut bad = lines.clone();
    let victim = bad.len() / 2;
    let pos = bad[victim]
        .windows(9)
        .position(|w| w == b"\"actor\":\"")
        .unwrap()
        + 9;
    bad[victim][pos] ^= 0x01;
    let broken = platform::audit::verify(bad, &keys).unwrap_err();
    assert_eq!(broken.line as usize, victim + 1, "{broken}");
    let csv = http
        .get(format!("{base}/api/audit/export?format=csv"))
        .bearer_auth(&c.auditor.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        csv.contains("标题不规范") && csv.contains("+08:00"),
        "{csv}"
    );

    // The terminals played what the approver heard.
    let mut district = district;
    let played_wavs = played_wavs(&mut district).await;
    for (p, played) in played_wavs {
        let c = correlation(&preview, &played, 2000);
        assert!(c > 0.9, "{}: correlation {c}", p.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_village_silences_an_alert_from_above_and_the_district_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let district = small_district(
        dir.path(),
        Layout {
            towns: 1,
            villages: 2,
            terminals: 2,
        },
    )
    .await;
    let c = &district.creds;
    let http = reqwest::Client::new();
    let clip_path = dir.path().join("alert.wav");
    clip("alert-zh.wav", 12.0, &clip_path);
    let county = district.district.relay.scope[0].to_string();
    let id = district
        .district_api()
        .issue(
            &clip_path,
            &[
                ("areas", county),
                ("class", "emergency".into()),
                ("severity", "1".into()),
                ("title", "化工泄漏".into()),
            ],
        )
        .await
        .unwrap();
    let playing = eventually(Duration::from_secs(20), || {
        district
            .terminals
            .iter()
            .all(|t| t.handle().snapshot().playing == Some(id))
    })
    .await;
    assert!(playing, "every terminal plays it");
    let village = &district.villages[0];
    let vbase = format!("http://{}", village.platform.http_addr.unwrap());
    let url = format!("{vbase}/api/broadcasts/{id}/silence");
    // A maintainer may not silence an emergency from above; nor without a reason.
    let (status, e) = call(
        &http,
        reqwest::Method::POST,
        url.clone(),
        &c.maintainer.token,
        Some(json!({"reason": "误播"})),
    )
    .await;
    assert_eq!(status, 403, "{e}");
    let (status, e) = call(
        &http,
        reqwest::Method::POST,
        url.clone(),
        &c.approver.token,
        Some(json!({})),
    )
    .await;
    assert_eq!((status, e["field"].as_str()), (400, Some("reason")), "{e}");
    let (status, ok) = call(
        &http,
        reqwest::Method::POST,
        url.clone(),
        &c.approver.token,
        Some(json!({"reason": "深夜误播，村内静音"})),
    )
    .await;
    assert_eq!(status, 200, "{ok}");

    let here: Vec<_> = district
        .terminals
        .iter()
        .filter(|t| t.village == 0)
        .collect();
    let there: Vec<_> = district
        .terminals
        .iter()
        .filter(|t| t.village == 1)
        .collect();
    let stopped = eventually(Duration::from_secs(10), || {
        here.iter().all(|t| {
            let s = t.handle().snapshot();
            s.playing != Some(id)
                && s.records
                    .get(&id)
                    .is_some_and(|r| r.silenced && !r.finished)
        })
    })
    .await;
    assert!(stopped, "the village's terminals stopped");
    // The district sees it at once: its coverage counts them silenced.
    let seen = eventually(Duration::from_secs(10), || {
        district
            .district
            .relay
            .coverage(id, platform::now_ms())
            .silenced as usize
            == here.len()
    })
    .await;
    assert!(
        seen,
        "{:?}",
        district.district.relay.coverage(id, platform::now_ms())
    );
    // The other village hears it to the end.
    let finished = eventually(Duration::from_secs(30), || {
        there.iter().all(|t| {
            t.handle()
                .snapshot()
                .records
                .get(&id)
                .is_some_and(|r| r.finished)
        })
    })
    .await;
    assert!(finished, "the other village played it in full");
    assert!(here
        .iter()
        .all(|t| !t.handle().snapshot().records[&id].finished));
    // The village's trail has the refusal and the silence, with the reason.
    let entries = village.platform.workflow.audit.latest(50).unwrap();
    assert!(entries.iter().any(|e| e.action == "broadcast.silence"
        && e.actor == "maintainer"
        && e.outcome == platform::audit::Outcome::Refused));
    assert!(entries.iter().any(|e| e.action == "broadcast.silence"
        && e.actor == "approver"
        && e.outcome == platform::audit::Outcome::Ok
        && e.detail.contains("深夜误播")));
    let rows = testbed::ApiClient::of(&village.platform, c)
        .unwrap()
        .get("/api/broadcasts")
        .await
        .unwrap();
    assert_eq!(
        rows[0]["silenced_here"],
        json!([village.area.to_string()]),
        "{rows}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tier_above_cancels_a_village_broadcast_it_never_held() {
    let dir = tempfile::tempdir().unwrap();
    let district = small_district(
        dir.path(),
        Layout {
            towns: 1,
            villages: 1,
            terminals: 2,
        },
    )
    .await;
    let c = &district.creds;
    let http = reqwest::Client::new();
    let clip_path = dir.path().join("notice.wav");
    clip("alert-zh.wav", 12.0, &clip_path);
    let village = &district.villages[0];
    let id = district
        .api(&village.platform)
        .issue(
            &clip_path,
            &[
                ("areas", village.area.to_string()),
                ("class", "daily".into()),
                ("title", "村务通知".into()),
            ],
        )
        .await
        .unwrap();
    let playing = eventually(Duration::from_secs(20), || {
        district
            .terminals
            .iter()
            .all(|t| t.handle().snapshot().playing == Some(id))
    })
    .await;
    assert!(playing);
    let base = format!("http://{}", district.district.http_addr.unwrap());
    let url = format!("{base}/api/broadcasts/{id}/cancel");
    // Not held at the district: without areas it cannot tell where.
    let (status, e) = call(
        &http,
        reqwest::Method::POST,
        url.clone(),
        &c.approver.token,
        None,
    )
    .await;
    assert_eq!(status, 404, "{e}");
    // A drafter of the district may not cancel a lower tier's broadcast.
    let areas = json!({"areas": [village.area.to_string()]});
    let (status, _) = call(
        &http,
        reqwest::Method::POST,
        url.clone(),
        &c.drafter.token,
        Some(areas.clone()),
    )
    .await;
    assert_eq!(status, 403);
    let (status, ok) = call(
        &http,
        reqwest::Method::POST,
        url,
        &c.approver.token,
        Some(areas),
    )
    .await;
    assert_eq!(status, 200, "{ok}");
    let stopped = eventually(Duration::from_secs(10), || {
        district.terminals.iter().all(|t| {
            let s = t.handle().snapshot();
            s.playing != Some(id)
                && s.records
                    .get(&id)
                    .is_some_and(|r| r.cancelled && !r.finished)
        })
    })
    .await;
    assert!(
        stopped,
        "the village's terminals stopped at the district's cancel"
    );
}
