//! Game-QA: the LoRA Soups paper's own manual-QA data (a game manual's rules, questions whose
//! gold answers are whole sentences, as `test_datasets_qa_test.json` ships them). Closed book
//! like manual-QA, but answered in a sentence: exact match almost never fires on sentences, so
//! the headline is ROUGE-L F1 over normalized tokens (the longest common subsequence, which
//! rewards the rule's words in order), with token F1 and exact match beside it. The product
//! does not embed the data: the user points the task at the files.

use crate::datasets::{parse_qa, DatasetError, QaItem};
use crate::driver::EvalError;
use crate::manualqa::{clean_prediction, exact_match, normalize_answer, token_f1};
use crate::prompts::{ChatMessage, Prompt};
use crate::sandbox::Sandbox;
use crate::task::{Grade, PromptOptions, Task, TaskInfo};
use std::path::Path;

pub struct GameQa;

static INFO: TaskInfo = TaskInfo {
    name: "game-qa",
    aliases: &[],
    summary: "the paper's game-manual questions, closed book, sentence answers (ROUGE-L, F1, EM)",
    default_dataset: "test_datasets_qa_test.json",
    metrics: &["rouge_l", "f1", "em"],
    headline: "rouge_l",
    needs_sandbox: false,
    grader_version: 1,
};

const INSTRUCTION: &str = "Answer the question about the game's rules in one sentence.";

/// ROUGE-L F1 (β = 1) of two token sequences.
fn rouge_l(pred: &[&str], gold: &[&str]) -> f64 {
    if pred.is_empty() || gold.is_empty() {
        return f64::from(u8::from(pred.is_empty() && gold.is_empty()));
    }
    // One row of the LCS table at a time.
    let mut prev = vec![0usize; gold.len() + 1];
    for p in pred {
        let mut row = vec![0usize; gold.len() + 1];
        for (j, g) in gold.iter().enumerate() {
            row[j + 1] = if p == g {
                prev[j] + 1
            } else {
                row[j].max(prev[j + 1])
            };
        }
        prev = row;
    }
    let lcs = prev[gold.len()] as f64;
    if lcs == 0.0 {
        return 0.0;
    }
    let (precision, recall) = (lcs / pred.len() as f64, lcs / gold.len() as f64);
    2.0 * precision * recall / (precision + recall)
}

fn best_over(golds: &[String], score: impl Fn(&str) -> f64) -> f64 {
    golds.iter().map(|g| score(g)).fold(0.0, f64::max)
}

impl Task for GameQa {
    type Item = QaItem;

    fn info(&self) -> &'static TaskInfo {
        &INFO
    }

    fn parse(&self, path: &Path, text: &str) -> Result<Vec<QaItem>, DatasetError> {
        parse_qa(path, text)
    }

    fn prompt(&self, item: &QaItem, _: &PromptOptions) -> Prompt {
        let user = format!("{INSTRUCTION}\n\nQuestion: {}", item.question);
        Prompt {
            text: format!("{user}\nAnswer:"),
            messages: vec![ChatMessage::new("user", user)],
            stop: vec!["\n".into()],
            chat_stop: vec!["\n".into()],
        }
    }

    /// The first gold answer.
    fn reference(&self, item: &QaItem) -> Option<String> {
        item.answers.first().cloned()
    }

    fn grade(
        &self,
        items: &[&QaItem],
        outputs: &[&str],
        _: Option<&Sandbox>,
    ) -> Result<Vec<Grade>, EvalError> {
        Ok(items
            .iter()
            .zip(outputs)
            .map(|(item, out)| {
                let pred = clean_prediction(out);
                let pred_norm = normalize_answer(&pred);
                let pred_tokens: Vec<&str> = pred_norm.split_whitespace().collect();
                let rouge = best_over(&item.answers, |g| {
                    let g = normalize_answer(g);
                    rouge_l(&pred_tokens, &g.split_whitespace().collect::<Vec<_>>())
                });
                let em = best_over(&item.answers, |g| exact_match(&pred, g));
                Grade {
                    extracted: Some(pred.clone()),
                    pred: Some(pred.clone()),
                    correct: em == 1.0,
                    scores: [
                        ("rouge_l".to_string(), rouge),
                        (
                            "f1".to_string(),
                            best_over(&item.answers, |g| token_f1(&pred, g)),
                        ),
                        ("em".to_string(), em),
                    ]
                    .into(),
                    ..Default::default()
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rouge_l_known_values() {
        fn t(s: &str) -> Vec<&str> {
            s.split_whitespace().collect()
        }
        assert_eq!(rouge_l(&t("a b c"), &t("a b c")), 1.0);
        assert_eq!(rouge_l(&t("x y"), &t("a b")), 0.0);
        // LCS("a x b", "a b c") = 2: P = 2/3, R = 2/3.
        assert!((rouge_l(&t("a x b"), &t("a b c")) - 2.0 / 3.0).abs() < 1e-12);
        // Order matters, unlike token F1: LCS("c b a", "a b c") = 1.
        assert!((rouge_l(&t("c b a"), &t("a b c")) - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn grades_sentences_from_the_papers_format() {
        let text = r#"[{"instruction": "What does Rage give?", "output": "The correct answer is Advantage on Strength checks.", "answer": "You have advantage on Strength checks and Strength saving throws.", "context": "Rage..."}]"#;
        let items = GameQa.parse(Path::new("qa_test.json"), text).unwrap();
        assert_eq!(items.len(), 1);
        let p = GameQa.prompt(&items[0], &PromptOptions::default());
        assert!(p.text.contains("What does Rage give?") && !p.text.contains("Rage..."));
        let refs: Vec<&QaItem> = items.iter().collect();
        let g = GameQa
            .grade(
                &refs,
                &["You have advantage on Strength checks.", "No idea."],
                None,
            )
            .unwrap();
        assert_eq!(g.len(), 1);
        let rouge = g[0].scores["rouge_l"];
        assert!(rouge > 0.5 && rouge < 1.0, "{rouge}");
        assert_eq!(g[0].scores["em"], 0.0);
    }
}
