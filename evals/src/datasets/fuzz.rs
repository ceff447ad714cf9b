//! Fuzz tests of every dataset format: mutated GSM8K JSONL, GSM-Hard (both flavours), QA,
//! reading comprehension, Alpaca (with and without tests) and manual text go through format
//! detection, every typed loader and every registered task's `load`. No panic, no hang, no
//! allocation out of proportion to the file (see `fuzz/harness.rs`).

use super::*;
use crate::fuzz_harness::{fuzz, Target};
use crate::task::EvalTask;

const SEEDS: &[&str] = &[
    concat!(
        r#"{"question": "Janet has 16 eggs and eats 3. How many are left?", "answer": "16 - 3 = <<16-3=13>>13\n#### 13"}"#,
        "\n",
        r#"{"question": "Big?", "answer": "so\n#### 1,234", "id": 7}"#,
        "\n"
    ),
    r#"[{"instruction": "A farmer has 3 cows. How many legs?", "answer": 12.0, "id": "a"}, {"instruction": "x", "answer": "5", "output": "def solution():\n    return 5"}]"#,
    concat!(
        r#"{"input": "What is 2 + 2?", "target": 4.0, "code": "def solution():\n    return 4"}"#,
        "\n",
        r#"{"input": "Half of 9?", "target": "4.5"}"#,
        "\n"
    ),
    r#"[{"instruction": "What does the red lever do?", "answer": "It stops the press.", "context": "Section 2", "output": "It stops the press."}]"#,
    r#"[{"instruction": "Context: The press has a red lever.\nQuestion: What colour is the lever?", "input": "", "output": "red", "answer": "red"}, {"instruction": "Context: x\nQuestion: y", "input": "", "output": "Not in context", "answer": "Not in context"}]"#,
    r#"[{"instruction": "Write a function that adds two numbers.", "input": "", "output": "def add(a, b):\n    return a + b"}]"#,
    r#"[{"instruction": "Return 42.", "input": "", "test": "assert solution() == 42", "output": "def solution():\n    return 42", "id": 3}]"#,
    "The Model 7 press\n\nThe red lever stops the press.\n\nThe green button starts it.\n",
    "\u{feff}[{\"instruction\": \"a\", \"output\": \"b\"}]",
];

fn check(bytes: &[u8]) -> bool {
    let path = Path::new("fuzz.json");
    let text = String::from_utf8_lossy(bytes);
    let _ = detect_format(&text);
    let _ = parse_math(path, &text);
    let _ = parse_qa(path, &text);
    let _ = parse_code(path, &text);
    let _ = parse_instructions(path, &text);
    let mut accepted = false;
    for task in EvalTask::all() {
        if let Ok(loaded) = task.load(path, &text) {
            let _ = loaded.len();
            accepted = true;
        }
    }
    let manual = Manual {
        text: text.to_string(),
    };
    let _ = manual.chunks(64);
    // The file path too: bytes that are not UTF-8 are an error naming the file.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("data.jsonl");
    std::fs::write(&file, bytes).expect("write");
    let _ = load_math(&file);
    let _ = load_manual(&file);
    accepted
}

#[test]
fn fuzz_dataset_formats() {
    fuzz(
        Target {
            name: "dataset formats (text mutations)",
            seeds: SEEDS.iter().map(|s| s.as_bytes().to_vec()).collect(),
            hot_len: 0,
            json: false,
            cases: 3000,
        },
        check,
    );
    // The JSON-list formats, with values replaced in place.
    fuzz(
        Target {
            name: "dataset formats (JSON values)",
            seeds: SEEDS.iter().map(|s| s.as_bytes().to_vec()).collect(),
            hot_len: 0,
            json: true,
            cases: 2000,
        },
        check,
    );
}
