//! LoRA adapters: their tensors and metadata (`adapter`), the stack of adapters that every
//! projection of the model can carry (`stack`), and PEFT's file format (`peft`).

pub mod adapter;
#[cfg(test)]
mod fuzz;
pub mod peft;
pub mod stack;

pub use adapter::{LoraAdapter, LoraPair, Module, ALL_MODULES};
pub use stack::{AdapterStack, StackWeights};
