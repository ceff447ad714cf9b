use super::*;
use crate::prompts::{pot_prompt, qa_prompt, POT_DEMOS};
use crate::sandbox::SandboxConfig;

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
    let s = run_code_math(
        &items(),
        &|i| pot_prompt(&i.question, 3).text,
        &mut gen,
        &sb,
        &opts,
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
    let err = run_code_math(
        &items(),
        &|i| pot_prompt(&i.question, 3).text,
        &mut gen,
        &sb,
        &EvalOptions::default(),
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
    let err = run_code_math(
        &items(),
        &|i| pot_prompt(&i.question, 1).text,
        &mut gen,
        &sb,
        &opts,
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
    let s = run_code_math(
        &items(),
        &|i| pot_prompt(&i.question, 1).text,
        &mut gen2,
        &sb,
        &opts,
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
    let s = run_qa(
        &qa,
        &|i| qa_prompt(&i.question, i.context.as_deref()).text,
        &mut gen,
        &EvalOptions::default(),
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
    let s = run_math_cot(
        &math,
        &|i| crate::prompts::cot_prompt(&i.question, 2).text,
        &mut gen,
        &EvalOptions::default(),
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
    let e = run_math_cot(
        &items(),
        &|i| i.question.clone(),
        &mut Short,
        &EvalOptions::default(),
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
    let s = run_math_cot(
        &items(),
        &|i| i.question.clone(),
        &mut gen,
        &opts,
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
