//! What a task is: one definition (lm-evaluation-harness style) of how a dataset file becomes
//! items, how an item becomes a prompt with its stop strings, how an answer is graded, which
//! metrics it has and which of them is the headline, and the dataset it runs on by default.
//!
//! A task is written once, in its own file under [`crate::tasks`], against the typed
//! [`Task`] trait, and registered with one line in [`crate::tasks::REGISTRY`]. Everything else
//! (the engine's evaluation job, the recipes' tables, the command line's `--task`, the
//! dashboard's task list) reaches it through the type-erased [`EvalTask`] handle, so adding a
//! task touches no other crate.

use crate::codemath::Verdict;
use crate::datasets::{CodeExercise, DatasetError, MathItem, QaItem};
use crate::driver::{self, EvalError, EvalRun, EvalSummary};
use crate::prompts::Prompt;
use crate::sandbox::{RunOutcome, Sandbox};
use std::collections::BTreeMap;
use std::path::Path;

/// A task's fixed description.
#[derive(Debug)]
pub struct TaskInfo {
    /// The name used on the command line, in recipes and in stored run specs (`code-math`).
    pub name: &'static str,
    /// Other accepted spellings (`math` for `math-cot`).
    pub aliases: &'static [&'static str],
    /// One line for lists and `--help`.
    pub summary: &'static str,
    /// The dataset used when the user names none (`builtin:...` or a path).
    pub default_dataset: &'static str,
    /// Every score a record of this task carries, each in [0, 1].
    pub metrics: &'static [&'static str],
    /// The score reported as the run's main number.
    pub headline: &'static str,
    /// Grading runs programs: the engine must start a sandbox.
    pub needs_sandbox: bool,
    /// The version of this task's parsing and grading of answers. Raise it with any change
    /// that can turn a stored answer's verdict or scores: an evaluation records the version
    /// that graded it, and a recipe re-grades (answers from the generation cache) the ones
    /// graded by another. 1 is the first recorded version; evaluations stored before versions
    /// were recorded carry none and count as older.
    pub grader_version: u32,
}

/// How an item is turned into a prompt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PromptOptions {
    /// Few-shot demos (tasks without demos ignore it).
    pub shots: usize,
}

/// What grading says of one answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grade {
    /// The program or answer string that was graded.
    pub extracted: Option<String>,
    /// The prediction as graded (solution()'s number, the extracted number, the cleaned answer).
    pub pred: Option<String>,
    /// Sandbox tasks: the program's verdict.
    pub verdict: Option<Verdict>,
    pub correct: bool,
    /// Every metric of [`TaskInfo::metrics`].
    pub scores: BTreeMap<String, f64>,
    /// The sandbox run, when a program ran.
    pub run: Option<RunOutcome>,
}

/// What the driver needs of any item: its id in the dataset and its gold as text (for the
/// record).
pub trait TaskItem: Send + Sync + 'static {
    fn id(&self) -> &str;
    fn gold_text(&self) -> String;
}

impl TaskItem for MathItem {
    fn id(&self) -> &str {
        &self.id
    }
    fn gold_text(&self) -> String {
        crate::mathcot::format_gold(self.gold)
    }
}

impl TaskItem for QaItem {
    fn id(&self) -> &str {
        &self.id
    }
    fn gold_text(&self) -> String {
        self.answers.join(" | ")
    }
}

impl TaskItem for CodeExercise {
    fn id(&self) -> &str {
        &self.id
    }
    /// The tests the program must pass.
    fn gold_text(&self) -> String {
        self.test.clone()
    }
}

/// A task over items of one type. Implement this in a new file under `tasks/` and add one line
/// to the registry; the blanket impl turns it into an [`EvalTask`].
pub trait Task: Send + Sync + 'static {
    type Item: TaskItem;

    fn info(&self) -> &'static TaskInfo;
    /// Reads a dataset file's text; errors name the file and line.
    fn parse(&self, path: &Path, text: &str) -> Result<Vec<Self::Item>, DatasetError>;
    /// The prompt in both forms (plain text and chat turns) with its stop strings.
    fn prompt(&self, item: &Self::Item, opts: &PromptOptions) -> Prompt;
    /// Grades a batch of answers (newly generated text only), one [`Grade`] per item in order.
    /// `sandbox` is `Some` exactly when the task's info says it needs one.
    fn grade(
        &self,
        items: &[&Self::Item],
        outputs: &[&str],
        sandbox: Option<&Sandbox>,
    ) -> Result<Vec<Grade>, EvalError>;
    /// The reference answer as a model should write it after the prompt (a fenced program, a
    /// worked solution, the first gold answer), for the teacher-forced log-likelihood the
    /// records carry; `None` when the item has none.
    fn reference(&self, item: &Self::Item) -> Option<String> {
        let _ = item;
        None
    }
}

