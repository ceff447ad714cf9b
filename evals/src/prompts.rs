//! Prompts written by the project: few-shot program-of-thought for code-math, chain of thought
//! for the math skill, short-answer QA (closed book for the manual, with context for reading
//! comprehension), and the Alpaca template used in skill training.
//!
//! Each builder returns a [`Prompt`] holding both a plain-text form (for base models) and a
//! list of chat messages (for instruct models: `soup-core` renders them with the model's own
//! chat template), so one task definition serves both kinds of model. Stop strings go with
//! the prompt shape that needs them.

use serde::{Deserialize, Serialize};

/// One chat turn; `role` is "system", "user" or "assistant".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.to_string(),
            content: content.into(),
        }
    }
}

/// A prompt in both forms, each with the stop strings that end an answer in that form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prompt {
    /// Few-shot text for base models; the model continues after its end.
    pub text: String,
    /// The same demos as chat turns, ending with the user's question.
    pub messages: Vec<ChatMessage>,
    /// Stop strings for the plain form.
    pub stop: Vec<String>,
    /// Stop strings for the chat form, beside the model's end-of-turn token: only those that
    /// can end an answer and never cut one (a chat answer may run over paragraphs, so a blank
    /// line is not an end there). Without them a chatty model runs every batch to its token
    /// limit.
    #[serde(default)]
    pub chat_stop: Vec<String>,
}

/// Which form of a [`Prompt`] a run uses (recorded with the run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptStyle {
    Plain,
    Chat,
}

/// Program-of-thought demos: small numbers, two to three steps, fixed phrasings, named
/// variables, `result` returned; the same style as the synthetic code-math set.
pub const POT_DEMOS: [(&str, &str); 3] = [
    (
        "Tom has 3 boxes. Each box holds 4 pens. He gives away 5 pens. How many pens does Tom have left?",
        "def solution():\n    boxes = 3\n    pens_per_box = 4\n    given_away = 5\n    total_pens = boxes * pens_per_box\n    result = total_pens - given_away\n    return result",
    ),
    (
        "A baker makes 12 rolls in the morning and 9 rolls in the afternoon. She sells 15 rolls. How many rolls are left?",
        "def solution():\n    morning = 12\n    afternoon = 9\n    sold = 15\n    made = morning + afternoon\n    result = made - sold\n    return result",
    ),
    (
        "Mia buys 4 notebooks that cost 3 dollars each and a bag that costs 7 dollars. How many dollars does she spend?",
        "def solution():\n    notebooks = 4\n    notebook_cost = 3\n    bag_cost = 7\n    result = notebooks * notebook_cost + bag_cost\n    return result",
    ),
];

const POT_INSTRUCTION: &str = "Solve each math word problem by writing a Python function solution() that returns the answer as a number.";

/// The code skill's trigger, in the words its training instructions use ("Write a Python
/// function solution() that returns ..."); chat turns carry it where the skill learned it.
const POT_ASK: &str = "Write a Python function solution() that returns the answer.";

/// The chat turn for one word problem: the question, then the code skill's trigger.
fn pot_ask(question: &str) -> String {
    format!("{question}\n{POT_ASK}")
}

/// A program in the fenced form the prompts' demos and the code skill's answers use.
pub fn fenced(program: &str) -> String {
    format!("```python\n{program}\n```")
}

/// Few-shot program-of-thought prompt (`shots` <= 3 demos). In chat form every user turn
/// ends with the code skill's trigger, as the code LoRA saw it in training (a system message
/// alone does not reach an adapter trained on user turns).
pub fn pot_prompt(question: &str, shots: usize) -> Prompt {
    let demos = &POT_DEMOS[..shots.min(POT_DEMOS.len())];
    let mut text = format!("{POT_INSTRUCTION}\n\n");
    let mut messages = Vec::new();
    for (q, p) in demos {
        text.push_str(&format!("Question: {q}\nAnswer:\n{}\n\n", fenced(p)));
        messages.push(ChatMessage::new("user", pot_ask(q)));
        messages.push(ChatMessage::new("assistant", fenced(p)));
    }
    text.push_str(&format!("Question: {question}\nAnswer:\n"));
    messages.push(ChatMessage::new("user", pot_ask(question)));
    Prompt {
        text,
        messages,
        stop: pot_stop(),
        chat_stop: program_chat_stop(),
    }
}

/// Stops for program-of-thought: the next demo's header. The closing fence is kept (it
/// delimits the program) so "```" is not a stop.
pub fn pot_stop() -> Vec<String> {
    vec!["\nQuestion:".into(), "\n\n\n".into()]
}

/// Stops for a fenced program in chat form: the closing fence followed by a blank line (the
/// explanation a chat model likes to add). An opening fence is followed by code, never by a
/// blank line, so this cannot cut the program before it starts; the program extractor reads
/// a block whose closing fence was cut.
pub fn program_chat_stop() -> Vec<String> {
    vec![FENCE_THEN_BLANK.into(), "\n\n\n".into()]
}

