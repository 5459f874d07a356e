//! P2: live voice, mouth to ear. A speaker streams Mandarin speech over the
//! district's WebSocket at the pace it is spoken; district → town →
//! village relay it; each terminal's last hop runs through the seeded
//! impairment proxy (100 ms round trip with a fifth as jitter, 2 % loss
//! each way) and it plays into a modelled sound card that records the true
//! time each sample leaves it. Mouth-to-ear is the lag between when a
//! stretch of audio was handed to the WebSocket and when the card played
//! it, by cross-correlation in 200 ms windows, one a second. Prints one JSON line.
//!
//! `cargo run --release -p bench --bin mouth_to_ear -- [--terminals 4] [--secs 30]`
//! (`M2E_DEBUG=1` prints every window's lag, per terminal, on stderr)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use certs::pki::Layout;
use codec::timeline::Timeline;
use testbed::live::LiveClient;
use testbed::{LocalDistrict, LocalOptions};
use tests::impair::{Impairment, Proxy};

/// `secs` of Mandarin speech (the alert, repeated): not periodic, so the
/// correlation has one peak.
fn speech(secs: u64) -> anyhow::Result<Vec<i16>> {
    let mut pcm = Vec::new();
    codec::normalise_file(
        &testbed::asset("alert-zh.wav"),
        &codec::IngestConfig::default(),
        &mut |_| {},
        &mut |c| {
            pcm.extend_from_slice(c);
            Ok(())
        },
    )?;
    let want = secs as usize * 16_000;
    Ok(pcm
        .iter()
        .cycle()
        .take(want)
        .map(|s| codec::sink::to_i16(*s))
        .collect())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut terminals = 4usize;
    let mut secs = 30u64;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v: u64 = it
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a number"))?;
        match flag.as_str() {
            "--terminals" => terminals = v.clamp(1, 32) as usize,
            "--secs" => secs = v.clamp(5, 600),
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let dir = tempfile::tempdir()?;
    let proxies: Arc<Mutex<Vec<Proxy>>> = Arc::default();
    let made = proxies.clone();
    let district = LocalDistrict::start(LocalOptions {
        sink: Box::new(|_, dir| {
            Ok(codec::open_sink(
                &format!("card:0:{}", dir.join("card.tl").display()),
                16_000,
            )?)
        }),
        configure_terminal: Box::new(move |i, c| {
            let path = Impairment::cellular(Duration::from_millis(100), 0.02);
            let village = c.upstreams[0];
            let proxy = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(Proxy::start(
                    village,
                    path,
                    path,
                    7 + i as u64,
                ))
            });
            match proxy {
                Ok(p) => {
                    c.upstreams = vec![p.addr()];
                    made.lock().unwrap_or_else(|p| p.into_inner()).push(p);
                }
                Err(e) => eprintln!("terminal {i}: no proxy ({e})"),
            }
        }),
        ..LocalOptions::wav(
            Layout {
                towns: 1,
                villages: 1,
                terminals,
            },
            dir.path(),
        )
    })
    .await?;
    let connected = district.wait_connected(Duration::from_secs(60)).await;
    anyhow::ensure!(
        connected == terminals,
        "{connected} of {terminals} connected"
    );
    // Let the clocks settle through the impaired links.
    tokio::time::sleep(Duration::from_secs(20)).await;

    let base = format!(
        "http://{}",
        district
            .district
            .http_addr
            .ok_or_else(|| anyhow::anyhow!("no API"))?
    );
    let open = serde_json::json!({
        "areas": district.villages[0].area.to_string(),
        "class": "daily",
        "title": "延迟测量",
        "format": "pcm16",
    });
    let (mut live, answer) = LiveClient::open(&base, &district.creds.drafter.token, open).await?;
    anyhow::ensure!(answer["state"] == "on_air", "refused: {answer}");
    let id: protocol::BroadcastId = answer["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no id"))?
        .parse()?;
    let pcm = speech(secs)?;
    let mut spoken = Timeline {
        rate: 16_000,
        records: Vec::new(),
    };
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for frame in pcm.chunks(320) {
        tick.tick().await;
        // The moment this stretch is spoken: its last sample is handed over.
        let at = transport::clock::system_now_us() - 20_000;
        live.send_pcm(frame).await?;
        spoken.records.push((at, frame.to_vec()));
    }
    let summary = live.end().await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let records: Vec<_> = district
        .terminals
        .iter()
        .map(|t| {
            t.handle()
                .snapshot()
                .records
                .get(&id)
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    let mut district = district;
    let dirs = district.stop_terminals().await;
    let (from, to) = spoken
        .extent()
        .ok_or_else(|| anyhow::anyhow!("nothing spoken"))?;
    let mut all = Vec::new();
    for dir in &dirs {
        let heard = Timeline::read(&dir.join("card.tl"))?;
        // Shift the search: the lag is positive, up to 500 ms.
        let shifted = Timeline {
            rate: heard.rate,
            records: heard
                .records
                .iter()
                .map(|(at, p)| (at - 250_000, p.clone()))
                .collect(),
        };
        let lags = shifted.skew_against(&spoken, (from, to), 200_000, 1_000_000, 250_000);
        if std::env::var("M2E_DEBUG").is_ok() {
            eprintln!(
                "{:?}",
                lags.iter()
                    .map(|l| ((l + 250_000.0) / 1000.0).round())
                    .collect::<Vec<_>>()
            );
        }
        all.extend(lags.into_iter().map(|l| (l + 250_000.0) / 1000.0));
    }
    all.sort_by(f64::total_cmp);
    let sum = |f: fn(&terminal_agent::PlayRecord) -> u64| records.iter().map(f).sum::<u64>();
    let out = serde_json::json!({
        "bench": "mouth_to_ear",
        "terminals": terminals,
        "audio_s": secs,
        "last_hop": "100 ms RTT (±10 ms jitter each way), 2 % loss each way",
        "windows": all.len(),
        "p50_ms": (percentile(&all, 0.5) * 10.0).round() / 10.0,
        "p95_ms": (percentile(&all, 0.95) * 10.0).round() / 10.0,
        "p99_ms": (percentile(&all, 0.99) * 10.0).round() / 10.0,
        "max_ms": (all.last().copied().unwrap_or(f64::NAN) * 10.0).round() / 10.0,
        "frames_sent": summary["frames"],
        "frames_played": sum(|r| r.frames_played),
        "frames_recovered": sum(|r| r.frames_recovered),
        "frames_concealed": sum(|r| r.frames_concealed),
        "frames_late": sum(|r| r.frames_late),
        "budget_ms": {
            "segmenting (2 frames signed together)": 40,
            "playout delay named in the header (from the presentation time, which is when the segment's first sample was spoken)": 150,
            "of which the last hop's one-way delay and jitter": 60,
            "sound card queue (inside the playout delay: the aligner writes ahead)": 40,
        },
    });
    println!("{out}");
    Ok(())
}
