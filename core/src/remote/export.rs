//! An adapter or composition as one PEFT directory a server can load: every projection at one
//! rank R (no `rank_pattern`, scale 1, so any PEFT reader and vLLM take it as it is), named by
//! its content so the same weights are never registered twice under two names.
//!
//! Servers cap the rank of the adapters they load (vLLM's `--max-lora-rank`, one of
//! [`super::VLLM_LORA_RANKS`]). A CAT adapter folded into one adapter has rank Σ r_i, which can
//! be over that cap; then each projection's `ΔW = s·B A` is replaced by its best rank-R
//! approximation (truncated SVD, computed from the factors without forming ΔW), and the cost is
//! measured as the relative Frobenius error `‖ΔW − ΔW_R‖ / ‖ΔW‖` over all projections together
//! (and the worst single projection), which the run records.

use super::VLLM_LORA_RANKS;
use crate::error::{CoreError, Result};
use crate::lora::adapter::{LoraAdapter, LoraMeta, LoraPair};
use crate::merge::svd::svd_of_product;
use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// An adapter brought to one rank for a server, and what that cost.
#[derive(Debug, Clone)]
pub struct FittedAdapter {
    pub adapter: LoraAdapter,
    pub report: FitReport,
}

/// What [`fit_to_rank`] did, as the run records it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FitReport {
    /// The rank of every projection of the exported adapter.
    pub rank: usize,
    /// The highest rank of any projection before (Σ r_i for a CAT adapter).
    pub source_rank: usize,
    /// True when some projection was over the cap and was cut by SVD.
    pub compressed: bool,
    /// `sqrt(Σ ‖ΔW − ΔW_R‖² / Σ ‖ΔW‖²)` over every projection (0 when nothing was cut).
    pub relative_frobenius_error: f64,
    /// The largest relative error of a single projection.
    pub max_projection_error: f64,
}

/// The largest rank a server with `--max-lora-rank max` accepts among vLLM's allowed values
/// (`max` itself when it is below the smallest).
pub fn allowed_rank(max: usize) -> usize {
    VLLM_LORA_RANKS
        .iter()
        .copied()
        .filter(|&r| r <= max)
        .max()
        .unwrap_or(max.max(1))
}

/// Column `j` of a (rows, cols) row-major f64 matrix.
fn column(m: &[f64], rows: usize, cols: usize, j: usize) -> Vec<f64> {
    (0..rows).map(|i| m[i * cols + j]).collect()
}

