//! Grading of prediction files, for `soup grade code-math|manual-qa`: JSON lines in, the same
//! lines out with the grade added, plus a summary. Lets outputs produced elsewhere (another
//! framework, an API model, an old run) be graded by exactly the same rules as our own runs.
//!
//! Input line: `{"id", "output", "answer"}` (other fields are kept). Code-math adds `verdict`,
//! `pred`, `correct`, `stdout`, `stderr`, `seconds` (and `program`); manual-QA adds `em`, `f1`,
//! `contains` (and `pred`). For manual-QA `answer` may be a list of acceptable answers, and an
//! optional `"unanswerable": true` marks a "Not in context" gold.

use crate::codemath::{self, parse_number};
use crate::manualqa;
use crate::sandbox::{Sandbox, SandboxError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Lines graded per sandbox batch: enough to keep every worker busy, small enough to stream.
const CHUNK: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum GradeError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}; check the directory exists and is writable")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{source_name}:{line}: {message}")]
    Line {
        source_name: String,
        line: usize,
        message: String,
    },
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
}

/// Totals of a graded file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GradeSummary {
    pub n: usize,
    /// Code-math: fraction correct.
    pub accuracy: Option<f64>,
    pub verdicts: BTreeMap<String, usize>,
    /// Manual-QA means.
    pub em: Option<f64>,
    pub f1: Option<f64>,
    pub contains: Option<f64>,
}

struct Line {
    number: usize,
    obj: Map<String, Value>,
}

fn read_chunk(
    input: &mut dyn BufRead,
    source_name: &str,
    line_no: &mut usize,
) -> Result<Vec<Line>, GradeError> {
    let mut out = Vec::new();
    let mut bytes = Vec::new();
    while out.len() < CHUNK {
        bytes.clear();
        let n = input
            .read_until(b'\n', &mut bytes)
            .map_err(|source| GradeError::Read {
                path: PathBuf::from(source_name),
                source,
            })?;
        if n == 0 {
            break;
        }
        *line_no += 1;
        let err = |message: String| GradeError::Line {
            source_name: source_name.to_string(),
            line: *line_no,
            message,
        };
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            err(format!(
                "not UTF-8 text (bad byte at column {}); save the file as UTF-8",
                e.valid_up_to() + 1
            ))
        })?;
        // A byte-order mark opens files saved by some editors, as `soup eval` accepts.
        let text = if *line_no == 1 {
            text.trim_start_matches('\u{feff}')
        } else {
            text
        };
        if text.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(text.trim()) {
            Ok(Value::Object(obj)) => {
                for key in ["id", "output", "answer"] {
                    if !obj.contains_key(key) {
                        return Err(err(format!(
                            "missing field \"{key}\"; each line needs {{\"id\", \"output\", \"answer\"}}"
                        )));
                    }
                }
                if !obj["output"].is_string() {
                    return Err(err("field \"output\" must be a string".into()));
                }
                out.push(Line {
                    number: *line_no,
                    obj,
                });
            }
            Ok(_) => return Err(err("expected a JSON object".into())),
            Err(e) => return Err(err(format!("not valid JSON: {e}"))),
        }
    }
    Ok(out)
}

fn write_line(
    output: &mut dyn Write,
    out_name: &str,
    obj: &Map<String, Value>,
) -> Result<(), GradeError> {
    let werr = |source| GradeError::Write {
        path: PathBuf::from(out_name),
        source,
    };
    serde_json::to_writer(&mut *output, obj).map_err(|e| werr(std::io::Error::other(e)))?;
    output.write_all(b"\n").map_err(werr)
}

