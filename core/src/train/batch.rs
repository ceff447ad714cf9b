//! Training sequences, padding-aware batching with length bucketing, and the masked loss.
//!
//! candle's cross-entropy has no ignore-index: the loss is computed on the target positions
//! alone, selected before the lm_head so padding and prompt tokens cost nothing there.

use crate::error::{CoreError, Result};
use crate::lora::AdapterStack;
use crate::model::{ForwardInput, Llama, Mode};
use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

/// One tokenized example: `target[t]` says whether token t is predicted (from t - 1) in the loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSeq {
    pub ids: Vec<u32>,
    pub target: Vec<bool>,
}

impl TrainSeq {
    pub fn n_targets(&self) -> usize {
        self.target.iter().skip(1).filter(|t| **t).count()
    }
}

/// Splits `seqs` into batches of `batch_size` with similar lengths (less padding): shuffle,
/// sort each window of 32 batches by length, then shuffle the batches. Deterministic in `seed`.
pub fn make_batches(
    n_seqs: usize,
    lens: &[usize],
    batch_size: usize,
    seed: u64,
) -> Vec<Vec<usize>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut idx: Vec<usize> = (0..n_seqs).collect();
    idx.shuffle(&mut rng);
    let window = batch_size.max(1) * 32;
    let mut batches = Vec::new();
    for chunk in idx.chunks_mut(window) {
        chunk.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
        for b in chunk.chunks(batch_size.max(1)) {
            batches.push(b.to_vec());
        }
    }
    batches.shuffle(&mut rng);
    batches
}

/// Mean cross-entropy over the target tokens of `batch`; returns the loss, the number of
/// targets and the number of real (non-pad) tokens.
pub fn batch_loss(
    model: &Llama,
    stack: &AdapterStack,
    batch: &[&TrainSeq],
    mode: Mode,
) -> Result<(Tensor, usize, usize)> {
    let dev = model.device();
    let b = batch.len();
    let len = batch.iter().map(|s| s.ids.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(b * len);
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    let mut tokens = 0;
    for (r, s) in batch.iter().enumerate() {
        tokens += s.ids.len();
        ids.extend(s.ids.iter().copied());
        ids.extend(std::iter::repeat_n(0u32, len - s.ids.len()));
        for t in 1..s.ids.len() {
            if s.target[t] {
                rows.push((r * len + t - 1) as u32);
                labels.push(s.ids[t]);
            }
        }
    }
    if rows.is_empty() {
        return Err(CoreError::Invalid(
            "a batch has no target tokens: are the responses empty or truncated away?".into(),
        ));
    }
    let n = rows.len();
    let input = ForwardInput {
        rows: Some(Tensor::from_vec(rows, n, dev)?),
        ..Default::default()
    };
    let ids = Tensor::from_vec(ids, (b, len), dev)?;
    // logits: (1, n, vocab) → (n, vocab)
    let logits = model.forward(&ids, &input, None, stack, mode)?.squeeze(0)?;
    let labels = Tensor::from_vec(labels, n, dev)?;
    let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
    Ok((loss, n, tokens))
}

/// Mean loss over every target of `seqs` (inference path, no gradients).
pub fn eval_loss(
    model: &Llama,
    stack: &AdapterStack,
    seqs: &[TrainSeq],
    batch_size: usize,
) -> Result<f64> {
    let mut sum = 0f64;
    let mut count = 0usize;
    let lens: Vec<usize> = seqs.iter().map(|s| s.ids.len()).collect();
    for batch in make_batches(seqs.len(), &lens, batch_size, 0) {
        let refs: Vec<&TrainSeq> = batch.iter().map(|&i| &seqs[i]).collect();
        if refs.iter().all(|s| s.n_targets() == 0) {
            continue;
        }
        let (loss, n, _) = batch_loss(model, stack, &refs, Mode::Infer)?;
        sum += loss.to_scalar::<f32>()? as f64 * n as f64;
        count += n;
    }
    Ok(if count == 0 {
        f64::NAN
    } else {
        sum / count as f64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_everything_once_and_are_deterministic() {
        let lens: Vec<usize> = (0..100).map(|i| (i * 37) % 50 + 1).collect();
        let a = make_batches(100, &lens, 8, 3);
        let b = make_batches(100, &lens, 8, 3);
        assert_eq!(a, b);
        let mut all: Vec<usize> = a.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_ne!(a, make_batches(100, &lens, 8, 4));
    }
}
