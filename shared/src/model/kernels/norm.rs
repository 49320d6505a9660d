//! RMSNorm: `y = x / sqrt(mean(x²) + eps) * w` over the last dim, with its backward.

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{simd, slice, tensor, with_f32};

/// The RMSNorm op; `eps` as in the model config.
pub(crate) struct RmsNorm {
    pub(crate) eps: f32,
}

/// Inverse RMS of one row.
#[inline]
fn inv_rms(row: &[f32], eps: f32) -> f32 {
    let ms = super::dot(row, row) / row.len().max(1) as f32;
    1.0 / (ms + eps).sqrt()
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "sidrec-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, "rms_norm x")?;
        let w = slice(s2, l2, "rms_norm weight")?;
        let h = w.len();
        if h == 0 || l1.dims().last() != Some(&h) {
            bail!("rms_norm: weight of {h} for input {:?}", l1.dims());
        }
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(h).zip(x.par_chunks(h)).for_each(|(y, x)| {
            simd(|| {
                let r = inv_rms(x, self.eps);
                for ((y, x), w) in y.iter_mut().zip(x).zip(w) {
                    *y = x * r * w;
                }
            })
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let h = w.elem_count();
        let dims = x.dims().to_vec();
        let (dx, dw) = with_f32(x, "rms_norm x", |x| {
            with_f32(w, "rms_norm weight", |w| {
                with_f32(grad, "rms_norm grad", |g| {
                    Ok(backward(x, w, g, h, self.eps))
                })
            })
        })?;
        Ok((Some(tensor(dx, &dims)?), Some(tensor(dw, &[h])?)))
    }
}

/// `dx = r·(g·w − n·mean(g·w·n))` with `n = x·r`, and `dw = Σ_rows g·n`.
fn backward(x: &[f32], w: &[f32], g: &[f32], h: usize, eps: f32) -> (Vec<f32>, Vec<f32>) {
    let mut dx = vec![0f32; x.len()];
    // Rows in blocks, each block summing its own share of dw; the blocks' sums are added after.
    let rows_per_block = 64;
    let dw = dx
        .par_chunks_mut(h * rows_per_block)
        .zip(x.par_chunks(h * rows_per_block))
        .zip(g.par_chunks(h * rows_per_block))
        .map(|((dx, x), g)| {
            simd(|| {
                let mut dw = vec![0f32; h];
                let mut gw = vec![0f32; h];
                for ((dx, x), g) in dx.chunks_mut(h).zip(x.chunks(h)).zip(g.chunks(h)) {
                    let r = inv_rms(x, eps);
                    let mut c = 0f32;
                    for j in 0..h {
                        gw[j] = g[j] * w[j];
                        c += gw[j] * x[j];
                        dw[j] += g[j] * x[j] * r;
                    }
                    let c = c * r * r / h as f32;
                    for j in 0..h {
                        dx[j] = r * (gw[j] - x[j] * c);
                    }
                }
                dw
            })
        })
        .reduce(
            || vec![0f32; h],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                a
            },
        );
    (dx, dw)
}

/// RMSNorm of `x` (`[..., h]`) scaled by `weight` (`[h]`), differentiable in both.
pub(crate) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2(&weight.contiguous()?, RmsNorm { eps })
}
