//! Recipes: the LoRA Soups comparison as one declarative job. A recipe names a model, two or
//! more skills with their data, a target task, the composition methods and budgets; running it
//! trains the skill LoRAs and the DATA-MIX LoRA, learns CAT, builds every merge, evaluates the
//! base model, each skill alone and every composition on the target (and each skill on its own
//! test set), and returns the comparison table: per-method intervals (Wilson for right/wrong
//! scores), mean ± sd over seeds for methods with randomness, CAT's paired tests against every
//! other method (exact McNemar or paired bootstrap, Holm-corrected), the skill gate and the
//! power calculation that says what the budget's question count can find.
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
use crate::train::{cat, CatInit, CatMovement, CatParam, LoraSpec};
use serde::{Deserialize, Serialize};
use soup_evals::stats::{holm, mcnemar_exact, paired_bootstrap, wilson95, PowerNote};
use soup_store::{RunId, RunKind, RunQuery, RunStatus};
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

pub const BUILTIN_RECIPES: [(&str, &str); 3] = [
    ("code-math", include_str!("../../recipes/code-math.toml")),
    ("manual-qa", include_str!("../../recipes/manual-qa.toml")),
    // The paper's game manual and questions: the user points it at the files (`--data`).
    ("game-qa", include_str!("../../recipes/game-qa.toml")),
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
    /// Fraction of each skill's data CAT learns its weights on (the paper: 5 %).
    pub cat_fraction: f64,
    /// The CAT coefficients' own learning rate (a few hundred scalars, not a LoRA).
    #[serde(default = "default_cat_lr")]
    pub cat_lr: f64,
    /// Passes over the CAT sample.
    #[serde(default = "default_cat_epochs")]
    pub cat_epochs: usize,
    /// At least this many CAT optimizer steps, repeating the sample as needed.
    #[serde(default = "default_cat_min_steps")]
    pub cat_min_steps: usize,
    /// Where CAT's weights start: `uniform` (the plain concatenation) or `normal` (the
    /// paper's N(0, 1) logits).
    #[serde(default)]
    pub cat_init: CatInit,
    /// `softmax` over adapters per layer and module (weights sum to 1), or `free` weights.
    #[serde(default)]
    pub cat_param: CatParam,
    /// Examples of each skill's data outside the CAT sample on which the start and learned
    /// weights' held-out loss is measured.
    #[serde(default = "default_cat_heldout")]
    pub cat_heldout: usize,
    pub eval_limit: usize,
    pub skill_eval_limit: usize,
    pub max_new_tokens: usize,
    pub shots: usize,
    /// Runs of each method with randomness (CAT, the DARE merges), seeds `seed`, `seed + 1`,
    /// ...: the table shows their mean ± sd. Default 3; a smoke-test budget may say 1 (the
    /// report then says that it shows no spread over seeds).
    #[serde(default = "default_seeds")]
    pub seeds: usize,
    /// A skill LoRA passes the skill gate when its score on its own test beats the base
    /// model's by at least this much (0.10: ten points). Default 0.10.
    #[serde(default = "default_skill_gate_margin")]
    pub skill_gate_margin: f64,
    /// The methods whose configurations are graded on the skills' own tests, first seed
    /// only (the target grades every one); it must hold `base` and `skills`, which the skill
    /// gate compares. Default: every method, every seed.
    #[serde(default)]
    pub skill_tests: Option<Vec<CompareMethod>>,
}

/// Questions a recipe's evaluations decode at once: on 2 CPU cores, 64 code-math questions
/// took 44 s at 64 against 51 s at 32 (the default of `soup eval`), for 2.7 GB against 1.7.
const EVAL_BATCH: usize = 64;

/// More seeds than this is a typo: every one is a CAT and DARE merges more, each evaluated.
pub const MAX_SEEDS: usize = 20;

fn default_seeds() -> usize {
    3
}

fn default_skill_gate_margin() -> f64 {
    0.10
}

