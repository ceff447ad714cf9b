//! Jobs that cannot run are refused before their run is recorded (so no `failed` run is left
//! whose "resume" hint could not help), with the setting or file named; and a job that panics
//! fails alone while the engine's worker goes on with the queue.

use candle_core::Device;
use soup_core::engine::{
    tasks, DataSource, Engine, EvalJob, EvalTarget, JobSpec, JobUpdate, MergeJob, TrainJob,
};
use soup_core::merge::MergeKind;
use soup_store::{RunStatus, Store};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

fn model() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/reference/tiny-llama")
        .display()
        .to_string()
}

fn engine(dir: &std::path::Path) -> Engine {
    let store = Arc::new(Store::open(dir).unwrap());
    Engine::new(store, dir, Device::Cpu, None).unwrap()
}

fn train(f: impl FnOnce(&mut TrainJob)) -> JobSpec {
    let mut j = TrainJob::new(
        "skill",
        &model(),
        vec![DataSource::parse("builtin:math-train")],
    );
    j.train.max_steps = Some(1);
    f(&mut j);
    JobSpec::Train(j)
}

fn eval(f: impl FnOnce(&mut EvalJob)) -> JobSpec {
    let mut j = EvalJob::new(
        &model(),
        EvalTarget::Base,
        tasks::MANUAL_QA,
        DataSource::parse("builtin:manualqa-test"),
    );
    j.limit = Some(2);
    j.max_new_tokens = 4;
    f(&mut j);
    JobSpec::Eval(j)
}

#[test]
fn bad_jobs_are_refused_before_a_run_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let malformed = dir.path().join("bad.jsonl");
    std::fs::write(
        &malformed,
        "{\"instruction\": \"a\", \"output\": \"b\"}\n{not json\n",
    )
    .unwrap();
    let bad_qa = dir.path().join("qa.json");
    std::fs::write(&bad_qa, "[{\"question\": 3}]").unwrap();
    // (what the message must name, the job)
    let cases: Vec<(&str, JobSpec)> = vec![
        ("--lr", train(|j| j.train.lr = f64::NAN)),
        ("--lr", train(|j| j.train.lr = -1.0)),
        ("--dropout", train(|j| j.train.dropout = 1.0)),
        ("--alpha", train(|j| j.lora.alpha = 0.0)),
        ("--alpha", train(|j| j.lora.alpha = -8.0)),
        ("--rank", train(|j| j.lora.rank = 0)),
        // The fixture's smallest target projection is far below 100 000.
        ("--rank", train(|j| j.lora.rank = 100_000)),
        ("--epochs", train(|j| j.train.epochs = 0)),
        ("--batch-size", train(|j| j.train.batch_size = 0)),
        (
            "no such data file",
            train(|j| j.data = vec![DataSource::parse("/nonexistent/x.jsonl")]),
        ),
        (
            "bad.jsonl",
            train(|j| j.data = vec![DataSource::File(malformed.clone())]),
        ),
        (
            "built-in set",
            train(|j| j.data = vec![DataSource::parse("builtin:nope")]),
        ),
        ("model", train(|j| j.model = "no-such-model".into())),
        ("--max-new-tokens", eval(|j| j.max_new_tokens = 1_000_000)),
        ("--max-new-tokens", eval(|j| j.max_new_tokens = 0)),
        ("--batch-size", eval(|j| j.batch_size = 0)),
        (
            "qa.json",
            eval(|j| j.data = DataSource::File(bad_qa.clone())),
        ),
        (
            "missing-adapter",
            eval(|j| j.target = EvalTarget::Adapter("missing-adapter".into())),
        ),
        (
            "--weights",
            JobSpec::Merge(MergeJob::new(
                "m",
                MergeKind::Linear,
                vec!["a".into()],
                vec![f64::NAN],
            )),
        ),
    ];
    let n = cases.len();
    for (named, spec) in cases {
        let err = e
            .run_now(spec.clone(), &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains(named), "expected {named:?} in: {err}");
        // The cheap check (the dashboard's) catches everything but the model's own limits.
        let model_limit = named == "--rank" || named == "--max-new-tokens";
        match e.submit(spec) {
            Err(err) => assert!(err.to_string().contains(named), "submit: {named:?}: {err}"),
            Ok(_) => assert!(model_limit, "submit accepted a job that names {named:?}"),
        }
    }
    let runs = e.store().list_runs(&Default::default()).unwrap();
    // Only jobs over the model's own limits may be recorded by `submit` (the worker then
    // fails them): 3 of the cases. `run_now` recorded none.
    assert!(
        runs.items.len() <= 3,
        "{} of {n} bad jobs recorded",
        runs.items.len()
    );
    for r in &runs.items {
        assert!(
            r.label.starts_with("train") || r.label.starts_with("eval"),
            "{r:?}"
        );
    }
}

#[test]
fn a_finished_run_asked_to_resume_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let (id, _) = e.run_now(eval(|_| {}), &mut |_| {}).unwrap();
    let err = e.resume_now(id, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("already done"), "{err}");
}

#[test]
fn the_worker_survives_a_job_that_panics() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let e = Engine::start(store, dir.path(), Device::Cpu, None).unwrap();
    let events = e.subscribe();
    e.panic_next_job();
    let first = e.submit(eval(|_| {})).unwrap();
    let second = e.submit(eval(|_| {})).unwrap();
    let (mut first_failed, mut second_done) = (None, false);
    while !(first_failed.is_some() && second_done) {
        let ev = events
            .recv_timeout(Duration::from_secs(120))
            .expect("the worker stopped sending events");
        match ev.update {
            JobUpdate::Failed(m) if ev.run == first => first_failed = Some(m),
            JobUpdate::Finished(_) if ev.run == second => second_done = true,
            JobUpdate::Failed(m) if ev.run == second => panic!("second job failed: {m}"),
            _ => {}
        }
    }
    let message = first_failed.unwrap();
    assert!(message.contains("panicked"), "{message}");
    let run = e.store().get_run(first).unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    e.shutdown();
}

/// New tokens that fit the context alone but not after the prompt: the message is about the
/// new tokens and says how many fit.
#[test]
fn too_many_new_tokens_after_the_prompt_say_how_many_fit() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    // The fixture's context is 256 tokens; any prompt leaves fewer than 255 for new tokens.
    let err = e
        .run_now(eval(|j| j.max_new_tokens = 255), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("lower --max-new-tokens to at most"), "{err}");
}
