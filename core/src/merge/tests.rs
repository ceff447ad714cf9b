//! Merges checked against PEFT's own outputs (`tests/fixtures/reference/merges`, made by
//! `tests/fixtures/make_reference.py` with peft 0.21.2: adapters a, b (r 8) and c (r 4) on
//! tiny-llama, weights [0.7, 0.3], density 0.5, svd rank 8), and against properties that hold
//! by construction.

use super::*;
use crate::lora::adapter::ALL_MODULES;
use crate::lora::peft::{load_peft, save_peft};
use crate::test_support::max_abs_diff;
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

fn reference() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/reference")
}

fn adapter(name: &str) -> LoraAdapter {
    load_peft(&reference().join(format!("adapter-{name}")), &Device::Cpu).unwrap()
}

fn peft_merge(name: &str) -> (HashMap<String, Tensor>, serde_json::Value) {
    let dir = reference().join("merges");
    let t = candle_core::safetensors::load(dir.join(format!("{name}.safetensors")), &Device::Cpu)
        .unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap())
            .unwrap();
    (t, meta)
}

fn key(layer: usize, m: Module, side: &str) -> String {
    format!(
        "base_model.model.model.layers.{layer}.{}.{}.lora_{side}.weight",
        m.block(),
        m.hf_name()
    )
}

fn method(name: &str, meta: &serde_json::Value) -> MergeMethod {
    let kw = &meta["add_weighted_adapter_kwargs"];
    let opts = MergeOptions {
        density: kw["density"].as_f64(),
        majority_sign: kw["majority_sign_method"]
            .as_str()
            .map(|s| MajoritySign::parse(s).unwrap())
            .unwrap_or_default(),
        svd_rank: kw["svd_rank"].as_u64().map(|r| r as usize),
        svd_clamp: None,
        seed: 1234,
    };
    let m = MergeMethod::from_name(kw["combination_type"].as_str().unwrap(), &opts).unwrap();
    assert_eq!(m.name(), kw["combination_type"].as_str().unwrap(), "{name}");
    m
}

/// Runs our merge with the fixture's settings; returns (ours, PEFT's tensors, PEFT's meta).
fn run(name: &str) -> (LoraAdapter, HashMap<String, Tensor>, serde_json::Value) {
    let (t, meta) = peft_merge(name);
    let names: Vec<String> = meta["adapters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            a.as_str()
                .unwrap()
                .trim_start_matches("adapter-")
                .to_string()
        })
        .collect();
    let adapters: Vec<LoraAdapter> = names.iter().map(|n| adapter(n)).collect();
    let weights: Vec<f64> = meta["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_f64().unwrap())
        .collect();
    let ours = merge(&method(name, &meta), &adapters, &weights).unwrap();
    // Config as PEFT sets it: r = lora_alpha = new rank, scale 1, the same projections.
    let r = meta["r"].as_u64().unwrap() as usize;
    assert_eq!(ours.meta.rank, r, "{name}");
    assert_eq!(
        ours.meta.alpha,
        meta["lora_alpha"].as_f64().unwrap(),
        "{name}"
    );
    assert_eq!(ours.pairs.len() * 2, t.len(), "{name}");
    for (&(l, m), p) in &ours.pairs {
        assert_eq!(p.scale, 1.0);
        assert!(t.contains_key(&key(l, m, "A")), "{name}: {l} {m:?}");
    }
    (ours, t, meta)
}

fn assert_factors_match(name: &str) -> f32 {
    let (ours, t, _) = run(name);
    let mut worst = 0f32;
    for (&(l, m), p) in &ours.pairs {
        worst = worst.max(max_abs_diff(&p.a, &t[&key(l, m, "A")]));
        worst = worst.max(max_abs_diff(&p.b, &t[&key(l, m, "B")]));
    }
    eprintln!("{name}: worst |ours - PEFT| = {worst:e}");
    assert!(worst < 1e-5, "{name}: worst {worst}");
    worst
}

#[test]
fn merge_cat_matches_peft() {
    assert_factors_match("cat");
}

#[test]
fn merge_cat_of_different_ranks_matches_peft() {
    let (ours, _, _) = run("cat-ac");
    assert_eq!(ours.get(0, Module::Q).unwrap().rank(), 12);
    assert_factors_match("cat-ac");
}

#[test]
fn merge_linear_matches_peft() {
    assert_factors_match("linear");
}

#[test]
fn merge_magnitude_prune_matches_peft() {
    assert_factors_match("magnitude_prune");
}

