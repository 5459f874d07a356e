//! Codec speed: file ingest (decode + resample + normalise + Opus encode)
//! and Opus decode, reported by criterion per run; README converts them to
//! × real time on one core (audio seconds / processing seconds).
//!
//! Run: `cargo bench -p bench --bench codec`.

use std::path::PathBuf;

use codec::{FrameDecoder, IngestConfig, OpusFrameDecoder};
use criterion::{criterion_group, criterion_main, Criterion};

fn asset(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../assets/audio")
        .join(name)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    g.sample_size(10);
    let cfg = IngestConfig::default();
    for name in ["alert-zh.wav", "alert-zh.mp3", "notice-zh-48k.flac"] {
        let path = asset(name);
        let encoded = codec::ingest_file(&path, &cfg, &mut |_| {}).unwrap();
        let audio_s = encoded.duration_ms as f64 / 1000.0;
        g.bench_function(format!("ingest {name} ({audio_s:.1} s of audio)"), |b| {
            b.iter(|| codec::ingest_file(&path, &cfg, &mut |_| {}).unwrap())
        });
    }
    let encoded = codec::ingest_file(&asset("alert-zh.wav"), &cfg, &mut |_| {}).unwrap();
    let audio_s = encoded.frames.len() as f64 * 0.02;
    g.bench_function(
        format!("decode alert-zh Opus 16 kHz ({audio_s:.1} s of audio)"),
        |b| {
            b.iter(|| {
                let mut dec = OpusFrameDecoder::new(16_000).unwrap();
                let mut out = vec![0.0; 320];
                for f in &encoded.frames {
                    dec.decode(f, &mut out).unwrap();
                }
            })
        },
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
