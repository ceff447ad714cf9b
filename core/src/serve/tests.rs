//! The serving engine on the tiny fixture model: continuous batching answers as the local
//! evaluation path does, compositions take turns, slots are refilled, stops and streaming
//! deltas agree with the final text, and impossible requests fail alone.

use super::*;
use crate::runtime::{load_model_at, TextGenerator};
use soup_evals::GenSettings;
use std::path::PathBuf;
use std::sync::Mutex;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/reference")
}

fn tiny() -> Arc<LoadedModel> {
    let dev = candle_core::Device::Cpu;
    Arc::new(
        load_model_at(
            "tiny-llama",
            &fixtures().join("tiny-llama"),
            &dev,
            crate::device::Precision::F32,
        )
        .expect("tiny model"),
    )
}

type Log = Arc<Mutex<Vec<Event>>>;

fn sink() -> (Sink, Log) {
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    (
        Box::new(move |e| {
            l.lock().unwrap().push(e);
            true
        }),
        log,
    )
}

fn spec(model: &LoadedModel, prompt: &str, max: usize) -> RequestSpec {
    RequestSpec {
        prompt: model.tokenizer.encode(prompt, true).unwrap(),
        max_new_tokens: max,
        temperature: 0.0,
        top_p: None,
        seed: 0,
        stops: Vec::new(),
        logprobs: None,
        prompt_logprobs: false,
    }
}

fn submit(e: &mut ServeEngine, key: &str, target: EvalTarget, spec: RequestSpec) -> Log {
    let (sink, log) = sink();
    e.submit(Submit {
        key: key.into(),
        target,
        spec,
        sink,
    });
    log
}

fn done(log: &Log) -> Finished {
    let events = log.lock().unwrap();
    match events.last() {
        Some(Event::Done(f)) => f.clone(),
        other => panic!("not finished: {other:?}"),
    }
}

fn drain(e: &mut ServeEngine) -> Vec<StepReport> {
    let mut steps = Vec::new();
    while let Some(s) = e.step() {
        steps.push(s);
        assert!(steps.len() < 10_000, "the engine does not finish");
    }
    steps
}

const PROMPTS: [&str; 5] = [
    "hello world",
    "the quick brown fox jumps over the lazy dog and keeps running",
    "a",
    "one two three four five",
    "soup of loras, served",
];