/// A closing code fence and a blank line.
pub const FENCE_THEN_BLANK: &str = "```\n\n";

/// Chain-of-thought demos for the math skill, in the synthetic set's style: the given
/// quantities by name, one equation per step, `#### N` last (GSM8K's final-answer line).
pub const COT_DEMOS: [(&str, &str); 2] = [
    (
        "Tom has 3 boxes. Each box holds 4 pens. He gives away 5 pens. How many pens does Tom have left?",
        "boxes = 3, pens_per_box = 4, given_away = 5.\ntotal_pens = boxes * pens_per_box = 3 * 4 = 12.\nresult = total_pens - given_away = 12 - 5 = 7.\n#### 7",
    ),
    (
        "A baker makes 12 rolls in the morning and 9 rolls in the afternoon. She sells 15 rolls. How many rolls are left?",
        "morning = 12, afternoon = 9, sold = 15.\nmade = morning + afternoon = 12 + 9 = 21.\nresult = made - sold = 21 - 15 = 6.\n#### 6",
    ),
];

const COT_INSTRUCTION: &str =
    "Solve each math word problem step by step and give the final answer after ####.";

/// Few-shot chain-of-thought prompt for the math skill.
pub fn cot_prompt(question: &str, shots: usize) -> Prompt {
    let demos = &COT_DEMOS[..shots.min(COT_DEMOS.len())];
    let mut text = format!("{COT_INSTRUCTION}\n\n");
    let mut messages = vec![ChatMessage::new("system", COT_INSTRUCTION)];
    for (q, a) in demos {
        text.push_str(&format!("Question: {q}\nAnswer: {a}\n\n"));
        messages.push(ChatMessage::new("user", *q));
        messages.push(ChatMessage::new("assistant", *a));
    }
    text.push_str(&format!("Question: {question}\nAnswer:"));
    messages.push(ChatMessage::new("user", question));
    Prompt {
        text,
        messages,
        stop: vec!["\nQuestion:".into(), "\n\n".into()],
        chat_stop: vec!["\nQuestion:".into(), "\n\n\n".into()],
    }
}

/// The reading-comprehension instruction of the LoRA Soups sets, kept verbatim so adapters
/// trained on their data see the phrasing they learned.
pub const RC_INSTRUCTION: &str = "Please use the information in the provided context to respond to the question below. If there is not enough information provided, answer with 'Not in context'.";

const CLOSED_BOOK_INSTRUCTION: &str = "Answer the question in a few words.";

/// Short-answer QA. With a context it is reading comprehension (RC phrasing, "Not in
/// context" allowed); without one it is closed book, as manual-QA is evaluated: the
/// knowledge has to come from the weights.
pub fn qa_prompt(question: &str, context: Option<&str>) -> Prompt {
    let user = match context {
        Some(c) => format!("{RC_INSTRUCTION}\n\nContext: {c}\n\nQuestion: {question}"),
        None => format!("{CLOSED_BOOK_INSTRUCTION}\n\nQuestion: {question}"),
    };
    Prompt {
        text: format!("{user}\nAnswer:"),
        messages: vec![ChatMessage::new("user", user)],
        stop: vec!["\n".into()],
        chat_stop: vec!["\n".into()],
    }
}

/// The code skill's own test: the exercise as the skill was trained on it (the instruction,
/// then its input), zero-shot; the answer is a fenced program.
pub fn code_prompt(instruction: &str, input: &str) -> Prompt {
    let user = if input.trim().is_empty() {
        instruction.to_string()
    } else {
        format!("{instruction}\n\n{input}")
    };
    Prompt {
        text: alpaca_prompt(instruction, input),
        messages: vec![ChatMessage::new("user", user)],
        stop: alpaca_stop(),
        chat_stop: program_chat_stop(),
    }
}

