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
    ("↑↓ j k, PgUp PgDn, g G", "move"),
    ("? / Esc", "this help / close"),
    ("F", "fetch the default model"),
    ("R", "reload from the store"),
    ("q, Ctrl-C", "quit"),
    ("", "Adapters"),
    ("s / S", "sort by next column / reverse"),
    ("/", "filter (Enter keeps, Esc clears)"),
    ("space", "pick for Compose"),
    ("Enter", "pick and go to Compose"),
    ("", "Compose"),
    ("← →", "adapters / method / form"),
    ("space", "pick adapter; edit field (task: cycle)"),
    ("Enter", "launch the method"),
    ("A", "launch every method × the task"),
    ("", "Jobs"),
    ("x / r", "cancel / resume the job"),
    ("Enter", "inspect an evaluation's records"),
    ("", "Results"),
    ("← →", "column shown in the bar chart"),
    ("e", "export CSV, JSON, Markdown"),
    ("", "Inspect"),
    ("Enter, ←", "open run, detail / back to runs"),
    ("n p, PgDn PgUp", "next / previous page of 50"),
    ("v", "cycle the verdict filter"),
    ("/", "search the run's records"),
    ("c", "compare with another run (cycles)"),
    ("d", "questions the two runs disagree on (McNemar b, c)"),
    ("J / K", "scroll the detail down / up"),
    ("", "Train"),
    ("← →", "form / built-in sets (CAT: adapters)"),
    ("space, i", "edit field (train: LoRA / CAT); add set, pick"),
    ("Tab (typing)", "complete a file path or builtin:NAME"),
    ("Enter", "launch the training"),
    ("", "Recipes"),
    ("← →", "budget"),
    ("i", "type the data a recipe leaves to you"),
    ("Enter", "launch the recipe at the budget"),
];

pub fn draw(frame: &mut Frame, area: Rect) {
    let lines: Vec<Line> = BINDINGS
        .iter()
        .map(|(keys, what)| {
            if keys.is_empty() {
                Line::from(Span::styled(
                    *what,
                    Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
                ))
            } else {
                Line::from(vec![
                    Span::styled(format!(" {keys:<23}"), Style::new().fg(Color::Yellow)),
                    Span::raw(*what),
                ])
            }
        })
        .collect();
    // One column when it fits, two side by side otherwise (small terminals).
    let one_column = lines.len() as u16 + 2 <= area.height;
    let (width, height) = if one_column {
        (66, lines.len() as u16 + 2)
    } else {
        (130, (lines.len() as u16).div_ceil(2) + 2)
    };
    let popup = super::centered(area, width, height);
    frame.render_widget(Clear, popup);
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" keys (Esc closes) ");
    let inner = block.inner(popup);
    frame.render_widget(block, popup);
    if one_column {
        frame.render_widget(Paragraph::new(lines), inner);
    } else {
        let split = lines.len().div_ceil(2);
        let right = lines[split..].to_vec();
        let mut left = lines;
        left.truncate(split);
        let [l, r] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
            .areas(inner);
        frame.render_widget(Paragraph::new(left), l);
        frame.render_widget(Paragraph::new(right), r);
    }
}
