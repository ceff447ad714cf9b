//! The Recipes screen: the recipes on the left; on the right the selected recipe's budgets
//! with their wall-time estimates, the data it asks the user for, the estimate's inputs, and
//! the comparison table of the selected budget (pending / queued / running / the score).

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{List, ListItem, ListState, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;

use super::adapters::window_start;
use super::{pane, selected_style};
use crate::dashboard::app::{App, InputTarget};
use crate::dashboard::format;
use crate::dashboard::screens::recipes::{BudgetView, CellState, Estimate, RecipeView};

pub fn draw(app: &App, frame: &mut Frame, area: Rect) {
    let [list, right] =
        Layout::horizontal([Constraint::Percentage(26), Constraint::Percentage(74)]).areas(area);
    draw_list(app, frame, list);
    match app.recipes.selected() {
        Some(view) => draw_recipe(app, view, frame, right),
        None => frame.render_widget(Paragraph::new("").block(pane(" recipe ", false)), right),
    }
}

fn draw_list(app: &App, frame: &mut Frame, area: Rect) {
    let state = &app.recipes;
    let block = pane(" recipes ", true);
    if !state.loaded {
        frame.render_widget(Paragraph::new("reading the recipes…").block(block), area);
        return;
    }
    let visible = area.height.saturating_sub(2) as usize;
    let start = window_start(state.cursor, visible);
    let items: Vec<ListItem> = state
        .views
        .iter()
        .skip(start)
        .take(visible)
        .map(|v| {
            let from = if v.origin.starts_with("built-in") {
                "built-in"
            } else {
                "yours"
            };
            let mark = if v.error.is_some() {
                " ✗"
            } else if !v.needs_data.is_empty() {
                " (data)"
            } else {
                ""
            };
            ListItem::new(format!("{} · {from}{mark}", v.name))
        })
        .collect();
    let mut state_ = ListState::default().with_selected(Some(state.cursor - start));
    frame.render_stateful_widget(
        List::new(items)
            .highlight_style(selected_style())
            .highlight_symbol("›")
            .block(block),
        area,
        &mut state_,
    );
}

/// `≈ 12 min`, or why there is no figure.
pub fn estimate_text(e: &Estimate) -> String {
    match e.seconds() {
        Some(s) => format!("≈ {}", format::duration_s(s)),
        None => "no measurement yet".into(),
    }
}

/// The formula with its inputs filled in, for the selected budget.
fn estimate_lines(e: &Estimate) -> Vec<Line<'static>> {
    let s = &e.speeds;
    let num = |v: Option<f64>| v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "?".into());
    let count = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "?".into());
    let train = format!(
        "train: {} job(s) · {} examples × {} tok/example ÷ {} tok/s{}",
        e.train_jobs,
        count(e.train_examples),
        num(s.tokens_per_example),
        num(s.train_tokens_per_s),
        match e.train_seconds() {
            Some(t) => format!(" = {}", format::duration_s(t)),
            None => String::new(),
        }
    );
    let eval = format!(
        "eval: {} run(s) · {} questions × {} tok (≤ {} new) ÷ {} tok/s{}",
        e.eval_jobs,
        count(e.questions),
        num(e.tokens_per_question()),
        e.max_new_tokens,
        num(s.gen_tokens_per_s),
        match e.eval_seconds() {
            Some(t) => format!(" = {}", format::duration_s(t)),
            None => String::new(),
        }
    );
    let dim = Style::new().fg(Color::DarkGray);
    vec![
        Line::styled(train, dim),
        Line::styled(eval, dim),
        Line::styled(
            format!(
                "speeds from {} training and {} evaluation run(s) in the store; merges not counted",
                s.train_runs, s.eval_runs
            ),
            dim,
        ),
    ]
}

