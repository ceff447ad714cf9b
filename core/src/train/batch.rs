//! Training sequences, padding-aware batching with length bucketing, and the masked loss.
//!
//! candle's cross-entropy has no ignore-index: the loss is computed on the target positions
//! alone, selected before the lm_head so padding and prompt tokens cost nothing there.

use crate::error::{CoreError, Result};
use crate::lora::AdapterStack;
use crate::model::{ForwardInput, Llama, Mode, StackGrads};
use candle_core::{Tensor, Var};
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

/// A batch laid out for the model: right-padded ids, and the flattened positions whose next
/// token is a target, with those targets.
struct Prepared {
    ids: Tensor,
    input: ForwardInput,
    labels: Tensor,
    n_targets: usize,
    tokens: usize,
}

fn prepare(model: &Llama, batch: &[&TrainSeq]) -> Result<Prepared> {
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
        return Err(CoreError::NoTrainingData(
            "a batch has no target tokens: are the responses empty or truncated away?",
        ));
    }
    let n = rows.len();
    Ok(Prepared {
        ids: Tensor::from_vec(ids, (b, len), dev)?,
        input: ForwardInput {
            rows: Some(Tensor::from_vec(rows, n, dev)?),
            ..Default::default()
        },
        labels: Tensor::from_vec(labels, n, dev)?,
        n_targets: n,
        tokens,
    })
}

/// Mean cross-entropy over the target tokens of `batch`; returns the loss, the number of
/// targets and the number of real (non-pad) tokens. With `Mode::Train` the loss carries the
/// whole forward graph; training itself uses [`loss_and_grads`], which does not.
pub fn batch_loss(
    model: &Llama,
    stack: &AdapterStack,
    batch: &[&TrainSeq],
    mode: Mode,
) -> Result<(Tensor, usize, usize)> {
    let p = prepare(model, batch)?;
    // logits: (1, n, vocab) → (n, vocab)
    let logits = model
        .forward(&p.ids, &p.input, None, stack, mode)?
        .squeeze(0)?;
    let loss = candle_nn::loss::cross_entropy(&logits, &p.labels)?;
    Ok((loss, p.n_targets, p.tokens))
}

/// One batch's loss and the gradients of `scale` × loss with respect to `vars`.
pub struct LossGrads {
    pub loss: f64,
    pub n_targets: usize,
    pub tokens: usize,
    /// In the order of `vars`; `None` for a variable the loss does not depend on.
    pub grads: Vec<Option<Tensor>>,
}

/// The loss of `batch` and its gradients, by the hand-written backward
/// ([`Llama::layer_backward`]): the forward runs the fused kernels without a graph, and each
/// layer records what its backward needs (a tape) as long as the tapes fit a memory budget;
/// the layers below keep only their input and are run again, taped, when the backward reaches
/// them (activation checkpointing, for one more forward of those layers).
pub fn loss_and_grads(
    model: &Llama,
    stack: &AdapterStack,
    batch: &[&TrainSeq],
    mode: Mode,
    vars: &[Var],
    scale: f64,
) -> Result<LossGrads> {
    let len = batch.iter().map(|s| s.ids.len()).max().unwrap_or(0);
    let keep = taped_layers(model, batch.len(), len);
    loss_and_grads_keeping(model, stack, batch, mode, vars, scale, keep)
}

/// [`loss_and_grads`] with the number of top layers taped in the forward (the others are run
/// again in the backward): all of them is plain backpropagation.
#[allow(clippy::too_many_arguments)]
pub fn loss_and_grads_keeping(
    model: &Llama,
    stack: &AdapterStack,
    batch: &[&TrainSeq],
    mode: Mode,
    vars: &[Var],
    scale: f64,
    keep: usize,
) -> Result<LossGrads> {
    let p = prepare(model, batch)?;
    let frame = model.frame(&p.ids, &p.input, 0)?;
    let n_layers = model.layers.len();
    let split = n_layers - keep.min(n_layers);
    // inputs[l]: the residual stream entering layer l < split; tapes: layers split.. in order.
    let mut inputs = Vec::with_capacity(split);
    let mut tapes = Vec::with_capacity(n_layers - split);
    let mut x = model.embed(&p.ids)?;
    for l in 0..n_layers {
        if l < split {
            let y = model.layer_forward(l, &x, &frame, stack, mode.without_graph(), None)?;
            inputs.push(std::mem::replace(&mut x, y));
        } else {
            let (y, tape) = model.layer_forward_taped(l, &x, &frame, stack, mode)?;
            tapes.push(tape);
            x = y;
        }
    }
    let rows = p.input.rows.as_ref().expect("prepare selects target rows");
    let (loss, mut g) = model.head_loss_backward(&x, rows, &p.labels, scale)?;
    drop(x);
    let mut grads = StackGrads::default();
    for l in (0..n_layers).rev() {
        let tape = match tapes.pop() {
            Some(t) => t,
            None => {
                let x = inputs.pop().expect("one input per layer without a tape");
                model.layer_forward_taped(l, &x, &frame, stack, mode)?.1
            }
        };
        // The embeddings are constants: the bottom layer's input needs no gradient.
        match model.layer_backward(l, tape, &frame, stack, mode, &g, &mut grads, l > 0)? {
            Some(gx) => g = gx,
            None => break,
        }
    }
    Ok(LossGrads {
        loss,
        n_targets: p.n_targets,
        tokens: p.tokens,
        grads: grads.for_vars(vars)?,
    })
}

/// Memory that the layers' tapes may take during a step: a layer without one costs its
/// forward again in the backward.
const TAPE_BYTES: usize = 2 << 30;

/// How many top layers' tapes fit [`TAPE_BYTES`]. A tape holds per token 4 hidden-sized and 2
/// kv-sized vectors, 2 intermediate-sized ones and a row of attention probabilities per head
/// (SmolLM2 at batch 8 x 256 in f32: 66 MB a layer, so all 30 fit). Dropout's masks are drawn
/// again in the backward, not kept.
fn taped_layers(model: &Llama, batch: usize, len: usize) -> usize {
    let c = &model.cfg;
    let kv = c.num_key_value_heads * c.head_dim;
    let per_token =
        4 * c.hidden_size + 2 * kv + 2 * c.intermediate_size + c.num_attention_heads * len;
    let per_layer = batch * len * per_token * model.dtype().size_in_bytes();
    TAPE_BYTES / per_layer.max(1)
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
