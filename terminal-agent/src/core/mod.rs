//! The terminal's sans-IO core: verifier, arbitration, playout, decoding
//! and reporting in one state machine with one owner, in the style of
//! `quinn-proto`. It never touches a socket, a disk or a clock: the driver
//! hands it what arrived and the time (`handle_*`), drains what it wants
//! done (`poll_output`, `poll_chunk`), and sleeps until `poll_timeout`.
//!
//! Audio is decoded up to `decode_ahead_us` before it plays and handed to
//! the player with its play time, so a driver held up by a busy machine for
//! less than that costs nothing; a driver held up longer catches up on what
//! is still inside the presentation window (`PlayoutConfig::max_lag_us`) and
//! counts the rest as late.

pub mod arbiter;
pub mod programmes;
mod scheduled;

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, RwLock};

use certs::{AreaCode, Certificate, Identity, RevocationList, RevocationState, SecretKey, Tier};
use codec::{FrameDecoder, OpusFrameDecoder, PlayoutConfig, Slot};
use protocol::control::{Fault, PlayState};
use protocol::{
    Audience, BroadcastId, EventReporter, HeaderVerdict, Message, Policy, RawFrame, Receipt,
    ReceiptKind, Refusal, RefusalReason, ReplayStore, Segment, SignedCommand, SignedHeader, Status,
    Subscribe, Verifier,
};
use tracing::{debug, info};

use arbiter::Arbiter;
pub use arbiter::PlayRecord;
use programmes::Programmes;

use crate::journal::{Journal, Persist};

/// While something plays, a terminal's status goes up at least this often
/// (the platforms' coverage counts a playing terminal silent for three of
/// these as lost, `platform::book::LOST_AFTER_MS`); while idle, every
/// configured heartbeat (25 s by default: each costs its relay a
/// signature check and a few packets, for thousands of terminals).
pub const PLAYING_HEARTBEAT_US: i64 = 10_000_000;

#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub playout: PlayoutConfig,
    /// Heartbeat (signed status) period while linked.
    pub heartbeat_us: i64,
    /// Audio is decoded and handed to the player this far ahead of its
    /// play time.
    pub decode_ahead_us: i64,
    /// Decoding happens in batches of about this much audio (fewer
    /// wake-ups; the player always holds at least `decode_ahead_us` minus
    /// this).
    pub decode_batch_us: i64,
    /// Software version reported in the status.
    pub software: String,
    /// Severity I–II emergencies play at no less than this volume (R21).
    pub emergency_min_volume: u8,
    /// The most audio of scheduled programmes held (in memory and in the
    /// store), bytes of Opus frames.
    pub programme_cache_bytes: usize,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            playout: PlayoutConfig::default(),
            heartbeat_us: 25_000_000,
            decode_ahead_us: 300_000,
            decode_batch_us: 100_000,
            software: concat!("terminal-agent ", env!("CARGO_PKG_VERSION")).into(),
            emergency_min_volume: 70,
            programme_cache_bytes: 16 << 20,
        }
    }
}

/// Decoded audio for the loudspeaker, with when it plays.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Audio of an older generation than the player's last `Flush` is dropped.
    pub gen: u64,
    /// Unix µs (on the issuer's clock) at which the first sample plays.
    pub play_at_us: i64,
    pub broadcast: BroadcastId,
    pub pcm: Vec<f32>,
    /// How the audio was made: counted in the play record when handed out.
    pub made: Made,
}

/// How a chunk's audio was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    Decoded,
    /// From the next packet's forward error correction.
    Recovered,
    Concealed,
    Silence,
}

/// Something the core wants done.
#[derive(Debug, Clone)]
pub enum Output {
    /// A signed receipt, status or security event for the upstream.
    Up(Box<Message>),
    /// A change to the stored replay record.
    Persist(Persist),
    /// Audio already handed to the player of generations below `gen` must
    /// not play (a pre-emption, a cancel, a revocation).
    Flush { gen: u64 },
    /// The loudspeaker's gain changed (volume, mute): applies at once, also
    /// to audio already handed over.
    Gain(f32),
}

