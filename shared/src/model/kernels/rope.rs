//! Rotary position embedding in the rotate-half form HF Qwen2 uses, with its backward.
//!
//! `x` is `[rows, heads, t, d]`; `cos`/`sin` are `[rows, t, d/2]` (one angle per pair of
//! dimensions `(i, i + d/2)`, shared by every head). The backward pass is the rotation by the
//! opposite angle.

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{simd, slice, tensor, with_f32};

/// The RoPE op (gradients flow to `x` only; the tables are constants).
pub(crate) struct Rope;

/// Rotate one head vector `x` (`d` values: the pairs `(i, i + d/2)`) by `sign`·angle, whose
/// cos/sin are `c`/`s` (`d/2` each), into `out`.
#[inline]
pub(crate) fn rotate_row(x: &[f32], c: &[f32], s: &[f32], sign: f32, out: &mut [f32]) {
    let half = c.len();
    let (x1, x2) = x[..2 * half].split_at(half);
    let (o1, o2) = out[..2 * half].split_at_mut(half);
    for i in 0..half {
        let s = sign * s[i];
        o1[i] = x1[i] * c[i] - x2[i] * s;
        o2[i] = x2[i] * c[i] + x1[i] * s;
    }
}

/// Rotate every `[t, d]` head block of `x` by `sign`·angle into `out`.
fn rotate(
    x: &[f32],
    cos: &[f32],
    sin: &[f32],
    dims: (usize, usize, usize, usize),
    sign: f32,
) -> Vec<f32> {
    let (_, heads, t, d) = dims;
    let half = d / 2;
    let mut out = vec![0f32; x.len()];
    let block = heads * t * d;
    out.par_chunks_mut(block)
        .zip(x.par_chunks(block))
        .enumerate()
        .for_each(|(r, (out, x))| {
            simd(|| {
                let (cos, sin) = (
                    &cos[r * t * half..(r + 1) * t * half],
                    &sin[r * t * half..(r + 1) * t * half],
                );
                for (out, x) in out.chunks_mut(t * d).zip(x.chunks(t * d)) {
                    for j in 0..t {
                        let (c, s) = (
                            &cos[j * half..(j + 1) * half],
                            &sin[j * half..(j + 1) * half],
                        );
                        rotate_row(
                            &x[j * d..(j + 1) * d],
                            c,
                            s,
                            sign,
                            &mut out[j * d..(j + 1) * d],
                        );
                    }
                }
            })
        });
    out
}

fn dims4(l: &Layout) -> Result<(usize, usize, usize, usize)> {
    match *l.dims() {
        [a, b, c, d] if d % 2 == 0 => Ok((a, b, c, d)),
        ref other => bail!("rope: input {other:?} is not [rows, heads, t, even d]"),
    }
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "sidrec-rope"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = dims4(l1)?;
        let (rows, _, t, d) = dims;
        let x = slice(s1, l1, "rope x")?;
        let cos = slice(s2, l2, "rope cos")?;
        let sin = slice(s3, l3, "rope sin")?;
        if cos.len() != rows * t * d / 2 || sin.len() != cos.len() {
            bail!(
                "rope: tables {:?} / {:?} for input {:?}",
                l2.dims(),
                l3.dims(),
                l1.dims()
            );
        }
        Ok((
            CpuStorage::F32(rotate(x, cos, sin, dims, 1.0)),
            l1.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dims = dims4(x.layout())?;
        let dx = with_f32(grad, "rope grad", |g| {
            with_f32(cos, "rope cos", |c| {
                with_f32(sin, "rope sin", |s| Ok(rotate(g, c, s, dims, -1.0)))
            })
        })?;
        Ok((Some(tensor(dx, x.dims())?), None, None))
    }
}

/// Rotate `x` (`[rows, heads, t, d]`) by the angles whose cos/sin are `[rows, t, d/2]`.
pub(crate) fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3(&cos.contiguous()?, &sin.contiguous()?, Rope)
}
