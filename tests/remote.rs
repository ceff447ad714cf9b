//! The remote backend end to end on the tiny fixture model, against the fake OpenAI server:
//! a remote evaluation renders the same prompts as a local one, and when the server answers
//! what the local engine answered, every record (output, extraction, verdict, scores) is the
//! same; compositions are exported as one PEFT adapter of a rank the server accepts (SVD over
//! the cap, its error recorded) and registered through `/v1/load_lora_adapter`, or sent by
//! name to a `soup serve` server.

use candle_core::Device;
use serde_json::Value;
use soup_core::engine::{tasks, DataSource, Engine, EvalJob, EvalTarget, JobSpec};
use soup_core::fake_openai::FakeOpenAi;
use soup_core::merge::MergeKind;
use soup_core::remote::{AdapterRoute, RemoteBackend};
use soup_store::{RecordQuery, RunId, Store};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/reference")
}

fn model() -> String {
    fixtures().join("tiny-llama").display().to_string()
}

fn engine(dir: &std::path::Path) -> Engine {
    let store = Arc::new(Store::open(dir).unwrap());
    Engine::new(store, dir, Device::Cpu, None).unwrap()
}

fn job(target: EvalTarget) -> EvalJob {
    let mut ev = EvalJob::new(
        &model(),
        target,
        tasks::MANUAL_QA,
        DataSource::parse("builtin:manualqa-test"),
    );
    ev.limit = Some(4);
    ev.max_new_tokens = 10;
    ev.batch_size = 2;
    ev.shots = 0;
    ev
}

fn records(e: &Engine, run: RunId) -> Vec<soup_evals::driver::QuestionRecord> {
    let page = e
        .store()
        .records_page(run, &RecordQuery::default())
        .unwrap();
    page.items
        .iter()
        .map(|r| serde_json::from_value(r.detail.clone()).unwrap())
        .collect()
}

#[test]
fn remote_records_equal_local_ones_when_the_server_answers_alike() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let (local_run, _) = e
        .run_now(JobSpec::Eval(job(EvalTarget::Base)), &mut |_| {})
        .unwrap();
    let local = records(&e, local_run);
    assert_eq!(local.len(), 4);
    // The server answers each prompt with what the local engine generated for exactly that
    // text (a prompt rendered differently gets a marker that grades wrong).
    let answers: HashMap<String, String> = local
        .iter()
        .map(|r| (r.prompt.clone(), r.raw_output.clone()))
        .collect();
    let answers = Mutex::new(answers);
    let server = FakeOpenAi::start(
        &[("tiny-llama", "vllm")],
        Box::new(move |body: &Value| {
            let p = body["prompt"].as_str().unwrap_or("");
            answers
                .lock()
                .unwrap()
                .get(p)
                .cloned()
                .unwrap_or_else(|| "PROMPT NOT RENDERED AS LOCALLY".into())
        }),
    );
    std::env::set_var("SOUP_TEST_REMOTE_KEY", "k-123");
    let mut remote = RemoteBackend::new(server.url.clone());
    remote.api_key_env = Some("SOUP_TEST_REMOTE_KEY".into());
    remote.concurrency = 3;
    let mut ev = job(EvalTarget::Base);
    ev.remote = Some(remote);
    let (remote_run, out) = e.run_now(JobSpec::Eval(ev), &mut |_| {}).unwrap();
    let remote_records = records(&e, remote_run);
    assert_eq!(remote_records.len(), local.len());
    for (l, r) in local.iter().zip(&remote_records) {
        assert_eq!(l.id, r.id);
        assert_eq!(l.prompt, r.prompt);
        assert_eq!(l.raw_output, r.raw_output, "question {}", l.id);
        assert_eq!(l.extracted, r.extracted);
        assert_eq!(l.pred, r.pred);
        assert_eq!(l.correct, r.correct);
        assert_eq!(l.scores, r.scores);
        assert_eq!(l.prompt_style, r.prompt_style);
        assert!(!r.cached);
    }
    let scores = |run| {
        e.store()
            .scores(run)
            .unwrap()
            .items
            .into_iter()
            .map(|s| (s.metric, s.value))
            .collect::<Vec<_>>()
    };
    assert_eq!(scores(local_run), scores(remote_run));
    // Every request asked the base model greedily, with the key; the spec records the
    // server and the key's variable, never the key.
    let reqs: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/completions")
        .collect();
    assert_eq!(reqs.len(), 4);
    assert!(reqs.iter().all(|r| r.body["model"] == "tiny-llama"
        && r.body["temperature"] == 0.0
        && r.body["max_tokens"] == 10
        && r.header("authorization") == Some("Bearer k-123")));
    let run = e.store().get_run(remote_run).unwrap().unwrap();
    let spec = run.spec.to_string();
    assert!(spec.contains(&server.url) && spec.contains("SOUP_TEST_REMOTE_KEY"));
    assert!(
        !spec.contains("k-123"),
        "the key leaked into the spec: {spec}"
    );
    assert_eq!(out.summary["backend"]["route"], "base");
    assert!(
        run.progress.message.contains(&server.url),
        "{:?}",
        run.progress
    );
}

