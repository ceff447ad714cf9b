//! Dashboard benchmark: frame render time, key-to-frame latency and start-up time with 500
//! adapters and a run of 100k records, on a ratatui `TestBackend` (no terminal I/O: what is
//! measured is the dashboard's own work, state update + store reads + layout + rendering).
//!
//! `cargo run --release -p soup --example dashboard_bench [-- ADAPTERS RECORDS]`
//!
//! The dashboard lives in the binary crate, so the example compiles its source directly (and
//! the formatters it shares with the command line).

#![allow(dead_code)]

#[path = "../src/dashboard/mod.rs"]
mod dashboard;
#[path = "../src/format.rs"]
mod format;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use soup_core::engine::{DataSource, EvalJob, EvalTarget, JobSpec};
use soup_store::{
    AdapterMethod, AdapterRecord, CatWeights, ModuleSpec, Progress, RunId, RunKind, RunStatus,
    Score, Store, StoredQuestion,
};

use dashboard::app::{update, Action, App};
use dashboard::backend::JobBackend;
use dashboard::effects::Effects;
use dashboard::event::action_for_key;

struct NoEngine;

impl JobBackend for NoEngine {
    fn submit(&self, _: JobSpec) -> Result<RunId, String> {
        Err("the benchmark runs no jobs".into())
    }
    fn cancel(&self, _: RunId) -> Result<(), String> {
        Ok(())
    }
    fn resume(&self, _: RunId) -> Result<(), String> {
        Ok(())
    }
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn seed(store: &Store, adapters: usize, records: u64) -> anyhow::Result<RunId> {
    for i in 0..adapters {
        let cat = i % 10 == 0;
        let record = AdapterRecord {
            name: format!("adapter-{i:04}"),
            base_model: "smollm2-135m-instruct".into(),
            skill: Some(["math", "code", "qa"][i % 3].into()),
            dataset: Some("builtin:math-train".into()),
            modules: ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]
                .iter()
                .map(|m| ModuleSpec {
                    module: m.to_string(),
                    rank: 16,
                    alpha: 32.0,
                })
                .collect(),
            method: if cat {
                AdapterMethod::Cat
            } else {
                AdapterMethod::Trained
            },
            parents: Vec::new(),
            hyperparams: serde_json::json!({"lr": 2e-4}),
            loss_curve: (0..500)
                .map(|s| (s, 2.0 / (1.0 + s as f32 / 50.0)))
                .collect(),
            val_loss: Some(0.7),
            cat_weights: cat.then(|| CatWeights {
                adapters: vec!["math".into(), "code".into()],
                layers: 30,
                modules: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
                values: (0..180).map(|v| (v % 17) as f32 / 17.0).collect(),
            }),
            size_bytes: 3_000_000 + i as u64,
            created: 1_790_000_000_000 + i as u64 * 1000,
            blob: None,
        };
        store.save_adapter(&record, b"bench")?;
    }
    let spec = serde_json::to_value(JobSpec::Eval(EvalJob::new(
        "smollm2-135m-instruct",
        EvalTarget::Adapter("adapter-0000".into()),
        soup_core::engine::tasks::CODE_MATH,
        DataSource::Builtin("codemath-test".into()),
    )))?;
    let run = store.create_run(RunKind::Eval, "eval adapter-0000 on code-math", spec)?;
    let mut record = run.clone();
    record.status = RunStatus::Done;
    record.progress = Progress {
        done: records,
        total: records,
        message: String::new(),
    };
    store.put_run(&record)?;
    let mut batch = Vec::with_capacity(5000);
    for index in 0..records {
        let verdict = ["correct", "wrong", "wrong", "timeout"][(index % 4) as usize];
        batch.push(StoredQuestion {
            run: run.id,
            index,
            id: format!("q-{index:06}"),
            verdict: verdict.into(),
            scores: BTreeMap::from([("accuracy".into(), 1.0)]),
            detail: serde_json::json!({
                "id": format!("q-{index:06}"),
                "task": "code-math",
                "prompt": format!("Q: Ada has {index} apples and buys 3 more. How many?\nA:"),
                "raw_output": format!("apples = {index}\napples += 3\nprint(apples)"),
                "extracted": format!("apples = {index}\nprint(apples + 3)"),
                "gold": (index + 3).to_string(),
                "pred": (index + 3).to_string(),
                "verdict": verdict,
                "correct": verdict == "correct",
                "scores": {"accuracy": 1.0},
                "stdout": format!("{}\n", index + 3),
                "stderr": "",
                "exit_code": 0,
                "signal": null,
                "sandbox_message": null,
                "sandbox_seconds": 0.03,
                "prompt_tokens": 120,
                "output_tokens": 20,
                "latency_s": 0.8,
            }),
        });
        if batch.len() == 5000 {
            store.put_records(&batch)?;
            batch.clear();
        }
    }
    store.put_records(&batch)?;
    store.put_scores(&[Score {
        run: run.id,
        metric: "accuracy".into(),
        value: 0.25,
        ci_low: 0.24,
        ci_high: 0.26,
        n: records,
    }])?;
    Ok(run.id)
}

