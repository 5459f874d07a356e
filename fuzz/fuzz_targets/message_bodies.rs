//! Every message body decoder: the first byte chooses the frame kind.
#![no_main]
use libfuzzer_sys::fuzz_target;
use protocol::{FrameKind, Message};

fuzz_target!(|data: &[u8]| {
    let Some((&k, body)) = data.split_first() else { return };
    let kinds = FrameKind::ALL;
    let kind = kinds[k as usize % kinds.len()];
    if let Ok(m) = Message::decode_body(kind, body) {
        // Whatever decodes re-encodes to the same bytes (canonical encoding).
        let frame = m.encode();
        assert_eq!(&frame[6..], body);
    }
});
