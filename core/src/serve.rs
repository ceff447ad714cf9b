//! The engine side of `soup serve`: generation requests for many compositions over one loaded
//! model, decoded with continuous batching on one dedicated thread.
//!
//! Each composition (base, adapter, CAT adapter, merge) is a [`Group`] with its own batch:
//! a [`BatchCache`] (rows left-padded to one length, a key mask, per-row positions), the one
//! [`crate::generate::generate_queue`] decodes with. A new request is prefilled alone and its
//! cache rows join the running batch (the shorter side is padded at the front); a row that
//! finishes leaves it at once, and its slot goes to the next waiting request on the group's
//! next turn. Groups take turns one decode step each (round robin), so a busy composition
//! cannot starve a quiet one. Adapter stacks are shared (`Arc`), never copied per request,
//! and a composition is built once and kept in a small cache.
//!
//! Tokens are chosen, stopped and decoded by the rules of the local evaluation path (same
//! sampler, [`crate::runtime::stop_in_tail`], [`soup_evals::generate::truncate_at_stop`]), so
//! a greedy answer served equals the answer `soup eval` records for the same prompt text.

use crate::engine::spec::EvalTarget;
use crate::error::{CoreError, Result};
use crate::generate::BatchCache;
use crate::lora::AdapterStack;
use crate::model::{ForwardInput, Mode};
use crate::runtime::{stop_in_tail, LoadedModel};
use candle_core::{DType, Tensor, D};
use candle_transformers::generation::LogitsProcessor;
use soup_evals::generate::truncate_at_stop;
use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one request asks the model for. The prompt is already tokenized.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestSpec {
    pub prompt: Vec<u32>,
    pub max_new_tokens: usize,
    /// 0 means greedy.
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub seed: u64,
    pub stops: Vec<String>,
    /// Alternatives per token to report with each token's log-probability (None: no
    /// log-probabilities at all).
    pub logprobs: Option<usize>,
    /// Also score the prompt's own tokens (OpenAI's `echo` with `logprobs`).
    pub prompt_logprobs: bool,
}

/// One token with its log-probability under the model and the most likely alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub id: u32,
    pub text: String,
    /// None for a prompt's first token, which nothing predicts.
    pub logprob: Option<f32>,
    pub top: Vec<(String, f32)>,
}

/// Why a request ended, in OpenAI's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End of sequence or a stop string.
    Stop,
    /// `max_new_tokens` reached.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// A finished request.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// The new text, cut at the first stop string (never the prompt).
    pub text: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub finish_reason: FinishReason,
    /// The prompt's tokens with their log-probabilities (when asked for).
    pub prompt_logprobs: Vec<TokenLogprob>,
    /// The generated tokens with their log-probabilities (when asked for).
    pub logprobs: Vec<TokenLogprob>,
    /// From the request's arrival to its end.
    pub seconds: f64,
}

/// What the engine tells a request's owner.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Text that is final: never past a stop string, never half a character. The deltas of
    /// a request concatenate to its [`Finished::text`].
    Delta(String),
    Done(Finished),
    Failed(ServeError),
}

/// A request the engine could not serve, with the HTTP-like class it belongs to.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ServeError {
    /// The request asked for something impossible (400) rather than the server failing (500).
    pub invalid_request: bool,
    pub message: String,
}

impl ServeError {
    fn from_core(e: CoreError) -> Self {
        Self::of(&e)
    }

    fn of(e: &CoreError) -> Self {
        let invalid_request = matches!(
            e,
            CoreError::TooLong { .. }
                | CoreError::NoRoomToGenerate { .. }
                | CoreError::EmptyPrompt { .. }
                | CoreError::Adapter { .. }
                | CoreError::NotFound { .. }
                | CoreError::BadSetting { .. }
                | CoreError::UnknownName { .. }
                | CoreError::MergePrecondition { .. }
                | CoreError::Missing { .. }
        );
        ServeError {
            invalid_request,
            message: e.to_string(),
        }
    }
}

/// Where a request's events go.
pub trait EventSink: Send {
    /// Delivers one event; false when nobody listens any more (the client went away), which
    /// ends the request and frees its slot.
    fn send(&mut self, event: Event) -> bool;

    /// Whether nobody listens any more. Checked before every decode step, so a client that
    /// left frees its slot at once, even while its tokens decode to no text yet.
    fn is_closed(&self) -> bool {
        false
    }
}

