//! The Compose screen: pick adapters, choose a composition method, fill in the evaluation
//! form, and launch the jobs that build and evaluate it.

use std::collections::BTreeSet;
use std::path::Path;

use soup_core::engine::{
    CatJob, DataSource, EvalJob, EvalTarget, EvalTask, JobSpec, MergeJob, TrainJob,
};
use soup_core::runtime::DEFAULT_MODEL;
use soup_store::AdapterRecord;

use super::adapters::toggle_pick;
use super::{move_cursor, text_input};
use crate::dashboard::app::{Action, App, Command, InputTarget};

/// The ways to compose skills that the Compose screen offers (the paper's table rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComposeMethod {
    Cat,
    DataMix,
    Ties,
    Dare,
    Linear,
    Svd,
    LoraHub,
    Single,
    Base,
}

impl ComposeMethod {
    pub const ALL: [ComposeMethod; 9] = [
        ComposeMethod::Cat,
        ComposeMethod::DataMix,
        ComposeMethod::Ties,
        ComposeMethod::Dare,
        ComposeMethod::Linear,
        ComposeMethod::Svd,
        ComposeMethod::LoraHub,
        ComposeMethod::Single,
        ComposeMethod::Base,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ComposeMethod::Cat => "CAT",
            ComposeMethod::DataMix => "DATA-MIX",
            ComposeMethod::Ties => "TIES",
            ComposeMethod::Dare => "DARE",
            ComposeMethod::Linear => "linear",
            ComposeMethod::Svd => "SVD",
            ComposeMethod::LoraHub => "LoraHub",
            ComposeMethod::Single => "single adapter",
            ComposeMethod::Base => "base",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            ComposeMethod::Cat => {
                "learn per-layer weights over the frozen LoRAs (5% of their data)"
            }
            ComposeMethod::DataMix => "train one LoRA on the union of the skills' data",
            ComposeMethod::Ties => "merge: trim, elect sign, disjoint mean (density)",
            ComposeMethod::Dare => "merge: random drop and rescale, then TIES (density)",
            ComposeMethod::Linear => "merge: weighted sum of the A's and B's",
            ComposeMethod::Svd => "merge: weighted sum of deltas, truncated SVD (rank)",
            ComposeMethod::LoraHub => "merge: weights searched gradient-free on a few examples",
            ComposeMethod::Single => "each picked adapter alone",
            ComposeMethod::Base => "the base model, no adapter",
        }
    }

    /// The merge family name `MergeJob` takes, for the fixed-weight merges.
    fn merge_name(self) -> Option<&'static str> {
        match self {
            ComposeMethod::Ties => Some("ties"),
            ComposeMethod::Dare => Some("dare_ties"),
            ComposeMethod::Linear => Some("linear"),
            ComposeMethod::Svd => Some("svd"),
            ComposeMethod::LoraHub => Some("lorahub"),
            _ => None,
        }
    }

    /// Adapters it needs at least.
    fn min_adapters(self) -> usize {
        match self {
            ComposeMethod::Base => 0,
            ComposeMethod::Single => 1,
            _ => 2,
        }
    }
}

/// The fields of the Compose form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormField {
    Task,
    Dataset,
    Limit,
    Weights,
    Density,
    SvdRank,
}

impl FormField {
    pub const ALL: [FormField; 6] = [
        FormField::Task,
        FormField::Dataset,
        FormField::Limit,
        FormField::Weights,
        FormField::Density,
        FormField::SvdRank,
    ];

    pub fn label(self) -> &'static str {
        match self {
            FormField::Task => "task",
            FormField::Dataset => "dataset",
            FormField::Limit => "questions",
            FormField::Weights => "weights",
            FormField::Density => "density",
            FormField::SvdRank => "svd rank",
        }
    }

    pub fn hint(self) -> &'static str {
        match self {
            FormField::Task => "space cycles",
            FormField::Dataset => "builtin:NAME or a file path",
            FormField::Limit => "blank: all",
            FormField::Weights => "comma list; blank: 1 each",
            FormField::Density => "TIES/DARE, in (0, 1]",
            FormField::SvdRank => "blank: largest input rank",
        }
    }
}

