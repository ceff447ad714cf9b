//! Entering and leaving the terminal's raw, alternate-screen mode, with a panic hook so that a
//! panic anywhere leaves the user's shell usable (and the panic message readable).

use std::io::{self, Stdout};
use std::sync::Once;

use crossterm::cursor::Show;
use crossterm::execute;
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;

pub type Term = Terminal<CrosstermBackend<Stdout>>;

/// Puts the terminal in raw mode on the alternate screen. Drop the returned guard (or let an
/// error unwind through it) to restore it.
pub fn enter() -> anyhow::Result<(Term, RestoreOnDrop)> {
    install_panic_hook();
    enable_raw_mode().map_err(|e| anyhow::anyhow!("cannot put the terminal in raw mode: {e}"))?;
    let guard = RestoreOnDrop;
    let mut stdout = io::stdout();
    execute!(stdout, EnterAlternateScreen)?;
    let terminal = Terminal::new(CrosstermBackend::new(stdout))?;
    Ok((terminal, guard))
}

/// Leaves raw mode and the alternate screen; safe to call more than once.
pub fn restore() -> io::Result<()> {
    let raw = disable_raw_mode();
    let screen = execute!(io::stdout(), LeaveAlternateScreen, Show);
    raw.and(screen)
}

/// Restores the terminal when dropped: on return, on `?`, and on unwinding.
pub struct RestoreOnDrop;

impl Drop for RestoreOnDrop {
    fn drop(&mut self) {
        let _ = restore();
    }
}

/// Restores the terminal before the default hook prints the panic (otherwise the message is
/// lost on the alternate screen and the shell is left in raw mode).
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = restore();
            previous(info);
        }));
    });
}
