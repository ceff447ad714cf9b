//! Code-math grading (program of thought, as PAL does it): pull the program out of the model's
//! output, run `solution()` in the [`crate::sandbox`], and compare its value with the gold.
//!
//! The verdict vocabulary is fixed because run records, the dashboard and `soup grade` output
//! all carry it: correct, wrong, no_program, syntax_error, runtime_error, timeout,
//! resource_limit, non_numeric.

use crate::sandbox::{RunOutcome, RunStatus, Sandbox, SandboxError, Value};
use serde::{Deserialize, Serialize};

/// PAL's tolerance: correct when |pred - gold| <= 1e-3.
pub const TOLERANCE: f64 = 1e-3;

/// What happened to one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Correct,
    Wrong,
    NoProgram,
    SyntaxError,
    RuntimeError,
    Timeout,
    ResourceLimit,
    NonNumeric,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Correct => "correct",
            Verdict::Wrong => "wrong",
            Verdict::NoProgram => "no_program",
            Verdict::SyntaxError => "syntax_error",
            Verdict::RuntimeError => "runtime_error",
            Verdict::Timeout => "timeout",
            Verdict::ResourceLimit => "resource_limit",
            Verdict::NonNumeric => "non_numeric",
        }
    }

    pub const ALL: [Verdict; 8] = [
        Verdict::Correct,
        Verdict::Wrong,
        Verdict::NoProgram,
        Verdict::SyntaxError,
        Verdict::RuntimeError,
        Verdict::Timeout,
        Verdict::ResourceLimit,
        Verdict::NonNumeric,
    ];
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parse a number the way answers are written: ints, floats, `1,234`, `$5`, `12.`, `3/4`,
/// `50%` is NOT accepted (ambiguous). Returns None for anything else or non-finite values.
pub fn parse_number(s: &str) -> Option<f64> {
    let t: String = s
        .trim()
        .chars()
        .filter(|c| *c != ',' && *c != '$' && *c != '_')
        .collect();
    let t = t.strip_suffix('.').unwrap_or(&t);
    if t.is_empty() {
        return None;
    }
    if let Some((a, b)) = t.split_once('/') {
        let (a, b) = (a.trim().parse::<f64>().ok()?, b.trim().parse::<f64>().ok()?);
        return (b != 0.0).then(|| a / b).filter(|v| v.is_finite());
    }
    let lower = t.to_ascii_lowercase();
    if lower.contains("inf") || lower.contains("nan") {
        return None;
    }
    t.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Extract the program from a model output: the last ```python (or bare ```) fenced block
/// that defines `solution`, else the text from a bare `def solution` to the end or to the
/// next fence (a model that leaves out the opening fence may still write the closing one,
/// which reads as the opening of a block after the program), else the last fenced block. An
/// unclosed final fence counts (generation often stops inside it). Returns None when there is
/// nothing program-like.
pub fn extract_program(output: &str) -> Option<String> {
    let blocks = fenced_blocks(output);
    if let Some(b) = blocks.iter().rev().find(|b| b.contains("def solution")) {
        return Some(b.clone());
    }
    bare_solution(output).or_else(|| blocks.last().filter(|b| !b.trim().is_empty()).cloned())
}

/// The text from a `def solution` outside any fenced block (and the imports just before it) to
/// the end or to the next fence.
fn bare_solution(output: &str) -> Option<String> {
    let i = output.find("def solution")?;
    // Keep imports written just before the function.
    let start = output[..i]
        .rfind("\n\n")
        .map(|j| j + 2)
        .filter(|&j| {
            output[j..i]
                .lines()
                .all(|l| l.trim().is_empty() || l.starts_with("import ") || l.starts_with("from "))
        })
        .unwrap_or(i);
    let end = output[i..].find("```").map_or(output.len(), |j| i + j);
    Some(output[start..end].trim_end().to_string())
}

fn fenced_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("```") {
        let after = &rest[open + 3..];
        // The language tag runs to the end of the line.
        let body_start = after.find('\n').map(|i| i + 1).unwrap_or(after.len());
        let tag = after[..body_start].trim();
        if !(tag.is_empty() || tag.eq_ignore_ascii_case("python") || tag.eq_ignore_ascii_case("py"))
        {
            // Some other language: skip past its closing fence.
            let body = &after[body_start..];
            match body.find("```") {
                Some(close) => {
                    rest = &body[close + 3..];
                    continue;
                }
                None => break,
            }
        }
        let body = &after[body_start..];
        match body.find("```") {
            Some(close) => {
                blocks.push(body[..close].to_string());
                rest = &body[close + 3..];
            }
            None => {
                blocks.push(body.to_string());
                break;
            }
        }
    }
    blocks
}

/// One graded program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodeMathGrade {
    pub verdict: Verdict,
    /// The numeric value of `solution()` when it had one.
    pub pred: Option<f64>,
    pub correct: bool,
    /// The extracted program, when there was one.
    pub program: Option<String>,
    /// The sandbox run, when the program was run.
    pub run: Option<RunOutcome>,
}

/// Compare a run's outcome with the gold.
pub fn verdict_for(outcome: &RunOutcome, gold: f64) -> (Verdict, Option<f64>) {
    match outcome.status {
        RunStatus::Ok => {
            let pred = match &outcome.value {
                Some(Value::Number(x)) => Some(*x),
                Some(Value::Text(s)) => parse_number(s),
                _ => None,
            };
            match pred {
                Some(p) if (p - gold).abs() <= TOLERANCE => (Verdict::Correct, Some(p)),
                Some(p) => (Verdict::Wrong, Some(p)),
                None => (Verdict::NonNumeric, None),
            }
        }
        RunStatus::NoEntry => (Verdict::NoProgram, None),
        RunStatus::SyntaxError => (Verdict::SyntaxError, None),
        RunStatus::RuntimeError => (Verdict::RuntimeError, None),
        RunStatus::Timeout => (Verdict::Timeout, None),
        RunStatus::ResourceLimit => (Verdict::ResourceLimit, None),
    }
}

