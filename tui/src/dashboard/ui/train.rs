//! The Train screen: the form on the left (as Compose's), on the right the built-in sets to
//! add (skill LoRA) or the adapters to pick (CAT); Enter launches.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::{List, ListItem, ListState, Paragraph, Wrap};
use ratatui::Frame;

use soup_core::engine::BUILTINS;

use super::adapters::window_start;
use super::compose::{draw_adapter_picker, AdapterPicker};
use super::{draw_launch, form_field_lines, pane, selected_style};
use crate::dashboard::app::{App, InputTarget};
use crate::dashboard::screens::train::{TrainKind, TrainPane};

pub fn draw(app: &App, frame: &mut Frame, area: Rect) {
    let [panes, footer] = Layout::vertical([Constraint::Min(0), Constraint::Length(4)]).areas(area);
    let [form, side] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(panes);
    draw_form(app, frame, form);
    match app.train.kind {
        TrainKind::Lora => draw_builtins(app, frame, side),
        TrainKind::Cat => draw_adapters(app, frame, side),
    }
    draw_footer(app, frame, footer);
}

fn draw_form(app: &App, frame: &mut Frame, area: Rect) {
    let train = &app.train;
    let focused = train.pane == TrainPane::Form;
    let mut lines = Vec::new();
    for (i, field) in train.fields().iter().enumerate() {
        let editing = app.input == Some(InputTarget::TrainField(*field));
        lines.extend(form_field_lines(
            field.label(),
            10,
            train.value(*field),
            focused && i == train.field,
            editing,
            || field.hint(train.kind).to_string(),
        ));
    }
    let title = format!(" train a {} ", train.kind.label());
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(pane(&title, focused)),
        area,
    );
}

fn draw_builtins(app: &App, frame: &mut Frame, area: Rect) {
    let train = &app.train;
    let focused = train.pane == TrainPane::Side;
    let chosen = train.value(crate::dashboard::screens::train::TrainField::Datasets);
    let visible = area.height.saturating_sub(2) as usize;
    let start = window_start(train.side_cursor, visible);
    let items: Vec<ListItem> = BUILTINS
        .iter()
        .skip(start)
        .take(visible)
        .map(|(name, _, _)| {
            let entry = format!("builtin:{name}");
            let mark = if chosen.split(',').any(|d| d.trim() == entry) {
                "[x]"
            } else {
                "[ ]"
            };
            ListItem::new(format!("{mark} {entry}"))
        })
        .collect();
    let mut state =
        ListState::default().with_selected(focused.then_some(train.side_cursor - start));
    frame.render_stateful_widget(
        List::new(items)
            .highlight_style(selected_style())
            .highlight_symbol("›")
            .block(pane(" built-in sets · space adds ", focused)),
        area,
        &mut state,
    );
}

fn draw_adapters(app: &App, frame: &mut Frame, area: Rect) {
    let train = &app.train;
    let title = format!(
        " adapters · {} picked · space picks ",
        app.compose.picked.len()
    );
    draw_adapter_picker(
        app,
        frame,
        area,
        AdapterPicker {
            title: &title,
            focused: train.pane == TrainPane::Side,
            cursor: train.side_cursor,
            empty: "No adapters yet: train two skill LoRAs first (train: space switches to skill LoRA).",
            note: |a| a.dataset.as_deref(),
        },
    );
}

fn draw_footer(app: &App, frame: &mut Frame, area: Rect) {
    let train = &app.train;
    let lines = vec![
        Line::from(match train.kind {
            TrainKind::Lora => "a LoRA on the datasets, as `soup train` trains it",
            TrainKind::Cat => {
                "CAT: learn per-layer weights over the picked frozen LoRAs on a sample of their data"
            }
        }),
        Line::from("Enter launches · space/i edits a field · Tab completes a path · → the list"),
    ];
    draw_launch(frame, area, lines, train.error.as_deref());
}
