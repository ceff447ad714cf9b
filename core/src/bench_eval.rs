//! `soup bench --only eval`: evaluation throughput, code-math questions graded per second
//! with the task's real few-shot prompts (the prompt form and settings a recipe's evaluation
//! uses), measured both ways in one sitting: fixed batches with every prompt prefilled whole
//! (the path before issue 14) and the queue decoder (shared few-shot prefix prefilled once,
//! continuous batching). It also checks that both ways grade every question the same.

use crate::error::{CoreError, Result};
use crate::lora::AdapterStack;
use crate::runtime::{LoadedModel, TextGenerator};
use serde_json::{json, Value};
use soup_evals::driver::{EvalOptions, EvalRun, QuestionRecord};
use soup_evals::prompts::{Prompt, PromptStyle};
use soup_evals::sandbox::{Sandbox, SandboxConfig};
use soup_evals::synthetic::{write_synthetic_sized, SyntheticKind, SyntheticSizes};
use soup_evals::task::{EvalTask, PromptOptions};
use soup_evals::{
    Completion, GenSettings, Generate, GenerateError, OnDone, RefScore, StreamOptions,
    StreamRequest,
};
use std::time::Instant;

/// What the evaluation figure runs.
#[derive(Debug, Clone)]
pub struct EvalBenchOptions {
    /// Code-math questions per timed run.
    pub questions: usize,
    /// Timed runs per way (the median is reported).
    pub reps: usize,
    /// As `soup eval`'s defaults: rows decoded together, new tokens, demos.
    pub batch_size: usize,
    pub max_new_tokens: usize,
    pub shots: usize,
}

impl Default for EvalBenchOptions {
    fn default() -> Self {
        EvalBenchOptions {
            questions: 32,
            reps: 3,
            batch_size: 32,
            max_new_tokens: 160,
            shots: 3,
        }
    }
}

/// The two ways compared, as the records of one run each.
#[derive(Debug, Clone)]
pub struct EvalComparison {
    pub before: Vec<QuestionRecord>,
    pub after: Vec<QuestionRecord>,
}

impl EvalComparison {
    /// Ids of the questions whose records differ beyond timing (everything a grade depends
    /// on: output, extraction, verdict, scores, token counts; the reference log-likelihood
    /// within `ref_tol` nats, since a prefix computed apart rounds differently).
    pub fn differing(&self, ref_tol: f64) -> Vec<String> {
        let mut out = Vec::new();
        for a in &self.before {
            let same = self.after.iter().find(|b| b.id == a.id).is_some_and(|b| {
                let norm = |r: &QuestionRecord| QuestionRecord {
                    latency_s: 0.0,
                    sandbox_seconds: None,
                    ref_logprob: None,
                    ..r.clone()
                };
                let close = match (a.ref_logprob, b.ref_logprob) {
                    (Some(x), Some(y)) => (x - y).abs() <= ref_tol,
                    (x, y) => x.is_none() && y.is_none(),
                };
                norm(a) == norm(b) && close
            });
            if !same {
                out.push(a.id.clone());
            }
        }
        if self.after.len() != self.before.len() {
            out.push(format!(
                "({} records after, {} before)",
                self.after.len(),
                self.before.len()
            ));
        }
        out
    }
}

/// A [`TextGenerator`] that also scores references, as an evaluation run's generator does
/// (without its answer cache, which would answer every timed run after the first).
pub struct ScoringGenerator<'a>(pub TextGenerator<'a>);

impl Generate for ScoringGenerator<'_> {
    fn generate(
        &mut self,
        prompts: &[String],
        settings: &GenSettings,
    ) -> std::result::Result<Vec<Completion>, GenerateError> {
        self.0.generate(prompts, settings)
    }

    fn reference_logprobs(
        &mut self,
        pairs: &[(String, String)],
    ) -> std::result::Result<Option<Vec<Option<RefScore>>>, GenerateError> {
        crate::engine::loglik::reference_logprobs(self.0.model, self.0.stack, pairs, 8)
            .map(Some)
            .map_err(GenerateError::new)
    }

    fn generate_stream(
        &mut self,
        requests: &[StreamRequest],
        settings: &GenSettings,
        opts: &StreamOptions,
        on_done: &mut OnDone<'_>,
    ) -> Option<std::result::Result<(), GenerateError>> {
        let known = vec![None; requests.len()];
        Some(
            self.0
                .stream(requests, &known, true, settings, opts, on_done),
        )
    }
}

