//! `soup adapter list|show|import|export|delete`: the adapters in the store, with their
//! metadata, loss curves and, for CAT adapters, the learned weight of every adapter at every
//! layer and module.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use soup_core::lora::{peft, LoraAdapter};
use soup_store::{AdapterMethod, AdapterRecord, CatWeights, ModuleSpec, Store};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct AdapterArgs {
    #[command(subcommand)]
    command: AdapterCommand,
}

#[derive(Debug, Subcommand)]
enum AdapterCommand {
    /// List stored adapters.
    List,
    /// Metadata, loss curve summary and (CAT) the learned weights.
    Show { name: String },
    /// Store a PEFT adapter directory.
    Import {
        #[arg(value_name = "PEFT_DIR")]
        dir: PathBuf,
        #[arg(long)]
        name: String,
        /// The base model it belongs to (default: the config's base_model_name_or_path).
        #[arg(long)]
        base_model: Option<String>,
    },
    /// Write a stored adapter as a PEFT directory.
    Export {
        name: String,
        /// A new or empty folder (a non-empty one needs --force).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Replace --out if it is a non-empty folder (never an input, the data dir, `.`).
        #[arg(long)]
        force: bool,
    },
    /// Delete a stored adapter and its tensors.
    Delete { name: String },
}

pub fn run(ctx: &super::Ctx, args: AdapterArgs) -> Result<()> {
    let store = ctx.store()?;
    match args.command {
        AdapterCommand::List => list(ctx, &store),
        AdapterCommand::Show { name } => show(ctx, &store, &name),
        AdapterCommand::Import {
            dir,
            name,
            base_model,
        } => import(ctx, &store, &dir, &name, base_model),
        AdapterCommand::Export { name, out, force } => {
            let rules = super::output_rules(ctx, force, std::iter::empty::<&Path>());
            soup_core::output::check_dir(&out, &rules)?;
            let adapter = load_stored(&store, &name)?;
            peft::save_peft_with(&adapter, &out, &rules)?;
            if ctx.json {
                super::print_json(&serde_json::json!({"name": name, "out": out}))
            } else {
                println!("wrote {name} as a PEFT adapter to {}", out.display());
                Ok(())
            }
        }
        AdapterCommand::Delete { name } => {
            if !store.delete_adapter(&name)? {
                bail!("no adapter named {name:?} (see `soup adapter list`)");
            }
            if ctx.json {
                super::print_json(&serde_json::json!({"deleted": name}))
            } else {
                println!("deleted adapter {name}");
                Ok(())
            }
        }
    }
}

/// A stored adapter's tensors, on the CPU.
pub fn load_stored(store: &Store, name: &str) -> Result<LoraAdapter> {
    if store.get_adapter(name)?.is_none() {
        bail!("no adapter named {name:?} (see `soup adapter list`)");
    }
    Ok(soup_core::runtime::resolve_adapter(
        Some(store),
        name,
        &candle_core::Device::Cpu,
    )?)
}

fn method_name(m: AdapterMethod) -> &'static str {
    match m {
        AdapterMethod::Trained => "trained",
        AdapterMethod::Cat => "cat",
        AdapterMethod::Merge => "merge",
        AdapterMethod::Import => "import",
    }
}

/// `q_proj r16` or `q_proj,k_proj r8` when ranks agree.
fn modules_summary(modules: &[ModuleSpec]) -> String {
    let mut by_rank: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for m in modules {
        by_rank
            .entry(m.rank)
            .or_default()
            .push(m.module.trim_end_matches("_proj"));
    }
    by_rank
        .iter()
        .map(|(r, ms)| format!("{} r{r}", ms.join(",")))
        .collect::<Vec<_>>()
        .join("; ")
}

fn list(ctx: &super::Ctx, store: &Store) -> Result<()> {
    let listing = store.list_adapters()?;
    for e in &listing.skipped {
        eprintln!("warning: {e}");
    }
    if ctx.json {
        return super::print_json(&listing.items);
    }
    if listing.items.is_empty() {
        println!(
            "no adapters yet: train one (`soup train lora`) or import one (`soup adapter import`)"
        );
        return Ok(());
    }
    println!(
        "{:<24} {:<8} {:<22} {:<28} {:>9}  created",
        "name", "method", "base model", "modules", "size"
    );
    for a in &listing.items {
        println!(
            "{:<24} {:<8} {:<22} {:<28} {:>9}  {}",
            a.name,
            method_name(a.method),
            a.base_model,
            modules_summary(&a.modules),
            crate::format::bytes(a.size_bytes),
            crate::format::date_time(a.created)
        );
    }
    Ok(())
}

