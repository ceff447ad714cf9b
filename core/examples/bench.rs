//! soup's performance figures on the same work as ../shared/bench/torch_reference.py, one JSON
//! line per figure: greedy generation at batch 1 and 16 (64-token prompt, 128 new tokens), a
//! LoRA training step (r=16 on q,k,v,up,down, batch 8 x 256 tokens), and merges of two r=16
//! adapters. Run the two back to back and compare medians:
//!
//!     cargo run --release -p soup-core --example bench -- --model DIR [--only gen,train,merge] [--reps 3]

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use serde_json::json;
use soup_core::generate::{generate_ids, SamplingConfig};
use soup_core::lora::{AdapterStack, LoraAdapter, Module};
use soup_core::merge::{merge, MergeMethod, MergeOptions};
use soup_core::model::load::load_hf_weights;
use soup_core::model::Llama;
use soup_core::train::batch::loss_and_grads;
use soup_core::train::optim::{clip_grad_norm, AdamW, AdamWParams};
use soup_core::train::{LoraSpec, LoraTrainable, TrainSeq, Trainable};
use std::time::Instant;

fn peak_rss_mb() -> f64 {
    // VmHWM: the process's peak resident set.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .map(|l| l.to_string())
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn random_ids(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<u32> {
    (0..n).map(|_| rng.gen_range(100..1000)).collect()
}

fn bench_generation(model: &Llama, batch: usize, reps: usize) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let prompts: Vec<Vec<u32>> = (0..batch).map(|_| random_ids(&mut rng, 64)).collect();
    let cfg = SamplingConfig {
        max_new_tokens: 128,
        ..Default::default()
    };
    let mut times = Vec::new();
    for r in 0..=reps {
        let t = Instant::now();
        // No EOS: every row generates all 128 tokens, as min_new_tokens does in the reference.
        let out = generate_ids(
            model,
            &AdapterStack::base(),
            &prompts,
            &cfg,
            &[],
            0,
            &mut |_, _| false,
        )
        .unwrap();
        assert!(out.iter().all(|o| o.len() == 128));
        if r > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let med = median(times);
    println!(
        "{}",
        json!({"figure": "generate_greedy", "batch": batch, "prompt_tokens": 64, "new_tokens": 128,
               "seconds_median": med, "new_tokens_per_s": (batch * 128) as f64 / med, "peak_rss_mb": peak_rss_mb()})
    );
}

fn bench_training(model: &Llama, steps: usize) {
    let spec = LoraSpec::default();
    let tr = LoraTrainable::new(model, "bench", "bench", &spec, 0, 0.0).unwrap();
    let vars = tr.vars();
    let mut opt = AdamW::new(vars.clone(), AdamWParams::default()).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let seqs: Vec<TrainSeq> = (0..8)
        .map(|_| TrainSeq {
            ids: random_ids(&mut rng, 256),
            target: vec![true; 256],
        })
        .collect();
    let refs: Vec<&TrainSeq> = seqs.iter().collect();
    let mode = soup_core::model::Mode::Train {
        dropout: 0.0,
        seed: 0,
    };
    let mut times = Vec::new();
    let mut last = 0f32;
    for s in 0..=steps {
        let t = Instant::now();
        let mut out = loss_and_grads(model, &tr.stack().unwrap(), &refs, mode, &vars, 1.0).unwrap();
        clip_grad_norm(&mut out.grads, 1.0).unwrap();
        opt.step(&out.grads, 3e-4).unwrap();
        last = out.loss as f32;
        if s > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let med = median(times);
    println!(
        "{}",
        json!({"figure": "lora_train_step", "batch": 8, "seq": 256, "rank": 16, "targets": ["q_proj","k_proj","v_proj","up_proj","down_proj"],
               "seconds_median": med, "tokens_per_s": 2048.0 / med, "final_loss": last, "peak_rss_mb": peak_rss_mb()})
    );
}

fn random_adapter(model: &Llama, name: &str, seed: u64) -> LoraAdapter {
    let shapes = |m: Module| model.projection_shape(m);
    let mut a = LoraAdapter::init(
        name,
        "bench",
        &shapes,
        model.layers.len(),
        &LoraSpec::default().targets,
        16,
        32.0,
        false,
        seed,
        &Device::Cpu,
    )
    .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for p in a.pairs.values_mut() {
        let n = p.b.elem_count();
        let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-0.01..0.01)).collect();
        p.b = Tensor::from_vec(v, p.b.shape(), &Device::Cpu).unwrap();
    }
    a
}

fn bench_merge(model: &Llama, reps: usize) {
    let ads = vec![random_adapter(model, "a", 1), random_adapter(model, "b", 2)];
    for (name, density) in [
        ("cat", None),
        ("linear", None),
        ("ties", Some(0.5)),
        ("dare_ties", Some(0.5)),
        ("svd", None),
    ] {
        let method = MergeMethod::from_name(
            name,
            &MergeOptions {
                density,
                ..Default::default()
            },
        )
        .unwrap();
        let mut times = Vec::new();
        for _ in 0..reps {
            let t = Instant::now();
            merge(&method, &ads, &[0.7, 0.3]).unwrap();
            times.push(t.elapsed().as_secs_f64());
        }
        println!(
            "{}",
            json!({"figure": "merge", "method": name, "rank": 16, "seconds_median": median(times)})
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let Some(model_dir) = get("--model") else {
        eprintln!("usage: bench --model HF_DIR [--only gen,train,merge] [--reps N]");
        std::process::exit(2);
    };
    let only = get("--only").unwrap_or_else(|| "gen,train,merge".into());
    let reps: usize = get("--reps").and_then(|r| r.parse().ok()).unwrap_or(3);
    let model = match load_hf_weights(std::path::Path::new(&model_dir), &Device::Cpu) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("cannot load {model_dir}: {e}");
            std::process::exit(1);
        }
    };
    if only.contains("gen") {
        bench_generation(&model, 1, reps);
        bench_generation(&model, 16, reps);
    }
    if only.contains("train") {
        bench_training(&model, 5);
    }
    if only.contains("merge") {
        bench_merge(&model, reps);
    }
}
