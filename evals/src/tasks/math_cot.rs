//! The math skill's own test: chain of thought ending in `#### N`, graded as
//! lm-evaluation-harness grades gsm8k (strict match: the headline; flexible extract).

use crate::datasets::{parse_math, DatasetError, MathItem};
use crate::driver::EvalError;
use crate::mathcot::grade_cot;
use crate::prompts::{cot_prompt, Prompt};
use crate::sandbox::Sandbox;
use crate::task::{Grade, PromptOptions, Task, TaskInfo};
use std::path::Path;

pub struct MathCot;

static INFO: TaskInfo = TaskInfo {
    name: "math-cot",
    aliases: &["math"],
    summary: "math skill: chain of thought ending in `#### N` (gsm8k strict/flexible match)",
    default_dataset: "builtin:math-test",
    metrics: &["strict_match", "flexible_match"],
    headline: "strict_match",
    needs_sandbox: false,
    grader_version: 1,
};

impl Task for MathCot {
    type Item = MathItem;

    fn info(&self) -> &'static TaskInfo {
        &INFO
    }

    fn parse(&self, path: &Path, text: &str) -> Result<Vec<MathItem>, DatasetError> {
        parse_math(path, text)
    }

    fn prompt(&self, item: &MathItem, opts: &PromptOptions) -> Prompt {
        cot_prompt(&item.question, opts.shots)
    }

    /// The worked solution (GSM8K style, `#### N` last).
    fn reference(&self, item: &MathItem) -> Option<String> {
        item.solution.clone()
    }

    fn grade(
        &self,
        items: &[&MathItem],
        outputs: &[&str],
        _: Option<&Sandbox>,
    ) -> Result<Vec<Grade>, EvalError> {
        Ok(items
            .iter()
            .zip(outputs)
            .map(|(item, out)| {
                let g = grade_cot(out, item.gold);
                let extracted = g.strict_pred.clone().or(g.flexible_pred.clone());
                Grade {
                    pred: extracted.clone(),
                    extracted,
                    correct: g.strict_match,
                    scores: [
                        (
                            "strict_match".to_string(),
                            f64::from(u8::from(g.strict_match)),
                        ),
                        (
                            "flexible_match".to_string(),
                            f64::from(u8::from(g.flexible_match)),
                        ),
                    ]
                    .into(),
                    ..Default::default()
                }
            })
            .collect())
    }
}
