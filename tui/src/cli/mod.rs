//! The command line: one module per subcommand family, all sharing [`Ctx`] (data dir, device,
//! `--json`), the job runner with its progress bar and Ctrl-C cancellation ([`jobs`]), and
//! the error report that turns any failure into one message and an exit code.

pub mod adapter;
pub mod bench;
pub mod data;
pub mod eval;
pub mod generate;
pub mod jobs;
pub mod lm_eval;
pub mod merge;
pub mod model;
pub mod recipe;
pub mod runs;
pub mod serve;
pub mod train;
pub mod transfer;

use anyhow::{Context, Result};
use candle_core::Device;
use soup_core::engine::Engine;
use soup_store::Store;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What every subcommand knows: the global flags.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub data_dir: PathBuf,
    pub device: String,
    /// `--dtype`; None: the device's default (f32 on the CPU, bf16 on a GPU).
    pub dtype: Option<soup_core::device::Precision>,
    pub json: bool,
}

impl Ctx {
    pub fn device(&self) -> Result<Device> {
        Ok(soup_core::device::parse_device(&self.device)?)
    }

    /// The precision models load in on `device`.
    pub fn precision(&self, device: &Device) -> soup_core::device::Precision {
        self.dtype
            .unwrap_or_else(|| soup_core::device::Precision::default_for(device))
    }

    /// Opens the data dir's database, exclusively. The store's errors already say what to do
    /// (another process holds it, the dir is a file, ...).
    pub fn store(&self) -> Result<Arc<Store>> {
        Ok(Arc::new(Store::open(&self.data_dir)?))
    }

    /// An engine that runs jobs on this thread.
    pub fn engine(&self) -> Result<Engine> {
        let store = self.store()?;
        Ok(Engine::new(
            store,
            &self.data_dir,
            self.device()?,
            self.dtype,
        )?)
    }
}

/// Prints `err` with its causes on stderr and returns the exit code: 130 for a cancelled job,
/// 1 otherwise.
pub fn report_error(err: &anyhow::Error) -> i32 {
    if let Some(c) = err.downcast_ref::<jobs::Cancelled>() {
        eprintln!("{c}");
        return 130;
    }
    eprintln!("error: {err:#}");
    1
}

/// The rules every `--out` of this command obeys (see `soup_core::output`): `--force`, the
/// paths it reads, and the data dir, none of which an output may replace.
pub fn output_rules<P: AsRef<Path>>(
    ctx: &Ctx,
    force: bool,
    inputs: impl IntoIterator<Item = P>,
) -> soup_core::output::OutputRules {
    soup_core::output::OutputRules::new(force)
        .data_dir(&ctx.data_dir)
        .existing_inputs(inputs)
}

/// Fails before a job is recorded when a name for a new adapter or model breaks the rule of
/// [`soup_store::validate_name`] (no `/`, control characters, leading dot, ...).
pub fn check_new_name(what: &'static str, name: &str) -> Result<()> {
    soup_store::validate_name(what, name)?;
    Ok(())
}

/// Fails before a job is recorded when its model cannot be found (the message says to run
/// `soup model fetch` for the default), so a typo does not leave a failed run behind.
pub fn check_model(engine: &Engine, spec: &str) -> Result<()> {
    soup_core::runtime::locate_model(Some(engine.store()), engine.data_dir(), spec)?;
    Ok(())
}

/// A path the user typed, made absolute when it exists, so a recorded job spec still finds it
/// when resumed from another directory. Names (not paths) pass through unchanged.
pub fn absolute_if_exists(spec: &str) -> String {
    let p = Path::new(spec);
    if p.exists() {
        if let Ok(abs) = std::fs::canonicalize(p) {
            return abs.display().to_string();
        }
    }
    spec.to_string()
}

/// `0.7,0.3` as numbers, naming the flag when one is not a number.
pub fn parse_floats(flag: &str, text: &str) -> Result<Vec<f64>> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse::<f64>()
                .with_context(|| format!("{flag}: {s:?} is not a number"))
        })
        .collect()
}

/// `a,b,c` as trimmed, non-empty items.
pub fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Prints a value as one line of JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_numbers() {
        assert_eq!(split_list(" a, b,,c "), vec!["a", "b", "c"]);
        assert_eq!(
            parse_floats("--weights", "0.7,0.3").unwrap(),
            vec![0.7, 0.3]
        );
        let err = parse_floats("--weights", "0.7,x").unwrap_err().to_string();
        assert!(err.contains("--weights") && err.contains("\"x\""), "{err}");
    }
}
