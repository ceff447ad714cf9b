//! The one seam between tasks and models: a batch of prompts in, the newly generated text out.
//!
//! `soup-core` implements [`Generate`] with the real model; tests implement it with fakes. The
//! contract that matters most: [`Completion::text`] holds only the tokens generated after the
//! prompt. The LoRA Soups paper's released evaluation decoded prompt + output and cut at the
//! first `### Response:` of its few-shot prompt, so it scored the first demo's answer for every
//! question; graders here never see the prompt, so that bug cannot recur silently.

use serde::{Deserialize, Serialize};

/// Decoding settings, recorded with every run so a score can be reproduced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenSettings {
    /// Upper bound on generated tokens per prompt.
    pub max_new_tokens: usize,
    /// 0.0 means greedy (the default for evaluation: deterministic and comparable).
    pub temperature: f64,
    /// Nucleus sampling mass; ignored when greedy.
    pub top_p: f64,
    /// Sampling seed; ignored when greedy.
    pub seed: u64,
    /// Generation stops at the first occurrence of any of these in the new text; the stop
    /// string itself is not part of [`Completion::text`].
    pub stop: Vec<String>,
}

impl Default for GenSettings {
    fn default() -> Self {
        GenSettings {
            max_new_tokens: 256,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop: Vec::new(),
        }
    }
}

/// One prompt's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// Text of the newly generated tokens only (never the prompt), cut at a stop string.
    pub text: String,
    /// Tokens in the prompt as the model saw it (after any chat template).
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub output_tokens: usize,
    /// Served from a cache of earlier generations rather than by the model.
    #[serde(default)]
    pub cached: bool,
}

/// Why a generator could not produce completions. Wraps the implementor's own error so the
/// driver can report it without knowing the model's types.
#[derive(Debug, thiserror::Error)]
#[error("generation failed: {source}")]
pub struct GenerateError {
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl GenerateError {
    pub fn new(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        GenerateError {
            source: source.into(),
        }
    }
}

/// A text generator: a batch of prompts in, one [`Completion`] per prompt out, same order.
///
/// Prompts are plain strings: the prompt builders in [`crate::prompts`] can also produce chat
/// messages, which the implementor renders with its model's chat template before calling the
/// model (see [`crate::prompts::Prompt`]).
pub trait Generate {
    fn generate(
        &mut self,
        prompts: &[String],
        settings: &GenSettings,
    ) -> Result<Vec<Completion>, GenerateError>;

    /// The teacher-forced log-likelihood of each `(prompt, reference)` pair: the sum over the
    /// reference's tokens of log p(token | prompt, the reference before it), with the same
    /// weights that generate. A second, continuous metric with more power than right/wrong:
    /// it moves before the answers flip. `Ok(None)`: this generator cannot score (the
    /// default; a remote one); an element `None`: that pair could not be scored (too long).
    fn reference_logprobs(
        &mut self,
        pairs: &[(String, String)],
    ) -> Result<Option<Vec<Option<RefScore>>>, GenerateError> {
        let _ = pairs;
        Ok(None)
    }

    /// Generates for a whole queue of questions, handing each to `on_done(index, completion,
    /// reference score)` as soon as it is finished, in whatever order they finish. A generator
    /// that decodes a queue (continuous batching, a prompt prefix computed once) implements
    /// it; `None` (the default) means it does not, and the caller hands over fixed batches to
    /// [`Generate::generate`] instead. `on_done` returning `Ok(false)` (cancellation) or an
    /// error stops the queue; questions not handed over are not done. Each request's own
    /// stop strings replace `settings.stop`.
    fn generate_stream(
        &mut self,
        requests: &[StreamRequest],
        settings: &GenSettings,
        opts: &StreamOptions,
        on_done: &mut OnDone<'_>,
    ) -> Option<Result<(), GenerateError>> {
        let _ = (requests, settings, opts, on_done);
        None
    }
}

/// One question of a streamed evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamRequest {
    /// The prompt as the model receives it.
    pub prompt: String,
    /// Where its answer ends (not part of the completion's text).
    pub stop: Vec<String>,
    /// A reference answer whose log-likelihood after the prompt is scored with it (joined to
    /// the prompt as it should be read: see [`Generate::reference_logprobs`]).
    pub reference: Option<String>,
}

/// How a queue of questions is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// Rows decoded together.
    pub batch_size: usize,
    /// Compute the prompts' shared prefix (the few-shot demos) once and reuse its keys and
    /// values for every question.
    pub prefix_cache: bool,
    /// A finished question's slot takes the next question at once instead of waiting for
    /// the batch's longest answer.
    pub continuous: bool,
}

/// Receives each finished question of a stream: its index in the requests, its completion
/// and its reference's score (None: no reference, or it could not be scored). `Ok(false)`
/// stops the stream.
pub type OnDone<'a> =
    dyn FnMut(usize, Completion, Option<RefScore>) -> Result<bool, GenerateError> + 'a;

/// The log-likelihood of one reference answer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RefScore {
    /// Sum of the reference tokens' log-probabilities (nats, <= 0).
    pub logprob: f64,
    /// Reference tokens scored.
    pub tokens: usize,
}

/// Cut `text` at the first occurrence of any stop string. Implementors whose decoder only
/// checks stops token by token can call this as a final pass.
pub fn truncate_at_stop<'a>(text: &'a str, stop: &[String]) -> &'a str {
    let cut = stop
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min();
    match cut {
        Some(i) => &text[..i],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_cuts_at_earliest() {
        let stop = vec!["\n\n".to_string(), "Question:".to_string()];
        assert_eq!(truncate_at_stop("abc Question: x\n\n", &stop), "abc ");
        assert_eq!(truncate_at_stop("abc", &stop), "abc");
    }
}
