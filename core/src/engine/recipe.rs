//! Recipes: the LoRA Soups comparison as one declarative job. A recipe names a model, two or
//! more skills with their data, a target task, the composition methods and budgets; running it
//! trains the skill LoRAs and the DATA-MIX LoRA, learns CAT, builds every merge, evaluates the
//! base model, each skill alone and every composition on the target (and each skill on its own
//! test set), and returns the comparison table with 95 % bootstrap intervals.
//!
//! The jobs come from the comparison planner ([`super::plan`], the same one the dashboard's
//! Compose screen uses); this module turns a recipe into the planner's request, runs the jobs
//! and reads the scores back into the table.
//!
//! Every artifact is named after the recipe and budget, and a re-run reuses any adapter or
//! evaluation whose spec is unchanged ([`Reuse`] says otherwise: recompute everything, or run
//! nothing and tabulate what the store holds).

use super::plan::{
    self, CompareMethod, EvalColumn, MergeSettings, Naming, Plan, PlanRequest, SkillAdapter,
};
use super::spec::{CatJob, DataSource, EvalJob, EvalTarget, EvalTask, JobSpec, TrainJob};
use super::{Engine, JobUpdate};
use crate::error::{CoreError, Result};
use crate::lora::Module;
use crate::train::LoraSpec;
use serde::{Deserialize, Serialize};
use soup_store::{RunKind, RunQuery, RunStatus};
use std::collections::BTreeMap;

/// What a recipe run does with the adapters and evaluations already in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reuse {
    /// Reuse every finished artifact whose spec is unchanged and run the rest.
    #[default]
    Finished,
    /// Recompute everything.
    Fresh,
    /// Run nothing: the table of what the store already holds, for a run that was interrupted
    /// or ran out of time (cells without a finished evaluation stay empty).
    StoredOnly,
}

pub const BUILTIN_RECIPES: [(&str, &str); 2] = [
    ("code-math", include_str!("../../recipes/code-math.toml")),
    ("manual-qa", include_str!("../../recipes/manual-qa.toml")),
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSet {
    pub task: String,
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skill {
    pub name: String,
    pub data: String,
    /// The skill's own test set.
    pub test: Option<EvalSet>,
    /// Epochs for this skill instead of the budget's (a knowledge corpus needs more passes).
    pub epochs: Option<BTreeMap<String, usize>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraParams {
    pub rank: usize,
    pub alpha: f64,
    pub targets: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeParams {
    pub weights: Vec<f64>,
    pub density: f64,
    pub lorahub_budget: usize,
}

/// Data sizes and steps, scaled by `--budget`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub train_examples: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub max_len: usize,
    pub lr: f64,
    pub cat_fraction: f64,
    pub eval_limit: usize,
    pub skill_eval_limit: usize,
    pub max_new_tokens: usize,
    pub shots: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    pub name: String,
    pub model: String,
    pub seed: u64,
    pub methods: Vec<CompareMethod>,
    pub target: EvalSet,
    pub skills: Vec<Skill>,
    pub lora: LoraParams,
    pub merge: MergeParams,
    pub budgets: BTreeMap<String, Budget>,
    /// Where the recipe's evaluations generate (`soup recipe --backend openai`): set by the
    /// caller, never read from a recipe file; None: locally.
    #[serde(skip)]
    pub remote: Option<crate::remote::RemoteBackend>,
}

impl Recipe {
    /// A built-in recipe by name, or a TOML/JSON file.
    pub fn load(spec: &str) -> Result<Recipe> {
        if let Some((_, text)) = BUILTIN_RECIPES.iter().find(|(n, _)| *n == spec) {
            return Self::parse(text, spec);
        }
        let path = std::path::Path::new(spec);
        let text = std::fs::read_to_string(path).map_err(|e| CoreError::io(path, e))?;
        if path.extension().and_then(|e| e.to_str()) == Some("json") {
            Self::parse_json(&text, spec)
        } else {
            Self::parse(&text, spec)
        }
    }

    /// A TOML recipe; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Recipe> {
        let r: Recipe = toml::from_str(text)
            .map_err(|e| CoreError::bad_file(origin, format!("not a recipe: {e}")))?;
        Self::checked(r, origin)
    }

    /// A JSON recipe, held to the same checks as a TOML one (they used to be skipped).
    pub fn parse_json(text: &str, origin: &str) -> Result<Recipe> {
        let r: Recipe = serde_json::from_str(text)
            .map_err(|e| CoreError::bad_file(origin, format!("not a recipe: {e}")))?;
        Self::checked(r, origin)
    }

    fn checked(r: Recipe, origin: &str) -> Result<Recipe> {
        if r.skills.len() < 2 {
            return Err(CoreError::bad_file(
                origin,
                "a recipe needs at least two skills to compose",
            ));
        }
        Module::parse_list(&r.lora.targets)?;
        Ok(r)
    }
}

/// One row of the comparison: a method and its scores (metric → value with interval).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub method: String,
    /// Column (target task or a skill's test) → score.
    pub scores: BTreeMap<String, Cell>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub metric: String,
    pub value: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub n: u64,
    pub run: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub recipe: String,
    pub budget: String,
    pub model: String,
    pub columns: Vec<String>,
    pub rows: Vec<Row>,
}

fn prefix(r: &Recipe, budget: &str) -> String {
    format!("{}-{budget}", r.name)
}

fn task_of(s: &str) -> Result<EvalTask> {
    Ok(s.parse::<EvalTask>()?)
}

/// Runs a job unless an identical one already finished (adapters: by stored spec).
fn ensure(
    engine: &Engine,
    mut spec: JobSpec,
    reuse: Reuse,
    on: &mut dyn FnMut(&str, &JobUpdate),
) -> Result<Option<soup_store::RunId>> {
    // Compared with stored specs as the engine records them: precision fixed.
    spec.fix_precision(engine.precision());
    let value = serde_json::to_value(&spec).map_err(|e| CoreError::serialize("the job", e))?;
    if reuse != Reuse::Fresh {
        let produced = match &spec {
            JobSpec::Train(j) => Some(&j.name),
            JobSpec::Cat(j) => Some(&j.name),
            JobSpec::Merge(j) => Some(&j.name),
            JobSpec::Eval(_) => None,
        };
        if let Some(name) = produced {
            if let Some(a) = engine.store().get_adapter(name)? {
                // Runners store the job they ran under "job": the spec without its enum tag.
                if a.hyperparams.get("job") == Some(&strip_tag(&value)) {
                    report(on, &spec.label(), "reused");
                    return Ok(None);
                }
            }
        } else if let Some(id) = finished_eval(engine, &value)? {
            report(on, &spec.label(), "reused");
            return Ok(Some(id));
        }
    }
    let label = spec.label();
    if reuse == Reuse::StoredOnly {
        report(on, &label, "not in the store");
        return Ok(None);
    }
    let (id, _) = engine.run_now(spec, &mut |u| on(&label, u))?;
    Ok(Some(id))
}

/// Tells the caller why a job was skipped ("reused": its result is already stored).
fn report(on: &mut dyn FnMut(&str, &JobUpdate), label: &str, why: &str) {
    let update = JobUpdate::Progress {
        done: 1,
        total: 1,
        message: why.into(),
        loss: None,
        tokens_per_s: None,
        eta_s: None,
    };
    on(label, &update);
}

/// A job spec as its runner stores it under "job" (the enum tag removed).
fn strip_tag(v: &serde_json::Value) -> serde_json::Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("job");
    }
    v
}

