//! Certificate and revocation-list decoders, and their PEM forms.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = certs::Certificate::decode(data) {
        assert_eq!(c.as_bytes(), data);
    }
    if let Ok(l) = certs::RevocationList::decode(data) {
        assert_eq!(l.encode(), data);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = certs::Certificate::all_from_pem(text);
        let _ = certs::RevocationList::from_pem(text);
        let _ = certs::SecretKey::from_pem(text, "fuzz");
    }
});