/// Grade many outputs at once, running their programs in parallel on the sandbox's pool.
/// `items` pairs each raw model output with its gold.
pub fn grade_many(
    sandbox: &Sandbox,
    items: &[(String, f64)],
) -> Result<Vec<CodeMathGrade>, SandboxError> {
    let outputs: Vec<&str> = items.iter().map(|(o, _)| o.as_str()).collect();
    grade_programs(
        sandbox,
        &outputs,
        |_, program| program.to_string(),
        |i, run| verdict_for(run, items[i].1),
    )
}

/// Grade programs by their tests, as the code skill's test set is graded: each extracted
/// program runs with its item's tests (Python asserts) appended, and is correct when it runs
/// to the end. A failed assert is `wrong`; a program without a `solution()` whose tests pass
/// is still correct. `items` pairs each raw model output with its tests.
pub fn grade_tests(
    sandbox: &Sandbox,
    items: &[(String, String)],
) -> Result<Vec<CodeMathGrade>, SandboxError> {
    let outputs: Vec<&str> = items.iter().map(|(o, _)| o.as_str()).collect();
    grade_programs(
        sandbox,
        &outputs,
        |i, program| format!("{program}\n\n{}\n", items[i].1),
        |_, run| match run.status {
            RunStatus::Ok | RunStatus::NoEntry => (Verdict::Correct, None),
            RunStatus::RuntimeError if run.message.starts_with("AssertionError") => {
                (Verdict::Wrong, None)
            }
            _ => verdict_for(run, f64::NAN),
        },
    )
}

/// Extracts each output's program, runs `code(i, program)` for those that have one on the
/// sandbox's pool, and judges each run with `judge(i, run)`.
fn grade_programs(
    sandbox: &Sandbox,
    outputs: &[&str],
    code: impl Fn(usize, &str) -> String,
    judge: impl Fn(usize, &RunOutcome) -> (Verdict, Option<f64>),
) -> Result<Vec<CodeMathGrade>, SandboxError> {
    let programs: Vec<Option<String>> = outputs.iter().map(|o| extract_program(o)).collect();
    let to_run: Vec<String> = programs
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.as_deref().map(|p| code(i, p)))
        .collect();
    let mut runs = sandbox.run_many(&to_run)?.into_iter();
    let mut grades = Vec::with_capacity(outputs.len());
    for (i, program) in programs.into_iter().enumerate() {
        let Some(program) = program else {
            grades.push(CodeMathGrade {
                verdict: Verdict::NoProgram,
                pred: None,
                correct: false,
                program: None,
                run: None,
            });
            continue;
        };
        let run = runs
            .next()
            .ok_or_else(|| SandboxError::Internal("sandbox returned too few results".into()))?;
        let (verdict, pred) = judge(i, &run);
        grades.push(CodeMathGrade {
            verdict,
            pred,
            correct: verdict == Verdict::Correct,
            program: Some(program),
            run: Some(run),
        });
    }
    Ok(grades)
}

/// Grade one output.
pub fn grade_one(
    sandbox: &Sandbox,
    output: &str,
    gold: f64,
) -> Result<CodeMathGrade, SandboxError> {
    let mut v = grade_many(sandbox, &[(output.to_string(), gold)])?;
    v.pop()
        .ok_or_else(|| SandboxError::Internal("no grade returned".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_number("1,234"), Some(1234.0));
        assert_eq!(parse_number(" $5. "), Some(5.0));
        assert_eq!(parse_number("3/4"), Some(0.75));
        assert_eq!(parse_number("-2.5e3"), Some(-2500.0));
        assert_eq!(parse_number("nan"), None);
        assert_eq!(parse_number("five"), None);
        assert_eq!(parse_number(""), None);
    }

    #[test]
    fn extracts_last_fenced_python_block() {
        let out = "```python\ndef solution():\n    return 1\n```\ntext\n```python\ndef solution():\n    return 2\n```\n";
        assert_eq!(
            extract_program(out).as_deref(),
            Some("def solution():\n    return 2\n")
        );
    }

    #[test]
    fn extracts_unclosed_fence_and_bare_def() {
        let out = "Sure:\n```python\ndef solution():\n    return 3\n";
        assert!(extract_program(out).is_some_and(|p| p.contains("return 3")));
        let bare = "Let's solve.\n\nimport math\ndef solution():\n    return math.floor(2.5)";
        let p = extract_program(bare).unwrap_or_default();
        assert!(p.starts_with("import math"), "{p}");
        assert_eq!(extract_program("The answer is 4."), None);
        // The opening fence left out, the closing one written (CAT's concatenations do).
        let closed = "def solution():\n    result = 8 * 6 * 8\n    return result\n```\nDone.";
        assert_eq!(
            extract_program(closed).as_deref(),
            Some("def solution():\n    result = 8 * 6 * 8\n    return result")
        );
    }

    #[test]
    fn skips_other_languages() {
        let out = "```bash\necho hi\n```\n```python\ndef solution():\n    return 5\n```";
        assert!(extract_program(out).is_some_and(|p| p.contains("return 5")));
    }
}
