//! Under fire, with the real programs as processes (tests::fire): a
//! terminal killed mid-alert, a terminal that joins late, outages of the
//! terminal's link, a village platform killed mid-alert. What each
//! terminal played, and when, is read back from its timeline and compared
//! with a terminal that heard the alert undisturbed.

use std::path::PathBuf;
use std::time::Duration;

use codec::timeline::Timeline;
use tests::fire::{in_step, Fire, Programs};

fn programs() -> Programs {
    Programs {
        platform: PathBuf::from(env!("CARGO_BIN_EXE_ebs-platform")),
        terminal: PathBuf::from(env!("CARGO_BIN_EXE_ebs-terminal")),
    }
}

/// The alert's length (the whole of the sample).
const ALERT_S: f32 = 25.0;
/// A frame; holes shorter than this are rounding.
const FRAME_US: i64 = 20_000;

/// A district whose village has `n` terminals, all heard of, and a clip.
async fn fire(n: usize, seed: u64) -> (Fire, PathBuf) {
    let mut f = Fire::start(programs(), n, seed)
        .await
        .expect("district starts");
    f.start_all(Duration::from_secs(30))
        .await
        .expect("terminals connect");
    let clip = f.dir.path().join("alert.wav");
    tests::clip("alert-zh.wav", ALERT_S, &clip);
    (f, clip)
}

/// Waits until terminal `k` has played `seconds` of audio (over all runs).
async fn played(f: &Fire, k: usize, seconds: f64) {
    let ok = tests::eventually(Duration::from_secs(30), || {
        f.terminals[k].timeline().samples() as f64 >= seconds * 16_000.0
    })
    .await;
    assert!(
        ok,
        "terminal {k} did not play {seconds} s:\n{}",
        f.terminals[k].logs()
    );
}

/// Waits until the reference has played the whole alert; its extent.
async fn whole(f: &Fire, reference: usize) -> (i64, i64) {
    played(f, reference, ALERT_S as f64 - 0.1).await;
    // Whatever else is still playing ends within the presentation window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    f.terminals[reference]
        .timeline()
        .extent()
        .expect("it played")
}

fn seconds(us: i64) -> f64 {
    us as f64 / 1e6
}

fn describe(t: &Timeline, from: i64, to: i64) -> String {
    let holes: Vec<String> = t
        .holes(from, to, FRAME_US)
        .iter()
        .map(|(at, len)| {
            format!(
                "{:.2} s long at +{:.2} s",
                seconds(*len),
                seconds(at - from)
            )
        })
        .collect();
    format!(
        "{:.2} s played, holes: [{}]",
        t.samples() as f64 / 16_000.0,
        holes.join(", ")
    )
}