fn finished_eval(engine: &Engine, spec: &serde_json::Value) -> Result<Option<soup_store::RunId>> {
    let runs = engine.store().list_runs(&RunQuery {
        status: Some(RunStatus::Done),
        ..Default::default()
    })?;
    Ok(runs
        .items
        .into_iter()
        .find(|r| r.kind == RunKind::Eval && &r.spec == spec)
        .map(|r| r.id))
}

impl Recipe {
    fn budget(&self, budget_name: &str) -> Result<&Budget> {
        self.budgets
            .get(budget_name)
            .ok_or_else(|| CoreError::NotFound {
                kind: "budget",
                name: format!("{budget_name:?} in recipe {}", self.name),
                hint: format!(
                    "it has {}",
                    self.budgets.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            })
    }

    /// The jobs this recipe runs at `budget_name`, in order, without running any: the
    /// comparison planner's answer for the recipe's skills, methods and budget.
    pub fn plan(&self, budget_name: &str) -> Result<Plan> {
        let b = self.budget(budget_name)?;
        let px = prefix(self, budget_name);
        let mut train = TrainJob::new("", &self.model, Vec::new());
        train.lora = LoraSpec {
            rank: self.lora.rank,
            alpha: self.lora.alpha,
            use_rslora: false,
            targets: Module::parse_list(&self.lora.targets)?,
        };
        train.limit = Some(b.train_examples);
        train.max_len = b.max_len;
        train.train.epochs = b.epochs;
        train.train.batch_size = b.batch_size;
        train.train.lr = b.lr;
        train.train.seed = self.seed;
        let mut cat = CatJob::new("", &self.model, Vec::new(), Vec::new());
        cat.sample_fraction = b.cat_fraction;
        cat.max_len = b.max_len;
        cat.train.batch_size = b.batch_size;
        cat.train.seed = self.seed;
        // Every configuration on the target, and on each skill's own test.
        let mut sets = vec![(
            format!("target {}", self.target.task),
            &self.target,
            b.eval_limit,
        )];
        for s in &self.skills {
            if let Some(t) = &s.test {
                let column = format!("{} skill ({})", s.name, t.task);
                sets.push((column, t, b.skill_eval_limit));
            }
        }
        let columns = sets
            .into_iter()
            .map(|(column, set, limit)| {
                let task = task_of(&set.task)?;
                let data = DataSource::parse(&set.data);
                let mut job = EvalJob::new(&self.model, EvalTarget::Base, task, data);
                job.limit = Some(limit);
                job.max_new_tokens = b.max_new_tokens;
                job.shots = b.shots;
                job.seed = self.seed;
                job.remote = self.remote.clone();
                Ok(EvalColumn { column, job })
            })
            .collect::<Result<Vec<_>>>()?;
        let request = PlanRequest {
            model: self.model.clone(),
            skills: self
                .skills
                .iter()
                .map(|s| SkillAdapter {
                    skill: s.name.clone(),
                    adapter: format!("{px}-{}", s.name),
                    data: Some(DataSource::parse(&s.data)),
                    // Every composition needs them, so they are always trained.
                    train_epochs: Some(
                        s.epochs
                            .as_ref()
                            .and_then(|e| e.get(budget_name))
                            .copied()
                            .unwrap_or(b.epochs),
                    ),
                })
                .collect(),
            methods: self.methods.clone(),
            columns,
            naming: Naming::Prefix(px),
            train,
            cat,
            merge: MergeSettings {
                weights: self.merge.weights.clone(),
                density: self.merge.density,
                svd_rank: None,
                seed: self.seed,
                lorahub_budget: Some(self.merge.lorahub_budget),
                record_all: true,
            },
        };
        plan::plan(&request).map_err(|source| CoreError::Plan {
            what: format!("recipe {}", self.name),
            source,
        })
    }
}

/// Runs the whole comparison; `on(label, update)` sees every job's progress.
pub fn run_recipe(
    engine: &Engine,
    r: &Recipe,
    budget_name: &str,
    reuse: Reuse,
    on: &mut dyn FnMut(&str, &JobUpdate),
) -> Result<Comparison> {
    let plan = r.plan(budget_name)?;
    let model_name = engine.model(&r.model, None)?.name.clone();
    // 1. Adapters: the skill LoRAs, DATA-MIX, CAT and every merge.
    for job in &plan.builds {
        ensure(engine, job.clone(), reuse, on)?;
    }
    // 2. Evaluations: every configuration on every column.
    let mut rows = Vec::new();
    for planned in &plan.rows {
        let mut row = Row {
            method: planned.label.clone(),
            scores: BTreeMap::new(),
        };
        for (column, job) in plan.columns.iter().zip(&planned.evals) {
            let task = job.task;
            let Some(id) = ensure(engine, JobSpec::Eval(job.clone()), reuse, on)? else {
                continue;
            };
            let metric = task.headline();
            if let Some(s) = engine
                .store()
                .scores(id)?
                .items
                .into_iter()
                .find(|s| s.metric == metric)
            {
                row.scores.insert(
                    column.clone(),
                    Cell {
                        metric: metric.into(),
                        value: s.value,
                        ci_low: s.ci_low,
                        ci_high: s.ci_high,
                        n: s.n,
                        run: id.to_string(),
                    },
                );
            }
        }
        rows.push(row);
    }
    Ok(Comparison {
        recipe: r.name.clone(),
        budget: budget_name.into(),
        model: model_name,
        columns: plan.columns,
        rows,
    })
}

impl Comparison {
    fn cell_text(c: Option<&Cell>) -> String {
        match c {
            Some(c) => format!(
                "{:.1} [{:.1}, {:.1}]",
                100.0 * c.value,
                100.0 * c.ci_low,
                100.0 * c.ci_high
            ),
            None => "-".into(),
        }
    }

    /// A Markdown table (also readable as plain text).
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "{} on {} (budget {}); scores in %, 95% bootstrap interval in brackets\n\n| method |",
            self.recipe, self.model, self.budget
        );
        for c in &self.columns {
            s.push_str(&format!(" {c} |"));
        }
        s.push_str("\n|---|");
        for _ in &self.columns {
            s.push_str("---|");
        }
        s.push('\n');
        for r in &self.rows {
            s.push_str(&format!("| {} |", r.method));
            for c in &self.columns {
                s.push_str(&format!(" {} |", Self::cell_text(r.scores.get(c))));
            }
            s.push('\n');
        }
        s
    }

    pub fn csv(&self) -> String {
        let mut s = String::from("method,column,metric,value,ci_low,ci_high,n,run\n");
        for r in &self.rows {
            for (col, c) in &r.scores {
                s.push_str(&format!(
                    "\"{}\",\"{}\",{},{},{},{},{},{}\n",
                    r.method, col, c.metric, c.value, c.ci_low, c.ci_high, c.n, c.run
                ));
            }
        }
        s
    }
}

#[cfg(test)]
#[path = "recipe_fuzz.rs"]
mod fuzz;
