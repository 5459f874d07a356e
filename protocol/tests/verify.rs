//! The verifier: every acceptance path and every refusal reason, each
//! asserted on the verdict and on the refusal counters.

use certs::cert::CertBody;
use certs::pki::{DistrictPki, Layout};
use certs::{AreaCode, Certificate, Identity, RevocationList, SecretKey, TrustAnchor};
use protocol::build::SegmentSigner;
use protocol::testing::{alert_header, fake_frame, recorded_broadcast};
use protocol::*;

const NOW_S: i64 = 1_800_000_000;
const NOW: i64 = NOW_S * 1000;
const MIN: i64 = 60_000;

fn pki() -> &'static DistrictPki {
    static PKI: std::sync::OnceLock<DistrictPki> = std::sync::OnceLock::new();
    PKI.get_or_init(|| {
        DistrictPki::generate(
            Layout {
                towns: 2,
                villages: 4,
                terminals: 8,
            },
            (NOW_S - 86_400, NOW_S + 86_400 * 365),
            NOW_S,
        )
        .unwrap()
    })
}

fn county() -> AreaCode {
    pki().district.cert().scope()[0]
}

fn village_area(t: usize, v: usize) -> AreaCode {
    pki().towns[t].villages[v].area
}

/// A terminal verifier in village (0, 0).
fn terminal() -> Verifier<MemoryReplayStore> {
    terminal_with(MemoryReplayStore::new())
}

fn terminal_with(store: MemoryReplayStore) -> Verifier<MemoryReplayStore> {
    Verifier::new(
        TrustAnchor::new(pki().root.cert().clone()).unwrap(),
        Audience::Terminal {
            area: village_area(0, 0),
        },
        Policy::default(),
        store,
    )
}

/// Evaluates the verifier call first, then checks the refusal and its count.
macro_rules! refused {
    ($v:ident, $call:expr, $reason:expr) => {{
        let result = $call;
        assert_refused(&$v, result, $reason)
    }};
}

/// Checks `result` is the refusal with `reason` and that it was counted once.
fn assert_refused<T: std::fmt::Debug>(
    v: &Verifier<MemoryReplayStore>,
    result: Result<T, Refusal>,
    reason: RefusalReason,
) {
    match result {
        Err(r) => assert_eq!(r.reason(), reason, "refused for {r}"),
        Ok(x) => panic!("accepted {x:?}, expected refusal {reason:?}"),
    }
    assert_eq!(v.counts().get(reason), 1, "counted once: {:?}", v.counts());
}

type CertChange<'a> = &'a dyn Fn(&mut CertBody);
type HeaderChange<'a> = &'a dyn Fn(&mut BroadcastHeader);

fn sign(issuer: &Identity, header: BroadcastHeader) -> SignedHeader {
    SignedHeader::sign_unchecked(header, issuer).unwrap()
}

#[test]
fn a_district_alert_is_accepted_in_full() {
    let d = &pki().district;
    let (header, segments) = recorded_broadcast(d, 1, vec![county()], NOW, 5);
    let mut v = terminal();
    assert_eq!(v.accept_header(&header, NOW), Ok(HeaderVerdict::New));
    for (i, s) in segments.iter().enumerate() {
        let verdict = v.accept_segment(s, NOW + 100).unwrap();
        assert_eq!(verdict.skipped, 0);
        assert_eq!(verdict.last, i == 4);
    }
    assert_eq!(v.counts().total(), 0);
    assert_eq!(
        v.active().count(),
        0,
        "finished broadcasts are no longer active"
    );
}

#[test]
fn lost_segments_are_skipped_not_refused() {
    let (header, segments) = recorded_broadcast(&pki().district, 2, vec![county()], NOW, 5);
    let mut v = terminal();
    v.accept_header(&header, NOW).unwrap();
    v.accept_segment(&segments[0], NOW).unwrap();
    assert_eq!(v.accept_segment(&segments[3], NOW).unwrap().skipped, 2);
    // ...but the skipped ones may not arrive afterwards (order).
    refused!(
        v,
        v.accept_segment(&segments[1], NOW),
        RefusalReason::StaleSequence
    );
}

