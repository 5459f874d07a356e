//! How long this platform's tree takes to take a broadcast: measured from
//! the terminals' own acknowledgements of the broadcasts it issued, so the
//! next one starts as soon as every terminal can have it (P1), not after a
//! constant chosen for the worst tree.
//!
//! Sans-IO: the issuer says what it issued and when; the book feeds it the
//! terminals' `Verified` receipts (stamped on the tree's clock), which a
//! terminal sends once the broadcast's first segment has verified: its
//! audio is in hand (PROTOCOL.md §6.4). Relays send every child its first
//! segment at once, whatever the lead, so the arrival measures the tree,
//! not the pacing. The lead of the next broadcast is the slowest arrival
//! of recent broadcasts that reached most of the terminals, with a margin;
//! until one has been measured, the configured lead.

use std::collections::{HashSet, VecDeque};

use protocol::BroadcastId;

/// Broadcasts remembered.
const KEPT: usize = 8;
/// An acknowledgement later than this after the issue is a terminal that
/// came online later, not the tree's speed.
pub const ARRIVAL_WINDOW_MS: i64 = 10_000;
/// How far before the issue an acknowledgement may be stamped and still
/// count (the terminal's and the issuer's clocks differ by their errors).
const CLOCK_SLACK_MS: i64 = 1_000;
/// The slowest arrival is scaled by this (per mille) and `MARGIN_MS` added:
/// the next broadcast may meet a busier tree. On the 600-terminal demo
/// (2026-12-03) the alert's arrival ran up to 1.3 × the check's it was
/// timed from (189 → 250 ms); with these and the 100 ms delay below no
/// frame was late or concealed in 5 idle runs and 2 runs of 200 terminals
/// beside two busy loops (scripts/district-600.sh). When the arrival was
/// that of the header, 1.25 × left 8–97 terminals late beside the loops.
const SCALE_PER_MILLE: i64 = 1_250;
const MARGIN_MS: i64 = 50;
/// Playout delay named in the header of a recorded broadcast whose lead
/// was measured: its first segment is known to be in hand by the lead, so
/// the terminals need only time to decode it and hand the first frames to
/// the speaker (the terminals' own 400 ms is for a lead that was guessed).
pub const MEASURED_PLAYOUT_DELAY_MS: u16 = 100;

#[derive(Debug)]
struct Issued {
    id: BroadcastId,
    issued_ms: i64,
    /// Terminals online below when it was issued.
    expected: usize,
    acknowledged: HashSet<u64>,
    slowest_ms: i64,
}

impl Issued {
    /// Reached at least half of the terminals expected: its slowest arrival
    /// says something about the whole tree.
    fn representative(&self) -> bool {
        self.expected > 0 && self.acknowledged.len() * 2 >= self.expected
    }
}

/// What the next broadcast's lead is, and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lead {
    pub lead_ms: i64,
    /// The slowest acknowledged arrival it was made from (None: the
    /// configured lead, nothing measured yet).
    pub measured_ms: Option<i64>,
}

#[derive(Debug, Default)]
pub struct LeadMeter {
    issued: VecDeque<Issued>,
}

impl LeadMeter {
    /// This platform issued `id` at `issued_ms` with `expected` terminals
    /// online below it.
    pub fn issued(&mut self, id: BroadcastId, issued_ms: i64, expected: usize) {
        if self.issued.iter().any(|i| i.id == id) {
            return;
        }
        if self.issued.len() == KEPT {
            self.issued.pop_front();
        }
        self.issued.push_back(Issued {
            id,
            issued_ms,
            expected,
            acknowledged: HashSet::new(),
            slowest_ms: 0,
        });
    }

