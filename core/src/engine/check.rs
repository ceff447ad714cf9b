//! Checks a job before its run is recorded: settings out of range, data files that are missing
//! or malformed, models and adapters that resolve to nothing. A job that cannot start is refused
//! with the setting or file named, and leaves no `failed` run behind whose "resume" hint could
//! not help.
//!
//! Two levels: [`Engine::check`] needs no model (the dashboard calls it on its UI thread);
//! [`Engine::check_with_model`] adds what needs the model's shapes (a rank against the
//! projections, new tokens against the context), for the command line, which loads the model
//! next anyway (the engine caches it).

use super::data::read;
use super::spec::{CatJob, DataSource, EvalJob, EvalTarget, JobSpec, MergeJob, TrainJob};
use super::Engine;
use crate::error::{CoreError, Result};
use crate::merge::{MajoritySign, MergeKind};
use crate::runtime::{locate_adapter, locate_model};
use crate::train::LoopConfig;
use soup_evals::datasets::{detect_format, parse_instructions, Format};

impl Engine {
    /// Refuses a job that cannot run: every setting in range and finite, the model found,
    /// every data file readable in a supported format (an evaluation's in its task's format),
    /// every adapter a stored adapter or a PEFT directory.
    pub fn check(&self, spec: &JobSpec) -> Result<()> {
        match spec {
            JobSpec::Train(j) => self.check_train(j),
            JobSpec::Cat(j) => self.check_cat(j),
            JobSpec::Merge(j) => self.check_merge(j),
            JobSpec::Eval(j) => self.check_eval(j),
        }
    }

    /// [`Engine::check`] plus the limits that come from the model itself: a LoRA rank no larger
    /// than the smallest target projection, and room in the context for the new tokens.
    pub fn check_with_model(&self, spec: &JobSpec) -> Result<()> {
        self.check(spec)?;
        match spec {
            JobSpec::Train(j) => {
                let model = self.model(&j.model, j.dtype)?;
                for &m in &j.lora.targets {
                    let (out, inp) = model.model.projection_shape(m);
                    let most = out.min(inp);
                    if j.lora.rank > most {
                        return Err(CoreError::bad_setting(
                            "--rank",
                            j.lora.rank,
                            format!(
                                "at most {most}: the {} projection of {} is {out} x {inp}",
                                m.hf_name(),
                                model.name
                            ),
                        ));
                    }
                }
            }
            JobSpec::Eval(j) => {
                let model = self.model(&j.model, j.dtype)?;
                let context = model.model.cfg.max_position_embeddings;
                if j.max_new_tokens >= context {
                    return Err(CoreError::bad_setting(
                        "--max-new-tokens",
                        j.max_new_tokens,
                        format!(
                            "fewer than the model's context of {context} tokens, which must also hold the prompt"
                        ),
                    ));
                }
            }
            JobSpec::Cat(_) | JobSpec::Merge(_) => {}
        }
        Ok(())
    }

    fn check_train(&self, j: &TrainJob) -> Result<()> {
        check_name(&j.name)?;
        locate_model(Some(self.store()), self.data_dir(), &j.model)?;
        if j.lora.rank == 0 {
            return Err(CoreError::bad_setting("--rank", 0, "at least 1"));
        }
        positive("--alpha", j.lora.alpha)?;
        if j.lora.targets.is_empty() {
            return Err(CoreError::bad_setting(
                "--targets",
                "(none)",
                "at least one projection",
            ));
        }
        check_loop(&j.train)?;
        at_least_one("--max-len", j.max_len)?;
        at_least_one("chunk tokens", j.chunk_tokens)?;
        fraction_below_one("validation fraction", j.val_fraction)?;
        if let Some(l) = j.limit {
            at_least_one("--limit", l)?;
        }
        if let Some(mix) = &j.mix {
            if mix.len() != j.data.len() {
                return Err(CoreError::MixRatioCount {
                    ratios: mix.len(),
                    datasets: j.data.len(),
                });
            }
            if mix.iter().any(|r| !r.is_finite() || *r < 0.0) || mix.iter().sum::<f64>() <= 0.0 {
                return Err(CoreError::bad_setting(
                    "--mix",
                    format!("{mix:?}"),
                    "finite shares, none negative, not all zero",
                ));
            }
        }
        if let Some(passes) = &j.passes {
            if passes.len() != j.data.len() || passes.iter().any(|&p| p == 0 || p > 1000) {
                return Err(CoreError::bad_setting(
                    "passes",
                    format!("{passes:?}"),
                    format!(
                        "one whole number from 1 to 1000 per dataset ({} datasets)",
                        j.data.len()
                    ),
                ));
            }
        }
        self.check_training_data(&j.data)
    }

