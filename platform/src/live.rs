//! Live voice (实时喊话): a broadcast whose audio exists only as it is
//! spoken. Its header (live, no segment count, the issuer's playout delay)
//! is signed when it opens; then every segment of one or two 20 ms frames
//! is signed the moment its frames exist and goes into the relay like any
//! other, so every tier forwards it as it arrives. It ends with a signed
//! end marker (a final segment); a source that vanishes is ended by
//! whoever holds it (`Drop` cannot sign, so the API ends it explicitly, and
//! terminals end a live broadcast whose source went silent for 5 s).
//!
//! Presentation times follow the tree's clock, not the source's: a segment
//! presents when it was complete, minus its length (when its first sample
//! was spoken); a source that stalls leaves a gap instead of falling behind,
//! and one that runs ahead of real time by more than a second has frames
//! dropped (and counted), so mouth-to-ear stays bounded.

use std::sync::Arc;

use bytes::Bytes;
use codec::{EncoderConfig, FrameEncoder, OpusFrameEncoder};
use protocol::{BroadcastId, Message, Segment};

use crate::relay::Relay;

/// Frames per live segment: 40 ms of audio, the latency signing adds.
pub const LIVE_FRAMES_PER_SEGMENT: u8 = 2;
/// Samples per 20 ms frame at 16 kHz.
pub const FRAME_SAMPLES: usize = 320;
const FRAME_US: i64 = 20_000;
/// A source further ahead of real time than this loses frames.
const MAX_AHEAD_US: i64 = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("the live broadcast has ended")]
    Ended,
    #[error("audio: {0}")]
    Audio(String),
    #[error("the relay refused a live segment: {0}")]
    Refused(String),
}

/// What a live broadcast carried, when it ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveSummary {
    pub segments: u32,
    pub frames: u64,
    /// Frames dropped because the source ran ahead of real time.
    pub dropped: u64,
    /// Times the source stalled and the timeline moved on.
    pub gaps: u32,
}

/// An open live broadcast: feed it 20 ms frames (PCM or Opus), then finish.
pub struct LiveBroadcast {
    relay: Arc<Relay>,
    id: BroadcastId,
    digest: [u8; 32],
    next_seq: u32,
    /// Presentation time the next segment continues from (None: anchor
    /// at the next one).
    next_pts_us: Option<i64>,
    pending: Vec<Vec<u8>>,
    encoder: OpusFrameEncoder,
    pcm: Vec<f32>,
    summary: LiveSummary,
    ended: bool,
}

impl LiveBroadcast {
    /// Takes over the live broadcast whose signed header `relay` has
    /// accepted (`header_digest` of header `id`). Times are the relay's
    /// tree clock.
    pub fn new(
        relay: Arc<Relay>,
        id: BroadcastId,
        header_digest: [u8; 32],
    ) -> Result<Self, LiveError> {
        let encoder = OpusFrameEncoder::new(EncoderConfig {
            expected_loss_pct: 10,
            ..EncoderConfig::default()
        })
        .map_err(|e| LiveError::Audio(e.to_string()))?;
        Ok(LiveBroadcast {
            relay,
            id,
            digest: header_digest,
            next_seq: 0,
            next_pts_us: None,
            pending: Vec::new(),
            encoder,
            pcm: Vec::with_capacity(FRAME_SAMPLES),
            summary: LiveSummary::default(),
            ended: false,
        })
    }

    pub fn id(&self) -> BroadcastId {
        self.id
    }

    pub fn summary(&self) -> LiveSummary {
        self.summary
    }

    /// Mono 16 kHz samples in [-1, 1], any count: each 20 ms is encoded.
    pub fn push_pcm(&mut self, samples: &[f32]) -> Result<(), LiveError> {
        for s in samples {
            self.pcm.push(if s.is_finite() {
                s.clamp(-1.0, 1.0)
            } else {
                0.0
            });
            if self.pcm.len() == FRAME_SAMPLES {
                let frame = self
                    .encoder
                    .encode(&self.pcm)
                    .map_err(|e| LiveError::Audio(e.to_string()))?;
                self.pcm.clear();
                self.push_opus(frame)?;
            }
        }
        Ok(())
    }

    /// One 20 ms Opus frame (16 kHz mono), as the client encoded it.
    pub fn push_opus(&mut self, frame: Vec<u8>) -> Result<(), LiveError> {
        if self.ended {
            return Err(LiveError::Ended);
        }
        if frame.is_empty() || frame.len() > protocol::segment::MAX_OPUS_FRAME_BYTES {
            return Err(LiveError::Audio(format!(
                "an Opus frame of {} bytes (1 to {})",
                frame.len(),
                protocol::segment::MAX_OPUS_FRAME_BYTES
            )));
        }
        self.pending.push(frame);
        if self.pending.len() >= LIVE_FRAMES_PER_SEGMENT as usize {
            self.sign_pending(false)?;
        }
        Ok(())
    }

    /// Signs the end marker: the final segment, with what is pending or
    /// one frame of silence. Idempotent.
    pub fn finish(&mut self) -> Result<LiveSummary, LiveError> {
        if self.ended {
            return Ok(self.summary);
        }
        if !self.pcm.is_empty() {
            self.pcm.resize(FRAME_SAMPLES, 0.0);
            let frame = self
                .encoder
                .encode(&self.pcm)
                .map_err(|e| LiveError::Audio(e.to_string()))?;
            self.pcm.clear();
            self.pending.push(frame);
        }
        if self.pending.is_empty() {
            let silence = self
                .encoder
                .encode(&[0.0; FRAME_SAMPLES])
                .map_err(|e| LiveError::Audio(e.to_string()))?;
            self.pending.push(silence);
        }
        self.sign_pending(true)?;
        self.ended = true;
        // Live audio need not survive a crash (no one can hear it again),
        // but its end goes to disk with the store's other writes.
        if let Err(e) = self.relay.flush() {
            tracing::warn!("flushing after a live broadcast: {e}");
        }
        Ok(self.summary)
    }

    fn sign_pending(&mut self, last: bool) -> Result<(), LiveError> {
        let frames = std::mem::take(&mut self.pending);
        let n = frames.len() as i64;
        let now = self.relay.clock.now();
        // When its first sample was spoken, if the source keeps real time.
        let natural = now - n * FRAME_US;
        let pts = match self.next_pts_us {
            // A stall: the timeline moves on, leaving a gap.
            Some(p) if p < natural - FRAME_US => {
                self.summary.gaps += 1;
                natural
            }
            // Too far ahead of real time: these frames are dropped.
            Some(p) if p > now + MAX_AHEAD_US && !last => {
                self.summary.dropped += n as u64;
                return Ok(());
            }
            Some(p) => p,
            None => natural,
        };
        let segment = Segment::sign(
            self.id,
            self.next_seq,
            pts,
            last,
            frames,
            &self.digest,
            &self.relay.identity.key,
        )
        .map_err(|e| LiveError::Audio(e.to_string()))?;
        self.next_seq += 1;
        self.next_pts_us = Some(pts + n * FRAME_US);
        self.summary.segments += 1;
        self.summary.frames += n as u64;
        self.relay
            .ingest_segment(
                Bytes::from(Message::Segment(segment).encode()),
                false,
                now / 1000,
            )
            .map_err(|e| LiveError::Refused(e.to_string()))
    }
}