/// Runs `questions` of the built-in code-math target set through the evaluation driver,
/// fixed batches (`static_batches`) or the queue decoder; returns the records and seconds.
fn one_run(
    model: &LoadedModel,
    stack: &AdapterStack,
    task: EvalTask,
    data: &dyn soup_evals::task::LoadedTask,
    sandbox: &Sandbox,
    opts: &EvalBenchOptions,
    static_batches: bool,
) -> Result<(Vec<QuestionRecord>, f64)> {
    let _ = task;
    let style = if model.is_chat() {
        PromptStyle::Chat
    } else {
        PromptStyle::Plain
    };
    let render = |p: &Prompt| crate::engine::render_chat(&model.tokenizer, p);
    let mut generator = ScoringGenerator(TextGenerator {
        model,
        stack,
        on_batch: None,
    });
    let mut records = Vec::new();
    let mut sink =
        |r: &QuestionRecord| -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
            records.push(r.clone());
            Ok(())
        };
    let t0 = Instant::now();
    let mut run = EvalRun {
        generator: &mut generator,
        sandbox: Some(sandbox),
        style,
        render_chat: &render,
        prompt: PromptOptions { shots: opts.shots },
        dtype: Some(model.precision.name().to_string()),
        opts: EvalOptions {
            settings: GenSettings {
                max_new_tokens: opts.max_new_tokens,
                ..Default::default()
            },
            batch_size: opts.batch_size,
            limit: Some(opts.questions),
            static_batches,
            ..Default::default()
        },
        previous: &[],
        sink: &mut sink,
    };
    data.evaluate(&mut run)?;
    let secs = t0.elapsed().as_secs_f64();
    Ok((records, secs))
}

/// Measures both ways `opts.reps` times each (after one untimed run of each, whose records
/// are compared), emitting one figure per way and one identity line; returns the comparison.
pub fn run(
    model: &LoadedModel,
    opts: &EvalBenchOptions,
    emit: &mut dyn FnMut(Value),
) -> Result<EvalComparison> {
    let task = EvalTask::find("code-math")
        .ok_or_else(|| CoreError::Internal("the code-math task is not registered".into()))?;
    let host = crate::bench::machine();
    let dir = tempfile::tempdir().map_err(|e| CoreError::io(std::env::temp_dir(), e))?;
    let sizes = SyntheticSizes {
        target: opts.questions.max(1),
        ..Default::default()
    };
    let files = write_synthetic_sized(SyntheticKind::CodeMath, 0, dir.path(), &sizes)
        .map_err(|e| CoreError::Internal(format!("writing the code-math questions: {e}")))?;
    let path = files
        .iter()
        .find(|p| p.file_name().is_some_and(|n| n == "code_math_test.json"))
        .ok_or_else(|| CoreError::Internal("no code-math target file was written".into()))?;
    let text = std::fs::read_to_string(path).map_err(|e| CoreError::io(path, e))?;
    let data = task.load(path, &text)?;
    let sandbox = Sandbox::new(SandboxConfig {
        allow_weaker_isolation: true,
        ..Default::default()
    })?;
    let stack = AdapterStack::base();
    let mut comparison = EvalComparison {
        before: Vec::new(),
        after: Vec::new(),
    };
    for (static_batches, way) in [
        (true, "static batches"),
        (false, "prefix cache + continuous"),
    ] {
        // Warm-up, whose records are the ones compared.
        let (records, _) = one_run(
            model,
            &stack,
            task,
            data.as_ref(),
            &sandbox,
            opts,
            static_batches,
        )?;
        let mut secs = Vec::new();
        for _ in 0..opts.reps.max(1) {
            secs.push(
                one_run(
                    model,
                    &stack,
                    task,
                    data.as_ref(),
                    &sandbox,
                    opts,
                    static_batches,
                )?
                .1,
            );
        }
        secs.sort_by(f64::total_cmp);
        let median = secs[secs.len() / 2];
        let n = records.len();
        let prompt_tokens: usize = records.iter().map(|r| r.prompt_tokens).sum();
        let output_tokens: usize = records.iter().map(|r| r.output_tokens).sum();
        let figure = json!({
            "figure": "eval_code_math",
            "way": way,
            "questions": n,
            "questions_per_s": n as f64 / median,
            "seconds": secs,
            "mean_prompt_tokens": prompt_tokens as f64 / n.max(1) as f64,
            "mean_output_tokens": output_tokens as f64 / n.max(1) as f64,
            "batch_size": opts.batch_size,
            "max_new_tokens": opts.max_new_tokens,
            "shots": opts.shots,
            "prompt_style": records.first().and_then(|r| r.prompt_style),
        });
        emit(crate::bench::on_machine(figure, &host));
        if static_batches {
            comparison.before = records;
        } else {
            comparison.after = records;
        }
    }
    let differing = comparison.differing(1e-3);
    let ref_diff = comparison
        .before
        .iter()
        .filter_map(|a| {
            let b = comparison.after.iter().find(|b| b.id == a.id)?;
            Some((a.ref_logprob? - b.ref_logprob?).abs())
        })
        .fold(0.0f64, f64::max);
    emit(json!({
        "figure": "eval_code_math_identity",
        "questions": comparison.before.len(),
        "differing_records": differing,
        "max_ref_logprob_diff": ref_diff,
    }));
    Ok(comparison)
}
