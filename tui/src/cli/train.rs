//! `soup train lora` (one LoRA on one or more datasets; several with `--mix` is the DATA-MIX
//! baseline) and `soup train cat` (learned per-layer, per-module weights over frozen adapters).
//! Both are engine jobs: recorded in the store, checkpointed, resumable with `--resume RUN`.

use super::jobs::{run_job, JobView};
use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use soup_core::engine::{CatJob, DataSource, JobSpec, RunOutcome, TrainJob};
use soup_core::lora::Module;
use soup_core::train::cat::{DEFAULT_CAT_HELDOUT, DEFAULT_CAT_MIN_STEPS};
use soup_core::train::optim::Decay;
use soup_core::train::{CatInit, CatMovement, CatParam};
use soup_store::RunId;

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(subcommand)]
    command: TrainCommand,
}

#[derive(Debug, Subcommand)]
enum TrainCommand {
    /// Train one LoRA adapter (a skill) on one or more datasets.
    Lora(Box<LoraArgs>),
    /// Learn CAT weights over stored or PEFT adapters (the LoRAs stay frozen).
    Cat(Box<CatArgs>),
}

/// Loop options shared by LoRA and CAT training (defaults differ, so all are optional).
#[derive(Debug, Args)]
struct LoopArgs {
    /// Learning rate [default: 3e-4 for a LoRA; 5e-2 for CAT's coefficients].
    #[arg(long)]
    lr: Option<f64>,
    /// Passes over the data [default: 3 for a LoRA; 1 for CAT, more when --min-steps needs].
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    grad_accum: Option<usize>,
    #[arg(long)]
    warmup_ratio: Option<f64>,
    /// Learning-rate decay after warm-up: linear, cosine or constant.
    #[arg(long)]
    schedule: Option<Decay>,
    /// Gradient clipping by global norm (0 disables it).
    #[arg(long)]
    max_grad_norm: Option<f64>,
    #[arg(long)]
    weight_decay: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    /// Stop after this many optimizer steps (without it: when the epochs are done).
    #[arg(long)]
    max_steps: Option<usize>,
    /// Checkpoint every N optimizer steps (a cancelled run always keeps one).
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Validation loss every N optimizer steps (0: only at the end).
    #[arg(long)]
    eval_every: Option<usize>,
    /// Longest sequence in tokens (capped at the model's context).
    #[arg(long)]
    max_len: Option<usize>,
    /// Include prompt tokens in the loss.
    #[arg(long)]
    train_on_inputs: bool,
    /// Resume a failed or cancelled run from its checkpoint (its recorded settings are used;
    /// the other flags are ignored). Without it: a new run.
    #[arg(long, value_name = "RUN")]
    resume: Option<String>,
}

#[derive(Debug, Args)]
struct LoraArgs {
    /// A model name, `default`, an HF directory or a GGUF file.
    #[arg(long, default_value = "default")]
    model: String,
    /// A data file (JSON/JSONL instructions, GSM8K, plain text) or builtin:NAME; repeat for
    /// DATA-MIX. Required unless --resume.
    #[arg(long = "data", value_name = "FILE", required_unless_present = "resume")]
    data: Vec<String>,
    /// The adapter's name in the store (required unless --resume).
    #[arg(long, required_unless_present = "resume")]
    name: Option<String>,
    #[arg(long)]
    rank: Option<usize>,
    #[arg(long)]
    alpha: Option<f64>,
    /// Scale by alpha/sqrt(r) (rsLoRA) instead of alpha/r.
    #[arg(long)]
    rslora: bool,
    /// Projections to adapt, e.g. q,k,v,up,down.
    #[arg(long)]
    targets: Option<String>,
    /// LoRA dropout.
    #[arg(long)]
    dropout: Option<f32>,
    /// Refuse examples longer than --max-len instead of truncating them.
    #[arg(long)]
    strict: bool,
    #[arg(long)]
    val_fraction: Option<f64>,
    /// Mixing ratios of the --data sets, e.g. 1,1 (default: each set in proportion to its
    /// size).
    #[arg(long)]
    mix: Option<String>,
    /// Use at most N examples of each dataset (default: all).
    #[arg(long)]
    limit: Option<usize>,
    /// The skill this adapter teaches (recorded with it; default: none).
    #[arg(long)]
    skill: Option<String>,
    /// Plain-text corpora are cut into chunks of this many tokens.
    #[arg(long)]
    chunk_tokens: Option<usize>,
    #[command(flatten)]
    common: LoopArgs,
}

