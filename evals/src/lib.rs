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
