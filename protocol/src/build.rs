//! Cutting encoded audio frames into signed segments of one broadcast.

use certs::encoding::DecodeError;
use certs::SecretKey;

use crate::header::SignedHeader;
use crate::ids::BroadcastId;
use crate::segment::Segment;

/// How many segments `frames` frames make at `frames_per_segment`.
pub fn segments_needed(frames: usize, frames_per_segment: u8) -> u32 {
    frames.div_ceil(frames_per_segment.max(1) as usize) as u32
}

/// Signs consecutive segments of one broadcast, keeping sequence numbers and
/// presentation times. Used for recorded audio (all at once) and live audio
/// (one segment as soon as its frames are captured).
#[derive(Debug)]
pub struct SegmentSigner<'k> {
    id: BroadcastId,
    digest: [u8; 32],
    key: &'k SecretKey,
    frame_us: i64,
    next_seq: u32,
    next_pts_us: i64,
}

impl<'k> SegmentSigner<'k> {
    /// `start_pts_us`: presentation time of the first frame, issuer's clock.
    pub fn new(header: &SignedHeader, key: &'k SecretKey, start_pts_us: i64) -> Self {
        SegmentSigner {
            id: header.id(),
            digest: *header.digest(),
            key,
            frame_us: header.header().audio.frame_ms as i64 * 1000,
            next_seq: 0,
            next_pts_us: start_pts_us,
        }
    }

    pub fn next_seq(&self) -> u32 {
        self.next_seq
    }

    pub fn sign(&mut self, frames: Vec<Vec<u8>>, last: bool) -> Result<Segment, DecodeError> {
        let n = frames.len() as i64;
        let seg = Segment::sign(
            self.id,
            self.next_seq,
            self.next_pts_us,
            last,
            frames,
            &self.digest,
            self.key,
        )?;
        self.next_seq += 1;
        self.next_pts_us += n * self.frame_us;
        Ok(seg)
    }

    /// Signs all of a recorded broadcast's frames, the final segment flagged.
    pub fn sign_all(
        &mut self,
        frames: Vec<Vec<u8>>,
        frames_per_segment: u8,
    ) -> Result<Vec<Segment>, DecodeError> {
        let per = frames_per_segment.max(1) as usize;
        let total = frames.len().div_ceil(per);
        let mut out = Vec::with_capacity(total);
        let mut it = frames.into_iter().peekable();
        while it.peek().is_some() {
            let chunk: Vec<Vec<u8>> = it.by_ref().take(per).collect();
            let last = it.peek().is_none();
            out.push(self.sign(chunk, last)?);
        }
        Ok(out)
    }
}
