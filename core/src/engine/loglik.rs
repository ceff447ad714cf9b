//! The teacher-forced log-likelihood of a reference answer: the prompt, then the reference's
//! tokens fed in whatever the model would have said, and the log-probability the model gave
//! each of them summed. It is the evaluation's second metric: right/wrong flips only when an
//! answer crosses a line, the log-likelihood moves with every bit the weights learned, so two
//! compositions that answer the same questions right can still be told apart, paired over the
//! same questions. Inference only (no backward), in batches of similar length.

use crate::error::Result;
use crate::generate::{reference_fits, PrefixCache};
use crate::lora::AdapterStack;
use crate::model::fused::cross_entropy;
use crate::model::{ForwardInput, Llama, Mode};
use crate::runtime::LoadedModel;
use candle_core::{DType, Tensor};
use soup_evals::RefScore;

/// One sequence to score: its token ids and where the scored part starts (every token at
/// index >= `start` is predicted from the ones before it).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredSeq {
    pub ids: Vec<u32>,
    pub start: usize,
}

/// The summed log-probability of `ids[start..]` for each sequence, in input order, batched
/// `batch_size` at a time (0: 8) after sorting by length. A sequence with nothing to score
/// (start at its end, or 0 tokens) gets 0.
pub fn sequence_logprobs(
    model: &Llama,
    stack: &AdapterStack,
    seqs: &[ScoredSeq],
    batch_size: usize,
) -> Result<Vec<f64>> {
    sequence_logprobs_after(model, stack, None, seqs, batch_size)
}

/// [`sequence_logprobs`] after a prefix every sequence starts with, whose keys and values
/// were computed once (the few-shot demos): only the rest of each sequence is run. Every
/// scored token must come after the prefix (`start` > its length); a sequence that does not
/// start with the prefix is an internal error.
pub fn sequence_logprobs_after(
    model: &Llama,
    stack: &AdapterStack,
    prefix: Option<&PrefixCache>,
    seqs: &[ScoredSeq],
    batch_size: usize,
) -> Result<Vec<f64>> {
    let p = prefix.map_or(0, |c| c.len());
    if let Some(c) = prefix {
        if let Some(i) = seqs.iter().position(|s| !c.covers(&s.ids) || s.start <= p) {
            return Err(crate::error::CoreError::Internal(format!(
                "scored sequence {i} does not continue the shared prefix"
            )));
        }
    }
    let mut out = vec![0.0f64; seqs.len()];
    let mut order: Vec<usize> = (0..seqs.len()).collect();
    order.sort_by_key(|&i| seqs[i].ids.len());
    let dev = model.device();
    for batch in order.chunks(batch_size.max(1)) {
        // Only what follows the prefix is run; its positions continue the prefix's.
        let len = batch
            .iter()
            .map(|&i| seqs[i].ids.len() - p)
            .max()
            .unwrap_or(0);
        // Right padding: under the causal mask a real token never sees the pads after it.
        let mut ids = Vec::with_capacity(batch.len() * len);
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        let mut owner = Vec::new();
        for (r, &i) in batch.iter().enumerate() {
            let s = &seqs[i];
            ids.extend(s.ids[p..].iter().copied());
            ids.extend(std::iter::repeat_n(0u32, len - (s.ids.len() - p)));
            for t in s.start.max(1)..s.ids.len() {
                rows.push((r * len + t - 1 - p) as u32);
                labels.push(s.ids[t]);
                owner.push(i);
            }
        }
        if rows.is_empty() {
            continue;
        }
        let n = rows.len();
        // ids: (b, len); logits: (1, n, vocab) at the rows that predict a scored token.
        let ids = Tensor::from_vec(ids, (batch.len(), len), dev)?;
        let input = ForwardInput {
            rows: Some(Tensor::from_vec(rows, n, dev)?),
            ..Default::default()
        };
        let mut cache = prefix.map(|c| c.rows()).transpose()?;
        let logits = model
            .forward(&ids, &input, cache.as_mut(), stack, Mode::Infer)?
            .squeeze(0)?
            .to_dtype(DType::F32)?;
        let labels = Tensor::from_vec(labels, n, dev)?;
        // nll: (n,) minus the log-probability of each scored token.
        let nll = cross_entropy(&logits, &labels)?.to_vec1::<f32>()?;
        for (i, nll) in owner.into_iter().zip(nll) {
            out[i] -= f64::from(nll);
        }
    }
    Ok(out)
}

/// The log-likelihood of each `(prompt, reference)` pair under `model` with `stack`: the
/// prompt tokenized as generation tokenizes it (with the tokenizer's special tokens), the
/// reference on its own and appended, so the reference's tokens are the same after any
/// prompt. A pair longer than the model's context, or whose reference has no token, is `None`.
pub fn reference_logprobs(
    model: &LoadedModel,
    stack: &AdapterStack,
    pairs: &[(String, String)],
    batch_size: usize,
) -> Result<Vec<Option<RefScore>>> {
    reference_logprobs_after(model, stack, None, pairs, batch_size)
}

