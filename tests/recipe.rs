//! A recipe end to end on the tiny model with a micro budget: every method yields a row, a
//! second run reuses every adapter and evaluation instead of recomputing, and a stored-only
//! run tabulates what the store holds without running anything.

use candle_core::Device;
use soup_core::engine::recipe::{run_recipe, Recipe, Reuse};
use soup_core::engine::{Engine, JobUpdate};
use soup_store::Store;
use std::path::PathBuf;
use std::sync::Arc;

fn recipe_text() -> String {
    let model =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/reference/tiny-llama");
    format!(
        r#"
name = "t"
model = "{}"
seed = 0
methods = ["base", "skills", "data-mix", "cat", "cat-uniform", "ties", "ties@cat-scale", "dare_ties", "dare_linear", "linear", "svd", "lorahub"]
[target]
task = "code-math"
data = "builtin:codemath-test"
[[skills]]
name = "math"
data = "builtin:math-train"
test = {{ task = "math-cot", data = "builtin:math-test" }}
[[skills]]
name = "code"
data = "builtin:code-train"
test = {{ task = "code", data = "builtin:code-test" }}
[lora]
rank = 4
alpha = 8.0
targets = "q,v,down"
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
cat_min_steps = 4
eval_limit = 2
skill_eval_limit = 2
max_new_tokens = 6
shots = 0
seeds = 1
"#,
        model.display()
    )
}

#[test]
fn recipe_runs_every_method_then_reuses_everything() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let engine = Engine::new(store, dir.path(), Device::Cpu, None).unwrap();
    let recipe = Recipe::parse(&recipe_text(), "test").unwrap();
    let runs = |e: &Engine| {
        e.store()
            .list_runs(&Default::default())
            .unwrap()
            .items
            .len()
    };
    // Before anything ran: every row, no scores, and nothing was started.
    let empty = run_recipe(&engine, &recipe, "micro", Reuse::StoredOnly, &mut |_, _| {}).unwrap();
    assert_eq!(empty.rows.len(), 13);
    assert!(empty.rows.iter().all(|r| r.scores.is_empty()));
    assert_eq!(runs(&engine), 0, "a stored-only run starts no job");
    let table = run_recipe(&engine, &recipe, "micro", Reuse::Finished, &mut |_, _| {}).unwrap();
    let methods: Vec<&str> = table.rows.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(
        methods,
        [
            "base",
            "math only",
            "code only",
            "DATA-MIX",
            "CAT",
            "CAT-UNIFORM",
            "TIES",
            "TIES @CAT-SCALE",
            "DARE-TIES",
            "DARE-LINEAR",
            "LINEAR",
            "SVD",
            "LORAHUB"
        ]
    );
    assert_eq!(table.columns.len(), 3);
    for row in &table.rows {
        for column in &table.columns {
            let cell = row
                .scores
                .get(column)
                .unwrap_or_else(|| panic!("{}: no score for {column}", row.method));
            assert_eq!(cell.n, 2);
            assert!(cell.ci_low <= cell.value && cell.value <= cell.ci_high);
        }
    }
    // The statistics come from the stored per-question records: CAT against the 12 other
    // rows on each of the 3 columns, Holm-corrected; the skill gate for both skills; and the
    // power note, which at 2 questions says the table cannot separate methods.
    let headline_tests: Vec<_> = table
        .paired
        .iter()
        .filter(|p| p.metric != "ref_logprob")
        .collect();
    assert_eq!(headline_tests.len(), 36);
    assert!(headline_tests
        .iter()
        .all(|p| p.n == 2 && (0.0..=1.0).contains(&p.p) && p.p_holm >= p.p));
    // The log-likelihood of the reference, paired too, on every column whose prompts and
    // references fit the tiny model's 256 positions (the math solutions do).
    let ll_tests = table.paired.len() - headline_tests.len();
    assert!(ll_tests >= 12 && ll_tests.is_multiple_of(12), "{ll_tests}");
    assert_eq!(table.skill_gate.len(), 2);
    assert!(table.skill_gate.iter().all(|g| g.passed.is_some()));
    assert!(!table.power.unwrap().sufficient());
    assert!(table.markdown().contains("cannot separate"));

    // The CAT row's run says how far it moved (the table can show "did not move").
    let cat = engine.store().get_adapter("t-micro-cat").unwrap().unwrap();
    let moved = soup_core::train::CatMovement::of_adapter(&cat).expect("CAT movement stored");
    assert_eq!(moved.spread.len(), 2);
    // The report shows it, with its verdict (the micro budget runs one seed).
    assert_eq!(table.cat_movements.len(), 1);
    assert_eq!(table.cat_movements[0].adapter, "t-micro-cat");
    assert_eq!(table.cat_movements[0].movement, moved);
    let line = format!("| t-micro-cat | {} | ", moved.verdict.label());
    assert!(table.markdown().contains(&line), "{line}");
    // cat-uniform is the concatenation at CAT's starting weights, built without training.
    let uniform = engine
        .store()
        .get_adapter("t-micro-cat-uniform")
        .unwrap()
        .unwrap();
    assert_eq!(uniform.method, soup_store::AdapterMethod::Merge);
    assert_eq!(uniform.parents, cat.parents);
    let runs_before = runs(&engine);
    let mut reused = 0;
    let again = run_recipe(&engine, &recipe, "micro", Reuse::Finished, &mut |_, u| {
        if let JobUpdate::Progress { message, .. } = u {
            if message == "reused" {
                reused += 1;
            }
        }
    })
    .unwrap();
    assert_eq!(runs(&engine), runs_before, "nothing recomputed");
    // 2 skills + DATA-MIX + CAT + cat-uniform + 7 merges, and 13 configurations x 3
    // evaluation sets.
    assert_eq!(reused, 12 + 39);
    assert_eq!(again.markdown(), table.markdown());
    let stored = run_recipe(&engine, &recipe, "micro", Reuse::StoredOnly, &mut |_, _| {}).unwrap();
    assert_eq!(stored.markdown(), table.markdown());
    assert!(Recipe::parse(&recipe_text(), "t").is_ok());
    assert!(Recipe::parse("name = 1", "bad.toml")
        .unwrap_err()
        .to_string()
        .contains("bad.toml"));
}

