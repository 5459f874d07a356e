//! The district on the air, on loopback with real QUIC: platforms relay,
//! terminals verify and play; what each terminal's WAV sink wrote is
//! compared with the source.

use std::time::Duration;

use certs::pki::Layout;
use testbed::ApiClient;
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
    let id = district
        .district_api()
        .issue(
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
    let all_finished = district.all_finished(id, Duration::from_secs(30)).await;
    let reference = normalised(&clip_path);
    for t in &district.terminals {
        let r = t.handle().snapshot().records.get(&id).cloned();
        println!("terminal in {}: {:?}", t.area, r);
    }
    assert!(all_finished, "every terminal finished the alert");
    // Coverage at the district: every terminal reported, all finished.
    let coverage = eventually(Duration::from_secs(5), || {
        district
            .district
            .relay
            .coverage(id, platform::now_ms())
            .finished as usize
            == district.terminals.len()
    })
    .await;
    assert!(
        coverage,
        "{:?}",
        district.district.relay.coverage(id, platform::now_ms())
    );
    // Every terminal's audio counters reach the district's API and metrics
    // (4 s is 200 frames; its statuses come every 500 ms).
    let api = district.district_api();
    let counted = eventually(Duration::from_secs(5), || {
        district
            .district
            .relay
            .book()
            .terminals(platform::now_ms(), i64::MAX)
            .iter()
            .all(|t| t.audio.played >= 190 && t.audio.heard >= 190)
    })
    .await;
    let rows = api.get("/api/terminals").await.unwrap();
    assert!(counted, "{rows}");
    let row = &rows[0];
    assert!(row["audio"]["played"].as_u64().unwrap() >= 190, "{row}");
    assert!(row["refusals_by_reason"].is_object(), "{row}");
    let metrics = api.get_text("/metrics").await.unwrap();
    let played: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ebs_terminal_audio_frames_total{kind=\"played\"} "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(played >= 190 * district.terminals.len() as u64, "{metrics}");
    let mut district = district;
    let played_wavs = played_wavs(&mut district).await;
    for (p, played) in played_wavs {
        let c = correlation(&reference, &played, 2000);
        println!(
            "{}: {} samples, correlation {c:.4}",
            p.display(),
            played.len()
        );
        assert!(c > 0.9, "{}: correlation {c}", p.display());
    }
}

async fn issue(
    api: &ApiClient,
    clip_path: &std::path::Path,
    area: String,
    class: &str,
    title: &str,
) -> protocol::BroadcastId {
    api.issue(
        clip_path,
        &[
            ("areas", area),
            ("class", class.into()),
            ("severity", "2".into()),
            ("title", title.into()),
        ],
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_village_notice_plays_only_in_that_village() {
    let dir = tempfile::tempdir().unwrap();
    let district = small_district(dir.path(), LAYOUT).await;
    let clip_path = dir.path().join("notice.wav");
    clip("notice-zh-48k.flac", 3.0, &clip_path);
    let village = &district.villages[1];
    let id = issue(
        &district.api(&village.platform),
        &clip_path,
        village.area.to_string(),
        "daily",
        "村民大会通知",
    )
    .await;
    let inside: Vec<_> = district
        .terminals
        .iter()
        .filter(|t| t.village == 1)
        .collect();
    assert_eq!(inside.len(), 2);
    let done = eventually(Duration::from_secs(20), || {
        inside.iter().all(|t| {
            t.handle()
                .snapshot()
                .records
                .get(&id)
                .is_some_and(|r| r.finished)
        })
    })
    .await;
    assert!(done, "the village's terminals played the notice");
    tokio::time::sleep(Duration::from_millis(500)).await;
    for t in district.terminals.iter().filter(|t| t.village != 1) {
        let s = t.handle().snapshot();
        assert!(
            !s.records.contains_key(&id),
            "terminal in {} got the notice",
            t.area
        );
        assert_eq!(
            s.samples_played, 0,
            "terminal in {} played something",
            t.area
        );
    }
    // A village platform cannot address another village: refused before signing.
    let other = district.villages[2].area.to_string();
    let err = district
        .api(&village.platform)
        .issue(&clip_path, &[("areas", other), ("title", "越权".into())])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("outside this platform's scope"),
        "{err}"
    );
    // And nothing changes without the token.
    let err = district
        .api(&village.platform)
        .with_token("wrong-token")
        .issue(
            &clip_path,
            &[("areas", village.area.to_string()), ("title", "x".into())],
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emergency_preempts_a_daily_programme_which_then_resumes() {
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
    let programme_clip = dir.path().join("programme.wav");
    clip("programme-jingle-44k-stereo.mp3", 12.0, &programme_clip);
    let alert_clip = dir.path().join("alert.wav");
    clip("alert-zh.wav", 3.0, &alert_clip);
    let api = district.district_api();
    let county = district.district.relay.scope[0].to_string();
    let programme = issue(&api, &programme_clip, county.clone(), "daily", "日常节目").await;
    let t = &district.terminals[0].handle();
    assert!(
        eventually(Duration::from_secs(10), || t.snapshot().playing
            == Some(programme))
        .await,
        "the programme plays"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let alert = issue(&api, &alert_clip, county, "emergency", "紧急通知").await;
    assert!(
        eventually(Duration::from_secs(5), || t.snapshot().playing
            == Some(alert))
        .await,
        "the alert pre-empts at once"
    );
    assert!(
        eventually(Duration::from_secs(10), || t
            .snapshot()
            .records
            .get(&alert)
            .is_some_and(|r| r.finished))
        .await,
        "the alert plays to its end"
    );
    assert!(
        eventually(Duration::from_secs(5), || t.snapshot().playing
            == Some(programme))
        .await,
        "the programme resumes"
    );
    let s = t.snapshot();
    let p = &s.records[&programme];
    assert!(p.preempted >= 1, "{p:?}");
    assert!(
        eventually(Duration::from_secs(15), || t.snapshot().records[&programme]
            .finished)
        .await,
        "the programme reaches its end"
    );
    // At the district: every terminal reported the programme finished, and
    // none of them as refused.
    let n = district.terminals.len() as u32;
    let full = eventually(Duration::from_secs(10), || {
        let c = district
            .district
            .relay
            .coverage(programme, platform::now_ms());
        c.finished == n && c.received == n
    })
    .await;
    let coverage = district
        .district
        .relay
        .coverage(programme, platform::now_ms());
    assert!(full, "programme coverage: {coverage:?}");
    assert_eq!(coverage.refused, 0, "{coverage:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_stops_playback_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let district = small_district(dir.path(), LAYOUT).await;
    let clip_path = dir.path().join("alert.wav");
    clip("alert-zh.wav", 10.0, &clip_path);
    let api = district.district_api();
    let id = issue(
        &api,
        &clip_path,
        district.district.relay.scope[0].to_string(),
        "emergency",
        "误报",
    )
    .await;
    assert!(
        eventually(Duration::from_secs(10), || district
            .terminals
            .iter()
            .all(|t| t.handle().snapshot().playing == Some(id)))
        .await,
        "all play"
    );
    api.cancel(id).await.unwrap();
    assert!(
        eventually(Duration::from_secs(3), || district
            .terminals
            .iter()
            .all(|t| t.handle().snapshot().playing.is_none()))
        .await,
        "all stop within 3 s"
    );
    let before: Vec<u64> = district
        .terminals
        .iter()
        .map(|t| t.handle().snapshot().samples_played)
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (t, b) in district.terminals.iter().zip(before) {
        let s = t.handle().snapshot();
        let r = &s.records[&id];
        assert!(r.cancelled && !r.finished, "{r:?}");
        assert!(r.frames_played < 400, "stopped well before the end: {r:?}");
        assert_eq!(s.samples_played, b, "nothing more played after the cancel");
    }
    assert!(
        eventually(Duration::from_secs(5), || district
            .district
            .relay
            .coverage(id, platform::now_ms())
            .cancelled as usize
            == district.terminals.len())
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminals_fail_over_when_their_village_platform_dies_and_keep_playing() {
    let dir = tempfile::tempdir().unwrap();
    let district = small_district(dir.path(), LAYOUT).await;
    let clip_path = dir.path().join("alert.wav");
    clip("alert-zh.wav", 10.0, &clip_path);
    let id = issue(
        &district.district_api(),
        &clip_path,
        district.district.relay.scope[0].to_string(),
        "emergency",
        "山洪预警",
    )
    .await;
    let orphans: Vec<_> = district
        .terminals
        .iter()
        .filter(|t| t.village == 0)
        .collect();
    assert!(
        eventually(Duration::from_secs(10), || orphans.iter().all(|t| t
            .handle()
            .snapshot()
            .playing
            == Some(id)))
        .await
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    district.villages[0].platform.kill();
    let town = district.towns[0].quic_addr;
    assert!(
        eventually(Duration::from_secs(8), || orphans.iter().all(|t| t
            .handle()
            .snapshot()
            .connected_to
            == Some(town)))
        .await,
        "failed over to the town"
    );
    assert!(
        eventually(Duration::from_secs(20), || orphans.iter().all(|t| t
            .handle()
            .snapshot()
            .records[&id]
            .finished))
        .await,
        "played to the end"
    );
    for t in &orphans {
        let r = &t.handle().snapshot().records[&id];
        println!("after failover: {r:?}");
        // The whole alert arrived before the village died; nothing was lost.
        assert!(r.frames_played as f64 >= 0.95 * 500.0, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_started_late_plays_the_running_alert() {
    let dir = tempfile::tempdir().unwrap();
    let mut district = small_district(
        dir.path(),
        Layout {
            towns: 1,
            villages: 1,
            terminals: 2,
        },
    )
    .await;
    district.terminals[1].handle().kill();
    let clip_path = dir.path().join("alert.wav");
    clip("alert-zh.wav", 8.0, &clip_path);
    let id = issue(
        &district.district_api(),
        &clip_path,
        district.district.relay.scope[0].to_string(),
        "emergency",
        "化工泄漏",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let wav = district.terminals[1].dir.join("late.wav");
    district
        .restart_terminal(1, Box::new(codec::WavSink::create(&wav, 16_000).unwrap()))
        .await
        .unwrap();
    let late = district.terminals[1].handle();
    assert!(
        eventually(Duration::from_secs(15), || late
            .snapshot()
            .records
            .get(&id)
            .is_some_and(|r| r.finished))
        .await,
        "the late terminal plays the alert"
    );
    let r = late.snapshot().records[&id].clone();
    println!("late terminal: {r:?}");
    // It joins in step with the others: the part already past is skipped.
    assert!(r.frames_played > 100 && r.frames_played < 400, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_remote_commands_reach_only_the_terminals_they_address() {
    let dir = tempfile::tempdir().unwrap();
    let district = small_district(dir.path(), LAYOUT).await;
    let api = district.district_api();
    let village = district.villages[1].area.to_string();
    api.command(serde_json::json!({ "areas": [village], "action": "volume", "value": 30 }))
        .await
        .unwrap();
    let target = |t: &testbed::LocalTerminal| t.village == 1;
    assert!(
        eventually(Duration::from_secs(5), || district
            .terminals
            .iter()
            .filter(|t| target(t))
            .all(|t| t.handle().snapshot().volume == 30))
        .await,
        "the village's terminals turned down"
    );
    for t in district.terminals.iter().filter(|t| !target(t)) {
        assert_eq!(
            t.handle().snapshot().volume,
            100,
            "terminal in {} untouched",
            t.area
        );
    }
    // One terminal by serial: muted; its neighbour is not.
    let one = &district.terminals[0];
    let serial = format!("{:016x}", one.handle().serial);
    api.command(serde_json::json!({ "terminals": [serial], "action": "mute" }))
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || one.handle().snapshot().muted).await);
    assert!(!district.terminals[1].handle().snapshot().muted);
    // The district sees the new volume in the terminals' signed heartbeats.
    let mut turned_down = 0;
    for _ in 0..50 {
        let rows = api.get("/api/terminals").await.unwrap();
        turned_down = rows
            .as_array()
            .map_or(0, |r| r.iter().filter(|t| t["volume"] == 30).count());
        if turned_down == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        turned_down, 2,
        "the district's terminal list shows the two turned-down terminals"
    );
    // Commands need the token, and stay inside the issuer's scope.
    assert!(api
        .with_token("nope")
        .command(serde_json::json!({ "areas": [village], "action": "mute" }))
        .await
        .is_err());
    let village_api = district.api(&district.villages[0].platform);
    let other = district.villages[2].area.to_string();
    let err = village_api
        .command(serde_json::json!({ "areas": [other], "action": "mute" }))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("outside this platform's scope"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_whose_address_changes_keeps_playing_on_the_same_connection() {
    let dir = tempfile::tempdir().unwrap();
    let district = small_district(dir.path(), Layout::ONE_OF_EACH).await;
    let clip_path = dir.path().join("alert.wav");
    clip("alert-zh.wav", 6.0, &clip_path);
    let id = issue(
        &district.district_api(),
        &clip_path,
        district.district.relay.scope[0].to_string(),
        "emergency",
        "地址变化",
    )
    .await;
    let t = district.terminals[0].handle();
    assert!(eventually(Duration::from_secs(10), || t.snapshot().playing == Some(id)).await);
    let sessions = t.snapshot().sessions;
    t.rebind().unwrap();
    assert!(
        eventually(Duration::from_secs(15), || t.snapshot().records[&id]
            .finished)
        .await,
        "played to the end"
    );
    let s = t.snapshot();
    println!(
        "after the address change: {:?}, sessions {}",
        s.records[&id], s.sessions
    );
    assert_eq!(s.records[&id].frames_concealed, 0, "{:?}", s.records[&id]);
    // The receipt sent after the move reached the district...
    assert!(
        eventually(Duration::from_secs(5), || district
            .district
            .relay
            .coverage(id, platform::now_ms())
            .finished
            == 1)
        .await
    );
    // ...and past the idle timeout the same connection is still up.
    tokio::time::sleep(transport::TERMINAL_IDLE_TIMEOUT + Duration::from_secs(1)).await;
    let s = t.snapshot();
    assert!(s.connected_to.is_some());
    assert_eq!(
        s.sessions, sessions,
        "the connection migrated; no reconnect"
    );
}

/// P1's mechanism: the district's first broadcast starts after the
/// configured lead (nothing measured yet); its terminals' acknowledgements
/// show how fast the tree is, and the next broadcast starts sooner, still
/// whole and in step at every terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_the_tree_is_measured_a_broadcast_starts_sooner_and_still_plays_whole() {
    let dir = tempfile::tempdir().unwrap();
    let district = small_district(dir.path(), LAYOUT).await;
    let clip_path = dir.path().join("alert.wav");
    clip("alert-zh.wav", 2.0, &clip_path);
    let county = district.district.relay.scope[0].to_string();
    let api = district.district_api();
    let fields = |class: &str| {
        vec![
            ("areas", county.clone()),
            ("class", class.to_string()),
            ("severity", "1".to_string()),
            ("title", "防汛紧急转移".to_string()),
        ]
    };
    let configured = platform::issue::DEFAULT_LEAD_MS;
    assert_eq!(
        district
            .district
            .relay
            .book()
            .lead
            .lead(configured)
            .measured_ms,
        None
    );
    let mut activations = Vec::new();
    for class in ["daily", "emergency"] {
        let (id, published) = api.issue_timed(&clip_path, &fields(class)).await.unwrap();
        assert!(district.all_finished(id, Duration::from_secs(30)).await);
        let mut starts = Vec::new();
        for t in &district.terminals {
            let r = t.handle().snapshot().records[&id].clone();
            assert!(
                r.frames_played + 25 > r.total_frames && r.frames_concealed == 0,
                "{class}: {r:?}"
            );
            starts.push(r.first_sample_ms.expect("played"));
        }
        starts.dedup();
        assert_eq!(starts.len(), 1, "{class}: every terminal starts in step");
        activations.push(starts[0] - published);
        // Every terminal's acknowledgement reached the district.
        let acknowledged = eventually(Duration::from_secs(10), || {
            district.district.relay.book().lead.arrival(id).map(|a| a.1)
                == Some(district.terminals.len())
        })
        .await;
        assert!(
            acknowledged,
            "{:?}",
            district.district.relay.book().lead.arrival(id)
        );
    }
    let lead = district.district.relay.book().lead.lead(configured);
    println!("activations {activations:?} ms; lead now {lead:?}");
    // A maintainer sees it in /metrics.
    let metrics = api.get_text("/metrics").await.unwrap();
    assert!(
        metrics.contains(&format!("ebs_lead_milliseconds {}", lead.lead_ms)),
        "{metrics}"
    );
    let measured = lead.measured_ms.expect("measured");
    assert!(measured * 2 + 100 < configured, "{lead:?}");
    // The first: the configured lead and the terminals' own 400 ms; the
    // second: at most the configured lead and the header's measured
    // playout delay (`MEASURED_PLAYOUT_DELAY_MS`).
    assert!(activations[0] >= configured + 400, "{activations:?}");
    assert!(
        activations[1] < configured + platform::lead::MEASURED_PLAYOUT_DELAY_MS as i64 + 100,
        "{activations:?}"
    );
}
