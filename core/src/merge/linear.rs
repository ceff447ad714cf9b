//! The factor family of merges (`linear`, `ties`, `dare_*`, `magnitude_prune`): PEFT's
//! `_generalized_task_arithmetic_weighted_adapter`. A's and B's are combined *separately*, each
//! adapter contributing `sign(c)·√|c|` on A and `√|c|` on B with `c = w·s`; so `B_new A_new`
//! carries cross terms `B_i A_j` and is not the weighted sum of the deltas (PEFT calls `linear`
//! "a very rough approximation"; `cat` and `svd` are the exact ones).

use super::{device_tensor, host, unit_pair, Combine, Participants};
use crate::error::{CoreError, Result};
use crate::lora::adapter::{LoraPair, Module};
use std::collections::BTreeMap;

/// Task arithmetic: `Σ_i w_i T_i`, in f32 as torch does.
// tensors: k × (n,) -> (n,)
pub fn task_arithmetic(tensors: &[&[f32]], weights: &[f32]) -> Vec<f32> {
    let n = tensors.first().map(|t| t.len()).unwrap_or(0);
    let mut out = vec![0f32; n];
    for (t, &w) in tensors.iter().zip(weights) {
        for (o, &x) in out.iter_mut().zip(t.iter()) {
            *o += x * w;
        }
    }
    out
}

/// The factor weights PEFT gives adapter `i`: (on A, on B) = (sign(c)·√|c|, √|c|), c = w·s;
/// a zero `c` counts as positive.
pub fn factor_weights(weight: f64, scale: f64) -> (f32, f32) {
    let c = weight * scale;
    let root = c.abs().sqrt();
    let sign = if c >= 0.0 { 1.0 } else { -1.0 };
    ((root * sign) as f32, root as f32)
}

/// A stream id for one side of one projection: DARE's masks are seeded by it.
pub(crate) fn stream_id(layer: usize, module: Module, side_b: bool) -> u64 {
    ((layer as u64) << 8) | ((module.index() as u64) << 1) | side_b as u64
}

/// Merges every projection's factors with `combine`.
pub(crate) fn factor_pairs(
    combine: &Combine,
    groups: &BTreeMap<(usize, Module), Participants<'_>>,
) -> Result<BTreeMap<(usize, Module), LoraPair>> {
    let mut pairs = BTreeMap::new();
    for (&(layer, module), parts) in groups {
        let (_, first, _) = parts[0];
        let rank = first.rank();
        if let Some((_, p, _)) = parts.iter().find(|(_, p, _)| p.rank() != rank) {
            return Err(CoreError::merge_precondition(
                combine.name(),
                format!(
                    "layer {layer} {} has rank {} in one adapter and {rank} in another (rank_pattern): use cat or svd",
                    module.hf_name(),
                    p.rank()
                ),
            ));
        }
        let (wa, wb): (Vec<f32>, Vec<f32>) = parts
            .iter()
            .map(|(_, p, w)| factor_weights(*w, p.scale))
            .unzip();
        // A: (rank, in), B: (out, rank)
        let a_host = parts
            .iter()
            .map(|(_, p, _)| host(&p.a))
            .collect::<Result<Vec<_>>>()?;
        let b_host = parts
            .iter()
            .map(|(_, p, _)| host(&p.b))
            .collect::<Result<Vec<_>>>()?;
        let a = combine.apply(
            &super::as_slices(&a_host),
            &wa,
            stream_id(layer, module, false),
        )?;
        let b = combine.apply(
            &super::as_slices(&b_host),
            &wb,
            stream_id(layer, module, true),
        )?;
        let device = first.a.device();
        let a = device_tensor(a, first.a.dims2()?, device)?;
        let b = device_tensor(b, first.b.dims2()?, device)?;
        pairs.insert((layer, module), unit_pair(a, b));
    }
    Ok(pairs)
}
