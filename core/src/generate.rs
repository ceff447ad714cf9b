//! Batched generation with a KV cache: left padding with key masks and per-row positions,
//! greedy or temperature/top-p sampling with a seed, EOS and caller-defined stops.
//!
//! One decoder, [`generate_queue`], serves every local generation path: a queue of prompts,
//! decoded `max_batch` rows at a time, with two switches that evaluation turns on.
//! - Continuous batching (`refill`): a row that finishes leaves the batch at once and its slot
//!   takes the next prompt of the queue, so a batch costs what its live rows need rather than
//!   waiting for its longest answer. Off, the next prompts wait until the whole batch is done.
//! - A prefix cache ([`PrefixCache`]): the keys and values of a prefix every prompt shares
//!   (the few-shot demos) are computed once and shared by every row (attention reads them in
//!   one product for the whole batch, see [`KvCache`]); a new row prefills only its own
//!   suffix. A row's layout is `[prefix][padding, masked out][suffix]`, the suffix's
//!   positions continuing from the prefix's length, so it sees exactly the tokens and
//!   positions of its whole prompt.
//!
//! The running batch is a [`BatchCache`], which `soup serve` uses too. Batched greedy output
//! equals unbatched greedy output token for token (up to float rounding of the batch shapes).

use crate::error::{CoreError, Result};
use crate::lora::AdapterStack;
use crate::model::fused::cross_entropy;
use crate::model::{ForwardInput, KvCache, Llama, Mode};
use candle_core::{DType, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use soup_evals::RefScore;

/// How new tokens are chosen and when to stop.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    pub max_new_tokens: usize,
    /// 0 means greedy.
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            max_new_tokens: 128,
            temperature: 0.0,
            top_p: None,
            seed: 0,
        }
    }
}

impl SamplingConfig {
    /// candle's sampling rule for these settings.
    pub fn sampling(&self) -> Sampling {
        sampling(self.temperature, self.top_p)
    }
}

/// Greedy at temperature 0, else temperature sampling, with top-p below 1.
pub fn sampling(temperature: f64, top_p: Option<f64>) -> Sampling {
    if temperature <= 0.0 {
        Sampling::ArgMax
    } else {
        match top_p {
            Some(p) if p < 1.0 => Sampling::TopP { p, temperature },
            _ => Sampling::All { temperature },
        }
    }
}

/// The keys and values of a prompt prefix that many prompts share (few-shot demos), computed
/// once with one adapter stack and shared by every row that starts with it.
#[derive(Debug, Clone)]
pub struct PrefixCache {
    ids: Vec<u32>,
    /// One row: (1, kv_heads, len, head_dim) per layer.
    cache: KvCache,
}

impl PrefixCache {
    /// Prefills `ids` once with `stack`.
    pub fn build(model: &Llama, stack: &AdapterStack, ids: &[u32]) -> Result<Self> {
        let mut cache = model.new_cache();
        if !ids.is_empty() {
            let input = Tensor::from_vec(ids.to_vec(), (1, ids.len()), model.device())?;
            let fi = ForwardInput {
                last_only: true,
                ..Default::default()
            };
            model.forward(&input, &fi, Some(&mut cache), stack, Mode::Infer)?;
        }
        Ok(PrefixCache {
            ids: ids.to_vec(),
            cache,
        })
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Whether `prompt` starts with this prefix and has at least one token after it.
    pub fn covers(&self, prompt: &[u32]) -> bool {
        prompt.len() > self.ids.len() && prompt.starts_with(&self.ids)
    }

    /// A cache for rows that start with this prefix: its keys and values are shared by the
    /// rows, not copied into each (any number of rows).
    pub fn rows(&self) -> Result<KvCache> {
        KvCache::after_shared(&self.cache)
    }
}

/// How many leading tokens all `prompts` share, leaving every prompt at least one token of
/// its own (a row's first token is chosen from its own last prompt position). 0 for fewer
/// than two prompts: a prefix pays off only when it is reused.
pub fn common_prefix_len(prompts: &[&[u32]]) -> usize {
    let Some((first, rest)) = prompts.split_first() else {
        return 0;
    };
    if rest.is_empty() {
        return 0;
    }
    let mut n = first.len();
    for p in rest {
        n = n.min(p.len());
        n = first[..n]
            .iter()
            .zip(&p[..n])
            .take_while(|(a, b)| a == b)
            .count();
    }
    let shortest = prompts.iter().map(|p| p.len()).min().unwrap_or(0);
    n.min(shortest.saturating_sub(1))
}

/// A running batch: every row's keys and values left-padded to one length, and the key mask
/// (rows, cached positions) that is 1 for real tokens and 0 for padding. Rows prefilled apart
/// join it ([`BatchCache::join`]); finished rows leave it ([`BatchCache::advance`]).
#[derive(Debug, Clone, Default)]
pub struct BatchCache {
    cache: KvCache,
    mask: Option<Tensor>,
}

impl BatchCache {
    /// Rows in the batch.
    pub fn rows(&self) -> usize {
        self.mask.as_ref().map_or(0, |m| m.dims()[0])
    }

