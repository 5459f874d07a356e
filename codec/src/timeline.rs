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

    /// The audio on a grid of samples from `from_us` to `to_us` (each
    /// record placed at its time to the nearest sample; silence where
    /// nothing played).
    pub fn render(&self, from_us: i64, to_us: i64) -> Vec<f32> {
        let rate = self.rate as i64;
        let len = ((to_us - from_us).max(0) * rate / 1_000_000) as usize;
        let mut grid = vec![0f32; len];
        for (at, pcm) in &self.records {
            let first = ((at - from_us) as f64 * rate as f64 / 1e6).round() as i64;
            for (i, s) in pcm.iter().enumerate() {
                let k = first + i as i64;
                if (0..len as i64).contains(&k) {
                    grid[k as usize] = *s as f32 / 32768.0;
                }
            }
        }
        grid
    }

    /// How much later than `other` this timeline played the same audio,
    /// window by window (`window_us` long, every `step_us`, within
    /// `[from_us, to_us]`), searching ±`max_us`: µs per window whose audio
    /// correlates (windows of near silence are left out). The lag is
    /// refined between samples by a parabola through the peak.
    pub fn skew_against(
        &self,
        other: &Timeline,
        (from_us, to_us): (i64, i64),
        window_us: i64,
        step_us: i64,
        max_us: i64,
    ) -> Vec<f64> {
        let rate = self.rate as f64;
        let a = self.render(from_us - max_us, to_us + max_us);
        let b = other.render(from_us - max_us, to_us + max_us);
        let n = (window_us as f64 * rate / 1e6) as usize;
        let max_lag = (max_us as f64 * rate / 1e6) as i64;
        let mut out = Vec::new();
        let mut start = from_us;
        while start + window_us <= to_us {
            let b0 = ((start - from_us + max_us) as f64 * rate / 1e6) as i64;
            let w = &b[b0 as usize..(b0 as usize + n).min(b.len())];
            let energy: f64 = w.iter().map(|x| (*x as f64).powi(2)).sum();
            if w.len() == n && energy / n as f64 > 1e-5 {
                let corr = |lag: i64| -> f64 {
                    let a0 = b0 + lag;
                    if a0 < 0 || (a0 as usize + n) > a.len() {
                        return f64::MIN;
                    }
                    let x = &a[a0 as usize..a0 as usize + n];
                    let (mut ab, mut aa) = (0f64, 0f64);
                    for (p, q) in x.iter().zip(w) {
                        ab += *p as f64 * *q as f64;
                        aa += (*p as f64).powi(2);
                    }
                    ab / (aa * energy).sqrt().max(1e-12)
                };
                let (best, c) = (-max_lag..=max_lag)
                    .map(|l| (l, corr(l)))
                    .fold((0, f64::MIN), |acc, x| if x.1 > acc.1 { x } else { acc });
                if c > 0.5 {
                    let (l, r) = (corr(best - 1), corr(best + 1));
                    let denom = l - 2.0 * c + r;
                    let frac = if denom.abs() > 1e-12 && l > f64::MIN && r > f64::MIN {
                        (0.5 * (l - r) / denom).clamp(-0.5, 0.5)
                    } else {
                        0.0
                    };
                    out.push((best as f64 + frac) * 1e6 / rate);
                }
            }
            start += step_us;
        }
        out
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
    fn skew_is_found_between_samples() {
        // Noise-like audio in 5 ms records; the second copy 437 µs later.
        let mut x: u32 = 12345;
        let pcm: Vec<i16> = (0..32_000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                ((x >> 16) as i16) / 4
            })
            .collect();
        let at = |shift: i64| Timeline {
            rate: 16_000,
            records: pcm
                .chunks(80)
                .enumerate()
                .map(|(i, c)| (1_000_000 + shift + i as i64 * 5_000, c.to_vec()))
                .collect(),
        };
        for shift in [0, 437, -1_250] {
            let skew =
                at(shift).skew_against(&at(0), (1_100_000, 2_900_000), 200_000, 100_000, 5_000);
            assert!(skew.len() >= 15, "{}", skew.len());
            assert!(
                skew.iter().all(|s| (s - shift as f64).abs() < 40.0),
                "{shift}: {skew:?}"
            );
        }
    }

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
