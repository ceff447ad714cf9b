//! The Recipes screen: the built-in recipes and the user's (`<data dir>/recipes/*.toml`), each
//! budget with an estimate of its wall time on this machine, the table of the selected budget
//! filling in as its jobs finish, and Enter to launch it. What the screen shows is read off the
//! UI thread by [`crate::dashboard::recipe_views`]; launching plans the recipe here (the
//! planner does no I/O) and hands the jobs to the engine in order.

use std::collections::BTreeMap;

use soup_core::engine::recipe::{Budget, Recipe};

use super::{move_cursor, text_input};
use crate::dashboard::app::{Action, App, Command, InputTarget};

/// Data sets typed by the user, by recipe origin, then by the recipe's data name.
pub type RecipeData = BTreeMap<String, BTreeMap<String, String>>;

/// One recipe as the screen shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecipeView {
    pub name: String,
    /// `built-in` or the file it was read from: the key of typed data.
    pub origin: String,
    /// The recipe as written (before the user's data is applied); `None` when it does not
    /// parse, with the reason in `error`.
    pub recipe: Option<Recipe>,
    pub error: Option<String>,
    /// The data sets the recipe leaves for the user to name ([`Recipe::data_names`] whose
    /// value is empty).
    pub needs_data: Vec<String>,
    pub budgets: Vec<BudgetView>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BudgetView {
    pub name: String,
    pub budget: Budget,
    pub estimate: Estimate,
    /// The comparison table's cells; `None` when the recipe cannot be planned yet.
    pub table: Option<RecipeTable>,
    /// Why it cannot be planned (data to name, a bad setting).
    pub plan_error: Option<String>,
}

/// This machine's speeds, measured on finished runs in the store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Speeds {
    /// Training (skill LoRAs, DATA-MIX, CAT) tokens per second, and tokens per example.
    pub train_tokens_per_s: Option<f64>,
    pub tokens_per_example: Option<f64>,
    pub train_runs: usize,
    /// Evaluation: generated tokens per second of wall time (prompts, grading and model
    /// loading included), and generated tokens per question.
    pub gen_tokens_per_s: Option<f64>,
    pub tokens_per_question: Option<f64>,
    pub eval_runs: usize,
}

/// A budget's wall-time estimate and the formula's inputs:
/// `examples × tokens/example ÷ train tokens/s + questions × tokens/question ÷ gen tokens/s`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Estimate {
    pub train_jobs: usize,
    /// Examples seen in training, epochs and passes counted (`None`: a set of unknown size).
    pub train_examples: Option<u64>,
    pub eval_jobs: usize,
    pub questions: Option<u64>,
    pub max_new_tokens: usize,
    pub speeds: Speeds,
}

impl Estimate {
    /// Seconds for the training part, when it is measured.
    pub fn train_seconds(&self) -> Option<f64> {
        let s = &self.speeds;
        let tokens = self.train_examples? as f64 * s.tokens_per_example?;
        Some(tokens / s.train_tokens_per_s?.max(1e-9))
    }

    /// Tokens generated per question: the measured mean, at most the budget's limit.
    pub fn tokens_per_question(&self) -> Option<f64> {
        self.speeds
            .tokens_per_question
            .map(|t| t.min(self.max_new_tokens as f64))
    }

    pub fn eval_seconds(&self) -> Option<f64> {
        let tokens = self.questions? as f64 * self.tokens_per_question()?;
        Some(tokens / self.speeds.gen_tokens_per_s?.max(1e-9))
    }

    /// The whole estimate; `None` while either part has no measurement.
    pub fn seconds(&self) -> Option<f64> {
        let train = if self.train_jobs == 0 {
            0.0
        } else {
            self.train_seconds()?
        };
        Some(train + self.eval_seconds()?)
    }
}

