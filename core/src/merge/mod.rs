//! Fixed-weight merges of LoRA adapters, with the semantics of PEFT's
//! `LoraModel.add_weighted_adapter` (peft 0.21, `tuners/lora/model.py` + `utils/merge_utils.py`),
//! so that a soup merge and a PEFT merge of the same adapters give the same tensors; plus the
//! export of a CAT stack as one adapter ([`fold_cat`]), the ΔW of a stack for merging into the
//! base weights ([`merge_into_base`]) and LoraHub's weight search ([`lorahub`]).
//!
//! Three families, as in PEFT (`tests/fixtures/reference/MERGES.md` spells out the math):
//! - `cat` ([`cat`]): the factors are stacked, exact, any ranks.
//! - the factor family ([`MergeMethod::Factors`]): `linear`, `ties`, `dare_linear`, `dare_ties`,
//!   `magnitude_prune` combine the A's and the B's *separately*, with `√|w·s|` on each side and
//!   the sign on A; equal ranks required.
//! - the SVD family ([`MergeMethod::Svd`]): combine the full deltas `w·s·B A`, then keep the
//!   top `svd_rank` singular triplets (`svd`, `ties_svd`, `dare_linear_svd`, ...).
//!
//! Every merged adapter has rank `r` = alpha = the new rank, so scale 1: all scaling lives in the
//! tensors. One deliberate difference from PEFT: the merged adapter never uses rsLoRA (PEFT copies
//! `use_rslora` from the first adapter, which makes its merge `√r` times too strong).
//!
//! Tensors go to the host as f32 for the elementwise work (ranks are small: a 576×16 factor is
//! 9k numbers) and come back on the adapters' device.

pub mod cat;
pub mod dare;
pub mod kind;
pub mod linear;
pub mod lorahub;
pub mod magnitude;
pub mod svd;
pub mod ties;

#[cfg(test)]
mod tests;

pub use cat::{adapter_deltas, fold_cat, merge_into_base};
pub use kind::MergeKind;
pub use lorahub::{
    cma_es, lorahub_merge, lorahub_search, CmaConfig, CmaResult, LoraHubConfig, LoraHubResult,
};

use crate::error::{CoreError, Result};
use crate::lora::adapter::{LoraAdapter, LoraMeta, LoraPair, Module};
use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;

/// How TIES elects the sign of each entry (PEFT's `majority_sign_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MajoritySign {
    /// The sign of the sum of the (pruned, unweighted) values.
    #[default]
    Total,
    /// The sign held by more adapters.
    Frequency,
}

impl MajoritySign {
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim() {
            "total" => Ok(MajoritySign::Total),
            "frequency" => Ok(MajoritySign::Frequency),
            other => Err(CoreError::UnknownName {
                kind: "majority sign method",
                name: other.to_string(),
                expected: "total or frequency".into(),
            }),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MajoritySign::Total => "total",
            MajoritySign::Frequency => "frequency",
        }
    }
}

/// How a list of same-shaped tensors (one per adapter) and their weights become one tensor:
/// PEFT's `merge_utils` functions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Combine {
    /// Task arithmetic: `Σ w_i T_i`.
    Linear,
    /// Keep the `density` largest-magnitude entries of each tensor, then `Σ w_i P_i`.
    MagnitudePrune { density: f64 },
    /// Magnitude pruning, sign election, disjoint mean.
    Ties { density: f64, sign: MajoritySign },
    /// Random (Bernoulli(density)) pruning rescaled by `1/density`, then `Σ w_i D_i`. Seeded.
    DareLinear { density: f64, seed: u64 },
    /// DARE's pruning, then TIES's sign election and disjoint mean. Seeded.
    DareTies {
        density: f64,
        sign: MajoritySign,
        seed: u64,
    },
}

