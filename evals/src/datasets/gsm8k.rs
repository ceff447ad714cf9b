//! GSM8K JSONL: `{"question", "answer"}` where the answer is a worked solution whose last line
//! is `#### N`.

use super::{DatasetError, MathItem, Row};

/// The number after the last `####` of a GSM8K answer (commas stripped), if any.
pub fn parse_gsm8k_answer(answer: &str) -> Option<f64> {
    let tail = &answer[answer.rfind("####")? + 4..];
    let token = tail.split_whitespace().next()?;
    crate::codemath::parse_number(token)
}

pub(super) fn math_item(row: &Row) -> Result<MathItem, DatasetError> {
    let question = row.str_field("question")?;
    let answer = row.str_field("answer")?;
    let gold = parse_gsm8k_answer(&answer).ok_or_else(|| {
        row.err("field \"answer\" must end with \"#### <number>\" (GSM8K's final-answer marker)")
    })?;
    Ok(MathItem {
        id: row.id(),
        question,
        gold,
        solution: Some(answer),
    })
}
