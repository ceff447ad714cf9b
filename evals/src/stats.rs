//! The statistics of a comparison. With 20-300 questions a few points between two soups is
//! usually noise; these functions say how much. Every method answers the same questions, so
//! the tests that matter are paired: an exact McNemar test on the questions two methods
//! disagree on (binary scores), a paired bootstrap of the per-question difference (F1, log-
//! likelihood), Holm's correction when one method is tested against several, and a power
//! calculation that says, before anything runs, whether a budget's question count can find a
//! 10-point difference at all. Per-method intervals: Wilson's for proportions (it never prints
//! [0, 0] for 0/20), a percentile bootstrap for continuous scores.

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
    let (low, high) = percentiles(&means, level);
    ConfidenceInterval {
        mean,
        low,
        high,
        level,
        resamples,
    }
}

/// The two-sided `level` percentile interval of sorted draws.
fn percentiles(sorted: &[f64], level: f64) -> (f64, f64) {
    let r = sorted.len();
    let alpha = (1.0 - level.clamp(0.0, 1.0)) / 2.0;
    let idx = |q: f64| ((q * (r - 1) as f64).round() as usize).min(r - 1);
    (sorted[idx(alpha)], sorted[idx(1.0 - alpha)])
}

/// The usual report: 95 %, 1000 resamples.
pub fn bootstrap_ci95(scores: &[f64], seed: u64) -> ConfidenceInterval {
    bootstrap_ci(scores, 0.95, 1000, seed)
}

/// The 95 % interval a score is reported with: Wilson's when every per-question value is 0 or
/// 1 (a proportion: 0/20 gives [0, 0.161], where a bootstrap gives [0, 0]), else the seeded
/// percentile bootstrap (partial credit such as F1). `resamples` is 0 for Wilson's.
pub fn score_interval95(values: &[f64], seed: u64) -> ConfidenceInterval {
    let n = values.len();
    if n > 0 && values.iter().all(|v| *v == 0.0 || *v == 1.0) {
        let right = values.iter().sum::<f64>();
        let (low, high) = wilson95(right, n as u64);
        return ConfidenceInterval {
            mean: right / n as f64,
            low,
            high,
            level: 0.95,
            resamples: 0,
        };
    }
    bootstrap_ci95(values, seed)
}

/// The normal quantile of a two-sided 95 % interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// Wilson's score interval of a proportion `successes / n` at normal quantile `z`. Unlike the
/// bootstrap or the Wald interval it is not degenerate at 0/n or n/n (0/20 gives [0, 0.161]),
/// which is where small evaluations live. `n == 0` gives NaNs.
pub fn wilson(successes: f64, n: u64, z: f64) -> (f64, f64) {
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let n = n as f64;
    let p = (successes / n).clamp(0.0, 1.0);
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denom;
    let half = z / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((center - half).max(0.0), (center + half).min(1.0))
}

/// Wilson's 95 % interval.
pub fn wilson95(successes: f64, n: u64) -> (f64, f64) {
    wilson(successes, n, Z95)
}

/// `ln C(n, k)` for every k in 0..=n, built by the product recurrence (no factorials, so
/// no overflow at thousands of questions).
fn ln_binomials(n: u64) -> Vec<f64> {
    let mut out = Vec::with_capacity(n as usize + 1);
    let mut acc = 0.0f64;
    out.push(acc);
    for i in 0..n {
        acc += ((n - i) as f64).ln() - ((i + 1) as f64).ln();
        out.push(acc);
    }
    out
}

/// The probability mass of Bin(n, p) at every k in 0..=n.
fn binomial_pmf(n: u64, p: f64) -> Vec<f64> {
    let lnc = ln_binomials(n);
    if p <= 0.0 || p >= 1.0 {
        let mut out = vec![0.0; n as usize + 1];
        out[if p <= 0.0 { 0 } else { n as usize }] = 1.0;
        return out;
    }
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    lnc.iter()
        .enumerate()
        .map(|(k, c)| (c + k as f64 * lp + (n as f64 - k as f64) * lq).exp())
        .collect()
}

/// The exact (binomial) McNemar test: `b` questions only the first method got right, `c` only
/// the second; under "no difference" each discordant question goes either way with
/// probability 1/2, so p = min(1, 2 P(X <= min(b, c))) for X ~ Bin(b + c, 1/2). No
/// discordant question gives p = 1: nothing tells the methods apart.
pub fn mcnemar_exact(b: u64, c: u64) -> f64 {
    let m = b + c;
    if m == 0 {
        return 1.0;
    }
    let pmf = binomial_pmf(m, 0.5);
    let tail: f64 = pmf[..=b.min(c) as usize].iter().sum();
    (2.0 * tail).min(1.0)
}

