//! `soup eval` (a model configuration graded on a task, every question recorded in the store)
//! and `soup grade` (prediction files made anywhere, graded by the same rules).

use super::jobs::{run_job, JobView};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use soup_core::engine::{DataSource, EvalJob, EvalTarget, EvalTask, JobSpec};
use soup_core::remote::{AdapterRoute, RemoteBackend};
use soup_evals::sandbox::{Sandbox, SandboxConfig};
use std::path::PathBuf;

/// Where generation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// This machine's engine.
    Local,
    /// An OpenAI-compatible server (vLLM, SGLang, llama.cpp's server, `soup serve`).
    Openai,
}

/// `--backend` and its settings, shared by `soup eval` and `soup recipe`.
#[derive(Debug, Clone, Args)]
pub struct BackendArgs {
    /// Where answers are generated: `local`, or `openai` (the server at --base-url; prompts
    /// are rendered here, and grading, records, resume and the store stay here).
    #[arg(long, value_enum, default_value_t = Backend::Local)]
    pub backend: Backend,
    /// The server's URL, e.g. http://gpu-node:8000 or http://gpu-node:8000/v1 (required with
    /// --backend openai).
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// An environment variable holding the server's API key, sent as a Bearer token (the
    /// key is never recorded). Without it: no key is sent.
    #[arg(long, value_name = "VAR")]
    pub api_key_env: Option<String>,
    /// Requests in flight at once on the server.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// The name the server knows the evaluated weights by (its base model, an adapter it
    /// loaded with --lora-modules). Without it: found through --route.
    #[arg(long, value_name = "NAME")]
    pub remote_model: Option<String>,
    /// How an adapter or composition reaches the server: `soup` (the server is `soup serve`:
    /// sent by name, e.g. ties:math,code:0.5,0.5), `load` (exported as one PEFT adapter and
    /// registered with vLLM's /v1/load_lora_adapter), `auto` (soup when the server's
    /// /v1/models says owned_by "soup", else load).
    #[arg(long, default_value = "auto", value_parser = ["auto", "soup", "load"])]
    pub route: String,
    /// The server's --max-lora-rank: an exported adapter of higher rank (a CAT adapter has
    /// rank Σ r_i) is compressed by SVD to the largest allowed rank not above it (8, 16, 32,
    /// 64, 128, 256, 320, 512), and the run records the relative Frobenius error.
    #[arg(long, default_value_t = 64)]
    pub max_lora_rank: usize,
    /// Where exported adapters are written; the server must be able to read it (a shared
    /// filesystem). Without it: <data dir>/exports/remote.
    #[arg(long, value_name = "DIR")]
    pub lora_dir: Option<PathBuf>,
    /// --lora-dir as the server sees it, when its path differs there (a container mount).
    /// Without it: the local path is sent.
    #[arg(long, value_name = "PATH")]
    pub server_lora_dir: Option<String>,
}

impl BackendArgs {
    /// The remote backend to record in the job spec; None for `--backend local`.
    pub fn remote(&self) -> Result<Option<RemoteBackend>> {
        if self.backend == Backend::Local {
            let stray = [
                ("--base-url", self.base_url.is_some()),
                ("--api-key-env", self.api_key_env.is_some()),
                ("--remote-model", self.remote_model.is_some()),
                ("--lora-dir", self.lora_dir.is_some()),
                ("--server-lora-dir", self.server_lora_dir.is_some()),
            ];
            if let Some((flag, _)) = stray.iter().find(|(_, given)| *given) {
                bail!(
                    "{flag} is a setting of --backend openai: add --backend openai, or drop {flag}"
                );
            }
            return Ok(None);
        }
        let Some(url) = &self.base_url else {
            bail!("--backend openai needs --base-url URL (the server, e.g. http://localhost:8000)");
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("--base-url {url:?}: expected an http:// or https:// URL");
        }
        if self.concurrency == 0 {
            bail!("--concurrency must be at least 1");
        }
        if self.max_lora_rank == 0 {
            bail!("--max-lora-rank must be at least 1");
        }
        let lora_dir = match &self.lora_dir {
            Some(d) => Some(
                std::path::absolute(d).with_context(|| format!("--lora-dir {}", d.display()))?,
            ),
            None => None,
        };
        Ok(Some(RemoteBackend {
            api_key_env: self.api_key_env.clone(),
            concurrency: self.concurrency,
            remote_model: self.remote_model.clone(),
            route: self.route.parse::<AdapterRoute>()?,
            max_lora_rank: self.max_lora_rank,
            lora_dir,
            server_lora_dir: self.server_lora_dir.clone(),
            ..RemoteBackend::new(url.trim())
        }))
    }
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// code-math, manual-qa, math-cot, code, qa or game-qa (`soup eval --help` lists them);
    /// required unless --resume.
    #[arg(long, required_unless_present = "resume")]
    task: Option<EvalTask>,
    /// A data file, `builtin` (the task's own target set) or builtin:NAME.
    #[arg(long, default_value = "builtin")]
    data: String,
    #[arg(long, default_value = "default")]
    model: String,
    /// A stored adapter or a PEFT directory. Without it, --cat and --merge: the base model.
    #[arg(long, conflicts_with_all = ["cat", "merge"])]
    adapter: Option<String>,
    /// A stored CAT adapter (without it: see --adapter).
    #[arg(long, conflicts_with = "merge")]
    cat: Option<String>,
    /// A merge built on the fly: METHOD:A,B:W1,W2 (e.g. ties:math,code:0.5,0.5); without it:
    /// see --adapter.
    #[arg(long)]
    merge: Option<String>,
    /// Grade the first N questions only (default: all).
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long, default_value_t = 160)]
    max_new_tokens: usize,
    /// Few-shot demos in the prompt (code-math, math-cot).
    #[arg(long, default_value_t = 3)]
    shots: usize,
    /// Force the plain few-shot prompt even when the model has a chat template.
    #[arg(long, conflicts_with = "chat")]
    plain: bool,
    /// Force the chat template.
    #[arg(long)]
    chat: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Continue a failed or cancelled evaluation (its recorded settings are used). Without
    /// it: a new run.
    #[arg(long, value_name = "RUN")]
    resume: Option<String>,
    #[command(flatten)]
    backend: BackendArgs,
}

