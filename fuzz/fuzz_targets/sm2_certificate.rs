//! An SM2 certificate as configured for a GY/T source or CA (PEM or DER):
//! read, bounded, never a panic; one that reads yields an SM2 key, and
//! checking it against itself as CA or at any time only answers.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cert) = gateway::cert::SmCertificate::parse(data) {
        assert_eq!(cert.public_key.len(), 65);
        assert_eq!(cert.public_key[0], 4);
        let _ = cert.verify_issued_by(&cert);
        let _ = cert.valid_at(std::time::Duration::from_secs(cert.not_before_s));
        let _ = cert.sender("fuzz", &cert.serial);
    }
});
