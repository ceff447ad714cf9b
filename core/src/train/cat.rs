//! CAT (LoRA Soups): k frozen skill adapters, one learned weight per (adapter, layer, module).
//!
//! `softmax` is what the paper's code does: free logits per layer and module and a softmax over
//! adapters, so the weights of one slot sum to 1. `free` is the paper's equation:
//! unconstrained scalars.
//!
//! Where the weights start ([`CatInit`]): `uniform` (the default) is the plain concatenation,
//! logits at 0 (every weight 1/k) or free weights at 1, so training starts from a composition
//! that already works and moves away from it only where the data says so. `normal` adds
//! N(0, 1) noise to that start, which for `softmax` is the paper's code (logits ~ N(0, 1)).
//!
//! The coefficients are a few hundred scalars, so they get their own learning rate
//! ([`DEFAULT_CAT_LR`], about a hundred times a LoRA's) and a minimum number of optimizer
//! steps ([`DEFAULT_CAT_MIN_STEPS`]): Adam moves a parameter by about lr a step, and a 5 %
//! sample of a small set is only a dozen steps. [`CatMovement`] records whether a run moved.

use super::trainer::Trainable;
use crate::error::{CoreError, Result};
use crate::lora::{AdapterStack, LoraAdapter, StackWeights, ALL_MODULES};
use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The learning rate of the CAT coefficients unless told otherwise, chosen with the sweep of
/// `soup bench --only cat-lr` (README, "CAT's settings"): on two adapters that memorized
/// disjoint facts, 1e-3 and 3e-3 barely leave the start in 40 steps (mean |Δw| 0.01-0.03);
/// on data that needs both adapters (3:1) the held-out loss stops improving at 5e-2 (1e-1 is
/// no lower), so 5e-2 is the smallest rate that reaches the best held-out loss.
pub const DEFAULT_CAT_LR: f64 = 5e-2;
/// Optimizer steps a CAT run takes at least, repeating its sample as needed.
pub const DEFAULT_CAT_MIN_STEPS: usize = 40;
/// Passes over the CAT sample (more when [`DEFAULT_CAT_MIN_STEPS`] needs them).
pub const DEFAULT_CAT_EPOCHS: usize = 1;
/// Examples of each dataset, outside the CAT sample, that the held-out loss is measured on.
pub const DEFAULT_CAT_HELDOUT: usize = 32;
/// A run whose weights moved less than this on average (mean |Δw| over the slots an adapter
/// is present in) did not move: 0.01 is 2 % of a uniform weight of two adapters.
pub const MIN_MEAN_ABS_DELTA: f64 = 0.01;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CatParam {
    #[default]
    Softmax,
    Free,
}

impl CatParam {
    pub fn name(self) -> &'static str {
        match self {
            CatParam::Softmax => "softmax",
            CatParam::Free => "free",
        }
    }

    /// Every adapter's weight at the uniform start with `k` adapters: 1/k under the softmax
    /// (each slot's weights sum to 1), 1 for free weights. This is also the scale a merge
    /// must use to be compared with CAT at the same strength (`KIND@cat-scale` in a plan).
    pub fn start_weight(self, k: usize) -> f64 {
        match self {
            CatParam::Softmax => 1.0 / k.max(1) as f64,
            CatParam::Free => 1.0,
        }
    }
}

impl fmt::Display for CatParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for CatParam {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "softmax" => Ok(CatParam::Softmax),
            "free" => Ok(CatParam::Free),
            _ => Err(format!(
                "unknown CAT parametrization {s:?}: expected softmax or free"
            )),
        }
    }
}

/// Where the CAT weights start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CatInit {
    /// The plain concatenation: softmax logits 0 (weights 1/k), free weights 1.
    #[default]
    Uniform,
    /// The uniform start plus N(0, 1) noise from the seed (softmax: the paper's code).
    Normal,
}

impl CatInit {
    pub fn name(self) -> &'static str {
        match self {
            CatInit::Uniform => "uniform",
            CatInit::Normal => "normal",
        }
    }

    /// What a stored CAT spec written before the field existed ran with.
    pub fn legacy() -> CatInit {
        CatInit::Normal
    }
}