    pub fn clear(&mut self) {
        *self = BatchCache::default();
    }

    /// The cache a decode step appends to.
    pub fn cache_mut(&mut self) -> &mut KvCache {
        &mut self.cache
    }

    /// Joins rows prefilled apart: their cache and key mask (r, t), after the same shared
    /// prefix as this batch's rows. Whichever side is shorter is padded after the shared
    /// prefix (masked out), so every row keeps its own positions.
    pub fn join(&mut self, mut cache: KvCache, mask: Tensor) -> Result<()> {
        let Some(mine) = self.mask.take() else {
            self.cache = cache;
            self.mask = Some(mask);
            return Ok(());
        };
        let t = mine.dims()[1];
        let t_new = mask.dims()[1];
        let p = self.cache.shared_len();
        let (mine, mask) = if t_new < t {
            cache.pad_front(t - t_new)?;
            (mine, pad_mask(&mask, p, t - t_new)?)
        } else if t_new > t {
            self.cache.pad_front(t_new - t)?;
            (pad_mask(&mine, p, t_new - t)?, mask)
        } else {
            (mine, mask)
        };
        self.cache.append_rows(&cache)?;
        self.mask = Some(Tensor::cat(&[&mine, &mask], 0)?);
        Ok(())
    }

    /// The key mask of the next decode step: the batch's, plus a column for the new tokens.
    pub fn step_mask(&self) -> Result<Tensor> {
        let m = self
            .mask
            .as_ref()
            .ok_or_else(|| CoreError::Internal("a batch without its key mask".into()))?;
        let ones = Tensor::ones((m.dims()[0], 1), DType::F32, m.device())?;
        Ok(Tensor::cat(&[m, &ones], 1)?)
    }

    /// Keeps only the rows `keep` (batch indices, in order); an empty `keep` clears the batch.
    pub fn select(&mut self, keep: &[u32]) -> Result<()> {
        if keep.len() == self.rows() {
            return Ok(());
        }
        if keep.is_empty() {
            self.clear();
            return Ok(());
        }
        let Some(m) = &self.mask else {
            return Ok(());
        };
        let idx = Tensor::new(keep, m.device())?;
        self.cache.select_rows(&idx)?;
        self.mask = Some(m.index_select(&idx, 0)?);
        Ok(())
    }