/// Grade code-math predictions from `input`, writing graded lines to `output`.
/// `source_name`/`out_name` only name the streams in errors.
pub fn grade_code_math_jsonl(
    input: &mut dyn BufRead,
    source_name: &str,
    output: &mut dyn Write,
    out_name: &str,
    sandbox: &Sandbox,
) -> Result<GradeSummary, GradeError> {
    let mut line_no = 0;
    let mut summary = GradeSummary::default();
    let mut correct = 0usize;
    loop {
        let lines = read_chunk(input, source_name, &mut line_no)?;
        if lines.is_empty() {
            break;
        }
        let mut pairs = Vec::with_capacity(lines.len());
        for l in &lines {
            let gold = match &l.obj["answer"] {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => parse_number(s),
                _ => None,
            }
            .ok_or_else(|| GradeError::Line {
                source_name: source_name.to_string(),
                line: l.number,
                message: "field \"answer\" must be a number or a numeric string".into(),
            })?;
            let text = l.obj["output"].as_str().unwrap_or_default().to_string();
            pairs.push((text, gold));
        }
        let grades = codemath::grade_many(sandbox, &pairs)?;
        for (mut l, g) in lines.into_iter().zip(grades) {
            let run = g.run.as_ref();
            l.obj
                .insert("verdict".into(), Value::from(g.verdict.as_str()));
            l.obj
                .insert("pred".into(), g.pred.map_or(Value::Null, Value::from));
            l.obj.insert("correct".into(), Value::from(g.correct));
            l.obj.insert(
                "stdout".into(),
                Value::from(run.map(|r| r.stdout.clone()).unwrap_or_default()),
            );
            l.obj.insert(
                "stderr".into(),
                Value::from(run.map(|r| r.stderr.clone()).unwrap_or_default()),
            );
            l.obj.insert(
                "seconds".into(),
                Value::from(run.map_or(0.0, |r| r.seconds)),
            );
            l.obj.insert(
                "program".into(),
                g.program.clone().map_or(Value::Null, Value::from),
            );
            write_line(output, out_name, &l.obj)?;
            summary.n += 1;
            correct += usize::from(g.correct);
            *summary
                .verdicts
                .entry(g.verdict.as_str().to_string())
                .or_default() += 1;
        }
    }
    output.flush().map_err(|source| GradeError::Write {
        path: PathBuf::from(out_name),
        source,
    })?;
    summary.accuracy = (summary.n > 0).then(|| correct as f64 / summary.n as f64);
    Ok(summary)
}

/// Grade manual-QA predictions from `input`, writing graded lines to `output`.
pub fn grade_manual_qa_jsonl(
    input: &mut dyn BufRead,
    source_name: &str,
    output: &mut dyn Write,
    out_name: &str,
) -> Result<GradeSummary, GradeError> {
    let mut line_no = 0;
    let mut summary = GradeSummary::default();
    let (mut em, mut f1, mut contains) = (0.0, 0.0, 0.0);
    loop {
        let lines = read_chunk(input, source_name, &mut line_no)?;
        if lines.is_empty() {
            break;
        }
        for mut l in lines {
            let answers: Vec<String> = match &l.obj["answer"] {
                Value::String(s) => vec![s.clone()],
                Value::Array(a) if a.iter().all(Value::is_string) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                _ => {
                    return Err(GradeError::Line {
                        source_name: source_name.to_string(),
                        line: l.number,
                        message: "field \"answer\" must be a string or a list of strings".into(),
                    })
                }
            };
            let unanswerable = l
                .obj
                .get("unanswerable")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let g = manualqa::grade_qa(
                l.obj["output"].as_str().unwrap_or_default(),
                &answers,
                unanswerable,
            );
            l.obj.insert("pred".into(), Value::from(g.pred.clone()));
            l.obj.insert("em".into(), Value::from(g.scores.em));
            l.obj.insert("f1".into(), Value::from(g.scores.f1));
            l.obj
                .insert("contains".into(), Value::from(g.scores.contains));
            write_line(output, out_name, &l.obj)?;
            summary.n += 1;
            em += g.scores.em;
            f1 += g.scores.f1;
            contains += g.scores.contains;
        }
    }
    output.flush().map_err(|source| GradeError::Write {
        path: PathBuf::from(out_name),
        source,
    })?;
    if summary.n > 0 {
        let n = summary.n as f64;
        summary.em = Some(em / n);
        summary.f1 = Some(f1 / n);
        summary.contains = Some(contains / n);
    }
    Ok(summary)
}

