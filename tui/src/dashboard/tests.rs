//! Dashboard tests: snapshots of every screen (ratatui `TestBackend` + insta) on a store
//! seeded with fixed data (fixed run ids and timestamps, so nothing needs filtering), and
//! keystroke-driven tests that go through the keymap, `update` and the effects exactly as
//! the event loop does, with a stand-in engine that records jobs without running a model.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use soup_core::engine::{
    tasks, DataSource, EvalJob, EvalTarget, EvalTask, JobEvent, JobSpec, JobUpdate, RunOutcome,
    TrainJob,
};
use soup_store::{
    AdapterMethod, AdapterRecord, CatWeights, ModuleSpec, Progress, RunId, RunKind, RunRecord,
    RunStatus, Score, Store, StoredQuestion,
};

use super::app::{update, Action, App, Command, Tab};
use super::backend::JobBackend;
use super::effects::Effects;
use super::event::action_for_key;

/// 2026-11-01 09:00 UTC: every seeded timestamp is an offset from it.
const T0: u64 = 1_793_523_600_000;

// ---- fixtures ----------------------------------------------------------------------------

/// Records jobs in the store as the engine would (queued runs with their spec), runs nothing.
struct FakeEngine {
    store: Arc<Store>,
    submitted: Mutex<Vec<JobSpec>>,
}

impl JobBackend for FakeEngine {
    fn submit(&self, spec: JobSpec) -> Result<RunId, String> {
        // The engine records an evaluation with its task's grader version.
        let mut recorded = spec.clone();
        recorded.fix_grader();
        let value = serde_json::to_value(&recorded).map_err(|e| e.to_string())?;
        let run = self
            .store
            .create_run(spec.kind(), &spec.label(), value)
            .map_err(|e| e.to_string())?;
        self.submitted.lock().map_err(|e| e.to_string())?.push(spec);
        Ok(run.id)
    }

    fn cancel(&self, run: RunId) -> Result<(), String> {
        self.store
            .finish_run(run, RunStatus::Cancelled, None)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn resume(&self, run: RunId) -> Result<(), String> {
        let mut record = self
            .store
            .get_run(run)
            .map_err(|e| e.to_string())?
            .ok_or("no such run")?;
        record.status = RunStatus::Queued;
        record.error = None;
        self.store.put_run(&record).map_err(|e| e.to_string())
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    engine: Arc<FakeEngine>,
    effects: Effects,
    app: App,
}

impl Harness {
    /// An empty store; `seed` fills it.
    fn new(seed: bool) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(dir.path()).expect("open store"));
        if seed {
            seed_store(&store);
        }
        let engine = Arc::new(FakeEngine {
            store: store.clone(),
            submitted: Mutex::new(Vec::new()),
        });
        let effects = Effects::new(store.clone(), engine.clone(), dir.path().to_path_buf());
        let app = App::new(dir.path().to_path_buf(), true);
        let mut harness = Harness {
            _dir: dir,
            store,
            engine,
            effects,
            app,
        };
        harness.run(App::initial_command());
        harness
    }

    fn data_dir(&self) -> &Path {
        self._dir.path()
    }

    /// Carries out a command and feeds its answers back, as the event loop does.
    fn run(&mut self, command: Command) {
        let mut answers = Vec::new();
        self.effects.execute(command, &mut |a| answers.push(a));
        for action in answers {
            self.act(action);
        }
    }

    fn act(&mut self, action: Action) {
        if let Some(command) = update(&mut self.app, action) {
            self.run(command);
        }
    }

    fn key(&mut self, code: KeyCode) {
        let key = KeyEvent::new(code, KeyModifiers::NONE);
        if let Some(action) = action_for_key(&self.app, key) {
            self.act(action);
        }
    }

    /// Types keys: each char is one key press; `⏎` Enter, `⎋` Esc, `→` `←` `↓` `↑` arrows,
    /// `⇥` Tab.
    fn keys(&mut self, keys: &str) {
        for c in keys.chars() {
            let code = match c {
                '⏎' => KeyCode::Enter,
                '⎋' => KeyCode::Esc,
                '→' => KeyCode::Right,
                '←' => KeyCode::Left,
                '↓' => KeyCode::Down,
                '↑' => KeyCode::Up,
                '⇥' => KeyCode::Tab,
                '⌫' => KeyCode::Backspace,
                c => KeyCode::Char(c),
            };
            self.key(code);
        }
    }

    fn screen(&self, width: u16, height: u16) -> String {
        render(&self.app, width, height)
    }
}