/// Brings every projection of `adapter` to one rank: the highest rank it has when that is at
/// most `allowed_rank(max_lora_rank)` (smaller ones zero-padded: exact), else exactly that
/// allowed rank, by truncated SVD where a projection is over it.
pub fn fit_to_rank(adapter: &LoraAdapter, max_lora_rank: usize) -> Result<FittedAdapter> {
    let source_rank = adapter.pairs.values().map(|p| p.rank()).max().unwrap_or(0);
    if source_rank == 0 {
        return Err(CoreError::adapter(
            &adapter.name,
            "has no LoRA pairs to export",
        ));
    }
    let cap = allowed_rank(max_lora_rank);
    let rank = source_rank.min(cap);
    let dev = Device::Cpu;
    let (mut total, mut dropped, mut worst) = (0.0f64, 0.0f64, 0.0f64);
    let mut pairs = BTreeMap::new();
    for (&key, p) in &adapter.pairs {
        // A: (r, in) with the scale folded in, B: (out, r)
        let a = (p.a.to_device(&dev)?.to_dtype(DType::F64)? * p.scale)?;
        let b = p.b.to_device(&dev)?.to_dtype(DType::F64)?;
        let (r, in_f) = a.dims2()?;
        let out_f = b.dims2()?.0;
        // ‖B A‖² = tr((BᵀB)(A Aᵀ)): two r×r products instead of the (out, in) delta.
        let energy = (b.t()?.matmul(&b)? * a.matmul(&a.t()?)?)?
            .sum_all()?
            .to_scalar::<f64>()?
            .max(0.0);
        total += energy;
        let (a_new, b_new) = if r <= rank {
            let pad = rank - r;
            let a = Tensor::cat(&[a, Tensor::zeros((pad, in_f), DType::F64, &dev)?], 0)?;
            let b = Tensor::cat(&[b, Tensor::zeros((out_f, pad), DType::F64, &dev)?], 1)?;
            (a, b)
        } else {
            let a_flat = a.flatten_all()?.to_vec1::<f64>()?;
            let b_flat = b.flatten_all()?.to_vec1::<f64>()?;
            let a_rows: Vec<Vec<f64>> = a_flat.chunks(in_f).map(<[f64]>::to_vec).collect();
            let b_cols: Vec<Vec<f64>> = (0..r).map(|j| column(&b_flat, out_f, r, j)).collect();
            let mut svd = svd_of_product(b_cols, a_rows);
            // Largest singular values first.
            let mut order: Vec<usize> = (0..svd.s.len()).collect();
            order.sort_by(|&i, &j| svd.s[j].total_cmp(&svd.s[i]));
            let cut: f64 = order[rank..].iter().map(|&i| svd.s[i].powi(2)).sum();
            dropped += cut;
            if energy > 0.0 {
                worst = worst.max((cut / energy).sqrt());
            }
            let keep = &order[..rank];
            // B' = U_R √S, A' = √S V_Rᵀ
            let mut a_new = Vec::with_capacity(rank * in_f);
            let mut b_new = vec![0.0; out_f * rank];
            for (k, &i) in keep.iter().enumerate() {
                let sq = svd.s[i].max(0.0).sqrt();
                a_new.extend(svd.v[i].iter().map(|x| x * sq));
                for (row, u) in std::mem::take(&mut svd.u[i]).into_iter().enumerate() {
                    b_new[row * rank + k] = u * sq;
                }
            }
            (
                Tensor::from_vec(a_new, (rank, in_f), &dev)?,
                Tensor::from_vec(b_new, (out_f, rank), &dev)?,
            )
        };
        let target = p.a.device();
        pairs.insert(
            key,
            LoraPair {
                a: a_new.to_dtype(DType::F32)?.to_device(target)?,
                b: b_new.to_dtype(DType::F32)?.to_device(target)?,
                scale: 1.0,
                alpha: rank as f64,
            },
        );
    }
    let relative = if total > 0.0 {
        (dropped / total).sqrt()
    } else {
        0.0
    };
    Ok(FittedAdapter {
        adapter: LoraAdapter {
            name: adapter.name.clone(),
            meta: LoraMeta {
                rank,
                alpha: rank as f64,
                use_rslora: false,
                ..adapter.meta.clone()
            },
            pairs,
        },
        report: FitReport {
            rank,
            source_rank,
            compressed: source_rank > rank,
            relative_frobenius_error: relative,
            max_projection_error: worst,
        },
    })
}

/// The name an exported adapter is registered under: `soup-` and a hash of its files, so the
/// same weights always get the same name and different ones never share it.
pub fn content_name(adapter: &LoraAdapter) -> Result<String> {
    use sha2::{Digest, Sha256};
    let (bytes, config) = crate::lora::peft::to_bytes(adapter)?;
    let mut h = Sha256::new();
    h.update(&bytes);
    h.update(config.to_string().as_bytes());
    let hex = format!("{:x}", h.finalize());
    Ok(format!("soup-{}", &hex[..16]))
}

