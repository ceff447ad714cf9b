//! LoraHub (Huang et al., 2023): a gradient-free search for the weights of a linear merge on a
//! few examples of the target task, minimizing `loss(w) + λ · mean_i |w_i|` (LoraHub's
//! `default_l1_regularization`: 0.05 · Σ|w_i| / n) with weights bounded to [-1.5, 1.5] from 0.
//!
//! LoraHub's reference drives nevergrad's NGOpt (a meta-optimizer that picks CMA-ES-like
//! methods for small budgets); soup carries a small, seeded (μ/μ_w, λ)-CMA-ES ([`cma_es`],
//! following Hansen's tutorial, arXiv:1604.00772) so a search is reproducible. The caller
//! provides the loss as a closure (merge with `linear` at those weights, run the model on the
//! examples): this file knows nothing of models. [`lorahub_merge`] is LoraHub's own way of
//! combining adapters at given weights (w on both A and B), for callers that want its exact
//! parametrization rather than PEFT's `linear`.
//!
//! Bounds are kept by resampling candidates that fall outside (up to a limit, then clipping), so
//! no evaluation of the budget is spent outside the box and the loss is never asked for weights
//! the user excluded.

use super::linear::task_arithmetic;
use super::{as_slices, device_tensor, host, merged_meta, unit_pair};
use crate::error::{CoreError, Result};
use crate::lora::adapter::LoraAdapter;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

/// Settings of [`cma_es`].
#[derive(Debug, Clone, PartialEq)]
pub struct CmaConfig {
    /// Initial step size (standard deviation of the first generation).
    pub sigma0: f64,
    /// Maximum number of objective evaluations.
    pub budget: usize,
    pub seed: u64,
    /// Offspring per generation; default `4 + ⌊3 ln n⌋`.
    pub popsize: Option<usize>,
    /// Box constraints applied to every coordinate (lower, upper).
    pub bounds: Option<(f64, f64)>,
    /// Stop when the search distribution's largest standard deviation falls below this.
    pub tol_x: f64,
}

impl Default for CmaConfig {
    fn default() -> Self {
        CmaConfig {
            sigma0: 0.5,
            budget: 1000,
            seed: 0,
            popsize: None,
            bounds: None,
            tol_x: 1e-12,
        }
    }
}

/// The outcome of a search: the best point evaluated and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct CmaResult {
    pub best_x: Vec<f64>,
    pub best_f: f64,
    pub evaluations: usize,
    pub generations: usize,
    /// The best value after each generation, for a convergence plot.
    pub trace: Vec<f64>,
}

