//! The evaluation driver, independent of the model: items in, prompts built, completions asked
//! of a [`Generate`] in batches, each answer graded, one [`QuestionRecord`] handed to a sink as
//! soon as its question is finished, and scores aggregated.
//!
//! The sink is where `soup-core` writes records to the store, so a killed run keeps what it
//! finished; on resume the core passes those records back as `previous`, and the driver skips
//! their ids and still counts them in the summary. Every record carries the prompt, raw output
//! and extraction behind its score (lm-evaluation-harness style), so any number in a report can
//! be traced to the answers behind it.

use crate::codemath::{self, Verdict};
use crate::datasets::{CodeExercise, MathItem, QaItem};
use crate::generate::{Completion, GenSettings, Generate, GenerateError};
use crate::manualqa;
use crate::mathcot;
use crate::sandbox::{Sandbox, SandboxError};
use crate::stats::{bootstrap_ci95, ConfidenceInterval};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Which grader a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Program of thought, run in the sandbox; headline score: accuracy.
    CodeMath,
    /// Chain of thought with `#### N`; headline: strict-match accuracy.
    MathCot,
    /// Short-answer QA; headline: token F1.
    Qa,
    /// Programs that must pass their tests, run in the sandbox (the code skill's own test);
    /// headline: accuracy.
    Code,
}

impl TaskKind {
    /// The score key reported as the run's main number.
    pub fn headline(self) -> &'static str {
        match self {
            TaskKind::CodeMath | TaskKind::Code => "accuracy",
            TaskKind::MathCot => "strict_match",
            TaskKind::Qa => "f1",
        }
    }
}

/// Everything about one finished question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuestionRecord {
    pub id: String,
    pub task: TaskKind,
    /// The exact prompt string the generator received.
    pub prompt: String,
    /// The newly generated text only.
    pub raw_output: String,
    /// The program (code-math) or the answer string (QA, CoT) that was graded.
    pub extracted: Option<String>,
    /// The gold, as text (number or answers joined by " | ").
    pub gold: String,
    /// The prediction as graded (solution()'s number, the extracted number, the cleaned answer).
    pub pred: Option<String>,
    pub verdict: Option<Verdict>,
    pub correct: bool,
    /// Named scores in [0, 1]: accuracy; strict_match, flexible_match; em, f1, contains.
    pub scores: BTreeMap<String, f64>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub sandbox_message: Option<String>,
    pub sandbox_seconds: Option<f64>,
    pub prompt_tokens: usize,
    pub output_tokens: usize,
    /// Generation time of the batch divided by its size.
    pub latency_s: f64,
}

/// Driver settings.
#[derive(Debug, Clone, Default)]
pub struct EvalOptions {
    pub settings: GenSettings,
    /// Prompts per `generate` call; 0 means 8.
    pub batch_size: usize,
    /// Evaluate only the first `limit` items of the dataset (finished ones included, so a
    /// resumed run covers the same questions).
    pub limit: Option<usize>,
    /// Checked between batches; set it to stop early (finished questions are kept).
    pub cancel: Option<std::sync::Arc<AtomicBool>>,
}

