//! `soup merge`: PEFT `add_weighted_adapter` merges (cat, linear, svd, ties, dare_linear,
//! dare_ties, magnitude_prune and their `_svd` forms) and LoraHub's weight search, stored as a
//! new adapter and optionally written as a PEFT directory.

use super::jobs::{run_job, JobView};
use anyhow::{bail, Result};
use clap::Args;
use soup_core::engine::{DataSource, JobSpec, MergeJob};
use soup_core::merge::MergeKind;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// cat, linear, svd, ties, dare_linear, dare_ties, magnitude_prune (also *_svd), lorahub.
    #[arg(long)]
    method: String,
    /// One weight per adapter, e.g. 0.7,0.3: required, except by lorahub, which searches them.
    #[arg(long)]
    weights: Option<String>,
    /// Fraction of entries kept: required by ties, dare_* and magnitude_prune, unused (none:)
    /// by the others.
    #[arg(long)]
    density: Option<f64>,
    /// Rank of the *_svd merges (default: the largest input rank).
    #[arg(long)]
    svd_rank: Option<usize>,
    /// How TIES elects signs: total or frequency (default: total).
    #[arg(long)]
    majority_sign: Option<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write the merged adapter as a PEFT directory here.
    /// A new or empty folder (a non-empty one needs --force). Without it: only stored.
    #[arg(long, value_name = "PEFT_DIR")]
    out: Option<PathBuf>,
    /// Replace --out if it is a non-empty folder (never an input, the data dir, `.`).
    #[arg(long, requires = "out")]
    force: bool,
    /// Name of the stored merged adapter (default: METHOD-A-B...).
    #[arg(long)]
    name: Option<String>,
    /// LoraHub: the model whose loss on --data the search minimizes (required by lorahub,
    /// unused by the others).
    #[arg(long)]
    model: Option<String>,
    /// LoraHub: a few examples to search weights on (required by lorahub, unused by the
    /// others).
    #[arg(long = "data", value_name = "FILE")]
    data: Vec<String>,
    /// LoraHub: how many weight vectors to evaluate (default: 40).
    #[arg(long)]
    budget: Option<usize>,
    /// The adapters: stored names or PEFT directories.
    #[arg(required = true, num_args = 2..)]
    adapters: Vec<String>,
}

fn short_name(spec: &str) -> String {
    let p = Path::new(spec);
    if p.exists() {
        p.file_name()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| spec.to_string())
    } else {
        spec.to_string()
    }
}

pub fn run(ctx: &super::Ctx, a: MergeArgs) -> Result<()> {
    let method: MergeKind = a.method.parse()?;
    let lorahub = method == MergeKind::LoraHub;
    let weights = match (&a.weights, lorahub) {
        (Some(w), _) => super::parse_floats("--weights", w)?,
        (None, true) => Vec::new(),
        (None, false) => bail!(
            "--weights is required for {method}: one per adapter, e.g. --weights {}",
            vec!["0.5"; a.adapters.len()].join(",")
        ),
    };
    if !lorahub && weights.len() != a.adapters.len() {
        bail!(
            "--weights has {} values for {} adapters",
            weights.len(),
            a.adapters.len()
        );
    }
    if lorahub && (a.model.is_none() || a.data.is_empty()) {
        bail!("lorahub needs --model and --data: it searches the weights by the model's loss on a few examples");
    }
    if let Some(s) = &a.majority_sign {
        soup_core::merge::MajoritySign::parse(s)?;
    }
    let name = a.name.clone().unwrap_or_else(|| {
        let parts: Vec<String> = a.adapters.iter().map(|s| short_name(s)).collect();
        format!("{method}-{}", parts.join("-"))
    });
    let engine = ctx.engine()?;
    if engine.store().get_adapter(&name)?.is_some() {
        bail!("an adapter named {name:?} already exists: choose another --name or `soup adapter delete {name}`");
    }
    let out = match &a.out {
        Some(o) if o.is_absolute() => Some(o.clone()),
        Some(o) => Some(std::env::current_dir()?.join(o)),
        None => None,
    };
    let job = MergeJob {
        name,
        method,
        adapters: a
            .adapters
            .iter()
            .map(|s| super::absolute_if_exists(s))
            .collect(),
        weights,
        density: a.density,
        svd_rank: a.svd_rank,
        majority_sign_method: a.majority_sign.clone(),
        seed: a.seed,
        dtype: ctx.dtype,
        out,
        out_force: a.force,
        model: a.model.as_deref().map(super::absolute_if_exists),
        data: a
            .data
            .iter()
            .map(|d| DataSource::parse(&super::absolute_if_exists(d)))
            .collect(),
        budget: a.budget,
        inputs: None,
    };
    let view = JobView {
        label: "merge",
        unit: "evaluation",
        expected_total: None,
    };
    let (id, outcome) = run_job(&engine, Some(JobSpec::Merge(job)), None, &view)?;
    let s = &outcome.summary;
    if ctx.json {
        return super::print_json(s);
    }
    println!("run {id}");
    println!(
        "adapter {} ({}, rank {})",
        s["name"].as_str().unwrap_or("?"),
        s["method"].as_str().unwrap_or("?"),
        s["rank"]
    );
    println!("weights {}", s["weights"]);
    if let Some(o) = s.get("out").and_then(|v| v.as_str()) {
        println!("PEFT directory {o}");
    }
    Ok(())
}
