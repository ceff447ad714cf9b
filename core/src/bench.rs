//! soup's performance figures on the same work as ../shared/bench/torch_reference.py, one JSON
//! object per figure: greedy generation at batch 1 and 16 (64-token prompt, 128 new tokens), a
//! LoRA training step (r=16 on q,k,v,up,down, batch 8 x 256 tokens), and merges of two r=16
//! adapters. `soup bench` prints them; run the reference beside it and compare medians.

use crate::error::Result;
use crate::generate::{generate_ids, SamplingConfig};
use crate::lora::{AdapterStack, LoraAdapter, Module, ALL_MODULES};
use crate::merge::{merge, MergeMethod, MergeOptions};
use crate::model::{Llama, Mode, ModelConfig};
use crate::train::batch::loss_and_grads;
use crate::train::optim::{clip_grad_norm, AdamW, AdamWParams};
use crate::train::{LoraSpec, LoraTrainable, TrainSeq, Trainable};
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Instant;

/// Which figures to measure and how often.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub generation: bool,
    pub training: bool,
    pub merges: bool,
    /// The CAT learning-rate sweep on a task with known best weights (not a speed figure; one
    /// line per learning rate, see [`crate::train::cat_check`]).
    pub cat_lr: bool,
    /// What bf16 frozen weights cost in quality against f32 on [`PARITY_PROMPTS`] (greedy
    /// agreement, teacher-forced argmax agreement, largest logit error). Needs an f32 model.
    pub bf16_quality: bool,
    /// The parity prompts as token ids (the model's tokenizer on [`PARITY_PROMPTS`]); random
    /// ids when there is no tokenizer (random weights).
    pub parity_prompts: Vec<Vec<u32>>,
    /// Timed repetitions per figure (after one untimed warm-up); the median is reported.
    pub reps: usize,
}

