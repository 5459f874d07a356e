//! What the district's API refuses at issue time, naming the field: audio
//! that would outlast its validity (every terminal would cut it off and
//! report it finished), and a silent emergency. A silent notice is
//! accepted with a warning.

use std::path::Path;

use certs::pki::{DistrictPki, Layout};
use testbed::node::{platform_config, provision, start_platform};
use testbed::ApiClient;

/// A tone of `seconds` at 8 kHz (small on disk).
fn tone(path: &Path, seconds: u32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..8_000 * seconds {
        let t = i as f32 / 8_000.0;
        w.write_sample(((t * 440.0 * std::f32::consts::TAU).sin() * 8_000.0) as i16)
            .unwrap();
    }
    w.finalize().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_longer_than_its_validity_and_silent_emergencies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let now = certs::time::unix_now();
    let pki = DistrictPki::generate(Layout::ONE_OF_EACH, (now - 60, now + 86_400), now).unwrap();
    let creds = testbed::Credentials::generate().unwrap();
    let district = start_platform(
        platform_config(dir.path(), "district", vec![]),
        provision(dir.path(), &pki.root, &pki.district, "district", now).unwrap(),
        &creds,
        true,
    )
    .await
    .unwrap();
    let api = ApiClient::of(&district, &creds).unwrap();
    let form = |class: &str, minutes: &str| {
        vec![
            ("areas", pki.district.cert().scope()[0].to_string()),
            ("class", class.to_string()),
            ("severity", "1".to_string()),
            ("title", "检查".to_string()),
            ("valid_minutes", minutes.to_string()),
        ]
    };

    let long = dir.path().join("long.wav");
    tone(&long, 70);
    let (status, body) = api
        .issue_form(&long, &form("emergency", "1"))
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "valid_minutes", "{body}");
    let e = body["message"].as_str().unwrap();
    assert!(
        e.contains("valid_minutes") && e.contains("70 s") && e.contains("at least 2"),
        "{e}"
    );
    let (status, body) = api
        .issue_form(&long, &form("emergency", "2"))
        .await
        .unwrap();
    // Accepted, and waiting for an approver (an emergency never goes out alone).
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["draft"]["state"], "submitted", "{body}");
    let draft = body["draft"]["id"].as_u64().unwrap();
    let approved = api.approve(draft, "核实无误").await.unwrap();
    assert_eq!(approved["state"], "published", "{approved}");
    assert_eq!(body["warnings"], serde_json::json!([]));

    let silence = tests::asset("silence-5s.wav");
    let (status, body) = api
        .issue_form(&silence, &form("emergency", "10"))
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "audio", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("silent"),
        "{body}"
    );
    let (status, body) = api
        .issue_form(&silence, &form("daily", "10"))
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    assert!(
        body["warnings"][0].as_str().unwrap().contains("silent"),
        "{body}"
    );
    assert!(
        body["id"].as_str().is_some(),
        "a daily notice needs no approval: {body}"
    );
    // Nothing refused was kept.
    let listed = api.get("/api/broadcasts").await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
}
