//! Code-math: word problems answered with a Python program (program of thought), run in the
//! sandbox; correct when `solution()` returns the gold within PAL's tolerance.

use crate::codemath;
use crate::datasets::{parse_math, DatasetError, MathItem};
use crate::driver::EvalError;
use crate::prompts::{pot_prompt, Prompt};
use crate::sandbox::Sandbox;
use crate::task::{Grade, PromptOptions, Task, TaskInfo};
use std::path::Path;

pub struct CodeMath;

static INFO: TaskInfo = TaskInfo {
    name: "code-math",
    aliases: &[],
    summary: "word problems answered with Python programs, run in the sandbox",
    default_dataset: "builtin:codemath-test",
    metrics: &["accuracy"],
    headline: "accuracy",
    needs_sandbox: true,
    grader_version: 1,
};

impl Task for CodeMath {
    type Item = MathItem;

    fn info(&self) -> &'static TaskInfo {
        &INFO
    }

    fn parse(&self, path: &Path, text: &str) -> Result<Vec<MathItem>, DatasetError> {
        parse_math(path, text)
    }

    fn prompt(&self, item: &MathItem, opts: &PromptOptions) -> Prompt {
        pot_prompt(&item.question, opts.shots)
    }

    /// The reference program, fenced as the demos' answers are.
    fn reference(&self, item: &MathItem) -> Option<String> {
        item.solution.as_deref().map(crate::prompts::fenced)
    }

    fn grade(
        &self,
        items: &[&MathItem],
        outputs: &[&str],
        sandbox: Option<&Sandbox>,
    ) -> Result<Vec<Grade>, EvalError> {
        let sandbox = super::need_sandbox(sandbox, INFO.name)?;
        let pairs: Vec<(String, f64)> = items
            .iter()
            .zip(outputs)
            .map(|(i, o)| (o.to_string(), i.gold))
            .collect();
        Ok(super::program_grades(codemath::grade_many(
            sandbox, &pairs,
        )?))
    }
}
