//! Merge timings on SmolLM2-135M shapes (hidden 576, intermediate 1536, 30 layers, k/v 192 wide)
//! for two random r=16 adapters on q,k,v,up,down: the work `bench/torch_reference.py` times for
//! PEFT's `add_weighted_adapter`. A benchmark that reports, not a test that asserts.
//!
//! cargo run --release -p soup-core --example merge_bench [-- REPEATS]

use candle_core::{Device, Tensor};
use soup_core::lora::adapter::{LoraAdapter, Module, ALL_MODULES};
use soup_core::merge::{fold_cat, merge, merge_into_base, MergeMethod, MergeOptions};
use std::time::Instant;

fn shapes(m: Module) -> (usize, usize) {
    match m {
        Module::Q | Module::O => (576, 576),
        Module::K | Module::V => (192, 576),
        Module::Gate | Module::Up => (1536, 576),
        Module::Down => (576, 1536),
    }
}

fn adapter(name: &str, seed: u64) -> soup_core::Result<LoraAdapter> {
    let targets = Module::parse_list("q,k,v,up,down")?;
    let dev = Device::Cpu;
    let mut ad = LoraAdapter::init(
        name,
        "SmolLM2-135M",
        &shapes,
        30,
        &targets,
        16,
        32.0,
        false,
        seed,
        &dev,
    )?;
    // Trained adapters have non-zero B: give them some.
    for (i, p) in ad.pairs.values_mut().enumerate() {
        let dims = p.b.dims().to_vec();
        p.b = (Tensor::randn(0f32, 0.02, dims, &dev)? * (1.0 + (i % 3) as f64))?;
    }
    Ok(ad)
}

fn main() -> soup_core::Result<()> {
    let repeats: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let ads = [adapter("a", 1)?, adapter("b", 2)?];
    let weights = [0.7, 0.3];
    let opts = MergeOptions {
        density: Some(0.5),
        seed: 1234,
        ..MergeOptions::default()
    };
    println!(
        "two r=16 adapters, SmolLM2-135M shapes, 30 layers x q,k,v,up,down; best of {repeats}"
    );
    for name in [
        "cat",
        "linear",
        "ties",
        "dare_linear",
        "dare_ties",
        "magnitude_prune",
        "svd",
    ] {
        let method = MergeMethod::from_name(name, &opts)?;
        let mut best = f64::MAX;
        for _ in 0..repeats {
            let t = Instant::now();
            let m = merge(&method, &ads, &weights)?;
            best = best.min(t.elapsed().as_secs_f64());
            std::hint::black_box(m);
        }
        println!("{name:>16}: {best:.3} s");
    }
    let values = vec![0.5f32; 2 * 30 * ALL_MODULES.len()];
    let t = Instant::now();
    std::hint::black_box(fold_cat(&ads, 30, &values)?);
    println!("{:>16}: {:.3} s", "fold_cat", t.elapsed().as_secs_f64());
    let t = Instant::now();
    std::hint::black_box(merge_into_base(&ads, 30, &values)?);
    println!(
        "{:>16}: {:.3} s",
        "merge_into_base",
        t.elapsed().as_secs_f64()
    );
    // The pruned SVD variants need a dense top-k SVD per projection (subspace iteration).
    let t = Instant::now();
    std::hint::black_box(merge(
        &MergeMethod::from_name("ties_svd", &opts)?,
        &ads,
        &weights,
    )?);
    println!(
        "{:>16}: {:.3} s (once)",
        "ties_svd",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
