//! The Adapters screen: the sortable, filterable list on top; below, the selected adapter's
//! metadata and loss curve, and for a CAT adapter its learned weights as a heat map (one row
//! per adapter × module, one column per layer).

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Row, Sparkline, Table, TableState, Wrap};
use ratatui::Frame;

use soup_store::{AdapterRecord, CatWeights};

use super::{field, pane, selected_style};
use crate::dashboard::app::{App, InputTarget};
use crate::dashboard::format;

pub fn draw(app: &App, frame: &mut Frame, area: Rect) {
    // The list takes what its rows need, up to 45%: the rest goes to the detail (lineage,
    // heat map), which is what a short list leaves cut otherwise.
    let rows = app.adapters.items.len().max(3) as u16 + 3;
    let list_height = rows.min(area.height * 45 / 100);
    let [list, detail] =
        Layout::vertical([Constraint::Length(list_height), Constraint::Min(0)]).areas(area);
    draw_list(app, frame, list);
    match app.adapters.selected() {
        Some(adapter) => draw_detail(
            adapter,
            &app.adapters.items,
            app.adapters.cat_delta,
            frame,
            detail,
        ),
        None => frame.render_widget(Paragraph::new("").block(pane(" detail ", false)), detail),
    }
}

/// The first row to show so that `cursor` is visible in `visible` rows.
pub(crate) fn window_start(cursor: usize, visible: usize) -> usize {
    if visible == 0 {
        return cursor;
    }
    (cursor + 1).saturating_sub(visible)
}

fn draw_list(app: &App, frame: &mut Frame, area: Rect) {
    let state = &app.adapters;
    let typing = app.input == Some(InputTarget::AdapterFilter);
    let filter = if typing {
        format!(" filter: {}▏", state.filter)
    } else if state.filter.is_empty() {
        String::new()
    } else {
        format!(" filter: {}", state.filter)
    };
    let arrow = if state.reverse { "↑" } else { "↓" };
    let title = format!(
        " adapters {}/{} · sort {}{arrow}{filter} ",
        state.view.len(),
        state.items.len(),
        state.sort.label()
    );
    let block = pane(&title, true);
    if !state.loaded {
        frame.render_widget(Paragraph::new("reading the store…").block(block), area);
        return;
    }
    if state.items.is_empty() {
        frame.render_widget(
            Paragraph::new(
                "No adapters yet. Train one in Train (6) or with `soup train`, or compose some in Compose (2).",
            )
            .wrap(Wrap { trim: true })
            .block(block),
            area,
        );
        return;
    }
    let visible = area.height.saturating_sub(3) as usize;
    let start = window_start(state.cursor, visible);
    let rows: Vec<Row> = state
        .view
        .iter()
        .skip(start)
        .take(visible)
        .filter_map(|i| state.items.get(*i))
        .map(|a| {
            let picked = if app.compose.picked.contains(&a.name) {
                "✓"
            } else {
                " "
            };
            Row::new(vec![
                format!("{picked}{}", a.name),
                a.base_model.clone(),
                a.skill.clone().unwrap_or_else(|| "-".into()),
                format::rank(a),
                format::method(a.method).to_string(),
                format::bytes(a.size_bytes),
                format::date_time(a.created),
            ])
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Fill(3),
            Constraint::Fill(2),
            Constraint::Fill(1),
            Constraint::Length(5),
            Constraint::Length(7),
            Constraint::Length(9),
            Constraint::Length(16),
        ],
    )
    .header(
        Row::new(vec![
            "name", "base", "skill", "rank", "method", "size", "date",
        ])
        .style(Style::new().add_modifier(Modifier::BOLD)),
    )
    .row_highlight_style(selected_style())
    .highlight_symbol("›")
    .block(block);
    let mut table_state = TableState::default().with_selected(Some(state.cursor - start));
    frame.render_stateful_widget(table, area, &mut table_state);
}

/// The data an adapter was trained on: its record's `dataset`, else the sets its job names
/// (CAT and LoraHub record them only there).
fn data_of(adapter: &AdapterRecord) -> Option<String> {
    if let Some(d) = &adapter.dataset {
        return Some(d.clone());
    }
    let sources: Vec<soup_core::engine::DataSource> = adapter
        .hyperparams
        .get("job")
        .and_then(|j| j.get("data"))
        .and_then(|d| serde_json::from_value(d.clone()).ok())?;
    (!sources.is_empty()).then(|| {
        sources
            .iter()
            .map(|s| s.label())
            .collect::<Vec<_>>()
            .join(", ")
    })
}

