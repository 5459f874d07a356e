//! The district on the air, on loopback with real QUIC: platforms relay,
//! terminals verify and play; what each terminal's WAV sink wrote is
//! compared with the source.

use std::time::Duration;

use certs::pki::Layout;
use platform::demo::issue_via_api;
use tests::*;

const LAYOUT: Layout = Layout {
    towns: 2,
    villages: 4,
    terminals: 8,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_district_alert_plays_on_every_terminal_and_matches_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let district = small_district(dir.path(), LAYOUT).await;
    let clip_path = dir.path().join("alert.wav");
    clip("alert-zh.wav", 4.0, &clip_path);
    let county = district.district.relay.scope[0].to_string();
    let id = issue_via_api(
        &district.district_api(),
        &district.token,
        &clip_path,
        &[
            ("areas", county),
            ("class", "emergency".into()),
            ("severity", "1".into()),
            ("title", "防汛紧急转移".into()),
        ],
    )
    .await
    .unwrap();
    let id: protocol::BroadcastId = id.parse().unwrap();
    let all_finished = eventually(Duration::from_secs(30), || {
        district.terminals.iter().all(|t| {
            t.handle
                .snapshot()
                .records
                .get(&id)
                .is_some_and(|r| r.finished)
        })
    })
    .await;
    let reference = normalised(&clip_path);
    for t in &district.terminals {
        let r = t.handle.snapshot().records.get(&id).cloned();
        println!("terminal in {}: {:?}", t.area, r);
    }
    assert!(all_finished, "every terminal finished the alert");
    // Coverage at the district: every terminal reported, all finished.
    let coverage = eventually(Duration::from_secs(5), || {
        district.district.relay.book().coverage(id).finished as usize == district.terminals.len()
    })
    .await;
    assert!(
        coverage,
        "{:?}",
        district.district.relay.book().coverage(id)
    );
    let paths: Vec<_> = district
        .terminals
        .iter()
        .map(|t| t.dir.join("played.wav"))
        .collect();
    for t in district.terminals {
        t.handle.stop();
    }
    for p in paths {
        let played = read_wav(&p);
        let c = correlation(&reference, &played, 2000);
        println!(
            "{}: {} samples, correlation {c:.4}",
            p.display(),
            played.len()
        );
        assert!(c > 0.9, "{}: correlation {c}", p.display());
    }
}
