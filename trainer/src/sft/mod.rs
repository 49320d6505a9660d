//! Supervised fine-tuning: the reference's five tasks and the training loop (the shared
//! machinery is in [`crate::train`]).

pub mod tasks;
pub mod train;
pub mod value;