fn default_cat_lr() -> f64 {
    cat::DEFAULT_CAT_LR
}
fn default_cat_epochs() -> usize {
    cat::DEFAULT_CAT_EPOCHS
}
fn default_cat_min_steps() -> usize {
    cat::DEFAULT_CAT_MIN_STEPS
}
fn default_cat_heldout() -> usize {
    cat::DEFAULT_CAT_HELDOUT
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

    /// Points one of the recipe's data sets at `data` (a file or `builtin:NAME`): `target`,
    /// a skill's training data by the skill's name, or its test set as `SKILL.test`. A recipe
    /// on data soup does not ship (the paper's game manual) leaves these empty for the user.
    pub fn set_data(&mut self, which: &str, data: &str) -> Result<()> {
        let names = self.data_names();
        let slot = if which == "target" {
            Some(&mut self.target.data)
        } else if let Some(skill) = which.strip_suffix(".test") {
            self.skills
                .iter_mut()
                .find(|s| s.name == skill)
                .and_then(|s| s.test.as_mut())
                .map(|t| &mut t.data)
        } else {
            self.skills
                .iter_mut()
                .find(|s| s.name == which)
                .map(|s| &mut s.data)
        };
        let slot = slot.ok_or_else(|| CoreError::UnknownName {
            kind: "recipe data set",
            name: which.to_string(),
            expected: format!("one of {}", names.join(", ")),
        })?;
        *slot = data.to_string();
        Ok(())
    }

    /// What [`Recipe::set_data`] can point: `target`, each skill, each skill's `.test`.
    pub fn data_names(&self) -> Vec<String> {
        let mut names = vec!["target".to_string()];
        for s in &self.skills {
            names.push(s.name.clone());
            if s.test.is_some() {
                names.push(format!("{}.test", s.name));
            }
        }
        names
    }

    /// Data sets the recipe leaves for the user to name, refused before anything runs.
    fn check_data_named(&self) -> Result<()> {
        let mut empty = Vec::new();
        if self.target.data.trim().is_empty() {
            empty.push("target".to_string());
        }
        for s in &self.skills {
            if s.data.trim().is_empty() {
                empty.push(s.name.clone());
            }
            if s.test.as_ref().is_some_and(|t| t.data.trim().is_empty()) {
                empty.push(format!("{}.test", s.name));
            }
        }
        if empty.is_empty() {
            return Ok(());
        }
        let flags: Vec<String> = empty.iter().map(|n| format!("--data {n}=PATH")).collect();
        Err(CoreError::missing(
            format!("recipe {}", self.name),
            format!(
                "files soup does not ship: name them with {}",
                flags.join(" ")
            ),
        ))
    }

    fn checked(r: Recipe, origin: &str) -> Result<Recipe> {
        if r.skills.len() < 2 {
            return Err(CoreError::bad_file(
                origin,
                "a recipe needs at least two skills to compose",
            ));
        }
        Module::parse_list(&r.lora.targets)?;
        for (name, b) in &r.budgets {
            if !(1..=MAX_SEEDS).contains(&b.seeds) {
                return Err(CoreError::bad_file(
                    origin,
                    format!(
                        "budget {name}: seeds is {}; it must be between 1 and {MAX_SEEDS} (3 gives a mean ± sd)",
                        b.seeds
                    ),
                ));
            }
            if !(0.0..=1.0).contains(&b.skill_gate_margin) {
                return Err(CoreError::bad_file(
                    origin,
                    format!(
                        "budget {name}: skill_gate_margin {} is not a share in [0, 1] (0.10 is ten points)",
                        b.skill_gate_margin
                    ),
                ));
            }

            if !(b.cat_lr.is_finite() && b.cat_lr > 0.0) {
                return Err(CoreError::bad_file(
                    origin,
                    format!(
                        "budget {name}: cat_lr {} must be a positive number (CAT's default is {})",
                        b.cat_lr,
                        cat::DEFAULT_CAT_LR
                    ),
                ));
            }
            if !(b.cat_fraction > 0.0 && b.cat_fraction <= 1.0) {
                return Err(CoreError::bad_file(
                    origin,
                    format!(
                        "budget {name}: cat_fraction {} must be in (0, 1]",
                        b.cat_fraction
                    ),
                ));
            }
            if let Some(listed) = &b.skill_tests {
                let gate = [CompareMethod::Base, CompareMethod::Skills];
                if let Some(m) = gate.iter().find(|m| !listed.contains(m)) {
                    return Err(CoreError::bad_file(
                        origin,
                        format!("budget {name}: skill_tests leaves out {m}, which the skill gate compares on the skills' tests"),
                    ));
                }
                if let Some(m) = listed.iter().find(|m| !r.methods.contains(m)) {
                    return Err(CoreError::bad_file(
                        origin,
                        format!("budget {name}: skill_tests names {m}, which is not among the recipe's methods"),
                    ));
                }
            }
            if b.cat_epochs == 0 && b.cat_min_steps == 0 {
                return Err(CoreError::bad_file(
                    origin,
                    format!("budget {name}: cat_epochs and cat_min_steps are both 0, so CAT would not train: set cat_epochs = 1"),
                ));
            }
        }
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

/// One method on one column: the run of its first seed, with its interval, and the spread over
/// seeds for methods with randomness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub metric: String,
    /// The first seed's score.
    pub value: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub n: u64,
    pub run: String,
    /// How the interval was made: `wilson` (right/wrong scores) or `bootstrap` (partial
    /// credit). Empty: read from a table written before it was recorded.
    #[serde(default)]
    pub interval: String,
    /// The score of every seed, the first seed's first; empty for a method run once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seed_values: Vec<f64>,
    /// Mean over questions of the teacher-forced log-likelihood of the reference answer
    /// (nats); `None` when the records do not carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_logprob: Option<f64>,
}

impl Cell {
    /// Mean and sample sd over seeds, when there are at least two.
    pub fn seed_spread(&self) -> Option<(f64, f64)> {
        match soup_evals::stats::mean_sd(&self.seed_values) {
            Some((m, Some(sd))) => Some((m, sd)),
            _ => None,
        }
    }
}

/// The row every other method is tested against.
pub const PAIRED_AGAINST: &str = "CAT";

/// The metric name of the teacher-forced log-likelihood of the reference answer in paired
/// tests.
pub const REF_LOGPROB: &str = "ref_logprob";

/// Significance level of the paired tests (after Holm's correction).
pub const ALPHA: f64 = 0.05;

/// CAT against one other method on one column, on the questions both answered (each method's
/// first seed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedTest {
    pub column: String,
    /// The headline metric, or [`REF_LOGPROB`].
    pub metric: String,
    pub method: String,
    pub baseline: String,
    /// Questions paired.
    pub n: usize,
    /// Mean over questions of (method − baseline): a share for scores, nats for log-likelihood.
    pub diff: f64,
    /// Paired-bootstrap 95 % interval of `diff`.
    pub ci_low: f64,
    pub ci_high: f64,
    /// `mcnemar` (exact, right/wrong scores) or `bootstrap` (paired bootstrap).
    pub test: String,
    /// McNemar's discordant counts: questions only the method got right, only the baseline.
    pub only_method: Option<u64>,
    pub only_baseline: Option<u64>,
    pub p: f64,
    /// Holm-adjusted over the baselines of the same column and metric.
    pub p_holm: f64,
    /// `p_holm` < [`ALPHA`].
    pub significant: bool,
}