    /// After a decode step run with `step_mask`: keeps the rows `keep`, and drops the columns
    /// after the shared prefix that every remaining row masks out, so a long row that left
    /// does not keep costing the others.
    pub fn advance(&mut self, step_mask: Tensor, keep: &[u32]) -> Result<()> {
        self.mask = Some(step_mask);
        self.select(keep)?;
        let Some(mask) = &self.mask else {
            return Ok(());
        };
        let p = self.cache.shared_len();
        let used: Vec<f32> = mask.max(0)?.to_vec1()?;
        let dead = used[p..].iter().take_while(|&&v| v == 0.0).count();
        if dead > 0 {
            self.cache.drop_front(dead)?;
            let t = mask.dims()[1];
            self.mask = Some(join_columns(&[
                mask.narrow(1, 0, p)?,
                mask.narrow(1, p + dead, t - p - dead)?,
            ])?);
        }
        Ok(())
    }
}

/// `mask` (r, t) with `n` zero (masked) columns inserted after its first `p`.
fn pad_mask(mask: &Tensor, p: usize, n: usize) -> Result<Tensor> {
    let (r, t) = mask.dims2()?;
    let zeros = Tensor::zeros((r, n), DType::F32, mask.device())?;
    join_columns(&[mask.narrow(1, 0, p)?, zeros, mask.narrow(1, p, t - p)?])
}

/// The non-empty pieces side by side (columns).
fn join_columns(pieces: &[Tensor]) -> Result<Tensor> {
    let pieces: Vec<&Tensor> = pieces.iter().filter(|m| m.dims()[1] > 0).collect();
    Ok(Tensor::cat(&pieces, 1)?)
}

/// How [`generate_queue`] runs its queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueOptions<'a> {
    /// Rows decoded together (0 means all prompts at once).
    pub max_batch: usize,
    /// A finished row's slot takes the next prompt at once (continuous batching); otherwise
    /// the next prompts wait until every row of the batch is done (static batches).
    pub refill: bool,
    /// Keys and values of a prefix every prompt starts with (each prompt must have a token
    /// after it).
    pub prefix: Option<&'a PrefixCache>,
    /// Per prompt, the tokens of a reference answer to score after it, or `None`: each is
    /// scored right after its prompt's prefill, on the keys and values that prefill computed
    /// (see [`score_references`]), and its score handed to `on_done` with the row's output.
    pub references: Option<&'a [Option<Vec<u32>>]>,
}

/// Generates continuations of `prompts` (token ids). Only the new tokens are returned, EOS
/// excluded. `should_stop(row, new_ids)` lets the caller end a row early (stop strings).
pub fn generate_ids(
    model: &Llama,
    stack: &AdapterStack,
    prompts: &[Vec<u32>],
    cfg: &SamplingConfig,
    eos_ids: &[u32],
    pad_id: u32,
    should_stop: &mut dyn FnMut(usize, &[u32]) -> bool,
) -> Result<Vec<Vec<u32>>> {
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
    let opts = QueueOptions {
        max_batch: prompts.len(),
        refill: false,
        prefix: None,
        references: None,
    };
    generate_queue(
        model,
        stack,
        prompts,
        cfg,
        &opts,
        eos_ids,
        pad_id,
        should_stop,
        &mut |row, ids, _| {
            out[row] = ids;
            Ok(true)
        },
    )?;
    Ok(out)
}

/// Checks every prompt against the model's context before any work.
fn check_prompts(model: &Llama, prompts: &[Vec<u32>], max_new_tokens: usize) -> Result<()> {
    if let Some((i, _)) = prompts.iter().enumerate().find(|(_, p)| p.is_empty()) {
        return Err(CoreError::EmptyPrompt { index: i });
    }
    let longest = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
    let limit = model.cfg.max_position_embeddings;
    if longest >= limit {
        return Err(CoreError::TooLong {
            tokens: longest,
            limit,
        });
    }
    if longest + max_new_tokens > limit {
        return Err(CoreError::NoRoomToGenerate {
            prompt: longest,
            new_tokens: max_new_tokens,
            limit,
        });
    }
    Ok(())
}

/// A row being decoded.
struct LiveRow {
    /// Index of its prompt in the queue.
    row: usize,
    /// Position of the token fed next.
    next_pos: u32,
    pending: u32,
    out: Vec<u32>,
    /// Its reference's score, handed on with its output.
    score: Option<RefScore>,
}

