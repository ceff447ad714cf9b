//! The ratatui dashboard that `soup` opens with no subcommand: browse adapters, compose and
//! launch jobs with keystrokes, watch them run, compare methods, read every graded answer.
//!
//! The shape is the ratatui templates' and gitui's: one [`app::Action`] enum, a pure-ish
//! [`app::update`] that turns an action into state changes and at most one [`app::Command`]
//! (store reads, job submissions, exports: things that may take time), [`ui::draw`] that only
//! reads the state, and [`effects::Effects`] that carries out commands off the UI thread and
//! answers with more actions. The terminal loop in [`event`] glues them together: crossterm's
//! event stream, a tick that drains the engine's progress channel, redraws only when something
//! changed.
//!
//! Everything the dashboard launches is a `soup_core` job (the same ones the CLI runs); the
//! dashboard itself holds presentation and input only.

pub mod app;
pub mod backend;
pub mod effects;
pub mod event;
pub mod export;
pub mod format;
pub mod question;
pub mod recipe_views;
pub mod screens;
pub mod terminal;
pub mod ui;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use soup_core::engine::Engine;

/// Opens the dashboard on `engine` until the user quits. The terminal is restored on return,
/// on error and on panic.
pub fn run(engine: Engine) -> anyhow::Result<()> {
    let store = engine.store().clone();
    let data_dir = engine.data_dir().to_path_buf();
    let job_events = engine.subscribe();
    let backend: Arc<dyn backend::JobBackend> = Arc::new(engine);
    let effects = effects::Effects::new(store, backend, data_dir.clone());
    let app = app::App::new(
        data_dir.clone(),
        soup_core::model::fetch::is_fetched(&data_dir),
    );
    event::run_loop(app, effects, job_events)
}
