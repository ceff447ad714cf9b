//! The comparison table on a store built by hand: per-question records whose paired tests,
//! intervals, seed spread, skill gate and power note are known in advance.

use super::*;
use soup_store::{Score, Store, StoredQuestion};

const TARGET: &str = "target code-math";
const QA: &str = "target manual-qa";
const SKILL: &str = "math skill (math-cot)";

/// An evaluation run with one record per question (scores of `metric`, and optionally a
/// reference log-likelihood) and its stored score.
fn eval_run(store: &Store, metric: &str, values: &[f64], logprob: Option<f64>) -> RunId {
    let run = store
        .create_run(RunKind::Eval, "eval", serde_json::json!({}))
        .unwrap()
        .id;
    let records: Vec<StoredQuestion> = values
        .iter()
        .enumerate()
        .map(|(i, v)| StoredQuestion {
            run,
            index: i as u64,
            id: format!("q{i}"),
            verdict: if *v == 1.0 { "correct" } else { "wrong" }.into(),
            scores: BTreeMap::from([(metric.to_string(), *v)]),
            detail: match logprob {
                Some(lp) => serde_json::json!({ "id": format!("q{i}"), "ref_logprob": lp }),
                None => serde_json::json!({ "id": format!("q{i}") }),
            },
        })
        .collect();
    store.put_records(&records).unwrap();
    score_only(store, run, metric, values);
    run
}

/// Only the stored score (a run whose records are not looked at).
fn score_only(store: &Store, run: RunId, metric: &str, values: &[f64]) {
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    store
        .put_scores(&[Score {
            run,
            metric: metric.into(),
            value: mean,
            ci_low: mean,
            ci_high: mean,
            n: values.len() as u64,
        }])
        .unwrap();
}

fn right_on(range: std::ops::Range<usize>) -> Vec<f64> {
    (0..20)
        .map(|i| f64::from(u8::from(range.contains(&i))))
        .collect()
}

fn scores_run(store: &Store, metric: &str, value: f64) -> RunId {
    let run = store
        .create_run(RunKind::Eval, "eval", serde_json::json!({}))
        .unwrap()
        .id;
    score_only(store, run, metric, &[value; 10]);
    run
}

