//! The `?` overlay: every key binding, by screen.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;

/// (keys, what they do); an empty key starts a section.
pub const BINDINGS: &[(&str, &str)] = &[
    ("", "Everywhere"),
    ("1-7, Tab, S-Tab", "switch screen"),
    ("↑↓ j k, g G", "move, to the first / last"),
    ("PgUp PgDn", "move a page"),
    ("? / Esc", "this help / close"),
    ("F", "fetch the default model"),
    ("R", "reload from the store"),
    ("q, Ctrl-C", "quit"),
    ("", "Adapters"),
    ("s / S", "sort by next column / reverse"),
    ("/", "filter (Enter keeps, Esc clears)"),
    ("space", "pick for Compose"),
    ("Enter", "pick and go to Compose"),
    ("t", "CAT heat map: weights / Δ from start"),
    ("", "Compose"),
    ("← →", "adapters / method / form"),
    ("space", "pick an adapter; edit a field"),
    ("Enter", "launch the method"),
    ("A", "launch every method × the task"),
    ("", "Jobs"),
    ("x / r", "cancel / resume the job"),
    ("Enter", "inspect an evaluation's records"),
    ("", "Results"),
    ("← →", "column shown with its intervals"),
    ("t", "paired view: CAT − each method"),
    ("Enter (paired)", "pair against the selected row"),
    ("e", "export CSV, JSON, Markdown"),
    ("", "Inspect"),
    ("Enter, ←", "open run, detail / back to runs"),
    ("n p, PgDn PgUp", "next / previous page of 50"),
    ("v", "cycle the verdict filter"),
    ("/", "search the run's records"),
    ("c", "compare with another run (cycles)"),
    ("d", "discordant questions of the two runs"),
    ("J / K", "scroll the detail down / up"),
    ("", "Train"),
    ("← →", "form / built-in sets or adapters"),
    ("space, i", "edit a field; add a set, pick"),
    ("Tab (typing)", "complete a path or builtin:NAME"),
    ("Enter", "launch the training"),
    ("", "Recipes"),
    ("← →", "budget"),
    ("i", "type the data a recipe leaves to you"),
    ("Enter", "launch the recipe at the budget"),
];

/// One column of the overlay: the keys padded to the widest key of that column.
fn column(bindings: &[(&'static str, &'static str)]) -> (Vec<Line<'static>>, u16) {
    let key_width = bindings
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0)
        + 1;
    let mut width = 0;
    let lines = bindings
        .iter()
        .map(|(keys, what)| {
            if keys.is_empty() {
                width = width.max(what.chars().count());
                Line::from(Span::styled(
                    *what,
                    Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
                ))
            } else {
                width = width.max(1 + key_width + what.chars().count());
                Line::from(vec![
                    Span::styled(
                        format!(" {keys:<key_width$}"),
                        Style::new().fg(Color::Yellow),
                    ),
                    Span::raw(*what),
                ])
            }
        })
        .collect();
    (lines, width as u16)
}

pub fn draw(frame: &mut Frame, area: Rect) {
    // One column when it fits, two side by side otherwise (small terminals).
    let one_column = BINDINGS.len() as u16 + 2 <= area.height;
    let split = if one_column {
        BINDINGS.len()
    } else {
        BINDINGS.len().div_ceil(2)
    };
    let (left, left_width) = column(&BINDINGS[..split]);
    let (right, right_width) = column(&BINDINGS[split..]);
    let (width, height) = if one_column {
        (left_width + 2, BINDINGS.len() as u16 + 2)
    } else {
        (left_width + 2 + right_width + 2, split as u16 + 2)
    };
    let popup = super::centered(area, width, height);
    frame.render_widget(Clear, popup);
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" keys (Esc closes) ");
    let inner = block.inner(popup);
    frame.render_widget(block, popup);
    if one_column {
        frame.render_widget(Paragraph::new(left), inner);
    } else {
        let [l, r] = Layout::horizontal([Constraint::Length(left_width + 2), Constraint::Fill(1)])
            .areas(inner);
        frame.render_widget(Paragraph::new(left), l);
        frame.render_widget(Paragraph::new(right), r);
    }
}
