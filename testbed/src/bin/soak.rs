//! `cargo run --release -p testbed --bin soak -- --minutes 60`: the whole
//! district (in this process) for a given time with an alert every
//! `--every` seconds (each third one cancelled half-way), sampling this
//! process's resident memory and CPU every ten seconds. Fails on a panic,
//! on an alert not played by every terminal, or on memory that keeps
//! growing (after a warm-up of a quarter of the run, at least two minutes,
//! the second half's median above the first half's by more than
//! `--max-growth-percent`). Prints the samples as CSV and a summary
//! as JSON.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use testbed::{LocalDistrict, LocalOptions};

#[derive(Parser)]
#[command(
    name = "soak",
    about = "The district for a long time with periodic alerts and cancels"
)]
struct Cli {
    #[arg(long, default_value_t = 5)]
    minutes: u64,
    /// Seconds between alerts.
    #[arg(long, default_value_t = 60)]
    every: u64,
    #[arg(long, default_value_t = 5)]
    towns: usize,
    #[arg(long, default_value_t = 87)]
    villages: usize,
    #[arg(long, default_value_t = 600)]
    terminals: usize,
    #[arg(long, default_value_t = 10.0)]
    max_growth_percent: f64,
    /// Where the samples go (CSV); stdout if not given.
    #[arg(long)]
    csv: Option<PathBuf>,
}

/// Resident memory (kB) and CPU time (s) of this process.
fn sample() -> (u64, f64) {
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name: utime and stime are 14 and 15.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0);
    (rss, cpu)
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    testbed::init_logging();
    let panicked = Arc::new(AtomicBool::new(false));
    let flag = panicked.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        flag.store(true, Ordering::SeqCst);
        default_hook(info);
    }));
    let temp = tempfile::tempdir()?;
    let district = LocalDistrict::start(LocalOptions {
        layout: certs::pki::Layout {
            towns: cli.towns,
            villages: cli.villages,
            terminals: cli.terminals,
        },
        ..LocalOptions::null(temp.path())
    })
    .await?;
    let connected = district.wait_connected(Duration::from_secs(120)).await;
    anyhow::ensure!(
        connected == district.terminals.len(),
        "{connected} of {} terminals connected",
        district.terminals.len()
    );
    let api = district.district_api();
    let county = district.district.relay.scope[0].to_string();
    let audio = testbed::asset("alert-zh.wav");
    let mut csv = String::from("elapsed_s,rss_kb,cpu_s,alerts,cancelled\n");
    let started = Instant::now();
    let until = started + Duration::from_secs(cli.minutes * 60);
    let mut next_alert = started;
    let mut samples: Vec<(f64, u64, f64)> = Vec::new();
    let mut next_sample = started;
    let (mut alerts, mut cancels, mut failures) = (0u32, 0u32, Vec::new());
    let mut pending: Vec<(protocol::BroadcastId, Instant, bool)> = Vec::new();
    while Instant::now() < until {
        let now = Instant::now();
        if now >= next_alert {
            next_alert += Duration::from_secs(cli.every);
            alerts += 1;
            let fields = [
                ("areas", county.clone()),
                ("class", "emergency".to_string()),
                ("severity", "1".to_string()),
                ("title", format!("浸泡测试 {alerts}")),
                ("valid_minutes", "2".to_string()),
            ];
            let id = api.issue(&audio, &fields).await?;
            pending.push((id, now, alerts % 3 == 0));
        }
        // Cancel each third alert ten seconds in; check every alert 40 s in.
        for (id, at, cancel) in pending.iter_mut() {
            if *cancel && at.elapsed() > Duration::from_secs(10) {
                api.cancel(*id).await?;
                cancels += 1;
                *cancel = false;
            }
        }
        let mut still = Vec::new();
        for (id, at, cancel) in pending.drain(..) {
            if at.elapsed() < Duration::from_secs(40) {
                still.push((id, at, cancel));
                continue;
            }
            let c = district.district.relay.coverage(id, platform::now_ms());
            let n = district.terminals.len() as u32;
            let ended = c.finished + c.cancelled;
            if ended != n || c.refused != 0 {
                failures.push(format!("{id}: {c:?}"));
            }
        }
        pending = still;
        if now >= next_sample {
            next_sample += Duration::from_secs(10);
            let (rss, cpu) = sample();
            let t = started.elapsed().as_secs_f64();
            samples.push((t, rss, cpu));
            csv.push_str(&format!("{t:.0},{rss},{cpu:.1},{alerts},{cancels}\n"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    match &cli.csv {
        Some(p) => std::fs::write(p, &csv)?,
        None => print!("{csv}"),
    }
    // After a warm-up (a quarter of the run, at least two minutes: alerts
    // end and their audio leaves memory), the second half of what is left
    // must not hold more than the first.
    let warm = (cli.minutes as f64 * 60.0 / 4.0).max(120.0);
    let settled: Vec<u64> = samples
        .iter()
        .filter(|s| s.0 >= warm)
        .map(|s| s.1)
        .collect();
    let half = settled.len() / 2;
    let (m2, m4) = (
        median(settled[..half].to_vec()),
        median(settled[half..].to_vec()),
    );
    let q = half;
    let growth = (m4 as f64 / m2.max(1) as f64 - 1.0) * 100.0;
    let cpu = samples.last().map_or(0.0, |s| s.2) - samples.first().map_or(0.0, |s| s.2);
    let summary = serde_json::json!({
        "minutes": cli.minutes,
        "terminals": district.terminals.len(),
        "alerts": alerts,
        "cancelled": cancels,
        "failures": failures,
        "rss_mb_first_half_settled": m2 as f64 / 1024.0,
        "rss_mb_second_half_settled": m4 as f64 / 1024.0,
        "rss_mb_max": samples.iter().map(|s| s.1).max().unwrap_or(0) as f64 / 1024.0,
        "rss_growth_percent": growth,
        "cpu_cores_mean": cpu / samples.last().map_or(1.0, |s| s.0.max(1.0)),
        "panicked": panicked.load(Ordering::SeqCst),
    });
    eprintln!("{summary}");
    anyhow::ensure!(!panicked.load(Ordering::SeqCst), "a task panicked");
    anyhow::ensure!(
        failures.is_empty(),
        "alerts not played everywhere: {failures:?}"
    );
    anyhow::ensure!(
        q == 0 || growth <= cli.max_growth_percent,
        "resident memory grew {growth:.1} % from the first half of the settled run to the second"
    );
    Ok(())
}