/// `METHOD:A,B:W1,W2`: the method before the first colon, the weights after the last.
pub(crate) fn parse_merge(text: &str) -> Result<EvalTarget> {
    let usage =
        || format!("--merge {text:?}: expected METHOD:A,B:W1,W2, e.g. ties:math,code:0.5,0.5");
    let (method, rest) = text.split_once(':').with_context(usage)?;
    let (adapters, weights) = rest.rsplit_once(':').with_context(usage)?;
    let adapters: Vec<String> = super::split_list(adapters)
        .iter()
        .map(|a| super::absolute_if_exists(a))
        .collect();
    let weights = super::parse_floats("--merge", weights)?;
    if adapters.len() < 2 || adapters.len() != weights.len() {
        bail!(
            "{}: {} adapters and {} weights (need two or more, one weight each)",
            usage(),
            adapters.len(),
            weights.len()
        );
    }
    Ok(EvalTarget::Merge {
        method: method.parse()?,
        adapters,
        weights,
    })
}

pub fn eval(ctx: &super::Ctx, a: EvalArgs) -> Result<()> {
    let engine = ctx.engine()?;
    let mut view = JobView {
        label: "eval",
        unit: "question",
        expected_total: a.limit.map(|l| l as u64),
    };
    let (id, outcome) = if let Some(r) = &a.resume {
        if a.backend.remote()?.is_some() {
            bail!(
                "--resume runs with the backend its run recorded: drop --backend and its settings"
            );
        }
        let id = engine.store().resolve_run(r)?;
        if let Some(run) = engine.store().get_run(id)? {
            if let Some(l) = run.spec.get("limit").and_then(|v| v.as_u64()) {
                view.expected_total = Some(l);
            }
        }
        run_job(&engine, None, Some(id), &view)?
    } else {
        let task = a.task.context("--task is required")?;
        let data = match a.data.as_str() {
            "builtin" => DataSource::parse(task.default_dataset()),
            d => DataSource::parse(&super::absolute_if_exists(d)),
        };
        let target = match (&a.adapter, &a.cat, &a.merge) {
            (Some(x), _, _) | (None, Some(x), _) => {
                EvalTarget::Adapter(super::absolute_if_exists(x))
            }
            (None, None, Some(m)) => parse_merge(m)?,
            (None, None, None) => EvalTarget::Base,
        };
        if let Some(c) = &a.cat {
            match engine.store().get_adapter(c)? {
                Some(rec) if rec.cat_weights.is_some() => {}
                Some(_) => bail!("--cat {c}: not a CAT adapter (use --adapter for it)"),
                None => bail!("--cat {c}: no such stored adapter (see `soup adapter list`)"),
            }
        }
        if a.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        let mut job = EvalJob::new(&super::absolute_if_exists(&a.model), target, task, data);
        job.limit = a.limit;
        job.batch_size = a.batch_size;
        job.max_new_tokens = a.max_new_tokens;
        job.shots = a.shots;
        job.seed = a.seed;
        job.remote = a.backend.remote()?;
        job.chat = if a.plain {
            Some(false)
        } else if a.chat {
            Some(true)
        } else {
            None
        };
        run_job(&engine, Some(JobSpec::Eval(job)), None, &view)?
    };
    let s = &outcome.summary;
    if ctx.json {
        return super::print_json(s);
    }
    println!("run {id}");
    println!(
        "{} on {}: {} questions ({} prompt{})",
        s["target"].as_str().unwrap_or("?"),
        s["task"].as_str().unwrap_or("?"),
        s["n"],
        s["prompt_style"].as_str().unwrap_or("?"),
        match s["cache_hits"].as_u64() {
            Some(h) if h > 0 => format!(", {h} answers from the cache"),
            _ => String::new(),
        }
    );
    if let Some(scores) = s["scores"].as_object() {
        for (metric, v) in scores {
            let ci = v["ci95"].as_array();
            println!(
                "  {metric:<12} {:.4}  (95% CI {:.4}..{:.4}, n={})",
                v["value"].as_f64().unwrap_or(f64::NAN),
                ci.and_then(|c| c.first())
                    .and_then(|x| x.as_f64())
                    .unwrap_or(f64::NAN),
                ci.and_then(|c| c.get(1))
                    .and_then(|x| x.as_f64())
                    .unwrap_or(f64::NAN),
                v["n"]
            );
        }
    }
    if let Some(verdicts) = s["verdicts"].as_object() {
        let parts: Vec<String> = verdicts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        if !parts.is_empty() {
            println!("  verdicts     {}", parts.join(", "));
        }
    }
    if let Some(b) = s.get("backend").filter(|b| !b.is_null()) {
        println!(
            "  backend      {} as model {}",
            b["base_url"].as_str().unwrap_or("?"),
            b["model"].as_str().unwrap_or("?")
        );
        if let Some(e) = b.get("export").filter(|e| !e.is_null()) {
            println!(
                "  exported     rank {} (from {}), relative Frobenius error {:.4}",
                e["rank"],
                e["source_rank"],
                e["relative_frobenius_error"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
    println!("records: `soup runs records {id}`");
    Ok(())
}

#[derive(Debug, Args)]
pub struct GradeArgs {
    #[command(subcommand)]
    command: GradeCommand,
}

#[derive(Debug, Subcommand)]
enum GradeCommand {
    /// Run each line's program in the sandbox: adds verdict, pred, correct, stdout, stderr,
    /// seconds.
    CodeMath(GradeFiles),
    /// Score each line's answer: adds em, f1, contains.
    ManualQa(GradeFiles),
}

#[derive(Debug, Args)]
struct GradeFiles {
    /// JSON lines `{"id", "output", "answer"}`.
    #[arg(long, value_name = "FILE.jsonl")]
    predictions: PathBuf,
    #[arg(long, value_name = "FILE.jsonl")]
    out: PathBuf,
}

pub fn grade(ctx: &super::Ctx, args: GradeArgs) -> Result<()> {
    let (files, staged, summary) = match args.command {
        GradeCommand::CodeMath(f) => {
            let staged = check_paths(ctx, &f)?;
            let sandbox = Sandbox::new(SandboxConfig {
                allow_weaker_isolation: true,
                ..Default::default()
            })
            .context("starting the Python sandbox")?;
            let s =
                soup_evals::grade::grade_code_math_file(&f.predictions, staged.path(), &sandbox);
            (f, staged, s)
        }
        GradeCommand::ManualQa(f) => {
            let staged = check_paths(ctx, &f)?;
            let s = soup_evals::grade::grade_manual_qa_file(&f.predictions, staged.path());
            (f, staged, s)
        }
    };
    // Nothing half-written: a failed grading drops its temporary file, and whatever --out
    // held before stays as it was.
    let summary = summary?;
    staged.commit()?;
    if ctx.json {
        return super::print_json(&summary);
    }
    println!("graded {} lines into {}", summary.n, files.out.display());
    if let Some(a) = summary.accuracy {
        println!("  accuracy {a:.4}");
    }
    for (k, v) in [
        ("em", summary.em),
        ("f1", summary.f1),
        ("contains", summary.contains),
    ] {
        if let Some(v) = v {
            println!("  {k:<8} {v:.4}");
        }
    }
    if !summary.verdicts.is_empty() {
        let parts: Vec<String> = summary
            .verdicts
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!("  verdicts {}", parts.join(", "));
    }
    Ok(())
}

/// Refuses an --out that is the predictions file itself (same path, a symlink or a hard link:
/// compared by device and inode), then stages the output beside it.
fn check_paths(ctx: &super::Ctx, f: &GradeFiles) -> Result<soup_core::output::StagedFile> {
    if !f.predictions.is_file() {
        bail!("{}: no such predictions file", f.predictions.display());
    }
    let rules = super::output_rules(ctx, false, [&f.predictions]);
    Ok(soup_core::output::StagedFile::new(&f.out, &rules)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_spec_parses() {
        match parse_merge("ties:math,code:0.7,0.3").unwrap() {
            EvalTarget::Merge {
                method,
                adapters,
                weights,
            } => {
                assert_eq!(method, "ties");
                assert_eq!(adapters, vec!["math", "code"]);
                assert_eq!(weights, vec![0.7, 0.3]);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_merge("ties:math:0.7").is_err());
        assert!(parse_merge("ties").is_err());
        assert!(parse_merge("ties:a,b:0.5").is_err());
    }
}
