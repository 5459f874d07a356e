//! Opus behind a small trait: opus-pure at run time (pure Rust, pinned), so
//! the reference check can put libopus behind the same interface.

use opus_pure::{Application, OpusDecoder, OpusEncoder, SoftClip, MAX_PACKET_BYTES};

use crate::error::CodecError;

/// Encoder settings of a broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderConfig {
    /// 16 000 (default) or 48 000.
    pub sample_rate: u32,
    /// 16–32 kbit/s.
    pub bitrate_bps: u32,
    /// Expected packet loss, percent: tunes in-band FEC.
    pub expected_loss_pct: u8,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        EncoderConfig {
            sample_rate: 16_000,
            bitrate_bps: 24_000,
            expected_loss_pct: 5,
        }
    }
}

impl EncoderConfig {
    pub fn check(&self) -> Result<(), CodecError> {
        if ![16_000, 48_000].contains(&self.sample_rate) {
            return Err(CodecError::Config(format!(
                "sample rate {} (16000 or 48000)",
                self.sample_rate
            )));
        }
        if !(16_000..=32_000).contains(&self.bitrate_bps) {
            return Err(CodecError::Config(format!(
                "bitrate {} (16000 to 32000)",
                self.bitrate_bps
            )));
        }
        if self.expected_loss_pct > 50 {
            return Err(CodecError::Config(format!(
                "expected loss {}% (0 to 50)",
                self.expected_loss_pct
            )));
        }
        Ok(())
    }

    /// Samples in one 20 ms frame.
    pub fn frame_samples(&self) -> usize {
        self.sample_rate as usize / 50
    }
}

/// Encodes 20 ms mono frames.
pub trait FrameEncoder: Send {
    fn frame_samples(&self) -> usize;
    /// Encodes exactly one frame of `frame_samples()` samples.
    fn encode(&mut self, pcm: &[f32]) -> Result<Vec<u8>, CodecError>;
}

/// Decodes 20 ms mono frames, with concealment and FEC recovery.
pub trait FrameDecoder: Send {
    fn frame_samples(&self) -> usize;
    /// Decodes one packet into `out` (length `frame_samples()`).
    fn decode(&mut self, packet: &[u8], out: &mut [f32]) -> Result<(), CodecError>;
    /// Conceals one lost frame.
    fn conceal(&mut self, out: &mut [f32]) -> Result<(), CodecError>;
    /// Recovers a lost frame from the in-band FEC of the packet after it.
    fn recover(&mut self, next_packet: &[u8], out: &mut [f32]) -> Result<(), CodecError>;
}

pub struct OpusFrameEncoder {
    inner: OpusEncoder,
    frame: usize,
    packet: Vec<u8>,
}

impl std::fmt::Debug for OpusFrameEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpusFrameEncoder({} samples)", self.frame)
    }
}

impl OpusFrameEncoder {
    /// Voice application, in-band FEC on, loss hint from the configuration.
    pub fn new(config: EncoderConfig) -> Result<Self, CodecError> {
        config.check()?;
        let mut inner = OpusEncoder::new(config.sample_rate as i32, 1, Application::Voip)?;
        inner.bitrate_bps = config.bitrate_bps as i32;
        inner.use_inband_fec = true;
        inner.packet_loss_perc = config.expected_loss_pct as i32;
        inner.complexity = 10;
        Ok(OpusFrameEncoder {
            inner,
            frame: config.frame_samples(),
            packet: vec![0; MAX_PACKET_BYTES],
        })
    }

    /// Samples of algorithmic delay: decoded audio lags input by this much.
    pub fn delay_samples(&self) -> usize {
        self.inner.lookahead()
    }
}

impl FrameEncoder for OpusFrameEncoder {
    fn frame_samples(&self) -> usize {
        self.frame
    }

    fn encode(&mut self, pcm: &[f32]) -> Result<Vec<u8>, CodecError> {
        if pcm.len() != self.frame {
            return Err(CodecError::Opus(format!(
                "frame of {} samples, expected {}",
                pcm.len(),
                self.frame
            )));
        }
        let n = self.inner.encode(pcm, self.frame, &mut self.packet)?;
        Ok(self.packet[..n].to_vec())
    }
}

pub struct OpusFrameDecoder {
    inner: OpusDecoder,
    clip: SoftClip,
    frame: usize,
}

impl std::fmt::Debug for OpusFrameDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpusFrameDecoder({} samples)", self.frame)
    }
}

impl OpusFrameDecoder {
    pub fn new(sample_rate: u32) -> Result<Self, CodecError> {
        Ok(OpusFrameDecoder {
            inner: OpusDecoder::new(sample_rate as i32, 1)?,
            clip: SoftClip::new(1),
            frame: sample_rate as usize / 50,
        })
    }

    /// Soft-clips into [-1, 1] and replaces anything non-finite, so a garbage
    /// packet can never drive the loudspeaker past full scale.
    fn finish(&mut self, n: usize, out: &mut [f32]) -> Result<(), CodecError> {
        if n != self.frame {
            out.fill(0.0);
            return Err(CodecError::Opus(format!(
                "decoded {n} samples, expected {}",
                self.frame
            )));
        }
        for s in out.iter_mut() {
            if !s.is_finite() {
                *s = 0.0;
            }
        }
        self.clip.apply(out);
        for s in out.iter_mut() {
            *s = s.clamp(-1.0, 1.0);
        }
        Ok(())
    }
}

impl FrameDecoder for OpusFrameDecoder {
    fn frame_samples(&self) -> usize {
        self.frame
    }

    fn decode(&mut self, packet: &[u8], out: &mut [f32]) -> Result<(), CodecError> {
        let n = match self.inner.decode(packet, self.frame, out) {
            Ok(n) => n,
            Err(e) => {
                out.fill(0.0);
                return Err(e.into());
            }
        };
        self.finish(n, out)
    }

    fn conceal(&mut self, out: &mut [f32]) -> Result<(), CodecError> {
        let n = self.inner.decode(&[], self.frame, out)?;
        self.finish(n, out)
    }

    fn recover(&mut self, next_packet: &[u8], out: &mut [f32]) -> Result<(), CodecError> {
        let n = self.inner.decode_fec(next_packet, self.frame, out)?;
        self.finish(n, out)
    }
}
