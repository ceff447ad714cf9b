//! The dashboard's state, the one [`Action`] enum every input and every answer from the outside
//! world becomes, and [`update`], which applies an action to the state and says what slow work
//! to do next as a [`Command`]. `update` does no I/O, so the tests drive it keystroke by
//! keystroke.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use soup_core::engine::{
    CatJob, DataSource, EvalJob, EvalTarget, EvalTask, JobEvent, JobSpec, JobUpdate, MergeJob,
    TrainJob,
};
use soup_core::runtime::DEFAULT_MODEL;
use soup_store::{AdapterRecord, QuestionRecord, RunId, RunKind, RunRecord, RunStatus};

use super::export::ResultsTable;

/// Records are read from the store this many at a time.
pub const PAGE_SIZE: usize = 50;
/// Loss values kept per job for its sparkline.
const LOSS_HISTORY: usize = 240;

/// The screens, in tab order (number keys 1-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Adapters,
    Compose,
    Jobs,
    Results,
    Inspect,
}

impl Tab {
    pub const ALL: [Tab; 5] = [
        Tab::Adapters,
        Tab::Compose,
        Tab::Jobs,
        Tab::Results,
        Tab::Inspect,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Adapters => "Adapters",
            Tab::Compose => "Compose",
            Tab::Jobs => "Jobs",
            Tab::Results => "Results",
            Tab::Inspect => "Inspect",
        }
    }

    pub fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }

    fn offset(self, by: isize) -> Tab {
        let n = Tab::ALL.len() as isize;
        Tab::ALL[(self.index() as isize + by).rem_euclid(n) as usize]
    }
}

/// Everything that can happen to the dashboard: keystrokes (already mapped by the keymap in
/// `event.rs`), the tick, job events, and the answers to [`Command`]s.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Quit,
    Tick,
    ToggleHelp,
    SwitchTab(Tab),
    NextTab,
    PrevTab,
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
    /// Focus the pane on the left / right (Compose, Inspect), or the previous / next column
    /// (Results).
    Left,
    Right,
    /// Enter: launch (Compose), open (Inspect), toggle detail.
    Confirm,
    /// Space: pick an adapter, cycle a choice.
    Toggle,
    /// Esc: close the help, the detail view, a filter.
    Back,
    /// `/`: start typing a filter (Adapters) or a search (Inspect).
    StartInput,
    /// `i`: edit the selected form field (Compose).
    Edit,
    Input(char),
    InputBackspace,
    InputSubmit,
    InputCancel,
    CycleSort,
    ReverseSort,
    CycleVerdict,
    /// `J` / `K`: scroll the record detail.
    ScrollDown,
    ScrollUp,
    CancelJob,
    ResumeJob,
    Export,
    LaunchComparison,
    Compare,
    NextPage,
    PrevPage,
    FetchModel,
    Refresh,
    Job(JobEvent),
    Loaded(Loaded),
    Fetch(FetchStatus),
    /// A command failed; the text says what and what to do.
    CommandFailed(String),
}

/// Answers of the store and the engine to [`Command`]s.
#[derive(Debug, Clone, PartialEq)]
pub enum Loaded {
    Adapters {
        adapters: Vec<AdapterRecord>,
        skipped: usize,
    },
    Runs {
        runs: Vec<RunRecord>,
        skipped: usize,
    },
    Results(ResultsTable),
    Records(RecordsPage),
    Compare {
        generation: u64,
        run: RunId,
        record: Option<Box<QuestionRecord>>,
    },
    Submitted(Vec<RunId>),
    /// A cancel or resume went through; the text says which.
    JobControl(String),
    Exported(Vec<PathBuf>),
}

/// A page of records (or of search matches) for the Inspect screen.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordsPage {
    pub generation: u64,
    pub run: RunId,
    pub from: u64,
    pub items: Vec<QuestionRecord>,
    pub next: Option<u64>,
    pub verdict_counts: BTreeMap<String, u64>,
    /// Records read to find `items` (search scans; page reads read exactly the page).
    pub scanned: u64,
    pub skipped: usize,
}