/// What to do with the link after a control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlVerdict {
    Done,
    /// Refused: counts against the link.
    Strike,
    /// Leave this upstream and avoid it.
    Hostile(&'static str),
}

/// What the core shows of itself (for the handle's snapshot).
#[derive(Debug, Clone, Default)]
pub struct CoreSnapshot {
    pub records: std::collections::HashMap<BroadcastId, PlayRecord>,
    pub refusals: Vec<(RefusalReason, u64)>,
    pub playing: Option<BroadcastId>,
    pub volume: u8,
    pub muted: bool,
    /// (signer, number) of the revocation lists in force.
    pub revocation_numbers: Vec<(u64, u64)>,
}

/// Refused header ids remembered so each gets one refusal receipt.
const REFUSED_IDS: usize = 1024;
/// Replay records and play records are pruned this often.
const PRUNE_EVERY_US: i64 = 60_000_000;
/// Play records are kept this long after their broadcast's validity ends.
const KEEP_RECORDS_MS: i64 = 3_600_000;

pub struct TerminalCore {
    serial: u64,
    area: AreaCode,
    key: SecretKey,
    config: CoreConfig,
    verifier: Verifier<Journal>,
    arbiter: Arbiter,
    decoder: Option<(u32, OpusFrameDecoder)>,
    pcm: Vec<f32>,
    reporter: EventReporter,
    refused_ids: HashSet<BroadcastId>,
    volume: u8,
    muted: bool,
    /// The gain last told to the player.
    gain_sent: f32,
    /// Bumped whenever queued audio must be dropped.
    gen: u64,
    outbox: VecDeque<Chunk>,
    outputs: VecDeque<Output>,
    linked: bool,
    status_seq: u32,
    next_status_us: i64,
    last_status_us: i64,
    next_prune_us: i64,
    faults: Vec<Fault>,
    /// The latest time the core was told of.
    now_us: i64,
    /// Audio arrived: decode at the next timeout, so frames arriving
    /// together are all in before anything missing is concealed.
    decode_pending: bool,
    /// The tree's time against the terminal's clock (offset, standard
    /// error), once measured.
    clock: Option<(i64, u32)>,
    /// Receipts not yet signed, with when they go (see
    /// [`RECEIPT_HOLD_US`]).
    held: VecDeque<(i64, Receipt)>,
    /// Programmes sent ahead, their audio, quiet hours, plays under way.
    programmes: Programmes,
    /// Plays still being fed want the core again then.
    next_feed_us: Option<i64>,
}

/// A receipt is signed and sent this long after what it reports. At the
/// start of a district-wide alert every terminal verifies and starts it at
/// once, and every tier checks every terminal's two receipts on the same
/// cores that are passing the alert down; held, that work comes after the
/// fan-out instead of slowing it. A receipt still carries the time of what
/// it reports (the lead is measured from it), and receipts go up in order.
pub const RECEIPT_HOLD_US: i64 = 300_000;

