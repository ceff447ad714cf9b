//! The queue decoder against fixed batches on the tiny fixture model: the same greedy tokens
//! with and without the prefix cache and continuous batching, the same records from the
//! evaluation driver (stop strings in both prompt forms, rows of different lengths), and a
//! cancelled streamed run that resumes to the same records.

use super::*;
use crate::bench_eval::ScoringGenerator;
use crate::device::Precision;
use crate::lora::peft::load_peft;
use crate::runtime::{LoadedModel, TextGenerator};
use crate::test_support::max_abs_diff;
use candle_core::Device;
use soup_evals::datasets::MathItem;
use soup_evals::driver::{evaluate, EvalOptions, EvalRun, QuestionRecord};
use soup_evals::prompts::{Prompt, PromptStyle};
use soup_evals::sandbox::Sandbox;
use soup_evals::task::{Grade, PromptOptions, Task, TaskInfo};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/reference")
}

fn tiny() -> LoadedModel {
    crate::runtime::load_model_at(
        "tiny",
        &fixtures().join("tiny-llama"),
        &Device::Cpu,
        Precision::F32,
    )
    .unwrap()
}

/// The fixture adapter every decoding test runs under (so LoRA deltas are on the path).
fn adapter_b() -> AdapterStack {
    AdapterStack::single(load_peft(&fixtures().join("adapter-b"), &Device::Cpu).unwrap())
}

/// A shared prefix of 40 tokens, and seven prompts that start with it, the i-th with 2i + 1
/// tokens of its own.
fn shared_prefix_prompts() -> (Vec<u32>, Vec<Vec<u32>>) {
    let shared: Vec<u32> = (0..40).map(|i| 3 + (i * 7) % 390).collect();
    let prompts = (0..7u32)
        .map(|i| {
            let mut p = shared.clone();
            p.extend((0..=i * 2).map(|j| 10 + (i * 31 + j * 5) % 380));
            p
        })
        .collect();
    (shared, prompts)
}

#[test]
fn queue_with_prefix_and_refill_decodes_what_one_batch_decodes() {
    let model = tiny();
    let stack = adapter_b();
    let (shared, prompts) = shared_prefix_prompts();
    let cfg = SamplingConfig {
        max_new_tokens: 12,
        ..Default::default()
    };
    // Rows end at different steps: by a stop after 2 + row % 5 tokens, or by a token as EOS.
    let eos = [7u32];
    let stop = |r: usize, t: &[u32]| t.len() == 2 + r % 5;
    let one_batch = generate_ids(
        &model.model,
        &stack,
        &prompts,
        &cfg,
        &eos,
        0,
        &mut |r, t| stop(r, t),
    )
    .unwrap();
    let lens: std::collections::HashSet<usize> = one_batch.iter().map(|o| o.len()).collect();
    assert!(
        lens.len() >= 3,
        "rows should finish at different lengths: {lens:?}"
    );
    let n = common_prefix_len(&prompts.iter().map(|p| p.as_slice()).collect::<Vec<_>>());
    assert_eq!(n, shared.len());
    let prefix = PrefixCache::build(&model.model, &stack, &prompts[0][..n]).unwrap();
    for (refill, with_prefix) in [(true, true), (true, false), (false, true)] {
        let opts = QueueOptions {
            max_batch: 3,
            refill,
            prefix: with_prefix.then_some(&prefix),
            references: None,
        };
        let mut got = vec![None; prompts.len()];
        let mut order = Vec::new();
        generate_queue(
            &model.model,
            &stack,
            &prompts,
            &cfg,
            &opts,
            &eos,
            0,
            &mut |r, t| stop(r, t),
            &mut |r, ids, _| {
                order.push(r);
                got[r] = Some(ids);
                Ok(true)
            },
        )
        .unwrap();
        let got: Vec<Vec<u32>> = got
            .into_iter()
            .map(|g| g.expect("every row finished"))
            .collect();
        assert_eq!(got, one_batch, "refill {refill}, prefix {with_prefix}");
        if refill {
            assert_ne!(
                order,
                (0..prompts.len()).collect::<Vec<_>>(),
                "rows are handed over as they finish"
            );
        }
    }
}

