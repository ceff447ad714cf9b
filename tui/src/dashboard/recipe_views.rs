//! What the Recipes screen shows, read off the UI thread: the recipes (built-in, and the
//! user's `<data dir>/recipes/*.toml`), each budget's table read from the store the way
//! `soup recipe --stored` reads it (the run whose spec is the planned job's), and wall-time
//! estimates from the speeds of finished runs. Also the reuse test that keeps a relaunched
//! recipe from running again what the store already holds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use soup_core::engine::plan::Plan;
use soup_core::engine::recipe::{Recipe, BUILTIN_RECIPES};
use soup_core::engine::{DataSource, JobSpec};
use soup_store::{AdapterRecord, RecordQuery, RunKind, RunQuery, RunRecord, RunStatus, Store};

use super::screens::recipes::{
    with_data, BudgetView, CellState, DoneCell, Estimate, RecipeData, RecipeTable, RecipeView,
    Speeds, TableRow,
};

/// Where the user's recipes live.
pub fn recipes_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("recipes")
}

/// Finished evaluations the generation speed is measured on (the newest), and the records
/// read from each to count generated tokens.
const SPEED_RUNS: usize = 20;
const SPEED_RECORDS: usize = 200;

/// Every recipe with its budgets, tables and estimates.
pub fn load(store: &Store, data_dir: &Path, data: &RecipeData) -> Result<Vec<RecipeView>, String> {
    let runs = store
        .list_runs(&RunQuery::default())
        .map_err(|e| format!("cannot list runs: {e}"))?
        .items;
    let adapters = store
        .list_adapters()
        .map_err(|e| format!("cannot list adapters: {e}"))?
        .items;
    let speeds = measure(store, &runs, &adapters);
    let mut sizes = DatasetSizes::new(data_dir);
    let mut sources: Vec<(String, String, Result<Recipe, String>)> = BUILTIN_RECIPES
        .iter()
        .map(|(name, text)| {
            (
                name.to_string(),
                "built-in".to_string(),
                Recipe::parse(text, name).map_err(|e| e.to_string()),
            )
        })
        .collect();
    for path in user_recipe_files(data_dir)? {
        let origin = path.display().to_string();
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| origin.clone());
        let recipe = Recipe::load(&origin).map_err(|e| e.to_string());
        sources.push((name, origin, recipe));
    }
    let mut views = Vec::new();
    for (name, origin, recipe) in sources {
        // Built-ins are told apart by name.
        let origin = if origin == "built-in" {
            format!("built-in {name}")
        } else {
            origin
        };
        let recipe = match recipe {
            Ok(r) => r,
            Err(error) => {
                views.push(RecipeView {
                    name,
                    origin,
                    recipe: None,
                    error: Some(error),
                    needs_data: Vec::new(),
                    budgets: Vec::new(),
                });
                continue;
            }
        };
        let needs_data = needs_data(&recipe);
        let applied = with_data(&recipe, &origin, data);
        let mut budgets: Vec<BudgetView> = recipe
            .budgets
            .iter()
            .map(|(budget_name, budget)| {
                let planned = applied
                    .as_ref()
                    .map_err(|e| e.clone())
                    .and_then(|r| r.plan(budget_name).map_err(|e| e.to_string()));
                let (table, estimate, plan_error) = match planned {
                    Ok(plan) => (
                        Some(table(store, &plan, &runs, &adapters)),
                        estimate(&plan, speeds.clone(), &mut sizes),
                        None,
                    ),
                    Err(why) => (
                        None,
                        Estimate {
                            speeds: speeds.clone(),
                            max_new_tokens: budget.max_new_tokens,
                            ..Estimate::default()
                        },
                        Some(why),
                    ),
                };
                BudgetView {
                    name: budget_name.clone(),
                    budget: budget.clone(),
                    estimate,
                    table,
                    plan_error,
                }
            })
            .collect();
        // Smallest first: the order a user tries them in.
        budgets.sort_by_key(|b| {
            (
                b.budget.train_examples * b.budget.epochs,
                b.budget.eval_limit,
                b.name.clone(),
            )
        });
        views.push(RecipeView {
            name: recipe.name.clone(),
            origin,
            recipe: Some(recipe),
            error: None,
            needs_data,
            budgets,
        });
    }
    Ok(views)
}

