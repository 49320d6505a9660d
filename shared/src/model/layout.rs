//! Per-batch layout: which tokens are real, their positions, the RoPE tables and the masks.
//!
//! All of it is derived on the host from the padding mask (a few bytes per token), so that the
//! device only ever sees finished tables.

use candle_core::{DType, Device, Tensor, D};

use super::Mode;
use crate::trie::SidVocab;

/// The additive mask value of a blocked attention entry.
///
/// `-inf` is safe because every query row keeps at least its own key (see [`BatchLayout`]).
pub(crate) const BLOCKED: f32 = f32::NEG_INFINITY;

/// RoPE frequencies of one model.
#[derive(Debug, Clone)]
pub(crate) struct Rotary {
    inv_freq: Vec<f32>,
}

impl Rotary {
    pub(crate) fn new(head_dim: usize, theta: f64) -> Self {
        // Same arithmetic as HF: inverse frequencies in f32, angle = f32(position) * inv_freq.
        let inv_freq = (0..head_dim)
            .step_by(2)
            .map(|i| 1f32 / theta.powf(i as f64 / head_dim as f64) as f32)
            .collect();
        Self { inv_freq }
    }

    /// RoPE tables for `rows` rows of `t` positions each (`positions` is row-major); `kernel`:
    /// the pass uses the fused (differentiable) CPU kernel.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn tables(
        &self,
        positions: &[u32],
        rows: usize,
        t: usize,
        mode: Mode,
        kernel: bool,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<RopeTables> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            for &f in &self.inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let cos = Tensor::from_vec(cos, (rows, t, half), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (rows, t, half), device)?.to_dtype(dtype)?;
        Ok(match mode {
            _ if kernel => RopeTables::Kernel { cos, sin },
            Mode::Infer => RopeTables::Fused { cos, sin },
            Mode::Train => {
                // rotate-half form: both halves of a head use the same angle.
                let full = |x: &Tensor| Tensor::cat(&[x, x], D::Minus1)?.unsqueeze(1);
                RopeTables::Plain {
                    cos: full(&cos)?,
                    sin: full(&sin)?,
                }
            }
        })
    }
}

/// cos/sin for the rows and positions of one forward call.
#[derive(Debug, Clone)]
pub(crate) enum RopeTables {
    /// `[rows, t, d/2]`, for the project's fused CPU kernel (differentiable).
    Kernel { cos: Tensor, sin: Tensor },
    /// `[rows, t, d/2]`, for candle-nn's fused (non-differentiable) `rope`.
    Fused { cos: Tensor, sin: Tensor },
    /// `[rows, 1, t, d]`, for the differentiable rotate-half form.
    Plain { cos: Tensor, sin: Tensor },
}

impl RopeTables {
    /// Rotate `x` (`[rows, heads, t, d]`, contiguous).
    pub(crate) fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            RopeTables::Kernel { cos, sin } => super::kernels::rope::rope(x, cos, sin),
            RopeTables::Fused { cos, sin } => candle_nn::rotary_emb::rope(x, cos, sin),
            RopeTables::Plain { cos, sin } => {
                let d = x.dim(D::Minus1)?;
                let x1 = x.narrow(D::Minus1, 0, d / 2)?;
                let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
                let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
                x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
            }
        }
    }
}

/// Real-token flags and positions of a `[B, L]` batch.
///
/// Positions count real tokens only (HF's `cumsum(mask) - 1`), so a left-padded row sees the
/// same positions as the prompt run alone. Pad tokens get position 0 and may attend to
/// themselves only, which keeps every softmax row finite (a fully masked row would be NaN and
/// poison the backward pass even though its output is never used).
#[derive(Debug, Clone)]
pub(crate) struct BatchLayout {
    pub(crate) batch: usize,
    pub(crate) len: usize,
    pub(crate) real: Vec<bool>,
    pub(crate) positions: Vec<u32>,
    /// Per token (row-major `[B, L]`), the keys an [`ItemWindow`] hides from it: those whose
    /// position is in `from..to` (`None`: plain causal attention).
    pub(crate) hidden: Option<Vec<(u32, u32)>>,
}

impl BatchLayout {
    /// From per-token flags, row-major `[batch, len]`.
    pub(crate) fn from_flags(real: Vec<bool>, batch: usize, len: usize) -> Self {
        let mut positions = Vec::with_capacity(real.len());
        for row in real.chunks(len.max(1)) {
            let mut next = 0u32;
            for &r in row {
                positions.push(if r { next } else { 0 });
                next += u32::from(r);
            }
        }
        Self {
            batch,
            len,
            real,
            positions,
            hidden: None,
        }
    }

    /// The same layout with the keys outside `window` hidden from each token of `ids`
    /// (row-major `[batch, len]`).
    pub(crate) fn with_item_window(mut self, ids: &[u32], window: &ItemWindow) -> Self {
        let width = self.len.max(1);
        let mut hidden = vec![(0, 0); ids.len()];
        for ((ids, real), hidden) in ids
            .chunks(width)
            .zip(self.real.chunks(width))
            .zip(hidden.chunks_mut(width))
        {
            let real_ids: Vec<u32> = ids
                .iter()
                .zip(real)
                .filter_map(|(&id, &r)| r.then_some(id))
                .collect();
            let spans = window.hidden_spans(&real_ids);
            let slots = hidden
                .iter_mut()
                .zip(real)
                .filter_map(|(h, &r)| r.then_some(h));
            for (slot, span) in slots.zip(spans) {
                *slot = span;
            }
        }
        self.hidden = Some(hidden);
        self
    }

    /// Keys hidden from token `t` (flat index): positions `from..to`.
    pub(crate) fn hidden_from(&self, t: usize) -> std::ops::Range<u32> {
        match &self.hidden {
            Some(h) => h[t].0..h[t].1,
            None => 0..0,
        }
    }