fn open_pair(
    predictions: &Path,
    out: &Path,
) -> Result<(BufReader<std::fs::File>, BufWriter<std::fs::File>), GradeError> {
    let input = std::fs::File::open(predictions).map_err(|source| GradeError::Read {
        path: predictions.to_path_buf(),
        source,
    })?;
    let output = std::fs::File::create(out).map_err(|source| GradeError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    Ok((BufReader::new(input), BufWriter::new(output)))
}

/// `soup grade code-math --predictions FILE --out FILE`.
pub fn grade_code_math_file(
    predictions: &Path,
    out: &Path,
    sandbox: &Sandbox,
) -> Result<GradeSummary, GradeError> {
    let (mut r, mut w) = open_pair(predictions, out)?;
    grade_code_math_jsonl(
        &mut r,
        &predictions.display().to_string(),
        &mut w,
        &out.display().to_string(),
        sandbox,
    )
}

/// `soup grade manual-qa --predictions FILE --out FILE`.
pub fn grade_manual_qa_file(predictions: &Path, out: &Path) -> Result<GradeSummary, GradeError> {
    let (mut r, mut w) = open_pair(predictions, out)?;
    grade_manual_qa_jsonl(
        &mut r,
        &predictions.display().to_string(),
        &mut w,
        &out.display().to_string(),
    )
}

#[cfg(test)]
#[path = "grade_fuzz.rs"]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::SandboxConfig;

    #[test]
    fn code_math_file_round_trip() {
        let sb = Sandbox::new(SandboxConfig {
            workers: 2,
            allow_weaker_isolation: true,
            ..SandboxConfig::default()
        })
        .expect("sandbox");
        let input = concat!(
            r#"{"id": "a", "output": "```python\ndef solution():\n    print('x')\n    return 2 + 2\n```", "answer": 4, "extra": 1}"#,
            "\n",
            r#"{"id": "b", "output": "no code here", "answer": "5"}"#,
            "\n\n",
            r#"{"id": "c", "output": "def solution():\n    return '7.0004'", "answer": 7}"#,
            "\n",
        );
        let mut out = Vec::new();
        let s =
            grade_code_math_jsonl(&mut input.as_bytes(), "in.jsonl", &mut out, "out", &sb).unwrap();
        assert_eq!(s.n, 3);
        let lines: Vec<Value> = std::str::from_utf8(&out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["verdict"], "correct");
        assert_eq!(lines[0]["stdout"], "x\n");
        assert_eq!(lines[0]["extra"], 1);
        assert_eq!(lines[1]["verdict"], "no_program");
        assert_eq!(lines[2]["correct"], true);
        assert!((s.accuracy.unwrap() - 2.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn bad_lines_name_their_line() {
        let input = "{\"id\": 1, \"output\": \"x\", \"answer\": \"y\"}\n{\"id\": 2}\n";
        let e = grade_manual_qa_jsonl(&mut input.as_bytes(), "p.jsonl", &mut Vec::new(), "o")
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("p.jsonl:2: missing field \"output\""),
            "{e}"
        );
    }

    #[test]
    fn a_byte_order_mark_is_accepted_and_bad_utf8_names_its_line() {
        let input = "\u{feff}{\"id\": 1, \"output\": \"blue\", \"answer\": \"blue\"}\n";
        let s = grade_manual_qa_jsonl(&mut input.as_bytes(), "p", &mut Vec::new(), "o").unwrap();
        assert_eq!(s.em, Some(1.0));

        let mut bad = b"{\"id\": 1, \"output\": \"a\", \"answer\": \"a\"}\n".to_vec();
        bad.extend_from_slice(b"{\"id\": 2, \"output\": \"\xff\xfe\", \"answer\": \"a\"}\n");
        let e = grade_manual_qa_jsonl(&mut bad.as_slice(), "p.jsonl", &mut Vec::new(), "o")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("p.jsonl:2: not UTF-8 text"), "{e}");
        // A mark anywhere but the file's start is not skipped: it is not JSON.
        let late = "{\"id\": 1, \"output\": \"a\", \"answer\": \"a\"}\n\u{feff}{}\n";
        let e = grade_manual_qa_jsonl(&mut late.as_bytes(), "p", &mut Vec::new(), "o")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("p:2:"), "{e}");
    }

    #[test]
    fn manual_qa_file() {
        let input = concat!(
            r#"{"id": 1, "output": "The correct answer is the Blue Valve", "answer": ["blue valve", "valve B"]}"#,
            "\n",
            r#"{"id": 2, "output": "Not in context", "answer": "Not in context"}"#,
            "\n"
        );
        let mut out = Vec::new();
        let s = grade_manual_qa_jsonl(&mut input.as_bytes(), "p", &mut out, "o").unwrap();
        assert_eq!(s.em, Some(1.0));
        assert!(std::str::from_utf8(&out)
            .unwrap()
            .contains("\"contains\":1.0"));
    }
}