/// The comparison's rows × columns, each cell with the state of its evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct RecipeTable {
    pub columns: Vec<String>,
    pub rows: Vec<TableRow>,
    /// Adapter builds (skill LoRAs, DATA-MIX, CAT, merges): done / all.
    pub builds_done: usize,
    pub builds: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableRow {
    pub method: String,
    pub cells: Vec<CellState>,
}

/// An evaluation of the table: not submitted yet, in the queue, running, or finished with its
/// headline score. Read as `soup recipe --stored` reads the store: the run whose spec is the
/// planned job's.
#[derive(Debug, Clone, PartialEq)]
pub enum CellState {
    /// The budget does not grade this row on this column (its skill_tests).
    NotGraded,
    Pending,
    Queued,
    Running,
    Done(Option<DoneCell>),
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DoneCell {
    pub metric: String,
    pub value: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub n: u64,
}

impl RecipeTable {
    /// Cells finished, and cells in all.
    pub fn progress(&self) -> (usize, usize) {
        let cells = || {
            self.rows
                .iter()
                .flat_map(|r| r.cells.iter())
                .filter(|c| **c != CellState::NotGraded)
        };
        (
            cells().filter(|c| matches!(c, CellState::Done(_))).count(),
            cells().count(),
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RecipesState {
    pub views: Vec<RecipeView>,
    pub cursor: usize,
    /// The budget shown, by index into the recipe's budgets.
    pub budget: usize,
    /// Which data field `i` edits next.
    pub data_cursor: usize,
    pub data: RecipeData,
    pub editing_backup: Option<String>,
    pub loaded: bool,
    pub loading: bool,
    /// Runs changed: read the tables again at the next tick while the screen is shown.
    pub stale: bool,
    pub error: Option<String>,
}

impl RecipesState {
    pub fn new() -> Self {
        RecipesState {
            views: Vec::new(),
            cursor: 0,
            budget: 0,
            data_cursor: 0,
            data: RecipeData::new(),
            editing_backup: None,
            loaded: false,
            loading: false,
            stale: false,
            error: None,
        }
    }

    pub fn selected(&self) -> Option<&RecipeView> {
        self.views.get(self.cursor)
    }

    pub fn selected_budget(&self) -> Option<&BudgetView> {
        let view = self.selected()?;
        view.budgets
            .get(self.budget.min(view.budgets.len().saturating_sub(1)))
    }

    /// What the user typed for `name` of the selected recipe.
    pub fn typed(&self, name: &str) -> String {
        self.selected()
            .and_then(|v| self.data.get(&v.origin))
            .and_then(|m| m.get(name))
            .cloned()
            .unwrap_or_default()
    }

    fn typed_mut(&mut self, index: usize) -> Option<&mut String> {
        let view = self.views.get(self.cursor)?;
        let name = view.needs_data.get(index)?.clone();
        Some(
            self.data
                .entry(view.origin.clone())
                .or_default()
                .entry(name)
                .or_default(),
        )
    }
}

/// A fresh reading of the recipes: the cursor stays on its recipe.
pub fn on_loaded(app: &mut App, views: Vec<RecipeView>) -> Option<Command> {
    let state = &mut app.recipes;
    let keep = state.selected().map(|v| v.origin.clone());
    state.views = views;
    state.loaded = true;
    state.loading = false;
    state.cursor = keep
        .and_then(|o| state.views.iter().position(|v| v.origin == o))
        .unwrap_or(state.cursor)
        .min(state.views.len().saturating_sub(1));
    None
}

/// The completed path for data field `index`.
pub fn set_completion(app: &mut App, index: usize, text: String) {
    if let Some(value) = app.recipes.typed_mut(index) {
        *value = text;
    }
}

/// The Recipes screen's keys: choose a recipe and budget, name its data, launch.
pub fn update(app: &mut App, action: Action) -> Option<Command> {
    if let Some(InputTarget::RecipeData(index)) = app.input {
        let state = &mut app.recipes;
        match action {
            Action::InputSubmit => {
                app.input = None;
                state.editing_backup = None;
                state.data_cursor = index + 1;
                return Some(load(app));
            }
            Action::InputCancel => {
                let backup = state.editing_backup.take();
                if let (Some(old), Some(value)) = (backup, state.typed_mut(index)) {
                    *value = old;
                }
                app.input = None;
            }
            Action::InputComplete => {
                let text = state.typed_mut(index).cloned().unwrap_or_default();
                return Some(Command::CompletePath {
                    target: InputTarget::RecipeData(index),
                    text,
                });
            }
            other => {
                if let Some(value) = state.typed_mut(index) {
                    text_input(value, &other);
                }
            }
        }
        return None;
    }
    let len = app.recipes.views.len();
    if move_cursor(&mut app.recipes.cursor, len, &action) {
        app.recipes.budget = 0;
        app.recipes.data_cursor = 0;
        app.recipes.error = None;
        return None;
    }
    let budgets = app.recipes.selected().map_or(0, |v| v.budgets.len());
    match action {
        Action::Left => {
            app.recipes.budget = app.recipes.budget.saturating_sub(1);
            app.recipes.error = None;
        }
        Action::Right => {
            app.recipes.budget = (app.recipes.budget + 1).min(budgets.saturating_sub(1));
            app.recipes.error = None;
        }
        Action::Edit | Action::Toggle => {
            let needs = app.recipes.selected().map_or(0, |v| v.needs_data.len());
            if needs == 0 {
                app.info("this recipe names all its data: Enter launches it");
                return None;
            }
            let index = app.recipes.data_cursor % needs;
            let state = &mut app.recipes;
            state.editing_backup = state.typed_mut(index).cloned();
            app.input = Some(InputTarget::RecipeData(index));
        }
        Action::Confirm => return launch(app),
        Action::Back => app.recipes.error = None,
        _ => {}
    }
    None
}

/// Reads the recipes again with the data typed so far.
pub fn load(app: &mut App) -> Command {
    app.recipes.loading = true;
    Command::LoadRecipes(app.recipes.data.clone())
}

/// The selected recipe with the user's data applied, planned at the selected budget: its jobs
/// in order, reusing what the store already holds (as `soup recipe` does).
fn launch(app: &mut App) -> Option<Command> {
    match plan_selected(&app.recipes) {
        Ok(jobs) => {
            app.recipes.error = None;
            app.recipes.stale = true;
            Some(Command::SubmitReusing(jobs))
        }
        Err(why) => {
            app.recipes.error = Some(why);
            None
        }
    }
}

/// The jobs of the selected recipe at the selected budget, or what is in the way.
pub fn plan_selected(state: &RecipesState) -> Result<Vec<soup_core::engine::JobSpec>, String> {
    let view = state
        .selected()
        .ok_or("no recipe: put TOML recipes in <data dir>/recipes/")?;
    let recipe = view.recipe.as_ref().ok_or_else(|| {
        format!(
            "{} does not read as a recipe: {}",
            view.origin,
            view.error.clone().unwrap_or_default()
        )
    })?;
    let budget = state
        .selected_budget()
        .ok_or_else(|| format!("recipe {} has no budgets", view.name))?;
    let recipe = with_data(recipe, &view.origin, &state.data)?;
    recipe
        .plan(&budget.name)
        .map(|plan| plan.jobs())
        .map_err(|e| {
            let text = e.to_string();
            if view.needs_data.is_empty() {
                text
            } else {
                format!(
                    "{text} (here: i types the files, Tab completes a path, Enter keeps each one)"
                )
            }
        })
}

/// `recipe` with the user's typed data sets applied.
pub fn with_data(recipe: &Recipe, origin: &str, data: &RecipeData) -> Result<Recipe, String> {
    let mut recipe = recipe.clone();
    if let Some(typed) = data.get(origin) {
        for (name, value) in typed {
            let value = value.trim();
            if !value.is_empty() {
                recipe.set_data(name, value).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(recipe)
}
