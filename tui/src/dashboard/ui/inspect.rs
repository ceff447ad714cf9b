//! The Inspect screen: evaluation runs on the left; the open run's records one page at a time
//! (filtered by verdict, searched), a record's full detail, and the same question under a
//! second run side by side with the lines that differ highlighted.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{List, ListItem, ListState, Paragraph, Wrap};
use ratatui::Frame;

use soup_evals::driver::QuestionRecord as Graded;
use soup_store::StoredQuestion;

use super::adapters::window_start;
use super::{field, pane, selected_style};
use crate::dashboard::app::{App, InputTarget, PAGE_SIZE};
use crate::dashboard::format;
use crate::dashboard::question::graded;
use crate::dashboard::screens::inspect::{DiscordantView, InspectPane};

pub fn draw(app: &App, frame: &mut Frame, area: Rect) {
    let inspect = &app.inspect;
    if let Some(view) = &inspect.discordant {
        if let (true, Some((a, b)), Some(b_run)) =
            (inspect.detail, view.selected(), inspect.compare_run)
        {
            draw_compare(app, a, b_run, Some(b), true, frame, area);
            return;
        }
        let [runs, records] =
            Layout::horizontal([Constraint::Percentage(30), Constraint::Percentage(70)])
                .areas(area);
        draw_runs(app, frame, runs);
        draw_discordant(app, view, frame, records);
        return;
    }
    if inspect.detail {
        if let Some(record) = inspect.selected() {
            match inspect.compare_run {
                Some(other) => draw_compare(
                    app,
                    record,
                    other,
                    inspect.compare_record.as_ref(),
                    inspect.compare_loaded,
                    frame,
                    area,
                ),
                None => draw_detail(app, record, frame, area),
            }
            return;
        }
    }
    let [runs, records] =
        Layout::horizontal([Constraint::Percentage(30), Constraint::Percentage(70)]).areas(area);
    draw_runs(app, frame, runs);
    draw_records(app, frame, records);
}

/// A run's label without the `eval ` every evaluation's label starts with.
fn run_label(app: &App, id: soup_store::RunId) -> String {
    app.jobs
        .runs
        .iter()
        .find(|r| r.id == id)
        .map(|r| {
            r.label
                .strip_prefix("eval ")
                .unwrap_or(&r.label)
                .to_string()
        })
        .unwrap_or_else(|| format::short_id(id))
}

/// The discordant questions of the open run (A) and the comparison run (B): McNemar's b and
/// c in the title, one line per question with both predictions.
fn draw_discordant(app: &App, view: &DiscordantView, frame: &mut Frame, area: Rect) {
    let inspect = &app.inspect;
    let a = inspect
        .open_run
        .map(|id| run_label(app, id))
        .unwrap_or_default();
    let b = inspect
        .compare_run
        .map(|id| run_label(app, id))
        .unwrap_or_default();
    let Some(list) = &view.list else {
        frame.render_widget(
            Paragraph::new("reading both runs…").block(pane(" discordant questions ", true)),
            area,
        );
        return;
    };
    let title = format!(
        " discordant · b = {} (A✓ B✗) · c = {} (A✗ B✓) · of {} paired ",
        list.b_count, list.c_count, list.paired
    );
    let block = pane(&title, true);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [legend_area, list_area] =
        Layout::vertical([Constraint::Length(2), Constraint::Min(0)]).areas(inner);
    let mut legend = vec![Line::from(vec![
        Span::styled("A ", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format::ellipsize(&a, 40)),
        Span::styled("   B ", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format::ellipsize(&b, 40)),
    ])];
    let mut notes = vec!["Enter side by side · c next run B · Esc back".to_string()];
    if list.mismatched > 0 {
        notes.push(format!(
            "{} question(s) differ in id at the same index: not paired",
            list.mismatched
        ));
    }
    if list.truncated {
        notes.push(format!("first {} listed", list.pairs.len()));
    }
    legend.push(Line::styled(
        notes.join(" · "),
        Style::new().fg(Color::DarkGray),
    ));
    frame.render_widget(Paragraph::new(legend), legend_area);
    if list.pairs.is_empty() {
        frame.render_widget(
            Paragraph::new(if list.paired == 0 {
                "no question is in both runs: are they on the same dataset?"
            } else {
                "the two runs agree on every paired question"
            }),
            list_area,
        );
        return;
    }
    let visible = list_area.height as usize;
    let start = window_start(view.cursor, visible);
    let items: Vec<ListItem> = list
        .pairs
        .iter()
        .skip(start)
        .take(visible)
        .map(|(ra, rb)| {
            let (ga, gb) = (graded(ra), graded(rb));
            let a_right = ga.correct;
            let mark = |right: bool| {
                if right {
                    Span::styled("✓", Style::new().fg(Color::Green))
                } else {
                    Span::styled("✗", Style::new().fg(Color::Red))
                }
            };
            ListItem::new(Line::from(vec![
                Span::raw(format!("{:>6} ", ra.index)),
                Span::raw("A"),
                mark(a_right),
                Span::raw(format!(
                    " {:<10}",
                    format::ellipsize(ga.pred.as_deref().unwrap_or("∅"), 10)
                )),
                Span::raw(" B"),
                mark(gb.correct),
                Span::raw(format!(
                    " {:<10}",
                    format::ellipsize(gb.pred.as_deref().unwrap_or("∅"), 10)
                )),
                Span::raw(format!(
                    " gold {} · {}",
                    format::ellipsize(&ga.gold, 10),
                    first_line(&ga.prompt_question())
                )),
            ]))
        })
        .collect();
    let mut state = ListState::default().with_selected(Some(view.cursor - start));
    frame.render_stateful_widget(
        List::new(items)
            .highlight_style(selected_style())
            .highlight_symbol("›"),
        list_area,
        &mut state,
    );
}

