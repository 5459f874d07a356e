//! The console's pages over HTTP against a running district: every page in
//! both languages with no missing catalogue key, the page security policy
//! (no inline script), HTML in a title shown as text, a drill marked as
//! one, live figures over Server-Sent Events, the language switch staying
//! on the site, and a browser without a session sent to the login page.

use std::time::Duration;

use certs::pki::Layout;
use serde_json::json;
use tests::*;

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Every `<script>` loads from this site or holds JSON data.
fn assert_no_inline_script(path: &str, html: &str) {
    for (i, _) in html.match_indices("<script") {
        let tag = &html[i..i + html[i..].find('>').unwrap()];
        assert!(
            tag.contains("src=\"/assets/") || tag.contains("type=\"application/json\""),
            "{path}: inline script {tag}"
        );
    }
    assert!(!html.contains(" onclick="), "{path}: inline handler");
    assert!(!html.contains(" style=\""), "{path}: inline style");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_renders_in_both_languages_safely_and_live() {
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
    let base = format!("http://{}", district.district.http_addr.unwrap());
    let http = no_redirects();

    // One person with every role, made by the admin over the API.
    let password = "every-role-password-1";
    let (status, body) = answer(
        http.post(format!("{base}/api/accounts"))
            .bearer_auth(&c.admin.token)
            .json(
                &json!({"name": "everyone", "display_name": "全员", "password": password,
                "roles": ["drafter", "approver", "clerk", "maintainer", "auditor", "admin"]}),
            ),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let cookie = login(&base, "everyone", password).await;

    // A drill whose title holds HTML.
    let clip_path = dir.path().join("drill.wav");
    clip("alert-zh.wav", 6.0, &clip_path);
    let hostile = "<script>alert(1)</script><b>演练</b>";
    let id = district
        .district_api()
        .issue(
            &clip_path,
            &[
                ("areas", district.district.relay.scope[0].to_string()),
                ("class", "drill".into()),
                ("severity", "4".into()),
                ("title", hostile.into()),
            ],
        )
        .await
        .unwrap();

    // A programme every day at 23:30 from today, its title holding HTML,
    // and quiet hours for the whole district.
    let county = district.district.relay.scope[0].to_string();
    let schedule = |last: String, submit: &str| {
        let form = testbed::client::form(
            &clip_path,
            &[
                ("areas", county.clone()),
                ("class", "daily".into()),
                ("title", "<i>早间新闻</i>".into()),
                ("schedule", "daily".into()),
                ("times", "23:30:30".into()),
                ("last_date", last),
                ("submit", submit.into()),
            ],
        )
        .unwrap();
        answer(
            http.post(format!("{base}/api/drafts"))
                .bearer_auth(&c.drafter.token)
                .multipart(form),
        )
    };
    let (status, body) = schedule("2099-01-01".into(), "false").await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("last_date")),
        "a year at most: {body}"
    );
    let last = platform::timetable::format_date(
        protocol::schedule::local_day(certs::time::unix_now_ms(), 480) + 30,
    );
    let (status, body) = schedule(last, "true").await;
    assert_eq!(
        (status, body["state"].as_str()),
        (201, Some("published")),
        "{body}"
    );
    let (status, body) = answer(
        http.put(format!("{base}/api/quiet-hours"))
            .bearer_auth(&c.approver.token)
            .json(&json!({"areas": [county], "mode": "skip", "windows": ["22:00-06:00"]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // No session: the pages send the browser to the login page.
    let r = http.get(format!("{base}/")).send().await.unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    assert_eq!(r.headers()["location"], "/login");

    let api = district.district_api();
    let mut serial = String::new();
    assert!(
        eventually_async(Duration::from_secs(20), || async {
            let rows = api.get("/api/terminals").await.unwrap_or_default();
            rows.as_array().map_or(0, |r| r.len()) == 2
        })
        .await,
        "both terminals report"
    );
    let rows = api.get("/api/terminals").await.unwrap();
    serial.push_str(rows[0]["serial"].as_str().unwrap());
    let pages = [
        "/",
        "/compose",
        "/review",
        "/programmes",
        "/from-above",
        "/terminals",
        &format!("/terminals/{serial}"),
        "/security",
        "/audit",
        "/accounts",
        "/certificates",
        "/login",
    ];
    // Without [gateway] the menu has no page of alerts from above, and
    // the page says why it is empty.
    let home = page(&http, format!("{base}/"), &cookie).await;
    assert!(
        !home.contains("href=\"/from-above\""),
        "no gateway, no menu item"
    );
    let from_above = page(&http, format!("{base}/from-above"), &cookie).await;
    assert!(from_above.contains("未配置上级预警接入"), "{from_above}");
    // A terminal's page shows its clock against the tree's once measured.
    let clock_shown = eventually_async(Duration::from_secs(10), || async {
        let page = http
            .get(format!("{base}/terminals/{serial}"))
            .header("cookie", format!("{cookie}; ebs_lang=zh-CN"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        page.contains("终端时钟偏差") && page.contains(" ms ± ")
    })
    .await;
    assert!(clock_shown, "the terminal page shows the clock's error");
    for lang in ["zh-CN", "en"] {
        for path in pages {
            let r = http
                .get(format!("{base}{path}"))
                .header("cookie", format!("{cookie}; ebs_lang={lang}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{path} in {lang}");
            let csp = r.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .to_string();
            assert!(
                csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
                "{path}: {csp}"
            );
            assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
            let html = r.text().await.unwrap();
            assert!(
                !html.contains('⟦'),
                "{path} in {lang}: a catalogue key is missing"
            );
            assert!(
                html.contains(&format!("<html lang=\"{lang}\">")),
                "{path} in {lang}"
            );
            assert_no_inline_script(path, &html);
            assert!(
                !html.contains("<script>alert(1)"),
                "{path}: the title's HTML ran"
            );
        }
    }

    // The programmes page: the plan of each village with the programme at
    // its time, its title shown as text, the district's quiet hours.
    let programmes = page(&http, format!("{base}/programmes"), &cookie).await;
    assert!(programmes.contains("定时广播与静默时段"), "{programmes}");
    assert!(programmes.contains("&#60;i&#62;早间新闻"), "escaped title");
    assert!(!programmes.contains("<i>早间新闻"), "the title's HTML ran");
    assert_eq!(
        programmes.matches("<td>23:30:30</td>").count(),
        2,
        "one row per village"
    );
    assert!(
        programmes.contains("每天 23:30:30"),
        "the timetable in words"
    );
    assert!(
        programmes.contains("22:00-06:00") && programmes.contains("跳过"),
        "quiet hours"
    );
    assert!(
        programmes.contains("data-withdraw="),
        "its issuer may withdraw it"
    );

    // The audit page filters by action.
    let audit = page(&http, format!("{base}/audit?action=login"), &cookie).await;
    assert!(audit.contains("<td>login</td>"), "the login is listed");
    assert!(
        !audit.contains("<td>draft.create</td>"),
        "the filter let other actions through"
    );
    let overview = page(&http, format!("{base}/"), &cookie).await;
    let at = overview.find("alert(1)").expect("the title is shown");
    assert!(
        overview[at - 20..at].ends_with("&#60;script&#62;"),
        "the title's HTML is not escaped: {}",
        &overview[at - 40..at + 60]
    );
    let card = &overview[overview.find(&format!("data-broadcast=\"{id}\"")).unwrap() - 120..];
    assert!(
        card.contains(" drill\""),
        "the drill's card is not marked: {}",
        &card[..300]
    );
    assert!(card.contains("演练 · DRILL"), "no drill banner");
    assert!(overview.contains("蛟桥镇"), "areas are not named");

    // Live: the overview's fragment over SSE, with the broadcast and its
    // coverage reaching the two terminals.
    let mut sse = http
        .get(format!("{base}/console/live/overview"))
        .header("cookie", cookie.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !seen.contains("data-playing=\"2\"") && !seen.contains("data-finished=\"2\"") {
        let chunk = tokio::time::timeout_at(deadline, sse.chunk())
            .await
            .expect("coverage reaches 2 over SSE")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("event: overview"));
    assert!(seen.contains(&id.to_string()));

    // The language switch stays on this site.
    for (back, to) in [
        ("/terminals", "/terminals"),
        ("//evil.example", "/"),
        ("/x\nSet-Cookie: a=b", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example", "/"),
    ] {
        let r = http
            .get(format!("{base}/lang"))
            .query(&[("to", "en"), ("back", back)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["location"], to, "back={back}");
        assert!(r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("ebs_lang=en;"));
    }

    // The script and style are served with a type and no sniffing.
    let r = http
        .get(format!("{base}/assets/console.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");

    // The terminals page's stream starts from what the page shows: no
    // second copy of the whole list, then only the rows that change.
    let html = page(&http, format!("{base}/terminals"), &cookie).await;
    let at = html.find("data-stream=\"").unwrap() + "data-stream=\"".len();
    let stream = &html[at..at + html[at..].find('"').unwrap()];
    assert!(stream.starts_with("/console/live/terminals?v="), "{stream}");
    let mut live = http
        .get(format!("{base}{stream}"))
        .header("cookie", cookie.clone())
        .send()
        .await
        .unwrap();
    let (status, _) = answer(
        http.post(format!("{base}/api/commands"))
            .bearer_auth(&c.maintainer.token)
            .json(&json!({"terminals": [serial], "action": "volume", "value": 35})),
    )
    .await;
    assert_eq!(status, 200);
    let mut got = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !got.contains("event: terminals-delta") {
        let chunk = tokio::time::timeout_at(deadline, live.chunk())
            .await
            .expect("the volume change arrives as a delta")
            .unwrap()
            .unwrap();
        got.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        !got.contains("event: terminals\n"),
        "the whole list was sent again"
    );
    assert!(got.contains(&serial) && got.contains("\"35\""), "{got}");
    drop(live);

    // Stopping the platform ends an open live stream cleanly: the orderly
    // shutdown does not wait out its 10 s for it, and the browser sees an
    // ended stream, not a broken one.
    drop(sse);
    let mut sse = http
        .get(format!("{base}/console/live/terminals"))
        .header("cookie", cookie.clone())
        .send()
        .await
        .unwrap();
    assert!(
        sse.chunk().await.unwrap().is_some(),
        "the first fragment comes at once"
    );
    let stop = tokio::spawn(district.district.shutdown());
    let end = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match sse.chunk().await {
                Ok(Some(_)) => continue,
                other => break other,
            }
        }
    })
    .await
    .expect("the stream ends");
    assert!(
        matches!(end, Ok(None)),
        "the stream broke instead of ending: {end:?}"
    );
    stop.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tier_shows_its_own_scope_and_requests_from_below_show_their_origin() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = testbed::LocalOptions::wav(
        Layout {
            towns: 1,
            villages: 2,
            terminals: 4,
        },
        dir.path(),
    );
    opts.configure = Box::new(|name, c| {
        if name.starts_with("village") {
            c.review.emergency.approver = platform::policy::Approver::Above;
        }
    });
    let district = testbed::LocalDistrict::start(opts).await.unwrap();
    assert_eq!(district.wait_connected(Duration::from_secs(20)).await, 4);
    let c = &district.creds;
    let http = no_redirects();
    let url = |p: &platform::PlatformHandle| format!("http://{}", p.http_addr.unwrap());
    let village = &district.villages[0];
    let (mine, other) = (
        village.area.to_string(),
        district.villages[1].area.to_string(),
    );

    // The village's console: its own terminals and areas only.
    let vbase = url(&village.platform);
    let vcookie = login(&vbase, &c.drafter.name, &c.drafter.password).await;
    assert!(
        eventually_async(Duration::from_secs(20), || async {
            page(&http, format!("{vbase}/terminals"), &vcookie)
                .await
                .matches("<tr data-serial=")
                .count()
                == 2
        })
        .await,
        "the village lists its two terminals"
    );
    let compose = page(&http, format!("{vbase}/compose"), &vcookie).await;
    assert!(compose.contains(&format!("value=\"{mine}\"")));
    assert!(
        !compose.contains(&format!("value=\"{other}\"")),
        "another village on the tree"
    );
    let overview = page(&http, format!("{vbase}/"), &vcookie).await;
    assert!(
        overview.contains("data-count=\"total\">2<"),
        "the village counts its own terminals"
    );

    // A request from the village shows in the town's review queue with
    // where it came from.
    let clip_path = dir.path().join("alert.wav");
    clip("alert-zh.wav", 3.0, &clip_path);
    let form = testbed::client::form(
        &clip_path,
        &[
            ("areas", mine.clone()),
            ("class", "emergency".to_string()),
            ("severity", "2".to_string()),
            ("title", "山洪紧急转移（申请）".to_string()),
            ("submit", "true".to_string()),
        ],
    )
    .unwrap();
    let (status, d) = answer(
        http.post(format!("{vbase}/api/drafts"))
            .bearer_auth(&c.drafter.token)
            .multipart(form),
    )
    .await;
    assert_eq!(status, 201, "{d}");
    assert_eq!(d["state"], "requested");
    let tbase = url(&district.towns[0]);
    let tcookie = login(&tbase, &c.approver.name, &c.approver.password).await;
    let village_cert = village.platform.relay.identity.cert().body().name.clone();
    assert!(
        eventually_async(Duration::from_secs(20), || async {
            let html = page(&http, format!("{tbase}/review"), &tcookie).await;
            html.contains("山洪紧急转移（申请）")
                && html.contains(&format!("class=\"origin\">{village_cert}"))
        })
        .await,
        "the town's review queue shows the request and its origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_page_offers_the_first_admin_setup_only_while_no_account_exists() {
    let dir = tempfile::tempdir().unwrap();
    let now = certs::time::unix_now();
    let pki = certs::pki::DistrictPki::generate(Layout::ONE_OF_EACH, (now - 60, now + 86_400), now)
        .unwrap();
    let fresh = platform::Platform::new(
        testbed::node::platform_config(dir.path(), "fresh", vec![]),
        testbed::node::provision(dir.path(), &pki.root, &pki.district, "fresh", now).unwrap(),
    )
    .unwrap()
    .start(platform::Listeners::loopback(true).await.unwrap())
    .await
    .unwrap();
    let base = format!("http://{}", fresh.http_addr.unwrap());
    let http = no_redirects();
    let login_page = || async {
        http.get(format!("{base}/login"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    assert!(login_page().await.contains("id=\"setup-form\""));
    let (status, body) = answer(http.post(format!("{base}/api/setup")).json(&json!({
        "code": fresh.setup_code.clone().unwrap(), "name": "chief",
        "password": "the-first-admin-password"})))
    .await;
    assert_eq!(status, 201, "{body}");
    assert!(
        !login_page().await.contains("setup-form"),
        "setup offered after it was used"
    );
}
