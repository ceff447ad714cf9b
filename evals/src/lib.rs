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
//! How `soup-core` runs a code-math evaluation (the model side is its `Generate` impl):
//!
//! ```no_run
//! use soup_evals::{datasets, driver, prompts, sandbox};
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
//! let items = datasets::load_math(std::path::Path::new("code_math_test.json"))?;
//! let sandbox = sandbox::Sandbox::new(sandbox::SandboxConfig::default())?;
//! let opts = driver::EvalOptions {
//!     settings: GenSettings { stop: prompts::pot_stop(), ..GenSettings::default() },
//!     batch_size: 16,
//!     ..Default::default()
//! };
//! let previous = vec![]; // records already in the store when resuming
//! let summary = driver::run_code_math(
//!     &items,
//!     &|item| prompts::pot_prompt(&item.question, 3).text, // or chat-template .messages
//!     &mut Model,
//!     &sandbox,
//!     &opts,
//!     &previous,
//!     &mut |record| { /* write to the store */ let _ = record; Ok(()) },
//! )?;
//! println!("{} {:?} layers {:?}", summary.headline, summary.scores, sandbox.layers());
//! # Ok(())
//! # }
//! ```

pub mod codemath;
pub mod datasets;
pub mod driver;
pub mod generate;
pub mod grade;
pub mod manualqa;
pub mod mathcot;
pub mod prompts;
pub mod sandbox;
pub mod stats;
pub mod synthetic;

pub use generate::{Completion, GenSettings, Generate, GenerateError};