fn verdict_style(verdict: &str) -> Style {
    match verdict {
        "correct" => Style::new().fg(Color::Green),
        "wrong" => Style::new().fg(Color::Red),
        _ => Style::new().fg(Color::Yellow),
    }
}

fn draw_runs(app: &App, frame: &mut Frame, area: Rect) {
    let evals = app.jobs.eval_runs();
    let focused = app.inspect.pane == InspectPane::Runs;
    let block = pane(" evaluation runs ", focused);
    if evals.is_empty() {
        frame.render_widget(
            Paragraph::new("No evaluation runs yet: launch one from Compose (2) or Recipes (7).")
                .wrap(Wrap { trim: true })
                .block(block),
            area,
        );
        return;
    }
    let visible = area.height.saturating_sub(2) as usize;
    let start = window_start(app.inspect.run_cursor, visible);
    let items: Vec<ListItem> = evals
        .iter()
        .skip(start)
        .take(visible)
        .map(|run| {
            let open = if Some(run.id) == app.inspect.open_run {
                "▶"
            } else if Some(run.id) == app.inspect.compare_run {
                "≈"
            } else {
                " "
            };
            let label = run.label.strip_prefix("eval ").unwrap_or(&run.label);
            let status = if run.status == soup_store::RunStatus::Done {
                String::new()
            } else {
                format!(" [{}]", format::status(run.status))
            };
            ListItem::new(format!(
                "{open}{} {label}{status}",
                format::short_id(run.id)
            ))
        })
        .collect();
    let mut state = ListState::default().with_selected(Some(app.inspect.run_cursor - start));
    frame.render_stateful_widget(
        List::new(items)
            .highlight_style(if focused {
                selected_style()
            } else {
                Style::new().add_modifier(Modifier::BOLD)
            })
            .block(block),
        area,
        &mut state,
    );
}