/// Aggregate of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSummary {
    pub task: TaskKind,
    pub n: usize,
    /// Mean of each score over all records.
    pub scores: BTreeMap<String, f64>,
    /// 95 % bootstrap interval of the headline score (seed 0).
    pub headline: String,
    pub headline_ci: Option<ConfidenceInterval>,
    /// Code-math verdict counts.
    pub verdicts: BTreeMap<String, usize>,
    /// Questions skipped because a previous record existed.
    pub resumed: usize,
    pub cancelled: bool,
    pub prompt_tokens: usize,
    pub output_tokens: usize,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Generate(#[from] GenerateError),
    #[error("the generator returned {got} completions for {want} prompts; it must return one per prompt, in order")]
    CountMismatch { got: usize, want: usize },
    #[error("question {id}: the completion starts with its prompt; Completion::text must hold only the newly generated tokens (decoding the prompt too makes every answer grade the few-shot demos)")]
    PromptEchoed { id: String },
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("could not save the record of question {id}: {source}")]
    Sink {
        id: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Receives each finished question.
pub type Sink<'a> =
    dyn FnMut(&QuestionRecord) -> Result<(), Box<dyn std::error::Error + Send + Sync>> + 'a;

/// Pending work for one batch, independent of the item type.
struct Pending {
    id: String,
    prompt: String,
    gold_text: String,
}

/// Grades one batch: (items, their pending prompts, completions, per-question latency).
type GradeBatch<'a, T> = dyn FnMut(&[&T], &[Pending], Vec<Completion>, f64) -> Result<Vec<QuestionRecord>, EvalError>
    + 'a;

/// Shared batching loop: picks unfinished items, generates, hands (item index, completion,
/// latency) to `grade`, which returns the records of the batch.
#[allow(clippy::too_many_arguments)]
fn drive<T>(
    task: TaskKind,
    items: &[T],
    id_of: &dyn Fn(&T) -> &str,
    prompt_of: &dyn Fn(&T) -> String,
    gold_of: &dyn Fn(&T) -> String,
    generator: &mut dyn Generate,
    opts: &EvalOptions,
    previous: &[QuestionRecord],
    sink: &mut Sink<'_>,
    grade: &mut GradeBatch<'_, T>,
) -> Result<EvalSummary, EvalError> {
    let done: HashSet<&str> = previous.iter().map(|r| r.id.as_str()).collect();
    let scope = &items[..opts.limit.unwrap_or(items.len()).min(items.len())];
    let todo: Vec<&T> = scope.iter().filter(|i| !done.contains(id_of(i))).collect();
    let resumed = scope.len() - todo.len();
    let batch = if opts.batch_size == 0 {
        8
    } else {
        opts.batch_size
    };
    let mut records: Vec<QuestionRecord> = previous
        .iter()
        .filter(|r| scope.iter().any(|i| id_of(i) == r.id))
        .cloned()
        .collect();
    let mut cancelled = false;
    for chunk in todo.chunks(batch) {
        if opts
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            cancelled = true;
            break;
        }
        let pending: Vec<Pending> = chunk
            .iter()
            .map(|i| Pending {
                id: id_of(i).to_string(),
                prompt: prompt_of(i),
                gold_text: gold_of(i),
            })
            .collect();
        let prompts: Vec<String> = pending.iter().map(|p| p.prompt.clone()).collect();
        let t0 = Instant::now();
        let completions = generator.generate(&prompts, &opts.settings)?;
        let latency = t0.elapsed().as_secs_f64() / chunk.len() as f64;
        if completions.len() != prompts.len() {
            return Err(EvalError::CountMismatch {
                got: completions.len(),
                want: prompts.len(),
            });
        }
        for (p, c) in pending.iter().zip(&completions) {
            if p.prompt.len() >= 16 && c.text.starts_with(&p.prompt) {
                return Err(EvalError::PromptEchoed { id: p.id.clone() });
            }
        }
        for rec in grade(chunk, &pending, completions, latency)? {
            sink(&rec).map_err(|source| EvalError::Sink {
                id: rec.id.clone(),
                source,
            })?;
            records.push(rec);
        }
    }
    let mut s = summarize(task, &records);
    s.resumed = resumed;
    s.cancelled = cancelled;
    Ok(s)
}

fn base_record(task: TaskKind, p: &Pending, c: &Completion, latency: f64) -> QuestionRecord {
    QuestionRecord {
        id: p.id.clone(),
        task,
        prompt: p.prompt.clone(),
        raw_output: c.text.clone(),
        extracted: None,
        gold: p.gold_text.clone(),
        pred: None,
        verdict: None,
        correct: false,
        scores: BTreeMap::new(),
        stdout: None,
        stderr: None,
        exit_code: None,
        signal: None,
        sandbox_message: None,
        sandbox_seconds: None,
        prompt_tokens: c.prompt_tokens,
        output_tokens: c.output_tokens,
        latency_s: latency,
    }
}

