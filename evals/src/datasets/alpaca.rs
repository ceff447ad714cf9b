//! Alpaca-style instruction data: `[{"instruction", "input"?, "output"}]`, used to train skills,
//! and with a `test` per row, the code skill's test set.

use super::{CodeExercise, DatasetError, Instruction, Row};

pub(super) fn instruction(row: &Row) -> Result<Instruction, DatasetError> {
    Ok(Instruction {
        instruction: row.str_field("instruction")?,
        input: row.opt_str("input")?.unwrap_or_default(),
        output: row.str_field("output")?,
    })
}

/// An exercise of the code skill's test set: the instruction and the tests its answer must
/// pass (`output`, the reference program, is optional here).
pub(super) fn code_exercise(row: &Row) -> Result<CodeExercise, DatasetError> {
    Ok(CodeExercise {
        id: row.id(),
        instruction: row.str_field("instruction")?,
        input: row.opt_str("input")?.unwrap_or_default(),
        test: row.str_field("test")?,
        solution: row.opt_str("output")?,
    })
}