fn draw_records(app: &App, frame: &mut Frame, area: Rect) {
    let inspect = &app.inspect;
    let focused = inspect.pane == InspectPane::Records;
    let Some(run) = inspect.open_run else {
        frame.render_widget(
            Paragraph::new("Enter opens the selected run's records.")
                .block(pane(" records ", focused)),
            area,
        );
        return;
    };
    let page_no = inspect.back.len() + 1;
    let verdict = inspect.verdict.as_deref().unwrap_or("all");
    let title = format!(
        " {} · page {page_no} ({} per page) · verdict {verdict} ",
        format::short_id(run),
        PAGE_SIZE
    );
    let block = pane(&title, focused);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [counts_area, search_area, list_area] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(0),
    ])
    .areas(inner);

    let total: u64 = inspect.verdict_counts.values().sum();
    let mut spans = vec![Span::raw(format!("{total} records: "))];
    for (v, n) in &inspect.verdict_counts {
        let style = if Some(v) == inspect.verdict.as_ref() {
            verdict_style(v).add_modifier(Modifier::REVERSED)
        } else {
            verdict_style(v)
        };
        spans.push(Span::styled(format!("{v} {n}"), style));
        spans.push(Span::raw("  "));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), counts_area);

    let search_line = if app.input == Some(InputTarget::RecordSearch) {
        format!("search: {}▏ (Enter applies, Esc cancels)", inspect.search)
    } else if let Some(search) = &inspect.applied_search {
        format!(
            "search: {search} · {} match(es) in {} records read{}",
            inspect.page.len(),
            inspect.scanned,
            if inspect.next.is_some() {
                " · n: more"
            } else {
                ""
            }
        )
    } else {
        "/ search · v verdict · n p pages · Enter detail · c compare · d discordant".to_string()
    };
    frame.render_widget(
        Paragraph::new(search_line).style(Style::new().fg(Color::DarkGray)),
        search_area,
    );

    if inspect.loading && inspect.page.is_empty() {
        frame.render_widget(Paragraph::new("reading…"), list_area);
        return;
    }
    if inspect.page.is_empty() {
        frame.render_widget(Paragraph::new("no records match"), list_area);
        return;
    }
    let visible = list_area.height as usize;
    let start = window_start(inspect.cursor, visible);
    let items: Vec<ListItem> = inspect
        .page
        .iter()
        .skip(start)
        .take(visible)
        .map(|r| {
            let g = graded(r);
            let pred = g.pred.as_deref().unwrap_or("∅");
            let question = first_line(&g.prompt_question());
            ListItem::new(Line::from(vec![
                Span::raw(format!("{:>6} ", r.index)),
                Span::styled(format!("{:<8}", r.verdict), verdict_style(&r.verdict)),
                Span::raw(format!(
                    " pred {} gold {} · {}",
                    format::ellipsize(pred, 10),
                    format::ellipsize(&g.gold, 10),
                    question
                )),
            ]))
        })
        .collect();
    let mut state =
        ListState::default().with_selected(focused.then_some(inspect.cursor.saturating_sub(start)));
    frame.render_stateful_widget(
        List::new(items)
            .highlight_style(selected_style())
            .highlight_symbol("›"),
        list_area,
        &mut state,
    );
}

fn first_line(text: &str) -> String {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

/// The part of a prompt worth showing in a list: its last non-empty paragraph (few-shot
/// prompts begin with the demos).
trait PromptQuestion {
    fn prompt_question(&self) -> String;
}

impl PromptQuestion for Graded {
    fn prompt_question(&self) -> String {
        self.prompt
            .split("\n\n")
            .filter(|p| !p.trim().is_empty())
            .last()
            .unwrap_or("")
            .to_string()
    }
}

fn section<'a>(lines: &mut Vec<Line<'a>>, title: &'a str, body: &str, highlight: &[bool]) {
    lines.push(Line::styled(
        title,
        Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
    ));
    if body.is_empty() {
        lines.push(Line::styled("  (empty)", Style::new().fg(Color::DarkGray)));
        return;
    }
    for (i, line) in body.lines().enumerate() {
        // Lines that differ from the other run's are marked and highlighted.
        if highlight.get(i).copied().unwrap_or(false) {
            lines.push(Line::styled(
                format!("≠ {line}"),
                Style::new().fg(Color::Black).bg(Color::Yellow),
            ));
        } else {
            lines.push(Line::raw(format!("  {line}")));
        }
    }
}

