//! The comparison planner: the jobs that compare skill adapters under a list of composition
//! methods on one or more evaluation sets. `soup recipe` and the dashboard's Compose screen
//! (one method, or "launch everything") both ask it, so a composition is built and evaluated
//! the same way wherever it is started. They differ only in what they pass: a recipe trains its
//! skill adapters and names every artifact after itself and its budget (so that a re-run finds
//! them); the dashboard composes adapters already in the store and names the results after
//! them.
//!
//! The plan is data, not work: [`plan`] reads nothing and runs nothing, so it is tested
//! without a model and a recipe can show what it would run.

use super::spec::{CatJob, DataSource, EvalJob, EvalTarget, JobSpec, MergeJob, TrainJob};
use crate::merge::MergeKind;
#[cfg(doc)]
use crate::train::CatParam;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// One way to get a model that holds the skills: a row (or, for `Skills`, one row per skill)
/// of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareMethod {
    /// The base model, no adapter.
    Base,
    /// Each skill adapter alone.
    Skills,
    /// One LoRA trained on the union of the skills' data.
    DataMix,
    /// CAT: per-layer weights learned over the frozen skill adapters.
    Cat,
    /// CAT's control: the same concatenation at the weights CAT starts from, not learned
    /// (a fixed-weight `cat` merge, every weight [`CatParam::start_weight`]; no training).
    /// CAT beating it is the evidence that learning the weights helped.
    CatUniform,
    /// A merge of the skill adapters: a fixed-weight family or LoraHub. (`Merge(MergeKind::Cat)`,
    /// PEFT's stacking, is refused by the planner: `cat` here means the learned CAT.)
    Merge(MergeKind),
    /// `KIND@cat-scale`: the merge with every adapter at CAT's starting weight instead of the
    /// recipe's merge weights. Under the softmax CAT's weights sum to 1 in every slot (1/k
    /// each at the start), while merges conventionally use 1 per adapter: a merge at [1, 1]
    /// applies each skill at full strength and CAT at about half, so the two are compared at
    /// different scales. At CAT's scale the merge's weights are [1/k, ...] (free CAT: [1, ...]).
    MergeAtCatScale(MergeKind),
}

/// The merges in the order plans build them (the order recipes always used, then the rest).
const MERGE_ORDER: [MergeKind; 12] = [
    MergeKind::Ties,
    MergeKind::DareTies,
    MergeKind::DareLinear,
    MergeKind::Linear,
    MergeKind::Svd,
    MergeKind::LoraHub,
    MergeKind::MagnitudePrune,
    MergeKind::TiesSvd,
    MergeKind::DareTiesSvd,
    MergeKind::DareLinearSvd,
    MergeKind::MagnitudePruneSvd,
    MergeKind::Cat,
];

impl CompareMethod {
    /// The name recipes list it by: `base`, `skills`, `data-mix`, `cat`, `cat-uniform`, the
    /// merge's name, or `MERGE@cat-scale`.
    pub fn name(self) -> String {
        match self {
            CompareMethod::Base => "base".into(),
            CompareMethod::Skills => "skills".into(),
            CompareMethod::DataMix => "data-mix".into(),
            CompareMethod::Cat => "cat".into(),
            CompareMethod::CatUniform => "cat-uniform".into(),
            CompareMethod::Merge(kind) => kind.name().into(),
            CompareMethod::MergeAtCatScale(kind) => format!("{}{CAT_SCALE}", kind.name()),
        }
    }

    /// Where it comes in a plan: base, skills, DATA-MIX, CAT, its uniform control, then the
    /// merges, each followed by its matched-scale variant.
    fn position(self) -> usize {
        let merge = |kind| {
            5 + 2 * MERGE_ORDER
                .iter()
                .position(|k| *k == kind)
                .unwrap_or(MERGE_ORDER.len())
        };
        match self {
            CompareMethod::Base => 0,
            CompareMethod::Skills => 1,
            CompareMethod::DataMix => 2,
            CompareMethod::Cat => 3,
            CompareMethod::CatUniform => 4,
            CompareMethod::Merge(kind) => merge(kind),
            CompareMethod::MergeAtCatScale(kind) => merge(kind) + 1,
        }
    }

    /// How many skill adapters it needs at least.
    pub fn min_adapters(self) -> usize {
        match self {
            CompareMethod::Base => 0,
            CompareMethod::Skills => 1,
            _ => 2,
        }
    }

