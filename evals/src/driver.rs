//! The evaluation driver, independent of the model: a task's items in, prompts built and
//! rendered, completions asked of a [`Generate`] in batches, each answer graded by the task,
//! one [`QuestionRecord`] handed to a sink as soon as its question is finished, and scores
//! aggregated.
//!
//! A generator that decodes a queue ([`Generate::generate_stream`]) gets every unfinished
//! question at once: it computes the shared few-shot prefix once and gives a finished
//! question's slot to the next one, and each question is graded and recorded the moment it is
//! finished. Other generators (remote, fakes), and runs with
//! [`EvalOptions::static_batches`], get fixed batches; the records are the same either way.
//!
//! The sink is where `soup-core` writes records to the store, so a killed run keeps what it
//! finished; on resume the core passes those records back as `previous`, and the driver skips
//! their ids and still counts them in the summary. Every record carries the prompt, raw output
//! and extraction behind its score (lm-evaluation-harness style), so any number in a report can
//! be traced to the answers behind it. The record is the one per-question type from grading to
//! the store and back: the store keeps it whole.

use crate::codemath::Verdict;
use crate::generate::{
    Completion, GenSettings, Generate, GenerateError, RefScore, StreamOptions, StreamRequest,
};
use crate::prompts::{Prompt, PromptStyle};
use crate::sandbox::{IsolationLayers, Sandbox, SandboxError};
use crate::stats::{score_interval95, ConfidenceInterval};
use crate::task::{Grade, PromptOptions, Task, TaskInfo, TaskItem};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Everything about one finished question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuestionRecord {
    pub id: String,
    /// The task's name (`code-math`, `manual-qa`, ...).
    #[serde(default)]
    pub task: String,
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
    /// The isolation the program ran under (sandbox tasks, when a program ran).
    #[serde(default)]
    pub isolation: Option<IsolationLayers>,
    pub prompt_tokens: usize,
    pub output_tokens: usize,
    /// Generation time per question: the batch's time divided by its size, or with a queue
    /// decoder the time since the previous question was finished (either way the run's
    /// generation time is their sum).
    pub latency_s: f64,
    /// The answer came from the generation cache, not from the model.
    #[serde(default)]
    pub cached: bool,
    /// The prompt form the model actually saw (None: recorded before it was kept).
    #[serde(default)]
    pub prompt_style: Option<PromptStyle>,
    /// The dtype the model ran in (`f32`, `bf16`, `f16`; None: not recorded).
    #[serde(default)]
    pub dtype: Option<String>,
    /// Teacher-forced log-likelihood (nats) of the task's reference answer after this prompt,
    /// with the evaluated weights; None: the task has no reference for the item, the
    /// generator cannot score, or the record predates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_logprob: Option<f64>,
    /// Tokens of the reference scored in `ref_logprob`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_tokens: Option<usize>,
}

impl QuestionRecord {
    /// The verdict as the store indexes it: the sandbox's verdict, else correct/wrong.
    pub fn verdict_label(&self) -> String {
        match self.verdict {
            Some(v) => v.as_str().to_string(),
            None if self.correct => "correct".into(),
            None => "wrong".into(),
        }
    }
}

/// Driver settings.
#[derive(Debug, Clone, Default)]
pub struct EvalOptions {
    /// Generation settings; their stop strings are replaced per batch by the task's own
    /// (plain form) or none (chat form).
    pub settings: GenSettings,
    /// Prompts per `generate` call; 0 means 8.
    pub batch_size: usize,
    /// Evaluate only `limit` items of the dataset (finished ones included, so a resumed run
    /// covers the same questions): the first ones, or a seeded sample (`sample_seed`).
    pub limit: Option<usize>,
    /// With `limit`, draw the evaluated items at random with this seed (kept in dataset order)
    /// instead of taking the first ones: a data file grouped by section would otherwise be
    /// judged on its first sections only. The same seed gives every method the same questions.
    pub sample_seed: Option<u64>,
    /// Checked between batches (after each question with a queue decoder); set it to stop
    /// early (finished questions are kept).
    pub cancel: Option<std::sync::Arc<AtomicBool>>,
    /// Hand the generator fixed batches even when it can decode a queue: no prefix cache, no
    /// continuous batching. The path before both existed, kept to measure what they gain
    /// (`soup bench --only eval`) and to check that they change no record.
    pub static_batches: bool,
}

/// Aggregate of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSummary {
    /// The task's name.
    pub task: String,
    pub n: usize,
    /// Mean of each score over all records.
    pub scores: BTreeMap<String, f64>,
    /// 95 % interval of the headline score: Wilson's for right/wrong scores, else the
    /// bootstrap (seed 0).
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

