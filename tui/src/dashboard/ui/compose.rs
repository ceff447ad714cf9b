//! The Compose screen: pick adapters, a method and its parameters, a task and dataset; Enter
//! launches, `A` launches the whole comparison.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{List, ListItem, ListState, Paragraph, Wrap};
use ratatui::Frame;
use soup_store::AdapterRecord;

use super::adapters::window_start;
use super::{draw_launch, form_field_lines, pane, selected_style};
use crate::dashboard::app::{App, InputTarget};
use crate::dashboard::screens::compose::{
    method_description, method_label, ComposePane, FormField, METHODS,
};

pub fn draw(app: &App, frame: &mut Frame, area: Rect) {
    let [panes, footer] = Layout::vertical([Constraint::Min(0), Constraint::Length(4)]).areas(area);
    let [adapters, methods, form] = Layout::horizontal([
        Constraint::Percentage(36),
        Constraint::Percentage(24),
        Constraint::Percentage(40),
    ])
    .areas(panes);
    draw_adapters(app, frame, adapters);
    draw_methods(app, frame, methods);
    draw_form(app, frame, form);
    draw_footer(app, frame, footer);
}

fn draw_adapters(app: &App, frame: &mut Frame, area: Rect) {
    let compose = &app.compose;
    let title = format!(" adapters · {} picked ", compose.picked.len());
    draw_adapter_picker(
        app,
        frame,
        area,
        AdapterPicker {
            title: &title,
            focused: compose.pane == ComposePane::Adapters,
            cursor: compose.adapter_cursor,
            empty: "No adapters to compose yet: train skill LoRAs first in Train (6) or with `soup train`.",
            note: |a| a.skill.as_deref(),
        },
    );
}

/// How one screen shows the stored adapters to pick from (the picks are Compose's, shared with
/// Train's CAT form).
pub(super) struct AdapterPicker<'a> {
    pub title: &'a str,
    pub focused: bool,
    pub cursor: usize,
    /// Shown instead of the list when there are no adapters.
    pub empty: &'a str,
    /// What each row shows in parentheses after the name ("-" when None).
    pub note: fn(&AdapterRecord) -> Option<&str>,
}

/// The stored adapters as a checklist of Compose's picks, scrolled to keep the cursor visible.
pub(super) fn draw_adapter_picker(app: &App, frame: &mut Frame, area: Rect, p: AdapterPicker) {
    let block = pane(p.title, p.focused);
    if app.adapters.items.is_empty() {
        frame.render_widget(
            Paragraph::new(p.empty)
                .wrap(Wrap { trim: true })
                .block(block),
            area,
        );
        return;
    }
    let visible = area.height.saturating_sub(2) as usize;
    let start = window_start(p.cursor, visible);
    let items: Vec<ListItem> = app
        .adapters
        .items
        .iter()
        .skip(start)
        .take(visible)
        .map(|a| {
            let mark = if app.compose.picked.contains(&a.name) {
                "[x]"
            } else {
                "[ ]"
            };
            let note = (p.note)(a).unwrap_or("-");
            ListItem::new(format!("{mark} {} ({note})", a.name))
        })
        .collect();
    let mut state = ListState::default().with_selected(p.focused.then_some(p.cursor - start));
    frame.render_stateful_widget(
        List::new(items)
            .highlight_style(selected_style())
            .highlight_symbol("›")
            .block(block),
        area,
        &mut state,
    );
}

fn draw_methods(app: &App, frame: &mut Frame, area: Rect) {
    let compose = &app.compose;
    let items: Vec<ListItem> = METHODS
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mark = if i == compose.method { "●" } else { "○" };
            ListItem::new(format!("{mark} {}", method_label(*m)))
        })
        .collect();
    let mut state = ListState::default()
        .with_selected((compose.pane == ComposePane::Methods).then_some(compose.method));
    frame.render_stateful_widget(
        List::new(items)
            .highlight_style(selected_style())
            .highlight_symbol("›")
            .block(pane(" method ", compose.pane == ComposePane::Methods)),
        area,
        &mut state,
    );
}

fn draw_form(app: &App, frame: &mut Frame, area: Rect) {
    let compose = &app.compose;
    let focused = compose.pane == ComposePane::Form;
    let mut lines = Vec::new();
    for (i, field) in FormField::ALL.iter().enumerate() {
        let editing = app.input == Some(InputTarget::FormField(*field));
        lines.extend(form_field_lines(
            field.label(),
            9,
            compose.field_value(*field),
            focused && i == compose.field,
            editing,
            || field.hint().to_string(),
        ));
    }
    frame.render_widget(
        Paragraph::new(lines).block(pane(" parameters ", focused)),
        area,
    );
}

fn draw_footer(app: &App, frame: &mut Frame, area: Rect) {
    let compose = &app.compose;
    let method = compose.method();
    let mut lines = vec![Line::from(vec![
        Span::styled(
            format!("{}: ", method_label(method)),
            Style::new().add_modifier(Modifier::BOLD),
        ),
        Span::raw(method_description(method)),
    ])];
    lines.push(Line::from(format!(
        "Enter launches {} on {} · A launches all {} methods × the task",
        method_label(method),
        compose.task.name(),
        METHODS.len()
    )));
    draw_launch(frame, area, lines, compose.error.as_deref());
}
