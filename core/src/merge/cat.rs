//! Concatenation: the exact merge. Stacking `c_i·A_i` (c = weight · scale) as rows and `B_i` as
//! columns gives `B_new A_new = Σ_i c_i B_i A_i` with rank Σ r_i, for any ranks.
//!
//! Three users: PEFT's fixed-weight `cat` ([`cat_pairs`], one weight per adapter for the whole
//! model), the export of a trained CAT stack as one PEFT adapter ([`fold_cat`], one weight per
//! adapter, layer and module), and merging a stack into the base weights ([`merge_into_base`]).

use super::{unit_pair, Participants};
use crate::error::{CoreError, Result};
use crate::lora::adapter::{LoraAdapter, LoraMeta, LoraPair, Module, ALL_MODULES};
use candle_core::{DType, Tensor};
use std::collections::BTreeMap;

/// Stacks one projection: `A = [c_1 A_1; c_2 A_2; ...]`, `B = [B_1 | B_2 | ...]`, zero-padded
/// to `pad_to` rows/columns when given (PEFT allocates the new layer at the config-level rank
/// and writes the stack at the top/left).
// A_i: (r_i, in), B_i: (out, r_i) -> A: (Σ r_i | pad_to, in), B: (out, Σ r_i | pad_to)
fn stack(parts: &[(&LoraPair, f64)], pad_to: Option<usize>) -> Result<LoraPair> {
    let mut a_rows = Vec::with_capacity(parts.len() + 1);
    let mut b_cols = Vec::with_capacity(parts.len() + 1);
    for (p, c) in parts {
        a_rows.push(p.a.to_dtype(DType::F32)?.affine(*c, 0.0)?);
        b_cols.push(p.b.to_dtype(DType::F32)?);
    }
    let rank: usize = parts.iter().map(|(p, _)| p.rank()).sum();
    if let Some(target) = pad_to {
        if target > rank {
            let (p, _) = parts[0];
            let in_f = p.a.dims()[1];
            let out_f = p.b.dims()[0];
            a_rows.push(Tensor::zeros(
                (target - rank, in_f),
                DType::F32,
                p.a.device(),
            )?);
            b_cols.push(Tensor::zeros(
                (out_f, target - rank),
                DType::F32,
                p.b.device(),
            )?);
        }
    }
    let a = Tensor::cat(&a_rows, 0)?;
    let b = Tensor::cat(&b_cols, 1)?;
    Ok(unit_pair(a, b))
}

/// PEFT's `cat`: per projection, the participating adapters stacked with `c_i = w_i·s_i` on A,
/// padded to `new_rank` (Σ of the adapters' config-level ranks).
pub(crate) fn cat_pairs(
    groups: &BTreeMap<(usize, Module), Participants<'_>>,
    new_rank: usize,
) -> Result<BTreeMap<(usize, Module), LoraPair>> {
    let mut pairs = BTreeMap::new();
    for (&key, parts) in groups {
        let coeffs: Vec<(&LoraPair, f64)> =
            parts.iter().map(|(_, p, w)| (*p, w * p.scale)).collect();
        pairs.insert(key, stack(&coeffs, Some(new_rank))?);
    }
    Ok(pairs)
}

fn check_values(adapters: &[LoraAdapter], layers: usize, values: &[f32]) -> Result<()> {
    let expected = adapters.len() * layers * ALL_MODULES.len();
    if values.len() != expected {
        return Err(CoreError::CatWeightCount {
            values: values.len(),
            adapters: adapters.len(),
            layers,
            modules: ALL_MODULES.len(),
        });
    }
    if let Some(v) = values.iter().find(|v| !v.is_finite()) {
        return Err(CoreError::NotFinite {
            what: "CAT weight",
            value: *v as f64,
        });
    }
    for ad in adapters {
        if let Some(&(l, m)) = ad.pairs.keys().find(|(l, _)| *l >= layers) {
            return Err(CoreError::adapter(
                &ad.name,
                format!(
                    "targets layer {l} {} but the CAT weights cover {layers} layers",
                    m.hf_name()
                ),
            ));
        }
    }
    Ok(())
}

/// Folds a CAT stack with weights `values[i][l][m]` (flat, adapter-major, 7 modules in
/// [`ALL_MODULES`] order: the layout of `StackWeights::Fixed`) into one adapter: per projection,
/// A stacks `w[i,l,m]·s_i·A_i`, B stacks `B_i`, rank Σ r_i of the adapters present there, scale 1.
/// Running the result alone gives exactly the stack's output.
pub fn fold_cat(adapters: &[LoraAdapter], layers: usize, values: &[f32]) -> Result<LoraAdapter> {
    if adapters.is_empty() {
        return Err(CoreError::missing("CAT export", "at least one adapter"));
    }
    check_values(adapters, layers, values)?;
    let groups = super::participants(adapters, &vec![1.0; adapters.len()])?;
    let mut pairs = BTreeMap::new();
    for (&(layer, module), parts) in &groups {
        let coeffs: Vec<(&LoraPair, f64)> = parts
            .iter()
            .map(|&(i, p, _)| {
                let w = values[(i * layers + layer) * ALL_MODULES.len() + module.index()];
                (p, w as f64 * p.scale)
            })
            .collect();
        pairs.insert((layer, module), stack(&coeffs, None)?);
    }
    let rank: usize = adapters.iter().map(super::config_rank).sum();
    let names: Vec<&str> = adapters.iter().map(|a| a.name.as_str()).collect();
    Ok(LoraAdapter {
        name: format!("cat({})", names.join("+")),
        meta: LoraMeta {
            rank,
            ..super::merged_meta(adapters, rank)
        },
        pairs,
    })
}

/// The update `ΔW[l, m] = Σ_i w[i,l,m]·s_i·B_i A_i` of every projection a CAT stack touches, to
/// add to the base weights (`W' = W + ΔW`, shape (out, in)). `values` as in [`fold_cat`]; for a
/// plain adapter pass ones (see [`adapter_deltas`]).
pub fn merge_into_base(
    adapters: &[LoraAdapter],
    layers: usize,
    values: &[f32],
) -> Result<BTreeMap<(usize, Module), Tensor>> {
    let folded = fold_cat(adapters, layers, values)?;
    let mut out = BTreeMap::new();
    for (key, p) in folded.pairs {
        // B: (out, R) @ A: (R, in) -> (out, in); scale is 1 after folding.
        out.insert(key, p.b.matmul(&p.a)?);
    }
    Ok(out)
}

/// `ΔW = s·B A` of every projection of one adapter.
pub fn adapter_deltas(adapter: &LoraAdapter) -> Result<BTreeMap<(usize, Module), Tensor>> {
    adapter
        .pairs
        .iter()
        .map(|(k, p)| Ok((*k, p.delta()?)))
        .collect()
}
