//! Under fire, with the real programs as processes (tests::fire): a
//! terminal killed mid-alert, a terminal that joins late, outages of the
//! terminal's link, a village platform killed mid-alert. What each
//! terminal played, and when, is read back from its timeline and compared
//! with a terminal that heard the alert undisturbed.

use std::path::PathBuf;
use std::time::Duration;

use codec::timeline::Timeline;
use tests::fire::{in_step, missed, Fire, Programs};
use tests::flood::FloodStats;
use tests::metric;

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

/// What `t` missed of what `reference` played, for a failure message.
fn describe(reference: &Timeline, t: &Timeline, from: i64, to: i64) -> String {
    let holes: Vec<String> = missed(reference, t, from, to)
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
        "{:.2} s played, missed: [{}]",
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
    let reference = f.terminals[0].timeline();
    // Back within a few seconds of starting, and never silent again.
    let back = restarted_at + 4_000_000;
    assert!(
        missed(&reference, &t, from, to)
            .iter()
            .all(|(at, len)| *at >= killed_at - 500_000 && at + len <= back),
        "gaps only while it was down: {}\n{}",
        describe(&reference, &t, from, to),
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
    let reference = f.terminals[0].timeline();
    let back = joined_at + 4_000_000;
    assert!(
        missed(&reference, &late, back, to).is_empty(),
        "the late joiner plays from a few seconds after it starts: {}\n{}",
        describe(&reference, &late, back, to),
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
            t.holes(from, to, FRAME_US).is_empty() && missed(&reference, &t, from, to).is_empty(),
            "terminal {k}: {}\n{}",
            describe(&reference, &t, from, to),
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
    let mut f = Fire::start(programs(), 3, 4)
        .await
        .expect("district starts");
    // Terminal 2 never reaches the village: it listens to the town
    // throughout, the reference the others are compared with.
    f.terminals[2].links[0].cut();
    f.start_all(Duration::from_secs(30))
        .await
        .expect("terminals connect");
    let clip = f.dir.path().join("alert.wav");
    tests::clip("alert-zh.wav", ALERT_S, &clip);
    f.alert(&clip, "村平台掉电").await.expect("issued");
    played(&f, 0, 5.0).await;
    let on_village: Vec<u64> = f.terminals[..2]
        .iter()
        .map(|t| t.links[0].stats().forwarded)
        .collect();
    assert!(
        on_village.iter().all(|n| *n > 50),
        "both terminals listen to the village: {on_village:?}"
    );
    f.kill_village();
    let (from, to) = whole(&f, 2).await;
    let reference = f.terminals[2].timeline();
    for k in 0..2 {
        let t = f.terminals[k].timeline();
        assert!(
            missed(&reference, &t, from, to).is_empty(),
            "terminal {k}: {}\n{}",
            describe(&reference, &t, from, to),
            f.terminals[k].logs()
        );
    }
}

/// A link that dies silently (no close, no error: a village platform
/// losing power, its 4G cell gone) while live speech flows is left within
/// seconds, not at the terminal link's idle timeout (`TERMINAL_IDLE_TIMEOUT`,
/// 40 s, kept long so idle links cost their relay almost nothing): the
/// terminal fails over to the town and hears the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_that_dies_silently_during_live_speech_is_left_within_seconds() {
    let mut f = Fire::start(programs(), 2, 6)
        .await
        .expect("district starts");
    // Terminal 1 listens to the town throughout: the reference.
    f.terminals[1].links[0].cut();
    f.start_all(Duration::from_secs(30))
        .await
        .expect("terminals connect");
    let base = format!("http://{}", f.district.http_addr.expect("an API"));
    let open = serde_json::json!({
        "areas": f.village_area.to_string(),
        "class": "daily",
        "severity": "4",
        "title": "现场通知",
        "format": "pcm16",
    });
    let (mut live, answer) = testbed::live::LiveClient::open(&base, &f.creds.drafter.token, open)
        .await
        .expect("the live socket opens");
    assert_eq!(answer["state"], "on_air", "{answer}");
    let speech = f.dir.path().join("speech.wav");
    let pcm: Vec<i16> = tests::clip("alert-zh.wav", 16.0, &speech)
        .iter()
        .map(|s| codec::sink::to_i16(*s))
        .collect();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut cut_at_us = 0;
    for (i, chunk) in pcm.chunks(320).enumerate() {
        tick.tick().await;
        if i == 250 {
            // 5 s in: the village's link to terminal 0 goes dead.
            assert!(f.terminals[0].links[0].stats().forwarded > 50);
            f.terminals[0].links[0].cut();
            cut_at_us = transport::clock::system_now_us();
        }
        live.send_pcm(chunk).await.expect("speech goes out");
    }
    live.end().await.expect("the speech ends");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let reference = f.terminals[1].timeline();
    let t = f.terminals[0].timeline();
    let (from, to) = reference.extent().expect("the reference played");
    let holes = missed(&reference, &t, from, to);
    let lost: i64 = holes.iter().map(|(_, len)| len).sum();
    let late: Vec<&(i64, i64)> = holes
        .iter()
        .filter(|(at, _)| *at > cut_at_us + 4_000_000)
        .collect();
    assert!(
        lost < 3_500_000 && late.is_empty(),
        "terminal 0: {}
{}",
        describe(&reference, &t, from, to),
        f.terminals[0].logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_strangers_keeps_no_terminal_from_an_alert_or_from_reconnecting() {
    // Small limits so a test-sized flood reaches them: beyond 8 handshakes
    // in flight strangers must prove their address, 8 per source at most,
    // half-open attempts abandoned after 1.5 s, a source whose handshakes
    // failed held to 10 new ones a second.
    let http = tests::fire::free_port();
    let mut f = Fire::start_with(programs(), 2, 9, |c| {
        c.http = Some(([127, 0, 0, 1], http).into());
        c.admission = transport::admission::AdmissionConfig {
            max_links: 1_000,
            max_handshakes: 48,
            max_handshakes_per_source: 8,
            retry_above: 8,
            handshake_timeout_ms: 1_500,
            failing_source_handshakes_per_s: 10,
        };
    })
    .await
    .expect("district starts");
    // Terminal 1 listens to the town: the reference, out of the flood.
    f.terminals[1].links[0].cut();
    f.start_all(Duration::from_secs(30))
        .await
        .expect("terminals connect");
    let clip = f.dir.path().join("alert.wav");
    tests::clip("alert-zh.wav", ALERT_S, &clip);

    // The genuine terminals dial from 127.0.0.1; the strangers from three
    // addresses each, certificate-less handshakes and half-open ones.
    let ip = |n: u8| std::net::IpAddr::from([127, 0, 0, n]);
    let certless = tests::flood::Flood::certless(f.village_addr, &[ip(2), ip(3), ip(4)], 4, 10);
    let half_open = tests::flood::Flood::half_open(f.village_addr, &[ip(5), ip(6), ip(7)], 100);
    tokio::time::sleep(Duration::from_secs(2)).await;
    f.alert(&clip, "洪水预警").await.expect("issued");
    played(&f, 0, 6.0).await;
    // Terminal 0 restarts mid-alert and must get back in through the flood.
    // What it had written when killed is what it played: the audio it held
    // beyond that dies with it (on a busy machine, a tenth of a second).
    let heard_until = f.terminals[0].timeline().extent().map_or(0, |(_, end)| end);
    f.terminals[0].kill9();
    f.start_terminal(0).expect("terminal 0 restarts");
    let restarted_at = platform::now_ms() * 1000;
    let (from, to) = whole(&f, 1).await;
    let certless = certless.stop().await;
    let half_open = half_open.stop().await;

    let reference = f.terminals[1].timeline();
    let t = f.terminals[0].timeline();
    let before = missed(&reference, &t, from, heard_until);
    let back = restarted_at + 5_000_000;
    let after = missed(&reference, &t, back, to);
    assert!(
        before.is_empty() && after.is_empty(),
        "terminal 0 during the flood: {}\n{}",
        describe(&reference, &t, from, to),
        f.terminals[0].logs()
    );
    let get = FloodStats::get;
    assert!(
        get(&certless.closed_by_platform) >= 50 && get(&certless.kept) == 0,
        "certificate-less clients: {certless:?}"
    );
    assert!(
        get(&half_open.attempts) >= 1_000 && get(&half_open.retries_seen) > 0,
        "half-open attempts: {half_open:?}"
    );

    // Every attempt is counted, and no slot is left taken.
    let page_url = format!("http://127.0.0.1:{http}/metrics");
    let mut page = String::new();
    let mut settled = false;
    for _ in 0..100 {
        let scrape = reqwest::Client::new()
            .get(&page_url)
            .bearer_auth(&f.creds.maintainer.token)
            .send();
        if let Ok(r) = scrape.await {
            page = r.text().await.unwrap_or_default();
        }
        settled =
            page.contains("ebs_links") && metric(&page, "ebs_links{state=\"handshaking\"}") == 0;
        if settled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let count = |o: &str| metric(&page, &format!("ebs_handshakes_total{{outcome=\"{o}\"}}"));
    assert!(settled, "handshakes left in flight:\n{page}");
    assert_eq!(metric(&page, "ebs_links{state=\"linked\"}"), 1, "{page}");
    assert!(
        count("failed") >= get(&certless.closed_by_platform),
        "{page}"
    );
    assert!(count("retried") > 0 && count("timed_out") > 0, "{page}");
    // The certificate-less sources tried 40 times a second each.
    assert!(count("dropped_failing") > 0, "{page}");
    assert!(count("linked") >= 2, "terminal 0 linked twice:\n{page}");
    // The refusals reach the district as security events.
    let untrusted = f
        .district
        .relay
        .book()
        .refusals
        .iter()
        .find(|(r, _)| r.name() == "peer_untrusted")
        .map_or(0, |(_, n)| *n);
    assert!(untrusted > 0, "no refusal reached the district");
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

/// One row of the impairment matrix: what a terminal's links do, and when.
struct Row {
    name: &'static str,
    up: tests::impair::Impairment,
    down: tests::impair::Impairment,
    /// (seconds into the alert, length) of an outage.
    outage: Option<(f64, f64)>,
    /// Change the source port every this many seconds.
    rebind_every: Option<f64>,
}

/// The loss/outage matrix (README, "Under fire"): one alert to a village
/// whose terminals each sit behind a differently impaired link, measured
/// from what each played. `scripts/impairment-matrix.sh` runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: scripts/impairment-matrix.sh"]
async fn impairment_matrix() {
    use tests::impair::Impairment as I;
    let ms = Duration::from_millis;
    let loss = |p| I { loss: p, ..I::NONE };
    let burst = I {
        burst_enter: 0.02,
        burst_leave: 0.3,
        burst_loss: 0.8,
        ..I::NONE
    };
    let rough = I {
        reorder: 0.05,
        reorder_by: ms(50),
        duplicate: 0.02,
        ..I::cellular(ms(300), 0.02)
    };
    let rows = vec![
        Row {
            name: "clean",
            up: I::NONE,
            down: I::NONE,
            outage: None,
            rebind_every: None,
        },
        Row {
            name: "10 % loss",
            up: loss(0.1),
            down: loss(0.1),
            outage: None,
            rebind_every: None,
        },
        Row {
            name: "40 % loss",
            up: loss(0.4),
            down: loss(0.4),
            outage: None,
            rebind_every: None,
        },
        Row {
            name: "bursts (Gilbert–Elliott 2 %/30 %, 80 % in a burst)",
            up: burst,
            down: burst,
            outage: None,
            rebind_every: None,
        },
        Row {
            name: "100 ms RTT, 10 ms jitter, 2 % loss",
            up: I::cellular(ms(100), 0.02),
            down: I::cellular(ms(100), 0.02),
            outage: None,
            rebind_every: None,
        },
        Row {
            name: "300 ms RTT, jitter, 5 % reordered, 2 % duplicated, 2 % loss",
            up: rough,
            down: rough,
            outage: None,
            rebind_every: None,
        },
        Row {
            name: "8 s outage at 5 s",
            up: I::NONE,
            down: I::NONE,
            outage: Some((5.0, 8.0)),
            rebind_every: None,
        },
        Row {
            name: "12 s outage at 5 s",
            up: I::NONE,
            down: I::NONE,
            outage: Some((5.0, 12.0)),
            rebind_every: None,
        },
        Row {
            name: "20 s outage at 2 s",
            up: I::NONE,
            down: I::NONE,
            outage: Some((2.0, 20.0)),
            rebind_every: None,
        },
        Row {
            name: "new source port every 5 s",
            up: I::NONE,
            down: I::NONE,
            outage: None,
            rebind_every: Some(5.0),
        },
    ];
    let seed = std::env::var("FIRE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let (f, clip) = fire(rows.len(), seed).await;
    for (k, row) in rows.iter().enumerate() {
        f.terminals[k].impair(row.up, row.down);
    }
    f.alert(&clip, "损伤矩阵").await.expect("issued");
    played(&f, 0, 0.5).await;
    let start = std::time::Instant::now();
    let mut events: Vec<(f64, usize, bool)> = Vec::new();
    for (k, row) in rows.iter().enumerate() {
        if let Some((at, len)) = row.outage {
            events.push((at, k, true));
            events.push((at + len, k, false));
        }
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut next_rebind = 5.0;
    while start.elapsed().as_secs_f64() < ALERT_S as f64 + 2.0 {
        let t = start.elapsed().as_secs_f64();
        while events.first().is_some_and(|e| e.0 <= t) {
            let (_, k, cut) = events.remove(0);
            if cut {
                f.terminals[k].cut();
            } else {
                f.terminals[k].restore();
            }
        }
        if t >= next_rebind {
            next_rebind += 5.0;
            for (k, row) in rows.iter().enumerate() {
                if row.rebind_every.is_some() {
                    f.terminals[k].links.iter().for_each(|l| l.rebind());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (from, to) = whole(&f, 0).await;
    let reference = f.terminals[0].timeline();
    let mut table = String::from(
        "| link | alert heard | gaps | longest gap | frames identical to a clean terminal's |\n|---|---|---|---|---|\n",
    );
    for (k, row) in rows.iter().enumerate() {
        let t = f.terminals[k].timeline();
        // A gap is what was not heard as the clean terminal heard it,
        // silence and concealment included; one frame is rounding.
        let gaps: Vec<(i64, i64)> = missed(&reference, &t, from, to)
            .into_iter()
            .filter(|g| g.1 > FRAME_US)
            .collect();
        let missing: i64 = gaps.iter().map(|h| h.1).sum();
        let longest = gaps.iter().map(|h| h.1).max().unwrap_or(0);
        let (matched, compared) = in_step(&reference, &t);
        table.push_str(&format!(
            "| {} | {:.1} % | {} | {:.2} s | {:.1} % |\n",
            row.name,
            100.0 * (1.0 - missing as f64 / (to - from) as f64),
            gaps.len(),
            seconds(longest),
            100.0 * matched as f64 / compared.max(1) as f64,
        ));
    }
    println!("{table}");
    if let Ok(out) = std::env::var("FIRE_MATRIX_OUT") {
        std::fs::write(out, &table).expect("matrix written");
    }
    assert!(
        f.terminals[0]
            .timeline()
            .holes(from, to, FRAME_US)
            .is_empty(),
        "the clean terminal heard it all"
    );
}