#[test]
fn every_tier_may_address_its_own_scope() {
    let p = pki();
    let town = &p.towns[0].identity;
    let village = &p.towns[0].villages[0].identity;
    let mut v = terminal();
    let (h, _) = recorded_broadcast(town, 1, vec![p.towns[0].area], NOW, 1);
    assert_eq!(v.accept_header(&h, NOW), Ok(HeaderVerdict::New));
    let (h, _) = recorded_broadcast(village, 1, vec![village_area(0, 0)], NOW, 1);
    assert_eq!(v.accept_header(&h, NOW), Ok(HeaderVerdict::New));
}

#[test]
fn chain_refusals() {
    let p = pki();
    let (d, town, village) = (
        &p.district,
        &p.towns[0].identity,
        &p.towns[0].villages[0].identity,
    );
    let targets = vec![village_area(0, 0)];

    // Signed within a complete chain from another root.
    let other = DistrictPki::generate(
        Layout {
            towns: 1,
            villages: 1,
            terminals: 0,
        },
        (NOW_S - 10, NOW_S + 1000),
        NOW_S,
    )
    .unwrap();
    let mut v = terminal();
    let h = sign(
        &other.district,
        alert_header(&other.district, 1, vec![county()], NOW, 1),
    );
    refused!(v, v.accept_header(&h, NOW), RefusalReason::ChainUntrusted);

    // Signed by an unknown key presenting the district's chain.
    let mut v = terminal();
    let thief = Identity {
        key: SecretKey::generate(),
        chain: d.chain.clone(),
    };
    let h = sign(&thief, alert_header(d, 1, vec![county()], NOW, 1));
    refused!(v, v.accept_header(&h, NOW), RefusalReason::HeaderSignature);

    // A certificate in the chain altered after signing.
    let mut bytes = village.cert().as_bytes().to_vec();
    bytes[12] ^= 1;
    let altered = Identity {
        key: SecretKey::from_seed(&[1; 32]),
        chain: vec![
            d.cert().clone(),
            town.cert().clone(),
            Certificate::decode(&bytes).unwrap(),
        ],
    };
    let mut v = terminal();
    refused!(
        v,
        v.accept_header(
            &sign(&altered, alert_header(village, 1, targets.clone(), NOW, 1)),
            NOW
        ),
        RefusalReason::CertSignature
    );

    // Re-certified by the town with wrong rules.
    let forged = |change: &dyn Fn(&mut CertBody)| {
        let key = SecretKey::generate();
        let mut body = village.cert().body().clone();
        body.public_key = key.public();
        change(&mut body);
        Identity {
            key,
            chain: vec![
                d.cert().clone(),
                town.cert().clone(),
                Certificate::sign_body(body, &town.key),
            ],
        }
    };
    let cases: [(CertChange, RefusalReason); 5] = [
        (
            &|b| b.tier = certs::Tier::Town,
            RefusalReason::CertTierOrder,
        ),
        (
            &|b| b.scope = vec![county()],
            RefusalReason::CertScopeEscalation,
        ),
        (
            &|b| b.not_after = NOW_S + 86_400 * 1000,
            RefusalReason::CertValidityOutsideIssuer,
        ),
        (&|b| b.not_after = NOW_S - 1, RefusalReason::CertExpired),
        (
            &|b| b.not_before = NOW_S + 60,
            RefusalReason::CertNotYetValid,
        ),
    ];
    for (change, reason) in cases {
        let id = forged(change);
        let mut v = terminal();
        let h = sign(&id, alert_header(village, 1, targets.clone(), NOW, 1));
        refused!(v, v.accept_header(&h, NOW), reason);
    }

    // A terminal key trying to issue.
    let term = &p.towns[0].villages[0].terminals[0];
    let mut v = terminal();
    let mut h = alert_header(term, 1, targets.clone(), NOW, 1);
    h.id = BroadcastId::new(&term.cert().body().resource_code, (2026, 11, 28), 1).unwrap();
    refused!(
        v,
        v.accept_header(&sign(term, h), NOW),
        RefusalReason::SignerNotPlatform
    );
}