/// A skill adapter on its own test against the base model on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkillGate {
    pub skill: String,
    pub column: String,
    pub skill_score: Option<f64>,
    pub base_score: Option<f64>,
    pub margin: f64,
    /// The skill beat the base by at least `margin`; `None` when a score is missing.
    pub passed: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub recipe: String,
    pub budget: String,
    pub model: String,
    pub columns: Vec<String>,
    pub rows: Vec<Row>,
    /// Seeds of each method with randomness.
    #[serde(default = "default_seeds")]
    pub seeds: usize,
    /// CAT against every other row, per column (empty without a CAT row).
    #[serde(default)]
    pub paired: Vec<PairedTest>,
    #[serde(default)]
    pub skill_gate: Vec<SkillGate>,
    /// What the target column's question count can find.
    #[serde(default)]
    pub power: Option<PowerNote>,
    /// Share of target questions that CAT and a baseline answer differently, over the
    /// McNemar tests of the target column (what the power calculation assumes a value for).
    #[serde(default)]
    pub observed_discordance: Option<f64>,
    /// How far each CAT seed moved, the first seed's first (the seeds that have run and
    /// recorded it).
    #[serde(default)]
    pub cat_movements: Vec<SeedMovement>,
}

/// One CAT seed's [`CatMovement`], by its adapter's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedMovement {
    pub adapter: String,
    pub movement: CatMovement,
}

/// The share of questions two methods answer differently that the power calculation assumes:
/// two methods near 50 % that agree on most questions.
pub const ASSUMED_DISCORDANCE: f64 = 0.3;

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
    // Compared with stored specs as the engine records them: precision and grader version
    // fixed, and the digest of what the job reads, so a job whose inputs changed under the
    // same names is redone, and an evaluation scored by another grader is graded again.
    spec.fix_recorded(engine.precision());
    *spec.inputs_mut() = Some(inputs_digest(engine, &spec)?);
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
        } else if let Some(id) = finished_eval(engine, &value, &[])? {
            report(on, &spec.label(), "reused");
            return Ok(Some(id));
        }
    }
    let label = spec.label();
    if reuse == Reuse::StoredOnly {
        let regrade = matches!(spec, JobSpec::Eval(_))
            && finished_eval(engine, &value, &["grader"])?.is_some();
        let why = if regrade {
            "graded by another version of its grader: run the recipe without --stored to grade it again"
        } else {
            "not in the store"
        };
        report(on, &label, why);
        return Ok(None);
    }
    let (id, _) = engine.run_now(spec, &mut |u| on(&label, u))?;
    Ok(Some(id))
}

/// The digest of what `spec` reads: each data source's bytes (a built-in set as its generator
/// wrote it, a file as it is now) and each input adapter's weights (its stored blob's
/// SHA-256; a recipe's adapters are always stored ones). A source that does not resolve and
/// an adapter not (yet) stored count as absent.
fn inputs_digest(engine: &Engine, spec: &JobSpec) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for source in spec.data_sources() {
        hash.update(source.label().as_bytes());
        // A missing file or an unknown built-in is the job's own error to report when it
        // runs; `--stored` tabulates without it.
        match super::data::resolve(engine.data_dir(), source) {
            Ok(path) => {
                let bytes = std::fs::read(&path).map_err(|e| CoreError::io(&path, e))?;
                hash.update(Sha256::digest(&bytes));
            }
            Err(_) => hash.update(b"(absent)"),
        }
    }
    for name in spec.input_adapters() {
        hash.update(name.as_bytes());
        if let Some(a) = engine.store().get_adapter(name)? {
            hash.update(a.blob.map(|b| b.sha256).unwrap_or_default().as_bytes());
        }
    }
    Ok(format!("{:x}", hash.finalize()))
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

/// The finished evaluation stored for `spec`, compared by [`eval_identity`] without the
/// `ignored` fields (`["grader"]`: scored by any version of its grader).
fn finished_eval(
    engine: &Engine,
    spec: &serde_json::Value,
    ignored: &[&str],
) -> Result<Option<soup_store::RunId>> {
    let runs = engine.store().list_runs(&RunQuery {
        status: Some(RunStatus::Done),
        ..Default::default()
    })?;
    let wanted = eval_identity(spec, ignored);
    Ok(runs
        .items
        .into_iter()
        .find(|r| r.kind == RunKind::Eval && eval_identity(&r.spec, ignored) == wanted)
        .map(|r| r.id))
}

