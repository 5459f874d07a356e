//! What the terminals below reported of the scheduled programmes (R9,
//! R22): which hold each programme's audio, and for every play (a
//! programme at one start time) what each terminal did: played it in
//! full, skipped it and why, was cut, pre-empted, moved by quiet hours.
//! The console's day plan puts this beside the schedule.

use std::collections::{BTreeMap, HashMap};

use protocol::{BroadcastId, PlayOutcome, PlayReason, ProgrammeReceipt};
use serde::Serialize;

/// One terminal's report of one play.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct PlayReport {
    pub started: bool,
    pub finished: bool,
    pub muted: bool,
    pub preempted: u32,
    /// Skipped: it never played (the reason's name).
    pub skipped: Option<&'static str>,
    /// Cut before its end.
    pub cut: Option<&'static str>,
    /// Moved by quiet hours this many seconds later.
    pub postponed_s: Option<u32>,
    pub heard_ms: u32,
    /// The newest report's time.
    pub at_ms: i64,
}

/// Counts over the terminals that reported one play.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct PlaySummary {
    pub reported: u32,
    pub started: u32,
    pub finished: u32,
    pub muted: u32,
    pub preempted: u32,
    pub postponed: u32,
    pub cut: u32,
    pub skipped: u32,
    /// Skipped or cut, by reason name.
    pub why: BTreeMap<String, u32>,
}

pub fn reason_name(r: PlayReason) -> &'static str {
    match r {
        PlayReason::None => "none",
        PlayReason::QuietHours => "quiet_hours",
        PlayReason::NotCached => "not_cached",
        PlayReason::Withdrawn => "withdrawn",
        PlayReason::Preempted => "preempted",
        PlayReason::SlotEnded => "slot_ended",
        PlayReason::CacheFull => "cache_full",
        PlayReason::Untrusted => "untrusted",
        PlayReason::Superseded => "superseded",
    }
}

/// Plays kept per programme, at most (a year of a programme four times a
/// day, reported by its terminals).
const MAX_PLAYS_PER_PROGRAMME: usize = 1_500;

#[derive(Debug, Default)]
pub struct Plays {
    /// Programme → terminal → the revision whose audio it holds.
    cached: HashMap<BroadcastId, HashMap<u64, u32>>,
    /// Programme → start time → terminal → its report.
    plays: HashMap<BroadcastId, BTreeMap<i64, HashMap<u64, PlayReport>>>,
}

impl Plays {
    pub fn record(&mut self, r: &ProgrammeReceipt) {
        match r.outcome {
            PlayOutcome::Cached => {
                self.cached
                    .entry(r.programme)
                    .or_default()
                    .insert(r.terminal_serial, r.revision);
                return;
            }
            PlayOutcome::Evicted => {
                if let Some(m) = self.cached.get_mut(&r.programme) {
                    m.remove(&r.terminal_serial);
                }
                return;
            }
            _ => {}
        }
        let by_time = self.plays.entry(r.programme).or_default();
        if !by_time.contains_key(&r.occurrence_ms) && by_time.len() >= MAX_PLAYS_PER_PROGRAMME {
            // The oldest play goes first.
            by_time.pop_first();
        }
        let p = by_time
            .entry(r.occurrence_ms)
            .or_default()
            .entry(r.terminal_serial)
            .or_default();
        p.at_ms = p.at_ms.max(r.at_ms);
        let why = reason_name(r.reason);
        match r.outcome {
            PlayOutcome::Started | PlayOutcome::Resumed => p.started = true,
            PlayOutcome::Finished => {
                p.finished = true;
                p.heard_ms = r.detail;
            }
            PlayOutcome::Muted => p.muted = true,
            PlayOutcome::Preempted => {
                p.preempted += 1;
                p.heard_ms = r.detail;
            }
            PlayOutcome::Skipped => p.skipped = Some(why),
            PlayOutcome::Cut => {
                p.cut = Some(why);
                p.heard_ms = r.detail;
            }
            PlayOutcome::Postponed => p.postponed_s = Some(r.detail),
            PlayOutcome::Cached | PlayOutcome::Evicted => {}
        }
    }

