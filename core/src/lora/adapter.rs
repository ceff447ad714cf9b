//! One LoRA adapter: a low-rank pair (A, B) with its scale for each (layer, projection) it
//! targets. Ranks and scales may differ per projection (PEFT's `rank_pattern`/`alpha_pattern`).

use crate::error::{CoreError, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The seven projections of a Llama-family decoder layer that can carry adapters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Module {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

pub const ALL_MODULES: [Module; 7] = [
    Module::Q,
    Module::K,
    Module::V,
    Module::O,
    Module::Gate,
    Module::Up,
    Module::Down,
];

impl Module {
    /// The HF/PEFT name of the projection (`q_proj`, ...).
    pub fn hf_name(self) -> &'static str {
        match self {
            Module::Q => "q_proj",
            Module::K => "k_proj",
            Module::V => "v_proj",
            Module::O => "o_proj",
            Module::Gate => "gate_proj",
            Module::Up => "up_proj",
            Module::Down => "down_proj",
        }
    }

    /// `self_attn` or `mlp`: the block the projection lives in.
    pub fn block(self) -> &'static str {
        match self {
            Module::Q | Module::K | Module::V | Module::O => "self_attn",
            _ => "mlp",
        }
    }

    /// Index into the module axis of CAT weights.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Accepts `q`, `q_proj`, `gate`, `gate_proj`, ...
    pub fn parse(s: &str) -> Result<Module> {
        let s = s.trim();
        let short = s.strip_suffix("_proj").unwrap_or(s);
        ALL_MODULES
            .into_iter()
            .find(|m| m.hf_name().strip_suffix("_proj") == Some(short))
            .ok_or_else(|| CoreError::UnknownName {
                kind: "projection",
                name: s.to_string(),
                expected: "one of q,k,v,o,gate,up,down".into(),
            })
    }

    /// Parses a comma-separated target list such as `q,k,v,up,down`.
    pub fn parse_list(s: &str) -> Result<Vec<Module>> {
        let mut v = s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(Module::parse)
            .collect::<Result<Vec<_>>>()?;
        v.sort();
        v.dedup();
        Ok(v)
    }
}

/// The low-rank update of one projection: `ΔW = scale · B A`.
#[derive(Debug, Clone)]
pub struct LoraPair {
    /// A: (rank, in_features)
    pub a: Tensor,
    /// B: (out_features, rank)
    pub b: Tensor,
    /// alpha / r, or alpha / sqrt(r) with rsLoRA.
    pub scale: f64,
    /// Kept to write `alpha_pattern` back on export.
    pub alpha: f64,
}

impl LoraPair {
    pub fn rank(&self) -> usize {
        self.a.dims()[0]
    }

    /// ΔW = scale · B A, shape (out, in).
    pub fn delta(&self) -> Result<Tensor> {
        Ok((self.b.matmul(&self.a)? * self.scale)?)
    }
}

/// Hyper-parameters of an adapter that are not tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraMeta {
    /// The base model this adapter was trained on (a name or path, informational).
    pub base_model: String,
    /// Default rank and alpha (PEFT's `r` and `lora_alpha`); per-projection values may differ.
    pub rank: usize,
    pub alpha: f64,
    pub use_rslora: bool,
    pub dropout: f64,
    pub targets: Vec<Module>,
}

/// A LoRA adapter, keyed by (layer, module).
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    pub name: String,
    pub meta: LoraMeta,
    pub pairs: BTreeMap<(usize, Module), LoraPair>,
}

/// The scale of a pair, as PEFT computes it.
pub fn lora_scale(alpha: f64, rank: usize, use_rslora: bool) -> f64 {
    if use_rslora {
        alpha / (rank as f64).sqrt()
    } else {
        alpha / rank as f64
    }
}

impl LoraAdapter {
    pub fn get(&self, layer: usize, module: Module) -> Option<&LoraPair> {
        self.pairs.get(&(layer, module))
    }

