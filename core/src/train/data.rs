//! From examples to training sequences: instruction records rendered with the model's chat
//! template (or the Alpaca prompt for base models), loss on the response by default; plain
//! text cut into fixed-size chunks with every token a target.

use super::batch::TrainSeq;
use crate::error::{CoreError, Result};
use crate::model::tokenizer::{ChatMessage, SoupTokenizer};
use soup_evals::datasets::Instruction;

/// How examples become token sequences.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Formatting {
    /// Render through the chat template (instruct models) rather than the Alpaca prompt.
    pub chat: bool,
    pub train_on_inputs: bool,
    pub max_len: usize,
    /// Refuse over-long examples instead of truncating them.
    pub strict: bool,
}

/// Counts of what formatting did, reported to the user.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FormatReport {
    pub examples: usize,
    pub truncated: usize,
    /// Examples whose prompt alone filled `max_len`, so no response token was left.
    pub dropped: usize,
}

/// The prompt text for an instruction (what an evaluation also sends).
pub fn instruction_prompt(tok: &SoupTokenizer, ex: &Instruction, chat: bool) -> Result<String> {
    let user = if ex.input.trim().is_empty() {
        ex.instruction.clone()
    } else {
        format!("{}\n\n{}", ex.instruction, ex.input)
    };
    if chat {
        tok.apply_chat_template(&[ChatMessage::new("user", user)], true)
    } else {
        Ok(soup_evals::prompts::alpaca_prompt(
            &ex.instruction,
            &ex.input,
        ))
    }
}

/// The text that ends a response: the end-of-turn token for chat, EOS otherwise.
fn end_of_response(tok: &SoupTokenizer, chat: bool) -> String {
    let eos = tok.eos_ids();
    let id = if chat {
        tok.token_to_id("<|im_end|>")
            .or_else(|| eos.first().copied())
    } else {
        eos.first().copied()
    };
    id.and_then(|i| tok.id_to_token(i)).unwrap_or_default()
}

/// Tokenizes instruction records; prompt and response are tokenized apart so the boundary
/// of the loss mask is exact.
pub fn instruction_seqs(
    tok: &SoupTokenizer,
    data: &[Instruction],
    f: &Formatting,
) -> Result<(Vec<TrainSeq>, FormatReport)> {
    let end = end_of_response(tok, f.chat);
    let mut out = Vec::with_capacity(data.len());
    let mut report = FormatReport::default();
    for (i, ex) in data.iter().enumerate() {
        let prompt = tok.encode(&instruction_prompt(tok, ex, f.chat)?, true)?;
        let response = tok.encode(&format!("{}{end}", ex.output), false)?;
        let mut ids = prompt.clone();
        ids.extend(&response);
        let mut target: Vec<bool> = std::iter::repeat_n(f.train_on_inputs, prompt.len())
            .chain(std::iter::repeat_n(true, response.len()))
            .collect();
        if ids.len() > f.max_len {
            if f.strict {
                return Err(CoreError::ExampleTooLong {
                    example: i + 1,
                    tokens: ids.len(),
                    max_len: f.max_len,
                });
            }
            ids.truncate(f.max_len);
            target.truncate(f.max_len);
            report.truncated += 1;
        }
        if target.iter().skip(1).all(|t| !t) {
            report.dropped += 1;
            continue;
        }
        out.push(TrainSeq { ids, target });
    }
    report.examples = out.len();
    Ok((out, report))
}

/// Cuts a corpus into chunks of `chunk` tokens (the last one shorter), all tokens targets.
pub fn text_seqs(tok: &SoupTokenizer, text: &str, chunk: usize) -> Result<Vec<TrainSeq>> {
    if chunk < 2 {
        return Err(CoreError::bad_setting(
            "chunk length",
            chunk,
            "chunks must be at least 2 tokens",
        ));
    }
    let ids = tok.encode(text, false)?;
    Ok(ids
        .chunks(chunk)
        .filter(|c| c.len() >= 2)
        .map(|c| TrainSeq {
            ids: c.to_vec(),
            target: vec![true; c.len()],
        })
        .collect())
}