impl Combine {
    /// PEFT's name of the factor-family method (`ties`, `dare_linear`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Combine::Linear => "linear",
            Combine::MagnitudePrune { .. } => "magnitude_prune",
            Combine::Ties { .. } => "ties",
            Combine::DareLinear { .. } => "dare_linear",
            Combine::DareTies { .. } => "dare_ties",
        }
    }

    fn density(&self) -> Option<f64> {
        match *self {
            Combine::Linear => None,
            Combine::MagnitudePrune { density }
            | Combine::Ties { density, .. }
            | Combine::DareLinear { density, .. }
            | Combine::DareTies { density, .. } => Some(density),
        }
    }

    fn validate(&self) -> Result<()> {
        if let Some(d) = self.density() {
            if !d.is_finite() || d < 0.0 {
                return Err(CoreError::bad_setting(
                    format!("density for {}", self.name()),
                    d,
                    "it must be >= 0 (the fraction of entries kept; >= 1 keeps all)",
                ));
            }
            let dare = matches!(self, Combine::DareLinear { .. } | Combine::DareTies { .. });
            if dare && d == 0.0 {
                return Err(CoreError::bad_setting(
                    format!("density for {}", self.name()),
                    0,
                    "DARE rescales by 1/density; give a density in (0, 1]",
                ));
            }
        }
        Ok(())
    }

    /// Combines `tensors` (flattened, all the same length) with `weights`. `stream` seeds the
    /// random masks of DARE for this call (one mask per tensor, derived from the method's seed,
    /// `stream` and the tensor's index), so results do not depend on the order of calls.
    // tensors: k × (n,), weights: (k,) -> (n,)
    pub fn apply(&self, tensors: &[&[f32]], weights: &[f32], stream: u64) -> Result<Vec<f32>> {
        self.validate()?;
        let n = tensors.first().map(|t| t.len()).unwrap_or(0);
        if tensors.len() != weights.len() || tensors.iter().any(|t| t.len() != n) {
            return Err(CoreError::merge_precondition(
                self.name(),
                format!(
                    "{} tensors of sizes {:?} with {} weights: shapes must agree",
                    tensors.len(),
                    tensors.iter().map(|t| t.len()).collect::<Vec<_>>(),
                    weights.len()
                ),
            ));
        }
        Ok(match *self {
            Combine::Linear => linear::task_arithmetic(tensors, weights),
            Combine::MagnitudePrune { density } => {
                let pruned: Vec<Vec<f32>> = tensors
                    .iter()
                    .map(|t| magnitude::prune_magnitude(t, density))
                    .collect();
                linear::task_arithmetic(&as_slices(&pruned), weights)
            }
            Combine::Ties { density, sign } => {
                let pruned: Vec<Vec<f32>> = tensors
                    .iter()
                    .map(|t| magnitude::prune_magnitude(t, density))
                    .collect();
                ties::elect_and_merge(&as_slices(&pruned), weights, sign)
            }
            Combine::DareLinear { density, seed } => {
                let pruned = dare::prune_all(tensors, density, seed, stream);
                linear::task_arithmetic(&as_slices(&pruned), weights)
            }
            Combine::DareTies {
                density,
                sign,
                seed,
            } => {
                let pruned = dare::prune_all(tensors, density, seed, stream);
                ties::elect_and_merge(&as_slices(&pruned), weights, sign)
            }
        })
    }
}

pub(crate) fn as_slices(v: &[Vec<f32>]) -> Vec<&[f32]> {
    v.iter().map(|x| x.as_slice()).collect()
}

/// A fixed-weight merge, as PEFT's `combination_type` and its options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MergeMethod {
    /// Stack the factors: rank Σ r_i, exact (`B A` = Σ w_i s_i B_i A_i).
    Cat,
    /// Combine A's and B's separately (`linear`, `ties`, `dare_*`, `magnitude_prune`).
    Factors(Combine),
    /// Combine the full deltas, then truncate their SVD to `rank` (default: the largest input
    /// rank). `clamp` is PEFT's `svd_clamp` quantile (None: no clamping, PEFT's default).
    Svd {
        combine: Combine,
        rank: Option<usize>,
        clamp: Option<f64>,
    },
}

/// The knobs of [`MergeMethod::from_name`], as the command line gives them.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeOptions {
    pub density: Option<f64>,
    pub majority_sign: MajoritySign,
    pub svd_rank: Option<usize>,
    pub svd_clamp: Option<f64>,
    /// Seed of DARE's random masks.
    pub seed: u64,
}

impl Default for MergeOptions {
    fn default() -> Self {
        MergeOptions {
            density: None,
            majority_sign: MajoritySign::Total,
            svd_rank: None,
            svd_clamp: None,
            seed: 0,
        }
    }
}

/// PEFT's `combination_type` names that [`MergeMethod::from_name`] accepts.
pub const METHOD_NAMES: [&str; 11] = [
    "cat",
    "linear",
    "svd",
    "ties",
    "ties_svd",
    "dare_linear",
    "dare_linear_svd",
    "dare_ties",
    "dare_ties_svd",
    "magnitude_prune",
    "magnitude_prune_svd",
];

