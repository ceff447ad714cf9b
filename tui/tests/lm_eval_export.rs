//! `soup runs export RUN --format lm-eval`: the two files lm-evaluation-harness writes, with its
//! field names and nesting, and values that agree with the stored run (each sample's metric is
//! the stored record's score, `filtered_resps` what was graded, the aggregate the stored score).
//! Also: `--backend` flags are refused where they mean nothing.

mod common;
use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn sha(s: &str) -> String {
    format!("{:x}", Sha256::digest(s.as_bytes()))
}

#[test]
fn an_eval_run_exports_in_lm_eval_schema() {
    let data = tempfile::tempdir().unwrap();
    let model = model();
    let out = ok(
        data.path(),
        &[
            "--json",
            "eval",
            "--task",
            "manual-qa",
            "--model",
            &model,
            "--limit",
            "3",
            "--max-new-tokens",
            "8",
            "--shots",
            "0",
        ],
    );
    let summary: Value = serde_json::from_str(out.trim()).unwrap();
    let run = summary["run"].as_str().unwrap().to_string();
    let records: Vec<Value> = ok(data.path(), &["--json", "runs", "records", &run])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 3);

    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("lm");
    let dir_s = dir.display().to_string();
    ok(
        data.path(),
        &[
            "runs", "export", &run, "--format", "lm-eval", "--out", &dir_s,
        ],
    );
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    let results_name = names.iter().find(|n| n.starts_with("results_")).unwrap();
    let samples_name = names
        .iter()
        .find(|n| n.starts_with("samples_manual-qa_"))
        .unwrap();
    let date = results_name
        .strip_prefix("results_")
        .unwrap()
        .strip_suffix(".json")
        .unwrap();
    assert_eq!(samples_name, &format!("samples_manual-qa_{date}.jsonl"));
    // lm-eval's date id: isoformat with the colons made dashes.
    assert!(
        date.len() == 26 && &date[10..11] == "T" && !date.contains(':'),
        "{date}"
    );

    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(results_name)).unwrap()).unwrap();
    for key in [
        "results",
        "group_subtasks",
        "configs",
        "versions",
        "n-shot",
        "higher_is_better",
        "n-samples",
        "config",
        "date",
        "task_hashes",
        "model_name",
        "model_name_sanitized",
        "total_evaluation_time_seconds",
    ] {
        assert!(results.get(key).is_some(), "results lacks {key}");
    }
    let task = &results["results"]["manual-qa"];
    assert_eq!(task["alias"], "manual-qa");
    assert_eq!(results["n-shot"]["manual-qa"], 0);
    assert_eq!(results["n-samples"]["manual-qa"]["effective"], 3);
    assert_eq!(
        results["configs"]["manual-qa"]["output_type"],
        "generate_until"
    );
    assert_eq!(
        results["configs"]["manual-qa"]["generation_kwargs"]["max_gen_toks"],
        8
    );
    // Aggregates are the stored scores.
    let show: Value =
        serde_json::from_str(ok(data.path(), &["--json", "runs", "show", &run]).trim()).unwrap();
    let stored = show["scores"].as_array().unwrap();
    assert!(!stored.is_empty());
    for s in stored {
        let m = s["metric"].as_str().unwrap();
        assert_eq!(task[format!("{m},none")], s["value"], "{m}");
        assert!(task.get(format!("{m}_stderr,none")).is_some(), "{m}");
        assert_eq!(results["higher_is_better"]["manual-qa"][m], true);
    }

    let samples: Vec<Value> = std::fs::read_to_string(dir.join(samples_name))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(samples.len(), 3);
    let mut chain = String::new();
    for (s, r) in samples.iter().zip(&records) {
        assert_eq!(s["doc_id"], r["index"]);
        assert_eq!(s["doc"]["id"], r["id"]);
        assert_eq!(s["target"], r["gold"]);
        let prompt = r["prompt"].as_str().unwrap();
        assert_eq!(s["arguments"]["gen_args_0"]["arg_0"], prompt);
        assert_eq!(s["arguments"]["gen_args_0"]["arg_1"]["max_gen_toks"], 8);
        assert_eq!(s["resps"], serde_json::json!([[r["raw_output"]]]));
        let graded = if r["extracted"].is_null() {
            &r["raw_output"]
        } else {
            &r["extracted"]
        };
        assert_eq!(s["filtered_resps"], serde_json::json!([graded]));
        assert_eq!(s["filter"], "none");
        let metrics: Vec<&str> = s["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap())
            .collect();
        assert!(!metrics.is_empty());
        for m in &metrics {
            assert_eq!(s[*m], r["scores"][*m], "{m}");
        }
        // lm-eval's hashes: the doc as json.dumps(indent=2) writes it, the prompt, the target.
        let doc_text = serde_json::to_string_pretty(&s["doc"]).unwrap();
        assert_eq!(s["doc_hash"], sha(&doc_text));
        assert_eq!(s["prompt_hash"], sha(prompt));
        assert_eq!(s["target_hash"], sha(r["gold"].as_str().unwrap()));
        for h in ["doc_hash", "prompt_hash", "target_hash"] {
            chain.push_str(s[h].as_str().unwrap());
        }
    }
    assert_eq!(results["task_hashes"]["manual-qa"], sha(&chain));

    // The folder is now non-empty: a second export into it needs --force.
    let err = fails(
        data.path(),
        &[
            "runs", "export", &run, "--format", "lm-eval", "--out", &dir_s,
        ],
    );
    assert!(err.contains("--force"), "{err}");
    ok(
        data.path(),
        &["runs", "export", &run, "--out", &dir_s, "--force"],
    );
}

#[test]
fn backend_settings_without_the_openai_backend_are_refused() {
    let data = tempfile::tempdir().unwrap();
    let model = model();
    let err = fails(
        data.path(),
        &[
            "eval",
            "--task",
            "manual-qa",
            "--model",
            &model,
            "--base-url",
            "http://localhost:1",
        ],
    );
    assert!(err.contains("--backend openai"), "{err}");
    let err = fails(
        data.path(),
        &[
            "eval",
            "--task",
            "manual-qa",
            "--model",
            &model,
            "--backend",
            "openai",
        ],
    );
    assert!(err.contains("--base-url"), "{err}");
    // A server that is not there: a clear error, and no run is left marked running.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let err = fails(
        data.path(),
        &[
            "eval",
            "--task",
            "manual-qa",
            "--model",
            &model,
            "--limit",
            "1",
            "--backend",
            "openai",
            "--base-url",
            &url,
        ],
    );
    assert!(
        err.contains("could not reach") && err.contains(&url),
        "{err}"
    );
}