/// Decodes a queue of prompts `opts.max_batch` rows at a time and hands each finished row to
/// `on_done(row, new_ids, reference_score)` as soon as it is finished (EOS excluded; the score
/// of the row's reference, when `opts.references` gives one); `on_done` returning false stops
/// the decoder (cancellation), leaving the rest of the queue undone. Row `i` samples with seed
/// `cfg.seed + i`. `should_stop(row, new_ids)` ends a row early (stop strings).
#[allow(clippy::too_many_arguments)]
pub fn generate_queue(
    model: &Llama,
    stack: &AdapterStack,
    prompts: &[Vec<u32>],
    cfg: &SamplingConfig,
    opts: &QueueOptions<'_>,
    eos_ids: &[u32],
    pad_id: u32,
    should_stop: &mut dyn FnMut(usize, &[u32]) -> bool,
    on_done: &mut dyn FnMut(usize, Vec<u32>, Option<RefScore>) -> Result<bool>,
) -> Result<()> {
    let n = prompts.len();
    if n == 0 {
        return Ok(());
    }
    if opts.references.is_some_and(|r| r.len() != n) {
        return Err(CoreError::Internal(
            "a reference list that is not one per prompt".into(),
        ));
    }
    let reference = |row: usize| {
        opts.references
            .and_then(|r| r[row].as_deref())
            .filter(|a| reference_fits(model, prompts[row].len(), a.len()))
    };
    if cfg.max_new_tokens == 0 && opts.references.is_none() {
        for i in 0..n {
            if !on_done(i, Vec::new(), None)? {
                break;
            }
        }
        return Ok(());
    }
    check_prompts(model, prompts, cfg.max_new_tokens)?;
    if let Some(p) = opts.prefix {
        if let Some(i) = prompts.iter().position(|q| !p.covers(q)) {
            return Err(CoreError::Internal(format!(
                "prompt {i} does not start with the shared prefix it is decoded after"
            )));
        }
    }
    let dev = model.device().clone();
    let max_batch = if opts.max_batch == 0 {
        n
    } else {
        opts.max_batch
    };
    let sampling = cfg.sampling();
    let mut samplers: Vec<Option<LogitsProcessor>> = (0..n).map(|_| None).collect();
    let mut live: Vec<LiveRow> = Vec::new();
    let mut batch = BatchCache::default();
    let mut next = 0usize;
    // Whether a row is done after taking `tok`; pushes it to the row's output otherwise.
    let mut take = |r: &mut LiveRow, tok: u32| -> bool {
        if eos_ids.contains(&tok) {
            return true;
        }
        r.out.push(tok);
        r.pending = tok;
        r.out.len() >= cfg.max_new_tokens || should_stop(r.row, &r.out)
    };
    loop {
        let free = max_batch.saturating_sub(live.len());
        if next < n && free > 0 && (opts.refill || live.is_empty()) {
            let count = free.min(n - next);
            let group: Vec<&[u32]> = prompts[next..next + count]
                .iter()
                .map(|p| p.as_slice())
                .collect();
            let (cache, mask, logits) = prefill(model, stack, opts.prefix, &group, pad_id)?;
            let references: Vec<Option<&[u32]>> = (next..next + count).map(reference).collect();
            let mut scores = if references.iter().any(Option::is_some) {
                score_references(model, stack, &cache, &mask, &logits, &group, &references)?
            } else {
                vec![None; count]
            };
            let mut keep = Vec::with_capacity(count);
            for (k, p) in group.iter().enumerate() {
                let row = next + k;
                let score = scores[k].take();
                let sampler = samplers[row].insert(LogitsProcessor::from_sampling(
                    cfg.seed.wrapping_add(row as u64),
                    sampling.clone(),
                ));
                let tok = sampler.sample(&logits.get(k)?)?;
                let mut r = LiveRow {
                    row,
                    next_pos: p.len() as u32,
                    pending: 0,
                    out: Vec::new(),
                    score: None,
                };
                if cfg.max_new_tokens == 0 || take(&mut r, tok) {
                    if !on_done(row, r.out, score)? {
                        return Ok(());
                    }
                } else {
                    keep.push(k as u32);
                    r.score = score;
                    live.push(r);
                }
            }
            next += count;
            if !keep.is_empty() {
                let mut joined = BatchCache {
                    cache,
                    mask: Some(mask),
                };
                joined.select(&keep)?;
                if let Some(mask) = joined.mask {
                    batch.join(joined.cache, mask)?;
                }
            }
            continue;
        }
        if live.is_empty() {
            if next >= n {
                return Ok(());
            }
            continue;
        }
        let b = live.len();
        let mask = batch.step_mask()?;
        let ids: Vec<u32> = live.iter().map(|r| r.pending).collect();
        let pos: Vec<u32> = live.iter().map(|r| r.next_pos).collect();
        let fi = ForwardInput {
            positions: Some(Tensor::from_vec(pos, (b, 1), &dev)?),
            key_mask: Some(mask.clone()),
            last_only: true,
            rows: None,
        };
        let input = Tensor::from_vec(ids, (b, 1), &dev)?;
        // logits: (b, 1, vocab) -> (b, vocab)
        let logits = model
            .forward(&input, &fi, Some(batch.cache_mut()), stack, Mode::Infer)?
            .squeeze(1)?
            .to_dtype(DType::F32)?;
        let mut keep = Vec::with_capacity(b);
        let mut still = Vec::with_capacity(b);
        let mut finished = Vec::new();
        for (k, mut r) in std::mem::take(&mut live).into_iter().enumerate() {
            r.next_pos += 1;
            let sampler = samplers[r.row]
                .as_mut()
                .ok_or_else(|| CoreError::Internal("a live row without its sampler".into()))?;
            let tok = sampler.sample(&logits.get(k)?)?;
            if take(&mut r, tok) {
                finished.push(r);
            } else {
                keep.push(k as u32);
                still.push(r);
            }
        }
        live = still;
        batch.advance(mask, &keep)?;
        for r in finished {
            if !on_done(r.row, r.out, r.score)? {
                return Ok(());
            }
        }
    }
}

