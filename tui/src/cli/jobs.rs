//! Running an engine job from the command line: a progress bar on stderr (steps with loss,
//! tokens/s and ETA for training; questions for evaluation), and Ctrl-C that cancels the job
//! cleanly (it keeps its checkpoint or finished questions) instead of killing the process.
//! A second Ctrl-C exits at once.

use crate::dashboard::format::duration_s;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use soup_core::engine::{Engine, JobSpec, JobUpdate, RunOutcome};
use soup_core::CoreError;
use soup_store::{RunId, RunQuery, RunStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The error a cancelled job ends with: says how to pick it up again.
#[derive(Debug)]
pub struct Cancelled {
    pub run: Option<RunId>,
}

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.run {
            Some(r) => write!(
                f,
                "cancelled: run {r} kept what it had done; resume it with `soup runs resume {r}`"
            ),
            None => write!(f, "cancelled"),
        }
    }
}

impl std::error::Error for Cancelled {}

/// Shared between the Ctrl-C handler and the thread running the job.
#[derive(Default)]
struct Interrupt {
    requested: AtomicBool,
    /// The running job's cancel flag, once known.
    job: Mutex<Option<Arc<AtomicBool>>>,
}

static INTERRUPT: OnceLock<Arc<Interrupt>> = OnceLock::new();

/// Installs the Ctrl-C handler (once). The first Ctrl-C asks the running job to stop; a second
/// one exits with 130.
fn interrupt() -> Arc<Interrupt> {
    INTERRUPT
        .get_or_init(|| {
            let state = Arc::new(Interrupt::default());
            let handler_state = state.clone();
            let installed = ctrlc::set_handler(move || {
                if handler_state.requested.swap(true, Ordering::SeqCst) {
                    eprintln!("\ninterrupted again: exiting now");
                    std::process::exit(130);
                }
                eprintln!("\ncancelling (press Ctrl-C again to exit at once)...");
                if let Some(job) = lock(&handler_state.job).as_ref() {
                    job.store(true, Ordering::SeqCst);
                }
            });
            if let Err(e) = installed {
                tracing::warn!("no Ctrl-C handler: {e}");
            }
            state
        })
        .clone()
}

/// Whether Ctrl-C was pressed (for work that is not an engine job, such as `soup generate`).
pub fn interrupted() -> bool {
    interrupt().requested.load(Ordering::SeqCst)
}

/// Installs the handler before work that polls [`interrupted`].
pub fn watch_interrupt() {
    let _ = interrupt();
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How to present a job.
pub struct JobView<'a> {
    /// Shown before the bar: "train", "eval", ...
    pub label: &'a str,
    /// What one unit is ("step", "question").
    pub unit: &'a str,
    /// Total units when the engine does not say (evaluations report none).
    pub expected_total: Option<u64>,
}

/// Runs `spec` (or resumes run `resume`) on this thread with a progress bar and Ctrl-C.
pub fn run_job(
    engine: &Engine,
    spec: Option<JobSpec>,
    resume: Option<RunId>,
    view: &JobView,
) -> anyhow::Result<(RunId, RunOutcome)> {
    let intr = interrupt();
    let bar = make_bar(view);
    let mut run_id = resume;
    let mut on_event = |u: &JobUpdate| {
        if run_id.is_none() {
            // `run_now` records the run and then starts it: the newest running run is ours
            // (this process owns the data dir).
            let q = RunQuery {
                status: Some(RunStatus::Running),
                limit: 1,
                ..Default::default()
            };
            run_id = engine
                .store()
                .list_runs(&q)
                .ok()
                .and_then(|l| l.items.first().map(|r| r.id));
        }
        if let Some(id) = run_id {
            let mut slot = lock(&intr.job);
            if slot.is_none() {
                if let Some(ctl) = engine.control(id) {
                    if intr.requested.load(Ordering::SeqCst) {
                        ctl.cancel.store(true, Ordering::SeqCst);
                    }
                    *slot = Some(ctl.cancel.clone());
                }
            }
        }
        show(&bar, view, u);
    };
    let result = match (spec, resume) {
        (_, Some(id)) => engine.resume_now(id, &mut on_event).map(|o| (id, o)),
        (Some(spec), None) => engine.run_now(spec, &mut on_event),
        (None, None) => unreachable!("run_job needs a spec or a run to resume"),
    };
    *lock(&intr.job) = None;
    bar.finish_and_clear();
    match result {
        Ok(r) => Ok(r),
        Err(CoreError::Cancelled) => Err(Cancelled { run: run_id }.into()),
        Err(e) => {
            // The resume hint only for a run that ran and failed: not for one refused before
            // it started (a finished run asked to resume, say).
            let failed = run_id.filter(|id| {
                !matches!(e, CoreError::NotResumable { .. })
                    && matches!(engine.store().get_run(*id), Ok(Some(r)) if r.status == RunStatus::Failed)
            });
            let err = anyhow::Error::new(e);
            Err(match failed {
                Some(id) => err.context(format!(
                    "run {id} failed (see `soup runs show {id}`; resume with `soup runs resume {id}`)"
                )),
                None => err,
            })
        }
    }
}

fn make_bar(view: &JobView) -> ProgressBar {
    // On stderr, so `--json` output stays clean; indicatif draws nothing when stderr is not
    // a terminal (pipes, tests).
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(spinner_style());
    bar.set_prefix(view.label.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix:.bold} {pos} {msg} [{elapsed}]")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bar_style(unit: &str) -> ProgressStyle {
    ProgressStyle::with_template(&format!(
        "{{prefix:.bold}} [{{bar:30.cyan/blue}}] {{pos}}/{{len}} {unit}s {{msg}} [{{elapsed}}]"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

fn show(bar: &ProgressBar, view: &JobView, u: &JobUpdate) {
    match u {
        JobUpdate::Progress {
            done,
            total,
            message,
            loss,
            tokens_per_s,
            eta_s,
        } => {
            if *done == 0 && *total == 0 {
                // A notice (examples truncated, ...), not progress.
                bar.println(format!("{}: {message}", view.label));
                return;
            }
            let total = if *total > 0 {
                Some(*total)
            } else {
                view.expected_total
            };
            if let Some(t) = total {
                if bar.length() != Some(t) {
                    bar.set_length(t);
                    bar.set_style(bar_style(view.unit));
                }
            }
            bar.set_position(*done);
            let mut msg = Vec::new();
            match loss {
                Some(l) => msg.push(format!("loss {l:.4}")),
                None => msg.push(message.clone()),
            }
            if let Some(t) = tokens_per_s {
                msg.push(format!("{t:.0} tok/s"));
            }
            match (eta_s, total) {
                (Some(e), Some(_)) if loss.is_some() => msg.push(format!("ETA {}", duration_s(*e))),
                // Evaluations report seconds per question.
                (Some(per), Some(t)) if *done <= t => {
                    msg.push(format!("ETA {}", duration_s(per * (t - done) as f64)))
                }
                _ => {}
            }
            bar.set_message(msg.join(" · "));
        }
        JobUpdate::Failed(m) => bar.println(format!("{}: failed: {m}", view.label)),
        _ => {}
    }
}
