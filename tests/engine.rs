//! The job engine end to end on the tiny fixture model: train a LoRA on a built-in set, learn
//! CAT weights over two adapters, merge, evaluate on code-math and manual-QA with records in
//! the store, and resume an evaluation without redoing finished questions.

use candle_core::Device;
use soup_core::engine::{
    tasks, CatJob, DataSource, Engine, EvalJob, EvalTarget, JobSpec, JobUpdate, MergeJob, TrainJob,
};
use soup_store::{RecordQuery, RunStatus, Store};
use std::path::PathBuf;
use std::sync::Arc;

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

#[test]
fn train_cat_merge_eval_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let mut steps = 0;
    let mut job = TrainJob::new(
        "math",
        &model(),
        vec![DataSource::parse("builtin:math-train")],
    );
    job.limit = Some(24);
    job.lora.rank = 4;
    job.train.batch_size = 4;
    job.train.max_steps = Some(3);
    job.max_len = 128;
    let (run, out) = e
        .run_now(JobSpec::Train(job), &mut |u| {
            if let JobUpdate::Progress { loss: Some(_), .. } = u {
                steps += 1;
            }
        })
        .unwrap();
    assert_eq!(steps, 3);
    assert_eq!(out.summary["steps"], 3);
    assert!(out.summary["final_train_loss"]
        .as_f64()
        .unwrap()
        .is_finite());
    assert_eq!(
        e.store().get_run(run).unwrap().unwrap().status,
        RunStatus::Done
    );
    let rec = e.store().get_adapter("math").unwrap().unwrap();
    assert_eq!(rec.loss_curve.len(), 3);

    let a = fixtures().join("adapter-a").display().to_string();
    let b = fixtures().join("adapter-b").display().to_string();
    let mut cat = CatJob::new(
        "soup",
        &model(),
        vec![a.clone(), b.clone()],
        vec![DataSource::parse("builtin:math-train")],
    );
    cat.train.max_steps = Some(2);
    cat.train.batch_size = 2;
    cat.max_len = 128;
    let (_, out) = e.run_now(JobSpec::Cat(cat), &mut |_| {}).unwrap();
    let values = out.summary["cat_weights"]["values"].as_array().unwrap();
    assert_eq!(values.len(), 2 * 2 * 7);
    let stored = e.store().get_adapter("soup").unwrap().unwrap();
    assert!(stored.cat_weights.is_some());
    // How far the weights moved and the held-out losses, with the adapter and in the summary;
    // held out: up to 32 examples of the data outside the CAT sample.
    let moved = soup_core::train::CatMovement::of_adapter(&stored).expect("cat_movement stored");
    let held = moved.heldout.as_ref().expect("held-out loss");
    assert_eq!(held.examples, 32);
    assert_eq!(held.source, "unsampled skill data");
    assert!(held.start.is_finite() && held.learned.is_finite());
    assert_eq!(moved.spread.len(), 2);
    assert_eq!(
        soup_core::train::CatMovement::from_hyperparams(&out.summary),
        Some(moved)
    );
    // The folded CAT adapter has rank 8 + 8 on each projection.
    assert!(stored.modules.iter().all(|m| m.rank == 16));

    let mut merge = MergeJob::new(
        "ties",
        soup_core::merge::MergeKind::Ties,
        vec![a.clone(), b.clone()],
        vec![0.7, 0.3],
    );
    merge.density = Some(0.5);
    merge.out = Some(dir.path().join("ties-peft"));
    e.run_now(JobSpec::Merge(merge), &mut |_| {}).unwrap();
    assert!(dir
        .path()
        .join("ties-peft/adapter_model.safetensors")
        .exists());

    for (task, data, target) in [
        (
            tasks::CODE_MATH,
            "builtin:codemath-test",
            EvalTarget::Adapter("soup".into()),
        ),
        (
            tasks::MANUAL_QA,
            "builtin:manualqa-test",
            EvalTarget::Adapter("ties".into()),
        ),
        (tasks::MATH_COT, "builtin:math-test", EvalTarget::Base),
    ] {
        let mut ev = EvalJob::new(&model(), target, task, DataSource::parse(data));
        ev.limit = Some(3);
        ev.max_new_tokens = 12;
        ev.batch_size = 2;
        // The tiny model's context (256 tokens) has no room for few-shot demos.
        ev.shots = 0;
        let (run, out) = e.run_now(JobSpec::Eval(ev), &mut |_| {}).unwrap();
        assert_eq!(out.summary["n"], 3, "{task:?}");
        let page = e
            .store()
            .records_page(run, &RecordQuery::default())
            .unwrap();
        assert_eq!(page.items.len(), 3);
        for r in &page.items {
            // The grader's record comes back whole.
            let q: soup_evals::driver::QuestionRecord =
                serde_json::from_value(r.detail.clone()).unwrap();
            assert!(!q.prompt.is_empty() && !r.verdict.is_empty());
            assert_eq!(q.verdict_label(), r.verdict);
            assert_eq!(q.task, task.name());
            assert_eq!(q.dtype.as_deref(), Some("f32"));
            assert!(q.prompt_style.is_some());
            // Only new tokens are recorded, never the prompt.
            assert!(!q.raw_output.starts_with(&q.prompt));
        }
        assert!(!e.store().scores(run).unwrap().items.is_empty());
    }
}

