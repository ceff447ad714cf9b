//! The QA skill's own test: reading comprehension, the passage shown in the prompt
//! ("Not in context" is its own answer class); EM, token F1 (headline) and contains.

use crate::datasets::{parse_qa, DatasetError, QaItem};
use crate::driver::EvalError;
use crate::prompts::{qa_prompt, Prompt};
use crate::sandbox::Sandbox;
use crate::task::{Grade, PromptOptions, Task, TaskInfo};
use std::path::Path;

pub struct Qa;

static INFO: TaskInfo = TaskInfo {
    name: "qa",
    aliases: &[],
    summary: "QA skill: reading comprehension with the passage given (EM, F1, contains)",
    default_dataset: "builtin:qa-test",
    metrics: &["em", "f1", "contains"],
    headline: "f1",
    needs_sandbox: false,
};

impl Task for Qa {
    type Item = QaItem;

    fn info(&self) -> &'static TaskInfo {
        &INFO
    }

    fn parse(&self, path: &Path, text: &str) -> Result<Vec<QaItem>, DatasetError> {
        parse_qa(path, text)
    }

    fn id<'a>(&self, item: &'a QaItem) -> &'a str {
        &item.id
    }

    fn gold(&self, item: &QaItem) -> String {
        item.answers.join(" | ")
    }

    fn prompt(&self, item: &QaItem, _: &PromptOptions) -> Prompt {
        qa_prompt(&item.question, item.context.as_deref())
    }

    fn grade(
        &self,
        items: &[&QaItem],
        outputs: &[&str],
        _: Option<&Sandbox>,
    ) -> Result<Vec<Grade>, EvalError> {
        Ok(super::grade_qa_items(items, outputs))
    }
}