/// Progress of fetching the default model.
#[derive(Debug, Clone, PartialEq)]
pub enum FetchStatus {
    Progress { message: String, ratio: Option<f64> },
    Done,
    Failed(String),
}

/// Slow work `update` asks for; [`super::effects::Effects`] carries it out off the UI thread
/// and answers with actions.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Batch(Vec<Command>),
    LoadAdapters,
    LoadRuns,
    LoadResults,
    LoadRecords(RecordRequest),
    LoadCompare {
        generation: u64,
        run: RunId,
        index: u64,
    },
    Submit(Vec<JobSpec>),
    Cancel(RunId),
    Resume(RunId),
    Export(ResultsTable),
    FetchModel,
}

/// Which records to read: a page from `from`, of one verdict, optionally only those matching
/// `search` (scanned in chunks, off the UI thread).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordRequest {
    pub generation: u64,
    pub run: RunId,
    pub verdict: Option<String>,
    pub search: Option<String>,
    pub from: u64,
}

/// Where typed characters go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputTarget {
    AdapterFilter,
    RecordSearch,
    FormField(FormField),
}

/// A status line message.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusLine {
    pub text: String,
    pub is_error: bool,
}

/// The default model: whether it is there, and a fetch in progress.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelState {
    pub fetched: bool,
    pub fetching: Option<(String, Option<f64>)>,
}

// ---- Adapters ----------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterSort {
    Name,
    Base,
    Skill,
    Rank,
    Method,
    Size,
    Date,
}

impl AdapterSort {
    pub const ALL: [AdapterSort; 7] = [
        AdapterSort::Name,
        AdapterSort::Base,
        AdapterSort::Skill,
        AdapterSort::Rank,
        AdapterSort::Method,
        AdapterSort::Size,
        AdapterSort::Date,
    ];

