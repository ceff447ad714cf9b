//! Manual-QA: questions about a proprietary manual, closed book (the passage is never shown:
//! the knowledge must come from the weights); graded as short-answer QA (`qa.rs`).
//!
//! The headline is `contains` (the gold answer, normalized, appears as whole words in the
//! normalized prediction): a right/wrong verdict per question, so methods can be compared
//! pairwise (McNemar), that does not punish "The warranty lasts 24 months." for its framing.
//! Token F1 is kept beside it but is not the headline: it gives about half credit to a wrong
//! number with the right unit, so it measured answer format more than knowledge.

use super::qa::ShortAnswerQa;
use crate::task::TaskInfo;

static INFO: TaskInfo = TaskInfo {
    name: "manual-qa",
    aliases: &[],
    summary: "questions about a manual, closed book (contains, EM, F1)",
    default_dataset: "builtin:manualqa-test",
    metrics: &["contains", "em", "f1"],
    headline: "contains",
    needs_sandbox: false,
    grader_version: 1,
};

pub const MANUAL_QA: ShortAnswerQa = ShortAnswerQa {
    info: &INFO,
    closed_book: true,
};