/// A paired comparison of two methods on the same questions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairedDiff {
    /// Mean over questions of (first − second).
    pub diff: f64,
    /// Percentile-bootstrap 95 % interval of `diff`.
    pub low: f64,
    pub high: f64,
    /// Two-sided p-value of "the mean difference is 0".
    pub p: f64,
    /// Questions paired.
    pub n: usize,
}

/// Paired bootstrap of the mean per-question difference `a[i] − b[i]` (same questions, same
/// order): question indices are resampled, so what the two methods share (a hard question is
/// hard for both) cancels. The interval is the percentile interval of the resampled means; the
/// p-value is that of the shifted bootstrap (the resampled differences re-centred on 0, the
/// null): the share of |mean* − diff| at least |diff|, counted as (k + 1) / (R + 1) so it is
/// never 0. Identical scores give diff 0 and p 1. `None` if the lengths differ or are 0.
pub fn paired_bootstrap(a: &[f64], b: &[f64], resamples: usize, seed: u64) -> Option<PairedDiff> {
    let n = a.len();
    if n == 0 || n != b.len() || resamples == 0 {
        return None;
    }
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let diff = d.iter().sum::<f64>() / n as f64;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| d[rng.gen_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    // Rounding: a difference this small is no difference (identical scores give exactly 0).
    let tol = 1e-12 * (1.0 + diff.abs());
    let extreme = means
        .iter()
        .filter(|m| (*m - diff).abs() >= diff.abs() - tol)
        .count();
    let p = ((extreme + 1) as f64 / (resamples + 1) as f64).min(1.0);
    means.sort_by(f64::total_cmp);
    let (low, high) = percentiles(&means, 0.95);
    Some(PairedDiff {
        diff,
        low,
        high,
        p,
        n,
    })
}

/// Holm–Bonferroni adjusted p-values of a family of tests, in the input's order: the k-th
/// smallest p is multiplied by (m − k + 1), made monotone and capped at 1. Reject where the
/// adjusted p is below alpha: the family-wise error stays at most alpha. NaN entries (no test)
/// stay NaN and do not count in m.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..p.len()).filter(|&i| !p[i].is_nan()).collect();
    order.sort_by(|&i, &j| p[i].total_cmp(&p[j]));
    let m = order.len();
    let mut out = vec![f64::NAN; p.len()];
    let mut running = 0.0f64;
    for (k, &i) in order.iter().enumerate() {
        running = running.max(((m - k) as f64 * p[i]).min(1.0));
        out[i] = running;
    }
    out
}

/// Mean and sample standard deviation (n − 1) of values over seeds; the sd is `None` with
/// fewer than two values, `None` overall with none.
pub fn mean_sd(values: &[f64]) -> Option<(f64, Option<f64>)> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let sd = (n > 1)
        .then(|| (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt());
    Some((mean, sd))
}

/// The largest k with 2 P(X <= k) <= alpha for X ~ Bin(m, 1/2): the exact McNemar test on m
/// discordant questions rejects when min(b, c) <= k. `None`: it cannot reject at all.
fn mcnemar_critical(m: u64, alpha: f64) -> Option<u64> {
    let pmf = binomial_pmf(m, 0.5);
    let mut tail = 0.0;
    let mut k = None;
    for (i, q) in pmf.iter().enumerate().take(m as usize / 2 + 1) {
        tail += q;
        if 2.0 * tail <= alpha + 1e-12 {
            k = Some(i as u64);
        } else {
            break;
        }
    }
    k
}

