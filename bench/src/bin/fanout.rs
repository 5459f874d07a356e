//! System-level harness: one village platform (the real `platform` program
//! in its own process) relaying to N terminals, with its CPU and memory
//! read from /proc as the peers' scripts read theirs. The district (the
//! source) and the load client of thin terminals (`bench::load`) run in
//! this process; `--real` starts real `terminal-agent` processes instead,
//! so the thin client can be checked against the real one.
//!
//! For each N: the village's CPU with no terminal (the peers' baseline),
//! with N connected and nothing playing (idle cost), then while a recorded
//! broadcast plays and while live speech plays (40 ms segments), each per
//! terminal-second of audio above both baselines; resident memory per
//! connected terminal; the first-to-last-terminal arrival spread of each
//! segment. One JSON line per N on stdout.
//!
//! `cargo build --release -p platform -p terminal-agent -p bench --bin fanout`
//! then `target/release/fanout --terminals 600,2000 [--window 30]` (see
//! `scripts/fanout.sh`, which also runs the peers).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use bench::load::{LoadClient, LoadOptions};
use bench::procstat::{self, CpuWindow};
use bench::rig::{default_audio, idle_rate, round, sibling, spawn, wav_seconds, Rig};
use clap::Parser;
use serde_json::json;
use testbed::node::provision;

#[derive(Parser, Debug)]
struct Args {
    /// Terminal counts, one run each.
    #[arg(long, value_delimiter = ',', default_value = "600")]
    terminals: Vec<usize>,
    /// Seconds of each idle measurement: two heartbeat periods (25 s),
    /// since a shorter window may hold none of the terminals' heartbeat
    /// rounds (20 s once measured 0.0008 ms per terminal-second at 600).
    #[arg(long, default_value_t = 50)]
    window: u64,
    /// Seconds after the terminals connect before the idle measurement:
    /// by 150 their clocks have left the two minutes of settling and
    /// probe at their slowest, in step with the heartbeat (the steady
    /// state a relay's terminals spend their days in).
    #[arg(long, default_value_t = 150)]
    settle: u64,
    /// Speech for both broadcasts (WAV); the peers' speech by default when
    /// it exists (`../shared/peers/make_speech.sh`), else the alert sample.
    #[arg(long)]
    audio: Option<PathBuf>,
    /// Seconds of live speech.
    #[arg(long, default_value_t = 30)]
    live_seconds: u64,
    /// One thin terminal in this many verifies everything it gets.
    #[arg(long, default_value_t = 50)]
    verify_every: usize,
    /// Real `terminal-agent` processes (null sink) instead of thin ones.
    #[arg(long)]
    real: bool,
    /// Skip the live run.
    #[arg(long)]
    no_live: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = bench::rig::runtime()?;
    for &n in &args.terminals {
        let line = rt.block_on(run_one(&args, n))?;
        println!("{line}");
    }
    Ok(())
}

