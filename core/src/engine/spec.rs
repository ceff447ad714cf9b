//! Job specifications: what a run does, serialized into its store record so that a failed or
//! cancelled run can be resumed and a finished one reproduced.

use crate::device::Precision;
use crate::lora::Module;
use crate::merge::MergeKind;
use crate::train::cat::{
    DEFAULT_CAT_EPOCHS, DEFAULT_CAT_HELDOUT, DEFAULT_CAT_LR, DEFAULT_CAT_MIN_STEPS,
};
use crate::train::{CatInit, CatParam, LoopConfig, LoraSpec};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where a job's data comes from: a file in a supported format, or a built-in synthetic set
/// (`builtin:math-train`, `builtin:code-train`, `builtin:codemath-test`, `builtin:manual`,
/// `builtin:qa-train`, `builtin:manualqa-test`, ...; see `soup data list`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataSource {
    File(PathBuf),
    Builtin(String),
}

impl DataSource {
    /// `builtin:NAME` or a path.
    pub fn parse(s: &str) -> DataSource {
        match s.strip_prefix("builtin:") {
            Some(name) => DataSource::Builtin(name.to_string()),
            None => DataSource::File(PathBuf::from(s)),
        }
    }

    pub fn label(&self) -> String {
        match self {
            DataSource::File(p) => p.display().to_string(),
            DataSource::Builtin(n) => format!("builtin:{n}"),
        }
    }
}

/// Train one LoRA on one or more datasets (several: the DATA-MIX baseline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainJob {
    pub name: String,
    pub model: String,
    pub data: Vec<DataSource>,
    /// Relative weight of each dataset in the mix (DATA-MIX); default equal shares of what
    /// each set has.
    #[serde(default)]
    pub mix: Option<Vec<f64>>,
    /// How many times each dataset's examples are repeated per epoch (default once each):
    /// DATA-MIX gives each skill's data as many passes as that skill's own LoRA got, so a
    /// knowledge corpus trained for 10 epochs alone is not seen once in the mix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passes: Option<Vec<usize>>,
    pub skill: Option<String>,
    pub lora: LoraSpec,
    pub train: LoopConfig,
    /// Include prompt tokens in the loss (the paper's reference code does).
    #[serde(default)]
    pub train_on_inputs: bool,
    /// Longest sequence in tokens; longer examples are truncated (or refused with `strict`).
    pub max_len: usize,
    #[serde(default)]
    pub strict: bool,
    /// Fraction held out for validation loss.
    pub val_fraction: f64,
    /// Plain-text corpora are cut into chunks of this many tokens.
    pub chunk_tokens: usize,
    /// Use at most this many examples of each dataset (after shuffling with the seed).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Precision of the frozen weights; the engine fixes it when it records the run, so a
    /// stored spec always says what ran (specs stored before it existed read as None).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<Precision>,
    /// A digest of what the job reads under its names (its data files' bytes, its input
    /// adapters' weights). A recipe sets it, so a re-run redoes a job whose inputs changed
    /// while their names stayed (a retrained skill, an edited file, a built-in set from a
    /// newer generator) instead of reusing its result. None for jobs run by hand and for specs
    /// stored before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<String>,
}

/// Learn CAT weights over frozen skill adapters. Its loop's `lr`, `epochs` and `min_steps`
/// are the CAT coefficients' own (a recipe's `cat_lr`, `cat_epochs`, `cat_min_steps`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatJob {
    pub name: String,
    pub model: String,
    pub adapters: Vec<String>,
    pub data: Vec<DataSource>,
    pub param: CatParam,
    /// Where the weights start: the plain concatenation (`uniform`) or the paper's random
    /// logits (`normal`). Specs stored before it existed ran `normal` and read so.
    #[serde(default = "CatInit::legacy")]
    pub init: CatInit,
    /// Fraction of each dataset used (the paper: 5 %).
    pub sample_fraction: f64,
    /// Up to this many examples of each dataset outside the sample, on which the start and
    /// the learned weights' loss are compared (0: none; specs stored before it read as 0).
    #[serde(default)]
    pub heldout: usize,
    pub train: LoopConfig,
    pub max_len: usize,
    #[serde(default)]
    pub train_on_inputs: bool,
    /// Precision of the frozen weights; the engine fixes it when it records the run, so a
    /// stored spec always says what ran (specs stored before it existed read as None).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<Precision>,
    /// What the job reads, as a digest: see [`TrainJob::inputs`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<String>,
}

