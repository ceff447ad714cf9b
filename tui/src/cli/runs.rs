//! `soup runs list|show|records|delete|resume|export`: the jobs recorded in the store, their
//! scores and every graded answer behind them, paged from the store's indexes; `export` writes
//! an evaluation in another tool's format (lm-evaluation-harness's).

use super::jobs::{run_job, JobView};
use anyhow::{bail, Result};
use clap::{Args, Subcommand, ValueEnum};
use soup_store::{RecordQuery, RunKind, RunQuery, RunRecord, RunStatus, Store, StoredQuestion};
use std::io::Write;
use std::path::PathBuf;

/// The formats `soup runs export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ExportFormat {
    /// lm-evaluation-harness: results_<date>.json and samples_<task>_<date>.jsonl.
    LmEval,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    #[command(subcommand)]
    command: RunsCommand,
}

#[derive(Debug, Subcommand)]
enum RunsCommand {
    /// Runs, newest first.
    List {
        /// Only runs with this status: queued, running, done, failed, cancelled (default: all).
        #[arg(long)]
        status: Option<String>,
        /// At most N runs (0: all).
        #[arg(long, default_value_t = 0)]
        limit: usize,
    },
    /// A run's spec, status, counts per verdict and scores.
    Show {
        /// A run id, or a unique suffix of it.
        run: String,
    },
    /// A run's graded questions, one JSON object per line with --json.
    Records {
        run: String,
        /// Only records with this verdict (correct, wrong, error, timeout, ...; default: all).
        #[arg(long)]
        verdict: Option<String>,
    },
    /// Delete a run with its records and scores.
    Delete { run: String },
    /// Resume a failed or cancelled run from where it stopped.
    Resume { run: String },
    /// Write an evaluation run in another tool's format, into a new or empty folder.
    Export {
        run: String,
        #[arg(long, value_enum, default_value_t = ExportFormat::LmEval)]
        format: ExportFormat,
        /// The folder to write (new or empty; a non-empty one only with --force). Without it:
        /// lm-eval-<run id> in the current directory.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Replace a non-empty --out folder (never an input, the data dir or a folder above
        /// them).
        #[arg(long)]
        force: bool,
    },
}

fn kind_name(k: RunKind) -> &'static str {
    match k {
        RunKind::Train => "train",
        RunKind::Cat => "cat",
        RunKind::Merge => "merge",
        RunKind::Eval => "eval",
    }
}

fn status_name(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Queued => "queued",
        RunStatus::Running => "running",
        RunStatus::Done => "done",
        RunStatus::Failed => "failed",
        RunStatus::Cancelled => "cancelled",
    }
}

fn parse_status(s: &str) -> Result<RunStatus> {
    RunStatus::ALL
        .into_iter()
        .find(|x| status_name(*x) == s.trim())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "unknown status {s:?}: expected queued, running, done, failed or cancelled"
            )
        })
}

pub fn run(ctx: &super::Ctx, args: RunsArgs) -> Result<()> {
    match args.command {
        RunsCommand::List { status, limit } => {
            let store = ctx.store()?;
            let q = RunQuery {
                status: status.as_deref().map(parse_status).transpose()?,
                before: None,
                limit,
            };
            list(ctx, &store, &q)
        }
        RunsCommand::Show { run } => {
            let store = ctx.store()?;
            show(ctx, &store, &run)
        }
        RunsCommand::Records { run, verdict } => {
            let store = ctx.store()?;
            records(ctx, &store, &run, verdict)
        }
        RunsCommand::Delete { run } => {
            let store = ctx.store()?;
            let id = store.resolve_run(&run)?;
            if let Some(r) = store.get_run(id)? {
                if r.status == RunStatus::Running {
                    bail!("run {id} is marked running: stop the process running it first");
                }
            }
            store.delete_run(id)?;
            let _ = std::fs::remove_dir_all(ctx.data_dir.join("jobs").join(id.to_string()));
            if ctx.json {
                super::print_json(&serde_json::json!({"deleted": id.to_string()}))
            } else {
                println!("deleted run {id}");
                Ok(())
            }
        }
        RunsCommand::Resume { run } => {
            let engine = ctx.engine()?;
            let id = engine.store().resolve_run(&run)?;
            let Some(rec) = engine.store().get_run(id)? else {
                bail!("no run {id}");
            };
            let view = JobView {
                label: kind_name(rec.kind),
                unit: if rec.kind == RunKind::Eval {
                    "question"
                } else {
                    "step"
                },
                expected_total: rec.spec.get("limit").and_then(|v| v.as_u64()),
            };
            let (id, out) = run_job(&engine, None, Some(id), &view)?;
            super::train::report(ctx, id, &out)
        }
        RunsCommand::Export {
            run,
            format: ExportFormat::LmEval,
            out,
            force,
        } => {
            let store = ctx.store()?;
            export_lm_eval(ctx, &store, &run, out, force)
        }
    }
}

