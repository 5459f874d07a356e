//! File ingest: decode → mono → resample → loudness-normalise → limit →
//! Opus, in two streaming passes (integrated loudness needs the whole
//! programme, so pass 1 measures and pass 2 encodes). Only chunks of PCM are
//! held; the output is the Opus packets.

use std::path::Path;

use crate::error::CodecError;
use crate::ingest::{FileSource, Limits};
use crate::limiter::Limiter;
use crate::loudness::{db_to_linear, normalising_gain_db, LoudnessMeter};
use crate::opus::{EncoderConfig, FrameDecoder, FrameEncoder, OpusFrameEncoder};
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
    normalise_adjusted(path, cfg, Adjust::default(), progress, out)
}

/// Corrections found by measuring what the codec made of a first attempt.
#[derive(Debug, Clone, Copy, Default)]
struct Adjust {
    /// Added to the normalising gain.
    gain_db: f64,
    /// Taken off the limiter's ceiling (the codec's overshoot).
    headroom_db: f64,
}

fn normalise_adjusted(
    path: &Path,
    cfg: &IngestConfig,
    adjust: Adjust,
    progress: &mut dyn FnMut(Progress),
    out: &mut dyn FnMut(&[f32]) -> Result<(), CodecError>,
) -> Result<(Normalisation, SourceInfo), CodecError> {
    cfg.encoder.check()?;
    let rate = cfg.encoder.sample_rate;
    let mut meter = LoudnessMeter::new(rate)?;
    resampled_pass(path, cfg, 1, progress, &mut |pcm| meter.add(pcm))?;
    let source_lufs = meter.integrated_lufs();
    if source_lufs.is_none() {
        // Silence is never amplified, nor adjusted.
        let (_, info) = limited_pass(path, cfg, 0.0, 0.0, progress, out)?;
        return Ok((
            Normalisation {
                source_lufs,
                gain_db: 0.0,
            },
            info,
        ));
    }
    let headroom = adjust.headroom_db;
    let mut gain_db = normalising_gain_db(source_lufs, cfg.target_lufs, cfg.max_gain_db);
    gain_db = (gain_db + adjust.gain_db).min(cfg.max_gain_db);
    // The limiter takes some loudness off a file that needed much gain:
    // measure what it leaves and make up for it once.
    let limited_lufs = limited_pass(path, cfg, gain_db, headroom, progress, &mut |_| Ok(()))?.0;
    if let Some(l) = limited_lufs {
        let shortfall = cfg.target_lufs + adjust.gain_db - l;
        if shortfall > 0.2 {
            gain_db = (gain_db + shortfall.min(MAX_MAKEUP_DB)).min(cfg.max_gain_db);
        }
    }
    let (_, info) = limited_pass(path, cfg, gain_db, headroom, progress, out)?;
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
    headroom_db: f64,
    progress: &mut dyn FnMut(Progress),
    out: &mut dyn FnMut(&[f32]) -> Result<(), CodecError>,
) -> Result<(Option<f64>, SourceInfo), CodecError> {
    let rate = cfg.encoder.sample_rate;
    let gain = db_to_linear(gain_db);
    // 1 dB of margin below the true-peak ceiling covers inter-sample peaks;
    // `headroom_db` more covers what the codec adds.
    let mut limiter = Limiter::new(rate, cfg.true_peak_dbtp - 1.0 - headroom_db);
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
    // What matters is what the terminal decodes: Opus moves loudness and
    // overshoots peaks, so the result is decoded and measured, and encoded
    // again with the gain and headroom corrected, until it is within
    // `LOUDNESS_TOLERANCE_LU` of the target and under the ceiling.
    let mut adjust = Adjust::default();
    let mut best: Option<(f64, Encoded)> = None;
    for attempt in 1..=MAX_ATTEMPTS {
        let encoder = OpusFrameEncoder::new(cfg.encoder)?;
        let delay = encoder.delay_samples();
        let mut cutter = FrameCutter::new(encoder);
        let (normalisation, info) =
            normalise_adjusted(path, cfg, adjust, progress, &mut |pcm| cutter.push(pcm))?;
        let frames = cutter.finish(delay)?;
        let encoded = Encoded {
            frames,
            sample_rate: cfg.encoder.sample_rate,
            source_rate: info.source_rate,
            duration_ms: info.source_frames * 1000 / info.source_rate.max(1) as u64,
            normalisation,
            skipped_packets: info.skipped_packets,
        };
        if normalisation.source_lufs.is_none() {
            return Ok(encoded);
        }
        let (Some(lufs), peak) = decoded_loudness(&encoded.frames, cfg.encoder.sample_rate)? else {
            return Ok(encoded);
        };
        let off = cfg.target_lufs - lufs;
        let over = peak.map_or(0.0, |p| p - cfg.true_peak_dbtp);
        if std::env::var_os("EBS_DEBUG_LOUDNESS").is_some() {
            eprintln!("ingest attempt {attempt}: {lufs:.2} LUFS, over {over:.2} dB, {adjust:?}");
        }
        // How far outside the target it is (0: on target, under the ceiling).
        let miss = (off.abs() - LOUDNESS_TOLERANCE_LU).max(0.0) + over.max(0.0);
        if miss == 0.0 {
            return Ok(encoded);
        }
        if best.as_ref().is_none_or(|(m, _)| miss < *m) {
            best = Some((miss, encoded));
        }
        // Loudness follows the gain; peaks follow the limiter's ceiling.
        adjust.gain_db += off;
        if over > 0.0 {
            adjust.headroom_db += over + 0.1;
        }
    }
    best.map(|(_, e)| e)
        .ok_or_else(|| CodecError::Loudness("no encoding attempt".into()))
}

/// How close to the target the decoded loudness lands.
pub const LOUDNESS_TOLERANCE_LU: f64 = 0.45;
/// Encodes at most this often.
const MAX_ATTEMPTS: u32 = 6;

/// Integrated loudness and true peak of Opus frames, decoded.
pub fn decoded_loudness(
    frames: &[Vec<u8>],
    rate: u32,
) -> Result<(Option<f64>, Option<f64>), CodecError> {
    let mut decoder = crate::OpusFrameDecoder::new(rate)?;
    let mut pcm = vec![0.0; decoder.frame_samples()];
    let mut meter = LoudnessMeter::new(rate)?;
    for f in frames {
        decoder.decode(f, &mut pcm)?;
        meter.add(&pcm)?;
    }
    Ok((meter.integrated_lufs(), meter.true_peak_dbtp()))
}