/// A fixed-weight merge family, PEFT's `add_weighted_adapter` semantics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeJob {
    pub name: String,
    pub method: MergeKind,
    pub adapters: Vec<String>,
    pub weights: Vec<f64>,
    pub density: Option<f64>,
    pub svd_rank: Option<usize>,
    pub majority_sign_method: Option<String>,
    pub seed: u64,
    /// Where to also write a PEFT directory (new or empty unless `out_force`).
    pub out: Option<PathBuf>,
    /// `--force`: `out` may be a non-empty folder, which is replaced (never an input).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub out_force: bool,
    /// LoraHub needs a model and a few examples to search weights on.
    pub model: Option<String>,
    pub data: Vec<DataSource>,
    pub budget: Option<usize>,
    /// Precision of the frozen weights; the engine fixes it when it records the run, so a
    /// stored spec always says what ran (specs stored before it existed read as None).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<Precision>,
    /// What the job reads, as a digest: see [`TrainJob::inputs`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<String>,
}

/// Which weights an evaluation runs with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvalTarget {
    Base,
    /// A stored adapter (trained, CAT or merged) or a PEFT directory.
    Adapter(String),
    /// A merge built on the fly: method, adapters, weights.
    Merge {
        method: MergeKind,
        adapters: Vec<String>,
        weights: Vec<f64>,
    },
}

impl EvalTarget {
    pub fn label(&self) -> String {
        match self {
            EvalTarget::Base => "base".into(),
            EvalTarget::Adapter(a) => a.clone(),
            EvalTarget::Merge {
                method, adapters, ..
            } => format!("{method}({})", adapters.join(",")),
        }
    }
}

/// The task an evaluation grades: a handle on soup-evals' task registry, stored by name.
pub use soup_evals::task::EvalTask;
/// The registered tasks that code names directly.
pub use soup_evals::tasks;

/// Evaluate one model configuration on one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalJob {
    pub model: String,
    pub target: EvalTarget,
    pub task: EvalTask,
    pub data: DataSource,
    pub limit: Option<usize>,
    /// With `limit`, evaluate a sample of the questions drawn with this seed instead of the
    /// first ones (specs stored before it existed read as None: the first ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_seed: Option<u64>,
    pub batch_size: usize,
    pub max_new_tokens: usize,
    /// Few-shot demos in the prompt (code-math, math-cot).
    pub shots: usize,
    /// Chat template (instruct models) or plain few-shot text; None: chat when the model has a
    /// template.
    pub chat: Option<bool>,
    pub seed: u64,
    /// Precision of the frozen weights; the engine fixes it when it records the run, so a
    /// stored spec always says what ran (specs stored before it existed read as None).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<Precision>,
    /// Generation on an OpenAI-compatible server instead of the local engine (grading,
    /// records and resume stay local); None: local. Specs stored before it read as None.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<crate::remote::RemoteBackend>,
    /// What the job reads, as a digest: see [`TrainJob::inputs`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<String>,
    /// The version of the task's grader ([`EvalTask::grader_version`]); the engine fixes it
    /// when it records the run, so a stored evaluation says which grader scored it (specs
    /// stored before it existed read as None: an older grader).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grader: Option<u32>,
}

/// Everything the engine can run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "job")]
pub enum JobSpec {
    Train(TrainJob),
    Cat(CatJob),
    Merge(MergeJob),
    Eval(EvalJob),
}

impl JobSpec {
    pub fn kind(&self) -> soup_store::RunKind {
        match self {
            JobSpec::Train(_) => soup_store::RunKind::Train,
            JobSpec::Cat(_) => soup_store::RunKind::Cat,
            JobSpec::Merge(_) => soup_store::RunKind::Merge,
            JobSpec::Eval(_) => soup_store::RunKind::Eval,
        }
    }