impl<F: FnMut(Event) -> bool + Send> EventSink for F {
    fn send(&mut self, event: Event) -> bool {
        self(event)
    }
}

/// A request's event sink.
pub type Sink = Box<dyn EventSink>;

/// A request handed to the engine thread.
pub struct Submit {
    /// The composition's name as the client wrote it (the cache and scheduling key).
    pub key: String,
    pub target: EvalTarget,
    pub spec: RequestSpec,
    pub sink: Sink,
}

/// What a serving engine is built with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Rows decoded together per composition.
    pub max_batch: usize,
    /// Compositions kept built (least recently used ones are dropped first).
    pub cache_size: usize,
    /// Seed of randomized merges (DARE), as `soup eval --seed` (default 0).
    pub merge_seed: u64,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            max_batch: 16,
            cache_size: 8,
            merge_seed: 0,
        }
    }
}

/// One decode step, as the scheduler ran it (for logs and tests).
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    pub key: String,
    /// Rows decoded in this step (after admissions).
    pub rows: usize,
    /// Requests admitted into the batch before the step.
    pub admitted: usize,
}

struct Row {
    spec: RequestSpec,
    sink: Sink,
    sampler: LogitsProcessor,
    out: Vec<u32>,
    logprobs: Vec<TokenLogprob>,
    prompt_logprobs: Vec<TokenLogprob>,
    /// Position of the next input token.
    next_pos: u32,
    /// The token to feed next.
    pending: u32,
    /// Bytes of text already sent as deltas.
    emitted: usize,
    started: Instant,
}

struct Waiting {
    spec: RequestSpec,
    sink: Sink,
    arrived: Instant,
}

/// One composition's requests: those waiting for a slot and the running batch.
struct Group {
    key: String,
    stack: Arc<AdapterStack>,
    waiting: VecDeque<Waiting>,
    rows: Vec<Row>,
    batch: BatchCache,
}

/// The serving engine: one model, the compositions built so far, and the round robin.
pub struct ServeEngine {
    model: Arc<LoadedModel>,
    store: Option<Arc<soup_store::Store>>,
    cfg: ServeConfig,
    groups: Vec<Group>,
    cursor: usize,
    /// Built compositions, most recently used last.
    built: Vec<(String, Arc<AdapterStack>)>,
}

impl ServeEngine {
    pub fn new(
        model: Arc<LoadedModel>,
        store: Option<Arc<soup_store::Store>>,
        cfg: ServeConfig,
    ) -> Self {
        ServeEngine {
            model,
            store,
            cfg: ServeConfig {
                max_batch: cfg.max_batch.max(1),
                cache_size: cfg.cache_size.max(1),
                ..cfg
            },
            groups: Vec::new(),
            cursor: 0,
            built: Vec::new(),
        }
    }

    pub fn model(&self) -> &LoadedModel {
        &self.model
    }

    /// Whether any request waits or runs.
    pub fn is_busy(&self) -> bool {
        !self.groups.is_empty()
    }

    /// The composition for `key`, from the cache or built now (and cached).
    fn stack(&mut self, key: &str, target: &EvalTarget) -> Result<Arc<AdapterStack>> {
        if let Some(i) = self.built.iter().position(|(k, _)| k == key) {
            let entry = self.built.remove(i);
            let stack = entry.1.clone();
            self.built.push(entry);
            return Ok(stack);
        }
        let t0 = Instant::now();
        let stack = Arc::new(crate::engine::target_stack(
            &self.model,
            self.store.as_deref(),
            target,
            self.cfg.merge_seed,
        )?);
        tracing::info!(
            "built composition {key} in {:.2} s",
            t0.elapsed().as_secs_f64()
        );
        if self.built.len() >= self.cfg.cache_size {
            self.built.remove(0);
        }
        self.built.push((key.to_string(), stack.clone()));
        Ok(stack)
    }

