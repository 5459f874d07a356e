//! No audio device: opening the loudspeaker is a clear error, not a panic.
#![cfg(feature = "cpal")]

use std::path::Path;

#[test]
fn a_missing_device_is_a_reported_error() {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/alsa-none.conf");
    std::env::set_var("ALSA_CONFIG_PATH", &conf);
    match codec::open_sink("speaker", 16_000) {
        Err(e @ (codec::SinkError::DeviceUnavailable(_) | codec::SinkError::Device(_))) => {
            println!("refused as expected: {e}")
        }
        Err(e) => panic!("unexpected error kind: {e}"),
        Ok(s) => panic!("opened {}", s.describe()),
    }
}