    /// Terminal `serial` verified the header of `id` at `at_ms`.
    pub fn acknowledged(&mut self, id: BroadcastId, serial: u64, at_ms: i64) {
        let Some(i) = self.issued.iter_mut().find(|i| i.id == id) else {
            return;
        };
        let arrival = at_ms - i.issued_ms;
        // A quick arrival stamped by a terminal whose clock runs a little
        // behind the issuer's reads as slightly negative: it still arrived.
        if !(-CLOCK_SLACK_MS..=ARRIVAL_WINDOW_MS).contains(&arrival)
            || !i.acknowledged.insert(serial)
        {
            return;
        }
        i.slowest_ms = i.slowest_ms.max(arrival.max(0));
    }

    /// The lead of the next broadcast, at most `configured_ms`.
    pub fn lead(&self, configured_ms: i64) -> Lead {
        let slowest = self
            .issued
            .iter()
            .filter(|i| i.representative())
            .map(|i| i.slowest_ms)
            .max();
        match slowest {
            Some(s) => Lead {
                lead_ms: (s * SCALE_PER_MILLE / 1000 + MARGIN_MS).min(configured_ms),
                measured_ms: Some(s),
            },
            None => Lead {
                lead_ms: configured_ms,
                measured_ms: None,
            },
        }
    }

    /// The slowest arrival of `id` so far and how many terminals
    /// acknowledged it in time.
    pub fn arrival(&self, id: BroadcastId) -> Option<(i64, usize)> {
        self.issued
            .iter()
            .find(|i| i.id == id)
            .map(|i| (i.slowest_ms, i.acknowledged.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> BroadcastId {
        BroadcastId::from_u128(43601210000000101010000202612020000 + n).unwrap()
    }

    #[test]
    fn nothing_measured_keeps_the_configured_lead() {
        let m = LeadMeter::default();
        assert_eq!(
            m.lead(1000),
            Lead {
                lead_ms: 1000,
                measured_ms: None
            }
        );
    }

    #[test]
    fn the_slowest_arrival_of_a_broadcast_that_reached_most_terminals_sets_the_lead() {
        let mut m = LeadMeter::default();
        m.issued(id(1), 10_000, 4);
        m.acknowledged(id(1), 1, 10_040);
        // One terminal is not yet half.
        assert_eq!(m.lead(1000).measured_ms, None);
        m.acknowledged(id(1), 2, 10_120);
        // Repeated, one that came online a minute later, one stamped long
        // before the issue: none counts.
        m.acknowledged(id(1), 2, 10_300);
        m.acknowledged(id(1), 3, 70_000);
        m.acknowledged(id(1), 4, 8_000);
        assert_eq!(m.arrival(id(1)), Some((120, 2)));
        // A clock a little behind: it arrived, at once.
        m.acknowledged(id(1), 5, 9_998);
        assert_eq!(m.arrival(id(1)), Some((120, 3)));
        assert_eq!(
            m.lead(1000),
            Lead {
                lead_ms: 120 * SCALE_PER_MILLE / 1000 + MARGIN_MS,
                measured_ms: Some(120)
            }
        );
        // Never above the configured lead; an instant arrival still leaves
        // the margin.
        assert_eq!(m.lead(200).lead_ms, 200);
        let mut quick = LeadMeter::default();
        quick.issued(id(2), 0, 1);
        quick.acknowledged(id(2), 1, 0);
        assert_eq!(quick.lead(1000).lead_ms, MARGIN_MS);
        assert_eq!(quick.lead(20).lead_ms, 20);
    }

    #[test]
    fn a_slow_broadcast_raises_the_lead_until_it_is_forgotten() {
        let mut m = LeadMeter::default();
        m.issued(id(0), 0, 1);
        m.acknowledged(id(0), 1, 900);
        for n in 1..KEPT as u128 {
            m.issued(id(n), 0, 1);
            m.acknowledged(id(n), 1, 100);
        }
        assert_eq!(m.lead(5000).measured_ms, Some(900));
        m.issued(id(99), 0, 1);
        m.acknowledged(id(99), 1, 100);
        assert_eq!(m.lead(5000).measured_ms, Some(100));
    }
}