/// Every record of a run, in index order.
fn all_records(store: &Store, id: soup_store::RunId) -> Result<Vec<StoredQuestion>> {
    let mut q = RecordQuery {
        verdict: None,
        from: 0,
        limit: 500,
    };
    let mut all = Vec::new();
    loop {
        let page = store.records_page(id, &q)?;
        for e in &page.skipped {
            eprintln!("warning: {e}");
        }
        all.extend(page.items);
        match page.next {
            Some(n) => q.from = n,
            None => break,
        }
    }
    Ok(all)
}

fn export_lm_eval(
    ctx: &super::Ctx,
    store: &Store,
    text: &str,
    out: Option<PathBuf>,
    force: bool,
) -> Result<()> {
    let id = store.resolve_run(text)?;
    let Some(run) = store.get_run(id)? else {
        bail!("no run {id}");
    };
    if run.status != RunStatus::Done {
        bail!(
            "run {id} is {}: export a finished evaluation (resume it first with `soup runs resume {id}`)",
            status_name(run.status)
        );
    }
    let records = all_records(store, id)?;
    let scores = store.scores(id)?;
    let export = super::lm_eval::build(&run, &records, &scores.items)?;
    let out = out.unwrap_or_else(|| PathBuf::from(format!("lm-eval-{id}")));
    let rules = super::output_rules(ctx, force, std::iter::empty::<&str>());
    let staged = soup_core::output::StagedDir::new(&out, &rules)?;
    let results = staged.path().join(export.results_file());
    std::fs::write(
        &results,
        serde_json::to_string_pretty(&export.results)? + "\n",
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", results.display()))?;
    let mut lines = String::new();
    for s in &export.samples {
        lines.push_str(&serde_json::to_string(s)?);
        lines.push('\n');
    }
    let samples = staged.path().join(export.samples_file());
    std::fs::write(&samples, lines).map_err(|e| anyhow::anyhow!("{}: {e}", samples.display()))?;
    let dir = staged.commit()?;
    if ctx.json {
        return super::print_json(&serde_json::json!({
            "run": id.to_string(),
            "out": dir,
            "results": dir.join(export.results_file()),
            "samples": dir.join(export.samples_file()),
        }));
    }
    println!(
        "wrote {} and {} ({} samples) in {}",
        export.results_file(),
        export.samples_file(),
        export.samples.len(),
        dir.display()
    );
    Ok(())
}

fn duration(r: &RunRecord) -> String {
    match (r.started, r.finished) {
        (Some(s), Some(f)) if f >= s => format!("{:.1}s", (f - s) as f64 / 1000.0),
        (Some(_), None) => "…".into(),
        _ => "-".into(),
    }
}

fn list(ctx: &super::Ctx, store: &Store, q: &RunQuery) -> Result<()> {
    let listing = store.list_runs(q)?;
    for e in &listing.skipped {
        eprintln!("warning: {e}");
    }
    if ctx.json {
        return super::print_json(&listing.items);
    }
    if listing.items.is_empty() {
        println!("no runs yet");
        return Ok(());
    }
    println!(
        "{:<26} {:<6} {:<10} {:<17} {:>8}  label",
        "run", "kind", "status", "created", "took"
    );
    for r in &listing.items {
        println!(
            "{:<26} {:<6} {:<10} {:<17} {:>8}  {}",
            r.id.to_string(),
            kind_name(r.kind),
            status_name(r.status),
            crate::format::date_time(r.created),
            duration(r),
            r.label
        );
    }
    Ok(())
}

fn show(ctx: &super::Ctx, store: &Store, text: &str) -> Result<()> {
    let id = store.resolve_run(text)?;
    let Some(r) = store.get_run(id)? else {
        bail!("no run {id}");
    };
    let counts = store.verdict_counts(id)?;
    let scores = store.scores(id)?;
    for e in &scores.skipped {
        eprintln!("warning: {e}");
    }
    if ctx.json {
        return super::print_json(&serde_json::json!({
            "run": r,
            "counts": counts,
            "records": counts.values().sum::<u64>(),
            "scores": scores.items,
        }));
    }
    println!("run       {}", r.id);
    println!("kind      {}", kind_name(r.kind));
    println!("label     {}", r.label);
    println!("status    {}", status_name(r.status));
    println!("created   {}", crate::format::date_time(r.created));
    if let Some(s) = r.started {
        println!("started   {}", crate::format::date_time(s));
    }
    if let Some(f) = r.finished {
        println!(
            "finished  {} (took {})",
            crate::format::date_time(f),
            duration(&r)
        );
    }
    if r.progress.total > 0 || !r.progress.message.is_empty() {
        println!(
            "progress  {}/{} {}",
            r.progress.done, r.progress.total, r.progress.message
        );
    }
    if let Some(e) = &r.error {
        println!("error     {e}");
    }
    if !counts.is_empty() {
        let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "records   {} ({})",
            counts.values().sum::<u64>(),
            parts.join(", ")
        );
    }
    for s in &scores.items {
        println!(
            "score     {:<12} {:.4} (95% CI {:.4}..{:.4}, n={})",
            s.metric, s.value, s.ci_low, s.ci_high, s.n
        );
    }
    println!("spec      {}", serde_json::to_string_pretty(&r.spec)?);
    Ok(())
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > max {
        let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

fn records(ctx: &super::Ctx, store: &Store, text: &str, verdict: Option<String>) -> Result<()> {
    let id = store.resolve_run(text)?;
    if store.get_run(id)?.is_none() {
        bail!("no run {id}");
    }
    let mut q = RecordQuery {
        verdict,
        from: 0,
        limit: 200,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if !ctx.json {
        writeln!(
            out,
            "{:>5}  {:<16} {:<9} {:<12} {:<12} output",
            "#", "id", "verdict", "gold", "pred"
        )?;
    }
    loop {
        let page = store.records_page(id, &q)?;
        for e in &page.skipped {
            eprintln!("warning: {e}");
        }
        for r in &page.items {
            if ctx.json {
                // One flat object a line: the grader's record with the store's index fields.
                let mut line = match &r.detail {
                    serde_json::Value::Object(o) => o.clone(),
                    other => serde_json::Map::from_iter([("detail".to_string(), other.clone())]),
                };
                line.insert("run".into(), r.run.to_string().into());
                line.insert("index".into(), r.index.into());
                line.insert("id".into(), r.id.clone().into());
                line.insert("verdict".into(), r.verdict.clone().into());
                line.insert("scores".into(), serde_json::to_value(&r.scores)?);
                writeln!(out, "{}", serde_json::Value::Object(line))?;
            } else {
                // The grader's record, as it wrote it.
                let text = |key: &str| r.detail.get(key).and_then(|v| v.as_str()).unwrap_or("-");
                writeln!(
                    out,
                    "{:>5}  {:<16} {:<9} {:<12} {:<12} {}",
                    r.index,
                    one_line(&r.id, 16),
                    r.verdict,
                    one_line(text("gold"), 12),
                    one_line(text("pred"), 12),
                    one_line(text("raw_output"), 60)
                )?;
            }
        }
        match page.next {
            Some(n) => q.from = n,
            None => break,
        }
    }
    out.flush()?;
    Ok(())
}
