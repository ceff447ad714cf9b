//! soup tasks: everything needed to grade a model on the two LoRA-Soups composition tasks
//! (code-math: word problems answered with Python programs; manual-QA: questions about a
//! proprietary manual) without knowing anything about the model itself.
//!
//! The model enters only through [`generate::Generate`], which `soup-core` implements; every
//! grader, prompt and the evaluation driver are therefore testable with a fake generator.
//!
//! Layout: [`datasets`] reads the real file formats into a few normalized item types;
//! [`synthetic`] generates offline, seeded task sets in those same formats; [`prompts`] builds
//! few-shot prompts (plain and chat); [`codemath`], [`mathcot`] and [`manualqa`] grade outputs;
//! [`sandbox`] runs untrusted Python; [`driver`] runs an evaluation with per-question records
//! and resume; [`grade`] grades prediction files for the `soup grade` subcommands; [`stats`]
//! holds the bootstrap confidence interval.
//!
//! Tasks: [`task`] defines what a task is (dataset, prompt with stops, grading, metrics,
//! headline, default dataset) and [`tasks`] registers them, one file each; the engine, the
//! recipes and the dashboard all reach tasks through the [`task::EvalTask`] handle.
//!
//! How `soup-core` runs a code-math evaluation (the model side is its `Generate` impl):
//!
//! ```no_run
//! use soup_evals::{driver, prompts, sandbox, tasks};
//! use soup_evals::{Completion, GenSettings, Generate, GenerateError};
//!
//! struct Model; // soup-core's generator
//! impl Generate for Model {
//!     fn generate(&mut self, prompts: &[String], s: &GenSettings)
//!         -> Result<Vec<Completion>, GenerateError> {
//!         unimplemented!("decode only the new tokens, cut at s.stop")
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let path = std::path::Path::new("code_math_test.json");
//! let data = tasks::CODE_MATH.load(path, &std::fs::read_to_string(path)?)?;
//! let sandbox = sandbox::Sandbox::new(sandbox::SandboxConfig::default())?;
//! let mut sink = |record: &driver::QuestionRecord| { /* write to the store */ let _ = record; Ok(()) };
//! let mut run = driver::EvalRun {
//!     generator: &mut Model,
//!     sandbox: Some(&sandbox),
//!     style: prompts::PromptStyle::Plain,
//!     render_chat: &|p| Ok(p.text.clone()), // core renders p.messages with the chat template
//!     prompt: soup_evals::task::PromptOptions { shots: 3 },
//!     dtype: None,
//!     opts: driver::EvalOptions { batch_size: 16, ..Default::default() },
//!     previous: &[], // records already in the store when resuming
//!     sink: &mut sink,
//! };
//! let summary = data.evaluate(&mut run)?;
//! println!("{} {:?} layers {:?}", summary.headline, summary.scores, sandbox.layers());
//! # Ok(())
//! # }
//! ```

pub mod codemath;
pub mod datasets;
pub mod driver;
#[cfg(test)]
#[path = "../../fuzz/harness.rs"]
pub(crate) mod fuzz_harness;
pub mod generate;
pub mod grade;
pub mod manualqa;
pub mod mathcot;
pub mod prompts;
pub mod sandbox;
pub mod stats;
pub mod synthetic;
pub mod task;
pub mod tasks;

pub use generate::{
    Completion, GenSettings, Generate, GenerateError, OnDone, RefScore, StreamOptions,
    StreamRequest,
};