/// Security events the district heard from terminal `k`.
fn events_from(f: &Fire, k: usize) -> Vec<String> {
    let serial = format!("{:016x}", f.terminals[k].serial);
    f.district
        .relay
        .book()
        .events()
        .into_iter()
        .filter(|e| e.reporter == serial)
        .map(|e| format!("{} ×{}", e.reason, e.count))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_killed_mid_alert_plays_on_in_step_without_replaying() {
    let (mut f, clip) = fire(2, 1).await;
    f.alert(&clip, "断电重启").await.expect("issued");
    played(&f, 1, 8.0).await;
    f.terminals[1].kill9();
    let killed_at = platform::now_ms() * 1000;
    tokio::time::sleep(Duration::from_secs(2)).await;
    f.start_terminal(1).expect("restarts");
    let restarted_at = platform::now_ms() * 1000;
    let (from, to) = whole(&f, 0).await;

    let t = f.terminals[1].timeline();
    let after = f.terminals[1].run_timeline(1);
    // Back within a few seconds of starting, and never silent again.
    let back = restarted_at + 4_000_000;
    assert!(
        t.holes(from, to, FRAME_US)
            .iter()
            .all(|(at, len)| *at >= killed_at - 500_000 && at + len <= back),
        "holes only while it was down: {}\n{}",
        describe(&t, from, to),
        f.terminals[1].logs()
    );
    assert_eq!(t.overlap_us(), 0, "nothing played twice");
    // What it played after the restart is the alert, in step.
    let (matched, compared) = in_step(&f.terminals[0].timeline(), &after);
    assert!(
        compared as f64 * 0.02 >= seconds(to - back) && matched * 100 >= compared * 95,
        "in step after the restart: {matched} of {compared} frames match"
    );
    assert!(
        events_from(&f, 1).is_empty(),
        "no refusal of its honest village: {:?}",
        events_from(&f, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_that_joins_late_plays_the_rest_in_step() {
    let mut f = Fire::start(programs(), 2, 2)
        .await
        .expect("district starts");
    let since = platform::now_ms();
    f.start_terminal(0).unwrap();
    assert!(f.wait_heard(0, since, Duration::from_secs(30)).await);
    let clip = f.dir.path().join("alert.wav");
    tests::clip("alert-zh.wav", ALERT_S, &clip);
    f.alert(&clip, "迟到的终端").await.expect("issued");
    played(&f, 0, 10.0).await;
    f.start_terminal(1).unwrap();
    let joined_at = platform::now_ms() * 1000;
    let (_, to) = whole(&f, 0).await;

    let late = f.terminals[1].timeline();
    let back = joined_at + 4_000_000;
    assert!(
        late.holes(back, to, FRAME_US).is_empty(),
        "the late joiner plays from a few seconds after it starts: {}\n{}",
        describe(&late, back, to),
        f.terminals[1].logs()
    );
    let (matched, compared) = in_step(&f.terminals[0].timeline(), &late);
    assert!(
        compared as f64 * 0.02 >= seconds(to - back) && matched * 100 >= compared * 95,
        "in step: {matched} of {compared} frames match"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_of_8_and_12_seconds_leave_no_hole_in_a_recorded_alert() {
    let (f, clip) = fire(3, 3).await;
    f.alert(&clip, "断网").await.expect("issued");
    played(&f, 0, 5.0).await;
    // Terminal 1 loses its link for 8 s, terminal 2 for 12 s.
    f.terminals[1].cut();
    f.terminals[2].cut();
    tokio::time::sleep(Duration::from_secs(8)).await;
    f.terminals[1].restore();
    tokio::time::sleep(Duration::from_secs(4)).await;
    f.terminals[2].restore();
    let (from, to) = whole(&f, 0).await;
    let reference = f.terminals[0].timeline();
    for k in [1, 2] {
        let t = f.terminals[k].timeline();
        assert!(
            t.holes(from, to, FRAME_US).is_empty(),
            "terminal {k}: {}\n{}",
            describe(&t, from, to),
            f.terminals[k].logs()
        );
        let (matched, compared) = in_step(&reference, &t);
        assert!(
            matched * 100 >= compared * 98 && compared * 100 >= reference.records.len() * 98,
            "terminal {k} in step: {matched} of {compared} frames match"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_village_killed_mid_alert_leaves_no_hole() {
    let (mut f, clip) = fire(2, 4).await;
    f.alert(&clip, "村平台掉电").await.expect("issued");
    played(&f, 0, 5.0).await;
    let on_village: Vec<u64> = f
        .terminals
        .iter()
        .map(|t| t.links[0].stats().forwarded)
        .collect();
    assert!(
        on_village.iter().all(|n| *n > 50),
        "both terminals listen to the village: {on_village:?}"
    );
    f.kill_village();
    let (from, to) = whole(&f, 0).await;
    for k in 0..2 {
        let t = f.terminals[k].timeline();
        assert!(
            t.holes(from, to, FRAME_US).is_empty(),
            "terminal {k}: {}\n{}",
            describe(&t, from, to),
            f.terminals[k].logs()
        );
    }
    let (matched, compared) = in_step(&f.terminals[0].timeline(), &f.terminals[1].timeline());
    assert!(matched * 100 >= compared * 98, "{matched} of {compared}");
}

/// The loudest sample of the records playing within `[from, to)`.
fn peak(t: &Timeline, from: i64, to: i64) -> i16 {
    t.records
        .iter()
        .filter(|(at, _)| (from..to).contains(at))
        .flat_map(|(_, p)| p.iter().map(|s| s.saturating_abs()))
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_muted_village_hears_a_severe_emergency_and_coverage_tells_the_truth() {
    let (mut f, _) = fire(2, 5).await;
    let short = f.dir.path().join("short.wav");
    tests::clip("alert-zh.wav", 6.0, &short);
    let area = f.village_area.to_string();
    f.api
        .command(serde_json::json!({ "areas": [area], "action": "mute" }))
        .await
        .expect("mute sent");
    assert!(
        tests::eventually(Duration::from_secs(10), || {
            f.district
                .relay
                .book()
                .terminals(platform::now_ms(), i64::MAX)
                .iter()
                .filter(|t| t.muted)
                .count()
                == 2
        })
        .await,
        "both terminals report the mute"
    );
    // A daily notice obeys the mute: silence, and the receipts say so.
    let notice = f.issue(&short, "daily", 0, "静音时的通知").await.unwrap();
    let muted = tests::eventually(Duration::from_secs(20), || {
        f.district.relay.coverage(notice, platform::now_ms()).muted == 2
    })
    .await;
    let c = f.district.relay.coverage(notice, platform::now_ms());
    assert!(muted, "the notice was not heard, and it says so: {c:?}");
    assert_eq!(c.finished, 0, "{c:?}");
    for k in 0..2 {
        assert_eq!(peak(&f.terminals[k].timeline(), 0, i64::MAX), 0);
    }
    // A severity I emergency is heard despite the mute; terminal 1 dies
    // in the middle of it and is counted lost, not playing.
    let from = platform::now_ms() * 1000;
    let alert = f.alert(&short, "静音也要响").await.unwrap();
    let heard = tests::eventually(Duration::from_secs(20), || {
        let t = f.terminals[1].timeline();
        let since: usize = t
            .records
            .iter()
            .filter(|(at, _)| *at >= from)
            .map(|(_, p)| p.len())
            .sum();
        since >= 2 * 16_000
    })
    .await;
    assert!(heard, "terminal 1 plays the emergency");
    f.terminals[1].kill9();
    let done = tests::eventually(Duration::from_secs(60), || {
        let c = f.district.relay.coverage(alert, platform::now_ms());
        c.finished == 1 && c.lost == 1
    })
    .await;
    let c = f.district.relay.coverage(alert, platform::now_ms());
    assert!(done, "one heard in full, one lost: {c:?}");
    assert_eq!(c.playing, 0, "{c:?}");
    let loud = peak(&f.terminals[0].timeline(), from, i64::MAX);
    assert!(loud > 3000, "the emergency was audible: peak {loud}");
}