/// A standard normal draw (Box–Muller; rand 0.8 has no normal distribution without rand_distr).
fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = 1.0 - rng.gen::<f64>(); // (0, 1]
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Minimizes `f` from `x0` with CMA-ES within `cfg.budget` evaluations. A non-finite value ranks
/// last; an error from `f` stops the search and is returned.
pub fn cma_es(
    x0: &[f64],
    cfg: &CmaConfig,
    f: &mut dyn FnMut(&[f64]) -> Result<f64>,
) -> Result<CmaResult> {
    let n = x0.len();
    if n == 0 {
        return Err(CoreError::missing("CMA-ES", "at least one variable"));
    }
    if !(cfg.sigma0 > 0.0 && cfg.sigma0.is_finite()) {
        return Err(CoreError::bad_setting(
            "CMA-ES step size",
            cfg.sigma0,
            "it must be positive",
        ));
    }
    if let Some((lo, hi)) = cfg.bounds {
        if lo.partial_cmp(&hi) != Some(std::cmp::Ordering::Less) {
            return Err(CoreError::bad_setting(
                "CMA-ES bounds",
                format!("[{lo}, {hi}]"),
                "the interval is empty: the lower bound must be below the upper",
            ));
        }
    }
    let clip = |x: f64| match cfg.bounds {
        Some((lo, hi)) => x.clamp(lo, hi),
        None => x,
    };
    let nf = n as f64;
    let lambda = cfg
        .popsize
        .unwrap_or(4 + (3.0 * nf.ln()).floor() as usize)
        .max(2);
    let mu = lambda / 2;
    let raw: Vec<f64> = (0..mu)
        .map(|i| ((lambda as f64 + 1.0) / 2.0).ln() - ((i + 1) as f64).ln())
        .collect();
    let total: f64 = raw.iter().sum();
    let w: Vec<f64> = raw.iter().map(|x| x / total).collect();
    let mu_eff = 1.0 / w.iter().map(|x| x * x).sum::<f64>();
    let cc = (4.0 + mu_eff / nf) / (nf + 4.0 + 2.0 * mu_eff / nf);
    let cs = (mu_eff + 2.0) / (nf + mu_eff + 5.0);
    let c1 = 2.0 / ((nf + 1.3).powi(2) + mu_eff);
    let cmu = (1.0 - c1).min(2.0 * (mu_eff - 2.0 + 1.0 / mu_eff) / ((nf + 2.0).powi(2) + mu_eff));
    let damps = 1.0 + 2.0 * (((mu_eff - 1.0) / (nf + 1.0)).sqrt() - 1.0).max(0.0) + cs;
    let chi_n = nf.sqrt() * (1.0 - 1.0 / (4.0 * nf) + 1.0 / (21.0 * nf * nf));

    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
    let mut mean: Vec<f64> = x0.iter().map(|&x| clip(x)).collect();
    let mut sigma = cfg.sigma0;
    let mut cov = vec![0.0; n * n]; // C: (n, n) row-major
    for i in 0..n {
        cov[i * n + i] = 1.0;
    }
    let mut ps = vec![0.0; n];
    let mut pc = vec![0.0; n];
    let mut best_x = mean.clone();
    let mut best_f = f64::INFINITY;
    let mut evaluations = 0;
    let mut generations = 0;
    let mut trace = Vec::new();

    while evaluations < cfg.budget {
        // C = B diag(d²) Bᵀ; C is symmetric PSD so its SVD is its eigendecomposition.
        let eig = super::svd::svd(&cov, n, n);
        let d: Vec<f64> = eig.s.iter().map(|s| s.max(0.0).sqrt()).collect();
        let basis = &eig.v; // n columns of length n
        if sigma * d.iter().cloned().fold(0.0, f64::max) < cfg.tol_x {
            break;
        }
        // y = B D z ~ N(0, C), x = m + σ y
        let mut offspring: Vec<(f64, Vec<f64>, Vec<f64>)> = Vec::with_capacity(lambda);
        for _ in 0..lambda {
            if evaluations >= cfg.budget {
                break;
            }
            let mut y = vec![0.0; n];
            let mut x = vec![0.0; n];
            for attempt in 0..100 {
                y.iter_mut().for_each(|v| *v = 0.0);
                for (j, col) in basis.iter().enumerate() {
                    let zj = normal(&mut rng) * d[j];
                    for (yi, bij) in y.iter_mut().zip(col) {
                        *yi += bij * zj;
                    }
                }
                for i in 0..n {
                    x[i] = mean[i] + sigma * y[i];
                }
                let inside = x.iter().all(|&v| clip(v) == v);
                if inside {
                    break;
                }
                if attempt == 99 {
                    for i in 0..n {
                        x[i] = clip(x[i]);
                        y[i] = (x[i] - mean[i]) / sigma;
                    }
                }
            }
            let value = f(&x)?;
            evaluations += 1;
            let value = if value.is_finite() {
                value
            } else {
                f64::INFINITY
            };
            if value < best_f {
                best_f = value;
                best_x = x.clone();
            }
            offspring.push((value, x, y));
        }
        if offspring.len() < lambda {
            break; // the budget ended inside this generation: no update from a partial one
        }
        generations += 1;
        offspring.sort_by(|a, b| a.0.total_cmp(&b.0));
        trace.push(best_f);

        // Recombination: y_w = Σ w_i y_{i:λ}, m += σ y_w
        let mut yw = vec![0.0; n];
        for (wi, (_, _, y)) in w.iter().zip(&offspring) {
            for (a, b) in yw.iter_mut().zip(y) {
                *a += wi * b;
            }
        }
        for i in 0..n {
            mean[i] = clip(mean[i] + sigma * yw[i]);
        }
        // C^{-1/2} y_w = B D⁻¹ Bᵀ y_w
        let mut inv_sqrt_yw = vec![0.0; n];
        for (j, col) in basis.iter().enumerate() {
            let coef = dot(col, &yw) / d[j].max(1e-300);
            for (o, b) in inv_sqrt_yw.iter_mut().zip(col) {
                *o += coef * b;
            }
        }
        let k_s = (cs * (2.0 - cs) * mu_eff).sqrt();
        for i in 0..n {
            ps[i] = (1.0 - cs) * ps[i] + k_s * inv_sqrt_yw[i];
        }
        let ps_norm = dot(&ps, &ps).sqrt();
        let gen = generations as i32;
        let h_sigma =
            ps_norm / (1.0 - (1.0 - cs).powi(2 * gen)).sqrt() < (1.4 + 2.0 / (nf + 1.0)) * chi_n;
        let k_c = (cc * (2.0 - cc) * mu_eff).sqrt();
        for i in 0..n {
            pc[i] = (1.0 - cc) * pc[i] + if h_sigma { k_c * yw[i] } else { 0.0 };
        }
        let delta_h = if h_sigma { 0.0 } else { cc * (2.0 - cc) };
        for r in 0..n {
            for c in 0..n {
                let rank_mu: f64 = w
                    .iter()
                    .zip(&offspring)
                    .map(|(wi, (_, _, y))| wi * y[r] * y[c])
                    .sum();
                cov[r * n + c] = (1.0 - c1 - cmu + c1 * delta_h) * cov[r * n + c]
                    + c1 * pc[r] * pc[c]
                    + cmu * rank_mu;
            }
        }
        // keep C exactly symmetric
        for r in 0..n {
            for c in r + 1..n {
                let v = 0.5 * (cov[r * n + c] + cov[c * n + r]);
                cov[r * n + c] = v;
                cov[c * n + r] = v;
            }
        }
        sigma *= ((cs / damps) * (ps_norm / chi_n - 1.0)).exp();
        if !sigma.is_finite() {
            break;
        }
    }
    if !best_f.is_finite() {
        return Err(CoreError::SearchFailed { evaluations });
    }
    Ok(CmaResult {
        best_x,
        best_f,
        evaluations,
        generations,
        trace,
    })
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Settings of a LoraHub search; the defaults are LoraHub's (`max_inference_step` 40, weights in
/// [-1.5, 1.5] from 0, L1 coefficient 0.05 on the mean absolute weight).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraHubConfig {
    /// Loss evaluations (each one a merge and a pass over the examples).
    pub budget: usize,
    /// λ in `loss + λ · mean|w|`.
    pub l1: f64,
    /// Weights are searched in [-bound, bound].
    pub bound: f64,
    pub sigma0: f64,
    pub seed: u64,
}

