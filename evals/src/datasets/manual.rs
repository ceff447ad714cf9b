//! A plain-text manual: the knowledge corpus a manual adapter trains on.

use super::{read_text, DatasetError};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The manual's text, with paragraph access for trainers that chunk by paragraph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manual {
    pub text: String,
}

impl Manual {
    /// Non-empty paragraphs (blank-line separated), trimmed.
    pub fn paragraphs(&self) -> Vec<&str> {
        self.text
            .split("\n\n")
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect()
    }

    /// Paragraphs packed greedily into chunks of at most `max_chars` characters (a paragraph
    /// longer than that becomes its own chunk), so training examples keep whole paragraphs.
    pub fn chunks(&self, max_chars: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = String::new();
        for p in self.paragraphs() {
            if !cur.is_empty() && cur.len() + 2 + p.len() > max_chars {
                out.push(std::mem::take(&mut cur));
            }
            if !cur.is_empty() {
                cur.push_str("\n\n");
            }
            cur.push_str(p);
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    }
}

pub(super) fn load(path: &Path) -> Result<Manual, DatasetError> {
    let text = read_text(path)?;
    if text.trim().is_empty() {
        return Err(DatasetError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(Manual { text })
}
