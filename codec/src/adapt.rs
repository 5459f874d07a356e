//! How much later than the issuer's time a terminal on a slow or lossy
//! path should play live audio (the adaptive part of the live jitter
//! buffer). The issuer's delay keeps the terminals of an area in step;
//! a terminal whose own last hop cannot meet it would otherwise conceal
//! every late frame. From the recent arrivals it finds the delay that 95 %
//! of segments meet, and adds a frame when frames are being lost, so the
//! next packet (which carries the lost one's FEC) is in before it is
//! needed (NetEQ's approach, in frames). Sans-IO.

use std::collections::VecDeque;

/// Segments whose arrival is remembered (about 8 s of live voice).
const ARRIVALS: usize = 200;
/// Frames whose fate is remembered (about 5 s).
const OUTCOMES: usize = 250;
/// The share of segments the delay must bring in on time.
const QUANTILE: f64 = 0.95;
/// Fewer arrivals than this: the latest one seen decides.
const FEW: usize = 20;
/// Frames lost (in per mille of those due) before room is kept for FEC.
const LOSS_FOR_FEC_PER_MILLE: usize = 10;

#[derive(Debug, Default)]
pub struct DelayTarget {
    /// Arrival − the latest time that plays in step (µs), per segment.
    lateness: VecDeque<i64>,
    /// Per frame due: true when it was missing.
    missing: VecDeque<bool>,
    missing_count: usize,
}

impl DelayTarget {
    /// A segment arrived `lateness_us` after the last moment it could have
    /// played in step (negative: that much early).
    pub fn arrived(&mut self, lateness_us: i64) {
        if self.lateness.len() >= ARRIVALS {
            self.lateness.pop_front();
        }
        self.lateness.push_back(lateness_us);
    }

    /// A frame fell due; `missing` when it was not there.
    pub fn due(&mut self, missing: bool) {
        if self.missing.len() >= OUTCOMES && self.missing.pop_front() == Some(true) {
            self.missing_count -= 1;
        }
        self.missing.push_back(missing);
        self.missing_count += missing as usize;
    }

    /// Whether enough frames go missing that FEC is worth a frame's wait.
    pub fn lossy(&self) -> bool {
        !self.missing.is_empty()
            && self.missing_count * 1000 >= self.missing.len() * LOSS_FOR_FEC_PER_MILLE
    }

    /// The delay to add to the issuer's, a whole number of `frame_us`,
    /// at most `max_us`.
    pub fn target(&self, frame_us: i64, max_us: i64) -> i64 {
        if self.lateness.is_empty() || max_us <= 0 {
            return 0;
        }
        let mut sorted: Vec<i64> = self.lateness.iter().copied().collect();
        sorted.sort_unstable();
        let need = if sorted.len() < FEW {
            sorted[sorted.len() - 1]
        } else {
            sorted[((sorted.len() - 1) as f64 * QUANTILE).round() as usize]
        };
        let need = need.max(0) + if self.lossy() { frame_us } else { 0 };
        let frames = (need + frame_us - 1) / frame_us;
        (frames * frame_us).min(max_us / frame_us * frame_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: i64 = 20_000;

    #[test]
    fn on_time_arrivals_need_nothing() {
        let mut t = DelayTarget::default();
        for i in 0..100 {
            t.arrived(-30_000 + i * 100);
            t.due(false);
        }
        assert_eq!(t.target(F, 100_000), 0);
    }

    #[test]
    fn the_delay_covers_all_but_the_latest_twentieth() {
        let mut t = DelayTarget::default();
        // 90 % a little late, 10 % very late.
        for i in 0..200 {
            t.arrived(if i % 10 == 0 { 90_000 } else { 25_000 });
        }
        // The 95th percentile is a very late one: 90 ms → 5 frames.
        assert_eq!(t.target(F, 200_000), 100_000);
        let mut t = DelayTarget::default();
        for i in 0..200 {
            t.arrived(if i % 40 == 0 { 90_000 } else { 25_000 });
        }
        // 2.5 % very late: those are given up; 25 ms → 2 frames.
        assert_eq!(t.target(F, 200_000), 40_000);
        assert_eq!(t.target(F, 30_000), 20_000, "capped, in whole frames");
    }

    #[test]
    fn losses_keep_a_frame_for_the_fec() {
        let mut t = DelayTarget::default();
        for i in 0..250 {
            t.arrived(-5_000);
            t.due(i % 25 == 0); // 4 % missing
        }
        assert!(t.lossy());
        assert_eq!(t.target(F, 100_000), F);
        // Losses that stop are forgotten.
        for _ in 0..250 {
            t.due(false);
        }
        assert!(!t.lossy());
        assert_eq!(t.target(F, 100_000), 0);
    }
}
