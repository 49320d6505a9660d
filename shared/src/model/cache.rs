//! KV caches for beam search: one shared prompt cache plus a reorderable per-beam cache.
//!
//! After a prefill of `B` left-padded prompts, decoding runs `B * nb` beam rows, row `r`
//! belonging to prompt `r / nb`. The prompt's keys and values are stored once per prompt and
//! read by all of its beams; only the generated tokens' keys and values are stored per beam row,
//! where beam search can reorder them by index every step.

use candle_core::Tensor;

use crate::{Error, Result};

/// Keys and values of one layer, `[rows, kv_heads, t, head_dim]` each.
#[derive(Debug, Clone)]
pub struct LayerKv {
    /// Keys, already rotated by RoPE.
    pub k: Tensor,
    /// Values.
    pub v: Tensor,
}

/// The prompts' keys/values, shared by all beams of each prompt; read-only while decoding.
#[derive(Debug, Clone)]
pub struct PromptCache {
    pub(crate) layers: Vec<LayerKv>,
    /// Additive key mask `[B, P]` f32: 0 for real tokens, `-inf` for left padding.
    pub(crate) key_mask: Tensor,
    pub(crate) lengths: Vec<usize>,
}

impl PromptCache {
    /// Number of prompts `B`.
    pub fn batch(&self) -> usize {
        self.lengths.len()
    }

    /// Padded prompt length `P`.
    pub fn padded_len(&self) -> usize {
        self.key_mask.dims().get(1).copied().unwrap_or(0)
    }

    /// Real (unpadded) length of each prompt.
    pub fn lengths(&self) -> &[usize] {
        &self.lengths
    }

    /// Per-layer prompt keys/values, `[B, kv_heads, P, head_dim]`.
    pub fn layers(&self) -> &[LayerKv] {
        &self.layers
    }
}

/// Keys/values of the generated tokens, one row per beam; reorderable by index.
#[derive(Debug, Clone)]
pub struct BeamCache {
    pub(crate) layers: Vec<Option<LayerKv>>,
    len: usize,
}

impl BeamCache {
    /// An empty cache for a model with `num_layers` layers.
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
            len: 0,
        }
    }

    /// Number of generated tokens cached per row (`T`).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no token has been generated yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of beam rows, or `None` while the cache is empty.
    pub fn rows(&self) -> Option<usize> {
        self.layers
            .iter()
            .flatten()
            .next()
            .and_then(|kv| kv.k.dims().first().copied())
    }

    /// Per-layer beam keys/values, `[rows, kv_heads, T, head_dim]` (`None` while empty).
    pub fn layers(&self) -> &[Option<LayerKv>] {
        &self.layers
    }

    /// Make row `i` a copy of old row `indices[i]` (`indices`: u32/i64 `[new_rows]`).
    ///
    /// Beam search must keep each new row within the same prompt as its source row; the new row
    /// count may differ from the old one but must stay a multiple of the prompt count.
    pub fn reorder(&mut self, indices: &Tensor) -> Result<()> {
        if indices.rank() != 1 {
            return Err(Error::Invalid(format!(
                "beam reorder indices must be 1-D, got shape {:?}",
                indices.dims()
            )));
        }
        for kv in self.layers.iter_mut().flatten() {
            kv.k = kv.k.index_select(indices, 0)?;
            kv.v = kv.v.index_select(indices, 0)?;
        }
        Ok(())
    }

    /// Append one token's keys/values of `layer` and return the layer's full beam keys/values.
    pub(crate) fn append(&mut self, layer: usize, k: Tensor, v: Tensor) -> Result<LayerKv> {
        let slot = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| Error::Invalid(format!("beam cache has no layer {layer}")))?;
        let kv = match slot.take() {
            None => LayerKv { k, v },
            Some(old) => LayerKv {
                k: Tensor::cat(&[&old.k, &k], 2)?,
                v: Tensor::cat(&[&old.v, &v], 2)?,
            },
        };
        *slot = Some(kv.clone());
        Ok(kv)
    }

    /// Record that every layer received one more token.
    pub(crate) fn advance(&mut self) {
        self.len += 1;
    }
}
