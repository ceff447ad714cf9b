//! Chain-of-thought grading for the math skill, as lm-evaluation-harness grades gsm8k:
//! `strict-match` takes the number after the first `#### `, `flexible-extract` the last number
//! in the text; both are normalized by removing `,` and `$` and a trailing `.` and compared as
//! strings with the gold as GSM8K writes it.

use serde::{Deserialize, Serialize};

/// Both harness filters' results for one output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CotGrade {
    pub strict_pred: Option<String>,
    pub flexible_pred: Option<String>,
    pub strict_match: bool,
    pub flexible_match: bool,
}

/// The harness's `regexes_to_ignore` for gsm8k: `,`, `$`, and a trailing `.`.
pub fn normalize_number_text(s: &str) -> String {
    let t: String = s.chars().filter(|c| *c != ',' && *c != '$').collect();
    let t = t.trim();
    t.strip_suffix('.').unwrap_or(t).to_string()
}

/// `#### (\-?[0-9\.\,]+)`, first match.
pub fn strict_extract(text: &str) -> Option<String> {
    let mut from = 0;
    while let Some(i) = text[from..].find("#### ") {
        let start = from + i + 5;
        let rest = &text[start..];
        let neg = rest.starts_with('-');
        let body = if neg { &rest[1..] } else { rest };
        let len = body
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
            .unwrap_or(body.len());
        if len > 0 {
            return Some(format!("{}{}", if neg { "-" } else { "" }, &body[..len]));
        }
        from = start;
    }
    None
}

/// `(-?[$0-9.,]{2,})|(-?[0-9]+)`, last match (the harness's flexible-extract).
pub fn flexible_extract(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut last = None;
    let wide = |c: u8| c.is_ascii_digit() || c == b'$' || c == b'.' || c == b',';
    while i < b.len() {
        let neg = b[i] == b'-';
        let s = if neg { i + 1 } else { i };
        let mut j = s;
        while j < b.len() && wide(b[j]) {
            j += 1;
        }
        if j - s >= 2 {
            last = Some(text[i..j].to_string());
            i = j;
            continue;
        }
        let mut k = s;
        while k < b.len() && b[k].is_ascii_digit() {
            k += 1;
        }
        if k > s {
            last = Some(text[i..k].to_string());
            i = k;
            continue;
        }
        i += 1;
    }
    last
}

/// The gold as GSM8K writes it: integers without a decimal point.
pub fn format_gold(gold: f64) -> String {
    if gold.fract() == 0.0 && gold.abs() < 1e15 {
        format!("{}", gold as i64)
    } else {
        format!("{gold}")
    }
}

/// Grade a chain-of-thought output against a numeric gold with both harness filters.
pub fn grade_cot(output: &str, gold: f64) -> CotGrade {
    let g = format_gold(gold);
    let strict_pred = strict_extract(output).map(|s| normalize_number_text(&s));
    let flexible_pred = flexible_extract(output).map(|s| normalize_number_text(&s));
    CotGrade {
        strict_match: strict_pred.as_deref() == Some(g.as_str()),
        flexible_match: flexible_pred.as_deref() == Some(g.as_str()),
        strict_pred,
        flexible_pred,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_and_flexible() {
        let out = "She has 16 - 3 = 13 eggs.\nSo $1,300 total.\n#### 1,300.\n";
        let g = grade_cot(out, 1300.0);
        assert_eq!(g.strict_pred.as_deref(), Some("1300"));
        assert!(g.strict_match && g.flexible_match);
        let g = grade_cot("the answer is 7", 7.0);
        assert!(!g.strict_match && g.flexible_match);
        let g = grade_cot("#### -4", -4.0);
        assert!(g.strict_match);
        assert_eq!(flexible_extract("no numbers"), None);
        assert_eq!(flexible_extract("x 12 y 3.5."), Some("3.5.".into()));
    }
}