#[test]
fn cancelled_eval_resumes_without_redoing_questions() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let mut ev = EvalJob::new(
        &model(),
        EvalTarget::Base,
        tasks::MANUAL_QA,
        DataSource::parse("builtin:manualqa-test"),
    );
    ev.limit = Some(6);
    ev.max_new_tokens = 8;
    ev.batch_size = 2;
    // Cancel after the first batch has been recorded.
    let e2 = e.clone();
    let mut seen = 0;
    let mut run_id = None;
    let res = e.run_now(JobSpec::Eval(ev.clone()), &mut |u| {
        if let JobUpdate::Progress { done, .. } = u {
            seen = *done;
            if *done >= 2 {
                if let Some(id) = run_id.or_else(|| {
                    e2.store()
                        .list_runs(&Default::default())
                        .unwrap()
                        .items
                        .first()
                        .map(|r| r.id)
                }) {
                    run_id = Some(id);
                    e2.control(id)
                        .unwrap()
                        .cancel
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    });
    assert!(
        matches!(res, Err(soup_core::CoreError::Cancelled)),
        "{res:?}"
    );
    let id = run_id.unwrap();
    let before = e.store().record_count(id).unwrap();
    assert!(
        (2..6).contains(&before),
        "{before} records after cancel (seen {seen})"
    );
    assert_eq!(
        e.store().get_run(id).unwrap().unwrap().status,
        RunStatus::Cancelled
    );
    let out = e.resume_now(id, &mut |_| {}).unwrap();
    assert_eq!(out.summary["n"], 6);
    assert_eq!(out.summary["resumed"], before);
    assert_eq!(e.store().record_count(id).unwrap(), 6);
    // A second identical evaluation is answered from the generation cache.
    let (_, again) = e.run_now(JobSpec::Eval(ev), &mut |_| {}).unwrap();
    assert_eq!(again.summary["cache_hits"], 6);
}

/// The generation cache answers a repeated evaluation, records that it did, and never serves
/// an answer generated in another precision.
#[test]
fn generation_cache_is_keyed_by_precision_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let job = |dtype| {
        let mut ev = EvalJob::new(
            &model(),
            EvalTarget::Base,
            tasks::MANUAL_QA,
            DataSource::parse("builtin:manualqa-test"),
        );
        ev.limit = Some(2);
        ev.max_new_tokens = 6;
        ev.dtype = dtype;
        JobSpec::Eval(ev)
    };
    let cached = |run| -> Vec<bool> {
        e.store()
            .records_page(run, &RecordQuery::default())
            .unwrap()
            .items
            .iter()
            .map(|r| r.detail["cached"].as_bool().unwrap())
            .collect()
    };
    let (first, out) = e.run_now(job(None), &mut |_| {}).unwrap();
    assert_eq!(out.summary["dtype"], "f32");
    assert_eq!(cached(first), vec![false, false]);
    let (again, out) = e.run_now(job(None), &mut |_| {}).unwrap();
    assert_eq!(out.summary["cache_hits"], 2);
    assert_eq!(cached(again), vec![true, true]);
    let bf16 = Some(soup_core::device::Precision::Bf16);
    let (half, out) = e.run_now(job(bf16), &mut |_| {}).unwrap();
    assert_eq!(
        out.summary["cache_hits"], 0,
        "an f32 answer served to a bf16 run"
    );
    assert_eq!(cached(half), vec![false, false]);
    // The recorded spec says what ran.
    let spec = e.store().get_run(first).unwrap().unwrap().spec;
    assert_eq!(spec["dtype"], "f32");
}

/// Asked for chat prompts, a model without a chat template is evaluated with the plain form,
/// and every record says so (it used to record `chat` while sending plain text).
#[test]
fn a_missing_chat_template_is_recorded_as_plain() {
    let dir = tempfile::tempdir().unwrap();
    let plain_model = dir.path().join("tiny-llama-no-template");
    std::fs::create_dir(&plain_model).unwrap();
    for f in std::fs::read_dir(fixtures().join("tiny-llama")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, plain_model.join(f.file_name().unwrap())).unwrap();
    }
    let cfg_path = plain_model.join("tokenizer_config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg.as_object_mut().unwrap().remove("chat_template");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();

    let e = engine(dir.path());
    let mut ev = EvalJob::new(
        &plain_model.display().to_string(),
        EvalTarget::Base,
        tasks::MANUAL_QA,
        DataSource::parse("builtin:manualqa-test"),
    );
    ev.limit = Some(2);
    ev.max_new_tokens = 6;
    ev.chat = Some(true);
    let (run, out) = e.run_now(JobSpec::Eval(ev), &mut |_| {}).unwrap();
    assert_eq!(out.summary["prompt_style"], "plain");
    for r in e
        .store()
        .records_page(run, &RecordQuery::default())
        .unwrap()
        .items
    {
        assert_eq!(r.detail["prompt_style"], "plain");
        // The plain form, as the task wrote it: no chat markup.
        assert!(r.detail["prompt"].as_str().unwrap().ends_with("Answer:"));
    }
}

/// Only one process opens a store and its queue lives in memory: what a stopped process left
/// `running` or `queued` can never run, so a new engine marks both failed, resumable, instead
/// of leaving them to wait forever (and to block a recipe launched again).
#[test]
fn runs_a_stopped_process_left_running_or_queued_are_failed_and_resumable() {
    let dir = tempfile::tempdir().unwrap();
    let (queued, running, done) = {
        let store = Store::open(dir.path()).unwrap();
        let spec = serde_json::json!({});
        let queued = store
            .create_run(soup_store::RunKind::Eval, "queued", spec.clone())
            .unwrap();
        let running = store
            .create_run(soup_store::RunKind::Eval, "running", spec.clone())
            .unwrap();
        store.start_run(running.id).unwrap();
        let done = store
            .create_run(soup_store::RunKind::Eval, "done", spec)
            .unwrap();
        store.start_run(done.id).unwrap();
        store.finish_run(done.id, RunStatus::Done, None).unwrap();
        store.flush().unwrap();
        (queued.id, running.id, done.id)
    };
    let engine = engine(dir.path());
    let get = |id| engine.store().get_run(id).unwrap().unwrap();
    assert_eq!(get(queued).status, RunStatus::Failed);
    assert!(get(queued).error.unwrap().contains("before it started"));
    assert_eq!(get(running).status, RunStatus::Failed);
    assert!(get(running).error.unwrap().contains("while it ran"));
    assert_eq!(get(done).status, RunStatus::Done);
}