    /// Queues a request behind its composition's batch (building the composition first if
    /// no group runs it). A composition that cannot be built fails the request at once.
    pub fn submit(&mut self, s: Submit) {
        let Submit {
            key,
            target,
            spec,
            mut sink,
        } = s;
        let waiting = Waiting {
            spec,
            sink: Box::new(|_| true),
            arrived: Instant::now(),
        };
        if let Some(g) = self.groups.iter_mut().find(|g| g.key == key) {
            g.waiting.push_back(Waiting { sink, ..waiting });
            return;
        }
        match self.stack(&key, &target) {
            Ok(stack) => {
                let mut g = Group {
                    key,
                    stack,
                    waiting: VecDeque::new(),
                    rows: Vec::new(),
                    batch: BatchCache::default(),
                };
                g.waiting.push_back(Waiting { sink, ..waiting });
                self.groups.push(g);
            }
            Err(e) => {
                sink.send(Event::Failed(ServeError::from_core(e)));
            }
        }
    }

    /// Runs one turn of the round robin: the next group with work admits waiting requests
    /// into its free slots and decodes one token for each of its rows. None when idle.
    pub fn step(&mut self) -> Option<StepReport> {
        if self.groups.is_empty() {
            return None;
        }
        if self.cursor >= self.groups.len() {
            self.cursor = 0;
        }
        let i = self.cursor;
        let model = self.model.clone();
        let max_batch = self.cfg.max_batch;
        let g = &mut self.groups[i];
        let mut admitted = 0;
        while g.rows.len() < max_batch {
            let Some(w) = g.waiting.pop_front() else {
                break;
            };
            admitted += 1;
            if let Err(e) = admit(&model, g, w) {
                // The batch may be half-updated: fail its rows rather than decode garbage.
                fail_all(g, &e);
                break;
            }
        }
        let rows = g.rows.len();
        if rows > 0 {
            if let Err(e) = decode_step(&model, g) {
                fail_all(g, &e);
            }
        }
        let report = StepReport {
            key: g.key.clone(),
            rows,
            admitted,
        };
        if g.rows.is_empty() && g.waiting.is_empty() {
            self.groups.remove(i);
        } else {
            self.cursor = i + 1;
        }
        Some(report)
    }

    /// The engine thread's loop: takes requests from `rx`, steps while there is work, and
    /// returns once `rx` is closed and every request has finished (graceful shutdown).
    pub fn run(mut self, rx: Receiver<Submit>) {
        let mut open = true;
        loop {
            // Take what arrived without waiting while busy; sleep on the channel when idle.
            loop {
                let msg = if self.is_busy() || !open {
                    match rx.try_recv() {
                        Ok(m) => Some(m),
                        Err(std::sync::mpsc::TryRecvError::Empty) => None,
                        Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                            open = false;
                            None
                        }
                    }
                } else {
                    match rx.recv_timeout(Duration::from_millis(200)) {
                        Ok(m) => Some(m),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => {
                            open = false;
                            None
                        }
                    }
                };
                match msg {
                    Some(m) => self.submit(m),
                    None => break,
                }
            }
            if self.step().is_none() && !open {
                return;
            }
        }
    }
}

fn fail_all(g: &mut Group, e: &CoreError) {
    let err = ServeError::of(e);
    for mut r in g.rows.drain(..) {
        r.sink.send(Event::Failed(err.clone()));
    }
    g.batch.clear();
}

/// The sampler a request's settings ask for, as [`crate::generate::generate_ids`] builds it.
fn sampler(spec: &RequestSpec) -> LogitsProcessor {
    LogitsProcessor::from_sampling(
        spec.seed,
        crate::generate::sampling(spec.temperature, spec.top_p),
    )
}

/// The log-probabilities of `logits` (vocab,) f32: the chosen token's and the top `k`.
fn token_logprob(model: &LoadedModel, logits: &Tensor, id: u32, k: usize) -> Result<TokenLogprob> {
    let lp: Vec<f32> = candle_nn::ops::log_softmax(logits, D::Minus1)?.to_vec1()?;
    token_logprob_from(model, &lp, id, k)
}

fn token_logprob_from(model: &LoadedModel, lp: &[f32], id: u32, k: usize) -> Result<TokenLogprob> {
    let tok = &model.tokenizer;
    let mut top = Vec::with_capacity(k);
    if k > 0 {
        let mut idx: Vec<usize> = (0..lp.len()).collect();
        let k = k.min(idx.len());
        idx.select_nth_unstable_by(k.saturating_sub(1), |&a, &b| lp[b].total_cmp(&lp[a]));
        idx.truncate(k);
        idx.sort_by(|&a, &b| lp[b].total_cmp(&lp[a]));
        for j in idx {
            top.push((tok.decode(&[j as u32], false)?, lp[j]));
        }
    }
    Ok(TokenLogprob {
        id,
        text: tok.decode(&[id], false)?,
        logprob: lp.get(id as usize).copied(),
        top,
    })
}

