//! Alpaca-style instruction data: `[{"instruction", "input"?, "output"}]`, used to train skills.

use super::{DatasetError, Instruction, Row};

pub(super) fn instruction(row: &Row) -> Result<Instruction, DatasetError> {
    Ok(Instruction {
        instruction: row.str_field("instruction")?,
        input: row.opt_str("input")?.unwrap_or_default(),
        output: row.str_field("output")?,
    })
}