    pub fn label(self) -> &'static str {
        match self {
            AdapterSort::Name => "name",
            AdapterSort::Base => "base",
            AdapterSort::Skill => "skill",
            AdapterSort::Rank => "rank",
            AdapterSort::Method => "method",
            AdapterSort::Size => "size",
            AdapterSort::Date => "date",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdaptersState {
    pub items: Vec<AdapterRecord>,
    /// Indexes into `items`, filtered and sorted: what the list shows.
    pub view: Vec<usize>,
    pub cursor: usize,
    pub sort: AdapterSort,
    pub reverse: bool,
    pub filter: String,
    pub loaded: bool,
    pub skipped: usize,
}

impl AdaptersState {
    pub fn selected(&self) -> Option<&AdapterRecord> {
        self.view.get(self.cursor).and_then(|i| self.items.get(*i))
    }

    /// Recomputes the view after the items, the filter or the sort changed, keeping the
    /// cursor on the same adapter when it is still shown.
    fn rebuild_view(&mut self) {
        let keep = self.selected().map(|a| a.name.clone());
        let needle = self.filter.to_lowercase();
        let mut view: Vec<usize> = (0..self.items.len())
            .filter(|i| {
                needle.is_empty() || {
                    let a = &self.items[*i];
                    a.name.to_lowercase().contains(&needle)
                        || a.base_model.to_lowercase().contains(&needle)
                        || a.skill
                            .as_deref()
                            .is_some_and(|s| s.to_lowercase().contains(&needle))
                        || super::format::method(a.method).contains(&needle)
                }
            })
            .collect();
        let items = &self.items;
        let max_rank = |a: &AdapterRecord| a.modules.iter().map(|m| m.rank).max().unwrap_or(0);
        view.sort_by(|x, y| {
            let (a, b) = (&items[*x], &items[*y]);
            let order = match self.sort {
                AdapterSort::Name => a.name.cmp(&b.name),
                AdapterSort::Base => a.base_model.cmp(&b.base_model),
                AdapterSort::Skill => a.skill.cmp(&b.skill),
                AdapterSort::Rank => max_rank(a).cmp(&max_rank(b)),
                AdapterSort::Method => {
                    super::format::method(a.method).cmp(super::format::method(b.method))
                }
                AdapterSort::Size => a.size_bytes.cmp(&b.size_bytes),
                AdapterSort::Date => a.created.cmp(&b.created),
            };
            order.then_with(|| a.name.cmp(&b.name))
        });
        if self.reverse {
            view.reverse();
        }
        self.view = view;
        self.cursor = keep
            .and_then(|name| self.view.iter().position(|i| self.items[*i].name == name))
            .unwrap_or(0);
    }
}

// ---- Compose -----------------------------------------------------------------------------

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
    fn new() -> Self {
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

// ---- Jobs --------------------------------------------------------------------------------

/// What the engine's events have said about a run since the dashboard started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveProgress {
    pub done: u64,
    pub total: u64,
    pub message: String,
    pub losses: Vec<f64>,
    pub tokens_per_s: Option<f64>,
    pub eta_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobsState {
    pub runs: Vec<RunRecord>,
    pub cursor: usize,
    pub live: HashMap<RunId, LiveProgress>,
    pub loaded: bool,
    pub skipped: usize,
}

impl JobsState {
    pub fn selected(&self) -> Option<&RunRecord> {
        self.runs.get(self.cursor)
    }

    /// The evaluation runs, newest first: what Inspect and Compare choose from.
    pub fn eval_runs(&self) -> Vec<&RunRecord> {
        self.runs
            .iter()
            .filter(|r| r.kind == RunKind::Eval)
            .collect()
    }
}

// ---- Results -----------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub struct ResultsState {
    pub table: Option<ResultsTable>,
    pub row: usize,
    pub column: usize,
    pub exported: Vec<PathBuf>,
}

// ---- Inspect -----------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InspectPane {
    Runs,
    Records,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InspectState {
    pub pane: InspectPane,
    /// Index into [`JobsState::eval_runs`].
    pub run_cursor: usize,
    pub open_run: Option<RunId>,
    pub verdict_counts: BTreeMap<String, u64>,
    pub verdict: Option<String>,
    /// The search being typed or applied.
    pub search: String,
    pub applied_search: Option<String>,
    pub page: Vec<QuestionRecord>,
    pub page_from: u64,
    /// Where the pages before this one started (paging back without reading backwards).
    pub back: Vec<u64>,
    pub next: Option<u64>,
    pub scanned: u64,
    pub cursor: usize,
    pub detail: bool,
    pub compare_run: Option<RunId>,
    /// The same question under `compare_run`; `None` while loading or missing.
    pub compare_record: Option<QuestionRecord>,
    pub compare_loaded: bool,
    /// Lines scrolled in the detail view.
    pub scroll: u16,
    /// Answers to older requests (another run, filter or page) are dropped.
    pub generation: u64,
    pub loading: bool,
}

impl InspectState {
    pub fn selected(&self) -> Option<&QuestionRecord> {
        self.page.get(self.cursor)
    }
}

// ---- the app -----------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub tab: Tab,
    pub show_help: bool,
    pub should_quit: bool,
    pub data_dir: PathBuf,
    pub model: ModelState,
    pub status: Option<StatusLine>,
    pub input: Option<InputTarget>,
    pub adapters: AdaptersState,
    pub compose: ComposeState,
    pub jobs: JobsState,
    pub results: ResultsState,
    pub inspect: InspectState,
    /// Data that changed (job events) and is read again at the next tick.
    pub stale_runs: bool,
    pub stale_results: bool,
    pub stale_adapters: bool,
}

impl App {
    pub fn new(data_dir: PathBuf, model_fetched: bool) -> App {
        App {
            tab: Tab::Adapters,
            show_help: false,
            should_quit: false,
            data_dir,
            model: ModelState {
                fetched: model_fetched,
                fetching: None,
            },
            status: None,
            input: None,
            adapters: AdaptersState {
                items: Vec::new(),
                view: Vec::new(),
                cursor: 0,
                sort: AdapterSort::Name,
                reverse: false,
                filter: String::new(),
                loaded: false,
                skipped: 0,
            },
            compose: ComposeState::new(),
            jobs: JobsState {
                runs: Vec::new(),
                cursor: 0,
                live: HashMap::new(),
                loaded: false,
                skipped: 0,
            },
            results: ResultsState {
                table: None,
                row: 0,
                column: 0,
                exported: Vec::new(),
            },
            inspect: InspectState {
                pane: InspectPane::Runs,
                run_cursor: 0,
                open_run: None,
                verdict_counts: BTreeMap::new(),
                verdict: None,
                search: String::new(),
                applied_search: None,
                page: Vec::new(),
                page_from: 0,
                back: Vec::new(),
                next: None,
                scanned: 0,
                cursor: 0,
                detail: false,
                compare_run: None,
                compare_record: None,
                compare_loaded: false,
                scroll: 0,
                generation: 0,
                loading: false,
            },
            stale_runs: false,
            stale_results: false,
            stale_adapters: false,
        }
    }