/// What makes two evaluations the same: the spec without its decoding batch size (and the
/// `ignored` fields), which says how many questions are decoded at once, not what is asked or
/// how it is graded (a default that grows, as it did from 16 to 32, must not make a recipe
/// redo its finished evaluations).
fn eval_identity(spec: &serde_json::Value, ignored: &[&str]) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value, ignored: &[&str]) {
        if let serde_json::Value::Object(map) = v {
            map.remove("batch_size");
            for field in ignored {
                map.remove(*field);
            }
            map.values_mut().for_each(|v| strip(v, ignored));
        }
    }
    let mut v = spec.clone();
    strip(&mut v, ignored);
    v
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
        self.check_data_named()?;
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
        cat.heldout = b.cat_heldout;
        cat.param = b.cat_param;
        cat.init = b.cat_init;
        cat.max_len = b.max_len;
        cat.train.batch_size = b.batch_size;
        cat.train.lr = b.cat_lr;
        cat.train.epochs = b.cat_epochs;
        cat.train.min_steps = b.cat_min_steps;
        cat.train.seed = self.seed;
        // Every configuration on the target, and on each skill's own test (those the budget
        // names).
        let mut sets = vec![(
            format!("target {}", self.target.task),
            &self.target,
            b.eval_limit,
            None,
        )];
        for s in &self.skills {
            if let Some(t) = &s.test {
                let column = skill_column(&s.name, &t.task);
                sets.push((column, t, b.skill_eval_limit, b.skill_tests.clone()));
            }
        }
        let columns = sets
            .into_iter()
            .map(|(column, set, limit, only)| {
                let task = task_of(&set.task)?;
                let data = DataSource::parse(&set.data);
                let mut job = EvalJob::new(&self.model, EvalTarget::Base, task, data);
                job.limit = Some(limit);
                // The same seeded sample for every method, spread over the whole set.
                job.sample_seed = Some(self.seed);
                job.max_new_tokens = b.max_new_tokens;
                job.shots = b.shots;
                job.seed = self.seed;
                job.remote = self.remote.clone();
                job.batch_size = EVAL_BATCH;
                Ok(EvalColumn { column, job, only })
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
        let plan = plan::plan(&request).map_err(|source| CoreError::Plan {
            what: format!("recipe {}", self.name),
            source,
        })?;
        Ok(plan::with_seeds(plan, b.seeds))
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
    let b = r.budget(budget_name)?;
    let model_name = engine.model(&r.model, None)?.name.clone();
    // 1. Adapters: the skill LoRAs, DATA-MIX, CAT (every seed) and every merge.
    for job in &plan.builds {
        ensure(engine, job.clone(), reuse, on)?;
    }
    // 2. Evaluations: every configuration (every seed) on every column.
    let mut rows = Vec::new();
    // Each column's headline metric, from the task its evaluations run.
    let metrics: Vec<String> = (0..plan.columns.len())
        .map(|c| {
            plan.rows
                .iter()
                .find_map(|r| r.evals.get(c).cloned().flatten())
                .map(|j| j.task.headline().to_string())
                .unwrap_or_default()
        })
        .collect();
    for planned in &plan.rows {
        let mut runs = Vec::new();
        for (c, job) in planned.evals.iter().enumerate() {
            let Some(job) = job else {
                // Not graded on this column (the budget's skill_tests).
                runs.push(Vec::new());
                continue;
            };
            let mut seeds = vec![ensure(engine, JobSpec::Eval(job.clone()), reuse, on)?];
            for copy in &planned.seed_evals {
                if let Some(Some(j)) = copy.get(c) {
                    seeds.push(ensure(engine, JobSpec::Eval(j.clone()), reuse, on)?);
                }
            }
            runs.push(seeds);
        }
        rows.push(RowRuns {
            label: planned.label.clone(),
            runs,
        });
    }
    let skills = r
        .skills
        .iter()
        .filter_map(|s| {
            s.test
                .as_ref()
                .map(|t| (s.name.clone(), skill_column(&s.name, &t.task)))
        })
        .collect();
    let spec = TableSpec {
        recipe: r.name.clone(),
        budget: budget_name.into(),
        model: model_name,
        columns: plan.columns,
        metrics,
        seeds: b.seeds.max(1),
        planned_n: b.eval_limit as u64,
        skill_gate_margin: b.skill_gate_margin,
        skills,
    };
    let mut table = tabulate(engine.store(), &spec, &rows)?;
    for job in &plan.builds {
        if let JobSpec::Cat(j) = job {
            let stored = engine.store().get_adapter(&j.name)?;
            if let Some(movement) = stored.as_ref().and_then(CatMovement::of_adapter) {
                table.cat_movements.push(SeedMovement {
                    adapter: j.name.clone(),
                    movement,
                });
            }
        }
    }
    Ok(table)
}

/// The column heading of a skill's own test.
fn skill_column(skill: &str, task: &str) -> String {
    format!("{skill} skill ({task})")
}

/// What a table is of, apart from its runs.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSpec {
    pub recipe: String,
    pub budget: String,
    pub model: String,
    pub columns: Vec<String>,
    /// The headline metric of each column.
    pub metrics: Vec<String>,
    pub seeds: usize,
    /// Target questions the budget asks for (the power calculation's n when nothing ran yet).
    pub planned_n: u64,
    pub skill_gate_margin: f64,
    /// (skill, its own test's column); its row is "SKILL only".
    pub skills: Vec<(String, String)>,
}

/// A row's evaluation runs: per column, one per seed (the first seed's first), `None` where
/// an evaluation has not run.
#[derive(Debug, Clone, PartialEq)]
pub struct RowRuns {
    pub label: String,
    pub runs: Vec<Vec<Option<RunId>>>,
}

/// One question's scores as its record holds them.
#[derive(Debug, Clone, PartialEq, Default)]
struct QuestionScores {
    scores: BTreeMap<String, f64>,
    ref_logprob: Option<f64>,
}

/// A run's per-question scores by question id, in question order.
fn question_scores(store: &soup_store::Store, run: RunId) -> Result<Vec<(String, QuestionScores)>> {
    Ok(super::run::every_record(store, run)?
        .into_iter()
        .map(|r| {
            let ref_logprob = r
                .detail
                .get(REF_LOGPROB)
                .and_then(serde_json::Value::as_f64);
            let scores = QuestionScores {
                scores: r.scores,
                ref_logprob,
            };
            (r.id, scores)
        })
        .collect())
}

