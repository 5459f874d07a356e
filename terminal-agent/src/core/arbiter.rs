//! Arbitration: which verified broadcast the loudspeaker plays now (R8, by
//! `protocol::Precedence`), each broadcast's jitter buffer, and what the
//! terminal did with each (its play records). A higher-priority broadcast
//! pre-empts at once; what it pre-empted resumes, in step with its own
//! timeline, if it is still valid. In quiet hours (R20) only emergencies
//! play: other content waits for their end (hold) or is dropped (skip).

use std::collections::HashMap;

use certs::Tier;
use codec::{Join, Playout, PlayoutConfig, Slot};
use protocol::{
    AudioCounters, BroadcastClass, BroadcastHeader, BroadcastId, Precedence, Quiet, QuietMode,
    ReceiptKind,
};
use serde::Serialize;

/// What a terminal did with one broadcast (for status and the demo summary).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PlayRecord {
    pub title: String,
    /// Frames the header announced (recorded audio).
    pub total_frames: u64,
    /// Frames decoded and handed to the loudspeaker.
    pub frames_played: u64,
    pub frames_recovered: u64,
    pub frames_concealed: u64,
    /// Frames skipped because they were too late to play (past the
    /// presentation window, or never received in time).
    pub frames_late: u64,
    /// Frames handed to the loudspeaker while its gain was above zero.
    pub frames_heard: u64,
    /// Unix ms at which the first sample plays.
    pub first_sample_ms: Option<i64>,
    /// Played to its last frame.
    pub finished: bool,
    /// Its validity ended while it still had audio to play.
    pub cut_at_end: bool,
    /// It played with nothing heard (muted, or volume 0).
    pub muted: bool,
    pub preempted: u32,
    pub cancelled: bool,
    /// Stopped by the local-silence procedure (R20).
    pub silenced: bool,
    /// Dropped by quiet hours that skip such content (R20).
    pub skipped: bool,
    /// Unix ms at which the broadcast's validity ends.
    pub end_ms: i64,
}

struct Entry {
    header: BroadcastHeader,
    precedence: Precedence,
    playout: Playout,
    started: bool,
    /// Play time of the last frame handed out (decoded ahead).
    last_at_us: i64,
    /// When the latest segment (or the header) arrived.
    heard_us: i64,
    /// A segment of it was taken: its audio is in hand.
    in_hand: bool,
    /// Held back by the quiet hours now in force (its Held receipt went).
    held: bool,
}

/// A live broadcast whose source has been silent this long is over (its
/// issuer vanished without the signed end marker).
pub const LIVE_SOURCE_TIMEOUT_US: i64 = 5_000_000;

impl Entry {
    /// Every frame handed out has played, the validity ended, or a live
    /// source went silent.
    fn done(&self, now_us: i64) -> bool {
        (self.playout.finished() && self.played_out_at() <= now_us)
            || self.header.end_ms * 1000 < now_us
            || self.source_lost(now_us)
    }

    /// When its last frame handed out has finished playing (what it
    /// pre-empted resumes after, never over, its last frame).
    fn played_out_at(&self) -> i64 {
        self.last_at_us
            .saturating_add(self.header.audio.frame_ms as i64 * 1000)
    }

    fn source_lost(&self, now_us: i64) -> bool {
        self.header.audio.live && now_us - self.heard_us > LIVE_SOURCE_TIMEOUT_US
    }

    /// Quiet hours keep it from playing: anything but an emergency.
    fn quieted(&self) -> bool {
        self.header.class != BroadcastClass::Emergency
    }
}

/// The broadcasts competing for the loudspeaker.
pub struct Arbiter {
    entries: HashMap<BroadcastId, Entry>,
    current: Option<BroadcastId>,
    records: HashMap<BroadcastId, PlayRecord>,
    /// What the records already forgotten counted.
    retired: AudioCounters,
    config: PlayoutConfig,
}

/// What `arbitrate` decided.
pub struct Decision {
    pub receipts: Vec<(BroadcastId, ReceiptKind)>,
    /// The loudspeaker moved to another broadcast (or to silence).
    pub switched: bool,
    /// What played was cut short (pre-empted, or its validity ended):
    /// audio of it already handed to the loudspeaker must go.
    pub cut: bool,
}

impl Arbiter {
    pub fn new(config: PlayoutConfig) -> Self {
        Arbiter {
            entries: HashMap::new(),
            current: None,
            records: HashMap::new(),
            retired: AudioCounters::default(),
            config,
        }
    }

    pub fn current(&self) -> Option<BroadcastId> {
        self.current
    }

