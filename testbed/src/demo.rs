//! The demo: the whole seed district on this machine, an emergency alert
//! through the district's API with live coverage, a notice from one
//! village, a day's programmes on a few villages (one played within the
//! demo, from the terminals' caches), alerts from the city's platform
//! over GY/T (one relayed at once, one left in the review queue), and a
//! summary taken from the terminals themselves.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use certs::pki::Layout;

use crate::district::{LocalDistrict, LocalOptions, LocalTerminal};

/// What the demo reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub terminals: usize,
    pub connected: usize,
    /// Terminals that verified and played the whole alert, every frame.
    pub played_full: usize,
    /// Refusals counted by all terminals (0 in a clean run).
    pub refused: u64,
    /// From the operator's publish (the approval leaving the client) to the
    /// first sample at each terminal (P1).
    pub activation_ms: Percentiles,
    /// The alert's lead (from signing to its first presentation) and the
    /// slowest arrival it was made from (the daily check's).
    pub lead: LeadStats,
    /// The daily check that went before the alert: the district's first
    /// broadcast, so its lead is the configured one, nothing measured yet.
    pub check_activation_ms: Percentiles,
    /// Terminals of the notice's village that played it.
    pub notice_played: usize,
    pub notice_village_terminals: usize,
    /// Terminals outside that village that received or played it (must be 0).
    pub notice_outside_village: usize,
    /// Frames of the alert per terminal: fewest played, most concealed or recovered.
    pub alert_frames: FrameStats,
    /// Frames of the alert skipped as too late, summed over all terminals.
    pub late_frames: u64,
    /// The terminals' clocks at the end. Every node of the demo runs on
    /// this machine's one clock, so any offset is an error of the estimate.
    pub clock: ClockStats,
    pub alert_id: String,
    pub notice_id: String,
    pub programmes: ProgrammeStats,
    pub from_above: FromAboveStats,
    pub startup_s: f64,
}

/// The city's alerts over GY/T (R13).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FromAboveStats {
    /// Severity II for one village: relayed at once by the policy.
    pub relayed_ebm: String,
    /// The district's EBDResponse result code (1: verified).
    pub relayed_result_code: u8,
    pub relayed_answer: String,
    /// Terminals of that village, and how many played it in full.
    pub relayed_terminals: usize,
    pub relayed_played: usize,
    /// Severity III for the whole district: waits in the review queue.
    pub review_ebm: String,
    pub review_result_code: u8,
    pub review_answer: String,
    /// The states the district reported to the city, unasked, for each
    /// (BrdState: 1 waiting, 2 playing, 3 done).
    pub relayed_told: Vec<u8>,
    pub review_told: Vec<u8>,
}

