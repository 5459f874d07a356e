//! A recording sink that keeps when each sample played: a file of records
//! (play time, samples), each written through at once, so that a test can
//! rebuild a terminal's timeline after the process was killed (a torn last
//! record is ignored), find holes and replays, and compare what played with
//! what was issued, in step.
//!
//! Format: `EBSTL1\0\0`, the sample rate (u32 LE), then records of the play
//! time in unix µs (i64 LE), a sample count (u32 LE) and that many i16 LE.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::sink::{to_i16, Sink, SinkError};

const MAGIC: &[u8; 8] = b"EBSTL1\0\0";
/// A record longer than this is corrupt (a chunk is a frame or two).
const MAX_RECORD_SAMPLES: usize = 48_000 * 10;

pub struct TimelineSink {
    path: PathBuf,
    rate: u32,
    file: File,
    buf: Vec<u8>,
}

impl TimelineSink {
    /// Appends to `path` (a restarted terminal goes on in the same file).
    pub fn create(path: &Path, rate: u32) -> Result<Self, SinkError> {
        let err = |e: std::io::Error| SinkError::File {
            path: path.display().to_string(),
            detail: e.to_string(),
        };
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(err)?;
        if file.metadata().map_err(err)?.len() == 0 {
            let mut head = MAGIC.to_vec();
            head.extend_from_slice(&rate.to_le_bytes());
            file.write_all(&head).map_err(err)?;
        }
        Ok(TimelineSink {
            path: path.to_path_buf(),
            rate,
            file,
            buf: Vec::new(),
        })
    }
}

impl Sink for TimelineSink {
    fn describe(&self) -> String {
        format!("timeline:{}", self.path.display())
    }
    fn sample_rate(&self) -> u32 {
        self.rate
    }
    fn write(&mut self, pcm: &[f32]) -> Result<(), SinkError> {
        self.write_at(i64::MIN, pcm)
    }
    fn write_at(&mut self, play_at_us: i64, pcm: &[f32]) -> Result<(), SinkError> {
        self.buf.clear();
        self.buf.extend_from_slice(&play_at_us.to_le_bytes());
        self.buf
            .extend_from_slice(&(pcm.len() as u32).to_le_bytes());
        for s in pcm {
            self.buf.extend_from_slice(&to_i16(*s).to_le_bytes());
        }
        self.file.write_all(&self.buf).map_err(|e| SinkError::File {
            path: self.path.display().to_string(),
            detail: e.to_string(),
        })
    }
    fn stop(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// What a timeline file holds: its rate and the records in the order they
/// were written.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    pub rate: u32,
    pub records: Vec<(i64, Vec<i16>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    #[error("reading {0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0} is not a timeline file")]
    NotTimeline(String),
}

impl Timeline {
    /// Reads a timeline file; a torn last record (the writer was killed)
    /// ends it.
    pub fn read(path: &Path) -> Result<Timeline, TimelineError> {
        let bytes =
            std::fs::read(path).map_err(|e| TimelineError::Io(path.display().to_string(), e))?;
        Self::parse(&bytes).ok_or_else(|| TimelineError::NotTimeline(path.display().to_string()))
    }

    pub fn parse(bytes: &[u8]) -> Option<Timeline> {
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return None;
        }
        let rate = u32::from_le_bytes(bytes[8..12].try_into().ok()?);
        let mut records = Vec::new();
        let mut rest = &bytes[12..];
        while rest.len() >= 12 {
            let at = i64::from_le_bytes(rest[..8].try_into().ok()?);
            let n = u32::from_le_bytes(rest[8..12].try_into().ok()?) as usize;
            if n > MAX_RECORD_SAMPLES || rest.len() < 12 + 2 * n {
                break;
            }
            let pcm = rest[12..12 + 2 * n]
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect();
            records.push((at, pcm));
            rest = &rest[12 + 2 * n..];
        }
        Some(Timeline { rate, records })
    }

    /// One timeline of several files (a terminal restarted on a new one).
    pub fn join(parts: impl IntoIterator<Item = Timeline>) -> Timeline {
        let mut t = Timeline {
            rate: 16_000,
            records: Vec::new(),
        };
        for p in parts {
            t.rate = p.rate;
            t.records.extend(p.records);
        }
        t
    }

    /// Play time of the first sample and the end of the last (µs).
    pub fn extent(&self) -> Option<(i64, i64)> {
        let spans = self.spans();
        Some((spans.first()?.0, spans.iter().map(|s| s.1).max()?))
    }

    /// Samples played, in total.
    pub fn samples(&self) -> usize {
        self.records.iter().map(|(_, p)| p.len()).sum()
    }

    /// The records sorted by play time: (start µs, end µs) of each.
    pub fn spans(&self) -> Vec<(i64, i64)> {
        let mut v: Vec<(i64, i64)> = self
            .records
            .iter()
            .map(|(at, p)| (*at, at + p.len() as i64 * 1_000_000 / self.rate as i64))
            .collect();
        v.sort_unstable();
        v
    }

    /// Gaps of more than `tolerance_us` between consecutive spans within
    /// `[from_us, to_us]`: (start of the gap, its length µs).
    pub fn holes(&self, from_us: i64, to_us: i64, tolerance_us: i64) -> Vec<(i64, i64)> {
        let mut holes = Vec::new();
        let mut covered = from_us;
        for (start, end) in self.spans() {
            if end <= covered {
                continue;
            }
            if start > to_us {
                break;
            }
            if start - covered > tolerance_us {
                holes.push((covered, start - covered));
            }
            covered = covered.max(end);
        }
        if to_us - covered > tolerance_us {
            holes.push((covered, to_us - covered));
        }
        holes
    }

    /// Audio played twice: the total overlap between spans, µs.
    pub fn overlap_us(&self) -> i64 {
        let mut total = 0;
        let mut covered = i64::MIN;
        for (start, end) in self.spans() {
            if start < covered {
                total += covered.min(end) - start;
            }
            covered = covered.max(end);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeline_survives_a_torn_record_and_shows_holes_and_replays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.tl");
        let mut s = TimelineSink::create(&path, 1000).unwrap();
        s.write_at(0, &[0.5; 20]).unwrap(); // 0..20 ms
        s.write_at(20_000, &[0.5; 20]).unwrap(); // 20..40 ms
        drop(s);
        // A restarted writer appends; it replays 30..50 ms, then a hole.
        let mut s = TimelineSink::create(&path, 1000).unwrap();
        s.write_at(30_000, &[0.5; 20]).unwrap();
        s.write_at(100_000, &[0.5; 20]).unwrap();
        drop(s);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&7i64.to_le_bytes()); // torn
        let t = Timeline::parse(&bytes).unwrap();
        assert_eq!(t.records.len(), 4);
        assert_eq!(t.samples(), 80);
        assert_eq!(t.holes(0, 120_000, 1000), vec![(50_000, 50_000)]);
        assert_eq!(t.overlap_us(), 10_000);
        assert!(Timeline::parse(b"RIFF....").is_none());
    }
}