#[test]
fn revocation_refuses_new_and_stops_active_broadcasts() {
    let p = pki();
    let village = &p.towns[0].villages[0].identity;
    let mut v = terminal();
    let (h1, segs) = recorded_broadcast(village, 1, vec![village_area(0, 0)], NOW, 3);
    v.accept_header(&h1, NOW).unwrap();
    v.accept_segment(&segs[0], NOW).unwrap();
    let list = RevocationList::sign(
        p.district.cert().serial(),
        p.district.chain.clone(),
        &p.district.key,
        1,
        NOW_S,
        vec![village.cert().serial()],
    )
    .unwrap();
    assert_eq!(
        v.apply_revocation(list, NOW).unwrap().stopped,
        vec![h1.id()]
    );
    // The rest of the running broadcast no longer plays...
    refused!(
        v,
        v.accept_segment(&segs[1], NOW),
        RefusalReason::UnknownBroadcast
    );
    // ...and nothing new from that key is accepted.
    let (h2, _) = recorded_broadcast(village, 2, vec![village_area(0, 0)], NOW, 1);
    refused!(v, v.accept_header(&h2, NOW), RefusalReason::CertRevoked);
    // An older list cannot roll it back.
    let older = RevocationList::sign(
        p.district.cert().serial(),
        p.district.chain.clone(),
        &p.district.key,
        0,
        NOW_S,
        vec![],
    )
    .unwrap();
    refused!(
        v,
        v.apply_revocation(older, NOW),
        RefusalReason::RevocationRollback
    );
}

#[test]
fn scope_and_addressing() {
    let p = pki();
    let village = &p.towns[0].villages[0].identity;
    let town1 = &p.towns[1].identity;

    // A village key addressing another village, even with a stolen key.
    let mut v = terminal();
    let (h, _) = recorded_broadcast(village, 1, vec![village_area(0, 1)], NOW, 1);
    refused!(
        v,
        v.accept_header(&h, NOW),
        RefusalReason::TargetOutsideScope
    );
    // A town key addressing outside its town (this terminal's village).
    let mut v = terminal();
    let (h, _) = recorded_broadcast(town1, 1, vec![village_area(0, 0)], NOW, 1);
    refused!(
        v,
        v.accept_header(&h, NOW),
        RefusalReason::TargetOutsideScope
    );
    // A genuine notice of the neighbouring village is not for this terminal.
    let neighbour = &p.towns[0].villages[1].identity;
    let mut v = terminal();
    let (h, _) = recorded_broadcast(neighbour, 1, vec![village_area(0, 1)], NOW, 1);
    refused!(v, v.accept_header(&h, NOW), RefusalReason::NotAddressed);
    // An id that claims another issuer's resource code.
    let mut v = terminal();
    let mut header = alert_header(village, 1, vec![village_area(0, 0)], NOW, 1);
    header.id =
        BroadcastId::new(&p.district.cert().body().resource_code, (2026, 11, 28), 1).unwrap();
    refused!(
        v,
        v.accept_header(&sign(village, header), NOW),
        RefusalReason::IdNotIssuers
    );
    // A relay forwards what targets any part of its scope, nothing else.
    let anchor = TrustAnchor::new(p.root.cert().clone()).unwrap();
    let mut relay = Verifier::new(
        anchor,
        Audience::Relay {
            scope: vec![p.towns[0].area],
        },
        Policy::default(),
        MemoryReplayStore::new(),
    );
    let (h, _) = recorded_broadcast(&p.district, 3, vec![county()], NOW, 1);
    assert_eq!(relay.accept_header(&h, NOW), Ok(HeaderVerdict::New));
    let (h, _) = recorded_broadcast(&p.district, 4, vec![village_area(0, 1)], NOW, 1);
    assert_eq!(relay.accept_header(&h, NOW), Ok(HeaderVerdict::New));
    let (h, _) = recorded_broadcast(&p.district, 5, vec![village_area(1, 0)], NOW, 1);
    assert_eq!(
        relay.accept_header(&h, NOW).unwrap_err().reason(),
        RefusalReason::NotAddressed
    );
}

