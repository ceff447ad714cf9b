//! The event loop and the keymap. Keys come from crossterm's async event stream, job progress
//! from the engine's channel (drained on a 200 ms tick), command answers from the blocking
//! pool; the screen is redrawn only after something happened, never in a busy loop.

use std::sync::mpsc::Receiver;
use std::time::Duration;

use crossterm::event::{Event, EventStream, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use futures::StreamExt;
use soup_core::engine::JobEvent;

use super::app::{update, Action, App, Command, Tab};
use super::effects::Effects;
use super::terminal;
use super::ui;

/// How often job events are drained and stale data re-read.
pub const TICK: Duration = Duration::from_millis(200);

/// Runs the dashboard until the user quits; the terminal is restored whatever happens.
pub fn run_loop(app: App, effects: Effects, job_events: Receiver<JobEvent>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the event loop: {e}"))?;
    let (mut term, guard) = terminal::enter()?;
    let result = runtime.block_on(event_loop(&mut term, app, effects, job_events));
    drop(guard);
    // A model fetch may still be running on the blocking pool: do not wait for it.
    runtime.shutdown_background();
    result
}

async fn event_loop(
    term: &mut terminal::Term,
    mut app: App,
    effects: Effects,
    job_events: Receiver<JobEvent>,
) -> anyhow::Result<()> {
    let (answers_tx, mut answers) = tokio::sync::mpsc::unbounded_channel::<Action>();
    let spawn = |command: Command| {
        let effects = effects.clone();
        let tx = answers_tx.clone();
        tokio::task::spawn_blocking(move || {
            effects.execute(command, &mut |action| {
                let _ = tx.send(action);
            })
        });
    };
    spawn(App::initial_command());
    let mut keys = EventStream::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut dirty = true;
    loop {
        if dirty {
            term.draw(|frame| ui::draw(&app, frame))?;
            dirty = false;
        }
        let mut actions = Vec::new();
        tokio::select! {
            event = keys.next() => match event {
                Some(Ok(Event::Key(key))) if key.kind != KeyEventKind::Release => {
                    actions.extend(action_for_key(&app, key));
                    dirty = true;
                }
                Some(Ok(Event::Resize(..))) => dirty = true,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(anyhow::anyhow!("cannot read the terminal: {e}")),
                None => return Ok(()),
            },
            Some(action) = answers.recv() => {
                actions.push(action);
                dirty = true;
            }
            _ = tick.tick() => {
                while let Ok(event) = job_events.try_recv() {
                    actions.push(Action::Job(event));
                    dirty = true;
                }
                dirty |= app.is_animating();
                actions.push(Action::Tick);
            }
        }
        for action in actions {
            if let Some(command) = update(&mut app, action) {
                spawn(command);
            }
        }
        if app.should_quit {
            return Ok(());
        }
    }
}

/// The keymap: what a key means on the current screen, in the current input mode.
pub fn action_for_key(app: &App, key: KeyEvent) -> Option<Action> {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && matches!(key.code, KeyCode::Char('c')) {
        return Some(Action::Quit);
    }
    if app.input.is_some() {
        return match key.code {
            KeyCode::Char(c) if !ctrl => Some(Action::Input(c)),
            KeyCode::Backspace => Some(Action::InputBackspace),
            KeyCode::Tab => Some(Action::InputComplete),
            KeyCode::Enter => Some(Action::InputSubmit),
            KeyCode::Esc => Some(Action::InputCancel),
            _ => None,
        };
    }
    if app.show_help {
        return match key.code {
            KeyCode::Char('q') => Some(Action::Quit),
            KeyCode::Char('?') => Some(Action::ToggleHelp),
            _ => Some(Action::Back),
        };
    }
    let action = match key.code {
        KeyCode::Char('q') => Action::Quit,
        KeyCode::Char('?') => Action::ToggleHelp,
        KeyCode::Char(c @ '1'..='7') => Action::SwitchTab(Tab::ALL[(c as usize) - ('1' as usize)]),
        KeyCode::Tab => Action::NextTab,
        KeyCode::BackTab => Action::PrevTab,
        KeyCode::Up | KeyCode::Char('k') => Action::Up,
        KeyCode::Down | KeyCode::Char('j') => Action::Down,
        KeyCode::PageUp => Action::PageUp,
        KeyCode::PageDown => Action::PageDown,
        KeyCode::Home | KeyCode::Char('g') => Action::Home,
        KeyCode::End | KeyCode::Char('G') => Action::End,
        KeyCode::Left | KeyCode::Char('h') => Action::Left,
        KeyCode::Right | KeyCode::Char('l') => Action::Right,
        KeyCode::Enter => Action::Confirm,
        KeyCode::Char(' ') => Action::Toggle,
        KeyCode::Esc => Action::Back,
        KeyCode::Char('/') => Action::StartInput,
        KeyCode::Char('i') => Action::Edit,
        KeyCode::Char('s') => Action::CycleSort,
        KeyCode::Char('S') => Action::ReverseSort,
        KeyCode::Char('v') => Action::CycleVerdict,
        KeyCode::Char('J') => Action::ScrollDown,
        KeyCode::Char('K') => Action::ScrollUp,
        KeyCode::Char('x') => Action::CancelJob,
        KeyCode::Char('r') => Action::ResumeJob,
        KeyCode::Char('e') => Action::Export,
        KeyCode::Char('A') => Action::LaunchComparison,
        KeyCode::Char('c') => Action::Compare,
        KeyCode::Char('d') => Action::Discordant,
        KeyCode::Char('t') => Action::ToggleView,
        KeyCode::Char('n') => Action::NextPage,
        KeyCode::Char('p') => Action::PrevPage,
        KeyCode::Char('F') => Action::FetchModel,
        KeyCode::Char('R') | KeyCode::F(5) => Action::Refresh,
        _ => return None,
    };
    Some(action)
}
