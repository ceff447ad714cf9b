//! Fuzz tests of prediction files (`soup grade` input): mutated JSON lines go through the line
//! reader both graders share, manual-QA grading whole, and code-math's answer parsing and
//! program extraction (everything but the sandbox, which has its own hostile-program suite).
//! No panic, no hang, no allocation out of proportion to the file.

use super::*;
use crate::fuzz_harness::{fuzz, Target};

const SEED: &str = concat!(
    r#"{"id": "1", "output": "```python\ndef solution():\n    return 3 + 4\n```", "answer": 7}"#,
    "\n",
    r#"{"id": 2, "output": "def solution():\n    return 1", "answer": "1,000", "extra": [1, {"a": null}]}"#,
    "\n\n",
    r#"{"id": "q", "output": "The red lever stops the press.", "answer": ["the red lever", "red lever"]}"#,
    "\n",
    r#"{"id": "u", "output": "Not in context", "answer": "Not in context", "unanswerable": true}"#,
    "\n",
);

fn check(bytes: &[u8]) -> bool {
    let mut out = Vec::new();
    let accepted = grade_manual_qa_jsonl(&mut &bytes[..], "fuzz.jsonl", &mut out, "out.jsonl")
        .is_ok_and(|s| s.n > 0);
    // Code-math: every line the reader accepts, up to the sandbox.
    let mut input = bytes;
    let mut line_no = 0;
    while let Ok(lines) = read_chunk(&mut input, "fuzz.jsonl", &mut line_no) {
        if lines.is_empty() {
            break;
        }
        for l in &lines {
            if let Value::String(s) = &l.obj["answer"] {
                let _ = parse_number(s);
            }
            let _ = codemath::extract_program(l.obj["output"].as_str().unwrap_or_default());
        }
    }
    accepted
}

#[test]
fn fuzz_prediction_files() {
    // The whole file, and each line alone (one bad line refuses a whole file, so single-line
    // seeds let more mutants through to the graders).
    let mut seeds = vec![SEED.as_bytes().to_vec()];
    seeds.extend(
        SEED.lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.as_bytes().to_vec()),
    );
    let json_seeds: Vec<Vec<u8>> = seeds[1..].to_vec();
    fuzz(
        Target {
            name: "prediction files (lines)",
            seeds,
            hot_len: 0,
            json: false,
            cases: 3000,
        },
        check,
    );
    fuzz(
        Target {
            name: "prediction files (JSON values)",
            seeds: json_seeds,
            hot_len: 0,
            json: true,
            cases: 1500,
        },
        check,
    );
}
