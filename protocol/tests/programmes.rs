//! Scheduled programmes and quiet hours in the verifier: every acceptance
//! path and refusal, each asserted on the verdict and the counters; the
//! messages round-trip through framing byte for byte.

use certs::pki::{DistrictPki, Layout};
use certs::{AreaCode, Identity, TrustAnchor};
use protocol::schedule::{days_from_civil, local_day, Schedule, EVERY_DAY, WEEKDAYS};
use protocol::testing::{fake_frame, programme};
use protocol::*;

const NOW_S: i64 = 1_800_000_000;
const NOW: i64 = NOW_S * 1000;
const DAY: i64 = 86_400_000;

fn pki() -> &'static DistrictPki {
    static PKI: std::sync::OnceLock<DistrictPki> = std::sync::OnceLock::new();
    PKI.get_or_init(|| {
        DistrictPki::generate(
            Layout {
                towns: 1,
                villages: 2,
                terminals: 1,
            },
            (NOW_S - 86_400, NOW_S + 86_400 * 400),
            NOW_S,
        )
        .unwrap()
    })
}

fn village(v: usize) -> &'static Identity {
    &pki().towns[0].villages[v].identity
}

fn area(v: usize) -> AreaCode {
    pki().towns[0].villages[v].area
}

fn verifier(audience: Audience) -> Verifier<MemoryReplayStore> {
    Verifier::new(
        TrustAnchor::new(pki().root.cert().clone()).unwrap(),
        audience,
        Policy::default(),
        MemoryReplayStore::new(),
    )
}

fn terminal() -> Verifier<MemoryReplayStore> {
    verifier(Audience::Terminal { area: area(0) })
}

fn today() -> u32 {
    local_day(NOW, 480) as u32
}

fn weekly(days: u32) -> Schedule {
    Schedule {
        utc_offset_minutes: 480,
        first_day: today(),
        last_day: today() + days,
        weekdays: WEEKDAYS,
        times: vec![7 * 3600, 18 * 3600],
    }
}

fn frames(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(fake_frame).collect()
}

fn signed(p: Programme, by: &Identity) -> SignedProgramme {
    SignedProgramme::sign_unchecked(p, by).unwrap()
}

/// Evaluates the verifier call first, then checks the refusal and its count.
macro_rules! refused {
    ($v:ident, $call:expr, $reason:expr $(,)?) => {{
        let result = $call;
        check_refused(&$v, result, $reason)
    }};
}

fn check_refused<T: std::fmt::Debug>(
    v: &Verifier<MemoryReplayStore>,
    r: Result<T, Refusal>,
    reason: RefusalReason,
) {
    match r {
        Err(e) => assert_eq!(e.reason(), reason, "refused for {e}"),
        Ok(x) => panic!("accepted {x:?}, expected {reason:?}"),
    }
    assert_eq!(v.counts().get(reason), 1, "{:?}", v.counts());
}

#[test]
fn a_village_programme_is_accepted_and_its_revisions_move_forward_only() {
    let p = programme(village(0), 1, vec![area(0)], NOW, weekly(60), &frames(300));
    let s1 = SignedProgramme::sign(p.clone(), village(0)).unwrap();
    let mut v = terminal();
    assert_eq!(
        v.accept_programme(&s1, None, NOW).unwrap(),
        ProgrammeVerdict::New
    );
    let held = Some((1, *s1.digest()));
    assert_eq!(
        v.accept_programme(&s1, held, NOW).unwrap(),
        ProgrammeVerdict::Same
    );
    let mut p2 = p.clone();
    p2.revision = 2;
    p2.schedule.times = vec![8 * 3600];
    let s2 = SignedProgramme::sign(p2, village(0)).unwrap();
    assert_eq!(
        v.accept_programme(&s2, held, NOW).unwrap(),
        ProgrammeVerdict::Update { from: 1 }
    );
    // Back to revision 1 once 2 is held: a replay.
    let held2 = Some((2, *s2.digest()));
    refused!(
        v,
        v.accept_programme(&s1, held2, NOW),
        RefusalReason::Replayed
    );
    // Another revision 2 with other bytes: two messages claim one number.
    let mut other = p.clone();
    other.revision = 2;
    other.title = "另一个".into();
    let mut v = terminal();
    refused!(
        v,
        v.accept_programme(&signed(other, village(0)), held2, NOW),
        RefusalReason::DuplicateId,
    );
    assert_eq!(v.counts().total(), 1);
}