/// How one evaluation runs: the model side, the prompt form, what each record notes of the
/// run, and where records go.
pub struct EvalRun<'a, 's> {
    pub generator: &'a mut dyn Generate,
    /// Given to tasks whose info says they need one.
    pub sandbox: Option<&'a Sandbox>,
    /// The prompt form the model sees; each form has its own stop strings (chat answers also
    /// end at the model's end-of-turn token).
    pub style: PromptStyle,
    /// Turns a prompt's chat turns into the model's chat-template text (used in chat style);
    /// a template that fails ends the run with its error rather than silently switching form.
    pub render_chat: &'a dyn Fn(&Prompt) -> Result<String, GenerateError>,
    pub prompt: PromptOptions,
    /// Recorded with every question.
    pub dtype: Option<String>,
    pub opts: EvalOptions,
    /// Records already stored (resume): their questions are skipped.
    pub previous: &'a [QuestionRecord],
    pub sink: &'a mut Sink<'s>,
}

impl EvalRun<'_, '_> {
    /// The string the model receives for `p`, and the stop strings that go with it.
    fn render(&self, p: Prompt) -> Result<(String, Vec<String>), GenerateError> {
        Ok(match self.style {
            PromptStyle::Plain => (p.text, p.stop),
            PromptStyle::Chat => ((self.render_chat)(&p)?, p.chat_stop),
        })
    }
}

/// The items a run covers: all, the first `limit`, or `limit` drawn with `sample_seed`
/// (in dataset order, so records and reports read top to bottom as the file does).
pub fn scope<I>(items: &[I], limit: Option<usize>, sample_seed: Option<u64>) -> Vec<&I> {
    let n = limit.unwrap_or(items.len()).min(items.len());
    match sample_seed {
        Some(seed) if n < items.len() => {
            use rand::SeedableRng;
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut picked = rand::seq::index::sample(&mut rng, items.len(), n).into_vec();
            picked.sort_unstable();
            picked.into_iter().map(|i| &items[i]).collect()
        }
        _ => items[..n].iter().collect(),
    }
}

/// Evaluates `items` of `task`: picks the unfinished ones, generates in batches, grades each
/// batch with the task and hands every record to the sink as soon as it is graded.
pub fn evaluate<T: Task>(
    task: &T,
    items: &[T::Item],
    run: &mut EvalRun<'_, '_>,
) -> Result<EvalSummary, EvalError> {
    let info = task.info();
    let done: HashSet<&str> = run.previous.iter().map(|r| r.id.as_str()).collect();
    let scope = scope(items, run.opts.limit, run.opts.sample_seed);
    let in_scope: HashSet<&str> = scope.iter().map(|i| i.id()).collect();
    let todo: Vec<&T::Item> = scope
        .iter()
        .copied()
        .filter(|i| !done.contains(i.id()))
        .collect();
    let resumed = scope.len() - todo.len();
    let batch = if run.opts.batch_size == 0 {
        8
    } else {
        run.opts.batch_size
    };
    let mut records: Vec<QuestionRecord> = run
        .previous
        .iter()
        .filter(|r| in_scope.contains(r.id.as_str()))
        .cloned()
        .collect();
    let isolation = match (info.needs_sandbox, run.sandbox) {
        (true, Some(s)) => Some(s.layers().clone()),
        _ => None,
    };
    let cancel_set = |run: &EvalRun<'_, '_>| {
        run.opts
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    };
    if !todo.is_empty() && !run.opts.static_batches && !cancel_set(run) {
        if let Some((fresh, cancelled)) = evaluate_streamed(task, &todo, batch, &isolation, run)? {
            records.extend(fresh);
            let mut s = summarize(info, &records);
            s.resumed = resumed;
            s.cancelled = cancelled;
            return Ok(s);
        }
    }
    let mut cancelled = false;
    for chunk in todo.chunks(batch) {
        if run
            .opts
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            cancelled = true;
            break;
        }
        let mut prompts = Vec::with_capacity(chunk.len());
        let mut stop: Vec<String> = Vec::new();
        for item in chunk {
            let (text, item_stop) = run.render(task.prompt(item, &run.prompt))?;
            for s in item_stop {
                if !stop.contains(&s) {
                    stop.push(s);
                }
            }
            prompts.push(text);
        }
        let settings = GenSettings {
            stop,
            ..run.opts.settings.clone()
        };
        let t0 = Instant::now();
        let completions = run.generator.generate(&prompts, &settings)?;
        let latency = t0.elapsed().as_secs_f64() / chunk.len() as f64;
        if completions.len() != prompts.len() {
            return Err(EvalError::CountMismatch {
                got: completions.len(),
                want: prompts.len(),
            });
        }
        for ((item, p), c) in chunk.iter().zip(&prompts).zip(&completions) {
            if p.len() >= 16 && c.text.starts_with(p.as_str()) {
                return Err(EvalError::PromptEchoed {
                    id: item.id().to_string(),
                });
            }
        }
        let outputs: Vec<&str> = completions.iter().map(|c| c.text.as_str()).collect();
        let sandbox = if info.needs_sandbox {
            run.sandbox
        } else {
            None
        };
        let grades = task.grade(chunk, &outputs, sandbox)?;
        let ref_scores = reference_scores(task, chunk, &prompts, run)?;
        if grades.len() != chunk.len() {
            return Err(EvalError::Sandbox(SandboxError::Internal(format!(
                "task {} graded {} of {} answers",
                info.name,
                grades.len(),
                chunk.len()
            ))));
        }
        for ((((item, prompt), c), g), ref_score) in chunk
            .iter()
            .zip(prompts)
            .zip(&completions)
            .zip(grades)
            .zip(ref_scores)
        {
            let rec = make_record(
                task, item, prompt, c, g, ref_score, latency, &isolation, run.style, &run.dtype,
            );
            (run.sink)(&rec).map_err(|source| EvalError::Sink {
                id: rec.id.clone(),
                source,
            })?;
            records.push(rec);
        }
    }
    let mut s = summarize(info, &records);
    s.resumed = resumed;
    s.cancelled = cancelled;
    Ok(s)
}

