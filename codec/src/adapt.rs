//! How much later than the issuer's time a terminal on a slow or lossy
//! path should play live audio (the adaptive part of the live jitter
//! buffer). The issuer's delay keeps the terminals of an area in step;
//! a terminal whose own last hop cannot meet it would otherwise conceal
//! every late frame. From the recent arrivals it finds the delay that 80 %
//! of segments meet (NetEQ's idea, in frames): a slow path is followed, a
//! tail is not. On a stream a lost packet holds up the segments behind it
//! until it is sent again, a round trip later; waiting out those bursts
//! would add that round trip to every word, so they are concealed. It adds
//! a frame when, of the frames that went missing, enough had the next
//! packet (which carries the lost one's FEC) arrive within a frame of
//! their time: then the wait recovers them. Sans-IO.

use std::collections::VecDeque;

/// Segments whose arrival is remembered (about 8 s of live voice).
const ARRIVALS: usize = 200;
/// Frames whose fate is remembered (about 5 s).
const OUTCOMES: usize = 250;
/// The share of segments the delay must bring in on time.
const QUANTILE: f64 = 0.8;
/// Fewer arrivals than this: the latest one seen decides.
const FEW: usize = 20;
/// Frames a frame's wait would have recovered from FEC, per mille of those
/// due, before that frame is added.
const FEC_GAIN_PER_MILLE: usize = 10;
/// Missing frames remembered until the frame after them arrives, and
/// segments' first arrivals remembered.
const WATCHED: usize = 16;

#[derive(Debug, Default)]
pub struct DelayTarget {
    /// Arrival − the latest time that plays in step (µs), per segment.
    lateness: VecDeque<i64>,
    /// The lateness the delay must cover (its quantile), kept as segments
    /// arrive so that asking, once per frame, costs nothing.
    need_us: i64,
    scratch: Vec<i64>,
    /// When the first frames of recent segments arrived: (pts, at).
    firsts: VecDeque<(i64, i64)>,
    /// Per frame due (by pts): whether a frame's wait would have recovered
    /// it or did.
    outcomes: VecDeque<(i64, bool)>,
    recoverable: usize,
    /// Frames missing when due whose next frame has not come yet:
    /// (pts, play time).
    watched: VecDeque<(i64, i64)>,
}

impl DelayTarget {
    /// A segment whose first frame presents at `pts_us` arrived at
    /// `now_us`, `lateness_us` after the last moment it could have played
    /// in step (negative: that much early).
    pub fn arrived(&mut self, pts_us: i64, lateness_us: i64, now_us: i64, frame_us: i64) {
        push_bounded(&mut self.lateness, lateness_us, ARRIVALS);
        self.scratch.clear();
        self.scratch.extend(self.lateness.iter().copied());
        let i = if self.scratch.len() < FEW {
            self.scratch.len() - 1
        } else {
            ((self.scratch.len() - 1) as f64 * QUANTILE).round() as usize
        };
        self.need_us = *self.scratch.select_nth_unstable(i).1;
        push_bounded(&mut self.firsts, (pts_us, now_us), WATCHED);
        // The frame before it went missing: a frame's wait would have
        // recovered it if this came by that frame's time.
        while let Some(&(pts, at)) = self.watched.front() {
            if pts + frame_us > pts_us {
                break;
            }
            self.watched.pop_front();
            if pts + frame_us == pts_us && now_us <= at {
                self.mark(pts);
            }
        }
    }

    /// The frame at `pts_us` fell due, to play at `at_us`; `missing` when
    /// it was not there.
    pub fn due(&mut self, pts_us: i64, at_us: i64, missing: bool, frame_us: i64) {
        if self.outcomes.len() >= OUTCOMES && self.outcomes.pop_front().is_some_and(|(_, r)| r) {
            self.recoverable -= 1;
        }
        self.outcomes.push_back((pts_us, false));
        if !missing {
            return;
        }
        let next = pts_us + frame_us;
        match self.firsts.iter().find(|(p, _)| *p == next) {
            // It came: recovered now if it came a frame before this one's
            // time; the frame's wait counts if it came within two.
            Some(&(_, arrived)) => {
                if arrived > at_us - 2 * frame_us {
                    self.mark(pts_us);
                }
            }
            None => push_bounded(&mut self.watched, (pts_us, at_us), WATCHED),
        }
    }

    fn mark(&mut self, pts_us: i64) {
        if let Some(o) = self.outcomes.iter_mut().rev().find(|(p, _)| *p == pts_us) {
            if !o.1 {
                o.1 = true;
                self.recoverable += 1;
            }
        }
    }