fn show(ctx: &super::Ctx, store: &Store, name: &str) -> Result<()> {
    let Some(a) = store.get_adapter(name)? else {
        bail!("no adapter named {name:?} (see `soup adapter list`)");
    };
    if ctx.json {
        return super::print_json(&a);
    }
    println!("adapter   {}", a.name);
    println!("method    {}", method_name(a.method));
    println!("base      {}", a.base_model);
    if let Some(s) = &a.skill {
        println!("skill     {s}");
    }
    if let Some(d) = &a.dataset {
        println!("data      {d}");
    }
    if !a.parents.is_empty() {
        println!("parents   {}", a.parents.join(", "));
    }
    println!("modules   {}", modules_summary(&a.modules));
    println!("size      {}", crate::format::bytes(a.size_bytes));
    println!("created   {}", crate::format::date_time(a.created));
    if let Some(run) = a.hyperparams.get("run").and_then(|v| v.as_str()) {
        println!("run       {run}");
    }
    print_loss_curve(&a);
    if let Some(m) = soup_core::train::CatMovement::of_adapter(&a) {
        println!("CAT run   {}", m.summary());
        for line in m.spread_lines() {
            println!("          {line}");
        }
    }
    if let Some(w) = &a.cat_weights {
        println!();
        print!("{}", cat_table(w));
    }
    Ok(())
}

fn print_loss_curve(a: &AdapterRecord) {
    let c = &a.loss_curve;
    if c.is_empty() {
        if let Some(v) = a.val_loss {
            println!("val loss  {v:.4}");
        }
        return;
    }
    let first = c[0];
    let last = c[c.len() - 1];
    let min = c
        .iter()
        .copied()
        .fold((0u64, f32::INFINITY), |m, p| if p.1 < m.1 { p } else { m });
    println!(
        "loss      {:.4} (step {}) -> {:.4} (step {}), lowest {:.4} at step {}, {} points",
        first.1,
        first.0,
        last.1,
        last.0,
        min.1,
        min.0,
        c.len()
    );
    if let Some(v) = a.val_loss {
        println!("val loss  {v:.4}");
    }
}

/// The learned CAT weights: one row per layer and module, one column per adapter.
pub fn cat_table(w: &CatWeights) -> String {
    let mut out = String::new();
    let col = w.adapters.iter().map(|a| a.len()).max().unwrap_or(0).max(8);
    let names: Vec<String> = w
        .adapters
        .iter()
        .map(|a| {
            Path::new(a)
                .file_name()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_else(|| a.clone())
        })
        .collect();
    out.push_str("CAT weights (layer x module, one column per adapter)\n");
    out.push_str(&format!("{:>5}  {:<10}", "layer", "module"));
    for n in &names {
        out.push_str(&format!(" {n:>col$}"));
    }
    out.push('\n');
    for l in 0..w.layers {
        for (m, module) in w.modules.iter().enumerate() {
            out.push_str(&format!("{l:>5}  {module:<10}"));
            for a in 0..w.adapters.len() {
                match w.get(a, l, m) {
                    Some(v) => out.push_str(&format!(" {v:>col$.4}")),
                    None => out.push_str(&format!(" {:>col$}", "-")),
                }
            }
            out.push('\n');
        }
    }
    out
}