/// [`reference_logprobs`] after a prefix of the prompts' tokens computed once; a pair whose
/// prompt does not continue the prefix is scored in full.
pub fn reference_logprobs_after(
    model: &LoadedModel,
    stack: &AdapterStack,
    prefix: Option<&PrefixCache>,
    pairs: &[(String, String)],
    batch_size: usize,
) -> Result<Vec<Option<RefScore>>> {
    let mut seqs = Vec::new();
    let mut which = Vec::new();
    let mut out = vec![None; pairs.len()];
    for (i, (prompt, reference)) in pairs.iter().enumerate() {
        let mut ids = model.tokenizer.encode(prompt, true)?;
        let start = ids.len();
        let answer = model.tokenizer.encode(reference, false)?;
        if !reference_fits(&model.model, start, answer.len()) {
            continue;
        }
        ids.extend(answer);
        which.push(i);
        seqs.push(ScoredSeq { ids, start });
    }
    // Sequences after the prefix, and any others (scored in full).
    let (after, full): (Vec<usize>, Vec<usize>) = (0..seqs.len())
        .partition(|&j| prefix.is_some_and(|c| c.covers(&seqs[j].ids) && seqs[j].start > c.len()));
    let mut sums = vec![0.0; seqs.len()];
    for (set, pre) in [(after, prefix), (full, None)] {
        if set.is_empty() {
            continue;
        }
        let part: Vec<ScoredSeq> = set.iter().map(|&j| seqs[j].clone()).collect();
        let got = sequence_logprobs_after(&model.model, stack, pre, &part, batch_size)?;
        for (j, v) in set.into_iter().zip(got) {
            sums[j] = v;
        }
    }
    for ((i, s), logprob) in which.into_iter().zip(&seqs).zip(sums) {
        out[i] = Some(RefScore {
            logprob,
            tokens: s.ids.len() - s.start,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Precision;
    use candle_core::Device;
    use std::path::PathBuf;

    fn tiny() -> LoadedModel {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/reference/tiny-llama");
        crate::runtime::load_model_at("tiny", &dir, &Device::Cpu, Precision::F32).unwrap()
    }

    /// The log-likelihood by hand: the full logits of one unpadded sequence, a log-softmax
    /// written out in f64, the label's entry taken at every scored position.
    fn by_hand(model: &Llama, seq: &ScoredSeq) -> f64 {
        let ids = Tensor::from_vec(seq.ids.clone(), (1, seq.ids.len()), &Device::Cpu).unwrap();
        let logits = model
            .forward(
                &ids,
                &ForwardInput::default(),
                None,
                &AdapterStack::base(),
                Mode::Infer,
            )
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let mut total = 0.0f64;
        for t in seq.start.max(1)..seq.ids.len() {
            let row = &logits[t - 1];
            let m = row
                .iter()
                .fold(f64::NEG_INFINITY, |a, &x| a.max(f64::from(x)));
            let lse = m + row
                .iter()
                .map(|&x| (f64::from(x) - m).exp())
                .sum::<f64>()
                .ln();
            total += f64::from(row[seq.ids[t] as usize]) - lse;
        }
        total
    }

    #[test]
    fn batched_log_likelihood_equals_the_hand_computed_log_softmax_sum() {
        let m = tiny();
        let vocab = m.model.cfg.vocab_size as u32;
        // Different lengths, batched together (padding), and a scored part that starts late.
        let seqs = vec![
            ScoredSeq {
                ids: (1..12).map(|i| (i * 7) % vocab).collect(),
                start: 5,
            },
            ScoredSeq {
                ids: (1..5).map(|i| (i * 13) % vocab).collect(),
                start: 1,
            },
            ScoredSeq {
                ids: (1..9).map(|i| (i * 3 + 2) % vocab).collect(),
                start: 8,
            },
        ];
        let got = sequence_logprobs(&m.model, &AdapterStack::base(), &seqs, 3).unwrap();
        for (s, g) in seqs.iter().zip(&got) {
            let want = by_hand(&m.model, s);
            assert!(
                (g - want).abs() < 1e-3 * (1.0 + want.abs()),
                "{g} vs {want}"
            );
        }
        assert!(got[0] < 0.0 && got[1] < 0.0);
        // Nothing to score: 0.
        assert_eq!(got[2], 0.0);
        // A longer reference of the same prompt has a lower (more negative) log-likelihood.
        let pairs = vec![
            ("Question: 2+2?\nAnswer:".to_string(), " 4".to_string()),
            (
                "Question: 2+2?\nAnswer:".to_string(),
                " 4 4 4 4".to_string(),
            ),
            ("x".to_string(), String::new()),
        ];
        let r = reference_logprobs(&m, &AdapterStack::base(), &pairs, 8).unwrap();
        let (a, b) = (r[0].unwrap(), r[1].unwrap());
        assert!(a.tokens >= 1 && b.tokens > a.tokens);
        assert!(b.logprob < a.logprob);
        assert!(r[2].is_none());
    }
}