/// A re-run redoes what reads changed inputs under unchanged names, and only that: after the
/// math skill's data file is edited, the math LoRA is retrained, and the composition built on
/// it and the evaluations of both are redone, while the code LoRA and the base model's and
/// the code skill's evaluations are reused.
#[test]
fn a_rerun_redoes_the_jobs_whose_inputs_changed() {
    use soup_evals::synthetic::{write_synthetic_sized, SyntheticKind, SyntheticSizes};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("sets");
    let sizes = SyntheticSizes {
        skill_train: 12,
        skill_test: 4,
        target: 4,
        manual_error_codes: 4,
    };
    write_synthetic_sized(SyntheticKind::CodeMath, 0, &data, &sizes).unwrap();
    let math = data.join("math_skill_train.jsonl");
    let text = recipe_text()
        .replace(
            r#"methods = ["base", "skills", "data-mix", "cat", "cat-uniform", "ties", "ties@cat-scale", "dare_ties", "dare_linear", "linear", "svd", "lorahub"]"#,
            r#"methods = ["base", "skills", "cat-uniform"]"#,
        )
        .replace(
            r#"data = "builtin:math-train""#,
            &format!("data = {:?}", math.display().to_string()),
        );
    let recipe = Recipe::parse(&text, "test").unwrap();
    let store = Arc::new(Store::open(dir.path().join("home")).unwrap());
    let engine = Engine::new(store, &dir.path().join("home"), Device::Cpu, None).unwrap();
    let run = || {
        let mut done: Vec<(String, bool)> = Vec::new();
        run_recipe(
            &engine,
            &recipe,
            "micro",
            Reuse::Finished,
            &mut |label, u| {
                if let JobUpdate::Progress { message, .. } = u {
                    if message == "reused" {
                        done.push((label.to_string(), true));
                    }
                }
                if let JobUpdate::Finished(_) = u {
                    done.push((label.to_string(), false));
                }
            },
        )
        .unwrap();
        done.sort();
        done.dedup();
        done
    };
    let first = run();
    assert!(first.iter().all(|(_, reused)| !reused), "{first:?}");
    let all: Vec<String> = first.iter().map(|(l, _)| l.clone()).collect();
    assert!(run().iter().all(|(_, reused)| *reused), "nothing changed");

    // Half the math examples: same name, same path, other bytes.
    let edited: String = std::fs::read_to_string(&math)
        .unwrap()
        .lines()
        .take(6)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&math, edited).unwrap();
    let after = run();
    let redone: Vec<&str> = after
        .iter()
        .filter(|(_, reused)| !reused)
        .map(|(l, _)| l.as_str())
        .collect();
    let expected: Vec<&str> = all
        .iter()
        .map(String::as_str)
        .filter(|l| l.contains("t-micro-math") || l.contains("t-micro-cat-uniform"))
        .collect();
    assert_eq!(redone, expected);
    assert_eq!(after.len(), all.len());
    assert!(redone.iter().any(|l| l.starts_with("train")), "{redone:?}");
    assert!(after
        .iter()
        .any(|(l, reused)| *reused && l.starts_with("eval base")));
}