#[test]
fn a_village_key_cannot_schedule_for_another_village() {
    // Village 1's key, addressing village 0 (where this terminal is).
    let mut p = programme(village(1), 1, vec![area(0)], NOW, weekly(7), &frames(100));
    p.id = BroadcastId::new(&village(1).cert().body().resource_code, (2026, 12, 7), 1).unwrap();
    let mut v = terminal();
    refused!(
        v,
        v.accept_programme(&signed(p, village(1)), None, NOW),
        RefusalReason::TargetOutsideScope,
    );
    // Its own village, seen from village 0: not addressed.
    let own = programme(village(1), 2, vec![area(1)], NOW, weekly(7), &frames(100));
    let mut v = terminal();
    refused!(
        v,
        v.accept_programme(&signed(own, village(1)), None, NOW),
        RefusalReason::NotAddressed,
    );
}

#[test]
fn forged_stale_and_inconsistent_programmes_are_refused() {
    let base = programme(village(0), 1, vec![area(0)], NOW, weekly(7), &frames(100));
    // Signed by village 0 but carrying village 1's id.
    let mut wrong_id = base.clone();
    wrong_id.id =
        BroadcastId::new(&village(1).cert().body().resource_code, (2026, 12, 7), 9).unwrap();
    let mut v = terminal();
    refused!(
        v,
        v.accept_programme(&signed(wrong_id, village(0)), None, NOW),
        RefusalReason::IdNotIssuers,
    );
    // A flipped byte in the body.
    let good = signed(base.clone(), village(0));
    let mut bytes = good.body().to_vec();
    // A second later the first start time (07:00:00 → 07:00:01).
    let at = 25_200u32.to_be_bytes();
    let times = bytes
        .windows(4)
        .position(|w| w == at)
        .expect("the encoded start times");
    bytes[times + 3] += 1;
    let tampered = SignedProgramme::decode(&bytes).unwrap();
    assert_eq!(tampered.programme().schedule.times[0], 25_201);
    let mut v = terminal();
    refused!(
        v,
        v.accept_programme(&tampered, None, NOW),
        RefusalReason::HeaderSignature,
    );
    // Over: its last day ended yesterday.
    let mut over = base.clone();
    over.schedule.first_day = today() - 10;
    over.schedule.last_day = today() - 1;
    over.issued_at_ms = NOW - 20 * DAY;
    let mut v = terminal();
    refused!(
        v,
        v.accept_programme(&signed(over, village(0)), None, NOW),
        RefusalReason::Expired,
    );
    // A year and more ahead of its issue.
    let mut far = base.clone();
    far.schedule.first_day = today() + 300;
    far.schedule.last_day = today() + 400;
    let mut v = terminal();
    refused!(
        v,
        v.accept_programme(&signed(far, village(0)), None, NOW),
        RefusalReason::Inconsistent,
    );
    // Plays that would overlap (61 s of audio at 07:00 and 07:01).
    let mut overlap = programme(village(0), 3, vec![area(0)], NOW, weekly(7), &frames(3050));
    overlap.schedule.times = vec![25_200, 25_260];
    let mut v = terminal();
    refused!(
        v,
        v.accept_programme(&signed(overlap, village(0)), None, NOW),
        RefusalReason::Inconsistent,
    );
    // Issued in the future.
    let mut ahead = base.clone();
    ahead.issued_at_ms = NOW + 10 * 60_000;
    let mut v = terminal();
    refused!(
        v,
        v.accept_programme(&signed(ahead, village(0)), None, NOW),
        RefusalReason::IssuedInFuture,
    );
    // A terminal's key is not a platform's.
    let term = &pki().towns[0].villages[0].terminals[0];
    let mut by_terminal = base.clone();
    by_terminal.id = BroadcastId::new(&term.cert().body().resource_code, (2026, 12, 7), 1).unwrap();
    let mut v = terminal();
    refused!(
        v,
        v.accept_programme(&signed(by_terminal, term), None, NOW),
        RefusalReason::SignerNotPlatform,
    );
    // An emergency cannot be scheduled.
    let mut emergency = base;
    emergency.class = BroadcastClass::Emergency;
    let mut v = terminal();
    refused!(
        v,
        v.accept_programme(&signed(emergency, village(0)), None, NOW),
        RefusalReason::Inconsistent,
    );
}

