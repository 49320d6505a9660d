//! A Qwen2 causal LM in candle, for training and for batched beam-search inference.
//!
//! - [`Qwen2`] holds the weights under HuggingFace names and is built from a
//!   [`candle_nn::VarBuilder`] (a `VarMap` for training, loaded tensors for inference).
//! - [`Mode::Train`] runs the project's fused [`kernels`] (RMSNorm, RoPE, attention, SwiGLU,
//!   each with a backward) for f32 on the CPU, and differentiable composite ops elsewhere.
//!   [`Mode::Infer`] runs candle-nn's fused kernels, which have no backward (gradients through
//!   them are silently dropped), and the matrix-product attention.
//! - [`Qwen2::prefill`] runs left-padded prompts once into a [`PromptCache`];
//!   [`Qwen2::decode_step`] then decodes `B * nb` beam rows that share their prompt's cache and
//!   keep only their own generated tokens in a reorderable [`BeamCache`].
//! - [`item_embedding`]: an optional learned vector per catalogue item, added where a history
//!   item's SID ends.
//! - [`copy_gate`]: an optional learned logit for writing the previous item's SID again.
//! - [`checkpoint`] loads and saves HF checkpoint directories.

pub mod cache;
pub mod checkpoint;
pub mod config;
pub mod copy_gate;
pub mod item_embedding;
pub mod kernels;
mod layout;
pub mod qwen2;

pub use cache::{BeamCache, LayerKv, PromptCache};
pub use config::{Qwen2Config, TokenIds};
pub use copy_gate::{CopyGate, CopyTarget};
pub use item_embedding::ItemLookup;
pub use layout::ItemWindow;
pub use qwen2::{left_padded_mask, Qwen2, ITEM_EMBEDDINGS_VAR};

/// Which implementation of the non-matmul ops a forward pass uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Differentiable plain-tensor RMSNorm, RoPE and softmax (for anything that backpropagates).
    Train,
    /// candle-nn's fused kernels (faster, no gradients).
    #[default]
    Infer,
}