impl Default for LoraHubConfig {
    fn default() -> Self {
        LoraHubConfig {
            budget: 40,
            l1: 0.05,
            bound: 1.5,
            sigma0: 0.5,
            seed: 0,
        }
    }
}

/// The weights LoraHub found, with their loss (without the penalty) and objective.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraHubResult {
    pub weights: Vec<f64>,
    pub loss: f64,
    pub objective: f64,
    pub evaluations: usize,
    /// Every evaluation in order: (weights, loss), for the dashboard and the logs.
    pub history: Vec<(Vec<f64>, f64)>,
}

/// LoraHub's penalty: `λ · Σ|w_i| / n`.
pub fn l1_penalty(weights: &[f64], l1: f64) -> f64 {
    if weights.is_empty() {
        return 0.0;
    }
    l1 * weights.iter().map(|w| w.abs()).sum::<f64>() / weights.len() as f64
}

/// Searches weights for `n_adapters` adapters minimizing `loss(w) + λ·mean|w|`, from w = 0.
/// `loss` merges at `w` and returns the model's loss on the examples.
pub fn lorahub_search(
    n_adapters: usize,
    cfg: &LoraHubConfig,
    loss: &mut dyn FnMut(&[f64]) -> Result<f64>,
) -> Result<LoraHubResult> {
    if cfg.budget == 0 {
        return Err(CoreError::missing(
            "LoraHub",
            "a budget of at least one evaluation",
        ));
    }
    if cfg.bound.is_nan() || cfg.bound <= 0.0 {
        return Err(CoreError::bad_setting(
            "LoraHub bound",
            cfg.bound,
            "it must be positive",
        ));
    }
    let mut history: Vec<(Vec<f64>, f64)> = Vec::new();
    let mut objective = |w: &[f64]| -> Result<f64> {
        let l = loss(w)?;
        history.push((w.to_vec(), l));
        Ok(l + l1_penalty(w, cfg.l1))
    };
    let cma = CmaConfig {
        sigma0: cfg.sigma0,
        budget: cfg.budget,
        seed: cfg.seed,
        popsize: None,
        bounds: Some((-cfg.bound, cfg.bound)),
        tol_x: 1e-12,
    };
    let res = cma_es(&vec![0.0; n_adapters], &cma, &mut objective)?;
    let loss_at_best = history
        .iter()
        .find(|(w, _)| *w == res.best_x)
        .map(|(_, l)| *l)
        .unwrap_or(f64::NAN);
    Ok(LoraHubResult {
        weights: res.best_x,
        loss: loss_at_best,
        objective: res.best_f,
        evaluations: res.evaluations,
        history,
    })
}