/// Where an adapter came from, as a tree: each parent with its method and data, down to the
/// trained LoRAs (a parent that is no longer stored is named and marked).
pub(crate) fn lineage(adapter: &AdapterRecord, all: &[AdapterRecord]) -> Vec<String> {
    fn describe(a: &AdapterRecord) -> String {
        let method = format::method(a.method);
        match data_of(a) {
            Some(data) => format!("{} · {method} on {data}", a.name),
            None => format!("{} · {method}", a.name),
        }
    }
    fn walk(
        name: &str,
        all: &[AdapterRecord],
        prefix: &str,
        last: bool,
        seen: &mut Vec<String>,
        out: &mut Vec<String>,
    ) {
        let branch = if last { "└ " } else { "├ " };
        let Some(a) = all.iter().find(|a| a.name == name) else {
            out.push(format!("{prefix}{branch}{name} (not stored)"));
            return;
        };
        out.push(format!("{prefix}{branch}{}", describe(a)));
        if seen.iter().any(|s| s == name) || seen.len() > 8 {
            return;
        }
        seen.push(name.to_string());
        let child_prefix = format!("{prefix}{}", if last { "  " } else { "│ " });
        for (i, p) in a.parents.iter().enumerate() {
            walk(p, all, &child_prefix, i + 1 == a.parents.len(), seen, out);
        }
        seen.pop();
    }
    let mut out = vec![describe(adapter)];
    let mut seen = vec![adapter.name.clone()];
    for (i, p) in adapter.parents.iter().enumerate() {
        walk(
            p,
            all,
            "",
            i + 1 == adapter.parents.len(),
            &mut seen,
            &mut out,
        );
    }
    out
}

fn draw_detail(
    adapter: &AdapterRecord,
    all: &[AdapterRecord],
    delta: bool,
    frame: &mut Frame,
    area: Rect,
) {
    let [meta, right] =
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(area);
    let modules: Vec<String> = adapter
        .modules
        .iter()
        .map(|m| format!("{} r{} α{}", m.module, m.rank, m.alpha))
        .collect();
    let mut lines = vec![
        field("name", adapter.name.clone()),
        field("base", adapter.base_model.clone()),
        field("skill", adapter.skill.clone().unwrap_or_else(|| "-".into())),
        field(
            "dataset",
            adapter.dataset.clone().unwrap_or_else(|| "-".into()),
        ),
        field("method", format::method(adapter.method)),
    ];
    let tree = lineage(adapter, all);
    if tree.len() > 1 {
        lines.push(field("lineage", String::new()));
        lines.extend(tree.into_iter().map(|l| Line::raw(format!("  {l}"))));
    }
    lines.extend([
        field("modules", modules.join(", ")),
        field("size", format::bytes(adapter.size_bytes)),
        field("created", format::date_time(adapter.created)),
        field(
            "val loss",
            adapter
                .val_loss
                .map(|l| format!("{l:.4}"))
                .unwrap_or_else(|| "-".into()),
        ),
    ]);
    if !adapter.hyperparams.is_null() {
        // The movement summary is drawn beside the heat map.
        let mut hyper = adapter.hyperparams.clone();
        if adapter.cat_weights.is_some() {
            if let Some(map) = hyper.as_object_mut() {
                map.remove("cat_movement");
            }
        }
        lines.push(field("hyper", hyper.to_string()));
    }
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(pane(" metadata ", false)),
        meta,
    );

    let (loss_area, cat_area) = match &adapter.cat_weights {
        Some(_) => {
            let [a, b] = Layout::vertical([Constraint::Length(5), Constraint::Min(0)]).areas(right);
            (a, Some(b))
        }
        None => (right, None),
    };
    draw_loss(adapter, frame, loss_area);
    if let (Some(weights), Some(cat_area)) = (&adapter.cat_weights, cat_area) {
        draw_cat_weights(adapter, weights, delta, frame, cat_area);
    }
}

fn draw_loss(adapter: &AdapterRecord, frame: &mut Frame, area: Rect) {
    let curve = &adapter.loss_curve;
    let title = match (curve.first(), curve.last()) {
        (Some((s0, l0)), Some((s1, l1))) => {
            format!(" loss: {l0:.3} @{s0} → {l1:.3} @{s1} ")
        }
        _ => " loss ".to_string(),
    };
    let block = pane(&title, false);
    if curve.is_empty() {
        frame.render_widget(Paragraph::new("no loss curve recorded").block(block), area);
        return;
    }
    let width = area.width.saturating_sub(2).max(1) as usize;
    let losses: Vec<f64> = curve.iter().map(|(_, l)| *l as f64).collect();
    let data = sparkline_data(&losses, width);
    frame.render_widget(Sparkline::default().data(&data).block(block), area);
}

