//! CAT (LoRA Soups): k frozen skill adapters, one learned weight per (adapter, layer, module).
//!
//! `softmax` is what the paper's code does: free logits per layer and module, N(0, 1) init,
//! a softmax over adapters. `free` is the paper's equation: unconstrained scalars, init 1.

use super::trainer::Trainable;
use crate::error::{CoreError, Result};
use crate::lora::{AdapterStack, LoraAdapter, StackWeights, ALL_MODULES};
use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CatParam {
    #[default]
    Softmax,
    Free,
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
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        if adapters.len() < 2 {
            return Err(CoreError::missing("CAT", "at least two adapters"));
        }
        let shape = (adapters.len(), layers, ALL_MODULES.len());
        let n = adapters.len() * layers * ALL_MODULES.len();
        let init = match param {
            CatParam::Free => vec![1f32; n],
            CatParam::Softmax => {
                use rand::SeedableRng;
                use rand_distr::Distribution;
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                let normal = rand_distr::StandardNormal;
                (0..n).map(|_| normal.sample(&mut rng)).collect()
            }
        };
        let logits = Var::from_tensor(&Tensor::from_vec(init, shape, device)?)?;
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