/// An evaluation scored by another version of its task's grader is graded again by a re-run,
/// with its answers from the generation cache, and only it: the other evaluations and the
/// LoRAs are reused. `--stored` says why it has no score, and the old run stays in the store
/// but cannot be resumed under the new grader.
#[test]
fn a_rerun_grades_again_what_another_grader_scored() {
    use soup_core::engine::JobSpec;
    use soup_store::{RunKind, RunQuery, RunStatus};
    let dir = tempfile::tempdir().unwrap();
    let text = recipe_text().replace(
        r#"methods = ["base", "skills", "data-mix", "cat", "cat-uniform", "ties", "ties@cat-scale", "dare_ties", "dare_linear", "linear", "svd", "lorahub"]"#,
        r#"methods = ["base", "skills"]"#,
    );
    let recipe = Recipe::parse(&text, "test").unwrap();
    let store = Arc::new(Store::open(dir.path().join("home")).unwrap());
    let engine = Engine::new(store.clone(), &dir.path().join("home"), Device::Cpu, None).unwrap();
    // (label, what the run said last: "reused", "not in the store", ... or the summary's
    // cache hits of a job that ran).
    let run = |reuse: Reuse| {
        let mut seen: Vec<(String, String)> = Vec::new();
        run_recipe(&engine, &recipe, "micro", reuse, &mut |label, u| match u {
            JobUpdate::Progress { message, .. } if !message.is_empty() => {
                seen.retain(|(l, _)| l != label);
                seen.push((label.to_string(), message.clone()));
            }
            JobUpdate::Finished(out) => {
                seen.retain(|(l, _)| l != label);
                let hits = out.summary.get("cache_hits").and_then(|h| h.as_u64());
                seen.push((label.to_string(), format!("ran, cache hits {hits:?}")));
            }
            _ => {}
        })
        .unwrap();
        seen.sort();
        seen
    };
    run(Reuse::Finished);
    let evals = || {
        store
            .list_runs(&RunQuery {
                status: Some(RunStatus::Done),
                ..Default::default()
            })
            .unwrap()
            .items
            .into_iter()
            .filter(|r| r.kind == RunKind::Eval)
            .collect::<Vec<_>>()
    };
    let before = evals();
    for r in &before {
        let Ok(JobSpec::Eval(job)) = serde_json::from_value::<JobSpec>(r.spec.clone()) else {
            panic!("{:?}", r.spec)
        };
        assert_eq!(job.grader, Some(job.task.grader_version()), "recorded");
    }
    // The base model's target evaluation, as an older grader would have recorded it.
    let mut old = before
        .iter()
        .find(|r| r.label.contains("base") && r.label.contains("code-math"))
        .unwrap_or_else(|| panic!("{:?}", before.iter().map(|r| &r.label).collect::<Vec<_>>()))
        .clone();
    old.spec["grader"] = serde_json::json!(0);
    store.put_run(&old).unwrap();

    let stored = run(Reuse::StoredOnly);
    let regrade: Vec<&(String, String)> = stored
        .iter()
        .filter(|(_, m)| m.starts_with("graded by another version of its grader"))
        .collect();
    assert_eq!(regrade.len(), 1, "{stored:?}");
    assert!(regrade[0].0.contains("base"), "{stored:?}");

    let after = run(Reuse::Finished);
    let ran: Vec<&(String, String)> = after.iter().filter(|(_, m)| m != "reused").collect();
    assert_eq!(ran.len(), 1, "{after:?}");
    assert_eq!(ran[0].0, regrade[0].0);
    let n = old.progress.total;
    assert_eq!(
        ran[0].1,
        format!("ran, cache hits Some({n})"),
        "every answer from the cache"
    );
    assert_eq!(evals().len(), before.len() + 1, "the old run is kept");

    // The old run cannot be finished under the new grader.
    old.status = RunStatus::Failed;
    store.put_run(&old).unwrap();
    let err = engine
        .resume_now(old.id, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("version 0 of the code-math grader, which is now version 1"),
        "{err}"
    );
}