/// The record of one graded question.
#[allow(clippy::too_many_arguments)]
fn make_record<T: Task>(
    task: &T,
    item: &T::Item,
    prompt: String,
    c: &Completion,
    g: Grade,
    ref_score: Option<RefScore>,
    latency: f64,
    isolation: &Option<IsolationLayers>,
    style: PromptStyle,
    dtype: &Option<String>,
) -> QuestionRecord {
    let program_ran = g.run.is_some();
    let outcome = g.run;
    QuestionRecord {
        id: item.id().to_string(),
        task: task.info().name.to_string(),
        prompt,
        raw_output: c.text.clone(),
        extracted: g.extracted,
        gold: item.gold_text(),
        pred: g.pred,
        verdict: g.verdict,
        correct: g.correct,
        scores: g.scores,
        stdout: outcome.as_ref().map(|o| o.stdout.clone()),
        stderr: outcome.as_ref().map(|o| o.stderr.clone()),
        exit_code: outcome.as_ref().and_then(|o| o.exit_code),
        signal: outcome.as_ref().and_then(|o| o.signal),
        sandbox_message: outcome
            .as_ref()
            .map(|o| o.message.clone())
            .filter(|m| !m.is_empty()),
        sandbox_seconds: outcome.as_ref().map(|o| o.seconds),
        isolation: isolation.clone().filter(|_| program_ran),
        prompt_tokens: c.prompt_tokens,
        output_tokens: c.output_tokens,
        latency_s: latency,
        cached: c.cached,
        prompt_style: Some(style),
        dtype: dtype.clone(),
        ref_logprob: ref_score.map(|s| s.logprob),
        ref_tokens: ref_score.map(|s| s.tokens),
    }
}

/// The reference answer of `item` joined to its rendered prompt as it should be read: the
/// plain form's prompts end at "Answer:" without a space, so it is joined with one there.
fn joined_reference<T: Task>(
    task: &T,
    item: &T::Item,
    prompt: &str,
    style: PromptStyle,
) -> Option<String> {
    let reference = task.reference(item).filter(|r| !r.trim().is_empty())?;
    Some(
        if style == PromptStyle::Plain
            && !prompt.ends_with(char::is_whitespace)
            && !reference.starts_with(char::is_whitespace)
        {
            format!(" {reference}")
        } else {
            reference
        },
    )
}