impl TerminalCore {
    /// A core for the terminal `identity` trusting `anchor`, with the
    /// replay record `journal` (as loaded from the store) and the
    /// revocation state it shares with its TLS verifier.
    pub fn new(
        identity: Identity,
        anchor: certs::TrustAnchor,
        revocations: Arc<RwLock<RevocationState>>,
        journal: Journal,
        config: CoreConfig,
        now_us: i64,
    ) -> Result<Self, CoreError> {
        let cert = identity.cert();
        let area = *cert.scope().first().ok_or(CoreError::NoArea)?;
        let verifier = Verifier::new(
            anchor,
            Audience::Terminal { area },
            Policy::default(),
            journal,
        )
        .with_shared_revocations(revocations);
        let serial = cert.serial();
        let cache_bytes = config.programme_cache_bytes;
        Ok(TerminalCore {
            serial,
            area,
            key: identity.key,
            arbiter: Arbiter::new(config.playout),
            config,
            verifier,
            decoder: None,
            pcm: Vec::new(),
            reporter: EventReporter::new(serial, Tier::Terminal, EventReporter::DEFAULT_WINDOW_MS),
            refused_ids: HashSet::new(),
            volume: 100,
            muted: false,
            gain_sent: 1.0,
            gen: 0,
            outbox: VecDeque::new(),
            outputs: VecDeque::new(),
            linked: false,
            // Unix seconds at start: the sequence goes on rising across
            // restarts (with heartbeats of a second or more).
            status_seq: (now_us / 1_000_000).clamp(0, u32::MAX as i64 / 2) as u32,
            next_status_us: i64::MAX,
            last_status_us: i64::MIN,
            next_prune_us: now_us + PRUNE_EVERY_US,
            faults: Vec::new(),
            now_us,
            decode_pending: false,
            clock: None,
            held: VecDeque::new(),
            programmes: Programmes::new(cache_bytes),
            next_feed_us: None,
        })
    }

    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// A header or segment from a broadcast stream of the upstream whose
    /// certificate serial is `upstream`. Returns true when it was refused
    /// (it counts against the stream and the link).
    pub fn handle_broadcast_frame(&mut self, raw: &RawFrame, upstream: u64, now_us: i64) -> bool {
        let refused = match raw.message() {
            Ok(Message::Header(h)) => self.on_header(&h, now_us),
            Ok(Message::Segment(s)) => self.on_segment(s, upstream, now_us),
            Ok(Message::Programme(p)) => self.on_programme(p, now_us),
            Ok(Message::ProgrammeChunk(c)) => self.on_chunk(c, upstream, now_us),
            Ok(_) => false,
            Err(e) => {
                self.refuse(None, &Refusal::from(e), upstream, now_us);
                true
            }
        };
        // What plays changes at once (a pre-emption, a cancel); decoding
        // waits for the next timeout, which is due now.
        self.arbitrate(now_us);
        self.decode_pending = true;
        refused
    }

    fn on_header(&mut self, h: &SignedHeader, now_us: i64) -> bool {
        match self.verifier.accept_header(h, now_us / 1000) {
            Ok(v @ (HeaderVerdict::New | HeaderVerdict::Resumed { .. })) => {
                // Skipped here in quiet hours before a restart: not again.
                let skipped = self
                    .verifier
                    .store()
                    .get(h.id())
                    .ok()
                    .flatten()
                    .is_some_and(|r| r.played);
                if h.header().audio.codec != protocol::Codec::None
                    && !self.arbiter.has(h.id())
                    && !skipped
                {
                    // Resumed but not held: taken before a restart (the
                    // record survived, the audio did not). It rejoins now.
                    let rejoin = matches!(v, HeaderVerdict::Resumed { .. }).then_some(now_us);
                    self.arbiter
                        .add(h.header().clone(), h.signer().tier(), rejoin, now_us);
                }
                false
            }
            Ok(HeaderVerdict::Cancel { target, .. }) => {
                self.stop(target, now_us);
                false
            }
            Ok(HeaderVerdict::Closed) => false,
            Err(r) => {
                self.report(Some(h.id()), &r, h.signer().serial(), true, now_us);
                true
            }
        }
    }

    fn on_segment(&mut self, s: Segment, upstream: u64, now_us: i64) -> bool {
        match self.verifier.accept_segment(&s, now_us / 1000) {
            Ok(_) => {
                let id = s.id;
                // Acknowledged once its first audio is in hand, not at the
                // header: the issuer's next lead is measured from this
                // (`platform::lead`), and what a terminal needs before it
                // can start is a segment, not a header.
                if self.arbiter.push(s.id, s.pts_us, s.frames, s.last, now_us) {
                    self.receipt(Some(id), ReceiptKind::Verified, None, now_us);
                }
                false
            }
            Err(r) => {
                // A segment of a refused header was counted with it.
                if !self.verifier.header_refused(s.id) {
                    self.report(Some(s.id), &r, upstream, false, now_us);
                }
                true
            }
        }
    }

