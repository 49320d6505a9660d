//! Trie-constrained decoding: batched beam search and sampling over the catalogue's SIDs.
//!
//! The prompts of a batch are left-padded and prefilled once; each prompt's KV cache is shared
//! by its beams ([`crate::model::PromptCache`]); every step scores only the candidate tokens of
//! each beam's trie node, keeps the best `num_beams` per prompt and reorders the per-beam KV
//! cache by index. All of it runs on the model's device; only the final top-K come back.

mod mixture;
mod search;
mod tables;

pub use mixture::{check_item_free_share, normalized_weights, Mixture, Pool};
pub use search::{DecodeRequest, Decoder, Hypothesis, ScoreMode, SearchConfig};
pub use tables::DecodeTables;