impl fmt::Display for CatInit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for CatInit {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "uniform" => Ok(CatInit::Uniform),
            "normal" => Ok(CatInit::Normal),
            _ => Err(format!(
                "unknown CAT initialization {s:?}: expected uniform (the plain concatenation) or normal (the paper's N(0, 1) logits)"
            )),
        }
    }
}

/// The trained parameters a CAT run starts from, flat (k, layers, [`ALL_MODULES`]): logits
/// under `softmax` (0, or N(0, 1) from `seed`), the weights themselves under `free` (1, plus
/// the same noise). One function for training and for reading a stored run's start back.
pub fn start_logits(
    k: usize,
    layers: usize,
    param: CatParam,
    init: CatInit,
    seed: u64,
) -> Vec<f32> {
    let n = k * layers * ALL_MODULES.len();
    let start = match param {
        CatParam::Free => 1f32,
        CatParam::Softmax => 0f32,
    };
    match init {
        CatInit::Uniform => vec![start; n],
        CatInit::Normal => {
            use rand::SeedableRng;
            use rand_distr::Distribution;
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let normal = rand_distr::StandardNormal;
            (0..n)
                .map(|_| start + Distribution::<f32>::sample(&normal, &mut rng))
                .collect()
        }
    }
}

/// The effective weights w[i, l, m] a CAT run starts from, in [`CatTrainable::weight_values`]'s
/// layout: [`start_logits`] through the softmax over adapters (`softmax`) or as they are (`free`).
pub fn start_weights(
    k: usize,
    layers: usize,
    param: CatParam,
    init: CatInit,
    seed: u64,
) -> Vec<f32> {
    let mut values = start_logits(k, layers, param, init, seed);
    if param == CatParam::Softmax {
        let slots = layers * ALL_MODULES.len();
        for slot in 0..slots {
            let max = (0..k)
                .map(|i| values[i * slots + slot])
                .fold(f32::NEG_INFINITY, f32::max);
            let exps: Vec<f32> = (0..k)
                .map(|i| (values[i * slots + slot] - max).exp())
                .collect();
            let sum: f32 = exps.iter().sum();
            for (i, e) in exps.into_iter().enumerate() {
                values[i * slots + slot] = e / sum;
            }
        }
    }
    values
}

/// Where a stored CAT adapter's weights started, in the layout of its stored `weights`, read
/// from its hyperparameters: the parametrization and start from `cat_movement` (else from the
/// recorded `job`, whose missing `init` means [`CatInit::legacy`]) and, for a `normal` start,
/// the seed from `job.train.seed`, recomputed with [`start_weights`]. `None` when the record
/// does not say, or when a seeded start was drawn in another module layout than the stored one.
pub fn stored_start(
    hyperparams: &serde_json::Value,
    weights: &soup_store::CatWeights,
) -> Option<Vec<f32>> {
    let job = hyperparams.get("job");
    let (param, init) = match CatMovement::from_hyperparams(hyperparams) {
        Some(m) => (m.param, m.init),
        None => {
            let job = job?;
            let param: CatParam = serde_json::from_value(job.get("param")?.clone()).ok()?;
            let init = match job.get("init") {
                Some(v) => serde_json::from_value(v.clone()).ok()?,
                None => CatInit::legacy(),
            };
            (param, init)
        }
    };
    let k = weights.adapters.len();
    let n = k
        .checked_mul(weights.layers)?
        .checked_mul(weights.modules.len())?;
    if n != weights.values.len() {
        return None;
    }
    match init {
        // Every slot starts alike: the layout does not matter.
        CatInit::Uniform => Some(vec![param.start_weight(k) as f32; n]),
        CatInit::Normal => {
            let same_layout = weights.modules.len() == ALL_MODULES.len()
                && weights
                    .modules
                    .iter()
                    .zip(ALL_MODULES.iter())
                    .all(|(a, b)| a == b.hf_name());
            if !same_layout {
                return None;
            }
            let seed = job?.pointer("/train/seed")?.as_u64()?;
            Some(start_weights(k, weights.layers, param, init, seed))
        }
    }
}

pub struct CatTrainable {
    adapters: Vec<LoraAdapter>,
    layers: usize,
    param: CatParam,
    /// (k, layers, 7)
    logits: Var,
}