/// The power of the exact McNemar test at level `alpha` to find a paired difference of
/// `delta` (e.g. 0.10: one method right on 10 % more of the questions) on `n` questions when a
/// share `discordance` of them are answered differently by the two methods (right/wrong or
/// wrong/right). Exact: the number of discordant questions is Bin(n, discordance), and given
/// m of them the first method wins Bin(m, (discordance + delta) / (2 discordance)) of them.
/// Needs 0 < delta <= discordance <= 1; otherwise NaN. Above [`EXACT_POWER_MAX_N`] questions
/// (where the exact sum gets slow and the normal approximation is tight) it is Connor's
/// normal approximation.
pub fn mcnemar_power(n: u64, discordance: f64, delta: f64, alpha: f64) -> f64 {
    if !(delta > 0.0 && delta <= discordance && discordance <= 1.0) {
        return f64::NAN;
    }
    if n > EXACT_POWER_MAX_N {
        let za = normal_quantile(1.0 - alpha / 2.0);
        let spread = (discordance - delta * delta).max(1e-12).sqrt();
        return normal_cdf((delta * (n as f64).sqrt() - za * discordance.sqrt()) / spread);
    }
    let win = (discordance + delta) / (2.0 * discordance);
    let discordant = binomial_pmf(n, discordance);
    let mut power = 0.0;
    for (m, pm) in discordant.iter().enumerate() {
        if *pm < 1e-15 {
            continue;
        }
        let m = m as u64;
        let Some(k) = mcnemar_critical(m, alpha) else {
            continue;
        };
        let wins = binomial_pmf(m, win);
        // Reject when b <= k or b >= m - k.
        let reject: f64 = wins
            .iter()
            .enumerate()
            .filter(|(b, _)| (*b as u64) <= k || (*b as u64) >= m - k)
            .map(|(_, q)| q)
            .sum();
        power += pm * reject;
    }
    power.min(1.0)
}

/// The largest question count whose power is summed exactly.
pub const EXACT_POWER_MAX_N: u64 = 3000;

/// The standard normal distribution function Φ(x) (Abramowitz and Stegun 7.1.26 for erf,
/// |error| < 1.5e-7).
pub fn normal_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-z * z).exp();
    if x >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