#[derive(Debug, Args)]
struct CatArgs {
    #[arg(long, default_value = "default")]
    model: String,
    /// The adapters to combine: stored names or PEFT directories, comma-separated (required
    /// unless --resume).
    #[arg(long, required_unless_present = "resume")]
    adapters: Option<String>,
    /// Data the weights are learned on: files or builtin:NAME (required unless --resume).
    #[arg(long = "data", value_name = "FILE", num_args = 1.., required_unless_present = "resume")]
    data: Vec<String>,
    /// The CAT adapter's name in the store (required unless --resume).
    #[arg(long, required_unless_present = "resume")]
    name: Option<String>,
    /// softmax over adapters per layer and module (the paper's code; each slot's weights sum
    /// to 1), or free weights.
    #[arg(long, default_value_t = CatParam::Softmax)]
    param: CatParam,
    /// Where the weights start: uniform (the plain concatenation: weights 1/k under softmax,
    /// 1 when free) or normal (plus N(0, 1) noise: the paper's random logits).
    #[arg(long, default_value_t = CatInit::Uniform)]
    init: CatInit,
    /// Take at least this many optimizer steps, repeating the sample as needed.
    #[arg(long, default_value_t = DEFAULT_CAT_MIN_STEPS)]
    min_steps: usize,
    /// Fraction of each dataset used (the paper: 5 %).
    #[arg(long, default_value_t = 0.05)]
    sample_fraction: f64,
    /// Examples of each dataset outside the sample on which the start and the learned weights'
    /// loss are compared (0: none).
    #[arg(long, default_value_t = DEFAULT_CAT_HELDOUT)]
    heldout: usize,
    #[command(flatten)]
    common: LoopArgs,
}

pub fn run(ctx: &super::Ctx, args: TrainArgs) -> Result<()> {
    match args.command {
        TrainCommand::Lora(a) => lora(ctx, *a),
        TrainCommand::Cat(a) => cat(ctx, *a),
    }
}

fn apply_loop(c: &LoopArgs, t: &mut soup_core::train::LoopConfig) {
    if let Some(v) = c.lr {
        t.lr = v;
    }
    if let Some(v) = c.epochs {
        t.epochs = v;
    }
    if let Some(v) = c.batch_size {
        t.batch_size = v;
    }
    if let Some(v) = c.grad_accum {
        t.grad_accum = v;
    }
    if let Some(v) = c.warmup_ratio {
        t.warmup_ratio = v;
    }
    if let Some(v) = c.schedule {
        t.decay = v;
    }
    if let Some(v) = c.max_grad_norm {
        t.max_grad_norm = v;
    }
    if let Some(v) = c.weight_decay {
        t.weight_decay = v;
    }
    if let Some(v) = c.seed {
        t.seed = v;
    }
    if c.max_steps.is_some() {
        t.max_steps = c.max_steps;
    }
    if let Some(v) = c.checkpoint_every {
        t.checkpoint_every = v;
    }
    if let Some(v) = c.eval_every {
        t.eval_every = v;
    }
}

fn check_loop(t: &soup_core::train::LoopConfig) -> Result<()> {
    if t.batch_size == 0 || t.grad_accum == 0 || t.epochs == 0 {
        bail!("--batch-size, --grad-accum and --epochs must be at least 1");
    }
    if !(t.lr.is_finite() && t.lr > 0.0) {
        bail!("--lr {} must be a positive number", t.lr);
    }
    if !(0.0..1.0).contains(&t.warmup_ratio) {
        bail!("--warmup-ratio {} must be in [0, 1)", t.warmup_ratio);
    }
    Ok(())
}

fn data_sources(items: &[String]) -> Vec<DataSource> {
    items
        .iter()
        .map(|d| DataSource::parse(&super::absolute_if_exists(d)))
        .collect()
}

fn resume_id(engine: &soup_core::engine::Engine, text: &str) -> Result<RunId> {
    Ok(engine.store().resolve_run(text)?)
}

