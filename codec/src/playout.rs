//! Playout scheduling: a jitter buffer that releases frames by presentation
//! time against a clock (the terminal's estimate of the issuer's clock),
//! and says for each due frame whether to decode it, recover it from the
//! next packet's FEC, or conceal it. Sans-IO: the caller passes `now`.

use std::collections::BTreeMap;

use crate::adapt::DelayTarget;

/// What to do for the frame that is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// Decode this packet.
    Packet(Vec<u8>),
    /// The packet is lost; the next one arrived: recover from its FEC.
    Recover(Vec<u8>),
    /// The packet is lost: conceal.
    Conceal,
    /// Nothing to play for a while: silence (concealment has faded out).
    Silence,
}

/// Where a late joiner starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// Play in step with the issuer's timeline: frames already due are skipped
    /// (terminals of one area stay in sync).
    InStep,
    /// Shift the timeline so the first frame received plays now (a terminal
    /// that missed the start of a still-valid alert hears all of it).
    FromStart,
}

#[derive(Debug, Clone, Copy)]
pub struct PlayoutConfig {
    pub frame_us: i64,
    /// Fixed delay from presentation time to playout: the jitter buffer.
    pub delay_us: i64,
    /// Frames presenting further ahead than this of the timeline's present
    /// (or of the next frame to play, if later) are refused: bounded
    /// memory. Relays send recorded audio up to 100 s ahead.
    pub max_ahead_us: i64,
    /// Consecutive concealed frames before switching to silence.
    pub max_conceal: u32,
    /// In step: the presentation window. A frame may still play this long
    /// after its time (a player that was held up catches up); past it, it
    /// is skipped and counted, so playout stays near the timeline.
    pub max_lag_us: i64,
    /// Live audio: at most this much is added to `delay_us` when this
    /// terminal's frames arrive too late to play in step (0: never).
    /// Recorded audio is sent far ahead and never needs it.
    pub adapt_max_us: i64,
}

impl Default for PlayoutConfig {
    fn default() -> Self {
        PlayoutConfig {
            frame_us: 20_000,
            delay_us: 400_000,
            max_ahead_us: 120_000_000,
            max_conceal: 5,
            max_lag_us: 500_000,
            adapt_max_us: 0,
        }
    }
}

/// Counters a terminal reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlayoutStats {
    pub played: u64,
    pub recovered: u64,
    pub concealed: u64,
    /// Frames due with nothing to play (each concealed or silent frame).
    pub underruns: u64,
    /// Frames that arrived after their playout time.
    pub late: u64,
    /// Frames refused (duplicate, too far ahead) or skipped to stay in step.
    pub dropped: u64,
    /// Live: frames of concealment played to wait for late audio (the
    /// terminal's own delay grew), and frames left out to catch up again.
    pub stretched: u64,
    pub squeezed: u64,
}

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Buffered,
    Late,
    Duplicate,
    TooFarAhead,
}

#[derive(Debug)]
pub struct Playout {
    cfg: PlayoutConfig,
    join: Join,
    frames: BTreeMap<i64, Vec<u8>>,
    /// Presentation time of the next frame to play.
    next_pts: Option<i64>,
    /// Added to presentation times (non-zero after a FromStart join).
    shift_us: i64,
    end_pts: Option<i64>,
    conceal_run: u32,
    /// Once the first frame played, the start can no longer move earlier.
    started: bool,
    /// Frames that play before this (unix µs) are not taken: a terminal
    /// that restarted rejoins at the present, never replaying what it may
    /// have played before.
    floor_us: i64,
    /// Live: this terminal's own delay on top of the issuer's (whole
    /// frames), and what it is set from.
    extra_us: i64,
    target: DelayTarget,
    last_adapt_us: i64,
    stats: PlayoutStats,
}

/// Live: the terminal's own delay shrinks by at most a frame this often,
/// so a short calm spell does not undo what a burst of lateness taught.
const SQUEEZE_GAP_US: i64 = 1_000_000;

impl Playout {
    pub fn new(cfg: PlayoutConfig, join: Join) -> Self {
        Playout {
            cfg,
            join,
            frames: BTreeMap::new(),
            next_pts: None,
            shift_us: 0,
            end_pts: None,
            conceal_run: 0,
            started: false,
            floor_us: i64::MIN,
            extra_us: 0,
            target: DelayTarget::default(),
            last_adapt_us: i64::MIN,
            stats: PlayoutStats::default(),
        }
    }

