//! Dataset loaders: the real file formats of GSM8K, GSM-Hard (LoRA Soups and PAL flavours),
//! the LoRA-Soups QA and reading-comprehension sets, Alpaca-style skill data and a plain-text
//! manual, normalized into three item types so graders and the driver never see formats.
//!
//! Every malformed row is reported with its file and line (JSONL) or row number (JSON lists)
//! and the field at fault, because these files are usually hand-edited or converted by scripts.

mod alpaca;
mod gsm8k;
mod gsmhard;
mod manual;
mod qa;

pub use gsm8k::parse_gsm8k_answer;
pub use manual::Manual;
pub use qa::{split_rc_instruction, NOT_IN_CONTEXT};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// A math word problem with a numeric gold answer (GSM8K, GSM-Hard, synthetic code-math).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MathItem {
    pub id: String,
    pub question: String,
    pub gold: f64,
    /// Reference solution when the source has one (GSM8K's step-by-step answer, PAL's code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solution: Option<String>,
}

/// A question with one or more acceptable short answers (manual-QA, reading comprehension).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QaItem {
    pub id: String,
    pub question: String,
    /// Passage the answer comes from. For manual-QA it is NOT shown to the model by default
    /// (the knowledge must come from the manual adapter); for reading comprehension it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    pub answers: Vec<String>,
    /// True when the gold is "Not in context" (reading comprehension's unanswerable class).
    #[serde(default)]
    pub unanswerable: bool,
}

/// One supervised example for skill training (Alpaca shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instruction {
    pub instruction: String,
    #[serde(default)]
    pub input: String,
    pub output: String,
}

/// A programming exercise with the Python tests its answer must pass (Alpaca JSON with a
/// `test` field: the code skill's test set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodeExercise {
    pub id: String,
    pub instruction: String,
    #[serde(default)]
    pub input: String,
    /// Python run after the answer's program, e.g. `assert solution() == 42`.
    pub test: String,
    /// The reference program, when the file has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solution: Option<String>,
}

/// The file formats the loaders understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// JSONL `{"question", "answer": "... #### N"}`.
    Gsm8kJsonl,
    /// JSON list `[{"instruction", "answer": float}]` as the LoRA Soups repository ships GSM-Hard
    /// (also its program-of-thought demos, whose answer is a numeric string).
    GsmHardLoraSoups,
    /// JSONL `{"input", "target", "code"?}` as PAL ships GSM-Hard.
    GsmHardPal,
    /// JSON list `[{"instruction", "answer", "context"?, "output"?}]` (LoRA Soups manual QA).
    QaLoraSoups,
    /// JSON list `[{"instruction" (with Context and Question inside), "input", "output", "answer"}]`.
    ReadingComprehension,
    /// JSON list `[{"instruction", "input"?, "output"}]`.
    Alpaca,
    /// Any other text: a manual for knowledge training.
    ManualText,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Gsm8kJsonl => "gsm8k jsonl",
            Format::GsmHardLoraSoups => "gsm-hard (lora-soups json)",
            Format::GsmHardPal => "gsm-hard (pal jsonl)",
            Format::QaLoraSoups => "qa (lora-soups json)",
            Format::ReadingComprehension => "reading comprehension json",
            Format::Alpaca => "alpaca json",
            Format::ManualText => "plain-text manual",
        }
    }
}

/// Errors from reading datasets; each names the file and, where it applies, the line or row.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot read {path}: {source}; check that the file exists and is readable")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not valid JSON ({message}); the file must be a JSON list or JSON lines")]
    Json { path: PathBuf, message: String },
    #[error("{path}:{line}: {message}")]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: row {row}: {message}")]
    Row {
        path: PathBuf,
        row: usize,
        message: String,
    },
    #[error("{path}: holds no rows; point at a non-empty dataset")]
    Empty { path: PathBuf },
    #[error("{path}: looks like {found}, but {wanted} was needed; pass a file of the right kind")]
    WrongKind {
        path: PathBuf,
        found: &'static str,
        wanted: &'static str,
    },
    #[error("{path}: cannot tell the format ({reason}); expected one of: gsm8k jsonl, gsm-hard json/jsonl, lora-soups qa json, reading-comprehension json, alpaca json")]
    UnknownFormat { path: PathBuf, reason: String },
}

/// A parsed JSON row with its position, for error messages.
pub(crate) struct Row<'a> {
    pub path: &'a Path,
    /// 1-based line (JSONL) or row (JSON list).
    pub pos: usize,
    pub jsonl: bool,
    pub obj: Map<String, Value>,
}

