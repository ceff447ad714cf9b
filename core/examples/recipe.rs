//! Runs a recipe without the command line (handy while the CLI is rebuilt):
//!
//!     SOUP_HOME=DIR cargo run --release -p soup-core --example recipe -- code-math tiny [--fresh]

use soup_core::engine::recipe::{run_recipe, Recipe};
use soup_core::engine::{Engine, JobUpdate};
use std::sync::Arc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args.first().cloned().unwrap_or_else(|| "code-math".into());
    let budget = args.get(1).cloned().unwrap_or_else(|| "tiny".into());
    let fresh = args.iter().any(|a| a == "--fresh");
    let dir = soup_store::data_dir(None);
    let store = match soup_store::Store::open(&dir) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let engine = Engine::new(store, &dir, candle_core::Device::Cpu).expect("engine");
    let recipe = Recipe::load(&name).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let t0 = std::time::Instant::now();
    let mut last = String::new();
    let res = run_recipe(&engine, &recipe, &budget, fresh, &mut |label, u| {
        let line = match u {
            JobUpdate::Progress {
                done,
                total,
                message,
                ..
            } => format!("{label}: {done}/{total} {message}"),
            other => format!("{label}: {other:?}"),
        };
        if line != last {
            eprintln!("[{:>6.0}s] {line}", t0.elapsed().as_secs_f64());
            last = line;
        }
    });
    match res {
        Ok(table) => {
            println!("{}", table.markdown());
            eprintln!("total {:.0} s", t0.elapsed().as_secs_f64());
        }
        Err(e) => {
            eprintln!("recipe failed: {e}");
            std::process::exit(1);
        }
    }
}
