//! The engine's error type: every failure names the file, tensor or limit at fault so that the
//! command line can tell the user what to do next.

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
    #[error("tensor {name}: {message}")]
    Tensor { name: String, message: String },
    #[error("adapter {adapter}: {message}")]
    Adapter { adapter: String, message: String },
    #[error("input of {tokens} tokens is longer than the model's context of {limit} tokens")]
    TooLong { tokens: usize, limit: usize },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{0}")]
    Invalid(String),
    #[error("job cancelled")]
    Cancelled,
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
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
