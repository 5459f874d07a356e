//! Where decoded audio goes: the loudspeaker (cpal, behind the `cpal`
//! feature), a WAV file, memory, or nowhere. One trait; a missing or failing
//! device is a reported error, never a panic.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SinkError {
    #[error("no audio output device: {0}")]
    DeviceUnavailable(String),
    #[error("audio device failed: {0}")]
    Device(String),
    #[error("cannot write {path}: {detail}")]
    File { path: String, detail: String },
    #[error("unknown sink {0:?} (speaker, wav:PATH, timeline:PATH, card:PPB:PATH with |PPB| ≤ 1000000, null)")]
    Unknown(String),
    #[error("this build has no loudspeaker support (build with the cpal feature)")]
    NoSpeakerSupport,
}

/// An audio output for mono f32 samples at a fixed rate.
pub trait Sink: Send {
    /// What it is, for status reports.
    fn describe(&self) -> String;
    fn sample_rate(&self) -> u32;
    /// Plays (or records) samples. Blocks at most briefly.
    fn write(&mut self, pcm: &[f32]) -> Result<(), SinkError>;
    /// Plays samples whose first one is due at `play_at_us` (unix µs on
    /// the issuer's clock). Only a recording sink cares when.
    fn write_at(&mut self, play_at_us: i64, pcm: &[f32]) -> Result<(), SinkError> {
        let _ = play_at_us;
        self.write(pcm)
    }
    /// For a sink that plays on its own clock (a sound card): how long
    /// until a sample written now is heard, µs. The player then writes a
    /// continuous stream aligned to the tree's clock (`align::Aligner`).
    /// None (files, memory, null): each chunk is written when it is due.
    fn delay_us(&self) -> Option<i64> {
        None
    }
    /// Plays out what is queued and releases the device or file.
    fn stop(&mut self) -> Result<(), SinkError>;
}

/// Discards audio but counts it, so a headless terminal still reports
/// what it played.
#[derive(Debug, Clone)]
pub struct NullSink {
    rate: u32,
    samples: u64,
}

impl NullSink {
    pub fn new(rate: u32) -> Self {
        NullSink { rate, samples: 0 }
    }

    pub fn samples(&self) -> u64 {
        self.samples
    }
}

