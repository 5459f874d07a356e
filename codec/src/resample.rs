//! Streaming mono resampling with rubato's FFT resampler. The resampler's
//! own delay is trimmed, so output sample k corresponds to input time k/rate.

use rubato::{FftFixedIn, Resampler};

use crate::error::CodecError;

const CHUNK: usize = 1024;

pub struct StreamResampler {
    inner: Option<FftFixedIn<f32>>,
    pending: Vec<f32>,
    skip: usize,
    ratio: f64,
    total_in: u64,
    total_out: u64,
}

impl std::fmt::Debug for StreamResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StreamResampler(ratio {})", self.ratio)
    }
}

impl StreamResampler {
    pub fn new(in_rate: u32, out_rate: u32) -> Result<Self, CodecError> {
        let inner = if in_rate == out_rate {
            None
        } else {
            Some(
                FftFixedIn::<f32>::new(in_rate as usize, out_rate as usize, CHUNK, 2, 1)
                    .map_err(|e| CodecError::Resample(e.to_string()))?,
            )
        };
        let skip = inner.as_ref().map_or(0, |r| r.output_delay());
        Ok(StreamResampler {
            inner,
            pending: Vec::with_capacity(2 * CHUNK),
            skip,
            ratio: out_rate as f64 / in_rate as f64,
            total_in: 0,
            total_out: 0,
        })
    }

    /// Resamples `input`, appending what is ready to `out`.
    pub fn push(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<(), CodecError> {
        self.total_in += input.len() as u64;
        if self.inner.is_none() {
            self.total_out += input.len() as u64;
            out.extend_from_slice(input);
            return Ok(());
        }
        self.pending.extend_from_slice(input);
        self.drain_chunks(out, u64::MAX)
    }

    fn drain_chunks(&mut self, out: &mut Vec<f32>, limit: u64) -> Result<(), CodecError> {
        let Some(inner) = self.inner.as_mut() else {
            return Ok(());
        };
        while self.pending.len() >= CHUNK && self.total_out < limit {
            let res = inner
                .process(&[&self.pending[..CHUNK]], None)
                .map_err(|e| CodecError::Resample(e.to_string()))?;
            self.pending.drain(..CHUNK);
            let mut produced = &res[0][..];
            let skip = self.skip.min(produced.len());
            produced = &produced[skip..];
            self.skip -= skip;
            let room = (limit - self.total_out).min(produced.len() as u64) as usize;
            out.extend_from_slice(&produced[..room]);
            self.total_out += room as u64;
        }
        Ok(())
    }

    /// Flushes the tail: the output ends up exactly `input length × ratio` long.
    pub fn finish(&mut self, out: &mut Vec<f32>) -> Result<(), CodecError> {
        let expected = (self.total_in as f64 * self.ratio).round() as u64;
        if self.inner.is_none() {
            return Ok(());
        }
        while self.total_out < expected {
            let pad = CHUNK - self.pending.len() % CHUNK;
            self.pending.extend(std::iter::repeat_n(0.0, pad));
            self.drain_chunks(out, expected)?;
        }
        Ok(())
    }
}