    /// The row label of a composition in a comparison table (`DATA-MIX`, `DARE-TIES`, ...).
    fn row_label(self) -> String {
        match self {
            CompareMethod::Base => "base".into(),
            CompareMethod::Skills => "skills".into(),
            CompareMethod::DataMix => "DATA-MIX".into(),
            CompareMethod::Cat => "CAT".into(),
            CompareMethod::CatUniform => "CAT-UNIFORM".into(),
            CompareMethod::Merge(kind) => kind.name().to_uppercase().replace('_', "-"),
            CompareMethod::MergeAtCatScale(kind) => {
                format!("{} @CAT-SCALE", CompareMethod::Merge(kind).row_label())
            }
        }
    }
}

/// The suffix of a merge at CAT's scale: `ties@cat-scale`.
const CAT_SCALE: &str = "@cat-scale";

impl fmt::Display for CompareMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for CompareMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "base" => Ok(CompareMethod::Base),
            "skills" => Ok(CompareMethod::Skills),
            "data-mix" => Ok(CompareMethod::DataMix),
            "cat" => Ok(CompareMethod::Cat),
            "cat-uniform" => Ok(CompareMethod::CatUniform),
            other if other.ends_with(CAT_SCALE) => {
                let kind = other.trim_end_matches(CAT_SCALE);
                match kind.parse::<MergeKind>() {
                    Ok(MergeKind::LoraHub) => Err(format!(
                        "{other:?}: LoraHub searches its own weights, so it has no fixed scale to match"
                    )),
                    Ok(MergeKind::Cat) => Err(format!(
                        "{other:?}: a cat merge at CAT's scale is `cat-uniform`"
                    )),
                    Ok(kind) => Ok(CompareMethod::MergeAtCatScale(kind)),
                    Err(_) => Err(format!(
                        "unknown merge {kind:?} in {other:?}: expected MERGE@cat-scale, e.g. ties@cat-scale"
                    )),
                }
            }
            other => other.parse::<MergeKind>().map(CompareMethod::Merge).map_err(|_| {
                let merges: Vec<&str> = MERGE_ORDER
                    .iter()
                    .filter(|k| **k != MergeKind::Cat)
                    .map(|k| k.name())
                    .collect();
                format!(
                    "unknown comparison method {other:?}: expected base, skills, data-mix, cat, cat-uniform, a merge ({}) or MERGE@cat-scale",
                    merges.join(", ")
                )
            }),
        }
    }
}

impl Serialize for CompareMethod {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for CompareMethod {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A skill adapter to compose.
#[derive(Debug, Clone, PartialEq)]
pub struct SkillAdapter {
    /// The skill's name: its row is "`skill` only".
    pub skill: String,
    /// The adapter's name in the store.
    pub adapter: String,
    /// What it was (or will be) trained on: CAT, DATA-MIX and LoraHub train or search on it.
    pub data: Option<DataSource>,
    /// Train it first, for this many epochs (a recipe); `None`: it is in the store already.
    pub train_epochs: Option<usize>,
}

/// DATA-MIX sees each skill's data as many times as that skill's own LoRA does: when the
/// skills train for different epochs (a knowledge corpus needs many passes), the mix runs one
/// epoch in which each dataset is repeated its skill's epochs. Skills trained for the mix's
/// own epochs (or not trained here) leave the job as it is.
fn mix_passes(job: &mut TrainJob, skills: &[SkillAdapter]) {
    let epochs = job.train.epochs;
    let per_skill: Vec<usize> = skills
        .iter()
        .map(|s| s.train_epochs.unwrap_or(epochs))
        .collect();
    if per_skill.iter().all(|&e| e == epochs) {
        return;
    }
    job.passes = Some(per_skill);
    job.train.epochs = 1;
}

/// How the adapters a plan builds are named.
#[derive(Debug, Clone, PartialEq)]
pub enum Naming {
    /// `PREFIX-cat`, `PREFIX-data-mix`, `PREFIX-ties`, ...: a recipe's, one prefix per recipe
    /// and budget, so that a re-run finds what an earlier one built.
    Prefix(String),
    /// `cat-A+B`, `datamix-A+B`, `ties-A+B`, ...: named after the adapters composed (the
    /// dashboard).
    Adapters,
}

/// The settings of the merge jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeSettings {
    /// One per skill adapter (LoraHub searches its own).
    pub weights: Vec<f64>,
    /// Fraction of entries TIES, DARE and magnitude pruning keep.
    pub density: f64,
    /// Rank of the SVD merges; `None`: the largest input rank.
    pub svd_rank: Option<usize>,
    pub seed: u64,
    /// How many weight vectors LoraHub tries; `None`: its default.
    pub lorahub_budget: Option<usize>,
    /// Put the density and the model on every merge job, whether its family uses them or not.
    /// Recipes have always written their merge jobs so, and a recipe reuses a stored adapter
    /// only when the job that made it is unchanged, so they keep doing it; the dashboard
    /// writes only what each family uses.
    pub record_all: bool,
}

/// An evaluation set: a column of the comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalColumn {
    /// The column's heading.
    pub column: String,
    /// The evaluation every configuration gets on this set; the planner sets its model and
    /// target.
    pub job: EvalJob,
    /// The methods whose configurations are evaluated on this set, their first seed only
    /// (a skill's own test, which a budget may keep to the rows that show whether the skills
    /// were learned and kept); `None`: every configuration, every seed.
    pub only: Option<Vec<CompareMethod>>,
}