/// The normal quantile Φ⁻¹(q) (Acklam's rational approximation, |error| < 1.2e-9).
pub fn normal_quantile(q: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    if q <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if q >= 1.0 {
        return f64::INFINITY;
    }
    let tail = |t: f64| {
        let r = (-2.0 * t.ln()).sqrt();
        (((((C[0] * r + C[1]) * r + C[2]) * r + C[3]) * r + C[4]) * r + C[5])
            / ((((D[0] * r + D[1]) * r + D[2]) * r + D[3]) * r + 1.0)
    };
    if q < 0.02425 {
        tail(q)
    } else if q > 1.0 - 0.02425 {
        -tail(1.0 - q)
    } else {
        let x = q - 0.5;
        let r = x * x;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * x
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// Connor's (1987) sample size for McNemar's test: the questions needed to find `delta` with
/// `power` at two-sided `alpha` when a share `discordance` of questions is discordant.
pub fn mcnemar_n_normal(discordance: f64, delta: f64, alpha: f64, power: f64) -> f64 {
    let za = normal_quantile(1.0 - alpha / 2.0);
    let zb = normal_quantile(power);
    let s = za * discordance.sqrt() + zb * (discordance - delta * delta).max(0.0).sqrt();
    s * s / (delta * delta)
}

/// The smallest number of questions at which the exact McNemar test reaches `power`
/// (`None` beyond 20 000 questions or for impossible inputs). The exact power saw-tooths
/// with n, so this is the first n that reaches it, searched upward from half of Connor's
/// normal approximation.
pub fn mcnemar_n_needed(discordance: f64, delta: f64, alpha: f64, power: f64) -> Option<u64> {
    let guess = mcnemar_n_normal(discordance, delta, alpha, power);
    if !guess.is_finite() {
        return None;
    }
    let start = ((guess * 0.5) as u64).max(1);
    (start..=20_000).find(|&n| mcnemar_power(n, discordance, delta, alpha) >= power)
}

/// What a comparison of `n` paired questions can find: the power calculation a report prints.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PowerNote {
    /// Questions each method answers (paired).
    pub n: u64,
    /// Assumed share of questions two methods answer differently.
    pub discordance: f64,
    /// The paired difference to find (0.10: ten points).
    pub delta: f64,
    pub alpha: f64,
    /// Exact McNemar power at `n`.
    pub power: f64,
    /// Questions needed for power `target`.
    pub n_needed: Option<u64>,
    pub target: f64,
}

impl PowerNote {
    /// The usual question: a 10-point paired difference, alpha 0.05, power 0.8.
    pub fn ten_points(n: u64, discordance: f64) -> PowerNote {
        let (delta, alpha, target) = (0.10, 0.05, 0.8);
        PowerNote {
            n,
            discordance,
            delta,
            alpha,
            power: mcnemar_power(n, discordance, delta, alpha),
            n_needed: mcnemar_n_needed(discordance, delta, alpha, target),
            target,
        }
    }

    /// Whether `n` questions are enough.
    pub fn sufficient(&self) -> bool {
        self.power >= self.target
    }

    /// One line for a report.
    pub fn sentence(&self) -> String {
        let needed = self
            .n_needed
            .map_or("more than 20000".to_string(), |n| n.to_string());
        let verdict = if self.sufficient() {
            "enough to find such a difference".to_string()
        } else {
            format!(
                "NOT enough: this budget cannot separate methods by {:.0} points; differences below are not evidence",
                100.0 * self.delta
            )
        };
        format!(
            "Power: with {} paired questions, the exact McNemar test at alpha {} finds a {:.0}-point difference with probability {:.2} (assuming {:.0} % of questions discordant); {} questions give power {}; {}.",
            self.n,
            self.alpha,
            100.0 * self.delta,
            self.power,
            100.0 * self.discordance,
            needed,
            self.target,
            verdict
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

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

    #[test]
    fn mcnemar_exact_matches_binomial_sums() {
        // b=10, c=2: 2 * (C(12,0) + C(12,1) + C(12,2)) / 2^12 = 2 * 79 / 4096.
        assert!(close(mcnemar_exact(10, 2), 158.0 / 4096.0, 1e-12));
        assert!(close(mcnemar_exact(2, 10), 158.0 / 4096.0, 1e-12));
        // 0 vs 5: 2 / 32.
        assert!(close(mcnemar_exact(0, 5), 0.0625, 1e-12));
        // 7 vs 13: 2 * sum_{k<=7} C(20,k) / 2^20 = 2 * 137980 / 1048576.
        assert!(close(mcnemar_exact(7, 13), 275_960.0 / 1_048_576.0, 1e-12));
        // Balanced and empty: no evidence.
        assert_eq!(mcnemar_exact(6, 6), 1.0);
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        // Large counts stay finite: 150 vs 100 discordant (p about 0.002).
        let p = mcnemar_exact(150, 100);
        assert!(p > 0.001 && p < 0.003, "{p}");
    }

    #[test]
    fn wilson_matches_textbook_bounds() {
        let (l, h) = wilson95(0.0, 20);
        assert_eq!(l, 0.0);
        assert!(close(h, 0.161, 5e-4), "{h}");
        let (l, h) = wilson95(10.0, 20);
        assert!(close(l, 0.299, 5e-4) && close(h, 0.701, 5e-4), "{l} {h}");
        // 20/20 mirrors 0/20.
        let (l, h) = wilson95(20.0, 20);
        assert!(close(l, 0.839, 5e-4) && h == 1.0, "{l} {h}");
        // Newcombe (1998) example: 81/263 -> [0.2553, 0.3662].
        let (l, h) = wilson95(81.0, 263);
        assert!(close(l, 0.2553, 5e-4) && close(h, 0.3662, 5e-4), "{l} {h}");
        assert!(wilson95(0.0, 0).0.is_nan());
        // Scores: Wilson for right/wrong values, the bootstrap for partial credit.
        let zero = score_interval95(&[0.0; 20], 1);
        assert_eq!((zero.mean, zero.low, zero.resamples), (0.0, 0.0, 0));
        assert!(close(zero.high, 0.161, 5e-4));
        let partial = score_interval95(&[0.5; 20], 1);
        assert_eq!(
            (partial.low, partial.high, partial.resamples),
            (0.5, 0.5, 1000)
        );
        assert!(score_interval95(&[], 1).mean.is_nan());
    }

    #[test]
    fn holm_adjusts_step_down_and_keeps_order() {
        // Sorted 0.01, 0.02, 0.03, 0.04 with m = 4: 0.04, 0.06, 0.06 (monotone), 0.06.
        let adj = holm(&[0.03, 0.01, 0.04, 0.02]);
        let want = [0.06, 0.04, 0.06, 0.06];
        for (a, w) in adj.iter().zip(want) {
            assert!(close(*a, w, 1e-12), "{adj:?}");
        }
        // Capped at 1; NaN stays out of the family.
        let adj = holm(&[0.5, f64::NAN, 0.4]);
        assert!(close(adj[0], 0.8, 1e-12) && adj[1].is_nan() && close(adj[2], 0.8, 1e-12));
        assert!(holm(&[]).is_empty());
    }

    #[test]
    fn paired_bootstrap_finds_a_known_shift_and_not_a_null() {
        // Same noisy questions, the first method 0.2 better on every one: the pairing removes
        // the question difficulty, so the interval is tight around 0.2 and p is tiny.
        let base: Vec<f64> = (0..50).map(|i| ((i * 37) % 50) as f64 / 100.0).collect();
        let better: Vec<f64> = base.iter().map(|x| x + 0.2).collect();
        let d = paired_bootstrap(&better, &base, 2000, 3).unwrap();
        assert!(close(d.diff, 0.2, 1e-12));
        assert!(close(d.low, 0.2, 1e-9) && close(d.high, 0.2, 1e-9), "{d:?}");
        assert!(d.p < 0.001, "{d:?}");
        // Differences +-0.1 alternating: mean 0, p large, interval straddles 0.
        let wiggle: Vec<f64> = base
            .iter()
            .enumerate()
            .map(|(i, x)| if i % 2 == 0 { x + 0.1 } else { x - 0.1 })
            .collect();
        let d = paired_bootstrap(&wiggle, &base, 2000, 3).unwrap();
        assert!(
            d.diff.abs() < 1e-12 && d.p > 0.5 && d.low < 0.0 && d.high > 0.0,
            "{d:?}"
        );
        // Identical: p = 1.
        assert_eq!(paired_bootstrap(&base, &base, 500, 1).unwrap().p, 1.0);
        // One question in 20 differs by 1: a weak signal, p well above 0.05.
        let mut one = base[..20].to_vec();
        one[0] += 1.0;
        let d = paired_bootstrap(&one, &base[..20], 2000, 5).unwrap();
        assert!(close(d.diff, 0.05, 1e-12) && d.p > 0.2, "{d:?}");
        assert!(paired_bootstrap(&base, &base[..3], 10, 1).is_none());
    }

    #[test]
    fn mean_sd_over_seeds() {
        let (m, sd) = mean_sd(&[0.2, 0.4, 0.6]).unwrap();
        assert!(close(m, 0.4, 1e-12) && close(sd.unwrap(), 0.2, 1e-12));
        assert_eq!(mean_sd(&[0.3]), Some((0.3, None)));
        assert_eq!(mean_sd(&[]), None);
    }

    #[test]
    fn power_grows_with_questions_and_matches_the_normal_approximation() {
        // 20 questions cannot find 10 points; 1000 can.
        // Reference values from the same exact sum written in Python with math.comb
        // (power at psi 0.3, delta 0.1: n=20 0.0457, n=100 0.3731, n=250 0.8031).
        assert!(close(mcnemar_power(100, 0.3, 0.1, 0.05), 0.3731, 1e-4));
        assert!(close(mcnemar_power(250, 0.3, 0.1, 0.05), 0.8031, 1e-4));
        let small = mcnemar_power(20, 0.3, 0.1, 0.05);
        let large = mcnemar_power(1000, 0.3, 0.1, 0.05);
        assert!(small < 0.2, "{small}");
        assert!(large > 0.99, "{large}");
        // Connor: psi 0.3, delta 0.1 -> (1.96 sqrt(.3) + 0.8416 sqrt(.29))^2 / .01 = 233.1.
        let n = mcnemar_n_normal(0.3, 0.1, 0.05, 0.8);
        assert!(close(n, 233.1, 0.5), "{n}");
        let exact = mcnemar_n_needed(0.3, 0.1, 0.05, 0.8).unwrap();
        assert!((200..=280).contains(&exact), "{exact}");
        assert!(mcnemar_power(exact, 0.3, 0.1, 0.05) >= 0.8);
        assert!(mcnemar_power(exact - 1, 0.3, 0.1, 0.05) < 0.8);
        // The exact test never rejects more than alpha under the null-ish limit of tiny delta.
        assert!(mcnemar_power(300, 0.3, 1e-9, 0.05) <= 0.05 + 1e-9);
        assert!(mcnemar_power(10, 0.05, 0.1, 0.05).is_nan());
        assert!(close(normal_quantile(0.975), Z95, 1e-8));
        assert!(close(normal_cdf(Z95), 0.975, 1e-6) && close(normal_cdf(-1.0), 0.158_655, 1e-6));
        // Past the exact range the normal approximation takes over, continuous with it.
        let exact = mcnemar_power(EXACT_POWER_MAX_N, 0.3, 0.03, 0.05);
        let normal = mcnemar_power(EXACT_POWER_MAX_N + 1, 0.3, 0.03, 0.05);
        assert!(close(exact, normal, 0.02), "{exact} {normal}");
        assert!(mcnemar_power(10_000_000, 0.3, 0.1, 0.05) > 0.999);
        let note = PowerNote::ten_points(20, 0.3);
        assert!(!note.sufficient());
        assert!(note.sentence().contains("cannot separate"));
        assert!(PowerNote::ten_points(400, 0.3).sufficient());
    }
}