impl CatTrainable {
    pub fn new(
        adapters: Vec<LoraAdapter>,
        layers: usize,
        param: CatParam,
        init: CatInit,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        if adapters.len() < 2 {
            return Err(CoreError::missing("CAT", "at least two adapters"));
        }
        let shape = (adapters.len(), layers, ALL_MODULES.len());
        let values = start_logits(adapters.len(), layers, param, init, seed);
        let logits = Var::from_tensor(&Tensor::from_vec(values, shape, device)?)?;
        Ok(CatTrainable {
            adapters,
            layers,
            param,
            logits,
        })
    }

    /// The effective weights w[i, l, m]: (k, layers, 7).
    pub fn weights(&self) -> Result<Tensor> {
        Ok(match self.param {
            CatParam::Free => self.logits.as_tensor().clone(),
            CatParam::Softmax => candle_nn::ops::softmax(self.logits.as_tensor(), 0)?,
        })
    }

    /// The learned weights as plain numbers, [adapter][layer][module].
    pub fn weight_values(&self) -> Result<Vec<f32>> {
        Ok(self
            .weights()?
            .detach()
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    }

    pub fn adapters(&self) -> &[LoraAdapter] {
        &self.adapters
    }
}

impl Trainable for CatTrainable {
    fn vars(&self) -> Vec<Var> {
        vec![self.logits.clone()]
    }
    fn stack(&self) -> Result<AdapterStack> {
        Ok(AdapterStack {
            adapters: self.adapters.clone(),
            weights: StackWeights::Learned(self.weights()?),
            layers: self.layers,
        })
    }
}

/// What a CAT run did to its weights, and whether that helped on data it did not train on.
/// Stored with the CAT adapter (under `cat_movement` in its hyperparameters; adapters made
/// before it existed have none) and in the run's summary, and read back by the recipe's table
/// and `soup adapter show` through [`CatMovement::of_adapter`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatMovement {
    /// The parametrization and start the run used.
    pub param: CatParam,
    pub init: CatInit,
    /// Mean |w_learned − w_start| over every (adapter, layer, module) the adapter is present in.
    pub mean_abs_delta: f64,
    pub max_abs_delta: f64,
    /// How many such weights there are.
    pub weights: usize,
    /// Each adapter's learned weights over the layers and modules it is present in.
    pub spread: Vec<WeightSpread>,
    /// The loss of the start and of the learned weights on held-out examples; `None` when
    /// there were none (every example of every dataset was in the sample).
    pub heldout: Option<HeldOutLoss>,
    pub verdict: CatVerdict,
}

/// One adapter's learned CAT weights over the slots (layer, module) it is present in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightSpread {
    pub adapter: String,
    pub start_mean: f64,
    pub mean: f64,
    pub sd: f64,
    pub min: f64,
    pub max: f64,
    /// Slots where this adapter's weight is the largest of all adapters present there.
    pub largest_in: usize,
    /// Slots this adapter is present in.
    pub slots: usize,
}

/// The held-out loss before and after training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldOutLoss {
    /// Where the examples come from (the CAT runner: each dataset's examples outside the
    /// sample, "unsampled skill data").
    pub source: String,
    pub examples: usize,
    /// Mean token loss with the weights the run started from.
    pub start: f64,
    /// Mean token loss with the learned weights.
    pub learned: f64,
}

/// Whether a CAT run moved. A run that did not is no evidence about learned CAT: its table
/// row is the (possibly random) start under another name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatVerdict {
    /// The weights moved at least [`MIN_MEAN_ABS_DELTA`] on average and the held-out loss
    /// fell (or there was no held-out data to check it on).
    Moved,
    /// Mean |Δw| below [`MIN_MEAN_ABS_DELTA`].
    WeightsStill,
    /// The weights moved, but the held-out loss is not lower than at the start.
    LossNotLower,
}

impl CatVerdict {
    pub fn moved(self) -> bool {
        self == CatVerdict::Moved
    }

    /// A few words for a table cell.
    pub fn label(self) -> &'static str {
        match self {
            CatVerdict::Moved => "moved",
            CatVerdict::WeightsStill => "did not move (weights)",
            CatVerdict::LossNotLower => "did not move (held-out loss not lower)",
        }
    }
}

