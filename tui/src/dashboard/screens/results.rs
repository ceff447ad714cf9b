//! The Results screen: the table of every finished evaluation, by method and task.

use std::path::PathBuf;

use super::move_cursor;
use crate::dashboard::app::{Action, App, Command};
use crate::dashboard::export::ResultsTable;

#[derive(Debug, Clone, PartialEq)]
pub struct ResultsState {
    pub table: Option<ResultsTable>,
    pub row: usize,
    pub column: usize,
    pub exported: Vec<PathBuf>,
}

impl ResultsState {
    pub fn new() -> Self {
        ResultsState {
            table: None,
            row: 0,
            column: 0,
            exported: Vec::new(),
        }
    }
}

/// A fresh table: the cursor is kept inside it.
pub fn on_loaded(app: &mut App, table: ResultsTable) -> Option<Command> {
    app.results.row = app.results.row.min(table.methods.len().saturating_sub(1));
    app.results.column = app
        .results
        .column
        .min(table.columns.len().saturating_sub(1));
    app.results.table = Some(table);
    None
}

/// The Results screen's keys: move over the table, export it.
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
        Action::Left => app.results.column = app.results.column.saturating_sub(1),
        Action::Right => {
            app.results.column = (app.results.column + 1).min(columns.saturating_sub(1))
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
