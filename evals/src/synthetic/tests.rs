use super::*;
use crate::codemath::Verdict;
use crate::datasets;
use crate::sandbox::{RunStatus, Sandbox, SandboxConfig};

fn small() -> SyntheticSizes {
    SyntheticSizes {
        skill_train: 300,
        skill_test: 60,
        target: 80,
        manual_error_codes: 60,
    }
}

#[test]
fn code_math_files_load_and_are_disjoint() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_synthetic_sized(SyntheticKind::CodeMath, 7, dir.path(), &small()).unwrap();
    assert_eq!(files.len(), 7);
    let p = |n: &str| dir.path().join(n);
    let train = datasets::load_math(&p("math_skill_train.jsonl")).unwrap();
    let test = datasets::load_math(&p("math_skill_test.jsonl")).unwrap();
    let target = datasets::load_math(&p("code_math_test.json")).unwrap();
    assert_eq!((train.len(), test.len(), target.len()), (300, 60, 80));
    let train_q: HashSet<&str> = train.iter().map(|m| m.question.as_str()).collect();
    assert!(test
        .iter()
        .chain(&target)
        .all(|m| !train_q.contains(m.question.as_str())));
    assert!(target.iter().all(|m| m.gold >= 0.0 && m.gold < 1000.0));
    // The worked answers end in the gold.
    for m in &train {
        assert!(m
            .solution
            .as_deref()
            .is_some_and(|s| s.ends_with(&format!("#### {}", m.gold))));
    }
    let code = datasets::load_instructions(&p("code_skill_train.json")).unwrap();
    assert_eq!(code.len(), 300);
    let code_test = datasets::load_instructions(&p("code_skill_test.json")).unwrap();
    let code_q: HashSet<&str> = code.iter().map(|c| c.instruction.as_str()).collect();
    assert!(code_test
        .iter()
        .all(|c| !code_q.contains(c.instruction.as_str())));
    // Same seed, same bytes.
    let dir2 = tempfile::tempdir().unwrap();
    write_synthetic_sized(SyntheticKind::CodeMath, 7, dir2.path(), &small()).unwrap();
    assert_eq!(
        std::fs::read(p("code_math_test.json")).unwrap(),
        std::fs::read(dir2.path().join("code_math_test.json")).unwrap()
    );
}

/// The math skill's worked steps are the reference program's lines as equations: the given
/// quantities first, then one `name = a op b = x op y = value.` per program line, the last
/// one `result` with the gold; every template appears.
#[test]
fn math_steps_are_the_programs_lines_with_their_values() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut shapes = HashSet::new();
    for _ in 0..400 {
        let p = math::problem(&mut rng);
        let lines: Vec<&str> = p.program.lines().map(str::trim).collect();
        let steps: Vec<&str> = p.steps.lines().collect();
        let (givens, computed): (Vec<&str>, Vec<&str>) =
            lines[1..lines.len() - 1].iter().partition(|l| {
                l.split(" = ")
                    .nth(1)
                    .is_some_and(|v| v.parse::<i64>().is_ok())
            });
        assert_eq!(
            steps[0],
            format!("{}.", givens.join(", ")),
            "{}",
            p.question
        );
        assert_eq!(steps.len(), 1 + computed.len(), "{}", p.question);
        for (step, line) in steps[1..].iter().zip(&computed) {
            assert!(
                step.starts_with(&format!("{line} = ")),
                "{step:?} vs {line:?}"
            );
        }
        let last = steps.last().copied().unwrap_or_default();
        assert!(last.starts_with("result = "), "{last}");
        assert!(
            last.ends_with(&format!(" = {}.", p.answer)),
            "{last} vs {}",
            p.answer
        );
        shapes.insert(computed.join(";"));
    }
    assert_eq!(shapes.len(), 8, "{shapes:?}");
}

/// Every code answer passes its own test and every target's reference program returns the
/// gold.
#[test]
fn code_answers_pass_their_tests() {
    let sb = Sandbox::new(SandboxConfig {
        workers: 2,
        allow_weaker_isolation: true,
        entry: String::new(),
        ..SandboxConfig::default()
    })
    .expect("sandbox");
    let sets = code_math_sets(3, &small());
    let programs: Vec<String> = sets
        .code_train
        .iter()
        .take(120)
        .map(|c| {
            let prog = crate::codemath::extract_program(&c.output).unwrap_or_default();
            format!("{prog}\n{}\n", c.test)
        })
        .collect();
    for (o, p) in sb.run_many(&programs).unwrap().iter().zip(&programs) {
        assert_eq!(o.status, RunStatus::Ok, "{p}\n{o:?}");
    }
    let checks: Vec<String> = sets
        .target
        .iter()
        .map(|m| {
            format!(
                "{}\nassert solution() == {}\n",
                m.solution.as_deref().unwrap_or(""),
                m.gold
            )
        })
        .collect();
    for (o, p) in sb.run_many(&checks).unwrap().iter().zip(&checks) {
        assert_eq!(o.status, RunStatus::Ok, "{p}\n{o:?}");
    }
}

