//! The Results table (methods × task metrics, built from the scores of finished evaluations)
//! and its export to CSV, JSON and Markdown under the data dir.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use soup_core::engine::JobSpec;
use soup_store::{RunId, RunKind, RunQuery, RunRecord, RunStatus, Store};

/// One score in the table, with the run it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultCell {
    pub value: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub n: u64,
    pub run: RunId,
}

/// Scores of methods (rows: what was evaluated) on tasks (columns: `task metric`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResultsTable {
    pub methods: Vec<String>,
    pub columns: Vec<String>,
    /// The metric of each column (what its per-question scores are called).
    pub metrics: Vec<String>,
    /// `cells[method][column]`.
    pub cells: Vec<Vec<Option<ResultCell>>>,
}

impl ResultsTable {
    /// The row holding the highest score of each column (None for an empty column).
    pub fn best_per_column(&self) -> Vec<Option<usize>> {
        (0..self.columns.len())
            .map(|c| {
                let mut best: Option<(usize, f64)> = None;
                for (r, row) in self.cells.iter().enumerate() {
                    if let Some(cell) = row.get(c).and_then(|x| x.as_ref()) {
                        if best.is_none_or(|(_, v)| cell.value > v) {
                            best = Some((r, cell.value));
                        }
                    }
                }
                best.map(|(r, _)| r)
            })
            .collect()
    }
}

/// Finished evaluation runs considered for the table (newest first; the newest run of a
/// method × task wins).
const MAX_RUNS: usize = 2000;

/// What an evaluation run evaluated and on which task, from its recorded spec.
pub fn eval_identity(run: &RunRecord) -> (String, String) {
    match serde_json::from_value::<JobSpec>(run.spec.clone()) {
        Ok(JobSpec::Eval(job)) => (job.target.label(), job.task.name().to_string()),
        _ => (run.label.clone(), "?".into()),
    }
}

/// Builds the table from the store: the runs listing and one score scan per run.
pub fn load_results(store: &Store) -> Result<ResultsTable, String> {
    let runs = store
        .list_runs(&RunQuery {
            status: Some(RunStatus::Done),
            before: None,
            limit: MAX_RUNS,
        })
        .map_err(|e| format!("cannot list runs: {e}"))?;
    let mut cells: BTreeMap<(String, String), ResultCell> = BTreeMap::new();
    let mut methods = BTreeSet::new();
    let mut columns = BTreeSet::new();
    let mut metric_of: BTreeMap<String, String> = BTreeMap::new();
    for run in runs.items.iter().filter(|r| r.kind == RunKind::Eval) {
        let (method, task) = eval_identity(run);
        let scores = store
            .scores(run.id)
            .map_err(|e| format!("cannot read scores of {}: {e}", run.id))?;
        for score in scores.items {
            let column = format!("{task} {}", score.metric);
            let key = (method.clone(), column.clone());
            if cells.contains_key(&key) {
                continue; // an older run of the same method and task
            }
            methods.insert(method.clone());
            metric_of.insert(column.clone(), score.metric.clone());
            columns.insert(column);
            cells.insert(
                key,
                ResultCell {
                    value: score.value,
                    ci_low: score.ci_low,
                    ci_high: score.ci_high,
                    n: score.n,
                    run: run.id,
                },
            );
        }
    }
    // The base model first: the row every other one is read against.
    let mut methods: Vec<String> = methods.into_iter().collect();
    methods.sort_by_key(|m| (m != "base", m.clone()));
    let columns: Vec<String> = columns.into_iter().collect();
    let metrics = columns
        .iter()
        .map(|c| metric_of.get(c).cloned().unwrap_or_default())
        .collect();
    let cells = methods
        .iter()
        .map(|m| {
            columns
                .iter()
                .map(|c| cells.get(&(m.clone(), c.clone())).cloned())
                .collect()
        })
        .collect();
    Ok(ResultsTable {
        methods,
        columns,
        metrics,
        cells,
    })
}

pub fn to_csv(table: &ResultsTable) -> String {
    let mut out = String::from("method,column,value,ci_low,ci_high,n,run\n");
    for (m, row) in table.methods.iter().zip(&table.cells) {
        for (c, cell) in table.columns.iter().zip(row) {
            if let Some(cell) = cell {
                out.push_str(&format!(
                    "{},{},{},{},{},{},{}\n",
                    csv_field(m),
                    csv_field(c),
                    cell.value,
                    cell.ci_low,
                    cell.ci_high,
                    cell.n,
                    cell.run
                ));
            }
        }
    }
    out
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

pub fn to_json(table: &ResultsTable) -> String {
    let rows: Vec<serde_json::Value> = table
        .methods
        .iter()
        .zip(&table.cells)
        .map(|(m, row)| {
            let scores: serde_json::Map<String, serde_json::Value> = table
                .columns
                .iter()
                .zip(row)
                .filter_map(|(c, cell)| {
                    cell.as_ref().map(|cell| {
                        (
                            c.clone(),
                            serde_json::json!({
                                "value": cell.value,
                                "ci95": [cell.ci_low, cell.ci_high],
                                "n": cell.n,
                                "run": cell.run.to_string(),
                            }),
                        )
                    })
                })
                .collect();
            serde_json::json!({ "method": m, "scores": scores })
        })
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({ "results": rows }))
        .unwrap_or_else(|_| "{}".into())
}

/// A Markdown table, best score of each column in bold.
pub fn to_markdown(table: &ResultsTable) -> String {
    let best = table.best_per_column();
    let mut out = format!("| method | {} |\n", table.columns.join(" | "));
    out.push_str(&format!("|---|{}\n", "---:|".repeat(table.columns.len())));
    for (r, (m, row)) in table.methods.iter().zip(&table.cells).enumerate() {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| match cell {
                Some(cell) if best.get(c) == Some(&Some(r)) => format!("**{:.3}**", cell.value),
                Some(cell) => format!("{:.3}", cell.value),
                None => "-".into(),
            })
            .collect();
        out.push_str(&format!("| {m} | {} |\n", cells.join(" | ")));
    }
    out
}

/// Writes the table as `results-STAMP.{csv,json,md}` in `<data_dir>/exports/`.
pub fn write_all(
    table: &ResultsTable,
    data_dir: &Path,
    stamp: &str,
) -> Result<Vec<PathBuf>, String> {
    let dir = data_dir.join("exports");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut written = Vec::new();
    for (ext, text) in [
        ("csv", to_csv(table)),
        ("json", to_json(table)),
        ("md", to_markdown(table)),
    ] {
        let path = dir.join(format!("results-{stamp}.{ext}"));
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}
