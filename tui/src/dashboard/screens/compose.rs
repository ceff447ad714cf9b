//! The Compose screen: pick adapters, choose a composition method, fill in the evaluation
//! form, and launch the jobs that build and evaluate it.

use std::collections::BTreeSet;
use std::path::Path;

use soup_core::engine::plan::{
    plan, CompareMethod, EvalColumn, MergeSettings, Naming, PlanRequest, SkillAdapter,
};
use soup_core::engine::{
    tasks, CatJob, DataSource, EvalJob, EvalTarget, EvalTask, JobSpec, TrainJob,
};
use soup_core::merge::MergeKind;
use soup_core::runtime::DEFAULT_MODEL;
use soup_store::AdapterRecord;

use super::adapters::toggle_pick;
use super::{move_cursor, text_input};
use crate::dashboard::app::{Action, App, Command, InputTarget};

/// The compositions the Compose screen offers, in the order its list shows them: the paper's
/// table rows, the compositions first. They are the planner's [`CompareMethod`]s, so what the
/// screen launches is what `soup recipe` would plan for the same method.
pub const METHODS: [CompareMethod; 9] = [
    CompareMethod::Cat,
    CompareMethod::DataMix,
    CompareMethod::Merge(MergeKind::Ties),
    CompareMethod::Merge(MergeKind::DareTies),
    CompareMethod::Merge(MergeKind::Linear),
    CompareMethod::Merge(MergeKind::Svd),
    CompareMethod::Merge(MergeKind::LoraHub),
    CompareMethod::Skills,
    CompareMethod::Base,
];

/// A method's name on the screen.
pub fn method_label(method: CompareMethod) -> &'static str {
    match method {
        CompareMethod::Cat => "CAT",
        CompareMethod::DataMix => "DATA-MIX",
        CompareMethod::Merge(MergeKind::Ties) => "TIES",
        CompareMethod::Merge(MergeKind::DareTies) => "DARE",
        CompareMethod::Merge(MergeKind::Linear) => "linear",
        CompareMethod::Merge(MergeKind::Svd) => "SVD",
        CompareMethod::Merge(MergeKind::LoraHub) => "LoraHub",
        CompareMethod::Merge(other) => other.name(),
        CompareMethod::CatUniform => "CAT uniform",
        CompareMethod::MergeAtCatScale(_) => "merge at CAT's scale",
        CompareMethod::Skills => "single adapter",
        CompareMethod::Base => "base",
    }
}

/// One line on what a method does, under the list.
pub fn method_description(method: CompareMethod) -> &'static str {
    match method {
        CompareMethod::Cat => "learn per-layer weights over the frozen LoRAs (5% of their data)",
        CompareMethod::DataMix => "train one LoRA on the union of the skills' data",
        CompareMethod::Merge(MergeKind::Ties) => "merge: trim, elect sign, disjoint mean (density)",
        CompareMethod::Merge(MergeKind::DareTies) => {
            "merge: random drop and rescale, then TIES (density)"
        }
        CompareMethod::Merge(MergeKind::Linear) => "merge: weighted sum of the A's and B's",
        CompareMethod::Merge(MergeKind::Svd) => {
            "merge: weighted sum of deltas, truncated SVD (rank)"
        }
        CompareMethod::Merge(MergeKind::LoraHub) => {
            "merge: weights searched gradient-free on a few examples"
        }
        CompareMethod::Merge(_) => "merge: a fixed-weight PEFT merge",
        CompareMethod::CatUniform => "the concatenation at CAT's starting weights, not learned",
        CompareMethod::MergeAtCatScale(_) => "the merge with every adapter at CAT's weight (1/k)",
        CompareMethod::Skills => "each picked adapter alone",
        CompareMethod::Base => "the base model, no adapter",
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
            FormField::Dataset => "builtin:NAME or path (Tab)",
            FormField::Limit => "blank: all",
            FormField::Weights => "comma list; blank: 1 each",
            FormField::Density => "TIES/DARE, in (0, 1]",
            FormField::SvdRank => "blank: largest input rank",
        }
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
            task: tasks::CODE_MATH,
            dataset: tasks::CODE_MATH.default_dataset().to_string(),
            limit: String::new(),
            weights: String::new(),
            density: "0.5".into(),
            svd_rank: String::new(),
            editing_backup: None,
            error: None,
        }
    }

    pub fn method(&self) -> CompareMethod {
        METHODS[self.method.min(METHODS.len() - 1)]
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

    pub(crate) fn field_mut(&mut self, field: FormField) -> Option<&mut String> {
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
        // The registry's order.
        let all: Vec<EvalTask> = EvalTask::all().collect();
        let at = all.iter().position(|t| *t == self.task).unwrap_or(0);
        let next = all[(at + 1) % all.len()];
        // Follow the task with its test set unless the user typed another dataset.
        if self.dataset == self.task.default_dataset() || self.dataset.is_empty() {
            self.dataset = next.default_dataset().to_string();
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
            Action::InputComplete if field == FormField::Dataset => {
                return Some(Command::CompletePath {
                    target: InputTarget::FormField(field),
                    text: compose.dataset.clone(),
                });
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
        ComposePane::Methods if move_cursor(&mut compose.method, METHODS.len(), &action) => {
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
        Action::LaunchComparison => return launch(app, &METHODS),
        Action::Back => compose.error = None,
        _ => {}
    }
    None
}

/// Validates the form and turns it into jobs, or puts the reason in the form's error line.
fn launch(app: &mut App, methods: &[CompareMethod]) -> Option<Command> {
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

/// The jobs that evaluate `methods` on the form's task with the picked adapters: the form is
/// read into a request for the comparison planner (the one `soup recipe` uses), which answers
/// with the jobs that build each composition, then the evaluations (the engine runs its queue
/// in order, one job at a time). What is wrong with the form comes back as the error line.
pub fn plan_jobs(app: &App, methods: &[CompareMethod]) -> Result<Vec<JobSpec>, String> {
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
                .map(|m| method_label(*m).to_string())
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

    let mut eval = EvalJob::new(&model, EvalTarget::Base, compose.task, data);
    eval.limit = limit;
    let request = PlanRequest {
        model: model.clone(),
        skills: picked
            .iter()
            .map(|a| SkillAdapter {
                skill: a.name.clone(),
                adapter: a.name.clone(),
                data: a.dataset.as_deref().map(DataSource::parse),
                train_epochs: None,
            })
            .collect(),
        methods: methods.to_vec(),
        columns: vec![EvalColumn {
            column: compose.task.name().to_string(),
            job: eval,
            only: None,
        }],
        naming: Naming::Adapters,
        train: TrainJob::new("", &model, Vec::new()),
        cat: CatJob::new("", &model, Vec::new(), Vec::new()),
        merge: MergeSettings {
            weights,
            density: density.unwrap_or(0.5),
            svd_rank,
            seed: 0,
            lorahub_budget: None,
            record_all: false,
        },
    };
    plan(&request)
        .map(|plan| plan.jobs())
        .map_err(|e| e.to_string())
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