/// Code-math: programs extracted and run in `sandbox` (a batch in parallel), accuracy by PAL's
/// tolerance. `prompt` builds the string for an item (e.g. `prompts::pot_prompt` rendered plain
/// or through the model's chat template).
#[allow(clippy::too_many_arguments)]
pub fn run_code_math(
    items: &[MathItem],
    prompt: &dyn Fn(&MathItem) -> String,
    generator: &mut dyn Generate,
    sandbox: &Sandbox,
    opts: &EvalOptions,
    previous: &[QuestionRecord],
    sink: &mut Sink<'_>,
) -> Result<EvalSummary, EvalError> {
    let mut grade = |chunk: &[&MathItem],
                     pending: &[Pending],
                     completions: Vec<Completion>,
                     latency: f64|
     -> Result<Vec<QuestionRecord>, EvalError> {
        let pairs: Vec<(String, f64)> = chunk
            .iter()
            .zip(&completions)
            .map(|(i, c)| (c.text.clone(), i.gold))
            .collect();
        let grades = codemath::grade_many(sandbox, &pairs)?;
        Ok(program_records(
            TaskKind::CodeMath,
            pending,
            &completions,
            grades,
            latency,
        ))
    };
    drive(
        TaskKind::CodeMath,
        items,
        &|i: &MathItem| i.id.as_str(),
        prompt,
        &|i: &MathItem| mathcot::format_gold(i.gold),
        generator,
        opts,
        previous,
        sink,
        &mut grade,
    )
}

/// The code skill's own test: each answer's program must pass its exercise's tests in the
/// sandbox ([`codemath::grade_tests`]).
pub fn run_code_tests(
    items: &[CodeExercise],
    prompt: &dyn Fn(&CodeExercise) -> String,
    generator: &mut dyn Generate,
    sandbox: &Sandbox,
    opts: &EvalOptions,
    previous: &[QuestionRecord],
    sink: &mut Sink<'_>,
) -> Result<EvalSummary, EvalError> {
    let mut grade = |chunk: &[&CodeExercise],
                     pending: &[Pending],
                     completions: Vec<Completion>,
                     latency: f64|
     -> Result<Vec<QuestionRecord>, EvalError> {
        let pairs: Vec<(String, String)> = chunk
            .iter()
            .zip(&completions)
            .map(|(i, c)| (c.text.clone(), i.test.clone()))
            .collect();
        let grades = codemath::grade_tests(sandbox, &pairs)?;
        Ok(program_records(
            TaskKind::Code,
            pending,
            &completions,
            grades,
            latency,
        ))
    };
    drive(
        TaskKind::Code,
        items,
        &|i: &CodeExercise| i.id.as_str(),
        prompt,
        &|i: &CodeExercise| i.test.clone(),
        generator,
        opts,
        previous,
        sink,
        &mut grade,
    )
}

/// The records of answers graded by running their programs.
fn program_records(
    task: TaskKind,
    pending: &[Pending],
    completions: &[Completion],
    grades: Vec<codemath::CodeMathGrade>,
    latency: f64,
) -> Vec<QuestionRecord> {
    pending
        .iter()
        .zip(completions)
        .zip(grades)
        .map(|((p, c), g)| {
            let mut r = base_record(task, p, c, latency);
            r.extracted = g.program;
            r.pred = g.pred.map(|x| x.to_string());
            r.verdict = Some(g.verdict);
            r.correct = g.correct;
            r.scores
                .insert("accuracy".into(), f64::from(u8::from(g.correct)));
            if let Some(run) = g.run {
                r.stdout = Some(run.stdout);
                r.stderr = Some(run.stderr);
                r.exit_code = run.exit_code;
                r.signal = run.signal;
                r.sandbox_message = Some(run.message).filter(|m| !m.is_empty());
                r.sandbox_seconds = Some(run.seconds);
            }
            r
        })
        .collect()
}

