//! Training: LoRA fine-tuning of skill adapters, CAT weight learning, and the loop they share.

pub mod batch;
pub mod cat;
pub mod data;
pub mod lora;
pub mod optim;
pub mod trainer;

pub use batch::TrainSeq;
pub use cat::{CatParam, CatTrainable};
pub use lora::{LoraSpec, LoraTrainable};
pub use trainer::{train_loop, JobControl, LoopConfig, TrainEvent, TrainSummary, Trainable};
