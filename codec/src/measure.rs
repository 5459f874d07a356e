//! Measuring audio against a reference: used by the tests that compare what
//! a sink played with what went in, and by the benchmarks.

/// Best normalised cross-correlation of `played` against `reference` over
/// lags 0..max_lag (`played` delayed). Returns (correlation, lag).
pub fn best_correlation(reference: &[f32], played: &[f32], max_lag: usize) -> (f64, usize) {
    let mut best = (0.0, 0);
    for lag in 0..max_lag.min(played.len()) {
        let n = reference.len().min(played.len() - lag);
        let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
        for i in 0..n {
            let (x, y) = (reference[i] as f64, played[i + lag] as f64);
            ab += x * y;
            aa += x * x;
            bb += y * y;
        }
        let c = ab / (aa.sqrt() * bb.sqrt()).max(1e-12);
        if c > best.0 {
            best = (c, lag);
        }
    }
    best
}

/// Signal-to-noise ratio of `test` against `reference`, in dB.
pub fn snr_db(reference: &[f32], test: &[f32]) -> f64 {
    let (mut s, mut e) = (0f64, 0f64);
    for (r, t) in reference.iter().zip(test) {
        s += (*r as f64).powi(2);
        e += (*r as f64 - *t as f64).powi(2);
    }
    10.0 * (s / e.max(1e-12)).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_delay_and_tells_noise_from_signal() {
        let a: Vec<f32> = (0..2000)
            .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let mut b = vec![0.0; 37];
        b.extend_from_slice(&a);
        let (c, lag) = best_correlation(&a, &b, 100);
        assert!(c > 0.999 && lag == 37);
        let noise: Vec<f32> = (0..2000)
            .map(|i| ((i * 104729) % 97) as f32 / 48.0 - 1.0)
            .collect();
        assert!(best_correlation(&a, &noise, 100).0 < 0.3);
        assert!(snr_db(&a, &a) > 100.0);
    }
}