/// The code skill's test set loads as exercises with tests, its reference programs pass them,
/// and answers that return the wrong value, do not parse or hold no program are told apart.
#[test]
fn code_test_set_grades_by_its_tests() {
    let dir = tempfile::tempdir().unwrap();
    write_synthetic_sized(SyntheticKind::CodeMath, 5, dir.path(), &small()).unwrap();
    let items = datasets::load_code(&dir.path().join("code_skill_test.json")).unwrap();
    assert_eq!(items.len(), 60);
    let sb = Sandbox::new(SandboxConfig {
        workers: 2,
        allow_weaker_isolation: true,
        ..SandboxConfig::default()
    })
    .expect("sandbox");
    let graded = |output: &dyn Fn(&datasets::CodeExercise) -> String| {
        let pairs: Vec<(String, String)> =
            items.iter().map(|i| (output(i), i.test.clone())).collect();
        crate::codemath::grade_tests(&sb, &pairs).unwrap()
    };
    let reference = graded(&|i| i.solution.clone().unwrap_or_default());
    assert!(reference.iter().all(|g| g.correct), "{reference:?}");
    let wrong = graded(&|_| "```python\ndef solution():\n    return -12345\n```".into());
    assert!(
        wrong.iter().all(|g| g.verdict == Verdict::Wrong),
        "{wrong:?}"
    );
    let broken = graded(&|_| "```python\ndef solution(:\n```".into());
    assert!(broken.iter().all(|g| g.verdict == Verdict::SyntaxError));
    let prose = graded(&|_| "I would loop over the list.".into());
    assert!(prose
        .iter()
        .all(|g| g.verdict == Verdict::NoProgram && !g.correct));
    // A row without tests is named.
    let path = dir.path().join("no-tests.json");
    std::fs::write(&path, r#"[{"instruction": "a", "output": "b", "test": "assert True"}, {"instruction": "c", "output": "d"}]"#).unwrap();
    let err = datasets::load_code(&path).unwrap_err().to_string();
    assert!(err.contains("test") && err.contains('2'), "{err}");
}

#[test]
fn reference_programs_file_grades_perfectly() {
    let dir = tempfile::tempdir().unwrap();
    write_synthetic_sized(SyntheticKind::CodeMath, 5, dir.path(), &small()).unwrap();
    let items = datasets::load_math(&dir.path().join("code_math_reference.jsonl")).unwrap();
    assert_eq!(items.len(), 80);
    let sb = Sandbox::new(SandboxConfig {
        workers: 2,
        allow_weaker_isolation: true,
        ..SandboxConfig::default()
    })
    .expect("sandbox");
    let outputs: Vec<(String, f64)> = items
        .iter()
        .map(|m| {
            (
                format!("```python\n{}\n```", m.solution.as_deref().unwrap_or("")),
                m.gold,
            )
        })
        .collect();
    let grades = crate::codemath::grade_many(&sb, &outputs).unwrap();
    assert!(grades.iter().all(|g| g.correct), "{grades:?}");
}

#[test]
fn manual_is_long_and_target_answers_are_in_it() {
    let dir = tempfile::tempdir().unwrap();
    write_synthetic_sized(SyntheticKind::ManualQa, 11, dir.path(), &small()).unwrap();
    let manual = datasets::load_manual(&dir.path().join("manual.txt")).unwrap();
    let words = manual.text.split_whitespace().count();
    assert!(words >= 3000, "manual has only {words} words");
    let target = datasets::load_qa(&dir.path().join("manual_qa_test.json")).unwrap();
    assert_eq!(target.len(), 80);
    for q in &target {
        let ctx = q.context.as_deref().unwrap_or("");
        assert!(manual.text.contains(ctx), "context not in manual: {ctx}");
        let a = crate::manualqa::normalize_answer(&q.answers[0]);
        assert!(
            crate::manualqa::normalize_answer(ctx).contains(&a),
            "{a} not in {ctx}"
        );
    }
    let train = datasets::load_qa(&dir.path().join("qa_skill_train.json")).unwrap();
    let test = datasets::load_qa(&dir.path().join("qa_skill_test.json")).unwrap();
    assert_eq!(train.len(), 300);
    let nic = train.iter().filter(|q| q.unanswerable).count();
    assert!(nic > 20 && nic < 150, "{nic} unanswerable of 300");
    let seen: HashSet<(String, String)> = train
        .iter()
        .map(|q| (q.context.clone().unwrap_or_default(), q.question.clone()))
        .collect();
    assert!(test
        .iter()
        .all(|q| !seen.contains(&(q.context.clone().unwrap_or_default(), q.question.clone()))));
    // The skill documents share no invented name with the manual's product.
    let product = manual_qa_sets(11, &small()).product;
    assert!(train
        .iter()
        .all(|q| !q.context.as_deref().unwrap_or("").contains(&product)));
}

/// Each asked fact is stated three to five times, in words that differ, and every gold answer
/// appears in at least three of those statements, all of them in the manual's text.
#[test]
fn every_asked_fact_is_stated_three_to_five_times() {
    let mut rng = rng(5, 11);
    let doc = manual::manual(&mut rng, 64);
    let norm = crate::manualqa::normalize_answer;
    let asked: Vec<&manual::Fact> = doc
        .facts
        .iter()
        .filter(|f| !f.questions.is_empty())
        .collect();
    let questions: usize = asked.iter().map(|f| f.questions.len()).sum();
    assert!(questions >= 250, "only {questions} questions");
    for f in asked {
        let statements: Vec<&String> = std::iter::once(&f.sentence).chain(&f.restated).collect();
        assert!(
            (3..=5).contains(&statements.len()),
            "{}: {} statements",
            f.sentence,
            statements.len()
        );
        let distinct: HashSet<&String> = statements.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            statements.len(),
            "a restatement repeats: {}",
            f.sentence
        );
        for st in &statements {
            assert_eq!(
                doc.text.matches(st.as_str()).count(),
                1,
                "not in the manual once: {st}"
            );
        }
        for (q, a) in &f.questions {
            let n = statements
                .iter()
                .filter(|st| norm(st).contains(&norm(a)))
                .count();
            assert!(n >= 3, "{q} -> {a}: stated {n} times in {statements:#?}");
        }
    }
    // Restatements are spread over the later parts, not next to the original.
    for title in manual::RESTATEMENT_PARTS {
        assert!(
            doc.text.contains(&format!("{title}\n\n")),
            "no part {title}"
        );
    }
}
