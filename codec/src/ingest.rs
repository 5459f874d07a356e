//! Decoding audio files (WAV PCM and μ-law, MP3, OGG Vorbis, FLAC) with
//! symphonia into mono chunks at the file's own rate, streamed: only one
//! decoded packet is held at a time, whatever the file's length.

use std::fs::File;
use std::path::Path;

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{Decoder, DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use crate::error::CodecError;

/// Limits on what an uploaded file may be.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_duration_s: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 200 * 1024 * 1024,
            max_duration_s: 2 * 3600,
        }
    }
}

/// Plausible input rates; anything else is a lying or broken header.
const RATES: std::ops::RangeInclusive<u32> = 4_000..=384_000;
const MAX_CHANNELS: usize = 32;
/// Consecutive undecodable packets before the file is declared corrupt.
const MAX_CONSECUTIVE_ERRORS: u32 = 64;

/// A file being decoded to mono.
pub struct FileSource {
    path: String,
    format: Box<dyn FormatReader>,
    decoder: Box<dyn Decoder>,
    track_id: u32,
    rate: u32,
    total_frames: Option<u64>,
    frames_read: u64,
    limits: Limits,
    consecutive_errors: u32,
    skipped_packets: u64,
    buffer: Option<SampleBuffer<f32>>,
    done: bool,
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileSource({}, {} Hz)", self.path, self.rate)
    }
}

impl FileSource {
    pub fn open(path: &Path, limits: Limits) -> Result<Self, CodecError> {
        let p = path.display().to_string();
        let io = |source| CodecError::Io {
            path: p.clone(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        if size == 0 {
            return Err(CodecError::Empty(p));
        }
        if size > limits.max_bytes {
            return Err(CodecError::FileTooLarge {
                path: p,
                size,
                limit: limits.max_bytes,
            });
        }
        let mss = MediaSourceStream::new(Box::new(file), Default::default());
        let mut hint = Hint::new();
        if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
            hint.with_extension(ext);
        }
        let probed = symphonia::default::get_probe()
            .format(
                &hint,
                mss,
                &FormatOptions::default(),
                &MetadataOptions::default(),
            )
            .map_err(|e| CodecError::UnsupportedFormat {
                path: p.clone(),
                detail: e.to_string(),
            })?;
        let format = probed.format;
        let track = format
            .tracks()
            .iter()
            .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
            .ok_or_else(|| CodecError::NoAudioTrack { path: p.clone() })?;
        let params = &track.codec_params;
        let implausible = |detail: String| CodecError::ImplausibleFormat {
            path: p.clone(),
            detail,
        };
        let rate = params
            .sample_rate
            .ok_or_else(|| implausible("no sample rate".into()))?;
        if !RATES.contains(&rate) {
            return Err(implausible(format!("sample rate {rate} Hz")));
        }
        if let Some(ch) = params.channels {
            if ch.count() == 0 || ch.count() > MAX_CHANNELS {
                return Err(implausible(format!("{} channels", ch.count())));
            }
        }
        let total_frames = params.n_frames;
        if let Some(n) = total_frames {
            if n / rate as u64 > limits.max_duration_s as u64 {
                return Err(CodecError::TooLong {
                    path: p,
                    limit_s: limits.max_duration_s,
                });
            }
        }
        let track_id = track.id;
        let decoder = symphonia::default::get_codecs()
            .make(params, &DecoderOptions::default())
            .map_err(|e| CodecError::UnsupportedFormat {
                path: p.clone(),
                detail: e.to_string(),
            })?;
        Ok(FileSource {
            path: p,
            format,
            decoder,
            track_id,
            rate,
            total_frames,
            frames_read: 0,
            limits,
            consecutive_errors: 0,
            skipped_packets: 0,
            buffer: None,
            done: false,
        })
    }

    pub fn sample_rate(&self) -> u32 {
        self.rate
    }

    /// Frames the container announces, for progress; may be absent or wrong.
    pub fn total_frames(&self) -> Option<u64> {
        self.total_frames
    }

    pub fn frames_read(&self) -> u64 {
        self.frames_read
    }

    /// Packets skipped because they could not be decoded.
    pub fn skipped_packets(&self) -> u64 {
        self.skipped_packets
    }

    fn corrupt(&self, detail: impl Into<String>) -> CodecError {
        CodecError::Corrupt {
            path: self.path.clone(),
            detail: detail.into(),
        }
    }

    /// The next decoded chunk, mixed down to mono; None at the end.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<f32>>, CodecError> {
        while !self.done {
            let packet = match self.format.next_packet() {
                Ok(p) => p,
                Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(SymError::ResetRequired) => break,
                Err(SymError::DecodeError(e)) => {
                    self.note_error(e)?;
                    continue;
                }
                Err(e) => return Err(self.corrupt(e.to_string())),
            };
            if packet.track_id() != self.track_id {
                continue;
            }
            let decoded = match self.decoder.decode(&packet) {
                Ok(d) => d,
                Err(SymError::DecodeError(e)) => {
                    self.note_error(e)?;
                    continue;
                }
                Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(self.corrupt(e.to_string())),
            };
            self.consecutive_errors = 0;
            let spec = *decoded.spec();
            if spec.rate != self.rate {
                return Err(self.corrupt(format!(
                    "sample rate changes from {} to {} Hz",
                    self.rate, spec.rate
                )));
            }
            let channels = spec.channels.count();
            if channels == 0 || channels > MAX_CHANNELS {
                return Err(self.corrupt(format!("{channels} channels")));
            }
            let frames = decoded.frames();
            if frames == 0 {
                continue;
            }
            let needed = decoded.capacity() as u64;
            let buf = match &mut self.buffer {
                Some(b) if b.capacity() >= needed as usize * channels => b,
                slot => slot.insert(SampleBuffer::<f32>::new(needed, spec)),
            };
            buf.copy_interleaved_ref(decoded);
            let samples = &buf.samples()[..frames * channels];
            let mono: Vec<f32> = if channels == 1 {
                samples.to_vec()
            } else {
                let scale = 1.0 / channels as f32;
                samples
                    .chunks_exact(channels)
                    .map(|c| c.iter().sum::<f32>() * scale)
                    .collect()
            };
            self.frames_read += frames as u64;
            if self.frames_read / self.rate as u64 > self.limits.max_duration_s as u64 {
                return Err(CodecError::TooLong {
                    path: self.path.clone(),
                    limit_s: self.limits.max_duration_s,
                });
            }
            return Ok(Some(mono));
        }
        self.done = true;
        if self.frames_read == 0 {
            return Err(CodecError::NoAudio {
                path: self.path.clone(),
            });
        }
        Ok(None)
    }

    fn note_error(&mut self, detail: &str) -> Result<(), CodecError> {
        self.skipped_packets += 1;
        self.consecutive_errors += 1;
        if self.consecutive_errors > MAX_CONSECUTIVE_ERRORS {
            return Err(self.corrupt(format!(
                "{MAX_CONSECUTIVE_ERRORS} undecodable packets in a row ({detail})"
            )));
        }
        Ok(())
    }
}
