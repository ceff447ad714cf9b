//! Job data: built-in synthetic sets materialized once under the data dir, files loaded by
//! content, and the seeded sampling that jobs apply (limits, DATA-MIX ratios, CAT's 5 %).

use super::spec::DataSource;
use crate::error::{CoreError, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use soup_evals::synthetic::{write_synthetic_sized, SyntheticKind, SyntheticSizes};
use std::path::{Path, PathBuf};

/// Built-in sets: (name, family, file written by `soup data generate`).
pub const BUILTINS: [(&str, SyntheticKind, &str); 9] = [
    (
        "math-train",
        SyntheticKind::CodeMath,
        "math_skill_train.jsonl",
    ),
    (
        "math-test",
        SyntheticKind::CodeMath,
        "math_skill_test.jsonl",
    ),
    (
        "code-train",
        SyntheticKind::CodeMath,
        "code_skill_train.json",
    ),
    ("code-test", SyntheticKind::CodeMath, "code_skill_test.json"),
    // The target questions in PAL's form, which carries each one's reference program: the
    // recipe's second metric, the reference's log-likelihood, needs it (the same questions
    // in the LoRA Soups JSON, without programs, are `code_math_test.json` beside it).
    (
        "codemath-test",
        SyntheticKind::CodeMath,
        "code_math_reference.jsonl",
    ),
    ("manual", SyntheticKind::ManualQa, "manual.txt"),
    ("qa-train", SyntheticKind::ManualQa, "qa_skill_train.json"),
    ("qa-test", SyntheticKind::ManualQa, "qa_skill_test.json"),
    (
        "manualqa-test",
        SyntheticKind::ManualQa,
        "manual_qa_test.json",
    ),
];

/// The file behind a data source; built-in sets (`NAME` or `NAME@SEED`) are generated into
/// `data_dir/builtin/FAMILY-SEED/` the first time they are used.
pub fn resolve(data_dir: &Path, source: &DataSource) -> Result<PathBuf> {
    match source {
        DataSource::File(p) => {
            if !p.exists() {
                return Err(CoreError::bad_file(p, "no such data file"));
            }
            Ok(p.clone())
        }
        DataSource::Builtin(spec) => {
            let (name, seed) = match spec.split_once('@') {
                Some((n, s)) => (
                    n,
                    s.parse::<u64>().map_err(|_| {
                        CoreError::bad_setting(
                            "seed",
                            format!("{s:?} in builtin:{spec}"),
                            "a seed is a whole number, as in builtin:codemath@7",
                        )
                    })?,
                ),
                None => (spec.as_str(), 0),
            };
            let (_, kind, file) =
                BUILTINS
                    .iter()
                    .find(|(n, _, _)| *n == name)
                    .ok_or_else(|| {
                        let names: Vec<&str> = BUILTINS.iter().map(|(n, _, _)| *n).collect();
                        CoreError::UnknownName {
                            kind: "built-in set",
                            name: name.to_string(),
                            expected: format!("one of {}", names.join(", ")),
                        }
                    })?;
            // A family whose generator changed gets a new folder, so a data dir made by an
            // older soup is not read as the new sets (nothing soup wrote is deleted).
            let family = match kind {
                // v2: the math skill's steps are equations over named quantities.
                SyntheticKind::CodeMath => "code-math-v2",
                SyntheticKind::ManualQa => "manual-qa-v2",
            };
            let dir = data_dir.join("builtin").join(format!("{family}-{seed}"));
            let path = dir.join(file);
            if !path.exists() {
                // Generate into a temp dir and rename, so a crash never leaves half a set.
                std::fs::create_dir_all(dir.parent().unwrap_or(data_dir))
                    .map_err(|e| CoreError::io(&dir, e))?;
                let tmp = tempfile::tempdir_in(dir.parent().unwrap_or(data_dir))
                    .map_err(|e| CoreError::io(&dir, e))?;
                write_synthetic_sized(*kind, seed, tmp.path(), &SyntheticSizes::default())?;
                if !dir.exists() {
                    std::fs::rename(tmp.keep(), &dir).map_err(|e| CoreError::io(&dir, e))?;
                }
            }
            Ok(path)
        }
    }
}

/// Reads a data source as text (for format detection and loading).
pub fn read(data_dir: &Path, source: &DataSource) -> Result<(PathBuf, String)> {
    let path = resolve(data_dir, source)?;
    let text = std::fs::read_to_string(&path).map_err(|e| CoreError::io(&path, e))?;
    Ok((path, text))
}

/// A seeded random subset of `n` of `items` (all of them when `n >= len`), order shuffled.
pub fn sample<T: Clone>(items: &[T], n: usize, seed: u64) -> Vec<T> {
    let mut idx: Vec<usize> = (0..items.len()).collect();
    idx.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    idx.truncate(n);
    idx.into_iter().map(|i| items[i].clone()).collect()
}

/// How many examples of each set a DATA-MIX takes: the largest counts in the given ratio that
/// no set has to repeat examples for.
pub fn mix_counts(sizes: &[usize], ratio: &[f64]) -> Result<Vec<usize>> {
    if sizes.len() != ratio.len() {
        return Err(CoreError::MixRatioCount {
            ratios: ratio.len(),
            datasets: sizes.len(),
        });
    }
    if ratio.iter().any(|r| !(r.is_finite() && *r > 0.0)) {
        let bad = ratio.iter().find(|r| !(r.is_finite() && **r > 0.0));
        return Err(CoreError::bad_setting(
            "mixing ratio",
            bad.map(|r| r.to_string()).unwrap_or_default(),
            "mixing ratios must be positive numbers",
        ));
    }
    let scale = sizes
        .iter()
        .zip(ratio)
        .map(|(&n, r)| n as f64 / r)
        .fold(f64::INFINITY, f64::min);
    Ok(ratio.iter().map(|r| (r * scale).floor() as usize).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_counts_respect_ratio_and_sizes() {
        assert_eq!(mix_counts(&[100, 50], &[1.0, 1.0]).unwrap(), vec![50, 50]);
        assert_eq!(mix_counts(&[100, 50], &[3.0, 1.0]).unwrap(), vec![100, 33]);
        assert!(mix_counts(&[1], &[1.0, 2.0]).is_err());
        assert!(mix_counts(&[1, 2], &[0.0, 2.0]).is_err());
    }

    #[test]
    fn sample_is_seeded() {
        let v: Vec<u32> = (0..50).collect();
        assert_eq!(sample(&v, 10, 1), sample(&v, 10, 1));
        assert_ne!(sample(&v, 10, 1), sample(&v, 10, 2));
        assert_eq!(sample(&v, 100, 1).len(), 50);
    }
}
