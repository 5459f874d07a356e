//! Live voice from the microphone: the capture device (ALSA's file plugin
//! feeds it a known recording, as CI has no sound card) is streamed by
//! `platform live`'s code to the district, through town and village, to
//! the terminals; what they played is what the microphone heard.
#![cfg(feature = "microphone")]

use std::path::Path;
use std::time::Duration;

use certs::pki::Layout;
use platform::live_client::{stream, LiveClient, LiveSource};
use serde_json::json;
use tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_microphone_is_heard_on_every_terminal() {
    let dir = tempfile::tempdir().unwrap();
    // What the microphone hears: 48 kHz S16 mono, raw.
    let clip_path = dir.path().join("speech.wav");
    let source = clip("alert-zh.wav", 4.0, &clip_path);
    let mut at48 = Vec::new();
    let mut r = codec::resample::StreamResampler::new(16_000, 48_000).unwrap();
    r.push(&source, &mut at48).unwrap();
    r.finish(&mut at48).unwrap();
    let raw: Vec<u8> = at48
        .iter()
        .flat_map(|s| codec::sink::to_i16(*s).to_le_bytes())
        .collect();
    let input = dir.path().join("input.raw");
    std::fs::write(&input, raw).unwrap();
    std::env::set_var(
        "ALSA_CONFIG_PATH",
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../codec/tests/alsa-input.conf"),
    );
    std::env::set_var("AUDIO_INPUT_FILE", &input);

    let district = small_district(
        dir.path(),
        Layout {
            towns: 1,
            villages: 1,
            terminals: 2,
        },
    )
    .await;
    let base = format!("http://{}", district.district.http_addr.unwrap());
    let open = json!({
        "areas": district.district.relay.scope[0].to_string(),
        "class": "daily",
        "title": "村务喊话",
        "format": "pcm16",
    });
    let (client, answer) = LiveClient::open(&base, &district.creds.drafter.token, open)
        .await
        .unwrap();
    assert_eq!(answer["state"], "on_air", "{answer}");
    let id: protocol::BroadcastId = answer["id"].as_str().unwrap().parse().unwrap();
    let summary = stream(
        client,
        LiveSource::Microphone,
        Some(5),
        std::future::pending(),
    )
    .await
    .unwrap();
    println!("{summary}");
    assert_eq!(summary["state"], "ended", "{summary}");
    assert!(summary["frames"].as_u64().unwrap() >= 200, "{summary}");

    let finished = district.all_finished(id, Duration::from_secs(15)).await;
    assert!(finished, "every terminal played to the end marker");
    let mut district = district;
    let played_wavs = played_wavs(&mut district).await;
    let from = source.iter().position(|s| s.abs() > 1e-3).unwrap();
    for (p, played) in played_wavs {
        let start = played
            .iter()
            .position(|s| s.abs() > 1e-3)
            .expect("sound played");
        let c = correlation(&source[from..from + 32_000], &played[start..], 2_000);
        println!(
            "{}: {} samples, correlation {c:.3}",
            p.display(),
            played.len()
        );
        assert!(c > 0.85, "{}: correlation {c}", p.display());
    }
}
