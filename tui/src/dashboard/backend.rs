//! What the dashboard asks of the job engine, as a trait: the real [`Engine`] in the binary, a
//! stand-in in tests (which need no model to see a launched job appear in Jobs).

use soup_core::engine::{Engine, JobSpec};
use soup_store::RunId;

/// Submitting, cancelling and resuming jobs. Errors come back as text for the status line.
pub trait JobBackend: Send + Sync {
    fn submit(&self, spec: JobSpec) -> Result<RunId, String>;
    fn cancel(&self, run: RunId) -> Result<(), String>;
    fn resume(&self, run: RunId) -> Result<(), String>;
}

impl JobBackend for Engine {
    fn submit(&self, spec: JobSpec) -> Result<RunId, String> {
        Engine::submit(self, spec).map_err(|e| e.to_string())
    }

    fn cancel(&self, run: RunId) -> Result<(), String> {
        Engine::cancel(self, run).map_err(|e| e.to_string())
    }

    fn resume(&self, run: RunId) -> Result<(), String> {
        Engine::resume(self, run).map_err(|e| e.to_string())
    }
}
