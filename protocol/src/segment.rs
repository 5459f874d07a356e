//! Audio segments: a group of Opus frames with a sequence number and a
//! presentation time, each signed and bound to its broadcast's header.
//!
//! The signature covers SHA-256 of the header body followed by every byte of
//! the segment before the signature. The digest is not sent: the receiver
//! takes it from the header it verified, so a segment moved into another
//! broadcast, or to another position, no longer verifies.

use certs::encoding::{DecodeError, Reader, Writer};
use certs::{PublicKey, SecretKey, SignContext, Signature};

use crate::header::MAX_FRAMES_PER_SEGMENT;
use crate::ids::BroadcastId;

pub const SEGMENT_VERSION: u8 = 1;
/// RFC 6716: an Opus frame is at most 1275 bytes.
pub const MAX_OPUS_FRAME_BYTES: usize = 1275;
pub const MAX_SEGMENT_BYTES: usize =
    1 + 16 + 4 + 8 + 1 + 1 + MAX_FRAMES_PER_SEGMENT as usize * (2 + MAX_OPUS_FRAME_BYTES) + 64;
/// Bytes a segment adds around its frames: fields, 2 per frame, signature.
pub const SEGMENT_FIXED_OVERHEAD: usize = 1 + 16 + 4 + 8 + 1 + 1 + 64;

const FLAG_FINAL: u8 = 0x01;

/// A verified or freshly signed audio segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub id: BroadcastId,
    pub seq: u32,
    /// Presentation time of the first frame: unix microseconds, issuer's clock.
    pub pts_us: i64,
    /// The last segment of the broadcast.
    pub last: bool,
    pub frames: Vec<Vec<u8>>,
    signature: Signature,
    body: Vec<u8>,
}

impl Segment {
    fn encode_unsigned(
        id: BroadcastId,
        seq: u32,
        pts_us: i64,
        last: bool,
        frames: &[Vec<u8>],
    ) -> Writer {
        let mut w = Writer::with_capacity(
            SEGMENT_FIXED_OVERHEAD + frames.iter().map(|f| 2 + f.len()).sum::<usize>(),
        );
        w.u8(SEGMENT_VERSION)
            .u128(id.as_u128())
            .u32(seq)
            .i64(pts_us)
            .u8(if last { FLAG_FINAL } else { 0 })
            .u8(frames.len() as u8);
        for f in frames {
            w.bytes16(f);
        }
        w
    }

    /// Signs a segment of the broadcast whose header digest is `header_digest`.
    /// Frame count and sizes must be within the protocol limits.
    pub fn sign(
        id: BroadcastId,
        seq: u32,
        pts_us: i64,
        last: bool,
        frames: Vec<Vec<u8>>,
        header_digest: &[u8; 32],
        key: &SecretKey,
    ) -> Result<Self, DecodeError> {
        check_frames(&frames)?;
        let mut w = Self::encode_unsigned(id, seq, pts_us, last, &frames);
        let signature = key.sign(SignContext::Segment, &[header_digest, w.as_slice()]);
        w.raw(&signature);
        Ok(Segment {
            id,
            seq,
            pts_us,
            last,
            frames,
            signature,
            body: w.into_vec(),
        })
    }

    /// Sequence, presentation time, last flag and frame count, read from
    /// the fixed start of a segment's body without decoding (or checking)
    /// the rest: for a link that only needs to know how much audio it holds.
    pub fn peek(body: &[u8]) -> Result<(u32, i64, bool, u8), DecodeError> {
        let mut r = Reader::new(body);
        let version = r.u8("segment version")?;
        if version != SEGMENT_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        r.u128("segment id")?;
        let seq = r.u32("sequence")?;
        let pts_us = r.i64("presentation time")?;
        let flags = r.u8("flags")?;
        let n = r.u8("frame count")?;
        Ok((seq, pts_us, flags & FLAG_FINAL != 0, n))
    }

    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        if body.len() > MAX_SEGMENT_BYTES {
            return Err(DecodeError::TooLong {
                field: "segment",
                len: body.len(),
                max: MAX_SEGMENT_BYTES,
            });
        }
        let mut r = Reader::new(body);
        let version = r.u8("segment version")?;
        if version != SEGMENT_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let id = BroadcastId::from_u128(r.u128("segment id")?)?;
        let seq = r.u32("sequence")?;
        let pts_us = r.i64("presentation time")?;
        let flags = r.u8("flags")?;
        if flags & !FLAG_FINAL != 0 {
            return Err(DecodeError::invalid("flags", format!("{flags:#04x}")));
        }
        let n = r.u8("frame count")?;
        if n == 0 || n > MAX_FRAMES_PER_SEGMENT {
            return Err(DecodeError::invalid("frame count", n.to_string()));
        }
        let mut frames = Vec::with_capacity(n as usize);
        for _ in 0..n {
            frames.push(r.bytes16(MAX_OPUS_FRAME_BYTES, "opus frame")?.to_vec());
        }
        check_frames(&frames)?;
        let signature = r.array("segment signature")?;
        r.finish()?;
        Ok(Segment {
            id,
            seq,
            pts_us,
            last: flags & FLAG_FINAL != 0,
            frames,
            signature,
            body: body.to_vec(),
        })
    }

    /// The exact signed bytes.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// True when `key` signed this segment for the header with `header_digest`.
    pub fn signature_valid(&self, header_digest: &[u8; 32], key: &PublicKey) -> bool {
        let signed = &self.body[..self.body.len() - self.signature.len()];
        key.verify(
            SignContext::Segment,
            &[header_digest, signed],
            &self.signature,
        )
    }
}

fn check_frames(frames: &[Vec<u8>]) -> Result<(), DecodeError> {
    if frames.is_empty() || frames.len() > MAX_FRAMES_PER_SEGMENT as usize {
        return Err(DecodeError::invalid(
            "frame count",
            frames.len().to_string(),
        ));
    }
    if let Some(f) = frames
        .iter()
        .find(|f| f.is_empty() || f.len() > MAX_OPUS_FRAME_BYTES)
    {
        return Err(DecodeError::invalid(
            "opus frame",
            format!("{} bytes", f.len()),
        ));
    }
    Ok(())
}