/// Prompts on which bf16 frozen weights are compared with f32: plain text, a word problem in
/// the shape of the code-math task, code, a manual question, and a ChatML turn.
pub const PARITY_PROMPTS: [&str; 8] = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world!  It costs $12.50 (about 3 cafés)—naïve?\n\tDone: 2024-11-28 → 42",
    "Question: Tom has 3 boxes with 7 apples each. He gives away 5 apples. How many apples does he have left?\nAnswer:",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Write a Python program that prints the sum of the numbers from 1 to 100.\n```python\n",
    "According to the manual, to reset the device you must",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time, in a small village by the sea, there lived",
];

/// Measures the selected figures on `model`, calling `emit` with each as soon as it is known.
/// Every figure carries the machine it was measured on ([`machine`]): a ratio holds on one
/// kind of CPU, not on every one.
pub fn run(model: &Llama, opts: &BenchOptions, emit: &mut dyn FnMut(Value)) -> Result<()> {
    let host = machine();
    let emit = &mut |figure: Value| emit(on_machine(figure, &host));
    if opts.generation {
        for batch in [1, 16] {
            emit(bench_generation(model, batch, opts.reps)?);
        }
    }
    if opts.training {
        // The reference's work (no dropout), then soup's default LoRA dropout of 0.05.
        for dropout in [0.0, 0.05] {
            emit(bench_training(model, opts.reps.max(3), dropout)?);
        }
    }
    if opts.merges {
        for figure in bench_merges(model, opts.reps)? {
            emit(figure);
        }
    }
    if opts.bf16_quality {
        emit(bf16_quality(model, &opts.parity_prompts, 64)?);
    }
    if opts.cat_lr {
        cat_lr_sweep(model, emit)?;
    }
    Ok(())
}

/// Random prompts of `len` ids standing in for [`PARITY_PROMPTS`] on a model without a
/// tokenizer (random weights of a config).
pub fn random_parity_prompts(vocab: usize, len: usize) -> Vec<Vec<u32>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    (0..PARITY_PROMPTS.len())
        .map(|_| random_ids(&mut rng, len, vocab))
        .collect()
}

/// What bf16 frozen weights cost against the f32 `model` on `prompts`: each prompt's greedy
/// continuation of `new_tokens` under both (identical ones, and the share of tokens before the
/// first difference), then both models teacher-forced on prompt + f32 continuation: the share
/// of positions with the same argmax and the largest absolute logit difference.
pub fn bf16_quality(model: &Llama, prompts: &[Vec<u32>], new_tokens: usize) -> Result<Value> {
    if model.weight_dtype() != DType::F32 || model.dtype() != DType::F32 {
        return Err(crate::error::CoreError::Internal(
            "the bf16 quality figure compares against f32: run it with --dtype f32".into(),
        ));
    }
    let bf = model.clone().with_frozen_bf16()?;
    let cfg = SamplingConfig {
        max_new_tokens: new_tokens,
        ..Default::default()
    };
    let greedy = |m: &Llama, p: &Vec<u32>| -> Result<Vec<u32>> {
        let mut out = generate_ids(
            m,
            &AdapterStack::base(),
            std::slice::from_ref(p),
            &cfg,
            &[],
            0,
            &mut |_, _| false,
        )?;
        Ok(out.pop().unwrap_or_default())
    };
    let (mut identical, mut agreed, mut total) = (0usize, 0usize, 0usize);
    let (mut same_argmax, mut positions) = (0usize, 0usize);
    let (mut max_err, mut max_logit) = (0f32, 0f32);
    for p in prompts {
        let a = greedy(model, p)?;
        let b = greedy(&bf, p)?;
        identical += usize::from(a == b);
        agreed += a.iter().zip(&b).take_while(|(x, y)| x == y).count();
        total += a.len();
        let ids: Vec<u32> = p.iter().chain(&a).copied().collect();
        let n = ids.len();
        let ids = Tensor::from_vec(ids, (1, n), model.device())?;
        let input = crate::model::ForwardInput::default();
        let la = model.forward(&ids, &input, None, &AdapterStack::base(), Mode::Infer)?;
        let lb = bf.forward(&ids, &input, None, &AdapterStack::base(), Mode::Infer)?;
        let err = (&la - &lb)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        max_err = max_err.max(err);
        let scale = la.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        max_logit = max_logit.max(scale);
        let aa = la.squeeze(0)?.argmax(1)?.to_vec1::<u32>()?;
        let ab = lb.squeeze(0)?.argmax(1)?.to_vec1::<u32>()?;
        same_argmax += aa.iter().zip(&ab).filter(|(x, y)| x == y).count();
        positions += aa.len();
    }
    Ok(json!({
        "figure": "bf16_weights_quality", "prompts": prompts.len(), "new_tokens": new_tokens,
        "greedy_identical": format!("{identical}/{}", prompts.len()),
        "greedy_tokens_before_first_difference": agreed as f64 / total.max(1) as f64,
        "teacher_forced_same_argmax": same_argmax as f64 / positions.max(1) as f64,
        "max_abs_logit_error": max_err, "max_abs_logit": max_logit,
    }))
}

/// The learning rates the CAT sweep tries with the default start, and the old default (1e-4
/// from the paper's random start) for comparison.
pub const CAT_SWEEP_LRS: [f64; 6] = [1e-3, 3e-3, 1e-2, 3e-2, 5e-2, 1e-1];

/// CAT's learning rate against held-out loss: two adapters that memorized disjoint facts,
/// CAT on half of the first one's facts, held-out loss on the other half; every other setting
/// is a CAT job's default. One line per run.
pub fn cat_lr_sweep(model: &Llama, emit: &mut dyn FnMut(Value)) -> Result<()> {
    use crate::train::cat::{CatInit, DEFAULT_CAT_LR};
    use crate::train::cat_check::{known_task, run_cat};
    let t0 = Instant::now();
    let task = known_task(model, 16, 60)?;
    emit(json!({
        "figure": "cat_lr_sweep_skills",
        "skill_final_loss": [task.skill_loss.0, task.skill_loss.1],
        "seconds": t0.elapsed().as_secs_f64(),
    }));
    let base = crate::engine::CatJob::new("sweep", "", Vec::new(), Vec::new());
    let mut runs: Vec<(f64, CatInit, Option<usize>)> = CAT_SWEEP_LRS
        .iter()
        .map(|&lr| (lr, CatInit::Uniform, None))
        .collect();
    // What CAT did before it had its own settings: lr 1e-4, the paper's random start, the
    // dozen steps a small sample gives.
    runs.push((1e-4, CatInit::Normal, Some(12)));
    // Data from the first adapter only (best weights: all on it), and a 3:1 mix of both
    // adapters' facts (best weights inside the simplex).
    let mixed = task.mixed(3);
    for (name, task, (lr, init, steps)) in runs
        .iter()
        .map(|r| ("a-only", &task, *r))
        .chain(runs.iter().map(|r| ("mixed-3:1", &mixed, *r)))
    {
        let mut cfg = base.train.clone();
        cfg.lr = lr;
        if let Some(n) = steps {
            cfg.min_steps = n;
        }
        let t = run_cat(model, task, base.param, init, &cfg)?;
        let m = &t.movement;
        let h = m.heldout.as_ref();
        emit(json!({
            "figure": "cat_lr_sweep",
            "data": name,
            "lr": lr,
            "default": lr == DEFAULT_CAT_LR && init == CatInit::Uniform,
            "init": init.name(),
            "steps": t.steps,
            "heldout_loss_start": h.map(|h| h.start),
            "heldout_loss_learned": h.map(|h| h.learned),
            "mean_abs_delta": m.mean_abs_delta,
            "w_a_mean": m.spread[0].mean,
            "w_b_mean": m.spread[1].mean,
            "a_largest_in": format!("{}/{}", m.spread[0].largest_in, m.spread[0].slots),
            "verdict": m.verdict.label(),
            "seconds": t.seconds,
        }));
    }
    Ok(())
}

/// A model of `cfg`'s shapes with random weights (uniform, std 0.02; unit norms): speed figures do
/// not depend on the weights, and it needs no download.
pub fn random_model(cfg: ModelConfig, device: &Device, seed: u64) -> Result<Llama> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut normal = |shape: &[usize]| -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-0.035f32..0.035)).collect();
        Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
    };
    let ones = |n: usize| Tensor::ones(n, DType::F32, &Device::Cpu);
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    let qd = cfg.num_attention_heads * cfg.head_dim;
    let kvd = cfg.num_key_value_heads * cfg.head_dim;
    let mut t = HashMap::new();
    t.insert(
        "model.embed_tokens.weight".to_string(),
        normal(&[cfg.vocab_size, h])?,
    );
    if !cfg.tie_word_embeddings {
        t.insert("lm_head.weight".into(), normal(&[cfg.vocab_size, h])?);
    }
    t.insert("model.norm.weight".into(), ones(h)?);
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        for (name, out, inp) in [
            ("self_attn.q_proj", qd, h),
            ("self_attn.k_proj", kvd, h),
            ("self_attn.v_proj", kvd, h),
            ("self_attn.o_proj", h, qd),
            ("mlp.gate_proj", i, h),
            ("mlp.up_proj", i, h),
            ("mlp.down_proj", h, i),
        ] {
            t.insert(format!("{p}.{name}.weight"), normal(&[out, inp])?);
            if cfg.attention_bias
                && matches!(
                    name,
                    "self_attn.q_proj" | "self_attn.k_proj" | "self_attn.v_proj"
                )
            {
                t.insert(format!("{p}.{name}.bias"), normal(&[out])?);
            }
        }
        t.insert(format!("{p}.input_layernorm.weight"), ones(h)?);
        t.insert(format!("{p}.post_attention_layernorm.weight"), ones(h)?);
    }
    Llama::from_tensors(cfg, t, device)
}

/// The CPU flags that decide which matrix-product kernels can run (AVX2/FMA, AVX-512, its
/// bf16 dot products, Intel's AMX tiles).
pub const CPU_FLAGS_THAT_MATTER: [&str; 6] = [
    "avx2",
    "fma",
    "avx512f",
    "avx512_bf16",
    "avx512_vnni",
    "amx_tile",
];

/// The machine a figure was measured on: the CPU model, its kind, which of
/// [`CPU_FLAGS_THAT_MATTER`] it has (from /proc/cpuinfo; "unknown" and no flags elsewhere),
/// and the threads candle's matrix product uses.
pub fn machine() -> Value {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = Cpu::parse(&info);
    json!({
        "cpu": cpu.model,
        "cpu_kind": cpu.kind,
        "cpu_flags": cpu.flags,
        "threads": candle_core::utils::get_num_threads(),
    })
}

/// `figure` with the fields of `host` ([`machine`]) that it does not set itself.
pub fn on_machine(mut figure: Value, host: &Value) -> Value {
    if let (Some(obj), Some(host)) = (figure.as_object_mut(), host.as_object()) {
        for (k, v) in host {
            obj.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    figure
}

/// The first processor of /proc/cpuinfo, as a figure names it.
#[derive(Debug, PartialEq)]
struct Cpu {
    /// `model name`.
    model: String,
    /// Vendor, family and model numbers ("AuthenticAMD family 26 model 2"): a cloud VM's model
    /// name can be just "AMD EPYC" for CPUs of different generations, and the family tells
    /// them apart.
    kind: String,
    /// The flags of [`CPU_FLAGS_THAT_MATTER`] it lists.
    flags: Vec<&'static str>,
}

impl Cpu {
    fn parse(cpuinfo: &str) -> Self {
        // The first processor's block: the fields repeat for every processor.
        let first = cpuinfo.split("\n\n").next().unwrap_or_default();
        let field = |name: &str| {
            first
                .lines()
                .find(|l| l.split(':').next().map(str::trim) == Some(name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        };
        let model = field("model name").unwrap_or_else(|| "unknown".to_string());
        let kind = match (field("vendor_id"), field("cpu family"), field("model")) {
            (Some(vendor), Some(family), Some(number)) => {
                format!("{vendor} family {family} model {number}")
            }
            _ => "unknown".to_string(),
        };
        let have = field("flags").unwrap_or_default();
        let have: Vec<&str> = have.split_whitespace().collect();
        let flags = CPU_FLAGS_THAT_MATTER
            .iter()
            .copied()
            .filter(|f| have.contains(f))
            .collect();
        Cpu { model, kind, flags }
    }
}

/// The process's peak resident set (VmHWM), in MB.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Token ids in 100..1000 as the reference draws them (fewer on a tiny test vocabulary).
fn random_ids(rng: &mut rand::rngs::StdRng, n: usize, vocab: usize) -> Vec<u32> {
    let hi = vocab.min(1000) as u32;
    (0..n).map(|_| rng.gen_range(hi / 10..hi)).collect()
}

/// Times `f` once untimed, then `reps` times; returns the median seconds.
fn timed(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut times = Vec::new();
    for r in 0..=reps.max(1) {
        let t = Instant::now();
        f()?;
        if r > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    Ok(median(times))
}

fn bench_generation(model: &Llama, batch: usize, reps: usize) -> Result<Value> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let prompts: Vec<Vec<u32>> = (0..batch)
        .map(|_| random_ids(&mut rng, 64, model.cfg.vocab_size))
        .collect();
    let cfg = SamplingConfig {
        max_new_tokens: 128,
        ..Default::default()
    };
    let med = timed(reps, || {
        // No EOS: every row generates all 128 tokens, as min_new_tokens does in the reference.
        let out = generate_ids(
            model,
            &AdapterStack::base(),
            &prompts,
            &cfg,
            &[],
            0,
            &mut |_, _| false,
        )?;
        debug_assert!(out.iter().all(|o| o.len() == 128));
        Ok(())
    })?;
    Ok(
        json!({"figure": "generate_greedy", "batch": batch, "prompt_tokens": 64, "new_tokens": 128,
              "dtype": format!("{:?}", model.dtype()),
              "weight_dtype": format!("{:?}", model.weight_dtype()), "seconds_median": med,
              "new_tokens_per_s": (batch * 128) as f64 / med, "peak_rss_mb": peak_rss_mb()}),
    )
}

/// Multiply-adds of one token through the frozen model, counted as FLOPs (2 per MAC): every
/// projection, the lm_head and attention's two matmuls at sequence length `seq`.
pub fn forward_flops_per_token(model: &Llama, seq: usize) -> f64 {
    let per_layer: usize = ALL_MODULES
        .iter()
        .map(|&m| {
            let (o, i) = model.projection_shape(m);
            o * i
        })
        .sum();
    let cfg = &model.cfg;
    let attention = 2 * seq * cfg.num_attention_heads * cfg.head_dim;
    let macs = cfg.num_hidden_layers * (per_layer + attention) + cfg.vocab_size * cfg.hidden_size;
    2.0 * macs as f64
}

fn bench_training(model: &Llama, steps: usize, dropout: f32) -> Result<Value> {
    let (batch, seq) = (8, 256);
    let spec = LoraSpec::default();
    let tr = LoraTrainable::new(model, "bench", "bench", &spec, 0, 0.0)?;
    let vars = tr.vars();
    let mut opt = AdamW::new(vars.clone(), AdamWParams::default())?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let seqs: Vec<TrainSeq> = (0..batch)
        .map(|_| TrainSeq {
            ids: random_ids(&mut rng, seq, model.cfg.vocab_size),
            target: vec![true; seq],
        })
        .collect();
    let refs: Vec<&TrainSeq> = seqs.iter().collect();
    let mode = Mode::Train { dropout, seed: 0 };
    let mut last = 0f64;
    let med = timed(steps, || {
        let mut out = loss_and_grads(model, &tr.stack()?, &refs, mode, &vars, 1.0)?;
        clip_grad_norm(&mut out.grads, 1.0)?;
        opt.step(&out.grads, 3e-4)?;
        last = out.loss;
        Ok(())
    })?;
    let tokens_per_s = (batch * seq) as f64 / med;
    // Forward plus the backward to the activations (the frozen weights get no gradient): twice
    // the forward. The checkpointing's extra forward is not counted as useful work.
    let model_flops = 2.0 * forward_flops_per_token(model, seq) * tokens_per_s;
    Ok(
        json!({"figure": "lora_train_step", "batch": batch, "seq": seq, "rank": spec.rank, "dropout": dropout,
              "targets": ["q_proj","k_proj","v_proj","up_proj","down_proj"],
              "dtype": format!("{:?}", model.dtype()),
              "weight_dtype": format!("{:?}", model.weight_dtype()), "seconds_median": med,
              "tokens_per_s": tokens_per_s, "model_tflops_per_s": model_flops / 1e12,
              "final_loss": last, "peak_rss_mb": peak_rss_mb()}),
    )
}

fn random_adapter(model: &Llama, name: &str, seed: u64) -> Result<LoraAdapter> {
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
        model.device(),
    )?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for p in a.pairs.values_mut() {
        let n = p.b.elem_count();
        let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-0.01..0.01)).collect();
        p.b = Tensor::from_vec(v, p.b.shape(), model.device())?;
    }
    Ok(a)
}

fn bench_merges(model: &Llama, reps: usize) -> Result<Vec<Value>> {
    let ads = vec![
        random_adapter(model, "a", 1)?,
        random_adapter(model, "b", 2)?,
    ];
    let mut figures = Vec::new();
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
        )?;
        let med = timed(reps, || {
            merge(&method, &ads, &[0.7, 0.3])?;
            Ok(())
        })?;
        figures.push(json!({"figure": "merge", "method": name, "rank": 16, "seconds_median": med}));
    }
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_gets_the_machine_fields_it_does_not_set() {
        let host = json!({"cpu": "AMD EPYC", "cpu_kind": "AuthenticAMD family 26 model 2"});
        let figure = on_machine(json!({"figure": "x", "cpu": "given"}), &host);
        assert_eq!(
            figure,
            json!({"figure": "x", "cpu": "given", "cpu_kind": "AuthenticAMD family 26 model 2"})
        );
    }

    #[test]
    fn machine_names_the_cpu_model_kind_and_only_the_flags_it_lists() {
        let info = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 fma avx512f avx512_bf16 avx512_vnni\n\nprocessor\t: 1\nvendor_id\t: other\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: other\nflags\t\t: amx_tile\n";
        let cpu = Cpu::parse(info);
        assert_eq!(cpu.model, "AMD EPYC");
        assert_eq!(cpu.kind, "AuthenticAMD family 26 model 2");
        assert_eq!(
            cpu.flags,
            vec!["avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni"]
        );
        let cpu = Cpu::parse("flags : sse2 amx_tile avx2\n");
        assert_eq!(
            (cpu.model.as_str(), cpu.kind.as_str()),
            ("unknown", "unknown")
        );
        assert_eq!(cpu.flags, vec!["avx2", "amx_tile"]);
        assert_eq!(
            Cpu::parse(""),
            Cpu {
                model: "unknown".into(),
                kind: "unknown".into(),
                flags: vec![]
            }
        );
    }
}
