//! Embedded synthetic task sets, generated from a seed with no download, so the whole workbench
//! runs offline on the default model. Calibrated for a ~135M model: small numbers, two to three
//! steps, fixed phrasings, so that a model holding both skills can solve the target while the
//! base model (and, ideally, each skill alone) cannot.
//!
//! Two families, each with its skill sets and target set, written by [`write_synthetic`] in the
//! formats the [`crate::datasets`] loaders read:
//! - code-math: math skill (GSM8K JSONL, worked steps ending `#### N`), code skill (Alpaca JSON
//!   with Python answers and an `assert` per item in `test`), target (GSM-Hard LoRA-Soups JSON:
//!   word problems with a numeric gold, to be answered with a program; and the same questions
//!   with reference programs in PAL's JSONL: a model-free check of the grading pipeline, and
//!   the references whose log-likelihood a recipe compares).
//! - manual-qa: a fictional product manual (plain text), QA skill (reading comprehension JSON on
//!   other invented documents, with "Not in context" items), target (LoRA-Soups QA JSON:
//!   closed-book questions answerable only from the manual).
//!
//! Test and target sets never repeat a training question (checked by text).

pub mod code;
pub mod manual;
pub mod math;
pub mod qa;

use crate::datasets::{Instruction, MathItem, QaItem};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Which family to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyntheticKind {
    CodeMath,
    ManualQa,
}

impl std::str::FromStr for SyntheticKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "code-math" => Ok(SyntheticKind::CodeMath),
            "manual-qa" => Ok(SyntheticKind::ManualQa),
            other => Err(format!(
                "unknown synthetic set \"{other}\"; use code-math or manual-qa"
            )),
        }
    }
}

/// How many items of each set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyntheticSizes {
    pub skill_train: usize,
    pub skill_test: usize,
    /// Target questions (manual-qa: at most the number of facts in the manual).
    pub target: usize,
    /// Error codes in the manual (about 130 words and three questions each, restatements
    /// included): its length and most of its questions.
    pub manual_error_codes: usize,
}