    /// Nothing that plays before `at_us` will play (a rejoin after a
    /// restart: the presentation window does not reach back past it).
    pub fn not_before(&mut self, at_us: i64) {
        self.floor_us = self.floor_us.max(at_us);
    }

    pub fn stats(&self) -> PlayoutStats {
        self.stats
    }

    /// Frames waiting in the buffer.
    pub fn buffered(&self) -> usize {
        self.frames.len()
    }

    /// When the frame at `pts_us` plays, on the issuer's clock.
    pub fn play_time(&self, pts_us: i64) -> i64 {
        pts_us + self.shift_us + self.cfg.delay_us + self.extra_us
    }

    /// Live: what this terminal adds to the issuer's delay now.
    pub fn extra_delay_us(&self) -> i64 {
        self.extra_us
    }

    fn adapts(&self) -> bool {
        self.cfg.adapt_max_us > 0
    }

    /// True once the last frame has been played.
    pub fn finished(&self) -> bool {
        matches!((self.end_pts, self.next_pts), (Some(end), Some(next)) if next > end)
    }

    /// Whether the missing frame at `pts` (playing at `at`) is to be
    /// recovered or concealed now. Only once it is about to play; and a
    /// frame in the past (a late joiner or a held-up caller catching up)
    /// only if a later frame is here: audio arrives in order, so then it is
    /// lost, while with nothing after it, it is still on its way.
    fn lost(&self, pts: i64, at: i64, now_us: i64) -> bool {
        let f = self.cfg.frame_us;
        if at > now_us + f {
            return false;
        }
        at > now_us - f || self.frames.range(pts..).next().is_some()
    }

    /// Moves the timeline on to `now_us`: frames that should already have
    /// played are dropped and counted. A broadcast resuming after a
    /// pre-emption rejoins exactly where its timeline is, so it never
    /// replays its presentation window over what pre-empted it.
    pub fn skip_to(&mut self, now_us: i64) {
        let Some(next) = self.next_pts else {
            return;
        };
        let at = self.play_time(next);
        if at >= now_us {
            return;
        }
        let f = self.cfg.frame_us;
        let mut to = next + (now_us - at + f - 1) / f * f;
        if let Some(end) = self.end_pts {
            to = to.min(end + f);
        }
        let stale: Vec<i64> = self.frames.range(..to).map(|(k, _)| *k).collect();
        self.stats.dropped += stale.len() as u64;
        for k in stale {
            self.frames.remove(&k);
        }
        self.next_pts = Some(to);
    }

    /// Adds the frames of a segment whose first frame presents at `pts_us`.
    pub fn push_segment(
        &mut self,
        pts_us: i64,
        frames: Vec<Vec<u8>>,
        last: bool,
        now_us: i64,
    ) -> Vec<Pushed> {
        let n = frames.len() as i64;
        if self.adapts() {
            // A frame must be here a frame before it plays (it is decoded
            // then); how late the segment's first frame is for that.
            let in_step = pts_us + self.shift_us + self.cfg.delay_us;
            let lateness = now_us - (in_step - self.cfg.frame_us);
            self.target
                .arrived(pts_us, lateness, now_us, self.cfg.frame_us);
        }
        let out = frames
            .into_iter()
            .enumerate()
            .map(|(i, f)| self.push(pts_us + i as i64 * self.cfg.frame_us, f, now_us))
            .collect();
        if last {
            self.end_pts = Some(pts_us + (n - 1) * self.cfg.frame_us);
        }
        out
    }

    pub fn push(&mut self, pts_us: i64, packet: Vec<u8>, now_us: i64) -> Pushed {
        if self.play_time(pts_us) < self.floor_us {
            self.stats.dropped += 1;
            return Pushed::Late;
        }
        if !self.started && self.next_pts.is_none_or(|n| pts_us < n) {
            // Before playback starts, frames may arrive in any order.
            if self.join == Join::FromStart && pts_us + self.cfg.delay_us < now_us {
                self.shift_us = now_us - pts_us;
            }
            self.next_pts = Some(pts_us);
        }
        let next = self.next_pts.unwrap_or(pts_us);
        if pts_us < next {
            self.stats.late += 1;
            return Pushed::Late;
        }
        // The present on the broadcast's timeline: a late joiner's first
        // frames may lie long before it.
        let present = now_us - self.cfg.delay_us - self.shift_us;
        if pts_us > next.max(present) + self.cfg.max_ahead_us {
            self.stats.dropped += 1;
            return Pushed::TooFarAhead;
        }
        if self.frames.contains_key(&pts_us) {
            self.stats.dropped += 1;
            return Pushed::Duplicate;
        }
        self.frames.insert(pts_us, packet);
        Pushed::Buffered
    }

