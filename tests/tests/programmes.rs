//! Peacetime programming end to end (R9, R20), over HTTP against running
//! platforms and real terminals: a programme drafted at the district
//! reaches every terminal ahead of time and plays at its start (PCM
//! compared), also with every platform down; the day plan shows what each
//! village's terminals did; a withdrawal stops it everywhere; quiet hours
//! set by one village hold a district notice there only, and an emergency
//! still plays.

use std::time::Duration;

use certs::pki::Layout;
use protocol::schedule::{at_second, local_day, CHINA_OFFSET_MINUTES};
use serde_json::{json, Value};
use tests::*;

/// A start `ahead_ms` from now: (its date, its time of day, its instant).
fn start_in(ahead_ms: i64) -> (String, String, i64) {
    let at = forge_now() + ahead_ms;
    let day = local_day(at, CHINA_OFFSET_MINUTES);
    let second = ((at - at_second(day, 0, CHINA_OFFSET_MINUTES)) / 1000) as u32;
    let start = at_second(day, second, CHINA_OFFSET_MINUTES);
    (
        platform::timetable::format_date(day),
        platform::timetable::format_time(second),
        start,
    )
}

fn forge_now() -> i64 {
    certs::time::unix_now_ms()
}

/// Drafts and submits a programme playing once at `date` `time`.
async fn schedule_once(
    api: &testbed::ApiClient,
    token: &str,
    audio: &std::path::Path,
    areas: &str,
    title: &str,
    (date, time): (&str, &str),
) -> (u16, Value) {
    let form = testbed::client::form(
        audio,
        &[
            ("areas", areas.to_string()),
            ("class", "daily".to_string()),
            ("title", title.to_string()),
            ("schedule", "once".to_string()),
            ("times", time.to_string()),
            ("first_date", date.to_string()),
            ("submit", "true".to_string()),
        ],
    )
    .unwrap();
    answer(
        api.http()
            .post(format!("{}/api/drafts", api.base()))
            .bearer_auth(token)
            .multipart(form),
    )
    .await
}

