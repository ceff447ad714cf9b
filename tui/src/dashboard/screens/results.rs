//! The Results screen: the table of every finished evaluation, by method and task; below it
//! the selected column's intervals, or (`t`) the paired view: one method (CAT when there is
//! one) minus each other method on the same questions, with the test a recipe's table uses.

use std::path::PathBuf;

use soup_core::engine::recipe::PairedTest;
use soup_store::{AdapterMethod, RunId};

use super::move_cursor;
use crate::dashboard::app::{Action, App, Command};
use crate::dashboard::export::ResultsTable;

/// What the lower pane shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultsView {
    /// Each method's score on the selected column with its 95 % interval.
    Intervals,
    /// The reference method minus each other method, paired on the same questions.
    Paired,
}

/// What the paired tests are computed from: one column, the reference row and every row's
/// run on that column. A new table whose runs differ asks for the tests again.
#[derive(Debug, Clone, PartialEq)]
pub struct PairedRequest {
    pub column: String,
    pub metric: String,
    pub against: String,
    /// (method, its run on the column).
    pub rows: Vec<(String, Option<RunId>)>,
}

/// The answer to a [`PairedRequest`]: the reference's test against each other method (those
/// without per-question records have none).
#[derive(Debug, Clone, PartialEq)]
pub struct PairedView {
    pub request: PairedRequest,
    pub tests: Vec<PairedTest>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResultsState {
    pub table: Option<ResultsTable>,
    pub row: usize,
    pub column: usize,
    pub exported: Vec<PathBuf>,
    pub view: ResultsView,
    /// The method the paired view subtracts the others from; `None`: CAT's row, else the
    /// first row.
    pub against: Option<String>,
    /// The last paired tests read, and the request in flight.
    pub paired: Option<PairedView>,
    pub pending: Option<PairedRequest>,
}

impl ResultsState {
    pub fn new() -> Self {
        ResultsState {
            table: None,
            row: 0,
            column: 0,
            exported: Vec::new(),
            view: ResultsView::Intervals,
            against: None,
            paired: None,
            pending: None,
        }
    }

    /// The paired tests of the current column and reference, once read.
    pub fn current_paired(&self) -> Option<&PairedView> {
        let view = self.paired.as_ref()?;
        let table = self.table.as_ref()?;
        let column = table.columns.get(self.column)?;
        (&view.request.column == column).then_some(view)
    }
}

/// A fresh table: the cursor is kept inside it; the paired view is read again when its runs
/// changed.
pub fn on_loaded(app: &mut App, table: ResultsTable) -> Option<Command> {
    app.results.row = app.results.row.min(table.methods.len().saturating_sub(1));
    app.results.column = app
        .results
        .column
        .min(table.columns.len().saturating_sub(1));
    app.results.table = Some(table);
    request_paired(app)
}

/// The paired tests arrived: kept if they answer the request in flight (a later column or
/// reference replaces an earlier one).
pub fn on_paired(app: &mut App, view: PairedView) -> Option<Command> {
    if app.results.pending.as_ref() == Some(&view.request) {
        app.results.pending = None;
        app.results.paired = Some(view);
    }
    None
}

/// The row the paired view subtracts the others from: the one the user chose, else the first
/// CAT adapter's row, else the first row.
pub fn reference_row(app: &App) -> Option<usize> {
    let table = app.results.table.as_ref()?;
    if table.methods.is_empty() {
        return None;
    }
    if let Some(chosen) = &app.results.against {
        if let Some(i) = table.methods.iter().position(|m| m == chosen) {
            return Some(i);
        }
    }
    let is_cat = |name: &str| {
        app.adapters
            .items
            .iter()
            .any(|a| a.name == name && a.method == AdapterMethod::Cat)
    };
    Some(table.methods.iter().position(|m| is_cat(m)).unwrap_or(0))
}

/// The request the paired view needs now; a command when it is not the one shown or in
/// flight.
fn request_paired(app: &mut App) -> Option<Command> {
    if app.results.view != ResultsView::Paired {
        return None;
    }
    let against = reference_row(app)?;
    let table = app.results.table.as_ref()?;
    let c = app.results.column;
    let column = table.columns.get(c)?.clone();
    let request = PairedRequest {
        metric: table.metrics.get(c).cloned().unwrap_or_default(),
        against: table.methods.get(against)?.clone(),
        rows: table
            .methods
            .iter()
            .zip(&table.cells)
            .map(|(m, row)| {
                (
                    m.clone(),
                    row.get(c).and_then(|x| x.as_ref()).map(|x| x.run),
                )
            })
            .collect(),
        column,
    };
    let shown = app.results.paired.as_ref().map(|v| &v.request);
    if shown == Some(&request) || app.results.pending.as_ref() == Some(&request) {
        return None;
    }
    app.results.pending = Some(request.clone());
    Some(Command::LoadPaired(request))
}

/// The Results screen's keys: move over the table, pick the column, toggle the paired view
/// (`t`), pick its reference (Enter), export.
pub fn update(app: &mut App, action: Action) -> Option<Command> {
    let Some(table) = &app.results.table else {
        return None;
    };
    let rows = table.methods.len();
    let columns = table.columns.len();
    if move_cursor(&mut app.results.row, rows, &action) {
        return None;
    }
    match action {
        Action::Left => {
            app.results.column = app.results.column.saturating_sub(1);
            return request_paired(app);
        }
        Action::Right => {
            app.results.column = (app.results.column + 1).min(columns.saturating_sub(1));
            return request_paired(app);
        }
        Action::ToggleView => {
            if table.methods.len() < 2 {
                app.error("the paired view needs two methods evaluated on the same task");
                return None;
            }
            app.results.view = match app.results.view {
                ResultsView::Intervals => ResultsView::Paired,
                ResultsView::Paired => ResultsView::Intervals,
            };
            return request_paired(app);
        }
        Action::Confirm if app.results.view == ResultsView::Paired => {
            let method = table.methods.get(app.results.row).cloned()?;
            app.info(format!("paired view: {method} minus each other method"));
            app.results.against = Some(method);
            return request_paired(app);
        }
        Action::Export => {
            if table.methods.is_empty() {
                app.error("nothing to export yet: finished evaluations appear here");
                return None;
            }
            return Some(Command::Export(table.clone()));
        }
        _ => {}
    }
    None
}