/// Prefills a group of prompts together, after `prefix` when given: returns their cache,
/// key mask (k, t) and the logits of each prompt's last position (k, vocab).
fn prefill(
    model: &Llama,
    stack: &AdapterStack,
    prefix: Option<&PrefixCache>,
    prompts: &[&[u32]],
    pad_id: u32,
) -> Result<(KvCache, Tensor, Tensor)> {
    let dev = model.device();
    let k = prompts.len();
    let p = prefix.map_or(0, |c| c.len());
    let longest = prompts.iter().map(|q| q.len() - p).max().unwrap_or(0);
    // Row layout: [prefix][pad][suffix]; without a prefix, plain left padding.
    let mut ids = Vec::with_capacity(k * longest);
    let mut mask = Vec::with_capacity(k * (p + longest));
    let mut pos = Vec::with_capacity(k * longest);
    for q in prompts {
        let suffix = &q[p..];
        let pad = longest - suffix.len();
        ids.extend(std::iter::repeat_n(pad_id, pad).chain(suffix.iter().copied()));
        mask.extend(
            std::iter::repeat_n(1f32, p)
                .chain(std::iter::repeat_n(0f32, pad))
                .chain(std::iter::repeat_n(1f32, suffix.len())),
        );
        pos.extend(std::iter::repeat_n(p as u32, pad).chain(p as u32..q.len() as u32));
    }
    let mask = Tensor::from_vec(mask, (k, p + longest), dev)?;
    let mut cache = match prefix {
        Some(c) => c.rows()?,
        None => model.new_cache(),
    };
    let fi = ForwardInput {
        positions: Some(Tensor::from_vec(pos, (k, longest), dev)?),
        key_mask: Some(mask.clone()),
        last_only: true,
        rows: None,
    };
    let input = Tensor::from_vec(ids, (k, longest), dev)?;
    // logits: (k, 1, vocab) -> (k, vocab)
    let logits = model
        .forward(&input, &fi, Some(&mut cache), stack, Mode::Infer)?
        .squeeze(1)?
        .to_dtype(DType::F32)?;
    Ok((cache, mask, logits))
}

/// Whether a reference of `reference` tokens after a prompt of `prompt` tokens is scored: it
/// has a token, and both fit the model's context (otherwise its score is `None`).
pub fn reference_fits(model: &Llama, prompt: usize, reference: usize) -> bool {
    reference > 0 && prompt + reference <= model.cfg.max_position_embeddings
}

