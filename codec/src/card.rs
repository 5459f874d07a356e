//! A model of a sound card for tests and benchmarks: it consumes samples
//! at its own, slightly wrong rate from the moment it opens, plays
//! silence when it runs dry, and records the true time each sample leaves
//! it. [`CardModel`] is the sans-IO arithmetic; [`CardSink`] runs it on
//! the system clock and writes a [`crate::timeline`] file of true times.

use std::path::Path;

use crate::sink::{Sink, SinkError};
use crate::timeline::TimelineSink;

/// A card whose crystal runs `ppb` parts per billion fast, opened at
/// `opened_us` (true time).
#[derive(Debug, Clone)]
pub struct CardModel {
    rate: u32,
    ppb: i64,
    opened_us: i64,
    /// Index of the next free sample slot (slots leave one per period).
    next_slot: i64,
}

impl CardModel {
    pub fn new(rate: u32, ppb: i64, opened_us: i64) -> Self {
        CardModel {
            rate,
            ppb,
            opened_us,
            next_slot: 0,
        }
    }

    fn true_rate(&self) -> f64 {
        self.rate as f64 * (1.0 + self.ppb as f64 / 1e9)
    }

    /// The slot leaving at true time `t_us` (the first not yet played).
    fn slot_at(&self, t_us: i64) -> i64 {
        ((t_us - self.opened_us) as f64 * self.true_rate() / 1e6).ceil() as i64
    }

    /// True time the slot leaves.
    pub fn leaves_at(&self, slot: i64) -> i64 {
        self.opened_us + (slot as f64 * 1e6 / self.true_rate()).round() as i64
    }

    /// How long until a sample written at `now_us` is heard, as a driver
    /// reports it: the queued frames at the nominal rate.
    pub fn delay_us(&self, now_us: i64) -> i64 {
        let queued = (self.next_slot - self.slot_at(now_us)).max(0);
        queued * 1_000_000 / self.rate as i64
    }

    /// Queues `n` samples at `now_us`; returns the slot of the first (a
    /// card that ran dry has played silence meanwhile).
    pub fn write(&mut self, now_us: i64, n: usize) -> i64 {
        let first = self.next_slot.max(self.slot_at(now_us));
        self.next_slot = first + n as i64;
        first
    }
}

/// A modelled card on the system clock that records true leave times.
pub struct CardSink {
    model: CardModel,
    timeline: TimelineSink,
}

impl CardSink {
    pub fn create(path: &Path, rate: u32, ppb: i64) -> Result<Self, SinkError> {
        Ok(CardSink {
            model: CardModel::new(rate, ppb, now_us()),
            timeline: TimelineSink::create(path, rate)?,
        })
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

impl Sink for CardSink {
    fn describe(&self) -> String {
        format!(
            "card model ({} ppb): {}",
            self.model.ppb,
            self.timeline.describe()
        )
    }
    fn sample_rate(&self) -> u32 {
        self.model.rate
    }
    fn write(&mut self, pcm: &[f32]) -> Result<(), SinkError> {
        let slot = self.model.write(now_us(), pcm.len());
        self.timeline.write_at(self.model.leaves_at(slot), pcm)
    }
    fn delay_us(&self) -> Option<i64> {
        Some(self.model.delay_us(now_us()))
    }
    fn stop(&mut self) -> Result<(), SinkError> {
        self.timeline.stop()
    }
}