    /// A frame on the control stream of the upstream whose chain is
    /// `peer_chain`: a remote command or a revocation list.
    pub fn handle_control_frame(
        &mut self,
        raw: &RawFrame,
        peer_chain: &[Certificate],
        now_us: i64,
    ) -> ControlVerdict {
        let peer = peer_chain.last().map_or(0, Certificate::serial);
        let verdict = match raw.message() {
            Ok(Message::Command(cmd)) => self.obey(&cmd, now_us),
            Ok(Message::QuietHours(q)) => match self.on_quiet(q, now_us) {
                Ok(()) => ControlVerdict::Done,
                Err(_) => ControlVerdict::Strike,
            },
            Ok(Message::Revocation(list)) => match self.apply_revocation(list, true, now_us) {
                Ok(true) if self.verifier.chain_fails(peer_chain, now_us / 1000) => {
                    ControlVerdict::Hostile("upstream's certificate revoked")
                }
                Ok(_) => ControlVerdict::Done,
                Err(_) => ControlVerdict::Strike,
            },
            Ok(_) => ControlVerdict::Done,
            Err(e) => {
                self.refuse(None, &Refusal::from(e), peer, now_us);
                ControlVerdict::Strike
            }
        };
        self.advance(now_us);
        verdict
    }

    /// A remote command: executed only if the verifier accepts it.
    fn obey(&mut self, cmd: &SignedCommand, now_us: i64) -> ControlVerdict {
        match self
            .verifier
            .accept_command(cmd, self.serial, self.area, now_us / 1000)
        {
            Ok(protocol::Action::Volume(v)) => {
                self.volume = v;
                self.update_gain();
            }
            Ok(protocol::Action::Mute(m)) => {
                self.muted = m;
                self.update_gain();
            }
            Ok(protocol::Action::Silence(id)) => self.silence(id, now_us),
            Ok(other) => info!("command {other:?} accepted; not supported by this terminal yet"),
            Err(r) => {
                let offender = cmd.chain().last().map_or(0, Certificate::serial);
                self.report(None, &r, offender, false, now_us);
                return ControlVerdict::Strike;
            }
        }
        ControlVerdict::Done
    }

    /// The loudspeaker's gain for what plays now: the local volume and
    /// mute, except that a severity I–II emergency plays at no less than
    /// the configured minimum, muted or not (R21; only a cancel or the
    /// local-silence procedure stops it).
    fn gain(&self) -> f32 {
        let emergency = self
            .arbiter
            .current_precedence()
            .is_some_and(|p| p.beats_local_volume());
        if emergency {
            self.volume.max(self.config.emergency_min_volume) as f32 / 100.0
        } else if self.muted {
            0.0
        } else {
            self.volume as f32 / 100.0
        }
    }

    fn update_gain(&mut self) {
        let gain = self.gain();
        if gain != self.gain_sent {
            self.gain_sent = gain;
            self.outputs.push_back(Output::Gain(gain));
        }
    }

    /// Applies a revocation list (from the upstream, the store or the
    /// bundle): what it revokes stops at once. Ok(true) when it was new;
    /// `persist` keeps it in the store.
    pub fn apply_revocation(
        &mut self,
        list: RevocationList,
        persist: bool,
        now_us: i64,
    ) -> Result<bool, Refusal> {
        let signer = list.signer_serial;
        let encoded = persist.then(|| list.encode());
        let outcome = match self.verifier.apply_revocation(list, now_us / 1000) {
            Ok(o) => o,
            Err(r) => {
                self.report(None, &r, signer, false, now_us);
                return Err(r);
            }
        };
        if outcome.applied == certs::Applied::AlreadyCurrent {
            return Ok(false);
        }
        if let Some(encoded) = encoded {
            self.verifier
                .store_mut()
                .persist_revocation(signer, encoded);
        }
        for id in &outcome.stopped {
            self.stop(*id, now_us);
        }
        self.stop_untrusted_plays(now_us);
        info!(
            signer = format!("{signer:016x}"),
            stopped = outcome.stopped.len(),
            "revocation list in force"
        );
        self.advance(now_us);
        Ok(true)
    }

    /// True when a list of `signer` numbered `number` or later is in force.
    pub fn holds_revocation(&self, signer: u64, number: u64) -> bool {
        self.verifier
            .revocations()
            .numbers()
            .any(|(s, n)| s == signer && n >= number)
    }

