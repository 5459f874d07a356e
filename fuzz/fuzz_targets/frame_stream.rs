//! The streaming frame reader fed arbitrary bytes in arbitrary chunks, and
//! every frame it yields decoded.
#![no_main]
use libfuzzer_sys::fuzz_target;
use protocol::FrameReader;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else { return };
    let mut reader = FrameReader::new();
    for piece in rest.chunks(chunk.max(1) as usize) {
        match reader.push(piece) {
            Ok(frames) => {
                for f in frames {
                    let _ = f.message();
                }
            }
            Err(_) => break,
        }
        assert!(reader.buffered() <= 200_000);
    }
});
