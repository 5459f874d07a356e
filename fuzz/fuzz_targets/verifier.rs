//! The verifier fed arbitrary frames after a genuine header: nothing but the
//! genuine segments may ever be accepted, and no forged revocation list
//! ever applies.
#![no_main]
use std::sync::OnceLock;

use certs::pki::{DistrictPki, Layout};
use certs::TrustAnchor;
use libfuzzer_sys::fuzz_target;
use protocol::testing::recorded_broadcast;
use protocol::*;

const NOW_S: i64 = 1_800_000_000;
const NOW: i64 = NOW_S * 1000;

struct Fixture {
    pki: DistrictPki,
    header: SignedHeader,
    segments: Vec<Segment>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let pki = DistrictPki::generate(Layout::ONE_OF_EACH, (NOW_S - 100, NOW_S + 86_400), NOW_S).unwrap();
        let (header, segments) = recorded_broadcast(&pki.district, 1, vec![pki.district.cert().scope()[0]], NOW, 4);
        Fixture { pki, header, segments }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mut v = Verifier::new(
        TrustAnchor::new(f.pki.root.cert().clone()).unwrap(),
        Audience::Terminal { area: f.pki.towns[0].villages[0].area },
        Policy::default(),
        MemoryReplayStore::new(),
    );
    v.accept_header(&f.header, NOW).unwrap();
    let mut reader = FrameReader::new();
    let Ok(frames) = reader.push(data) else { return };
    for raw in frames {
        match raw.message() {
            Ok(Message::Header(h)) => {
                if v.accept_header(&h, NOW).is_ok() {
                    assert_eq!(h.body(), f.header.body(), "only the genuine header verifies");
                }
            }
            Ok(Message::Segment(s)) => {
                if v.accept_segment(&s, NOW).is_ok() {
                    assert!(f.segments.iter().any(|g| g.body() == s.body()), "only genuine segments verify");
                }
            }
            Ok(Message::Revocation(l)) => {
                // No list in the fixture is genuine: none may ever apply.
                assert!(v.apply_revocation(l, NOW).is_err(), "a forged revocation list applied");
            }
            _ => {}
        }
    }
});
