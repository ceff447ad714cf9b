//! The Results screen: scores of every method on every task metric (best per column in bold
//! green with a `*`), and a bar chart of the selected column.

use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Text};
use ratatui::widgets::{Bar, BarChart, BarGroup, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;

use super::{pane, selected_style};
use crate::dashboard::app::App;
use crate::dashboard::format;

pub fn draw(app: &App, frame: &mut Frame, area: Rect) {
    let results = &app.results;
    let Some(table) = results.table.as_ref() else {
        frame.render_widget(
            Paragraph::new("reading the store…").block(pane(" results ", true)),
            area,
        );
        return;
    };
    if table.methods.is_empty() {
        frame.render_widget(
            Paragraph::new(
                "No scores yet. Finished evaluations land here: launch one from Compose (2) (A there for every method), or a whole recipe from Recipes (7).",
            )
            .wrap(Wrap { trim: true })
            .block(pane(" results ", true)),
            area,
        );
        return;
    }
    let chart_height = (table.methods.len() as u16 + 2).clamp(5, area.height / 2);
    let [table_area, chart_area, footer] = Layout::vertical([
        Constraint::Min(4),
        Constraint::Length(chart_height),
        Constraint::Length(1),
    ])
    .areas(area);

    let best = table.best_per_column();
    let mut header = vec![Text::raw("method")];
    for (c, column) in table.columns.iter().enumerate() {
        let style = if c == results.column {
            Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
        } else {
            Style::new().add_modifier(Modifier::BOLD)
        };
        header.push(Text::styled(column.clone(), style));
    }
    let rows: Vec<Row> = table
        .methods
        .iter()
        .zip(&table.cells)
        .enumerate()
        .map(|(r, (method, row))| {
            let mut cells = vec![Text::raw(method.clone())];
            for (c, cell) in row.iter().enumerate() {
                cells.push(match cell {
                    Some(cell) if best.get(c) == Some(&Some(r)) => Text::styled(
                        format!("{:.3}*", cell.value),
                        Style::new().fg(Color::Green).add_modifier(Modifier::BOLD),
                    ),
                    Some(cell) => Text::raw(format!("{:.3}", cell.value)),
                    None => Text::raw("-"),
                });
            }
            Row::new(cells)
        })
        .collect();
    let mut widths = vec![Constraint::Fill(2)];
    widths.extend(table.columns.iter().map(|_| Constraint::Fill(1)));
    let title = format!(
        " scores · {} methods × {} columns · * best ",
        table.methods.len(),
        table.columns.len()
    );
    let mut state = TableState::default().with_selected(Some(results.row));
    frame.render_stateful_widget(
        Table::new(rows, widths)
            .header(Row::new(header))
            .row_highlight_style(selected_style())
            .highlight_symbol("›")
            .block(pane(&title, true)),
        table_area,
        &mut state,
    );

    let column = results.column.min(table.columns.len().saturating_sub(1));
    let label_width = table
        .methods
        .iter()
        .map(|m| m.chars().count())
        .max()
        .unwrap_or(4)
        .min(24);
    let bars: Vec<Bar> = table
        .methods
        .iter()
        .zip(&table.cells)
        .filter_map(|(method, row)| {
            row.get(column).and_then(|c| c.as_ref()).map(|cell| {
                Bar::default()
                    .label(Line::from(format!(
                        "{:<label_width$} {:.3} [{:.2}, {:.2}] n={:<6}",
                        format::ellipsize(method, label_width),
                        cell.value,
                        cell.ci_low,
                        cell.ci_high,
                        cell.n
                    )))
                    .value((cell.value.max(0.0) * 1000.0).round() as u64)
                    .text_value(String::new())
            })
        })
        .collect();
    let chart_title = format!(
        " {} (← → picks the column) ",
        table.columns.get(column).map(String::as_str).unwrap_or("")
    );
    frame.render_widget(
        BarChart::default()
            .direction(Direction::Horizontal)
            .data(BarGroup::default().bars(&bars))
            .bar_width(1)
            .bar_gap(0)
            .max(1000)
            .bar_style(Style::new().fg(Color::Cyan))
            .block(pane(&chart_title, false)),
        chart_area,
    );

    let footer_text = match results.exported.first() {
        Some(path) => format!(
            "e exports CSV/JSON/Markdown · last: {}",
            path.parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ),
        None => "e exports CSV/JSON/Markdown to <data dir>/exports".to_string(),
    };
    frame.render_widget(
        Paragraph::new(footer_text).style(Style::new().fg(Color::DarkGray)),
        footer,
    );
}
