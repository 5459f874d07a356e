//! The real loudspeaker path through cpal and ALSA, without a sound card:
//! ALSA's file plugin records what the speaker sink played; it must be the
//! audio that went in. Runs with `--features cpal` (CI installs ALSA).
#![cfg(feature = "cpal")]

use std::path::Path;

use codec::ingest::{FileSource, Limits};
use codec::resample::StreamResampler;

#[test]
fn what_the_speaker_plays_is_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let capture = std::env::var("KEEP_CAPTURE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| dir.path().join("speaker.wav"));
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/alsa-capture.conf");
    // One process per test binary: ALSA reads these when it first loads.
    std::env::set_var("ALSA_CONFIG_PATH", &conf);
    std::env::set_var("AUDIO_CAPTURE_FILE", &capture);

    // Five seconds of the Mandarin alert at 16 kHz.
    let asset = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/audio/alert-zh.wav");
    let mut src = FileSource::open(&asset, Limits::default()).unwrap();
    let mut r = StreamResampler::new(src.sample_rate(), 16_000).unwrap();
    let mut source = Vec::new();
    while let Some(c) = src.next_chunk().unwrap() {
        r.push(&c, &mut source).unwrap();
    }
    r.finish(&mut source).unwrap();
    source.truncate(16_000 * 5);

    let mut sink = codec::open_sink("speaker", 16_000).expect("the headless ALSA device opens");
    println!("sink: {}", sink.describe());
    for chunk in source.chunks(320) {
        sink.write(chunk).unwrap();
    }
    sink.stop().unwrap();
    drop(sink);

    let mut reader = hound::WavReader::open(&capture).expect("ALSA wrote a WAV file");
    let spec = reader.spec();
    let channels = spec.channels as usize;
    let captured: Vec<i16> = reader.samples::<i16>().map(|s| s.unwrap()).collect();
    let left: Vec<f64> = captured.chunks(channels).map(|c| c[0] as f64).collect();

    let mut expected = Vec::new();
    let mut up = StreamResampler::new(16_000, spec.sample_rate).unwrap();
    up.push(&source, &mut expected).unwrap();
    up.finish(&mut expected).unwrap();
    let expected: Vec<f64> = expected
        .iter()
        .map(|s| codec::sink::to_i16(*s) as f64)
        .collect();

    // The null device consumes far faster than real time, so the file holds
    // the audio in bursts separated by digital silence wherever the sink's
    // queue ran dry. Compare content: every burst must be the next piece of
    // the source, in order, and together they must carry all of it.
    let mut cursor = 0usize;
    let mut matched_energy = 0f64;
    let mut bursts = 0;
    for (start, end) in bursts_of(&left, 8) {
        let burst = &left[start..end];
        let energy: f64 = burst.iter().map(|x| x * x).sum();
        if burst.len() < 256 || (energy / burst.len() as f64).sqrt() < 50.0 {
            continue; // near-silence: rounding, not content
        }
        // Locate the burst by its loudest stretch (its start may be near-silence).
        let len = burst.len().min(1000);
        let k = (0..=burst.len() - len)
            .step_by(100)
            .max_by(|a, b| {
                let e = |i: usize| burst[i..i + len].iter().map(|x| x * x).sum::<f64>();
                e(*a).total_cmp(&e(*b))
            })
            .unwrap_or(0);
        let probe = &burst[k..k + len];
        let lo = cursor + k;
        let hi = (lo + spec.sample_rate as usize).min(expected.len().saturating_sub(len));
        let found = (lo..=hi.max(lo))
            .map(|o| (o, correlation(&expected[o..], probe)))
            .fold((lo, f64::MIN), |b, x| if x.1 > b.1 { x } else { b })
            .0;
        let offset = found - k;
        let c = correlation(&expected[offset..], burst);
        assert!(
            c > 0.99,
            "burst of {} samples at {start} matches the source at {offset} only with {c:.3}",
            burst.len()
        );
        matched_energy += energy;
        cursor = offset + burst.len();
        bursts += 1;
    }
    let total_energy: f64 = expected.iter().map(|x| x * x).sum();
    println!(
        "captured {} Hz x {} ch: {bursts} bursts matching the source in order, {:.2} % of its energy",
        spec.sample_rate,
        channels,
        100.0 * matched_energy / total_energy
    );
    assert!(bursts >= 1);
    assert!(
        matched_energy / total_energy > 0.99,
        "only {:.2} % of the source was played",
        100.0 * matched_energy / total_energy
    );
    assert!(
        cursor + spec.sample_rate as usize / 10 >= expected.len(),
        "played up to {cursor} of {}",
        expected.len()
    );
}

/// Spans of `v` separated by runs of at least `gap` exact zeros.
fn bursts_of(v: &[f64], gap: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let (mut start, mut zeros) = (None, 0usize);
    for (i, x) in v.iter().enumerate() {
        if *x == 0.0 {
            zeros += 1;
            if zeros == gap {
                if let Some(s) = start.take() {
                    out.push((s, i + 1 - gap));
                }
            }
        } else {
            start.get_or_insert(i);
            zeros = 0;
        }
    }
    if let Some(s) = start {
        out.push((s, v.len()));
    }
    out
}

/// Normalised correlation of `b` against the start of `a`.
fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for i in 0..n {
        ab += a[i] * b[i];
        aa += a[i] * a[i];
        bb += b[i] * b[i];
    }
    ab / (aa.sqrt() * bb.sqrt()).max(1e-12)
}
