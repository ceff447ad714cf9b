//! The deterministic record the crash writer writes for each index, shared by the writer
//! (`src/bin/store-crash-writer.rs`) and the test that checks what survived
//! (`tests/crash.rs`), so both agree on what "intact" means.

use std::collections::BTreeMap;

use soup_store::{RunId, StoredQuestion};

/// The record with question index `index` of run `run`.
pub fn crash_record(run: RunId, index: u64) -> StoredQuestion {
    let verdict = ["correct", "wrong", "error"][(index % 3) as usize];
    let mut scores = BTreeMap::new();
    scores.insert(
        "exact_match".to_string(),
        if verdict == "correct" { 1.0 } else { 0.0 },
    );
    StoredQuestion {
        run,
        index,
        id: format!("crash-{index}"),
        verdict: verdict.to_string(),
        scores,
        detail: serde_json::json!({
            "prompt": format!("Question {index}: what is {index} times 3? {}", "pad ".repeat(40)),
            "raw_output": format!("print({index} * 3)"),
            "extracted": format!("print({index} * 3)"),
            "stdout": format!("{}\n", index * 3),
            "exit_code": 0,
            "gold": (index * 3).to_string(),
            "latency_s": (index % 500) as f64 / 1000.0,
            "cached": matches!(index % 5, 0),
        }),
    }
}

/// The safetensors-shaped bytes of crash adapter `n` (just deterministic bytes).
pub fn crash_blob(n: u64) -> Vec<u8> {
    (0..(3000 + n * 17)).map(|i| (i * 31 + n) as u8).collect()
}