    /// A batch without padding.
    pub(crate) fn dense(batch: usize, len: usize) -> Self {
        Self::from_flags(vec![true; batch * len], batch, len)
    }

    /// Left-padded rows of the given lengths.
    pub(crate) fn left_padded(lengths: &[usize], len: usize) -> Self {
        let real = lengths
            .iter()
            .flat_map(|&n| (0..len).map(move |j| j + n >= len))
            .collect();
        Self::from_flags(real, lengths.len(), len)
    }

    /// Causal + padding additive mask, `[B, 1, L, L]` f32.
    pub(crate) fn self_attention_mask(&self, device: &Device) -> candle_core::Result<Tensor> {
        let (b, l) = (self.batch, self.len);
        let mut mask = Vec::with_capacity(b * l * l);
        for row in 0..b {
            let real = &self.real[row * l..(row + 1) * l];
            let positions = &self.positions[row * l..(row + 1) * l];
            for i in 0..l {
                let hidden = self.hidden_from(row * l + i);
                for (j, &rj) in real.iter().enumerate() {
                    let allowed = (j <= i && rj && !hidden.contains(&positions[j])) || j == i;
                    mask.push(if allowed { 0.0 } else { BLOCKED });
                }
            }
        }
        Tensor::from_vec(mask, (b, 1, l, l), device)
    }

    /// Key-padding additive mask, `[B, L]` f32 (for cached prompt keys).
    pub(crate) fn key_mask(&self, device: &Device) -> candle_core::Result<Tensor> {
        let mask: Vec<f32> = self
            .real
            .iter()
            .map(|&r| if r { 0.0 } else { BLOCKED })
            .collect();
        Tensor::from_vec(mask, (self.batch, self.len), device)
    }
}

/// Attention restricted to the latest items of a row: a token sees the row's header (the
/// tokens before its first SID), the SIDs of the `items` items before its own and its own
/// item's tokens up to itself, where an item's tokens are its SID and whatever follows it up
/// to the next SID.
///
/// Why: a model whose recommendation prompts keep only the last few history items (`sft
/// --max-history`) is asked, at inference, to predict from those items alone; trained on
/// whole rows with every position supervised (`--history-loss`), it would learn to lean on
/// items it will never see. Hiding them keeps each training row's ten or so supervised
/// transitions in the one pass (cutting rows to their last items instead supervises one per
/// prompt) while every prediction conditions on what inference will give it. Layers still
/// pass information along, so this is a window per layer, as in sliding-window attention.
#[derive(Debug, Clone)]
pub struct ItemWindow {
    vocab: SidVocab,
    items: usize,
}

impl ItemWindow {
    /// A window of `items` items before each token's own (at least 1), whose SIDs start with a
    /// level-0 token of `vocab`.
    pub fn new(vocab: SidVocab, items: usize) -> Self {
        Self {
            vocab,
            items: items.max(1),
        }
    }

    /// For each token of one unpadded row, the positions `from..to` it may not attend to.
    fn hidden_spans(&self, ids: &[u32]) -> Vec<(u32, u32)> {
        let starts: Vec<u32> = self
            .vocab
            .item_spans(ids)
            .into_iter()
            .map(|(start, _)| start as u32)
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        let mut item = 0usize; // items started so far
        for i in 0..ids.len() as u32 {
            while item < starts.len() && starts[item] <= i {
                item += 1;
            }
            // Own item is `item - 1` (0-based); the first visible one is `items` before it.
            let first = item.saturating_sub(1 + self.items);
            out.push(if first == 0 {
                (0, 0)
            } else {
                (starts[0], starts[first])
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sid::{Sid, SidToken};
    use crate::SidIndex;

    #[test]
    fn a_window_hides_the_items_before_the_last_few_but_not_the_header() {
        let mut index = SidIndex::new();
        index.insert(1, Sid::from_codes(vec![0, 1]));
        index.insert(2, Sid::from_codes(vec![1, 0]));
        let vocab = SidVocab::from_fn(&index, |t: SidToken| {
            Some(100 + 10 * t.level as u32 + t.code)
        })
        .unwrap();
        // header(0,1) item(2,3) sep(4) item(5,6) sep(7) item(8,9) sep(10) item(11,12)
        let ids = [7, 8, 100, 111, 5, 101, 110, 5, 100, 111, 6, 101, 110];
        let spans = ItemWindow::new(vocab.clone(), 1).hidden_spans(&ids);
        let want = [
            (0, 0),
            (0, 0),
            (0, 0),
            (0, 0),
            (0, 0),
            (0, 0),
            (0, 0),
            (0, 0),
            (2, 5),
            (2, 5),
            (2, 5),
            (2, 8),
            (2, 8),
        ];
        assert_eq!(spans, want);
        let spans = ItemWindow::new(vocab.clone(), 2).hidden_spans(&ids);
        assert_eq!(&spans[..11], &[(0, 0); 11]);
        assert_eq!(&spans[11..], &[(2, 5), (2, 5)]);

        // In a left-padded layout the spans (positions among real tokens) land on the real
        // tokens: flat index 12 is real token 10.
        let mut padded = vec![0u32; 2];
        padded.extend_from_slice(&ids);
        let real: Vec<bool> = (0..padded.len()).map(|i| i >= 2).collect();
        let window = ItemWindow::new(vocab, 1);
        let layout =
            BatchLayout::from_flags(real, 1, padded.len()).with_item_window(&padded, &window);
        assert_eq!(layout.hidden_from(1), 0..0);
        assert_eq!(layout.hidden_from(12), 2..5);
        assert_eq!(layout.hidden_from(14), 2..8);
    }
}
