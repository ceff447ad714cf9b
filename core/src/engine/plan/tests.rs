//! The planner on its own: order, names, what each merge job records, and the refusals.

use super::*;

fn skill(name: &str, data: Option<&str>) -> SkillAdapter {
    SkillAdapter {
        skill: name.into(),
        adapter: name.into(),
        data: data.map(DataSource::parse),
        train_epochs: None,
    }
}

/// Two adapters already in the store, one evaluation set, names after the adapters: the
/// dashboard's kind of request.
fn request(methods: Vec<CompareMethod>) -> PlanRequest {
    let data = DataSource::parse("builtin:codemath-test");
    PlanRequest {
        model: "m".into(),
        skills: vec![
            skill("code", Some("builtin:code-train")),
            skill("math", Some("builtin:math-train")),
        ],
        methods,
        columns: vec![EvalColumn {
            column: "code-math".into(),
            job: EvalJob::new("m", EvalTarget::Base, crate::engine::tasks::CODE_MATH, data),
            only: None,
        }],
        naming: Naming::Adapters,
        train: TrainJob::new("", "m", Vec::new()),
        cat: CatJob::new("", "m", Vec::new(), Vec::new()),
        merge: MergeSettings {
            weights: vec![1.0, 1.0],
            density: 0.5,
            svd_rank: Some(8),
            seed: 0,
            lorahub_budget: None,
            record_all: false,
        },
    }
}

fn labels(jobs: &[JobSpec]) -> Vec<String> {
    jobs.iter().map(|j| j.label()).collect()
}

#[test]
fn builds_come_first_then_every_configuration_in_plan_order() {
    // Asked in the dashboard's screen order; planned base first, merges last.
    let methods = vec![
        CompareMethod::Cat,
        CompareMethod::Merge(MergeKind::Linear),
        CompareMethod::Skills,
        CompareMethod::Base,
        CompareMethod::Merge(MergeKind::Ties),
        CompareMethod::Base,
    ];
    let plan = plan(&request(methods)).unwrap();
    assert_eq!(
        labels(&plan.jobs()),
        [
            "cat cat-code+math",
            "merge ties-code+math (ties)",
            "merge linear-code+math (linear)",
            "eval base on code-math",
            "eval code on code-math",
            "eval math on code-math",
            "eval cat-code+math on code-math",
            "eval ties-code+math on code-math",
            "eval linear-code+math on code-math",
        ]
    );
    let rows: Vec<&str> = plan.rows.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(
        rows,
        ["base", "code only", "math only", "CAT", "TIES", "LINEAR"]
    );
}

#[test]
fn merge_jobs_record_what_their_family_uses_unless_told_to_record_all() {
    let methods = vec![
        CompareMethod::Merge(MergeKind::Linear),
        CompareMethod::Merge(MergeKind::DareTies),
        CompareMethod::Merge(MergeKind::Svd),
        CompareMethod::Merge(MergeKind::LoraHub),
    ];
    let merges = |req: &PlanRequest| -> Vec<MergeJob> {
        plan(req)
            .unwrap()
            .builds
            .into_iter()
            .filter_map(|j| match j {
                JobSpec::Merge(m) => Some(m),
                _ => None,
            })
            .collect()
    };
    let mut req = request(methods);
    let jobs = merges(&req);
    let by = |k: MergeKind| jobs.iter().find(|m| m.method == k).unwrap().clone();
    assert_eq!(by(MergeKind::Linear).density, None);
    assert_eq!(by(MergeKind::DareTies).density, Some(0.5));
    assert_eq!(by(MergeKind::Svd).svd_rank, Some(8));
    assert_eq!(by(MergeKind::DareTies).svd_rank, None);
    assert_eq!(by(MergeKind::Linear).model, None);
    let hub = by(MergeKind::LoraHub);
    assert_eq!(hub.model.as_deref(), Some("m"));
    assert_eq!(hub.data.len(), 2, "LoraHub searches on the skills' data");
    assert!(by(MergeKind::Linear).data.is_empty());

    req.merge.record_all = true;
    req.merge.lorahub_budget = Some(20);
    for m in merges(&req) {
        assert_eq!(m.density, Some(0.5), "{}", m.method);
        assert_eq!(m.model.as_deref(), Some("m"), "{}", m.method);
        let budget = (m.method == MergeKind::LoraHub).then_some(20);
        assert_eq!(m.budget, budget, "{}", m.method);
    }
}