/// Checks a request against the model's context, prefills its prompt alone, chooses its
/// first token, and joins its cache rows to the group's batch (unless it is already done).
fn admit(model: &LoadedModel, g: &mut Group, w: Waiting) -> std::result::Result<(), CoreError> {
    let Waiting {
        spec,
        mut sink,
        arrived,
    } = w;
    let limit = model.model.cfg.max_position_embeddings;
    let p = spec.prompt.len();
    let check = if p == 0 {
        Err(CoreError::EmptyPrompt { index: 0 })
    } else if p >= limit {
        Err(CoreError::TooLong { tokens: p, limit })
    } else if p + spec.max_new_tokens > limit {
        Err(CoreError::NoRoomToGenerate {
            prompt: p,
            new_tokens: spec.max_new_tokens,
            limit,
        })
    } else {
        Ok(())
    };
    if let Err(e) = check {
        sink.send(Event::Failed(ServeError::from_core(e)));
        return Ok(());
    }
    let dev = model.model.device().clone();
    let mut cache = model.model.new_cache();
    let input = Tensor::from_vec(spec.prompt.clone(), (1, p), &dev)?;
    let fi = ForwardInput {
        last_only: !spec.prompt_logprobs,
        ..Default::default()
    };
    // logits: (1, p or 1, vocab)
    let logits = model
        .model
        .forward(&input, &fi, Some(&mut cache), g.stack.as_ref(), Mode::Infer);
    let logits = match logits {
        Ok(l) => l.squeeze(0)?.to_dtype(DType::F32)?,
        Err(e) => {
            sink.send(Event::Failed(ServeError::from_core(e)));
            return Ok(());
        }
    };
    let mut prompt_logprobs = Vec::new();
    if spec.prompt_logprobs {
        let k = spec.logprobs.unwrap_or(0);
        // lp: (p, vocab); position i predicts token i + 1.
        let lp: Vec<Vec<f32>> = candle_nn::ops::log_softmax(&logits, D::Minus1)?.to_vec2()?;
        prompt_logprobs.push(TokenLogprob {
            id: spec.prompt[0],
            text: model.tokenizer.decode(&spec.prompt[..1], false)?,
            logprob: None,
            top: Vec::new(),
        });
        for i in 1..p {
            prompt_logprobs.push(token_logprob_from(model, &lp[i - 1], spec.prompt[i], k)?);
        }
    }
    let last = logits.get(logits.dims()[0] - 1)?;
    let mut row = Row {
        sampler: sampler(&spec),
        sink,
        out: Vec::new(),
        logprobs: Vec::new(),
        prompt_logprobs,
        next_pos: p as u32,
        pending: 0,
        emitted: 0,
        started: arrived,
        spec,
    };
    if row.spec.max_new_tokens == 0 {
        finish(model, row, false);
        return Ok(());
    }
    match take_token(model, &mut row, &last)? {
        Some(done_by_stop) => {
            finish(model, row, done_by_stop);
            return Ok(());
        }
        None => {
            if !emit_delta(model, &mut row) {
                return Ok(());
            }
        }
    }
    // Join the batch: pad whichever side is shorter at the front.
    if g.rows.is_empty() {
        g.batch.clear();
    }
    g.batch
        .join(cache, Tensor::ones((1, p), DType::F32, &dev)?)?;
    g.rows.push(row);
    Ok(())
}

/// Samples the next token of `row` from `logits` (vocab,). Some(stopped) when the row is
/// done: by end of sequence or stop string (true) or by its token budget (false).
fn take_token(
    model: &LoadedModel,
    row: &mut Row,
    logits: &Tensor,
) -> std::result::Result<Option<bool>, CoreError> {
    let tok = row.sampler.sample(logits)?;
    if model.tokenizer.eos_ids().contains(&tok) {
        return Ok(Some(true));
    }
    if let Some(k) = row.spec.logprobs {
        row.logprobs.push(token_logprob(model, logits, tok, k)?);
    }
    row.out.push(tok);
    row.pending = tok;
    if row.out.len() >= row.spec.max_new_tokens {
        return Ok(Some(stop_in_tail(
            &model.tokenizer,
            &row.out,
            &row.spec.stops,
        )));
    }
    if stop_in_tail(&model.tokenizer, &row.out, &row.spec.stops) {
        return Ok(Some(true));
    }
    Ok(None)
}