impl CatMovement {
    /// Compares the start and learned weights (flat, adapter-major, [`ALL_MODULES`] order, as
    /// [`CatTrainable::weight_values`] gives them) over the slots each adapter is present in.
    pub fn measure(
        adapters: &[LoraAdapter],
        layers: usize,
        param: CatParam,
        init: CatInit,
        start: &[f32],
        learned: &[f32],
        heldout: Option<HeldOutLoss>,
    ) -> Result<CatMovement> {
        let m = ALL_MODULES.len();
        let expected = adapters.len() * layers * m;
        if start.len() != expected || learned.len() != expected {
            return Err(CoreError::CatWeightCount {
                values: start.len().max(learned.len()),
                adapters: adapters.len(),
                layers,
                modules: m,
            });
        }
        let at = |i: usize, l: usize, j: usize| (i * layers + l) * m + j;
        let present =
            |i: usize, l: usize, j: usize| adapters[i].pairs.contains_key(&(l, ALL_MODULES[j]));
        let mut deltas = Vec::new();
        let mut spread = Vec::with_capacity(adapters.len());
        for (i, ad) in adapters.iter().enumerate() {
            let mut vals = Vec::new();
            let mut starts = Vec::new();
            let mut largest_in = 0;
            for l in 0..layers {
                for j in 0..m {
                    if !present(i, l, j) {
                        continue;
                    }
                    let w = learned[at(i, l, j)] as f64;
                    vals.push(w);
                    starts.push(start[at(i, l, j)] as f64);
                    deltas.push((w - start[at(i, l, j)] as f64).abs());
                    let others = (0..adapters.len())
                        .filter(|&o| o != i && present(o, l, j))
                        .all(|o| (learned[at(o, l, j)] as f64) < w);
                    if others {
                        largest_in += 1;
                    }
                }
            }
            let n = vals.len().max(1) as f64;
            let mean = vals.iter().sum::<f64>() / n;
            let sd = (vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
            spread.push(WeightSpread {
                adapter: ad.name.clone(),
                start_mean: starts.iter().sum::<f64>() / n,
                mean,
                sd,
                min: vals.iter().copied().fold(f64::INFINITY, f64::min),
                max: vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                largest_in,
                slots: vals.len(),
            });
        }
        let mean_abs_delta = deltas.iter().sum::<f64>() / deltas.len().max(1) as f64;
        let max_abs_delta = deltas.iter().copied().fold(0.0, f64::max);
        let verdict = if mean_abs_delta < MIN_MEAN_ABS_DELTA {
            CatVerdict::WeightsStill
        } else if heldout.as_ref().is_some_and(|h| h.learned >= h.start) {
            CatVerdict::LossNotLower
        } else {
            CatVerdict::Moved
        };
        Ok(CatMovement {
            param,
            init,
            mean_abs_delta,
            max_abs_delta,
            weights: deltas.len(),
            spread,
            heldout,
            verdict,
        })
    }

    /// The movement recorded with a stored CAT adapter; `None` for other adapters and for
    /// CAT adapters made before it was recorded.
    pub fn of_adapter(rec: &soup_store::AdapterRecord) -> Option<CatMovement> {
        Self::from_hyperparams(&rec.hyperparams)
    }

    /// Reads it from an adapter's hyperparameters (`cat_movement`).
    pub fn from_hyperparams(h: &serde_json::Value) -> Option<CatMovement> {
        serde_json::from_value(h.get("cat_movement")?.clone()).ok()
    }

    /// One line: the verdict, how far the weights moved and the held-out losses.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{}: mean |Δw| {:.4} (max {:.4}) over {} weights from a {} {} start",
            self.verdict.label(),
            self.mean_abs_delta,
            self.max_abs_delta,
            self.weights,
            self.init,
            self.param
        );
        match &self.heldout {
            Some(h) => s.push_str(&format!(
                "; held-out loss {:.4} -> {:.4} ({} examples of {})",
                h.start, h.learned, h.examples, h.source
            )),
            None => s.push_str("; no held-out examples (the whole data was sampled)"),
        }
        s
    }

    /// One line per adapter: its weights' mean, sd, min and max over layers and modules.
    pub fn spread_lines(&self) -> Vec<String> {
        self.spread
            .iter()
            .map(|w| {
                format!(
                    "{}: mean {:.3} (start {:.3}), sd {:.3}, min {:.3}, max {:.3}, largest in {}/{} slots",
                    w.adapter, w.mean, w.start_mean, w.sd, w.min, w.max, w.largest_in, w.slots
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lora::adapter::{LoraMeta, LoraPair, Module};
    use std::collections::BTreeMap;

    /// An adapter with rank-1 pairs on q and v of every layer (values irrelevant here).
    fn adapter(name: &str, layers: usize) -> LoraAdapter {
        let mut pairs = BTreeMap::new();
        for l in 0..layers {
            for m in [Module::Q, Module::V] {
                let a = Tensor::zeros((1, 4), DType::F32, &Device::Cpu).unwrap();
                let b = Tensor::zeros((4, 1), DType::F32, &Device::Cpu).unwrap();
                pairs.insert(
                    (l, m),
                    LoraPair {
                        a,
                        b,
                        scale: 1.0,
                        alpha: 1.0,
                    },
                );
            }
        }
        LoraAdapter {
            name: name.into(),
            meta: LoraMeta {
                base_model: "m".into(),
                rank: 1,
                alpha: 1.0,
                use_rslora: false,
                dropout: 0.0,
                targets: vec![Module::Q, Module::V],
            },
            pairs,
        }
    }

    #[test]
    fn uniform_init_is_the_plain_concatenation() {
        let ads = vec![adapter("a", 3), adapter("b", 3), adapter("c", 3)];
        let cat = CatTrainable::new(
            ads.clone(),
            3,
            CatParam::Softmax,
            CatInit::Uniform,
            7,
            &Device::Cpu,
        )
        .unwrap();
        let w = cat.weight_values().unwrap();
        assert_eq!(w.len(), 3 * 3 * 7);
        assert!(w.iter().all(|&v| (v - 1.0 / 3.0).abs() < 1e-7), "{w:?}");
        assert_eq!(CatParam::Softmax.start_weight(3), 1.0 / 3.0);
        let free =
            CatTrainable::new(ads, 3, CatParam::Free, CatInit::Uniform, 7, &Device::Cpu).unwrap();
        assert!(free.weight_values().unwrap().iter().all(|&v| v == 1.0));
        assert_eq!(CatParam::Free.start_weight(3), 1.0);
    }

    #[test]
    fn normal_init_is_the_papers_seeded_random_start() {
        let ads = vec![adapter("a", 2), adapter("b", 2)];
        let make = |seed| {
            CatTrainable::new(
                ads.clone(),
                2,
                CatParam::Softmax,
                CatInit::Normal,
                seed,
                &Device::Cpu,
            )
            .unwrap()
            .weight_values()
            .unwrap()
        };
        let w = make(3);
        assert_eq!(w, make(3), "seeded");
        assert_ne!(w, make(4));
        // Random convex weights: each slot sums to 1 but is not uniform.
        for slot in 0..14 {
            assert!((w[slot] + w[14 + slot] - 1.0).abs() < 1e-6);
        }
        let off = w.iter().filter(|&&v| (v - 0.5).abs() > 0.05).count();
        assert!(off > 14, "{w:?}");
        assert_eq!("normal".parse::<CatInit>().unwrap(), CatInit::Normal);
        assert_eq!("uniform".parse::<CatInit>().unwrap(), CatInit::default());
        assert!("gauss".parse::<CatInit>().unwrap_err().contains("uniform"));
    }

    #[test]
    fn the_start_is_recomputed_as_training_draws_it() {
        let ads = vec![adapter("a", 2), adapter("b", 2), adapter("c", 2)];
        for param in [CatParam::Softmax, CatParam::Free] {
            for init in [CatInit::Uniform, CatInit::Normal] {
                let trained = CatTrainable::new(ads.clone(), 2, param, init, 11, &Device::Cpu)
                    .unwrap()
                    .weight_values()
                    .unwrap();
                let again = start_weights(3, 2, param, init, 11);
                assert_eq!(trained.len(), again.len());
                for (x, y) in trained.iter().zip(&again) {
                    assert!((x - y).abs() < 1e-6, "{param} {init}: {x} vs {y}");
                }
            }
        }
        // From a stored record: the seed of the job, the start from the movement summary.
        let modules: Vec<String> = ALL_MODULES
            .iter()
            .map(|m| m.hf_name().to_string())
            .collect();
        let weights = soup_store::CatWeights {
            adapters: vec!["a".into(), "b".into(), "c".into()],
            layers: 2,
            modules,
            values: vec![0.0; 3 * 2 * 7],
        };
        let job =
            serde_json::json!({ "param": "softmax", "init": "normal", "train": { "seed": 11 } });
        let h = serde_json::json!({ "job": job });
        let expected = start_weights(3, 2, CatParam::Softmax, CatInit::Normal, 11);
        assert_eq!(stored_start(&h, &weights), Some(expected));
        // A job written before `init` existed ran the legacy (normal) start.
        let legacy = serde_json::json!({ "job": { "param": "free", "train": { "seed": 5 } } });
        assert_eq!(
            stored_start(&legacy, &weights),
            Some(start_weights(3, 2, CatParam::Free, CatInit::Normal, 5))
        );
        // A uniform start needs no seed and fits any module layout.
        let uniform = serde_json::json!({ "job": { "param": "softmax", "init": "uniform" } });
        let three = soup_store::CatWeights {
            modules: vec!["q_proj".into()],
            values: vec![0.0; 6],
            ..weights.clone()
        };
        assert_eq!(stored_start(&uniform, &three), Some(vec![1.0 / 3.0; 6]));
        // A seeded start in another layout, or no record of the start: unknown.
        assert_eq!(stored_start(&h, &three), None);
        assert_eq!(stored_start(&serde_json::json!({}), &weights), None);
    }

    #[test]
    fn movement_measures_only_present_slots_and_flags_a_run_that_stood_still() {
        let ads = vec![adapter("a", 2), adapter("b", 2)];
        let start = vec![0.5f32; 28];
        let mut learned = start.clone();
        // a: q and v of both layers (modules 0 and 2) up by 0.1; b down by 0.1. Module 1 (k),
        // where neither is present, moves a lot and must not count.
        for l in 0..2 {
            for j in [0, 2] {
                learned[l * 7 + j] = 0.6;
                learned[14 + l * 7 + j] = 0.4;
            }
            learned[l * 7 + 1] = 0.9;
        }
        let held = |learned_loss| HeldOutLoss {
            source: "test".into(),
            examples: 4,
            start: 2.0,
            learned: learned_loss,
        };
        let m = CatMovement::measure(
            &ads,
            2,
            CatParam::Softmax,
            CatInit::Uniform,
            &start,
            &learned,
            Some(held(1.5)),
        )
        .unwrap();
        assert_eq!(m.weights, 8);
        assert!((m.mean_abs_delta - 0.1).abs() < 1e-6, "{m:?}");
        assert_eq!(m.verdict, CatVerdict::Moved);
        assert!(m.verdict.moved());
        assert_eq!(m.spread[0].largest_in, 4);
        assert_eq!(m.spread[1].largest_in, 0);
        assert!((m.spread[0].mean - 0.6).abs() < 1e-6 && m.spread[0].sd < 1e-6);
        assert!((m.spread[0].start_mean - 0.5).abs() < 1e-9);

        let worse = CatMovement::measure(
            &ads,
            2,
            CatParam::Softmax,
            CatInit::Uniform,
            &start,
            &learned,
            Some(held(2.0)),
        )
        .unwrap();
        assert_eq!(worse.verdict, CatVerdict::LossNotLower);
        let still = CatMovement::measure(
            &ads,
            2,
            CatParam::Softmax,
            CatInit::Uniform,
            &start,
            &start,
            None,
        )
        .unwrap();
        assert_eq!(still.verdict, CatVerdict::WeightsStill);
        assert!(
            still.summary().contains("did not move"),
            "{}",
            still.summary()
        );

        // Stored under `cat_movement` and read back; absent reads as None.
        let h = serde_json::json!({ "cat_movement": m });
        assert_eq!(CatMovement::from_hyperparams(&h), Some(m));
        assert_eq!(CatMovement::from_hyperparams(&serde_json::json!({})), None);
    }
}