#[test]
fn continuous_batching_answers_as_the_eval_path() {
    let model = tiny();
    let stack = AdapterStack::base();
    let prompts: Vec<String> = PROMPTS.iter().map(|s| s.to_string()).collect();
    let settings = GenSettings {
        max_new_tokens: 12,
        ..Default::default()
    };
    let expected = TextGenerator {
        model: &model,
        stack: &stack,
        on_batch: None,
    }
    .complete(&prompts, &settings)
    .unwrap();

    // Two slots: later requests arrive while others run, and take the slots that free up.
    let mut e = ServeEngine::new(
        model.clone(),
        None,
        ServeConfig {
            max_batch: 2,
            ..Default::default()
        },
    );
    let mut logs = Vec::new();
    for (i, p) in PROMPTS.iter().enumerate() {
        logs.push(submit(
            &mut e,
            "base",
            EvalTarget::Base,
            spec(&model, p, 12),
        ));
        for _ in 0..i {
            e.step();
        }
    }
    let steps = drain(&mut e);
    assert!(steps.iter().all(|s| s.rows <= 2), "{steps:?}");
    for (i, log) in logs.iter().enumerate() {
        let f = done(log);
        assert_eq!(f.text, expected[i].text, "prompt {i}: {:?}", PROMPTS[i]);
        assert_eq!(f.completion_tokens, expected[i].output_tokens, "prompt {i}");
        assert_eq!(f.prompt_tokens, expected[i].prompt_tokens);
        // The deltas concatenate to the final text.
        let streamed: String = log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::Delta(t) => Some(t.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(streamed, f.text);
    }
}

#[test]
fn compositions_take_turns_and_slots_are_refilled() {
    let model = tiny();
    let adapter = fixtures().join("adapter-a").display().to_string();
    let mut e = ServeEngine::new(
        model.clone(),
        None,
        ServeConfig {
            max_batch: 1,
            ..Default::default()
        },
    );
    let mut logs = Vec::new();
    for p in &PROMPTS[..3] {
        logs.push(submit(&mut e, "base", EvalTarget::Base, spec(&model, p, 4)));
        logs.push(submit(
            &mut e,
            "a",
            EvalTarget::Adapter(adapter.clone()),
            spec(&model, p, 4),
        ));
    }
    let steps = drain(&mut e);
    // While both have work, they alternate: a group runs twice in a row only once the
    // other has finished.
    let keys: Vec<&str> = steps.iter().map(|s| s.key.as_str()).collect();
    for i in 1..keys.len() {
        if keys[i] == keys[i - 1] {
            assert!(keys[i..].iter().all(|k| *k == keys[i]), "{keys:?}");
        }
    }
    // One slot each: a finished row's slot goes to the next waiting request.
    assert!(steps.iter().all(|s| s.rows <= 1), "{steps:?}");
    let admitted: usize = steps.iter().map(|s| s.admitted).sum();
    assert_eq!(admitted, 6);
    for log in &logs {
        done(log);
    }
    // The adapter changes the answers (the composition is really applied).
    let base: Vec<String> = logs.iter().step_by(2).map(|l| done(l).text).collect();
    let with_a: Vec<String> = logs
        .iter()
        .skip(1)
        .step_by(2)
        .map(|l| done(l).text)
        .collect();
    assert_ne!(base, with_a);
}

#[test]
fn stops_cut_the_text_and_streaming_never_passes_them() {
    let model = tiny();
    let mut e = ServeEngine::new(model.clone(), None, ServeConfig::default());
    let free = submit(
        &mut e,
        "base",
        EvalTarget::Base,
        spec(&model, PROMPTS[1], 16),
    );
    drain(&mut e);
    let full = done(&free);
    assert_eq!(full.finish_reason, FinishReason::Length);
    // A stop string from the middle of the free answer.
    let chars: Vec<char> = full.text.chars().collect();
    assert!(chars.len() >= 6, "{:?}", full.text);
    let stop: String = chars[3..5].iter().collect();
    let mut s = spec(&model, PROMPTS[1], 16);
    s.stops = vec![stop.clone()];
    let stopped = submit(&mut e, "base", EvalTarget::Base, s);
    drain(&mut e);
    let f = done(&stopped);
    assert_eq!(f.finish_reason, FinishReason::Stop);
    assert_eq!(
        f.text,
        truncate_at_stop(&full.text, std::slice::from_ref(&stop))
    );
    assert!(!f.text.contains(&stop));
    for ev in stopped.lock().unwrap().iter() {
        if let Event::Delta(t) = ev {
            assert!(!t.contains(&stop), "{t:?}");
        }
    }
}

#[test]
fn echo_logprobs_score_every_prompt_token() {
    let model = tiny();
    let mut e = ServeEngine::new(model.clone(), None, ServeConfig::default());
    let mut s = spec(&model, PROMPTS[3], 0);
    s.logprobs = Some(3);
    s.prompt_logprobs = true;
    let n = s.prompt.len();
    let ids = s.prompt.clone();
    let log = submit(&mut e, "base", EvalTarget::Base, s);
    drain(&mut e);
    let f = done(&log);
    assert_eq!(f.completion_tokens, 0);
    assert_eq!(f.text, "");
    assert_eq!(f.finish_reason, FinishReason::Length);
    assert_eq!(f.prompt_logprobs.len(), n);
    assert!(f.prompt_logprobs[0].logprob.is_none());
    // Against a plain forward pass over the prompt.
    let input = Tensor::from_vec(ids.clone(), (1, n), &candle_core::Device::Cpu).unwrap();
    let logits = model
        .model
        .forward(
            &input,
            &ForwardInput::default(),
            None,
            &AdapterStack::base(),
            Mode::Infer,
        )
        .unwrap()
        .squeeze(0)
        .unwrap();
    let lp: Vec<Vec<f32>> = candle_nn::ops::log_softmax(&logits, D::Minus1)
        .unwrap()
        .to_vec2()
        .unwrap();
    for i in 1..n {
        let t = &f.prompt_logprobs[i];
        let v = t.logprob.unwrap();
        assert!(v.is_finite() && v <= 0.0, "{v}");
        assert!((v - lp[i - 1][ids[i] as usize]).abs() < 1e-4);
        assert_eq!(t.top.len(), 3);
        assert!(t.top.windows(2).all(|w| w[0].1 >= w[1].1));
        assert!(t.top[0].1 >= v);
    }
}

#[test]
fn impossible_requests_fail_alone() {
    let model = tiny();
    let mut e = ServeEngine::new(model.clone(), None, ServeConfig::default());
    let ok = submit(
        &mut e,
        "base",
        EvalTarget::Base,
        spec(&model, PROMPTS[0], 4),
    );
    let long = submit(
        &mut e,
        "base",
        EvalTarget::Base,
        spec(&model, PROMPTS[0], 10_000),
    );
    let missing = submit(
        &mut e,
        "nope",
        EvalTarget::Adapter("no-such-adapter".into()),
        spec(&model, PROMPTS[0], 4),
    );
    drain(&mut e);
    done(&ok);
    for log in [&long, &missing] {
        match log.lock().unwrap().last() {
            Some(Event::Failed(err)) => assert!(err.invalid_request, "{err:?}"),
            other => panic!("{other:?}"),
        }
    }
}

/// A client that is gone from the start, as an HTTP client that hung up.
struct Gone(Arc<Mutex<usize>>);

impl EventSink for Gone {
    fn send(&mut self, _: Event) -> bool {
        *self.0.lock().unwrap() += 1;
        false
    }

    fn is_closed(&self) -> bool {
        true
    }
}

#[test]
fn a_client_that_leaves_frees_its_slot() {
    let model = tiny();
    let mut e = ServeEngine::new(
        model.clone(),
        None,
        ServeConfig {
            max_batch: 1,
            ..Default::default()
        },
    );
    let calls = Arc::new(Mutex::new(0usize));
    e.submit(Submit {
        key: "base".into(),
        target: EvalTarget::Base,
        spec: spec(&model, PROMPTS[1], 200),
        sink: Box::new(Gone(calls.clone())),
    });
    let next = submit(
        &mut e,
        "base",
        EvalTarget::Base,
        spec(&model, PROMPTS[0], 3),
    );
    let steps = drain(&mut e);
    assert!(*calls.lock().unwrap() <= 1, "events after the client left");
    done(&next);
    // The 200-token request stopped at its first step; the next one took its slot.
    assert!(steps.len() <= 5, "{steps:?}");
}
