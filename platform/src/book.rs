//! What a platform knows of the nodes below it: terminals' latest status,
//! every receipt summarised per broadcast ("587 / 600 playing"), and the
//! security events reported from anywhere below (and by itself).

use std::collections::{BTreeMap, HashMap, VecDeque};

use protocol::{BroadcastId, Receipt, ReceiptKind, RefusalReason, SecurityEvent, Status};
use serde::Serialize;

/// One terminal's progress with one broadcast.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    received: bool,
    playing: bool,
    finished: bool,
    cut_at_end: bool,
    muted: bool,
    preempted: bool,
    cancelled: bool,
    silenced: bool,
    /// Held back by quiet hours (R20), waiting for them to end.
    held: bool,
    /// Not played because of quiet hours.
    skipped: bool,
    refused: Option<RefusalReason>,
    first_started_ms: Option<i64>,
    /// Heard, as its last receipt that says so reported.
    heard_ms: u32,
    /// The newest receipt's time (the terminal's clock).
    last_ms: i64,
}

/// A terminal counted as playing is counted lost instead once nothing (no
/// status, no receipt) has come from it for this long: three heartbeats of
/// a playing terminal (`terminal_agent::core::PLAYING_HEARTBEAT_US`).
pub const LOST_AFTER_MS: i64 = 30_000;
/// ...or once the broadcast's validity ended this long ago with no word of
/// how it ended.
pub const LOST_AFTER_END_MS: i64 = 10_000;

/// Counts per broadcast, as the API shows them (R22: what was heard).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Coverage {
    pub received: u32,
    /// Playing now, and heard from within `LOST_AFTER_MS`.
    pub playing: u32,
    /// Played to the end, and heard.
    pub finished: u32,
    /// Cut off by the end of its validity.
    pub cut_at_end: u32,
    /// Played with the loudspeaker muted: nothing heard.
    pub muted: u32,
    pub preempted: u32,
    pub cancelled: u32,
    /// Stopped by the local-silence procedure (R20).
    pub silenced: u32,
    /// Held back by the quiet hours of their area, to play when they end.
    pub held: u32,
    /// Not played: the quiet hours of their area skip such content.
    pub skipped: u32,
    /// Were playing, then went silent (see `LOST_AFTER_MS`).
    pub lost: u32,
    pub refused: u32,
    /// Refusals by reason name.
    pub refused_by_reason: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TerminalRow {
    pub serial: String,
    pub online: bool,
    pub last_seen_ms: i64,
    pub volume: u8,
    pub muted: bool,
    pub playing: Option<String>,
    pub software: String,
    pub faults: Vec<String>,
    /// Refusals since the terminal started, in total and by reason name.
    pub refusals: u64,
    pub refusals_by_reason: BTreeMap<String, u32>,
    /// Audio frames since the terminal started.
    pub audio: AudioRow,
    /// The status's sequence (rises with each heartbeat, across restarts).
    pub status_seq: u32,
    /// The terminal's clock against the tree's (None: not measured yet).
    pub clock: Option<ClockRow>,
}

/// How far a terminal's own clock is from the tree's, and how well it knows.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct ClockRow {
    /// Tree − local, µs.
    pub offset_us: i64,
    /// Standard error of the offset, µs.
    pub uncertainty_us: u32,
}

/// A terminal's audio counters (frames of 20 ms), as the API shows them.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct AudioRow {
    pub played: u64,
    pub recovered: u64,
    pub concealed: u64,
    pub late: u64,
    pub heard: u64,
}

impl From<protocol::AudioCounters> for AudioRow {
    fn from(a: protocol::AudioCounters) -> Self {
        AudioRow {
            played: a.played,
            recovered: a.recovered,
            concealed: a.concealed,
            late: a.late,
            heard: a.heard,
        }
    }
}

/// A security event as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EventRow {
    pub received_ms: i64,
    pub reporter: String,
    pub reporter_tier: &'static str,
    pub reason: &'static str,
    pub reason_code: u8,
    /// GY/T 385 result code of the refusal.
    pub national_result_code: u8,
    pub broadcast: Option<String>,
    /// Serial of the certificate behind the refused message, when known.
    pub offender: Option<String>,
    pub count: u32,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// Recent events kept in memory for the API (all are in the store).
const RECENT_EVENTS: usize = 2_000;

