//! `soup data generate|list`: the embedded synthetic task sets, as files or by name.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use soup_core::engine::BUILTINS;
use soup_evals::synthetic::{write_synthetic, SyntheticKind};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(Debug, Subcommand)]
enum DataCommand {
    /// Write a synthetic family (code-math or manual-qa) as files.
    Generate {
        /// code-math or manual-qa.
        kind: SyntheticKind,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// A new or empty folder (a non-empty one needs --force).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Replace --out if it is a non-empty folder (never the data dir, `.` or an ancestor).
        #[arg(long)]
        force: bool,
    },
    /// The built-in sets, usable as --data builtin:NAME (builtin:NAME@SEED for another seed).
    List,
}

fn family(kind: SyntheticKind) -> &'static str {
    match kind {
        SyntheticKind::CodeMath => "code-math",
        SyntheticKind::ManualQa => "manual-qa",
    }
}

pub fn run(ctx: &super::Ctx, args: DataArgs) -> Result<()> {
    match args.command {
        DataCommand::Generate {
            kind,
            seed,
            out,
            force,
        } => {
            let rules = super::output_rules(ctx, force, std::iter::empty::<&std::path::Path>());
            let staged = soup_core::output::StagedDir::new(&out, &rules)?;
            let written = write_synthetic(kind, seed, staged.path()).with_context(|| {
                format!("writing the {} sets to {}", family(kind), out.display())
            })?;
            let target = staged.commit()?;
            let files: Vec<PathBuf> = written
                .iter()
                .filter_map(|f| f.file_name())
                .map(|n| target.join(n))
                .collect();
            if ctx.json {
                return super::print_json(&files);
            }
            println!("wrote {} files to {}:", files.len(), out.display());
            for f in files {
                println!("  {}", f.display());
            }
            Ok(())
        }
        DataCommand::List => {
            if ctx.json {
                let v: Vec<serde_json::Value> = BUILTINS
                    .iter()
                    .map(|(name, kind, file)| {
                        serde_json::json!({"name": format!("builtin:{name}"), "family": family(*kind), "file": file})
                    })
                    .collect();
                return super::print_json(&v);
            }
            println!("{:<24} {:<10} file", "name", "family");
            for (name, kind, file) in BUILTINS.iter() {
                println!(
                    "{:<24} {:<10} {file}",
                    format!("builtin:{name}"),
                    family(*kind)
                );
            }
            Ok(())
        }
    }
}
