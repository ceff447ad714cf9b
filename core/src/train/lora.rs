//! A fresh LoRA adapter as a [`Trainable`]: its A and B matrices are the variables.

use super::trainer::Trainable;
use crate::error::Result;
use crate::lora::{AdapterStack, LoraAdapter, LoraPair, Module};
use crate::model::Llama;
use candle_core::Var;
use std::collections::BTreeMap;

/// Adapter hyper-parameters (the paper's recipe by default: r=16, alpha=32, q,k,v,up,down).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoraSpec {
    pub rank: usize,
    pub alpha: f64,
    pub use_rslora: bool,
    pub targets: Vec<Module>,
}

impl Default for LoraSpec {
    fn default() -> Self {
        LoraSpec {
            rank: 16,
            alpha: 32.0,
            use_rslora: false,
            targets: vec![Module::Q, Module::K, Module::V, Module::Up, Module::Down],
        }
    }
}

pub struct LoraTrainable {
    adapter: LoraAdapter,
    vars: Vec<Var>,
}

impl LoraTrainable {
    /// A PEFT-initialized adapter (A Kaiming-uniform, B zero) for `model`.
    pub fn new(
        model: &Llama,
        name: &str,
        base_model: &str,
        spec: &LoraSpec,
        seed: u64,
        dropout: f64,
    ) -> Result<Self> {
        let shapes = |m: Module| model.projection_shape(m);
        let mut adapter = LoraAdapter::init(
            name,
            base_model,
            &shapes,
            model.layers.len(),
            &spec.targets,
            spec.rank,
            spec.alpha,
            spec.use_rslora,
            seed,
            model.device(),
        )?;
        adapter.meta.dropout = dropout;
        Self::from_adapter(adapter)
    }

    /// Continues training an existing adapter.
    pub fn from_adapter(adapter: LoraAdapter) -> Result<Self> {
        let mut vars = Vec::new();
        let mut pairs = BTreeMap::new();
        for (k, p) in adapter.pairs {
            let a = Var::from_tensor(&p.a)?;
            let b = Var::from_tensor(&p.b)?;
            pairs.insert(
                k,
                LoraPair {
                    a: a.as_tensor().clone(),
                    b: b.as_tensor().clone(),
                    scale: p.scale,
                    alpha: p.alpha,
                },
            );
            vars.push(a);
            vars.push(b);
        }
        Ok(LoraTrainable {
            adapter: LoraAdapter { pairs, ..adapter },
            vars,
        })
    }

    /// The adapter with its current values, detached from the graph.
    pub fn adapter(&self) -> Result<LoraAdapter> {
        let mut a = self.adapter.clone();
        for p in a.pairs.values_mut() {
            p.a = p.a.detach().copy()?;
            p.b = p.b.detach().copy()?;
        }
        Ok(a)
    }
}

impl Trainable for LoraTrainable {
    fn vars(&self) -> Vec<Var> {
        self.vars.clone()
    }
    fn stack(&self) -> Result<AdapterStack> {
        Ok(AdapterStack::single(self.adapter.clone()))
    }
}
