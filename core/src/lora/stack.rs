//! The adapter stack a model runs with: k adapters and the weight w[i, layer, module] of each.
//!
//! Every projection computes `y = W x (+ b) + Σ_i w[i,l,m] · s_i · B_i (A_i x)`. The stack is
//! passed to the model's forward rather than baked into it, so one loaded base model serves
//! every configuration a comparison needs (base, each skill, CAT, merges) without reloading.

use super::adapter::{LoraAdapter, LoraPair, Module, ALL_MODULES};
use crate::error::{CoreError, Result};
use candle_core::{IndexOp, Tensor};

/// How the stack weighs its adapters.
#[derive(Debug, Clone)]
pub enum StackWeights {
    /// Every adapter at full weight: a single adapter, or a plain sum.
    Ones,
    /// Fixed values, laid out [adapter][layer][module] (module axis of length 7).
    Fixed(Vec<f32>),
    /// A tensor (k, layers, 7) that may carry gradients: CAT training.
    Learned(Tensor),
}

/// Adapters applied together, with their weights.
#[derive(Debug, Clone)]
pub struct AdapterStack {
    pub adapters: Vec<LoraAdapter>,
    pub weights: StackWeights,
    pub layers: usize,
}

/// The per-projection coefficient of one adapter: a constant or a graph node.
pub enum Coefficient {
    Const(f64),
    Tensor(Tensor),
}

impl AdapterStack {
    /// The empty stack: the base model alone.
    pub fn base() -> Self {
        AdapterStack {
            adapters: Vec::new(),
            weights: StackWeights::Ones,
            layers: 0,
        }
    }

    pub fn single(adapter: LoraAdapter) -> Self {
        let layers = adapter.pairs.keys().map(|(l, _)| l + 1).max().unwrap_or(0);
        AdapterStack {
            adapters: vec![adapter],
            weights: StackWeights::Ones,
            layers,
        }
    }

    /// A stack with fixed weights `values[i][l][m]`, e.g. a stored CAT adapter.
    pub fn fixed(adapters: Vec<LoraAdapter>, layers: usize, values: Vec<f32>) -> Result<Self> {
        if values.len() != adapters.len() * layers * ALL_MODULES.len() {
            return Err(CoreError::CatWeightCount {
                values: values.len(),
                adapters: adapters.len(),
                layers,
                modules: ALL_MODULES.len(),
            });
        }
        Ok(AdapterStack {
            adapters,
            weights: StackWeights::Fixed(values),
            layers,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.adapters.is_empty()
    }

    /// The adapters that touch projection (layer, module), each with its coefficient
    /// w[i,l,m] · s_i.
    pub fn at(&self, layer: usize, module: Module) -> Result<Vec<(&LoraPair, Coefficient)>> {
        let mut out = Vec::new();
        for (i, adapter) in self.adapters.iter().enumerate() {
            let Some(pair) = adapter.get(layer, module) else {
                continue;
            };
            let c = match &self.weights {
                StackWeights::Ones => Coefficient::Const(pair.scale),
                StackWeights::Fixed(v) => {
                    let idx = (i * self.layers + layer) * ALL_MODULES.len() + module.index();
                    Coefficient::Const(pair.scale * v[idx] as f64)
                }
                StackWeights::Learned(t) => {
                    Coefficient::Tensor((t.i((i, layer, module.index()))? * pair.scale)?)
                }
            };
            out.push((pair, c));
        }
        Ok(out)
    }
}
