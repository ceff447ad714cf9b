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

/// The jobs each built-in recipe runs, at every budget, as the recipe code ran them before the
/// planner existed (captured from that code, in `golden/`): the planner must keep planning
/// these, in this order, or the artifacts a user's store holds for a recipe stop being reused.
/// Changed on purpose once since: the CAT job carries the budget's CAT hyperparameters (its
/// own lr, min steps, init, held-out count), and `cat-uniform` and the `@cat-scale` merges
/// were added; every other job is as it was.
#[test]
fn builtin_recipes_plan_the_jobs_they_always_ran() {
    use crate::engine::recipe::{Recipe, BUILTIN_RECIPES};
    use std::collections::BTreeMap;
    let golden = |name: &str| match name {
        "code-math" => include_str!("golden/code-math.json"),
        "manual-qa" => include_str!("golden/manual-qa.json"),
        other => panic!("no golden jobs for the built-in recipe {other}: capture them"),
    };
    for (name, text) in BUILTIN_RECIPES {
        let recipe = Recipe::parse(text, name).unwrap();
        let ran: BTreeMap<String, Vec<JobSpec>> = serde_json::from_str(golden(name)).unwrap();
        let budgets: Vec<&String> = ran.keys().collect();
        assert_eq!(budgets, recipe.budgets.keys().collect::<Vec<_>>());
        for (budget, jobs) in &ran {
            let planned = recipe.plan(budget).unwrap().jobs();
            assert_eq!(planned.len(), jobs.len(), "{name} {budget}");
            for (i, (p, j)) in planned.iter().zip(jobs).enumerate() {
                assert_eq!(p, j, "{name} {budget}: job {i}");
            }
        }
    }
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
