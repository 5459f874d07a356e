//! The attack suite (issue 5, brief S1–S4, L1): an adversary against running
//! platforms and terminals over real QUIC, each attack while a genuine
//! district alert plays. Every test asserts that
//! - no sample of the attack reached any sink, and every terminal played the
//!   genuine alert whole (its PCM, not a log line: see `Played`);
//! - the refusal was counted by its reason where it happened;
//! - a security event with that reason reached the district (its API).
//!
//! With `ATTACK_REPORT_DIR` set, each test writes what it observed there as
//! JSON; `scripts/attack-report.sh` turns that into the table of
//! `docs/security.md`.

use std::time::Duration;

use certs::{Certificate, Identity, RevocationList, SecretKey, Tier};
use protocol::frame::{encode_frame, FrameKind};
use protocol::{
    Action, AudioParams, BroadcastId, Command, Message, MessageType, RawFrame, RefusalReason,
    Segment, SignedHeader,
};
use tests::forge::{self, now_ms, Forged};
use tests::range::*;

/// What one attack tried and which refusal reasons must show: data, so
/// every attack ends the same way and reports the same way.
struct Attack {
    n: u32,
    name: &'static str,
    tries: &'static str,
    reasons: Vec<RefusalReason>,
    attack_ids: Vec<BroadcastId>,
    note: Option<&'static str>,
}

impl Attack {
    fn new(n: u32, name: &'static str) -> Self {
        Attack {
            n,
            name,
            tries: "",
            reasons: Vec::new(),
            attack_ids: Vec::new(),
            note: None,
        }
    }

    fn tries(mut self, what: &'static str) -> Self {
        self.tries = what;
        self
    }

    /// The refusal reasons that must be counted and reach the district.
    fn refused(mut self, reasons: impl IntoIterator<Item = RefusalReason>) -> Self {
        self.reasons.extend(reasons);
        self
    }

    /// The attack's own broadcasts: none of them may reach a player.
    fn ids(mut self, ids: impl IntoIterator<Item = BroadcastId>) -> Self {
        self.attack_ids.extend(ids);
        self
    }

    /// What the report should say beyond the checks.
    fn note(mut self, note: &'static str) -> Self {
        self.note = Some(note);
        self
    }

    /// The common end of an attack run while the genuine alert `g` plays:
    /// the alert finished everywhere, sinks hold only it, each reason
    /// counted and seen at the district.
    async fn conclude(self, r: &Range, g: &Genuine) {
        let finished = r.wait_finished(g.id, Duration::from_secs(40)).await;
        let played = r.played(g, &self.attack_ids);
        let observed = self.observe(r).await;
        let ok = finished
            && played.iter().all(Played::only_genuine)
            && observed.iter().all(|(_, c, d)| c.total() > 0 && *d > 0);
        self.report(&played, &observed, ok);
        for p in &played {
            println!("{}: {p:?}", self.name);
        }
        assert!(
            finished,
            "{}: the genuine alert did not finish everywhere",
            self.name
        );
        for p in &played {
            assert!(
                p.only_genuine(),
                "{}: terminal {} played something else: {p:?}",
                self.name,
                p.terminal
            );
        }
        self.assert_refused(&observed);
    }

    /// The end of an attack that checked its terminals itself: each
    /// reason counted and seen at the district.
    async fn conclude_refused(self, r: &Range) {
        let observed = self.observe(r).await;
        let ok = observed.iter().all(|(_, c, d)| c.total() > 0 && *d > 0);
        self.report(&[], &observed, ok);
        self.assert_refused(&observed);
    }

    async fn observe(&self, r: &Range) -> Vec<(RefusalReason, Counted, u64)> {
        let mut observed = Vec::new();
        for reason in &self.reasons {
            let counted = r.counted(*reason);
            let at_district = r.district_sees(*reason).await;
            println!(
                "{}: {} counted {counted:?}, district shows {at_district}",
                self.name,
                reason.name()
            );
            observed.push((*reason, counted, at_district));
        }
        observed
    }

    fn assert_refused(&self, observed: &[(RefusalReason, Counted, u64)]) {
        for (reason, counted, d) in observed {
            assert!(
                counted.total() > 0,
                "{}: no node counted {}",
                self.name,
                reason.name()
            );
            assert!(
                *d > 0,
                "{}: the district shows no {} event",
                self.name,
                reason.name()
            );
        }
    }

    /// With `ATTACK_REPORT_DIR` set, writes what was observed as JSON.
    fn report(&self, played: &[Played], observed: &[(RefusalReason, Counted, u64)], ok: bool) {
        let Ok(dir) = std::env::var("ATTACK_REPORT_DIR") else {
            return;
        };
        let _ = std::fs::create_dir_all(&dir);
        let json = serde_json::json!({
            "n": self.n,
            "name": self.name,
            "tries": self.tries,
            "expected": self.reasons.iter().map(|r| r.name()).collect::<Vec<_>>(),
            "observed": observed.iter().map(|(r, c, d)| serde_json::json!({
                "reason": r.name(), "counted": c, "district_total": d,
            })).collect::<Vec<_>>(),
            "sinks": played,
            "attack_samples": played.iter().filter(|p| p.attack_records > 0 || p.attack_correlation >= 0.3).count(),
            "note": self.note,
            "passed": ok,
        });
        let path = std::path::Path::new(&dir).join(format!("{:02}.json", self.n));
        let _ = std::fs::write(path, serde_json::to_vec_pretty(&json).unwrap_or_default());
    }
}

fn village_a(r: &Range) -> &Identity {
    &r.pki.towns[0].villages[0].identity
}

fn area_a(r: &Range) -> certs::AreaCode {
    r.pki.towns[0].villages[0].area
}

fn area_b(r: &Range) -> certs::AreaCode {
    r.pki.towns[0].villages[1].area
}

/// A heartbeat in `serial`'s name (signing it is up to the caller).
fn status_of(serial: u64, muted: bool) -> protocol::Status {
    protocol::Status {
        terminal_serial: serial,
        seq: 1,
        sent_at_ms: now_ms(),
        volume: if muted { 0 } else { 100 },
        muted,
        playing: None,
        state: protocol::control::PlayState::Waiting,
        clock_offset_us: 0,
        clock_uncertainty_us: u32::MAX,
        software: "terminal-agent 0.1.0".into(),
        faults: vec![],
        revocation_numbers: vec![],
        refusals: vec![],
        audio: Default::default(),
        cache: Default::default(),
    }
}

