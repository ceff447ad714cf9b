//! The code skill's own test: exercises answered zero-shot with a program (as the skill was
//! trained), correct when the program passes the exercise's asserts in the sandbox.

use crate::codemath;
use crate::datasets::{parse_code, CodeExercise, DatasetError};
use crate::driver::EvalError;
use crate::prompts::{code_prompt, Prompt};
use crate::sandbox::Sandbox;
use crate::task::{Grade, PromptOptions, Task, TaskInfo};
use std::path::Path;

pub struct Code;

static INFO: TaskInfo = TaskInfo {
    name: "code",
    aliases: &[],
    summary: "code skill: exercises whose programs must pass their asserts in the sandbox",
    default_dataset: "builtin:code-test",
    metrics: &["accuracy"],
    headline: "accuracy",
    needs_sandbox: true,
    grader_version: 1,
};

impl Task for Code {
    type Item = CodeExercise;

    fn info(&self) -> &'static TaskInfo {
        &INFO
    }

    fn parse(&self, path: &Path, text: &str) -> Result<Vec<CodeExercise>, DatasetError> {
        parse_code(path, text)
    }

    fn prompt(&self, item: &CodeExercise, _: &PromptOptions) -> Prompt {
        code_prompt(&item.instruction, &item.input)
    }

    /// The reference program, fenced as the code skill learned to answer.
    fn reference(&self, item: &CodeExercise) -> Option<String> {
        item.solution.as_deref().map(|s| {
            if s.trim_start().starts_with("```") {
                s.to_string()
            } else {
                crate::prompts::fenced(s)
            }
        })
    }

    fn grade(
        &self,
        items: &[&CodeExercise],
        outputs: &[&str],
        sandbox: Option<&Sandbox>,
    ) -> Result<Vec<Grade>, EvalError> {
        let sandbox = super::need_sandbox(sandbox, INFO.name)?;
        let pairs: Vec<(String, String)> = items
            .iter()
            .zip(outputs)
            .map(|(i, o)| (o.to_string(), i.test.clone()))
            .collect();
        Ok(super::program_grades(codemath::grade_tests(
            sandbox, &pairs,
        )?))
    }
}
