//! Each screen's state and its part of [`super::app::update`]: one module per tab, beside the
//! drawing in `ui/` (which only reads the state). A screen's `update` takes the whole [`App`](super::app::App)
//! because some keys reach across screens (picking an adapter feeds Compose; Enter on a job
//! opens it in Inspect), and the status line and text input are the app's.

pub mod adapters;
pub mod compose;
pub mod inspect;
pub mod jobs;
pub mod recipes;
pub mod results;
pub mod train;

use super::app::Action;

/// Moves a list cursor for the movement keys; true when `action` was one (an empty list
/// swallows them too).
fn move_cursor(cursor: &mut usize, len: usize, action: &Action) -> bool {
    if len == 0 {
        *cursor = 0;
        return matches!(
            action,
            Action::Up
                | Action::Down
                | Action::PageUp
                | Action::PageDown
                | Action::Home
                | Action::End
        );
    }
    let last = len - 1;
    *cursor = match action {
        Action::Up => cursor.saturating_sub(1),
        Action::Down => (*cursor + 1).min(last),
        Action::PageUp => cursor.saturating_sub(10),
        Action::PageDown => (*cursor + 10).min(last),
        Action::Home => 0,
        Action::End => last,
        _ => return false,
    };
    true
}

/// Typing into the current input; false when `action` is not typing.
fn text_input(target: &mut String, action: &Action) -> bool {
    match action {
        Action::Input(c) => target.push(*c),
        Action::InputBackspace => {
            target.pop();
        }
        _ => return false,
    }
    true
}
