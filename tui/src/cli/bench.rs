//! `soup bench`: the performance figures of BENCHMARKS.md, one JSON line each, on the same
//! work as ../shared/bench/torch_reference.py (run the two beside each other and compare).

use super::Ctx;
use anyhow::{bail, Context, Result};
use clap::Args;
use soup_core::bench::{random_model, BenchOptions};
use soup_core::model::ModelConfig;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The model: a name from `soup model list`, `default`, an HF directory or a GGUF file
    /// (required without --config).
    #[arg(long, conflicts_with = "config")]
    pub model: Option<String>,
    /// Instead of a model, random weights of this config.json's shapes (speed does not depend
    /// on the weights; nothing to download or carry). Without it: --model is required.
    #[arg(long, value_name = "CONFIG_JSON")]
    pub config: Option<PathBuf>,
    /// Which figures: any of gen, train, merge; quality, what bf16 frozen weights cost against
    /// f32 on fixed prompts (run with --dtype f32); cat-lr, CAT's learning-rate sweep on two
    /// adapters that memorized disjoint facts (held-out loss per learning rate); eval,
    /// code-math questions graded per second with the real few-shot prompts, fixed batches
    /// against the prefix cache with continuous batching (needs --model: it uses the
    /// tokenizer, and python3 for the sandbox).
    #[arg(long, default_value = "gen,train,merge")]
    pub only: String,
    /// Questions per timed evaluation run (--only eval).
    #[arg(long, default_value_t = 32)]
    pub eval_questions: usize,
    /// Timed repetitions per figure (after one warm-up); medians are printed.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
}

pub fn run(ctx: &Ctx, args: BenchArgs) -> Result<()> {
    let device = ctx.device()?;
    let only: Vec<&str> = args.only.split(',').map(str::trim).collect();
    if let Some(bad) = only.iter().find(|o| {
        !matches!(
            **o,
            "gen" | "train" | "merge" | "quality" | "cat-lr" | "eval"
        )
    }) {
        bail!("--only {bad:?}: expected gen, train, merge, quality, cat-lr or eval");
    }
    let mut loaded = None;
    let model = match (&args.model, &args.config) {
        (_, Some(cfg)) => {
            let cfg = ModelConfig::from_file(cfg)?;
            random_model(cfg, &device, 0)?.with_precision(ctx.precision(&device))?
        }
        (Some(spec), None) => {
            let store = ctx.store().ok();
            let (name, path) =
                soup_core::runtime::locate_model(store.as_deref(), &ctx.data_dir, spec)?;
            let m =
                soup_core::runtime::load_model_at(&name, &path, &device, ctx.precision(&device))
                    .with_context(|| format!("cannot load {}", path.display()))?;
            let model = m.model.clone();
            loaded = Some(m);
            model
        }
        (None, None) => {
            bail!("give --model (a model) or --config (random weights of a config.json)")
        }
    };
    let parity_prompts = match &loaded {
        Some(m) => soup_core::bench::PARITY_PROMPTS
            .iter()
            .map(|p| m.tokenizer.encode(p, false))
            .collect::<Result<Vec<_>, _>>()
            .context("cannot tokenize the parity prompts")?,
        None => soup_core::bench::random_parity_prompts(model.cfg.vocab_size, 32),
    };
    let opts = BenchOptions {
        generation: only.contains(&"gen"),
        training: only.contains(&"train"),
        merges: only.contains(&"merge"),
        cat_lr: only.contains(&"cat-lr"),
        bf16_quality: only.contains(&"quality"),
        parity_prompts,
        reps: args.reps,
    };
    eprintln!(
        "device {:?}, dtype {:?} (frozen weights {:?}), {} layers",
        device,
        model.dtype(),
        model.weight_dtype(),
        model.layers.len()
    );
    soup_core::bench::run(&model, &opts, &mut |figure| println!("{figure}"))?;
    if only.contains(&"eval") {
        let Some(loaded) = &loaded else {
            bail!("--only eval needs --model (a real model and its tokenizer), not --config");
        };
        let eval = soup_core::bench_eval::EvalBenchOptions {
            questions: args.eval_questions,
            reps: args.reps,
            ..Default::default()
        };
        soup_core::bench_eval::run(loaded, &eval, &mut |figure| println!("{figure}"))
            .context("the evaluation figure failed")?;
    }
    Ok(())
}