/// Everything the planner needs.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanRequest {
    pub model: String,
    pub skills: Vec<SkillAdapter>,
    /// In any order, duplicates allowed: the plan puts them in its own order, once each.
    pub methods: Vec<CompareMethod>,
    pub columns: Vec<EvalColumn>,
    pub naming: Naming,
    /// The training job skill LoRAs and DATA-MIX are made from; the planner sets its name,
    /// model, data and skill (and a skill's epochs).
    pub train: TrainJob,
    /// The CAT job; the planner sets its name, model, adapters and data. Its parametrization
    /// also sets the weights of `cat-uniform` and of the `@cat-scale` merges.
    pub cat: CatJob,
    pub merge: MergeSettings,
}

/// One row of the comparison: a configuration and its evaluations, one per column.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRow {
    pub label: String,
    /// One per column: the configuration as built with the request's seed (seed 0 of the row);
    /// `None` where the column is not for this row (its `only`).
    pub evals: Vec<Option<EvalJob>>,
    /// Rows of a method with randomness, after [`with_seeds`]: the evaluations of the same
    /// configuration built with seeds 1, 2, ... (one per column each, `None` where the column
    /// takes the first seed only); empty otherwise.
    pub seed_evals: Vec<Vec<Option<EvalJob>>>,
}

/// What to run, in order: the jobs that build adapters, then the evaluations row by row.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub builds: Vec<JobSpec>,
    pub columns: Vec<String>,
    /// Per column, whether it takes every seed of a row (see [`EvalColumn::only`]).
    pub every_seed: Vec<bool>,
    pub rows: Vec<PlannedRow>,
}

impl Plan {
    /// Every job in the order it must run (an adapter is built before it is evaluated).
    pub fn jobs(&self) -> Vec<JobSpec> {
        let evals = self.rows.iter().flat_map(|r| {
            r.evals
                .iter()
                .chain(r.seed_evals.iter().flatten())
                .flatten()
                .cloned()
                .map(JobSpec::Eval)
        });
        self.builds.iter().cloned().chain(evals).collect()
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("adapter {adapter} has no recorded training data: CAT, DATA-MIX and LoraHub need it")]
    NoTrainingData { adapter: String },
    #[error("skill {skill} has no data to train adapter {adapter} on")]
    NothingToTrainOn { skill: String, adapter: String },
    #[error("{method} needs at least {needed} skill adapter(s), got {have}")]
    TooFewAdapters {
        method: CompareMethod,
        needed: usize,
        have: usize,
    },
    #[error("a fixed-weight cat merge is not among the compositions compared: `cat` is CAT, whose weights are learned, and `cat-uniform` the concatenation at CAT's starting weights")]
    CatMerge,
}