/// The references of a prefilled group of prompts, each scored on the keys and values its
/// prompt's prefill computed (`cache`, key mask `mask` (k, t)), so that no prompt is run twice:
/// a reference's first token from the prefill's last logits (k, vocab), the others from one
/// forward of every reference but its last token, right-padded, after the prompts. `None`
/// where a prompt has no reference.
fn score_references(
    model: &Llama,
    stack: &AdapterStack,
    cache: &KvCache,
    mask: &Tensor,
    last: &Tensor,
    prompts: &[&[u32]],
    references: &[Option<&[u32]>],
) -> Result<Vec<Option<RefScore>>> {
    let dev = model.device();
    let k = prompts.len();
    // Every reference but its last token is fed: token j + 1 is predicted at position j.
    let width = references
        .iter()
        .flatten()
        .map(|a| a.len() - 1)
        .max()
        .unwrap_or(0);
    if k > 1 && cache.len() + width > model.cfg.max_position_embeddings {
        // Each row fits the context, but not the group's layout (padded to its longest
        // prompt, then to its longest reference): each row on its own positions.
        let longest = cache.len() - cache.shared_len();
        return (0..k)
            .map(|r| {
                let mut one = cache.clone();
                one.select_rows(&Tensor::new(&[r as u32], dev)?)?;
                one.drop_front(longest - (prompts[r].len() - cache.shared_len()))?;
                let mask = Tensor::ones((1, one.len()), DType::F32, dev)?;
                let row = last.narrow(0, r, 1)?;
                let mut got = score_references(
                    model,
                    stack,
                    &one,
                    &mask,
                    &row,
                    &prompts[r..=r],
                    &references[r..=r],
                )?;
                Ok(got.pop().flatten())
            })
            .collect();
    }
    // (row of `last` or of the forward's logits, label, owner) for every scored token.
    let mut first = (Vec::new(), Vec::new(), Vec::new());
    let mut rest = (Vec::new(), Vec::new(), Vec::new());
    let mut ids = Vec::with_capacity(k * width);
    let mut pos = Vec::with_capacity(k * width);
    let mut ref_mask = Vec::with_capacity(k * width);
    for (r, (q, a)) in prompts.iter().zip(references).enumerate() {
        let a = a.unwrap_or(&[]);
        if let Some(&t) = a.first() {
            first.0.push(r as u32);
            first.1.push(t);
            first.2.push(r);
        }
        let fed = &a[..a.len().saturating_sub(1)];
        for (j, &t) in a.iter().enumerate().skip(1) {
            rest.0.push((r * width + j - 1) as u32);
            rest.1.push(t);
            rest.2.push(r);
        }
        let pad = width - fed.len();
        ids.extend(fed.iter().copied().chain(std::iter::repeat_n(0, pad)));
        // A pad comes after every real token of its row, so no real token sees it; its own
        // position is any valid one.
        let at = q.len() as u32;
        pos.extend((at..at + fed.len() as u32).chain(std::iter::repeat_n(at, pad)));
        ref_mask.extend(std::iter::repeat_n(1f32, fed.len()).chain(std::iter::repeat_n(0f32, pad)));
    }
    let mut nll = Vec::new();
    if !first.0.is_empty() {
        let rows = Tensor::from_vec(first.0, first.1.len(), dev)?;
        let labels = Tensor::from_vec(first.1.clone(), first.1.len(), dev)?;
        nll.extend(cross_entropy(&last.index_select(&rows, 0)?, &labels)?.to_vec1::<f32>()?);
    }
    if !rest.0.is_empty() {
        let n = rest.0.len();
        let key_mask = Tensor::cat(&[mask, &Tensor::from_vec(ref_mask, (k, width), dev)?], 1)?;
        let fi = ForwardInput {
            positions: Some(Tensor::from_vec(pos, (k, width), dev)?),
            key_mask: Some(key_mask),
            last_only: false,
            rows: Some(Tensor::from_vec(rest.0, n, dev)?),
        };
        // The prompts' cache is shared, not extended: its clone takes the references.
        let mut after = cache.clone();
        // logits: (1, n, vocab) → (n, vocab)
        let logits = model
            .forward(
                &Tensor::from_vec(ids, (k, width), dev)?,
                &fi,
                Some(&mut after),
                stack,
                Mode::Infer,
            )?
            .squeeze(0)?
            .to_dtype(DType::F32)?;
        let labels = Tensor::from_vec(rest.1, n, dev)?;
        nll.extend(cross_entropy(&logits, &labels)?.to_vec1::<f32>()?);
    }
    let mut out: Vec<Option<RefScore>> = references
        .iter()
        .map(|a| {
            a.map(|a| RefScore {
                logprob: 0.0,
                tokens: a.len(),
            })
        })
        .collect();
    for (owner, nll) in first.2.into_iter().chain(rest.2).zip(nll) {
        if let Some(s) = out[owner].as_mut() {
            s.logprob -= f64::from(nll);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
