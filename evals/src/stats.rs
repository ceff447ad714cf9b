//! Bootstrap confidence intervals for per-question scores: with 30-300 questions a one-point
//! accuracy difference between two soups is usually noise, and the interval says so.

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// A mean with its percentile-bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ConfidenceInterval {
    pub mean: f64,
    pub low: f64,
    pub high: f64,
    /// Coverage, e.g. 0.95.
    pub level: f64,
    pub resamples: usize,
}

/// Percentile bootstrap of the mean of `scores` at `level` (e.g. 0.95), `resamples` draws,
/// seeded so a report is reproducible. An empty input gives NaNs rather than a panic.
pub fn bootstrap_ci(scores: &[f64], level: f64, resamples: usize, seed: u64) -> ConfidenceInterval {
    let n = scores.len();
    if n == 0 || resamples == 0 {
        return ConfidenceInterval {
            mean: f64::NAN,
            low: f64::NAN,
            high: f64::NAN,
            level,
            resamples,
        };
    }
    let mean = scores.iter().sum::<f64>() / n as f64;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| scores[rng.gen_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let alpha = (1.0 - level.clamp(0.0, 1.0)) / 2.0;
    let idx = |q: f64| ((q * (resamples - 1) as f64).round() as usize).min(resamples - 1);
    ConfidenceInterval {
        mean,
        low: means[idx(alpha)],
        high: means[idx(1.0 - alpha)],
        level,
        resamples,
    }
}

/// The usual report: 95 %, 1000 resamples.
pub fn bootstrap_ci95(scores: &[f64], seed: u64) -> ConfidenceInterval {
    bootstrap_ci(scores, 0.95, 1000, seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_brackets_mean_and_is_seeded() {
        let s: Vec<f64> = (0..100).map(|i| f64::from(u8::from(i % 3 == 0))).collect();
        let a = bootstrap_ci95(&s, 7);
        let b = bootstrap_ci95(&s, 7);
        assert_eq!(a, b);
        assert!(a.low <= a.mean && a.mean <= a.high);
        assert!(a.low > 0.2 && a.high < 0.5, "{a:?}");
        let c = bootstrap_ci95(&[1.0; 10], 1);
        assert_eq!((c.low, c.high), (1.0, 1.0));
        assert!(bootstrap_ci95(&[], 1).mean.is_nan());
    }
}