#[derive(Debug, Default)]
pub struct Book {
    progress: HashMap<BroadcastId, HashMap<u64, Progress>>,
    status: HashMap<u64, (Status, i64)>,
    /// Refusals reported as security events, by reason (sum of counts).
    pub refusals: BTreeMap<RefusalReason, u64>,
    events: VecDeque<EventRow>,
    /// How fast the tree takes this platform's broadcasts (their next lead).
    pub lead: crate::lead::LeadMeter,
    /// What the terminals did with the scheduled programmes.
    pub plays: crate::plays::Plays,
}

impl Book {
    pub fn record_event(&mut self, e: &SecurityEvent, received_ms: i64) {
        *self.refusals.entry(e.reason).or_default() += u64::from(e.count);
        if self.events.len() == RECENT_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(EventRow {
            received_ms,
            reporter: format!("{:016x}", e.reporter_serial),
            reporter_tier: e.reporter_tier.name(),
            reason: e.reason.name(),
            reason_code: e.reason.code(),
            national_result_code: e.reason.national_result_code().code(),
            broadcast: e.broadcast.map(|b| b.to_string()),
            offender: (e.offender != 0).then(|| format!("{:016x}", e.offender)),
            count: e.count,
            first_ms: e.first_ms,
            last_ms: e.last_ms,
        });
    }

    /// Recent security events, newest first.
    pub fn events(&self) -> Vec<EventRow> {
        self.events.iter().rev().cloned().collect()
    }

    pub fn record_receipt(&mut self, r: &Receipt) {
        let Some(id) = r.broadcast else { return };
        let p = self
            .progress
            .entry(id)
            .or_default()
            .entry(r.terminal_serial)
            .or_default();
        if r.kind != ReceiptKind::Refused {
            // Accepted: a refusal seen before was of a forged copy.
            p.received = true;
            p.refused = None;
        }
        p.last_ms = p.last_ms.max(r.at_ms);
        let ends = matches!(
            r.kind,
            ReceiptKind::Finished
                | ReceiptKind::CutAtEnd
                | ReceiptKind::Muted
                | ReceiptKind::Preempted
                | ReceiptKind::Cancelled
                | ReceiptKind::Silenced
                | ReceiptKind::Held
                | ReceiptKind::Skipped
        );
        if ends {
            p.playing = false;
            p.heard_ms = r.detail;
        }
        match r.kind {
            ReceiptKind::Received => {}
            ReceiptKind::Verified => self.lead.acknowledged(id, r.terminal_serial, r.at_ms),
            ReceiptKind::Started | ReceiptKind::Resumed => {
                p.playing = true;
                p.preempted = false;
                p.held = false;
                p.first_started_ms.get_or_insert(r.at_ms);
            }
            ReceiptKind::Finished => p.finished = true,
            ReceiptKind::CutAtEnd => p.cut_at_end = true,
            ReceiptKind::Muted => p.muted = true,
            ReceiptKind::Preempted => p.preempted = true,
            ReceiptKind::Cancelled => p.cancelled = true,
            ReceiptKind::Silenced => p.silenced = true,
            ReceiptKind::Held => p.held = true,
            ReceiptKind::Skipped => p.skipped = true,
            // A refusal after this terminal accepted the broadcast is an
            // attack on it (a forged copy), not the terminal's verdict on it.
            ReceiptKind::Refused if p.received => {}
            ReceiptKind::Refused => p.refused = r.reason,
        }
    }

    /// Forgets the coverage of broadcasts no longer kept.
    pub fn forget(&mut self, ids: &[BroadcastId]) {
        for id in ids {
            self.progress.remove(id);
        }
    }

    pub fn record_status(&mut self, s: &Status, now_ms: i64) {
        self.status.insert(s.terminal_serial, (s.clone(), now_ms));
    }

    /// Coverage of `id`, whose validity ends at `end_ms`, as of `now_ms`.
    pub fn coverage(&self, id: BroadcastId, now_ms: i64, end_ms: i64) -> Coverage {
        self.coverage_by(id, now_ms, end_ms, |_| ())
            .remove(&())
            .unwrap_or_default()
    }

