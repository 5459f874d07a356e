//! The relay: what a platform does with what it receives and issues. It
//! verifies each broadcast once and keeps it (`broadcast::Broadcasts`, fanned
//! out to every child whose area it targets), passes commands down and
//! reports up, applies revocation lists, and remembers the nodes below
//! (`members::Members`). Every operation takes the time as a parameter; no
//! lock is held while another is taken, nor across I/O other than the
//! store's (sled, whose writes are buffered; flushes happen only for what
//! an operator is about to be told was accepted).

use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use certs::{AreaCode, Certificate, Identity, RevocationList, RevocationState, Tier, TrustAnchor};
use protocol::frame::{FrameKind, RawFrame};
use protocol::{
    Audience, BroadcastId, HeaderVerdict, MemoryReplayStore, Message, Policy, Refusal,
    SecurityEvent, Segment, SignedEvent, SignedHeader, Verifier,
};
use tokio::sync::{broadcast, mpsc};

use crate::book::Book;
use crate::broadcast::{Broadcast, Broadcasts};
use crate::members::Members;
use crate::reporter::Reporter;
use crate::revoke::Revocations;
use crate::store::Store;

/// Why an ingest did not go through.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    #[error("not a broadcast frame ({0:?})")]
    WrongKind(FrameKind),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The platform's relay state.
pub struct Relay {
    pub identity: Identity,
    pub tier: Tier,
    pub scope: Vec<AreaCode>,
    verifier: Mutex<Verifier<MemoryReplayStore>>,
    pub broadcasts: Broadcasts,
    /// Verified remote commands (raw frames) for child sessions.
    commands: broadcast::Sender<(protocol::SignedCommand, Bytes)>,
    store: Store,
    pub book: Mutex<Book>,
    anchor: TrustAnchor,
    /// The lists in force (one state for this relay's verifier and the TLS
    /// verifiers of this node) and the feed of new ones.
    pub revocations: Revocations,
    /// Security events and the queue of frames for the parent.
    pub reporter: Reporter,
    /// Nodes below whose reports can be checked.
    pub members: Members,
    /// Publish requests between this platform and the tiers next to it.
    pub requests: crate::requests::RequestDesk,
    /// The tree's time as this platform knows it: its own clock at the
    /// top, else corrected by what its parent link measured. Children are
    /// answered with it.
    pub clock: Arc<transport::clock::TreeClock>,
    /// What the accept loop decided about every connection attempt.
    pub admission: Arc<transport::admission::AdmissionCounters>,
    /// Each linked child's link, by serial.
    pub children: crate::downstream::Children,
    /// Programmes and quiet hours sent ahead of time (R9, R20).
    pub ahead: crate::ahead::Ahead,
}

impl Relay {
    pub fn new(
        identity: Identity,
        anchor: TrustAnchor,
        store: Store,
        revocations: Arc<RwLock<RevocationState>>,
        up: Option<mpsc::Sender<Bytes>>,
        clock: Arc<transport::clock::TreeClock>,
        ahead: crate::ahead::Ahead,
    ) -> Arc<Self> {
        let cert = identity.cert().clone();
        let scope = cert.scope().to_vec();
        let verifier = Verifier::new(
            anchor.clone(),
            Audience::Relay {
                scope: scope.clone(),
            },
            Policy::default(),
            MemoryReplayStore::new(),
        )
        .with_shared_revocations(revocations.clone());
        Arc::new(Relay {
            tier: cert.tier(),
            scope,
            identity,
            verifier: Mutex::new(verifier),
            broadcasts: Broadcasts::default(),
            commands: broadcast::channel(256).0,
            store,
            book: Mutex::new(Book::default()),
            anchor,
            revocations: Revocations::new(revocations),
            reporter: Reporter::new(cert.serial(), cert.tier(), up),
            members: Members::default(),
            requests: Default::default(),
            clock,
            admission: Default::default(),
            children: Default::default(),
            ahead,
        })
    }