/// The day's programmes of the demo (R9).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ProgrammeStats {
    /// The daily programme (three plays a day) and the one played now.
    pub daily_id: String,
    pub now_id: String,
    /// Spoken from its text (where text to speech is installed).
    pub spoken: bool,
    pub villages: usize,
    /// Terminals of those villages, and how many played the programme of
    /// now in full from their cache.
    pub terminals: usize,
    pub played: usize,
    /// One of the villages set quiet hours (22:00–06:00).
    pub quiet_village: String,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FrameStats {
    pub total: u64,
    pub played_min: u64,
    pub concealed_max: u64,
    pub recovered_max: u64,
    pub unfinished: usize,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LeadStats {
    pub lead_ms: i64,
    pub measured_from_ms: Option<i64>,
    /// The alert's own slowest acknowledged arrival, and how many
    /// terminals acknowledged it in time.
    pub alert_slowest_arrival_ms: i64,
    pub alert_acknowledged: usize,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ClockStats {
    pub unsynced: usize,
    pub offset_abs_max_us: i64,
    pub uncertainty_max_us: i64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Percentiles {
    pub p50: i64,
    pub p95: i64,
    pub max: i64,
    pub count: usize,
}

pub fn percentiles(mut v: Vec<i64>) -> Percentiles {
    v.sort_unstable();
    let at = |q: f64| {
        v.get(((v.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    Percentiles {
        p50: at(0.5),
        p95: at(0.95),
        max: v.last().copied().unwrap_or(0),
        count: v.len(),
    }
}

pub struct DemoOptions {
    pub layout: Layout,
    pub alert: PathBuf,
    pub notice: PathBuf,
    /// Say what happens on stderr.
    pub verbose: bool,
    /// Terminal 0 plays on the loudspeaker instead of a WAV file.
    pub speaker: bool,
    pub dir: PathBuf,
    pub platform_runtime: Option<tokio::runtime::Handle>,
}

/// Whether `r` is the whole broadcast, every frame (its total is counted
/// in whole segments; the last may be shorter).
fn full(r: &terminal_agent::PlayRecord, frames_per_segment: u64) -> bool {
    r.finished
        && r.frames_concealed == 0
        && r.frames_recovered == 0
        && r.frames_played + frames_per_segment > r.total_frames
}

/// Runs the demo: start, alert, notice, summary.
pub async fn run(opts: DemoOptions) -> anyhow::Result<Summary> {
    let (summary, mut district) = run_district(opts).await?;
    // Terminal 0's WAV file gets its header.
    for t in district.terminals.iter_mut().take(1) {
        t.stop().await;
    }
    Ok(summary)
}

/// The demo's district display names, as a county would configure them.
fn display_name(name: &str) -> Option<&'static str> {
    (name == "district").then_some("经开区应急广播平台")
}

/// Runs the demo and hands back the district, still running (the demo
/// binary keeps serving its console).
pub async fn run_district(opts: DemoOptions) -> anyhow::Result<(Summary, LocalDistrict)> {
    let say = |s: String| {
        if opts.verbose {
            eprintln!("{s}");
        }
    };
    let started = Instant::now();
    let verbose = opts.verbose;
    let speaker = opts.speaker;
    std::fs::create_dir_all(&opts.dir)?;
    let (city, gateway) = crate::from_above::City::start(&opts.dir).await?;
    let district = LocalDistrict::start(LocalOptions {
        layout: opts.layout,
        dir: opts.dir.clone(),
        sink: Box::new(move |i, dir| {
            if i == 0 {
                if speaker {
                    match codec::open_sink("speaker", 16_000) {
                        Ok(s) => return Ok(s),
                        Err(e) => eprintln!(
                            "speaker unavailable ({e}); terminal 0 writes a WAV file instead"
                        ),
                    }
                }
                return Ok(Box::new(codec::WavSink::create(
                    &dir.join("played.wav"),
                    16_000,
                )?));
            }
            Ok(Box::new(codec::NullSink::new(16_000)))
        }),
        heartbeat: Duration::from_secs(5),
        api_everywhere: true,
        platform_runtime: opts.platform_runtime.clone(),
        configure: Box::new(move |name, c| {
            if let Some(n) = display_name(name) {
                c.name = n.into();
            }
            if name == "district" {
                c.gateway = Some(gateway.clone());
            }
        }),
        configure_terminal: Box::new(|_, _| {}),
        progress: Box::new(move |what, done, of| {
            if verbose {
                eprint!("\rstarting {what}: {done}/{of}   ");
                if done == of {
                    eprintln!();
                }
            }
        }),
    })
    .await?;
    let connected = district.wait_connected(Duration::from_secs(120)).await;
    let startup_s = started.elapsed().as_secs_f64();
    say(format!(
        "{connected}/{} terminals connected after {startup_s:.1} s; district API at {}",
        district.terminals.len(),
        district.district_api().base()
    ));

    // 1. The daily check: a short chime to the whole district, which also
    //    shows the district how fast its tree takes a broadcast.
    let api = district.district_api();
    let county = district.district.relay.scope[0].to_string();
    let chime = opts.dir.join("daily-check.wav");
    write_chime(&chime)?;
    let check_fields = [
        ("areas", county.clone()),
        ("class", "daily".to_string()),
        ("title", "每日设备自检".to_string()),
        ("valid_minutes", "5".to_string()),
    ];
    let (check_id, check_published) = api.issue_timed(&chime, &check_fields).await?;
    watch(&district, check_id, "daily check", verbose).await;
    wait_acknowledged(&district, check_id).await;
    let check_activation = percentiles(
        district
            .terminals
            .iter()
            .filter_map(|t| {
                t.handle()
                    .snapshot()
                    .records
                    .get(&check_id)?
                    .first_sample_ms
            })
            .map(|first| first - check_published)
            .collect(),
    );
    let lead = district
        .district
        .relay
        .book()
        .lead
        .lead(platform::issue::DEFAULT_LEAD_MS);
    say(format!(
        "daily check {check_id}: first audio {} ms after the API's answer (p50); the tree's slowest arrival was {:?} ms, so the next lead is {} ms",
        check_activation.p50, lead.measured_ms, lead.lead_ms
    ));

    // 2. The district-wide emergency alert, through the district's API.
    let fields = [
        ("areas", county),
        ("class", "emergency".to_string()),
        ("severity", "1".to_string()),
        ("event_type", "11B06".to_string()),
        ("title", "防汛紧急转移通知".to_string()),
        ("valid_minutes", "30".to_string()),
    ];
    let requested = certs::time::unix_now_ms();
    let (alert_id, published) = api.issue_timed(&opts.alert, &fields).await?;
    let accepted = certs::time::unix_now_ms();
    let alert = alert_id.to_string();
    say(format!(
        "alert {alert} accepted by the district API in {} ms",
        accepted - requested
    ));
    watch(&district, alert_id, "alert", verbose).await;

    // 3. A notice from one village, to that village only.
    let village = &district.villages[district.villages.len() / 2];
    let village_api = district.api(&village.platform);
    let nfields = [
        ("areas", village.area.to_string()),
        ("class", "daily".to_string()),
        ("title", "村民大会通知".to_string()),
        ("valid_minutes", "10".to_string()),
    ];
    let notice_id = village_api.issue(&opts.notice, &nfields).await?;
    let notice = notice_id.to_string();
    say(format!(
        "village notice {notice} issued by {} for {}",
        village.platform.name, village.area
    ));
    let vi = district.villages.len() / 2;
    let in_village: Vec<&LocalTerminal> = district
        .terminals
        .iter()
        .filter(|t| t.village == vi)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline
        && !in_village.iter().all(|t| {
            t.handle()
                .snapshot()
                .records
                .get(&notice_id)
                .is_some_and(|r| r.finished)
        })
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 4. A day's programmes on three villages.
    let programmes = programmes(&district, &opts.notice, &say).await?;

    // 5. Alerts from the city's platform over GY/T.
    let from_above = from_above(&district, &city, &opts.notice, &say).await?;

    // 6. Summary from the terminals themselves.
    let mut activation = Vec::new();
    let mut frames = FrameStats {
        played_min: u64::MAX,
        ..Default::default()
    };
    let (mut played_full, mut refused, mut notice_played, mut notice_outside) = (0, 0, 0, 0);
    let mut late_frames = 0;
    let mut clock = ClockStats::default();
    for t in &district.terminals {
        let s = t.handle().snapshot();
        if let Some(r) = s.records.get(&alert_id) {
            if let Some(first) = r.first_sample_ms {
                activation.push(first - published);
            }
            played_full += full(r, platform::issue::FRAMES_PER_SEGMENT as u64) as usize;
            frames.total = r.total_frames;
            frames.played_min = frames.played_min.min(r.frames_played);
            frames.concealed_max = frames.concealed_max.max(r.frames_concealed);
            frames.recovered_max = frames.recovered_max.max(r.frames_recovered);
            frames.unfinished += (!r.finished) as usize;
            late_frames += r.frames_late;
        }
        if s.clock.synced {
            clock.offset_abs_max_us = clock.offset_abs_max_us.max(s.clock.offset_us.abs());
            clock.uncertainty_max_us = clock.uncertainty_max_us.max(s.clock.uncertainty_us);
        } else {
            clock.unsynced += 1;
        }
        refused += s.refusals.iter().map(|(_, n)| n).sum::<u64>();
        let got_notice = s.records.get(&notice_id);
        if t.village == vi {
            notice_played += got_notice.is_some_and(|r| r.finished && r.frames_played > 0) as usize;
        } else if got_notice.is_some() {
            notice_outside += 1;
        }
    }
    let summary = Summary {
        terminals: district.terminals.len(),
        connected,
        played_full,
        refused,
        activation_ms: percentiles(activation),
        lead: {
            let (slowest, acknowledged) = district
                .district
                .relay
                .book()
                .lead
                .arrival(alert_id)
                .unwrap_or_default();
            LeadStats {
                lead_ms: lead.lead_ms,
                measured_from_ms: lead.measured_ms,
                alert_slowest_arrival_ms: slowest,
                alert_acknowledged: acknowledged,
            }
        },
        check_activation_ms: check_activation,
        notice_played,
        notice_village_terminals: in_village_count(&district, vi),
        notice_outside_village: notice_outside,
        alert_frames: frames,
        late_frames,
        clock,
        alert_id: alert,
        notice_id: notice,
        programmes,
        from_above,
        startup_s,
    };
    Ok((summary, district))
}

/// The district schedules its morning news for three villages (07:00,
/// 12:00 and 18:30 every day for a month) and a one-off programme that
/// starts 15 s from now; one village sets its quiet hours. Waits for the
/// one-off to play at every terminal of those villages, from its cache.
async fn programmes(
    district: &LocalDistrict,
    audio: &std::path::Path,
    say: &impl Fn(String),
) -> anyhow::Result<ProgrammeStats> {
    use protocol::schedule::{at_second, local_day, CHINA_OFFSET_MINUTES};
    let api = district.district_api();
    let chosen: Vec<usize> = (0..district.villages.len().min(3)).collect();
    let areas: Vec<String> = chosen
        .iter()
        .map(|v| district.villages[*v].area.to_string())
        .collect();
    let now = certs::time::unix_now_ms();
    let today = local_day(now, CHINA_OFFSET_MINUTES);
    let date = platform::timetable::format_date;
    // Spoken from its text where the district has a voice; else the
    // notice's recording.
    let spoken = district.district.workflow.voice.is_some();
    let text = "村村响早间新闻。今天是{date}，气温5到12℃，请注意防寒保暖。";
    let (y, m, d) = protocol::schedule::civil_from_days(today);
    let text = text.replace("{date}", &format!("{y}年{m}月{d}日"));
    let mut fields = vec![
        ("areas", areas.join(",")),
        ("class", "daily".to_string()),
        ("title", "村村响·早间新闻".to_string()),
        ("text", text),
        ("schedule", "daily".to_string()),
        ("times", "07:00,12:00,18:30".to_string()),
        ("last_date", date(today + 30)),
    ];
    if spoken {
        fields.push(("speak", "true".to_string()));
    }
    let daily = api.schedule(audio, &fields, spoken).await?;
    // The one-off, 15 s from now (China time, to the second).
    let at = now + 15_000;
    let day = local_day(at, CHINA_OFFSET_MINUTES);
    let second = ((at - at_second(day, 0, CHINA_OFFSET_MINUTES)) / 1000) as u32;
    let start = at_second(day, second, CHINA_OFFSET_MINUTES);
    let once = [
        ("areas", areas.join(",")),
        ("class", "daily".to_string()),
        ("title", "开播试音".to_string()),
        ("schedule", "once".to_string()),
        ("times", platform::timetable::format_time(second)),
        ("first_date", date(day)),
    ];
    let now_id = api.schedule(audio, &once, false).await?;
    say(format!(
        "programmes: {daily} every day at 07:00, 12:00, 18:30 and {now_id} once at {} for {} villages; each terminal caches them and plays them on time by itself",
        platform::timetable::format_time(second),
        areas.len()
    ));
    // The first village keeps quiet at night.
    let quiet = &district.villages[0];
    district
        .api(&quiet.platform)
        .set_quiet_hours(&quiet.area.to_string(), "skip", &["22:00-06:00"])
        .await?;
    let here: Vec<&LocalTerminal> = district
        .terminals
        .iter()
        .filter(|t| chosen.contains(&t.village))
        .collect();
    let played = |t: &LocalTerminal| t.played_in_full("开播试音");
    let deadline = Instant::now() + Duration::from_millis((start - now).max(0) as u64 + 30_000);
    while Instant::now() < deadline && !here.iter().all(|t| played(t)) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let n = here.iter().filter(|t| played(t)).count();
    say(format!(
        "programme {now_id} played at {n}/{} terminals of its villages; see 定时广播 in the console for the day's plan",
        here.len()
    ));
    Ok(ProgrammeStats {
        daily_id: daily,
        now_id,
        spoken,
        villages: areas.len(),
        terminals: here.len(),
        played: n,
        quiet_village: quiet.area.to_string(),
    })
}

/// The city sends a severity II alert for the last village (relayed at
/// once: waits for it to play there) and a severity III one for the whole
/// district (left in the review queue for whoever opens the console).
async fn from_above(
    district: &LocalDistrict,
    city: &crate::from_above::City,
    audio: &std::path::Path,
    say: &impl Fn(String),
) -> anyhow::Result<FromAboveStats> {
    let gateway = district
        .district
        .gateway_addr
        .ok_or_else(|| anyhow::anyhow!("the district has no GY/T listener"))?;
    let vi = district.villages.len() - 1;
    let village = district.villages[vi].area.to_string();
    let title = "市平台：暴雨橙色预警";
    let (relayed_ebm, relayed_code, relayed_answer) = city
        .send(
            gateway,
            2,
            title,
            "请沿河群众立即转移。",
            std::slice::from_ref(&village),
            audio,
        )
        .await?;
    say(format!(
        "the city's EBM {relayed_ebm} (severity II, village {village}): result code {relayed_code}, {relayed_answer}"
    ));
    let here: Vec<&LocalTerminal> = district
        .terminals
        .iter()
        .filter(|t| t.village == vi)
        .collect();
    let played = |t: &LocalTerminal| t.played_in_full(title);
    let deadline = Instant::now() + Duration::from_secs(60);
    while relayed_code == 1 && Instant::now() < deadline && !here.iter().all(|t| played(t)) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let county = district.district.relay.scope[0].to_string();
    let (review_ebm, review_code, review_answer) = city
        .send(
            gateway,
            3,
            "市平台：大风黄色预警",
            "请加固门窗，减少外出。",
            &[county],
            audio,
        )
        .await?;
    say(format!(
        "the city's EBM {review_ebm} (severity III, the district): result code {review_code}, {review_answer}; approve it in the console's review queue (审核)"
    ));
    // The district tells the city how each stands (every 2 s at most).
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && city.interface.states_of(&review_ebm).is_empty() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(FromAboveStats {
        relayed_told: city.interface.states_of(&relayed_ebm),
        review_told: city.interface.states_of(&review_ebm),
        relayed_ebm,
        relayed_result_code: relayed_code,
        relayed_answer,
        relayed_terminals: here.len(),
        relayed_played: here.iter().filter(|t| played(t)).count(),
        review_ebm,
        review_result_code: review_code,
        review_answer,
    })
}

fn in_village_count(d: &LocalDistrict, vi: usize) -> usize {
    d.terminals.iter().filter(|t| t.village == vi).count()
}

/// Prints coverage once a second (from the district's receipts) until every
/// terminal finished or a minute passed.
/// Two seconds of two-tone chime, 16 kHz, into `path`.
fn write_chime(path: &std::path::Path) -> anyhow::Result<()> {
    use codec::Sink;
    let rate = 16_000;
    let mut wav = codec::WavSink::create(path, rate)?;
    let pcm: Vec<f32> = (0..2 * rate)
        .map(|i| {
            let t = i as f32 / rate as f32;
            let f = if t < 1.0 { 880.0 } else { 660.0 };
            let fade = (t % 1.0 * 8.0).min(1.0) * (1.0 - t % 1.0).min(0.2) * 5.0;
            0.3 * fade * (std::f32::consts::TAU * f * t).sin()
        })
        .collect();
    wav.write(&pcm)?;
    wav.stop()?;
    Ok(())
}

/// Waits until the district has every terminal's acknowledgement of `id`
/// (receipts come up in batches), or ten seconds.
async fn wait_acknowledged(d: &LocalDistrict, id: protocol::BroadcastId) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && d.district.relay.book().lead.arrival(id).map(|(_, n)| n) < Some(d.terminals.len())
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn watch(d: &LocalDistrict, id: protocol::BroadcastId, what: &str, verbose: bool) {
    let total = d.terminals.len() as u32;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let c = d.district.relay.coverage(id, platform::now_ms());
        if verbose {
            eprintln!(
                "{what}: {} / {total} playing, {} finished, {} refused",
                c.playing, c.finished, c.refused
            );
        }
        let done = d.terminals.iter().all(|t| {
            t.handle()
                .snapshot()
                .records
                .get(&id)
                .is_some_and(|r| r.finished)
        });
        if done || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