#[test]
fn a_withdrawal_is_a_newer_revision_without_audio() {
    let p = programme(village(0), 1, vec![area(0)], NOW, weekly(7), &frames(100));
    let s1 = SignedProgramme::sign(p.clone(), village(0)).unwrap();
    let mut w = p.clone();
    w.revision = 2;
    w.withdrawn = true;
    assert!(
        SignedProgramme::sign(w.clone(), village(0)).is_err(),
        "audio left in"
    );
    w.audio = ProgrammeAudio::NONE;
    let s2 = SignedProgramme::sign(w, village(0)).unwrap();
    let mut v = terminal();
    assert_eq!(
        v.accept_programme(&s2, Some((1, *s1.digest())), NOW)
            .unwrap(),
        ProgrammeVerdict::Update { from: 1 }
    );
    // No audio of it is taken any more.
    let chunk = ProgrammeChunk {
        id: p.id,
        index: 0,
        frames: frames(50),
    };
    v.accept_chunk(&chunk, Some(&p)).unwrap();
    refused!(
        v,
        v.accept_chunk(&chunk, Some(s2.programme())),
        RefusalReason::ChunkDigest,
    );
}

#[test]
fn chunks_are_bound_to_their_signed_digests() {
    let all = frames(120);
    let p = programme(village(0), 1, vec![area(0)], NOW, weekly(7), &all);
    assert_eq!(p.audio.chunks.len(), 3);
    assert_eq!(p.audio.frames_in(2), 20);
    let mut v = terminal();
    for (i, c) in all.chunks(50).enumerate() {
        let chunk = ProgrammeChunk {
            id: p.id,
            index: i as u16,
            frames: c.to_vec(),
        };
        v.accept_chunk(&chunk, Some(&p)).unwrap();
    }
    // Another programme's audio at the right index, a reordered chunk, a
    // truncated chunk, an index past the end: each refused.
    let bad = [
        (0u16, frames(51)[1..].to_vec()),
        (1, all[..50].to_vec()),
        (2, all[100..119].to_vec()),
        (3, all[100..].to_vec()),
    ];
    for (n, (index, frames)) in bad.into_iter().enumerate() {
        let chunk = ProgrammeChunk {
            id: p.id,
            index,
            frames,
        };
        assert!(v.accept_chunk(&chunk, Some(&p)).is_err());
        assert_eq!(v.counts().get(RefusalReason::ChunkDigest), n as u64 + 1);
    }
    let stray = ProgrammeChunk {
        id: p.id,
        index: 0,
        frames: all[..50].to_vec(),
    };
    refused!(
        v,
        v.accept_chunk(&stray, None),
        RefusalReason::UnknownProgramme,
    );
}