/// The programme the district lists with `id`.
async fn programme(api: &testbed::ApiClient, id: &str) -> Value {
    let list = api.get("/api/programmes").await.unwrap();
    list.as_array()
        .and_then(|l| l.iter().find(|p| p["id"] == id))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Frames a terminal played of the scheduled play titled `title`.
fn played_of(d: &testbed::LocalDistrict, i: usize, title: &str) -> u64 {
    d.terminals[i]
        .handle()
        .snapshot()
        .records
        .values()
        .filter(|r| r.title == title)
        .map(|r| r.frames_played)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_programme_plays_on_time_everywhere_even_with_every_platform_down() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout {
        towns: 1,
        villages: 2,
        terminals: 2,
    };
    let mut district = small_district(dir.path(), layout).await;
    let api = district.district_api();
    let county = district.district.relay.scope[0].to_string();
    let clip_path = dir.path().join("news.wav");
    clip("notice-zh-48k.flac", 4.0, &clip_path);
    let reference = normalised(&clip_path);

    // 1. With every link up: it is sent ahead, cached, played, reported.
    let (date, time, start) = start_in(15_000);
    let (status, d) = schedule_once(
        &api,
        &district.creds.drafter.token,
        &clip_path,
        &county,
        "村村响早间新闻",
        (&date, &time),
    )
    .await;
    assert_eq!(status, 201, "{d}");
    assert_eq!(
        d["state"], "published",
        "a daily programme needs no approval: {d}"
    );
    let id = d["broadcast"]
        .as_str()
        .expect("its programme id")
        .to_string();
    let p = programme(&api, &id).await;
    assert_eq!(p["revision"], 1);
    assert_eq!(p["timetable"]["repeat"], "once");
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            programme(&api, &id).await["cached_terminals"] == 2
        })
        .await,
        "both terminals hold its audio: {}",
        programme(&api, &id).await
    );
    let wait = (start - forge_now()).max(0) as u64 + 6_000;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let frames = d["audio"]["frames"].as_u64().unwrap();
    for i in 0..2 {
        assert_eq!(
            played_of(&district, i, "村村响早间新闻"),
            frames,
            "terminal {i}"
        );
    }
    // The day's plan per village: its play, and that it was heard there.
    let plan = api.get(&format!("/api/plan?date={date}")).await.unwrap();
    let villages = plan["areas"].as_array().unwrap();
    assert_eq!(villages.len(), 2, "{plan}");
    for v in villages {
        let row = v["plays"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["programme"] == id.as_str())
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(row["time"], time.as_str(), "{v}");
        assert!(
            eventually_async(Duration::from_secs(5), || async {
                let plan = api.get(&format!("/api/plan?date={date}")).await.unwrap();
                plan["areas"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|a| a["area"] == v["area"])
                    .flat_map(|a| a["plays"].as_array().cloned().unwrap_or_default())
                    .any(|r| r["programme"] == id.as_str() && r["summary"]["finished"] == 1)
            })
            .await,
            "the plan says it played in full in {}",
            v["area"]
        );
    }

    // Nothing of it was refused anywhere on the way (a terminal's status
    // during a play names the programme, never its own play id).
    let platforms = std::iter::once(&district.district)
        .chain(&district.towns)
        .chain(district.villages.iter().map(|v| &v.platform));
    for p in platforms {
        assert_eq!(
            p.relay.refusals().total(),
            0,
            "{}: {:?}",
            p.name,
            p.relay.refusals()
        );
    }

    // 2. Every platform down before its time: it plays from the cache.
    let (date, time, start) = start_in(12_000);
    let (status, d) = schedule_once(
        &api,
        &district.creds.drafter.token,
        &clip_path,
        &county,
        "断网续播测试",
        (&date, &time),
    )
    .await;
    assert_eq!(status, 201, "{d}");
    let id2 = d["broadcast"].as_str().unwrap().to_string();
    assert!(
        eventually_async(Duration::from_secs(8), || async {
            programme(&api, &id2).await["cached_terminals"] == 2
        })
        .await
    );
    district.district.kill();
    for t in &district.towns {
        t.kill();
    }
    for v in &district.villages {
        v.platform.kill();
    }
    let wait = (start - forge_now()).max(0) as u64 + 6_000;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    for i in 0..2 {
        assert!(district.terminals[i]
            .handle()
            .snapshot()
            .connected_to
            .is_none());
        assert_eq!(
            played_of(&district, i, "断网续播测试"),
            frames,
            "terminal {i}"
        );
    }
    for (path, pcm) in played_wavs(&mut district).await {
        // Each terminal's loudspeaker got the programme twice; the second
        // with no link at all.
        let tail = &pcm[pcm.len().saturating_sub(reference.len() + 16_000)..];
        let corr = correlation(&reference, tail, 20_000);
        assert!(corr > 0.9, "{}: correlation {corr}", path.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_programme_plays_nowhere_and_the_trail_says_who() {
    let dir = tempfile::tempdir().unwrap();
    let district = small_district(dir.path(), Layout::ONE_OF_EACH).await;
    let api = district.district_api();
    let county = district.district.relay.scope[0].to_string();
    let clip_path = dir.path().join("news.wav");
    clip("notice-zh-48k.flac", 3.0, &clip_path);
    let (date, time, start) = start_in(12_000);
    let (_, d) = schedule_once(
        &api,
        &district.creds.drafter.token,
        &clip_path,
        &county,
        "将撤回的节目",
        (&date, &time),
    )
    .await;
    let id = d["broadcast"].as_str().unwrap().to_string();
    assert!(
        eventually_async(Duration::from_secs(8), || async {
            programme(&api, &id).await["cached_terminals"] == 1
        })
        .await
    );
    // Not the auditor's to withdraw; the drafter who wrote it may.
    let c = &district.creds;
    let (status, e) = answer(
        api.http()
            .post(format!("{}/api/programmes/{id}/withdraw", api.base()))
            .bearer_auth(&c.auditor.token),
    )
    .await;
    assert_eq!(status, 403, "{e}");
    let (status, w) = answer(
        api.http()
            .post(format!("{}/api/programmes/{id}/withdraw", api.base()))
            .bearer_auth(&c.drafter.token),
    )
    .await;
    assert_eq!(status, 200, "{w}");
    assert_eq!(w["revision"], 2);
    let wait = (start - forge_now()).max(0) as u64 + 5_000;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    assert_eq!(played_of(&district, 0, "将撤回的节目"), 0);
    assert_eq!(programme(&api, &id).await["withdrawn"], true);
    let (_, trail) = answer(
        api.http()
            .get(format!("{}/api/audit?limit=50", api.base()))
            .bearer_auth(&c.auditor.token),
    )
    .await;
    let text = trail.to_string();
    assert!(
        text.contains("programme.withdraw") && text.contains(&c.drafter.name),
        "{text}"
    );
    assert!(text.contains("programme.publish"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_of_one_village_hold_a_district_notice_there_and_an_emergency_plays() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout {
        towns: 1,
        villages: 2,
        terminals: 2,
    };
    let district = small_district(dir.path(), layout).await;
    let c = &district.creds;
    let quiet_village = &district.villages[0];
    let village_api = district.api(&quiet_village.platform);
    // Quiet from this minute for two (China time), set by village 0's
    // approver for its own area.
    let now = forge_now();
    let day = local_day(now, CHINA_OFFSET_MINUTES);
    let minute = ((now - at_second(day, 0, CHINA_OFFSET_MINUTES)) / 60_000) as u32;
    let window = format!(
        "{}-{}",
        platform::timetable::format_time(minute * 60),
        platform::timetable::format_time((minute + 2) % 1440 * 60)
    );
    let body =
        json!({ "areas": [quiet_village.area.to_string()], "mode": "hold", "windows": [window] });
    // A village cannot set the quiet hours of another.
    let other = json!({ "areas": [district.villages[1].area.to_string()], "mode": "hold", "windows": [window] });
    let (status, e) = answer(
        village_api
            .http()
            .put(format!("{}/api/quiet-hours", village_api.base()))
            .bearer_auth(&c.approver.token)
            .json(&other),
    )
    .await;
    assert_eq!((status, e["field"].as_str()), (400, Some("areas")), "{e}");
    let (status, set) = answer(
        village_api
            .http()
            .put(format!("{}/api/quiet-hours", village_api.base()))
            .bearer_auth(&c.approver.token)
            .json(&body),
    )
    .await;
    assert_eq!(status, 200, "{set}");
    let shown = village_api.get("/api/quiet-hours").await.unwrap();
    assert_eq!(shown[0]["windows"][0], window.as_str(), "{shown}");
    assert_eq!(shown[0]["own"], true);
    // Down the tree to the village's terminal (on its control stream).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let api = district.district_api();

    // A daily notice to the whole district, then an emergency.
    let county = district.district.relay.scope[0].to_string();
    let clip_path = dir.path().join("notice.wav");
    clip("notice-zh-48k.flac", 3.0, &clip_path);
    let notice = api
        .issue(
            &clip_path,
            &[
                ("areas", county.clone()),
                ("class", "daily".to_string()),
                ("title", "日常通知".to_string()),
            ],
        )
        .await
        .unwrap();
    // The other village plays it; the quiet one holds it.
    let quiet_terminal = district
        .terminals
        .iter()
        .position(|t| t.village == 0)
        .unwrap();
    let loud_terminal = 1 - quiet_terminal;
    assert!(
        eventually(Duration::from_secs(15), || {
            district.terminals[loud_terminal]
                .handle()
                .snapshot()
                .records
                .get(&notice)
                .is_some_and(|r| r.finished)
        })
        .await,
        "the other village plays the notice"
    );
    // An emergency plays in both, quiet hours or not.
    let alarm_path = dir.path().join("alarm.wav");
    clip("alert-zh.wav", 3.0, &alarm_path);
    let alarm = api
        .issue(
            &alarm_path,
            &[
                ("areas", county.clone()),
                ("class", "emergency".to_string()),
                ("severity", "2".to_string()),
                ("title", "紧急通知".to_string()),
            ],
        )
        .await
        .unwrap();
    assert!(
        district.all_finished(alarm, Duration::from_secs(20)).await,
        "the emergency plays everywhere"
    );
    let held = &district.terminals[quiet_terminal]
        .handle()
        .snapshot()
        .records[&notice];
    assert_eq!(held.frames_played, 0, "{held:?}");
    let coverage = eventually_async(Duration::from_secs(5), || async {
        let list = api.get("/api/broadcasts").await.unwrap();
        list.as_array()
            .and_then(|l| {
                l.iter()
                    .find(|b| b["id"] == notice.to_string().as_str())
                    .cloned()
            })
            .is_some_and(|b| b["coverage"]["held"] == 1)
    })
    .await;
    assert!(
        coverage,
        "the district sees one terminal holding it for quiet hours"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_offline_when_a_programme_changed_catches_up_and_plays_the_new_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut district = small_district(dir.path(), Layout::ONE_OF_EACH).await;
    let api = district.district_api();
    let county = district.district.relay.scope[0].to_string();
    let clip_path = dir.path().join("news.wav");
    clip("notice-zh-48k.flac", 3.0, &clip_path);
    // Published while the terminal is running: it caches revision 1.
    let (date, time, _) = start_in(60_000);
    let (status, d) = schedule_once(
        &api,
        &district.creds.drafter.token,
        &clip_path,
        &county,
        "改期节目",
        (&date, &time),
    )
    .await;
    assert_eq!(status, 201, "{d}");
    let id = d["broadcast"].as_str().unwrap().to_string();
    assert!(
        eventually_async(Duration::from_secs(8), || async {
            programme(&api, &id).await["cached_terminals"] == 1
        })
        .await
    );
    // The terminal goes off; the programme moves to 12 s from now.
    let sink_dir = district.terminals[0].dir.clone();
    district.terminals[0].stop().await;
    let (date2, time2, start2) = start_in(12_000);
    let (status, revised) = answer(
        api.http()
            .post(format!("{}/api/programmes/{id}/revise", api.base()))
            .bearer_auth(&district.creds.drafter.token)
            .json(&json!({ "schedule": "once", "times": time2, "first_date": date2 })),
    )
    .await;
    assert_eq!(status, 200, "{revised}");
    assert_eq!(revised["state"], "published", "{revised}");
    assert_eq!(revised["revises"], id.as_str());
    assert_eq!(programme(&api, &id).await["revision"], 2);
    // Back on: its inventory says revision 1; the upstream sends 2 (its
    // audio unchanged, so the programme alone).
    district
        .restart_terminal(
            0,
            Box::new(codec::WavSink::create(&sink_dir.join("again.wav"), 16_000).unwrap()),
        )
        .await
        .unwrap();
    let wait = (start2 - forge_now()).max(0) as u64 + 5_000;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let played = played_of(&district, 0, "改期节目");
    assert_eq!(
        played,
        d["audio"]["frames"].as_u64().unwrap(),
        "played at its new time"
    );
    let (_, trail) = answer(
        api.http()
            .get(format!("{}/api/audit?limit=50", api.base()))
            .bearer_auth(&district.creds.auditor.token),
    )
    .await;
    assert!(trail.to_string().contains("programme.revise"), "{trail}");
}
