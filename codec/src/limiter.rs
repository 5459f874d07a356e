//! A look-ahead peak limiter: keeps normalised audio below the true-peak
//! ceiling without the distortion of clipping. The gain falls before a peak
//! arrives (the signal is delayed by the look-ahead) and recovers slowly.

use std::collections::VecDeque;

#[derive(Debug)]
pub struct Limiter {
    threshold: f32,
    lookahead: usize,
    attack: f32,
    release: f32,
    delay: VecDeque<f32>,
    required: VecDeque<f32>,
    gain: f32,
}

impl Limiter {
    /// `ceiling_dbfs` applies to sample peaks; leave ~1 dB of margin below a
    /// true-peak target for inter-sample peaks.
    pub fn new(sample_rate: u32, ceiling_dbfs: f64) -> Self {
        let lookahead = (sample_rate as usize * 5 / 1000).max(1); // 5 ms
        let release_samples = sample_rate as f32 * 0.03; // 30 ms
        Limiter {
            threshold: 10f64.powf(ceiling_dbfs / 20.0) as f32,
            lookahead,
            // Down smoothly within the look-ahead (a step in gain spreads
            // energy across the spectrum, which the codec turns into
            // overshoot): 99 % of the way in five time constants.
            attack: 1.0 - (-5.0 / lookahead as f32).exp(),
            release: 1.0 - (-1.0 / release_samples).exp(),
            delay: VecDeque::with_capacity(lookahead + 1),
            required: VecDeque::with_capacity(lookahead + 1),
            gain: 1.0,
        }
    }

    /// Processes samples; output lags input by the look-ahead.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        for &x in input {
            let peak = x.abs();
            let need = if peak > self.threshold {
                self.threshold / peak
            } else {
                1.0
            };
            self.delay.push_back(x);
            self.required.push_back(need);
            if self.delay.len() > self.lookahead {
                out.push(self.step());
            }
        }
    }

    fn step(&mut self) -> f32 {
        // The lowest gain any sample in the look-ahead window needs.
        let target = self.required.iter().copied().fold(1.0f32, f32::min);
        let rate = if target < self.gain {
            self.attack
        } else {
            self.release
        };
        self.gain += (target - self.gain) * rate;
        self.required.pop_front();
        let x = self.delay.pop_front().unwrap_or(0.0);
        (x * self.gain).clamp(-self.threshold, self.threshold)
    }

    /// Emits the samples still held for look-ahead.
    pub fn flush(&mut self, out: &mut Vec<f32>) {
        while !self.delay.is_empty() {
            out.push(self.step());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_stay_below_the_ceiling_and_quiet_audio_passes() {
        let mut l = Limiter::new(16_000, -2.0);
        let loud: Vec<f32> = (0..16_000).map(|i| 3.0 * (i as f32 * 0.05).sin()).collect();
        let mut out = Vec::new();
        l.process(&loud, &mut out);
        l.flush(&mut out);
        assert_eq!(out.len(), loud.len());
        let ceiling = 10f32.powf(-2.0 / 20.0);
        assert!(out.iter().all(|x| x.abs() <= ceiling + 1e-6));
        let mut l = Limiter::new(16_000, -2.0);
        let quiet: Vec<f32> = (0..1600).map(|i| 0.1 * (i as f32 * 0.05).sin()).collect();
        let mut out = Vec::new();
        l.process(&quiet, &mut out);
        l.flush(&mut out);
        assert_eq!(out, quiet, "below the ceiling nothing changes");
    }
}
