//! SwiGLU's elementwise part, `silu(gate) · up`, with its backward.

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{simd, slice, tensor, with_f32};

/// Elements per parallel task: large enough that scheduling costs nothing next to the work.
const CHUNK: usize = 1 << 14;

/// The `silu(gate) · up` op.
pub(crate) struct SwiGlu;

#[inline]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "sidrec-swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let gate = slice(s1, l1, "swiglu gate")?;
        let up = slice(s2, l2, "swiglu up")?;
        if l1.dims() != l2.dims() {
            bail!("swiglu: gate {:?} and up {:?} differ", l1.dims(), l2.dims());
        }
        let mut y = vec![0f32; gate.len()];
        y.par_chunks_mut(CHUNK)
            .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
            .for_each(|(y, (g, u))| {
                simd(|| {
                    for ((y, &g), &u) in y.iter_mut().zip(g).zip(u) {
                        *y = g * sigmoid(g) * u;
                    }
                })
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let n = gate.elem_count();
        let (dg, du) = with_f32(gate, "swiglu gate", |g| {
            with_f32(up, "swiglu up", |u| {
                with_f32(grad, "swiglu grad", |dy| {
                    let mut dg = vec![0f32; n];
                    let mut du = vec![0f32; n];
                    dg.par_chunks_mut(CHUNK)
                        .zip(du.par_chunks_mut(CHUNK))
                        .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
                        .zip(dy.par_chunks(CHUNK))
                        .for_each(|(((dg, du), (g, u)), dy)| {
                            simd(|| {
                                for i in 0..g.len() {
                                    let s = sigmoid(g[i]);
                                    let silu = g[i] * s;
                                    du[i] = dy[i] * silu;
                                    dg[i] = dy[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
                                }
                            })
                        });
                    Ok((dg, du))
                })
            })
        })?;
        Ok((Some(tensor(dg, gate.dims())?), Some(tensor(du, up.dims())?)))
    }
}

/// `silu(gate) · up`, differentiable in both.
pub(crate) fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}