    /// A refusal made outside the core (a peer refused in the TLS
    /// handshake, a garbled stream): counted and reported.
    pub fn handle_refusal(&mut self, r: &Refusal, offender: u64, now_us: i64) {
        self.refuse(None, r, offender, now_us);
    }

    /// The link to an upstream came up (true) or went down (false). A new
    /// link hears the terminal's status at once.
    pub fn handle_link(&mut self, up: bool, now_us: i64) {
        self.linked = up;
        self.next_status_us = if up { now_us } else { i64::MAX };
        self.advance(now_us);
    }

    /// The loudspeaker reported a fault (e.g. the device disappeared), or
    /// recovered from all (`None`).
    pub fn handle_sink_fault(&mut self, fault: Option<String>) {
        self.faults = fault
            .map(|detail| Fault {
                code: FAULT_SINK,
                detail: detail
                    .chars()
                    .take(protocol::control::MAX_FAULT_DETAIL)
                    .collect(),
            })
            .into_iter()
            .collect();
    }

    /// What the link measured of the tree's time (reported in the status).
    pub fn handle_clock(&mut self, e: transport::clock::Estimate) {
        self.clock = e.synced.then(|| {
            let offset = e.offset_at(e.at_local_us);
            (
                offset,
                e.uncertainty_us.clamp(0, u32::MAX as i64 - 1) as u32,
            )
        });
    }

    pub fn handle_timeout(&mut self, now_us: i64) {
        while self.held.front().is_some_and(|(at, _)| *at <= now_us) {
            if let Some((_, r)) = self.held.pop_front() {
                self.send_receipt(r);
            }
        }
        if now_us >= self.next_prune_us {
            self.next_prune_us = now_us + PRUNE_EVERY_US;
            let _ = self.verifier.prune(now_us / 1000);
            self.arbiter.prune(now_us / 1000 - KEEP_RECORDS_MS);
            self.prune_programmes(now_us);
        }
        if self
            .reporter
            .next_due_ms()
            .is_some_and(|t| t <= now_us / 1000)
        {
            for e in self.reporter.due(now_us / 1000) {
                self.send_event(e);
            }
        }
        if self.linked && self.arbiter.current().is_some() {
            // Playing: heard from at least every PLAYING_HEARTBEAT_US.
            self.next_status_us = self
                .next_status_us
                .min(self.last_status_us.saturating_add(self.heartbeat_us(true)));
        }
        if self.linked && now_us >= self.next_status_us {
            self.last_status_us = now_us;
            let playing = self.arbiter.current().is_some();
            self.next_status_us = now_us + self.heartbeat_us(playing);
            let status = self.status(now_us);
            self.outputs.push_back(Output::Up(Box::new(Message::Status(
                status.sign(&self.key),
            ))));
        }
        self.advance(now_us);
    }

    /// The heartbeat period now: the configured one, but no longer than
    /// `PLAYING_HEARTBEAT_US` while something plays (coverage counts a
    /// playing terminal that goes silent as lost).
    fn heartbeat_us(&self, playing: bool) -> i64 {
        let configured = self.config.heartbeat_us.max(100_000);
        if playing {
            configured.min(PLAYING_HEARTBEAT_US)
        } else {
            configured
        }
    }

    /// What to ask a new upstream for: broadcasts half received resume at
    /// their next sequence (also after a restart); what is complete or
    /// cancelled is named with an unreachable sequence, so it is not sent
    /// again.
    pub fn subscribe(&self, now_us: i64) -> Subscribe {
        let max = protocol::control::MAX_RESUME;
        let mut resume: Vec<(BroadcastId, u32)> = self.verifier.active().take(max).collect();
        let stored = self.verifier.store().open(now_us / 1000, max);
        for (id, next) in stored {
            if resume.len() < max && !resume.iter().any(|(r, _)| *r == id) {
                resume.push((id, next));
            }
        }
        let room = max - resume.len();
        resume.extend(
            self.verifier
                .closed(now_us / 1000, room)
                .into_iter()
                .map(|id| (id, u32::MAX)),
        );
        Subscribe { resume }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(o) = self.outputs.pop_front() {
            return Some(o);
        }
        // One at a time: a change left in the journal is written later,
        // never dropped.
        self.verifier.store_mut().next_change().map(Output::Persist)
    }

