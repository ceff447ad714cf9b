//! Training sequences, padding-aware batching with length bucketing, and the masked loss.
//!
//! candle's cross-entropy has no ignore-index: the loss is computed on the target positions
//! alone, selected before the lm_head so padding and prompt tokens cost nothing there.

use crate::error::{CoreError, Result};
use crate::lora::AdapterStack;
use crate::model::{ForwardInput, Llama, Mode};
use candle_core::backprop::GradStore;
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
        return Err(CoreError::Invalid(
            "a batch has no target tokens: are the responses empty or truncated away?".into(),
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

/// The loss of `batch` and its gradients, with activation checkpointing per layer: the forward
/// runs without a graph and keeps only each layer's input; the backward then rebuilds one
/// layer's graph at a time from its input and pushes the incoming gradient through it. Peak
/// memory is one layer's graph plus the residual stream of every layer, instead of the whole
/// model's graph, for one more forward pass (on the fused kernels) per step. The top layers
/// whose graphs fit a memory budget keep them from the forward instead.
pub fn loss_and_grads(
    model: &Llama,
    stack: &AdapterStack,
    batch: &[&TrainSeq],
    mode: Mode,
    vars: &[Var],
    scale: f64,
) -> Result<LossGrads> {
    let len = batch.iter().map(|s| s.ids.len()).max().unwrap_or(0);
    let keep = kept_layers(model, batch.len(), len, mode);
    loss_and_grads_keeping(model, stack, batch, mode, vars, scale, keep)
}

/// [`loss_and_grads`] with the number of top layers whose graph is kept from the forward
/// (the others are recomputed one at a time): all of them is plain backpropagation.
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
    let keep = keep.min(n_layers);
    let split = n_layers - keep;
    // inputs[l]: the residual stream entering layer l < split.
    let mut inputs = Vec::with_capacity(split + 1);
    inputs.push(model.embed(&p.ids)?);
    for l in 0..split {
        let x = model.layer_forward(l, &inputs[l], &frame, stack, mode.without_graph(), None)?;
        inputs.push(x.detach());
    }
    let kept_in = inputs.pop().expect("the embeddings are pushed first");
    // The embeddings need no gradient: below every layer, the input stays a constant.
    let kept_in = if split > 0 {
        Var::from_tensor(&kept_in)?.into_inner()
    } else {
        kept_in
    };
    let mut kept_out = kept_in.clone();
    for l in split..n_layers {
        kept_out = model.layer_forward(l, &kept_out, &frame, stack, mode, None)?;
    }
    let mut grads: Vec<Option<Tensor>> = vec![None; vars.len()];
    let mut collect = |g: &GradStore| -> Result<()> {
        for (acc, v) in grads.iter_mut().zip(vars) {
            if let Some(gi) = g.get(v.as_tensor()) {
                add_grad(acc, gi.clone())?;
            }
        }
        Ok(())
    };
    // The head in chunks of rows: (rows x vocab) logits and their gradient are the largest
    // tensors of a step, and the head has nothing to train, so each chunk's graph is dropped
    // as soon as its gradient reaches the residual stream.
    let top = Var::from_tensor(&kept_out.detach())?;
    let rows = p.input.rows.as_ref().expect("prepare selects target rows");
    let mut loss_value = 0f64;
    let mut upstream: Option<Tensor> = None;
    for start in (0..p.n_targets).step_by(HEAD_CHUNK) {
        let len = HEAD_CHUNK.min(p.n_targets - start);
        let input = ForwardInput {
            rows: Some(rows.narrow(0, start, len)?),
            ..Default::default()
        };
        let logits = model.head(top.as_tensor(), &input, mode)?.squeeze(0)?;
        let labels = p.labels.narrow(0, start, len)?;
        // The chunk's share of the mean over all targets.
        let nll = crate::model::ops::cross_entropy_rows(&logits, &labels)?;
        let loss = (nll.sum_all()? / p.n_targets as f64)?;
        loss_value += loss.to_scalar::<f32>()? as f64;
        let g = (loss * scale)?.backward()?;
        let gx = grad_of(&g, top.as_tensor())?;
        upstream = Some(match upstream {
            Some(u) => (u + gx)?,
            None => gx,
        });
    }
    let mut upstream = upstream.expect("prepare refuses a batch without targets");
    if keep > 0 {
        let g = (kept_out * &upstream)?.sum_all()?.backward()?;
        collect(&g)?;
        if split > 0 {
            upstream = grad_of(&g, &kept_in)?;
        }
    }
    for l in (0..split).rev() {
        let x = inputs.pop().expect("one input per recomputed layer");
        let x = if l > 0 {
            Var::from_tensor(&x)?.into_inner()
        } else {
            x
        };
        let y = model.layer_forward(l, &x, &frame, stack, mode, None)?;
        let g = (y * &upstream)?.sum_all()?.backward()?;
        collect(&g)?;
        if l > 0 {
            upstream = grad_of(&g, &x)?;
        }
    }
    Ok(LossGrads {
        loss: loss_value,
        n_targets: p.n_targets,
        tokens: p.tokens,
        grads,
    })
}

/// Memory that the graphs of the top layers may take during a step: recomputing a layer costs
/// its forward again, keeping it costs its graph. 2 GiB keeps 7 of SmolLM2's 30 layers at
/// batch 8 x 256 (peak about 3.5 GB).
const KEPT_GRAPH_BYTES: usize = 2 << 30;

/// How many top layers fit [`KEPT_GRAPH_BYTES`]. A layer's graph per token is about 14 hidden,
/// 9 intermediate and 5 x heads x length values (measured on SmolLM2: 280 MB a layer at
/// batch 8 x 256 in f32), and LoRA dropout's masks and masked inputs make it about 1.6 times
/// that (a peak of 4.1 GB instead of 3.0 when it was not counted).
fn kept_layers(model: &Llama, batch: usize, len: usize, mode: Mode) -> usize {
    let c = &model.cfg;
    let per_token = 14 * c.hidden_size + 9 * c.intermediate_size + 5 * c.num_attention_heads * len;
    let mut per_layer = batch * len * per_token * model.dtype().size_in_bytes();
    if matches!(mode, Mode::Train { dropout, .. } if dropout > 0.0) {
        per_layer = per_layer * 8 / 5;
    }
    KEPT_GRAPH_BYTES / per_layer.max(1)
}

/// Target rows per chunk of the head in [`loss_and_grads`]: 256 x 49,152 logits are 50 MB.
const HEAD_CHUNK: usize = 256;

/// Adds `g` to the gradient accumulated in `acc` (layers of one step, micro-batches of one
/// optimizer step).
pub(crate) fn add_grad(acc: &mut Option<Tensor>, g: Tensor) -> Result<()> {
    *acc = Some(match acc.take() {
        Some(a) => (a + g)?,
        None => g,
    });
    Ok(())
}

fn grad_of(g: &GradStore, x: &Tensor) -> Result<Tensor> {
    g.get(x).cloned().ok_or_else(|| {
        CoreError::Invalid("no gradient reached a layer's input: is the stack trainable?".into())
    })
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