/// Writes `adapter` as a PEFT directory `root/<content name>` (kept when already there: the
/// name is its content) and returns the name and the directory.
pub fn write_for_server(adapter: &LoraAdapter, root: &Path) -> Result<(String, PathBuf)> {
    let name = content_name(adapter)?;
    let dir = root.join(&name);
    if !dir.join(crate::lora::peft::CONFIG_FILE).exists() {
        std::fs::create_dir_all(root).map_err(|e| CoreError::io(root, e))?;
        crate::lora::peft::save_peft(adapter, &dir)?;
    }
    Ok((name, dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lora::adapter::Module;

    fn adapter(ranks: &[usize]) -> LoraAdapter {
        let dev = Device::Cpu;
        let mut pairs = BTreeMap::new();
        for (l, &r) in ranks.iter().enumerate() {
            let a = Tensor::randn(0f32, 1.0, (r, 24), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, (20, r), &dev).unwrap();
            pairs.insert(
                (l, Module::Q),
                LoraPair {
                    a,
                    b,
                    scale: 0.5,
                    alpha: r as f64 / 2.0,
                },
            );
        }
        LoraAdapter {
            name: "t".into(),
            meta: LoraMeta {
                base_model: "m".into(),
                rank: ranks[0],
                alpha: ranks[0] as f64 / 2.0,
                use_rslora: false,
                dropout: 0.0,
                targets: vec![Module::Q],
            },
            pairs,
        }
    }

    fn max_delta_diff(x: &LoraAdapter, y: &LoraAdapter) -> f32 {
        x.pairs
            .iter()
            .map(|(k, p)| {
                let d = (p.delta().unwrap() - y.pairs[k].delta().unwrap()).unwrap();
                d.abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            })
            .fold(0.0, f32::max)
    }

    #[test]
    fn allowed_rank_takes_the_largest_value_not_above_the_cap() {
        assert_eq!(allowed_rank(64), 64);
        assert_eq!(allowed_rank(100), 64);
        assert_eq!(allowed_rank(512), 512);
        assert_eq!(allowed_rank(4), 4);
    }

    #[test]
    fn under_the_cap_padding_is_exact_and_uniform() {
        let a = adapter(&[4, 12]);
        let f = fit_to_rank(&a, 64).unwrap();
        assert_eq!(f.report.rank, 12);
        assert!(!f.report.compressed);
        assert_eq!(f.report.relative_frobenius_error, 0.0);
        assert!(f.adapter.pairs.values().all(|p| p.rank() == 12));
        assert!(max_delta_diff(&a, &f.adapter) < 1e-4);
        // One rank everywhere: the PEFT config needs no rank_pattern.
        let cfg = crate::lora::peft::peft_config(&f.adapter);
        assert_eq!(cfg["r"], 12);
        assert!(cfg["rank_pattern"].as_object().unwrap().is_empty());
    }

    #[test]
    fn over_the_cap_svd_keeps_the_best_rank_and_measures_the_error() {
        // Rank 12 of random factors cut to 8: a real loss, below 1, and the kept part is the
        // best rank-8 approximation (its error is the dropped singular values' share).
        let a = adapter(&[12]);
        let f = fit_to_rank(&a, 8).unwrap();
        assert_eq!(f.report.rank, 8);
        assert_eq!(f.report.source_rank, 12);
        assert!(f.report.compressed);
        let e = f.report.relative_frobenius_error;
        assert!(e > 0.01 && e < 1.0, "{e}");
        // The error reported is the one the tensors show.
        let d0 = a.pairs[&(0, Module::Q)].delta().unwrap();
        let d1 = f.adapter.pairs[&(0, Module::Q)].delta().unwrap();
        let num = (&d0 - &d1)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt();
        let den = d0
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt();
        assert!(
            ((num / den) as f64 - e).abs() < 1e-3,
            "{} vs {e}",
            num / den
        );
        assert_eq!(f.report.max_projection_error, e);
    }

    #[test]
    fn content_names_follow_the_weights() {
        let a = adapter(&[4]);
        let b = adapter(&[4]);
        assert_eq!(content_name(&a).unwrap(), content_name(&a).unwrap());
        assert_ne!(content_name(&a).unwrap(), content_name(&b).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let (name, path) = write_for_server(&a, dir.path()).unwrap();
        assert!(path.ends_with(&name));
        assert!(path.join("adapter_config.json").exists());
        // Written again: kept, not refused.
        assert_eq!(write_for_server(&a, dir.path()).unwrap().1, path);
    }
}