    /// What to read when the dashboard opens.
    pub fn initial_command() -> Command {
        Command::Batch(vec![
            Command::LoadAdapters,
            Command::LoadRuns,
            Command::LoadResults,
        ])
    }

    fn info(&mut self, text: impl Into<String>) {
        self.status = Some(StatusLine {
            text: text.into(),
            is_error: false,
        });
    }

    fn error(&mut self, text: impl Into<String>) {
        self.status = Some(StatusLine {
            text: text.into(),
            is_error: true,
        });
    }

    /// Whether the screen changes without input (a job or a fetch in flight): the event
    /// loop redraws on the tick only then.
    pub fn is_animating(&self) -> bool {
        self.model.fetching.is_some()
            || self
                .jobs
                .runs
                .iter()
                .any(|r| matches!(r.status, RunStatus::Running | RunStatus::Queued))
    }
}

/// Applies `action` to `app`; returns the slow work it calls for.
pub fn update(app: &mut App, action: Action) -> Option<Command> {
    match action {
        Action::Quit => {
            app.should_quit = true;
            None
        }
        Action::Tick => on_tick(app),
        Action::ToggleHelp => {
            app.show_help = !app.show_help;
            None
        }
        Action::Back if app.show_help => {
            app.show_help = false;
            None
        }
        Action::SwitchTab(tab) => switch_tab(app, tab),
        Action::NextTab => switch_tab(app, app.tab.offset(1)),
        Action::PrevTab => switch_tab(app, app.tab.offset(-1)),
        Action::Job(event) => on_job_event(app, event),
        Action::Loaded(loaded) => on_loaded(app, loaded),
        Action::Fetch(status) => {
            match status {
                FetchStatus::Progress { message, ratio } => {
                    app.model.fetching = Some((message, ratio));
                }
                FetchStatus::Done => {
                    app.model.fetching = None;
                    app.model.fetched = true;
                    app.info(format!("{DEFAULT_MODEL} is ready"));
                }
                FetchStatus::Failed(why) => {
                    app.model.fetching = None;
                    app.error(format!("fetching {DEFAULT_MODEL} failed: {why}"));
                }
            }
            None
        }
        Action::FetchModel => {
            if app.model.fetched {
                app.info(format!("{DEFAULT_MODEL} is already fetched"));
                None
            } else if app.model.fetching.is_some() {
                app.info("the model is being fetched");
                None
            } else {
                app.model.fetching = Some(("starting".into(), None));
                Some(Command::FetchModel)
            }
        }
        Action::CommandFailed(why) => {
            app.inspect.loading = false;
            app.error(why);
            None
        }
        Action::Refresh => {
            app.info("reloading");
            let mut commands = vec![
                Command::LoadAdapters,
                Command::LoadRuns,
                Command::LoadResults,
            ];
            // The open run's page too: a running evaluation adds records as it goes.
            let from = app.inspect.page_from;
            commands.extend(request_records(app, from));
            Some(Command::Batch(commands))
        }
        other => match app.tab {
            Tab::Adapters => adapters_action(app, other),
            Tab::Compose => compose_action(app, other),
            Tab::Jobs => jobs_action(app, other),
            Tab::Results => results_action(app, other),
            Tab::Inspect => inspect_action(app, other),
        },
    }
}

fn on_tick(app: &mut App) -> Option<Command> {
    let mut commands = Vec::new();
    if std::mem::take(&mut app.stale_runs) {
        commands.push(Command::LoadRuns);
    }
    if std::mem::take(&mut app.stale_results) {
        commands.push(Command::LoadResults);
    }
    if std::mem::take(&mut app.stale_adapters) {
        commands.push(Command::LoadAdapters);
    }
    batch(commands)
}

fn batch(mut commands: Vec<Command>) -> Option<Command> {
    match commands.len() {
        0 => None,
        1 => commands.pop(),
        _ => Some(Command::Batch(commands)),
    }
}

fn switch_tab(app: &mut App, tab: Tab) -> Option<Command> {
    app.tab = tab;
    app.input = None;
    None
}

fn on_job_event(app: &mut App, event: JobEvent) -> Option<Command> {
    app.stale_runs = true;
    let status = match &event.update {
        JobUpdate::Queued => Some(RunStatus::Queued),
        JobUpdate::Started => Some(RunStatus::Running),
        JobUpdate::Progress {
            done,
            total,
            message,
            loss,
            tokens_per_s,
            eta_s,
        } => {
            let live = app.jobs.live.entry(event.run).or_default();
            live.done = *done;
            live.total = *total;
            live.message = message.clone();
            if let Some(loss) = loss.filter(|l| l.is_finite()) {
                live.losses.push(loss);
                if live.losses.len() > LOSS_HISTORY {
                    live.losses.remove(0);
                }
            }
            live.tokens_per_s = *tokens_per_s;
            live.eta_s = *eta_s;
            app.stale_runs = false; // progress alone does not need a reload
            None
        }
        JobUpdate::Finished(_) => {
            app.stale_results = true;
            app.stale_adapters = true;
            Some(RunStatus::Done)
        }
        JobUpdate::Failed(why) => {
            let label = run_label(app, event.run);
            app.error(format!("{label} failed: {why}"));
            Some(RunStatus::Failed)
        }
        JobUpdate::Cancelled => Some(RunStatus::Cancelled),
    };
    if let Some(status) = status {
        if let Some(run) = app.jobs.runs.iter_mut().find(|r| r.id == event.run) {
            run.status = status;
            if let JobUpdate::Failed(why) = &event.update {
                run.error = Some(why.clone());
            }
        }
        // A run the list does not know yet: it comes with the next reload.
        app.stale_runs = true;
    }
    None
}

fn run_label(app: &App, run: RunId) -> String {
    app.jobs
        .runs
        .iter()
        .find(|r| r.id == run)
        .map(|r| r.label.clone())
        .unwrap_or_else(|| format!("run {}", super::format::short_id(run)))
}

fn on_loaded(app: &mut App, loaded: Loaded) -> Option<Command> {
    match loaded {
        Loaded::Adapters { adapters, skipped } => {
            app.adapters.items = adapters;
            app.adapters.skipped = skipped;
            app.adapters.loaded = true;
            app.adapters.rebuild_view();
            let names: BTreeSet<String> =
                app.adapters.items.iter().map(|a| a.name.clone()).collect();
            app.compose.picked.retain(|p| names.contains(p));
            app.compose.adapter_cursor = app
                .compose
                .adapter_cursor
                .min(app.adapters.items.len().saturating_sub(1));
            None
        }
        Loaded::Runs { runs, skipped } => {
            let keep = app.jobs.selected().map(|r| r.id);
            app.jobs.runs = runs;
            app.jobs.skipped = skipped;
            app.jobs.loaded = true;
            app.jobs.cursor = keep
                .and_then(|id| app.jobs.runs.iter().position(|r| r.id == id))
                .unwrap_or(0);
            let evals = app.jobs.eval_runs().len();
            app.inspect.run_cursor = app.inspect.run_cursor.min(evals.saturating_sub(1));
            // Finished runs drop their live progress; their record is the truth now.
            let finished: Vec<RunId> = app
                .jobs
                .runs
                .iter()
                .filter(|r| r.status.is_final())
                .map(|r| r.id)
                .collect();
            for id in finished {
                if let Some(live) = app.jobs.live.get_mut(&id) {
                    live.eta_s = None;
                }
            }
            None
        }
        Loaded::Results(table) => {
            app.results.row = app.results.row.min(table.methods.len().saturating_sub(1));
            app.results.column = app
                .results
                .column
                .min(table.columns.len().saturating_sub(1));
            app.results.table = Some(table);
            None
        }
        Loaded::Records(page) => {
            let inspect = &mut app.inspect;
            if page.generation != inspect.generation {
                return None;
            }
            inspect.loading = false;
            inspect.page = page.items;
            inspect.page_from = page.from;
            inspect.next = page.next;
            inspect.scanned = page.scanned;
            inspect.verdict_counts = page.verdict_counts;
            inspect.cursor = inspect.cursor.min(inspect.page.len().saturating_sub(1));
            if page.skipped > 0 {
                app.error(format!(
                    "{} unreadable record(s) skipped on this page",
                    page.skipped
                ));
            }
            compare_command(app)
        }
        Loaded::Compare {
            generation,
            run,
            record,
        } => {
            if generation == app.inspect.generation && app.inspect.compare_run == Some(run) {
                app.inspect.compare_record = record.map(|r| *r);
                app.inspect.compare_loaded = true;
            }
            None
        }
        Loaded::Submitted(ids) => {
            let list: Vec<String> = ids.iter().map(|id| super::format::short_id(*id)).collect();
            app.info(format!(
                "queued {} job(s): {} (see Jobs)",
                ids.len(),
                list.join(" ")
            ));
            app.tab = Tab::Jobs;
            Some(Command::LoadRuns)
        }
        Loaded::JobControl(text) => {
            app.info(text);
            Some(Command::LoadRuns)
        }
        Loaded::Exported(paths) => {
            let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            app.info(format!("exported: {}", shown.join(", ")));
            app.results.exported = paths;
            None
        }
    }
}

fn move_cursor(cursor: &mut usize, len: usize, action: &Action) -> bool {
    if len == 0 {
        *cursor = 0;
        return matches!(
            action,
            Action::Up
                | Action::Down
                | Action::PageUp
                | Action::PageDown
                | Action::Home
                | Action::End
        );
    }
    let last = len - 1;
    *cursor = match action {
        Action::Up => cursor.saturating_sub(1),
        Action::Down => (*cursor + 1).min(last),
        Action::PageUp => cursor.saturating_sub(10),
        Action::PageDown => (*cursor + 10).min(last),
        Action::Home => 0,
        Action::End => last,
        _ => return false,
    };
    true
}

/// Typing into the current input; false when `action` is not typing.
fn text_input(target: &mut String, action: &Action) -> bool {
    match action {
        Action::Input(c) => target.push(*c),
        Action::InputBackspace => {
            target.pop();
        }
        _ => return false,
    }
    true
}

// ---- Adapters screen ---------------------------------------------------------------------

fn adapters_action(app: &mut App, action: Action) -> Option<Command> {
    let state = &mut app.adapters;
    if app.input == Some(InputTarget::AdapterFilter) {
        if text_input(&mut state.filter, &action) {
            state.rebuild_view();
        } else if action == Action::InputSubmit {
            app.input = None;
        } else if action == Action::InputCancel {
            app.input = None;
            state.filter.clear();
            state.rebuild_view();
        }
        return None;
    }
    let len = state.view.len();
    if move_cursor(&mut state.cursor, len, &action) {
        return None;
    }
    match action {
        Action::StartInput => app.input = Some(InputTarget::AdapterFilter),
        Action::Back => {
            state.filter.clear();
            state.rebuild_view();
        }
        Action::CycleSort => {
            let at = AdapterSort::ALL
                .iter()
                .position(|s| *s == state.sort)
                .unwrap_or(0);
            state.sort = AdapterSort::ALL[(at + 1) % AdapterSort::ALL.len()];
            state.rebuild_view();
            let label = state.sort.label();
            app.info(format!("sorted by {label}"));
        }
        Action::ReverseSort => {
            state.reverse = !state.reverse;
            state.rebuild_view();
        }
        Action::Toggle => {
            if let Some(name) = state.selected().map(|a| a.name.clone()) {
                toggle_pick(app, name);
            }
        }
        Action::Confirm => {
            if let Some(name) = state.selected().map(|a| a.name.clone()) {
                if !app.compose.picked.contains(&name) {
                    toggle_pick(app, name);
                }
                app.tab = Tab::Compose;
            }
        }
        _ => {}
    }
    None
}

fn toggle_pick(app: &mut App, name: String) {
    if !app.compose.picked.remove(&name) {
        app.compose.picked.insert(name);
    }
    app.compose.error = None;
}

// ---- Compose screen ----------------------------------------------------------------------

fn compose_action(app: &mut App, action: Action) -> Option<Command> {
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
                    method: family.parse().map_err(|e: soup_core::error::CoreError| e.to_string())?,
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

// ---- Jobs screen -------------------------------------------------------------------------

fn jobs_action(app: &mut App, action: Action) -> Option<Command> {
    let len = app.jobs.runs.len();
    if move_cursor(&mut app.jobs.cursor, len, &action) {
        return None;
    }
    let selected = app
        .jobs
        .selected()
        .map(|r| (r.id, r.status, r.label.clone()));
    match (action, selected) {
        (Action::CancelJob, Some((id, status, label))) => {
            if status.is_final() {
                app.error(format!(
                    "{label} is {}: nothing to cancel",
                    super::format::status(status)
                ));
                None
            } else {
                Some(Command::Cancel(id))
            }
        }
        (Action::ResumeJob, Some((id, status, label))) => {
            if matches!(status, RunStatus::Failed | RunStatus::Cancelled) {
                Some(Command::Resume(id))
            } else {
                app.error(format!(
                    "{label} is {}: only failed or cancelled jobs resume",
                    super::format::status(status)
                ));
                None
            }
        }
        (Action::Confirm, Some((id, _, _))) => {
            // Open an evaluation's records in Inspect.
            let evals = app.jobs.eval_runs();
            if let Some(at) = evals.iter().position(|r| r.id == id) {
                app.tab = Tab::Inspect;
                app.inspect.run_cursor = at;
                return open_run(app, id);
            }
            None
        }
        _ => None,
    }
}

// ---- Results screen ----------------------------------------------------------------------

fn results_action(app: &mut App, action: Action) -> Option<Command> {
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

// ---- Inspect screen ----------------------------------------------------------------------

fn inspect_action(app: &mut App, action: Action) -> Option<Command> {
    if app.input == Some(InputTarget::RecordSearch) {
        if text_input(&mut app.inspect.search, &action) {
            return None;
        }
        match action {
            Action::InputSubmit => {
                app.input = None;
                let search = app.inspect.search.trim().to_string();
                app.inspect.applied_search = (!search.is_empty()).then_some(search);
                return reload_records(app, 0);
            }
            Action::InputCancel => {
                app.input = None;
                app.inspect.search = app.inspect.applied_search.clone().unwrap_or_default();
            }
            _ => {}
        }
        return None;
    }
    let evals = app.jobs.eval_runs().len();
    match app.inspect.pane {
        InspectPane::Runs => {
            if move_cursor(&mut app.inspect.run_cursor, evals, &action) {
                return None;
            }
            match action {
                Action::Confirm | Action::Right => {
                    let id = app
                        .jobs
                        .eval_runs()
                        .get(app.inspect.run_cursor)
                        .map(|r| r.id);
                    match id {
                        Some(id) if app.inspect.open_run == Some(id) => {
                            app.inspect.pane = InspectPane::Records;
                            None
                        }
                        Some(id) => open_run(app, id),
                        None => None,
                    }
                }
                _ => None,
            }
        }
        InspectPane::Records => {
            let len = app.inspect.page.len();
            if matches!(action, Action::PageDown | Action::PageUp) {
                let next = if action == Action::PageDown {
                    Action::NextPage
                } else {
                    Action::PrevPage
                };
                return inspect_action(app, next);
            }
            if move_cursor(&mut app.inspect.cursor, len, &action) {
                app.inspect.scroll = 0;
                return compare_command(app);
            }
            match action {
                Action::Left | Action::Back if !app.inspect.detail => {
                    app.inspect.pane = InspectPane::Runs;
                    None
                }
                Action::Back => {
                    app.inspect.detail = false;
                    None
                }
                Action::Confirm => {
                    app.inspect.detail = !app.inspect.detail && !app.inspect.page.is_empty();
                    app.inspect.scroll = 0;
                    None
                }
                Action::ScrollDown => {
                    app.inspect.scroll = app.inspect.scroll.saturating_add(5);
                    None
                }
                Action::ScrollUp => {
                    app.inspect.scroll = app.inspect.scroll.saturating_sub(5);
                    None
                }
                Action::NextPage => match app.inspect.next {
                    Some(next) => {
                        let from = app.inspect.page_from;
                        app.inspect.back.push(from);
                        app.inspect.cursor = 0;
                        request_records(app, next)
                    }
                    None => {
                        app.info("last page");
                        None
                    }
                },
                Action::PrevPage => match app.inspect.back.pop() {
                    Some(from) => {
                        app.inspect.cursor = 0;
                        request_records(app, from)
                    }
                    None => None,
                },
                Action::CycleVerdict => {
                    let verdicts: Vec<&String> = app.inspect.verdict_counts.keys().collect();
                    let next = match &app.inspect.verdict {
                        None => verdicts.first().map(|v| (*v).clone()),
                        Some(current) => verdicts
                            .iter()
                            .position(|v| *v == current)
                            .and_then(|i| verdicts.get(i + 1))
                            .map(|v| (*v).clone()),
                    };
                    app.inspect.verdict = next;
                    reload_records(app, 0)
                }
                Action::StartInput => {
                    app.input = Some(InputTarget::RecordSearch);
                    None
                }
                Action::Compare => {
                    let open = app.inspect.open_run;
                    let others: Vec<RunId> = app
                        .jobs
                        .eval_runs()
                        .iter()
                        .map(|r| r.id)
                        .filter(|id| Some(*id) != open)
                        .collect();
                    let next = match app.inspect.compare_run {
                        None => others.first().copied(),
                        Some(current) => others
                            .iter()
                            .position(|id| *id == current)
                            .and_then(|i| others.get(i + 1))
                            .copied(),
                    };
                    app.inspect.compare_run = next;
                    app.inspect.compare_record = None;
                    app.inspect.compare_loaded = false;
                    match next {
                        Some(_) => {
                            app.inspect.detail = true;
                            compare_command(app)
                        }
                        None if others.is_empty() => {
                            app.error("no other evaluation run to compare with");
                            None
                        }
                        None => None,
                    }
                }
                _ => None,
            }
        }
    }
}

/// Opens a run's records at the first page, all verdicts, no search.
fn open_run(app: &mut App, id: RunId) -> Option<Command> {
    let inspect = &mut app.inspect;
    inspect.open_run = Some(id);
    inspect.pane = InspectPane::Records;
    inspect.verdict = None;
    inspect.search.clear();
    inspect.applied_search = None;
    inspect.verdict_counts.clear();
    inspect.detail = false;
    if inspect.compare_run == Some(id) {
        inspect.compare_run = None;
    }
    reload_records(app, 0)
}

/// Reads from `from` again after the filter or the search changed: paging history restarts.
fn reload_records(app: &mut App, from: u64) -> Option<Command> {
    app.inspect.back.clear();
    app.inspect.cursor = 0;
    request_records(app, from)
}

fn request_records(app: &mut App, from: u64) -> Option<Command> {
    let inspect = &mut app.inspect;
    let run = inspect.open_run?;
    inspect.generation += 1;
    inspect.loading = true;
    inspect.compare_record = None;
    inspect.compare_loaded = false;
    Some(Command::LoadRecords(RecordRequest {
        generation: inspect.generation,
        run,
        verdict: inspect.verdict.clone(),
        search: inspect.applied_search.clone(),
        from,
    }))
}

/// Reads the selected question under the comparison run, when one is chosen.
fn compare_command(app: &mut App) -> Option<Command> {
    let inspect = &mut app.inspect;
    let run = inspect.compare_run?;
    let index = inspect.selected()?.index;
    inspect.compare_record = None;
    inspect.compare_loaded = false;
    Some(Command::LoadCompare {
        generation: inspect.generation,
        run,
        index,
    })
}