/// Right/wrong scores: every value 0 or 1.
fn binary(values: &[f64]) -> bool {
    values.iter().all(|v| *v == 0.0 || *v == 1.0)
}

/// The comparison table of `rows` as the store holds their runs: per-method cells (Wilson
/// intervals for right/wrong scores, the stored bootstrap interval otherwise; mean ± sd over
/// seeds), CAT's paired tests against every other row, the skill gate and the power note.
pub fn tabulate(
    store: &soup_store::Store,
    spec: &TableSpec,
    rows: &[RowRuns],
) -> Result<Comparison> {
    // Per-question scores of each row's first seed, per column, for the paired tests.
    let mut per_question: Vec<Vec<Questions>> = Vec::new();
    let mut table = Vec::new();
    for row in rows {
        let mut cells = BTreeMap::new();
        let mut questions = Vec::new();
        for (c, seeds) in row.runs.iter().enumerate() {
            let (Some(column), Some(metric)) = (spec.columns.get(c), spec.metrics.get(c)) else {
                questions.push(None);
                continue;
            };
            let Some(Some(first)) = seeds.first().copied() else {
                questions.push(None);
                continue;
            };
            let score_of = |run: RunId| -> Result<Option<soup_store::Score>> {
                Ok(store
                    .scores(run)?
                    .items
                    .into_iter()
                    .find(|s| &s.metric == metric))
            };
            let Some(score) = score_of(first)? else {
                questions.push(None);
                continue;
            };
            let qs = question_scores(store, first)?;
            let values: Vec<f64> = qs
                .iter()
                .filter_map(|(_, q)| q.scores.get(metric).copied())
                .collect();
            let (mut low, mut high, mut interval) = (score.ci_low, score.ci_high, "bootstrap");
            if !values.is_empty() && binary(&values) {
                let right = values.iter().sum::<f64>();
                (low, high) = wilson95(right, values.len() as u64);
                interval = "wilson";
            }
            let logprobs: Vec<f64> = qs.iter().filter_map(|(_, q)| q.ref_logprob).collect();
            let ref_logprob = (!logprobs.is_empty() && logprobs.len() == qs.len())
                .then(|| logprobs.iter().sum::<f64>() / logprobs.len() as f64);
            let mut seed_values = Vec::new();
            if seeds.len() > 1 {
                for run in seeds.iter().flatten() {
                    if let Some(s) = score_of(*run)? {
                        seed_values.push(s.value);
                    }
                }
            }
            cells.insert(
                column.clone(),
                Cell {
                    metric: metric.clone(),
                    value: score.value,
                    ci_low: low,
                    ci_high: high,
                    n: score.n,
                    run: first.to_string(),
                    interval: interval.into(),
                    seed_values,
                    ref_logprob,
                },
            );
            questions.push(Some(qs));
        }
        per_question.push(questions);
        table.push(Row {
            method: row.label.clone(),
            scores: cells,
        });
    }
    let (paired, observed_discordance) = paired_tests(spec, &table, &per_question);
    let skill_gate = spec
        .skills
        .iter()
        .map(|(skill, column)| {
            let value = |label: &str| {
                table
                    .iter()
                    .find(|r| r.method == label)
                    .and_then(|r| r.scores.get(column))
                    .map(|c| c.value)
            };
            let skill_score = value(&format!("{skill} only"));
            let base_score = value("base");
            SkillGate {
                skill: skill.clone(),
                column: column.clone(),
                skill_score,
                base_score,
                margin: spec.skill_gate_margin,
                passed: skill_score
                    .zip(base_score)
                    .map(|(s, b)| s - b >= spec.skill_gate_margin - 1e-12),
            }
        })
        .collect();
    // The target column's question count: what ran, else what the budget asks for.
    let target_n = spec
        .columns
        .first()
        .and_then(|c| {
            table
                .iter()
                .filter_map(|r| r.scores.get(c))
                .map(|c| c.n)
                .max()
        })
        .unwrap_or(spec.planned_n);
    Ok(Comparison {
        recipe: spec.recipe.clone(),
        budget: spec.budget.clone(),
        model: spec.model.clone(),
        columns: spec.columns.clone(),
        rows: table,
        seeds: spec.seeds,
        paired,
        skill_gate,
        power: (target_n > 0).then(|| PowerNote::ten_points(target_n, ASSUMED_DISCORDANCE)),
        observed_discordance,
        cat_movements: Vec::new(),
    })
}

type Questions = Option<Vec<(String, QuestionScores)>>;

/// CAT's paired tests against every other row on every column, Holm-corrected per column and
/// metric; and the mean discordance of the target column's McNemar tests.
fn paired_tests(
    spec: &TableSpec,
    table: &[Row],
    per_question: &[Vec<Questions>],
) -> (Vec<PairedTest>, Option<f64>) {
    let Some(cat) = table.iter().position(|r| r.method == PAIRED_AGAINST) else {
        return (Vec::new(), None);
    };
    let labels: Vec<String> = table.iter().map(|r| r.method.clone()).collect();
    paired_tests_against(spec, &labels, per_question, cat)
}

