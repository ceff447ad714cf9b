//! `soup recipe`: the whole LoRA Soups comparison (skill LoRAs, DATA-MIX, CAT, every merge,
//! every evaluation) from a built-in or user recipe, printed as a table.

use super::Ctx;
use anyhow::{Context, Result};
use clap::Args;
use soup_core::engine::recipe::{run_recipe, Recipe, Reuse};
use soup_core::engine::JobUpdate;
use std::time::Instant;

#[derive(Debug, Args)]
pub struct RecipeArgs {
    /// `code-math`, `manual-qa`, `game-qa`, or a recipe file (TOML or JSON).
    pub recipe: String,
    /// Data sizes and steps: tiny (a smoke test, minutes; cannot separate methods), standard
    /// (sized for a paired comparison: 250 target questions; hours on 2 CPU cores), small or
    /// full (a GPU).
    #[arg(long, default_value = "tiny")]
    pub budget: String,
    /// Recompute every adapter and evaluation instead of reusing finished ones.
    #[arg(long)]
    pub fresh: bool,
    /// Run nothing: print the table of what the store already holds for this recipe and budget
    /// (after an interrupted or time-limited run; missing cells print as -).
    #[arg(long, conflicts_with = "fresh")]
    pub stored: bool,
    /// Print the table as CSV.
    #[arg(long, conflicts_with = "markdown")]
    pub csv: bool,
    /// Print the table as Markdown (the default text form is Markdown too).
    #[arg(long)]
    pub markdown: bool,
    /// Print the recipe file of a built-in recipe instead of running it (to copy and edit).
    #[arg(long)]
    pub show: bool,
    /// Point a data set of the recipe at a file or built-in set: `target=PATH`, `SKILL=PATH`
    /// (its training data) or `SKILL.test=PATH`; repeatable. Needed by recipes on data soup
    /// does not ship, such as game-qa (the paper's game manual and questions). Without it,
    /// the recipe's own data.
    #[arg(long = "data", value_name = "NAME=PATH")]
    pub data: Vec<String>,
    // Where the evaluations generate (training, merges and grading stay local).
    #[command(flatten)]
    pub backend: super::eval::BackendArgs,
}

pub fn run(ctx: &Ctx, args: RecipeArgs) -> Result<()> {
    if args.show {
        let text = soup_core::engine::recipe::BUILTIN_RECIPES
            .iter()
            .find(|(n, _)| *n == args.recipe)
            .map(|(_, t)| t.to_string())
            .context("--show prints a built-in recipe: code-math, manual-qa or game-qa")?;
        print!("{text}");
        return Ok(());
    }
    let mut recipe = Recipe::load(&args.recipe)?;
    for d in &args.data {
        let (which, path) = d.split_once('=').with_context(|| {
            format!("--data {d:?}: write NAME=PATH, as in --data game=manual.txt")
        })?;
        recipe.set_data(which, path)?;
    }
    recipe.remote = args.backend.remote()?;
    let engine = ctx.engine()?;
    super::check_model(&engine, &recipe.model)?;
    let t0 = Instant::now();
    let mut last = String::new();
    let reuse = if args.fresh {
        Reuse::Fresh
    } else if args.stored {
        Reuse::StoredOnly
    } else {
        Reuse::Finished
    };
    let table = run_recipe(&engine, &recipe, &args.budget, reuse, &mut |label, u| {
        // Ctrl-C stops the running job at its next step; finished artifacts are kept and
        // a re-run of the recipe picks up from them.
        if super::jobs::interrupted() {
            let q = soup_store::RunQuery {
                status: Some(soup_store::RunStatus::Running),
                limit: 1,
                ..Default::default()
            };
            let running = engine.store().list_runs(&q).ok();
            if let Some(run) = running.and_then(|l| l.items.first().map(|r| r.id)) {
                if let Some(ctl) = engine.control(run) {
                    ctl.cancel.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }
        let line = match u {
            JobUpdate::Progress {
                done,
                total,
                message,
                ..
            } if *total > 0 => {
                format!("{label}: {done}/{total} {message}")
            }
            JobUpdate::Progress { message, .. } => format!("{label}: {message}"),
            JobUpdate::Finished(_) => format!("{label}: done"),
            JobUpdate::Failed(e) => format!("{label}: failed: {e}"),
            _ => return,
        };
        if line != last {
            eprintln!("[{:>5.0}s] {line}", t0.elapsed().as_secs_f64());
            last = line;
        }
    })?;
    if ctx.json {
        super::print_json(&table)?;
    } else if args.csv {
        print!("{}", table.csv());
    } else {
        println!("{}", table.markdown());
    }
    if args.stored {
        return Ok(());
    }
    eprintln!(
        "recipe {} ({}) finished in {:.0} s",
        recipe.name,
        args.budget,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
