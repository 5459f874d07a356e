//! Shared helpers for the cross-crate integration tests in tests/tests/.

pub mod adversary;
pub mod fire;
pub mod flood;
pub mod forge;
pub mod impair;
pub mod range;

/// One series' value from a Prometheus text page (0 when absent).
pub fn metric(page: &str, series: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

use std::path::{Path, PathBuf};
use std::time::Duration;

use certs::pki::Layout;
use codec::ingest::{FileSource, Limits};
use codec::resample::StreamResampler;
use testbed::{LocalDistrict, LocalOptions};

pub fn asset(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../assets/audio")
        .join(name)
}

/// Decodes an asset to mono 16 kHz.
pub fn pcm16k(name: &str) -> Vec<f32> {
    let mut src = FileSource::open(&asset(name), Limits::default()).expect("asset opens");
    let mut r = StreamResampler::new(src.sample_rate(), 16_000).expect("resampler");
    let mut out = Vec::new();
    while let Some(c) = src.next_chunk().expect("asset decodes") {
        r.push(&c, &mut out).expect("resample");
    }
    r.finish(&mut out).expect("resample");
    out
}

/// Writes the first `seconds` of an asset as a 16 kHz WAV clip.
pub fn clip(name: &str, seconds: f32, out: &Path) -> Vec<f32> {
    let mut pcm = pcm16k(name);
    pcm.truncate((seconds * 16_000.0) as usize);
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(out, spec).expect("clip file");
    for s in &pcm {
        w.write_sample(codec::sink::to_i16(*s)).expect("clip write");
    }
    w.finalize().expect("clip finalize");
    pcm
}

/// What a terminal should play of `path`: its ingest (normalised, encoded,
/// corrected after the codec) decoded again. The reference for correlation.
pub fn normalised(path: &Path) -> Vec<f32> {
    use codec::FrameDecoder;
    let cfg = codec::IngestConfig::default();
    let encoded = codec::ingest_file(path, &cfg, &mut |_| {}).expect("ingest");
    let mut decoder = codec::OpusFrameDecoder::new(encoded.sample_rate).expect("decoder");
    let mut frame = vec![0.0; decoder.frame_samples()];
    let mut out = Vec::new();
    for f in &encoded.frames {
        decoder.decode(f, &mut frame).expect("decode");
        out.extend_from_slice(&frame);
    }
    out
}

/// Best normalised correlation of `played` against `reference` over lags 0..max_lag.
pub fn correlation(reference: &[f32], played: &[f32], max_lag: usize) -> f64 {
    codec::measure::best_correlation(reference, played, max_lag).0
}

pub fn read_wav(path: &Path) -> Vec<f32> {
    match hound::WavReader::open(path) {
        Ok(mut r) => r
            .samples::<i16>()
            .map(|s| s.unwrap_or(0) as f32 / 32768.0)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Stops every terminal of a district started with `LocalOptions::wav`
/// (each WAV file gets its header) and reads what each played: (the file,
/// its samples).
pub async fn played_wavs(district: &mut LocalDistrict) -> Vec<(PathBuf, Vec<f32>)> {
    district
        .stop_terminals()
        .await
        .into_iter()
        .map(|d| {
            let p = d.join("played.wav");
            let pcm = read_wav(&p);
            (p, pcm)
        })
        .collect()
}

/// A small district on loopback: every terminal writes a WAV file.
pub async fn small_district(dir: &Path, layout: Layout) -> LocalDistrict {
    let d = LocalDistrict::start(LocalOptions::wav(layout, dir))
        .await
        .expect("district starts");
    assert_eq!(
        d.wait_connected(Duration::from_secs(20)).await,
        d.terminals.len(),
        "every terminal connects"
    );
    d
}

/// A district whose platform takes alerts from above (`gateway`), every
/// terminal connected; with `voice` false it speaks no text (an alert
/// without audio waits for it, on any machine).
pub async fn district_taking_alerts(
    dir: &Path,
    layout: Layout,
    gateway: platform::alerts::GatewayConfig,
    voice: bool,
) -> LocalDistrict {
    let mut opts = LocalOptions::wav(layout, dir);
    opts.configure = Box::new(move |name, c| {
        if name == "district" {
            c.gateway = Some(gateway.clone());
            if !voice {
                c.tts.program = String::new();
            }
        }
    });
    let d = LocalDistrict::start(opts).await.expect("district starts");
    assert_eq!(
        d.wait_connected(Duration::from_secs(20)).await,
        d.terminals.len(),
        "every terminal connects"
    );
    d
}

/// A console page as the browser with session `cookie` gets it (200).
pub async fn page(http: &reqwest::Client, url: String, cookie: &str) -> String {
    let r = http.get(url).header("cookie", cookie).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// Sends an API request: its status and JSON answer (null if not JSON).
pub async fn answer(r: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let resp = r.send().await.expect("the API answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// Waits until `check` holds or the timeout passes.
pub async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check()
}

/// Waits until the async `check` holds or the timeout passes.
pub async fn eventually_async<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Whether espeak-ng is here to speak typed text. `EBS_TTS_TESTS=1` (CI)
/// makes its absence a failure; otherwise a test without it says it
/// skipped.
pub fn voice_installed() -> bool {
    let found = tts::EspeakNg::find(Path::new("espeak-ng"), 150).is_ok();
    if !found {
        assert!(
            std::env::var_os("EBS_TTS_TESTS").is_none(),
            "EBS_TTS_TESTS is set but espeak-ng is missing"
        );
        eprintln!("skipped: espeak-ng is not installed (apt install espeak-ng)");
    }
    found
}

/// Logs `name` in to the console at `base`: the session cookie
/// (`ebs_session=…`) to send with page requests.
pub async fn login(base: &str, name: &str, password: &str) -> String {
    let resp = reqwest::Client::new()
        .post(format!("{base}/api/login"))
        .json(&serde_json::json!({"name": name, "password": password}))
        .send()
        .await
        .expect("the API answers");
    assert_eq!(resp.status(), 200, "login of {name}");
    let c = resp.headers()["set-cookie"]
        .to_str()
        .expect("a cookie")
        .to_string();
    c.split(';').next().unwrap_or_default().to_string()
}
