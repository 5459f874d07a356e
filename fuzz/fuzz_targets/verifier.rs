//! The verifier fed arbitrary frames after a genuine header: nothing but the
//! genuine segments may ever be accepted, no forged revocation list ever
//! applies, no programme but the genuine one and no audio chunk but its
//! own verify, and no quiet hours are forged.
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
    programme: SignedProgramme,
    chunks: Vec<Vec<Vec<u8>>>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let pki = DistrictPki::generate(Layout::ONE_OF_EACH, (NOW_S - 100, NOW_S + 86_400), NOW_S).unwrap();
        let county = pki.district.cert().scope()[0];
        let (header, segments) = recorded_broadcast(&pki.district, 1, vec![county], NOW, 4);
        let day = protocol::schedule::local_day(NOW, 480) as u32;
        let schedule = Schedule { utc_offset_minutes: 480, first_day: day, last_day: day + 1, weekdays: 0x7F, times: vec![3600] };
        let frames: Vec<Vec<u8>> = (0..120).map(protocol::testing::fake_frame).collect();
        let p = protocol::testing::programme(&pki.district, 2, vec![county], NOW, schedule, &frames);
        let programme = SignedProgramme::sign(p, &pki.district).unwrap();
        let chunks = frames.chunks(50).map(|c| c.to_vec()).collect();
        Fixture { pki, header, segments, programme, chunks }
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
            Ok(Message::Programme(p)) => {
                if v.accept_programme(&p, None, NOW).is_ok() {
                    assert_eq!(p.body(), f.programme.body(), "only the genuine programme verifies");
                }
            }
            Ok(Message::ProgrammeChunk(c)) => {
                if v.accept_chunk(&c, Some(f.programme.programme())).is_ok() {
                    assert!(f.chunks.get(c.index as usize) == Some(&c.frames), "only its own audio matches");
                }
            }
            Ok(Message::QuietHours(q)) => {
                assert!(v.accept_quiet_hours(&q, None, NOW).is_err(), "forged quiet hours verified");
            }
            _ => {}
        }
    }
});