#[test]
fn references_scored_on_their_prompts_prefill_equal_whole_sequence_scores() {
    let model = tiny();
    let stack = adapter_b();
    let limit = model.model.cfg.max_position_embeddings;
    let (_, prompts) = shared_prefix_prompts();
    // None; one token (scored from the prefill's logits alone); references of different
    // lengths (right-padded together); one that fills the context with its prompt, so that
    // its group's layout (padded to a longer prompt) does not fit; one that does not fit.
    let tokens = |i: usize, n: usize| (0..n).map(move |j| 20 + ((i * 7 + j * 13) % 370) as u32);
    let references: Vec<Option<Vec<u32>>> = (0..7usize)
        .map(|i| match i {
            0 => None,
            1 => Some(vec![42]),
            4 => Some(tokens(i, limit - prompts[4].len()).collect()),
            6 => Some(vec![9; limit + 1 - prompts[6].len()]),
            _ => Some(tokens(i, i * 2).collect()),
        })
        .collect();
    let whole: Vec<Option<f64>> = prompts
        .iter()
        .zip(&references)
        .map(|(p, a)| {
            let a = a.as_ref().filter(|a| p.len() + a.len() <= limit)?;
            let seq = crate::engine::loglik::ScoredSeq {
                ids: p.iter().chain(a).copied().collect(),
                start: p.len(),
            };
            let got = crate::engine::loglik::sequence_logprobs(&model.model, &stack, &[seq], 1);
            Some(got.unwrap()[0])
        })
        .collect();
    let n = common_prefix_len(&prompts.iter().map(|p| p.as_slice()).collect::<Vec<_>>());
    let prefix = PrefixCache::build(&model.model, &stack, &prompts[0][..n]).unwrap();
    for (refill, with_prefix, max_new_tokens) in
        [(true, true, 5), (false, false, 5), (true, true, 0)]
    {
        let opts = QueueOptions {
            max_batch: 3,
            refill,
            prefix: with_prefix.then_some(&prefix),
            references: Some(&references),
        };
        let cfg = SamplingConfig {
            max_new_tokens,
            ..Default::default()
        };
        let mut got = vec![None; prompts.len()];
        generate_queue(
            &model.model,
            &stack,
            &prompts,
            &cfg,
            &opts,
            &[],
            0,
            &mut |_, _| false,
            &mut |r, ids, score| {
                assert!(ids.len() <= max_new_tokens);
                got[r] = Some(score);
                Ok(true)
            },
        )
        .unwrap();
        let case = format!("refill {refill}, prefix {with_prefix}, {max_new_tokens} new tokens");
        for (i, (got, want)) in got.into_iter().zip(&whole).enumerate() {
            let got = got.unwrap_or_else(|| panic!("{case}: row {i} never finished"));
            match (got, want) {
                (None, None) => {}
                (Some(g), Some(w)) => {
                    assert_eq!(g.tokens, references[i].as_ref().unwrap().len(), "{case}");
                    assert!(
                        (g.logprob - w).abs() < 1e-3,
                        "{case}: row {i}: {} vs {w}",
                        g.logprob
                    );
                }
                (g, w) => panic!("{case}: row {i}: scored {g:?}, whole sequence {w:?}"),
            }
        }
    }
}

/// The last position's logits of `ids` run alone, without any cache: (vocab,).
fn alone(model: &LoadedModel, stack: &AdapterStack, ids: &[u32]) -> Tensor {
    let input = Tensor::from_vec(ids.to_vec(), (1, ids.len()), &Device::Cpu).unwrap();
    let fi = ForwardInput {
        last_only: true,
        ..Default::default()
    };
    model
        .model
        .forward(&input, &fi, None, stack, Mode::Infer)
        .unwrap()
        .flatten_all()
        .unwrap()
}