    /// A fresh adapter initialized as PEFT does: A Kaiming-uniform, B zero (so ΔW starts at 0).
    #[allow(clippy::too_many_arguments)]
    pub fn init(
        name: &str,
        base_model: &str,
        shapes: &dyn Fn(Module) -> (usize, usize),
        layers: usize,
        targets: &[Module],
        rank: usize,
        alpha: f64,
        use_rslora: bool,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut pairs = BTreeMap::new();
        let scale = lora_scale(alpha, rank, use_rslora);
        for layer in 0..layers {
            for &m in targets {
                let (out_f, in_f) = shapes(m);
                // kaiming_uniform_(a=sqrt(5)) on (rank, in): bound = 1/sqrt(in).
                let bound = 1.0 / (in_f as f32).sqrt();
                let a: Vec<f32> = (0..rank * in_f)
                    .map(|_| rng.gen_range(-bound..bound))
                    .collect();
                let a = Tensor::from_vec(a, (rank, in_f), device)?;
                let b = Tensor::zeros((out_f, rank), DType::F32, device)?;
                pairs.insert((layer, m), LoraPair { a, b, scale, alpha });
            }
        }
        Ok(LoraAdapter {
            name: name.to_string(),
            meta: LoraMeta {
                base_model: base_model.to_string(),
                rank,
                alpha,
                use_rslora,
                dropout: 0.0,
                targets: targets.to_vec(),
            },
            pairs,
        })
    }

    /// Total number of trainable parameters (elements of all A and B).
    pub fn num_params(&self) -> usize {
        self.pairs
            .values()
            .map(|p| p.a.elem_count() + p.b.elem_count())
            .sum()
    }

    /// Checks that every pair fits the model's projection shapes; `shape_of` gives (out, in).
    pub fn check_shapes(
        &self,
        layers: usize,
        shape_of: &dyn Fn(Module) -> (usize, usize),
    ) -> Result<()> {
        for (&(layer, m), p) in &self.pairs {
            if layer >= layers {
                return Err(CoreError::adapter(
                    &self.name,
                    format!("targets layer {layer} but the model has {layers} layers: is it for another base model?"),
                ));
            }
            let (out_f, in_f) = shape_of(m);
            let (r, a_in) = p.a.dims2()?;
            let (b_out, r2) = p.b.dims2()?;
            if a_in != in_f || b_out != out_f || r != r2 {
                return Err(CoreError::adapter(
                    &self.name,
                    format!(
                        "layer {layer} {}: A is {:?} and B is {:?} but the model's projection is ({out_f}, {in_f}): the adapter was made for another base model",
                        m.hf_name(),
                        p.a.dims(),
                        p.b.dims()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Moves every tensor to `device` (and f32), e.g. after loading from a file.
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        let mut pairs = BTreeMap::new();
        for (k, p) in &self.pairs {
            pairs.insert(
                *k,
                LoraPair {
                    a: p.a.to_device(device)?.to_dtype(DType::F32)?,
                    b: p.b.to_device(device)?.to_dtype(DType::F32)?,
                    scale: p.scale,
                    alpha: p.alpha,
                },
            );
        }
        Ok(LoraAdapter {
            name: self.name.clone(),
            meta: self.meta.clone(),
            pairs,
        })
    }

    /// Layers covered, for tables and CAT weight shapes.
    pub fn modules(&self) -> Vec<Module> {
        let mut v: Vec<Module> = self.pairs.keys().map(|(_, m)| *m).collect();
        v.sort();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_round_trip() {
        for m in ALL_MODULES {
            assert_eq!(Module::parse(m.hf_name()).unwrap(), m);
        }
        assert_eq!(
            Module::parse_list("q,k,v,up,down").unwrap(),
            vec![Module::Q, Module::K, Module::V, Module::Up, Module::Down]
        );
        assert!(Module::parse("lm_head").is_err());
    }

    #[test]
    fn scales_follow_peft() {
        assert_eq!(lora_scale(32.0, 16, false), 2.0);
        assert_eq!(lora_scale(32.0, 16, true), 8.0);
    }
}