/// Feeds an action through update and the effects, synchronously (what the event loop does
/// across threads).
fn act(app: &mut App, effects: &Effects, action: Action) {
    let mut pending = vec![action];
    while let Some(action) = pending.pop() {
        if let Some(command) = update(app, action) {
            effects.execute(command, &mut |a| pending.push(a));
        }
    }
}

fn key(app: &mut App, effects: &Effects, c: KeyCode) {
    if let Some(action) = action_for_key(app, KeyEvent::new(c, KeyModifiers::NONE)) {
        act(app, effects, action);
    }
}

fn stats(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mean = samples.iter().map(|d| ms(*d)).sum::<f64>() / samples.len().max(1) as f64;
    format!(
        "mean {mean:.3} ms, median {:.3} ms, p95 {:.3} ms, max {:.3} ms ({} samples)",
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() * 95 / 100]),
        ms(samples[samples.len() - 1]),
        samples.len()
    )
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `seed DIR ADAPTERS RECORDS`: the child process that fills the store, so that the
    // memory measured below is the dashboard's, not the seeding's.
    if args.first().map(String::as_str) == Some("seed") {
        let dir = args
            .get(1)
            .ok_or_else(|| anyhow::anyhow!("seed needs a dir"))?;
        let adapters: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(500);
        let records: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(100_000);
        let store = Store::open(dir)?;
        seed(&store, adapters, records)?;
        return Ok(());
    }
    let adapters: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(500);
    let records: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir()?;
    println!("seeding {adapters} adapters and {records} records (child process)…");
    let t = Instant::now();
    let status = std::process::Command::new(std::env::current_exe()?)
        .arg("seed")
        .arg(dir.path())
        .arg(adapters.to_string())
        .arg(records.to_string())
        .status()?;
    anyhow::ensure!(status.success(), "seeding failed");
    println!("seeded in {:.1} s", t.elapsed().as_secs_f64());
    let rss_before = rss_mb();

    // Start-up: open the store, read what the first screen needs, draw the first frame.
    let t = Instant::now();
    let store = Arc::new(Store::open(dir.path())?);
    let effects = Effects::new(store, Arc::new(NoEngine), dir.path().to_path_buf());
    let mut app = App::new(dir.path().to_path_buf(), true);
    let mut terminal = Terminal::new(TestBackend::new(160, 48))?;
    effects.execute(App::initial_command(), &mut |a| {
        let _ = update(&mut app, a);
    });
    terminal.draw(|f| dashboard::ui::draw(&app, f))?;
    println!(
        "start-up to first frame (open store, list adapters/runs/results, draw): {:.1} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );

    let frames = 300;
    let mut draw_screen = |name: &str, app: &App| -> anyhow::Result<()> {
        let mut samples = Vec::with_capacity(frames);
        for _ in 0..frames {
            let t = Instant::now();
            terminal.draw(|f| dashboard::ui::draw(app, f))?;
            samples.push(t.elapsed());
        }
        println!("render {name:<28} {}", stats(samples));
        Ok(())
    };
    draw_screen("Adapters (CAT heat map)", &app)?;
    key(&mut app, &effects, KeyCode::Char('3'));
    draw_screen("Jobs", &app)?;
    key(&mut app, &effects, KeyCode::Char('4'));
    draw_screen("Results", &app)?;
    key(&mut app, &effects, KeyCode::Char('5'));
    key(&mut app, &effects, KeyCode::Enter);
    draw_screen("Inspect (page of 50)", &app)?;
    key(&mut app, &effects, KeyCode::Enter);
    draw_screen("Inspect detail", &app)?;
    key(&mut app, &effects, KeyCode::Esc);

    // Key to frame: keymap + update + store read + draw.
    let mut timed = |app: &mut App, name: &str, keys: &[KeyCode], n: usize| -> anyhow::Result<()> {
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            for k in keys {
                key(app, &effects, *k);
            }
            terminal.draw(|f| dashboard::ui::draw(app, f))?;
            samples.push(t.elapsed());
        }
        println!("key→frame {name:<26} {}", stats(samples));
        Ok(())
    };
    timed(&mut app, "↓ in a page", &[KeyCode::Down], 200)?;
    timed(&mut app, "n: next page of 50", &[KeyCode::Char('n')], 200)?;
    timed(
        &mut app,
        "v: cycle verdict (re-read)",
        &[KeyCode::Char('v')],
        40,
    )?;
    key(&mut app, &effects, KeyCode::Char('1'));
    timed(&mut app, "Adapters ↓ (500)", &[KeyCode::Down], 200)?;
    timed(&mut app, "Adapters s: re-sort", &[KeyCode::Char('s')], 50)?;
    key(&mut app, &effects, KeyCode::Char('5'));
    let t = Instant::now();
    for k in "/q-099999"
        .chars()
        .map(KeyCode::Char)
        .chain([KeyCode::Enter])
    {
        key(&mut app, &effects, k);
    }
    println!(
        "search of a needle near the end (scans ≤20k records per request, off the UI thread in the app): {:.1} ms, {} read",
        t.elapsed().as_secs_f64() * 1000.0,
        app.inspect.scanned
    );
    println!(
        "memory: RSS {:.1} MB at start, {:.1} MB after opening the store and using every screen",
        rss_before,
        rss_mb()
    );
    Ok(())
}
