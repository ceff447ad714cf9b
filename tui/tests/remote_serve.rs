// Not built yet: move to tui/tests/remote_serve.rs once the `serve` branch (soup serve) is merged.
//! The remote backend against a real `soup serve` on the tiny fixture model: `soup eval
//! --backend openai` gives the same per-question records (outputs, extractions, verdicts,
//! scores) as the local backend, for the base model and for an adapter sent by name.

mod common;
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// `soup serve` on a free port, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(data: &std::path::Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_soup"))
        .arg("--data-dir")
        .arg(data)
        .args(["serve", "--port", "0", "--model", &model()])
        .env_remove("SOUP_HOME")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start soup serve");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        match lines.next() {
            Some(Ok(l)) => {
                if let Some(u) = l.strip_prefix("soup serve: listening on ") {
                    break u.trim().to_string();
                }
            }
            _ => {
                let _ = child.kill();
                panic!("soup serve ended before it listened");
            }
        }
    };
    // Keep reading its stdout so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, url }
}

fn records(data: &std::path::Path, run: &str) -> Vec<Value> {
    ok(data, &["--json", "runs", "records", run])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn eval(data: &std::path::Path, extra: &[&str]) -> String {
    let model = model();
    let mut args = vec![
        "--json",
        "eval",
        "--task",
        "manual-qa",
        "--model",
        &model,
        "--limit",
        "3",
        "--max-new-tokens",
        "12",
        "--shots",
        "0",
        "--batch-size",
        "1",
    ];
    args.extend_from_slice(extra);
    let out = ok(data, &args);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    v["run"].as_str().unwrap().to_string()
}

#[test]
fn records_from_soup_serve_equal_local_records() {
    // The same adapter stored on both sides (a server takes stored names, never paths).
    let served = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    for dir in [served.path(), data.path()] {
        ok(
            dir,
            &["adapter", "import", &fixture("adapter-a"), "--name", "a"],
        );
    }
    let server = serve(served.path());
    for target in [vec![], vec!["--adapter", "a"]] {
        let local = eval(data.path(), &target);
        let mut remote_args = target.clone();
        remote_args.extend_from_slice(&["--backend", "openai", "--base-url", &server.url]);
        let remote = eval(data.path(), &remote_args);
        let (l, r) = (records(data.path(), &local), records(data.path(), &remote));
        assert_eq!(l.len(), 3);
        assert_eq!(l.len(), r.len());
        for (a, b) in l.iter().zip(&r) {
            for key in [
                "id",
                "prompt",
                "raw_output",
                "extracted",
                "pred",
                "verdict",
                "scores",
                "correct",
            ] {
                assert_eq!(a[key], b[key], "{target:?} question {}: {key}", a["id"]);
            }
        }
    }
}
