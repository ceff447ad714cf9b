//! Drawing: [`draw`] reads the [`App`] and paints one frame: the tab bar, the current screen
//! (one module each), the status line, and the help overlay. Nothing here changes state.

mod adapters;
mod compose;
mod help;
mod inspect;
mod jobs;
mod recipes;
mod results;
mod train;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Tabs, Wrap};
use ratatui::Frame;

use super::app::{App, Tab};

#[cfg(test)]
pub(crate) use adapters::lineage as lineage_of;
#[cfg(test)]
pub(crate) use adapters::short_names;
#[cfg(test)]
pub(crate) use results::{
    axis_labels as results_axis_labels, p_value as results_p_value, whisker as results_whisker,
};

/// Below this the screens cannot show their panes: say so instead of drawing garbage.
pub const MIN_WIDTH: u16 = 80;
pub const MIN_HEIGHT: u16 = 20;

pub fn draw(app: &App, frame: &mut Frame) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        draw_too_small(frame, area);
        return;
    }
    let [tabs, body, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_tabs(app, frame, tabs);
    match app.tab {
        Tab::Adapters => adapters::draw(app, frame, body),
        Tab::Compose => compose::draw(app, frame, body),
        Tab::Jobs => jobs::draw(app, frame, body),
        Tab::Results => results::draw(app, frame, body),
        Tab::Inspect => inspect::draw(app, frame, body),
        Tab::Train => train::draw(app, frame, body),
        Tab::Recipes => recipes::draw(app, frame, body),
    }
    draw_status(app, frame, status);
    if app.show_help {
        help::draw(frame, body);
    }
}

fn draw_too_small(frame: &mut Frame, area: Rect) {
    let text = format!(
        "terminal too small: {}x{}, soup needs at least {MIN_WIDTH}x{MIN_HEIGHT}. Enlarge it, or q to quit.",
        area.width, area.height
    );
    frame.render_widget(
        Paragraph::new(text)
            .wrap(Wrap { trim: true })
            .style(Style::new().fg(Color::Yellow)),
        area,
    );
}

fn draw_tabs(app: &App, frame: &mut Frame, area: Rect) {
    let titles: Vec<Line> = Tab::ALL
        .iter()
        .enumerate()
        .map(|(i, t)| Line::from(format!("{} {}", i + 1, t.title())))
        .collect();
    // Seven tabs and the hint fit from 100 columns; narrower, the hint gives way.
    let hint_width = if area.width >= 100 { 16 } else { 0 };
    let [tabs_area, hint_area] =
        Layout::horizontal([Constraint::Min(0), Constraint::Length(hint_width)]).areas(area);
    frame.render_widget(
        Tabs::new(titles)
            .select(app.tab.index())
            .highlight_style(Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD))
            .divider("│"),
        tabs_area,
    );
    frame.render_widget(
        Paragraph::new("? help  q quit").right_aligned().dim(),
        hint_area,
    );
}

fn draw_status(app: &App, frame: &mut Frame, area: Rect) {
    let model = if let Some((message, ratio)) = &app.model.fetching {
        match ratio {
            Some(r) => format!("fetching model: {message} {:.0}%", r * 100.0),
            None => format!("fetching model: {message}"),
        }
    } else if app.model.fetched {
        String::new()
    } else {
        "model not fetched: F fetches it".to_string()
    };
    let model_width = model.chars().count() as u16;
    let [left, right] = Layout::horizontal([
        Constraint::Min(0),
        Constraint::Length(model_width.saturating_add(1)),
    ])
    .areas(area);
    if let Some(status) = &app.status {
        let style = if status.is_error {
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
        } else {
            Style::new().fg(Color::Green)
        };
        frame.render_widget(Paragraph::new(status.text.as_str()).style(style), left);
    }
    if !model.is_empty() {
        frame.render_widget(
            Paragraph::new(model)
                .right_aligned()
                .style(Style::new().fg(Color::Yellow)),
            right,
        );
    }
}

/// A bordered block whose border is bright when the pane has the focus.
pub(crate) fn pane(title: &str, focused: bool) -> Block<'_> {
    let block = Block::default().borders(Borders::ALL).title(title);
    if focused {
        block.border_style(Style::new().fg(Color::Cyan))
    } else {
        block.border_style(Style::new().fg(Color::DarkGray))
    }
}

/// `key: value` with the key dimmed.
pub(crate) fn field<'a>(key: &'a str, value: impl Into<String>) -> Line<'a> {
    Line::from(vec![
        Span::styled(format!("{key}: "), Style::new().fg(Color::DarkGray)),
        Span::raw(value.into()),
    ])
}

/// A centered rectangle of at most `width` × `height` inside `area`.
pub(crate) fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

pub(crate) fn selected_style() -> Style {
    Style::new().add_modifier(Modifier::REVERSED)
}

/// One field of a form (Compose's parameters, Train's settings): its label right-aligned to
/// `width`, its value (a cursor while it is typed in, `·` when empty), and under the selected
/// field its hint.
pub(super) fn form_field_lines(
    label: &str,
    width: usize,
    mut value: String,
    selected: bool,
    editing: bool,
    hint: impl FnOnce() -> String,
) -> Vec<Line<'static>> {
    if editing {
        value.push('▏');
    } else if value.is_empty() {
        value = "·".into();
    }
    let style = if editing {
        Style::new().fg(Color::Black).bg(Color::Yellow)
    } else if selected {
        selected_style()
    } else {
        Style::new()
    };
    let gray = Style::new().fg(Color::DarkGray);
    let mut lines = vec![Line::from(vec![
        Span::styled(format!("{label:>width$}: "), gray),
        Span::styled(value, style),
    ])];
    if selected {
        lines.push(Line::from(Span::styled(
            format!("{:width$}  {}", "", hint()),
            gray,
        )));
    }
    lines
}

/// The launch pane under a form: its hint lines, or the last launch's error in their place.
pub(super) fn draw_launch(
    frame: &mut Frame,
    area: Rect,
    lines: Vec<Line<'static>>,
    error: Option<&str>,
) {
    let lines = match error {
        Some(error) => vec![Line::from(Span::styled(
            error.to_string(),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ))],
        None => lines,
    };
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: true })
            .block(pane(" launch ", false)),
        area,
    );
}
