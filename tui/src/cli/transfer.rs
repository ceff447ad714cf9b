//! `soup export` and `soup import`: the whole store as JSON lines (importable) or CSV (for
//! spreadsheets), plus every adapter as a PEFT directory under `DIR/adapters/NAME` either way.

use anyhow::{bail, Context, Result};
use clap::Args;
use soup_store::TransferReport;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// JSON lines: runs, scores, records, models, adapters (what `soup import` reads).
    #[arg(long = "jsonl", visible_alias = "json-lines", conflicts_with = "csv")]
    jsonl: bool,
    /// CSV: runs, scores, records.
    #[arg(long)]
    csv: bool,
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A directory written by `soup export --json`.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

/// A directory name made from an adapter name.
fn dir_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_start_matches('.')
        .to_string()
}

fn summary(r: &TransferReport) -> serde_json::Value {
    serde_json::json!({
        "models": r.models, "datasets": r.datasets, "adapters": r.adapters, "runs": r.runs,
        "scores": r.scores, "records": r.records,
        "skipped": r.skipped.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
    })
}

/// `--json` is the global flag; `soup export --json DIR` therefore selects JSON lines.
pub fn export(ctx: &super::Ctx, a: ExportArgs) -> Result<()> {
    let csv = a.csv;
    if !csv && !a.jsonl && !ctx.json {
        bail!("say which format: soup export --json DIR (importable) or soup export --csv DIR");
    }
    let store = ctx.store()?;
    std::fs::create_dir_all(&a.dir)
        .with_context(|| format!("{}: cannot create", a.dir.display()))?;
    let report = if csv {
        store.export_csv(&a.dir)?
    } else {
        store.export_json(&a.dir)?
    };
    // Adapters as PEFT directories in either format: what other tools load.
    let mut peft_dirs = Vec::new();
    let adapters = store.list_adapters()?;
    for rec in &adapters.items {
        let dest = a.dir.join("adapters").join(dir_name(&rec.name));
        let adapter = super::adapter::load_stored(&store, &rec.name)?;
        soup_core::lora::peft::save_peft(&adapter, &dest)
            .with_context(|| format!("exporting adapter {}", rec.name))?;
        peft_dirs.push(dest);
    }
    for e in &report.skipped {
        eprintln!("warning: skipped {e}");
    }
    if ctx.json && (a.jsonl || csv) {
        let mut v = summary(&report);
        v["dir"] = serde_json::json!(a.dir);
        v["peft_dirs"] = serde_json::json!(peft_dirs);
        return super::print_json(&v);
    }
    println!(
        "exported {} runs, {} scores, {} records, {} adapters, {} models to {}{}",
        report.runs,
        report.scores,
        report.records,
        report.adapters,
        report.models,
        a.dir.display(),
        if csv { " (CSV)" } else { "" }
    );
    if !peft_dirs.is_empty() {
        println!(
            "adapters as PEFT directories under {}",
            Path::new(&a.dir).join("adapters").display()
        );
    }
    Ok(())
}

pub fn import(ctx: &super::Ctx, a: ImportArgs) -> Result<()> {
    if !a.dir.is_dir() {
        bail!(
            "{}: not a directory written by `soup export --json`",
            a.dir.display()
        );
    }
    let known = [
        "runs.jsonl",
        "adapters.jsonl",
        "records.jsonl",
        "models.jsonl",
    ];
    if !known.iter().any(|f| a.dir.join(f).is_file()) {
        bail!(
            "{}: holds none of {}: not a `soup export --json` directory",
            a.dir.display(),
            known.join(", ")
        );
    }
    let store = ctx.store()?;
    let report = store.import_json(&a.dir)?;
    if ctx.json {
        return super::print_json(&summary(&report));
    }
    println!(
        "imported {} runs, {} scores, {} records, {} adapters, {} models from {}",
        report.runs,
        report.scores,
        report.records,
        report.adapters,
        report.models,
        a.dir.display()
    );
    Ok(())
}