/// Averages `values` into at most `width` buckets and scales them to integers for a
/// [`Sparkline`] (which draws unsigned values from 0).
pub(crate) fn sparkline_data(values: &[f64], width: usize) -> Vec<u64> {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() || width == 0 {
        return Vec::new();
    }
    let buckets = finite.len().min(width);
    let averaged: Vec<f64> = (0..buckets)
        .map(|b| {
            let lo = b * finite.len() / buckets;
            let hi = ((b + 1) * finite.len() / buckets).max(lo + 1);
            finite[lo..hi].iter().sum::<f64>() / (hi - lo) as f64
        })
        .collect();
    let min = averaged.iter().copied().fold(f64::INFINITY, f64::min);
    let max = averaged.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let span = (max - min).max(1e-9);
    // Keep the lowest value visible: 1..=100.
    averaged
        .iter()
        .map(|v| 1 + ((v - min) / span * 99.0).round() as u64)
        .collect()
}

const SHADES: [char; 5] = ['·', '░', '▒', '▓', '█'];

fn shade(value: f32, min: f32, max: f32) -> (char, Color) {
    let t = if max > min {
        ((value - min) / (max - min)).clamp(0.0, 1.0)
    } else {
        1.0
    };
    let i = ((t * (SHADES.len() - 1) as f32).round() as usize).min(SHADES.len() - 1);
    let level = (60.0 + t * 195.0) as u8;
    (SHADES[i], Color::Rgb(level / 3, level, level / 2))
}

/// The adapters' names without the prefix they share up to a `-` (a recipe's
/// `code-math-tiny-math` and `code-math-tiny-code` read `math` and `code`), so a short label
/// still tells them apart.
pub(crate) fn short_names(names: &[String]) -> Vec<String> {
    let Some(first) = names.first() else {
        return Vec::new();
    };
    let mut common = first.len();
    for n in &names[1..] {
        common = common.min(
            first
                .char_indices()
                .zip(n.chars())
                .find(|((_, a), b)| a != b)
                .map(|((i, _), _)| i)
                .unwrap_or(first.len().min(n.len())),
        );
    }
    let cut = first[..common].rfind('-').map(|i| i + 1).unwrap_or(0);
    if names.len() < 2 || names.iter().any(|n| n.len() <= cut) {
        return names.to_vec();
    }
    names.iter().map(|n| n[cut..].to_string()).collect()
}

/// The colour and shade of a change from the start: green up, red down, by its size against
/// the largest change.
fn shade_delta(delta: f32, max_abs: f32) -> (char, Color) {
    let t = if max_abs > 0.0 {
        (delta.abs() / max_abs).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let i = ((t * (SHADES.len() - 1) as f32).round() as usize).min(SHADES.len() - 1);
    let level = (80.0 + t * 175.0) as u8;
    let color = if i == 0 {
        Color::DarkGray
    } else if delta > 0.0 {
        Color::Rgb(level / 4, level, level / 3)
    } else {
        Color::Rgb(level, level / 4, level / 4)
    };
    (SHADES[i], color)
}

/// What the heat map paints: the learned weights, or (`delta`) each weight minus its start;
/// `None` in Δ mode when the start is not known.
fn heat_values(adapter: &AdapterRecord, weights: &CatWeights, delta: bool) -> Option<Vec<f32>> {
    if !delta {
        return Some(weights.values.clone());
    }
    let start = soup_core::train::cat::stored_start(&adapter.hyperparams, weights)?;
    Some(
        weights
            .values
            .iter()
            .zip(&start)
            .map(|(w, s)| w - s)
            .collect(),
    )
}

/// The movement summary the CAT run stored: verdict, |Δw|, held-out loss, each adapter's
/// weights against their start.
fn movement_lines(adapter: &AdapterRecord) -> Vec<Line<'static>> {
    let Some(m) = soup_core::train::CatMovement::of_adapter(adapter) else {
        return vec![Line::styled(
            "no movement summary stored (made before CAT recorded one)",
            Style::new().fg(Color::DarkGray),
        )];
    };
    let color = if m.verdict.moved() {
        Color::Green
    } else {
        Color::Yellow
    };
    let mut lines = vec![Line::from(vec![
        Span::styled("verdict: ", Style::new().add_modifier(Modifier::BOLD)),
        Span::styled(
            m.verdict.label(),
            Style::new().fg(color).add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!(
            " · mean |Δw| {:.4} (max {:.4}) over {} weights · {} {} start",
            m.mean_abs_delta, m.max_abs_delta, m.weights, m.init, m.param
        )),
    ])];
    lines.push(Line::raw(match &m.heldout {
        Some(h) => format!(
            "held-out loss {:.4} → {:.4} ({} examples of {})",
            h.start, h.learned, h.examples, h.source
        ),
        None => "no held-out examples (the whole data was sampled)".to_string(),
    }));
    for w in &m.spread {
        lines.push(Line::raw(format!(
            "{}: mean {:.3} (start {:.3}) sd {:.3} · largest in {}/{} slots",
            w.adapter, w.mean, w.start_mean, w.sd, w.largest_in, w.slots
        )));
    }
    lines
}

