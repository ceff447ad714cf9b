//! The dashboard's state, the one [`Action`] enum every input and every answer from the outside
//! world becomes, and [`update`], which applies an action to the state and says what slow work
//! to do next as a [`Command`]. `update` does no I/O, so the tests drive it keystroke by
//! keystroke. It handles what concerns the whole app (tabs, help, the model fetch, reloads)
//! and hands everything else to the current screen's module in [`super::screens`], which holds
//! that screen's state and its part of the update.

use std::collections::BTreeMap;
use std::path::PathBuf;

use soup_core::engine::{JobEvent, JobSpec};
use soup_core::runtime::DEFAULT_MODEL;
use soup_store::{AdapterRecord, RunId, RunRecord, RunStatus, StoredQuestion};

use super::export::ResultsTable;
use super::screens::adapters::{self, AdaptersState};
use super::screens::compose::{self, ComposeState, FormField};
use super::screens::inspect::{self, InspectState};
use super::screens::jobs::{self, JobsState};
use super::screens::recipes::{self, RecipeData, RecipeView, RecipesState};
use super::screens::results::{self, ResultsState};
use super::screens::train::{self, TrainField, TrainState};

/// Records are read from the store this many at a time.
pub const PAGE_SIZE: usize = 50;

/// The screens, in tab order (number keys 1-7). Train and Recipes came last so the first
/// five keep the numbers users learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Adapters,
    Compose,
    Jobs,
    Results,
    Inspect,
    Train,
    Recipes,
}

impl Tab {
    pub const ALL: [Tab; 7] = [
        Tab::Adapters,
        Tab::Compose,
        Tab::Jobs,
        Tab::Results,
        Tab::Inspect,
        Tab::Train,
        Tab::Recipes,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Adapters => "Adapters",
            Tab::Compose => "Compose",
            Tab::Jobs => "Jobs",
            Tab::Results => "Results",
            Tab::Inspect => "Inspect",
            Tab::Train => "Train",
            Tab::Recipes => "Recipes",
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
    /// Tab while typing: complete a file path (Train's datasets, Recipes' data files).
    InputComplete,
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
    /// `d`: the questions two runs disagree on (Inspect).
    Discordant,
    /// `t`: the screen's other view (Results: paired differences; Adapters: CAT's Δ from
    /// its start).
    ToggleView,
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
        record: Option<Box<StoredQuestion>>,
    },
    Submitted(Vec<RunId>),
    /// Jobs held back until the adapters they need exist (queued jobs build them).
    Held(Vec<JobSpec>),
    Recipes(Vec<RecipeView>),
    /// A path completed for the field being typed: the new text, and the other candidates.
    Completion {
        target: InputTarget,
        text: String,
        candidates: Vec<String>,
    },
    Discordant(Box<DiscordantList>),
    /// Paired tests for the Results screen's paired view.
    Paired(Box<results::PairedView>),
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
    pub items: Vec<StoredQuestion>,
    pub next: Option<u64>,
    pub verdict_counts: BTreeMap<String, u64>,
    /// Records read to find `items` (search scans; page reads read exactly the page).
    pub scanned: u64,
    pub skipped: usize,
}

