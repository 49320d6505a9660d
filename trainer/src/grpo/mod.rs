//! GRPO (MINIONEREC.md §6): constrained rollouts, rewards, the KL-penalised policy-gradient
//! objective and the training loop.

pub mod data;
pub mod loss;
pub mod rewards;
pub mod rollout;
pub mod train;
