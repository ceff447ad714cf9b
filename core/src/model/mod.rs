//! The model: config parsing, the decoder, weight loading, tokenizer and the embedded default.

pub mod config;

pub use config::ModelConfig;