/// A dataset parsed by its task, ready to be evaluated.
pub trait LoadedTask: Send + Sync {
    /// Items in the file.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Runs the evaluation ([`driver::evaluate`]).
    fn evaluate(&self, run: &mut EvalRun<'_, '_>) -> Result<EvalSummary, EvalError>;
}

/// The object-safe face of a [`Task`]; implemented for every `Task`.
pub trait AnyTask: Send + Sync {
    fn info(&self) -> &'static TaskInfo;
    fn load(&'static self, path: &Path, text: &str) -> Result<Box<dyn LoadedTask>, DatasetError>;
}

struct Loaded<T: Task> {
    task: &'static T,
    items: Vec<T::Item>,
}

impl<T: Task> LoadedTask for Loaded<T> {
    fn len(&self) -> usize {
        self.items.len()
    }

    fn evaluate(&self, run: &mut EvalRun<'_, '_>) -> Result<EvalSummary, EvalError> {
        driver::evaluate(self.task, &self.items, run)
    }
}

impl<T: Task> AnyTask for T {
    fn info(&self) -> &'static TaskInfo {
        Task::info(self)
    }

    fn load(&'static self, path: &Path, text: &str) -> Result<Box<dyn LoadedTask>, DatasetError> {
        let items = self.parse(path, text)?;
        Ok(Box::new(Loaded { task: self, items }))
    }
}

/// A registered task, by handle: copied freely, compared and stored by name.
#[derive(Clone, Copy)]
pub struct EvalTask(&'static dyn AnyTask);

impl EvalTask {
    /// The task called `name` (or one of its aliases).
    pub fn find(name: &str) -> Option<EvalTask> {
        crate::tasks::REGISTRY
            .iter()
            .find(|t| {
                let info = t.info();
                info.name == name || info.aliases.contains(&name)
            })
            .copied()
    }

    /// Every registered task, in registry order.
    pub fn all() -> impl Iterator<Item = EvalTask> {
        crate::tasks::REGISTRY.iter().copied()
    }

    /// The names of every task, for messages.
    pub fn names() -> Vec<&'static str> {
        EvalTask::all().map(|t| t.name()).collect()
    }

    pub fn info(self) -> &'static TaskInfo {
        self.0.info()
    }

    pub fn name(self) -> &'static str {
        self.info().name
    }

    pub fn headline(self) -> &'static str {
        self.info().headline
    }

    pub fn default_dataset(self) -> &'static str {
        self.info().default_dataset
    }

    /// See [`TaskInfo::grader_version`].
    pub fn grader_version(self) -> u32 {
        self.info().grader_version
    }

    /// Parses a dataset for this task.
    pub fn load(self, path: &Path, text: &str) -> Result<Box<dyn LoadedTask>, DatasetError> {
        self.0.load(path, text)
    }

    /// The handle of a task value (the registry's entries are made with it).
    pub const fn of(t: &'static dyn AnyTask) -> EvalTask {
        EvalTask(t)
    }
}

/// The error of an unknown task name, listing the known ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown task {name:?}: expected one of {}", EvalTask::names().join(", "))]
pub struct UnknownTask {
    pub name: String,
}

impl std::str::FromStr for EvalTask {
    type Err = UnknownTask;
    fn from_str(s: &str) -> Result<Self, UnknownTask> {
        EvalTask::find(s).ok_or_else(|| UnknownTask {
            name: s.to_string(),
        })
    }
}

impl PartialEq for EvalTask {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for EvalTask {}

impl std::hash::Hash for EvalTask {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

impl std::fmt::Debug for EvalTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EvalTask({})", self.name())
    }
}

impl std::fmt::Display for EvalTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for EvalTask {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for EvalTask {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}