/// Row `against`'s paired tests against every other row of `rows` on every column of `spec`,
/// as a recipe's table computes CAT's (first seeds, exact McNemar on right/wrong scores, paired
/// bootstrap otherwise, Holm over the rows of each column and metric): for a table of runs
/// that is not a recipe's, such as the dashboard's Results. A row or column without a run, or
/// whose run kept no per-question records, has no test.
pub fn paired_on_runs(
    store: &soup_store::Store,
    spec: &TableSpec,
    rows: &[RowRuns],
    against: usize,
) -> Result<Vec<PairedTest>> {
    let mut per_question: Vec<Vec<Questions>> = Vec::with_capacity(rows.len());
    for row in rows {
        let mut questions = Vec::with_capacity(row.runs.len());
        for seeds in &row.runs {
            questions.push(match seeds.first().copied().flatten() {
                Some(run) => {
                    let qs = question_scores(store, run)?;
                    (!qs.is_empty()).then_some(qs)
                }
                None => None,
            });
        }
        per_question.push(questions);
    }
    let labels: Vec<String> = rows.iter().map(|r| r.label.clone()).collect();
    if against >= labels.len() {
        return Ok(Vec::new());
    }
    Ok(paired_tests_against(spec, &labels, &per_question, against).0)
}

fn paired_tests_against(
    spec: &TableSpec,
    labels: &[String],
    per_question: &[Vec<Questions>],
    cat: usize,
) -> (Vec<PairedTest>, Option<f64>) {
    let mut out = Vec::new();
    let mut discordance = Vec::new();
    for (c, column) in spec.columns.iter().enumerate() {
        let Some(metric) = spec.metrics.get(c) else {
            continue;
        };
        let Some(Some(mine)) = per_question[cat].get(c) else {
            continue;
        };
        let mut family: Vec<PairedTest> = Vec::new();
        let mut ll_family: Vec<PairedTest> = Vec::new();
        for (other, label) in labels.iter().enumerate() {
            if other == cat {
                continue;
            }
            let Some(Some(theirs)) = per_question[other].get(c) else {
                continue;
            };
            let by_id: BTreeMap<&str, &QuestionScores> =
                theirs.iter().map(|(id, q)| (id.as_str(), q)).collect();
            // Pairs in CAT's question order, on the questions both scored.
            let pairs: Vec<(&QuestionScores, &QuestionScores)> = mine
                .iter()
                .filter_map(|(id, q)| by_id.get(id.as_str()).map(|t| (q, *t)))
                .collect();
            let a: Vec<f64> = pairs
                .iter()
                .filter_map(|(m, t)| Some((*m.scores.get(metric)?, *t.scores.get(metric)?)))
                .map(|(m, _)| m)
                .collect();
            let b: Vec<f64> = pairs
                .iter()
                .filter_map(|(m, t)| Some((*m.scores.get(metric)?, *t.scores.get(metric)?)))
                .map(|(_, t)| t)
                .collect();
            if let Some(d) = paired_bootstrap(&a, &b, 2000, 0) {
                let mut test = PairedTest {
                    column: column.clone(),
                    metric: metric.clone(),
                    method: labels[cat].clone(),
                    baseline: label.clone(),
                    n: d.n,
                    diff: d.diff,
                    ci_low: d.low,
                    ci_high: d.high,
                    test: "bootstrap".into(),
                    only_method: None,
                    only_baseline: None,
                    p: d.p,
                    p_holm: f64::NAN,
                    significant: false,
                };
                if binary(&a) && binary(&b) {
                    let only_a = a.iter().zip(&b).filter(|(x, y)| **x > **y).count() as u64;
                    let only_b = a.iter().zip(&b).filter(|(x, y)| **x < **y).count() as u64;
                    test.test = "mcnemar".into();
                    test.only_method = Some(only_a);
                    test.only_baseline = Some(only_b);
                    test.p = mcnemar_exact(only_a, only_b);
                    if c == 0 {
                        discordance.push((only_a + only_b) as f64 / d.n as f64);
                    }
                }
                family.push(test);
            }
            let lls: Vec<(f64, f64)> = pairs
                .iter()
                .filter_map(|(m, t)| Some((m.ref_logprob?, t.ref_logprob?)))
                .collect();
            let (la, lb): (Vec<f64>, Vec<f64>) = lls.into_iter().unzip();
            if la.len() == pairs.len() {
                if let Some(d) = paired_bootstrap(&la, &lb, 2000, 0) {
                    ll_family.push(PairedTest {
                        column: column.clone(),
                        metric: REF_LOGPROB.into(),
                        method: labels[cat].clone(),
                        baseline: label.clone(),
                        n: d.n,
                        diff: d.diff,
                        ci_low: d.low,
                        ci_high: d.high,
                        test: "bootstrap".into(),
                        only_method: None,
                        only_baseline: None,
                        p: d.p,
                        p_holm: f64::NAN,
                        significant: false,
                    });
                }
            }
        }
        for mut fam in [family, ll_family] {
            let adjusted = holm(&fam.iter().map(|t| t.p).collect::<Vec<_>>());
            for (t, p) in fam.iter_mut().zip(adjusted) {
                t.p_holm = p;
                t.significant = p < ALPHA;
            }
            out.extend(fam);
        }
    }
    let observed = soup_evals::stats::mean_sd(&discordance).map(|(m, _)| m);
    (out, observed)
}

impl Comparison {
    fn cell_text(&self, c: Option<&Cell>) -> String {
        let Some(c) = c else {
            return "-".into();
        };
        let mut s = format!(
            "{:.1} [{:.1}, {:.1}]",
            100.0 * c.value,
            100.0 * c.ci_low,
            100.0 * c.ci_high
        );
        if let Some((mean, sd)) = c.seed_spread() {
            s.push_str(&format!(
                "; {:.1} ± {:.1} over {} seeds",
                100.0 * mean,
                100.0 * sd,
                c.seed_values.len()
            ));
        }
        if let Some(ll) = c.ref_logprob {
            s.push_str(&format!("; LL {ll:.2}"));
        }
        s
    }

