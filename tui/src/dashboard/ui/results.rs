//! The Results screen: scores of every method on every task metric (best per column in bold
//! green with a `*`); below, the selected column's 95 % intervals as whiskers on one axis, or
//! the paired view: the reference method minus each other one on the same questions, with its
//! interval, p-value (Holm-corrected) and significance marker.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;

use super::{pane, selected_style};
use crate::dashboard::app::App;
use crate::dashboard::format;
use crate::dashboard::screens::results::{reference_row, ResultsView};
use soup_core::engine::recipe::ALPHA;

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
    // One line per method, the axis, the borders (and the paired view's heading).
    let chart_height = (table.methods.len() as u16 + 4).clamp(6, area.height / 2);
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
    match results.view {
        ResultsView::Intervals => draw_intervals(app, frame, chart_area, column),
        ResultsView::Paired => draw_paired(app, frame, chart_area, column),
    }

    let hint = match results.view {
        ResultsView::Intervals => "t paired view",
        ResultsView::Paired => "t intervals · ⏎ pairs against the selected row",
    };
    let footer_text = match results.exported.first() {
        Some(path) => format!(
            "{hint} · e exports CSV/JSON/Markdown · last: {}",
            path.parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ),
        None => format!("{hint} · e exports CSV/JSON/Markdown to <data dir>/exports"),
    };
    frame.render_widget(
        Paragraph::new(footer_text).style(Style::new().fg(Color::DarkGray)),
        footer,
    );
}

/// One interval on an axis of `width` cells from `axis.0` to `axis.1`: `├──█──┤`, the point
/// estimate at `█`; with `fill`, `░` from the axis' start (or 0) up to the interval, so the
/// row still reads as a bar; `zero` marks 0 with `┊` (`┼` under the whisker).
pub(crate) fn whisker(
    low: f64,
    value: f64,
    high: f64,
    axis: (f64, f64),
    width: usize,
    fill: bool,
    zero: bool,
) -> String {
    if width == 0 {
        return String::new();
    }
    let span = (axis.1 - axis.0).max(1e-12);
    let at = |x: f64| -> usize {
        let t = ((x - axis.0) / span).clamp(0.0, 1.0);
        ((t * (width - 1) as f64).round() as usize).min(width - 1)
    };
    let mut cells = vec![' '; width];
    if !(low.is_finite() && value.is_finite() && high.is_finite()) {
        cells[0] = '?';
        return cells.into_iter().collect();
    }
    let (pl, pv, ph) = (at(low.min(value)), at(value), at(high.max(value)));
    if fill {
        for c in cells.iter_mut().take(pl).skip(at(axis.0.max(0.0))) {
            *c = '░';
        }
    }
    for c in cells.iter_mut().take(ph + 1).skip(pl) {
        *c = '─';
    }
    if pl < ph {
        cells[pl] = '├';
        cells[ph] = '┤';
    }
    cells[pv] = '█';
    if zero && axis.0 < 0.0 && axis.1 > 0.0 {
        let pz = at(0.0);
        cells[pz] = match cells[pz] {
            ' ' | '░' => '┊',
            '─' => '┼',
            other => other,
        };
    }
    cells.into_iter().collect()
}

/// The tick labels under an axis of `width` cells: its two ends and its middle.
pub(crate) fn axis_labels(axis: (f64, f64), width: usize, decimals: usize) -> String {
    let mut cells = vec![' '; width];
    let mut put = |text: String, at: usize| {
        let start = at.min(width.saturating_sub(text.chars().count()));
        for (i, ch) in text.chars().enumerate() {
            if let Some(c) = cells.get_mut(start + i) {
                *c = ch;
            }
        }
    };
    let mid = (axis.0 + axis.1) / 2.0;
    let texts = [axis.0, mid, axis.1].map(|x| format!("{:.*}", decimals, x));
    let widest = texts.iter().map(|t| t.chars().count()).max().unwrap_or(0);
    // Labels that would run into each other are left out: the middle first, then the ends.
    if width > 2 * widest {
        put(texts[0].clone(), 0);
        put(texts[2].clone(), width);
    }
    if width >= 3 * widest + 4 {
        let at = (width / 2).saturating_sub(texts[1].chars().count() / 2);
        put(texts[1].clone(), at);
    }
    cells.into_iter().collect::<String>().trim_end().to_string()
}