impl MergeMethod {
    /// Builds a method from PEFT's `combination_type` name and the options that go with it.
    pub fn from_name(name: &str, opts: &MergeOptions) -> Result<Self> {
        let name = name.trim();
        let (base, is_svd) = match name.strip_suffix("_svd") {
            Some(b) => (b, true),
            None if name == "svd" => ("linear", true),
            None => (name, false),
        };
        let density = || {
            opts.density.ok_or_else(|| {
                CoreError::missing(
                    format!("merge method {name}"),
                    "a density (the fraction of entries kept, e.g. --density 0.5)",
                )
            })
        };
        let combine = match base {
            "cat" if !is_svd => return Ok(MergeMethod::Cat),
            "linear" => Combine::Linear,
            "magnitude_prune" => Combine::MagnitudePrune {
                density: density()?,
            },
            "ties" => Combine::Ties {
                density: density()?,
                sign: opts.majority_sign,
            },
            "dare_linear" => Combine::DareLinear {
                density: density()?,
                seed: opts.seed,
            },
            "dare_ties" => Combine::DareTies {
                density: density()?,
                sign: opts.majority_sign,
                seed: opts.seed,
            },
            _ => {
                return Err(CoreError::UnknownName {
                    kind: "merge method",
                    name: name.to_string(),
                    expected: format!("one of {}", METHOD_NAMES.join(", ")),
                })
            }
        };
        combine.validate()?;
        Ok(if is_svd {
            MergeMethod::Svd {
                combine,
                rank: opts.svd_rank,
                clamp: opts.svd_clamp,
            }
        } else {
            MergeMethod::Factors(combine)
        })
    }

    /// PEFT's `combination_type` name.
    pub fn name(&self) -> String {
        match self {
            MergeMethod::Cat => "cat".into(),
            MergeMethod::Factors(c) => c.name().into(),
            MergeMethod::Svd {
                combine: Combine::Linear,
                ..
            } => "svd".into(),
            MergeMethod::Svd { combine, .. } => format!("{}_svd", combine.name()),
        }
    }
}

/// An adapter's rank as PEFT's `_check_add_weighted_adapter` sees it: the config's `r`, or the
/// largest rank of any projection (`max(r, *rank_pattern.values())`).
pub fn config_rank(adapter: &LoraAdapter) -> usize {
    adapter
        .pairs
        .values()
        .map(|p| p.rank())
        .max()
        .unwrap_or(0)
        .max(adapter.meta.rank)
}

/// One projection's inputs to a merge: (adapter index, its pair, its weight).
pub(crate) type Participants<'a> = Vec<(usize, &'a LoraPair, f64)>;

/// Groups the adapters' pairs by (layer, module): only the adapters that target a projection
/// take part in its merge (PEFT skips the others, weights and all). Checks that adapters agree
/// on each projection's shape.
pub(crate) fn participants<'a>(
    adapters: &'a [LoraAdapter],
    weights: &[f64],
) -> Result<BTreeMap<(usize, Module), Participants<'a>>> {
    if adapters.is_empty() {
        return Err(CoreError::missing("a merge", "at least one adapter"));
    }
    if weights.len() != adapters.len() {
        return Err(CoreError::merge_precondition(
            "merge",
            format!(
                "{} weights for {} adapters: give one weight per adapter",
                weights.len(),
                adapters.len()
            ),
        ));
    }
    if let Some(w) = weights.iter().find(|w| !w.is_finite()) {
        return Err(CoreError::NotFinite {
            what: "merge weight",
            value: *w,
        });
    }
    let mut out: BTreeMap<(usize, Module), Participants<'a>> = BTreeMap::new();
    for (i, (ad, &w)) in adapters.iter().zip(weights).enumerate() {
        for (&key, pair) in &ad.pairs {
            let (r, in_f) = pair.a.dims2()?;
            let (out_f, r2) = pair.b.dims2()?;
            if r != r2 {
                return Err(CoreError::adapter(
                    &ad.name,
                    format!(
                        "layer {} {}: A is {:?} but B is {:?}",
                        key.0,
                        key.1.hf_name(),
                        pair.a.dims(),
                        pair.b.dims()
                    ),
                ));
            }
            let entry = out.entry(key).or_default();
            if let Some(&(j, first, _)) = entry.first() {
                let in0 = first.a.dims()[1];
                let out0 = first.b.dims()[0];
                if in0 != in_f || out0 != out_f {
                    return Err(CoreError::adapter(
                        &ad.name,
                        format!(
                            "layer {} {} is ({out_f}, {in_f}) but in adapter {} it is ({out0}, {in0}): the adapters were made for different base models",
                            key.0,
                            key.1.hf_name(),
                            adapters[j].name
                        ),
                    ));
                }
            }
            entry.push((i, pair, w));
        }
    }
    Ok(out)
}

