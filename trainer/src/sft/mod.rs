//! Supervised fine-tuning: the reference's five tasks, batching, AdamW and the training loop.

pub mod batch;
pub mod optim;
pub mod tasks;
pub mod train;
pub mod value;
