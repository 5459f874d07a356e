//! Playout in step with the tree's clock on a sink that runs on its own
//! (a sound card's crystal is off by tens of ppm, and so is the terminal's
//! clock). Sans-IO: each call says when, on the tree's clock, the next
//! sample written will be heard, and the aligner writes what belongs
//! there.
//!
//! - A start lands exactly: silence up to its first sample, or, joining
//!   late, its first samples skipped.
//! - While playing, the error between when a sample is heard and when it
//!   should be is corrected without clicks, by dropping or repeating single
//!   samples at most [`AlignConfig::max_slew_ppm`] apart (Snapcast moves its
//!   rate by at most 0.05 %).
//! - Past [`AlignConfig::hard_us`] it resyncs at once (a stall, a step of
//!   the clock estimate).

use std::collections::VecDeque;

#[derive(Debug, Clone, Copy)]
pub struct AlignConfig {
    /// Errors within this are left alone (a sample is 62.5 µs at 16 kHz).
    pub deadband_us: i64,
    /// Corrections at most this many per million samples.
    pub max_slew_ppm: i64,
    /// An error is closed within about this long, slew permitting.
    pub settle_us: i64,
    /// Past this error: resync at once.
    pub hard_us: i64,
}

impl Default for AlignConfig {
    fn default() -> Self {
        AlignConfig {
            deadband_us: 60,
            max_slew_ppm: 500,
            settle_us: 2_000_000,
            hard_us: 20_000,
        }
    }
}

/// What the aligner has done, for the terminal's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlignStats {
    /// Samples dropped (running late) or repeated (running early) to slew.
    pub dropped: u64,
    pub repeated: u64,
    /// Resyncs past the hard threshold while playing.
    pub resyncs: u64,
    /// The last error measured while playing (heard − due, µs).
    pub last_error_us: i64,
}

struct Pending {
    /// The caller's mark (a generation): `retain_from` drops older ones.
    tag: u64,
    at_us: i64,
    pcm: Vec<f32>,
    /// Samples of it already written.
    used: usize,
}

pub struct Aligner {
    rate: u32,
    cfg: AlignConfig,
    queue: VecDeque<Pending>,
    /// Tree time at which the next sample of the stream is due, while the
    /// stream runs without a gap.
    running: bool,
    /// Fractional corrections owed (+ drop, − repeat).
    slew: f64,
    stats: AlignStats,
}

impl Aligner {
    pub fn new(rate: u32, cfg: AlignConfig) -> Self {
        Aligner {
            rate,
            cfg,
            queue: VecDeque::new(),
            running: false,
            slew: 0.0,
            stats: AlignStats::default(),
        }
    }

    pub fn stats(&self) -> AlignStats {
        self.stats
    }

    /// Audio whose first sample is due at `at_us` (tree time).
    pub fn push(&mut self, tag: u64, at_us: i64, pcm: Vec<f32>) {
        if !pcm.is_empty() {
            self.queue.push_back(Pending {
                tag,
                at_us,
                pcm,
                used: 0,
            });
        }
    }

    /// Drops everything not yet written (a pre-emption, a cancel).
    pub fn clear(&mut self) {
        self.queue.clear();
        self.running = false;
    }

    /// Drops what was pushed with a tag below `tag`.
    pub fn retain_from(&mut self, tag: u64) {
        let before = self.queue.front().map(|p| p.at_us);
        self.queue.retain(|p| p.tag >= tag);
        if self.queue.front().map(|p| p.at_us) != before {
            self.running = false;
        }
    }

    /// Tree time at which the next audio starts, if any is waiting.
    pub fn next_due(&self) -> Option<i64> {
        self.queue.front().map(|p| self.due(p))
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    fn us(&self, samples: usize) -> i64 {
        samples as i64 * 1_000_000 / self.rate as i64
    }

    fn samples(&self, us: i64) -> usize {
        (us.max(0) as i128 * self.rate as i128 / 1_000_000) as usize
    }

    fn due(&self, p: &Pending) -> i64 {
        p.at_us + self.us(p.used)
    }

    /// Appends to `out` what is heard from `heard_at_us` (tree time of the
    /// next sample written) up to `until_us`. Writes nothing while no audio
    /// is due by `until_us` (the sink may underrun: it plays silence).
    pub fn fill(&mut self, heard_at_us: i64, until_us: i64, out: &mut Vec<f32>) {
        let start = out.len();
        let sample_us = 1_000_000.0 / self.rate as f64;
        loop {
            let pos = heard_at_us + self.us(out.len() - start);
            if pos >= until_us {
                break;
            }
            let Some(front) = self.queue.front() else {
                self.running = false;
                break;
            };
            let due = self.due(front);
            let error = pos - due;
            if !self.running || error.abs() > self.cfg.hard_us {
                if self.running {
                    self.stats.resyncs += 1;
                }
                if error < 0 {
                    // Early: silence up to its first sample, if that is
                    // within this fill.
                    if due >= until_us && !self.running {
                        break;
                    }
                    let n = self.samples(-error).min(self.samples(until_us - pos) + 1);
                    out.extend(std::iter::repeat_n(0.0, n.max(1)));
                    if due >= until_us {
                        self.running = false;
                        break;
                    }
                } else {
                    // Late: skip what is past.
                    self.skip(self.samples(error));
                }
                self.running = true;
                self.slew = 0.0;
                continue;
            }
            self.stats.last_error_us = error;
            // Correct at a rate that closes the error in `settle_us`, capped.
            let ppm = if error.abs() <= self.cfg.deadband_us {
                0.0
            } else {
                (error as f64 / self.cfg.settle_us as f64 * 1e6)
                    .clamp(-self.cfg.max_slew_ppm as f64, self.cfg.max_slew_ppm as f64)
            };
            // Copy up to the end of this piece or of the fill.
            let room = ((until_us - pos) as f64 / sample_us).ceil() as usize;
            let Some(front) = self.queue.front_mut() else {
                break;
            };
            let take = room.min(front.pcm.len() - front.used).max(1);
            for _ in 0..take {
                self.slew += ppm / 1e6;
                if self.slew >= 1.0 {
                    // Running late: this sample is dropped.
                    self.slew -= 1.0;
                    front.used += 1;
                    self.stats.dropped += 1;
                    if front.used >= front.pcm.len() {
                        break;
                    }
                } else if self.slew <= -1.0 {
                    // Running early: this sample is heard twice.
                    self.slew += 1.0;
                    out.push(front.pcm[front.used]);
                    self.stats.repeated += 1;
                }
                out.push(front.pcm[front.used]);
                front.used += 1;
                if front.used >= front.pcm.len() {
                    break;
                }
            }
            self.next_piece();
        }
    }

    /// Skips `n` samples of the stream.
    fn skip(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.queue.front_mut() else {
                return;
            };
            let left = front.pcm.len() - front.used;
            let k = left.min(n);
            front.used += k;
            n -= k;
            self.next_piece();
        }
    }

    /// Moves past a used-up piece; a gap (or overlap) to the next one is
    /// taken exactly: silence for a gap, a skip for an overlap.
    fn next_piece(&mut self) {
        let Some(front) = self.queue.front() else {
            return;
        };
        if front.used < front.pcm.len() {
            return;
        }
        let end = self.due(front);
        self.queue.pop_front();
        if let Some(next) = self.queue.front() {
            let gap = next.at_us - end;
            if gap.abs() * self.rate as i64 > 1_000_000 {
                // Not contiguous: the next piece starts on its own time.
                self.running = false;
            }
        }
    }
}

#[cfg(test)]
mod tests;
