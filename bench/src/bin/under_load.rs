//! S1 under load: a village relay with N genuine (thin) terminals linked,
//! against strangers and a reconnect storm. The relay is the real
//! `platform` program in its own process with its production admission
//! limits; the district, the terminals and the flood run in this process.
//!
//! Phases, one JSON line at the end:
//! 1. `calm`: a recorded alert with nothing else going on (the reference).
//! 2. `flood`: the same alert while strangers flood the QUIC port, from
//!    `--flood-sources` addresses: certificate-less clients completing
//!    handshakes as fast as they can (`--flood-loops` each) and half-open
//!    attempts (`--half-open-rate` a second each). Reports what reached the
//!    terminals (every segment at every terminal?), the arrival spread
//!    against the calm run, the relay's CPU, what the flood achieved and
//!    what the relay decided (`ebs_handshakes_total`).
//! 3. `storm`: the relay is frozen (SIGSTOP) for `--outage` seconds, longer
//!    than the terminals' idle timeout, as when a carrier's network goes
//!    away: every link dies at both ends. When it thaws, every terminal
//!    redials at once; an alert issued at that moment must reach them all
//!    (from where it is when each is back: what has played is not replayed).
//!    Reports the time until all are linked and until each has the alert
//!    (p50/p99/max), and the relay's resident memory before, at its peak
//!    and after.
//!
//! `cargo build --release -p platform -p bench --bin under_load`, then
//! `target/release/under_load --terminals 2000` (`scripts/under-load.sh`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bench::load::{LoadClient, LoadOptions, Spread};
use bench::procstat::{self, CpuWindow};
use bench::rig::{default_audio, round, wav_seconds, Rig};
use clap::Parser;
use serde_json::json;
use tests::flood::{Flood, FloodStats};
use tests::metric;

#[derive(Parser, Debug)]
struct Args {
    /// Genuine terminals linked to the relay.
    #[arg(long, default_value_t = 2000)]
    terminals: usize,
    /// Terminals per source address (a carrier NAT's share).
    #[arg(long, default_value_t = 50)]
    per_address: usize,
    /// Speech for the alerts (WAV).
    #[arg(long)]
    audio: Option<PathBuf>,
    /// Addresses the strangers send from (127.2.0.x), for each kind.
    #[arg(long, default_value_t = 16)]
    flood_sources: u8,
    /// Certificate-less dialling loops per source (unpaced).
    #[arg(long, default_value_t = 4)]
    flood_loops: usize,
    /// Half-open attempts a second per source.
    #[arg(long, default_value_t = 200)]
    half_open_rate: u32,
    /// Seconds the relay stays frozen: beyond a terminal's keep-alive and
    /// idle timeout together (15 + 40 s), so every link is dead at both
    /// ends when it thaws.
    #[arg(long, default_value_t = 60)]
    outage: u64,
    /// Seconds after the terminals link before the first alert.
    #[arg(long, default_value_t = 10)]
    settle: u64,
    #[arg(long)]
    no_flood: bool,
    #[arg(long)]
    no_storm: bool,
    /// Fail (exit 1) unless every terminal got every alert whole.
    #[arg(long)]
    check: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = bench::rig::runtime()?;
    let (line, ok) = rt.block_on(run(&args))?;
    println!("{line}");
    anyhow::ensure!(
        !args.check || ok,
        "not every terminal got every alert whole"
    );
    Ok(())
}

/// `ebs_handshakes_total` by outcome.
fn handshakes(page: &str) -> serde_json::Map<String, serde_json::Value> {
    [
        "accepted",
        "retried",
        "refused_full",
        "refused_source",
        "dropped_busy",
        "dropped_failing",
        "linked",
        "failed",
        "timed_out",
    ]
    .iter()
    .map(|o| {
        let n = metric(page, &format!("ebs_handshakes_total{{outcome=\"{o}\"}}"));
        (o.to_string(), json!(n))
    })
    .collect()
}

