//! The Jobs screen: every run newest first with its status and progress; the selected one's
//! gauge, loss sparkline, speed, ETA, and for a failed job its error.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Gauge, Paragraph, Row, Sparkline, Table, TableState, Wrap};
use ratatui::Frame;

use soup_store::{RunRecord, RunStatus};

use super::adapters::{sparkline_data, window_start};
use super::{field, pane, selected_style};
use crate::dashboard::app::App;
use crate::dashboard::format;
use crate::dashboard::screens::jobs::LiveProgress;

pub fn draw(app: &App, frame: &mut Frame, area: Rect) {
    let [list, detail] =
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
    draw_list(app, frame, list);
    match app.jobs.selected() {
        Some(run) => draw_detail(run, app.jobs.live.get(&run.id), frame, detail),
        None => frame.render_widget(Paragraph::new("").block(pane(" job ", false)), detail),
    }
}

fn status_style(status: RunStatus) -> Style {
    match status {
        RunStatus::Queued => Style::new().fg(Color::Blue),
        RunStatus::Running => Style::new().fg(Color::Yellow),
        RunStatus::Done => Style::new().fg(Color::Green),
        RunStatus::Failed => Style::new().fg(Color::Red),
        RunStatus::Cancelled => Style::new().fg(Color::DarkGray),
    }
}

/// done/total from the live events when there are some, else from the stored record.
fn progress_of(run: &RunRecord, live: Option<&LiveProgress>) -> (u64, u64, String) {
    match live {
        Some(l) if l.total > 0 || !l.message.is_empty() => (l.done, l.total, l.message.clone()),
        _ => (
            run.progress.done,
            run.progress.total,
            run.progress.message.clone(),
        ),
    }
}

fn draw_list(app: &App, frame: &mut Frame, area: Rect) {
    let jobs = &app.jobs;
    let running = jobs
        .runs
        .iter()
        .filter(|r| r.status == RunStatus::Running)
        .count();
    let queued = jobs
        .runs
        .iter()
        .filter(|r| r.status == RunStatus::Queued)
        .count();
    let title = format!(
        " jobs · {} running · {} queued · {} in all ",
        running,
        queued,
        jobs.runs.len()
    );
    let block = pane(&title, true);
    if !jobs.loaded {
        frame.render_widget(Paragraph::new("reading the store…").block(block), area);
        return;
    }
    if jobs.runs.is_empty() {
        frame.render_widget(
            Paragraph::new("No jobs yet. Launch one from Train (6), Compose (2) or Recipes (7).")
                .wrap(Wrap { trim: true })
                .block(block),
            area,
        );
        return;
    }
    let visible = area.height.saturating_sub(3) as usize;
    let start = window_start(jobs.cursor, visible);
    let rows: Vec<Row> = jobs
        .runs
        .iter()
        .skip(start)
        .take(visible)
        .map(|run| {
            let (done, total, _) = progress_of(run, jobs.live.get(&run.id));
            let progress = if total > 0 {
                format!("{done}/{total}")
            } else {
                "-".into()
            };
            Row::new(vec![
                ratatui::text::Text::raw(format::short_id(run.id)),
                ratatui::text::Text::raw(format::kind(run.kind)),
                ratatui::text::Text::raw(run.label.clone()),
                ratatui::text::Text::styled(format::status(run.status), status_style(run.status)),
                ratatui::text::Text::raw(progress),
                ratatui::text::Text::raw(format::date_time(run.created)),
            ])
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(6),
            Constraint::Length(5),
            Constraint::Fill(1),
            Constraint::Length(9),
            Constraint::Length(11),
            Constraint::Length(16),
        ],
    )
    .header(
        Row::new(vec!["id", "kind", "label", "status", "progress", "created"])
            .style(Style::new().add_modifier(Modifier::BOLD)),
    )
    .row_highlight_style(selected_style())
    .highlight_symbol("›")
    .block(block);
    let mut state = TableState::default().with_selected(Some(jobs.cursor - start));
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_detail(run: &RunRecord, live: Option<&LiveProgress>, frame: &mut Frame, area: Rect) {
    let title = format!(" {} · {} ", run.label, format::status(run.status));
    let block = pane(&title, false);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [gauge_area, info_area, spark_area] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(4),
    ])
    .areas(inner);

    let (done, total, message) = progress_of(run, live);
    let ratio = if run.status == RunStatus::Done {
        1.0
    } else if total > 0 {
        (done as f64 / total as f64).clamp(0.0, 1.0)
    } else {
        0.0
    };
    frame.render_widget(
        Gauge::default()
            .ratio(ratio)
            .label(format!("{:.0}%  {done}/{total}", ratio * 100.0))
            .gauge_style(status_style(run.status)),
        gauge_area,
    );

    let mut lines = vec![field("run", run.id.to_string())];
    if !message.is_empty() {
        lines.push(field("now", message));
    }
    let speed = live
        .and_then(|l| l.tokens_per_s)
        .map(|t| format!("{t:.0} tokens/s"))
        .unwrap_or_else(|| "-".into());
    let eta = live
        .and_then(|l| l.eta_s)
        .filter(|_| !run.status.is_final())
        .map(format::duration_s)
        .unwrap_or_else(|| "-".into());
    lines.push(Line::from(
        [
            super::field("speed", speed).spans,
            vec![ratatui::text::Span::raw("   ")],
            super::field("eta", eta).spans,
        ]
        .concat(),
    ));
    lines.push(field("created", format::date_time(run.created)));
    if let (Some(started), Some(finished)) = (run.started, run.finished) {
        lines.push(field(
            "took",
            format::duration_s(finished.saturating_sub(started) as f64 / 1000.0),
        ));
    }
    let mut paragraph_lines = lines;
    if let Some(error) = &run.error {
        paragraph_lines.push(Line::styled(
            format!("error: {error}"),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ));
        if matches!(run.status, RunStatus::Failed | RunStatus::Cancelled) {
            paragraph_lines.push(Line::styled(
                "r resumes it from its checkpoint or its finished questions",
                Style::new().fg(Color::DarkGray),
            ));
        }
    }
    frame.render_widget(
        Paragraph::new(paragraph_lines).wrap(Wrap { trim: false }),
        info_area,
    );

    let losses = live.map(|l| l.losses.as_slice()).unwrap_or(&[]);
    // First and last of the live curve, so a falling loss reads in numbers as well as bars.
    let spark_title = match (losses.first(), losses.last()) {
        (Some(first), Some(last)) if losses.len() > 1 => {
            format!(" loss {first:.4} → {last:.4} ")
        }
        (_, Some(last)) => format!(" loss {last:.4} "),
        _ => " loss (live, while it trains) ".to_string(),
    };
    let data = sparkline_data(losses, spark_area.width.saturating_sub(2) as usize);
    frame.render_widget(
        Sparkline::default()
            .data(&data)
            .style(Style::new().fg(Color::Cyan))
            .block(pane(&spark_title, false)),
        spark_area,
    );
}
