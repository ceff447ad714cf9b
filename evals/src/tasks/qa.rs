//! Short-answer QA, graded by EM, token F1 (the headline) and contains. The QA skill's own
//! test (this file's task) shows the passage, reading-comprehension style, with "Not in
//! context" as its own answer class; manual-QA (`manual_qa.rs`) is the same task closed book.

use crate::datasets::{parse_qa, DatasetError, QaItem};
use crate::driver::EvalError;
use crate::manualqa::grade_qa;
use crate::prompts::{qa_prompt, Prompt};
use crate::sandbox::Sandbox;
use crate::task::{Grade, PromptOptions, Task, TaskInfo};
use std::path::Path;

/// A short-answer QA task: its description, and whether the passage is hidden.
pub struct ShortAnswerQa {
    pub info: &'static TaskInfo,
    /// The knowledge must come from the weights: the item's passage is never shown.
    pub closed_book: bool,
}

static INFO: TaskInfo = TaskInfo {
    name: "qa",
    aliases: &[],
    summary: "QA skill: reading comprehension with the passage given (EM, F1, contains)",
    default_dataset: "builtin:qa-test",
    metrics: &["em", "f1", "contains"],
    headline: "f1",
    needs_sandbox: false,
    grader_version: 1,
};

pub const QA: ShortAnswerQa = ShortAnswerQa {
    info: &INFO,
    closed_book: false,
};

impl Task for ShortAnswerQa {
    type Item = QaItem;

    fn info(&self) -> &'static TaskInfo {
        self.info
    }

    fn parse(&self, path: &Path, text: &str) -> Result<Vec<QaItem>, DatasetError> {
        parse_qa(path, text)
    }

    fn prompt(&self, item: &QaItem, _: &PromptOptions) -> Prompt {
        let context = if self.closed_book {
            None
        } else {
            item.context.as_deref()
        };
        qa_prompt(&item.question, context)
    }

    /// The first gold answer.
    fn reference(&self, item: &QaItem) -> Option<String> {
        item.answers.first().cloned()
    }

    fn grade(
        &self,
        items: &[&QaItem],
        outputs: &[&str],
        _: Option<&Sandbox>,
    ) -> Result<Vec<Grade>, EvalError> {
        Ok(items
            .iter()
            .zip(outputs)
            .map(|(item, out)| {
                let g = grade_qa(out, &item.answers, item.unanswerable);
                Grade {
                    extracted: Some(g.pred.clone()),
                    pred: Some(g.pred),
                    correct: g.scores.em == 1.0,
                    scores: [
                        ("em".to_string(), g.scores.em),
                        ("f1".to_string(), g.scores.f1),
                        ("contains".to_string(), g.scores.contains),
                    ]
                    .into(),
                    ..Default::default()
                }
            })
            .collect())
    }
}
