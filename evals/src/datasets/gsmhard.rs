//! GSM-Hard in its two published shapes: the LoRA Soups repository's JSON list of
//! `{"instruction", "answer": float}` and PAL's JSONL of `{"input", "target", "code"?}`.

use super::{DatasetError, MathItem, Row};

pub(super) fn lorasoups_item(row: &Row) -> Result<MathItem, DatasetError> {
    Ok(MathItem {
        id: row.id(),
        question: row.str_field("instruction")?,
        gold: row.num_field("answer")?,
        // The PoT demo files carry the program in `output`.
        solution: row.opt_str("output")?,
    })
}

pub(super) fn pal_item(row: &Row) -> Result<MathItem, DatasetError> {
    Ok(MathItem {
        id: row.id(),
        question: row.str_field("input")?,
        gold: row.num_field("target")?,
        solution: row.opt_str("code")?,
    })
}