    /// Whether a frame's wait recovers enough frames from FEC.
    pub fn lossy(&self) -> bool {
        !self.outcomes.is_empty()
            && self.recoverable * 1000 >= self.outcomes.len() * FEC_GAIN_PER_MILLE
    }

    /// The delay to add to the issuer's, a whole number of `frame_us`,
    /// at most `max_us`.
    pub fn target(&self, frame_us: i64, max_us: i64) -> i64 {
        if self.lateness.is_empty() || max_us <= 0 {
            return 0;
        }
        let need = self.need_us.max(0) + if self.lossy() { frame_us } else { 0 };
        let frames = (need + frame_us - 1) / frame_us;
        (frames * frame_us).min(max_us / frame_us * frame_us)
    }
}

fn push_bounded<T>(q: &mut VecDeque<T>, v: T, max: usize) {
    if q.len() >= max {
        q.pop_front();
    }
    q.push_back(v);
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: i64 = 20_000;

    /// Segments of 2 frames from pts 0, the k-th arriving `lateness(k)`
    /// (None: lost) after the last moment it could play in step, each
    /// frame due at pts + 150 ms (the issuer's delay, nothing added).
    fn feed(t: &mut DelayTarget, segments: i64, lateness: impl Fn(i64) -> Option<i64>) {
        // (time, arrival of segment k) or (time, frame due), in time order;
        // a frame is decided a frame before it plays.
        type Due = Option<(i64, bool)>;
        let mut events: Vec<(i64, Option<i64>, Due)> = Vec::new();
        for k in 0..segments {
            let pts = 2 * k * F;
            let deadline = pts + 150_000 - F;
            if let Some(l) = lateness(k) {
                events.push((deadline + l, Some(k), None));
            }
            for i in 0..2 {
                let p = pts + i * F;
                let on_time = lateness(k).is_some_and(|l| l <= i * F);
                events.push((p + 150_000 - F, None, Some((p, !on_time))));
            }
        }
        events.sort_by_key(|e| (e.0, e.1.is_none()));
        for (time, arrival, due) in events {
            if let Some(k) = arrival {
                t.arrived(2 * k * F, lateness(k).unwrap_or(0), time, F);
            }
            if let Some((p, missing)) = due {
                t.due(p, p + 150_000, missing, F);
            }
        }
    }

    #[test]
    fn on_time_arrivals_need_nothing() {
        let mut t = DelayTarget::default();
        feed(&mut t, 100, |k| Some(-30_000 + k * 100));
        assert_eq!(t.target(F, 100_000), 0);
    }

    #[test]
    fn a_slow_path_is_followed_and_a_tail_is_not() {
        let mut t = DelayTarget::default();
        // Every segment 25 ms late: 2 frames.
        feed(&mut t, 200, |_| Some(25_000));
        assert_eq!(t.target(F, 200_000), 40_000);
        assert_eq!(t.target(F, 30_000), 20_000, "capped, in whole frames");
        // A stream waiting out a resent packet: every 25th segment comes
        // 150 ms late and the three sent behind it with it. Not waited
        // for; only the burst's last frame is worth a frame's wait (the
        // next packet, on time again, carries its FEC).
        let mut t = DelayTarget::default();
        let burst = [150_000, 110_000, 70_000, 30_000];
        feed(&mut t, 200, |k| {
            Some(burst.get(k as usize % 25).copied().unwrap_or(-10_000))
        });
        assert_eq!(t.target(F, 200_000), F);
        // One in four 50 ms late: then the path is that slow (3 frames),
        // and while nothing is added those frames are missing with the
        // next packet on time, so one more for FEC.
        let mut t = DelayTarget::default();
        feed(&mut t, 200, |k| {
            Some(if k % 4 == 0 { 50_000 } else { -10_000 })
        });
        assert!(t.lossy());
        assert_eq!(t.target(F, 200_000), 80_000);
    }

    #[test]
    fn losses_the_next_packet_could_recover_keep_a_frame_for_the_fec() {
        let mut t = DelayTarget::default();
        // One segment in 25 lost; the next comes 5 ms early, so its first
        // frame (with the lost one's FEC) is in a frame after the lost
        // one's deadline: a frame's wait recovers it.
        feed(&mut t, 125, |k| (k % 25 != 3).then_some(-5_000));
        assert!(t.lossy());
        assert_eq!(t.target(F, 100_000), F);
        // Losses that stop are forgotten.
        feed(&mut t, 125, |_| Some(-5_000));
        assert!(!t.lossy());
        assert_eq!(t.target(F, 100_000), 0);
        // Lost segments whose next one comes well before it is needed are
        // recovered already: no frame is added for them.
        let mut t = DelayTarget::default();
        feed(&mut t, 125, |k| (k % 25 != 3).then_some(-50_000));
        assert!(!t.lossy());
    }
}
