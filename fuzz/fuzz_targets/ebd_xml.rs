//! The data of an EBD (read only after its signature verified, but
//! parsed as if hostile) and a detached signature file.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ebd) = gateway::ebd::Ebd::parse(data) {
        assert!(!ebd.id.is_empty() && ebd.id.len() <= 64);
        if let gateway::ebd::EbdBody::Ebm(m) = &ebd.body {
            assert!(m.end_ms > m.start_ms);
            assert!(m.areas.iter().all(|a| a.len() == 12));
        }
    }
    let _ = gateway::sm::SignatureFile::parse(data);
});