pub const TASKS: [EvalTask; 5] = [
    EvalTask::CodeMath,
    EvalTask::ManualQa,
    EvalTask::MathCot,
    EvalTask::Code,
    EvalTask::Qa,
];

/// The built-in test set of each task.
pub fn default_dataset(task: EvalTask) -> &'static str {
    match task {
        EvalTask::CodeMath => "builtin:codemath-test",
        EvalTask::ManualQa => "builtin:manualqa-test",
        EvalTask::MathCot => "builtin:math-test",
        EvalTask::Code => "builtin:code-test",
        EvalTask::Qa => "builtin:qa-test",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComposePane {
    Adapters,
    Methods,
    Form,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ComposeState {
    pub pane: ComposePane,
    pub adapter_cursor: usize,
    pub picked: BTreeSet<String>,
    pub method: usize,
    pub field: usize,
    pub task: EvalTask,
    pub dataset: String,
    pub limit: String,
    pub weights: String,
    pub density: String,
    pub svd_rank: String,
    /// The value a field had before editing began (Esc restores it).
    pub editing_backup: Option<String>,
    pub error: Option<String>,
}

impl ComposeState {
    pub fn new() -> Self {
        ComposeState {
            pane: ComposePane::Adapters,
            adapter_cursor: 0,
            picked: BTreeSet::new(),
            method: 0,
            field: 0,
            task: EvalTask::CodeMath,
            dataset: default_dataset(EvalTask::CodeMath).to_string(),
            limit: String::new(),
            weights: String::new(),
            density: "0.5".into(),
            svd_rank: String::new(),
            editing_backup: None,
            error: None,
        }
    }

    pub fn method(&self) -> ComposeMethod {
        ComposeMethod::ALL[self.method.min(ComposeMethod::ALL.len() - 1)]
    }

    pub fn field_value(&self, field: FormField) -> String {
        match field {
            FormField::Task => self.task.name().to_string(),
            FormField::Dataset => self.dataset.clone(),
            FormField::Limit => self.limit.clone(),
            FormField::Weights => self.weights.clone(),
            FormField::Density => self.density.clone(),
            FormField::SvdRank => self.svd_rank.clone(),
        }
    }

    fn field_mut(&mut self, field: FormField) -> Option<&mut String> {
        match field {
            FormField::Task => None,
            FormField::Dataset => Some(&mut self.dataset),
            FormField::Limit => Some(&mut self.limit),
            FormField::Weights => Some(&mut self.weights),
            FormField::Density => Some(&mut self.density),
            FormField::SvdRank => Some(&mut self.svd_rank),
        }
    }

    fn cycle_task(&mut self) {
        let at = TASKS.iter().position(|t| *t == self.task).unwrap_or(0);
        let next = TASKS[(at + 1) % TASKS.len()];
        // Follow the task with its test set unless the user typed another dataset.
        if self.dataset == default_dataset(self.task) || self.dataset.is_empty() {
            self.dataset = default_dataset(next).to_string();
        }
        self.task = next;
    }
}

/// The Compose screen's keys: pick adapters, choose a method, edit the form, launch.
pub fn update(app: &mut App, action: Action) -> Option<Command> {
    if let Some(InputTarget::FormField(field)) = app.input {
        let compose = &mut app.compose;
        match action {
            Action::InputSubmit => {
                app.input = None;
                compose.editing_backup = None;
            }
            Action::InputCancel => {
                let backup = compose.editing_backup.take();
                if let (Some(old), Some(value)) = (backup, compose.field_mut(field)) {
                    *value = old;
                }
                app.input = None;
            }
            other => match compose.field_mut(field) {
                Some(value) => {
                    text_input(value, &other);
                }
                None => app.input = None,
            },
        }
        return None;
    }
    let adapters_len = app.adapters.items.len();
    let compose = &mut app.compose;
    match compose.pane {
        ComposePane::Adapters
            if move_cursor(&mut compose.adapter_cursor, adapters_len, &action) =>
        {
            return None
        }
        ComposePane::Methods
            if move_cursor(&mut compose.method, ComposeMethod::ALL.len(), &action) =>
        {
            compose.error = None;
            return None;
        }
        ComposePane::Form if move_cursor(&mut compose.field, FormField::ALL.len(), &action) => {
            return None
        }
        _ => {}
    }
    match action {
        Action::Left => {
            compose.pane = match compose.pane {
                ComposePane::Adapters | ComposePane::Methods => ComposePane::Adapters,
                ComposePane::Form => ComposePane::Methods,
            }
        }
        Action::Right => {
            compose.pane = match compose.pane {
                ComposePane::Adapters => ComposePane::Methods,
                ComposePane::Methods | ComposePane::Form => ComposePane::Form,
            }
        }
        Action::Toggle | Action::Edit => match compose.pane {
            ComposePane::Adapters => {
                if let Some(name) = app
                    .adapters
                    .items
                    .get(compose.adapter_cursor)
                    .map(|a| a.name.clone())
                {
                    toggle_pick(app, name);
                }
            }
            ComposePane::Methods => {}
            ComposePane::Form => {
                let field = FormField::ALL[compose.field.min(FormField::ALL.len() - 1)];
                if field == FormField::Task {
                    compose.cycle_task();
                } else {
                    compose.editing_backup = Some(compose.field_value(field));
                    app.input = Some(InputTarget::FormField(field));
                }
                app.compose.error = None;
            }
        },
        Action::Confirm => {
            let method = compose.method();
            return launch(app, &[method]);
        }
        Action::LaunchComparison => return launch(app, &ComposeMethod::ALL),
        Action::Back => compose.error = None,
        _ => {}
    }
    None
}

/// Validates the form and turns it into jobs, or puts the reason in the form's error line.
fn launch(app: &mut App, methods: &[ComposeMethod]) -> Option<Command> {
    match plan_jobs(app, methods) {
        Ok(specs) => {
            app.compose.error = None;
            Some(Command::Submit(specs))
        }
        Err(why) => {
            app.compose.error = Some(why);
            None
        }
    }
}

/// The jobs that evaluate `methods` on the form's task with the picked adapters. Merges, CAT
/// and DATA-MIX first build their adapter, then an evaluation uses it (the engine runs its
/// queue in order, one job at a time).
pub fn plan_jobs(app: &App, methods: &[ComposeMethod]) -> Result<Vec<JobSpec>, String> {
    let compose = &app.compose;
    let picked: Vec<&AdapterRecord> = app
        .adapters
        .items
        .iter()
        .filter(|a| compose.picked.contains(&a.name))
        .collect();
    let names: Vec<String> = picked.iter().map(|a| a.name.clone()).collect();
    let needed = methods.iter().map(|m| m.min_adapters()).max().unwrap_or(0);
    if picked.len() < needed {
        let what = if methods.len() > 1 {
            "the comparison".to_string()
        } else {
            methods
                .first()
                .map(|m| m.label().to_string())
                .unwrap_or_default()
        };
        return Err(format!(
            "{what} needs at least {needed} adapter(s): pick them with space in the list"
        ));
    }
    let model = {
        let bases: BTreeSet<&str> = picked.iter().map(|a| a.base_model.as_str()).collect();
        match bases.len() {
            0 => DEFAULT_MODEL.to_string(),
            1 => bases
                .into_iter()
                .next()
                .unwrap_or(DEFAULT_MODEL)
                .to_string(),
            _ => {
                return Err(format!(
                "the picked adapters have different base models ({}): pick adapters of one model",
                bases.into_iter().collect::<Vec<_>>().join(", ")
            ))
            }
        }
    };
    if model == DEFAULT_MODEL && !app.model.fetched {
        return Err(format!(
            "the default model {DEFAULT_MODEL} is not fetched yet: press F to fetch it"
        ));
    }
    let dataset_text = compose.dataset.trim();
    if dataset_text.is_empty() {
        return Err("the dataset is empty: type builtin:NAME or a file path".into());
    }
    let data = DataSource::parse(dataset_text);
    if let DataSource::File(path) = &data {
        check_file(path)?;
    }
    let limit = parse_optional::<usize>(&compose.limit, "questions")?;
    let weights = match compose.weights.trim() {
        "" => vec![1.0; names.len()],
        text => {
            let weights = text
                .split(',')
                .map(|w| w.trim().parse::<f64>())
                .collect::<Result<Vec<f64>, _>>()
                .map_err(|_| format!("weights {text:?}: expected numbers separated by commas"))?;
            if weights.len() != names.len() {
                return Err(format!(
                    "{} weight(s) for {} picked adapter(s)",
                    weights.len(),
                    names.len()
                ));
            }
            weights
        }
    };
    let density = parse_optional::<f64>(&compose.density, "density")?;
    if let Some(d) = density {
        if !(d > 0.0 && d <= 1.0) {
            return Err(format!("density {d} is outside (0, 1]"));
        }
    }
    let svd_rank = parse_optional::<usize>(&compose.svd_rank, "svd rank")?;

    let eval = |target: EvalTarget| {
        let mut job = EvalJob::new(&model, target, compose.task, data.clone());
        job.limit = limit;
        JobSpec::Eval(job)
    };
    let joined = names.join("+");
    let skill_data = || -> Result<Vec<DataSource>, String> {
        picked
            .iter()
            .map(|a| {
                a.dataset.as_deref().map(DataSource::parse).ok_or_else(|| {
                    format!(
                        "adapter {} has no recorded training data: CAT, DATA-MIX and LoraHub need it",
                        a.name
                    )
                })
            })
            .collect()
    };
    let mut specs = Vec::new();
    for method in methods {
        match method {
            ComposeMethod::Base => specs.push(eval(EvalTarget::Base)),
            ComposeMethod::Single => {
                for name in &names {
                    specs.push(eval(EvalTarget::Adapter(name.clone())));
                }
            }
            ComposeMethod::Cat => {
                let name = format!("cat-{joined}");
                specs.push(JobSpec::Cat(CatJob::new(
                    &name,
                    &model,
                    names.clone(),
                    skill_data()?,
                )));
                specs.push(eval(EvalTarget::Adapter(name)));
            }
            ComposeMethod::DataMix => {
                let name = format!("datamix-{joined}");
                let mut job = TrainJob::new(&name, &model, skill_data()?);
                job.skill = Some(joined.clone());
                specs.push(JobSpec::Train(job));
                specs.push(eval(EvalTarget::Adapter(name)));
            }
            merge => {
                let Some(family) = merge.merge_name() else {
                    continue;
                };
                let name = format!("{family}-{joined}");
                let is_lorahub = *merge == ComposeMethod::LoraHub;
                specs.push(JobSpec::Merge(MergeJob {
                    name: name.clone(),
                    method: family
                        .parse()
                        .map_err(|e: soup_core::error::CoreError| e.to_string())?,
                    adapters: names.clone(),
                    weights: weights.clone(),
                    density: if matches!(merge, ComposeMethod::Ties | ComposeMethod::Dare) {
                        density.or(Some(0.5))
                    } else {
                        None
                    },
                    svd_rank: if *merge == ComposeMethod::Svd {
                        svd_rank
                    } else {
                        None
                    },
                    majority_sign_method: None,
                    seed: 0,
                    out: None,
                    // LoraHub searches its weights on a few examples of the skills' own
                    // training data: the evaluation set is a test set and never trained on.
                    model: is_lorahub.then(|| model.clone()),
                    data: if is_lorahub {
                        skill_data()?
                    } else {
                        Vec::new()
                    },
                    budget: None,
                }));
                specs.push(eval(EvalTarget::Adapter(name)));
            }
        }
    }
    Ok(specs)
}

fn check_file(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(format!("dataset {} is not a file", path.display())),
        Err(_) => Err(format!(
            "dataset file {} does not exist (or builtin:NAME for a built-in set)",
            path.display()
        )),
    }
}

fn parse_optional<T: std::str::FromStr>(text: &str, what: &str) -> Result<Option<T>, String> {
    match text.trim() {
        "" => Ok(None),
        t => t
            .parse::<T>()
            .map(Some)
            .map_err(|_| format!("{what} {t:?} is not a valid number")),
    }
}
