//! File ingest: decode → mono → resample → loudness-normalise → limit →
//! Opus, in two streaming passes (integrated loudness needs the whole
//! programme, so pass 1 measures and pass 2 encodes). Only chunks of PCM are
//! held; the output is the Opus packets.

use std::path::Path;

use crate::error::CodecError;
use crate::ingest::{FileSource, Limits};
use crate::limiter::Limiter;
use crate::loudness::{db_to_linear, normalising_gain_db, LoudnessMeter};
use crate::opus::{EncoderConfig, FrameEncoder, OpusFrameEncoder};
use crate::resample::StreamResampler;

/// How a file becomes a broadcast.
#[derive(Debug, Clone, Copy)]
pub struct IngestConfig {
    pub encoder: EncoderConfig,
    /// EBU R128 integrated loudness target.
    pub target_lufs: f64,
    /// True-peak ceiling.
    pub true_peak_dbtp: f64,
    /// Never amplify by more than this (a near-silent file stays quiet).
    pub max_gain_db: f64,
    pub limits: Limits,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            encoder: EncoderConfig::default(),
            target_lufs: -16.0,
            true_peak_dbtp: -1.0,
            max_gain_db: 40.0,
            limits: Limits::default(),
        }
    }
}

/// Where ingest is: pass 1 measures, pass 2 encodes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub pass: u8,
    pub done_s: f64,
    /// From the container; absent for some formats.
    pub total_s: Option<f64>,
}

/// What normalisation did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalisation {
    /// Integrated loudness of the source after resampling; None for silence.
    pub source_lufs: Option<f64>,
    pub gain_db: f64,
}

/// An encoded broadcast.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub frames: Vec<Vec<u8>>,
    pub sample_rate: u32,
    pub source_rate: u32,
    /// Duration of the source audio.
    pub duration_ms: u64,
    pub normalisation: Normalisation,
    /// Undecodable packets skipped (damaged files).
    pub skipped_packets: u64,
}

/// Facts about the decoded source.
#[derive(Debug, Clone, Copy)]
pub struct SourceInfo {
    pub source_rate: u32,
    pub source_frames: u64,
    /// Undecodable packets skipped.
    pub skipped_packets: u64,
}

/// Decodes, mixes down and resamples the file, handing each chunk to `each`.
fn resampled_pass(
    path: &Path,
    cfg: &IngestConfig,
    pass: u8,
    progress: &mut dyn FnMut(Progress),
    each: &mut dyn FnMut(&[f32]) -> Result<(), CodecError>,
) -> Result<SourceInfo, CodecError> {
    let mut src = FileSource::open(path, cfg.limits)?;
    let rate = src.sample_rate();
    let total_s = src.total_frames().map(|n| n as f64 / rate as f64);
    let mut resampler = StreamResampler::new(rate, cfg.encoder.sample_rate)?;
    let mut out = Vec::new();
    while let Some(chunk) = src.next_chunk()? {
        out.clear();
        resampler.push(&chunk, &mut out)?;
        each(&out)?;
        progress(Progress {
            pass,
            done_s: src.frames_read() as f64 / rate as f64,
            total_s,
        });
    }
    out.clear();
    resampler.finish(&mut out)?;
    each(&out)?;
    Ok(SourceInfo {
        source_rate: rate,
        source_frames: src.frames_read(),
        skipped_packets: src.skipped_packets(),
    })
}

/// Decodes `path`, normalises its loudness and hands the resulting PCM (at
/// the encoder's rate) to `out` chunk by chunk.
pub fn normalise_file(
    path: &Path,
    cfg: &IngestConfig,
    progress: &mut dyn FnMut(Progress),
    out: &mut dyn FnMut(&[f32]) -> Result<(), CodecError>,
) -> Result<(Normalisation, SourceInfo), CodecError> {
    cfg.encoder.check()?;
    let rate = cfg.encoder.sample_rate;
    let mut meter = LoudnessMeter::new(rate)?;
    resampled_pass(path, cfg, 1, progress, &mut |pcm| meter.add(pcm))?;
    let source_lufs = meter.integrated_lufs();
    let mut gain_db = normalising_gain_db(source_lufs, cfg.target_lufs, cfg.max_gain_db);
    // The limiter takes some loudness off a file that needed much gain:
    // measure what it leaves and make up for it once.
    let limited_lufs = limited_pass(path, cfg, gain_db, progress, &mut |_| Ok(()))?.0;
    if let Some(l) = limited_lufs {
        let shortfall = cfg.target_lufs - l;
        if shortfall > 0.2 {
            gain_db = (gain_db + shortfall.min(MAX_MAKEUP_DB)).min(cfg.max_gain_db);
        }
    }
    let (_, info) = limited_pass(path, cfg, gain_db, progress, out)?;
    Ok((
        Normalisation {
            source_lufs,
            gain_db,
        },
        info,
    ))
}

