//! The Train screen: a form for a skill LoRA (name, skill, datasets, the LoRA and loop
//! settings) or for CAT over the picked adapters, launched with Enter as the same job
//! `soup train` / `soup cat` runs. The form starts at the job specs' own defaults
//! ([`TrainJob::new`], [`CatJob::new`]), so the values shown are what would run.

use std::collections::BTreeMap;

use soup_core::engine::{CatJob, DataSource, JobSpec, TrainJob, BUILTINS};
use soup_core::lora::Module;
use soup_core::runtime::DEFAULT_MODEL;

use super::adapters::toggle_pick;
use super::{move_cursor, text_input};
use crate::dashboard::app::{Action, App, Command, InputTarget};

/// What the form trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainKind {
    /// A skill LoRA on one or more datasets.
    Lora,
    /// CAT: per-layer weights over the picked (frozen) adapters.
    Cat,
}

impl TrainKind {
    pub fn label(self) -> &'static str {
        match self {
            TrainKind::Lora => "skill LoRA",
            TrainKind::Cat => "CAT over picked adapters",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TrainField {
    Kind,
    Name,
    Skill,
    Datasets,
    Model,
    Rank,
    Alpha,
    Targets,
    Lr,
    Epochs,
    BatchSize,
    MaxLen,
    Limit,
    Fraction,
}

const LORA_FIELDS: [TrainField; 13] = [
    TrainField::Kind,
    TrainField::Name,
    TrainField::Skill,
    TrainField::Datasets,
    TrainField::Model,
    TrainField::Rank,
    TrainField::Alpha,
    TrainField::Targets,
    TrainField::Lr,
    TrainField::Epochs,
    TrainField::BatchSize,
    TrainField::MaxLen,
    TrainField::Limit,
];

const CAT_FIELDS: [TrainField; 8] = [
    TrainField::Kind,
    TrainField::Name,
    TrainField::Datasets,
    TrainField::Fraction,
    TrainField::Lr,
    TrainField::Epochs,
    TrainField::BatchSize,
    TrainField::MaxLen,
];

impl TrainField {
    pub fn label(self) -> &'static str {
        match self {
            TrainField::Kind => "train",
            TrainField::Name => "name",
            TrainField::Skill => "skill",
            TrainField::Datasets => "datasets",
            TrainField::Model => "model",
            TrainField::Rank => "rank",
            TrainField::Alpha => "alpha",
            TrainField::Targets => "targets",
            TrainField::Lr => "lr",
            TrainField::Epochs => "epochs",
            TrainField::BatchSize => "batch size",
            TrainField::MaxLen => "max len",
            TrainField::Limit => "examples",
            TrainField::Fraction => "fraction",
        }
    }

    pub fn hint(self, kind: TrainKind) -> &'static str {
        match (self, kind) {
            (TrainField::Kind, _) => "space: skill LoRA / CAT",
            (TrainField::Name, _) => "the new adapter's name",
            (TrainField::Skill, _) => "blank: none (a label for Compose and recipes)",
            (TrainField::Datasets, TrainKind::Lora) => {
                "comma list: builtin:NAME or files; Tab completes; space in the list → adds"
            }
            (TrainField::Datasets, TrainKind::Cat) => {
                "blank: the picked adapters' own data; Tab completes"
            }
            (TrainField::Model, _) => "a model name, or a folder",
            (TrainField::Targets, _) => "modules: q,k,v,o,gate,up,down",
            (TrainField::Limit, _) => "per dataset; blank: all",
            (TrainField::Fraction, _) => "of each dataset, in (0, 1] (the paper: 5%)",
            (TrainField::Rank, _)
            | (TrainField::Alpha, _)
            | (TrainField::Lr, _)
            | (TrainField::Epochs, _)
            | (TrainField::BatchSize, _)
            | (TrainField::MaxLen, _) => "the default as `soup train` has it",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainPane {
    Form,
    /// Built-in sets (LoRA) or adapters to pick (CAT).
    Side,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrainState {
    pub kind: TrainKind,
    pub pane: TrainPane,
    pub field: usize,
    pub side_cursor: usize,
    pub lora: BTreeMap<TrainField, String>,
    pub cat: BTreeMap<TrainField, String>,
    pub editing_backup: Option<String>,
    pub error: Option<String>,
}

/// The text of a module list as a user types it: `q,k,v,up,down`.
fn modules_text(modules: &[Module]) -> String {
    modules
        .iter()
        .map(|m| m.hf_name().strip_suffix("_proj").unwrap_or(m.hf_name()))
        .collect::<Vec<_>>()
        .join(",")
}

impl TrainState {
    pub fn new() -> Self {
        let t = TrainJob::new("", DEFAULT_MODEL, Vec::new());
        let lora = BTreeMap::from([
            (TrainField::Name, String::new()),
            (TrainField::Skill, String::new()),
            (TrainField::Datasets, String::new()),
            (TrainField::Model, t.model.clone()),
            (TrainField::Rank, t.lora.rank.to_string()),
            (TrainField::Alpha, t.lora.alpha.to_string()),
            (TrainField::Targets, modules_text(&t.lora.targets)),
            (TrainField::Lr, t.train.lr.to_string()),
            (TrainField::Epochs, t.train.epochs.to_string()),
            (TrainField::BatchSize, t.train.batch_size.to_string()),
            (TrainField::MaxLen, t.max_len.to_string()),
            (
                TrainField::Limit,
                t.limit.map(|l| l.to_string()).unwrap_or_default(),
            ),
        ]);
        let c = CatJob::new("", DEFAULT_MODEL, Vec::new(), Vec::new());
        let cat = BTreeMap::from([
            (TrainField::Name, String::new()),
            (TrainField::Datasets, String::new()),
            (TrainField::Fraction, c.sample_fraction.to_string()),
            (TrainField::Lr, c.train.lr.to_string()),
            (TrainField::Epochs, c.train.epochs.to_string()),
            (TrainField::BatchSize, c.train.batch_size.to_string()),
            (TrainField::MaxLen, c.max_len.to_string()),
        ]);
        TrainState {
            kind: TrainKind::Lora,
            pane: TrainPane::Form,
            field: 0,
            side_cursor: 0,
            lora,
            cat,
            editing_backup: None,
            error: None,
        }
    }

    pub fn fields(&self) -> &'static [TrainField] {
        match self.kind {
            TrainKind::Lora => &LORA_FIELDS,
            TrainKind::Cat => &CAT_FIELDS,
        }
    }

    pub fn current_field(&self) -> TrainField {
        let fields = self.fields();
        fields[self.field.min(fields.len() - 1)]
    }

    pub fn value(&self, field: TrainField) -> String {
        match field {
            TrainField::Kind => self.kind.label().to_string(),
            other => self.values().get(&other).cloned().unwrap_or_default(),
        }
    }

    fn values(&self) -> &BTreeMap<TrainField, String> {
        match self.kind {
            TrainKind::Lora => &self.lora,
            TrainKind::Cat => &self.cat,
        }
    }

    fn value_mut(&mut self, field: TrainField) -> Option<&mut String> {
        let values = match self.kind {
            TrainKind::Lora => &mut self.lora,
            TrainKind::Cat => &mut self.cat,
        };
        values.get_mut(&field)
    }

    /// Adds `builtin:NAME` to the datasets, or takes it out when it is there.
    pub fn toggle_builtin(&mut self, name: &str) {
        let entry = format!("builtin:{name}");
        let Some(value) = self.value_mut(TrainField::Datasets) else {
            return;
        };
        let mut items: Vec<String> = value
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        match items.iter().position(|i| *i == entry) {
            Some(at) => {
                items.remove(at);
            }
            None => items.push(entry),
        }
        *value = items.join(", ");
    }
}

/// The completed path for `field`.
pub fn set_completion(app: &mut App, field: TrainField, text: String) {
    if let Some(value) = app.train.value_mut(field) {
        *value = text;
    }
}

/// The Train screen's keys: move over the form, edit a field, pick sets or adapters, launch.
pub fn update(app: &mut App, action: Action) -> Option<Command> {
    if let Some(InputTarget::TrainField(field)) = app.input {
        let train = &mut app.train;
        match action {
            Action::InputSubmit => {
                app.input = None;
                train.editing_backup = None;
            }
            Action::InputCancel => {
                let backup = train.editing_backup.take();
                if let (Some(old), Some(value)) = (backup, train.value_mut(field)) {
                    *value = old;
                }
                app.input = None;
            }
            Action::InputComplete
                if field == TrainField::Datasets || field == TrainField::Model =>
            {
                return Some(Command::CompletePath {
                    target: InputTarget::TrainField(field),
                    text: train.value(field),
                });
            }
            other => match train.value_mut(field) {
                Some(value) => {
                    text_input(value, &other);
                }
                None => app.input = None,
            },
        }
        return None;
    }
    let side_len = match app.train.kind {
        TrainKind::Lora => BUILTINS.len(),
        TrainKind::Cat => app.adapters.items.len(),
    };
    let train = &mut app.train;
    let fields = train.fields().len();
    match train.pane {
        TrainPane::Form if move_cursor(&mut train.field, fields, &action) => return None,
        TrainPane::Side if move_cursor(&mut train.side_cursor, side_len, &action) => return None,
        _ => {}
    }
    match action {
        Action::Left => train.pane = TrainPane::Form,
        Action::Right => train.pane = TrainPane::Side,
        Action::Toggle | Action::Edit => match train.pane {
            TrainPane::Form => {
                let field = train.current_field();
                train.error = None;
                if field == TrainField::Kind {
                    train.kind = match train.kind {
                        TrainKind::Lora => TrainKind::Cat,
                        TrainKind::Cat => TrainKind::Lora,
                    };
                    train.side_cursor = 0;
                } else {
                    train.editing_backup = Some(train.value(field));
                    app.input = Some(InputTarget::TrainField(field));
                }
            }
            TrainPane::Side => match train.kind {
                TrainKind::Lora => {
                    if let Some((name, _, _)) = BUILTINS.get(train.side_cursor) {
                        train.toggle_builtin(name);
                    }
                }
                TrainKind::Cat => {
                    let name = app
                        .adapters
                        .items
                        .get(app.train.side_cursor)
                        .map(|a| a.name.clone());
                    if let Some(name) = name {
                        toggle_pick(app, name);
                    }
                }
            },
        },
        Action::Confirm => match job(app) {
            Ok(spec) => {
                app.train.error = None;
                return Some(Command::Submit(vec![spec]));
            }
            Err(why) => app.train.error = Some(why),
        },
        Action::Back => train.error = None,
        _ => {}
    }
    None
}

fn parse<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, String> {
    text.trim()
        .parse::<T>()
        .map_err(|_| format!("{what} {:?} is not a valid number", text.trim()))
}

fn datasets(text: &str) -> Vec<DataSource> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(DataSource::parse)
        .collect()
}

/// The form as a job, or what is wrong with it (the engine checks the rest when it is
/// submitted: files readable, model found, adapters stored).
pub fn job(app: &App) -> Result<JobSpec, String> {
    let train = &app.train;
    let v = |f: TrainField| train.value(f);
    let name = v(TrainField::Name).trim().to_string();
    if name.is_empty() {
        return Err("name the new adapter: i on the name field".into());
    }
    match train.kind {
        TrainKind::Lora => {
            let data = datasets(&v(TrainField::Datasets));
            if data.is_empty() {
                return Err(
                    "no dataset: type builtin:NAME or a file, or press space on a built-in set (→)"
                        .into(),
                );
            }
            let model = v(TrainField::Model).trim().to_string();
            if model == DEFAULT_MODEL && !app.model.fetched {
                return Err(format!(
                    "the default model {DEFAULT_MODEL} is not fetched yet: press F to fetch it"
                ));
            }
            let mut job = TrainJob::new(&name, &model, data);
            let skill = v(TrainField::Skill).trim().to_string();
            job.skill = (!skill.is_empty()).then_some(skill);
            job.lora.rank = parse(&v(TrainField::Rank), "rank")?;
            job.lora.alpha = parse(&v(TrainField::Alpha), "alpha")?;
            job.lora.targets =
                Module::parse_list(&v(TrainField::Targets)).map_err(|e| format!("targets: {e}"))?;
            if job.lora.targets.is_empty() {
                return Err("targets: name at least one module, as in q,v".into());
            }
            job.train.lr = parse(&v(TrainField::Lr), "lr")?;
            job.train.epochs = parse(&v(TrainField::Epochs), "epochs")?;
            job.train.batch_size = parse(&v(TrainField::BatchSize), "batch size")?;
            job.max_len = parse(&v(TrainField::MaxLen), "max len")?;
            let limit = v(TrainField::Limit);
            job.limit = match limit.trim() {
                "" => None,
                t => Some(parse(t, "examples")?),
            };
            Ok(JobSpec::Train(job))
        }
        TrainKind::Cat => {
            let picked: Vec<_> = app
                .adapters
                .items
                .iter()
                .filter(|a| app.compose.picked.contains(&a.name))
                .collect();
            if picked.len() < 2 {
                return Err(
                    "CAT needs at least 2 picked adapters: space on them in the list (→)".into(),
                );
            }
            let bases: std::collections::BTreeSet<&str> =
                picked.iter().map(|a| a.base_model.as_str()).collect();
            if bases.len() > 1 {
                return Err(format!(
                    "the picked adapters have different base models ({}): pick adapters of one model",
                    bases.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
            let model = bases
                .into_iter()
                .next()
                .unwrap_or(DEFAULT_MODEL)
                .to_string();
            let mut data = datasets(&v(TrainField::Datasets));
            if data.is_empty() {
                // Each adapter's own training data (its record lists the sets, comma-separated).
                for a in &picked {
                    match &a.dataset {
                        Some(d) => data.extend(datasets(d)),
                        None => {
                            return Err(format!(
                                "{} records no training data: type the datasets for CAT",
                                a.name
                            ))
                        }
                    }
                }
            }
            let names = picked.iter().map(|a| a.name.clone()).collect();
            let mut job = CatJob::new(&name, &model, names, data);
            job.sample_fraction = parse(&v(TrainField::Fraction), "fraction")?;
            job.train.lr = parse(&v(TrainField::Lr), "lr")?;
            job.train.epochs = parse(&v(TrainField::Epochs), "epochs")?;
            job.train.batch_size = parse(&v(TrainField::BatchSize), "batch size")?;
            job.max_len = parse(&v(TrainField::MaxLen), "max len")?;
            Ok(JobSpec::Cat(job))
        }
    }
}
