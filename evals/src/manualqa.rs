//! Manual-QA and reading-comprehension grading: SQuAD's answer normalization, exact match,
//! token F1 (the headline number) and answer-contained recall, with "Not in context" scored as
//! its own class so an abstention is neither free credit nor a token-overlap lottery.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// SQuAD's `normalize_answer`: lower case, drop ASCII punctuation, drop the articles a/an/the,
/// fold white space. Matching the official script keeps our numbers comparable with papers.
pub fn normalize_answer(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punct: String = lower
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    no_punct
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// True when the text abstains with "Not in context" (any case and punctuation).
pub fn is_not_in_context(s: &str) -> bool {
    normalize_answer(s).contains("not in context")
}

/// What a model's free text is reduced to before scoring: the first non-empty line, without
/// the "The correct answer is" lead-in that the LoRA Soups training targets teach.
pub fn clean_prediction(raw: &str) -> String {
    let line = raw
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let lower = line.to_lowercase();
    let lead = "the correct answer is";
    if lower.starts_with(lead) {
        line[lead.len()..]
            .trim_start_matches([':', ' ', ','])
            .to_string()
    } else {
        line.to_string()
    }
}

/// Exact match after normalization.
pub fn exact_match(pred: &str, gold: &str) -> f64 {
    f64::from(u8::from(normalize_answer(pred) == normalize_answer(gold)))
}

/// SQuAD token F1 between normalized prediction and gold.
pub fn token_f1(pred: &str, gold: &str) -> f64 {
    let p = normalize_answer(pred);
    let g = normalize_answer(gold);
    let pt: Vec<&str> = p.split_whitespace().collect();
    let gt: Vec<&str> = g.split_whitespace().collect();
    if pt.is_empty() || gt.is_empty() {
        return f64::from(u8::from(pt == gt));
    }
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for t in &gt {
        *counts.entry(t).or_default() += 1;
    }
    let mut same = 0i64;
    for t in &pt {
        if let Some(c) = counts.get_mut(t) {
            if *c > 0 {
                *c -= 1;
                same += 1;
            }
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / pt.len() as f64;
    let recall = same as f64 / gt.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// 1.0 when the normalized gold appears as whole words inside the normalized prediction: the
/// lenient score for models that answer in a full sentence.
pub fn contains(pred: &str, gold: &str) -> f64 {
    let p = format!(" {} ", normalize_answer(pred));
    let g = normalize_answer(gold);
    if g.is_empty() {
        return 0.0;
    }
    f64::from(u8::from(p.contains(&format!(" {g} "))))
}

/// The three QA scores of one answer.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct QaScores {
    pub em: f64,
    pub f1: f64,
    pub contains: f64,
}

/// One graded answer: scores plus the class bookkeeping for "Not in context".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QaGrade {
    /// The prediction after [`clean_prediction`].
    pub pred: String,
    pub scores: QaScores,
    /// The gold is "Not in context".
    pub gold_unanswerable: bool,
    /// The model abstained with "Not in context".
    pub pred_unanswerable: bool,
}

/// Grade a raw model output against the acceptable answers (best score over answers).
/// An unanswerable gold is matched only by an abstention (all three scores 1, else 0); an
/// abstention on an answerable question scores 0, whatever tokens it shares with the gold.
pub fn grade_qa(raw_output: &str, answers: &[String], unanswerable: bool) -> QaGrade {
    let pred = clean_prediction(raw_output);
    let pred_unanswerable = is_not_in_context(&pred);
    let gold_unanswerable = unanswerable || answers.iter().any(|a| is_not_in_context(a));
    let scores = if gold_unanswerable || pred_unanswerable {
        let hit = f64::from(u8::from(gold_unanswerable && pred_unanswerable));
        QaScores {
            em: hit,
            f1: hit,
            contains: hit,
        }
    } else {
        let mut best = QaScores::default();
        for a in answers {
            best.em = best.em.max(exact_match(&pred, a));
            best.f1 = best.f1.max(token_f1(&pred, a));
            best.contains = best.contains.max(contains(&pred, a));
        }
        best
    };
    QaGrade {
        pred,
        scores,
        gold_unanswerable,
        pred_unanswerable,
    }
}

/// Mean scores over a run, plus the abstention class's precision/recall for reading
/// comprehension (None when the set has no unanswerable questions or no abstentions).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct QaSummary {
    pub n: usize,
    pub em: f64,
    pub f1: f64,
    pub contains: f64,
    pub not_in_context_precision: Option<f64>,
    pub not_in_context_recall: Option<f64>,
}

pub fn summarize_qa(grades: &[QaGrade]) -> QaSummary {
    let n = grades.len();
    if n == 0 {
        return QaSummary::default();
    }
    let mean = |f: &dyn Fn(&QaGrade) -> f64| grades.iter().map(f).sum::<f64>() / n as f64;
    let tp = grades
        .iter()
        .filter(|g| g.gold_unanswerable && g.pred_unanswerable)
        .count();
    let pred_pos = grades.iter().filter(|g| g.pred_unanswerable).count();
    let gold_pos = grades.iter().filter(|g| g.gold_unanswerable).count();
    QaSummary {
        n,
        em: mean(&|g| g.scores.em),
        f1: mean(&|g| g.scores.f1),
        contains: mean(&|g| g.scores.contains),
        not_in_context_precision: (pred_pos > 0).then(|| tp as f64 / pred_pos as f64),
        not_in_context_recall: (gold_pos > 0).then(|| tp as f64 / gold_pos as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squad_normalization() {
        assert_eq!(normalize_answer("The  Cat's  hat!"), "cats hat");
        assert_eq!(normalize_answer("An apple, a day"), "apple day");
    }

    #[test]
    fn f1_and_em() {
        assert_eq!(exact_match("the Blue Valve.", "blue valve"), 1.0);
        let f = token_f1("blue valve left", "blue valve");
        assert!((f - 0.8).abs() < 1e-9, "{f}");
        assert_eq!(token_f1("red", "blue"), 0.0);
        assert_eq!(contains("it is the blue valve", "Blue Valve"), 1.0);
        assert_eq!(contains("blue valves", "blue valve"), 0.0);
    }

    #[test]
    fn not_in_context_is_its_own_class() {
        let gold = vec!["Not in context".to_string()];
        assert_eq!(grade_qa("Not in context.", &gold, true).scores.f1, 1.0);
        assert_eq!(grade_qa("in the context box", &gold, true).scores.f1, 0.0);
        let gold = vec!["the context menu".to_string()];
        let g = grade_qa("Not in context", &gold, false);
        assert_eq!(g.scores.f1, 0.0);
        assert!(g.pred_unanswerable);
    }

    #[test]
    fn strips_lead_in_and_takes_first_line() {
        let g = grade_qa(
            "The correct answer is 42 volts\nQuestion: next",
            &["42 volts".into()],
            false,
        );
        assert_eq!(g.pred, "42 volts");
        assert_eq!(g.scores.em, 1.0);
    }

    #[test]
    fn summary_counts_abstention_class() {
        let a = grade_qa("Not in context", &["Not in context".into()], true);
        let b = grade_qa("Not in context", &["x".into()], false);
        let s = summarize_qa(&[a, b]);
        assert_eq!(s.not_in_context_precision, Some(0.5));
        assert_eq!(s.not_in_context_recall, Some(1.0));
    }
}
