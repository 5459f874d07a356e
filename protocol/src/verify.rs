//! The sans-IO verifier: given the provisioned root, who this node is, the
//! current time, the newest revocation lists and a replay store, it accepts
//! or refuses each header, segment and command with a typed reason, and
//! counts refusals by reason. No sockets, no clock: callers pass `now`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use certs::{
    Applied, AreaCode, Certificate, PublicKey, RevocationList, RevocationState, TrustAnchor,
};

use crate::control::{Action, SignedCommand};
use crate::header::SignedHeader;
use crate::ids::{BroadcastId, MessageType};
use crate::refusal::{Refusal, RefusalCounts};
use crate::replay::{ReplayRecord, ReplayStore};
use crate::segment::Segment;

mod scheduled;
pub use scheduled::{HeldRevision, ProgrammeVerdict};

/// Time rules.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// How far in the future an issue time may lie (clock skew).
    pub max_future_ms: i64,
    /// How old an issue time may be; also the longest a broadcast may last
    /// from its issue time, so replay records can be pruned after that.
    pub max_age_ms: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_future_ms: 2 * 60 * 1000,
            max_age_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// Who is verifying: a terminal plays what targets its own area; a relay
/// forwards what targets any part of its scope.
#[derive(Debug, Clone)]
pub enum Audience {
    Terminal { area: AreaCode },
    Relay { scope: Vec<AreaCode> },
}

impl Audience {
    fn addressed_by(&self, targets: &[AreaCode]) -> bool {
        match self {
            Audience::Terminal { area } => targets.iter().any(|t| t.covers(*area)),
            Audience::Relay { scope } => certs::area::any_overlap(targets, scope),
        }
    }
}

/// What an accepted header means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderVerdict {
    /// A new broadcast: segments from 0 follow.
    New,
    /// The same header seen before (reconnect, restart): continue at `next_seq`.
    Resumed { next_seq: u32 },
    /// Cancelled before: nothing plays.
    Closed,
    /// A valid cancel of `target`; `was_active` when this node had it.
    Cancel {
        target: BroadcastId,
        was_active: bool,
    },
}

/// What an accepted segment means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentVerdict {
    /// Segments skipped since the previous accepted one (lost on the way).
    pub skipped: u32,
    pub last: bool,
}

/// A broadcast whose header was accepted and whose segments are expected.
#[derive(Debug, Clone)]
struct Active {
    digest: [u8; 32],
    key: PublicKey,
    signer: Certificate,
    targets: Vec<AreaCode>,
    chain: Vec<Certificate>,
    chain_not_after_s: i64,
    max_frames: u8,
    total_segments: u32,
    end_ms: i64,
    next_seq: u32,
}

/// What applying a revocation list did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationOutcome {
    pub applied: Applied,
    /// Active broadcasts the list revoked: stop them.
    pub stopped: Vec<BroadcastId>,
}

/// Verifies everything a node receives before it is played or forwarded.
#[derive(Debug)]
pub struct Verifier<S: ReplayStore> {
    anchor: TrustAnchor,
    /// Shared with the node's TLS verifiers: one state for messages and
    /// handshakes.
    revocations: Arc<RwLock<RevocationState>>,
    audience: Audience,
    policy: Policy,
    store: S,
    active: HashMap<BroadcastId, Active>,
    /// Broadcasts fully received but not yet ended: they may still be
    /// playing, so who may cancel them (and revocation) still matters.
    completed: HashMap<BroadcastId, Active>,
    /// Cancels that arrived before their broadcast: target → canceller.
    early_cancels: HashMap<BroadcastId, Certificate>,
    /// Ids of headers refused (and not accepted since): a segment of one
    /// is a consequence of that refusal, not a cause of its own, and is
    /// not counted again. Bounded (cleared when full).
    refused_headers: HashSet<BroadcastId>,
    counts: RefusalCounts,
}

/// Refused header ids remembered to count their segments with them.
const REFUSED_HEADERS: usize = 1024;

impl<S: ReplayStore> Verifier<S> {
    pub fn new(anchor: TrustAnchor, audience: Audience, policy: Policy, store: S) -> Self {
        Verifier {
            anchor,
            revocations: Arc::default(),
            audience,
            policy,
            store,
            active: HashMap::new(),
            completed: HashMap::new(),
            early_cancels: HashMap::new(),
            refused_headers: HashSet::new(),
            counts: RefusalCounts::default(),
        }
    }

