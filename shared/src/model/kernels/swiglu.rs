//! SwiGLU's elementwise part on the packed gate/up projection, `silu(gate) · up`, with its
//! backward.
//!
//! The MLP runs its gate and up projections as one matrix product (their weights stacked), so
//! each row of the input holds the `i` gate values followed by the `i` up values; the kernel
//! reads both halves in place and its gradient is written back in the same packed layout, which
//! is what the one matrix product's backward takes.

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{simd, slice, tensor, with_f32};

/// Elements per parallel task: large enough that scheduling costs nothing next to the work.
const CHUNK: usize = 1 << 14;

/// The `silu(gate) · up` op over `[..., 2i]` rows (gate first), output `[..., i]`.
pub(crate) struct SwiGlu;

#[inline]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + super::exp(-x))
}

/// Width `i` of the output of a packed `[..., 2i]` input.
fn half_width(dims: &[usize]) -> Result<usize> {
    match dims.last() {
        Some(&w) if w > 0 && w % 2 == 0 => Ok(w / 2),
        _ => bail!("swiglu: input {dims:?} is not [..., 2 * intermediate]"),
    }
}

/// Rows per parallel task for rows of `width` elements.
fn rows_per_task(width: usize) -> usize {
    (CHUNK / width.max(1)).max(1)
}

impl CustomOp1 for SwiGlu {
    fn name(&self) -> &'static str {
        "sidrec-swiglu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let gu = slice(s, l, "swiglu input")?;
        let i = half_width(l.dims())?;
        let rows = gu.len() / (2 * i);
        let per = rows_per_task(i);
        let mut y = vec![0f32; rows * i];
        y.par_chunks_mut(per * i)
            .zip(gu.par_chunks(per * 2 * i))
            .for_each(|(y, gu)| {
                simd(|| {
                    for (y, gu) in y.chunks_mut(i).zip(gu.chunks(2 * i)) {
                        let (g, u) = gu.split_at(i);
                        for ((y, &g), &u) in y.iter_mut().zip(g).zip(u) {
                            *y = g * sigmoid(g) * u;
                        }
                    }
                })
            });
        let mut dims = l.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = i;
        }
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }

    fn bwd(&self, gu: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let i = half_width(gu.dims())?;
        let per = rows_per_task(i);
        let dgu = with_f32(gu, "swiglu input", |gu| {
            with_f32(grad, "swiglu grad", |dy| {
                let mut dgu = vec![0f32; gu.len()];
                dgu.par_chunks_mut(per * 2 * i)
                    .zip(gu.par_chunks(per * 2 * i))
                    .zip(dy.par_chunks(per * i))
                    .for_each(|((dgu, gu), dy)| {
                        simd(|| {
                            for ((dgu, gu), dy) in dgu
                                .chunks_mut(2 * i)
                                .zip(gu.chunks(2 * i))
                                .zip(dy.chunks(i))
                            {
                                let (g, u) = gu.split_at(i);
                                let (dg, du) = dgu.split_at_mut(i);
                                for k in 0..i {
                                    let s = sigmoid(g[k]);
                                    let silu = g[k] * s;
                                    du[k] = dy[k] * silu;
                                    dg[k] = dy[k] * u[k] * s * (1.0 + g[k] * (1.0 - s));
                                }
                            }
                        })
                    });
                Ok(dgu)
            })
        })?;
        Ok(Some(tensor(dgu, gu.dims())?))
    }
}

/// `silu(gate) · up` of a packed `[..., 2i]` input (gate values first), differentiable.
pub(crate) fn swiglu(gate_up: &Tensor) -> Result<Tensor> {
    gate_up.contiguous()?.apply_op1(SwiGlu)
}