fn delta(
    after: &serde_json::Map<String, serde_json::Value>,
    before: &serde_json::Map<String, serde_json::Value>,
) -> serde_json::Value {
    let get = |m: &serde_json::Map<String, serde_json::Value>, k: &str| {
        m.get(k).and_then(|v| v.as_u64()).unwrap_or(0)
    };
    after
        .keys()
        .map(|k| (k.clone(), json!(get(after, k) - get(before, k))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Percentiles (s) of the present values, and how many are missing.
fn seconds_summary(values: &[Option<i64>], from_us: i64) -> serde_json::Value {
    let mut s: Vec<f64> = values
        .iter()
        .flatten()
        .map(|t| (t - from_us) as f64 / 1e6)
        .collect();
    s.sort_by(f64::total_cmp);
    let at = |q: f64| {
        s.get(((s.len().max(1) - 1) as f64 * q).round() as usize)
            .map_or(serde_json::Value::Null, |v| json!(round(*v, 2)))
    };
    json!({ "p50_s": at(0.5), "p99_s": at(0.99), "max_s": at(1.0), "missing": values.len() - s.len() })
}

async fn run(args: &Args) -> anyhow::Result<(serde_json::Value, bool)> {
    let n = args.terminals;
    let audio = args.audio.clone().unwrap_or_else(default_audio);
    let audio_s = wav_seconds(&audio)?;
    let rig = Rig::start(n, |_| {}).await?;
    let pid = rig.pid();
    let load = LoadClient::start(
        rig.identities(),
        rig.anchor.clone(),
        LoadOptions {
            upstreams: vec![rig.village_addr],
            heartbeat: Duration::from_millis(terminal_agent::TerminalConfig::DEFAULT_HEARTBEAT_MS),
            verify_every: 50,
            per_address: args.per_address,
        },
    )?;
    let t_connect = Instant::now();
    let connected = load
        .wait_connected(n, Duration::from_secs(30 + n as u64 / 50))
        .await;
    let connect_s = t_connect.elapsed().as_secs_f64();
    eprintln!("under_load {n}: {connected} linked in {connect_s:.1} s");
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let mut ok = connected == n;

    // 1. Calm.
    let whole = |s: &Spread| s.complete_terminals == n && s.segments > 0;
    let w = CpuWindow::start(pid);
    let calm_id = rig.alert(&audio, "平静时的警报").await?;
    tokio::time::sleep(Duration::from_secs_f64(audio_s + 5.0)).await;
    let (cpu, wall) = w.read();
    let calm = load.spread(calm_id);
    ok &= whole(&calm);
    let calm = json!({ "spread": calm, "relay_cpu_ms_per_s": round(cpu * 1000.0 / wall, 1) });

    // 2. Flood.
    let flood = if args.no_flood {
        serde_json::Value::Null
    } else {
        let sources = |base: u8| -> Vec<IpAddr> {
            (0..args.flood_sources)
                .map(|k| IpAddr::from([127, 2, base, k]))
                .collect()
        };
        let before = handshakes(&rig.village_metrics().await?);
        let certless = Flood::certless(rig.village_addr, &sources(0), args.flood_loops, 0);
        let half_open = Flood::half_open(rig.village_addr, &sources(1), args.half_open_rate);
        // The flood at full strength first.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let w = CpuWindow::start(pid);
        let t_flood = Instant::now();
        let id = rig.alert(&audio, "洪水中的警报").await?;
        tokio::time::sleep(Duration::from_secs_f64(audio_s + 5.0)).await;
        let (cpu, wall) = w.read();
        let flood_s = t_flood.elapsed().as_secs_f64() + 3.0;
        let certless = certless.stop().await;
        let half_open = half_open.stop().await;
        let after = handshakes(&rig.village_metrics().await?);
        let spread = load.spread(id);
        ok &= whole(&spread);
        let get = FloodStats::get;
        let rate = |a: &std::sync::atomic::AtomicU64| round(get(a) as f64 / flood_s, 0);
        json!({
            "spread": spread,
            "relay_cpu_ms_per_s": round(cpu * 1000.0 / wall, 1),
            "certless_per_s": rate(&certless.attempts),
            "certless_kept": get(&certless.kept),
            "certless_closed_by_relay": get(&certless.closed_by_platform),
            "half_open_per_s": rate(&half_open.attempts),
            "half_open_retried": get(&half_open.retries_seen),
            "half_open_answered": get(&half_open.answers_seen),
            "relay_decided": delta(&after, &before),
            "terminals_linked_after": load.connected(),
        })
    };

    // 3. Storm.
    let storm = if args.no_storm {
        serde_json::Value::Null
    } else {
        let before = handshakes(&rig.village_metrics().await?);
        let rss_before = procstat::rss_kb(pid);
        rig.village.signal("STOP")?;
        tokio::time::sleep(Duration::from_secs(args.outage)).await;
        let linked_in_outage = load.connected();
        rig.village.signal("CONT")?;
        let thawed_us = load.now_us();
        let thawed = Instant::now();
        let id = rig.alert(&audio, "恢复后的警报").await?;
        let mut rss_peak = rss_before;
        let mut all_linked_s = None;
        let deadline = thawed + Duration::from_secs(120);
        loop {
            rss_peak = rss_peak.max(procstat::rss_kb(pid));
            if all_linked_s.is_none() && load.connected() >= n {
                all_linked_s = Some(round(thawed.elapsed().as_secs_f64(), 2));
            }
            let have = load.first_arrivals(id, thawed_us);
            if (all_linked_s.is_some() && have.iter().all(Option::is_some))
                || Instant::now() > deadline
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The rest of the alert, then what the relay holds after.
        tokio::time::sleep(Duration::from_secs_f64(audio_s + 5.0)).await;
        let spread = load.spread(id);
        let first_audio = load.first_arrivals(id, thawed_us);
        ok &= all_linked_s.is_some()
            && linked_in_outage == 0
            && first_audio.iter().all(Option::is_some)
            && spread.to_the_end == n;
        let after = handshakes(&rig.village_metrics().await?);
        json!({
            "outage_s": args.outage,
            "linked_during_outage": linked_in_outage,
            "all_linked_s": all_linked_s,
            "first_audio": seconds_summary(&first_audio, thawed_us),
            "spread": spread,
            "rss_mb": {
                "before": round(rss_before / 1024.0, 1),
                "peak": round(rss_peak / 1024.0, 1),
                "after": round(procstat::rss_kb(pid) / 1024.0, 1),
            },
            "relay_decided": delta(&after, &before),
        })
    };
    load.stop().await;
    rig.shutdown().await;
    Ok((
        json!({
            "terminals": n,
            "per_address": args.per_address,
            "connected": connected,
            "connect_s": round(connect_s, 1),
            "audio_s": round(audio_s, 1),
            "calm": calm,
            "flood": flood,
            "storm": storm,
        }),
        ok,
    ))
}