async fn run_one(args: &Args, n: usize) -> anyhow::Result<serde_json::Value> {
    let audio = args.audio.clone().unwrap_or_else(default_audio);
    let audio_s = wav_seconds(&audio)?;
    let rig = Rig::start(n, |_| {}).await?;
    let path = rig.dir.path().to_path_buf();
    let pid = rig.pid();
    let village_addr = rig.village_addr;
    let idle_none = idle_rate(pid, args.window).await;
    let rss_none = procstat::rss_kb(pid);

    let anchor = rig.anchor.clone();
    let identities = rig.identities();
    let t_connect = Instant::now();
    let mut real = Vec::new();
    let load = if args.real {
        for (k, id) in identities.iter().enumerate() {
            let name = format!("terminal-{k}");
            let tdir = path.join(&name);
            std::fs::create_dir_all(&tdir)?;
            provision(&path, &rig.pki.root, id, &name, rig.now)?;
            let mut config = terminal_agent::TerminalConfig::new(
                path.join(format!("{name}.bundle")),
                vec![village_addr],
                tdir.join("store"),
            );
            config.sink = "null".into();
            let config_path = tdir.join("terminal.toml");
            std::fs::write(&config_path, toml::to_string(&config)?)?;
            real.push(spawn(
                &sibling("terminal-agent")?,
                &["--config", &config_path.display().to_string()],
                &tdir.join("run.log"),
            )?);
        }
        None
    } else {
        Some(LoadClient::start(
            identities,
            anchor,
            LoadOptions {
                upstreams: vec![village_addr],
                heartbeat: Duration::from_millis(
                    terminal_agent::TerminalConfig::DEFAULT_HEARTBEAT_MS,
                ),
                verify_every: args.verify_every,
                per_address: 50,
            },
        )?)
    };
    let connect_timeout = Duration::from_secs(30 + n as u64 / 50);
    let connected = match &load {
        Some(l) => l.wait_connected(n, connect_timeout).await,
        None => wait_real_connected(&rig.district, n, connect_timeout).await,
    };
    let connect_s = t_connect.elapsed().as_secs_f64();
    eprintln!("fanout {n}: {connected} connected in {connect_s:.1} s");
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let terminal_cpu0: f64 = real.iter().map(|c| procstat::cpu_s(c.0.id())).sum();
    let t_idle = Instant::now();
    let udp0 = procstat::udp_datagrams_sent();
    let idle_n = idle_rate(pid, args.window).await;
    let idle_packets = procstat::udp_datagrams_sent().saturating_sub(udp0) as f64
        / t_idle.elapsed().as_secs_f64()
        / n.max(1) as f64;
    // A real terminal's own idle cost (the goal holds for both ends).
    let terminal_idle = (!real.is_empty()).then(|| {
        let used: f64 = real.iter().map(|c| procstat::cpu_s(c.0.id())).sum::<f64>() - terminal_cpu0;
        round(
            used * 1000.0 / t_idle.elapsed().as_secs_f64() / real.len() as f64,
            4,
        )
    });
    let rss_n = procstat::rss_kb(pid);
    let clocks_idle = load.as_ref().map(|l| l.clocks());

    let area = rig.area.to_string();
    // Recorded: the whole file as one broadcast.
    let w = CpuWindow::start(pid);
    let id = rig.alert(&audio, "扇出测试").await?;
    // Its lead (at most a few seconds), its audio, the last receipts.
    tokio::time::sleep(Duration::from_secs_f64(audio_s + 5.0)).await;
    let (cpu, wall) = w.read();
    let recorded = per_terminal_second(cpu, wall, idle_none, idle_n, n, audio_s);
    let recorded_spread = load.as_ref().map(|l| l.spread(id));
    let rss_recorded = procstat::rss_kb(pid);

    let live = if args.no_live {
        serde_json::Value::Null
    } else {
        let frames =
            codec::ingest_file(&audio, &codec::IngestConfig::default(), &mut |_| {})?.frames;
        let frames = &frames[..frames.len().min(args.live_seconds as usize * 50)];
        let live_s = frames.len() as f64 / 50.0;
        let base = format!("http://{}", rig.district.http_addr.context("district API")?);
        let open = json!({
            "areas": area, "class": "emergency", "severity": "1", "title": "扇出现场",
            "format": "opus",
            "approver": {"name": rig.creds.approver.name, "password": rig.creds.approver.password},
        });
        let w = CpuWindow::start(pid);
        let (mut speaker, answer) =
            testbed::live::LiveClient::open(&base, &rig.creds.drafter.token, open).await?;
        anyhow::ensure!(answer["state"] == "on_air", "live refused: {answer}");
        let live_id: protocol::BroadcastId = answer["id"].as_str().context("live id")?.parse()?;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for f in frames {
            tick.tick().await;
            speaker.send_opus(f).await?;
        }
        speaker.end().await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (cpu, wall) = w.read();
        json!({
            "seconds": live_s,
            "cpu_ms_per_terminal_s": per_terminal_second(cpu, wall, idle_none, idle_n, n, live_s),
            "spread": load.as_ref().map(|l| l.spread(live_id)),
        })
    };
    let counters = load.as_ref().map(|l| {
        let c = &l.counters;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        json!({
            "sessions": get(&c.sessions), "segments": get(&c.segments), "verified": get(&c.verified),
            "refused": get(&c.refused), "bytes": get(&c.bytes), "receipts": get(&c.receipts),
        })
    });
    if let Some(l) = load {
        l.stop().await;
    }
    drop(real);
    rig.shutdown().await;
    let per_kb = |rss: f64| round((rss - rss_none) / n.max(1) as f64, 1);
    Ok(json!({
        "terminals": n,
        "client": if args.real { "terminal-agent" } else { "thin" },
        "connected": connected,
        "connect_s": round(connect_s, 1),
        "audio_s": round(audio_s, 1),
        "idle_ms_per_s": { "none": round(idle_none, 2), "connected": round(idle_n, 2) },
        "idle_ms_per_terminal_s": round((idle_n - idle_none) / n.max(1) as f64, 4),
        "idle_packets_per_terminal_s": round(idle_packets, 3),
        "clocks_idle": clocks_idle,
        "terminal_idle_ms_per_s": terminal_idle,
        "recorded": { "cpu_ms_per_terminal_s": recorded, "spread": recorded_spread },
        "live": live,
        "rss_kb_per_terminal": { "idle": per_kb(rss_n), "after_recorded": per_kb(rss_recorded) },
        "rss_mb": { "none": round(rss_none / 1024.0, 1), "connected": round(rss_n / 1024.0, 1) },
        "load": counters,
    }))
}

/// CPU per terminal per second of audio, above the village's idle with
/// no terminal (as the peers count) and above its idle with the same
/// connections (the audio alone).
fn per_terminal_second(
    cpu_s: f64,
    wall_s: f64,
    idle_none: f64,
    idle_n: f64,
    n: usize,
    audio_s: f64,
) -> serde_json::Value {
    let used_ms = cpu_s * 1000.0;
    let per = |idle_ms_per_s: f64| {
        round(
            (used_ms - idle_ms_per_s * wall_s) / (n.max(1) as f64 * audio_s),
            4,
        )
    };
    json!({ "above_no_terminal": per(idle_none), "above_connected": per(idle_n) })
}

async fn wait_real_connected(
    district: &platform::PlatformHandle,
    n: usize,
    timeout: Duration,
) -> usize {
    // Real terminals are seen at the district through their status.
    let deadline = Instant::now() + timeout;
    loop {
        let seen = district
            .relay
            .book()
            .terminals(platform::now_ms(), i64::MAX)
            .len();
        if seen >= n || Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