    /// Takes note of a node below (its chain verified against the root and
    /// the lists in force; when `announcer_scope` is given, the announcing
    /// child must cover the member) and announces it to the parent.
    pub fn add_member(
        &self,
        chain: &[Certificate],
        announcer_scope: Option<&[AreaCode]>,
        now_ms: i64,
    ) -> Result<u64, Refusal> {
        let chain: Vec<Certificate> = chain
            .iter()
            .filter(|c| c.tier() != Tier::Root)
            .cloned()
            .collect();
        let leaf = {
            let lists = self.revocations.current();
            self.anchor
                .verify(&chain, now_ms / 1000, &lists)
                .map_err(Refusal::Chain)?
                .clone()
        };
        if let Some(scope) = announcer_scope {
            if !certs::area::scope_within(leaf.scope(), scope) {
                return Err(Refusal::ForgedReport);
            }
        }
        if let Some(announcement) = self.members.add(chain, &leaf) {
            self.send_up(announcement);
        }
        Ok(leaf.serial())
    }

    /// Counts a refusal made outside the verifier and reports it.
    pub fn refuse(&self, r: &Refusal, broadcast: Option<BroadcastId>, offender: u64, now_ms: i64) {
        self.verifier().count(r);
        self.report(r, broadcast, offender, now_ms);
    }

    /// Counts (and unless `report` is false, reports) a frame that did not
    /// even decode.
    pub(crate) fn undecodable(
        &self,
        e: certs::encoding::DecodeError,
        report: bool,
        now_ms: i64,
    ) -> IngestError {
        let r = Refusal::from(e);
        self.verifier().count(&r);
        if report {
            self.report(&r, None, 0, now_ms);
        }
        r.into()
    }

    /// Reports an already counted refusal as a security event (aggregated).
    pub(crate) fn report(
        &self,
        r: &Refusal,
        broadcast: Option<BroadcastId>,
        offender: u64,
        now_ms: i64,
    ) {
        if let Some(e) = self.reporter.note(r, broadcast, offender, now_ms) {
            self.emit(e, now_ms);
        }
    }

    /// Sends aggregated events whose window ended; called about once a second.
    pub fn flush_events(&self, now_ms: i64) {
        for e in self.reporter.due(now_ms) {
            self.emit(e, now_ms);
        }
    }

    /// Signs one of this platform's own events, keeps it and sends it up.
    fn emit(&self, e: SecurityEvent, now_ms: i64) {
        tracing::warn!(
            reason = e.reason.name(),
            count = e.count,
            offender = format!("{:016x}", e.offender),
            "security event"
        );
        let signed = e.sign(&self.identity.key);
        self.record_event(&signed, now_ms);
        self.reporter
            .send_up(Bytes::from(Message::SecurityEvent(signed).encode()));
    }

    /// Keeps an event (this platform's or one reported from below), durably.
    pub fn record_event(&self, e: &SignedEvent, now_ms: i64) {
        if let Err(err) = self.store.put_event(now_ms, e.body()) {
            tracing::warn!("storing a security event: {err}");
        }
        self.book().record_event(&e.event, now_ms);
    }

    /// This platform's resource code (its certificate's; the issuer part
    /// of its broadcast ids, its EBRID towards the national platforms).
    pub fn resource_code(&self) -> certs::ResourceCode {
        self.identity.cert().body().resource_code
    }

    /// The store (for the parts of the platform beside the relay).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Queues a frame for the parent (a child's report passed up unchanged).
    pub fn send_up(&self, frame: Bytes) {
        self.reporter.send_up(frame);
    }

    /// Applies a revocation list from the parent, the API or the store: the
    /// verifier and the TLS verifiers both use it from now on, broadcasts it
    /// revokes stop, it is stored and passed to every child. Returns false
    /// when it was already in force.
    pub fn apply_revocation(&self, list: RevocationList, now_ms: i64) -> Result<bool, Refusal> {
        let signer = list.signer_serial;
        let outcome = self.verifier().apply_revocation(list.clone(), now_ms);
        let outcome = match outcome {
            Ok(o) => o,
            Err(r) => {
                self.report(&r, None, signer, now_ms);
                return Err(r);
            }
        };
        if outcome.applied == certs::Applied::AlreadyCurrent {
            return Ok(false);
        }
        for id in &outcome.stopped {
            if let Some(b) = self.broadcasts.get(*id) {
                b.cancel();
            }
        }
        // Revoked members report no more (the lists are copied first: no
        // lock is held while another is taken).
        let lists = self.revocations.current();
        self.members
            .retain(|chain| self.anchor.verify(chain, now_ms / 1000, &lists).is_ok());
        if let Err(e) = self.store.put_revocation(signer, &list.encode()) {
            tracing::error!("storing a revocation list: {e}");
        }
        tracing::warn!(
            signer = format!("{signer:016x}"),
            number = list.number,
            revoked = list.revoked.len(),
            stopped = outcome.stopped.len(),
            "revocation list in force"
        );
        self.revocations.announce(list);
        Ok(true)
    }