fn lora(ctx: &super::Ctx, a: LoraArgs) -> Result<()> {
    let engine = ctx.engine()?;
    let view = JobView {
        label: "train",
        unit: "step",
        expected_total: None,
    };
    if let Some(r) = &a.common.resume {
        let id = resume_id(&engine, r)?;
        let (id, out) = run_job(&engine, None, Some(id), &view)?;
        return report(ctx, id, &out);
    }
    let name = a.name.clone().unwrap_or_default();
    let mut job = TrainJob::new(
        &name,
        &super::absolute_if_exists(&a.model),
        data_sources(&a.data),
    );
    if let Some(v) = a.rank {
        job.lora.rank = v;
    }
    if let Some(v) = a.alpha {
        job.lora.alpha = v;
    }
    job.lora.use_rslora = a.rslora;
    if let Some(t) = &a.targets {
        job.lora.targets = Module::parse_list(t)?;
        if job.lora.targets.is_empty() {
            bail!("--targets names no projection: use e.g. q,k,v,up,down");
        }
    }
    if let Some(v) = a.dropout {
        job.train.dropout = v;
    }
    apply_loop(&a.common, &mut job.train);
    check_loop(&job.train)?;
    if let Some(v) = a.common.max_len {
        job.max_len = v;
    }
    job.train_on_inputs = a.common.train_on_inputs;
    job.strict = a.strict;
    if let Some(v) = a.val_fraction {
        if !(0.0..1.0).contains(&v) {
            bail!("--val-fraction {v} must be in [0, 1)");
        }
        job.val_fraction = v;
    }
    if let Some(m) = &a.mix {
        let ratios = super::parse_floats("--mix", m)?;
        if ratios.len() != job.data.len() {
            bail!(
                "--mix has {} ratios for {} --data sets",
                ratios.len(),
                job.data.len()
            );
        }
        job.mix = Some(ratios);
    }
    job.limit = a.limit;
    job.skill = a.skill.clone();
    if let Some(v) = a.chunk_tokens {
        job.chunk_tokens = v;
    }
    if job.lora.rank == 0 {
        bail!("--rank must be at least 1");
    }
    if engine.store().get_adapter(&name)?.is_some() {
        bail!("an adapter named {name:?} already exists: choose another --name or `soup adapter delete {name}`");
    }
    let (id, out) = run_job(&engine, Some(JobSpec::Train(job)), None, &view)?;
    report(ctx, id, &out)
}

fn cat(ctx: &super::Ctx, a: CatArgs) -> Result<()> {
    let engine = ctx.engine()?;
    let view = JobView {
        label: "cat",
        unit: "step",
        expected_total: None,
    };
    if let Some(r) = &a.common.resume {
        let id = resume_id(&engine, r)?;
        let (id, out) = run_job(&engine, None, Some(id), &view)?;
        return report(ctx, id, &out);
    }
    let name = a.name.clone().unwrap_or_default();
    let adapters: Vec<String> = super::split_list(a.adapters.as_deref().unwrap_or(""))
        .iter()
        .map(|s| super::absolute_if_exists(s))
        .collect();
    if adapters.len() < 2 {
        bail!("--adapters needs at least two adapters, e.g. --adapters math,code");
    }
    let mut job = CatJob::new(
        &name,
        &super::absolute_if_exists(&a.model),
        adapters,
        data_sources(&a.data),
    );
    job.param = a.param;
    job.init = a.init;
    job.train.min_steps = a.min_steps;
    job.heldout = a.heldout;
    let f = a.sample_fraction;
    if !(f > 0.0 && f <= 1.0) {
        bail!("--sample-fraction {f} must be in (0, 1]");
    }
    job.sample_fraction = f;
    apply_loop(&a.common, &mut job.train);
    check_loop(&job.train)?;
    if let Some(v) = a.common.max_len {
        job.max_len = v;
    }
    job.train_on_inputs = a.common.train_on_inputs;
    if engine.store().get_adapter(&name)?.is_some() {
        bail!("an adapter named {name:?} already exists: choose another --name or `soup adapter delete {name}`");
    }
    let (id, out) = run_job(&engine, Some(JobSpec::Cat(job)), None, &view)?;
    report(ctx, id, &out)
}

