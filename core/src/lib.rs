//! The soup engine: a Llama-family decoder whose projections carry stacks of LoRA adapters,
//! model loading (HF directories, GGUF, the embedded default), generation, training, CAT,
//! merges and the job engine that the CLI and the dashboard drive.

pub mod bench;
pub mod bench_eval;
pub mod device;
pub mod engine;
pub mod error;
/// Tests: a fake OpenAI-compatible server (see the module).
#[cfg(any(test, feature = "test-support"))]
pub mod fake_openai;
#[cfg(test)]
#[path = "../../fuzz/harness.rs"]
pub(crate) mod fuzz_harness;
pub mod generate;
pub mod lora;
pub mod merge;
pub mod model;
pub mod output;
pub mod remote;
pub mod runtime;
pub mod serve;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
pub mod train;

pub use error::{CoreError, Result};