    /// The next decoded audio for the player, counted in its broadcast's
    /// play record. Audio too late to play (past the presentation window:
    /// the player was not taking it) is dropped and counted as late.
    pub fn poll_chunk(&mut self, now_us: i64) -> Option<Chunk> {
        self.drop_late(now_us);
        let c = self.outbox.pop_front()?;
        let heard = self.gain_sent > 0.0 && c.made != Made::Silence;
        let r = self.arbiter.record_mut(c.broadcast);
        r.frames_heard += heard as u64;
        match c.made {
            Made::Decoded => r.frames_played += 1,
            Made::Recovered => r.frames_recovered += 1,
            Made::Concealed => r.frames_concealed += 1,
            Made::Silence => {}
        }
        Some(c)
    }

    fn drop_late(&mut self, now_us: i64) {
        let window = self.config.playout.max_lag_us;
        while let Some(c) = self.outbox.front() {
            if c.play_at_us + window >= now_us {
                break;
            }
            let id = c.broadcast;
            self.outbox.pop_front();
            self.arbiter.record_mut(id).frames_late += 1;
        }
    }

    /// When the core next wants `handle_timeout` (unix µs).
    pub fn poll_timeout(&self) -> Option<i64> {
        let decode = self.arbiter.next_play_time().map(|t| {
            let batch = t - self.config.decode_ahead_us + self.config.decode_batch_us;
            if batch > self.now_us {
                batch
            } else {
                // Decoding stopped at a frame that has not arrived (an
                // arrival wakes the core anyway): look again when it is
                // due, or, if it is already past, when it leaves the
                // presentation window and is skipped.
                let due = t - self.config.playout.frame_us;
                if due > self.now_us {
                    due
                } else {
                    t + self.config.playout.max_lag_us + self.config.playout.frame_us
                }
            }
        });
        let events = self.reporter.next_due_ms().map(|ms| ms * 1000);
        let held = self.held.front().map(|(at, _)| *at);
        let status = (self.linked).then_some(self.next_status_us);
        let change = self.arbiter.next_change_us(self.now_us);
        let pending = self.decode_pending.then_some(self.now_us);
        let scheduled = self.scheduled_timeout();
        [
            pending,
            decode,
            events,
            held,
            status,
            Some(self.next_prune_us),
            change,
            scheduled,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn snapshot(&self) -> CoreSnapshot {
        CoreSnapshot {
            records: self.arbiter.records().clone(),
            refusals: self.verifier.counts().iter().collect(),
            playing: self.arbiter.current(),
            volume: self.volume,
            muted: self.muted,
            revocation_numbers: self.verifier.revocations().numbers().collect(),
        }
    }

    /// What the upstream should know of the programmes held here.
    pub fn inventory(&self) -> protocol::Inventory {
        self.programmes.inventory()
    }

    /// Arbitrates and decodes what is due by `now_us` plus the look-ahead.
    fn advance(&mut self, now_us: i64) {
        self.now_us = self.now_us.max(now_us);
        self.schedule(now_us);
        self.arbitrate(now_us);
        self.decode_pending = false;
        let horizon = now_us + self.config.decode_ahead_us;
        while let Some((at, slot, rate)) = self.arbiter.poll_slot(horizon, now_us) {
            let Some(current) = self.arbiter.current() else {
                break;
            };
            self.decode(current, at, slot, rate);
        }
        self.drop_late(now_us);
    }

    /// Decides what plays at `now_us`; receipts and flushes follow.
    fn arbitrate(&mut self, now_us: i64) {
        self.now_us = self.now_us.max(now_us);
        let quiet = self.quiet_now(now_us);
        let decision = self.arbiter.arbitrate(now_us, quiet);
        for (id, kind) in decision.receipts {
            self.outcome(id, kind, now_us);
        }
        if decision.switched {
            self.decoder = None;
        }
        if decision.cut {
            self.cut();
        }
        self.update_gain();
    }

    /// A receipt of what happened to a broadcast; one that stopped says how
    /// much of it was heard (R22), and one that played to its end with
    /// nothing heard says it was muted.
    fn outcome(&mut self, id: BroadcastId, kind: ReceiptKind, now_us: i64) {
        let r = self.arbiter.record_mut(id);
        let frame_ms = (self.config.playout.frame_us / 1000) as u64;
        let played = r.frames_played + r.frames_recovered + r.frames_concealed;
        let (kind, detail) = match kind {
            ReceiptKind::Finished | ReceiptKind::CutAtEnd if played > 0 && r.frames_heard == 0 => {
                r.muted = true;
                (ReceiptKind::Muted, played * frame_ms)
            }
            ReceiptKind::Finished
            | ReceiptKind::CutAtEnd
            | ReceiptKind::Preempted
            | ReceiptKind::Cancelled
            | ReceiptKind::Silenced
            | ReceiptKind::Held
            | ReceiptKind::Skipped => (kind, r.frames_heard * frame_ms),
            other => (other, 0),
        };
        let detail = detail.min(u32::MAX as u64) as u32;
        if id.is_local() {
            self.play_outcome(id, kind, detail, now_us);
            return;
        }
        if matches!(
            kind,
            ReceiptKind::Finished
                | ReceiptKind::CutAtEnd
                | ReceiptKind::Muted
                | ReceiptKind::Skipped
        ) {
            self.verifier.store_mut().mark_played(id);
        }
        self.receipt_with(Some(id), kind, None, detail, now_us);
    }

    /// Audio queued for what no longer plays must go.
    fn cut(&mut self) {
        self.gen += 1;
        self.outbox.clear();
        self.outputs.push_back(Output::Flush { gen: self.gen });
    }

    fn decode(&mut self, id: BroadcastId, at_us: i64, slot: Slot, rate: u32) {
        if self.decoder.as_ref().is_none_or(|(r, _)| *r != rate) {
            match OpusFrameDecoder::new(rate) {
                Ok(d) => {
                    self.pcm = vec![0.0; d.frame_samples()];
                    self.decoder = Some((rate, d));
                }
                Err(e) => {
                    debug!("no decoder for {rate} Hz: {e}");
                    return;
                }
            }
        }
        let Some((_, decoder)) = self.decoder.as_mut() else {
            return;
        };
        let (made, result) = match &slot {
            Slot::Packet(p) => (Made::Decoded, decoder.decode(p, &mut self.pcm)),
            Slot::Recover(next) => (Made::Recovered, decoder.recover(next, &mut self.pcm)),
            Slot::Conceal => (Made::Concealed, decoder.conceal(&mut self.pcm)),
            Slot::Silence => {
                self.pcm.fill(0.0);
                (Made::Silence, Ok(()))
            }
        };
        if result.is_err() {
            self.pcm.fill(0.0);
        }
        self.arbiter
            .record_mut(id)
            .first_sample_ms
            .get_or_insert(at_us / 1000);
        self.outbox.push_back(Chunk {
            gen: self.gen,
            play_at_us: at_us,
            broadcast: id,
            pcm: self.pcm.clone(),
            made,
        });
    }

    /// A broadcast stops everywhere here (cancel, revocation).
    fn stop(&mut self, id: BroadcastId, now_us: i64) {
        self.stop_as(id, ReceiptKind::Cancelled, now_us);
    }

    fn stop_as(&mut self, id: BroadcastId, kind: ReceiptKind, now_us: i64) {
        let was_current = self.arbiter.current() == Some(id);
        self.arbiter.cancel(id);
        if was_current {
            self.cut();
        }
        self.outcome(id, kind, now_us);
    }

    /// The local-silence procedure (R20): the broadcast stops here and is
    /// closed as if cancelled, emergency or not; the receipt says so.
    fn silence(&mut self, id: BroadcastId, now_us: i64) {
        let held = self.arbiter.has(id);
        match self.verifier.silence(id) {
            Ok(known) if known || held => {
                self.arbiter.record_mut(id).silenced = true;
                self.stop_as(id, ReceiptKind::Silenced, now_us);
                self.arbitrate(now_us);
                self.decode_pending = true;
            }
            Ok(_) => info!(%id, "silence for a broadcast not held here"),
            Err(r) => self.report(Some(id), &r, self.serial, false, now_us),
        }
    }

    fn receipt(
        &mut self,
        broadcast: Option<BroadcastId>,
        kind: ReceiptKind,
        reason: Option<RefusalReason>,
        now_us: i64,
    ) {
        self.receipt_with(broadcast, kind, reason, 0, now_us);
    }

    fn receipt_with(
        &mut self,
        broadcast: Option<BroadcastId>,
        kind: ReceiptKind,
        reason: Option<RefusalReason>,
        detail: u32,
        now_us: i64,
    ) {
        let r = Receipt {
            broadcast,
            terminal_serial: self.serial,
            kind,
            reason,
            at_ms: now_us / 1000,
            detail,
        };
        self.held.push_back((now_us + RECEIPT_HOLD_US, r));
    }

    fn send_receipt(&mut self, r: Receipt) {
        self.outputs
            .push_back(Output::Up(Box::new(Message::Receipt(r.sign(&self.key)))));
    }

    /// Counts a refusal made outside the verifier, then reports it.
    fn refuse(&mut self, id: Option<BroadcastId>, r: &Refusal, offender: u64, now_us: i64) {
        self.verifier.count(r);
        self.report(id, r, offender, false, now_us);
    }

    /// Reports an (already counted) refusal: aggregated into security
    /// events; a refused header also gets one refusal receipt.
    fn report(
        &mut self,
        id: Option<BroadcastId>,
        r: &Refusal,
        offender: u64,
        header: bool,
        now_us: i64,
    ) {
        debug!("refused: {r}");
        if let Some(e) = self.reporter.note(r.reason(), id, offender, now_us / 1000) {
            self.send_event(e);
        }
        if let (true, Some(id)) = (header, id) {
            if self.refused_ids.len() >= REFUSED_IDS {
                self.refused_ids.clear();
            }
            if self.refused_ids.insert(id) {
                self.receipt(Some(id), ReceiptKind::Refused, Some(r.reason()), now_us);
            }
        }
    }

    fn send_event(&mut self, e: protocol::SecurityEvent) {
        info!(
            reason = e.reason.name(),
            count = e.count,
            offender = format!("{:016x}", e.offender),
            "security event"
        );
        self.outputs
            .push_back(Output::Up(Box::new(Message::SecurityEvent(
                e.sign(&self.key),
            ))));
    }

    fn status(&mut self, now_us: i64) -> Status {
        self.status_seq += 1;
        // A scheduled play goes by its programme's id: the terminal's own
        // play ids never leave it.
        let playing = self.arbiter.current().map(|id| self.wire_id(id));
        Status {
            terminal_serial: self.serial,
            seq: self.status_seq,
            sent_at_ms: now_us / 1000,
            volume: self.volume,
            muted: self.muted,
            playing,
            state: if playing.is_some() {
                PlayState::Playing
            } else {
                PlayState::Waiting
            },
            clock_offset_us: self.clock.map_or(0, |c| c.0),
            clock_uncertainty_us: self.clock.map_or(u32::MAX, |c| c.1),
            software: self.config.software.clone(),
            faults: self.faults.clone(),
            revocation_numbers: self
                .verifier
                .revocations()
                .numbers()
                .take(protocol::control::MAX_REVOCATION_NUMBERS)
                .collect(),
            refusals: self
                .verifier
                .counts()
                .iter()
                .map(|(r, n)| (r, n.min(u32::MAX as u64) as u32))
                .collect(),
            audio: self.arbiter.audio_totals(),
            cache: {
                let c = self.programmes.report();
                protocol::ProgrammeCache {
                    programmes: c.programmes,
                    complete: c.complete,
                    used_kb: (c.used_bytes / 1024).min(u32::MAX as u64) as u32,
                    limit_kb: (c.limit_bytes / 1024).min(u32::MAX as u64) as u32,
                }
            },
        }
    }
}

/// Fault code of a loudspeaker that fails (the national codes leave device
/// faults to the vendor).
pub const FAULT_SINK: u16 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("the terminal's certificate names no area")]
    NoArea,
}