    /// True when the header of `id` was refused here (and none accepted
    /// since): its segments are refused as unknown but not counted or
    /// reported again.
    pub fn header_refused(&self, id: BroadcastId) -> bool {
        self.refused_headers.contains(&id)
    }

    pub fn counts(&self) -> &RefusalCounts {
        &self.counts
    }

    /// The lists in force.
    pub fn revocations(&self) -> RwLockReadGuard<'_, RevocationState> {
        self.revocations.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Uses `shared` as the revocation state, so that the node's TLS
    /// verifiers and this verifier always hold the same lists.
    pub fn with_shared_revocations(mut self, shared: Arc<RwLock<RevocationState>>) -> Self {
        self.revocations = shared;
        self
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Broadcasts currently accepted and expecting segments.
    pub fn active(&self) -> impl Iterator<Item = (BroadcastId, u32)> + '_ {
        self.active.iter().map(|(id, a)| (*id, a.next_seq))
    }

    /// Closed broadcasts (complete or cancelled) that have not ended: named
    /// in Subscribe so an upstream does not send them again.
    pub fn closed(&self, now_ms: i64, limit: usize) -> Vec<BroadcastId> {
        self.store.closed(now_ms, limit).unwrap_or_default()
    }

    /// Forgets what ended before `now_ms`: completed broadcasts kept for
    /// cancel authority, and the replay store's records.
    pub fn prune(&mut self, now_ms: i64) -> Result<usize, S::Error> {
        self.completed.retain(|_, a| a.end_ms >= now_ms);
        self.early_cancels
            .retain(|_, c| c.body().not_after * 1000 >= now_ms);
        self.store.prune(now_ms)
    }

    /// Counts a refusal made outside the verifier (e.g. an undecodable frame).
    pub fn count(&mut self, refusal: &Refusal) {
        self.counts.record(refusal.reason());
    }

    fn refuse<T>(&mut self, refusal: Refusal) -> Result<T, Refusal> {
        self.counts.record(refusal.reason());
        Err(refusal)
    }

