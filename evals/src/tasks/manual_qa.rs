//! Manual-QA: questions about a proprietary manual, closed book (the passage is never shown:
//! the knowledge must come from the weights); graded as short-answer QA (`qa.rs`).

use super::qa::ShortAnswerQa;
use crate::task::TaskInfo;

static INFO: TaskInfo = TaskInfo {
    name: "manual-qa",
    aliases: &[],
    summary: "questions about a manual, closed book (EM, F1, contains)",
    default_dataset: "builtin:manualqa-test",
    metrics: &["em", "f1", "contains"],
    headline: "f1",
    needs_sandbox: false,
};

pub const MANUAL_QA: ShortAnswerQa = ShortAnswerQa {
    info: &INFO,
    closed_book: true,
};
