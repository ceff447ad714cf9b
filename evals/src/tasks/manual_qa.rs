//! Manual-QA: questions about a proprietary manual, closed book (the passage is never shown:
//! the knowledge must come from the weights); EM, token F1 (headline) and contains.

use crate::datasets::{parse_qa, DatasetError, QaItem};
use crate::driver::EvalError;
use crate::prompts::{qa_prompt, Prompt};
use crate::sandbox::Sandbox;
use crate::task::{Grade, PromptOptions, Task, TaskInfo};
use std::path::Path;

pub struct ManualQa;

static INFO: TaskInfo = TaskInfo {
    name: "manual-qa",
    aliases: &[],
    summary: "questions about a manual, closed book (EM, F1, contains)",
    default_dataset: "builtin:manualqa-test",
    metrics: &["em", "f1", "contains"],
    headline: "f1",
    needs_sandbox: false,
};

impl Task for ManualQa {
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
        qa_prompt(&item.question, None)
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
