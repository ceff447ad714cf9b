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
    /// A new or empty folder (a non-empty one needs --force).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Replace DIR if it is a non-empty folder (never the data dir, `.` or an ancestor).
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A directory written by `soup export --json`.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

/// Longest folder name an adapter gets on export, in bytes, before its hash suffix: most
/// filesystems stop at 255.
const MAX_DIR_NAME: usize = 150;

/// The folder name of an adapter on export: letters, digits, `-`, `_` and `.` kept, every other
/// byte (and a leading dot) written as `%XX`, so distinct names give distinct folders (`a/b`
/// is `a%2Fb`, `a\nb` is `a%0Ab`). A name whose escaped form is too long is cut and given a
/// hash of the whole name.
fn dir_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        let keep = b.is_ascii_alphanumeric() || b"-_".contains(&b) || (b == b'.' && i > 0);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    // `NNNN-name.safetensors` are the raw tensor files of a JSON export, in the same folder.
    if let Some(stem) = out.strip_suffix(".safetensors") {
        out = format!("{stem}%2Esafetensors");
    }
    if out.len() > MAX_DIR_NAME {
        use sha2::Digest;
        let hash = sha2::Sha256::digest(name.as_bytes());
        let mut cut = MAX_DIR_NAME;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('~');
        out.push_str(&soup_store::keys::hex(&hash[..8]));
    }
    out
}

/// Folder names for all adapters, distinct even on a case-insensitive filesystem (where
/// `Math` and `math` would collide): a later clash gets `~2`, `~3`, ... (`~` never comes out
/// of [`dir_name`] otherwise, so a suffix cannot collide with another name).
fn dir_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    names
        .into_iter()
        .map(|n| {
            let base = dir_name(n);
            let mut candidate = base.clone();
            let mut k = 2;
            while !seen.insert(candidate.to_lowercase()) {
                candidate = format!("{base}~{k}");
                k += 1;
            }
            candidate
        })
        .collect()
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
    let rules = super::output_rules(ctx, a.force, std::iter::empty::<&Path>());
    soup_core::output::check_dir(&a.dir, &rules)?;
    let store = ctx.store()?;
    // Everything goes into a temporary sibling, renamed into place at the end: a failed
    // export leaves nothing behind, and a non-empty DIR is never written into.
    let staged = soup_core::output::StagedDir::new(&a.dir, &rules)?;
    let report = if csv {
        store.export_csv(staged.path())?
    } else {
        store.export_json(staged.path())?
    };
    // Adapters as PEFT directories in either format: what other tools load. One whose
    // tensors are damaged is skipped and named; the others are exported.
    let mut peft_dirs = Vec::new();
    let mut unreadable = Vec::new();
    let adapters = store.list_adapters()?;
    let names = dir_names(adapters.items.iter().map(|r| r.name.as_str()));
    for (rec, folder) in adapters.items.iter().zip(&names) {
        let adapter = match soup_core::runtime::resolve_adapter(
            Some(&store),
            &rec.name,
            &candle_core::Device::Cpu,
        ) {
            Ok(adapter) => adapter,
            // Already named in the JSON export's own skipped list.
            Err(soup_core::error::CoreError::Store(e)) if !csv && e.is_item_damage() => continue,
            Err(e) => {
                // One unreadable adapter is named and skipped; the rest is exported.
                unreadable.push(format!("adapter {:?}: {e}", rec.name));
                continue;
            }
        };
        let dest = staged.path().join("adapters").join(folder);
        std::fs::create_dir_all(&dest)
            .with_context(|| format!("{}: cannot create", dest.display()))?;
        soup_core::lora::peft::write_peft_files(&adapter, &dest)
            .with_context(|| format!("exporting adapter {}", rec.name))?;
        peft_dirs.push(a.dir.join("adapters").join(folder));
    }
    staged.commit()?;
    for e in &report.skipped {
        eprintln!("warning: skipped {e}");
    }
    for e in &unreadable {
        eprintln!("warning: skipped {e}");
    }
    if ctx.json && (a.jsonl || csv) {
        let mut v = summary(&report);
        v["dir"] = serde_json::json!(a.dir);
        v["peft_dirs"] = serde_json::json!(peft_dirs);
        if let Some(list) = v["skipped"].as_array_mut() {
            list.extend(unreadable.into_iter().map(serde_json::Value::from));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_are_distinct_and_safe() {
        let names = [
            "a/b",
            "a\nb",
            "a_b",
            "a%2Fb",
            "a b",
            "Math",
            "math",
            ".hidden",
            "..",
            "x.safetensors",
            "0000-x.safetensors",
            "数学",
            "math-lora_v1.2",
        ];
        let folders = dir_names(names.iter().copied());
        let distinct: std::collections::HashSet<String> =
            folders.iter().map(|f| f.to_lowercase()).collect();
        assert_eq!(distinct.len(), names.len(), "{folders:?}");
        for f in &folders {
            assert!(!f.is_empty() && !f.starts_with('.'), "{f}");
            assert!(
                f.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.%~".contains(&b)),
                "{f}"
            );
            assert!(!f.ends_with(".safetensors"), "{f}");
        }
        // Plain names keep their folder name (what earlier exports wrote).
        assert_eq!(dir_name("math-lora_v1.2"), "math-lora_v1.2");
        assert_eq!(dir_name("a/b"), "a%2Fb");
        assert_eq!(dir_name("a\nb"), "a%0Ab");
        // Long names are cut and keep a hash of the whole name.
        let long_a = dir_name(&format!("{}a", "é".repeat(200)));
        let long_b = dir_name(&format!("{}b", "é".repeat(200)));
        assert!(long_a.len() <= MAX_DIR_NAME + 17 && long_a != long_b);
    }
}
