//! The console in a real browser (headless Chromium driven by Playwright:
//! `tests/browser/console.mjs`) against a real district on loopback; then
//! the terminals' sinks are checked: the villages the drafter picked on
//! the tree played the audio she uploaded, the others did not.
//!
//! Needs Node.js, `npm ci` in `tests/browser` and Debian's `chromium`;
//! runs when `EBS_BROWSER_TESTS=1` (`.ci/run` sets it and installs them).
//! Screenshots go to `target/screenshots/`.

use std::process::Stdio;
use std::time::Duration;

use certs::pki::Layout;
use tests::*;
use tokio::io::AsyncBufReadExt;

/// One browser test at a time: each starts a district and a Chromium, and
/// two at once on two cores would time each other out.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn browser_tests_on() -> bool {
    let on = std::env::var("EBS_BROWSER_TESTS").as_deref() == Ok("1");
    if !on {
        eprintln!(
            "skipped: set EBS_BROWSER_TESTS=1 (needs node, chromium, npm ci in tests/browser)"
        );
    }
    on
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_review_watch_and_cancel_in_a_real_browser() {
    if !browser_tests_on() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut district = small_district(
        dir.path(),
        Layout {
            towns: 1,
            villages: 3,
            terminals: 6,
        },
    )
    .await;
    let live_audio = dir.path().join("flood.wav");
    let reference = clip("alert-zh.wav", 5.0, &live_audio);
    let drill_audio = dir.path().join("drill.wav");
    clip("alert-zh.wav", 8.0, &drill_audio);
    let villages: Vec<String> = district
        .villages
        .iter()
        .map(|v| v.area.to_string())
        .collect();
    let live_villages = &villages[..2];
    let live_expect = district
        .terminals
        .iter()
        .filter(|t| live_villages.contains(&t.area.to_string()))
        .count();
    let c = &district.creds;
    // A second platform with no account yet: its first admin is made in
    // the browser with the one-time setup code.
    let fresh_dir = dir.path().join("fresh");
    let now = certs::time::unix_now();
    let pki = certs::pki::DistrictPki::generate(Layout::ONE_OF_EACH, (now - 60, now + 86_400), now)
        .unwrap();
    std::fs::create_dir_all(&fresh_dir).unwrap();
    let fresh = platform::Platform::new(
        testbed::node::platform_config(&fresh_dir, "fresh", vec![]),
        testbed::node::provision(&fresh_dir, &pki.root, &pki.district, "fresh", now).unwrap(),
    )
    .unwrap()
    .start(platform::Listeners::loopback(true).await.unwrap())
    .await
    .unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let shots = root.join("../target/screenshots");
    let mut node = tokio::process::Command::new("node")
        .arg(root.join("browser/console.mjs"))
        .env(
            "CONSOLE_URL",
            format!("http://{}", district.district.http_addr.unwrap()),
        )
        .env("SHOTS", &shots)
        .env("LIVE_VILLAGES", live_villages.join(","))
        .env("LIVE_EXPECT", live_expect.to_string())
        .env("DRILL_VILLAGE", &villages[2])
        .env(
            "DRILL_EXPECT",
            district
                .terminals
                .iter()
                .filter(|t| t.area.to_string() == villages[2])
                .count()
                .to_string(),
        )
        .env("TOTAL_TERMINALS", district.terminals.len().to_string())
        .env("DRAFTER_NAME", &c.drafter.name)
        .env("DRAFTER_PASSWORD", &c.drafter.password)
        .env("APPROVER_NAME", &c.approver.name)
        .env("APPROVER_PASSWORD", &c.approver.password)
        .env("MAINTAINER_NAME", &c.maintainer.name)
        .env("MAINTAINER_PASSWORD", &c.maintainer.password)
        .env("ADMIN_NAME", &c.admin.name)
        .env("ADMIN_PASSWORD", &c.admin.password)
        .env("SETUP_URL", format!("http://{}", fresh.http_addr.unwrap()))
        .env("SETUP_CODE", fresh.setup_code.clone().unwrap())
        .env("AUDIO", &live_audio)
        .env("DRILL_AUDIO", &drill_audio)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (apt install nodejs; npm ci in tests/browser)");
    let mut lines = tokio::io::BufReader::new(node.stdout.take().unwrap()).lines();
    let mut live_id = None;
    let run = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if let Some(id) = v["live"].as_str() {
                live_id = Some(id.to_string());
            }
        }
        node.wait().await.unwrap()
    };
    let status = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the browser test ends within 5 minutes");
    assert!(
        status.success(),
        "the browser test failed (its log is above)"
    );
    let live_id = live_id.expect("the browser reported the live broadcast");

    // What the two villages' loudspeakers played is what was uploaded.
    for t in district.terminals.iter_mut() {
        t.stop().await;
    }
    for t in &district.terminals {
        let played = read_wav(&t.dir.join("played.wav"));
        if live_villages.contains(&t.area.to_string()) {
            let c = correlation(&reference, &played, 2000);
            assert!(
                c > 0.9,
                "{}: correlation {c} with the uploaded audio ({live_id})",
                t.dir.display()
            );
        } else {
            let c = correlation(&reference, &played, 2000);
            assert!(
                c < 0.9 || played.len() < reference.len(),
                "{}: played the live alert outside its villages",
                t.dir.display()
            );
        }
    }
}

/// The city's platform sends the district two alerts over GY/T (one
/// relayed at once, one left in review); the page of alerts from above
/// shows both, what was done and what the city was told, in Chromium.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_from_above_in_a_real_browser() {
    if !browser_tests_on() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (city, gateway) = testbed::from_above::City::start(dir.path()).await.unwrap();
    let layout = Layout {
        towns: 1,
        villages: 2,
        terminals: 2,
    };
    let district = district_taking_alerts(dir.path(), layout, gateway, true).await;
    let listener = district.district.gateway_addr.expect("GY/T listener");
    let village = district.villages[0].area.to_string();
    let county = district.district.relay.scope[0].to_string();
    let audio = asset("alert-zh.mp3");
    let (relayed, code, _) = city
        .send(
            listener,
            2,
            "市平台：暴雨橙色预警",
            "请立即转移。",
            &[village],
            &audio,
        )
        .await
        .unwrap();
    assert_eq!(code, 1);
    let (review, code, _) = city
        .send(
            listener,
            3,
            "市平台：大风黄色预警",
            "请加固门窗。",
            &[county],
            &audio,
        )
        .await
        .unwrap();
    assert_eq!(code, 1);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let c = &district.creds;
    let status = tokio::process::Command::new("node")
        .arg(root.join("browser/from_above.mjs"))
        .env(
            "CONSOLE_URL",
            format!("http://{}", district.district.http_addr.unwrap()),
        )
        .env("SHOTS", root.join("../target/screenshots"))
        .env("RELAYED_EBM", &relayed)
        .env("REVIEW_EBM", &review)
        .env("DRAFTER_NAME", &c.drafter.name)
        .env("DRAFTER_PASSWORD", &c.drafter.password)
        .kill_on_drop(true)
        .status();
    let status = tokio::time::timeout(Duration::from_secs(120), status)
        .await
        .expect("the browser test ends within 2 minutes")
        .expect("node runs (apt install nodejs; npm ci in tests/browser)");
    assert!(
        status.success(),
        "the browser test failed (its log is above)"
    );
}