impl Row<'_> {
    pub fn err(&self, message: impl Into<String>) -> DatasetError {
        let message = message.into();
        if self.jsonl {
            DatasetError::Line {
                path: self.path.to_path_buf(),
                line: self.pos,
                message,
            }
        } else {
            DatasetError::Row {
                path: self.path.to_path_buf(),
                row: self.pos,
                message,
            }
        }
    }

    pub fn str_field(&self, key: &str) -> Result<String, DatasetError> {
        match self.obj.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(self.err(format!(
                "field \"{key}\" must be a string, found {}",
                kind(other)
            ))),
            None => Err(self.err(format!("missing field \"{key}\""))),
        }
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<String>, DatasetError> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.err(format!(
                "field \"{key}\" must be a string, found {}",
                kind(other)
            ))),
        }
    }

    /// A number given as a JSON number or a numeric string (PAL writes both).
    pub fn num_field(&self, key: &str) -> Result<f64, DatasetError> {
        match self.obj.get(key) {
            Some(Value::Number(n)) => n
                .as_f64()
                .ok_or_else(|| self.err(format!("field \"{key}\" is not a finite number"))),
            Some(Value::String(s)) => crate::codemath::parse_number(s).ok_or_else(|| {
                self.err(format!("field \"{key}\" must be a number, found \"{s}\""))
            }),
            Some(other) => Err(self.err(format!(
                "field \"{key}\" must be a number, found {}",
                kind(other)
            ))),
            None => Err(self.err(format!("missing field \"{key}\""))),
        }
    }

    /// The row's own id when it has one, else its 0-based position (stable across runs, which
    /// resume relies on).
    pub fn id(&self) -> String {
        match self.obj.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => (self.pos - 1).to_string(),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

pub(crate) fn read_text(path: &Path) -> Result<String, DatasetError> {
    std::fs::read_to_string(path).map_err(|source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Parse `text` as a JSON list of objects or as JSON lines, whichever it is.
pub(crate) fn parse_rows<'a>(path: &'a Path, text: &str) -> Result<Vec<Row<'a>>, DatasetError> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    let mut rows = Vec::new();
    if trimmed.starts_with('[') {
        let value: Value = serde_json::from_str(trimmed).map_err(|e| DatasetError::Json {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let Value::Array(items) = value else {
            unreachable!("starts with '['")
        };
        for (i, item) in items.into_iter().enumerate() {
            match item {
                Value::Object(obj) => rows.push(Row {
                    path,
                    pos: i + 1,
                    jsonl: false,
                    obj,
                }),
                other => {
                    return Err(DatasetError::Row {
                        path: path.to_path_buf(),
                        row: i + 1,
                        message: format!("expected an object, found {}", kind(&other)),
                    })
                }
            }
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(line).map_err(|e| DatasetError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                message: format!("not valid JSON: {e}"),
            })?;
            match value {
                Value::Object(obj) => rows.push(Row {
                    path,
                    pos: i + 1,
                    jsonl: true,
                    obj,
                }),
                other => {
                    return Err(DatasetError::Line {
                        path: path.to_path_buf(),
                        line: i + 1,
                        message: format!("expected a JSON object, found {}", kind(&other)),
                    })
                }
            }
        }
    }
    if rows.is_empty() {
        return Err(DatasetError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(rows)
}

/// Guess the format from the content (not the file name, which is often arbitrary).
pub fn detect_format(text: &str) -> Result<Format, String> {
    let t = text.trim_start_matches('\u{feff}').trim_start();
    let first_obj: Option<Map<String, Value>> = if t.starts_with('[') {
        match serde_json::from_str::<Value>(t) {
            Ok(Value::Array(items)) => match items.into_iter().next() {
                Some(Value::Object(o)) => Some(o),
                Some(_) => return Err("the JSON list does not hold objects".into()),
                None => return Err("the JSON list is empty".into()),
            },
            Ok(_) => unreachable!("starts with '['"),
            Err(e) => return Err(format!("starts like a JSON list but does not parse: {e}")),
        }
    } else if t.starts_with('{') {
        let line = t.lines().next().unwrap_or("");
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(o)) => Some(o),
            _ => return Err("the first line is not a JSON object".into()),
        }
    } else {
        None
    };
    let Some(o) = first_obj else {
        return Ok(Format::ManualText);
    };
    let jsonl = t.starts_with('{');
    let has = |k: &str| o.contains_key(k);
    if has("question") && has("answer") {
        return Ok(Format::Gsm8kJsonl);
    }
    if has("input") && has("target") {
        return Ok(Format::GsmHardPal);
    }
    if has("instruction") {
        let instr = o.get("instruction").and_then(Value::as_str).unwrap_or("");
        match o.get("answer") {
            Some(Value::Number(_)) => return Ok(Format::GsmHardLoraSoups),
            Some(Value::String(a)) => {
                // Program-of-thought demos (LoRA Soups' few_shot_demo_math.json): a numeric
                // answer and a program as output. They are math items, not QA.
                let output = o.get("output").and_then(Value::as_str).unwrap_or("");
                if output.contains("def solution") && crate::codemath::parse_number(a).is_some() {
                    return Ok(Format::GsmHardLoraSoups);
                }
                if instr.contains("Context:") && instr.contains("Question:") {
                    return Ok(Format::ReadingComprehension);
                }
                return Ok(Format::QaLoraSoups);
            }
            _ => {}
        }
        if has("output") {
            return Ok(Format::Alpaca);
        }
    }
    let keys: Vec<&str> = o.keys().map(String::as_str).collect();
    Err(format!(
        "{} with fields {keys:?} matches no known format",
        if jsonl { "JSON lines" } else { "a JSON list" }
    ))
}

fn detect(path: &Path, text: &str) -> Result<Format, DatasetError> {
    detect_format(text).map_err(|reason| DatasetError::UnknownFormat {
        path: path.to_path_buf(),
        reason,
    })
}

/// Load math word problems from GSM8K JSONL, GSM-Hard (either flavour), detected by content.
pub fn load_math(path: &Path) -> Result<Vec<MathItem>, DatasetError> {
    let text = read_text(path)?;
    parse_math(path, &text)
}

/// [`load_math`] on text already in memory; `path` only names the source in errors.
pub fn parse_math(path: &Path, text: &str) -> Result<Vec<MathItem>, DatasetError> {
    let format = detect(path, text)?;
    let rows = parse_rows(path, text)?;
    match format {
        Format::Gsm8kJsonl => rows.iter().map(gsm8k::math_item).collect(),
        Format::GsmHardLoraSoups => rows.iter().map(gsmhard::lorasoups_item).collect(),
        Format::GsmHardPal => rows.iter().map(gsmhard::pal_item).collect(),
        other => Err(DatasetError::WrongKind {
            path: path.to_path_buf(),
            found: other.name(),
            wanted: "a math dataset (gsm8k or gsm-hard)",
        }),
    }
}

/// Load QA items from LoRA-Soups QA JSON or reading-comprehension JSON, detected by content.
pub fn load_qa(path: &Path) -> Result<Vec<QaItem>, DatasetError> {
    let text = read_text(path)?;
    parse_qa(path, &text)
}

/// [`load_qa`] on text already in memory.
pub fn parse_qa(path: &Path, text: &str) -> Result<Vec<QaItem>, DatasetError> {
    let format = detect(path, text)?;
    let rows = parse_rows(path, text)?;
    match format {
        Format::QaLoraSoups => rows.iter().map(qa::qa_item).collect(),
        Format::ReadingComprehension => rows.iter().map(qa::rc_item).collect(),
        other => Err(DatasetError::WrongKind {
            path: path.to_path_buf(),
            found: other.name(),
            wanted: "a QA dataset (lora-soups qa or reading comprehension)",
        }),
    }
}

/// Load programming exercises with their tests: Alpaca JSON whose rows carry `test`.
pub fn load_code(path: &Path) -> Result<Vec<CodeExercise>, DatasetError> {
    let text = read_text(path)?;
    parse_code(path, &text)
}

/// [`load_code`] on text already in memory.
pub fn parse_code(path: &Path, text: &str) -> Result<Vec<CodeExercise>, DatasetError> {
    let format = detect(path, text)?;
    let rows = parse_rows(path, text)?;
    match format {
        Format::Alpaca => rows.iter().map(alpaca::code_exercise).collect(),
        other => Err(DatasetError::WrongKind {
            path: path.to_path_buf(),
            found: other.name(),
            wanted: "programming exercises (alpaca json with a `test` field per row)",
        }),
    }
}

/// Load supervised examples for skill training. Alpaca JSON is the native form; GSM8K,
/// LoRA-Soups QA and reading-comprehension files are converted (question -> instruction,
/// reference answer -> output) so any of them can train a skill adapter.
pub fn load_instructions(path: &Path) -> Result<Vec<Instruction>, DatasetError> {
    let text = read_text(path)?;
    parse_instructions(path, &text)
}

/// [`load_instructions`] on text already in memory.
pub fn parse_instructions(path: &Path, text: &str) -> Result<Vec<Instruction>, DatasetError> {
    let format = detect(path, text)?;
    let rows = parse_rows(path, text)?;
    match format {
        Format::Alpaca => rows.iter().map(alpaca::instruction).collect(),
        Format::Gsm8kJsonl => rows
            .iter()
            .map(|r| {
                Ok(Instruction {
                    instruction: r.str_field("question")?,
                    input: String::new(),
                    output: r.str_field("answer")?,
                })
            })
            .collect(),
        Format::QaLoraSoups | Format::ReadingComprehension => rows
            .iter()
            .map(|r| {
                Ok(Instruction {
                    instruction: r.str_field("instruction")?,
                    input: r.opt_str("input")?.unwrap_or_default(),
                    output: r.str_field("answer")?,
                })
            })
            .collect(),
        other => Err(DatasetError::WrongKind {
            path: path.to_path_buf(),
            found: other.name(),
            wanted: "instruction data (alpaca json, gsm8k jsonl or qa json)",
        }),
    }
}

/// Load a plain-text manual for knowledge training.
pub fn load_manual(path: &Path) -> Result<Manual, DatasetError> {
    manual::load(path)
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