/// The jobs that build every composition in `req.methods` and evaluate each configuration on
/// every column. Skill adapters to train come first, since every composition is made of them.
pub fn plan(req: &PlanRequest) -> Result<Plan, PlanError> {
    let mut methods = req.methods.clone();
    methods.sort_by_key(|m| m.position());
    methods.dedup();
    let have = req.skills.len();
    for &method in &methods {
        if matches!(
            method,
            CompareMethod::Merge(MergeKind::Cat)
                | CompareMethod::MergeAtCatScale(MergeKind::Cat | MergeKind::LoraHub)
        ) {
            return Err(PlanError::CatMerge);
        }
        let needed = method.min_adapters();
        if have < needed {
            return Err(PlanError::TooFewAdapters {
                method,
                needed,
                have,
            });
        }
    }
    let adapters: Vec<String> = req.skills.iter().map(|s| s.adapter.clone()).collect();
    // CAT's starting weight for every adapter: what `cat-uniform` and `@cat-scale` use.
    let cat_scale = vec![req.cat.param.start_weight(adapters.len()); adapters.len()];
    let joined = adapters.join("+");
    let name = |what: &str| match &req.naming {
        Naming::Prefix(prefix) => format!("{prefix}-{what}"),
        Naming::Adapters => format!("{what}-{joined}"),
    };
    let skill_data = || -> Result<Vec<DataSource>, PlanError> {
        req.skills
            .iter()
            .map(|s| {
                s.data.clone().ok_or_else(|| PlanError::NoTrainingData {
                    adapter: s.adapter.clone(),
                })
            })
            .collect()
    };
    let train_job = |name: &str, data: Vec<DataSource>| {
        let mut job = req.train.clone();
        job.name = name.into();
        job.model = req.model.clone();
        job.data = data;
        job
    };

    let mut builds = Vec::new();
    for s in &req.skills {
        let Some(epochs) = s.train_epochs else {
            continue;
        };
        let data = s.data.clone().ok_or_else(|| PlanError::NothingToTrainOn {
            skill: s.skill.clone(),
            adapter: s.adapter.clone(),
        })?;
        let mut job = train_job(&s.adapter, vec![data]);
        job.train.epochs = epochs;
        job.skill = Some(s.skill.clone());
        builds.push(JobSpec::Train(job));
    }
    // Configurations: row label → what the evaluations run with, and the method it is of.
    let mut configs: Vec<(String, EvalTarget, CompareMethod)> = Vec::new();
    for &method in &methods {
        match method {
            CompareMethod::Base => configs.push((method.row_label(), EvalTarget::Base, method)),
            CompareMethod::Skills => {
                for s in &req.skills {
                    let label = format!("{} only", s.skill);
                    configs.push((label, EvalTarget::Adapter(s.adapter.clone()), method));
                }
            }
            CompareMethod::DataMix => {
                let adapter = match &req.naming {
                    Naming::Prefix(_) => name("data-mix"),
                    Naming::Adapters => name("datamix"),
                };
                let mut job = train_job(&adapter, skill_data()?);
                mix_passes(&mut job, &req.skills);
                job.skill = Some(match &req.naming {
                    Naming::Prefix(_) => "data-mix".to_string(),
                    Naming::Adapters => joined.clone(),
                });
                builds.push(JobSpec::Train(job));
                configs.push((method.row_label(), EvalTarget::Adapter(adapter), method));
            }
            CompareMethod::Cat => {
                let adapter = name("cat");
                let mut job = req.cat.clone();
                job.name = adapter.clone();
                job.model = req.model.clone();
                job.adapters = adapters.clone();
                job.data = skill_data()?;
                builds.push(JobSpec::Cat(job));
                configs.push((method.row_label(), EvalTarget::Adapter(adapter), method));
            }
            CompareMethod::CatUniform => {
                let adapter = name("cat-uniform");
                let mut job = merge_job(req, MergeKind::Cat, &adapter, &adapters, &skill_data)?;
                job.weights = cat_scale.clone();
                builds.push(JobSpec::Merge(job));
                configs.push((method.row_label(), EvalTarget::Adapter(adapter), method));
            }
            CompareMethod::Merge(kind) => {
                let adapter = name(kind.name());
                builds.push(JobSpec::Merge(merge_job(
                    req,
                    kind,
                    &adapter,
                    &adapters,
                    &skill_data,
                )?));
                configs.push((method.row_label(), EvalTarget::Adapter(adapter), method));
            }
            CompareMethod::MergeAtCatScale(kind) => {
                let adapter = name(&format!("{}-cat-scale", kind.name()));
                let mut job = merge_job(req, kind, &adapter, &adapters, &skill_data)?;
                job.weights = cat_scale.clone();
                builds.push(JobSpec::Merge(job));
                configs.push((method.row_label(), EvalTarget::Adapter(adapter), method));
            }
        }
    }
    let rows = configs
        .into_iter()
        .map(|(label, target, method)| PlannedRow {
            label,
            seed_evals: Vec::new(),
            evals: req
                .columns
                .iter()
                .map(|c| {
                    let mut job = c.job.clone();
                    job.model = req.model.clone();
                    job.target = target.clone();
                    let wanted = c.only.as_ref().is_none_or(|m| m.contains(&method));
                    wanted.then_some(job)
                })
                .collect(),
        })
        .collect();
    Ok(Plan {
        builds,
        columns: req.columns.iter().map(|c| c.column.clone()).collect(),
        every_seed: req.columns.iter().map(|c| c.only.is_none()).collect(),
        rows,
    })
}