#[test]
fn a_shared_prefix_gives_the_logits_of_each_prompt_run_alone() {
    let model = tiny();
    let stack = adapter_b();
    let shared: Vec<u32> = (0..24).map(|i| 5 + (i * 11) % 390).collect();
    // Suffixes of 4, 9 and 1 tokens, prefilled one by one and joined in that order: the
    // second is longer than the batch (the batch is padded after the prefix), the third
    // shorter (it is padded).
    let prompts: Vec<Vec<u32>> = [4usize, 9, 1]
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let mut p = shared.clone();
            p.extend((0..n).map(|j| 20 + ((i * 37 + j * 13) % 360) as u32));
            p
        })
        .collect();
    let prefix = PrefixCache::build(&model.model, &stack, &shared).unwrap();
    let mut batch = BatchCache::default();
    for (k, p) in prompts.iter().enumerate() {
        let (cache, mask, logits) =
            prefill(&model.model, &stack, Some(&prefix), &[p.as_slice()], 0).unwrap();
        assert_eq!(cache.shared_len(), shared.len());
        let d = max_abs_diff(&logits.get(0).unwrap(), &alone(&model, &stack, p));
        assert!(d < 1e-4, "prefill of prompt {k}: max logit difference {d}");
        batch.join(cache, mask).unwrap();
    }
    let mut prompts = prompts;
    let mut live: Vec<usize> = vec![0, 1, 2];
    for (step, keep) in [(0u32, vec![0u32, 2]), (1, vec![0, 1])] {
        let b = live.len();
        let next: Vec<u32> = live.iter().map(|&r| 30 + step * 7 + r as u32).collect();
        let pos: Vec<u32> = live.iter().map(|&r| prompts[r].len() as u32).collect();
        let step_mask = batch.step_mask().unwrap();
        let fi = ForwardInput {
            positions: Some(Tensor::from_vec(pos, (b, 1), &Device::Cpu).unwrap()),
            key_mask: Some(step_mask.clone()),
            last_only: true,
            rows: None,
        };
        let input = Tensor::from_vec(next.clone(), (b, 1), &Device::Cpu).unwrap();
        let logits = model
            .model
            .forward(&input, &fi, Some(batch.cache_mut()), &stack, Mode::Infer)
            .unwrap();
        for (k, &r) in live.iter().enumerate() {
            prompts[r].push(next[k]);
            let got = logits.get(k).unwrap().flatten_all().unwrap();
            let d = max_abs_diff(&got, &alone(&model, &stack, &prompts[r]));
            assert!(
                d < 1e-4,
                "decode step {step}, row {r}: max logit difference {d}"
            );
        }
        batch.advance(step_mask, &keep).unwrap();
        live = keep.iter().map(|&k| live[k as usize]).collect();
        if step == 0 {
            // Row 0's 4 + 1 own positions are now the longest: the rest were row 1's alone.
            assert_eq!(batch.cache_mut().len(), shared.len() + 5);
        }
    }
}

#[test]
fn common_prefix_leaves_every_prompt_a_token() {
    assert_eq!(common_prefix_len(&[&[1, 2, 3], &[1, 2, 3, 4]]), 2);
    assert_eq!(common_prefix_len(&[&[1, 2, 3], &[1, 5]]), 1);
    assert_eq!(common_prefix_len(&[&[1, 2, 3]]), 0);
    assert_eq!(common_prefix_len(&[&[9, 2], &[1, 2]]), 0);
}

/// A few-shot task short enough for the tiny model's 256 positions, with the stop strings a
/// test chooses, graded by whether the answer holds the gold number; its reference is the
/// gold number written out.
struct FewShot {
    stops: Vec<String>,
}

static FEW_SHOT: TaskInfo = TaskInfo {
    name: "few-shot-test",
    aliases: &[],
    summary: "test",
    default_dataset: "none",
    metrics: &["accuracy"],
    headline: "accuracy",
    needs_sandbox: false,
    grader_version: 1,
};

impl Task for FewShot {
    type Item = MathItem;

    fn info(&self) -> &'static TaskInfo {
        &FEW_SHOT
    }

    fn parse(
        &self,
        _: &Path,
        _: &str,
    ) -> std::result::Result<Vec<MathItem>, soup_evals::datasets::DatasetError> {
        Ok(Vec::new())
    }

    fn prompt(&self, item: &MathItem, _: &PromptOptions) -> Prompt {
        Prompt {
            text: format!("Q: 1+1?\nA: 2\n\nQ: 2+3?\nA: 5\n\nQ: {}\nA:", item.question),
            messages: Vec::new(),
            stop: self.stops.clone(),
            chat_stop: self.stops.clone(),
        }
    }

    fn grade(
        &self,
        items: &[&MathItem],
        outputs: &[&str],
        _: Option<&Sandbox>,
    ) -> std::result::Result<Vec<Grade>, soup_evals::driver::EvalError> {
        Ok(items
            .iter()
            .zip(outputs)
            .map(|(i, o)| {
                let correct = o.contains(&i.gold.to_string());
                Grade {
                    extracted: Some(o.trim().to_string()),
                    pred: None,
                    verdict: None,
                    correct,
                    scores: BTreeMap::from([(
                        "accuracy".to_string(),
                        f64::from(u8::from(correct)),
                    )]),
                    run: None,
                }
            })
            .collect())
    }

    fn reference(&self, item: &MathItem) -> Option<String> {
        Some(format!("{}", item.gold))
    }
}

fn items() -> Vec<MathItem> {
    (0..7)
        .map(|i| MathItem {
            id: format!("q{i}"),
            question: format!("{}+{}{}?", i * 3, i + 1, " and more".repeat(i % 3)),
            gold: (i * 4 + 1) as f64,
            solution: None,
        })
        .collect()
}