fn draw_recipe(app: &App, view: &RecipeView, frame: &mut Frame, area: Rect) {
    let state = &app.recipes;
    // A user's recipe by its place in the data dir, not the whole path.
    let origin = if view.origin.starts_with("built-in") {
        "built-in".to_string()
    } else {
        std::path::Path::new(&view.origin)
            .file_name()
            .map(|f| format!("<data dir>/recipes/{}", f.to_string_lossy()))
            .unwrap_or_else(|| view.origin.clone())
    };
    let title = format!(" {} · {origin} ", view.name);
    let block = pane(&title, false);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if let Some(error) = &view.error {
        frame.render_widget(
            Paragraph::new(format!("This file does not read as a recipe: {error}"))
                .style(Style::new().fg(Color::Red))
                .wrap(Wrap { trim: true }),
            inner,
        );
        return;
    }
    let data_rows = if view.needs_data.is_empty() {
        0
    } else {
        view.needs_data.len() as u16 + 1
    };
    let [budgets_area, data_area, estimate_area, table_area, footer_area] = Layout::vertical([
        Constraint::Length(view.budgets.len() as u16 + 1),
        Constraint::Length(data_rows),
        Constraint::Length(3),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(inner);
    draw_budgets(app, view, frame, budgets_area);
    if data_rows > 0 {
        let mut lines = vec![Line::styled(
            "data this recipe leaves to you (i types, Tab completes, Enter keeps):",
            Style::new().fg(Color::Yellow),
        )];
        for (i, name) in view.needs_data.iter().enumerate() {
            let editing = app.input == Some(InputTarget::RecipeData(i));
            let mut value = state.typed(name);
            if editing {
                value.push('▏');
            } else if value.is_empty() {
                value = "·".into();
            }
            let style = if editing {
                Style::new().fg(Color::Black).bg(Color::Yellow)
            } else {
                Style::new()
            };
            lines.push(Line::from(vec![
                Span::styled(format!("{name:>12}: "), Style::new().fg(Color::DarkGray)),
                Span::styled(value, style),
            ]));
        }
        frame.render_widget(Paragraph::new(lines), data_area);
    }
    let budget = state.selected_budget();
    if let Some(b) = budget {
        frame.render_widget(Paragraph::new(estimate_lines(&b.estimate)), estimate_area);
        // The data still to type, named as the form names it (the planner's own message
        // speaks of the command line's --data).
        let missing: Vec<&str> = view
            .needs_data
            .iter()
            .filter(|n| state.typed(n).trim().is_empty())
            .map(String::as_str)
            .collect();
        draw_table(b, &missing, frame, table_area);
    }
    let footer = match (&state.error, budget) {
        (Some(error), _) => Line::styled(
            error.clone(),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ),
        (None, Some(b)) => Line::styled(
            format!(
                "Enter launches {} at budget {} · ← → budget · finished jobs are reused",
                view.name, b.name
            ),
            Style::new().fg(Color::DarkGray),
        ),
        (None, None) => Line::raw("this recipe has no budgets"),
    };
    frame.render_widget(
        Paragraph::new(footer).wrap(Wrap { trim: true }),
        footer_area,
    );
}

fn draw_budgets(app: &App, view: &RecipeView, frame: &mut Frame, area: Rect) {
    let selected = app.recipes.budget.min(view.budgets.len().saturating_sub(1));
    let rows: Vec<Row> = view
        .budgets
        .iter()
        .map(|b| {
            let progress = match &b.table {
                Some(t) => {
                    let (done, all) = t.progress();
                    format!("{done}/{all} cells")
                }
                None => "-".into(),
            };
            Row::new(vec![
                b.name.clone(),
                format!("{}×{}", b.budget.train_examples, b.budget.epochs),
                b.budget.eval_limit.to_string(),
                b.budget.skill_eval_limit.to_string(),
                b.budget.cat_fraction.to_string(),
                estimate_text(&b.estimate),
                progress,
            ])
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(8),
            Constraint::Length(19),
            Constraint::Fill(1),
        ],
    )
    .header(
        Row::new(vec![
            "budget",
            "train×ep",
            "target",
            "skill",
            "CAT frac",
            "wall time",
            "table",
        ])
        .style(Style::new().add_modifier(Modifier::BOLD)),
    )
    .row_highlight_style(selected_style())
    .highlight_symbol("›");
    let mut state = TableState::default().with_selected(Some(selected));
    frame.render_stateful_widget(table, area, &mut state);
}

fn cell_text(cell: &CellState) -> (String, Style) {
    match cell {
        CellState::NotGraded => ("-".into(), Style::new().fg(Color::DarkGray)),
        CellState::Pending => ("·".into(), Style::new().fg(Color::DarkGray)),
        CellState::Queued => ("queued".into(), Style::new().fg(Color::Blue)),
        CellState::Running => ("running".into(), Style::new().fg(Color::Yellow)),
        CellState::Done(Some(c)) => (
            format!(
                "{:.1} [{:.0},{:.0}]",
                100.0 * c.value,
                100.0 * c.ci_low,
                100.0 * c.ci_high
            ),
            Style::new().fg(Color::Green),
        ),
        CellState::Done(None) => ("done".into(), Style::new().fg(Color::Green)),
        CellState::Failed => ("failed".into(), Style::new().fg(Color::Red)),
        CellState::Cancelled => ("cancelled".into(), Style::new().fg(Color::DarkGray)),
    }
}

fn draw_table(budget: &BudgetView, missing: &[&str], frame: &mut Frame, area: Rect) {
    let Some(table) = &budget.table else {
        let why = if missing.is_empty() {
            budget.plan_error.clone().unwrap_or_default()
        } else {
            format!(
                "type a file for {} above (i edits the line, Tab completes a path)",
                missing.join(", ")
            )
        };
        frame.render_widget(
            Paragraph::new(format!("cannot plan it yet: {why}"))
                .style(Style::new().fg(Color::Yellow))
                .wrap(Wrap { trim: true }),
            area,
        );
        return;
    };
    let (done, all) = table.progress();
    let title = format!(
        " table · {done}/{all} evaluations done · adapters built {}/{} ",
        table.builds_done, table.builds
    );
    // Column names such as `math skill (math-cot)` break before their parenthesis: two short
    // lines fit where one long one is cut.
    let mut header = vec![Text::raw("method")];
    header.extend(
        table
            .columns
            .iter()
            .map(|c| Text::raw(c.replacen(" (", "\n(", 1))),
    );
    let header_height = table
        .columns
        .iter()
        .map(|c| if c.contains(" (") { 2 } else { 1 })
        .max()
        .unwrap_or(1);
    let rows: Vec<Row> = table
        .rows
        .iter()
        .map(|r| {
            let mut cells = vec![Text::raw(r.method.clone())];
            cells.extend(r.cells.iter().map(|c| {
                let (text, style) = cell_text(c);
                Text::styled(text, style)
            }));
            Row::new(cells)
        })
        .collect();
    let mut widths = vec![Constraint::Length(14)];
    widths.extend(table.columns.iter().map(|_| Constraint::Fill(1)));
    frame.render_widget(
        Table::new(rows, widths)
            .header(
                Row::new(header)
                    .height(header_height)
                    .style(Style::new().add_modifier(Modifier::BOLD)),
            )
            .block(pane(&title, false)),
        area,
    );
}
