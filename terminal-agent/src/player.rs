//! Arbitration and playout: which broadcast the loudspeaker plays now, and
//! the audio of it. Emergency beats drill beats daily; then severity, then
//! the higher tier, then the newer. A higher-priority broadcast pre-empts at
//! once; what it pre-empted resumes (in step with its own timeline) if it is
//! still valid. Driven by `tick(now)`: no clock inside.

use std::collections::HashMap;

use certs::Tier;
use codec::{FrameDecoder, Join, OpusFrameDecoder, Playout, PlayoutConfig, Sink, Slot};
use protocol::{BroadcastClass, BroadcastHeader, BroadcastId, ReceiptKind, Segment, Severity};
use serde::Serialize;

/// What a terminal did with one broadcast (for status and the demo summary).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PlayRecord {
    pub title: String,
    /// Frames the header announced (recorded audio).
    pub total_frames: u64,
    pub frames_played: u64,
    pub frames_recovered: u64,
    pub frames_concealed: u64,
    /// Unix ms of the first sample given to the sink.
    pub first_sample_ms: Option<i64>,
    pub finished: bool,
    pub preempted: u32,
    pub cancelled: bool,
}

struct Entry {
    header: BroadcastHeader,
    tier: Tier,
    playout: Playout,
    started: bool,
}

/// Sort key: larger plays first.
fn rank(h: &BroadcastHeader, tier: Tier) -> (u8, u8, u8, i64) {
    let class = match h.class {
        BroadcastClass::Emergency => 3,
        BroadcastClass::Drill => 2,
        BroadcastClass::Daily => 1,
    };
    let severity = match h.severity {
        Severity::Unknown => 0,
        s => 5 - s.code(),
    };
    let tier = 5 - tier as u8;
    (class, severity, tier, h.issued_at_ms)
}

pub struct Player {
    entries: HashMap<BroadcastId, Entry>,
    current: Option<BroadcastId>,
    decoder: Option<OpusFrameDecoder>,
    sink: Box<dyn Sink>,
    pcm: Vec<f32>,
    config: PlayoutConfig,
    pub volume: u8,
    pub muted: bool,
    pub records: HashMap<BroadcastId, PlayRecord>,
    pub samples_played: u64,
    pub sink_faults: u64,
}

impl Player {
    pub fn new(sink: Box<dyn Sink>, config: PlayoutConfig) -> Self {
        Player {
            entries: HashMap::new(),
            current: None,
            decoder: None,
            sink,
            pcm: vec![0.0; 320],
            config,
            volume: 100,
            muted: false,
            records: HashMap::new(),
            samples_played: 0,
            sink_faults: 0,
        }
    }

    pub fn current(&self) -> Option<BroadcastId> {
        self.current
    }

    pub fn has(&self, id: BroadcastId) -> bool {
        self.entries.contains_key(&id)
    }

    /// A verified header with audio: it competes for the loudspeaker.
    pub fn add(&mut self, header: BroadcastHeader, signer_tier: Tier) {
        let id = header.id;
        let frames = header.audio.total_segments as u64 * header.audio.frames_per_segment as u64;
        self.records.entry(id).or_insert_with(|| PlayRecord {
            title: header.title.clone(),
            total_frames: frames,
            ..Default::default()
        });
        self.entries.entry(id).or_insert_with(|| Entry {
            header,
            tier: signer_tier,
            playout: Playout::new(self.config, Join::InStep),
            started: false,
        });
    }

    /// A verified segment.
    pub fn push(&mut self, segment: Segment, now_us: i64) {
        if let Some(e) = self.entries.get_mut(&segment.id) {
            e.playout
                .push_segment(segment.pts_us, segment.frames, segment.last, now_us);
        }
    }

    /// A valid cancel: stops it at once.
    pub fn cancel(&mut self, id: BroadcastId) -> bool {
        let had = self.entries.remove(&id).is_some();
        if let Some(r) = self.records.get_mut(&id) {
            r.cancelled = true;
        }
        if self.current == Some(id) {
            self.current = None;
        }
        had
    }

    /// Advances playout to `now_us`; returns the receipts to send.
    pub fn tick(&mut self, now_us: i64) -> Vec<(BroadcastId, ReceiptKind)> {
        let mut receipts = Vec::new();
        let now_ms = now_us / 1000;
        // Finished or expired broadcasts leave.
        let done: Vec<BroadcastId> = self
            .entries
            .iter()
            .filter(|(_, e)| e.playout.finished() || e.header.end_ms < now_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            if let Some(e) = self.entries.remove(&id) {
                if e.started {
                    receipts.push((id, ReceiptKind::Finished));
                    if let Some(r) = self.records.get_mut(&id) {
                        r.finished = e.playout.finished();
                    }
                }
            }
            if self.current == Some(id) {
                self.current = None;
            }
        }
        // The best broadcast that has begun.
        let best = self
            .entries
            .iter()
            .filter(|(_, e)| e.header.start_ms <= now_ms)
            .max_by_key(|(_, e)| rank(&e.header, e.tier))
            .map(|(id, _)| *id);
        if best != self.current {
            if let Some(old) = self.current.filter(|o| self.entries.contains_key(o)) {
                receipts.push((old, ReceiptKind::Preempted));
                if let Some(r) = self.records.get_mut(&old) {
                    r.preempted += 1;
                }
            }
            self.current = best;
            self.decoder = None;
            if let Some(id) = best {
                if let Some(e) = self.entries.get_mut(&id) {
                    receipts.push((
                        id,
                        if e.started {
                            ReceiptKind::Resumed
                        } else {
                            ReceiptKind::Started
                        },
                    ));
                    e.started = true;
                }
            }
        }
        let Some(id) = self.current else {
            return receipts;
        };
        let Some(entry) = self.entries.get_mut(&id) else {
            return receipts;
        };
        let rate = entry.header.audio.sample_rate;
        if self.decoder.is_none() {
            match OpusFrameDecoder::new(rate) {
                Ok(d) => {
                    self.pcm = vec![0.0; d.frame_samples()];
                    self.decoder = Some(d);
                }
                Err(_) => return receipts,
            }
        }
        let Some(decoder) = self.decoder.as_mut() else {
            return receipts;
        };
        let record = self.records.entry(id).or_default();
        let gain = if self.muted {
            0.0
        } else {
            self.volume as f32 / 100.0
        };
        while let Some(slot) = entry.playout.poll(now_us) {
            let result = match &slot {
                Slot::Packet(p) => {
                    record.frames_played += 1;
                    decoder.decode(p, &mut self.pcm)
                }
                Slot::Recover(next) => {
                    record.frames_recovered += 1;
                    decoder.recover(next, &mut self.pcm)
                }
                Slot::Conceal => {
                    record.frames_concealed += 1;
                    decoder.conceal(&mut self.pcm)
                }
                Slot::Silence => {
                    self.pcm.fill(0.0);
                    Ok(())
                }
            };
            if result.is_err() {
                self.pcm.fill(0.0);
            }
            if gain != 1.0 {
                self.pcm.iter_mut().for_each(|s| *s *= gain);
            }
            record.first_sample_ms.get_or_insert(now_ms);
            match self.sink.write(&self.pcm) {
                Ok(()) => self.samples_played += self.pcm.len() as u64,
                Err(_) => self.sink_faults += 1,
            }
        }
        receipts
    }

    pub fn stop(&mut self) {
        let _ = self.sink.stop();
    }
}