fn record_lines<'a>(stored: &StoredQuestion, other: Option<&StoredQuestion>) -> Vec<Line<'a>> {
    let record = &graded(stored);
    let other_graded = other.map(graded);
    let (other_verdict, other) = (other.map(|o| o.verdict.as_str()), other_graded.as_ref());
    let differs = |a: &str, b: Option<&str>| other.is_some() && Some(a) != b;
    let mark = |d: bool| {
        if d {
            Style::new().fg(Color::Black).bg(Color::Yellow)
        } else {
            Style::new()
        }
    };
    let pred = record.pred.as_deref().unwrap_or("∅");
    let mut lines = vec![
        Line::from(vec![
            Span::styled("verdict: ", Style::new().fg(Color::DarkGray)),
            Span::styled(
                stored.verdict.clone(),
                verdict_style(&stored.verdict)
                    .add_modifier(Modifier::BOLD)
                    .patch(mark(differs(&stored.verdict, other_verdict))),
            ),
            Span::raw(format!("   id {}  #{}", stored.id, stored.index)),
        ]),
        Line::from(vec![
            Span::styled("pred: ", Style::new().fg(Color::DarkGray)),
            Span::styled(
                pred.to_string(),
                mark(differs(
                    pred,
                    Some(other.and_then(|o| o.pred.as_deref()).unwrap_or("∅")),
                )),
            ),
            Span::styled("   gold: ", Style::new().fg(Color::DarkGray)),
            Span::raw(record.gold.clone()),
        ]),
        field(
            "exit",
            format!(
                "{}   {} ms   {} prompt + {} output tokens{}",
                record
                    .exit_code
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "-".into()),
                record
                    .sandbox_seconds
                    .map_or(0, |s| (s * 1000.0).round() as u64),
                record.prompt_tokens,
                record.output_tokens,
                if record.cached { "   (cached)" } else { "" }
            ),
        ),
    ];
    let diff = |mine: &str, theirs: Option<&str>| -> Vec<bool> {
        match theirs {
            None => Vec::new(),
            Some(theirs) => {
                let theirs: Vec<&str> = theirs.lines().collect();
                mine.lines()
                    .enumerate()
                    .map(|(i, l)| theirs.get(i) != Some(&l))
                    .collect()
            }
        }
    };
    // What the run noted beyond the answer: how the program ended and what the model ran in.
    let mut notes = Vec::new();
    if let Some(sig) = record.signal {
        notes.push(format!("signal {sig}"));
    }
    if let Some(m) = &record.sandbox_message {
        notes.push(m.clone());
    }
    if let Some(style) = record.prompt_style {
        notes.push(format!("{style:?} prompt").to_lowercase());
    }
    if let Some(d) = &record.dtype {
        notes.push(d.clone());
    }
    if !notes.is_empty() {
        lines.push(field("run", notes.join("   ")));
    }
    let output_diff = diff(&record.raw_output, other.map(|o| o.raw_output.as_str()));
    let extracted = record.extracted.clone().unwrap_or_default();
    let extracted_diff = diff(
        &extracted,
        other.map(|o| o.extracted.as_deref().unwrap_or("")),
    );
    let stdout = record.stdout.clone().unwrap_or_default();
    let stdout_diff = diff(&stdout, other.map(|o| o.stdout.as_deref().unwrap_or("")));
    if other.is_none() {
        section(&mut lines, "prompt", &record.prompt, &[]);
    }
    section(&mut lines, "raw output", &record.raw_output, &output_diff);
    section(&mut lines, "extracted", &extracted, &extracted_diff);
    section(&mut lines, "stdout", &stdout, &stdout_diff);
    section(
        &mut lines,
        "stderr",
        record.stderr.as_deref().unwrap_or_default(),
        &[],
    );
    lines
}

fn draw_detail(app: &App, record: &StoredQuestion, frame: &mut Frame, area: Rect) {
    let run = app
        .inspect
        .open_run
        .map(format::short_id)
        .unwrap_or_default();
    let title = format!(
        " {run} · question {} · Esc back · J K scroll · c compare ",
        record.index
    );
    frame.render_widget(
        Paragraph::new(record_lines(record, None))
            .wrap(Wrap { trim: false })
            .scroll((app.inspect.scroll, 0))
            .block(pane(&title, true)),
        area,
    );
}

fn draw_compare(
    app: &App,
    record: &StoredQuestion,
    other_run: soup_store::RunId,
    other: Option<&StoredQuestion>,
    other_loaded: bool,
    frame: &mut Frame,
    area: Rect,
) {
    let inspect = &app.inspect;
    let [question_area, sides] =
        Layout::vertical([Constraint::Length(4), Constraint::Min(0)]).areas(area);
    frame.render_widget(
        Paragraph::new(graded(record).prompt_question())
            .wrap(Wrap { trim: true })
            .block(pane(
                &format!(" question {} · {} ", record.index, record.id),
                false,
            )),
        question_area,
    );
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(sides);
    let label = |id: soup_store::RunId| run_label(app, id);
    let left_title = format!(" {} ", inspect.open_run.map(label).unwrap_or_default());
    frame.render_widget(
        Paragraph::new(record_lines(record, other))
            .wrap(Wrap { trim: false })
            .scroll((inspect.scroll, 0))
            .block(pane(&left_title, true)),
        left,
    );
    let right_title = format!(" {} · c next run · Esc back ", label(other_run));
    let right_body = match other {
        Some(o) if o.id != record.id => {
            let mut lines = vec![Line::styled(
                format!(
                    "question ids differ ({} vs {}): not the same dataset order",
                    record.id, o.id
                ),
                Style::new().fg(Color::Red),
            )];
            lines.extend(record_lines(o, Some(record)));
            lines
        }
        Some(o) => record_lines(o, Some(record)),
        None if other_loaded => {
            vec![Line::raw("this run has no record for this question")]
        }
        None => vec![Line::raw("reading…")],
    };
    frame.render_widget(
        Paragraph::new(right_body)
            .wrap(Wrap { trim: false })
            .scroll((inspect.scroll, 0))
            .block(pane(&right_title, false)),
        right,
    );
}