#[test]
fn paired_columns_wilson_seeds_gate_and_power_on_a_constructed_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // Target (right/wrong): CAT right on q0..q11; TIES on q10..q13 (10 only CAT, 2 only
    // TIES); base on none (12 vs 0); math-only exactly as CAT (no discordant question).
    let cat = eval_run(&store, "accuracy", &right_on(0..12), Some(-5.0));
    let ties = eval_run(&store, "accuracy", &right_on(10..14), Some(-6.0));
    let base = eval_run(&store, "accuracy", &right_on(0..0), Some(-5.0));
    let math = eval_run(&store, "accuracy", &right_on(0..12), Some(-5.0));
    // CAT's other seeds: 50 % and 40 % (with the first seed's 60 %: mean 50, sd 10).
    let cat1 = eval_run(&store, "accuracy", &right_on(0..10), None);
    let cat2 = eval_run(&store, "accuracy", &right_on(0..8), None);
    // Partial credit: CAT 0.2 above TIES on every question.
    let f1: Vec<f64> = (0..20).map(|i| ((i * 7) % 10) as f64 / 20.0).collect();
    let f1_cat = eval_run(
        &store,
        "f1",
        &f1.iter().map(|x| x + 0.2).collect::<Vec<_>>(),
        None,
    );
    let f1_ties = eval_run(&store, "f1", &f1, None);
    // Skill gate: math alone 30, base 25: not 10 points above.
    let skill_math = scores_run(&store, "accuracy", 0.30);
    let skill_base = scores_run(&store, "accuracy", 0.25);
    let spec = TableSpec {
        recipe: "r".into(),
        budget: "tiny".into(),
        model: "m".into(),
        columns: vec![TARGET.into(), QA.into(), SKILL.into()],
        metrics: vec!["accuracy".into(), "f1".into(), "accuracy".into()],
        seeds: 3,
        planned_n: 20,
        skill_gate_margin: 0.10,
        skills: vec![("math".into(), SKILL.into())],
    };
    let rows = vec![
        RowRuns {
            label: "base".into(),
            runs: vec![vec![Some(base)], vec![None], vec![Some(skill_base)]],
        },
        RowRuns {
            label: "math only".into(),
            runs: vec![vec![Some(math)], vec![None], vec![Some(skill_math)]],
        },
        RowRuns {
            label: "CAT".into(),
            runs: vec![
                vec![Some(cat), Some(cat1), Some(cat2)],
                vec![Some(f1_cat)],
                vec![None],
            ],
        },
        RowRuns {
            label: "TIES".into(),
            runs: vec![vec![Some(ties)], vec![Some(f1_ties)], vec![None]],
        },
    ];
    let t = tabulate(&store, &spec, &rows).unwrap();

    // Wilson intervals for right/wrong scores: 0/20 is [0, 0.161], not [0, 0].
    let base_cell = &t.rows[0].scores[TARGET];
    assert_eq!(base_cell.interval, "wilson");
    assert_eq!(base_cell.ci_low, 0.0);
    assert!((base_cell.ci_high - 0.161).abs() < 5e-4, "{base_cell:?}");
    // Partial credit keeps the stored bootstrap interval.
    assert_eq!(t.rows[2].scores[QA].interval, "bootstrap");
    // Seeds: 60, 50, 40 -> 50 ± 10; a method run once has no spread.
    let (mean, sd) = t.rows[2].scores[TARGET].seed_spread().unwrap();
    assert!((mean - 0.5).abs() < 1e-12 && (sd - 0.1).abs() < 1e-12);
    assert!(t.rows[3].scores[TARGET].seed_spread().is_none());
    assert_eq!(t.rows[2].scores[TARGET].ref_logprob, Some(-5.0));

    let find = |column: &str, metric: &str, baseline: &str| {
        t.paired
            .iter()
            .find(|p| p.column == column && p.metric == metric && p.baseline == baseline)
            .unwrap_or_else(|| panic!("no test of CAT vs {baseline} on {column} {metric}"))
    };
    let vs_ties = find(TARGET, "accuracy", "TIES");
    assert_eq!(vs_ties.test, "mcnemar");
    assert_eq!(
        (vs_ties.only_method, vs_ties.only_baseline),
        (Some(10), Some(2))
    );
    assert_eq!(vs_ties.n, 20);
    assert!((vs_ties.diff - 0.4).abs() < 1e-12);
    assert!((vs_ties.p - 158.0 / 4096.0).abs() < 1e-12);
    // Holm over 3 baselines: base 3 x 2/4096, TIES 2 x 0.0386 = 0.077, math-only 1.
    assert!((vs_ties.p_holm - 2.0 * 158.0 / 4096.0).abs() < 1e-12);
    assert!(!vs_ties.significant, "raw p < 0.05 but not after Holm");
    let vs_base = find(TARGET, "accuracy", "base");
    assert!((vs_base.p_holm - 3.0 * 2.0 / 4096.0).abs() < 1e-12 && vs_base.significant);
    let vs_math = find(TARGET, "accuracy", "math only");
    assert_eq!((vs_math.p, vs_math.p_holm, vs_math.diff), (1.0, 1.0, 0.0));
    // Partial credit: the paired bootstrap, a constant +0.2.
    let f1_test = find(QA, "f1", "TIES");
    assert_eq!(f1_test.test, "bootstrap");
    assert!((f1_test.diff - 0.2).abs() < 1e-9 && f1_test.p < 0.01 && f1_test.significant);
    // Log-likelihood, paired: +1 nat against TIES, 0 against base.
    let ll = find(TARGET, REF_LOGPROB, "TIES");
    assert!((ll.diff - 1.0).abs() < 1e-12 && ll.significant);
    assert_eq!(find(TARGET, REF_LOGPROB, "base").p, 1.0);
    // Discordance observed on the target: (12 + 12 + 0) / 3 / 20.
    assert!((t.observed_discordance.unwrap() - 0.4).abs() < 1e-12);

    // The skill gate: 30 vs 25 is below the 10-point margin.
    assert_eq!(t.skill_gate.len(), 1);
    assert_eq!(t.skill_gate[0].passed, Some(false));
    // 20 questions cannot separate methods, and the report says so.
    let power = t.power.unwrap();
    assert_eq!(power.n, 20);
    assert!(!power.sufficient());
    let md = t.markdown();
    for want in [
        "cannot separate",
        "| target code-math | accuracy | TIES | 20 | +40.0 | ",
        "| mcnemar | 10/2 | 0.039 | 0.077 |  |",
        "50.0 ± 10.0 over 3 seeds",
        "0.0 [0.0, 16.1]",
        "NO: not above the base",
        "| ref_logprob | TIES | 20 | +1.0 |",
    ] {
        assert!(md.contains(want), "{want:?} not in\n{md}");
    }
    // Each CAT seed's movement gets a line; a first seed that did not lower its held-out loss
    // marks the CAT row.
    assert!(md.contains("| CAT |"), "{md}");
    let mut moved = t.clone();
    let seed = |adapter: &str, learned: f64| SeedMovement {
        adapter: adapter.into(),
        movement: CatMovement {
            param: CatParam::Softmax,
            init: CatInit::Uniform,
            mean_abs_delta: 0.11,
            max_abs_delta: 0.27,
            weights: 300,
            spread: Vec::new(),
            heldout: Some(cat::HeldOutLoss {
                source: "unsampled skill data".into(),
                examples: 64,
                start: 1.1,
                learned,
            }),
            verdict: if learned < 1.1 {
                cat::CatVerdict::Moved
            } else {
                cat::CatVerdict::LossNotLower
            },
        },
    };
    moved.cat_movements = vec![seed("r-cat", 1.0), seed("r-cat-seed1", 1.25)];
    let md = moved.markdown();
    for want in [
        "| CAT |",
        "| r-cat | moved | 0.1100 | 0.2700 | 300 | 1.1000 → 1.0000 (64 examples) |",
        "| r-cat-seed1 | did not move (held-out loss not lower) | 0.1100 |",
    ] {
        assert!(md.contains(want), "{want:?} not in\n{md}");
    }
    moved.cat_movements.reverse();
    let md = moved.markdown();
    assert!(
        md.contains("| CAT, did not move (held-out loss not lower) |"),
        "{md}"
    );
    // CSV: every line has the header's number of fields; TIES's target line carries the test.
    let csv = t.csv();
    let width = csv.lines().next().unwrap().split(',').count();
    assert!(csv.lines().all(|l| l.split(',').count() == width), "{csv}");
    let ties_line = csv
        .lines()
        .find(|l| l.starts_with("\"TIES\",\"target code-math\""))
        .unwrap();
    assert!(ties_line.contains(",mcnemar,10,2,"), "{ties_line}");
    // The JSON form round-trips.
    let back: Comparison = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
    assert_eq!(back.paired.len(), t.paired.len());
}

