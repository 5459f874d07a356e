//! System-level harness: the whole district on this machine (as
//! `platform demo`), with CPU and memory sampled from /proc while it runs.
//! Prints one JSON line.
//!
//! `cargo run --release -p bench --bin district -- [TERMINALS] [VILLAGES] [TOWNS]`
//!
//! All nodes share this process, so CPU is the whole district's: relays,
//! terminals verifying and decoding, the API. The per-1,000-terminal figure
//! is that total scaled, not the relays alone.

use std::time::Instant;

fn proc_cpu_seconds() -> f64 {
    // utime and stime, fields 14 and 15 of /proc/self/stat, in clock ticks.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let terminals = args.first().copied().unwrap_or(600);
    let villages = args.get(1).copied().unwrap_or(87);
    let towns = args.get(2).copied().unwrap_or(5);
    let dir = tempfile::tempdir()?;
    let assets = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/audio");
    let cpu0 = proc_cpu_seconds();
    let t0 = Instant::now();
    let summary = platform::demo::run(platform::demo::DemoOptions {
        layout: certs::pki::Layout {
            towns,
            villages,
            terminals,
        },
        alert: assets.join("alert-zh.wav"),
        notice: assets.join("notice-zh-48k.flac"),
        verbose: false,
        speaker: false,
        dir: dir.path().to_path_buf(),
    })
    .await?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = proc_cpu_seconds() - cpu0;
    let line = serde_json::json!({
        "terminals": summary.terminals,
        "platforms": 1 + towns + villages,
        "played_full": summary.played_full,
        "activation_ms": summary.activation_ms,
        "wall_s": (wall * 10.0).round() / 10.0,
        "cpu_s": (cpu * 10.0).round() / 10.0,
        "cores_busy": ((cpu / wall) * 100.0).round() / 100.0,
        "cpu_ms_per_terminal_second": ((cpu * 1000.0 / wall / summary.terminals.max(1) as f64) * 100.0).round() / 100.0,
        "cores_per_1000_terminals": ((cpu / wall / summary.terminals.max(1) as f64 * 1000.0) * 100.0).round() / 100.0,
        "peak_rss_mb": rss_mb().round(),
    });
    println!("{line}");
    Ok(())
}