#[test]
fn inconsistent_headers() {
    let d = &pki().district;
    let cases: [(HeaderChange, &str); 5] = [
        (
            &|h| h.class = BroadcastClass::Drill,
            "drill class with a real message type",
        ),
        (
            &|h| h.msg_type = MessageType::DrillPlatform,
            "drill type with the emergency class",
        ),
        (&|h| h.end_ms = h.start_ms, "empty time span"),
        (
            &|h| h.audio.total_segments = 0,
            "recorded audio without a count",
        ),
        (&|h| h.related = Some(h.id), "a broadcast naming another"),
    ];
    for (change, what) in cases {
        let mut h = alert_header(d, 1, vec![county()], NOW, 1);
        change(&mut h);
        assert!(
            SignedHeader::sign(h.clone(), d).is_err(),
            "the signer refuses: {what}"
        );
        let mut v = terminal();
        refused!(
            v,
            v.accept_header(&sign(d, h), NOW),
            RefusalReason::Inconsistent
        );
    }
}

#[test]
fn time_window() {
    let d = &pki().district;
    let at = |issued: i64, end: i64| {
        let mut h = alert_header(d, 1, vec![county()], issued, 1);
        h.start_ms = issued;
        h.end_ms = end;
        sign(d, h)
    };
    let mut v = terminal();
    refused!(
        v,
        v.accept_header(&at(NOW + 10 * MIN, NOW + 60 * MIN), NOW),
        RefusalReason::IssuedInFuture
    );
    let mut v = terminal();
    refused!(
        v,
        v.accept_header(&at(NOW - 8 * 24 * 60 * MIN, NOW + MIN), NOW),
        RefusalReason::IssuedTooLongAgo
    );
    // A recorded genuine broadcast replayed after its end time.
    let mut v = terminal();
    refused!(
        v,
        v.accept_header(&at(NOW - 60 * MIN, NOW - MIN), NOW),
        RefusalReason::Expired
    );
    // Small clock skew is tolerated.
    let mut v = terminal();
    assert!(v.accept_header(&at(NOW + MIN, NOW + 60 * MIN), NOW).is_ok());
    // Segments after the end time are refused.
    let (h, segs) = recorded_broadcast(d, 9, vec![county()], NOW, 2);
    let mut v = terminal();
    v.accept_header(&h, NOW).unwrap();
    refused!(
        v,
        v.accept_segment(&segs[0], NOW + 61 * MIN),
        RefusalReason::Expired
    );
}

#[test]
fn replay_within_validity_also_after_restart() {
    let d = &pki().district;
    let (h, segs) = recorded_broadcast(d, 1, vec![county()], NOW, 4);
    let mut v = terminal();
    v.accept_header(&h, NOW).unwrap();
    v.accept_segment(&segs[0], NOW).unwrap();
    v.accept_segment(&segs[1], NOW).unwrap();
    // The same header again (reconnect) resumes; played segments are refused.
    assert_eq!(
        v.accept_header(&h, NOW),
        Ok(HeaderVerdict::Resumed { next_seq: 2 })
    );
    refused!(
        v,
        v.accept_segment(&segs[1], NOW),
        RefusalReason::StaleSequence
    );
    // After a restart with the persisted store: the same.
    let store = v.store().clone();
    let mut v = terminal_with(store);
    assert_eq!(
        v.accept_header(&h, NOW),
        Ok(HeaderVerdict::Resumed { next_seq: 2 })
    );
    refused!(
        v,
        v.accept_segment(&segs[0], NOW),
        RefusalReason::StaleSequence
    );
    assert!(v.accept_segment(&segs[2], NOW).is_ok());
    // Another header under the same id.
    let mut other = alert_header(d, 1, vec![county()], NOW, 4);
    other.title = "伪造".into();
    refused!(
        v,
        v.accept_header(&sign(d, other), NOW),
        RefusalReason::DuplicateId
    );
    // Once the last segment is in, a replayed header brings nothing back.
    assert!(v.accept_segment(&segs[3], NOW).is_ok());
    refused!(v, v.accept_header(&h, NOW), RefusalReason::Replayed);
    assert_eq!(v.active().count(), 0);
    assert_eq!(v.closed(NOW, 64), vec![h.id()]);
}

