//! Per-batch layout: which tokens are real, their positions, the RoPE tables and the masks.
//!
//! All of it is derived on the host from the padding mask (a few bytes per token), so that the
//! device only ever sees finished tables.

use candle_core::{DType, Device, Tensor, D};

use super::Mode;

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
            for i in 0..l {
                for (j, &rj) in real.iter().enumerate() {
                    let allowed = (j <= i && rj) || j == i;
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