    /// The precedence of what plays now.
    pub fn current_precedence(&self) -> Option<Precedence> {
        self.entries.get(&self.current?).map(|e| e.precedence)
    }

    pub fn has(&self, id: BroadcastId) -> bool {
        self.entries.contains_key(&id)
    }

    /// It is competing and has played (or is playing).
    pub fn started(&self, id: BroadcastId) -> bool {
        self.entries.get(&id).is_some_and(|e| e.started)
    }

    pub fn records(&self) -> &HashMap<BroadcastId, PlayRecord> {
        &self.records
    }

    pub fn record_mut(&mut self, id: BroadcastId) -> &mut PlayRecord {
        self.records.entry(id).or_default()
    }

    /// A verified header with audio: it competes for the loudspeaker. A
    /// broadcast this terminal took before it restarted (`rejoin_at`, the
    /// time it came back) plays from then on, as a resumed one.
    pub fn add(
        &mut self,
        header: BroadcastHeader,
        signer_tier: Tier,
        rejoin_at: Option<i64>,
        now_us: i64,
    ) {
        let id = header.id;
        if self.records.get(&id).is_some_and(|r| r.skipped) {
            // Quiet hours dropped it here: a resend does not bring it back.
            return;
        }
        let frames = header.audio.total_segments as u64 * header.audio.frames_per_segment as u64;
        self.records.entry(id).or_insert_with(|| PlayRecord {
            title: header.title.clone(),
            total_frames: frames,
            end_ms: header.end_ms,
            ..Default::default()
        });
        let precedence = Precedence::of(&header, signer_tier);
        let mut config = self.config;
        // The issuer's delay, when it names one, so every terminal plays
        // the broadcast in step (live audio asks for far less than the
        // configured default).
        if header.audio.playout_delay_ms > 0 {
            config.delay_us = header.audio.playout_delay_ms as i64 * 1000;
        }
        // Only live audio comes just in time; recorded audio is sent far
        // ahead, and a terminal that cannot get it in time has no cure in
        // waiting longer.
        if !header.audio.live {
            config.adapt_max_us = 0;
        }
        self.entries.entry(id).or_insert_with(|| {
            let mut playout = Playout::new(config, Join::InStep);
            if let Some(t) = rejoin_at {
                playout.not_before(t);
            }
            Entry {
                header,
                precedence,
                playout,
                started: rejoin_at.is_some(),
                last_at_us: i64::MIN,
                heard_us: now_us,
                in_hand: false,
                held: false,
            }
        });
    }

    /// Frames of broadcast `id` (a verified segment, or the cached audio
    /// of a scheduled play) presenting from `pts_us`. True when they are
    /// the first of it taken here: its audio is now in hand.
    pub fn push(
        &mut self,
        id: BroadcastId,
        pts_us: i64,
        frames: Vec<Vec<u8>>,
        last: bool,
        now_us: i64,
    ) -> bool {
        let Some(e) = self.entries.get_mut(&id) else {
            return false;
        };
        e.heard_us = e.heard_us.max(now_us);
        e.playout.push_segment(pts_us, frames, last, now_us);
        !std::mem::replace(&mut e.in_hand, true)
    }

    /// A valid cancel (or a revocation): it stops at once. True when it was
    /// here.
    pub fn cancel(&mut self, id: BroadcastId) -> bool {
        let had = self.entries.remove(&id).is_some();
        if let Some(r) = self.records.get_mut(&id) {
            r.cancelled = true;
        }
        had
    }