#[test]
fn messages_round_trip_through_frames() {
    let p = programme(village(0), 1, vec![area(0)], NOW, weekly(30), &frames(120));
    let s = SignedProgramme::sign(p.clone(), village(0)).unwrap();
    let chunk = ProgrammeChunk {
        id: p.id,
        index: 1,
        frames: frames(50),
    };
    let receipt = ProgrammeReceipt {
        programme: p.id,
        revision: 1,
        occurrence_ms: NOW + DAY,
        terminal_serial: 42,
        outcome: PlayOutcome::Skipped,
        reason: PlayReason::QuietHours,
        at_ms: NOW + DAY,
        detail: 0,
    }
    .sign(&pki().towns[0].villages[0].terminals[0].key);
    let q = SignedQuietHours::sign(
        QuietHours {
            number: 3,
            issued_at_ms: NOW,
            targets: vec![area(0)],
            utc_offset_minutes: 480,
            mode: QuietMode::Hold,
            windows: vec![(22 * 60, 6 * 60)],
        },
        village(0),
    )
    .unwrap();
    let inventory = Inventory {
        held: vec![Held {
            id: p.id,
            revision: 1,
            complete: false,
        }],
    };
    for m in [
        Message::Programme(s),
        Message::ProgrammeChunk(chunk),
        Message::ProgrammeReceipt(receipt.clone()),
        Message::QuietHours(q),
        Message::Inventory(inventory),
    ] {
        let bytes = m.encode();
        let mut reader = frame::FrameReader::new();
        let raw = reader.push(&bytes).unwrap().remove(0);
        assert_eq!(raw.message().unwrap(), m);
        assert_eq!(raw.bytes, bytes);
    }
    let key = pki().towns[0].villages[0].terminals[0].cert().public_key();
    assert!(receipt.signature_valid(key));
    assert!(!receipt.signature_valid(village(0).cert().public_key()));
}

#[test]
fn quiet_hours_come_only_from_a_platform_covering_the_area_and_only_forward() {
    let policy = |number: u64, targets: Vec<AreaCode>| QuietHours {
        number,
        issued_at_ms: NOW,
        targets,
        utc_offset_minutes: 480,
        mode: QuietMode::Skip,
        windows: vec![(22 * 60, 6 * 60)],
    };
    let q2 = SignedQuietHours::sign(policy(2, vec![area(0)]), village(0)).unwrap();
    let mut v = terminal();
    assert!(v.accept_quiet_hours(&q2, None, NOW).unwrap());
    let held = Some((2, *q2.digest()));
    assert!(!v.accept_quiet_hours(&q2, held, NOW).unwrap(), "a resend");
    let q1 = SignedQuietHours::sign(policy(1, vec![area(0)]), village(0)).unwrap();
    refused!(
        v,
        v.accept_quiet_hours(&q1, held, NOW),
        RefusalReason::Replayed
    );
    // Village 1 cannot set village 0's quiet hours (nor lift them).
    let mut v = terminal();
    let foreign = SignedQuietHours::sign(policy(9, vec![area(0)]), village(1)).unwrap();
    refused!(
        v,
        v.accept_quiet_hours(&foreign, None, NOW),
        RefusalReason::TargetOutsideScope,
    );
    // The district covers every village.
    let mut v = terminal();
    let district = SignedQuietHours::sign(
        policy(1, vec![pki().district.cert().scope()[0]]),
        &pki().district,
    )
    .unwrap();
    assert!(v.accept_quiet_hours(&district, None, NOW).unwrap());
}

#[test]
fn a_one_off_programme_plays_once() {
    let day = days_from_civil(2027, 1, 4).unwrap() as u32;
    let s = Schedule {
        utc_offset_minutes: 480,
        first_day: day,
        last_day: day,
        weekdays: EVERY_DAY,
        times: vec![9 * 3600 + 1800],
    };
    let from = protocol::schedule::instant(day as i64, 0, 480);
    assert_eq!(s.starts_between(from - DAY, from + 2 * DAY, 10).len(), 1);
}
