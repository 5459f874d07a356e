//! Property tests: every message round-trips through framing at any chunking;
//! a mutated byte anywhere in a header, segment, receipt, status or command
//! is never accepted; arbitrary bytes never panic a decoder.

use certs::pki::{DistrictPki, Layout};
use certs::{AreaCode, TrustAnchor};
use proptest::prelude::*;
use protocol::control::{Fault, PlayState, TimeRequest, TimeResponse};
use protocol::testing::recorded_broadcast;
use protocol::*;

const NOW_S: i64 = 1_800_000_000;
const NOW: i64 = NOW_S * 1000;

fn pki() -> &'static DistrictPki {
    static PKI: std::sync::OnceLock<DistrictPki> = std::sync::OnceLock::new();
    PKI.get_or_init(|| {
        DistrictPki::generate(Layout::ONE_OF_EACH, (NOW_S - 100, NOW_S + 86_400), NOW_S).unwrap()
    })
}

fn area() -> AreaCode {
    pki().towns[0].villages[0].area
}

fn broadcast() -> &'static (SignedHeader, Vec<Segment>) {
    static B: std::sync::OnceLock<(SignedHeader, Vec<Segment>)> = std::sync::OnceLock::new();
    B.get_or_init(|| {
        recorded_broadcast(
            &pki().district,
            1,
            vec![pki().district.cert().scope()[0]],
            NOW,
            2,
        )
    })
}

fn verifier() -> Verifier<MemoryReplayStore> {
    Verifier::new(
        TrustAnchor::new(pki().root.cert().clone()).unwrap(),
        Audience::Terminal { area: area() },
        Policy::default(),
        MemoryReplayStore::new(),
    )
}

fn terminal() -> &'static certs::Identity {
    &pki().towns[0].villages[0].terminals[0]
}

fn sample_messages() -> Vec<Message> {
    let (h, segs) = broadcast().clone();
    let t = terminal();
    let status = Status {
        terminal_serial: t.cert().serial(),
        seq: 7,
        sent_at_ms: NOW,
        volume: 80,
        muted: false,
        playing: Some(h.id()),
        state: PlayState::Playing,
        clock_offset_us: -1234,
        clock_uncertainty_us: 250,
        software: "terminal-agent 0.1.0".into(),
        faults: vec![Fault {
            code: 3,
            detail: "功放温度高".into(),
        }],
        revocation_numbers: vec![(1, 2)],
        refusals: vec![(RefusalReason::SegmentSignature, 3)],
        audio: Default::default(),
        cache: protocol::ProgrammeCache {
            programmes: 3,
            complete: 2,
            used_kb: 900,
            limit_kb: 16_384,
        },
    };
    let receipt = Receipt {
        broadcast: Some(h.id()),
        terminal_serial: t.cert().serial(),
        kind: ReceiptKind::Refused,
        reason: Some(RefusalReason::CertRevoked),
        at_ms: NOW,
        detail: 0,
    };
    let command = Command {
        command_id: 9,
        issued_at_ms: NOW,
        expires_at_ms: NOW + 1000,
        target_areas: vec![area()],
        target_terminals: vec![5],
        action: Action::Mute(true),
    };
    let list = certs::RevocationList::sign(
        pki().root.cert().serial(),
        vec![],
        &pki().root.key,
        1,
        NOW_S,
        vec![3],
    )
    .unwrap();
    vec![
        Message::Header(h),
        Message::Segment(segs[0].clone()),
        Message::Hello(Hello {
            tier: certs::Tier::Terminal,
            serial: 1,
            software: "x".into(),
        }),
        Message::Subscribe(Subscribe {
            resume: vec![(broadcast().0.id(), 4)],
        }),
        Message::Status(status.sign(&t.key)),
        Message::Receipt(receipt.sign(&t.key)),
        Message::Command(command.sign(&pki().towns[0].villages[0].identity)),
        Message::Revocation(list),
        Message::TimeRequest(TimeRequest { t0_us: 5 }),
        Message::TimeResponse(TimeResponse {
            t0_us: 5,
            t1_us: 9,
            t2_us: 10,
            epoch: 3,
        }),
    ]
}