/// Sends the text that became final since the last delta; false when the client is gone.
fn emit_delta(model: &LoadedModel, row: &mut Row) -> bool {
    let Ok(text) = model.tokenizer.decode(&row.out, true) else {
        return true;
    };
    let safe = truncate_at_stop(&text, &row.spec.stops);
    // Hold back a trailing partial character and any tail that may begin a stop string.
    let mut end = safe.trim_end_matches('\u{FFFD}').len();
    for s in row.spec.stops.iter().filter(|s| !s.is_empty()) {
        for (i, _) in s.char_indices().skip(1) {
            if safe[..end].ends_with(&s[..i]) {
                end = end.min(safe[..end].len() - i);
            }
        }
    }
    if end <= row.emitted || !safe.is_char_boundary(row.emitted) {
        return true;
    }
    let delta = safe[row.emitted..end].to_string();
    row.emitted = end;
    row.sink.send(Event::Delta(delta))
}

/// Sends the rest of the text and the request's result.
fn finish(model: &LoadedModel, mut row: Row, _stopped: bool) {
    let text = model.tokenizer.decode(&row.out, true).unwrap_or_default();
    let cut = truncate_at_stop(&text, &row.spec.stops).to_string();
    let eos = row.out.len() < row.spec.max_new_tokens;
    let finish_reason = if eos || cut.len() < text.len() {
        FinishReason::Stop
    } else {
        FinishReason::Length
    };
    if cut.len() > row.emitted && cut.is_char_boundary(row.emitted) {
        let rest = cut[row.emitted..].to_string();
        if !row.sink.send(Event::Delta(rest)) {
            return;
        }
    }
    let done = Finished {
        text: cut,
        prompt_tokens: row.spec.prompt.len(),
        completion_tokens: row.out.len(),
        finish_reason,
        prompt_logprobs: std::mem::take(&mut row.prompt_logprobs),
        logprobs: std::mem::take(&mut row.logprobs),
        seconds: row.started.elapsed().as_secs_f64(),
    };
    row.sink.send(Event::Done(done));
}

/// One decode step for every row of the group's batch; finished rows leave it.
fn decode_step(model: &LoadedModel, g: &mut Group) -> std::result::Result<(), CoreError> {
    let dev = model.model.device().clone();
    // Rows whose client left go first, with their cache rows.
    if g.rows.iter().any(|r| r.sink.is_closed()) {
        let keep: Vec<u32> = (0..g.rows.len() as u32)
            .filter(|&r| !g.rows[r as usize].sink.is_closed())
            .collect();
        g.rows.retain(|r| !r.sink.is_closed());
        g.batch.select(&keep)?;
        if g.rows.is_empty() {
            return Ok(());
        }
    }
    let b = g.rows.len();
    let mask = g.batch.step_mask()?;
    let ids: Vec<u32> = g.rows.iter().map(|r| r.pending).collect();
    let pos: Vec<u32> = g.rows.iter().map(|r| r.next_pos).collect();
    let input = Tensor::from_vec(ids, (b, 1), &dev)?;
    let fi = ForwardInput {
        positions: Some(Tensor::from_vec(pos, (b, 1), &dev)?),
        key_mask: Some(mask.clone()),
        last_only: true,
        rows: None,
    };
    // logits: (b, 1, vocab) -> (b, vocab)
    let logits = model
        .model
        .forward(
            &input,
            &fi,
            Some(g.batch.cache_mut()),
            g.stack.as_ref(),
            Mode::Infer,
        )?
        .squeeze(1)?
        .to_dtype(DType::F32)?;
    let mut keep: Vec<u32> = Vec::with_capacity(b);
    let mut kept_rows = Vec::with_capacity(b);
    for (r, mut row) in std::mem::take(&mut g.rows).into_iter().enumerate() {
        row.next_pos += 1;
        match take_token(model, &mut row, &logits.get(r)?)? {
            Some(stopped) => finish(model, row, stopped),
            None => {
                if emit_delta(model, &mut row) {
                    keep.push(r as u32);
                    kept_rows.push(row);
                }
            }
        }
    }
    g.rows = kept_rows;
    g.batch.advance(mask, &keep)
}

#[cfg(test)]
mod tests;