#[test]
fn segment_binding_and_limits() {
    let d = &pki().district;
    let (ha, sa) = recorded_broadcast(d, 1, vec![county()], NOW, 3);
    let (hb, sb) = recorded_broadcast(d, 2, vec![county()], NOW, 3);

    // Without its header.
    let mut v = terminal();
    refused!(
        v,
        v.accept_segment(&sa[0], NOW),
        RefusalReason::UnknownBroadcast
    );

    // A segment of A relabelled as B (spliced).
    let mut v = terminal();
    v.accept_header(&ha, NOW).unwrap();
    v.accept_header(&hb, NOW).unwrap();
    let mut body = sa[0].body().to_vec();
    body[1..17].copy_from_slice(&hb.id().as_u128().to_be_bytes());
    let spliced = Segment::decode(&body).unwrap();
    refused!(
        v,
        v.accept_segment(&spliced, NOW),
        RefusalReason::SegmentSignature
    );
    // B's own segment 0 still plays.
    assert!(v.accept_segment(&sb[0], NOW).is_ok());

    // Moved to another position: sequence 0 relabelled as 1.
    let mut v = terminal();
    v.accept_header(&ha, NOW).unwrap();
    let mut body = sa[0].body().to_vec();
    body[17..21].copy_from_slice(&1u32.to_be_bytes());
    refused!(
        v,
        v.accept_segment(&Segment::decode(&body).unwrap(), NOW),
        RefusalReason::SegmentSignature
    );

    // One flipped bit in the audio.
    let mut v = terminal();
    v.accept_header(&ha, NOW).unwrap();
    let mut body = sa[0].body().to_vec();
    body[40] ^= 0x10;
    refused!(
        v,
        v.accept_segment(&Segment::decode(&body).unwrap(), NOW),
        RefusalReason::SegmentSignature
    );

    // Beyond the announced count, and more frames than announced.
    let mut v = terminal();
    v.accept_header(&ha, NOW).unwrap();
    let mut signer = SegmentSigner::new(&ha, &d.key, NOW * 1000);
    let extra: Vec<Segment> = (0..4)
        .map(|_| signer.sign(vec![fake_frame(0)], false).unwrap())
        .collect();
    refused!(
        v,
        v.accept_segment(&extra[3], NOW),
        RefusalReason::BeyondEnd
    );
    let too_many = Segment::sign(
        ha.id(),
        0,
        0,
        false,
        (0..11).map(fake_frame).collect(),
        ha.digest(),
        &d.key,
    )
    .unwrap();
    refused!(
        v,
        v.accept_segment(&too_many, NOW),
        RefusalReason::TooManyFrames
    );
}

#[test]
fn cancels() {
    let p = pki();
    let (d, village) = (&p.district, &p.towns[0].villages[0].identity);
    let cancel_of = |issuer: &Identity, seq: u16, original: &SignedHeader| {
        let mut h = alert_header(issuer, seq, original.header().targets.clone(), NOW, 0);
        h.msg_type = MessageType::Cancel;
        h.related = Some(original.id());
        h.audio = AudioParams::NONE;
        SignedHeader::sign(h, issuer).unwrap()
    };

    // The district cancels its own alert: the rest of the audio is refused.
    let (alert, segs) = recorded_broadcast(d, 1, vec![county()], NOW, 3);
    let mut v = terminal();
    v.accept_header(&alert, NOW).unwrap();
    v.accept_segment(&segs[0], NOW).unwrap();
    assert_eq!(
        v.accept_header(&cancel_of(d, 2, &alert), NOW),
        Ok(HeaderVerdict::Cancel {
            target: alert.id(),
            was_active: true
        })
    );
    refused!(
        v,
        v.accept_segment(&segs[1], NOW),
        RefusalReason::UnknownBroadcast
    );
    // Sent again later: the alert stays closed, and the attempt is counted
    // (an honest upstream is told in Subscribe not to send it).
    refused!(v, v.accept_header(&alert, NOW), RefusalReason::Replayed);
    assert_eq!(v.closed(NOW, 64).len(), 2, "the alert and its cancel");

    // A village may not cancel the district's alert (forged cancel).
    let (alert, _) = recorded_broadcast(d, 3, vec![county()], NOW, 3);
    let mut v = terminal();
    v.accept_header(&alert, NOW).unwrap();
    let mut h = alert_header(village, 4, vec![village_area(0, 0)], NOW, 0);
    h.msg_type = MessageType::Cancel;
    h.related = Some(alert.id());
    h.audio = AudioParams::NONE;
    refused!(
        v,
        v.accept_header(&SignedHeader::sign(h, village).unwrap(), NOW),
        RefusalReason::CancelNotAuthorised
    );

    // Nor once the alert is fully received but still playing, nor after a
    // restart of the terminal (its signer then unknown here).
    let (alert, segs) = recorded_broadcast(d, 7, vec![county()], NOW, 2);
    let mut v = terminal();
    v.accept_header(&alert, NOW).unwrap();
    for s in &segs {
        v.accept_segment(s, NOW).unwrap();
    }
    let mut h = alert_header(village, 8, vec![village_area(0, 0)], NOW, 0);
    h.msg_type = MessageType::Cancel;
    h.related = Some(alert.id());
    h.audio = AudioParams::NONE;
    let forged = SignedHeader::sign(h, village).unwrap();
    refused!(
        v,
        v.accept_header(&forged, NOW),
        RefusalReason::CancelNotAuthorised
    );
    let mut v = terminal_with(v.store().clone());
    refused!(
        v,
        v.accept_header(&forged, NOW),
        RefusalReason::CancelNotAuthorised
    );

    // The district may cancel a village notice (higher tier covering it).
    let (notice, _) = recorded_broadcast(village, 5, vec![village_area(0, 0)], NOW, 3);
    let mut v = terminal();
    v.accept_header(&notice, NOW).unwrap();
    assert!(matches!(
        v.accept_header(&cancel_of(d, 6, &notice), NOW),
        Ok(HeaderVerdict::Cancel {
            was_active: true,
            ..
        })
    ));

    // A cancel that arrives first closes the broadcast when it comes.
    let (late, _) = recorded_broadcast(d, 7, vec![county()], NOW, 3);
    let mut v = terminal();
    assert_eq!(
        v.accept_header(&cancel_of(d, 8, &late), NOW),
        Ok(HeaderVerdict::Cancel {
            target: late.id(),
            was_active: false
        })
    );
    assert_eq!(v.accept_header(&late, NOW), Ok(HeaderVerdict::Closed));
}