    /// Coverage of `id` per group of terminals (`group` maps a terminal's
    /// serial to its group: its village, say).
    pub fn coverage_by<K: Ord>(
        &self,
        id: BroadcastId,
        now_ms: i64,
        end_ms: i64,
        group: impl Fn(u64) -> K,
    ) -> BTreeMap<K, Coverage> {
        let mut out: BTreeMap<K, Coverage> = BTreeMap::new();
        let entries = self.progress.get(&id).into_iter().flat_map(|m| m.iter());
        for (serial, p) in entries {
            let c = out.entry(group(*serial)).or_default();
            let seen = self
                .status
                .get(serial)
                .map_or(p.last_ms, |(_, at)| (*at).max(p.last_ms));
            let silent = now_ms.saturating_sub(seen) > LOST_AFTER_MS
                || now_ms > end_ms.saturating_add(LOST_AFTER_END_MS);
            c.received += p.received as u32;
            c.playing += (p.playing && !silent) as u32;
            c.lost += (p.playing && silent) as u32;
            c.finished += p.finished as u32;
            c.cut_at_end += p.cut_at_end as u32;
            c.muted += p.muted as u32;
            c.preempted += p.preempted as u32;
            c.cancelled += p.cancelled as u32;
            c.silenced += p.silenced as u32;
            c.held += (p.held && !p.playing) as u32;
            c.skipped += p.skipped as u32;
            if let Some(r) = p.refused {
                c.refused += 1;
                *c.refused_by_reason.entry(r.name().to_string()).or_default() += 1;
            }
        }
        out
    }

    /// When each terminal first started `id` (unix ms), for activation latency.
    pub fn start_times(&self, id: BroadcastId) -> Vec<i64> {
        self.progress
            .get(&id)
            .into_iter()
            .flat_map(|m| m.values().filter_map(|p| p.first_started_ms))
            .collect()
    }

    /// Terminals heard from within `offline_after_ms`.
    pub fn online_terminals(&self, now_ms: i64, offline_after_ms: i64) -> usize {
        self.status
            .values()
            .filter(|(_, seen)| now_ms - seen <= offline_after_ms)
            .count()
    }

    /// Terminals whose last heartbeat is newer than `offline_after_ms` count as online.
    pub fn terminals(&self, now_ms: i64, offline_after_ms: i64) -> Vec<TerminalRow> {
        let mut rows: Vec<TerminalRow> = self
            .status
            .iter()
            .map(|(serial, (s, seen))| TerminalRow {
                serial: format!("{serial:016x}"),
                online: now_ms - seen <= offline_after_ms,
                last_seen_ms: *seen,
                volume: s.volume,
                muted: s.muted,
                playing: s.playing.map(|p| p.to_string()),
                software: s.software.clone(),
                faults: s
                    .faults
                    .iter()
                    .map(|f| format!("{}: {}", f.code, f.detail))
                    .collect(),
                refusals: s.refusals.iter().map(|(_, n)| *n as u64).sum(),
                refusals_by_reason: s
                    .refusals
                    .iter()
                    .map(|(r, n)| (r.name().to_string(), *n))
                    .collect(),
                audio: s.audio.into(),
                status_seq: s.seq,
                clock: (s.clock_uncertainty_us != u32::MAX).then_some(ClockRow {
                    offset_us: s.clock_offset_us,
                    uncertainty_us: s.clock_uncertainty_us,
                }),
            })
            .collect();
        rows.sort_by(|a, b| a.serial.cmp(&b.serial));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(kind: ReceiptKind, reason: Option<RefusalReason>) -> Receipt {
        Receipt {
            broadcast: Some(BroadcastId::from_u128(43601210000000101010000202611280001).unwrap()),
            terminal_serial: 7,
            kind,
            reason,
            at_ms: 1,
            detail: 0,
        }
    }

    #[test]
    fn a_forged_copy_refused_never_counts_against_a_played_broadcast() {
        let id = receipt(ReceiptKind::Verified, None).broadcast.unwrap();
        // Forged copy first, then the genuine one.
        let mut b = Book::default();
        b.record_receipt(&receipt(
            ReceiptKind::Refused,
            Some(RefusalReason::HeaderSignature),
        ));
        b.record_receipt(&receipt(ReceiptKind::Verified, None));
        b.record_receipt(&receipt(ReceiptKind::Started, None));
        let c = b.coverage(id, 0, i64::MAX);
        assert_eq!((c.received, c.playing, c.refused), (1, 1, 0));
        // Genuine first, then a forged copy.
        let mut b = Book::default();
        b.record_receipt(&receipt(ReceiptKind::Verified, None));
        b.record_receipt(&receipt(
            ReceiptKind::Refused,
            Some(RefusalReason::HeaderSignature),
        ));
        let c = b.coverage(id, 0, i64::MAX);
        assert_eq!((c.received, c.refused), (1, 0));
        // Refused and never accepted: counted, by reason.
        let mut b = Book::default();
        b.record_receipt(&receipt(
            ReceiptKind::Refused,
            Some(RefusalReason::CertRevoked),
        ));
        let c = b.coverage(id, 0, i64::MAX);
        assert_eq!((c.received, c.refused), (0, 1));
        assert_eq!(c.refused_by_reason.get("cert_revoked"), Some(&1));
    }
}
