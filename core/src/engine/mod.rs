//! The job engine: a queue of runs executed by a worker thread, progress events on channels,
//! cancellation, and resumption. The command line and the dashboard both go through it, so
//! every action the dashboard offers is a job a CLI subcommand can also start.
//!
//! A run's life is recorded in the store as it happens (queued → running → done | failed |
//! cancelled); its results (adapters, records, scores) are written by the job itself.

mod check;
mod data;
pub mod loglik;
pub mod plan;
pub mod recipe;
mod run;
pub mod spec;

/// Reading a data source (generating a built-in set on first use): the dashboard sizes a
/// recipe's sets with it for its wall-time estimates.
pub use data::{read as read_data, BUILTINS};
pub use plan::CompareMethod;
pub(crate) use run::render_chat;
pub use run::{target_stack, RunOutcome};
pub use spec::{
    tasks, CatJob, DataSource, EvalJob, EvalTarget, EvalTask, JobSpec, MergeJob, TrainJob,
};

use crate::device::Precision;
use crate::error::{CoreError, Result};
use crate::runtime::{load_model_at, locate_model, LoadedModel};
use crate::train::JobControl;
use candle_core::Device;
use soup_store::{RunId, RunStatus, Store};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};

/// What a running job reports.
#[derive(Debug, Clone, PartialEq)]
pub enum JobUpdate {
    Queued,
    Started,
    /// `done` of `total` units (optimizer steps, questions); loss and speed where they apply.
    Progress {
        done: u64,
        total: u64,
        message: String,
        loss: Option<f64>,
        tokens_per_s: Option<f64>,
        eta_s: Option<f64>,
    },
    Finished(RunOutcome),
    Failed(String),
    Cancelled,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobEvent {
    pub run: RunId,
    pub update: JobUpdate,
}

struct Shared {
    store: Arc<Store>,
    data_dir: PathBuf,
    device: Device,
    /// The precision of jobs whose spec names none (fixed into the spec when it is recorded).
    precision: Precision,
    queue: Mutex<VecDeque<RunId>>,
    wake: Condvar,
    controls: Mutex<HashMap<RunId, JobControl>>,
    subscribers: Mutex<Vec<Sender<JobEvent>>>,
    models: Mutex<HashMap<String, Arc<LoadedModel>>>,
    shutdown: std::sync::atomic::AtomicBool,
    /// Tests: the next job panics as it starts (the worker must survive it).
    #[cfg(any(test, feature = "test-support"))]
    panic_next_job: std::sync::atomic::AtomicBool,
}

/// The engine. Cheap to clone; all clones share one queue and worker.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

impl Engine {
    /// An engine over `store` without a worker thread: jobs run on the caller's thread with
    /// [`Engine::run_now`] (the command line). `precision`: the frozen weights' precision for
    /// jobs that name none (None: f32 on the CPU, bf16 on a GPU).
    pub fn new(
        store: Arc<Store>,
        data_dir: &Path,
        device: Device,
        precision: Option<Precision>,
    ) -> Result<Engine> {
        let engine = Engine {
            shared: Arc::new(Shared {
                store,
                data_dir: data_dir.to_path_buf(),
                precision: precision.unwrap_or_else(|| Precision::default_for(&device)),
                device,
                queue: Mutex::new(VecDeque::new()),
                wake: Condvar::new(),
                controls: Mutex::new(HashMap::new()),
                subscribers: Mutex::new(Vec::new()),
                models: Mutex::new(HashMap::new()),
                shutdown: std::sync::atomic::AtomicBool::new(false),
                #[cfg(any(test, feature = "test-support"))]
                panic_next_job: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        engine.recover_interrupted()?;
        Ok(engine)
    }

    /// An engine with a background worker that runs queued jobs one at a time (the dashboard).
    pub fn start(
        store: Arc<Store>,
        data_dir: &Path,
        device: Device,
        precision: Option<Precision>,
    ) -> Result<Engine> {
        let engine = Engine::new(store, data_dir, device, precision)?;
        let worker = engine.clone();
        std::thread::Builder::new()
            .name("soup-worker".into())
            .spawn(move || worker.worker_loop())
            .map_err(CoreError::Thread)?;
        Ok(engine)
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.shared.store
    }

    pub fn data_dir(&self) -> &Path {
        &self.shared.data_dir
    }

    pub fn device(&self) -> &Device {
        &self.shared.device
    }

    /// The precision of jobs whose spec names none.
    pub fn precision(&self) -> Precision {
        self.shared.precision
    }

    /// Runs that a stopped process left `running` or `queued` become `failed` with a message
    /// saying how to resume them; nothing they wrote is lost (checkpoints and records stay).
    /// Only one process opens a store, and its queue lives in memory: a run still `queued` at
    /// start was queued by a process that is gone and would otherwise wait forever (and block
    /// a recipe launched again, which skips runs it believes queued).
    fn recover_interrupted(&self) -> Result<()> {
        let store = &self.shared.store;
        for (status, message) in [
            (RunStatus::Running, "interrupted: the process stopped while it ran; resume it (r in Jobs, or `soup runs resume`)"),
            (RunStatus::Queued, "interrupted: the process stopped before it started; resume it (r in Jobs, or `soup runs resume`), or launch its recipe again"),
        ] {
            let q = soup_store::RunQuery {
                status: Some(status),
                ..Default::default()
            };
            for r in store.list_runs(&q)?.items {
                store.finish_run(r.id, RunStatus::Failed, Some(message.into()))?;
            }
        }
        Ok(())
    }

    /// Receives every job event from now on.
    pub fn subscribe(&self) -> Receiver<JobEvent> {
        let (tx, rx) = channel();
        lock(&self.shared.subscribers).push(tx);
        rx
    }

    fn emit(&self, run: RunId, update: JobUpdate) {
        let ev = JobEvent { run, update };
        lock(&self.shared.subscribers).retain(|s| s.send(ev.clone()).is_ok());
    }

    /// Records a queued run and hands it to the worker; a job that cannot run (see
    /// [`Engine::check`]) is refused before anything is recorded.
    pub fn submit(&self, mut spec: JobSpec) -> Result<RunId> {
        self.check(&spec)?;
        spec.fix_recorded(self.precision());
        let value = spec.to_record()?;
        let run = self
            .shared
            .store
            .create_run(spec.kind(), &spec.label(), value)?;
        self.enqueue(run.id);
        Ok(run.id)
    }

    fn enqueue(&self, id: RunId) {
        lock(&self.shared.controls).insert(id, JobControl::default());
        lock(&self.shared.queue).push_back(id);
        self.shared.wake.notify_all();
        self.emit(id, JobUpdate::Queued);
    }

    /// Asks a queued or running job to stop; a running one stops at its next step, keeping
    /// its checkpoint and finished records.
    pub fn cancel(&self, id: RunId) -> Result<()> {
        let removed = {
            let mut q = lock(&self.shared.queue);
            let before = q.len();
            q.retain(|r| *r != id);
            before != q.len()
        };
        if removed {
            self.shared
                .store
                .finish_run(id, RunStatus::Cancelled, None)?;
            self.emit(id, JobUpdate::Cancelled);
        } else if let Some(c) = lock(&self.shared.controls).get(&id) {
            c.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// Queues a failed or cancelled run again with its recorded spec; it picks up from its
    /// checkpoint (training) or its finished questions (evaluation).
    pub fn resume(&self, id: RunId) -> Result<()> {
        let run = self.get_run(id)?;
        if !matches!(run.status, RunStatus::Failed | RunStatus::Cancelled) {
            return Err(CoreError::NotResumable {
                id: id.to_string(),
                status: format!("{:?}", run.status),
            });
        }
        let mut r = run;
        r.status = RunStatus::Queued;
        r.error = None;
        r.finished = None;
        self.shared.store.put_run(&r)?;
        self.enqueue(id);
        Ok(())
    }

    fn get_run(&self, id: RunId) -> Result<soup_store::RunRecord> {
        self.shared
            .store
            .get_run(id)?
            .ok_or_else(|| CoreError::NotFound {
                kind: "run",
                name: id.to_string(),
                hint: "list the runs with `soup runs list`".into(),
            })
    }

    /// Runs a job on this thread (the command line): checks it (with the model, see
    /// [`Engine::check_with_model`]), records it, runs it, returns its outcome. `on_event` sees
    /// every update.
    pub fn run_now(
        &self,
        mut spec: JobSpec,
        on_event: &mut dyn FnMut(&JobUpdate),
    ) -> Result<(RunId, RunOutcome)> {
        self.check_with_model(&spec)?;
        spec.fix_recorded(self.precision());
        let value = spec.to_record()?;
        let run = self
            .shared
            .store
            .create_run(spec.kind(), &spec.label(), value)?;
        lock(&self.shared.controls).insert(run.id, JobControl::default());
        let out = self.execute(run.id, on_event)?;
        Ok((run.id, out))
    }

    /// Resumes a run on this thread (the command line's `--resume`).
    pub fn resume_now(
        &self,
        id: RunId,
        on_event: &mut dyn FnMut(&JobUpdate),
    ) -> Result<RunOutcome> {
        let run = self.get_run(id)?;
        if run.status == RunStatus::Done {
            return Err(CoreError::NotResumable {
                id: id.to_string(),
                status: "already done".into(),
            });
        }
        lock(&self.shared.controls).insert(id, JobControl::default());
        self.execute(id, on_event)
    }

    /// The cancellation handle of a run started with `run_now` (for Ctrl-C handlers).
    pub fn control(&self, id: RunId) -> Option<JobControl> {
        lock(&self.shared.controls).get(&id).cloned()
    }

    /// Stops the worker after its current job.
    pub fn shutdown(&self) {
        self.shared
            .shutdown
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.shared.wake.notify_all();
    }

    fn worker_loop(&self) {
        loop {
            let id = {
                let mut q = lock(&self.shared.queue);
                loop {
                    if self
                        .shared
                        .shutdown
                        .load(std::sync::atomic::Ordering::Relaxed)
                    {
                        return;
                    }
                    if let Some(id) = q.pop_front() {
                        break id;
                    }
                    q = self.shared.wake.wait(q).unwrap_or_else(|p| p.into_inner());
                }
            };
            // Errors are recorded on the run and sent as events; the worker goes on, even
            // past a panic outside the job itself (the store's bookkeeping).
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.execute(id, &mut |_| {})
            }));
            if let Err(payload) = caught {
                let message = panic_message(payload.as_ref());
                tracing::error!("run {id}: {message}");
                let _ = self
                    .shared
                    .store
                    .finish_run(id, RunStatus::Failed, Some(message.clone()));
                self.emit(id, JobUpdate::Failed(message));
            }
        }
    }

    /// Runs a recorded job: status to running, the job, then its final status.
    fn execute(&self, id: RunId, on_event: &mut dyn FnMut(&JobUpdate)) -> Result<RunOutcome> {
        let store = self.shared.store.clone();
        let run = store.start_run(id)?;
        let ctl = lock(&self.shared.controls).entry(id).or_default().clone();
        let mut emit = |u: JobUpdate| {
            if let JobUpdate::Progress {
                done,
                total,
                message,
                ..
            } = &u
            {
                let _ = store.set_progress(
                    id,
                    soup_store::Progress {
                        done: *done,
                        total: *total,
                        message: message.clone(),
                    },
                );
            }
            on_event(&u);
            self.emit(id, u);
        };
        emit(JobUpdate::Started);
        let spec: std::result::Result<JobSpec, _> = serde_json::from_value(run.spec.clone());
        let result = match spec {
            // A panic in a job is a bug in soup: the job fails with it, the process and the
            // queue go on.
            Ok(spec) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                #[cfg(any(test, feature = "test-support"))]
                if self
                    .shared
                    .panic_next_job
                    .swap(false, std::sync::atomic::Ordering::SeqCst)
                {
                    panic!("injected by a test");
                }
                run::run_job(self, id, &spec, &ctl, &mut emit)
            }))
            .unwrap_or_else(|payload| Err(CoreError::Internal(panic_message(payload.as_ref())))),
            Err(source) => Err(CoreError::UnreadableSpec {
                id: id.to_string(),
                source,
            }),
        };
        lock(&self.shared.controls).remove(&id);
        match result {
            Ok(outcome) => {
                store.finish_run(id, RunStatus::Done, None)?;
                emit(JobUpdate::Finished(outcome.clone()));
                Ok(outcome)
            }
            Err(CoreError::Cancelled) => {
                store.finish_run(id, RunStatus::Cancelled, None)?;
                emit(JobUpdate::Cancelled);
                Err(CoreError::Cancelled)
            }
            Err(e) => {
                store.finish_run(id, RunStatus::Failed, Some(e.to_string()))?;
                emit(JobUpdate::Failed(e.to_string()));
                Err(e)
            }
        }
    }

    /// A model by spec in `precision` (None: the engine's), loaded once and shared by every
    /// job that uses it.
    pub fn model(&self, spec: &str, precision: Option<Precision>) -> Result<Arc<LoadedModel>> {
        let (name, path) = locate_model(Some(&self.shared.store), &self.shared.data_dir, spec)?;
        let precision = precision.unwrap_or(self.shared.precision);
        let key = format!("{}|{}", path.display(), precision.name());
        if let Some(m) = lock(&self.shared.models).get(&key) {
            return Ok(m.clone());
        }
        let m = Arc::new(load_model_at(&name, &path, &self.shared.device, precision)?);
        lock(&self.shared.models).insert(key, m.clone());
        Ok(m)
    }

    /// Tests: makes the next job panic as it starts, to show that the worker survives it.
    #[cfg(any(test, feature = "test-support"))]
    pub fn panic_next_job(&self) {
        self.shared
            .panic_next_job
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Where a job keeps its checkpoints.
    pub fn job_dir(&self, id: RunId) -> PathBuf {
        self.shared.data_dir.join("jobs").join(id.to_string())
    }
}

/// A panic's message, as a job's failure.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    format!("the job panicked ({text})")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