/// Evaluates `items` with the model's queue decoder or fixed batches; the records as handed
/// to the sink and whether the run was cancelled.
fn eval(
    model: &LoadedModel,
    task: &FewShot,
    style: PromptStyle,
    static_batches: bool,
    previous: &[QuestionRecord],
    cancel_after: Option<usize>,
) -> (Vec<QuestionRecord>, bool) {
    // An adapter makes the tiny model write text rather than byte pieces.
    let stack =
        AdapterStack::single(load_peft(&fixtures().join("adapter-a"), &Device::Cpu).unwrap());
    let mut generator = ScoringGenerator(TextGenerator {
        model,
        stack: &stack,
        on_batch: None,
    });
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let mut records = Vec::new();
    let mut sink =
        |r: &QuestionRecord| -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
            records.push(r.clone());
            if cancel_after == Some(records.len()) {
                flag.store(true, Ordering::Relaxed);
            }
            Ok(())
        };
    let render = |p: &Prompt| Ok::<_, soup_evals::GenerateError>(format!("<chat> {}", p.text));
    let mut run = EvalRun {
        generator: &mut generator,
        sandbox: None,
        style,
        render_chat: &render,
        prompt: PromptOptions { shots: 2 },
        dtype: None,
        opts: EvalOptions {
            settings: soup_evals::GenSettings {
                max_new_tokens: 14,
                ..Default::default()
            },
            batch_size: 3,
            cancel: Some(cancel),
            static_batches,
            ..Default::default()
        },
        previous,
        sink: &mut sink,
    };
    let summary = evaluate(task, &items(), &mut run).unwrap();
    (records, summary.cancelled)
}

/// Records by id with timing cleared and the reference score rounded (a prefix computed
/// apart rounds differently in the last bits).
fn normalized(records: &[QuestionRecord]) -> BTreeMap<String, QuestionRecord> {
    records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.latency_s = 0.0;
            r.ref_logprob = r.ref_logprob.map(|v| (v * 1e3).round() / 1e3);
            (r.id.clone(), r)
        })
        .collect()
}

/// A stop string that some answers hold (after their first characters) and others do not,
/// so that answers end at different lengths.
fn pick_stop(free: &[QuestionRecord]) -> Option<String> {
    for r in free {
        let chars: Vec<char> = r.raw_output.chars().collect();
        for at in 3..chars.len().saturating_sub(3) {
            let s: String = chars[at..at + 3].iter().collect();
            let holding = free.iter().filter(|o| o.raw_output.contains(&s)).count();
            if !s.trim().is_empty() && holding < free.len() {
                return Some(s);
            }
        }
    }
    None
}

#[test]
fn streamed_evaluation_records_equal_fixed_batches_in_both_prompt_forms() {
    let model = tiny();
    for style in [PromptStyle::Plain, PromptStyle::Chat] {
        // Stop strings taken from what the model writes, so they do end answers early.
        let (free, _) = eval(&model, &FewShot { stops: vec![] }, style, true, &[], None);
        let stop = pick_stop(&free).expect("the tiny model wrote something to stop on");
        let task = FewShot { stops: vec![stop] };
        let (fixed, _) = eval(&model, &task, style, true, &[], None);
        let (streamed, cancelled) = eval(&model, &task, style, false, &[], None);
        assert!(!cancelled);
        assert_eq!(fixed.len(), items().len());
        assert_eq!(normalized(&fixed), normalized(&streamed), "{style:?}");
        // The stop string ended answers at different lengths, and is left in no text.
        let lens: std::collections::HashSet<usize> =
            fixed.iter().map(|r| r.output_tokens).collect();
        assert!(lens.len() >= 2, "{style:?}: {lens:?}");
        assert!(fixed.iter().any(|r| r.output_tokens < 14), "{style:?}");
        for r in &streamed {
            assert!(
                task.stops
                    .iter()
                    .all(|s| !r.raw_output.contains(s.as_str())),
                "{style:?}: {:?} holds a stop string",
                r.raw_output
            );
            assert!(r.ref_logprob.is_some() && r.ref_tokens.is_some());
        }
    }
}

#[test]
fn a_cancelled_streamed_run_resumes_to_the_same_records() {
    let model = tiny();
    let task = FewShot {
        stops: vec!["\n".into()],
    };
    let (whole, _) = eval(&model, &task, PromptStyle::Plain, false, &[], None);
    let (first, cancelled) = eval(&model, &task, PromptStyle::Plain, false, &[], Some(3));
    assert!(cancelled);
    assert_eq!(first.len(), 3, "records up to the cancellation are kept");
    let (rest, cancelled) = eval(&model, &task, PromptStyle::Plain, false, &first, None);
    assert!(!cancelled);
    assert_eq!(
        rest.len(),
        items().len() - 3,
        "resume runs only the unfinished questions"
    );
    let mut both = first.clone();
    both.extend(rest);
    assert_eq!(normalized(&both), normalized(&whole));
}