/// Draws one frame and returns its text, one line per row, trailing spaces trimmed.
fn render(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("terminal");
    terminal
        .draw(|frame| super::ui::draw(app, frame))
        .expect("draw");
    let buffer = terminal.backend().buffer();
    let mut out = String::new();
    for y in 0..buffer.area.height {
        let mut line = String::new();
        for x in 0..buffer.area.width {
            line.push_str(buffer[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn run_id(offset_min: u64, random: u128) -> RunId {
    RunId::from_parts(T0 + offset_min * 60_000, random)
}

fn adapter(name: &str, skill: Option<&str>, method: AdapterMethod, minutes: u64) -> AdapterRecord {
    AdapterRecord {
        name: name.into(),
        base_model: "smollm2-135m-instruct".into(),
        skill: skill.map(str::to_string),
        dataset: skill.map(|s| format!("builtin:{s}-train")),
        modules: ["q_proj", "v_proj", "down_proj"]
            .iter()
            .map(|m| ModuleSpec {
                module: m.to_string(),
                rank: 16,
                alpha: 32.0,
            })
            .collect(),
        method,
        parents: Vec::new(),
        hyperparams: serde_json::json!({"lr": 0.0002, "epochs": 2}),
        loss_curve: (0..60)
            .map(|s| (s * 10, 2.5 * (-(s as f32) / 20.0).exp() + 0.4))
            .collect(),
        val_loss: Some(0.61),
        cat_weights: None,
        size_bytes: 3_686_400,
        created: T0 + minutes * 60_000,
        blob: None,
    }
}

fn eval_spec(target: EvalTarget, task: EvalTask) -> serde_json::Value {
    let data = DataSource::Builtin("codemath-test".into());
    serde_json::to_value(JobSpec::Eval(EvalJob::new(
        "smollm2-135m-instruct",
        target,
        task,
        data,
    )))
    .expect("spec")
}

fn run_record(
    id: RunId,
    kind: RunKind,
    label: &str,
    spec: serde_json::Value,
    status: RunStatus,
    progress: (u64, u64),
    error: Option<&str>,
) -> RunRecord {
    let created = id.timestamp_ms();
    RunRecord {
        id,
        kind,
        label: label.into(),
        spec,
        status,
        created,
        started: (status != RunStatus::Queued).then_some(created + 1_000),
        finished: status.is_final().then_some(created + 95_000),
        progress: Progress {
            done: progress.0,
            total: progress.1,
            message: String::new(),
        },
        error: error.map(str::to_string),
    }
}

/// Seeded eval runs: (id, target label, score on code-math).
fn eval_runs() -> Vec<(RunId, EvalTarget, f64)> {
    vec![
        (run_id(10, 1), EvalTarget::Base, 0.02),
        (run_id(20, 2), EvalTarget::Adapter("math".into()), 0.11),
        (
            run_id(30, 3),
            EvalTarget::Adapter("cat-math+code".into()),
            0.34,
        ),
        (
            run_id(40, 4),
            EvalTarget::Adapter("ties-math+code".into()),
            0.21,
        ),
    ]
}

const RECORDS_PER_RUN: u64 = 120;

fn question(run: RunId, index: u64, good: bool) -> StoredQuestion {
    let verdict = match (good, index % 7) {
        (_, 6) => "timeout",
        (true, _) => "correct",
        (false, _) => "wrong",
    };
    let answer = index * 3 + 4;
    let pred = if verdict == "correct" {
        answer
    } else {
        answer + 1
    };
    let graded = soup_evals::driver::QuestionRecord {
        id: format!("cm-{index:04}"),
        task: "code-math".into(),
        prompt: format!(
            "Solve with a Python program.\n\nQ: Ada has {index} apples and buys {} more, three times. How many?",
            index + 1
        ),
        raw_output: format!("apples = {index}\napples += 3 * {}\nprint(apples)", if verdict == "correct" { index + 1 } else { index + 2 }),
        extracted: Some(format!("apples = {index}\nprint(apples)")),
        gold: answer.to_string(),
        pred: Some(pred.to_string()),
        verdict: serde_json::from_value(serde_json::json!(verdict)).ok(),
        correct: verdict == "correct",
        scores: BTreeMap::from([("accuracy".to_string(), if verdict == "correct" { 1.0 } else { 0.0 })]),
        stdout: Some(format!("{pred}\n")),
        stderr: Some(if verdict == "timeout" {
            "killed after 5 s".into()
        } else {
            String::new()
        }),
        exit_code: Some(if verdict == "timeout" { -9 } else { 0 }),
        signal: None,
        sandbox_message: None,
        sandbox_seconds: Some((40 + index % 13) as f64 / 1000.0),
        isolation: None,
        prompt_tokens: 180,
        output_tokens: 24,
        latency_s: 0.9,
        cached: false,
        prompt_style: None,
        dtype: None,
        ref_logprob: None,
        ref_tokens: None,
    };
    StoredQuestion {
        run,
        index,
        id: graded.id.clone(),
        verdict: verdict.into(),
        scores: graded.scores.clone(),
        detail: serde_json::to_value(&graded).expect("record"),
    }
}

fn seed_store(store: &Store) {
    let mut cat = adapter("cat-math+code", None, AdapterMethod::Cat, 50);
    cat.parents = vec!["math".into(), "code".into()];
    cat.dataset = None;
    let layers = 16;
    let modules = vec!["q_proj".to_string(), "v_proj".into(), "down_proj".into()];
    let mut values = Vec::new();
    for a in 0..2 {
        for l in 0..layers {
            for m in 0..modules.len() {
                let x = (l as f32 / layers as f32) * if a == 0 { 1.0 } else { -1.0 };
                values.push(0.5 + 0.4 * x + 0.05 * m as f32);
            }
        }
    }
    cat.cat_weights = Some(CatWeights {
        adapters: vec!["math".into(), "code".into()],
        layers,
        modules,
        values,
    });
    // What a CAT run stores beside its weights: the start (uniform softmax: 1/2 a slot) and
    // whether the run moved.
    cat.hyperparams = serde_json::json!({
        "lr": 0.05,
        "cat_movement": {
            "param": "softmax",
            "init": "uniform",
            "mean_abs_delta": 0.1906,
            "max_abs_delta": 0.475,
            "weights": 96,
            "spread": [
                {"adapter": "math", "start_mean": 0.5, "mean": 0.738, "sd": 0.11, "min": 0.5,
                 "max": 0.975, "largest_in": 45, "slots": 48},
                {"adapter": "code", "start_mean": 0.5, "mean": 0.363, "sd": 0.11, "min": 0.125,
                 "max": 0.6, "largest_in": 3, "slots": 48}
            ],
            "heldout": {"source": "unsampled skill data", "examples": 32, "start": 1.9021,
                        "learned": 1.7734},
            "verdict": "moved"
        }
    });
    for a in [
        adapter("math", Some("math"), AdapterMethod::Trained, 0),
        adapter("code", Some("code"), AdapterMethod::Trained, 5),
        cat,
    ] {
        store
            .save_adapter(&a, b"not real tensors")
            .expect("save adapter");
    }
    for (id, target, score) in eval_runs() {
        let label = format!("eval {} on code-math", target.label());
        store
            .put_run(&run_record(
                id,
                RunKind::Eval,
                &label,
                eval_spec(target, tasks::CODE_MATH),
                RunStatus::Done,
                (RECORDS_PER_RUN, RECORDS_PER_RUN),
                None,
            ))
            .expect("put run");
        store
            .put_scores(&[
                Score {
                    run: id,
                    metric: "accuracy".into(),
                    value: score,
                    ci_low: (score - 0.05).max(0.0),
                    ci_high: score + 0.05,
                    n: RECORDS_PER_RUN,
                },
                Score {
                    run: id,
                    metric: "executed".into(),
                    value: 0.9 - score,
                    ci_low: 0.8 - score,
                    ci_high: 1.0 - score,
                    n: RECORDS_PER_RUN,
                },
            ])
            .expect("scores");
        // The CAT run and the base run get per-question records (the base run answers worse).
        let good_every = if id == run_id(30, 3) {
            3
        } else if id == run_id(10, 1) {
            40
        } else {
            0
        };
        if good_every > 0 {
            let records: Vec<StoredQuestion> = (0..RECORDS_PER_RUN)
                .map(|i| question(id, i, i % good_every == 0))
                .collect();
            store.put_records(&records).expect("records");
        }
    }
    let train = TrainJob::new(
        "qa",
        "smollm2-135m-instruct",
        vec![DataSource::Builtin("qa-train".into())],
    );
    store
        .put_run(&run_record(
            run_id(60, 6),
            RunKind::Train,
            "train qa",
            serde_json::to_value(JobSpec::Train(train.clone())).expect("spec"),
            RunStatus::Failed,
            (12, 200),
            Some("out of memory while allocating the AdamW state: lower the batch size"),
        ))
        .expect("put run");
    store
        .put_run(&run_record(
            run_id(70, 7),
            RunKind::Train,
            "train code",
            serde_json::to_value(JobSpec::Train(train.clone())).expect("spec"),
            RunStatus::Running,
            (40, 200),
            None,
        ))
        .expect("put run");
    store
        .put_run(&run_record(
            run_id(80, 8),
            RunKind::Eval,
            "eval base on manual-qa",
            eval_spec(EvalTarget::Base, tasks::MANUAL_QA),
            RunStatus::Queued,
            (0, 0),
            None,
        ))
        .expect("put run");
}

fn progress(run: RunId, done: u64, loss: f64) -> Action {
    Action::Job(JobEvent {
        run,
        update: JobUpdate::Progress {
            done,
            total: 200,
            message: format!("step {done}/200"),
            loss: Some(loss),
            tokens_per_s: Some(231.0),
            eta_s: Some(((200 - done) * 3) as f64),
        },
    })
}

// ---- snapshots ---------------------------------------------------------------------------

const W: u16 = 110;
const H: u16 = 32;

#[test]
fn snapshot_adapters_list_and_detail() {
    let mut h = Harness::new(true);
    h.keys("jj"); // math
    insta::assert_snapshot!("adapters", h.screen(W, H));
}

#[test]
fn snapshot_adapters_cat_heat_map_sorted_by_date_filtered() {
    let mut h = Harness::new(true);
    h.keys("ssssss"); // sort by date
    h.keys("/cat⏎");
    assert_eq!(h.app.adapters.view.len(), 1);
    insta::assert_snapshot!("adapters_cat", h.screen(W, H));
}

#[test]
fn snapshot_adapters_cat_delta_from_start() {
    let mut h = Harness::new(true);
    h.keys("/cat⏎t");
    assert!(h.app.adapters.cat_delta);
    let screen = h.screen(W, H);
    // Learned minus the uniform start (1/2): the fixture's weights 0.5 + 0.4 x + 0.05 m.
    assert!(screen.contains("CAT Δ from start"), "{screen}");
    assert!(screen.contains("-0.375…+0.475"), "{screen}");
    assert!(screen.contains("verdict: moved"), "{screen}");
    insta::assert_snapshot!("adapters_cat_delta", screen);
    // t again: the weights.
    h.keys("t");
    assert!(!h.app.adapters.cat_delta);
    assert!(h.screen(W, H).contains("CAT weights ·"));
}

#[test]
fn heat_map_rows_drop_the_prefix_the_adapters_share() {
    use super::ui::short_names;
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        short_names(&names(&["code-math-tiny-math", "code-math-tiny-code"])),
        names(&["math", "code"])
    );
    // Only up to a `-`: a shared head of a word stays.
    assert_eq!(
        short_names(&names(&["math", "maths"])),
        names(&["math", "maths"])
    );
    assert_eq!(short_names(&names(&["x-a", "x-"])), names(&["x-a", "x-"]));
    assert_eq!(short_names(&names(&["only-one"])), names(&["only-one"]));
}

#[test]
fn the_delta_needs_a_known_start_and_t_needs_a_cat_adapter() {
    let mut h = Harness::new(true);
    // A trained adapter (code, second by name) has no heat map: t says what it is for.
    h.keys("jt");
    assert!(!h.app.adapters.cat_delta);
    assert!(h
        .app
        .status
        .as_ref()
        .is_some_and(|s| s.text.contains("select a CAT adapter")));
    // A CAT adapter stored without its start: Δ says it cannot be drawn.
    for a in &mut h.app.adapters.items {
        if a.cat_weights.is_some() {
            a.hyperparams = serde_json::json!({"lr": 0.05});
        }
    }
    h.keys("/cat⏎t");
    let screen = h.screen(W, H);
    assert!(
        screen.contains("start of these weights is not recorded"),
        "{screen}"
    );
    assert!(screen.contains("no movement summary stored"), "{screen}");
}

#[test]
fn snapshot_adapters_empty_store() {
    let h = Harness::new(false);
    insta::assert_snapshot!("adapters_empty", h.screen(W, H));
}

#[test]
fn snapshot_compose_with_picks() {
    let mut h = Harness::new(true);
    h.keys("2j j →jj→");
    insta::assert_snapshot!("compose", h.screen(W, H));
}

#[test]
fn snapshot_compose_missing_dataset_file_is_a_form_error() {
    let mut h = Harness::new(true);
    h.keys("2j j →→j ");
    // Replace the dataset with a path that does not exist.
    for _ in 0..30 {
        h.key(KeyCode::Backspace);
    }
    h.keys("/nonexistent/data.jsonl⏎");
    h.keys("⏎");
    let error = h.app.compose.error.clone().unwrap_or_default();
    assert!(error.contains("does not exist"), "{error}");
    assert!(h
        .engine
        .submitted
        .lock()
        .map(|s| s.is_empty())
        .unwrap_or(false));
    insta::assert_snapshot!("compose_error", h.screen(W, H));
}

#[test]
fn snapshot_compose_and_inspect_empty() {
    let mut h = Harness::new(false);
    h.keys("2");
    insta::assert_snapshot!("compose_empty", h.screen(W, H));
    h.keys("5");
    insta::assert_snapshot!("inspect_empty", h.screen(W, H));
}

#[test]
fn snapshot_jobs_running_with_live_progress() {
    let mut h = Harness::new(true);
    let running = run_id(70, 7);
    for (i, loss) in [2.4, 2.1, 1.9, 1.5, 1.3, 1.2, 1.0, 0.9].iter().enumerate() {
        h.act(progress(running, 40 + i as u64 * 5, *loss));
    }
    h.keys("3j"); // newest first: queued eval, then the running train
    assert_eq!(h.app.jobs.selected().map(|r| r.id), Some(running));
    insta::assert_snapshot!("jobs_running", h.screen(W, H));
}

#[test]
fn snapshot_jobs_failed_shows_its_error() {
    let mut h = Harness::new(true);
    h.keys("3jj");
    assert_eq!(
        h.app.jobs.selected().map(|r| r.status),
        Some(RunStatus::Failed)
    );
    insta::assert_snapshot!("jobs_failed", h.screen(W, H));
}

#[test]
fn snapshot_jobs_empty() {
    let mut h = Harness::new(false);
    h.keys("3");
    insta::assert_snapshot!("jobs_empty", h.screen(W, H));
}

#[test]
fn snapshot_results_table_and_chart() {
    let mut h = Harness::new(true);
    h.keys("4");
    let table = h.app.results.table.clone().expect("results loaded");
    assert_eq!(table.methods.first().map(String::as_str), Some("base"));
    assert_eq!(table.methods.len(), 4);
    insta::assert_snapshot!("results", h.screen(W, H));
}

#[test]
fn snapshot_results_paired_view() {
    let mut h = Harness::new(true);
    h.keys("4t");
    // CAT's row is the reference: the stored CAT adapter's.
    let view = h
        .app
        .results
        .current_paired()
        .cloned()
        .expect("paired tests read");
    assert_eq!(view.request.against, "cat-math+code");
    assert_eq!(view.request.column, "code-math accuracy");
    insta::assert_snapshot!("results_paired", h.screen(W, H));
}

/// The seeded records' verdicts, as [`question`] writes them.
fn seeded_right(index: u64, good_every: u64) -> bool {
    index.is_multiple_of(good_every) && index % 7 != 6
}

#[test]
fn the_paired_view_tests_cat_against_each_method_on_the_same_questions() {
    let mut h = Harness::new(true);
    h.keys("4t");
    let view = h
        .app
        .results
        .current_paired()
        .cloned()
        .expect("paired tests read");
    // Only the base run kept records beside CAT's: one test, McNemar's on its b and c.
    assert_eq!(view.tests.len(), 1, "{:#?}", view.tests);
    let t = &view.tests[0];
    assert_eq!(
        (t.method.as_str(), t.baseline.as_str()),
        ("cat-math+code", "base")
    );
    let b = (0..RECORDS_PER_RUN)
        .filter(|i| seeded_right(*i, 3) && !seeded_right(*i, 40))
        .count() as u64;
    let c = (0..RECORDS_PER_RUN)
        .filter(|i| !seeded_right(*i, 3) && seeded_right(*i, 40))
        .count() as u64;
    assert_eq!((t.only_method, t.only_baseline), (Some(b), Some(c)));
    assert_eq!(t.test, "mcnemar");
    assert_eq!(t.n, RECORDS_PER_RUN as usize);
    assert!((t.diff - (b as f64 - c as f64) / RECORDS_PER_RUN as f64).abs() < 1e-12);
    assert!((t.p - soup_evals::stats::mcnemar_exact(b, c)).abs() < 1e-12);
    assert!(t.significant && t.ci_low > 0.0, "{t:?}");
    let screen = h.screen(W, H);
    assert!(
        screen.contains("no per-question records to pair"),
        "{screen}"
    );

    // Enter pairs against the selected row instead: base minus each, CAT's difference negated.
    h.keys("g⏎");
    let view = h
        .app
        .results
        .current_paired()
        .cloned()
        .expect("paired tests read");
    assert_eq!(view.request.against, "base");
    let back = view
        .tests
        .iter()
        .find(|t| t.baseline == "cat-math+code")
        .expect("base against CAT");
    assert!((back.diff + t.diff).abs() < 1e-12);
    assert_eq!(back.only_method, t.only_baseline);

    // Another column is paired on its own; export still writes the table; t goes back.
    h.keys("→");
    assert_eq!(
        h.app
            .results
            .current_paired()
            .map(|v| v.request.column.as_str()),
        Some("code-math executed")
    );
    h.keys("e");
    assert_eq!(h.app.results.exported.len(), 3);
    h.keys("t");
    assert_eq!(
        h.app.results.view,
        super::screens::results::ResultsView::Intervals
    );
    assert!(h.screen(W, H).contains("95% intervals"));
}

#[test]
fn whiskers_share_one_axis() {
    use super::ui::results_whisker as whisker;
    assert_eq!(
        whisker(0.2, 0.5, 0.8, (0.0, 1.0), 11, false, false),
        "  ├──█──┤  "
    );
    assert_eq!(
        whisker(0.2, 0.5, 0.8, (0.0, 1.0), 11, true, false),
        "░░├──█──┤  "
    );
    // A difference: 0 marked, under the whisker or beside it.
    assert_eq!(
        whisker(-0.5, 0.0, 0.5, (-1.0, 1.0), 11, false, true),
        "   ├─█──┤  "
    );
    assert_eq!(
        whisker(-0.8, -0.4, -0.2, (-1.0, 1.0), 11, false, true),
        " ├─█┤┊     "
    );
    assert_eq!(
        whisker(-0.6, 0.2, 0.6, (-1.0, 1.0), 11, false, true),
        "  ├──┼█─┤  "
    );
    // Axis labels never run into each other on a narrow axis.
    use super::ui::results_axis_labels as labels;
    assert_eq!(labels((0.0, 1.0), 20, 2), "0.00    0.50    1.00");
    assert_eq!(labels((-0.17, 0.17), 12, 2), "-0.17   0.17");
    assert_eq!(labels((-0.17, 0.17), 8, 2), "");
    assert_eq!(super::ui::results_p_value(0.04321), "0.0432");
    assert_eq!(super::ui::results_p_value(3.2e-9), "3e-9");
    assert_eq!(super::ui::results_p_value(f64::NAN), "-");
    // Out of the axis: clamped to its ends; a point interval is its point.
    assert_eq!(
        whisker(-3.0, 0.5, 3.0, (0.0, 1.0), 5, false, false),
        "├─█─┤"
    );
    assert_eq!(whisker(0.5, 0.5, 0.5, (0.0, 1.0), 5, false, false), "  █  ");
    assert_eq!(
        whisker(f64::NAN, 0.5, 0.6, (0.0, 1.0), 3, false, false),
        "?  "
    );
}

#[test]
fn snapshot_results_empty() {
    let mut h = Harness::new(false);
    h.keys("4");
    insta::assert_snapshot!("results_empty", h.screen(W, H));
}

#[test]
fn snapshot_inspect_records_page() {
    let mut h = Harness::new(true);
    h.keys("5jj⏎"); // newest eval runs first: queued manual-qa, ties, cat
    assert_eq!(h.app.inspect.open_run, Some(run_id(30, 3)));
    assert_eq!(h.app.inspect.page.len(), super::app::PAGE_SIZE);
    insta::assert_snapshot!("inspect", h.screen(W, H));
}

#[test]
fn snapshot_inspect_detail_and_compare() {
    let mut h = Harness::new(true);
    h.keys("5jj⏎jjj⏎"); // question 3: right under CAT, wrong under base
    insta::assert_snapshot!("inspect_detail", h.screen(W, H));
    // c cycles the other eval runs: the queued one has no records, then ties, math, base.
    h.keys("cccc");
    assert_eq!(h.app.inspect.compare_run, Some(run_id(10, 1)));
    assert!(h.app.inspect.compare_record.is_some());
    insta::assert_snapshot!("inspect_compare", h.screen(W, H));
    // J scrolls the detail; moving to another question starts at its top.
    h.keys("J");
    assert_eq!(h.app.inspect.scroll, 5);
    h.keys("j");
    assert_eq!(h.app.inspect.scroll, 0);
    assert_eq!(h.app.inspect.selected().map(|r| r.index), Some(4));
}

#[test]
fn snapshot_help_overlay() {
    let mut h = Harness::new(true);
    h.keys("?");
    insta::assert_snapshot!("help", h.screen(W, 40));
    h.keys("x");
    assert!(!h.app.show_help, "any key closes the help");
}

#[test]
fn snapshot_too_small_terminal() {
    let h = Harness::new(true);
    insta::assert_snapshot!("too_small", h.screen(40, 10));
}

#[test]
fn snapshot_missing_model_and_error_status() {
    let mut h = Harness::new(true);
    h.app.model.fetched = false;
    h.keys("2j j ⏎");
    let error = h.app.compose.error.clone().unwrap_or_default();
    assert!(error.contains("press F"), "{error}");
    h.act(Action::CommandFailed(
        "cannot list runs: the store is damaged".into(),
    ));
    insta::assert_snapshot!("model_missing", h.screen(W, H));
    // F asks for the fetch once.
    let mut app = h.app.clone();
    assert_eq!(
        update(&mut app, Action::FetchModel),
        Some(Command::FetchModel)
    );
    assert_eq!(update(&mut app, Action::FetchModel), None);
}

// ---- keystroke-driven behaviour ----------------------------------------------------------

#[test]
fn jobs_held_for_an_adapter_whose_build_failed_are_dropped_and_said_so() {
    let mut h = Harness::new(true);
    // Compose: linear over code and math; its evaluation waits for the merge.
    h.keys("2j j →jjjj⏎");
    assert_eq!(h.app.held.len(), 1);
    let merge_run = h
        .app
        .jobs
        .runs
        .iter()
        .find(|r| r.label.contains("linear-code+math"))
        .map(|r| r.id)
        .expect("the merge is queued");
    h.act(Action::Job(JobEvent {
        run: merge_run,
        update: JobUpdate::Failed("out of memory".into()),
    }));
    assert!(h.app.held.is_empty(), "nothing will build its adapter now");
    let status = h.app.status.clone().expect("status");
    assert!(
        status.text.contains("out of memory") && status.text.contains("1 job(s)"),
        "{}",
        status.text
    );
    // A later job finishing submits nothing for it.
    let before = submitted(&h).len();
    h.act(Action::Job(JobEvent {
        run: merge_run,
        update: JobUpdate::Finished(RunOutcome {
            summary: serde_json::json!({}),
        }),
    }));
    assert_eq!(submitted(&h).len(), before);
}

#[test]
fn launching_a_merge_from_compose_queues_it_in_jobs() {
    let mut h = Harness::new(true);
    // Compose: pick code and math, method linear (5th), Enter.
    h.keys("2j j →jjjj⏎");
    let submitted = h
        .engine
        .submitted
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    // The evaluation needs the merged adapter, which does not exist until the merge ran:
    // the engine would refuse it now, so it waits.
    assert_eq!(submitted.len(), 1, "the merge; its evaluation waits");
    let merge = match &submitted[0] {
        JobSpec::Merge(m) => {
            assert_eq!(m.method, "linear");
            assert_eq!(m.adapters, vec!["code".to_string(), "math".to_string()]);
            m.clone()
        }
        other => panic!("expected a merge, got {other:?}"),
    };
    assert_eq!(h.app.held.len(), 1);
    assert_eq!(h.app.tab, Tab::Jobs);
    assert!(h.screen(W, H).contains("merge linear-code+math"));
    // The merge finishes (its adapter stored): the evaluation is queued.
    let merge_run = h
        .app
        .jobs
        .runs
        .iter()
        .find(|r| r.label.contains("linear-code+math"))
        .map(|r| r.id)
        .expect("the merge is queued");
    let mut merged = adapter(&merge.name, None, AdapterMethod::Merge, 90);
    merged.parents = merge.adapters.clone();
    h.store.save_adapter(&merged, b"x").expect("save");
    h.store
        .finish_run(merge_run, RunStatus::Done, None)
        .expect("finish");
    h.act(Action::Job(JobEvent {
        run: merge_run,
        update: JobUpdate::Finished(RunOutcome {
            summary: serde_json::json!({}),
        }),
    }));
    assert!(h.app.held.is_empty());
    let submitted = h.engine.submitted.lock().map(|s| s.len()).unwrap_or(0);
    assert_eq!(submitted, 2, "the evaluation followed the merge");
    h.act(Action::Tick);
    let queued = h
        .app
        .jobs
        .runs
        .iter()
        .filter(|r| r.status == RunStatus::Queued && r.label.contains("linear-code+math"))
        .count();
    assert_eq!(queued, 1, "{:?}", h.app.jobs.runs);
}

#[test]
fn one_key_launches_every_method_on_the_task() {
    let mut h = Harness::new(true);
    h.keys("2j j A");
    let submitted = h
        .engine
        .submitted
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    // What needs an adapter built by a queued job waits for it, in order.
    let all: Vec<&JobSpec> = submitted.iter().chain(h.app.held.iter()).collect();
    let evals = all.iter().filter(|s| matches!(s, JobSpec::Eval(_))).count();
    // CAT, DATA-MIX, TIES, DARE, linear, SVD, LoraHub, 2 single adapters, base.
    assert_eq!(evals, 10, "{all:#?}");
    assert!(!h.app.held.is_empty());
    assert!(submitted.iter().any(|s| matches!(s, JobSpec::Cat(_))));
    assert!(submitted.iter().any(|s| matches!(s, JobSpec::Train(_))));
}

#[test]
fn a_finished_evaluation_lands_in_results_and_inspect() {
    let mut h = Harness::new(true);
    // Compose: pick code, method "single adapter" (last but one), launch.
    h.keys("2j →Gk⏎");
    let run = h
        .app
        .jobs
        .runs
        .iter()
        .find(|r| r.label == "eval code on code-math")
        .map(|r| r.id)
        .expect("the evaluation is queued");
    // The engine runs it: started, progress, records and scores written, finished.
    h.act(Action::Job(JobEvent {
        run,
        update: JobUpdate::Started,
    }));
    h.act(progress(run, 100, 0.0));
    let records: Vec<StoredQuestion> = (0..75).map(|i| question(run, i, i % 2 == 0)).collect();
    h.store.put_records(&records).expect("records");
    h.store
        .put_scores(&[Score {
            run,
            metric: "accuracy".into(),
            value: 0.43,
            ci_low: 0.3,
            ci_high: 0.55,
            n: 75,
        }])
        .expect("scores");
    h.store.start_run(run).expect("start");
    h.store
        .finish_run(run, RunStatus::Done, None)
        .expect("finish");
    h.act(Action::Job(JobEvent {
        run,
        update: JobUpdate::Finished(RunOutcome {
            summary: serde_json::json!({}),
        }),
    }));
    h.act(Action::Tick);
    let table = h.app.results.table.clone().expect("results");
    let row = table
        .methods
        .iter()
        .position(|m| m == "code")
        .expect("code row");
    let col = table
        .columns
        .iter()
        .position(|c| c == "code-math accuracy")
        .expect("column");
    assert_eq!(table.cells[row][col].as_ref().map(|c| c.value), Some(0.43));

    // Inspect: the newest eval run is ours; pages of 50.
    h.keys("5⏎");
    assert_eq!(h.app.inspect.open_run, Some(run));
    assert_eq!(h.app.inspect.page.len(), 50);
    h.keys("n");
    assert_eq!(h.app.inspect.page.len(), 25);
    assert_eq!(h.app.inspect.page.first().map(|r| r.index), Some(50));
    h.keys("p");
    assert_eq!(h.app.inspect.page.first().map(|r| r.index), Some(0));
    // Filter by verdict: the first verdict in order is "correct".
    h.keys("v");
    assert_eq!(h.app.inspect.verdict.as_deref(), Some("correct"));
    assert!(h.app.inspect.page.iter().all(|r| r.verdict == "correct"));
    // Search text.
    h.keys("vvv/cm-0007⏎"); // back to all verdicts, then search
    assert_eq!(h.app.inspect.page.len(), 1, "{:?}", h.app.inspect.page);
    assert_eq!(h.app.inspect.page[0].id, "cm-0007");
}

#[test]
fn cancel_and_resume_from_jobs() {
    let mut h = Harness::new(true);
    h.keys("3"); // the queued eval is first
    h.keys("x");
    h.act(Action::Tick);
    let first = h.app.jobs.runs.first().cloned().expect("a run");
    assert_eq!(first.status, RunStatus::Cancelled);
    h.keys("r");
    let first = h.app.jobs.runs.first().cloned().expect("a run");
    assert_eq!(first.status, RunStatus::Queued);
    // A done job cannot be resumed: the status line says why.
    h.keys("G");
    h.keys("r");
    let status = h.app.status.clone().expect("status");
    assert!(status.is_error && status.text.contains("only failed or cancelled"));
}

#[test]
fn failed_job_event_shows_the_error_and_the_rest_goes_on() {
    let mut h = Harness::new(true);
    let running = run_id(70, 7);
    h.act(Action::Job(JobEvent {
        run: running,
        update: JobUpdate::Failed("dataset builtin:nope is unknown".into()),
    }));
    let status = h.app.status.clone().expect("status");
    assert!(status.is_error && status.text.contains("builtin:nope"));
    assert!(!h.app.should_quit);
}

#[test]
fn export_writes_three_files_in_the_data_dir() {
    let mut h = Harness::new(true);
    h.keys("4e");
    assert_eq!(h.app.results.exported.len(), 3);
    for path in &h.app.results.exported {
        assert!(path.starts_with(h.data_dir()), "{}", path.display());
        let text = std::fs::read_to_string(path).expect("exported file");
        assert!(text.contains("cat-math+code"), "{}", path.display());
    }
    let md = h
        .app
        .results
        .exported
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "md"))
        .expect("markdown");
    let text = std::fs::read_to_string(md).expect("md");
    assert!(text.contains("**0.340**"), "the best score is bold: {text}");
}

#[test]
fn quit_from_any_screen_and_tab_cycles() {
    let mut h = Harness::new(false);
    h.keys("⇥⇥");
    assert_eq!(h.app.tab, Tab::Jobs);
    h.keys("q");
    assert!(h.app.should_quit);
}

// ---- Train -------------------------------------------------------------------------------

fn submitted(h: &Harness) -> Vec<JobSpec> {
    h.engine
        .submitted
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default()
}

#[test]
fn snapshot_train_form_with_defaults() {
    let mut h = Harness::new(false);
    h.keys("6");
    insta::assert_snapshot!("train", h.screen(W, H));
}

#[test]
fn snapshot_train_cat_form_and_its_error() {
    let mut h = Harness::new(true);
    // Kind → CAT, then Enter without a name.
    h.keys("6 ⏎");
    assert!(h.app.train.error.is_some());
    insta::assert_snapshot!("train_cat_error", h.screen(W, H));
}

#[test]
fn training_a_skill_lora_from_the_form_uses_the_cli_defaults() {
    let mut h = Harness::new(true);
    // name: math2, skill: math; → the built-in list, space on the first set; Enter.
    h.keys("6ji");
    h.keys("math2⏎ji");
    h.keys("math⏎");
    h.keys("→ ⏎");
    let jobs = submitted(&h);
    assert_eq!(jobs.len(), 1, "{:?}", h.app.train.error);
    let JobSpec::Train(job) = &jobs[0] else {
        panic!("expected a training job, got {:?}", jobs[0]);
    };
    let mut expected = TrainJob::new(
        "math2",
        soup_core::runtime::DEFAULT_MODEL,
        vec![DataSource::Builtin(
            soup_core::engine::BUILTINS[0].0.to_string(),
        )],
    );
    expected.skill = Some("math".into());
    assert_eq!(
        job, &expected,
        "the form's untouched fields are TrainJob::new's"
    );
    assert_eq!(h.app.tab, Tab::Jobs);
}

#[test]
fn train_form_settings_and_refusals() {
    let mut h = Harness::new(true);
    h.keys("6ji");
    h.keys("r8⏎");
    // datasets: two, typed.
    h.keys("jji");
    h.keys("builtin:math-train, builtin:code-train⏎");
    // rank: clear the 16, type 4; targets q,v.
    h.keys("jji⌫⌫4⏎jji");
    for _ in 0..20 {
        h.key(KeyCode::Backspace);
    }
    h.keys("q,v⏎");
    // lr 0.001, epochs 1.
    h.keys("ji⌫⌫⌫⌫⌫⌫0.001⏎ji⌫1⏎");
    h.keys("⏎");
    let jobs = submitted(&h);
    let JobSpec::Train(job) = jobs.first().expect("a job") else {
        panic!("not a training job");
    };
    assert_eq!(job.data.len(), 2);
    assert_eq!(job.lora.rank, 4);
    assert_eq!(job.lora.targets.len(), 2);
    assert_eq!(job.train.lr, 0.001);
    assert_eq!(job.train.epochs, 1);
    // A bad number is refused with the field named, nothing submitted.
    let mut h = Harness::new(true);
    h.keys("6ji");
    h.keys("x⏎jji");
    h.keys("builtin:math-train⏎jji");
    h.keys("z⏎⏎");
    let error = h.app.train.error.clone().unwrap_or_default();
    assert!(error.contains("rank"), "{error}");
    assert!(submitted(&h).is_empty());
}

#[test]
fn cat_from_the_train_screen_over_picked_adapters() {
    let mut h = Harness::new(true);
    // Kind → CAT; name; → adapter list: pick code and math (sorted by name: cat, code, math).
    h.keys("6 ji");
    h.keys("cat2⏎→j j ⏎");
    let jobs = submitted(&h);
    let JobSpec::Cat(job) = jobs.first().expect("a job") else {
        panic!("expected CAT, got {jobs:?}");
    };
    assert_eq!(job.adapters, vec!["code".to_string(), "math".to_string()]);
    // Blank datasets: the adapters' own.
    let labels: Vec<String> = job.data.iter().map(|d| d.label()).collect();
    assert_eq!(labels, ["builtin:code-train", "builtin:math-train"]);
    let defaults = soup_core::engine::CatJob::new("", "", Vec::new(), Vec::new());
    assert_eq!(job.sample_fraction, defaults.sample_fraction);
    assert_eq!(job.train, defaults.train);
}

#[test]
fn tab_completes_a_dataset_path() {
    let mut h = Harness::new(false);
    let dir = h.data_dir().join("sets");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("gsm-train.jsonl"), "{}\n").expect("file");
    std::fs::write(dir.join("gsm-test.jsonl"), "{}\n").expect("file");
    let typed = format!("builtin:math-train, {}/gs", dir.display());
    h.keys("6jjji");
    h.keys(&typed);
    h.key(KeyCode::Tab);
    let value = h
        .app
        .train
        .value(super::screens::train::TrainField::Datasets);
    assert_eq!(
        value,
        format!("builtin:math-train, {}/gsm-t", dir.display()),
        "the common prefix"
    );
    h.keys("r");
    h.key(KeyCode::Tab);
    let value = h
        .app
        .train
        .value(super::screens::train::TrainField::Datasets);
    assert!(value.ends_with("/gsm-train.jsonl"), "{value}");
    assert_eq!(
        h.app.input,
        Some(super::app::InputTarget::TrainField(
            super::screens::train::TrainField::Datasets
        ))
    );
    // Built-in names complete too.
    let (text, names) = super::recipe_views::complete_path("builtin:code-t", h.data_dir());
    assert_eq!(names, ["code-train", "code-test"].map(String::from));
    assert_eq!(text, "builtin:code-t");
}

// ---- Recipes -----------------------------------------------------------------------------

/// A small recipe in the data dir's recipes/ folder.
fn write_recipe(dir: &Path) {
    let recipes = dir.join("recipes");
    std::fs::create_dir_all(&recipes).expect("recipes dir");
    std::fs::write(
        recipes.join("small.toml"),
        r#"
name = "small"
model = "smollm2-135m-instruct"
seed = 0
methods = ["base", "skills", "cat"]
[target]
task = "code-math"
data = "builtin:codemath-test"
[[skills]]
name = "math"
data = "builtin:math-train"
[[skills]]
name = "code"
data = "builtin:code-train"
[lora]
rank = 4
alpha = 8.0
targets = "q,v"
[merge]
weights = [1.0, 1.0]
density = 0.5
lorahub_budget = 4
[budgets.micro]
train_examples = 8
epochs = 1
batch_size = 4
max_len = 128
lr = 1e-3
cat_fraction = 0.5
eval_limit = 4
skill_eval_limit = 2
max_new_tokens = 8
shots = 0
"#,
    )
    .expect("write recipe");
    std::fs::write(recipes.join("broken.toml"), "name = 3\n").expect("write recipe");
}

#[test]
fn snapshot_recipes_builtin_list() {
    let mut h = Harness::new(false);
    h.keys("7");
    assert!(h.app.recipes.loaded);
    assert_eq!(h.app.recipes.views.len(), 3, "the built-in recipes");
    insta::assert_snapshot!("recipes", h.screen(W, H));
    // game-qa leaves its data to the user: the form asks for it.
    h.keys("jj");
    insta::assert_snapshot!("recipes_needs_data", h.screen(W, H));
    h.keys("⏎");
    let error = h.app.recipes.error.clone().unwrap_or_default();
    assert!(error.contains("target"), "{error}");
    assert!(submitted(&h).is_empty());
}

#[test]
fn a_recipe_launches_in_order_fills_its_table_and_is_not_run_twice() {
    let mut h = Harness::new(false);
    write_recipe(h.data_dir());
    h.keys("7");
    let at = h
        .app
        .recipes
        .views
        .iter()
        .position(|v| v.name == "small")
        .expect("the user's recipe is listed");
    assert!(h.app.recipes.views.iter().any(|v| v
        .error
        .as_deref()
        .is_some_and(|e| e.contains("broken.toml"))));
    h.keys("g");
    for _ in 0..at {
        h.keys("j");
    }
    let jobs = super::screens::recipes::plan_selected(&h.app.recipes).expect("plan");
    h.keys("⏎");
    assert_eq!(
        h.app.tab,
        Tab::Recipes,
        "the table is where the progress shows"
    );
    let sent = submitted(&h);
    // Both skill LoRAs and the base evaluation's column order: CAT needs the LoRAs first.
    assert!(matches!(sent[0], JobSpec::Train(_)) && matches!(sent[1], JobSpec::Train(_)));
    assert_eq!(sent.len() + h.app.held.len(), jobs.len());
    assert!(!h.app.held.is_empty(), "CAT waits for the skill LoRAs");
    // The screen reads the queued cells.
    h.act(Action::Tick);
    let table = h
        .app
        .recipes
        .selected_budget()
        .and_then(|b| b.table.clone())
        .expect("table");
    assert_eq!(table.rows.len(), 4, "base, math only, code only, CAT");
    assert_eq!(table.columns.len(), 1);
    insta::assert_snapshot!("recipes_running", h.screen(W, H));

    // The engine finishes everything: adapters stored, evaluations scored.
    let runs = h.store.list_runs(&Default::default()).expect("runs").items;
    let finish = |h: &mut Harness, run: &RunRecord, i: usize| {
        let spec: JobSpec = serde_json::from_value(run.spec.clone()).expect("spec");
        match &spec {
            JobSpec::Eval(_) => {
                h.store
                    .put_scores(&[Score {
                        run: run.id,
                        metric: "accuracy".into(),
                        value: 0.25 * (i % 4) as f64,
                        ci_low: (0.25 * (i % 4) as f64 - 0.25).max(0.0),
                        ci_high: (0.25 * (i % 4) as f64 + 0.25).min(1.0),
                        n: 4,
                    }])
                    .expect("scores");
            }
            other => {
                let name = super::recipe_views::produces(other).expect("a build");
                let mut a = adapter(name, None, AdapterMethod::Trained, 100);
                a.hyperparams = serde_json::json!({
                    "job": serde_json::to_value(other).map(|mut v| {
                        v.as_object_mut().map(|o| o.remove("job"));
                        v
                    }).expect("job"),
                });
                h.store.save_adapter(&a, b"x").expect("save");
            }
        }
        h.store.start_run(run.id).expect("start");
        h.store
            .finish_run(run.id, RunStatus::Done, None)
            .expect("finish");
        h.act(Action::Job(JobEvent {
            run: run.id,
            update: JobUpdate::Finished(RunOutcome {
                summary: serde_json::json!({}),
            }),
        }));
    };
    let mut done = std::collections::HashSet::new();
    let mut i = 0;
    for run in &runs {
        finish(&mut h, run, i);
        done.insert(run.id);
        i += 1;
    }
    // Held jobs were submitted as their adapters appeared; finish those too, until none is left.
    for _ in 0..10 {
        let fresh: Vec<RunRecord> = h
            .store
            .list_runs(&Default::default())
            .expect("runs")
            .items
            .into_iter()
            .filter(|r| !done.contains(&r.id))
            .collect();
        if fresh.is_empty() {
            break;
        }
        for run in &fresh {
            finish(&mut h, run, i);
            done.insert(run.id);
            i += 1;
        }
    }
    assert!(h.app.held.is_empty());
    assert_eq!(submitted(&h).len(), jobs.len(), "every job ran once");
    h.act(Action::Tick);
    let table = h
        .app
        .recipes
        .selected_budget()
        .and_then(|b| b.table.clone())
        .expect("table");
    assert_eq!(table.progress(), (4, 4));
    assert_eq!(table.builds_done, table.builds);
    // The last status names a random job id.
    h.app.status = None;
    insta::assert_snapshot!("recipes_done", h.screen(W, H));

    // Enter again: everything is in the store, nothing is queued twice.
    h.keys("⏎");
    assert_eq!(submitted(&h).len(), jobs.len());
    let status = h.app.status.clone().expect("status");
    assert!(status.text.contains("nothing to run"), "{}", status.text);
}

#[test]
fn estimates_come_from_measured_speeds() {
    use super::screens::recipes::{Estimate, Speeds};
    let none = Estimate {
        train_jobs: 3,
        train_examples: Some(100),
        eval_jobs: 4,
        questions: Some(40),
        max_new_tokens: 64,
        speeds: Speeds::default(),
    };
    assert_eq!(none.seconds(), None, "no measurement yet");
    let measured = Estimate {
        speeds: Speeds {
            train_tokens_per_s: Some(500.0),
            tokens_per_example: Some(100.0),
            train_runs: 2,
            gen_tokens_per_s: Some(20.0),
            tokens_per_question: Some(100.0),
            eval_runs: 3,
        },
        ..none
    };
    // 100 × 100 / 500 = 20 s of training; 40 × min(100, 64) / 20 = 128 s of evaluation.
    assert_eq!(measured.train_seconds(), Some(20.0));
    assert_eq!(measured.eval_seconds(), Some(128.0));
    assert_eq!(measured.seconds(), Some(148.0));
}

#[test]
fn speeds_are_measured_on_finished_runs() {
    let h = Harness::new(true);
    let mut a = adapter("fast", Some("math"), AdapterMethod::Trained, 0);
    a.hyperparams = serde_json::json!({
        "job": {"train": {"epochs": 2}},
        "examples": 50,
        "speed": {"tokens": 20000.0, "seconds": 40.0},
    });
    h.store.save_adapter(&a, b"x").expect("save");
    let runs = h.store.list_runs(&Default::default()).expect("runs").items;
    let adapters = h.store.list_adapters().expect("adapters").items;
    let speeds = super::recipe_views::measure(&h.store, &runs, &adapters);
    assert_eq!(speeds.train_runs, 1);
    assert_eq!(speeds.train_tokens_per_s, Some(500.0));
    assert_eq!(speeds.tokens_per_example, Some(200.0));
    // The CAT and base runs have records: 24 tokens each, 120 questions in 94 s.
    assert_eq!(speeds.eval_runs, 2);
    assert_eq!(speeds.tokens_per_question, Some(24.0));
    let tps = speeds.gen_tokens_per_s.expect("measured");
    assert!((tps - 24.0 * 240.0 / 188.0).abs() < 1e-9, "{tps}");
}

// ---- Inspect: discordant questions -------------------------------------------------------

#[test]
fn discordant_questions_of_two_runs_with_mcnemar_counts() {
    let mut h = Harness::new(true);
    // Open the CAT run (third newest evaluation), d: compared with the newest other (the
    // queued one, no records); c three times: ties, math, base.
    h.keys("5jj⏎d");
    let list = h
        .app
        .inspect
        .discordant
        .as_ref()
        .and_then(|d| d.list.clone())
        .expect("read");
    assert_eq!(list.paired, 0, "the queued run has no records");
    h.keys("ccc");
    let list = h
        .app
        .inspect
        .discordant
        .as_ref()
        .and_then(|d| d.list.clone())
        .expect("read");
    assert_eq!(list.a, run_id(30, 3));
    assert_eq!(list.b, run_id(10, 1));
    assert_eq!(list.paired, RECORDS_PER_RUN);
    // CAT right on multiples of 3 (not timeouts: index % 7 == 6), base on multiples of 40.
    assert_eq!((list.b_count, list.c_count), (33, 2));
    assert_eq!(list.pairs.len(), 35);
    assert!(list
        .pairs
        .iter()
        .all(|(a, b)| super::effects::is_right(a) != super::effects::is_right(b)));
    insta::assert_snapshot!("inspect_discordant", h.screen(W, H));
    h.keys("j⏎");
    insta::assert_snapshot!("inspect_discordant_pair", h.screen(W, H));
    h.keys("⎋⎋");
    assert!(h.app.inspect.discordant.is_none());
    assert_eq!(h.app.tab, Tab::Inspect);
}

// ---- Adapters: lineage -------------------------------------------------------------------

#[test]
fn lineage_follows_parents_to_their_data() {
    let h = Harness::new(true);
    let items = &h.app.adapters.items;
    let cat = items
        .iter()
        .find(|a| a.name == "cat-math+code")
        .expect("cat");
    let tree = super::ui::lineage_of(cat, items);
    assert_eq!(tree.len(), 3, "{tree:#?}");
    assert!(
        tree[1].contains("math") && tree[1].contains("builtin:math-train"),
        "{tree:#?}"
    );
    assert!(tree[2].starts_with("└ code"), "{tree:#?}");
    let mut orphan = cat.clone();
    orphan.parents.push("gone".into());
    let tree = super::ui::lineage_of(&orphan, items);
    assert!(tree.last().is_some_and(|l| l.contains("gone (not stored)")));
}