#[test]
fn a_recipe_trains_its_skills_and_names_artifacts_after_itself() {
    let mut req = request(vec![CompareMethod::DataMix, CompareMethod::Cat]);
    req.naming = Naming::Prefix("r-tiny".into());
    for s in &mut req.skills {
        s.adapter = format!("r-tiny-{}", s.skill);
        s.train_epochs = Some(3);
    }
    let plan = plan(&req).unwrap();
    let names: Vec<String> = plan.builds.iter().map(|j| j.label()).collect();
    assert_eq!(
        names,
        [
            "train r-tiny-code",
            "train r-tiny-math",
            "train r-tiny-data-mix",
            "cat r-tiny-cat"
        ]
    );
    let JobSpec::Train(skill) = &plan.builds[0] else {
        panic!()
    };
    assert_eq!(skill.train.epochs, 3);
    assert_eq!(skill.skill.as_deref(), Some("code"));
    let JobSpec::Train(mix) = &plan.builds[2] else {
        panic!()
    };
    assert_eq!(mix.skill.as_deref(), Some("data-mix"));
    assert_eq!(mix.data.len(), 2);
}

#[test]
fn refusals_say_what_is_missing() {
    let mut req = request(vec![CompareMethod::Cat]);
    req.skills[1].data = None;
    assert_eq!(
        plan(&req).unwrap_err(),
        PlanError::NoTrainingData {
            adapter: "math".into()
        }
    );
    // A plain merge needs no training data.
    req.methods = vec![CompareMethod::Merge(MergeKind::Ties)];
    assert!(plan(&req).is_ok());
    req.skills.truncate(1);
    assert!(matches!(
        plan(&req),
        Err(PlanError::TooFewAdapters {
            needed: 2,
            have: 1,
            ..
        })
    ));
    req.methods = vec![CompareMethod::Merge(MergeKind::Cat)];
    assert_eq!(plan(&req).unwrap_err(), PlanError::CatMerge);
}

#[test]
fn methods_read_and_write_as_recipe_names() {
    for (text, method) in [
        ("base", CompareMethod::Base),
        ("skills", CompareMethod::Skills),
        ("data-mix", CompareMethod::DataMix),
        ("cat", CompareMethod::Cat),
        ("dare_ties", CompareMethod::Merge(MergeKind::DareTies)),
        ("lorahub", CompareMethod::Merge(MergeKind::LoraHub)),
    ] {
        assert_eq!(text.parse::<CompareMethod>().unwrap(), method);
        let json = serde_json::to_string(&method).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(
            serde_json::from_str::<CompareMethod>(&json).unwrap(),
            method
        );
    }
    let err = "slerp".parse::<CompareMethod>().unwrap_err();
    assert!(err.contains("slerp") && err.contains("data-mix"), "{err}");
}

/// The jobs each built-in recipe runs, at every budget (in `golden/`): the planner must keep
/// planning these, in this order, or the artifacts a user's store holds for a recipe stop being
/// reused. The files were first captured from the recipe code before the planner existed; a
/// change to what a recipe runs is made on purpose by re-capturing them
/// (`SOUP_BLESS=1 cargo test --workspace --lib builtin_recipes_plan`) and reading the diff.
#[test]
fn builtin_recipes_plan_the_jobs_they_always_ran() {
    use crate::engine::recipe::{Recipe, BUILTIN_RECIPES};
    use std::collections::BTreeMap;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/engine/plan/golden");
    let bless = std::env::var_os("SOUP_BLESS").is_some();
    for (name, text) in BUILTIN_RECIPES {
        let mut recipe = Recipe::parse(text, name).unwrap();
        // Recipes on the user's files plan with stand-in paths.
        for which in recipe.data_names() {
            let empty = match which.as_str() {
                "target" => recipe.target.data.is_empty(),
                skill => recipe
                    .skills
                    .iter()
                    .any(|s| s.name == skill && s.data.is_empty()),
            };
            if empty {
                recipe.set_data(&which, &format!("{which}.data")).unwrap();
            }
        }
        let planned: BTreeMap<String, Vec<JobSpec>> = recipe
            .budgets
            .keys()
            .map(|b| (b.clone(), recipe.plan(b).unwrap().jobs()))
            .collect();
        let path = dir.join(format!("{name}.json"));
        if bless {
            std::fs::write(
                &path,
                serde_json::to_string_pretty(&planned).unwrap() + "\n",
            )
            .unwrap();
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}: capture it with SOUP_BLESS=1", path.display()));
        let ran: BTreeMap<String, Vec<JobSpec>> = serde_json::from_str(&text).unwrap();
        assert_eq!(
            ran.keys().collect::<Vec<_>>(),
            planned.keys().collect::<Vec<_>>(),
            "{name}: budgets"
        );
        for (budget, jobs) in &ran {
            let planned = &planned[budget];
            assert_eq!(planned.len(), jobs.len(), "{name} {budget}");
            for (i, (p, j)) in planned.iter().zip(jobs).enumerate() {
                assert_eq!(p, j, "{name} {budget}: job {i}");
            }
        }
    }
}