fn import(
    ctx: &super::Ctx,
    store: &Store,
    dir: &Path,
    name: &str,
    base_model: Option<String>,
) -> Result<()> {
    super::check_new_name("adapter", name)?;
    if store.get_adapter(name)?.is_some() {
        bail!("an adapter named {name:?} already exists: choose another --name or `soup adapter delete {name}`");
    }
    let mut adapter = peft::load_peft(dir, &candle_core::Device::Cpu)
        .with_context(|| format!("importing {}", dir.display()))?;
    adapter.name = name.to_string();
    let base = import_base(ctx, store, &adapter, dir, base_model.as_deref())?;
    // The stored PEFT config names the base it was checked against, so an export says it too.
    adapter.meta.base_model = base.clone();
    let (bytes, config) = peft::to_bytes(&adapter)?;
    let mut modules: BTreeMap<&str, ModuleSpec> = BTreeMap::new();
    for ((_, m), p) in &adapter.pairs {
        modules.entry(m.hf_name()).or_insert(ModuleSpec {
            module: m.hf_name().to_string(),
            rank: p.rank(),
            alpha: p.alpha as f32,
        });
    }
    let source = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let rec = AdapterRecord {
        name: name.to_string(),
        base_model: base,
        skill: None,
        dataset: None,
        modules: modules.into_values().collect(),
        method: AdapterMethod::Import,
        parents: Vec::new(),
        hyperparams: serde_json::json!({
            "peft_config": config,
            "source": source.display().to_string(),
        }),
        loss_curve: Vec::new(),
        val_loss: None,
        cat_weights: None,
        size_bytes: bytes.len() as u64,
        created: soup_store::now_ms(),
        blob: None,
    };
    let saved = store.save_adapter(&rec, &bytes)?;
    if ctx.json {
        super::print_json(&saved)
    } else {
        println!(
            "imported {} as adapter {name} ({})",
            dir.display(),
            modules_summary(&saved.modules)
        );
        Ok(())
    }
}

/// The base model an imported adapter is recorded under, checked against the adapter.
///
/// `--base-model` must name a model soup can find (a stored name, `default`, an HF directory
/// or a GGUF file), and the adapter's layers and shapes must fit that model's config. Without
/// it, the config's `base_model_name_or_path` is used, and checked too when it names a model
/// soup has; PEFT writes `null` there for a model built from a config, and then
/// `--base-model` is required, since soup would otherwise record an adapter it cannot place.
fn import_base(
    ctx: &super::Ctx,
    store: &Store,
    adapter: &LoraAdapter,
    dir: &Path,
    flag: Option<&str>,
) -> Result<String> {
    use soup_core::runtime::{
        check_adapter_architecture, check_adapter_fits, locate_model, model_config_at,
    };
    let named = adapter.meta.base_model.clone();
    // The architecture of the base the adapter's config names, when soup can open it.
    let named_arch = (!named.is_empty())
        .then(|| locate_model(Some(store), &ctx.data_dir, &named).ok())
        .flatten()
        .and_then(|(_, path)| model_config_at(&path).ok())
        .map(|c| c.architecture);
    let check = |located: &str, path: &Path| -> Result<()> {
        let cfg = model_config_at(path)
            .with_context(|| format!("reading the config of base model {located}"))?;
        let context = || format!("importing {} onto {located}", dir.display());
        check_adapter_fits(adapter, &cfg, located).with_context(context)?;
        check_adapter_architecture(adapter, named_arch.as_deref(), &cfg, located)
            .with_context(context)?;
        Ok(())
    };
    if let Some(spec) = flag {
        let (located, path) = locate_model(Some(store), &ctx.data_dir, spec)
            .with_context(|| format!("--base-model {spec}"))?;
        check(&located, &path)?;
        return Ok(located);
    }
    if named.is_empty() {
        bail!(
            "{}: adapter_config.json names no base model (base_model_name_or_path is null): pass --base-model MODEL (a name from `soup model list`, `default`, an HF directory or a GGUF file) so soup can check the adapter against it",
            dir.display()
        );
    }
    match locate_model(Some(store), &ctx.data_dir, &named) {
        Ok((located, path)) => {
            check(&located, &path)?;
            Ok(located)
        }
        Err(_) => {
            // A hub name soup does not have: kept as written; the shapes are checked against
            // whichever model the adapter is later used with.
            eprintln!(
                "note: the adapter's base model {named:?} is not a model soup has; recorded as written (pass --base-model to check the adapter against a local model now)"
            );
            Ok(named)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cat_table_has_a_column_per_adapter_and_a_row_per_layer_module() {
        let w = CatWeights {
            adapters: vec!["math".into(), "/x/code".into()],
            layers: 2,
            modules: vec!["q_proj".into(), "v_proj".into()],
            values: vec![0.1, 0.2, 0.3, 0.4, 0.9, 0.8, 0.7, 0.6],
        };
        let t = cat_table(&w);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2 + 4, "{t}");
        assert!(
            lines[1].contains("math") && lines[1].contains("code"),
            "{t}"
        );
        assert!(
            lines[2].contains("q_proj")
                && lines[2].contains("0.1000")
                && lines[2].contains("0.9000"),
            "{t}"
        );
        assert!(
            lines[5].trim_start().starts_with('1') && lines[5].contains("0.6000"),
            "{t}"
        );
    }
}