fn draw_cat_weights(
    adapter: &AdapterRecord,
    weights: &CatWeights,
    delta: bool,
    frame: &mut Frame,
    area: Rect,
) {
    let values = heat_values(adapter, weights, delta);
    let finite = values
        .iter()
        .flatten()
        .filter(|v| v.is_finite())
        .copied()
        .collect::<Vec<f32>>();
    let (min, max) = finite
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
    let max_abs = finite.iter().fold(0f32, |m, v| m.max(v.abs()));
    let title = if delta {
        format!(" CAT Δ from start · {min:+.3}…{max:+.3} · t: weights ")
    } else {
        format!(" CAT weights · {min:.2}…{max:.2} · t: Δ from start ")
    };
    let mut lines = movement_lines(adapter);
    let summary_rest = lines.split_off(1);
    let Some(values) = values else {
        lines.push(Line::styled(
            "the start of these weights is not recorded (no CAT job or movement summary with the adapter): only the learned weights can be shown (t)",
            Style::new().fg(Color::Yellow),
        ));
        lines.extend(summary_rest);
        frame.render_widget(
            Paragraph::new(lines)
                .wrap(Wrap { trim: false })
                .block(pane(&title, false)),
            area,
        );
        return;
    };
    let at = |a: usize, l: usize, m: usize| -> Option<f32> {
        weights.get(a, l, m)?;
        let i = (a * weights.layers + l) * weights.modules.len() + m;
        values.get(i).copied()
    };
    let names = short_names(&weights.adapters);
    // Only the modules the adapter has: the others' weights scale nothing.
    let shown: Vec<usize> = (0..weights.modules.len())
        .filter(|m| {
            adapter.modules.is_empty()
                || adapter
                    .modules
                    .iter()
                    .any(|s| s.module == weights.modules[*m])
        })
        .collect();
    let label_width = names
        .iter()
        .flat_map(|a| {
            shown
                .iter()
                .map(move |m| a.chars().count().min(12) + weights.modules[*m].len() + 1)
        })
        .max()
        .unwrap_or(8)
        + 1;
    // Each row ends with its mean over the layers shown (the sign of a Δ, in plain text too).
    let room = (area.width as usize).saturating_sub(2 + label_width + 8);
    let layers = weights.layers.min(room);
    for (a, name) in names.iter().enumerate() {
        for &m in &shown {
            let module = &weights.modules[m];
            let label = format!("{}:{module}", format::ellipsize(name, 12));
            let mut spans = vec![Span::styled(
                format!("{label:<label_width$}"),
                Style::new().fg(Color::DarkGray),
            )];
            for l in 0..layers {
                let (ch, color) = match at(a, l, m) {
                    Some(v) if v.is_finite() && delta => shade_delta(v, max_abs),
                    Some(v) if v.is_finite() => shade(v, min, max),
                    _ => ('?', Color::Red),
                };
                spans.push(Span::styled(ch.to_string(), Style::new().fg(color)));
            }
            if layers < weights.layers {
                spans.push(Span::raw("…"));
            }
            let row: Vec<f32> = (0..layers)
                .filter_map(|l| at(a, l, m))
                .filter(|v| v.is_finite())
                .collect();
            if !row.is_empty() {
                let mean = row.iter().sum::<f32>() / row.len() as f32;
                spans.push(Span::styled(
                    if delta {
                        format!(" {mean:+.3}")
                    } else {
                        format!(" {mean:.3}")
                    },
                    Style::new().fg(Color::DarkGray),
                ));
            }
            lines.push(Line::from(spans));
        }
    }
    let legend = if delta {
        format!(
            "layers 0…{} → · |Δ| · ░ ▒ ▓ █ most · green +, red − · mean",
            weights.layers.saturating_sub(1)
        )
    } else {
        format!(
            "layers 0…{} → · low ░ ▒ ▓ █ high · mean",
            weights.layers.saturating_sub(1)
        )
    };
    lines.push(Line::from(Span::styled(
        legend,
        Style::new().fg(Color::DarkGray),
    )));
    lines.extend(summary_rest);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(pane(&title, false)),
        area,
    );
}
