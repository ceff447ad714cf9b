//! Training: LoRA fine-tuning of skill adapters, CAT weight learning, and the loop they share.

pub mod batch;
pub mod cat;
pub mod cat_check;
pub mod data;
pub mod lora;
pub mod optim;
pub mod trainer;

pub use batch::TrainSeq;
pub use cat::{CatInit, CatMovement, CatParam, CatTrainable, CatVerdict};
pub use lora::{LoraSpec, LoraTrainable};
pub use trainer::{train_loop, JobControl, LoopConfig, TrainEvent, TrainSummary, Trainable};