/// Hands every unfinished question to the generator's queue decoder and grades and records
/// each one as soon as it is finished. None when the generator has no queue decoder; else
/// the new records and whether the run was cancelled.
fn evaluate_streamed<T: Task>(
    task: &T,
    todo: &[&T::Item],
    batch: usize,
    isolation: &Option<IsolationLayers>,
    run: &mut EvalRun<'_, '_>,
) -> Result<Option<(Vec<QuestionRecord>, bool)>, EvalError> {
    let info = task.info();
    let mut requests = Vec::with_capacity(todo.len());
    for item in todo {
        let (prompt, stop) = run.render(task.prompt(item, &run.prompt))?;
        let reference = joined_reference(task, item, &prompt, run.style);
        requests.push(StreamRequest {
            prompt,
            stop,
            reference,
        });
    }
    let opts = StreamOptions {
        batch_size: batch,
        prefix_cache: true,
        continuous: true,
    };
    let settings = run.opts.settings.clone();
    let sandbox = if info.needs_sandbox {
        run.sandbox
    } else {
        None
    };
    let cancel = run.opts.cancel.clone();
    let mut fresh: Vec<QuestionRecord> = Vec::new();
    let mut failed: Option<EvalError> = None;
    let mut last = Instant::now();
    let mut cancelled = false;
    // The generator is borrowed apart from the rest of the run, which the callback reads.
    let EvalRun {
        generator,
        sink,
        style,
        dtype,
        ..
    } = run;
    let (style, dtype) = (*style, dtype.clone());
    let outcome = {
        let mut on_done =
            |i: usize, c: Completion, ref_score: Option<RefScore>| -> Result<bool, GenerateError> {
                let result = (|| -> Result<(), EvalError> {
                    let (Some(item), Some(req)) = (todo.get(i), requests.get(i)) else {
                        return Err(EvalError::CountMismatch {
                            got: i + 1,
                            want: todo.len(),
                        });
                    };
                    if req.prompt.len() >= 16 && c.text.starts_with(req.prompt.as_str()) {
                        return Err(EvalError::PromptEchoed {
                            id: item.id().to_string(),
                        });
                    }
                    let mut grades = task.grade(&[*item], &[c.text.as_str()], sandbox)?;
                    let Some(g) = grades.pop().filter(|_| grades.is_empty()) else {
                        return Err(EvalError::Sandbox(SandboxError::Internal(format!(
                            "task {} graded {} answers for one",
                            info.name,
                            grades.len() + 1
                        ))));
                    };
                    let now = Instant::now();
                    let latency = (now - last).as_secs_f64();
                    last = now;
                    let rec = make_record(
                        task,
                        item,
                        req.prompt.clone(),
                        &c,
                        g,
                        ref_score,
                        latency,
                        isolation,
                        style,
                        &dtype,
                    );
                    (sink)(&rec).map_err(|source| EvalError::Sink {
                        id: rec.id.clone(),
                        source,
                    })?;
                    fresh.push(rec);
                    Ok(())
                })();
                match result {
                    Ok(()) => {
                        if cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
                            cancelled = true;
                            return Ok(false);
                        }
                        Ok(true)
                    }
                    Err(e) => {
                        failed = Some(e);
                        Ok(false)
                    }
                }
            };
        generator.generate_stream(&requests, &settings, &opts, &mut on_done)
    };
    match outcome {
        None => Ok(None),
        Some(r) => {
            if let Some(e) = failed {
                return Err(e);
            }
            r?;
            Ok(Some((fresh, cancelled)))
        }
    }
}

/// The log-likelihood of each item's reference answer after its rendered prompt, one entry
/// per item (`None`: no reference, or the generator cannot score). The plain form's prompts
/// end at "Answer:" without a space, so the reference is joined with one there.
fn reference_scores<T: Task>(
    task: &T,
    chunk: &[&T::Item],
    prompts: &[String],
    run: &mut EvalRun<'_, '_>,
) -> Result<Vec<Option<RefScore>>, EvalError> {
    let mut out = vec![None; chunk.len()];
    let mut which = Vec::new();
    let mut pairs = Vec::new();
    for (i, (item, prompt)) in chunk.iter().zip(prompts).enumerate() {
        let Some(joined) = joined_reference(task, item, prompt, run.style) else {
            continue;
        };
        which.push(i);
        pairs.push((prompt.clone(), joined));
    }
    if pairs.is_empty() {
        return Ok(out);
    }
    let Some(scores) = run.generator.reference_logprobs(&pairs)? else {
        return Ok(out);
    };
    if scores.len() != pairs.len() {
        return Err(EvalError::CountMismatch {
            got: scores.len(),
            want: pairs.len(),
        });
    }
    for (i, s) in which.into_iter().zip(scores) {
        out[i] = s;
    }
    Ok(out)
}

/// Aggregate records (e.g. a finished run's records read back from the store).
pub fn summarize(task: &TaskInfo, records: &[QuestionRecord]) -> EvalSummary {
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
    let headline = task.headline.to_string();
    let per_q: Vec<f64> = records
        .iter()
        .map(|r| r.scores.get(&headline).copied().unwrap_or(0.0))
        .collect();
    EvalSummary {
        task: task.name.to_string(),
        n,
        scores,
        headline_ci: (n > 0).then(|| score_interval95(&per_q, 0)),
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
