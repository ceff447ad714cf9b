//! The Jobs screen: every run with its status and live progress, cancel and resume.

use std::collections::{HashMap, HashSet};

use soup_core::engine::{JobEvent, JobSpec, JobUpdate};
use soup_store::{RunId, RunKind, RunRecord, RunStatus};

use super::inspect::open_run;
use super::move_cursor;
use crate::dashboard::app::{Action, App, Command, Tab};
use crate::dashboard::recipe_views;

/// Loss values kept per job for its sparkline.
const LOSS_HISTORY: usize = 240;

/// What the engine's events have said about a run since the dashboard started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveProgress {
    pub done: u64,
    pub total: u64,
    pub message: String,
    pub losses: Vec<f64>,
    pub tokens_per_s: Option<f64>,
    pub eta_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobsState {
    pub runs: Vec<RunRecord>,
    pub cursor: usize,
    pub live: HashMap<RunId, LiveProgress>,
    pub loaded: bool,
    pub skipped: usize,
}

impl JobsState {
    pub fn selected(&self) -> Option<&RunRecord> {
        self.runs.get(self.cursor)
    }

    /// The evaluation runs, newest first: what Inspect and Compare choose from.
    pub fn eval_runs(&self) -> Vec<&RunRecord> {
        self.runs
            .iter()
            .filter(|r| r.kind == RunKind::Eval)
            .collect()
    }

    pub fn new() -> Self {
        JobsState {
            runs: Vec::new(),
            cursor: 0,
            live: HashMap::new(),
            loaded: false,
            skipped: 0,
        }
    }
}

/// A fresh list of runs: the cursor stays on its run, finished runs lose their ETA.
pub fn on_loaded(app: &mut App, runs: Vec<RunRecord>, skipped: usize) -> Option<Command> {
    let keep = app.jobs.selected().map(|r| r.id);
    app.jobs.runs = runs;
    app.jobs.skipped = skipped;
    app.jobs.loaded = true;
    app.jobs.cursor = keep
        .and_then(|id| app.jobs.runs.iter().position(|r| r.id == id))
        .unwrap_or(0);
    let evals = app.jobs.eval_runs().len();
    app.inspect.run_cursor = app.inspect.run_cursor.min(evals.saturating_sub(1));
    // Finished runs drop their live progress; their record is the truth now.
    let finished: Vec<RunId> = app
        .jobs
        .runs
        .iter()
        .filter(|r| r.status.is_final())
        .map(|r| r.id)
        .collect();
    for id in finished {
        if let Some(live) = app.jobs.live.get_mut(&id) {
            live.eta_s = None;
        }
    }
    None
}

/// A job's event: live progress kept for the list, a status change marks the list stale. A
/// finished job may have built the adapter that held jobs wait for: they are offered again.
pub fn on_job_event(app: &mut App, event: JobEvent) -> Option<Command> {
    app.stale_runs = true;
    let mut next = None;
    let status = match &event.update {
        JobUpdate::Queued => Some(RunStatus::Queued),
        JobUpdate::Started => Some(RunStatus::Running),
        JobUpdate::Progress {
            done,
            total,
            message,
            loss,
            tokens_per_s,
            eta_s,
        } => {
            let live = app.jobs.live.entry(event.run).or_default();
            live.done = *done;
            live.total = *total;
            live.message = message.clone();
            if let Some(loss) = loss.filter(|l| l.is_finite()) {
                live.losses.push(loss);
                if live.losses.len() > LOSS_HISTORY {
                    live.losses.remove(0);
                }
            }
            live.tokens_per_s = *tokens_per_s;
            live.eta_s = *eta_s;
            app.stale_runs = false; // progress alone does not need a reload
            None
        }
        JobUpdate::Finished(_) => {
            app.stale_results = true;
            app.stale_adapters = true;
            if !app.held.is_empty() {
                next = Some(Command::Submit(std::mem::take(&mut app.held)));
            }
            Some(RunStatus::Done)
        }
        JobUpdate::Failed(why) => {
            let label = run_label(app, event.run);
            let dropped = drop_held_after(app, event.run);
            app.error(format!("{label} failed: {why}{dropped}"));
            Some(RunStatus::Failed)
        }
        JobUpdate::Cancelled => {
            let dropped = drop_held_after(app, event.run);
            if !dropped.is_empty() {
                let label = run_label(app, event.run);
                app.info(format!("{label} cancelled{dropped}"));
            }
            Some(RunStatus::Cancelled)
        }
    };
    if let Some(status) = status {
        if let Some(run) = app.jobs.runs.iter_mut().find(|r| r.id == event.run) {
            run.status = status;
            if let JobUpdate::Failed(why) = &event.update {
                run.error = Some(why.clone());
            }
        }
        // A run the list does not know yet: it comes with the next reload.
        app.stale_runs = true;
        app.recipes.stale = true;
    }
    next
}

