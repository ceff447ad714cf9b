//! The model: config parsing, the decoder, weight loading, tokenizer and the embedded default.

pub mod attention;
pub mod backward;
pub mod config;
mod dropout;
pub mod fetch;
pub mod finite;
pub mod fused;
#[cfg(test)]
mod fuzz;
pub mod gguf;
pub mod linear;
pub mod llama;
pub mod load;
pub(crate) mod ops;
pub mod products;
pub mod tokenizer;

pub use backward::{LayerTape, StackGrads};
pub use config::ModelConfig;
pub use llama::{ForwardInput, KvCache, Llama, Mode};
