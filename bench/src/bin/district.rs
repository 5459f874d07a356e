//! System-level harness: the whole district on this machine (as
//! `platform demo`), with CPU and memory sampled from /proc. Platforms run
//! on their own runtime whose threads are named `relay`, terminals on
//! threads named `term`, so CPU is split between relays and terminals by
//! thread. Prints one JSON line.
//!
//! `cargo run --release -p bench --bin district -- [TERMINALS] [VILLAGES] [TOWNS]`

use std::collections::BTreeMap;
use std::time::Instant;

/// CPU seconds used so far by this process's threads, by thread-name prefix.
fn cpu_by_thread() -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let group = match comm.trim() {
            c if c.starts_with("relay") => "relay",
            c if c.starts_with("term") => "terminals",
            _ => "other",
        };
        *out.entry(group.to_string()).or_default() += (ticks(11) + ticks(12)) / 100.0;
    }
    out
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn round(x: f64, places: i32) -> f64 {
    let m = 10f64.powi(places);
    (x * m).round() / m
}

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let terminals = args.first().copied().unwrap_or(600);
    let villages = args.get(1).copied().unwrap_or(87);
    let towns = args.get(2).copied().unwrap_or(5);
    let relay_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("relay")
        .enable_all()
        .build()?;
    let term_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("term")
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let assets = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/audio");
    let before = cpu_by_thread();
    let t0 = Instant::now();
    let summary = term_rt.block_on(testbed::demo::run(testbed::demo::DemoOptions {
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
        platform_runtime: Some(relay_rt.handle().clone()),
    }))?;
    let wall = t0.elapsed().as_secs_f64();
    let after = cpu_by_thread();
    let used =
        |k: &str| after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
    let (relay, term, other) = (used("relay"), used("terminals"), used("other"));
    let per_1000 = |cpu: f64| round(cpu / wall / summary.terminals.max(1) as f64 * 1000.0, 3);
    let line = serde_json::json!({
        "terminals": summary.terminals,
        "platforms": 1 + towns + villages,
        "played_full": summary.played_full,
        "activation_ms": summary.activation_ms,
        "wall_s": round(wall, 1),
        "cpu_s": { "relays": round(relay, 1), "terminals": round(term, 1), "other": round(other, 1) },
        "relay_cores_per_1000_terminals": per_1000(relay),
        "terminal_cores_per_1000_terminals": per_1000(term),
        "relay_cpu_ms_per_terminal_second": round(relay * 1000.0 / wall / summary.terminals.max(1) as f64, 3),
        "peak_rss_mb": peak_rss_mb().round(),
    });
    println!("{line}");
    Ok(())
}