/// A tensor's values on the host as f32, flattened (row-major).
pub(crate) fn host(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// The inverse of [`host`].
pub(crate) fn device_tensor(v: Vec<f32>, shape: (usize, usize), device: &Device) -> Result<Tensor> {
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?.to_device(device)?)
}

/// The merged adapter's metadata as PEFT writes it: the first adapter's, with `r` and alpha set
/// to the new rank, targets the union (and no rsLoRA: see the module doc).
pub(crate) fn merged_meta(adapters: &[LoraAdapter], new_rank: usize) -> LoraMeta {
    let first = &adapters[0].meta;
    let mut targets: Vec<Module> = adapters
        .iter()
        .flat_map(|a| a.pairs.keys().map(|(_, m)| *m))
        .collect();
    targets.sort();
    targets.dedup();
    LoraMeta {
        base_model: first.base_model.clone(),
        rank: new_rank,
        alpha: new_rank as f64,
        use_rslora: false,
        dropout: first.dropout,
        targets,
    }
}

/// A merged pair with all scaling folded into its tensors: scale 1, alpha = its rank (so an
/// export writes a consistent `rank_pattern`/`alpha_pattern` when its rank differs).
pub(crate) fn unit_pair(a: Tensor, b: Tensor) -> LoraPair {
    let r = a.dims()[0];
    LoraPair {
        a,
        b,
        scale: 1.0,
        alpha: r as f64,
    }
}

fn merged_name(method: &MergeMethod, adapters: &[LoraAdapter]) -> String {
    let names: Vec<&str> = adapters.iter().map(|a| a.name.as_str()).collect();
    format!("{}({})", method.name(), names.join("+"))
}

/// Merges `adapters` with per-adapter `weights` (used as given: never normalized, may be
/// negative) the way PEFT's `add_weighted_adapter` does. The result is named
/// `method(a+b+...)`; rename it as needed.
pub fn merge(
    method: &MergeMethod,
    adapters: &[LoraAdapter],
    weights: &[f64],
) -> Result<LoraAdapter> {
    let groups = participants(adapters, weights)?;
    // PEFT: with a single adapter every combination becomes `linear`.
    let method = if adapters.len() == 1 {
        MergeMethod::Factors(Combine::Linear)
    } else {
        *method
    };
    let ranks: Vec<usize> = adapters.iter().map(config_rank).collect();
    let (new_rank, pairs) = match method {
        MergeMethod::Cat => {
            let new_rank: usize = ranks.iter().sum();
            (new_rank, cat::cat_pairs(&groups, new_rank)?)
        }
        MergeMethod::Factors(combine) => {
            combine.validate()?;
            if ranks.iter().any(|&r| r != ranks[0]) {
                let list: Vec<String> = adapters
                    .iter()
                    .zip(&ranks)
                    .map(|(a, r)| format!("{}: r={r}", a.name))
                    .collect();
                return Err(CoreError::missing(
                    combine.name(),
                    format!(
                        "adapters of equal rank, got {}: use cat or svd for different ranks",
                        list.join(", ")
                    ),
                ));
            }
            (ranks[0], linear::factor_pairs(&combine, &groups)?)
        }
        MergeMethod::Svd {
            combine,
            rank,
            clamp,
        } => {
            combine.validate()?;
            let new_rank = rank.unwrap_or_else(|| ranks.iter().copied().max().unwrap_or(0));
            if new_rank == 0 {
                return Err(CoreError::bad_setting(
                    "svd rank",
                    0,
                    "it must be at least 1",
                ));
            }
            if let Some(q) = clamp {
                if !(0.0..=1.0).contains(&q) {
                    return Err(CoreError::bad_setting(
                        "svd clamp",
                        q,
                        "it is a quantile: it must lie in [0, 1]",
                    ));
                }
            }
            (
                new_rank,
                svd::svd_pairs(&combine, &groups, new_rank, clamp)?,
            )
        }
    };
    Ok(LoraAdapter {
        name: merged_name(&method, adapters),
        meta: merged_meta(adapters, new_rank),
        pairs,
    })
}
