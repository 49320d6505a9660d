//! Supervised fine-tuning: the reference's five tasks as tokenised examples.

pub mod tasks;