/// LoraHub's own merge (`lorahub/algorithm.py`): the state dicts are summed with the weights
/// applied to every tensor, `A = Σ w_i A_i`, `B = Σ w_i B_i`, under the first adapter's config
/// (its scale). Unlike PEFT's `linear` (√|w·s| on each side), one adapter at weight w gives
/// `w²·s·B A`. Ranks must be equal. The scale is folded into A, so the result has scale 1.
pub fn lorahub_merge(adapters: &[LoraAdapter], weights: &[f64]) -> Result<LoraAdapter> {
    let groups = super::participants(adapters, weights)?;
    let ranks: Vec<usize> = adapters.iter().map(super::config_rank).collect();
    if ranks.iter().any(|&r| r != ranks[0]) {
        return Err(CoreError::merge_precondition(
            "LoraHub",
            format!("it merges adapters of equal rank, got ranks {ranks:?}"),
        ));
    }
    let mut pairs = BTreeMap::new();
    for (&(layer, module), parts) in &groups {
        let (_, first, _) = parts[0];
        if let Some((_, p, _)) = parts.iter().find(|(_, p, _)| p.rank() != first.rank()) {
            return Err(CoreError::merge_precondition(
                "LoraHub",
                format!(
                    "layer {layer} {} has rank {} in one adapter and {} in another",
                    module.hf_name(),
                    p.rank(),
                    first.rank()
                ),
            ));
        }
        let scale = first.scale;
        let wa: Vec<f32> = parts.iter().map(|(_, _, w)| (w * scale) as f32).collect();
        let wb: Vec<f32> = parts.iter().map(|(_, _, w)| *w as f32).collect();
        let a_host = parts
            .iter()
            .map(|(_, p, _)| host(&p.a))
            .collect::<Result<Vec<_>>>()?;
        let b_host = parts
            .iter()
            .map(|(_, p, _)| host(&p.b))
            .collect::<Result<Vec<_>>>()?;
        // A: (r, in), B: (out, r)
        let a = task_arithmetic(&as_slices(&a_host), &wa);
        let b = task_arithmetic(&as_slices(&b_host), &wb);
        let device = first.a.device();
        let a = device_tensor(a, first.a.dims2()?, device)?;
        let b = device_tensor(b, first.b.dims2()?, device)?;
        pairs.insert((layer, module), unit_pair(a, b));
    }
    let names: Vec<&str> = adapters.iter().map(|a| a.name.as_str()).collect();
    Ok(LoraAdapter {
        name: format!("lorahub({})", names.join("+")),
        meta: merged_meta(adapters, ranks[0]),
        pairs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dist(a: &[f64], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f64>()
            .sqrt()
    }

    #[test]
    fn lorahub_merge_puts_the_weight_on_both_factors() {
        use crate::lora::adapter::Module;
        let dev = candle_core::Device::Cpu;
        let shapes = |_m: Module| (6, 5);
        let mk = |seed| {
            let mut a = LoraAdapter::init(
                "x",
                "t",
                &shapes,
                1,
                &[Module::Q],
                2,
                4.0,
                false,
                seed,
                &dev,
            )
            .unwrap();
            for p in a.pairs.values_mut() {
                p.b = candle_core::Tensor::randn(0f32, 1.0, (6, 2), &dev).unwrap();
            }
            a
        };
        let (x, y) = (mk(1), mk(2));
        let m = lorahub_merge(&[x.clone(), y.clone()], &[0.5, -1.2]).unwrap();
        let (px, py) = (x.get(0, Module::Q).unwrap(), y.get(0, Module::Q).unwrap());
        // (Σ w B)(Σ w A)·s
        let b = ((&px.b * 0.5).unwrap() + (&py.b * -1.2).unwrap()).unwrap();
        let a = ((&px.a * 0.5).unwrap() + (&py.a * -1.2).unwrap()).unwrap();
        let want = (b.matmul(&a).unwrap() * px.scale).unwrap();
        let got = m.get(0, Module::Q).unwrap().delta().unwrap();
        let diff = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn finds_the_centre_of_a_shifted_sphere() {
        let c = [0.5, -0.3, 0.8, -1.0, 0.2];
        let cfg = CmaConfig {
            budget: 2000,
            seed: 1,
            ..CmaConfig::default()
        };
        let res = cma_es(&[0.0; 5], &cfg, &mut |x| {
            Ok(x.iter().zip(&c).map(|(a, b)| (a - b).powi(2)).sum())
        })
        .unwrap();
        assert!(dist(&res.best_x, &c) < 1e-4, "{:?}", res.best_x);
        assert!(res.evaluations <= 2000);
    }

    #[test]
    fn adapts_to_an_ill_conditioned_rotated_ellipsoid() {
        // f = Σ 10^{3 i/(n-1)} (Rx − c)_i² with a rotation R mixing coordinates.
        let n = 4;
        let c = [0.3, -0.2, 0.1, 0.4];
        let rot = |x: &[f64]| -> Vec<f64> {
            vec![
                (x[0] + x[1]) / 2f64.sqrt(),
                (x[0] - x[1]) / 2f64.sqrt(),
                (x[2] + x[3]) / 2f64.sqrt(),
                (x[2] - x[3]) / 2f64.sqrt(),
            ]
        };
        let mut f = |x: &[f64]| -> Result<f64> {
            let y = rot(x);
            Ok((0..n)
                .map(|i| 10f64.powf(3.0 * i as f64 / (n - 1) as f64) * (y[i] - c[i]).powi(2))
                .sum())
        };
        let cfg = CmaConfig {
            budget: 4000,
            seed: 2,
            ..CmaConfig::default()
        };
        let res = cma_es(&[0.0; 4], &cfg, &mut f).unwrap();
        assert!(res.best_f < 1e-8, "f = {}", res.best_f);
    }

    #[test]
    fn lorahub_finds_the_soft_thresholded_minimum_of_a_quadratic() {
        // loss = Σ (w_i − c_i)², penalty λ·Σ|w_i|/n: per coordinate the minimum is c_i shrunk
        // towards 0 by λ/(2n), and exactly 0 when |c_i| <= λ/(2n).
        let c = [0.5, 0.05, -0.8];
        let l1 = 0.4;
        let shrink = l1 / (2.0 * 3.0);
        let want: Vec<f64> = c
            .iter()
            .map(|&ci: &f64| {
                if ci.abs() <= shrink {
                    0.0
                } else {
                    ci - shrink * ci.signum()
                }
            })
            .collect();
        let cfg = LoraHubConfig {
            budget: 800,
            l1,
            seed: 3,
            ..LoraHubConfig::default()
        };
        let res = lorahub_search(3, &cfg, &mut |w| {
            Ok(w.iter().zip(&c).map(|(a, b)| (a - b).powi(2)).sum())
        })
        .unwrap();
        assert!(
            dist(&res.weights, &want) < 1e-2,
            "{:?} vs {want:?}",
            res.weights
        );
        assert_eq!(res.history.len(), res.evaluations);
        let expect_loss: f64 = res
            .weights
            .iter()
            .zip(&c)
            .map(|(a, b)| (a - b).powi(2))
            .sum();
        assert!((res.loss - expect_loss).abs() < 1e-12);
        assert!((res.objective - expect_loss - l1_penalty(&res.weights, l1)).abs() < 1e-12);
    }

    #[test]
    fn stays_inside_the_bounds_and_the_budget() {
        let mut calls = 0;
        let cfg = LoraHubConfig {
            budget: 40,
            l1: 0.0,
            seed: 4,
            ..LoraHubConfig::default()
        };
        let res = lorahub_search(2, &cfg, &mut |w| {
            calls += 1;
            assert!(w.iter().all(|x| x.abs() <= 1.5), "{w:?}");
            Ok((w[0] - 3.0).powi(2) + (w[1] + 0.5).powi(2))
        })
        .unwrap();
        assert_eq!(calls, 40);
        assert_eq!(res.evaluations, 40);
        // The constrained minimum is at (1.5, -0.5); 40 evaluations get near it.
        assert!(
            res.weights[0] > 1.2 && (res.weights[1] + 0.5).abs() < 0.3,
            "{:?}",
            res.weights
        );
    }

    #[test]
    fn seeded_runs_repeat_and_errors_stop_the_search() {
        let f = |w: &[f64]| -> Result<f64> { Ok(w.iter().map(|x| (x - 0.3).powi(2)).sum()) };
        let cfg = LoraHubConfig::default();
        let a = lorahub_search(3, &cfg, &mut |w| f(w)).unwrap();
        let b = lorahub_search(3, &cfg, &mut |w| f(w)).unwrap();
        assert_eq!(a, b);
        let mut n = 0;
        let err = lorahub_search(3, &cfg, &mut |_| {
            n += 1;
            if n == 5 {
                Err(CoreError::Cancelled)
            } else {
                Ok(1.0)
            }
        });
        assert!(matches!(err, Err(CoreError::Cancelled)));
        // NaN losses rank last instead of poisoning the search.
        let res = cma_es(
            &[0.0],
            &CmaConfig {
                budget: 200,
                ..CmaConfig::default()
            },
            &mut |x| {
                Ok(if x[0] < 0.0 {
                    f64::NAN
                } else {
                    (x[0] - 0.2).powi(2)
                })
            },
        )
        .unwrap();
        assert!((res.best_x[0] - 0.2).abs() < 1e-3);
    }
}