#[test]
fn a_composition_over_the_rank_cap_is_compressed_exported_and_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let server = FakeOpenAi::start(&[("tiny-llama", "vllm")], Box::new(|_| "Paris".into()));
    let a = fixtures().join("adapter-a").display().to_string();
    let b = fixtures().join("adapter-b").display().to_string();
    // cat of two rank-8 adapters: rank 16 per projection, over a server capped at 8.
    let target = EvalTarget::Merge {
        method: "cat".parse::<MergeKind>().unwrap(),
        adapters: vec![a, b],
        weights: vec![0.7, 0.3],
    };
    let mut remote = RemoteBackend::new(server.url.clone());
    remote.max_lora_rank = 8;
    remote.route = AdapterRoute::Auto;
    remote.lora_dir = Some(dir.path().join("shared-loras"));
    let mut ev = job(target);
    ev.remote = Some(remote);
    let (run, out) = e.run_now(JobSpec::Eval(ev), &mut |_| {}).unwrap();
    let export = &out.summary["backend"]["export"];
    assert_eq!(export["rank"], 8);
    assert_eq!(export["source_rank"], 16);
    let err = export["relative_frobenius_error"].as_f64().unwrap();
    assert!(err > 0.0 && err < 1.0, "{err}");
    let reqs = server.requests();
    let load = reqs
        .iter()
        .find(|r| r.path == "/v1/load_lora_adapter")
        .expect("the adapter was registered");
    let name = load.body["lora_name"].as_str().unwrap();
    let path = PathBuf::from(load.body["lora_path"].as_str().unwrap());
    assert!(path.starts_with(dir.path().join("shared-loras").canonicalize().unwrap()));
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(path.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["r"], 8);
    assert!(cfg["rank_pattern"].as_object().unwrap().is_empty());
    assert!(reqs
        .iter()
        .filter(|r| r.path == "/v1/completions")
        .all(|r| r.body["model"] == name));
    // The error is on the run's record too.
    let rec = e.store().get_run(run).unwrap().unwrap();
    assert!(
        rec.progress.message.contains("relative Frobenius error"),
        "{:?}",
        rec.progress
    );
    // The same composition again: same content name, not loaded a second time.
    let mut again = job(EvalTarget::Merge {
        method: "cat".parse::<MergeKind>().unwrap(),
        adapters: vec![
            fixtures().join("adapter-a").display().to_string(),
            fixtures().join("adapter-b").display().to_string(),
        ],
        weights: vec![0.7, 0.3],
    });
    let mut remote = RemoteBackend::new(server.url.clone());
    remote.max_lora_rank = 8;
    remote.lora_dir = Some(dir.path().join("shared-loras"));
    again.remote = Some(remote);
    e.run_now(JobSpec::Eval(again), &mut |_| {}).unwrap();
    let loads = server
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/load_lora_adapter")
        .count();
    assert_eq!(loads, 1);
}

#[test]
fn a_soup_server_gets_the_composition_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let server = FakeOpenAi::start(&[("tiny-llama", "soup")], Box::new(|_| "x".into()));
    let a = fixtures().join("adapter-a").display().to_string();
    let b = fixtures().join("adapter-b").display().to_string();
    let mut ev = job(EvalTarget::Merge {
        method: "ties".parse::<MergeKind>().unwrap(),
        adapters: vec![a.clone(), b.clone()],
        weights: vec![0.5, 0.5],
    });
    ev.remote = Some(RemoteBackend::new(server.url.clone()));
    let (_, out) = e.run_now(JobSpec::Eval(ev), &mut |_| {}).unwrap();
    assert_eq!(out.summary["backend"]["route"], "soup");
    let want = format!("ties:{a},{b}:0.5,0.5");
    let reqs = server.requests();
    assert!(reqs.iter().all(|r| r.path != "/v1/load_lora_adapter"));
    assert!(reqs
        .iter()
        .filter(|r| r.path == "/v1/completions")
        .all(|r| r.body["model"] == want.as_str()));
}

#[test]
fn an_unreachable_server_fails_before_any_question() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut ev = job(EvalTarget::Base);
    ev.remote = Some(RemoteBackend::new(format!("http://127.0.0.1:{port}")));
    let err = e
        .run_now(JobSpec::Eval(ev), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("could not reach"), "{err}");
}