    fn check_cat(&self, j: &CatJob) -> Result<()> {
        check_name(&j.name)?;
        locate_model(Some(self.store()), self.data_dir(), &j.model)?;
        if j.adapters.is_empty() {
            return Err(CoreError::missing("CAT", "the adapters to concatenate"));
        }
        self.check_adapters(&j.adapters)?;
        let f = j.sample_fraction;
        if !(f > 0.0 && f <= 1.0) {
            return Err(CoreError::bad_setting("sample fraction", f, "in (0, 1]"));
        }
        check_loop(&j.train)?;
        at_least_one("--max-len", j.max_len)?;
        self.check_training_data(&j.data)
    }

    fn check_merge(&self, j: &MergeJob) -> Result<()> {
        check_name(&j.name)?;
        if j.adapters.is_empty() {
            return Err(CoreError::missing("merge", "the adapters to merge"));
        }
        if let Some(out) = &j.out {
            // Refused now; the job checks again before it writes.
            crate::output::check_dir(out, &super::run::merge_output_rules(self, j))?;
        }
        // LoraHub searches its weights; every other method takes one per adapter.
        if !(j.method == MergeKind::LoraHub && j.weights.is_empty()) {
            check_weights(&j.adapters, &j.weights)?;
        }
        self.check_adapters(&j.adapters)?;
        if let Some(d) = j.density {
            if !(d > 0.0 && d <= 1.0) {
                return Err(CoreError::bad_setting("--density", d, "in (0, 1]"));
            }
        }
        if let Some(r) = j.svd_rank {
            at_least_one("--svd-rank", r)?;
        }
        if let Some(s) = &j.majority_sign_method {
            MajoritySign::parse(s)?;
        }
        if let Some(b) = j.budget {
            at_least_one("--budget", b)?;
        }
        if let Some(m) = &j.model {
            locate_model(Some(self.store()), self.data_dir(), m)?;
        }
        if j.method == MergeKind::LoraHub {
            if j.model.is_none() || j.data.is_empty() {
                return Err(CoreError::missing(
                    "LoraHub",
                    "--model and --data: it searches weights by the model's loss on a few examples",
                ));
            }
            self.check_training_data(&j.data)?;
        }
        Ok(())
    }

    fn check_eval(&self, j: &EvalJob) -> Result<()> {
        locate_model(Some(self.store()), self.data_dir(), &j.model)?;
        match &j.target {
            EvalTarget::Base => {}
            EvalTarget::Adapter(a) => self.check_adapters(std::slice::from_ref(a))?,
            EvalTarget::Merge {
                adapters, weights, ..
            } => {
                check_weights(adapters, weights)?;
                self.check_adapters(adapters)?;
            }
        }
        at_least_one("--batch-size", j.batch_size)?;
        at_least_one("--max-new-tokens", j.max_new_tokens)?;
        if let Some(l) = j.limit {
            at_least_one("--limit", l)?;
        }
        if let Some(r) = &j.remote {
            at_least_one("--concurrency", r.concurrency)?;
            at_least_one("--max-lora-rank", r.max_lora_rank)?;
            let url = r.base_url.trim();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(CoreError::BadSetting {
                    setting: "--base-url".into(),
                    value: format!("{url:?}"),
                    allowed: "the http:// or https:// URL of an OpenAI-compatible server, e.g. http://localhost:8000".into(),
                });
            }
        }
        // The task parses its own file: a malformed line is named now, not as a failed run.
        let (path, text) = read(self.data_dir(), &j.data)?;
        let loaded = j.task.load(&path, &text)?;
        if loaded.is_empty() {
            return Err(CoreError::bad_file(&path, "has no questions"));
        }
        Ok(())
    }

    /// Each training source readable and in a training format (built-in sets are generated).
    fn check_training_data(&self, sources: &[DataSource]) -> Result<()> {
        if sources.is_empty() {
            return Err(CoreError::missing(
                "training",
                "--data: at least one dataset",
            ));
        }
        for src in sources {
            let (path, text) = read(self.data_dir(), src)?;
            let format = detect_format(&text).map_err(|e| CoreError::bad_file(&path, e))?;
            if format != Format::ManualText {
                parse_instructions(&path, &text)?;
            }
        }
        Ok(())
    }

    /// Each adapter a PEFT directory or a stored adapter (its tensors are checked when loaded).
    fn check_adapters(&self, names: &[String]) -> Result<()> {
        for name in names {
            locate_adapter(Some(self.store()), name)?;
        }
        Ok(())
    }
}

/// A new adapter's name: one that can become a folder name on export (see
/// [`soup_store::validate_name`]).
fn check_name(name: &str) -> Result<()> {
    soup_store::validate_name("adapter", name)?;
    Ok(())
}