/// Held jobs that wait for the adapter `run` was building (or for one a dropped job builds)
/// would wait forever once it failed or was cancelled: they are dropped, and the returned
/// text (empty when none) says so and how to try again.
fn drop_held_after(app: &mut App, run: RunId) -> String {
    let built = app
        .jobs
        .runs
        .iter()
        .find(|r| r.id == run)
        .and_then(|r| serde_json::from_value::<JobSpec>(r.spec.clone()).ok())
        .and_then(|spec| recipe_views::produces(&spec).map(str::to_string));
    let Some(built) = built else {
        return String::new();
    };
    let mut lost: HashSet<String> = HashSet::from([built]);
    let mut dropped = 0;
    let held = std::mem::take(&mut app.held);
    for spec in held {
        if recipe_views::needs(&spec).iter().any(|a| lost.contains(a)) {
            lost.extend(recipe_views::produces(&spec).map(str::to_string));
            dropped += 1;
        } else {
            app.held.push(spec);
        }
    }
    if dropped == 0 {
        String::new()
    } else {
        format!(
            "; {dropped} job(s) waiting for its adapter were dropped (launch again once it is \
             fixed: finished jobs are reused)"
        )
    }
}

fn run_label(app: &App, run: RunId) -> String {
    app.jobs
        .runs
        .iter()
        .find(|r| r.id == run)
        .map(|r| r.label.clone())
        .unwrap_or_else(|| format!("run {}", crate::dashboard::format::short_id(run)))
}

/// The Jobs screen's keys: cancel, resume, open an evaluation in Inspect.
pub fn update(app: &mut App, action: Action) -> Option<Command> {
    let len = app.jobs.runs.len();
    if move_cursor(&mut app.jobs.cursor, len, &action) {
        return None;
    }
    let selected = app
        .jobs
        .selected()
        .map(|r| (r.id, r.status, r.label.clone()));
    match (action, selected) {
        (Action::CancelJob, Some((id, status, label))) => {
            if status.is_final() {
                app.error(format!(
                    "{label} is {}: nothing to cancel",
                    crate::dashboard::format::status(status)
                ));
                None
            } else {
                Some(Command::Cancel(id))
            }
        }
        (Action::ResumeJob, Some((id, status, label))) => {
            if matches!(status, RunStatus::Failed | RunStatus::Cancelled) {
                Some(Command::Resume(id))
            } else {
                app.error(format!(
                    "{label} is {}: only failed or cancelled jobs resume",
                    crate::dashboard::format::status(status)
                ));
                None
            }
        }
        (Action::Confirm, Some((id, _, _))) => {
            // Open an evaluation's records in Inspect.
            let evals = app.jobs.eval_runs();
            if let Some(at) = evals.iter().position(|r| r.id == id) {
                app.tab = Tab::Inspect;
                app.inspect.run_cursor = at;
                return open_run(app, id);
            }
            None
        }
        _ => None,
    }
}
