//! P4: skew between the terminals of one village. Every terminal runs on
//! an emulated clock (offset up to ±2 s, drift up to ±50 ppm) and plays
//! into a modelled sound card that runs up to ±50 ppm off and records the
//! true time each sample leaves it; each terminal's only link is through
//! the seeded impairment proxy (round trips spread over 40–200 ms, a fifth
//! of each as jitter, both ways alike; `--asymmetric` makes the way up
//! slower than the way down by a tenth of the round trip). A train of
//! chirps plays; the recordings are cross-correlated against terminal 0's
//! in half-second windows. Prints one JSON line; with it, each
//! terminal's error of tree time sampled while the audio played (and
//! that error less terminal 0's: the part of the skew the clocks explain).
//! `SKEW_DEBUG=1` prints every estimate (and the village's) each second.
//!
//! `cargo run --release -p bench --bin skew -- [--terminals 8] [--warmup 30] [--secs 60] [--asymmetric]`

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use certs::pki::Layout;
use codec::timeline::Timeline;
use testbed::{LocalDistrict, LocalOptions};
use tests::impair::{Impairment, Proxy};

struct Args {
    terminals: usize,
    warmup_s: u64,
    secs: u64,
    asymmetric: bool,
    seed: u64,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        terminals: 8,
        warmup_s: 30,
        secs: 60,
        asymmetric: false,
        seed: 13,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || -> anyhow::Result<u64> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a number"))
        };
        match flag.as_str() {
            "--terminals" => a.terminals = value()?.clamp(2, 64) as usize,
            "--warmup" => a.warmup_s = value()?,
            "--secs" => a.secs = value()?.clamp(4, 3_600),
            "--seed" => a.seed = value()?,
            "--asymmetric" => a.asymmetric = true,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

/// A deterministic spread in [-1, 1] for terminal `i` and quantity `q`.
fn spread(seed: u64, i: usize, q: u64) -> f64 {
    let mut x = seed
        ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ q.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 29;
    (x % 2_000_001) as f64 / 1_000_000.0 - 1.0
}

/// Chirps of 0.6 s (300 Hz to 3 kHz) each followed by 0.4 s of silence.
fn chirp_train(path: &Path, secs: u64) -> anyhow::Result<()> {
    let rate = 16_000.0;
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec)?;
    let (f0, f1, len) = (300.0f64, 3_000.0f64, 0.6f64);
    let k = (f1 / f0).ln() / len;
    for n in 0..(secs as f64 * rate) as usize {
        let t = (n as f64 / rate) % 1.0;
        let s = if t < len {
            let phase = 2.0 * std::f64::consts::PI * f0 * ((k * t).exp() - 1.0) / k;
            0.5 * phase.sin()
        } else {
            0.0
        };
        w.write_sample((s * i16::MAX as f64) as i16)?;
    }
    w.finalize()?;
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let dir = tempfile::tempdir()?;
    let n = a.terminals;
    let seed = a.seed;
    let rtt_ms = move |i: usize| 40.0 + 160.0 * i as f64 / (n - 1) as f64;
    let asymmetric = a.asymmetric;
    let proxies: Arc<Mutex<Vec<Proxy>>> = Arc::default();
    let made = proxies.clone();
    let clocks: Vec<(i64, i64, i64)> = (0..n)
        .map(|i| {
            (
                (spread(seed, i, 1) * 2_000_000.0) as i64,
                (spread(seed, i, 2) * 50_000.0) as i64,
                (spread(seed, i, 3) * 50_000.0) as i64,
            )
        })
        .collect();
    let cards = clocks.clone();
    let emulated_drifts: Vec<i64> = clocks.iter().map(|c| c.1).collect();
    let emulated = clocks.clone();
    let district = LocalDistrict::start(LocalOptions {
        sink: Box::new(move |i, dir| {
            let spec = format!("card:{}:{}", cards[i].2, dir.join("card.tl").display());
            Ok(codec::open_sink(&spec, 16_000)?)
        }),
        configure_terminal: Box::new(move |i, c| {
            c.emulated_clock_offset_us = emulated[i].0;
            c.emulated_clock_drift_ppb = emulated[i].1;
            // The village only, through the proxy.
            let rtt = Duration::from_secs_f64(rtt_ms(i) / 1000.0);
            let both = Impairment::cellular(rtt, 0.0);
            let (up, down) = if asymmetric {
                (
                    Impairment {
                        delay: both.delay + rtt / 20,
                        ..both
                    },
                    Impairment {
                        delay: both.delay - rtt / 20,
                        ..both
                    },
                )
            } else {
                (both, both)
            };
            let village = c.upstreams[0];
            let proxy = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(Proxy::start(
                    village,
                    up,
                    down,
                    seed + i as u64,
                ))
            });
            match proxy {
                Ok(p) => {
                    c.upstreams = vec![p.addr()];
                    made.lock().unwrap_or_else(|p| p.into_inner()).push(p);
                }
                Err(e) => eprintln!("terminal {i}: no proxy ({e}); it links directly"),
            }
        }),
        heartbeat: Duration::from_secs(5),
        ..LocalOptions::wav(
            Layout {
                towns: 1,
                villages: 1,
                terminals: n,
            },
            dir.path(),
        )
    })
    .await?;
    let connected = district.wait_connected(Duration::from_secs(60)).await;
    anyhow::ensure!(connected == n, "{connected} of {n} terminals connected");
    eprintln!(
        "{n} terminals linked; letting their clocks settle for {} s",
        a.warmup_s
    );
    let tree_clocks: Vec<_> = district
        .terminals
        .iter()
        .map(|t| t.handle().tree_clock().clone())
        .collect();
    if std::env::var_os("SKEW_DEBUG").is_some() {
        // Every terminal's estimate, once a second, to stderr.
        let clocks = tree_clocks.clone();
        let drifts: Vec<i64> = emulated_drifts.clone();
        let village = district.villages[0].platform.relay.clock.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let truth = transport::clock::system_now_us();
                let e = village.estimate();
                eprintln!(
                    "village err {} µs drift {} unc {} min_rtt {} n {}",
                    village.now() - truth,
                    e.drift_ppb,
                    e.uncertainty_us,
                    e.min_rtt_us,
                    e.samples
                );
                for (i, c) in clocks.iter().enumerate() {
                    let truth = transport::clock::system_now_us();
                    let err = c.now() - truth;
                    let e = c.estimate();
                    eprintln!(
                        "t{i} err {err} µs drift_err {} ppb unc {} min_rtt {} n {}",
                        e.drift_ppb + drifts[i],
                        e.uncertainty_us,
                        e.min_rtt_us,
                        e.samples
                    );
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(a.warmup_s)).await;

    // Each terminal's error of tree time, sampled while the audio plays:
    // the part of the skew the clock estimates explain.
    let (stop_sampling, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let sampling = tokio::spawn(async move {
        let mut errors: Vec<Vec<i64>> = vec![Vec::new(); tree_clocks.len()];
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut stopped => return errors,
            }
            for (c, e) in tree_clocks.iter().zip(&mut errors) {
                // Read together, so a pause of this task between the two
                // reads does not show as an error.
                let truth = transport::clock::system_now_us();
                e.push(c.now() - truth);
            }
        }
    });
    let audio = dir.path().join("chirps.wav");
    chirp_train(&audio, a.secs)?;
    let area = district.villages[0].area.to_string();
    let id = district
        .district_api()
        .issue(
            &audio,
            &[
                ("areas", area),
                ("class", "emergency".into()),
                ("severity", "2".into()),
                ("title", "同步测量".into()),
            ],
        )
        .await?;
    if !district
        .all_finished(id, Duration::from_secs(a.secs + 30))
        .await
    {
        eprintln!("not every terminal finished the chirps; measuring what played");
    }
    let _ = stop_sampling.send(());
    let errors = sampling.await?;
    // Per terminal: the spread of its error, and of its error less
    // terminal 0's (what the skew against terminal 0 would be from the
    // clocks alone).
    let spread = |v: &[i64]| -> serde_json::Value {
        let mut abs: Vec<f64> = v.iter().map(|e| e.abs() as f64).collect();
        abs.sort_by(f64::total_cmp);
        serde_json::json!({
            "p50": percentile(&abs, 0.5).round(),
            "p99": percentile(&abs, 0.99).round(),
            "max": abs.last().copied().unwrap_or(f64::NAN),
        })
    };
    let tree_error: Vec<serde_json::Value> = errors.iter().map(|e| spread(e)).collect();
    let tree_skew: Vec<serde_json::Value> = errors
        .iter()
        .map(|e| {
            let d: Vec<i64> = e.iter().zip(&errors[0]).map(|(a, b)| a - b).collect();
            spread(&d)
        })
        .collect();
    // How wrong each terminal's idea of the tree's time is (the district
    // runs on the system clock, so the truth is the system clock).
    let estimates: Vec<(i64, i64)> = district
        .terminals
        .iter()
        .map(|t| {
            let c = t.handle().tree_clock();
            let error = c.now() - transport::clock::system_now_us();
            (error, c.estimate().uncertainty_us)
        })
        .collect();
    let mut district = district;
    let lines: Vec<Timeline> = district
        .stop_terminals()
        .await
        .iter()
        .map(|d| Timeline::read(&d.join("card.tl")))
        .collect::<Result<_, _>>()?;
    let (from, to) = lines[0]
        .extent()
        .ok_or_else(|| anyhow::anyhow!("terminal 0 played nothing"))?;
    let mut all = Vec::new();
    let mut per_terminal = Vec::new();
    per_terminal.push(serde_json::json!({
        "terminal": 0,
        "rtt_ms": rtt_ms(0),
        "clock_offset_us": clocks[0].0,
        "clock_drift_ppb": clocks[0].1,
        "card_drift_ppb": clocks[0].2,
        "tree_time_error_us": estimates[0].0,
        "uncertainty_us": estimates[0].1,
        "tree_error_while_playing_us": tree_error[0],
    }));
    for (i, l) in lines.iter().enumerate().skip(1) {
        let skew = l.skew_against(
            &lines[0],
            (from + 500_000, to - 500_000),
            500_000,
            250_000,
            50_000,
        );
        let mut abs: Vec<f64> = skew.iter().map(|s| s.abs()).collect();
        abs.sort_by(f64::total_cmp);
        per_terminal.push(serde_json::json!({
            "terminal": i,
            "rtt_ms": rtt_ms(i),
            "clock_offset_us": clocks[i].0,
            "clock_drift_ppb": clocks[i].1,
            "card_drift_ppb": clocks[i].2,
            "tree_time_error_us": estimates[i].0,
            "uncertainty_us": estimates[i].1,
            "tree_error_while_playing_us": tree_error[i],
            "tree_skew_while_playing_us": tree_skew[i],
            "windows": abs.len(),
            "p50_us": percentile(&abs, 0.5).round(),
            "max_us": abs.last().copied().unwrap_or(f64::NAN).round(),
        }));
        all.extend(abs);
    }
    all.sort_by(f64::total_cmp);
    // With asymmetric paths no two-way measurement can see half the
    // asymmetry: terminal i errs by up to rtt_i/20, so a pair by the
    // difference of theirs.
    let bound_us = if a.asymmetric {
        (1..n)
            .map(|i| (rtt_ms(i) - rtt_ms(0)).abs() / 20.0 * 1000.0)
            .fold(0.0, f64::max)
    } else {
        0.0
    };
    let out = serde_json::json!({
        "bench": "skew",
        "terminals": n,
        "asymmetric": a.asymmetric,
        "warmup_s": a.warmup_s,
        "audio_s": a.secs,
        "windows": all.len(),
        "skew_p50_us": percentile(&all, 0.5).round(),
        "skew_p99_us": percentile(&all, 0.99).round(),
        "skew_max_us": all.last().copied().unwrap_or(f64::NAN).round(),
        "asymmetry_bound_us": bound_us.round(),
        "per_terminal": per_terminal,
    });
    println!("{out}");
    Ok(())
}