/// The `.toml` files in the recipes folder, sorted; none when it does not exist.
fn user_recipe_files(data_dir: &Path) -> Result<Vec<PathBuf>, String> {
    let dir = recipes_dir(data_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().and_then(|e| e.to_str()) == Some("toml"))
        .collect();
    files.sort();
    Ok(files)
}

/// The data names whose set is left empty for the user.
fn needs_data(recipe: &Recipe) -> Vec<String> {
    recipe
        .data_names()
        .into_iter()
        .filter(|name| {
            let value = if name == "target" {
                Some(recipe.target.data.as_str())
            } else if let Some(skill) = name.strip_suffix(".test") {
                recipe
                    .skills
                    .iter()
                    .find(|s| s.name == skill)
                    .and_then(|s| s.test.as_ref())
                    .map(|t| t.data.as_str())
            } else {
                recipe
                    .skills
                    .iter()
                    .find(|s| &s.name == name)
                    .map(|s| s.data.as_str())
            };
            value.is_some_and(|v| v.trim().is_empty())
        })
        .collect()
}

/// A spec as compared with stored ones: the precision the engine fills in and the digest of
/// inputs a recipe adds are left out, so a planned job matches the run it became.
pub fn spec_key(spec: &serde_json::Value) -> serde_json::Value {
    let mut v = spec.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("dtype");
        // A recipe's digest of the job's inputs: the dashboard plans without reading them.
        o.remove("inputs");
    }
    v
}

/// A planned job's key as the engine would record it: an evaluation names its task's current
/// grader, so one scored by another version does not count as done (a recipe grades it again).
fn job_key(spec: &JobSpec) -> Option<serde_json::Value> {
    let mut spec = spec.clone();
    spec.fix_grader();
    serde_json::to_value(&spec).ok().map(|v| spec_key(&v))
}

/// The run that is `spec`'s: a finished one first, then one in flight, then the newest other.
fn run_of<'a>(runs: &'a [RunRecord], key: &serde_json::Value) -> Option<&'a RunRecord> {
    let matching = || runs.iter().filter(|r| &spec_key(&r.spec) == key);
    matching()
        .find(|r| r.status == RunStatus::Done)
        .or_else(|| matching().find(|r| r.status == RunStatus::Running))
        .or_else(|| matching().find(|r| r.status == RunStatus::Queued))
        .or_else(|| matching().next())
}

/// Whether the store already holds `spec`'s result, or a twin of it is queued or running:
/// an adapter built by the same job, an evaluation with the same spec.
pub fn already_done(spec: &JobSpec, runs: &[RunRecord], adapters: &[AdapterRecord]) -> bool {
    let Some(key) = job_key(spec) else {
        return false;
    };
    let in_flight = runs.iter().any(|r| {
        matches!(r.status, RunStatus::Queued | RunStatus::Running) && spec_key(&r.spec) == key
    });
    if in_flight {
        return true;
    }
    match produces(spec) {
        Some(name) => adapters.iter().any(|a| {
            // Runners store the job they ran under "job": the spec without its enum tag.
            a.name == name
                && a.hyperparams.get("job").map(spec_key).as_ref() == Some(&untagged(&key))
        }),
        None => runs
            .iter()
            .any(|r| r.status == RunStatus::Done && spec_key(&r.spec) == key),
    }
}

fn untagged(v: &serde_json::Value) -> serde_json::Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("job");
    }
    v
}

