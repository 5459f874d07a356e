//! Live input through cpal: the microphone hears a known recording (ALSA's
//! file plugin feeds the capture device) and delivers it as 20 ms frames.
#![cfg(feature = "cpal")]

use std::path::Path;
use std::time::Duration;

use codec::device::Microphone;
use codec::ingest::{FileSource, Limits};
use codec::resample::StreamResampler;

fn load(rate: u32) -> Vec<f32> {
    let asset = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/audio/alert-zh.wav");
    let mut src = FileSource::open(&asset, Limits::default()).unwrap();
    let mut r = StreamResampler::new(src.sample_rate(), rate).unwrap();
    let mut out = Vec::new();
    while let Some(c) = src.next_chunk().unwrap() {
        r.push(&c, &mut out).unwrap();
    }
    r.finish(&mut out).unwrap();
    out.truncate(rate as usize * 4);
    out
}

#[test]
fn the_microphone_delivers_what_it_hears_in_20ms_frames() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.raw");
    let heard = load(48_000);
    let bytes: Vec<u8> = heard
        .iter()
        .flat_map(|s| codec::sink::to_i16(*s).to_le_bytes())
        .collect();
    std::fs::write(&input, bytes).unwrap();
    std::env::set_var(
        "ALSA_CONFIG_PATH",
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/alsa-input.conf"),
    );
    std::env::set_var("AUDIO_INPUT_FILE", &input);

    let mut mic = Microphone::open_default(16_000).expect("the headless capture device opens");
    let mut captured = Vec::new();
    while captured.len() < 16_000 * 5 {
        match mic.next_frame(Duration::from_secs(5)).unwrap() {
            Some(frame) => {
                assert_eq!(frame.len(), 320, "20 ms at 16 kHz");
                captured.extend(frame);
            }
            None => break,
        }
    }
    drop(mic);
    if let Ok(k) = std::env::var("KEEP_CAPTURE") {
        std::fs::write(
            &k,
            captured
                .iter()
                .flat_map(|s| s.to_le_bytes())
                .collect::<Vec<u8>>(),
        )
        .unwrap();
    }

    let expected = load(16_000);
    let start = captured
        .iter()
        .position(|s| s.abs() > 1e-3)
        .expect("sound was captured");
    let got = &captured[start..];
    let from = expected.iter().position(|s| s.abs() > 1e-3).unwrap();
    let expected = &expected[from..];
    let best = codec::measure::best_correlation(expected, got, 100).0;
    println!(
        "captured {} samples; correlation with what the microphone heard: {best:.4}",
        captured.len()
    );
    assert!(best > 0.98, "{best}");
}
