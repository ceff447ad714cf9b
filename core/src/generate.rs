//! Batched generation with a KV cache: left padding with key masks and per-row positions,
//! greedy or temperature/top-p sampling with a seed, EOS and caller-defined stops.
//!
//! Rows that finish leave the batch (their cache rows are dropped), so a batch costs what its
//! longest live row needs. Batched greedy output equals unbatched greedy output token for token.

use crate::error::{CoreError, Result};
use crate::lora::AdapterStack;
use crate::model::{ForwardInput, Llama, Mode};
use candle_core::{DType, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};

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
    let dev = model.device().clone();
    let n = prompts.len();
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); n];
    if n == 0 || cfg.max_new_tokens == 0 {
        return Ok(out);
    }
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
    if longest + cfg.max_new_tokens > limit {
        return Err(CoreError::NoRoomToGenerate {
            prompt: longest,
            new_tokens: cfg.max_new_tokens,
            limit,
        });
    }
    let sampling = if cfg.temperature <= 0.0 {
        Sampling::ArgMax
    } else {
        match cfg.top_p {
            Some(p) if p < 1.0 => Sampling::TopP {
                p,
                temperature: cfg.temperature,
            },
            _ => Sampling::All {
                temperature: cfg.temperature,
            },
        }
    };
    let mut samplers: Vec<LogitsProcessor> = (0..n)
        .map(|i| LogitsProcessor::from_sampling(cfg.seed.wrapping_add(i as u64), sampling.clone()))
        .collect();

    // Left padding: row i starts with `pad[i]` pad tokens.
    let pad: Vec<usize> = prompts.iter().map(|p| longest - p.len()).collect();
    let mut ids = Vec::with_capacity(n * longest);
    let mut mask = Vec::with_capacity(n * longest);
    let mut pos = Vec::with_capacity(n * longest);
    for (p, &np) in prompts.iter().zip(&pad) {
        ids.extend(std::iter::repeat_n(pad_id, np).chain(p.iter().copied()));
        mask.extend(std::iter::repeat_n(0f32, np).chain(std::iter::repeat_n(1f32, p.len())));
        pos.extend(std::iter::repeat_n(0u32, np).chain(0..p.len() as u32));
    }
    let mut key_mask = Tensor::from_vec(mask, (n, longest), &dev)?;
    let mut next_pos: Vec<u32> = prompts.iter().map(|p| p.len() as u32).collect();
    let mut live: Vec<usize> = (0..n).collect();
    let mut cache = model.new_cache();
    let mut input = Tensor::from_vec(ids, (n, longest), &dev)?;
    let mut positions = Tensor::from_vec(pos, (n, longest), &dev)?;

    for _step in 0..cfg.max_new_tokens {
        let fi = ForwardInput {
            positions: Some(positions),
            key_mask: Some(key_mask.clone()),
            last_only: true,
            rows: None,
        };
        // logits: (live, 1, vocab)
        let logits = model.forward(&input, &fi, Some(&mut cache), stack, Mode::Infer)?;
        let logits = logits.squeeze(1)?.to_dtype(DType::F32)?;
        let mut keep = Vec::with_capacity(live.len());
        let mut next = Vec::with_capacity(live.len());
        for (r, &row) in live.iter().enumerate() {
            let tok = samplers[row].sample(&logits.get(r)?)?;
            let done = if eos_ids.contains(&tok) {
                true
            } else {
                out[row].push(tok);
                out[row].len() >= cfg.max_new_tokens || should_stop(row, &out[row])
            };
            if !done {
                keep.push(r as u32);
                next.push(tok);
            }
        }
        if keep.is_empty() {
            break;
        }
        if keep.len() < live.len() {
            let idx = Tensor::new(keep.as_slice(), &dev)?;
            cache.select_rows(&idx)?;
            key_mask = key_mask.index_select(&idx, 0)?;
            live = keep.iter().map(|&r| live[r as usize]).collect();
        }
        let b = live.len();
        key_mask = Tensor::cat(&[&key_mask, &Tensor::ones((b, 1), DType::F32, &dev)?], 1)?;
        input = Tensor::from_vec(next, (b, 1), &dev)?;
        let p: Vec<u32> = live.iter().map(|&row| next_pos[row]).collect();
        for &row in &live {
            next_pos[row] += 1;
        }
        positions = Tensor::from_vec(p, (b, 1), &dev)?;
    }
    Ok(out)
}
