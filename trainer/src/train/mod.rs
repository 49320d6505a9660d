//! What every training stage shares, so that SFT, GRPO and any new stage are each just their
//! loop: the run's directories, its starting checkpoint loaded once as trainable variables and
//! its atomic saves ([`run`]), the loop state and `--resume` ([`state`]), validation
//! ([`validate`]), AdamW and the learning-rate schedule ([`optim`]), supervised examples and
//! batches ([`batch`]) and their loss ([`objective`]), with optional soft targets
//! ([`soft_targets`]).

pub mod batch;
pub mod objective;
pub mod optim;
pub mod run;
pub mod soft_targets;
pub mod state;
pub mod validate;
