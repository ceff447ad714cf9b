//! `soup`: a terminal workbench for LoRA Soups. With no subcommand it opens the dashboard;
//! every subcommand is a thin layer over `soup_core` (jobs, models, adapters) and `soup_store`
//! (runs, records, exports), so whatever the dashboard offers can also be scripted.
//!
//! Failures print one clear message on stderr (naming the file, tensor, run or limit at
//! fault) and exit non-zero; a cancelled job (Ctrl-C) exits 130 and says how to resume it.

mod cli;
mod dashboard;
mod format;
#[cfg(test)]
mod help_defaults;
mod logging;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "soup",
    version,
    about = "A terminal workbench for LoRA Soups: train skill LoRAs, compose them (CAT, merges), grade the compositions.",
    long_about = None
)]
struct Cli {
    /// Where models, adapters, runs and records live (default: $SOUP_HOME, else the platform
    /// data dir).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Where models run: cpu, cuda or cuda:N.
    #[arg(long, global = true, default_value = "cpu", value_name = "DEVICE")]
    device: String,
    /// Dtype of the frozen weights and activations: f32, bf16 or f16 (default: f32 on cpu,
    /// bf16 on cuda). Adapters and CAT weights always train in f32.
    #[arg(long, global = true, value_name = "DTYPE")]
    dtype: Option<String>,
    /// Machine-readable output: one JSON document (or one JSON object per line for records).
    #[arg(long, global = true)]
    json: bool,
    /// More log lines on stderr: -v info, -vv debug, -vvv trace (default: warnings only).
    /// RUST_LOG, when set, takes precedence. The dashboard logs to soup.log in the data dir.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fetch, import and list base models.
    Model(cli::model::ModelArgs),
    /// Generate text with a model and optional adapters.
    Generate(cli::generate::GenerateArgs),
    /// Look inside a model (logits).
    Inspect(cli::generate::InspectArgs),
    /// Train a LoRA adapter or learn CAT weights over adapters.
    Train(cli::train::TrainArgs),
    /// Merge adapters (cat, linear, svd, ties, dare, magnitude_prune, lorahub).
    Merge(cli::merge::MergeArgs),
    /// List, show, import, export and delete stored adapters.
    Adapter(cli::adapter::AdapterArgs),
    /// Evaluate a model configuration on a task; prints the run id and scores.
    Eval(cli::eval::EvalArgs),
    /// Grade a predictions file produced anywhere.
    Grade(cli::eval::GradeArgs),
    /// Write or list the built-in synthetic data sets.
    Data(cli::data::DataArgs),
    /// List, show, page, delete and resume runs.
    Runs(cli::runs::RunsArgs),
    /// Export runs, scores, records and adapters (JSON lines or CSV, adapters as PEFT dirs).
    Export(cli::transfer::ExportArgs),
    /// Import a directory written by `soup export --json`.
    Import(cli::transfer::ImportArgs),
    /// Run the LoRA Soups comparison of a recipe (code-math, manual-qa, or a file).
    Recipe(cli::recipe::RecipeArgs),
    /// Measure generation, training and merge speed (the figures of BENCHMARKS.md).
    Bench(cli::bench::BenchArgs),
    /// Serve the base model, adapters and compositions over OpenAI's HTTP API.
    Serve(cli::serve::ServeArgs),
}

impl Cli {
    /// The command line as parsed and as `--help` shows it: the derive, plus the defaults
    /// that are computed (see `cli::train::show_defaults`).
    fn full_command() -> clap::Command {
        cli::train::show_defaults(Cli::command())
    }
}

fn main() {
    let matches = Cli::full_command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let data_dir = soup_store::data_dir(cli.data_dir.clone());
    logging::init(
        cli.verbose,
        match cli.command {
            // A line on stderr would be painted over the dashboard's screen.
            None => logging::Sink::File(logging::dashboard_log(&data_dir)),
            Some(_) => logging::Sink::Stderr,
        },
    );
    let dtype = match cli.dtype.as_deref().map(soup_core::device::parse_dtype) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let ctx = cli::Ctx {
        data_dir,
        device: cli.device,
        dtype,
        json: cli.json,
    };
    // Jobs and generation turn Ctrl-C into a clean cancel; install the handler before any
    // work so that an early Ctrl-C is not lost. (The dashboard reads Ctrl-C as a key.)
    if matches!(
        cli.command,
        Some(
            Command::Train(_)
                | Command::Eval(_)
                | Command::Merge(_)
                | Command::Generate(_)
                | Command::Recipe(_)
        )
    ) {
        cli::jobs::watch_interrupt();
    }
    let result = match cli.command {
        None => open_dashboard(&ctx),
        Some(Command::Model(a)) => cli::model::run(&ctx, a),
        Some(Command::Generate(a)) => cli::generate::generate(&ctx, a),
        Some(Command::Inspect(a)) => cli::generate::inspect(&ctx, a),
        Some(Command::Train(a)) => cli::train::run(&ctx, a),
        Some(Command::Merge(a)) => cli::merge::run(&ctx, a),
        Some(Command::Adapter(a)) => cli::adapter::run(&ctx, a),
        Some(Command::Eval(a)) => cli::eval::eval(&ctx, a),
        Some(Command::Grade(a)) => cli::eval::grade(&ctx, a),
        Some(Command::Data(a)) => cli::data::run(&ctx, a),
        Some(Command::Runs(a)) => cli::runs::run(&ctx, a),
        Some(Command::Export(a)) => cli::transfer::export(&ctx, a),
        Some(Command::Import(a)) => cli::transfer::import(&ctx, a),
        Some(Command::Recipe(a)) => cli::recipe::run(&ctx, a),
        Some(Command::Bench(a)) => cli::bench::run(&ctx, a),
        Some(Command::Serve(a)) => cli::serve::run(&ctx, a),
    };
    if let Err(err) = result {
        std::process::exit(cli::report_error(&err));
    }
}

/// `soup` alone: the dashboard, on an engine with a background worker.
fn open_dashboard(ctx: &cli::Ctx) -> anyhow::Result<()> {
    let store = ctx.store()?;
    let engine = soup_core::engine::Engine::start(store, &ctx.data_dir, ctx.device()?, ctx.dtype)?;
    dashboard::run(engine)
}