    /// Fills what the engine decides and the recorded spec must say, so that it tells what
    /// ran and a resume runs the same: a missing precision with `default` (the engine's), and
    /// an evaluation's grader version with its task's current one.
    pub fn fix_recorded(&mut self, default: Precision) {
        self.fix_grader();
        let dtype = match self {
            JobSpec::Train(j) => &mut j.dtype,
            JobSpec::Cat(j) => &mut j.dtype,
            JobSpec::Merge(j) => &mut j.dtype,
            JobSpec::Eval(j) => &mut j.dtype,
        };
        dtype.get_or_insert(default);
    }

    /// Fills an evaluation's missing grader version with its task's current one (what the
    /// engine records, and what a planned evaluation is compared with stored ones by).
    pub fn fix_grader(&mut self) {
        if let JobSpec::Eval(j) = self {
            j.grader.get_or_insert(j.task.grader_version());
        }
    }

    /// Where the job's [`TrainJob::inputs`] digest goes.
    pub fn inputs_mut(&mut self) -> &mut Option<String> {
        match self {
            JobSpec::Train(j) => &mut j.inputs,
            JobSpec::Cat(j) => &mut j.inputs,
            JobSpec::Merge(j) => &mut j.inputs,
            JobSpec::Eval(j) => &mut j.inputs,
        }
    }

    /// The data sources the job reads.
    pub fn data_sources(&self) -> Vec<&DataSource> {
        match self {
            JobSpec::Train(j) => j.data.iter().collect(),
            JobSpec::Cat(j) => j.data.iter().collect(),
            JobSpec::Merge(j) => j.data.iter().collect(),
            JobSpec::Eval(j) => vec![&j.data],
        }
    }

    /// The adapters the job reads, by the name (or PEFT directory) it gives them.
    pub fn input_adapters(&self) -> Vec<&str> {
        fn names(v: &[String]) -> Vec<&str> {
            v.iter().map(String::as_str).collect()
        }
        match self {
            JobSpec::Train(_) => Vec::new(),
            JobSpec::Cat(j) => names(&j.adapters),
            JobSpec::Merge(j) => names(&j.adapters),
            JobSpec::Eval(j) => match &j.target {
                EvalTarget::Base => Vec::new(),
                EvalTarget::Adapter(a) => vec![a.as_str()],
                EvalTarget::Merge { adapters, .. } => names(adapters),
            },
        }
    }