/// The adapter a job builds.
pub fn produces(spec: &JobSpec) -> Option<&str> {
    match spec {
        JobSpec::Train(j) => Some(&j.name),
        JobSpec::Cat(j) => Some(&j.name),
        JobSpec::Merge(j) => Some(&j.name),
        JobSpec::Eval(_) => None,
    }
}

/// The stored adapters a job reads.
pub fn needs(spec: &JobSpec) -> Vec<String> {
    use soup_core::engine::EvalTarget;
    match spec {
        JobSpec::Train(_) => Vec::new(),
        JobSpec::Cat(j) => j.adapters.clone(),
        JobSpec::Merge(j) => j.adapters.clone(),
        JobSpec::Eval(j) => match &j.target {
            EvalTarget::Base => Vec::new(),
            EvalTarget::Adapter(a) => vec![a.clone()],
            EvalTarget::Merge { adapters, .. } => adapters.clone(),
        },
    }
}

/// The table of `plan`: each planned evaluation's run and, when done, its headline score.
fn table(
    store: &Store,
    plan: &Plan,
    runs: &[RunRecord],
    adapters: &[AdapterRecord],
) -> RecipeTable {
    let rows = plan
        .rows
        .iter()
        .map(|row| TableRow {
            method: row.label.clone(),
            cells: row
                .evals
                .iter()
                .map(|job| {
                    let Some(job) = job else {
                        return CellState::NotGraded;
                    };
                    let spec = JobSpec::Eval(job.clone());
                    let Some(run) = job_key(&spec).and_then(|k| run_of(runs, &k)) else {
                        return CellState::Pending;
                    };
                    match run.status {
                        RunStatus::Queued => CellState::Queued,
                        RunStatus::Running => CellState::Running,
                        RunStatus::Failed => CellState::Failed,
                        RunStatus::Cancelled => CellState::Cancelled,
                        RunStatus::Done => {
                            let metric = job.task.headline();
                            let score = store
                                .scores(run.id)
                                .ok()
                                .and_then(|s| s.items.into_iter().find(|s| s.metric == metric));
                            CellState::Done(score.map(|s| DoneCell {
                                metric: s.metric,
                                value: s.value,
                                ci_low: s.ci_low,
                                ci_high: s.ci_high,
                                n: s.n,
                            }))
                        }
                    }
                })
                .collect(),
        })
        .collect();
    let builds_done = plan
        .builds
        .iter()
        .filter(|b| already_done(b, &[], adapters))
        .count();
    RecipeTable {
        columns: plan.columns.clone(),
        rows,
        builds_done,
        builds: plan.builds.len(),
    }
}