/// The questions two evaluation runs disagree on: right in one and wrong in the other (the
/// pairs that decide McNemar's test), each with both runs' records.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscordantList {
    pub generation: u64,
    pub a: RunId,
    pub b: RunId,
    /// Right under `a`, wrong under `b`.
    pub b_count: u64,
    /// Wrong under `a`, right under `b`.
    pub c_count: u64,
    /// Questions present in both runs with the same id.
    pub paired: u64,
    /// Questions whose ids differ at the same index (not the same dataset order).
    pub mismatched: u64,
    pub pairs: Vec<(StoredQuestion, StoredQuestion)>,
    /// More discordant pairs exist than were kept.
    pub truncated: bool,
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
    /// Queue these jobs in order; those needing an adapter an earlier job builds are held
    /// back and submitted when it exists.
    Submit(Vec<JobSpec>),
    /// [`Command::Submit`] without the jobs whose result the store already holds or whose
    /// twin is queued (a recipe launched again picks up where it stopped).
    SubmitReusing(Vec<JobSpec>),
    /// Read the recipes (built-in and `<data dir>/recipes/*.toml`), their tables and the
    /// measured speeds.
    LoadRecipes(RecipeData),
    CompletePath {
        target: InputTarget,
        text: String,
    },
    LoadDiscordant {
        generation: u64,
        a: RunId,
        b: RunId,
    },
    /// The paired tests of one Results column against a reference row.
    LoadPaired(results::PairedRequest),
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
    TrainField(TrainField),
    /// The data set a recipe leaves for the user to name, by its index in the recipe's list.
    RecipeData(usize),
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
    pub train: TrainState,
    pub recipes: RecipesState,
    /// Jobs waiting for an adapter that a queued job builds (see [`Command::Submit`]).
    pub held: Vec<JobSpec>,
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
            adapters: AdaptersState::new(),
            compose: ComposeState::new(),
            jobs: JobsState::new(),
            results: ResultsState::new(),
            inspect: InspectState::new(),
            train: TrainState::new(),
            recipes: RecipesState::new(),
            held: Vec::new(),
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
            Command::LoadRecipes(RecipeData::new()),
        ])
    }

    pub(crate) fn info(&mut self, text: impl Into<String>) {
        self.status = Some(StatusLine {
            text: text.into(),
            is_error: false,
        });
    }

    pub(crate) fn error(&mut self, text: impl Into<String>) {
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
        Action::Job(event) => jobs::on_job_event(app, event),
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
            app.recipes.loading = false;
            app.results.pending = None;
            app.error(why);
            None
        }
        Action::Refresh => {
            app.info("reloading");
            let mut commands = vec![
                Command::LoadAdapters,
                Command::LoadRuns,
                Command::LoadResults,
                Command::LoadRecipes(app.recipes.data.clone()),
            ];
            // The open run's page too: a running evaluation adds records as it goes.
            let from = app.inspect.page_from;
            commands.extend(inspect::request_records(app, from));
            Some(Command::Batch(commands))
        }
        other => match app.tab {
            Tab::Adapters => adapters::update(app, other),
            Tab::Compose => compose::update(app, other),
            Tab::Jobs => jobs::update(app, other),
            Tab::Results => results::update(app, other),
            Tab::Inspect => inspect::update(app, other),
            Tab::Train => train::update(app, other),
            Tab::Recipes => recipes::update(app, other),
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
    // The recipes' tables follow the runs, read only while the screen shows them.
    if app.tab == Tab::Recipes && !app.recipes.loading && std::mem::take(&mut app.recipes.stale) {
        app.recipes.loading = true;
        commands.push(Command::LoadRecipes(app.recipes.data.clone()));
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
    if tab == Tab::Recipes && !app.recipes.loading {
        // User recipes may have been written since: read them again on the way in.
        app.recipes.loading = true;
        return Some(Command::LoadRecipes(app.recipes.data.clone()));
    }
    None
}

/// Answers of the store and the engine go to the screen whose data they are.
fn on_loaded(app: &mut App, loaded: Loaded) -> Option<Command> {
    match loaded {
        Loaded::Adapters { adapters, skipped } => adapters::on_loaded(app, adapters, skipped),
        Loaded::Runs { runs, skipped } => jobs::on_loaded(app, runs, skipped),
        Loaded::Results(table) => results::on_loaded(app, table),
        Loaded::Records(page) => inspect::on_records(app, page),
        Loaded::Compare {
            generation,
            run,
            record,
        } => inspect::on_compare(app, generation, run, record),
        Loaded::Submitted(ids) => {
            let list: Vec<String> = ids.iter().map(|id| super::format::short_id(*id)).collect();
            app.info(format!(
                "queued {} job(s): {} (see Jobs)",
                ids.len(),
                list.join(" ")
            ));
            // A recipe launched from its screen stays there: its table shows the progress.
            if app.tab != Tab::Recipes {
                app.tab = Tab::Jobs;
            }
            app.recipes.stale = true;
            Some(Command::LoadRuns)
        }
        Loaded::Held(specs) => {
            let n = specs.len();
            app.held.extend(specs);
            app.info(format!(
                "{n} job(s) wait for the adapters the queued jobs build; they are queued as those finish"
            ));
            None
        }
        Loaded::Recipes(views) => recipes::on_loaded(app, views),
        Loaded::Completion {
            target,
            text,
            candidates,
        } => {
            if app.input == Some(target) {
                match target {
                    InputTarget::TrainField(field) => train::set_completion(app, field, text),
                    InputTarget::RecipeData(i) => recipes::set_completion(app, i, text),
                    InputTarget::FormField(field) => {
                        if let Some(value) = app.compose.field_mut(field) {
                            *value = text;
                        }
                    }
                    _ => {}
                }
                if candidates.len() > 1 {
                    app.info(format!(
                        "{} matches: {}",
                        candidates.len(),
                        candidates.join("  ")
                    ));
                }
            }
            None
        }
        Loaded::Discordant(list) => inspect::on_discordant(app, *list),
        Loaded::Paired(view) => results::on_paired(app, *view),
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