impl Sink for NullSink {
    fn describe(&self) -> String {
        "null".into()
    }
    fn sample_rate(&self) -> u32 {
        self.rate
    }
    fn write(&mut self, pcm: &[f32]) -> Result<(), SinkError> {
        self.samples += pcm.len() as u64;
        Ok(())
    }
    fn stop(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Keeps everything in memory, shared with the test that inspects it.
#[derive(Debug, Clone)]
pub struct MemorySink {
    rate: u32,
    samples: Arc<Mutex<Vec<f32>>>,
}

impl MemorySink {
    pub fn new(rate: u32) -> Self {
        MemorySink {
            rate,
            samples: Arc::default(),
        }
    }

    /// A handle to the recorded samples.
    pub fn samples(&self) -> Arc<Mutex<Vec<f32>>> {
        self.samples.clone()
    }
}

impl Sink for MemorySink {
    fn describe(&self) -> String {
        "memory".into()
    }
    fn sample_rate(&self) -> u32 {
        self.rate
    }
    fn write(&mut self, pcm: &[f32]) -> Result<(), SinkError> {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(pcm);
        Ok(())
    }
    fn stop(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Writes 16-bit mono WAV. The header is finalised on `stop` (or drop).
pub struct WavSink {
    path: PathBuf,
    rate: u32,
    writer: Option<hound::WavWriter<BufWriter<File>>>,
}

impl std::fmt::Debug for WavSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WavSink({})", self.path.display())
    }
}

impl WavSink {
    pub fn create(path: &Path, rate: u32) -> Result<Self, SinkError> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let writer = hound::WavWriter::create(path, spec).map_err(|e| SinkError::File {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        Ok(WavSink {
            path: path.to_path_buf(),
            rate,
            writer: Some(writer),
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> SinkError {
        SinkError::File {
            path: self.path.display().to_string(),
            detail: e.to_string(),
        }
    }
}

/// f32 in [-1, 1] to i16, saturating.
pub fn to_i16(s: f32) -> i16 {
    (s.clamp(-1.0, 1.0) * i16::MAX as f32).round() as i16
}

/// `pcm` (mono) as a 16-bit WAV file in memory: a preview to listen to,
/// or speech to hand to the ingest.
pub fn wav_bytes(pcm: &[f32], sample_rate: u32) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut out = std::io::Cursor::new(Vec::with_capacity(44 + pcm.len() * 2));
    // Writing to memory fails only for a file over 4 GB (hound's limit).
    if let Ok(mut w) = hound::WavWriter::new(&mut out, spec) {
        for s in pcm {
            if w.write_sample(to_i16(*s)).is_err() {
                break;
            }
        }
        let _ = w.finalize();
    }
    out.into_inner()
}

impl Sink for WavSink {
    fn describe(&self) -> String {
        format!("wav:{}", self.path.display())
    }
    fn sample_rate(&self) -> u32 {
        self.rate
    }
    fn write(&mut self, pcm: &[f32]) -> Result<(), SinkError> {
        let Some(w) = self.writer.as_mut() else {
            return Err(self.err("already stopped"));
        };
        let mut failure = None;
        for s in pcm {
            if let Err(e) = w.write_sample(to_i16(*s)) {
                failure = Some(e);
                break;
            }
        }
        match failure {
            Some(e) => Err(self.err(e)),
            None => Ok(()),
        }
    }
    fn stop(&mut self) -> Result<(), SinkError> {
        match self.writer.take() {
            Some(w) => w.finalize().map_err(|e| self.err(e)),
            None => Ok(()),
        }
    }
}

impl Drop for WavSink {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            let _ = w.finalize();
        }
    }
}

/// Opens a sink from its configuration name: `speaker`, `wav:PATH`,
/// `timeline:PATH`, `card:PPB:PATH` (a modelled sound card running PPB
/// parts per billion fast, recording true times: tests and benchmarks) or
/// `null`.
pub fn open_sink(spec: &str, rate: u32) -> Result<Box<dyn Sink>, SinkError> {
    let file = |prefix: &str| spec.strip_prefix(prefix).filter(|p| !p.is_empty());
    match spec {
        "null" => Ok(Box::new(NullSink::new(rate))),
        "speaker" => open_speaker(rate),
        _ => {
            if let Some(path) = file("wav:") {
                Ok(Box::new(WavSink::create(Path::new(path), rate)?))
            } else if let Some(rest) = file("card:") {
                let (ppb, path) = rest
                    .split_once(':')
                    .and_then(|(p, path)| Some((p.parse::<i64>().ok()?, path)))
                    .filter(|(p, path)| p.abs() <= 1_000_000 && !path.is_empty())
                    .ok_or_else(|| SinkError::Unknown(spec.to_string()))?;
                Ok(Box::new(crate::card::CardSink::create(
                    Path::new(path),
                    rate,
                    ppb,
                )?))
            } else if let Some(path) = file("timeline:") {
                Ok(Box::new(crate::timeline::TimelineSink::create(
                    Path::new(path),
                    rate,
                )?))
            } else {
                Err(SinkError::Unknown(spec.to_string()))
            }
        }
    }
}

#[cfg(feature = "cpal")]
fn open_speaker(rate: u32) -> Result<Box<dyn Sink>, SinkError> {
    Ok(Box::new(crate::device::SpeakerSink::open_default(rate)?))
}

#[cfg(not(feature = "cpal"))]
fn open_speaker(_rate: u32) -> Result<Box<dyn Sink>, SinkError> {
    Err(SinkError::NoSpeakerSupport)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_sink_round_trips_and_factory_parses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.wav");
        let mut sink = open_sink(&format!("wav:{}", path.display()), 16_000).unwrap();
        sink.write(&[0.0, 0.5, -0.5, 2.0]).unwrap();
        sink.stop().unwrap();
        let mut r = hound::WavReader::open(&path).unwrap();
        let got: Vec<i16> = r.samples::<i16>().map(|s| s.unwrap()).collect();
        assert_eq!(got, vec![0, 16384, -16384, i16::MAX]);
        assert_eq!(r.spec().sample_rate, 16_000);
        assert!(matches!(
            open_sink("tape", 16_000),
            Err(SinkError::Unknown(_))
        ));
        assert!(matches!(
            open_sink("wav:", 16_000),
            Err(SinkError::Unknown(_))
        ));
        assert!(open_sink("wav:/nonexistent-dir/x.wav", 16_000).is_err());
        let mut n = NullSink::new(16_000);
        n.write(&[0.0; 320]).unwrap();
        assert_eq!(n.samples(), 320);
    }
}