/// The final line: the summary as JSON, or a short human report.
pub fn report(ctx: &super::Ctx, id: RunId, out: &RunOutcome) -> Result<()> {
    let s = &out.summary;
    if ctx.json {
        return super::print_json(s);
    }
    let num = |k: &str| s.get(k).and_then(|v| v.as_f64());
    println!("run {id}");
    if let Some(name) = s.get("name").and_then(|v| v.as_str()) {
        println!("adapter {name}");
    }
    if let Some(v) = s.get("steps") {
        println!("steps {v}");
    }
    if let Some(v) = num("final_train_loss") {
        println!("final train loss {v:.4}");
    }
    match num("final_val_loss") {
        Some(v) => println!("final validation loss {v:.4}"),
        None if s.get("final_val_loss").is_some() => {
            println!("final validation loss: none (no validation set)")
        }
        None => {}
    }
    if let (Some(sec), Some(tps)) = (num("seconds"), num("tokens_per_s")) {
        println!("{sec:.1} s, {tps:.0} tokens/s");
    }
    if let Some(m) = CatMovement::from_hyperparams(s) {
        println!("{}", m.summary());
        for line in m.spread_lines() {
            println!("  {line}");
        }
    }
    if s.get("cat_weights").is_some() {
        if let Some(name) = s.get("name").and_then(|v| v.as_str()) {
            println!("learned weights: `soup adapter show {name}`");
        }
    }
    Ok(())
}

/// The lowercase name serde gives a unit enum variant (`softmax`, `linear`), which is also
/// what its `FromStr` reads.
fn variant_name(v: impl serde::Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Shows the defaults of `train lora` and `train cat` in `--help`. They come from the job
/// constructors ([`TrainJob::new`], [`CatJob::new`]), and LoRA and CAT default differently
/// (CAT: one epoch, lr 1e-4), so the flags they share stay options in the derive and get their
/// shown default here, per subcommand, from that one source. A flag given parses as before; an
/// absent one parses as the job's own default, which is what it meant already.
pub fn show_defaults(cmd: clap::Command) -> clap::Command {
    let lora = TrainJob::new("", "", Vec::new());
    let cat = CatJob::new("", "", Vec::new(), Vec::new());
    fn loop_flags(
        c: clap::Command,
        t: &soup_core::train::LoopConfig,
        max_len: usize,
    ) -> clap::Command {
        let values = [
            ("lr", t.lr.to_string()),
            ("epochs", t.epochs.to_string()),
            ("batch_size", t.batch_size.to_string()),
            ("grad_accum", t.grad_accum.to_string()),
            ("warmup_ratio", t.warmup_ratio.to_string()),
            ("schedule", variant_name(t.decay)),
            ("max_grad_norm", t.max_grad_norm.to_string()),
            ("weight_decay", t.weight_decay.to_string()),
            ("seed", t.seed.to_string()),
            ("checkpoint_every", t.checkpoint_every.to_string()),
            ("eval_every", t.eval_every.to_string()),
            ("max_len", max_len.to_string()),
        ];
        values
            .into_iter()
            .fold(c, |c, (id, v)| c.mut_arg(id, |a| a.default_value(v)))
    }
    let targets: Vec<&str> = lora
        .lora
        .targets
        .iter()
        .map(|m| m.hf_name().trim_end_matches("_proj"))
        .collect();
    let lora_values = [
        ("rank", lora.lora.rank.to_string()),
        ("alpha", lora.lora.alpha.to_string()),
        ("targets", targets.join(",")),
        ("dropout", lora.train.dropout.to_string()),
        ("val_fraction", lora.val_fraction.to_string()),
        ("chunk_tokens", lora.chunk_tokens.to_string()),
    ];
    let cat_values = [
        ("param", variant_name(cat.param)),
        ("sample_fraction", cat.sample_fraction.to_string()),
    ];
    cmd.mut_subcommand("train", |t| {
        t.mut_subcommand("lora", |c| {
            lora_values
                .into_iter()
                .fold(loop_flags(c, &lora.train, lora.max_len), |c, (id, v)| {
                    c.mut_arg(id, |a| a.default_value(v))
                })
        })
        .mut_subcommand("cat", |c| {
            cat_values
                .into_iter()
                .fold(loop_flags(c, &cat.train, cat.max_len), |c, (id, v)| {
                    c.mut_arg(id, |a| a.default_value(v))
                })
        })
    })
}