/// Math skill (chain of thought): lm-eval-harness gsm8k strict-match and flexible-extract.
pub fn run_math_cot(
    items: &[MathItem],
    prompt: &dyn Fn(&MathItem) -> String,
    generator: &mut dyn Generate,
    opts: &EvalOptions,
    previous: &[QuestionRecord],
    sink: &mut Sink<'_>,
) -> Result<EvalSummary, EvalError> {
    let mut grade = |chunk: &[&MathItem],
                     pending: &[Pending],
                     completions: Vec<Completion>,
                     latency: f64|
     -> Result<Vec<QuestionRecord>, EvalError> {
        Ok(chunk
            .iter()
            .zip(pending)
            .zip(&completions)
            .map(|((item, p), c)| {
                let g = mathcot::grade_cot(&c.text, item.gold);
                let mut r = base_record(TaskKind::MathCot, p, c, latency);
                r.extracted = g.strict_pred.clone().or(g.flexible_pred.clone());
                r.pred = r.extracted.clone();
                r.correct = g.strict_match;
                r.scores
                    .insert("strict_match".into(), f64::from(u8::from(g.strict_match)));
                r.scores.insert(
                    "flexible_match".into(),
                    f64::from(u8::from(g.flexible_match)),
                );
                r
            })
            .collect())
    };
    drive(
        TaskKind::MathCot,
        items,
        &|i: &MathItem| i.id.as_str(),
        prompt,
        &|i: &MathItem| mathcot::format_gold(i.gold),
        generator,
        opts,
        previous,
        sink,
        &mut grade,
    )
}

/// Manual-QA / reading comprehension: EM, token F1 (headline) and contains.
pub fn run_qa(
    items: &[QaItem],
    prompt: &dyn Fn(&QaItem) -> String,
    generator: &mut dyn Generate,
    opts: &EvalOptions,
    previous: &[QuestionRecord],
    sink: &mut Sink<'_>,
) -> Result<EvalSummary, EvalError> {
    let mut grade = |chunk: &[&QaItem],
                     pending: &[Pending],
                     completions: Vec<Completion>,
                     latency: f64|
     -> Result<Vec<QuestionRecord>, EvalError> {
        Ok(chunk
            .iter()
            .zip(pending)
            .zip(&completions)
            .map(|((item, p), c)| {
                let g = manualqa::grade_qa(&c.text, &item.answers, item.unanswerable);
                let mut r = base_record(TaskKind::Qa, p, c, latency);
                r.extracted = Some(g.pred.clone());
                r.pred = Some(g.pred.clone());
                r.correct = g.scores.em == 1.0;
                r.scores.insert("em".into(), g.scores.em);
                r.scores.insert("f1".into(), g.scores.f1);
                r.scores.insert("contains".into(), g.scores.contains);
                r
            })
            .collect())
    };
    drive(
        TaskKind::Qa,
        items,
        &|i: &QaItem| i.id.as_str(),
        prompt,
        &|i: &QaItem| i.answers.join(" | "),
        generator,
        opts,
        previous,
        sink,
        &mut grade,
    )
}

/// Aggregate records (e.g. a finished run's records read back from the store).
pub fn summarize(task: TaskKind, records: &[QuestionRecord]) -> EvalSummary {
    let n = records.len();
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    let mut verdicts: BTreeMap<String, usize> = BTreeMap::new();
    for r in records {
        for (k, v) in &r.scores {
            *sums.entry(k.clone()).or_default() += v;
        }
        if let Some(v) = r.verdict {
            *verdicts.entry(v.as_str().to_string()).or_default() += 1;
        }
    }
    let scores = sums
        .into_iter()
        .map(|(k, v)| (k, v / n.max(1) as f64))
        .collect();
    let headline = task.headline().to_string();
    let per_q: Vec<f64> = records
        .iter()
        .map(|r| r.scores.get(&headline).copied().unwrap_or(0.0))
        .collect();
    EvalSummary {
        task,
        n,
        scores,
        headline_ci: (n > 0).then(|| bootstrap_ci95(&per_q, 0)),
        headline,
        verdicts,
        resumed: 0,
        cancelled: false,
        prompt_tokens: records.iter().map(|r| r.prompt_tokens).sum(),
        output_tokens: records.iter().map(|r| r.output_tokens).sum(),
    }
}

#[cfg(test)]
mod tests;