#[test]
fn a_table_without_cat_has_no_paired_tests_and_one_seed_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let base = eval_run(&store, "accuracy", &right_on(0..3), None);
    let spec = TableSpec {
        recipe: "r".into(),
        budget: "tiny".into(),
        model: "m".into(),
        columns: vec![TARGET.into()],
        metrics: vec!["accuracy".into()],
        seeds: 1,
        planned_n: 20,
        skill_gate_margin: 0.10,
        skills: Vec::new(),
    };
    let rows = vec![RowRuns {
        label: "base".into(),
        runs: vec![vec![Some(base)]],
    }];
    let t = tabulate(&store, &spec, &rows).unwrap();
    assert!(t.paired.is_empty());
    assert!(t.markdown().contains("One seed per method"));
}

#[test]
fn budgets_default_to_three_seeds_and_refuse_zero() {
    let r = Recipe::load("code-math").unwrap();
    assert_eq!(r.budgets["tiny"].seeds, 1);
    assert_eq!(r.budgets["small"].seeds, 3);
    assert_eq!(r.budgets["small"].skill_gate_margin, 0.10);
    // tiny plans one CAT; small three.
    let cats = |budget: &str| {
        r.plan(budget)
            .unwrap()
            .builds
            .iter()
            .filter(|j| matches!(j, JobSpec::Cat(_)))
            .count()
    };
    assert_eq!(cats("tiny"), 1);
    assert_eq!(cats("small"), 3);
    let text = include_str!("../../recipes/code-math.toml").replace("seeds = 1", "seeds = 0");
    let err = Recipe::parse(&text, "zero.toml").unwrap_err().to_string();
    assert!(err.contains("it must be between 1 and 20"), "{err}");
}

/// A budget's skill_tests must keep the rows the skill gate compares and name only methods
/// the recipe runs; the built-in standard budget grades the target on every configuration
/// and the skill tests on the rows it names.
#[test]
fn skill_tests_keep_the_gates_rows_and_name_only_the_recipes_methods() {
    let text = include_str!("../../recipes/code-math.toml");
    let listed = r#"skill_tests = ["base", "skills", "data-mix", "cat", "cat-uniform"]"#;
    assert!(text.contains(listed));
    for (list, want) in [
        (r#"skill_tests = ["skills", "cat"]"#, "leaves out base"),
        (r#"skill_tests = ["base", "cat"]"#, "leaves out skills"),
        (
            r#"skill_tests = ["base", "skills", "magnitude_prune"]"#,
            "names magnitude_prune, which is not among",
        ),
    ] {
        let err = Recipe::parse(&text.replace(listed, list), "bad.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{list}: {err}");
    }
    let plan = Recipe::load("code-math").unwrap().plan("standard").unwrap();
    let graded = |c: usize| {
        plan.rows
            .iter()
            .filter(|r| r.evals[c].is_some())
            .map(|r| r.label.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(graded(0).len(), plan.rows.len());
    let skill_rows = [
        "base",
        "math only",
        "code only",
        "DATA-MIX",
        "CAT",
        "CAT-UNIFORM",
    ];
    assert_eq!(graded(1), skill_rows);
    assert_eq!(graded(2), skill_rows);
}