    /// Applies a revocation list. Active broadcasts whose chain it revokes
    /// stop at once; their ids are returned. A list that does not verify or
    /// would roll back a newer one is refused and counted.
    pub fn apply_revocation(
        &mut self,
        list: RevocationList,
        now_ms: i64,
    ) -> Result<RevocationOutcome, Refusal> {
        let applied = self
            .revocations
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .apply(list, &self.anchor, now_ms / 1000);
        let applied = match applied {
            Ok(a) => a,
            Err(e) => return self.refuse(Refusal::Revocation(e)),
        };
        if applied == Applied::AlreadyCurrent {
            return Ok(RevocationOutcome {
                applied,
                stopped: Vec::new(),
            });
        }
        let now_s = now_ms / 1000;
        let stopped: Vec<BroadcastId> = self
            .active
            .iter()
            .chain(self.completed.iter())
            .filter(|(_, a)| {
                self.anchor
                    .verify(&a.chain, now_s, &self.revocations())
                    .is_err()
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &stopped {
            self.active.remove(id);
            self.completed.remove(id);
        }
        Ok(RevocationOutcome { applied, stopped })
    }

    /// True when `chain` no longer verifies at `now_ms` (revoked or expired):
    /// used to drop a link whose peer was just revoked.
    pub fn chain_fails(&self, chain: &[Certificate], now_ms: i64) -> bool {
        self.anchor
            .verify(chain, now_ms / 1000, &self.revocations())
            .is_err()
    }

    /// The signer's certificate, if its chain verifies and it is a platform.
    fn platform_signer(&self, chain: &[Certificate], now_s: i64) -> Result<Certificate, Refusal> {
        let signer = self
            .anchor
            .verify(chain, now_s, &self.revocations())
            .map_err(Refusal::Chain)?
            .clone();
        if !signer.tier().is_platform() {
            return Err(Refusal::SignerNotPlatform(signer.tier()));
        }
        Ok(signer)
    }

    /// Verifies a header: chain, signer tier, signature, id, scope, audience,
    /// consistency, time window, replay, and cancel authority.
    pub fn accept_header(
        &mut self,
        signed: &SignedHeader,
        now_ms: i64,
    ) -> Result<HeaderVerdict, Refusal> {
        match self.check_header(signed, now_ms) {
            Ok(v) => {
                self.refused_headers.remove(&signed.id());
                Ok(v)
            }
            Err(r) => {
                if !self.active.contains_key(&signed.id()) {
                    if self.refused_headers.len() >= REFUSED_HEADERS {
                        self.refused_headers.clear();
                    }
                    self.refused_headers.insert(signed.id());
                }
                self.refuse(r)
            }
        }
    }

    fn check_header(
        &mut self,
        signed: &SignedHeader,
        now_ms: i64,
    ) -> Result<HeaderVerdict, Refusal> {
        let h = signed.header();
        let now_s = now_ms / 1000;
        let signer = self.platform_signer(signed.chain(), now_s)?;
        if !signed.signature_valid() {
            return Err(Refusal::HeaderSignature);
        }
        if h.id.issuer() != signer.body().resource_code {
            return Err(Refusal::IdNotIssuers);
        }
        h.check().map_err(Refusal::Inconsistent)?;
        outside_scope(&signer, &h.targets)?;
        if !self.audience.addressed_by(&h.targets) {
            return Err(Refusal::NotAddressed);
        }
        if h.issued_at_ms > now_ms + self.policy.max_future_ms {
            return Err(Refusal::IssuedInFuture {
                ahead_ms: h.issued_at_ms - now_ms,
            });
        }
        if h.issued_at_ms < now_ms - self.policy.max_age_ms {
            return Err(Refusal::IssuedTooLongAgo {
                age_ms: now_ms - h.issued_at_ms,
            });
        }
        if h.end_ms > h.issued_at_ms + self.policy.max_age_ms {
            return Err(Refusal::Inconsistent(
                "lasts longer than the accepted window",
            ));
        }
        if h.end_ms < now_ms {
            return Err(Refusal::Expired { end_ms: h.end_ms });
        }

        let record = self
            .store
            .get(h.id)
            .map_err(|e| Refusal::Store(e.to_string()))?;
        let resumed = match record {
            Some(r) if r.digest != *signed.digest() => return Err(Refusal::DuplicateId),
            Some(r) if r.closed => return Err(Refusal::Replayed),
            Some(r) => Some(r.next_seq),
            None => None,
        };

        if h.msg_type == MessageType::Cancel {
            let target = h
                .related
                .ok_or(Refusal::Inconsistent("cancel without target"))?;
            return self.accept_cancel(signed, &signer, target, resumed.is_none(), now_ms);
        }

        if resumed.is_none() {
            if let Some(canceller) = self.early_cancels.remove(&h.id) {
                if may_cancel(&canceller, &signer, &h.targets) {
                    self.record_new(signed, true)?;
                    return Ok(HeaderVerdict::Closed);
                }
            }
            self.record_new(signed, false)?;
        }
        let next_seq = resumed.unwrap_or(0);
        let chain_not_after_s = signed
            .chain()
            .iter()
            .map(|c| c.body().not_after)
            .min()
            .unwrap_or(i64::MIN);
        self.active.insert(
            h.id,
            Active {
                digest: *signed.digest(),
                key: *signer.public_key(),
                signer,
                targets: h.targets.clone(),
                chain: signed.chain().to_vec(),
                chain_not_after_s,
                max_frames: h.audio.frames_per_segment,
                total_segments: h.audio.total_segments,
                end_ms: h.end_ms,
                next_seq,
            },
        );
        Ok(match resumed {
            None => HeaderVerdict::New,
            Some(next_seq) => HeaderVerdict::Resumed { next_seq },
        })
    }

    fn accept_cancel(
        &mut self,
        signed: &SignedHeader,
        canceller: &Certificate,
        target: BroadcastId,
        first_time: bool,
        now_ms: i64,
    ) -> Result<HeaderVerdict, Refusal> {
        let h = signed.header();
        let original = self
            .active
            .get(&target)
            .or_else(|| self.completed.get(&target));
        let was_active = match original {
            Some(original) => {
                if !may_cancel(canceller, &original.signer, &original.targets) {
                    return Err(Refusal::CancelNotAuthorised);
                }
                true
            }
            None => false,
        };
        let known = self
            .store
            .get(target)
            .map_err(|e| Refusal::Store(e.to_string()))?;
        // Seen here once (before a restart) but its signer is no longer at
        // hand: its authority cannot be checked, and nothing of it plays.
        if !was_active && known.is_some() {
            return Err(Refusal::CancelNotAuthorised);
        }
        if first_time {
            self.record_new(signed, true)?;
        }
        if was_active {
            let a = self
                .active
                .remove(&target)
                .or_else(|| self.completed.remove(&target));
            if let Some(a) = a {
                self.put(
                    target,
                    ReplayRecord {
                        digest: a.digest,
                        end_ms: a.end_ms,
                        next_seq: a.next_seq,
                        closed: true,
                        cancelled: true,
                        played: false,
                    },
                )?;
            }
        } else if h.end_ms >= now_ms {
            self.early_cancels.insert(target, canceller.clone());
        }
        Ok(HeaderVerdict::Cancel { target, was_active })
    }

    /// Local silence (R20), after a `Silence` command was accepted: the
    /// broadcast is closed here as a cancel would close it (its later
    /// segments and a resend are refused as replays; a restart does not
    /// take it again). True when it was held.
    pub fn silence(&mut self, id: BroadcastId) -> Result<bool, Refusal> {
        let Some(a) = self
            .active
            .remove(&id)
            .or_else(|| self.completed.remove(&id))
        else {
            return Ok(false);
        };
        self.put(
            id,
            ReplayRecord {
                digest: a.digest,
                end_ms: a.end_ms,
                next_seq: a.next_seq,
                closed: true,
                cancelled: true,
                played: false,
            },
        )?;
        Ok(true)
    }

    /// Remembers a header seen for the first time (closed: it was cancelled
    /// before it arrived, and never plays).
    fn record_new(&mut self, signed: &SignedHeader, closed: bool) -> Result<(), Refusal> {
        let h = signed.header();
        self.put(
            h.id,
            ReplayRecord {
                digest: *signed.digest(),
                end_ms: h.end_ms,
                next_seq: 0,
                closed,
                cancelled: closed,
                played: false,
            },
        )
    }

    fn put(&mut self, id: BroadcastId, record: ReplayRecord) -> Result<(), Refusal> {
        self.store
            .put(id, &record)
            .map_err(|e| Refusal::Store(e.to_string()))
    }

    /// Verifies a segment against its accepted header: known broadcast,
    /// order, signature (binding to the header), frame count, time.
    pub fn accept_segment(
        &mut self,
        segment: &Segment,
        now_ms: i64,
    ) -> Result<SegmentVerdict, Refusal> {
        match self.check_segment(segment, now_ms) {
            Ok(v) => Ok(v),
            // Counted once already, as its header's refusal.
            Err(Refusal::UnknownBroadcast) if self.header_refused(segment.id) => {
                Err(Refusal::UnknownBroadcast)
            }
            Err(r) => self.refuse(r),
        }
    }

    fn check_segment(&mut self, segment: &Segment, now_ms: i64) -> Result<SegmentVerdict, Refusal> {
        let a = self
            .active
            .get(&segment.id)
            .ok_or(Refusal::UnknownBroadcast)?;
        // The cheap check first: a flood of replayed segments costs no signature check.
        if segment.seq < a.next_seq {
            return Err(Refusal::StaleSequence {
                seq: segment.seq,
                expected: a.next_seq,
            });
        }
        if !segment.signature_valid(&a.digest, &a.key) {
            return Err(Refusal::SegmentSignature);
        }
        if a.total_segments != 0 && segment.seq >= a.total_segments {
            return Err(Refusal::BeyondEnd {
                seq: segment.seq,
                total: a.total_segments,
            });
        }
        if segment.frames.len() > a.max_frames as usize {
            return Err(Refusal::TooManyFrames);
        }
        if now_ms > a.end_ms {
            return Err(Refusal::Expired { end_ms: a.end_ms });
        }
        if now_ms / 1000 > a.chain_not_after_s {
            let serial = a.signer.serial();
            return Err(Refusal::Chain(certs::ChainError::Expired {
                serial,
                not_after: a.chain_not_after_s,
            }));
        }
        let skipped = segment.seq.saturating_sub(a.next_seq);
        let last = segment.last || (a.total_segments != 0 && segment.seq + 1 == a.total_segments);
        // Once the last segment is in, the broadcast is closed: a replay of
        // its header must not bring back an entry that has nothing to play.
        let record = ReplayRecord {
            digest: a.digest,
            end_ms: a.end_ms,
            next_seq: segment.seq + 1,
            closed: last,
            cancelled: false,
            played: false,
        };
        self.put(segment.id, record)?;
        if let Some(a) = self.active.get_mut(&segment.id) {
            a.next_seq = segment.seq + 1;
        }
        if last {
            if let Some(a) = self.active.remove(&segment.id) {
                self.completed.insert(segment.id, a);
            }
        }
        Ok(SegmentVerdict { skipped, last })
    }

    /// Verifies a remote command for a terminal with `serial` in `area`.
    pub fn accept_command(
        &mut self,
        cmd: &SignedCommand,
        terminal_serial: u64,
        area: AreaCode,
        now_ms: i64,
    ) -> Result<Action, Refusal> {
        match self.check_command(cmd, terminal_serial, area, now_ms) {
            Ok(v) => Ok(v),
            Err(r) => self.refuse(r),
        }
    }

    fn check_command(
        &mut self,
        cmd: &SignedCommand,
        terminal_serial: u64,
        area: AreaCode,
        now_ms: i64,
    ) -> Result<Action, Refusal> {
        let signer = self.authentic_command(cmd, now_ms)?;
        let c = &cmd.command;
        // Terminals named one by one must also lie in the signer's scope.
        if !signer.scope().iter().any(|s| s.covers(area)) {
            return Err(Refusal::TargetOutsideScope(area));
        }
        let addressed = c.target_terminals.contains(&terminal_serial)
            || c.target_areas.iter().any(|t| t.covers(area));
        if !addressed {
            return Err(Refusal::NotAddressed);
        }
        self.first_time(&signer, c)?;
        Ok(c.action)
    }

    /// Verifies a command a relay passes down: authentic, addressed to part
    /// of its scope (or to terminals by serial), not seen before.
    pub fn accept_command_for_relay(
        &mut self,
        cmd: &SignedCommand,
        now_ms: i64,
    ) -> Result<(), Refusal> {
        let result = self.authentic_command(cmd, now_ms).and_then(|signer| {
            let c = &cmd.command;
            if c.target_terminals.is_empty() && !self.audience.addressed_by(&c.target_areas) {
                return Err(Refusal::NotAddressed);
            }
            self.first_time(&signer, c)
        });
        match result {
            Ok(()) => Ok(()),
            Err(r) => self.refuse(r),
        }
    }

    /// Chain, signer tier, signature, target scope and time of a command.
    fn authentic_command(&self, cmd: &SignedCommand, now_ms: i64) -> Result<Certificate, Refusal> {
        let c = &cmd.command;
        let signer = self.platform_signer(cmd.chain(), now_ms / 1000)?;
        if !cmd.signature_valid() {
            return Err(Refusal::HeaderSignature);
        }
        outside_scope(&signer, &c.target_areas)?;
        if c.issued_at_ms > now_ms + self.policy.max_future_ms {
            return Err(Refusal::IssuedInFuture {
                ahead_ms: c.issued_at_ms - now_ms,
            });
        }
        if c.expires_at_ms < now_ms {
            return Err(Refusal::Expired {
                end_ms: c.expires_at_ms,
            });
        }
        if c.expires_at_ms > c.issued_at_ms + self.policy.max_age_ms {
            return Err(Refusal::Inconsistent(
                "command lasts longer than the accepted window",
            ));
        }
        Ok(signer)
    }

    /// Records the command; refuses it if it was recorded before.
    fn first_time(
        &mut self,
        signer: &Certificate,
        c: &crate::control::Command,
    ) -> Result<(), Refusal> {
        let fresh = self
            .store
            .insert_command(signer.serial(), c.command_id, c.expires_at_ms)
            .map_err(|e| Refusal::Store(e.to_string()))?;
        if fresh {
            Ok(())
        } else {
            Err(Refusal::CommandReplayed)
        }
    }
}

/// Refuses the first target the signer's scope does not cover.
fn outside_scope(signer: &Certificate, targets: &[AreaCode]) -> Result<(), Refusal> {
    match certs::area::first_outside(targets, signer.scope()) {
        Some(t) => Err(Refusal::TargetOutsideScope(t)),
        None => Ok(()),
    }
}

/// A cancel is authorised when it comes from the original's issuer (same
/// resource code, so a re-keyed platform can cancel what it sent before), or
/// from a higher tier whose scope covers every target of the original.
fn may_cancel(
    canceller: &Certificate,
    original_signer: &Certificate,
    original_targets: &[AreaCode],
) -> bool {
    let same_issuer = canceller.body().resource_code == original_signer.body().resource_code
        && canceller.tier() == original_signer.tier();
    let higher_covering = canceller.tier() < original_signer.tier()
        && certs::area::scope_within(original_targets, canceller.scope());
    same_issuer || higher_covering
}