/// Starts the range and the genuine alert every attack runs against.
async fn setup() -> (Range, Genuine) {
    let r = Range::start().await;
    let g = r.genuine_alert(3.0).await;
    (r, g)
}

/// A tamper hook that, before each of the first `n` piped segments of the
/// genuine alert, sends what `forge` makes of it; the genuine frame follows.
fn before_segments(
    n: usize,
    mut forge: impl FnMut(&Segment, &RawFrame) -> Vec<Vec<u8>> + Send + 'static,
) -> tests::adversary::Tamper {
    let mut done = 0;
    Box::new(move |raw: &RawFrame| {
        let mut out = Vec::new();
        if raw.kind == FrameKind::Segment && done < n {
            if let Ok(Message::Segment(s)) = raw.message() {
                out.extend(forge(&s, raw));
                done += 1;
            }
        }
        out.push(raw.bytes.clone());
        out
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a01_unsigned_broadcast() {
    let (r, g) = setup().await;
    let f = forge::broadcast(village_a(&r), 101, vec![area_a(&r)], |_| {});
    let unsigned: Vec<Vec<u8>> = f
        .frames()
        .iter()
        .map(|x| forge::strip_signature(x))
        .collect();
    assert!(r.rogue.inject(&unsigned).await > 0);
    Attack::new(1, "unsigned broadcast")
        .tries("header and segments with zeroed signatures, from a compromised relay")
        .refused([RefusalReason::HeaderSignature])
        .ids([f.id()])
        .conclude(&r, &g)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a02_signed_by_an_unknown_key() {
    let (r, g) = setup().await;
    // A town certificate in the district's name, made with a key the
    // district never saw.
    let town = &r.pki.towns[0].identity;
    let key = SecretKey::generate();
    let mut body = town.cert().body().clone();
    body.public_key = key.public();
    let fake = Certificate::sign_body(body, &key);
    let impostor = Identity {
        key,
        chain: vec![r.pki.district.cert().clone(), fake],
    };
    let f = forge::broadcast(&impostor, 102, vec![r.pki.towns[0].area], |_| {});
    assert!(r.rogue.inject(&f.frames()).await > 0);
    Attack::new(2, "signed by an unknown key")
        .tries(
            "a town certificate claiming the district as issuer, signed by the attacker's own key",
        )
        .refused([RefusalReason::CertSignature])
        .ids([f.id()])
        .conclude(&r, &g)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a03_a_complete_chain_from_another_root() {
    let (r, g) = setup().await;
    let foreign = forge::foreign_identity(Tier::District);
    let f = forge::broadcast(&foreign, 103, vec![r.county()], |_| {});
    assert!(r.rogue.inject(&f.frames()).await > 0);
    Attack::new(3, "chain from another root")
        .tries(
            "a complete, valid district chain under a root the terminals were not provisioned with",
        )
        .refused([RefusalReason::ChainUntrusted])
        .ids([f.id()])
        .conclude(&r, &g)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a04_a_village_key_addressing_another_village() {
    let (r, g) = setup().await;
    let f = forge::broadcast(village_a(&r), 104, vec![area_b(&r)], |_| {});
    assert!(r.rogue.inject(&f.frames()).await > 0);
    Attack::new(4, "village key addressing another village")
        .tries("village A's stolen key signs a broadcast to village B")
        .refused([RefusalReason::TargetOutsideScope])
        .ids([f.id()])
        .conclude(&r, &g)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a05_a_town_key_addressing_outside_its_town() {
    let (r, g) = setup().await;
    let town1 = &r.pki.towns[0].identity;
    let f = forge::broadcast(
        town1,
        105,
        vec![r.pki.towns[0].area, r.pki.towns[1].area],
        |_| {},
    );
    assert!(r.rogue.inject(&f.frames()).await > 0);
    Attack::new(5, "town key addressing outside its town")
        .tries("town 1's stolen key signs a broadcast to its own town and town 2")
        .refused([RefusalReason::TargetOutsideScope])
        .ids([f.id()])
        .conclude(&r, &g)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a06_a_terminal_key_trying_to_issue() {
    let (r, g) = setup().await;
    let terminal = r.terminal_identity(SPARE_B);
    let f = forge::broadcast(terminal, 106, vec![area_b(&r)], |_| {});
    assert!(r.rogue.inject(&f.frames()).await > 0);
    Attack::new(6, "terminal key issuing")
        .tries("a terminal's own (valid) key signs a broadcast to its village")
        .refused([RefusalReason::SignerNotPlatform])
        .ids([f.id()])
        .conclude(&r, &g)
        .await;
}

/// A village certificate from the stolen town key with the given validity.
fn village_valid(r: &Range, from: i64, until: i64) -> Identity {
    let town = &r.pki.towns[0].identity;
    let key = SecretKey::generate();
    let mut body = village_a(r).cert().body().clone();
    body.serial ^= 0x5a5a;
    body.public_key = key.public();
    body.not_before = from;
    body.not_after = until;
    let cert = Certificate::sign_body(body, &town.key);
    let mut chain = town.chain_below_root();
    chain.push(cert);
    Identity { key, chain }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a07_expired_certificate() {
    let (r, g) = setup().await;
    let now = certs::time::unix_now();
    let expired = village_valid(&r, now - 3000, now - 60);
    let f = forge::broadcast(&expired, 107, vec![area_a(&r)], |_| {});
    assert!(r.rogue.inject(&f.frames()).await > 0);
    Attack::new(7, "expired certificate")
        .tries("a correctly issued village certificate that expired a minute ago")
        .refused([RefusalReason::CertExpired])
        .ids([f.id()])
        .conclude(&r, &g)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a08_not_yet_valid_certificate() {
    let (r, g) = setup().await;
    let now = certs::time::unix_now();
    let early = village_valid(&r, now + 3600, now + 7200);
    let f = forge::broadcast(&early, 108, vec![area_a(&r)], |_| {});
    assert!(r.rogue.inject(&f.frames()).await > 0);
    Attack::new(8, "not-yet-valid certificate")
        .tries("a correctly issued village certificate valid only from an hour from now")
        .refused([RefusalReason::CertNotYetValid])
        .ids([f.id()])
        .conclude(&r, &g)
        .await;
}

/// Revokes `serials` through the district's API (the district signs).
async fn revoke(r: &Range, serials: &[u64]) -> serde_json::Value {
    let body = serde_json::json!({
        "revoke": serials.iter().map(|s| format!("{s:016x}")).collect::<Vec<_>>(),
    });
    let resp = reqwest::Client::new()
        .post(format!("{}/api/revocations", r.api()))
        .bearer_auth(&r.creds.maintainer.token)
        .json(&body)
        .send()
        .await
        .expect("revocation API");
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
    resp.json().await.expect("revocation JSON")
}

/// Waits until every terminal holds the district's list number `number`.
async fn wait_list(r: &Range, number: u64, timeout: Duration) -> bool {
    let district = r.pki.district.cert().serial();
    tests::eventually(timeout, || {
        r.terminals.iter().all(|t| {
            t.handle()
                .snapshot()
                .revocation_numbers
                .contains(&(district, number))
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a09_revoked_certificate() {
    let (r, g) = setup().await;
    revoke(&r, &[village_a(&r).cert().serial()]).await;
    assert!(wait_list(&r, 1, Duration::from_secs(5)).await);
    let f = forge::broadcast(village_a(&r), 109, vec![area_a(&r)], |_| {});
    assert!(r.rogue.inject(&f.frames()).await > 0);
    Attack::new(9, "revoked certificate")
        .tries("village A's key, revoked at the district, signs a notice to village A after the list arrived")
        .refused([RefusalReason::CertRevoked])
        .ids([f.id()])
        .conclude(&r, &g)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a10_replay_after_its_end_time() {
    let (r, g) = setup().await;
    // A genuine district alert, signed when it aired ten minutes ago.
    let now = now_ms();
    let f = forge::broadcast(&r.pki.district, 110, vec![r.county()], |h| {
        h.issued_at_ms = now - 600_000;
        h.start_ms = now - 600_000;
        h.end_ms = now - 300_000;
    });
    assert!(r.rogue.inject(&f.frames()).await > 0);
    Attack::new(10, "replay after end time")
        .tries("a recorded genuine district alert, replayed five minutes after it ended")
        .refused([RefusalReason::Expired])
        .ids([f.id()])
        .conclude(&r, &g)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a11_replay_within_validity_also_after_restart() {
    let (mut r, g) = setup().await;
    assert!(r.wait_finished(g.id, Duration::from_secs(40)).await);
    let recorded = r.rogue.recorded();
    assert!(!recorded.is_empty(), "the relay recorded the alert");
    let before = r.terminals[A1].samples().len();
    assert!(r.rogue.inject(&recorded).await > 0);
    // Power-cut a1, then replay again into the restarted terminal.
    r.restart_terminal(A1).await;
    assert!(
        tests::eventually(Duration::from_secs(20), || {
            r.terminals[A1].handle().snapshot().connected_to == Some(r.rogue.addr)
        })
        .await
    );
    let restarted_refusals = r.terminals[A1].refused(RefusalReason::Replayed);
    assert!(r.rogue.inject(&recorded).await > 0);
    let after_restart = tests::eventually(Duration::from_secs(10), || {
        r.terminals[A1].refused(RefusalReason::Replayed) > restarted_refusals
    })
    .await;
    assert!(
        after_restart,
        "the restarted terminal refuses the replay too"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        r.terminals[A1].samples().len(),
        before,
        "nothing played after the alert ended"
    );
    Attack::new(11, "replay within validity")
        .tries("the genuine alert's recorded frames sent again while still valid, before and after a power cut of the terminal")
        .refused([RefusalReason::Replayed])
        .ids([])
        .conclude(&r, &g)
        .await;
}

/// `segment` moved into the genuine alert: same bytes, id and sequence
/// rewritten, the other broadcast's signature kept.
fn spliced(donor: &Segment, into: BroadcastId, seq: u32) -> Vec<u8> {
    let mut body = donor.body().to_vec();
    body[1..17].copy_from_slice(&into.as_u128().to_be_bytes());
    body[17..21].copy_from_slice(&seq.to_be_bytes());
    encode_frame(FrameKind::Segment, &body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a12_a_segment_of_another_broadcast_spliced_in() {
    let r = Range::start().await;
    // Another genuine district broadcast supplies the audio.
    let donor = forge::broadcast(&r.pki.district, 112, vec![r.county()], |_| {});
    let donors = donor.segments.clone();
    r.rogue.set_tamper(Some(before_segments(3, move |s, _| {
        vec![spliced(&donors[s.seq as usize % donors.len()], s.id, s.seq)]
    })));
    let g = r.genuine_alert(3.0).await;
    Attack::new(12, "segment spliced from another broadcast")
        .tries("a compromised relay puts a genuinely signed segment of another broadcast into the alert, ahead of the real one")
        .refused([RefusalReason::SegmentSignature])
        .ids([donor.id()])
        .conclude(&r, &g)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a13_reordered_and_duplicated_segments() {
    let r = Range::start().await;
    let mut held: Option<Vec<u8>> = None;
    let mut n = 0;
    r.rogue.set_tamper(Some(Box::new(move |raw: &RawFrame| {
        if raw.kind != FrameKind::Segment {
            return vec![raw.bytes.clone()];
        }
        n += 1;
        match n {
            // Hold segment 2, send 3 then 2 (reordered); send 5 twice.
            2 => {
                held = Some(raw.bytes.clone());
                vec![]
            }
            3 => vec![raw.bytes.clone(), held.take().unwrap_or_default()],
            5 => vec![raw.bytes.clone(), raw.bytes.clone()],
            _ => vec![raw.bytes.clone()],
        }
    })));
    // The segment that comes after its successor is refused at the first
    // honest hop, so the terminals below lose it (500 ms): a 6 s alert
    // stays recognisable around the hole (3 s gave correlation 0.89).
    let g = r.genuine_alert(6.0).await;
    Attack::new(13, "reordered and duplicated segments")
        .tries("a compromised relay swaps two segments of the alert and repeats another")
        .refused([RefusalReason::StaleSequence])
        .ids([])
        .conclude(&r, &g)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a14_one_flipped_bit_in_the_audio() {
    let r = Range::start().await;
    r.rogue.set_tamper(Some(before_segments(2, |_, raw| {
        let mut f = raw.bytes.clone();
        let mid = 40 + (f.len() - 40) / 2;
        f[mid] ^= 0x10;
        vec![f]
    })));
    let g = r.genuine_alert(3.0).await;
    Attack::new(14, "one flipped bit in the audio")
        .tries("a copy of a genuine segment with one bit of Opus data flipped, sent ahead of the real one")
        .refused([RefusalReason::SegmentSignature])
        .ids([])
        .conclude(&r, &g)
        .await;
}

/// `header` with a field changed and its original signature kept.
fn altered(
    header: &SignedHeader,
    like: &Identity,
    change: impl FnOnce(&mut protocol::BroadcastHeader),
) -> Vec<u8> {
    let mut h = header.header().clone();
    change(&mut h);
    // Encoded with the same chain; the signature is then replaced by the
    // original one.
    let resigned = SignedHeader::sign_unchecked(h, like).expect("encodes");
    let mut body = resigned.body().to_vec();
    let n = body.len();
    let orig = header.body();
    body[n - 64..].copy_from_slice(&orig[orig.len() - 64..]);
    encode_frame(FrameKind::Header, &body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a15_a_changed_header_field() {
    let r = Range::start().await;
    let district = copy(&r.pki.district);
    let town2 = r.pki.towns[1].area;
    r.rogue.set_tamper(Some(Box::new(move |raw: &RawFrame| {
        let mut out = Vec::new();
        if let Ok(Message::Header(h)) = raw.message() {
            out.push(altered(&h, &district, |h| {
                h.severity = protocol::Severity::Blue
            }));
            out.push(altered(&h, &district, |h| h.targets = vec![town2]));
            out.push(altered(&h, &district, |h| h.end_ms += 3_600_000));
        }
        out.push(raw.bytes.clone());
        out
    })));
    let g = r.genuine_alert(3.0).await;
    Attack::new(15, "changed header field")
        .tries("the alert's header with severity, target area or end time changed, original signature kept, ahead of the real one")
        .refused([RefusalReason::HeaderSignature])
        .ids([])
        .conclude(&r, &g)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a16_a_truncated_segment() {
    let r = Range::start().await;
    r.rogue.set_tamper(Some(before_segments(2, |_, raw| {
        let body = &raw.bytes[protocol::frame::FRAME_PREFIX_LEN..];
        vec![encode_frame(FrameKind::Segment, &body[..body.len() - 30])]
    })));
    let g = r.genuine_alert(3.0).await;
    Attack::new(16, "truncated segment")
        .tries("a genuine segment cut short (framing intact), ahead of the real one")
        .refused([RefusalReason::Malformed])
        .ids([])
        .conclude(&r, &g)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a17_oversized_lengths_and_garbage_on_streams() {
    let (r, g) = setup().await;
    // A segment frame declaring 4 GiB, a header frame one byte over its
    // limit, an unknown version, and plain garbage: each on its own stream.
    let mut huge = vec![1u8, FrameKind::Segment.code()];
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    huge.extend_from_slice(&[0xab; 512]);
    let mut over = vec![1u8, FrameKind::Header.code()];
    over.extend_from_slice(&((FrameKind::Header.max_body() + 1) as u32).to_be_bytes());
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for stream in [huge, over, vec![9, 1, 0, 0, 0, 4, 1, 2, 3, 4], garbage] {
        assert!(r.rogue.inject(&[stream]).await > 0);
    }
    assert!(
        tests::eventually(Duration::from_secs(10), || {
            [A1, B1].iter().all(|i| {
                let t = &r.terminals[*i];
                t.refused(RefusalReason::Malformed) + t.refused(RefusalReason::UnsupportedVersion)
                    >= 4
            })
        })
        .await,
        "every garbled stream is refused"
    );
    // Then garbage on the control stream: the terminals drop that upstream.
    assert!(r.rogue.inject_control(&[0xff; 64]).await > 0);
    Attack::new(17, "oversized lengths and garbage")
        .tries("frames declaring lengths beyond every limit, an unknown version and random bytes on broadcast streams and on the control stream")
        .refused([RefusalReason::Malformed, RefusalReason::UnsupportedVersion])
        .ids([])
        .conclude(&r, &g)
        .await;
    let hostile = tests::eventually(Duration::from_secs(10), || {
        [A1, B1]
            .iter()
            .all(|i| r.terminals[*i].handle().snapshot().hostile_upstreams >= 1)
    })
    .await;
    assert!(hostile, "a garbled control stream drops the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a30_a_frame_cut_off_by_the_end_of_its_stream() {
    let (r, g) = setup().await;
    let f = forge::broadcast(&r.pki.district, 130, vec![area_a(&r)], |_| {});
    let mut header = f.frames()[0].clone();
    header.truncate(header.len() / 2);
    assert!(r.rogue.inject(&[header]).await > 0);
    assert!(
        tests::eventually(Duration::from_secs(10), || {
            [A1, B1]
                .iter()
                .all(|i| r.terminals[*i].refused(RefusalReason::Malformed) >= 1)
        })
        .await,
        "a truncated frame is counted where it arrives"
    );
    Attack::new(30, "frame cut off by the end of its stream")
        .tries("half a header frame on a broadcast stream that then ends")
        .refused([RefusalReason::Malformed])
        .ids([f.id()])
        .conclude(&r, &g)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a18_an_older_revocation_list_to_roll_back() {
    let (r, g) = setup().await;
    let spare = r.terminal_identity(SPARE_B).cert().serial();
    revoke(&r, &[spare]).await;
    revoke(&r, &[village_a(&r).cert().serial()]).await;
    assert!(wait_list(&r, 2, Duration::from_secs(5)).await);
    // List 1 again (as recorded when it went out): it does not revoke
    // village A. Then a notice from village A's key.
    let d = &r.pki.district;
    let old = RevocationList::sign(
        d.cert().serial(),
        d.chain_below_root(),
        &d.key,
        1,
        certs::time::unix_now(),
        vec![spare],
    )
    .expect("list");
    r.rogue
        .inject_control(&Message::Revocation(old).encode())
        .await;
    let f = forge::broadcast(village_a(&r), 118, vec![area_a(&r)], |_| {});
    assert!(r.rogue.inject(&f.frames()).await > 0);
    Attack::new(18, "older revocation list (rollback)")
        .tries("the district's earlier list (which does not revoke village A) pushed after the newer one, then a notice signed by village A")
        .refused([RefusalReason::RevocationRollback, RefusalReason::CertRevoked])
        .ids([f.id()])
        .conclude(&r, &g)
        .await;
    // The refused header is the cause, counted once: its stream is stopped,
    // so its segments do not each count again as an unknown broadcast.
    let unknown = r.counted(RefusalReason::UnknownBroadcast);
    assert_eq!(unknown.total(), 0, "{unknown:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a19_a_rogue_server_posing_as_a_platform() {
    let mut r = Range::start().await;
    // One fake platform from another root, one presenting a genuine
    // terminal certificate (a stolen terminal key is no platform key).
    let foreign =
        tests::adversary::rogue_server(&forge::foreign_identity(Tier::Village), r.anchor.clone())
            .expect("rogue server");
    let wrong_tier =
        tests::adversary::rogue_server(r.identity_of(A2), r.anchor.clone()).expect("rogue");
    let spare = r
        .add_terminal(
            "b2",
            SPARE_B,
            vec![
                foreign.local_addr().expect("addr"),
                wrong_tier.local_addr().expect("addr"),
                r.village_b.quic_addr,
            ],
        )
        .await;
    assert!(
        tests::eventually(Duration::from_secs(20), || {
            r.terminals[spare].handle().snapshot().connected_to == Some(r.village_b.quic_addr)
        })
        .await,
        "the terminal refuses the fakes and reaches its village platform"
    );
    let g = r.genuine_alert(3.0).await;
    Attack::new(19, "rogue server posing as a platform")
        .tries("a terminal's preferred upstreams are a server with another root's village certificate and one with a stolen terminal certificate")
        .refused([RefusalReason::ChainUntrusted, RefusalReason::PeerUntrusted])
        .ids([])
        .conclude(&r, &g)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a29_a_client_with_no_certificate() {
    let (r, g) = setup().await;
    tests::adversary::connect_without_certificate(r.village_b.quic_addr)
        .await
        .expect("the platform refuses the handshake");
    Attack::new(29, "client with no certificate")
        .tries("a stock TLS client that presents no certificate dials village B")
        .refused([RefusalReason::PeerUntrusted])
        .ids([])
        .conclude(&r, &g)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a20_a_rogue_client_posing_as_a_terminal() {
    let (r, g) = setup().await;
    let victim = r.terminals[B1].serial;
    // The thief has the spare terminal's key, and dials village B.
    let thief = r.terminal_identity(SPARE_B);
    let mut client = tests::adversary::RogueClient::connect(
        thief,
        r.anchor.clone(),
        r.village_b.quic_addr,
        thief.cert().serial(),
    )
    .await
    .expect("rogue client connects with a valid terminal certificate");
    let mut fake = status_of(victim, true);
    // Signed by the thief, and signed by a random key: both name the victim.
    client
        .send(&Message::Status(fake.sign(&thief.key)).encode())
        .await
        .expect("send");
    fake.seq = 2;
    client
        .send(&Message::Status(fake.sign(&SecretKey::generate())).encode())
        .await
        .expect("send");
    let receipt = protocol::Receipt {
        broadcast: Some(g.id),
        terminal_serial: victim,
        kind: protocol::ReceiptKind::Refused,
        reason: Some(RefusalReason::HeaderSignature),
        at_ms: now_ms(),
        detail: 0,
    };
    client
        .send(&Message::Receipt(receipt.sign(&thief.key)).encode())
        .await
        .expect("send");
    // A client from another root (its area is village A's) does not get
    // past the handshake: the platform closes the connection (TLS 1.3 lets
    // the client believe it connected until the server checked its chain).
    let foreign = forge::foreign_identity(Tier::Terminal);
    if let Ok(c) = tests::adversary::RogueClient::connect(
        &foreign,
        r.anchor.clone(),
        r.village_a.quic_addr,
        foreign.cert().serial(),
    )
    .await
    {
        let closed = tokio::time::timeout(Duration::from_secs(5), c.conn.closed()).await;
        assert!(closed.is_ok(), "the platform closes a foreign client");
    }
    Attack::new(20, "rogue client posing as a terminal")
        .tries("a client with a stolen terminal key reports status (muted, volume 0) and a refusal in another terminal's name; a client from another root dials in")
        .refused([RefusalReason::ForgedReport, RefusalReason::ChainUntrusted])
        .ids([])
        .conclude(&r, &g)
        .await;
    // Nowhere is the victim muted, and its coverage is its own.
    let rows: serde_json::Value = r
        .client()
        .get("/api/terminals")
        .await
        .expect("terminals API");
    let row = rows
        .as_array()
        .and_then(|a| a.iter().find(|t| t["serial"] == format!("{victim:016x}")))
        .cloned()
        .expect("the victim reports to the district");
    assert_eq!(row["muted"], false, "{row}");
    assert!(
        r.village_b
            .relay
            .book()
            .terminals(now_ms(), 60_000)
            .iter()
            .all(|t| t.serial != format!("{victim:016x}")),
        "village B took no report in the victim's name"
    );
    let coverage = r.district.relay.coverage(g.id, platform::now_ms());
    assert_eq!(coverage.refused, 0, "{coverage:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a21_a_compromised_relay_forges_retargets_or_resigns() {
    let r = Range::start().await;
    let town1 = copy(&r.pki.towns[0].identity);
    let district = copy(&r.pki.district);
    let town2 = r.pki.towns[1].area;
    let county = r.county();
    r.rogue.set_tamper(Some(Box::new(move |raw: &RawFrame| {
        let mut out = Vec::new();
        if let Ok(Message::Header(h)) = raw.message() {
            // Retargeted: the district's bytes, another target, its signature.
            out.push(altered(&h, &district, |h| h.targets = vec![town2]));
            // Re-signed by the relay's own (town) key under the district's id.
            let resigned = SignedHeader::sign_unchecked(h.header().clone(), &town1).expect("signs");
            out.push(Message::Header(resigned).encode());
            // Re-issued under the relay's own id, still to the whole county.
            let mut own = protocol::testing::alert_header(&town1, 121, vec![county], now_ms(), 1);
            own.title = h.header().title.clone();
            let own = SignedHeader::sign_unchecked(own, &town1).expect("signs");
            out.push(Message::Header(own).encode());
        }
        out.push(raw.bytes.clone());
        out
    })));
    let g = r.genuine_alert(3.0).await;
    Attack::new(21, "compromised relay forges, retargets, re-signs")
        .tries("the relay (holding town 1's key) retargets the district alert, re-signs it with its own key under the district's id, and re-issues it to the whole county under its own id")
        .refused([RefusalReason::HeaderSignature, RefusalReason::IdNotIssuers, RefusalReason::TargetOutsideScope,])
        .ids([])
        .conclude(&r, &g)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a21b_a_compromised_relay_forges_reports() {
    let (r, g) = setup().await;
    let victim = r.terminals[A1].serial;
    // A status in a1's name, signed by a key that is not a1's: "muted".
    let status = status_of(victim, true);
    assert!(
        r.rogue
            .report_up(Message::Status(status.sign(&SecretKey::generate())).encode())
            .await
    );
    // "Finished" receipts for c1, a terminal of town 2 the relay announces
    // although it is outside its scope, signed with an invented key.
    let c1 = r.identity_of(C1);
    let member = protocol::Member {
        chain: c1.chain_below_root(),
    };
    assert!(r.rogue.report_up(Message::Member(member).encode()).await);
    let receipt = protocol::Receipt {
        broadcast: Some(g.id),
        terminal_serial: r.terminals[C1].serial,
        kind: protocol::ReceiptKind::Finished,
        reason: None,
        at_ms: now_ms(),
        detail: 0,
    };
    assert!(
        r.rogue
            .report_up(Message::Receipt(receipt.sign(&SecretKey::generate())).encode())
            .await
    );
    Attack::new(28, "compromised relay forges reports")
        .tries("the relay sends up a status in a terminal's name (muted) signed by another key, and announces a terminal outside its scope")
        .refused([RefusalReason::ForgedReport])
        .ids([])
        .conclude(&r, &g)
        .await;
    let muted = r
        .district
        .relay
        .book()
        .terminals(now_ms(), 60_000)
        .into_iter()
        .find(|t| t.serial == format!("{victim:016x}"))
        .map(|t| t.muted);
    assert_eq!(muted, Some(false), "the district keeps a1's own status");
    assert_eq!(
        r.district.relay.refusals().get(RefusalReason::ForgedReport),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a22_a_forged_cancel_of_a_genuine_alert() {
    let (r, g) = setup().await;
    let cancel = |signer: &Identity, seq: u16, targets| {
        let mut h = protocol::testing::alert_header(signer, seq, targets, now_ms(), 0);
        h.msg_type = MessageType::Cancel;
        h.related = Some(g.id);
        h.audio = AudioParams::NONE;
        h.title = "解除".into();
        Message::Header(SignedHeader::sign_unchecked(h, signer).expect("signs")).encode()
    };
    // A stolen village key may not cancel the district's alert; an unsigned
    // cancel in the district's name is no cancel either.
    let by_village = cancel(village_a(&r), 122, vec![area_a(&r)]);
    let unsigned = forge::strip_signature(&cancel(&r.pki.district, 123, vec![r.county()]));
    assert!(r.rogue.inject(&[by_village]).await > 0);
    assert!(r.rogue.inject(&[unsigned]).await > 0);
    Attack::new(22, "forged cancel")
        .tries("a cancel of the running district alert signed by a stolen village key, and an unsigned one in the district's name")
        .refused([RefusalReason::CancelNotAuthorised, RefusalReason::HeaderSignature])
        .ids([])
        .conclude(&r, &g)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a23_forged_remote_commands() {
    let (r, g) = setup().await;
    let command = |signer: &Identity, id: u64, areas, action| {
        Message::Command(
            Command {
                command_id: id,
                issued_at_ms: now_ms(),
                expires_at_ms: now_ms() + 60_000,
                target_areas: areas,
                target_terminals: vec![],
                action,
            }
            .sign(signer),
        )
        .encode()
    };
    let foreign = forge::foreign_identity(Tier::District);
    let county = r.county();
    for c in [
        // Another root's district mutes everyone.
        command(&foreign, 1, vec![county], Action::Mute(true)),
        // A terminal key sets volume 0.
        command(
            r.terminal_identity(SPARE_B),
            2,
            vec![area_b(&r)],
            Action::Volume(0),
        ),
        // Village A's stolen key mutes village B.
        command(village_a(&r), 3, vec![area_b(&r)], Action::Mute(true)),
    ] {
        assert!(r.rogue.inject_control(&c).await > 0);
    }
    Attack::new(23, "forged remote commands")
        .tries("mute from another root, volume 0 signed by a terminal key, mute of village B signed by village A's stolen key")
        .refused([RefusalReason::ChainUntrusted, RefusalReason::SignerNotPlatform, RefusalReason::TargetOutsideScope,])
        .ids([])
        .conclude(&r, &g)
        .await;
    for t in &r.terminals {
        let s = t.handle().snapshot();
        assert!(!s.muted && s.volume == 100, "{}: {s:?}", t.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a24_issue_time_far_in_the_future_or_past() {
    let (r, g) = setup().await;
    let now = now_ms();
    let future = forge::broadcast(village_a(&r), 124, vec![area_a(&r)], |h| {
        h.issued_at_ms = now + 86_400_000;
        h.start_ms = h.issued_at_ms;
        h.end_ms = h.issued_at_ms + 600_000;
    });
    let past = forge::broadcast(village_a(&r), 125, vec![area_a(&r)], |h| {
        h.issued_at_ms = now - 30 * 86_400_000;
        h.start_ms = now;
        h.end_ms = now + 600_000;
    });
    assert!(r.rogue.inject(&future.frames()).await > 0);
    assert!(r.rogue.inject(&past.frames()).await > 0);
    Attack::new(24, "issue time far in the future or past")
        .tries("village A's key signs notices issued a day ahead and a month ago")
        .refused([
            RefusalReason::IssuedInFuture,
            RefusalReason::IssuedTooLongAgo,
        ])
        .ids([future.id(), past.id()])
        .conclude(&r, &g)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a25_a_flood_of_invalid_segments_while_the_alert_plays() {
    let r = Range::start().await;
    let key = SecretKey::generate();
    // Around every genuine segment, 200 forged ones for the same alert.
    r.rogue.set_tamper(Some(Box::new(move |raw: &RawFrame| {
        let mut out = Vec::new();
        if let Ok(Message::Segment(s)) = raw.message() {
            let forged = Segment::sign(
                s.id,
                s.seq,
                s.pts_us,
                s.last,
                s.frames.clone(),
                &[0; 32],
                &key,
            )
            .expect("segment");
            let frame = Message::Segment(forged).encode();
            out.extend(std::iter::repeat_n(frame, 200));
        }
        out.push(raw.bytes.clone());
        out
    })));
    let cpu_before = process_cpu();
    let g = r.genuine_alert(3.0).await;
    // And a hundred streams of garbage segments on top.
    let garbage = forge::broadcast(village_a(&r), 125, vec![area_a(&r)], |_| {});
    let junk: Vec<Vec<u8>> = garbage
        .segments
        .iter()
        .map(|s| spliced(s, g.id, 3))
        .collect();
    for _ in 0..100 {
        r.rogue.inject(&junk).await;
    }
    Attack::new(25, "flood of invalid segments")
        .tries("200 forged segments around every genuine one and 100 extra streams of spliced segments while the alert plays")
        .refused([RefusalReason::SegmentSignature])
        .ids([garbage.id()])
        .conclude(&r, &g)
        .await;
    // Bounded work: each terminal checked at most a few strikes' worth of
    // signatures before dropping the flooding relay for an honest platform.
    for i in [A1, B1] {
        let s = r.terminals[i].handle().snapshot();
        let refused: u64 = s.refusals.iter().map(|(_, n)| n).sum();
        println!(
            "{}: {refused} refusals, {} hostile upstreams",
            r.terminals[i].name, s.hostile_upstreams
        );
        assert!(s.hostile_upstreams >= 1, "the flooding relay is dropped");
        assert!(
            refused <= 64 * transport::guard::STREAM_REFUSALS as u64,
            "refusals are bounded by the stream and link budgets: {refused}"
        );
    }
    println!(
        "process CPU during the flood test: {:.2} s",
        process_cpu() - cpu_before
    );
}

/// CPU seconds this process has used (user + system), from /proc.
fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// The genuine header forged by the tests above must decode: a self-check
/// of the forging helpers (a broken helper would make attacks vacuous).
#[test]
fn forged_material_is_well_formed() {
    let now = certs::time::unix_now();
    let pki = certs::pki::DistrictPki::generate(
        certs::pki::Layout::ONE_OF_EACH,
        (now - 60, now + 3600),
        now,
    )
    .unwrap();
    let f: Forged = forge::broadcast(
        &pki.district,
        1,
        vec![pki.district.cert().scope()[0]],
        |_| {},
    );
    for frame in f.frames() {
        let mut reader = protocol::FrameReader::new();
        let frames = reader.push(&frame).unwrap();
        assert_eq!(frames.len(), 1);
        frames[0].message().unwrap();
    }
    let spliced = spliced(&f.segments[0], f.id(), 7);
    let mut reader = protocol::FrameReader::new();
    match reader.push(&spliced).unwrap()[0].message().unwrap() {
        Message::Segment(s) => assert_eq!((s.id, s.seq), (f.id(), 7)),
        other => panic!("{other:?}"),
    }
    // A genuine verifier accepts the unaltered forgery from a valid key.
    let mut v = protocol::Verifier::new(
        certs::TrustAnchor::new(pki.root.cert().clone()).unwrap(),
        protocol::Audience::Terminal {
            area: pki.district.cert().scope()[0],
        },
        protocol::Policy::default(),
        protocol::MemoryReplayStore::new(),
    );
    v.accept_header(&f.header, now_ms()).unwrap();
    v.accept_segment(&f.segments[0], now_ms()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_village_reaches_every_terminal_below_within_one_heartbeat() {
    let r = Range::start().await;
    let village = village_a(&r).cert().serial();
    assert!(
        tests::eventually(Duration::from_secs(10), || r
            .district
            .relay
            .members
            .key(village)
            .is_some())
        .await,
        "the district knows village A's key (announced up the tree)"
    );
    let started = tokio::time::Instant::now();
    revoke(&r, &[village]).await;
    assert!(wait_list(&r, 1, Duration::from_secs(10)).await);
    let took = started.elapsed();
    println!("revocation list at every terminal after {took:?} (heartbeat {HEARTBEAT:?})");
    assert!(
        took <= HEARTBEAT,
        "the list took {took:?}, more than one heartbeat"
    );
    assert!(
        r.district.relay.members.key(village).is_none(),
        "a revoked platform reports no more"
    );
    // A terminal that connects later gets the list at once, and again when
    // its heartbeat shows it does not hold it.
    let spare = r.terminal_identity(SPARE_B);
    let mut late = tests::adversary::RogueClient::connect(
        spare,
        r.anchor.clone(),
        r.village_b.quic_addr,
        spare.cert().serial(),
    )
    .await
    .expect("a terminal connects to its village");
    let is_list = |m: &Option<Message>| matches!(m, Some(Message::Revocation(l)) if l.revoked.contains(&village));
    assert!(
        is_list(&late.next_message(Duration::from_secs(5)).await),
        "pushed on connect"
    );
    let behind = status_of(spare.cert().serial(), false);
    late.send(&Message::Status(behind.sign(&spare.key)).encode())
        .await
        .expect("status");
    assert!(
        is_list(&late.next_message(Duration::from_secs(5)).await),
        "re-sent to a terminal whose status is behind"
    );
    let current = protocol::Status {
        seq: 2,
        revocation_numbers: vec![(r.pki.district.cert().serial(), 1)],
        ..behind
    };
    late.send(&Message::Status(current.sign(&spare.key)).encode())
        .await
        .expect("status");
    assert!(
        late.next_message(Duration::from_secs(1)).await.is_none(),
        "nothing re-sent to a terminal that holds the list"
    );
    // The village platform itself is cut off: its parents close its links
    // and its terminal fails over to the town, still reachable.
    assert!(
        tests::eventually(Duration::from_secs(20), || {
            r.terminals[A2].handle().snapshot().connected_to == Some(r.town1.quic_addr)
        })
        .await,
        "a2 leaves its revoked village platform"
    );
    // Its operator can no longer put anything on the air...
    let clip = r.dir.join("notice.wav");
    tests::clip("notice-zh-48k.flac", 2.0, &clip);
    let api = testbed::ApiClient::of(&r.village_a, &r.creds).expect("API");
    let refused = api
        .issue(
            &clip,
            &[
                ("areas", area_a(&r).to_string()),
                ("class", "daily".into()),
                ("title", "村务通知".into()),
            ],
        )
        .await;
    assert!(
        refused.is_err(),
        "a revoked platform cannot issue: {refused:?}"
    );
    // ...its stolen key is refused by the terminals, and genuine alerts still
    // reach every terminal, village A's included.
    let g = r.genuine_alert(3.0).await;
    let f = forge::broadcast(village_a(&r), 130, vec![area_a(&r)], |_| {});
    assert!(r.rogue.inject(&f.frames()).await > 0);
    Attack::new(26, "revocation of a village")
        .tries("the district revokes village A; then village A's key signs a notice")
        .refused([RefusalReason::CertRevoked])
        .ids([f.id()])
        .conclude(&r, &g)
        .await;
}

/// Starts a platform on `addr` (the old one's port, so nobody below needs a
/// new address), retrying while the old socket is released.
async fn restart_platform(
    r: &Range,
    name: &str,
    id: &Identity,
    parents: Vec<std::net::SocketAddr>,
    addr: std::net::SocketAddr,
) -> platform::PlatformHandle {
    for _ in 0..50 {
        let config = platform_config(&r.dir, name, parents.clone());
        let listeners = async {
            Ok::<_, anyhow::Error>(platform::Listeners {
                quic: transport::bind_udp(addr)?,
                http: Some(tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?),
                gateway: None,
            })
        };
        if let Ok(listeners) = listeners.await {
            let creds = r.creds.clone();
            let p = platform::Platform::new(config, bundle(&r.pki.root, id))
                .expect("platform configuration")
                .with_accounts(Box::new(move |a| creds.provision(a)))
                .start(listeners)
                .await;
            if let Ok(p) = p {
                return p;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} could not restart on {addr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_town_is_rekeyed_without_touching_its_terminals() {
    let mut r = Range::start().await;
    let now = certs::time::unix_now();
    let validity = (now - 600, r.pki.district.cert().body().not_after);
    let old_town = copy(&r.pki.towns[0].identity);
    let old_cert = old_town.cert().body().clone();
    // The district certifies a new town key; the town re-certifies its
    // villages' existing keys. No terminal bundle changes.
    let new_town = r
        .pki
        .district
        .issue_child(
            Tier::Town,
            &old_cert.name,
            old_cert.resource_code,
            old_cert.scope.clone(),
            validity,
            now,
        )
        .expect("new town certificate");
    let recertify = |v: &Identity| Identity {
        key: copy(v).key,
        chain: new_town
            .certify(
                certs::CertRequest {
                    tier: Tier::Village,
                    name: v.cert().body().name.clone(),
                    resource_code: v.cert().body().resource_code,
                    scope: v.cert().scope().to_vec(),
                    not_before: validity.0,
                    not_after: validity.1,
                    public_key: v.key.public(),
                },
                now,
            )
            .expect("village re-certified"),
    };
    let village_a_new = recertify(village_a(&r));
    let village_b_new = recertify(&r.pki.towns[0].villages[1].identity);
    let d = r.district.quic_addr;
    let (t1, va, vb) = (
        r.town1.quic_addr,
        r.village_a.quic_addr,
        r.village_b.quic_addr,
    );
    r.town1.kill();
    r.village_a.kill();
    r.village_b.kill();
    r.town1 = restart_platform(&r, "town1-new", &new_town, vec![d], t1).await;
    r.village_a = restart_platform(&r, "village-a-new", &village_a_new, vec![t1, d], va).await;
    r.village_b = restart_platform(&r, "village-b-new", &village_b_new, vec![t1, d], vb).await;
    // The old town key is revoked at the district.
    revoke(&r, &[old_town.cert().serial()]).await;
    assert!(wait_list(&r, 1, Duration::from_secs(10)).await);
    // Terminals that were on the relay holding the old key leave it.
    assert!(
        tests::eventually(Duration::from_secs(20), || {
            [A1, B1].iter().all(|i| {
                let at = r.terminals[*i].handle().snapshot().connected_to;
                at.is_some() && at != Some(r.rogue.addr)
            })
        })
        .await,
        "terminals leave the platform whose key was revoked"
    );
    // The new key's broadcasts play on the town's terminals, as provisioned.
    let clip = r.dir.join("town-notice.wav");
    tests::clip("alert-zh.wav", 2.0, &clip);
    let town_api = testbed::ApiClient::of(&r.town1, &r.creds).expect("API");
    let id: BroadcastId = town_api
        .issue(
            &clip,
            &[
                ("areas", r.pki.towns[0].area.to_string()),
                ("class", "emergency".into()),
                ("severity", "2".into()),
                ("title", "镇级预警（新密钥）".into()),
            ],
        )
        .await
        .expect("the re-keyed town issues");
    let played = tests::eventually(Duration::from_secs(30), || {
        [A1, B1, A2].iter().all(|i| {
            r.terminals[*i]
                .records()
                .get(&id)
                .is_some_and(|p| p.finished)
        })
    })
    .await;
    assert!(played, "the town's terminals play the new key's broadcast");
    assert!(
        !r.terminals[C1].records().contains_key(&id),
        "outside the town nothing plays"
    );
    // The old key is refused: as a platform in the TLS handshake (b1 after a
    // power cut, with the list from its store, dials the old relay first)...
    let before = r.terminals[B1].refused(RefusalReason::CertRevoked);
    r.restart_terminal(B1).await;
    assert!(
        tests::eventually(Duration::from_secs(20), || {
            r.terminals[B1].handle().snapshot().connected_to == Some(r.village_b.quic_addr)
        })
        .await,
        "b1 refuses the old key's relay and reaches its village"
    );
    assert!(r.terminals[B1].refused(RefusalReason::CertRevoked) > before);
    // ...and as the signer of a broadcast, even through a relay the
    // terminal trusts (here: village A's platform key, stolen). The new
    // terminal is provisioned with the lists in force, as `certs bundle
    // --crl` does.
    let relay = tests::adversary::RogueRelay::start(&village_a_new, r.anchor.clone(), None)
        .await
        .expect("relay");
    let lists = r.district.relay.revocations.lists();
    let spare_a = r
        .add_provisioned_terminal(
            "a3",
            SPARE_A,
            vec![relay.addr, r.village_a.quic_addr],
            lists,
        )
        .await;
    assert!(
        tests::eventually(Duration::from_secs(20), || {
            r.terminals[spare_a].handle().snapshot().connected_to == Some(relay.addr)
        })
        .await
    );
    let f = forge::broadcast(&old_town, 131, vec![r.pki.towns[0].area], |_| {});
    assert!(relay.inject(&f.frames()).await > 0);
    assert!(
        tests::eventually(Duration::from_secs(10), || {
            r.terminals[spare_a].refused(RefusalReason::CertRevoked) > 0
        })
        .await,
        "a broadcast signed by the old town key is refused"
    );
    assert!(!r.terminals[spare_a].records().contains_key(&f.id()));
    assert!(r.terminals[spare_a].samples().is_empty());
    Attack::new(27, "re-keyed town, old key revoked")
        .tries("town 1 gets a new key and re-certifies its villages; the old key is revoked; then the old key serves as a platform and signs a broadcast")
        .refused([RefusalReason::CertRevoked])
        .ids([f.id()])
        .note("new key's broadcast played on a1, b1, a2 with unchanged bundles; nothing of the old key's broadcast played")
        .conclude_refused(&r)
        .await;
}
