//! The grader's record behind a stored question, for the screens that show and search it. The
//! store keeps the record whole (`detail`); a value that no longer reads as one (written by
//! another soup) is still shown, with what the index fields say.

use serde::Deserialize;
use soup_evals::driver::QuestionRecord as Graded;
use soup_store::StoredQuestion;

/// The grader's record of `r`, read from the stored JSON in place (screens and the search call
/// this for every record they show or scan, so the value is not cloned first).
pub fn graded(r: &StoredQuestion) -> Graded {
    Graded::deserialize(&r.detail).unwrap_or_else(|e| Graded {
        id: r.id.clone(),
        task: String::new(),
        prompt: format!("(this record cannot be read as a graded question: {e})"),
        raw_output: r.detail.to_string(),
        extracted: None,
        gold: String::new(),
        pred: None,
        verdict: None,
        correct: r.verdict == "correct",
        scores: r.scores.clone(),
        stdout: None,
        stderr: None,
        exit_code: None,
        signal: None,
        sandbox_message: None,
        sandbox_seconds: None,
        isolation: None,
        prompt_tokens: 0,
        output_tokens: 0,
        latency_s: 0.0,
        cached: false,
        prompt_style: None,
        dtype: None,
        ref_logprob: None,
        ref_tokens: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_detail_is_still_shown() {
        let r = StoredQuestion {
            run: soup_store::RunId::nil(),
            index: 3,
            id: "q3".into(),
            verdict: "correct".into(),
            scores: Default::default(),
            detail: serde_json::json!({"odd": true}),
        };
        let g = graded(&r);
        assert_eq!(g.id, "q3");
        assert!(g.correct);
        assert!(g.prompt.contains("cannot be read"), "{}", g.prompt);
        assert!(g.raw_output.contains("odd"));
    }
}