    fn paired_for(&self, method: &str, column: &str, metric: &str) -> Option<&PairedTest> {
        self.paired
            .iter()
            .find(|t| t.baseline == method && t.column == column && t.metric == metric)
    }

    /// A Markdown report (also readable as plain text): the table, CAT's paired tests, the
    /// skill gate, the seeds and the power calculation.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "{} on {} (budget {}); scores in %, 95% interval in brackets (Wilson for right/wrong scores, bootstrap for partial credit); methods with randomness (CAT, DARE) show the first seed's score, then mean ± sd over seeds; LL: mean log-likelihood of the reference answer (nats, higher is better); -: not graded at this budget (its skill_tests) or not run yet\n\n| method |",
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
        // A CAT whose (first seed's) weights did not move, or did not lower the held-out loss,
        // is its start under another name: its row says so.
        let still = self
            .cat_movements
            .first()
            .map(|m| m.movement.verdict)
            .filter(|v| !v.moved());
        for r in &self.rows {
            match still {
                Some(v) if r.method == PAIRED_AGAINST => {
                    s.push_str(&format!("| {}, {} |", r.method, v.label()))
                }
                _ => s.push_str(&format!("| {} |", r.method)),
            }
            for c in &self.columns {
                s.push_str(&format!(" {} |", self.cell_text(r.scores.get(c))));
            }
            s.push('\n');
        }
        if self.seeds <= 1 {
            s.push_str("\nOne seed per method at this budget: no spread over seeds is shown, and a method with randomness is one draw.\n");
        } else {
            s.push_str(&format!(
                "\nMethods with randomness (CAT, DARE) run with {} seeds at this budget; the paired tests use each one's first seed (the score before the semicolon).\n",
                self.seeds
            ));
        }
        if !self.cat_movements.is_empty() {
            s.push_str(&format!(
                "\n{PAIRED_AGAINST}'s weights, per seed: how far they moved from the start (mean and largest absolute change), and the loss of the start against the learned weights on held-out examples of the skills' data\n\n| {PAIRED_AGAINST} run | verdict | mean abs Δw | max abs Δw | weights | held-out loss, start → learned |\n|---|---|---|---|---|---|\n"
            ));
            for m in &self.cat_movements {
                let v = &m.movement;
                let heldout = v
                    .heldout
                    .as_ref()
                    .map_or("- (all sampled)".to_string(), |h| {
                        format!(
                            "{:.4} → {:.4} ({} examples)",
                            h.start, h.learned, h.examples
                        )
                    });
                s.push_str(&format!(
                    "| {} | {} | {:.4} | {:.4} | {} | {} |\n",
                    m.adapter,
                    v.verdict.label(),
                    v.mean_abs_delta,
                    v.max_abs_delta,
                    v.weights,
                    heldout
                ));
            }
        }
        if !self.paired.is_empty() {
            s.push_str(&format!(
                "\n{PAIRED_AGAINST} against each method on the same questions: difference {PAIRED_AGAINST} − method (points; nats for LL), 95% paired-bootstrap interval, p from the exact McNemar test (right/wrong scores; b/c: questions only {PAIRED_AGAINST} / only the method got right) or a paired bootstrap, Holm-corrected over the methods of each column and metric; * : Holm p < {ALPHA}\n\n| column | metric | vs | n | diff | 95% CI | test | b/c | p | Holm p | |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
            ));
            for t in &self.paired {
                let scale = if t.metric == REF_LOGPROB { 1.0 } else { 100.0 };
                let bc = match (t.only_method, t.only_baseline) {
                    (Some(b), Some(c)) => format!("{b}/{c}"),
                    _ => "-".into(),
                };
                s.push_str(&format!(
                    "| {} | {} | {} | {} | {:+.1} | [{:+.1}, {:+.1}] | {} | {} | {:.3} | {:.3} | {} |\n",
                    t.column,
                    t.metric,
                    t.baseline,
                    t.n,
                    scale * t.diff,
                    scale * t.ci_low,
                    scale * t.ci_high,
                    t.test,
                    bc,
                    t.p,
                    t.p_holm,
                    if t.significant { "*" } else { "" }
                ));
            }
        }
        if !self.skill_gate.is_empty() {
            let margin = self.skill_gate.first().map_or(0.0, |g| g.margin);
            s.push_str(&format!(
                "\nSkill gate: each skill alone on its own test against the base model; a skill must beat the base by {:.0} points to count as learned\n\n| skill | test | skill alone | base | gain | learned |\n|---|---|---|---|---|---|\n",
                100.0 * margin
            ));
            let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}", 100.0 * v));
            for g in &self.skill_gate {
                let gain = g.skill_score.zip(g.base_score).map(|(a, b)| a - b);
                let verdict = match g.passed {
                    Some(true) => "yes",
                    Some(false) => "NO: not above the base by the margin",
                    None => "-",
                };
                s.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} |\n",
                    g.skill,
                    g.column,
                    pct(g.skill_score),
                    pct(g.base_score),
                    gain.map_or("-".to_string(), |g| format!("{:+.1}", 100.0 * g)),
                    verdict
                ));
            }
        }
        if let Some(p) = &self.power {
            s.push('\n');
            s.push_str(&p.sentence());
            if let Some(d) = self.observed_discordance {
                s.push_str(&format!(
                    " (Observed here: {:.0} % of target questions discordant between {PAIRED_AGAINST} and a method, on average.)",
                    100.0 * d
                ));
            }
            s.push('\n');
        }
        s
    }

    /// One line per method and column: the cell, the spread over seeds, and CAT's paired test
    /// against that method on that column (score and log-likelihood).
    pub fn csv(&self) -> String {
        let mut s = String::from(
            "method,column,metric,value,ci_low,ci_high,n,run,interval,seeds,seed_mean,seed_sd,ref_logprob,cat_diff,cat_diff_low,cat_diff_high,cat_test,cat_b,cat_c,cat_p,cat_p_holm,cat_significant,ll_cat_diff,ll_p,ll_p_holm\n",
        );
        let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
        let opt_u = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
        for r in &self.rows {
            for (col, c) in &r.scores {
                let spread = c.seed_spread();
                let t = self.paired_for(&r.method, col, &c.metric);
                let ll = self.paired_for(&r.method, col, REF_LOGPROB);
                s.push_str(&format!(
                    "\"{}\",\"{}\",{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
                    r.method,
                    col,
                    c.metric,
                    c.value,
                    c.ci_low,
                    c.ci_high,
                    c.n,
                    c.run,
                    c.interval,
                    c.seed_values.len().max(1),
                    opt(spread.map(|s| s.0)),
                    opt(spread.map(|s| s.1)),
                    opt(c.ref_logprob),
                    opt(t.map(|t| t.diff)),
                    opt(t.map(|t| t.ci_low)),
                    opt(t.map(|t| t.ci_high)),
                    t.map_or("", |t| t.test.as_str()),
                    opt_u(t.and_then(|t| t.only_method)),
                    opt_u(t.and_then(|t| t.only_baseline)),
                    opt(t.map(|t| t.p)),
                    opt(t.map(|t| t.p_holm)),
                    t.map_or(String::new(), |t| t.significant.to_string()),
                    opt(ll.map(|t| t.diff)),
                    opt(ll.map(|t| t.p)),
                    opt(ll.map(|t| t.p_holm)),
                ));
            }
        }
        s
    }
}

