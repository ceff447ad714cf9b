use super::*;
use crate::datasets::{MathItem, QaItem};
use crate::generate::Completion;
use crate::prompts::{pot_prompt, POT_DEMOS};
use crate::sandbox::SandboxConfig;
use crate::tasks::{code_math::CodeMath, math_cot::MathCot, qa::QA};

type TestSink<'s> =
    dyn FnMut(&QuestionRecord) -> Result<(), Box<dyn std::error::Error + Send + Sync>> + 's;

/// Runs `task` in the plain style with `shots` demos.
#[allow(clippy::too_many_arguments)]
fn run<T: Task>(
    task: &T,
    items: &[T::Item],
    generator: &mut dyn Generate,
    sandbox: Option<&Sandbox>,
    shots: usize,
    opts: EvalOptions,
    previous: &[QuestionRecord],
    sink: &mut TestSink<'_>,
) -> Result<EvalSummary, EvalError> {
    let mut run = EvalRun {
        generator,
        sandbox,
        style: PromptStyle::Plain,
        render_chat: &|p| Ok(format!("<chat>{}", p.text)),
        prompt: PromptOptions { shots },
        dtype: Some("f32".into()),
        opts,
        previous,
        sink,
    };
    evaluate(task, items, &mut run)
}

/// Answers "How much is A plus B?" with a correct program, reading the last question of the
/// prompt: the text of the new tokens only, as the contract requires.
struct Adder {
    calls: usize,
    seen: Vec<String>,
    echo: bool,
}

fn last_question(prompt: &str) -> &str {
    prompt.rsplit("Question: ").next().unwrap_or("")
}

fn numbers(s: &str) -> Vec<i64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter_map(|t| t.parse().ok())
        .collect()
}

impl Generate for Adder {
    fn generate(
        &mut self,
        prompts: &[String],
        _settings: &GenSettings,
    ) -> Result<Vec<Completion>, GenerateError> {
        self.calls += 1;
        Ok(prompts
            .iter()
            .map(|p| {
                self.seen.push(p.clone());
                let n = numbers(last_question(p));
                let new = format!(
                    "```python\ndef solution():\n    result = {} + {}\n    return result\n```",
                    n.first().copied().unwrap_or(0),
                    n.get(1).copied().unwrap_or(0)
                );
                Completion {
                    text: if self.echo { format!("{p}{new}") } else { new },
                    prompt_tokens: p.len() / 4,
                    output_tokens: 20,
                    cached: false,
                }
            })
            .collect())
    }
}

fn items() -> Vec<MathItem> {
    (0..6)
        .map(|i| MathItem {
            id: format!("q{i}"),
            question: format!("How much is {} plus {}?", i + 10, 2 * i + 1),
            gold: f64::from(i + 10 + 2 * i + 1),
            solution: None,
        })
        .collect()
}

fn sandbox() -> Sandbox {
    Sandbox::new(SandboxConfig {
        workers: 2,
        allow_weaker_isolation: true,
        ..SandboxConfig::default()
    })
    .expect("sandbox (needs python3)")
}

fn no_sink() -> impl FnMut(&QuestionRecord) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
{
    |_| Ok(())
}