fn check_loop(c: &LoopConfig) -> Result<()> {
    at_least_one("--epochs", c.epochs)?;
    at_least_one("--batch-size", c.batch_size)?;
    at_least_one("--grad-accum", c.grad_accum)?;
    positive("--lr", c.lr)?;
    non_negative("--weight-decay", c.weight_decay)?;
    non_negative("--max-grad-norm", c.max_grad_norm)?;
    if !(0.0..=1.0).contains(&c.warmup_ratio) {
        return Err(CoreError::bad_setting(
            "--warmup-ratio",
            c.warmup_ratio,
            "in [0, 1]",
        ));
    }
    fraction_below_one("--dropout", c.dropout as f64)?;
    if let Some(s) = c.max_steps {
        at_least_one("--max-steps", s)?;
    }
    Ok(())
}

/// One finite weight per adapter.
fn check_weights(adapters: &[String], weights: &[f64]) -> Result<()> {
    if weights.len() != adapters.len() {
        return Err(CoreError::bad_setting(
            "--weights",
            format!("{} weights", weights.len()),
            format!("one per adapter ({})", adapters.len()),
        ));
    }
    if let Some(w) = weights.iter().find(|w| !w.is_finite()) {
        return Err(CoreError::bad_setting("--weights", w, "finite numbers"));
    }
    Ok(())
}

fn at_least_one(setting: &str, v: usize) -> Result<()> {
    if v == 0 {
        return Err(CoreError::bad_setting(setting, 0, "at least 1"));
    }
    Ok(())
}

fn positive(setting: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v > 0.0) {
        return Err(CoreError::bad_setting(
            setting,
            v,
            "a finite number above 0",
        ));
    }
    Ok(())
}

fn non_negative(setting: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v >= 0.0) {
        return Err(CoreError::bad_setting(
            setting,
            v,
            "a finite number, 0 or more",
        ));
    }
    Ok(())
}

/// In [0, 1).
fn fraction_below_one(setting: &str, v: f64) -> Result<()> {
    if !(0.0..1.0).contains(&v) {
        return Err(CoreError::bad_setting(setting, v, "in [0, 1)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_ranges_are_refused_with_the_flag_named() {
        let ok = LoopConfig::default();
        check_loop(&ok).unwrap();
        let cases: Vec<(&str, LoopConfig)> = vec![
            (
                "--epochs",
                LoopConfig {
                    epochs: 0,
                    ..ok.clone()
                },
            ),
            (
                "--batch-size",
                LoopConfig {
                    batch_size: 0,
                    ..ok.clone()
                },
            ),
            (
                "--lr",
                LoopConfig {
                    lr: 0.0,
                    ..ok.clone()
                },
            ),
            (
                "--lr",
                LoopConfig {
                    lr: -1e-3,
                    ..ok.clone()
                },
            ),
            (
                "--lr",
                LoopConfig {
                    lr: f64::NAN,
                    ..ok.clone()
                },
            ),
            (
                "--lr",
                LoopConfig {
                    lr: f64::INFINITY,
                    ..ok.clone()
                },
            ),
            (
                "--dropout",
                LoopConfig {
                    dropout: 1.0,
                    ..ok.clone()
                },
            ),
            (
                "--dropout",
                LoopConfig {
                    dropout: -0.1,
                    ..ok.clone()
                },
            ),
            (
                "--dropout",
                LoopConfig {
                    dropout: f32::NAN,
                    ..ok.clone()
                },
            ),
            (
                "--weight-decay",
                LoopConfig {
                    weight_decay: f64::NAN,
                    ..ok.clone()
                },
            ),
            (
                "--warmup-ratio",
                LoopConfig {
                    warmup_ratio: 1.5,
                    ..ok.clone()
                },
            ),
            (
                "--max-steps",
                LoopConfig {
                    max_steps: Some(0),
                    ..ok.clone()
                },
            ),
        ];
        for (flag, c) in cases {
            let err = check_loop(&c).unwrap_err().to_string();
            assert!(err.contains(flag), "{flag}: {err}");
        }
    }

    #[test]
    fn weights_must_be_one_finite_number_per_adapter() {
        let ads = vec!["a".to_string(), "b".to_string()];
        check_weights(&ads, &[0.5, 0.5]).unwrap();
        for bad in [vec![1.0], vec![f64::NAN, 1.0], vec![1.0, f64::NEG_INFINITY]] {
            let err = check_weights(&ads, &bad).unwrap_err().to_string();
            assert!(err.contains("--weights"), "{err}");
        }
    }

    #[test]
    fn fractions_and_files() {
        fraction_below_one("x", 0.0).unwrap();
        assert!(fraction_below_one("x", 1.0).is_err());
        assert!(fraction_below_one("x", f64::NAN).is_err());
    }
}