/// This machine's training and generation speeds, from finished runs: training from the
/// tokens and seconds each trained adapter keeps (`hyperparams.speed`), generation from the
/// generated tokens of the newest finished evaluations over their wall time.
pub fn measure(store: &Store, runs: &[RunRecord], adapters: &[AdapterRecord]) -> Speeds {
    let mut speeds = Speeds::default();
    let (mut tokens, mut seconds, mut examples) = (0.0, 0.0, 0.0);
    for a in adapters {
        let h = &a.hyperparams;
        let speed = h.get("speed");
        let num = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_f64());
        let (Some(t), Some(s)) = (
            num(speed.and_then(|s| s.get("tokens"))),
            num(speed.and_then(|s| s.get("seconds"))),
        ) else {
            continue;
        };
        let epochs = num(h
            .get("job")
            .and_then(|j| j.get("train"))
            .and_then(|t| t.get("epochs")))
        .unwrap_or(1.0);
        let Some(n) = num(h.get("examples")) else {
            continue;
        };
        if t > 0.0 && s > 0.0 && n > 0.0 {
            tokens += t;
            seconds += s;
            examples += n * epochs.max(1.0);
            speeds.train_runs += 1;
        }
    }
    if speeds.train_runs > 0 {
        speeds.train_tokens_per_s = Some(tokens / seconds);
        speeds.tokens_per_example = Some(tokens / examples);
    }
    let (mut generated, mut wall, mut questions) = (0.0, 0.0, 0.0);
    for run in runs
        .iter()
        .filter(|r| r.kind == RunKind::Eval && r.status == RunStatus::Done)
        .take(SPEED_RUNS)
    {
        let (Some(started), Some(finished)) = (run.started, run.finished) else {
            continue;
        };
        let Ok(page) = store.records_page(
            run.id,
            &RecordQuery {
                verdict: None,
                from: 0,
                limit: SPEED_RECORDS,
            },
        ) else {
            continue;
        };
        let Ok(counts) = store.verdict_counts(run.id) else {
            continue;
        };
        let total: u64 = counts.values().sum();
        let graded: Vec<_> = page.items.iter().map(super::question::graded).collect();
        // Answers served from the cache took no generation: such a run does not measure it.
        if graded.is_empty() || graded.iter().any(|g| g.cached) {
            continue;
        }
        let mean = graded.iter().map(|g| g.output_tokens as f64).sum::<f64>() / graded.len() as f64;
        let secs = finished.saturating_sub(started) as f64 / 1000.0;
        if secs <= 0.0 || total == 0 {
            continue;
        }
        generated += mean * total as f64;
        wall += secs;
        questions += total as f64;
        speeds.eval_runs += 1;
    }
    if speeds.eval_runs > 0 && generated > 0.0 {
        speeds.gen_tokens_per_s = Some(generated / wall);
        speeds.tokens_per_question = Some(generated / questions);
    }
    speeds
}

/// Sizes of data sets (examples), read once per loading.
struct DatasetSizes<'a> {
    data_dir: &'a Path,
    known: HashMap<String, Option<u64>>,
}

impl<'a> DatasetSizes<'a> {
    fn new(data_dir: &'a Path) -> Self {
        DatasetSizes {
            data_dir,
            known: HashMap::new(),
        }
    }

    fn get(&mut self, source: &DataSource) -> Option<u64> {
        let key = source.label();
        if let Some(n) = self.known.get(&key) {
            return *n;
        }
        let n = soup_core::engine::read_data(self.data_dir, source)
            .ok()
            .and_then(|(path, text)| {
                use soup_evals::datasets::{detect_format, parse_instructions, Format};
                match detect_format(&text).ok()? {
                    // A corpus is cut into chunks of about 256 tokens (~4 bytes each).
                    Format::ManualText => Some((text.len() as u64 / 1024).max(1)),
                    _ => parse_instructions(&path, &text)
                        .ok()
                        .map(|v| v.len() as u64),
                }
            });
        self.known.insert(key, n);
        n
    }
}

/// How much work `plan` is: examples trained on, questions asked.
fn estimate(plan: &Plan, speeds: Speeds, sizes: &mut DatasetSizes) -> Estimate {
    let mut train_examples = Some(0u64);
    let mut train_jobs = 0;
    let mut add = |n: Option<u64>| {
        train_examples = match (train_examples, n) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        }
    };
    for build in &plan.builds {
        match build {
            JobSpec::Train(j) => {
                train_jobs += 1;
                for (i, src) in j.data.iter().enumerate() {
                    let size = match (j.limit, sizes.get(src)) {
                        (Some(limit), Some(size)) => Some(size.min(limit as u64)),
                        (Some(limit), None) => Some(limit as u64),
                        (None, size) => size,
                    };
                    let passes = j
                        .passes
                        .as_ref()
                        .and_then(|p| p.get(i))
                        .copied()
                        .unwrap_or(1);
                    add(size.map(|s| s * (passes * j.train.epochs) as u64));
                }
            }
            JobSpec::Cat(j) => {
                train_jobs += 1;
                for src in &j.data {
                    let sampled = sizes
                        .get(src)
                        .map(|s| ((s as f64 * j.sample_fraction).ceil() as u64).max(1));
                    add(sampled.map(|s| s * j.train.epochs as u64));
                }
            }
            JobSpec::Merge(_) | JobSpec::Eval(_) => {}
        }
    }
    let mut questions = Some(0u64);
    let mut eval_jobs = 0;
    let mut max_new_tokens = 0;
    for row in &plan.rows {
        // Every seed's evaluations: each is a run.
        for job in row
            .evals
            .iter()
            .chain(row.seed_evals.iter().flatten())
            .flatten()
        {
            eval_jobs += 1;
            max_new_tokens = max_new_tokens.max(job.max_new_tokens);
            let size = sizes.get(&job.data);
            let n = match (job.limit, size) {
                (Some(l), Some(s)) => Some(s.min(l as u64)),
                (Some(l), None) => Some(l as u64),
                (None, s) => s,
            };
            questions = match (questions, n) {
                (Some(a), Some(b)) => Some(a + b),
                _ => None,
            };
        }
    }
    Estimate {
        train_jobs,
        train_examples,
        eval_jobs,
        questions,
        max_new_tokens,
        speeds,
    }
}