#[test]
fn commands() {
    let p = pki();
    let village = &p.towns[0].villages[0].identity;
    let term = &p.towns[0].villages[0].terminals[0];
    let area = village_area(0, 0);
    let cmd = |id: u64, areas: Vec<AreaCode>, terminals: Vec<u64>| Command {
        command_id: id,
        issued_at_ms: NOW,
        expires_at_ms: NOW + MIN,
        target_areas: areas,
        target_terminals: terminals,
        action: Action::Volume(30),
    };
    let mut v = terminal();
    let signed = cmd(1, vec![area], vec![]).sign(village);
    assert_eq!(
        v.accept_command(&signed, term.cert().serial(), area, NOW),
        Ok(Action::Volume(30))
    );
    refused!(
        v,
        v.accept_command(&signed, term.cert().serial(), area, NOW),
        RefusalReason::CommandReplayed
    );
    // Forged: a terminal key issuing mute.
    let mut v = terminal();
    refused!(
        v,
        v.accept_command(
            &cmd(2, vec![area], vec![]).sign(term),
            term.cert().serial(),
            area,
            NOW
        ),
        RefusalReason::SignerNotPlatform
    );
    // A neighbouring village's platform naming this terminal.
    let mut v = terminal();
    let neighbour = &p.towns[0].villages[1].identity;
    refused!(
        v,
        v.accept_command(
            &cmd(3, vec![], vec![term.cert().serial()]).sign(neighbour),
            term.cert().serial(),
            area,
            NOW
        ),
        RefusalReason::TargetOutsideScope
    );
    // Expired.
    let mut v = terminal();
    refused!(
        v,
        v.accept_command(
            &cmd(4, vec![area], vec![]).sign(village),
            term.cert().serial(),
            area,
            NOW + 2 * MIN
        ),
        RefusalReason::Expired
    );
    // Tampered.
    let mut v = terminal();
    let mut body = cmd(5, vec![area], vec![]).sign(village).body().to_vec();
    let action_at = 1 + 8 + 8 + 8 + 2 + 8 + 2 + 1; // version..areas, terminal count, action code
    body[action_at + 1] = 0; // volume 30 -> 0
    let tampered = SignedCommand::decode(&body).unwrap();
    refused!(
        v,
        v.accept_command(&tampered, term.cert().serial(), area, NOW),
        RefusalReason::HeaderSignature
    );
}