#[cfg(test)]
#[path = "recipe_fuzz.rs"]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    /// A finished evaluation decoded at another batch size is the same evaluation; one that
    /// asked anything else (more questions, another task) is not.
    #[test]
    fn an_evaluation_is_the_same_whatever_its_decoding_batch() {
        let job = |f: fn(&mut EvalJob)| {
            let mut j = EvalJob::new(
                "default",
                EvalTarget::Base,
                task_of("code-math").unwrap(),
                DataSource::Builtin("codemath-test".into()),
            );
            f(&mut j);
            eval_identity(&serde_json::to_value(JobSpec::Eval(j)).unwrap(), &[])
        };
        assert_eq!(job(|j| j.batch_size = 16), job(|j| j.batch_size = 32));
        assert_ne!(job(|j| j.batch_size = 16), job(|j| j.limit = Some(10)));
        assert_ne!(job(|_| {}), job(|j| j.max_new_tokens = 64));
        assert_ne!(job(|j| j.grader = Some(1)), job(|j| j.grader = Some(2)));
    }

    /// The game recipe runs on files soup does not ship: it names the flags that supply them
    /// before anything runs, and plans once they are given.
    #[test]
    fn a_recipe_on_the_users_files_names_what_it_needs() {
        let mut r = Recipe::load("game-qa").unwrap();
        let err = r.plan("tiny").unwrap_err().to_string();
        assert!(
            err.contains("--data target=PATH") && err.contains("--data game=PATH"),
            "{err}"
        );
        assert!(
            !err.contains("qa=PATH"),
            "the built-in skill is not asked for: {err}"
        );
        r.set_data("game", "rules.txt").unwrap();
        r.set_data("target", "questions.json").unwrap();
        let jobs = r.plan("tiny").unwrap().jobs();
        assert!(jobs.iter().any(|j| matches!(j, JobSpec::Train(t)
            if t.data == vec![DataSource::parse("rules.txt")])));
        r.set_data("qa.test", "builtin:qa-test@3").unwrap();
        assert_eq!(r.skills[1].test.as_ref().unwrap().data, "builtin:qa-test@3");
        let err = r.set_data("gmae", "x").unwrap_err().to_string();
        assert!(err.contains("target, game, qa, qa.test"), "{err}");
    }

    /// Every method's evaluation of a set draws the same seeded sample of its questions.
    #[test]
    fn every_evaluation_of_a_set_samples_the_same_questions() {
        let r = Recipe::load("manual-qa").unwrap();
        for budget in r.budgets.keys() {
            let seeds: std::collections::BTreeSet<(String, Option<u64>, Option<usize>)> = r
                .plan(budget)
                .unwrap()
                .jobs()
                .iter()
                .filter_map(|j| match j {
                    JobSpec::Eval(e) => Some((e.data.label(), e.sample_seed, e.limit)),
                    _ => None,
                })
                .collect();
            let sets: std::collections::BTreeSet<&String> = seeds.iter().map(|s| &s.0).collect();
            assert_eq!(seeds.len(), sets.len(), "{budget}: {seeds:?}");
            assert!(
                seeds.iter().all(|s| s.1 == Some(r.seed)),
                "{budget}: {seeds:?}"
            );
        }
    }
}

#[cfg(test)]
#[path = "recipe_table_tests.rs"]
mod table_tests;