#[test]
fn merge_ties_total_matches_peft() {
    assert_factors_match("ties-total");
}

#[test]
fn merge_ties_frequency_matches_peft() {
    assert_factors_match("ties-frequency");
}

#[test]
fn merge_svd_matches_peft() {
    let (ours, t, _) = run("svd");
    let mut worst = 0f32;
    for (&(l, m), p) in &ours.pairs {
        let (a, b) = (&t[&key(l, m, "A")], &t[&key(l, m, "B")]);
        assert_eq!(p.a.dims(), a.dims());
        assert_eq!(p.b.dims(), b.dims());
        // B A is the unique rank-8 truncation (signs of singular pairs may differ).
        let ours_delta = p.b.matmul(&p.a).unwrap();
        let peft_delta = b.matmul(a).unwrap();
        worst = worst.max(max_abs_diff(&ours_delta, &peft_delta));
        // column norms of B = singular values; rows of A orthonormal
        let norms = |x: &Tensor| x.sqr().unwrap().sum(0).unwrap().sqrt().unwrap();
        worst = worst.max(max_abs_diff(&norms(&p.b), &norms(b)));
        let gram = p.a.matmul(&p.a.t().unwrap()).unwrap();
        let eye = Tensor::eye(8, candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(max_abs_diff(&gram, &eye) < 1e-5);
    }
    eprintln!("svd: worst |B A - PEFT's B A|, |singular values| = {worst:e}");
    assert!(worst < 1e-5, "svd: worst {worst}");
}

/// DARE's masks come from torch's RNG: check the structure. Every entry of A (B) is 0, one
/// adapter's `wt_i T_i / d`, or their combination (sum for dare_linear, mean when signs agree for
/// dare_ties), and each adapter is kept at about the density.
fn check_dare(name: &str, ties: bool) {
    let (ours, peft, meta) = run(name);
    let d = meta["add_weighted_adapter_kwargs"]["density"]
        .as_f64()
        .unwrap() as f32;
    let a = adapter("a");
    let b = adapter("b");
    let (wa, wb) = (0.7, 0.3);
    let mut kept = [0usize; 2];
    let mut total = 0usize;
    let mut peft_kept = [0usize; 2];
    for (&(l, m), p) in &ours.pairs {
        for side in ["A", "B"] {
            let (pa, pb) = (a.get(l, m).unwrap(), b.get(l, m).unwrap());
            let (ta, tb, got, theirs) = if side == "A" {
                (
                    host(&pa.a).unwrap(),
                    host(&pb.a).unwrap(),
                    host(&p.a).unwrap(),
                    host(&peft[&key(l, m, "A")]).unwrap(),
                )
            } else {
                (
                    host(&pa.b).unwrap(),
                    host(&pb.b).unwrap(),
                    host(&p.b).unwrap(),
                    host(&peft[&key(l, m, "B")]).unwrap(),
                )
            };
            let (fa, fb) = (
                linear::factor_weights(wa, pa.scale),
                linear::factor_weights(wb, pb.scale),
            );
            let (ca, cb) = if side == "A" {
                (fa.0, fb.0)
            } else {
                (fa.1, fb.1)
            };
            for (values, counter) in [(&got, &mut kept), (&theirs, &mut peft_kept)] {
                for j in 0..values.len() {
                    let x = ca * ta[j] / d;
                    let y = cb * tb[j] / d;
                    let both = if ties { (x + y) / 2.0 } else { x + y };
                    let cands = [
                        (0.0, [false, false]),
                        (x, [true, false]),
                        (y, [false, true]),
                        (both, [true, true]),
                    ];
                    let (_, which) = cands
                        .iter()
                        .min_by(|p, q| (p.0 - values[j]).abs().total_cmp(&(q.0 - values[j]).abs()))
                        .unwrap();
                    let best = cands
                        .iter()
                        .map(|c| (c.0 - values[j]).abs())
                        .fold(f32::MAX, f32::min);
                    assert!(
                        best < 1e-5,
                        "{name} {l} {m:?} {side}[{j}]: {} is no candidate",
                        values[j]
                    );
                    counter[0] += which[0] as usize;
                    counter[1] += which[1] as usize;
                }
            }
            total += got.len();
        }
    }
    for c in kept.iter().chain(peft_kept.iter()) {
        let frac = *c as f64 / total as f64;
        // dare_ties drops disagreeing entries too, so its kept fraction is below the density.
        let lo = if ties { 0.3 } else { 0.45 };
        assert!(frac > lo && frac < 0.55, "{name}: kept {frac}");
    }
    // ours and PEFT keep about the same fraction per adapter
    for i in 0..2 {
        let diff = (kept[i] as f64 - peft_kept[i] as f64).abs() / total as f64;
        assert!(
            diff < 0.03,
            "{name}: adapter {i} kept {} vs PEFT {}",
            kept[i],
            peft_kept[i]
        );
    }
}

#[test]
fn merge_dare_linear_has_peft_structure() {
    check_dare("dare_linear", false);
}

#[test]
fn merge_dare_ties_has_peft_structure() {
    check_dare("dare_ties", true);
}

#[test]
fn merge_dare_is_seeded() {
    let ads = [adapter("a"), adapter("b")];
    let m = |seed| MergeMethod::Factors(Combine::DareLinear { density: 0.5, seed });
    let x = merge(&m(1), &ads, &[0.7, 0.3]).unwrap();
    let y = merge(&m(1), &ads, &[0.7, 0.3]).unwrap();
    let z = merge(&m(2), &ads, &[0.7, 0.3]).unwrap();
    let p = |ad: &LoraAdapter| host(&ad.get(0, Module::Q).unwrap().a).unwrap();
    assert_eq!(p(&x), p(&y));
    assert_ne!(p(&x), p(&z));
}

fn delta_diff(x: &LoraAdapter, y: &BTreeMap<(usize, Module), Tensor>) -> f32 {
    let mut worst = 0f32;
    for (k, d) in y {
        let p = x.pairs.get(k).unwrap();
        worst = worst.max(max_abs_diff(&p.delta().unwrap(), d));
    }
    worst
}

/// Σ_i w_i s_i B_i A_i, computed directly.
fn weighted_deltas(ads: &[LoraAdapter], w: &[f64]) -> BTreeMap<(usize, Module), Tensor> {
    let mut out: BTreeMap<(usize, Module), Tensor> = BTreeMap::new();
    for (ad, &wi) in ads.iter().zip(w) {
        for (k, p) in &ad.pairs {
            let d = (p.delta().unwrap() * wi).unwrap();
            let e = match out.remove(k) {
                Some(prev) => (prev + d).unwrap(),
                None => d,
            };
            out.insert(*k, e);
        }
    }
    out
}

#[test]
fn merge_cat_delta_is_the_weighted_sum_of_deltas() {
    let ads = [adapter("a"), adapter("c")];
    let w = [0.7, -1.3];
    let m = merge(&MergeMethod::Cat, &ads, &w).unwrap();
    assert!(delta_diff(&m, &weighted_deltas(&ads, &w)) < 1e-5);
}

#[test]
fn merge_linear_of_one_adapter_is_the_adapter() {
    let a = adapter("a");
    for method in [MergeMethod::Factors(Combine::Linear), MergeMethod::Cat] {
        // PEFT turns every method into `linear` for a single adapter.
        let m = merge(&method, std::slice::from_ref(&a), &[1.0]).unwrap();
        assert_eq!(m.meta.rank, 8);
        assert!(delta_diff(&m, &weighted_deltas(std::slice::from_ref(&a), &[1.0])) < 1e-5);
    }
    // A negative weight flips the delta (the sign goes on A only).
    let m = merge(
        &MergeMethod::Factors(Combine::Linear),
        std::slice::from_ref(&a),
        &[-0.5],
    )
    .unwrap();
    assert!(delta_diff(&m, &weighted_deltas(&[a], &[-0.5])) < 1e-5);
}

#[test]
fn merge_ties_at_density_one_with_equal_signs_is_the_mean() {
    // Two copies of one adapter: every sign agrees, so ties is the mean of the weighted
    // factors (PEFT's disjoint merge is a mean, not the sum): √(0.5 s)·T on each side, which
    // linear gives with 2·√(w s) = √(0.5 s), w = 0.125.
    let a = adapter("a");
    let ads = [a.clone(), a.clone()];
    let ties = MergeMethod::Factors(Combine::Ties {
        density: 1.0,
        sign: MajoritySign::Total,
    });
    let t = merge(&ties, &ads, &[0.5, 0.5]).unwrap();
    let l = merge(
        &MergeMethod::Factors(Combine::Linear),
        &ads,
        &[0.125, 0.125],
    )
    .unwrap();
    for (k, p) in &t.pairs {
        let q = &l.pairs[k];
        assert!(max_abs_diff(&p.a, &q.a) < 1e-6 && max_abs_diff(&p.b, &q.b) < 1e-6);
    }
    // ... and, with weight 1 on each, the original delta.
    let t = merge(&ties, &ads, &[1.0, 1.0]).unwrap();
    assert!(delta_diff(&t, &weighted_deltas(&[a], &[1.0])) < 1e-5);
}

#[test]
fn merge_svd_at_full_rank_is_exact_and_truncation_is_optimal() {
    let ads = [adapter("a"), adapter("b")];
    let w = [0.7, 0.3];
    let full = MergeMethod::Svd {
        combine: Combine::Linear,
        rank: Some(16),
        clamp: None,
    };
    let m = merge(&full, &ads, &w).unwrap();
    let exact = weighted_deltas(&ads, &w);
    assert!(delta_diff(&m, &exact) < 1e-5);
    // The dense path (used by the pruned variants) gives the same truncation as the factored one.
    let k = 5;
    let m = merge(
        &MergeMethod::Svd {
            combine: Combine::Linear,
            rank: Some(k),
            clamp: None,
        },
        &ads,
        &w,
    )
    .unwrap();
    for (key, d) in &exact {
        let (out_f, in_f) = d.dims2().unwrap();
        let dense: Vec<f64> = host(d).unwrap().into_iter().map(f64::from).collect();
        let s = svd::svd(&dense, out_f, in_f);
        let p = &m.pairs[key];
        let got = host(&p.b.matmul(&p.a).unwrap()).unwrap();
        let mut err = 0f64;
        for i in 0..out_f {
            for c in 0..in_f {
                let want: f64 = (0..k).map(|j| s.u[j][i] * s.s[j] * s.v[j][c]).sum();
                err = err.max((want - got[i * in_f + c] as f64).abs());
            }
        }
        assert!(err < 1e-5, "{key:?}: {err}");
    }
}

#[test]
fn merge_svd_variants_run_and_keep_rank() {
    let ads = [adapter("a"), adapter("b")];
    for name in [
        "ties_svd",
        "dare_linear_svd",
        "dare_ties_svd",
        "magnitude_prune_svd",
    ] {
        let opts = MergeOptions {
            density: Some(0.5),
            svd_rank: Some(4),
            ..MergeOptions::default()
        };
        let m = merge(
            &MergeMethod::from_name(name, &opts).unwrap(),
            &ads,
            &[0.7, 0.3],
        )
        .unwrap();
        assert_eq!(m.meta.rank, 4);
        let p = m.get(1, Module::Down).unwrap();
        assert_eq!(p.a.dims(), &[4, 128]);
        assert_eq!(p.b.dims(), &[64, 4]);
    }
    // svd_clamp bounds every entry of both factors by the quantile
    let opts = MergeOptions {
        svd_rank: Some(8),
        svd_clamp: Some(0.9),
        ..MergeOptions::default()
    };
    let m = merge(
        &MergeMethod::from_name("svd", &opts).unwrap(),
        &ads,
        &[0.7, 0.3],
    )
    .unwrap();
    let p = m.get(0, Module::Q).unwrap();
    let mut all: Vec<f64> = host(&p.a)
        .unwrap()
        .into_iter()
        .chain(host(&p.b).unwrap())
        .map(f64::from)
        .collect();
    all.sort_by(|a, b| a.total_cmp(b));
    let hi = all[all.len() - 1];
    assert!(all.iter().all(|x| x.abs() <= hi + 1e-7));
    assert!(
        (all.iter().filter(|x| **x == hi).count()) > 1,
        "clamped at the quantile"
    );
}

#[test]
fn merge_rejects_what_peft_rejects() {
    let (a, c) = (adapter("a"), adapter("c"));
    let err = merge(
        &MergeMethod::Factors(Combine::Linear),
        &[a.clone(), c.clone()],
        &[1.0, 1.0],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("equal rank") && err.contains("r=4"), "{err}");
    assert!(merge(&MergeMethod::Cat, std::slice::from_ref(&a), &[1.0, 2.0]).is_err());
    assert!(MergeMethod::from_name("ties", &MergeOptions::default()).is_err());
    assert!(MergeMethod::from_name(
        "dare_linear",
        &MergeOptions {
            density: Some(-0.1),
            ..MergeOptions::default()
        }
    )
    .is_err());
    assert!(MergeMethod::from_name(
        "dare_linear",
        &MergeOptions {
            density: Some(0.0),
            ..MergeOptions::default()
        }
    )
    .is_err());
    assert!(MergeMethod::from_name("slerp", &MergeOptions::default()).is_err());
    let too_big = MergeMethod::Svd {
        combine: Combine::Linear,
        rank: Some(40),
        clamp: None,
    };
    let err = merge(&too_big, &[a.clone(), c.clone()], &[1.0, 1.0])
        .unwrap_err()
        .to_string();
    assert!(err.contains("at most 32"), "{err}");
    // an adapter for another base model: its projection shapes differ
    let mut other = c.clone();
    let p = other.pairs.get_mut(&(0, Module::Q)).unwrap();
    p.a = Tensor::zeros((4, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = merge(&MergeMethod::Cat, &[a, other], &[1.0, 1.0])
        .unwrap_err()
        .to_string();
    assert!(err.contains("different base models"), "{err}");
    for n in METHOD_NAMES {
        let opts = MergeOptions {
            density: Some(0.5),
            ..MergeOptions::default()
        };
        assert_eq!(MergeMethod::from_name(n, &opts).unwrap().name(), n);
    }
}

#[test]
fn merge_rslora_adapter_keeps_its_strength() {
    // adapter-rs: rsLoRA, alpha_pattern on o_proj, rank_pattern (r 4) on layer-1 q_proj.
    // PEFT would write use_rslora = true with alpha = r (√r too strong); soup writes the
    // intended adapter, whose delta equals the source's.
    let rs = load_peft(&reference().join("adapter-rs"), &Device::Cpu).unwrap();
    let m = merge(
        &MergeMethod::Factors(Combine::Linear),
        std::slice::from_ref(&rs),
        &[1.0],
    )
    .unwrap();
    assert!(!m.meta.use_rslora);
    assert_eq!(m.get(1, Module::Q).unwrap().rank(), 4);
    assert!(delta_diff(&m, &weighted_deltas(std::slice::from_ref(&rs), &[1.0])) < 1e-5);
    // and survives a PEFT round trip with the same deltas
    let dir = tempfile::tempdir().unwrap();
    save_peft(&m, &dir.path().join("m")).unwrap();
    let back = load_peft(&dir.path().join("m"), &Device::Cpu).unwrap();
    assert!(delta_diff(&back, &weighted_deltas(std::slice::from_ref(&rs), &[1.0])) < 1e-5);
    // cat with rank_pattern: PEFT pads the smaller projection to the config rank with zeros
    let a = adapter("a");
    let m = merge(&MergeMethod::Cat, &[a.clone(), rs.clone()], &[0.5, 0.5]).unwrap();
    assert_eq!(m.get(1, Module::Q).unwrap().rank(), 16);
    assert!(delta_diff(&m, &weighted_deltas(&[a, rs], &[0.5, 0.5])) < 1e-5);
}

#[test]
fn merge_fold_cat_equals_the_stack() {
    let ads = [adapter("a"), adapter("c")];
    let layers = 2;
    let values: Vec<f32> = (0..2 * layers * ALL_MODULES.len())
        .map(|i| 0.1 * i as f32 - 0.7)
        .collect();
    let folded = fold_cat(&ads, layers, &values).unwrap();
    let deltas = merge_into_base(&ads, layers, &values).unwrap();
    for (&(l, m), d) in &deltas {
        let mut want: Option<Tensor> = None;
        for (i, ad) in ads.iter().enumerate() {
            let w = values[(i * layers + l) * ALL_MODULES.len() + m.index()] as f64;
            let x = (ad.get(l, m).unwrap().delta().unwrap() * w).unwrap();
            want = Some(match want {
                Some(p) => (p + x).unwrap(),
                None => x,
            });
        }
        let want = want.unwrap();
        assert!(max_abs_diff(d, &want) < 1e-5);
        assert!(max_abs_diff(&folded.get(l, m).unwrap().delta().unwrap(), &want) < 1e-5);
        assert_eq!(folded.get(l, m).unwrap().rank(), 12);
    }
    // The export is a valid PEFT adapter: save, load, same deltas.
    let dir = tempfile::tempdir().unwrap();
    save_peft(&folded, &dir.path().join("cat")).unwrap();
    let back = load_peft(&dir.path().join("cat"), &Device::Cpu).unwrap();
    assert!(delta_diff(&back, &deltas) < 1e-5);
    assert!(fold_cat(&ads, layers, &values[1..]).is_err());
    assert!(
        fold_cat(&ads, 1, &values[..2 * ALL_MODULES.len()]).is_err(),
        "layer 1 beyond the weights"
    );
    let ones = vec![1.0f32; values.len()];
    let single = adapter_deltas(&ads[0]).unwrap();
    assert_eq!(single.len(), ads[0].pairs.len());
    let _ = merge_into_base(&ads, layers, &ones).unwrap();
}