/// Completes the path being typed (the text after the last comma, for lists): the longest
/// common prefix of the entries that start with it, a `/` after a lone directory. Returns the
/// new text and the matching names.
pub fn complete_path(text: &str, cwd: &Path) -> (String, Vec<String>) {
    let (head, current) = match text.rfind(',') {
        Some(at) => {
            let rest = &text[at + 1..];
            let trimmed = rest.trim_start();
            (
                text[..text.len() - trimmed.len()].to_string(),
                trimmed.to_string(),
            )
        }
        None => (String::new(), text.to_string()),
    };
    if let Some(prefix) = current.strip_prefix("builtin:") {
        let names: Vec<String> = soup_core::engine::BUILTINS
            .iter()
            .map(|(n, _, _)| n.to_string())
            .filter(|n| n.starts_with(prefix))
            .collect();
        let common = common_prefix(&names).unwrap_or_else(|| prefix.to_string());
        return (format!("{head}builtin:{common}"), names);
    }
    let (dir_text, stem) = match current.rfind('/') {
        Some(at) => (&current[..=at], &current[at + 1..]),
        None => ("", current.as_str()),
    };
    let dir = if dir_text.is_empty() {
        cwd.to_path_buf()
    } else if let Some(rest) = dir_text.strip_prefix("~/") {
        match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(rest),
            None => PathBuf::from(dir_text),
        }
    } else if Path::new(dir_text).is_absolute() {
        PathBuf::from(dir_text)
    } else {
        cwd.join(dir_text)
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return (text.to_string(), Vec::new());
    };
    let mut names: Vec<(String, bool)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            (name.starts_with(stem) && (!name.starts_with('.') || stem.starts_with('.')))
                .then_some((name, is_dir))
        })
        .collect();
    names.sort();
    let completed = match names.as_slice() {
        [] => return (text.to_string(), Vec::new()),
        [(name, true)] => format!("{name}/"),
        [(name, false)] => name.clone(),
        many => {
            let plain: Vec<String> = many.iter().map(|(n, _)| n.clone()).collect();
            common_prefix(&plain).unwrap_or_else(|| stem.to_string())
        }
    };
    let shown = names
        .into_iter()
        .map(|(n, d)| if d { format!("{n}/") } else { n })
        .collect();
    (format!("{head}{dir_text}{completed}"), shown)
}

fn common_prefix(names: &[String]) -> Option<String> {
    let first = names.first()?;
    let mut end = first.len();
    for n in &names[1..] {
        end = first
            .char_indices()
            .zip(n.chars())
            .take_while(|((_, a), b)| a == b)
            .map(|((i, a), _)| i + a.len_utf8())
            .last()
            .unwrap_or(0)
            .min(end);
    }
    Some(first[..end].to_string())
}