/// DATA-MIX must not see a knowledge corpus fewer times than the corpus's own LoRA does.
#[test]
fn data_mix_gives_each_skill_as_many_passes_as_its_own_lora() {
    let mut req = request(vec![CompareMethod::Skills, CompareMethod::DataMix]);
    req.train.train.epochs = 3;
    req.skills[0].train_epochs = Some(10);
    req.skills[1].train_epochs = Some(3);
    let jobs = plan(&req).unwrap().jobs();
    let train = |name: &str| {
        jobs.iter()
            .find_map(|j| match j {
                JobSpec::Train(t) if t.name == name => Some(t.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no training job {name}: {:?}", labels(&jobs)))
    };
    let passes = |t: &TrainJob| -> Vec<usize> {
        let per = t.passes.clone().unwrap_or_else(|| vec![1; t.data.len()]);
        per.iter().map(|p| p * t.train.epochs).collect()
    };
    let mix = train("datamix-code+math");
    assert_eq!(passes(&mix), vec![10, 3]);
    assert_eq!(passes(&train("code")), vec![10]);
    assert_eq!(passes(&train("math")), vec![3]);
    // Equal epochs leave the mix as it always was.
    req.skills[0].train_epochs = Some(3);
    let jobs = plan(&req).unwrap().jobs();
    let mix = jobs
        .iter()
        .find_map(|j| match j {
            JobSpec::Train(t) if t.data.len() == 2 => Some(t.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!((mix.passes, mix.train.epochs), (None, 3));
}

/// A job that builds or evaluates the copy of a random method made for seed 1, 2, ...
fn is_seed_copy(job: &JobSpec) -> bool {
    let copy = |name: &str| {
        name.rsplit_once("-seed")
            .is_some_and(|(_, k)| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
    };
    match job {
        JobSpec::Cat(c) => copy(&c.name),
        JobSpec::Merge(m) => copy(&m.name),
        JobSpec::Train(t) => copy(&t.name),
        JobSpec::Eval(e) => copy(&e.target.label()),
    }
}

#[test]
fn seeds_repeat_only_the_random_builds_with_suffixed_names_and_shifted_seeds() {
    let methods = vec![
        CompareMethod::Base,
        CompareMethod::Cat,
        CompareMethod::Merge(MergeKind::Ties),
        CompareMethod::Merge(MergeKind::DareTies),
    ];
    let one = plan(&request(methods.clone())).unwrap();
    // 0 or 1 seed: the plan unchanged.
    assert_eq!(with_seeds(one.clone(), 1), one);
    let three = with_seeds(one.clone(), 3);
    let names: Vec<(String, u64)> = three
        .builds
        .iter()
        .map(|j| match j {
            JobSpec::Cat(c) => (c.name.clone(), c.train.seed),
            JobSpec::Merge(m) => (m.name.clone(), m.seed),
            other => (other.label(), 0),
        })
        .collect();
    let cat = "cat-code+math";
    let dare = "dare_ties-code+math";
    let s = request(Vec::new()).cat.train.seed;
    assert_eq!(
        names,
        vec![
            (cat.to_string(), s),
            (format!("{cat}-seed1"), s + 1),
            (format!("{cat}-seed2"), s + 2),
            ("ties-code+math".to_string(), 0),
            (dare.to_string(), 0),
            (format!("{dare}-seed1"), 1),
            (format!("{dare}-seed2"), 2),
        ]
    );
    assert!(three.jobs().iter().filter(|j| is_seed_copy(j)).count() == 4 + 4);
    // Rows: the same rows; CAT and DARE-TIES carry two more evaluations each, on the copies.
    assert_eq!(three.rows.len(), one.rows.len());
    for row in &three.rows {
        let want = match row.label.as_str() {
            "CAT" | "DARE-TIES" => 2,
            _ => 0,
        };
        assert_eq!(row.seed_evals.len(), want, "{}", row.label);
        for (k, evals) in row.seed_evals.iter().enumerate() {
            assert_eq!(evals.len(), three.columns.len());
            let EvalTarget::Adapter(a) = &evals[0].as_ref().expect("every column").target else {
                panic!("seed copies are stored adapters");
            };
            assert!(a.ends_with(&format!("-seed{}", k + 1)), "{a}");
        }
    }
    // Every seed copy is built before it is evaluated, and evaluated once.
    let jobs = three.jobs();
    let evals: Vec<String> = jobs
        .iter()
        .filter_map(|j| match j {
            JobSpec::Eval(e) => Some(e.target.label()),
            _ => None,
        })
        .collect();
    assert_eq!(evals.len(), one.rows.len() + 4);
    assert!(evals.contains(&format!("{cat}-seed2")));
    assert_eq!(seed_name("x", 0), "x");
}

/// A column for some methods only (a budget's skill_tests) grades those rows, first seed
/// only; the other columns grade every row and seed.
#[test]
fn a_column_for_some_methods_grades_their_rows_first_seed_only() {
    let methods = vec![
        CompareMethod::Base,
        CompareMethod::Skills,
        CompareMethod::Cat,
        CompareMethod::Merge(MergeKind::DareTies),
    ];
    let mut req = request(methods);
    let mut skill = req.columns[0].clone();
    skill.column = "math skill".into();
    skill.only = Some(vec![CompareMethod::Skills, CompareMethod::Cat]);
    req.columns.push(skill);
    let p = with_seeds(plan(&req).unwrap(), 3);
    assert_eq!(p.every_seed, [true, false]);
    // Per row: which columns its first seed and each seed copy are graded on.
    type Graded<'a> = (&'a str, Vec<bool>, Vec<Vec<bool>>);
    let some = |e: &[Option<EvalJob>]| e.iter().map(Option::is_some).collect::<Vec<_>>();
    let graded: Vec<Graded> = p
        .rows
        .iter()
        .map(|r| {
            let copies = r.seed_evals.iter().map(|e| some(e)).collect();
            (r.label.as_str(), some(&r.evals), copies)
        })
        .collect();
    let copies = vec![vec![true, false]; 2];
    assert_eq!(
        graded,
        [
            ("base", vec![true, false], vec![]),
            ("code only", vec![true, true], vec![]),
            ("math only", vec![true, true], vec![]),
            ("CAT", vec![true, true], copies.clone()),
            ("DARE-TIES", vec![true, false], copies),
        ]
    );
    // 5 rows and 4 seed copies on the target, 3 rows on the skill's column.
    let evals = p
        .jobs()
        .iter()
        .filter(|j| matches!(j, JobSpec::Eval(_)))
        .count();
    assert_eq!(evals, 5 + 4 + 3);
}

/// `cat-uniform` is the concatenation at CAT's start: a fixed-weight cat merge at 1/k each (no
/// training job), and `KIND@cat-scale` the merge at the same weights; with free CAT weights
/// the start, and so the scale, is 1.
#[test]
fn cat_uniform_and_matched_scale_merges_use_cats_starting_weights() {
    let methods: Vec<CompareMethod> = ["ties@cat-scale", "cat-uniform", "ties", "cat"]
        .iter()
        .map(|m| m.parse().unwrap())
        .collect();
    let mut req = request(methods);
    let p = plan(&req).unwrap();
    assert_eq!(
        labels(&p.builds),
        [
            "cat cat-code+math",
            "merge cat-uniform-code+math (cat)",
            "merge ties-code+math (ties)",
            "merge ties-cat-scale-code+math (ties)",
        ]
    );
    let rows: Vec<&str> = p.rows.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(rows, ["CAT", "CAT-UNIFORM", "TIES", "TIES @CAT-SCALE"]);
    let merges = |p: &Plan| -> Vec<MergeJob> {
        p.builds
            .iter()
            .filter_map(|j| match j {
                JobSpec::Merge(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    };
    let m = merges(&p);
    assert_eq!(m[0].method, MergeKind::Cat);
    assert_eq!(m[0].weights, [0.5, 0.5]);
    assert_eq!(
        m[1].weights,
        [1.0, 1.0],
        "the plain merge keeps the given weights"
    );
    assert_eq!(m[2].weights, [0.5, 0.5]);
    assert!(
        !p.builds.iter().any(|j| matches!(j, JobSpec::Train(_))),
        "no training for the controls"
    );
    // Without CAT itself the control is still a merge, nothing trained.
    req.methods = vec![CompareMethod::CatUniform];
    let only = plan(&req).unwrap();
    assert_eq!(labels(&only.builds), ["merge cat-uniform-code+math (cat)"]);

    req.methods = vec![
        CompareMethod::CatUniform,
        CompareMethod::MergeAtCatScale(MergeKind::Linear),
    ];
    req.cat.param = crate::train::CatParam::Free;
    for m in merges(&plan(&req).unwrap()) {
        assert_eq!(m.weights, [1.0, 1.0], "{}", m.name);
    }
    req.skills.push(skill("qa", Some("builtin:qa-train")));
    req.cat.param = crate::train::CatParam::Softmax;
    for m in merges(&plan(&req).unwrap()) {
        assert_eq!(m.weights, [1.0 / 3.0; 3], "{}", m.name);
    }
}

#[test]
fn matched_scale_names_read_back_and_refuse_what_has_no_scale() {
    for text in ["cat-uniform", "ties@cat-scale", "dare_linear@cat-scale"] {
        let m: CompareMethod = text.parse().unwrap();
        assert_eq!(m.name(), text);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<CompareMethod>(&json).unwrap(), m);
    }
    let err = "lorahub@cat-scale".parse::<CompareMethod>().unwrap_err();
    assert!(err.contains("searches its own weights"), "{err}");
    let err = "cat@cat-scale".parse::<CompareMethod>().unwrap_err();
    assert!(err.contains("cat-uniform"), "{err}");
    let err = "tie@cat-scale".parse::<CompareMethod>().unwrap_err();
    assert!(err.contains("tie"), "{err}");
    // A plan asked for them directly refuses them too.
    let req = request(vec![CompareMethod::MergeAtCatScale(MergeKind::LoraHub)]);
    assert_eq!(plan(&req).unwrap_err(), PlanError::CatMerge);
}

/// Every CAT hyperparameter of a recipe's budget reaches the CAT job it plans; a recipe
/// without them gets CAT's defaults.
#[test]
fn recipe_budget_cat_fields_reach_the_cat_job() {
    use crate::engine::recipe::{Recipe, BUILTIN_RECIPES};
    use crate::train::cat::{DEFAULT_CAT_HELDOUT, DEFAULT_CAT_LR, DEFAULT_CAT_MIN_STEPS};
    use crate::train::{CatInit, CatParam};
    let text = BUILTIN_RECIPES[0].1;
    let cat_job = |text: &str| -> CatJob {
        let r = Recipe::parse(text, "t").unwrap();
        let jobs = r.plan("tiny").unwrap().builds;
        jobs.into_iter()
            .find_map(|j| match j {
                JobSpec::Cat(c) => Some(c),
                _ => None,
            })
            .unwrap()
    };
    let changed = text
        .replacen("cat_lr = 5e-2", "cat_lr = 0.07", 1)
        .replacen("cat_epochs = 1", "cat_epochs = 2", 1)
        .replacen("cat_min_steps = 24", "cat_min_steps = 33", 1)
        .replacen("cat_init = \"uniform\"", "cat_init = \"normal\"", 1)
        .replacen("cat_param = \"softmax\"", "cat_param = \"free\"", 1)
        .replacen("cat_heldout = 16", "cat_heldout = 5", 1)
        .replacen("cat_fraction = 0.012", "cat_fraction = 0.25", 1);
    assert_ne!(changed, text);
    let c = cat_job(&changed);
    assert_eq!(c.train.lr, 0.07);
    assert_eq!(c.train.epochs, 2);
    assert_eq!(c.train.min_steps, 33);
    assert_eq!(c.init, CatInit::Normal);
    assert_eq!(c.param, CatParam::Free);
    assert_eq!(c.heldout, 5);
    assert_eq!(c.sample_fraction, 0.25);

    // Without the fields: CAT's defaults.
    let bare: String = text
        .lines()
        .filter(|l| {
            ![
                "cat_lr",
                "cat_epochs",
                "cat_min_steps",
                "cat_init",
                "cat_param",
                "cat_heldout",
            ]
            .iter()
            .any(|k| l.starts_with(k))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let c = cat_job(&bare);
    assert_eq!(c.train.lr, DEFAULT_CAT_LR);
    assert_eq!(c.train.min_steps, DEFAULT_CAT_MIN_STEPS);
    assert_eq!(c.heldout, DEFAULT_CAT_HELDOUT);
    assert_eq!(c.init, CatInit::Uniform);

    // Nonsense is refused when the recipe is read, naming the field.
    for (from, to) in [
        ("cat_lr = 5e-2", "cat_lr = -1.0"),
        ("cat_lr = 5e-2", "cat_lr = nan"),
    ] {
        let bad = text.replacen(from, to, 1);
        let err = Recipe::parse(&bad, "t").unwrap_err().to_string();
        assert!(err.contains("cat_lr"), "{err}");
    }
    let bad = text.replacen("cat_init = \"uniform\"", "cat_init = \"zeros\"", 1);
    let err = Recipe::parse(&bad, "t").unwrap_err().to_string();
    assert!(err.contains("zeros"), "{err}");
}
