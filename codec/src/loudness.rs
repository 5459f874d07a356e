//! EBU R128 loudness (integrated, gated) and true peak, with the ebur128 crate.

use ebur128::{EbuR128, Mode};

use crate::error::CodecError;

/// Below this the programme is treated as silence and never amplified.
const SILENCE_LUFS: f64 = -70.0;

pub struct LoudnessMeter(EbuR128);

impl std::fmt::Debug for LoudnessMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoudnessMeter")
    }
}

impl LoudnessMeter {
    pub fn new(sample_rate: u32) -> Result<Self, CodecError> {
        EbuR128::new(1, sample_rate, Mode::I | Mode::TRUE_PEAK)
            .map(LoudnessMeter)
            .map_err(|e| CodecError::Loudness(e.to_string()))
    }

    pub fn add(&mut self, mono: &[f32]) -> Result<(), CodecError> {
        self.0
            .add_frames_f32(mono)
            .map_err(|e| CodecError::Loudness(e.to_string()))
    }

    /// Integrated loudness in LUFS; None for silence.
    pub fn integrated_lufs(&self) -> Option<f64> {
        self.0
            .loudness_global()
            .ok()
            .filter(|l| l.is_finite() && *l > SILENCE_LUFS)
    }

    /// True peak in dBTP; None for digital silence.
    pub fn true_peak_dbtp(&self) -> Option<f64> {
        self.0
            .true_peak(0)
            .ok()
            .filter(|p| *p > 0.0)
            .map(|p| 20.0 * p.log10())
    }
}

/// The gain (dB) that brings `measured` to `target`, at most `max_gain_db`;
/// silence gets no gain.
pub fn normalising_gain_db(measured: Option<f64>, target: f64, max_gain_db: f64) -> f64 {
    measured.map_or(0.0, |m| (target - m).min(max_gain_db))
}

pub fn db_to_linear(db: f64) -> f32 {
    10f64.powf(db / 20.0) as f32
}
