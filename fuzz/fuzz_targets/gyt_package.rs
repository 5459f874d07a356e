//! A GY/T package as the listener takes it: the tar read with its bounds,
//! then verify-before-parse against a trust store. Never a panic, and
//! nothing verifies without the sender's key.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = gateway::SmKey::from_hex(
        "F1",
        "3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8",
    )
    .expect("the standard's example key");
    let trust = gateway::TrustStore::new(vec![
        gateway::Sender::new("fuzz", "F1", &key.public_hex()).expect("its public key"),
    ]);
    if let Ok(p) = gateway::package::Package::read(data, gateway::package::MAX_PACKAGE_BYTES) {
        let _ = p.data();
        // What it reads, it writes back to the same files.
        let again = gateway::package::Package::read(&p.write(), usize::MAX).expect("our own tar reads");
        assert_eq!(again.files.len(), p.files.len());
    }
    assert!(gateway::gyt::receive(data, &trust).is_err(), "a forged package verified");
});