    /// Decides what plays at `now_us` under the quiet hours `quiet` (if
    /// any are in force): finished and expired broadcasts leave; in quiet
    /// hours what is not an emergency waits (hold) or leaves (skip); the
    /// best one that has begun plays.
    pub fn arbitrate(&mut self, now_us: i64, quiet: Option<Quiet>) -> Decision {
        let mut receipts = Vec::new();
        let mut cut = false;
        let now_ms = now_us / 1000;
        let done: Vec<BroadcastId> = self
            .entries
            .iter()
            .filter(|(_, e)| e.done(now_us))
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            if let Some(e) = self.entries.remove(&id) {
                if e.started {
                    let r = self.records.entry(id).or_default();
                    r.finished = e.playout.finished();
                    r.cut_at_end = !r.finished;
                    r.frames_late += e.playout.stats().dropped;
                    let kind = if r.finished {
                        ReceiptKind::Finished
                    } else {
                        ReceiptKind::CutAtEnd
                    };
                    receipts.push((id, kind));
                    cut |= self.current == Some(id) && !r.finished;
                }
            }
        }
        // Quiet hours: content due now that is not an emergency waits or
        // goes, and says so once.
        let due_quieted: Vec<BroadcastId> = self
            .entries
            .iter()
            .filter(|(_, e)| e.header.start_ms <= now_ms && e.quieted())
            .map(|(id, _)| *id)
            .collect();
        for id in due_quieted {
            match quiet.map(|q| q.mode) {
                Some(QuietMode::Skip) => {
                    self.entries.remove(&id);
                    self.records.entry(id).or_default().skipped = true;
                    receipts.push((id, ReceiptKind::Skipped));
                    cut |= self.current == Some(id);
                }
                Some(QuietMode::Hold) => {
                    if let Some(e) = self.entries.get_mut(&id) {
                        if !std::mem::replace(&mut e.held, true) {
                            receipts.push((id, ReceiptKind::Held));
                        }
                    }
                }
                None => {
                    if let Some(e) = self.entries.get_mut(&id) {
                        e.held = false;
                    }
                }
            }
        }
        let best = self
            .entries
            .iter()
            .filter(|(_, e)| e.header.start_ms <= now_ms && !(quiet.is_some() && e.quieted()))
            .max_by_key(|(_, e)| e.precedence)
            .map(|(id, _)| *id);
        let switched = best != self.current;
        if switched {
            if let Some(old) = self.current.filter(|o| self.entries.contains_key(o)) {
                // Held back by quiet hours is said by its Held receipt.
                if !self.entries.get(&old).is_some_and(|e| e.held) {
                    receipts.push((old, ReceiptKind::Preempted));
                    self.records.entry(old).or_default().preempted += 1;
                }
                cut = true;
            }
            self.current = best;
            if let Some(id) = best {
                if let Some(e) = self.entries.get_mut(&id) {
                    let kind = if e.started {
                        e.playout.skip_to(now_us);
                        ReceiptKind::Resumed
                    } else {
                        ReceiptKind::Started
                    };
                    receipts.push((id, kind));
                    e.started = true;
                }
            }
        }
        Decision {
            receipts,
            switched,
            cut,
        }
    }

    /// The current broadcast's next frame that plays by `horizon_us`, with
    /// its play time and sample rate.
    pub fn poll_slot(&mut self, horizon_us: i64, now_us: i64) -> Option<(i64, Slot, u32)> {
        let e = self.entries.get_mut(&self.current?)?;
        let rate = e.header.audio.sample_rate;
        let (at, slot) = e.playout.poll_until(horizon_us, now_us)?;
        e.last_at_us = at;
        Some((at, slot, rate))
    }

    /// When the current broadcast's next frame plays.
    pub fn next_play_time(&self) -> Option<i64> {
        self.entries
            .get(&self.current?)
            .and_then(|e| e.playout.next_play_time())
    }

    /// The next moment arbitration may change on its own: a broadcast
    /// begins, ends, or has played its last frame.
    pub fn next_change_us(&self, now_us: i64) -> Option<i64> {
        let now_ms = now_us / 1000;
        self.entries
            .values()
            .flat_map(|e| {
                let start = (e.header.start_ms > now_ms).then_some(e.header.start_ms * 1000);
                let played_out = e
                    .playout
                    .finished()
                    .then_some(e.played_out_at().max(now_us));
                let silent = e
                    .header
                    .audio
                    .live
                    .then_some(e.heard_us + LIVE_SOURCE_TIMEOUT_US + 1);
                [
                    start,
                    Some((e.header.end_ms + 1) * 1000),
                    played_out,
                    silent,
                ]
            })
            .flatten()
            .min()
    }

    /// Forgets play records of broadcasts no longer competing whose
    /// validity ended before `before_ms`.
    pub fn prune(&mut self, before_ms: i64) {
        let entries = &self.entries;
        let retired = &mut self.retired;
        self.records.retain(|id, r| {
            let keep = entries.contains_key(id) || r.end_ms >= before_ms;
            if !keep {
                add(retired, r);
            }
            keep
        });
    }

    /// Audio counters since start, over every broadcast.
    pub fn audio_totals(&self) -> AudioCounters {
        let mut t = self.retired;
        for r in self.records.values() {
            add(&mut t, r);
        }
        t
    }
}

fn add(t: &mut AudioCounters, r: &PlayRecord) {
    t.played += r.frames_played;
    t.recovered += r.frames_recovered;
    t.concealed += r.frames_concealed;
    t.late += r.frames_late;
    t.heard += r.frames_heard;
}