    /// Terminals holding the audio of `id` (revision `revision`).
    pub fn cached(&self, id: BroadcastId, revision: u32) -> impl Iterator<Item = u64> + '_ {
        self.cached.get(&id).into_iter().flat_map(move |m| {
            m.iter()
                .filter(move |(_, r)| **r == revision)
                .map(|(t, _)| *t)
        })
    }

    /// Every terminal's report of the play of `id` starting at
    /// `occurrence_ms`.
    pub fn reports(&self, id: BroadcastId, occurrence_ms: i64) -> Vec<(u64, PlayReport)> {
        let mut out: Vec<(u64, PlayReport)> = self
            .plays
            .get(&id)
            .and_then(|m| m.get(&occurrence_ms))
            .map(|m| m.iter().map(|(t, p)| (*t, *p)).collect())
            .unwrap_or_default();
        out.sort_by_key(|(t, _)| *t);
        out
    }

    /// Counts of the play of `id` at `occurrence_ms` over the terminals
    /// `include` accepts (a village's, say).
    pub fn summary(
        &self,
        id: BroadcastId,
        occurrence_ms: i64,
        include: impl Fn(u64) -> bool,
    ) -> PlaySummary {
        let mut s = PlaySummary::default();
        for (t, p) in self.reports(id, occurrence_ms) {
            if !include(t) {
                continue;
            }
            s.reported += 1;
            s.started += p.started as u32;
            s.finished += p.finished as u32;
            s.muted += p.muted as u32;
            s.preempted += (p.preempted > 0) as u32;
            s.postponed += p.postponed_s.is_some() as u32;
            s.cut += p.cut.is_some() as u32;
            s.skipped += p.skipped.is_some() as u32;
            for why in p.skipped.into_iter().chain(p.cut) {
                *s.why.entry(why.to_string()).or_default() += 1;
            }
        }
        s
    }

    /// Forgets what is known of programmes no longer held.
    pub fn forget(&mut self, ids: &[BroadcastId]) {
        for id in ids {
            self.cached.remove(id);
            self.plays.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(t: u64, outcome: PlayOutcome, reason: PlayReason, detail: u32) -> ProgrammeReceipt {
        ProgrammeReceipt {
            programme: BroadcastId::from_u128(43601210000000101010000202612070001).unwrap(),
            revision: 1,
            occurrence_ms: 1_000,
            terminal_serial: t,
            outcome,
            reason,
            at_ms: 2_000,
            detail,
        }
    }

    #[test]
    fn each_terminals_play_is_summed_up_with_why_it_did_not_play() {
        let mut p = Plays::default();
        let id = receipt(1, PlayOutcome::Started, PlayReason::None, 0).programme;
        for r in [
            receipt(1, PlayOutcome::Cached, PlayReason::None, 0),
            receipt(1, PlayOutcome::Started, PlayReason::None, 0),
            receipt(1, PlayOutcome::Finished, PlayReason::None, 30_000),
            receipt(2, PlayOutcome::Skipped, PlayReason::NotCached, 0),
            receipt(3, PlayOutcome::Postponed, PlayReason::QuietHours, 600),
            receipt(3, PlayOutcome::Started, PlayReason::None, 0),
            receipt(3, PlayOutcome::Preempted, PlayReason::None, 5_000),
            receipt(3, PlayOutcome::Cut, PlayReason::SlotEnded, 5_000),
        ] {
            p.record(&r);
        }
        let s = p.summary(id, 1_000, |_| true);
        assert_eq!((s.reported, s.started, s.finished), (3, 2, 1));
        assert_eq!((s.skipped, s.cut, s.postponed, s.preempted), (1, 1, 1, 1));
        assert_eq!(s.why["not_cached"], 1);
        assert_eq!(s.why["slot_ended"], 1);
        assert_eq!(p.cached(id, 1).collect::<Vec<_>>(), vec![1]);
        assert_eq!(p.summary(id, 1_000, |t| t == 1).finished, 1);
        p.forget(&[id]);
        assert_eq!(p.summary(id, 1_000, |_| true).reported, 0);
    }
}