#[test]
fn code_math_scores_only_new_text() {
    let sb = sandbox();
    let mut gen = Adder {
        calls: 0,
        seen: vec![],
        echo: false,
    };
    let mut recs = Vec::new();
    let opts = EvalOptions {
        batch_size: 4,
        ..EvalOptions::default()
    };
    let s = run(
        &CodeMath,
        &items(),
        &mut gen,
        Some(&sb),
        3,
        opts.clone(),
        &[],
        &mut |r: &QuestionRecord| {
            recs.push(r.clone());
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(s.n, 6);
    assert_eq!(s.scores["accuracy"], 1.0, "{recs:#?}");
    assert_eq!(gen.calls, 2);
    assert_eq!(s.verdicts["correct"], 6);
    for r in &recs {
        assert!(
            !r.raw_output.contains("Question:"),
            "prompt leaked into output"
        );
        assert!(r
            .extracted
            .as_deref()
            .is_some_and(|p| p.contains("return result")));
        assert_eq!(r.stdout.as_deref(), Some(""));
    }
}

/// The LoRA Soups evaluation bug: decoding prompt + output and cutting at the first answer
/// marker grades the first demo's program for every question. A generator that echoes its
/// prompt is refused; and the echoed text, graded the paper's way, gets the demo's answer.
#[test]
fn echoed_prompt_is_caught() {
    let sb = sandbox();
    let mut gen = Adder {
        calls: 0,
        seen: vec![],
        echo: true,
    };
    let err = run(
        &CodeMath,
        &items(),
        &mut gen,
        Some(&sb),
        3,
        EvalOptions::default(),
        &[],
        &mut no_sink(),
    )
    .unwrap_err();
    assert!(matches!(err, EvalError::PromptEchoed { .. }), "{err}");

    // What the paper's cut would have graded: the text up to the end of the first demo's
    // answer, i.e. the first demo's program (7 pens), whatever the question.
    let echoed = format!("{}{}", pot_prompt("How much is 10 plus 1?", 3).text, "...");
    let answer = echoed.find("Answer:").unwrap_or(0);
    let first_answer_end = echoed[answer..]
        .find("\n\nQuestion:")
        .map_or(0, |i| answer + i + 1);
    let cut = &echoed[..first_answer_end];
    let g = crate::codemath::grade_one(&sb, cut, 11.0).unwrap();
    assert_eq!(g.pred, Some(7.0));
    assert!(cut.contains(POT_DEMOS[0].1));
}

#[test]
fn resume_skips_finished_and_counts_them() {
    let sb = sandbox();
    let mut gen = Adder {
        calls: 0,
        seen: vec![],
        echo: false,
    };
    let mut first = Vec::new();
    let opts = EvalOptions {
        batch_size: 2,
        limit: Some(4),
        ..EvalOptions::default()
    };
    // A "killed" run: the sink fails after two records.
    let err = run(
        &CodeMath,
        &items(),
        &mut gen,
        Some(&sb),
        1,
        opts.clone(),
        &[],
        &mut |r: &QuestionRecord| {
            if first.len() == 2 {
                return Err("disk full".into());
            }
            first.push(r.clone());
            Ok(())
        },
    )
    .unwrap_err();
    assert!(matches!(err, EvalError::Sink { .. }));
    let mut gen2 = Adder {
        calls: 0,
        seen: vec![],
        echo: false,
    };
    let mut new_ids = Vec::new();
    let s = run(
        &CodeMath,
        &items(),
        &mut gen2,
        Some(&sb),
        1,
        opts.clone(),
        &first,
        &mut |r: &QuestionRecord| {
            new_ids.push(r.id.clone());
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(new_ids, vec!["q2", "q3"]);
    assert_eq!(s.n, 4);
    assert_eq!(s.resumed, 2);
    assert_eq!(gen2.seen.len(), 2);
}

struct Fixed(Vec<&'static str>);

impl Generate for Fixed {
    fn generate(
        &mut self,
        prompts: &[String],
        _s: &GenSettings,
    ) -> Result<Vec<Completion>, GenerateError> {
        Ok(prompts
            .iter()
            .enumerate()
            .map(|(i, _)| Completion {
                text: self.0[i % self.0.len()].to_string(),
                prompt_tokens: 1,
                output_tokens: 1,
                cached: i == 0,
            })
            .collect())
    }
}

#[test]
fn qa_and_cot_runs() {
    let qa = vec![
        QaItem {
            id: "a".into(),
            question: "Which valve?".into(),
            context: None,
            answers: vec!["the blue valve".into()],
            unanswerable: false,
        },
        QaItem {
            id: "b".into(),
            question: "Who?".into(),
            context: Some("Nothing here.".into()),
            answers: vec!["Not in context".into()],
            unanswerable: true,
        },
    ];
    let mut gen = Fixed(vec![
        " The correct answer is Blue valve.\n",
        "Not in context",
    ]);
    let s = run(
        &QA,
        &qa,
        &mut gen,
        None,
        0,
        EvalOptions::default(),
        &[],
        &mut no_sink(),
    )
    .unwrap();
    assert_eq!(s.scores["em"], 1.0);
    assert_eq!(s.headline, "f1");

    let mut gen = Fixed(vec!["2 + 3 = 5\n#### 5", "it is 9"]);
    let math = vec![
        MathItem {
            id: "x".into(),
            question: "2+3?".into(),
            gold: 5.0,
            solution: None,
        },
        MathItem {
            id: "y".into(),
            question: "4+5?".into(),
            gold: 9.0,
            solution: None,
        },
    ];
    let s = run(
        &MathCot,
        &math,
        &mut gen,
        None,
        2,
        EvalOptions::default(),
        &[],
        &mut no_sink(),
    )
    .unwrap();
    assert_eq!(s.scores["strict_match"], 0.5);
    assert_eq!(s.scores["flexible_match"], 1.0);
}

#[test]
fn count_mismatch_is_an_error() {
    struct Short;
    impl Generate for Short {
        fn generate(
            &mut self,
            _p: &[String],
            _s: &GenSettings,
        ) -> Result<Vec<Completion>, GenerateError> {
            Ok(vec![])
        }
    }
    let e = run(
        &MathCot,
        &items(),
        &mut Short,
        None,
        0,
        EvalOptions::default(),
        &[],
        &mut no_sink(),
    )
    .unwrap_err();
    assert!(matches!(e, EvalError::CountMismatch { .. }));
}

#[test]
fn cancel_stops_between_batches() {
    let flag = std::sync::Arc::new(AtomicBool::new(false));
    let mut gen = Fixed(vec!["#### 1"]);
    let mut seen = 0;
    let f = flag.clone();
    let opts = EvalOptions {
        batch_size: 2,
        cancel: Some(flag),
        ..EvalOptions::default()
    };
    let s = run(
        &MathCot,
        &items(),
        &mut gen,
        None,
        0,
        opts,
        &[],
        &mut |_r: &QuestionRecord| {
            seen += 1;
            f.store(true, Ordering::Relaxed);
            Ok(())
        },
    )
    .unwrap();
    assert!(s.cancelled);
    assert_eq!(s.n, 2);
    assert_eq!(seen, 2);
}

/// Records the settings and prompts it was asked with.
struct Recorder {
    stops: Vec<Vec<String>>,
    prompts: Vec<String>,
}

impl Generate for Recorder {
    fn generate(
        &mut self,
        prompts: &[String],
        s: &GenSettings,
    ) -> Result<Vec<Completion>, GenerateError> {
        self.stops.push(s.stop.clone());
        self.prompts.extend(prompts.iter().cloned());
        Ok(prompts
            .iter()
            .map(|_| Completion {
                text: "#### 1".into(),
                prompt_tokens: 1,
                output_tokens: 1,
                cached: false,
            })
            .collect())
    }
}

#[test]
fn stops_come_from_the_task_in_each_form() {
    for style in [PromptStyle::Plain, PromptStyle::Chat] {
        let mut gen = Recorder {
            stops: vec![],
            prompts: vec![],
        };
        let mut recs = Vec::new();
        let mut sink = |r: &QuestionRecord| {
            recs.push(r.clone());
            Ok(())
        };
        let mut run = EvalRun {
            generator: &mut gen,
            sandbox: None,
            style,
            render_chat: &|p| {
                Ok(format!(
                    "<chat>{}",
                    p.messages[p.messages.len() - 1].content
                ))
            },
            prompt: PromptOptions { shots: 1 },
            dtype: Some("bf16".into()),
            opts: EvalOptions {
                settings: GenSettings {
                    stop: vec!["ignored".into()],
                    ..GenSettings::default()
                },
                ..EvalOptions::default()
            },
            previous: &[],
            sink: &mut sink,
        };
        evaluate(&MathCot, &items()[..2], &mut run).unwrap();
        let want_stop = match style {
            PromptStyle::Plain => crate::prompts::cot_prompt("", 0).stop,
            PromptStyle::Chat => crate::prompts::cot_prompt("", 0).chat_stop,
        };
        assert!(!want_stop.is_empty(), "{style:?} has no stop strings");
        assert_eq!(gen.stops, vec![want_stop]);
        assert_eq!(
            gen.prompts[0].starts_with("<chat>"),
            style == PromptStyle::Chat
        );
        for r in &recs {
            assert_eq!(r.prompt_style, Some(style));
            assert_eq!(r.dtype.as_deref(), Some("bf16"));
            assert_eq!(r.task, "math-cot");
            assert!(r.isolation.is_none());
        }
    }
}

#[test]
fn records_keep_cache_hits_and_the_sandbox_run() {
    let sb = sandbox();
    // The first answer is served "from the cache"; the second kills itself with a signal.
    let mut gen = Fixed(vec![
        "```python\ndef solution():\n    return 11\n```",
        "```python\nimport os, signal\ndef solution():\n    os.kill(os.getpid(), signal.SIGKILL)\n```",
    ]);
    let mut recs = Vec::new();
    run(
        &CodeMath,
        &items()[..2],
        &mut gen,
        Some(&sb),
        0,
        EvalOptions::default(),
        &[],
        &mut |r: &QuestionRecord| {
            recs.push(r.clone());
            Ok(())
        },
    )
    .unwrap();
    assert!(recs[0].cached && !recs[1].cached);
    assert!(recs[0].correct, "{:?}", recs[0]);
    assert_eq!(recs[0].verdict_label(), "correct");
    assert!(recs.iter().all(|r| r.isolation.is_some()), "{recs:#?}");
    assert_eq!(recs[1].verdict_label(), "runtime_error", "{:?}", recs[1]);
    assert!(
        recs[1].signal.is_some() || recs[1].sandbox_message.is_some(),
        "{:?}",
        recs[1]
    );
    // The record goes to the store as it is and comes back equal.
    let json = serde_json::to_value(&recs[1]).unwrap();
    let back: QuestionRecord = serde_json::from_value(json).unwrap();
    assert_eq!(back, recs[1]);
}

#[test]
fn a_seeded_sample_spreads_over_the_set_and_is_the_same_for_every_run() {
    let items: Vec<usize> = (0..200).collect();
    // Without a seed: the first ones, as before.
    assert_eq!(
        scope(&items, Some(5), None),
        items[..5].iter().collect::<Vec<_>>()
    );
    let a = scope(&items, Some(20), Some(7));
    let b = scope(&items, Some(20), Some(7));
    assert_eq!(
        a, b,
        "the same seed must give every method the same questions"
    );
    assert_eq!(a.len(), 20);
    // In dataset order, no repeats, and not the first block: a set grouped by section (here
    // 10 sections of 20) is sampled from most sections.
    assert!(a.windows(2).all(|w| w[0] < w[1]));
    let sections: std::collections::HashSet<usize> = a.iter().map(|&&i| i / 20).collect();
    assert!(sections.len() >= 6, "sections hit: {sections:?}");
    assert_ne!(
        scope(&items, Some(20), Some(8)),
        a,
        "another seed, another sample"
    );
    // A limit at or over the size takes everything, with or without a seed.
    assert_eq!(scope(&items, Some(500), Some(7)).len(), 200);
    assert_eq!(scope(&items, None, Some(7)).len(), 200);
}

/// Answers anything, and scores a reference as minus its length in bytes, remembering the
/// pairs it was asked about.
struct Scorer {
    pairs: Vec<(String, String)>,
}

impl Generate for Scorer {
    fn generate(
        &mut self,
        prompts: &[String],
        _s: &GenSettings,
    ) -> Result<Vec<Completion>, GenerateError> {
        Fixed(vec!["4"]).generate(prompts, _s)
    }

    fn reference_logprobs(
        &mut self,
        pairs: &[(String, String)],
    ) -> Result<Option<Vec<Option<RefScore>>>, GenerateError> {
        self.pairs.extend(pairs.iter().cloned());
        Ok(Some(
            pairs
                .iter()
                .map(|(_, r)| {
                    Some(RefScore {
                        logprob: -(r.len() as f64),
                        tokens: r.len(),
                    })
                })
                .collect(),
        ))
    }
}

#[test]
fn records_carry_the_reference_log_likelihood_and_round_trip() {
    let math = vec![
        MathItem {
            id: "with".into(),
            question: "2+2?".into(),
            gold: 4.0,
            solution: Some("def solution():\n    return 4".into()),
        },
        MathItem {
            id: "without".into(),
            question: "3+3?".into(),
            gold: 6.0,
            solution: None,
        },
    ];
    let mut gen = Scorer { pairs: Vec::new() };
    let mut records = Vec::new();
    let mut sink = |r: &QuestionRecord| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        records.push(r.clone());
        Ok(())
    };
    let sb = sandbox();
    run(
        &CodeMath,
        &math,
        &mut gen,
        Some(&sb),
        0,
        EvalOptions::default(),
        &[],
        &mut sink,
    )
    .unwrap();
    // Only the item with a reference is scored: its prompt, then the fenced program.
    assert_eq!(gen.pairs.len(), 1);
    let (prompt, reference) = &gen.pairs[0];
    assert_eq!(prompt, &records[0].prompt);
    assert_eq!(reference, "```python\ndef solution():\n    return 4\n```");
    assert_eq!(records[0].ref_logprob, Some(-(reference.len() as f64)));
    assert_eq!(records[0].ref_tokens, Some(reference.len()));
    assert_eq!(
        (records[1].ref_logprob, records[1].ref_tokens),
        (None, None)
    );
    // The record round-trips, and one written before the field reads it as absent.
    let json = serde_json::to_value(&records[0]).unwrap();
    let back: QuestionRecord = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, records[0]);
    let mut old = json;
    let obj = old.as_object_mut().unwrap();
    obj.remove("ref_logprob");
    obj.remove("ref_tokens");
    let back: QuestionRecord = serde_json::from_value(old).unwrap();
    assert_eq!(back.ref_logprob, None);
    // A plain prompt ending at "Answer:" gets the reference after a space (QA).
    let qa = vec![QaItem {
        id: "q".into(),
        question: "Which valve?".into(),
        context: None,
        answers: vec!["the blue valve".into(), "blue".into()],
        unanswerable: false,
    }];
    let mut gen = Scorer { pairs: Vec::new() };
    run(
        &QA,
        &qa,
        &mut gen,
        None,
        0,
        EvalOptions::default(),
        &[],
        &mut no_sink(),
    )
    .unwrap();
    assert!(gen.pairs[0].0.ends_with("Answer:"));
    assert_eq!(gen.pairs[0].1, " the blue valve");
    // A generator that cannot score leaves the records without it.
    let mut records = Vec::new();
    let mut sink = |r: &QuestionRecord| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        records.push(r.clone());
        Ok(())
    };
    run(
        &CodeMath,
        &math,
        &mut Fixed(vec!["4"]),
        Some(&sb),
        0,
        EvalOptions::default(),
        &[],
        &mut sink,
    )
    .unwrap();
    assert!(records.iter().all(|r| r.ref_logprob.is_none()));
}