/// A common axis for intervals: [0, 1] when every bound is a share, else the bounds' range
/// with a little room.
fn common_axis(bounds: impl Iterator<Item = (f64, f64)>) -> (f64, f64) {
    let (lo, hi) = bounds
        .filter(|(l, h)| l.is_finite() && h.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (l, h)| {
            (a.min(l), b.max(h))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if lo >= 0.0 && hi <= 1.0 {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-6);
    (lo.min(0.0) - pad, hi + pad)
}

fn draw_intervals(app: &App, frame: &mut Frame, area: Rect, column: usize) {
    let Some(table) = app.results.table.as_ref() else {
        return;
    };
    let label_width = table
        .methods
        .iter()
        .map(|m| m.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 24);
    let cells: Vec<(&String, &crate::dashboard::export::ResultCell)> = table
        .methods
        .iter()
        .zip(&table.cells)
        .filter_map(|(m, row)| row.get(column).and_then(|c| c.as_ref()).map(|c| (m, c)))
        .collect();
    let axis = common_axis(cells.iter().map(|(_, c)| (c.ci_low, c.ci_high)));
    // label, value, [low, high], n=, then the axis.
    let text_width = label_width + 1 + 5 + 1 + 12 + 1 + 8;
    let bar_width = (area.width as usize).saturating_sub(2 + text_width + 1);
    let mut lines: Vec<Line> = cells
        .iter()
        .map(|(method, cell)| {
            Line::from(vec![
                Span::raw(format!(
                    "{:<label_width$} {:.3} [{:.2}, {:.2}] n={:<6} ",
                    format::ellipsize(method, label_width),
                    cell.value,
                    cell.ci_low,
                    cell.ci_high,
                    cell.n
                )),
                Span::styled(
                    whisker(
                        cell.ci_low,
                        cell.value,
                        cell.ci_high,
                        axis,
                        bar_width,
                        true,
                        false,
                    ),
                    Style::new().fg(Color::Cyan),
                ),
            ])
        })
        .collect();
    lines.push(Line::styled(
        format!("{:text_width$} {}", "", axis_labels(axis, bar_width, 2)),
        Style::new().fg(Color::DarkGray),
    ));
    let title = format!(
        " {} · 95% intervals, ├─█─┤ · ← → picks the column ",
        table.columns.get(column).map(String::as_str).unwrap_or("")
    );
    frame.render_widget(Paragraph::new(lines).block(pane(&title, false)), area);
}

fn draw_paired(app: &App, frame: &mut Frame, area: Rect, column: usize) {
    let results = &app.results;
    let Some(table) = results.table.as_ref() else {
        return;
    };
    let column_name = table.columns.get(column).map(String::as_str).unwrap_or("");
    let against = reference_row(app)
        .and_then(|i| table.methods.get(i))
        .cloned()
        .unwrap_or_default();
    let title = format!(" paired · {against} − each method on {column_name} · same questions ");
    let Some(view) = results.current_paired() else {
        frame.render_widget(
            Paragraph::new("pairing the runs' questions…").block(pane(&title, false)),
            area,
        );
        return;
    };
    let label_width = table
        .methods
        .iter()
        .map(|m| m.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 24);
    let tests = &view.tests;
    let bound = tests
        .iter()
        .flat_map(|t| [t.ci_low.abs(), t.ci_high.abs(), t.diff.abs()])
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    // Symmetric around 0, so left of the dotted line is "worse than the reference".
    let bound = if bound > 0.0 { bound * 1.1 } else { 0.1 };
    let axis = (-bound, bound);
    // vs, diff, [low, high], n, test, b/c, p, Holm p, marker.
    // The row's text is `text_width` + 1 wide (the marker's column).
    let text_width = label_width + 1 + 7 + 1 + 18 + 1 + 5 + 1 + 8 + 1 + 9 + 1 + 7 + 1 + 7 + 1;
    let bar_width = (area.width as usize).saturating_sub(2 + text_width + 1);
    let mut lines = vec![Line::styled(
        format!(
            "{:<label_width$} {:>7} {:<18} {:>5} {:<8} {:<9} {:>7} {:>7}",
            "vs", "diff", " 95% CI", "n", "test", "b/c", "p", "Holm p"
        ),
        Style::new().add_modifier(Modifier::BOLD),
    )];
    for method in &table.methods {
        if *method == view.request.against {
            continue;
        }
        let name = format::ellipsize(method, label_width);
        let Some(t) = tests.iter().find(|t| &t.baseline == method) else {
            let why = match view.request.rows.iter().find(|(m, _)| m == method) {
                Some((_, None)) => "not evaluated on this column",
                _ => "no per-question records to pair",
            };
            lines.push(Line::styled(
                format!("{name:<label_width$} {why}"),
                Style::new().fg(Color::DarkGray),
            ));
            continue;
        };
        let bc = match (t.only_method, t.only_baseline) {
            (Some(b), Some(c)) => format!("{b}/{c}"),
            _ => "-".into(),
        };
        let marker = if t.significant { "*" } else { " " };
        let color = match (t.significant, t.diff > 0.0) {
            (true, true) => Color::Green,
            (true, false) => Color::Red,
            _ => Color::Gray,
        };
        lines.push(Line::from(vec![
            Span::raw(format!(
                "{name:<label_width$} {:>+7.3} [{:>+7.3}, {:>+7.3}] {:>5} {:<8} {:<9} {:>7} {:>7}",
                t.diff,
                t.ci_low,
                t.ci_high,
                t.n,
                t.test,
                bc,
                p_value(t.p),
                p_value(t.p_holm)
            )),
            Span::styled(
                format!("{marker} "),
                Style::new().fg(color).add_modifier(Modifier::BOLD),
            ),
            Span::styled(
                whisker(t.ci_low, t.diff, t.ci_high, axis, bar_width, false, true),
                Style::new().fg(color),
            ),
        ]));
    }
    lines.push(Line::styled(
        format!(
            "{:text_width$} {}",
            format!("* Holm p < {ALPHA} · b/c: questions only it / only vs got right"),
            axis_labels(axis, bar_width, 2)
        ),
        Style::new().fg(Color::DarkGray),
    ));
    frame.render_widget(Paragraph::new(lines).block(pane(&title, false)), area);
}

/// A p-value in seven columns: four decimals, or its order of magnitude below 0.0001.
pub(crate) fn p_value(p: f64) -> String {
    if !p.is_finite() {
        "-".into()
    } else if p < 1e-4 {
        format!("{p:.0e}")
    } else {
        format!("{p:.4}")
    }
}