/// Whether a build depends on its seed, so that one run of it is one draw: CAT (its
/// initialization and the examples it learns on) and the DARE merges (their random drops).
fn seeded_build(job: &JobSpec) -> bool {
    match job {
        JobSpec::Cat(_) => true,
        JobSpec::Merge(m) => matches!(
            m.method,
            MergeKind::DareTies
                | MergeKind::DareLinear
                | MergeKind::DareTiesSvd
                | MergeKind::DareLinearSvd
        ),
        JobSpec::Train(_) | JobSpec::Eval(_) => false,
    }
}

/// The name of seed `k`'s copy of an adapter: seed 0 keeps the plain name (so a store built
/// before seeds existed is reused), seed k > 0 is `NAME-seedK`.
pub fn seed_name(name: &str, k: usize) -> String {
    if k == 0 {
        name.to_string()
    } else {
        format!("{name}-seed{k}")
    }
}

/// The plan with every build that depends on its seed (CAT, the DARE merges) repeated for
/// `seeds` seeds in all: copy k is named [`seed_name`]`(name, k)`, runs with the original seed
/// plus k (wrapping), comes right after the original, and its evaluations go in the row's `seed_evals`.
/// `seeds` of 0 or 1 leaves the plan as it is.
pub fn with_seeds(mut plan: Plan, seeds: usize) -> Plan {
    if seeds <= 1 {
        return plan;
    }
    let mut builds = Vec::with_capacity(plan.builds.len());
    let mut seeded: Vec<String> = Vec::new();
    for job in plan.builds {
        let random = seeded_build(&job);
        builds.push(job.clone());
        if !random {
            continue;
        }
        for k in 1..seeds {
            let mut copy = job.clone();
            match &mut copy {
                JobSpec::Cat(c) => {
                    seeded.push(c.name.clone());
                    c.name = seed_name(&c.name, k);
                    c.train.seed = c.train.seed.wrapping_add(k as u64);
                }
                JobSpec::Merge(m) => {
                    seeded.push(m.name.clone());
                    m.name = seed_name(&m.name, k);
                    m.seed = m.seed.wrapping_add(k as u64);
                }
                JobSpec::Train(_) | JobSpec::Eval(_) => {}
            }
            builds.push(copy);
        }
    }
    plan.builds = builds;
    for row in &mut plan.rows {
        let Some(name) = row
            .evals
            .iter()
            .flatten()
            .next()
            .and_then(|e| match &e.target {
                EvalTarget::Adapter(a) if seeded.contains(a) => Some(a.clone()),
                _ => None,
            })
        else {
            continue;
        };
        row.seed_evals = (1..seeds)
            .map(|k| {
                row.evals
                    .iter()
                    .zip(&plan.every_seed)
                    .map(|(e, &every)| {
                        let mut e = e.clone().filter(|_| every)?;
                        e.target = EvalTarget::Adapter(seed_name(&name, k));
                        Some(e)
                    })
                    .collect()
            })
            .collect();
    }
    plan
}

fn merge_job(
    req: &PlanRequest,
    kind: MergeKind,
    name: &str,
    adapters: &[String],
    skill_data: &dyn Fn() -> Result<Vec<DataSource>, PlanError>,
) -> Result<MergeJob, PlanError> {
    let settings = &req.merge;
    let lorahub = kind == MergeKind::LoraHub;
    Ok(MergeJob {
        out_force: false,
        name: name.into(),
        method: kind,
        adapters: adapters.to_vec(),
        weights: settings.weights.clone(),
        density: (settings.record_all || kind.uses_density()).then_some(settings.density),
        svd_rank: settings.svd_rank.filter(|_| kind.uses_svd_rank()),
        majority_sign_method: None,
        seed: settings.seed,
        out: None,
        model: (settings.record_all || lorahub).then(|| req.model.clone()),
        // LoraHub searches its weights on a few examples of the skills' own training data:
        // the evaluation sets are test sets and never trained on.
        data: if lorahub { skill_data()? } else { Vec::new() },
        budget: settings.lorahub_budget.filter(|_| lorahub),
        dtype: None,
        inputs: None,
    })
}

#[cfg(test)]
mod tests;
