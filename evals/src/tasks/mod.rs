//! The registered tasks, one file each. Adding a task: write `tasks/NAME.rs` implementing
//! [`crate::task::Task`], and add its line to [`REGISTRY`] (and a constant here only if code
//! names the task directly).

pub mod code;
pub mod code_math;
pub mod game_qa;
pub mod manual_qa;
pub mod math_cot;
pub mod qa;

use crate::task::EvalTask;

pub const CODE_MATH: EvalTask = EvalTask::of(&code_math::CodeMath);
pub const MANUAL_QA: EvalTask = EvalTask::of(&manual_qa::MANUAL_QA);
pub const MATH_COT: EvalTask = EvalTask::of(&math_cot::MathCot);
pub const CODE: EvalTask = EvalTask::of(&code::Code);
pub const QA: EvalTask = EvalTask::of(&qa::QA);

/// Every task, in the order lists show them.
pub static REGISTRY: &[EvalTask] = &[
    CODE_MATH,
    MANUAL_QA,
    MATH_COT,
    CODE,
    QA,
    EvalTask::of(&game_qa::GameQa),
];

/// Grades answers whose programs ran in the sandbox (one score, `accuracy`).
pub(crate) fn program_grades(
    grades: Vec<crate::codemath::CodeMathGrade>,
) -> Vec<crate::task::Grade> {
    grades
        .into_iter()
        .map(|g| crate::task::Grade {
            extracted: g.program,
            pred: g.pred.map(|x| x.to_string()),
            verdict: Some(g.verdict),
            correct: g.correct,
            scores: [("accuracy".to_string(), f64::from(u8::from(g.correct)))].into(),
            run: g.run,
        })
        .collect()
}

/// The sandbox a program-running task was given, or an error saying it was not.
pub(crate) fn need_sandbox<'a>(
    sandbox: Option<&'a crate::sandbox::Sandbox>,
    task: &str,
) -> Result<&'a crate::sandbox::Sandbox, crate::driver::EvalError> {
    sandbox.ok_or_else(|| {
        crate::driver::EvalError::Sandbox(crate::sandbox::SandboxError::Internal(format!(
            "task {task} runs programs but was given no sandbox"
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_are_unique_and_found() {
        let mut seen = std::collections::BTreeSet::new();
        for t in EvalTask::all() {
            let info = t.info();
            for n in std::iter::once(&info.name).chain(info.aliases) {
                assert!(seen.insert(*n), "{n} registered twice");
                assert_eq!(EvalTask::find(n), Some(t));
            }
            assert!(info.metrics.contains(&info.headline), "{}", info.name);
        }
        assert_eq!(EvalTask::find("math"), Some(MATH_COT));
        let err = "nope".parse::<EvalTask>().unwrap_err().to_string();
        assert!(
            err.contains("code-math") && err.contains("game-qa"),
            "{err}"
        );
    }

    #[test]
    fn serde_by_name() {
        let json = serde_json::to_string(&MANUAL_QA).unwrap();
        assert_eq!(json, "\"manual-qa\"");
        let back: EvalTask = serde_json::from_str(&json).unwrap();
        assert_eq!(back, MANUAL_QA);
        assert!(serde_json::from_str::<EvalTask>("\"bogus\"").is_err());
    }
}