    /// Every float the spec holds, under the name a user knows it by (a flag or a recipe
    /// key), for [`JobSpec::to_record`].
    fn floats(&self) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = Vec::new();
        let loop_cfg = |out: &mut Vec<(String, f64)>, t: &LoopConfig| {
            out.push(("--lr".into(), t.lr));
            out.push(("--weight-decay".into(), t.weight_decay));
            out.push(("--warmup-ratio".into(), t.warmup_ratio));
            out.push(("--max-grad-norm".into(), t.max_grad_norm));
            out.push(("--dropout".into(), t.dropout as f64));
        };
        let list = |out: &mut Vec<(String, f64)>, flag: &str, vs: &[f64]| {
            for (i, v) in vs.iter().enumerate() {
                out.push((format!("{flag} (value {})", i + 1), *v));
            }
        };
        match self {
            JobSpec::Train(j) => {
                list(&mut out, "--mix", j.mix.as_deref().unwrap_or_default());
                out.push(("--val-fraction".into(), j.val_fraction));
                out.push(("--alpha".into(), j.lora.alpha));
                loop_cfg(&mut out, &j.train);
            }
            JobSpec::Cat(j) => {
                out.push(("--sample-fraction".into(), j.sample_fraction));
                loop_cfg(&mut out, &j.train);
            }
            JobSpec::Merge(j) => {
                list(&mut out, "--weights", &j.weights);
                if let Some(d) = j.density {
                    out.push(("--density".into(), d));
                }
            }
            JobSpec::Eval(j) => {
                if let EvalTarget::Merge { weights, .. } = &j.target {
                    list(&mut out, "--weights", weights);
                }
            }
        }
        out
    }

    /// The spec as the JSON a run records, refused when it would not read back as the same
    /// spec: serde_json writes NaN and Infinity as `null`, which would leave a run whose spec
    /// can never be read (resumed, reused, shown). Non-finite numbers are named by their flag;
    /// anything else that does not round-trip is caught by reading the JSON back.
    pub fn to_record(&self) -> crate::error::Result<serde_json::Value> {
        use crate::error::CoreError;
        if let Some((name, v)) = self.floats().into_iter().find(|(_, v)| !v.is_finite()) {
            return Err(CoreError::bad_setting(
                name,
                v,
                "must be a finite number (a run records its settings as JSON, which has no NaN or Infinity)",
            ));
        }
        let value =
            serde_json::to_value(self).map_err(|e| CoreError::serialize("the job's spec", e))?;
        let back: JobSpec = serde_json::from_value(value.clone())
            .map_err(|e| CoreError::serialize("the job's spec (it would not read back)", e))?;
        if &back != self {
            return Err(CoreError::Internal(format!(
                "the job's spec reads back differently from how it was written ({} vs {})",
                serde_json::to_string(self).unwrap_or_default(),
                serde_json::to_string(&back).unwrap_or_default()
            )));
        }
        Ok(value)
    }

    /// A short human label for lists.
    pub fn label(&self) -> String {
        match self {
            JobSpec::Train(t) => format!("train {}", t.name),
            JobSpec::Cat(c) => format!("cat {}", c.name),
            JobSpec::Merge(m) => format!("merge {} ({})", m.name, m.method),
            JobSpec::Eval(e) => format!("eval {} on {}", e.target.label(), e.task.name()),
        }
    }
}

/// Defaults that fit SmolLM2-135M on a CPU and mirror the paper's recipe.
impl TrainJob {
    pub fn new(name: &str, model: &str, data: Vec<DataSource>) -> Self {
        TrainJob {
            name: name.into(),
            model: model.into(),
            data,
            mix: None,
            passes: None,
            skill: None,
            lora: LoraSpec::default(),
            train: LoopConfig::default(),
            train_on_inputs: false,
            max_len: 512,
            strict: false,
            val_fraction: 0.05,
            chunk_tokens: 256,
            limit: None,
            dtype: None,
            inputs: None,
        }
    }
}

impl CatJob {
    pub fn new(name: &str, model: &str, adapters: Vec<String>, data: Vec<DataSource>) -> Self {
        CatJob {
            name: name.into(),
            model: model.into(),
            adapters,
            data,
            param: CatParam::Softmax,
            init: CatInit::Uniform,
            sample_fraction: 0.05,
            heldout: DEFAULT_CAT_HELDOUT,
            train: LoopConfig {
                epochs: DEFAULT_CAT_EPOCHS,
                min_steps: DEFAULT_CAT_MIN_STEPS,
                lr: DEFAULT_CAT_LR,
                dropout: 0.0,
                ..LoopConfig::default()
            },
            max_len: 512,
            train_on_inputs: false,
            dtype: None,
            inputs: None,
        }
    }
}

impl MergeJob {
    /// A merge of `adapters` by `method` with one weight each; no PEFT copy, no search data,
    /// the method's own defaults for density, SVD rank and sign election.
    pub fn new(name: &str, method: MergeKind, adapters: Vec<String>, weights: Vec<f64>) -> Self {
        MergeJob {
            name: name.into(),
            method,
            adapters,
            weights,
            density: None,
            svd_rank: None,
            majority_sign_method: None,
            seed: 0,
            out: None,
            out_force: false,
            model: None,
            data: Vec::new(),
            budget: None,
            dtype: None,
            inputs: None,
        }
    }
}

impl EvalJob {
    pub fn new(model: &str, target: EvalTarget, task: EvalTask, data: DataSource) -> Self {
        EvalJob {
            model: model.into(),
            target,
            task,
            data,
            limit: None,
            sample_seed: None,
            batch_size: 32,
            max_new_tokens: 160,
            shots: 3,
            chat: None,
            seed: 0,
            dtype: None,
            inputs: None,
            remote: None,
            grader: None,
        }
    }
}

