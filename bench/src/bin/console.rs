//! System-level harness: what the console costs with a full district
//! (600 terminals) and 20 live broadcasts: the weight of each page and its
//! assets, the server's time to render the overview, and the bytes and
//! events per second its two live streams (SSE) send. Prints one JSON line.
//!
//! `cargo run --release -p bench --bin console -- [TERMINALS] [BROADCASTS] [SSE_SECONDS]`

use std::time::{Duration, Instant};

use anyhow::Context;
use testbed::{LocalDistrict, LocalOptions};

async fn login(base: &str, name: &str, password: &str) -> anyhow::Result<String> {
    let r = reqwest::Client::new()
        .post(format!("{base}/api/login"))
        .json(&serde_json::json!({"name": name, "password": password}))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "login: {}", r.status());
    let c = r.headers()["set-cookie"].to_str()?.to_string();
    Ok(c.split(';').next().unwrap_or_default().to_string())
}

/// (bytes, events) an SSE stream sent in `seconds`.
async fn sse(base: &str, path: &str, cookie: &str, seconds: u64) -> anyhow::Result<(usize, usize)> {
    let mut r = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .header("cookie", cookie)
        .send()
        .await?;
    let (mut bytes, mut events) = (0, 0);
    let end = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(end, r.chunk()).await {
        bytes += chunk.len();
        events += String::from_utf8_lossy(&chunk).matches("\nevent: ").count()
            + String::from_utf8_lossy(&chunk).starts_with("event: ") as usize;
    }
    Ok((bytes, events))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let terminals = args.first().copied().unwrap_or(600);
    let broadcasts = args.get(1).copied().unwrap_or(20);
    let seconds = args.get(2).copied().unwrap_or(60) as u64;
    let dir = tempfile::tempdir()?;
    let mut opts = LocalOptions::null(dir.path());
    opts.layout = certs::pki::Layout {
        terminals,
        ..certs::pki::Layout::DISTRICT
    };
    let d = LocalDistrict::start(opts).await?;
    d.wait_connected(Duration::from_secs(180)).await;
    let api = d.district_api();
    // Broadcasts to different villages, long enough to stay live.
    let clip = dir.path().join("clip.wav");
    let pcm: Vec<f32> = (0..16_000 * 120)
        .map(|i| ((i as f32) * 0.05).sin() * 0.3)
        .collect();
    let spec = hound_spec();
    let mut w = hound::WavWriter::create(&clip, spec)?;
    for s in pcm {
        w.write_sample((s * 32767.0) as i16)?;
    }
    w.finalize()?;
    for (i, v) in d.villages.iter().take(broadcasts).enumerate() {
        api.issue(
            &clip,
            &[
                ("areas", v.area.to_string()),
                (
                    "class",
                    if i % 4 == 3 { "drill" } else { "emergency" }.into(),
                ),
                ("severity", ((i % 4) + 1).to_string()),
                ("title", format!("压力测试广播 {i}")),
            ],
        )
        .await
        .with_context(|| format!("broadcast {i}"))?;
    }
    let base = api.base().to_string();
    let cookie = login(&base, &d.creds.drafter.name, &d.creds.drafter.password).await?;
    let http = reqwest::Client::new();
    // Each page's bytes as sent plainly and gzipped.
    let mut pages = serde_json::Map::new();
    for p in [
        "/",
        "/terminals",
        "/compose",
        "/review",
        "/security",
        "/certificates",
        "/assets/console.js",
        "/assets/console.css",
    ] {
        let mut sizes = Vec::new();
        for encoding in ["identity", "gzip"] {
            let body = http
                .get(format!("{base}{p}"))
                .header("cookie", &cookie)
                .header("accept-encoding", encoding)
                .send()
                .await?
                .bytes()
                .await?;
            sizes.push(body.len());
        }
        pages.insert(
            p.to_string(),
            serde_json::json!({"plain": sizes[0], "gzip": sizes[1]}),
        );
    }
    let mut render_ms = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        http.get(format!("{base}/"))
            .header("cookie", &cookie)
            .send()
            .await?
            .bytes()
            .await?;
        render_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    render_ms.sort_by(f64::total_cmp);
    let (ob, oe) = sse(&base, "/console/live/overview", &cookie, seconds).await?;
    let (tb, te) = sse(&base, "/console/live/terminals", &cookie, seconds).await?;
    let live = d
        .district
        .relay
        .broadcasts
        .current(platform::now_ms())
        .len();
    println!(
        "{}",
        serde_json::json!({
            "terminals": d.terminals.len(),
            "live_broadcasts": live,
            "page_bytes": pages,
            "overview_ms_p50": (render_ms[render_ms.len() / 2] * 10.0).round() / 10.0,
            "overview_ms_max": (render_ms[render_ms.len() - 1] * 10.0).round() / 10.0,
            "sse_seconds": seconds,
            "sse_overview_bytes_per_s": ob as u64 / seconds,
            "sse_overview_events": oe,
            "sse_terminals_bytes_per_s": tb as u64 / seconds,
            "sse_terminals_events": te,
        })
    );
    Ok(())
}

fn hound_spec() -> hound::WavSpec {
    hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    }
}