impl Default for SyntheticSizes {
    fn default() -> Self {
        SyntheticSizes {
            skill_train: 2000,
            skill_test: 200,
            target: 300,
            // 64 codes: 256 questions in all, enough for a paired comparison at 250.
            manual_error_codes: 64,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyntheticError {
    #[error("cannot write {path}: {source}; check that the output directory is writable")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A code exercise as written to disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodeItem {
    pub instruction: String,
    pub input: String,
    /// The program in a ```python fence.
    pub output: String,
    /// Python that checks the answer when run after it.
    pub test: String,
}

/// The code-math family in memory.
#[derive(Debug, Clone)]
pub struct CodeMathSets {
    /// (question, worked answer ending `#### N`).
    pub math_train: Vec<(String, String)>,
    pub math_test: Vec<(String, String)>,
    pub code_train: Vec<CodeItem>,
    pub code_test: Vec<CodeItem>,
    pub target: Vec<MathItem>,
}

impl CodeMathSets {
    /// The math skill as training examples (question -> worked answer ending `#### N`).
    pub fn math_skill(&self) -> Vec<Instruction> {
        self.math_train
            .iter()
            .map(|(q, a)| Instruction {
                instruction: q.clone(),
                input: String::new(),
                output: a.clone(),
            })
            .collect()
    }

    /// The code skill as training examples (instruction -> fenced program).
    pub fn code_skill(&self) -> Vec<Instruction> {
        self.code_train
            .iter()
            .map(|c| Instruction {
                instruction: c.instruction.clone(),
                input: c.input.clone(),
                output: c.output.clone(),
            })
            .collect()
    }
}

/// The manual-qa family in memory.
#[derive(Debug, Clone)]
pub struct ManualQaSets {
    pub manual: String,
    pub product: String,
    pub qa_train: Vec<qa::RcItem>,
    pub qa_test: Vec<qa::RcItem>,
    pub target: Vec<QaItem>,
}

impl ManualQaSets {
    /// The QA skill as training examples (reading-comprehension instruction -> short answer).
    pub fn qa_skill(&self) -> Vec<Instruction> {
        self.qa_train
            .iter()
            .map(|i| Instruction {
                instruction: rc_instruction(i),
                input: String::new(),
                output: i.answer.clone(),
            })
            .collect()
    }
}

fn rc_instruction(i: &qa::RcItem) -> String {
    format!(
        "{}\n\nContext: {}\n\nQuestion: {}",
        crate::prompts::RC_INSTRUCTION,
        i.context,
        i.question
    )
}

/// Draw up to `n` items whose key is not in `seen` (adding them to it). Gives up after many
/// repeats, so a small template space yields fewer items instead of looping forever.
fn draw<T>(
    n: usize,
    seen: &mut HashSet<String>,
    mut make: impl FnMut() -> T,
    key: impl Fn(&T) -> String,
) -> Vec<T> {
    let mut out = Vec::with_capacity(n);
    let mut misses = 0;
    while out.len() < n && misses < 1000 + 50 * n {
        let item = make();
        if seen.insert(key(&item)) {
            out.push(item);
        } else {
            misses += 1;
        }
    }
    out
}

fn rng(seed: u64, stream: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

pub fn code_math_sets(seed: u64, sizes: &SyntheticSizes) -> CodeMathSets {
    let mut seen = HashSet::new();
    let mut r = rng(seed, 1);
    let mk = |p: math::Problem| (p.question, format!("{}\n#### {}", p.steps, p.answer));
    let math_train: Vec<(String, String)> = draw(
        sizes.skill_train,
        &mut seen,
        || mk(math::problem(&mut r)),
        |p| p.0.clone(),
    );
    let mut r = rng(seed, 2);
    let math_test = draw(
        sizes.skill_test,
        &mut seen,
        || mk(math::problem(&mut r)),
        |p| p.0.clone(),
    );
    let mut r = rng(seed, 3);
    let target: Vec<MathItem> = draw(
        sizes.target,
        &mut seen,
        || math::problem(&mut r),
        |p| p.question.clone(),
    )
    .into_iter()
    .enumerate()
    .map(|(i, p)| MathItem {
        id: i.to_string(),
        question: p.question,
        gold: p.answer as f64,
        solution: Some(p.program),
    })
    .collect();
    let mut code_seen = HashSet::new();
    let ex = |e: code::Exercise| CodeItem {
        instruction: e.instruction,
        input: String::new(),
        output: format!("```python\n{}\n```", e.program),
        test: e.test,
    };
    let mut r = rng(seed, 4);
    let code_train = draw(
        sizes.skill_train,
        &mut code_seen,
        || ex(code::exercise(&mut r)),
        |c| c.instruction.clone(),
    );
    let mut r = rng(seed, 5);
    let code_test = draw(
        sizes.skill_test,
        &mut code_seen,
        || ex(code::exercise(&mut r)),
        |c| c.instruction.clone(),
    );
    CodeMathSets {
        math_train,
        math_test,
        code_train,
        code_test,
        target,
    }
}

pub fn manual_qa_sets(seed: u64, sizes: &SyntheticSizes) -> ManualQaSets {
    let mut r = rng(seed, 11);
    let doc = manual::manual(&mut r, sizes.manual_error_codes);
    let mut target = Vec::new();
    for f in &doc.facts {
        for (q, a) in &f.questions {
            target.push(QaItem {
                id: target.len().to_string(),
                question: q.clone(),
                context: Some(f.sentence.clone()),
                answers: vec![a.clone()],
                unanswerable: false,
            });
        }
    }
    // Spread the cut over all sections rather than keeping only the first ones.
    if target.len() > sizes.target {
        use rand::seq::SliceRandom;
        target.shuffle(&mut rng(seed, 12));
        target.truncate(sizes.target);
        target.sort_by_key(|q| q.id.parse::<usize>().unwrap_or(0));
    }
    let mut seen = HashSet::new();
    let key = |i: &qa::RcItem| format!("{}\n{}", i.context, i.question);
    let mut r = rng(seed, 13);
    let qa_train = draw(sizes.skill_train, &mut seen, || qa::item(&mut r), key);
    let mut r = rng(seed, 14);
    let qa_test = draw(sizes.skill_test, &mut seen, || qa::item(&mut r), key);
    ManualQaSets {
        manual: doc.text,
        product: doc.product,
        qa_train,
        qa_test,
        target,
    }
}

fn write(
    dir: &Path,
    name: &str,
    text: &str,
    files: &mut Vec<PathBuf>,
) -> Result<(), SyntheticError> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|source| SyntheticError::Write {
        path: path.clone(),
        source,
    })?;
    files.push(path);
    Ok(())
}

fn json_list(v: Vec<serde_json::Value>) -> String {
    serde_json::to_string_pretty(&v).unwrap_or_else(|_| "[]".into()) + "\n"
}

fn jsonl(v: Vec<serde_json::Value>) -> String {
    v.iter().map(|x| x.to_string() + "\n").collect()
}

fn rc_rows(items: &[qa::RcItem]) -> Vec<serde_json::Value> {
    items
        .iter()
        .map(|i| {
            json!({
                "instruction": rc_instruction(i),
                "input": "",
                "output": i.answer,
                "answer": i.answer,
            })
        })
        .collect()
}

/// Write a family with the default sizes (`soup data generate KIND --seed S --out DIR`).
/// Returns the files written.
pub fn write_synthetic(
    kind: SyntheticKind,
    seed: u64,
    dir: &Path,
) -> Result<Vec<PathBuf>, SyntheticError> {
    write_synthetic_sized(kind, seed, dir, &SyntheticSizes::default())
}

/// [`write_synthetic`] with chosen sizes. Also writes `manifest.json` (kind, seed, sizes,
/// files) so a data directory says how it was made.
pub fn write_synthetic_sized(
    kind: SyntheticKind,
    seed: u64,
    dir: &Path,
    sizes: &SyntheticSizes,
) -> Result<Vec<PathBuf>, SyntheticError> {
    std::fs::create_dir_all(dir).map_err(|source| SyntheticError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    match kind {
        SyntheticKind::CodeMath => {
            let s = code_math_sets(seed, sizes);
            let gsm = |v: &[(String, String)]| {
                jsonl(
                    v.iter()
                        .map(|(q, a)| json!({"question": q, "answer": a}))
                        .collect(),
                )
            };
            write(
                dir,
                "math_skill_train.jsonl",
                &gsm(&s.math_train),
                &mut files,
            )?;
            write(dir, "math_skill_test.jsonl", &gsm(&s.math_test), &mut files)?;
            let code = |v: &[CodeItem]| {
                json_list(
                    v.iter()
                        .map(|c| serde_json::to_value(c).unwrap_or_default())
                        .collect(),
                )
            };
            write(
                dir,
                "code_skill_train.json",
                &code(&s.code_train),
                &mut files,
            )?;
            write(dir, "code_skill_test.json", &code(&s.code_test), &mut files)?;
            let target = json_list(
                s.target
                    .iter()
                    .map(|m| json!({"instruction": m.question, "answer": m.gold}))
                    .collect(),
            );
            write(dir, "code_math_test.json", &target, &mut files)?;
            // The same questions in PAL's JSONL with reference programs: grading them must
            // give 100 %, a check of the whole pipeline that needs no model.
            let reference = jsonl(
                s.target
                    .iter()
                    .map(|m| json!({"input": m.question, "target": m.gold, "code": m.solution}))
                    .collect(),
            );
            write(dir, "code_math_reference.jsonl", &reference, &mut files)?;
        }
        SyntheticKind::ManualQa => {
            let s = manual_qa_sets(seed, sizes);
            write(dir, "manual.txt", &s.manual, &mut files)?;
            write(
                dir,
                "qa_skill_train.json",
                &json_list(rc_rows(&s.qa_train)),
                &mut files,
            )?;
            write(
                dir,
                "qa_skill_test.json",
                &json_list(rc_rows(&s.qa_test)),
                &mut files,
            )?;
            let target = json_list(
                s.target
                    .iter()
                    .map(|q| {
                        let a = q.answers.first().cloned().unwrap_or_default();
                        json!({
                            "instruction": q.question,
                            "output": format!("The correct answer is {a}"),
                            "answer": a,
                            "context": q.context,
                        })
                    })
                    .collect(),
            );
            write(dir, "manual_qa_test.json", &target, &mut files)?;
        }
    }
    let manifest = json!({
        "kind": kind,
        "seed": seed,
        "sizes": sizes,
        "files": files.iter().filter_map(|f| f.file_name()).map(|f| f.to_string_lossy().to_string()).collect::<Vec<_>>(),
    });
    write(
        dir,
        "manifest.json",
        &(serde_json::to_string_pretty(&manifest).unwrap_or_default() + "\n"),
        &mut files,
    )?;
    Ok(files)
}

#[cfg(test)]
mod tests;