/// A store whose disk is gone: refusing is the only safe answer.
struct BrokenStore;
impl ReplayStore for BrokenStore {
    type Error = &'static str;
    fn get(&self, _: BroadcastId) -> Result<Option<ReplayRecord>, &'static str> {
        Err("disk gone")
    }
    fn put(&mut self, _: BroadcastId, _: &ReplayRecord) -> Result<(), &'static str> {
        Err("disk gone")
    }
    fn insert_command(&mut self, _: u64, _: u64, _: i64) -> Result<bool, &'static str> {
        Err("disk gone")
    }
    fn prune(&mut self, _: i64) -> Result<usize, &'static str> {
        Err("disk gone")
    }
    fn closed(&self, _: i64, _: usize) -> Result<Vec<BroadcastId>, &'static str> {
        Err("disk gone")
    }
}

#[test]
fn a_failing_store_refuses() {
    let d = &pki().district;
    let (h, _) = recorded_broadcast(d, 1, vec![county()], NOW, 1);
    let mut v = Verifier::new(
        TrustAnchor::new(pki().root.cert().clone()).unwrap(),
        Audience::Terminal {
            area: village_area(0, 0),
        },
        Policy::default(),
        BrokenStore,
    );
    assert_eq!(
        v.accept_header(&h, NOW).unwrap_err().reason(),
        RefusalReason::Store
    );
    assert_eq!(v.counts().get(RefusalReason::Store), 1);
}

#[test]
fn undecodable_input_is_malformed() {
    let mut v = terminal();
    let err = SignedHeader::decode(&[1, 2, 3]).unwrap_err();
    let refusal = Refusal::from(err);
    v.count(&refusal);
    assert_eq!(refusal.reason(), RefusalReason::Malformed);
    let (h, _) = recorded_broadcast(&pki().district, 1, vec![county()], NOW, 1);
    let mut body = h.body().to_vec();
    body[0] = 9;
    assert_eq!(
        Refusal::from(SignedHeader::decode(&body).unwrap_err()).reason(),
        RefusalReason::UnsupportedVersion
    );
    // Truncated anywhere: never decodes.
    for n in 0..h.body().len() {
        assert!(SignedHeader::decode(&h.body()[..n]).is_err());
    }
}

#[test]
fn reason_codes_are_stable_and_distinct() {
    let mut codes: Vec<u8> = RefusalReason::ALL.iter().map(|r| r.code()).collect();
    codes.dedup();
    assert_eq!(codes.len(), RefusalReason::ALL.len());
    for r in RefusalReason::ALL {
        assert_eq!(RefusalReason::from_code(r.code()).unwrap(), *r);
    }
    assert_eq!(
        RefusalReason::SegmentSignature
            .national_result_code()
            .code(),
        4
    );
    assert_eq!(RefusalReason::Malformed.national_result_code().code(), 2);
}

#[test]
fn the_segments_of_a_refused_header_are_counted_with_it() {
    // A broadcast for another village: its header is refused, and its five
    // segments are refused too, but the cause is counted once.
    let other = village_area(1, 0);
    let (header, segments) = recorded_broadcast(&pki().district, 40, vec![other], NOW, 5);
    let mut v = terminal();
    refused!(
        v,
        v.accept_header(&header, NOW),
        RefusalReason::NotAddressed
    );
    for s in &segments {
        let r = v.accept_segment(s, NOW);
        assert_eq!(r.unwrap_err().reason(), RefusalReason::UnknownBroadcast);
        assert!(v.header_refused(s.id));
    }
    assert_eq!(v.counts().total(), 1, "{:?}", v.counts());
    // A segment of a header never seen still counts.
    let (_, stray) = recorded_broadcast(&pki().district, 41, vec![county()], NOW, 1);
    refused!(
        v,
        v.accept_segment(&stray[0], NOW),
        RefusalReason::UnknownBroadcast
    );
    // Once a genuine header of that id is accepted, it is not remembered.
    let (genuine, _) = recorded_broadcast(&pki().district, 41, vec![county()], NOW, 1);
    v.accept_header(&genuine, NOW).unwrap();
    assert!(!v.header_refused(genuine.id()));
}