    /// The next due frame at `now_us`, or None when nothing is due yet (or
    /// the broadcast has ended). Call repeatedly until None.
    pub fn poll(&mut self, now_us: i64) -> Option<Slot> {
        self.poll_until(now_us, now_us).map(|(_, slot)| slot)
    }

    /// When the next frame plays (on the issuer's clock), if there is one.
    pub fn next_play_time(&self) -> Option<i64> {
        match self.next_pts {
            Some(next) if !self.finished() => Some(self.play_time(next)),
            _ => None,
        }
    }

    /// The next frame that plays by `horizon_us`, with its play time: a
    /// player may decode ahead of time and hand the audio to a sink that
    /// plays it when due. A missing frame is recovered or concealed only
    /// once it is about to play (within a frame of `now_us`), never ahead:
    /// it may still arrive. In step, frames are skipped only when playout has
    /// fallen more than `max_lag_us` behind `now_us` (the real time), so
    /// work done ahead never counts as lag and a late caller catches up on
    /// everything still inside that window.
    pub fn poll_until(&mut self, horizon_us: i64, now_us: i64) -> Option<(i64, Slot)> {
        let mut next = self.next_pts?;
        if self.finished() {
            return None;
        }
        if self.play_time(next) > horizon_us {
            return None;
        }
        if self.join == Join::InStep {
            let lag = now_us - self.play_time(next);
            if lag > self.cfg.max_lag_us {
                // Running too far behind the timeline: skip to where it is
                // now, less the window (those frames can still be heard).
                let behind = (lag - self.cfg.max_lag_us) / self.cfg.frame_us + 1;
                let skip_to = next + behind * self.cfg.frame_us;
                let stale: Vec<i64> = self.frames.range(..skip_to).map(|(k, _)| *k).collect();
                self.stats.dropped += stale.len() as u64;
                for k in stale {
                    self.frames.remove(&k);
                }
                next = skip_to;
                if let Some(end) = self.end_pts {
                    next = next.min(end + self.cfg.frame_us);
                }
                self.next_pts = Some(next);
                if self.finished() {
                    return None;
                }
            }
        }
        let mut at = self.play_time(next);
        let mut present = self.frames.contains_key(&next);
        if !present && !self.lost(next, at, now_us) {
            return None;
        }
        if self.adapts() && self.started {
            let f = self.cfg.frame_us;
            let target = self.target.target(f, self.cfg.adapt_max_us);
            if !present && target > self.extra_us {
                // Audio is arriving late: wait a frame for this one
                // (concealment fills the frame) rather than lose it.
                self.extra_us += f;
                self.last_adapt_us = now_us;
                self.stats.stretched += 1;
                return Some((at, Slot::Conceal));
            }
            if present
                && target + f <= self.extra_us
                && now_us - self.last_adapt_us >= SQUEEZE_GAP_US
                && self.frames.contains_key(&(next + f))
            {
                // Audio comes sooner again: leave a frame out to play
                // nearer the issuer's time (and the other terminals).
                self.frames.remove(&next);
                self.extra_us -= f;
                self.last_adapt_us = now_us;
                self.stats.squeezed += 1;
                next += f;
                self.next_pts = Some(next);
                at = self.play_time(next);
                present = true;
            }
            self.target.due(next, at, !present, f);
        }
        self.started = true;
        self.next_pts = Some(next + self.cfg.frame_us);
        if let Some(packet) = self.frames.remove(&next) {
            self.stats.played += 1;
            self.conceal_run = 0;
            return Some((at, Slot::Packet(packet)));
        }
        self.stats.underruns += 1;
        if let Some(following) = self.frames.get(&(next + self.cfg.frame_us)) {
            self.stats.recovered += 1;
            self.conceal_run = 0;
            return Some((at, Slot::Recover(following.clone())));
        }
        self.conceal_run += 1;
        if self.conceal_run > self.cfg.max_conceal {
            return Some((at, Slot::Silence));
        }
        self.stats.concealed += 1;
        Some((at, Slot::Conceal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: i64 = 20_000;

    fn pkt(i: i64) -> Vec<u8> {
        vec![i as u8]
    }

    fn drain(p: &mut Playout, now: i64) -> Vec<Slot> {
        std::iter::from_fn(|| p.poll(now)).collect()
    }

    #[test]
    fn plays_in_order_after_the_delay() {
        let mut p = Playout::new(PlayoutConfig::default(), Join::InStep);
        // Arrive out of order.
        for i in [2, 0, 1, 3] {
            assert_eq!(p.push(i * F, pkt(i), 0), Pushed::Buffered);
        }
        assert!(
            drain(&mut p, 399_999).is_empty(),
            "nothing before the delay"
        );
        assert_eq!(drain(&mut p, 400_000), vec![Slot::Packet(pkt(0))]);
        assert_eq!(
            drain(&mut p, 400_000 + 3 * F),
            vec![
                Slot::Packet(pkt(1)),
                Slot::Packet(pkt(2)),
                Slot::Packet(pkt(3))
            ]
        );
        assert_eq!(p.stats().played, 4);
    }

    #[test]
    fn loss_is_recovered_or_concealed_and_counted() {
        let mut p = Playout::new(PlayoutConfig::default(), Join::InStep);
        p.push_segment(0, vec![pkt(0), pkt(1)], false, 0);
        p.push_segment(3 * F, vec![pkt(3)], false, 0); // frame 2 lost, 3 carries its FEC
        p.push_segment(6 * F, vec![pkt(6)], true, 0); // 4 and 5 lost
        let slots = drain(&mut p, 400_000 + 6 * F);
        assert_eq!(
            slots,
            vec![
                Slot::Packet(pkt(0)),
                Slot::Packet(pkt(1)),
                Slot::Recover(pkt(3)),
                Slot::Packet(pkt(3)),
                Slot::Conceal,
                Slot::Recover(pkt(6)),
                Slot::Packet(pkt(6)),
            ]
        );
        let s = p.stats();
        assert_eq!(
            (s.played, s.recovered, s.concealed, s.underruns),
            (4, 2, 1, 3)
        );
        assert!(p.finished());
        assert_eq!(p.poll(10_000_000), None, "nothing after the end");
    }

    #[test]
    fn late_duplicate_and_far_frames_are_refused() {
        let mut p = Playout::new(PlayoutConfig::default(), Join::InStep);
        p.push(0, pkt(0), 0);
        assert_eq!(p.push(0, pkt(0), 0), Pushed::Duplicate);
        assert_eq!(drain(&mut p, 400_000).len(), 1);
        assert_eq!(p.push(0, pkt(0), 400_000), Pushed::Late);
        assert_eq!(p.push(200_000_000, pkt(9), 400_000), Pushed::TooFarAhead);
        let s = p.stats();
        assert_eq!((s.late, s.dropped), (1, 2));
    }

    #[test]
    fn decoding_ahead_is_not_lag_and_a_late_caller_catches_up() {
        let mut p = Playout::new(PlayoutConfig::default(), Join::InStep);
        p.push_segment(0, (0..100).map(pkt).collect(), true, 0);
        // 300 ms ahead of real time: the frames due by then, with their times.
        let ahead: Vec<(i64, Slot)> =
            std::iter::from_fn(|| p.poll_until(400_000 + 300_000, 400_000)).collect();
        assert_eq!(ahead.len(), 16);
        assert_eq!(ahead[0], (400_000, Slot::Packet(pkt(0))));
        assert_eq!(ahead[15], (700_000, Slot::Packet(pkt(15))));
        assert_eq!(p.next_play_time(), Some(720_000));
        // The caller was stalled for 450 ms past frame 16's time: inside the
        // window, so nothing is dropped; everything due plays now.
        let now = 720_000 + 450_000;
        let late: Vec<Slot> = std::iter::from_fn(|| p.poll(now)).collect();
        assert_eq!(late.len(), 23);
        assert_eq!(p.stats().dropped, 0);
        // Stalled 1 s: what fell out of the window is dropped and counted,
        // the window's worth plays.
        let now = now + 1_000_000;
        let slots: Vec<Slot> = std::iter::from_fn(|| p.poll(now)).collect();
        assert_eq!(slots.first(), Some(&Slot::Packet(pkt(64))));
        assert_eq!(slots.len(), 25);
        assert_eq!(p.stats().dropped, 25);
    }

    #[test]
    fn a_missing_frame_is_not_concealed_ahead_of_time() {
        let mut p = Playout::new(PlayoutConfig::default(), Join::InStep);
        p.push_segment(0, vec![pkt(0), pkt(1)], false, 0);
        p.push_segment(3 * F, vec![pkt(3)], false, 0);
        // 300 ms ahead: frames 0 and 1, then frame 2 is missing and not due.
        let ahead: Vec<Slot> =
            std::iter::from_fn(|| p.poll_until(400_000 + 300_000, 400_000).map(|(_, s)| s))
                .collect();
        assert_eq!(ahead, vec![Slot::Packet(pkt(0)), Slot::Packet(pkt(1))]);
        // It arrives before it is due: played, not concealed.
        p.push(2 * F, pkt(2), 420_000);
        assert_eq!(
            p.poll_until(400_000 + 300_000, 420_000),
            Some((440_000, Slot::Packet(pkt(2))))
        );
        // Frame 4 never comes: concealed only once it is about to play.
        assert_eq!(
            p.poll_until(400_000 + 300_000, 420_000),
            Some((460_000, Slot::Packet(pkt(3))))
        );
        assert_eq!(p.poll_until(800_000, 420_000), None);
        assert_eq!(
            p.poll_until(800_000, 460_000),
            Some((480_000, Slot::Conceal))
        );
        assert_eq!(p.stats().concealed, 1);
    }

    #[test]
    fn long_gaps_turn_to_silence() {
        let mut p = Playout::new(PlayoutConfig::default(), Join::InStep);
        p.push(0, pkt(0), 0);
        // Polled in real time, one frame at a time: the stream stalled.
        let slots: Vec<Slot> = (0..=10)
            .flat_map(|i| drain(&mut p, 400_000 + i * F))
            .collect();
        assert_eq!(slots[0], Slot::Packet(pkt(0)));
        assert_eq!(slots.iter().filter(|s| **s == Slot::Conceal).count(), 5);
        assert_eq!(slots.iter().filter(|s| **s == Slot::Silence).count(), 5);
    }

    #[test]
    fn audio_still_on_its_way_is_waited_for_and_a_resumed_one_rejoins_exactly() {
        let mut p = Playout::new(PlayoutConfig::default(), Join::InStep);
        // A late joiner got the first segment; the rest is right behind.
        let now = 400_000 + 200_000;
        p.push_segment(0, (0..5).map(pkt).collect(), false, now);
        assert_eq!(drain(&mut p, now).len(), 5, "the window plays");
        assert!(
            drain(&mut p, now).is_empty(),
            "frame 5 is on its way: no concealment"
        );
        p.push_segment(5 * F, (5..10).map(pkt).collect(), true, now + 1_000);
        assert_eq!(drain(&mut p, now + 1_000).len(), 5);
        assert_eq!(p.stats().concealed, 0);
        // Resuming after a pre-emption: straight to the timeline.
        let mut p = Playout::new(PlayoutConfig::default(), Join::InStep);
        p.push_segment(0, (0..100).map(pkt).collect(), true, 0);
        p.skip_to(400_000 + 30 * F + 5_000);
        assert_eq!(p.next_play_time(), Some(400_000 + 31 * F));
        assert_eq!(p.stats().dropped, 31);
    }

    #[test]
    fn late_joiner_in_step_skips_or_from_start_shifts() {
        // Joined 1 s after the frames' playout time.
        let now = 1_000_000 + 400_000;
        let mut p = Playout::new(PlayoutConfig::default(), Join::InStep);
        p.push_segment(0, (0..100).map(pkt).collect(), true, now);
        let first = drain(&mut p, now);
        // In step: what is more than the window (500 ms) behind the
        // timeline is skipped; the rest of the window plays at once.
        assert_eq!(
            first,
            (26..=50).map(|i| Slot::Packet(pkt(i))).collect::<Vec<_>>(),
            "in step: resumes inside the window"
        );
        assert_eq!(p.stats().dropped, 26);

        let mut p = Playout::new(PlayoutConfig::default(), Join::FromStart);
        p.push_segment(0, (0..100).map(pkt).collect(), true, now);
        assert!(
            drain(&mut p, now).is_empty(),
            "from start: waits the delay from now"
        );
        assert_eq!(drain(&mut p, now + 400_000), vec![Slot::Packet(pkt(0))]);
    }

    /// Live voice: 2-frame segments spoken from t = 0, each arriving
    /// `lateness(k)` after it exists (None: lost), played against a
    /// 150 ms issuer delay by a caller polling every millisecond. Returns
    /// every slot with its play time.
    fn live(
        secs: i64,
        adapt_max_us: i64,
        lateness: impl Fn(i64) -> Option<i64>,
    ) -> (Playout, Vec<(i64, Slot)>) {
        let cfg = PlayoutConfig {
            delay_us: 150_000,
            adapt_max_us,
            ..PlayoutConfig::default()
        };
        let mut p = Playout::new(cfg, Join::InStep);
        let segments = secs * 25;
        let mut arrivals: Vec<(i64, i64)> = (0..segments)
            .filter_map(|k| lateness(k).map(|l| (k * 2 * F + 2 * F + l, k)))
            .collect();
        arrivals.sort();
        let mut out = Vec::new();
        let mut next = 0;
        for now in (0..secs * 1_000_000 + 1_000_000).step_by(1_000) {
            while next < arrivals.len() && arrivals[next].0 <= now {
                let k = arrivals[next].1;
                p.push_segment(
                    k * 2 * F,
                    vec![pkt(2 * k), pkt(2 * k + 1)],
                    k == segments - 1,
                    now,
                );
                next += 1;
            }
            while let Some(slot) = p.poll_until(now + F, now) {
                out.push(slot);
            }
        }
        (p, out)
    }

    #[test]
    fn live_audio_on_a_slow_path_waits_for_it_then_catches_up() {
        // 10 s arriving 150 ms after it exists (60 ms past the issuer's
        // 150 ms, less the 40 ms of gathering, a frame before playing),
        // then 10 s on time again.
        let late = |k: i64| Some(if k < 250 { 150_000 } else { 10_000 });
        let (fixed, fixed_slots) = live(20, 0, late);
        let (p, slots) = live(20, 200_000, late);
        let packets = |s: &[(i64, Slot)]| {
            s.iter()
                .filter(|(_, s)| matches!(s, Slot::Packet(_)))
                .count()
        };
        // Without adapting, the first 10 s are lost (arrived too late).
        assert!(packets(&fixed_slots) < 520, "{}", packets(&fixed_slots));
        assert!(fixed.stats().late > 450);
        // Adapting: a few frames of concealment, then every frame plays.
        assert!(
            packets(&slots) >= 990,
            "{} packets played ({:?})",
            packets(&slots),
            p.stats()
        );
        assert!(p.stats().stretched <= 5, "{:?}", p.stats());
        // The slots are one continuous timeline: each plays a frame after
        // the one before it.
        for w in slots.windows(2) {
            assert_eq!(w[1].0 - w[0].0, F, "{w:?}");
        }
        // And once audio is on time again, the terminal is back at the
        // issuer's delay, a frame a second at most.
        assert_eq!(p.extra_delay_us(), 0, "{:?}", p.stats());
        assert_eq!(p.stats().squeezed, p.stats().stretched);
        let (_, last) = slots.last().unwrap();
        assert_eq!(*last, Slot::Packet(pkt(999)));
        assert_eq!(slots.last().unwrap().0, 999 * F + 150_000);
    }

    #[test]
    fn live_audio_with_losses_keeps_a_frame_for_the_fec() {
        // Just in time (85 ms after it exists: 5 ms to spare), but one
        // segment in 20 lost: its second frame comes back from the next
        // packet's FEC once the terminal waits a frame more.
        let lossy = |k: i64| (k % 20 != 7).then_some(85_000);
        let (fixed, _) = live(20, 0, lossy);
        let (p, _) = live(20, 200_000, lossy);
        assert_eq!(fixed.stats().recovered, 0, "{:?}", fixed.stats());
        assert!(p.stats().recovered >= 20, "{:?}", p.stats());
        assert_eq!(p.extra_delay_us(), F);
    }
}