    /// True when `chain` no longer verifies (a peer revoked or expired).
    pub fn chain_fails(&self, chain: &[Certificate], now_ms: i64) -> bool {
        self.verifier().chain_fails(chain, now_ms)
    }

    pub fn anchor(&self) -> &TrustAnchor {
        &self.anchor
    }

    pub(crate) fn verifier(&self) -> std::sync::MutexGuard<'_, Verifier<MemoryReplayStore>> {
        self.verifier.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Coverage of broadcast `id` as of `now_ms` (terminals gone silent
    /// count as lost; see `book::LOST_AFTER_MS`).
    pub fn coverage(&self, id: BroadcastId, now_ms: i64) -> crate::book::Coverage {
        let end_ms = self
            .broadcasts
            .get(id)
            .map_or(i64::MAX, |b| b.header.header().end_ms);
        self.book().coverage(id, now_ms, end_ms)
    }

    pub fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refusal counts of this platform's own verifier.
    pub fn refusals(&self) -> protocol::RefusalCounts {
        self.verifier().counts().clone()
    }

    /// Verifies and keeps a header frame, received from above or made here.
    pub fn ingest_header(
        &self,
        frame: Bytes,
        durable: bool,
        now_ms: i64,
    ) -> Result<HeaderVerdict, IngestError> {
        self.ingest_header_reporting(frame, durable, true, now_ms)
    }

    fn ingest_header_reporting(
        &self,
        frame: Bytes,
        durable: bool,
        report: bool,
        now_ms: i64,
    ) -> Result<HeaderVerdict, IngestError> {
        let header = match Message::decode_body(
            FrameKind::Header,
            &frame[protocol::frame::FRAME_PREFIX_LEN..],
        ) {
            Ok(Message::Header(h)) => h,
            Ok(other) => return Err(IngestError::WrongKind(other.kind())),
            Err(e) => return Err(self.undecodable(e, report, now_ms)),
        };
        let verdict = self.verifier().accept_header(&header, now_ms);
        let verdict = match verdict {
            Ok(v) => v,
            Err(r) => {
                if report {
                    self.report(&r, Some(header.id()), header.signer().serial(), now_ms);
                }
                return Err(r.into());
            }
        };
        match &verdict {
            HeaderVerdict::New => self.keep(header, frame, durable, now_ms)?,
            HeaderVerdict::Cancel { target, .. } => {
                if let Some(b) = self.broadcasts.get(*target) {
                    b.cancel();
                }
                self.keep(header, frame, durable, now_ms)?;
            }
            HeaderVerdict::Resumed { .. } | HeaderVerdict::Closed => {}
        }
        Ok(verdict)
    }

    fn keep(
        &self,
        header: SignedHeader,
        frame: Bytes,
        durable: bool,
        now_ms: i64,
    ) -> Result<(), IngestError> {
        self.store.put_header(header.id(), &frame)?;
        if durable {
            self.store.flush()?;
        }
        self.broadcasts
            .insert(Broadcast::new(header, frame, now_ms));
        Ok(())
    }

    /// Verifies and keeps a segment frame.
    pub fn ingest_segment(
        &self,
        frame: Bytes,
        durable: bool,
        now_ms: i64,
    ) -> Result<(), IngestError> {
        self.ingest_segment_reporting(frame, durable, true, now_ms)
    }

    fn ingest_segment_reporting(
        &self,
        frame: Bytes,
        durable: bool,
        report: bool,
        now_ms: i64,
    ) -> Result<(), IngestError> {
        let segment = match Segment::decode(&frame[protocol::frame::FRAME_PREFIX_LEN..]) {
            Ok(s) => s,
            Err(e) => return Err(self.undecodable(e, report, now_ms)),
        };
        let (verdict, consequence) = {
            let mut v = self.verifier();
            let verdict = v.accept_segment(&segment, now_ms);
            (verdict, v.header_refused(segment.id))
        };
        let verdict = match verdict {
            Ok(v) => v,
            Err(r) => {
                // A segment of a refused header was counted with it.
                if report && !consequence {
                    let offender = self
                        .broadcasts
                        .get(segment.id)
                        .map_or(0, |b| b.header.signer().serial());
                    self.report(&r, Some(segment.id), offender, now_ms);
                }
                return Err(r.into());
            }
        };
        self.store.put_segment(segment.id, segment.seq, &frame)?;
        if durable {
            self.store.flush()?;
        }
        if let Some(b) = self.broadcasts.get(segment.id) {
            b.push(segment.seq, segment.pts_us, frame, verdict.last);
        }
        Ok(())
    }

    /// Reloads revocation lists, still-valid broadcasts, receipts, terminal
    /// status and security events from the store after a restart.
    pub fn restore(&self, now_ms: i64) -> Result<usize, IngestError> {
        for body in self.store.revocations()? {
            match RevocationList::decode(&body) {
                Ok(list) => {
                    if let Err(e) = self.apply_revocation(list, now_ms) {
                        tracing::error!("a stored revocation list no longer applies: {e}");
                    }
                }
                Err(e) => tracing::error!("a stored revocation list is unreadable: {e}"),
            }
        }
        {
            // Read the store first: no lock is held across I/O.
            let (events, receipts, statuses, plays) = (
                self.store.events()?,
                self.store.receipts()?,
                self.store.statuses()?,
                self.store.play_receipts()?,
            );
            let mut book = self.book();
            for (ms, body) in events {
                if let Ok(e) = SignedEvent::decode(&body) {
                    book.record_event(&e.event, ms);
                }
            }
            for body in receipts {
                if let Ok(r) = protocol::SignedReceipt::decode(&body) {
                    book.record_receipt(&r.receipt);
                }
            }
            for body in statuses {
                if let Ok(s) = protocol::SignedStatus::decode(&body) {
                    book.record_status(&s.status, s.status.sent_at_ms);
                }
            }
            for body in plays {
                if let Ok(r) = protocol::SignedProgrammeReceipt::decode(&body) {
                    book.plays.record(&r.receipt);
                }
            }
        }
        let mut n = 0;
        for (header, segments) in self.store.broadcasts()? {
            let header = Bytes::from(header);
            // Quietly: what expired while the platform was down is no attack.
            match self.ingest_header_reporting(header.clone(), false, false, now_ms) {
                Ok(HeaderVerdict::New) => n += 1,
                _ => continue,
            }
            for (_, seg) in segments {
                let _ = self.ingest_segment_reporting(Bytes::from(seg), false, false, now_ms);
            }
        }
        for (id, areas) in self.store.silences()? {
            let b = BroadcastId::from_u128(id)
                .ok()
                .and_then(|id| self.broadcasts.get(id));
            if let Some(b) = b {
                let areas: Vec<AreaCode> = areas
                    .into_iter()
                    .filter_map(|a| AreaCode::from_u64(a).ok())
                    .collect();
                b.silence(&areas);
            }
        }
        Ok(n)
    }

    /// Verifies and keeps a frame of a broadcast (or of a programme sent
    /// ahead) received from the parent.
    pub fn ingest_raw(&self, raw: RawFrame, durable: bool, now_ms: i64) -> Result<(), IngestError> {
        match raw.kind {
            FrameKind::Header => self
                .ingest_header(Bytes::from(raw.bytes), durable, now_ms)
                .map(|_| ()),
            FrameKind::Segment => self.ingest_segment(Bytes::from(raw.bytes), durable, now_ms),
            FrameKind::Programme => self
                .ingest_programme(Bytes::from(raw.bytes), now_ms)
                .map(|_| ()),
            FrameKind::ProgrammeChunk => self.ingest_chunk(Bytes::from(raw.bytes), now_ms),
            k => Err(IngestError::WrongKind(k)),
        }
    }

    /// Verified commands, for child sessions.
    pub fn command_feed(&self) -> broadcast::Receiver<(protocol::SignedCommand, Bytes)> {
        self.commands.subscribe()
    }

    /// Verifies a remote command (from the parent or made here) and passes
    /// it to the children it concerns.
    pub fn ingest_command(&self, frame: Bytes, now_ms: i64) -> Result<(), IngestError> {
        let cmd = match Message::decode_body(
            FrameKind::Command,
            &frame[protocol::frame::FRAME_PREFIX_LEN..],
        ) {
            Ok(Message::Command(c)) => c,
            Ok(other) => return Err(IngestError::WrongKind(other.kind())),
            Err(e) => return Err(self.undecodable(e, true, now_ms)),
        };
        let verdict = self.verifier().accept_command_for_relay(&cmd, now_ms);
        if let Err(r) = verdict {
            let offender = cmd.chain().last().map_or(0, Certificate::serial);
            self.report(&r, None, offender, now_ms);
            return Err(r.into());
        }
        if let protocol::Action::Silence(id) = cmd.command.action {
            self.silence(id, &cmd.command.target_areas)?;
        }
        let _ = self.commands.send((cmd, frame));
        Ok(())
    }

    /// Local silence (R20) of `id` in `areas` at this relay: what it still
    /// forwards of it to children inside them stops, and stays stopped
    /// across restarts.
    fn silence(&self, id: BroadcastId, areas: &[AreaCode]) -> Result<(), IngestError> {
        if let Some(b) = self.broadcasts.get(id) {
            b.silence(areas);
            let all: Vec<u64> = b.silenced_areas().iter().map(|a| a.as_u64()).collect();
            self.store.put_silence(id, &all)?;
        }
        Ok(())
    }

    /// Releases the audio of ended broadcasts from memory, and forgets
    /// broadcasts that ended more than `keep_ms` ago (memory, store, replay
    /// records, coverage); returns how many were forgotten. Their end time has passed, so
    /// the verifier refuses them as expired anyway.
    pub fn prune(&self, now_ms: i64, keep_ms: i64) -> usize {
        // A programme's plays stay on the console for a week after its end.
        let over = self.ahead.prune(now_ms - crate::ahead::KEEP_ENDED_MS);
        for id in &over {
            if let Err(e) = self.store.remove_play_receipts(*id) {
                tracing::warn!("pruning the receipts of programme {id}: {e}");
            }
        }
        self.book().plays.forget(&over);
        self.broadcasts.release_ended(now_ms);
        let old = self.broadcasts.remove_ended(now_ms - keep_ms);
        self.book().forget(&old);
        for id in &old {
            if let Err(e) = self.store.remove(*id) {
                tracing::warn!("pruning {id}: {e}");
            }
        }
        let _ = self.verifier().prune(now_ms - keep_ms);
        old.len()
    }

    /// Forgets stored security events older than `keep_ms` (the audit
    /// retention); the totals by reason are kept in memory until restart.
    pub fn prune_events(&self, now_ms: i64, keep_ms: i64) -> usize {
        match self.store.prune_events(now_ms - keep_ms) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("pruning security events: {e}");
                0
            }
        }
    }

    /// Makes everything stored so far durable.
    pub fn flush(&self) -> Result<(), crate::store::StoreError> {
        self.store.flush()
    }

    /// Remembers a receipt (from this platform's own children or relayed
    /// from below), durably: coverage and security events survive a crash.
    pub fn record_receipt(&self, r: &protocol::SignedReceipt) {
        let rc = &r.receipt;
        if let Err(e) = self.store.put_receipt(
            rc.broadcast,
            rc.terminal_serial,
            rc.kind.code(),
            rc.at_ms,
            r.body(),
        ) {
            tracing::warn!("storing a receipt: {e}");
        }
        self.book().record_receipt(rc);
    }

    /// Remembers a programme receipt (from below), durably.
    pub fn record_play(&self, r: &protocol::SignedProgrammeReceipt) {
        if let Err(e) = self.store.put_play_receipt(&r.receipt, r.body()) {
            tracing::warn!("storing a programme receipt: {e}");
        }
        self.book().plays.record(&r.receipt);
    }

    /// Remembers a terminal's latest status, durably.
    pub fn record_status(&self, s: &protocol::SignedStatus, now_ms: i64) {
        if let Err(e) = self.store.put_status(s.status.terminal_serial, s.body()) {
            tracing::warn!("storing a status: {e}");
        }
        self.book().record_status(&s.status, now_ms);
    }
}