/// Used by the dashboard's form for the target list.
pub fn default_targets() -> Vec<Module> {
    LoraSpec::default().targets
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Specs stored before merge methods were typed held the method as a plain string; they
    /// must still read (resume, reuse by a recipe) and write back the same JSON.
    #[test]
    fn stored_specs_with_a_string_method_still_deserialize() {
        let merge = r#"{"job":"merge","name":"t-tiny-dare_linear","method":"dare_linear",
            "adapters":["t-tiny-math","t-tiny-code"],"weights":[1.0,1.0],"density":0.5,
            "svd_rank":null,"majority_sign_method":null,"seed":0,"out":null,"model":"default",
            "data":[],"budget":null}"#;
        let spec: JobSpec = serde_json::from_str(merge).unwrap();
        let JobSpec::Merge(job) = &spec else {
            panic!("{spec:?}")
        };
        assert_eq!(job.method, MergeKind::DareLinear);
        let again = serde_json::to_value(&spec).unwrap();
        let stored: serde_json::Value = serde_json::from_str(merge).unwrap();
        assert_eq!(again, stored, "written back exactly as stored");

        // An evaluation's target (its job around it is the evaluation path's business).
        for name in ["lorahub", "ties_svd", "magnitude_prune", "cat", "svd"] {
            let stored = format!(
                r#"{{"merge":{{"method":"{name}","adapters":["a","b"],"weights":[0.5,0.5]}}}}"#
            );
            let target: EvalTarget = serde_json::from_str(&stored).unwrap();
            let EvalTarget::Merge { method, .. } = &target else {
                panic!("{target:?}")
            };
            assert_eq!(method.name(), name);
            assert_eq!(target.label(), format!("{name}(a,b)"));
            assert_eq!(serde_json::to_string(&target).unwrap(), stored);
        }
    }

    /// A CAT spec stored before CAT had its own start, minimum steps and held-out set reads as
    /// what it ran (the paper's random start, no minimum, no held-out loss).
    #[test]
    fn a_cat_spec_from_before_the_cat_settings_reads_as_what_it_ran() {
        let old = r#"{"job":"cat","name":"c","model":"default","adapters":["a","b"],
            "data":[{"builtin":"math-train"}],"param":"softmax","sample_fraction":0.05,
            "train":{"batch_size":8,"checkpoint_every":50,"decay":"linear","dropout":0.0,
            "epochs":1,"eval_every":0,"grad_accum":1,"lr":0.0001,"max_grad_norm":1.0,
            "max_steps":null,"seed":0,"warmup_ratio":0.03,"weight_decay":0.0},
            "max_len":512,"train_on_inputs":false}"#;
        let JobSpec::Cat(job) = serde_json::from_str::<JobSpec>(old).unwrap() else {
            panic!()
        };
        assert_eq!(job.init, CatInit::Normal);
        assert_eq!(job.heldout, 0);
        assert_eq!(job.train.min_steps, 0);
        let new = CatJob::new("c", "default", vec![], vec![]);
        assert_eq!(new.init, CatInit::Uniform);
        assert_eq!(new.train.lr, DEFAULT_CAT_LR);
        assert_eq!(new.train.min_steps, DEFAULT_CAT_MIN_STEPS);
    }

    #[test]
    fn a_misspelt_method_is_refused_when_read() {
        let bad = r#"{"method":"tie","adapters":["a"],"weights":[1.0]}"#;
        let err = serde_json::from_str::<EvalTarget>(&format!(r#"{{"merge":{bad}}}"#))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown merge method"), "{err}");
    }

    /// One spec of each kind with every float field set by `set(field index, value)`; the
    /// fields are those [`JobSpec::floats`] names, in its order.
    fn specs_with(value: f64) -> Vec<(String, JobSpec)> {
        let mut out = Vec::new();
        let data = vec![DataSource::Builtin("math-train".into())];
        let loop_fields = 5;
        // Train: mix (2), val_fraction, alpha, then the loop's five.
        for field in 0..(2 + 2 + loop_fields) {
            let mut j = TrainJob::new("t", "default", data.clone());
            j.mix = Some(vec![1.0, 2.0]);
            match field {
                0 | 1 => j.mix.as_mut().unwrap()[field] = value,
                2 => j.val_fraction = value,
                3 => j.lora.alpha = value,
                f => set_loop(&mut j.train, f - 4, value),
            }
            out.push((format!("train field {field}"), JobSpec::Train(j)));
        }
        for field in 0..(1 + loop_fields) {
            let mut j = CatJob::new("c", "default", vec!["a".into(), "b".into()], data.clone());
            match field {
                0 => j.sample_fraction = value,
                f => set_loop(&mut j.train, f - 1, value),
            }
            out.push((format!("cat field {field}"), JobSpec::Cat(j)));
        }
        for field in 0..3 {
            let mut j = MergeJob::new(
                "m",
                MergeKind::Ties,
                vec!["a".into(), "b".into()],
                vec![0.5, 0.5],
            );
            j.density = Some(0.5);
            match field {
                0 | 1 => j.weights[field] = value,
                _ => j.density = Some(value),
            }
            out.push((format!("merge field {field}"), JobSpec::Merge(j)));
        }
        for field in 0..2 {
            let mut weights = vec![0.5, 0.5];
            weights[field] = value;
            let target = EvalTarget::Merge {
                method: MergeKind::Linear,
                adapters: vec!["a".into(), "b".into()],
                weights,
            };
            let j = EvalJob::new("default", target, tasks::CODE_MATH, data[0].clone());
            out.push((format!("eval field {field}"), JobSpec::Eval(j)));
        }
        out
    }

    fn set_loop(t: &mut LoopConfig, field: usize, value: f64) {
        match field {
            0 => t.lr = value,
            1 => t.weight_decay = value,
            2 => t.warmup_ratio = value,
            3 => t.max_grad_norm = value,
            _ => t.dropout = value as f32,
        }
    }

    /// Every float field at every awkward value either goes through the store and reads back
    /// as the same spec, or is refused by `to_record` (so before a run exists) naming the field.
    /// NaN and ±Inf must be refused: serde_json would write them as null, and the run's spec
    /// could never be read again.
    #[test]
    fn every_float_field_at_a_weird_value_round_trips_or_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = soup_store::Store::open(dir.path()).unwrap();
        let weird = [
            f64::NAN,
            -f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            5e-324,
            1e-300,
            0.1 + 0.2,
            f32::MAX as f64 * 2.0,
        ];
        let mut refused = 0;
        let mut stored = 0;
        for value in weird {
            for (what, spec) in specs_with(value) {
                // The spec must actually hold the value (a field the list misses would not).
                let floats = spec.floats();
                let holds = floats.iter().any(|(_, v)| {
                    v.to_bits() == value.to_bits()
                        || (v.is_nan() && value.is_nan())
                        || *v == value as f32 as f64
                });
                assert!(holds, "{what}: {value} not among {floats:?}");
                let finite = floats.iter().all(|(_, v)| v.is_finite());
                match spec.to_record() {
                    Ok(v) => {
                        assert!(finite, "{what}: {value} accepted");
                        let run = store.create_run(spec.kind(), &spec.label(), v).unwrap();
                        let back = store.get_run(run.id).unwrap().unwrap();
                        let read: JobSpec = serde_json::from_value(back.spec)
                            .unwrap_or_else(|e| panic!("{what} = {value}: unreadable: {e}"));
                        assert_eq!(read, spec, "{what} = {value}");
                        stored += 1;
                    }
                    Err(e) => {
                        assert!(!finite, "{what}: {value} refused: {e}");
                        let m = e.to_string();
                        let named = floats.iter().find(|(_, v)| !v.is_finite()).unwrap();
                        assert!(m.contains(&named.0) && m.contains("finite"), "{what}: {m}");
                        refused += 1;
                    }
                }
            }
        }
        assert!(
            refused > 0 && stored > 0,
            "{refused} refused, {stored} stored"
        );
    }
}
