//! The LoRA Soups QA sets: manual QA (`{"instruction", "answer", "context"?, "output"?}`) and
//! reading comprehension, whose instruction embeds `Context:` and `Question:` and whose
//! unanswerable questions have the gold "Not in context".

use super::{DatasetError, QaItem, Row};

/// The gold answer of unanswerable reading-comprehension questions.
pub const NOT_IN_CONTEXT: &str = "Not in context";

pub(super) fn qa_item(row: &Row) -> Result<QaItem, DatasetError> {
    let answer = row.str_field("answer")?;
    let unanswerable = crate::manualqa::is_not_in_context(&answer);
    Ok(QaItem {
        id: row.id(),
        question: row.str_field("instruction")?,
        context: row.opt_str("context")?,
        answers: vec![answer],
        unanswerable,
    })
}

/// Split a reading-comprehension instruction into (context, question). Returns `None` when the
/// `Context:` / `Question:` markers are missing.
pub fn split_rc_instruction(instruction: &str) -> Option<(String, String)> {
    let c = instruction.find("Context:")?;
    let q = instruction.rfind("Question:")?;
    if q < c {
        return None;
    }
    let context = instruction[c + "Context:".len()..q].trim().to_string();
    let question = instruction[q + "Question:".len()..].trim().to_string();
    Some((context, question))
}

pub(super) fn rc_item(row: &Row) -> Result<QaItem, DatasetError> {
    let instruction = row.str_field("instruction")?;
    // Rows without the markers (the demo files mix in plain instructions) are context-free
    // questions.
    let (context, question) = match split_rc_instruction(&instruction) {
        Some((c, q)) => (Some(c), q),
        None => (None, instruction.trim().to_string()),
    };
    let answer = row.str_field("answer")?;
    let unanswerable = crate::manualqa::is_not_in_context(&answer);
    Ok(QaItem {
        id: row.id(),
        question,
        context,
        answers: vec![answer],
        unanswerable,
    })
}