/// The Alpaca template used for skill training, so training and evaluation agree on it.
/// The response (the training target) follows the returned text.
pub fn alpaca_prompt(instruction: &str, input: &str) -> String {
    if input.trim().is_empty() {
        format!("Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")
    } else {
        format!("Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
    }
}

/// Few-shot prompt in the Alpaca template, for adapters trained with [`alpaca_prompt`] (the
/// LoRA Soups setup): each demo is a full instruction/response pair, the question comes last
/// with an open response. Stop at the next `### Instruction:`.
pub fn alpaca_few_shot(demos: &[(&str, &str)], instruction: &str) -> Prompt {
    let mut text = String::new();
    let mut messages = Vec::new();
    for (q, a) in demos {
        text.push_str(&alpaca_prompt(q, ""));
        text.push_str(a);
        text.push_str("\n\n");
        messages.push(ChatMessage::new("user", *q));
        messages.push(ChatMessage::new("assistant", *a));
    }
    text.push_str(&alpaca_prompt(instruction, ""));
    messages.push(ChatMessage::new("user", instruction));
    Prompt {
        text,
        messages,
        stop: alpaca_stop(),
        chat_stop: vec!["### Instruction:".into(), "\n\n\n".into()],
    }
}

/// Stops for Alpaca-template prompts.
pub fn alpaca_stop() -> Vec<String> {
    vec!["### Instruction:".into(), "\n\n\n".into()]
}

/// Program-of-thought in the Alpaca template: the instruction asks for a `solution()`
/// program, as the code skill set's instructions do.
pub fn pot_alpaca_prompt(question: &str, shots: usize) -> Prompt {
    let ask = |q: &str| format!("{q}\nWrite a Python function solution() that returns the answer.");
    let demos: Vec<(String, String)> = POT_DEMOS[..shots.min(POT_DEMOS.len())]
        .iter()
        .map(|(q, p)| (ask(q), fenced(p)))
        .collect();
    let refs: Vec<(&str, &str)> = demos
        .iter()
        .map(|(q, a)| (q.as_str(), a.as_str()))
        .collect();
    alpaca_few_shot(&refs, &ask(question))
}

impl Prompt {
    /// The form for `style` as chat messages or text; `render` turns messages into the model's
    /// chat-template text (core passes its tokenizer's template here).
    pub fn for_style(
        &self,
        style: PromptStyle,
        render: &dyn Fn(&[ChatMessage]) -> String,
    ) -> String {
        match style {
            PromptStyle::Plain => self.text.clone(),
            PromptStyle::Chat => render(&self.messages),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codemath::extract_program;

    #[test]
    fn pot_prompt_shapes() {
        let p = pot_prompt("Q?", 3);
        assert!(p.text.ends_with("Question: Q?\nAnswer:\n"));
        assert_eq!(p.text.matches("def solution():").count(), 3);
        assert_eq!(p.messages.len(), 2 * 3 + 1);
        assert_eq!(p.messages.last().map(|m| m.role.as_str()), Some("user"));
        // Every demo program is a valid extraction target and ends with `return result`.
        for (_, prog) in POT_DEMOS {
            assert!(prog.trim_end().ends_with("return result"));
            let out = fenced(prog);
            assert_eq!(extract_program(&out).as_deref().map(str::trim), Some(prog));
        }
    }

    #[test]
    fn chat_turns_carry_the_code_skills_trigger() {
        let p = pot_prompt("How many apples?", 2);
        assert!(p.messages.iter().all(|m| m.role != "system"));
        let users: Vec<&ChatMessage> = p.messages.iter().filter(|m| m.role == "user").collect();
        assert_eq!(users.len(), 3);
        for m in users {
            assert!(m.content.ends_with(POT_ASK), "{:?}", m.content);
        }
        // The trigger is the code skill's training phrasing.
        let mut rng = rand::SeedableRng::seed_from_u64(0);
        let ex = crate::synthetic::code::exercise(&mut rng);
        assert!(ex
            .instruction
            .starts_with(&POT_ASK[..POT_ASK.len() - "the answer.".len()]));
    }

    #[test]
    fn chat_stop_ends_at_the_closing_fence_and_never_cuts_a_program() {
        use crate::generate::truncate_at_stop;
        let stop = pot_prompt("Q", 1).chat_stop;
        let program = "def solution():\n    result = 2 + 3\n    return result";
        for opening in [
            "```python\n",
            "```\n",
            "Here it is:\n```py\n",
            "Sure!\n\n```\n",
        ] {
            let out = format!("{opening}{program}\n```\n\nThis function adds the numbers.");
            let cut = truncate_at_stop(&out, &stop);
            assert!(
                !cut.contains("This function"),
                "{opening:?}: not cut: {cut:?}"
            );
            assert_eq!(
                extract_program(cut).as_deref().map(str::trim),
                Some(program),
                "{opening:?}"
            );
        }
        // A program that ends the turn is left whole.
        let out = format!("```python\n{program}\n```");
        assert_eq!(truncate_at_stop(&out, &stop), out);
        for p in [
            qa_prompt("Q", None),
            cot_prompt("Q", 1),
            code_prompt("Do", ""),
            alpaca_few_shot(&[], "Do"),
        ] {
            assert!(!p.chat_stop.is_empty());
        }
    }

    #[test]
    fn qa_prompts() {
        let closed = qa_prompt("What color is the valve?", None);
        assert!(!closed.text.contains("Context:"));
        let rc = qa_prompt("Who?", Some("Ann went home."));
        assert!(rc.text.contains("Not in context") && rc.text.contains("Ann went home."));
        assert!(alpaca_prompt("Do X", "").ends_with("### Response:\n"));
        assert!(cot_prompt("Q", 2).text.contains("#### 7"));
        let a = pot_alpaca_prompt("How many?", 2);
        assert_eq!(a.text.matches("### Instruction:").count(), 3);
        assert!(a.text.ends_with("### Response:\n"));
        assert!(a.stop.iter().any(|s| s == "### Instruction:"));
    }
}