/// Most the loudness shortfall left by the limiter is made up for.
const MAX_MAKEUP_DB: f64 = 3.0;

/// Applies `gain_db` and the limiter to the resampled file, handing the
/// result to `out`; returns its integrated loudness.
fn limited_pass(
    path: &Path,
    cfg: &IngestConfig,
    gain_db: f64,
    progress: &mut dyn FnMut(Progress),
    out: &mut dyn FnMut(&[f32]) -> Result<(), CodecError>,
) -> Result<(Option<f64>, SourceInfo), CodecError> {
    let rate = cfg.encoder.sample_rate;
    let gain = db_to_linear(gain_db);
    // 1 dB of margin below the true-peak ceiling covers inter-sample peaks.
    let mut limiter = Limiter::new(rate, cfg.true_peak_dbtp - 1.0);
    let mut meter = LoudnessMeter::new(rate)?;
    let mut limited = Vec::new();
    let mut emit = |pcm: &[f32], meter: &mut LoudnessMeter| -> Result<(), CodecError> {
        meter.add(pcm)?;
        out(pcm)
    };
    let info = resampled_pass(path, cfg, 2, progress, &mut |pcm| {
        let gained: Vec<f32> = pcm.iter().map(|s| s * gain).collect();
        limited.clear();
        limiter.process(&gained, &mut limited);
        emit(&limited, &mut meter)
    })?;
    limited.clear();
    limiter.flush(&mut limited);
    emit(&limited, &mut meter)?;
    Ok((meter.integrated_lufs(), info))
}

/// Cuts PCM into 20 ms frames and encodes them.
pub struct FrameCutter<E: FrameEncoder> {
    encoder: E,
    pending: Vec<f32>,
    frames: Vec<Vec<u8>>,
}

impl<E: FrameEncoder> FrameCutter<E> {
    pub fn new(encoder: E) -> Self {
        FrameCutter {
            encoder,
            pending: Vec::new(),
            frames: Vec::new(),
        }
    }

    pub fn push(&mut self, pcm: &[f32]) -> Result<(), CodecError> {
        self.pending.extend_from_slice(pcm);
        let n = self.encoder.frame_samples();
        let whole = self.pending.len() / n * n;
        for frame in self.pending[..whole].chunks_exact(n) {
            self.frames.push(self.encoder.encode(frame)?);
        }
        self.pending.drain(..whole);
        Ok(())
    }

    /// Encodes the rest, padded with `tail_silence` samples and up to a
    /// whole frame, and returns every packet.
    pub fn finish(mut self, tail_silence: usize) -> Result<Vec<Vec<u8>>, CodecError> {
        let n = self.encoder.frame_samples();
        let mut rest = std::mem::take(&mut self.pending);
        rest.extend(std::iter::repeat_n(0.0, tail_silence));
        let padded = rest.len().div_ceil(n) * n;
        rest.resize(padded, 0.0);
        for frame in rest.chunks_exact(n) {
            self.frames.push(self.encoder.encode(frame)?);
        }
        Ok(self.frames)
    }
}

/// Encodes PCM at the encoder's rate into Opus packets (live input, tests).
pub fn encode_pcm(pcm: &[f32], config: EncoderConfig) -> Result<Vec<Vec<u8>>, CodecError> {
    let encoder = OpusFrameEncoder::new(config)?;
    let delay = encoder.delay_samples();
    let mut cutter = FrameCutter::new(encoder);
    cutter.push(pcm)?;
    cutter.finish(delay)
}

/// The whole ingest of an uploaded file: a broadcast's Opus packets.
pub fn ingest_file(
    path: &Path,
    cfg: &IngestConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<Encoded, CodecError> {
    let encoder = OpusFrameEncoder::new(cfg.encoder)?;
    let delay = encoder.delay_samples();
    let mut cutter = FrameCutter::new(encoder);
    let (normalisation, info) = normalise_file(path, cfg, progress, &mut |pcm| cutter.push(pcm))?;
    let frames = cutter.finish(delay)?;
    Ok(Encoded {
        frames,
        sample_rate: cfg.encoder.sample_rate,
        source_rate: info.source_rate,
        duration_ms: info.source_frames * 1000 / info.source_rate.max(1) as u64,
        normalisation,
        skipped_packets: info.skipped_packets,
    })
}