/// True when the (possibly mutated) frame is accepted as genuine.
fn accepted(frame: &[u8]) -> bool {
    let mut reader = FrameReader::new();
    let Ok(frames) = reader.push(frame) else {
        return false;
    };
    let Some(raw) = frames.first() else {
        return false;
    };
    let Ok(msg) = raw.message() else { return false };
    let t = terminal();
    let mut v = verifier();
    match msg {
        Message::Header(h) => v.accept_header(&h, NOW).is_ok(),
        Message::Segment(s) => {
            v.accept_header(&broadcast().0, NOW)
                .expect("genuine header");
            v.accept_segment(&s, NOW).is_ok()
        }
        Message::Status(s) => s.signature_valid(&t.key.public()),
        Message::Receipt(r) => r.signature_valid(&t.key.public()),
        Message::Command(c) => v.accept_command(&c, 5, area(), NOW).is_ok(),
        Message::Revocation(l) => l
            .verify(
                &TrustAnchor::new(pki().root.cert().clone()).unwrap(),
                NOW_S,
                &Default::default(),
            )
            .is_ok(),
        _ => unreachable!("only signed kinds are mutated"),
    }
}

#[test]
fn genuine_signed_messages_are_accepted() {
    for m in sample_messages().iter().filter(|m| is_signed(m)) {
        assert!(accepted(&m.encode()), "{:?}", m.kind());
    }
}

fn is_signed(m: &Message) -> bool {
    matches!(
        m,
        Message::Header(_)
            | Message::Segment(_)
            | Message::Status(_)
            | Message::Receipt(_)
            | Message::Command(_)
            | Message::Revocation(_)
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn messages_round_trip_at_any_chunking(chunk in 1usize..300) {
        let messages = sample_messages();
        let stream: Vec<u8> = messages.iter().flat_map(Message::encode).collect();
        let mut reader = FrameReader::new();
        let mut got = Vec::new();
        for piece in stream.chunks(chunk) {
            got.extend(reader.push(piece).unwrap());
            prop_assert!(reader.buffered() <= 120_000);
        }
        let decoded: Vec<Message> = got.iter().map(|f| f.message().unwrap()).collect();
        prop_assert_eq!(decoded, messages);
    }

    #[test]
    fn a_mutated_byte_is_never_accepted(which in 0usize..6, index in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let signed: Vec<Message> = sample_messages().into_iter().filter(is_signed).collect();
        let mut frame = signed[which].encode();
        let i = index.index(frame.len());
        frame[i] ^= flip;
        prop_assert!(!accepted(&frame), "kind {:?}, byte {} ^ {:#04x}", signed[which].kind(), i, flip);
    }

    #[test]
    fn a_truncated_frame_is_never_accepted(which in 0usize..6, index in any::<prop::sample::Index>()) {
        let signed: Vec<Message> = sample_messages().into_iter().filter(is_signed).collect();
        let frame = signed[which].encode();
        let cut = index.index(frame.len());
        prop_assert!(!accepted(&frame[..cut]));
    }

    #[test]
    fn a_segment_peeked_says_what_it_decodes_to(which in 0usize..4) {
        let s = &broadcast().1[which.min(broadcast().1.len() - 1)];
        let peeked = Segment::peek(s.body()).unwrap();
        prop_assert_eq!(peeked, (s.seq, s.pts_us, s.last, s.frames.len() as u8));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let mut reader = FrameReader::new();
        if let Ok(frames) = reader.push(&bytes) {
            for f in frames {
                let _ = f.message();
            }
        }
        for kind in FrameKind::ALL {
            let _ = Message::decode_body(*kind, &bytes);
        }
        let _ = Segment::peek(&bytes);
    }
}

#[test]
fn oversized_lengths_are_refused_before_buffering() {
    for kind in FrameKind::ALL {
        let mut prefix = vec![1, kind.code()];
        prefix.extend_from_slice(&((kind.max_body() + 1) as u32).to_be_bytes());
        let mut reader = FrameReader::new();
        assert!(reader.push(&prefix).is_err(), "{kind:?}");
        assert_eq!(reader.buffered(), 0);
        // The reader stays closed: the stream cannot be resynchronised.
        assert!(reader.push(&[0; 10]).is_err());
    }
    let mut reader = FrameReader::new();
    assert!(reader.push(&[2, 1, 0, 0, 0, 0]).is_err(), "unknown version");
    let mut reader = FrameReader::new();
    assert!(reader.push(&[1, 99, 0, 0, 0, 0]).is_err(), "unknown kind");
}
