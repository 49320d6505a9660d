//! A linear layer, `y = x·Wᵀ (+ b)`, as one differentiable op.
//!
//! Written with tensor ops, a linear layer over `[..., in]` activations is six nodes of the
//! autograd graph (reshape, transpose, matmul, broadcast, add, reshape), and candle's backward
//! pass gives each node a zero-filled gradient buffer and adds its contribution into it: for
//! these small models that allocation, zero-fill and extra pass over every activation cost about
//! as much as the products themselves. As one op, the backward pass runs the two products and
//! the bias' column sum, and candle accumulates one gradient per input. The products are
//! candle's own (gemm, or MKL with the `mkl` feature).

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::slice;

/// Rows, input width and output width of `x` `[..., in]` against `w` `[out, in]`.
fn dims(x: &Layout, w: &Layout) -> Result<(usize, usize, usize)> {
    let (Some(&k), &[n, wk]) = (x.dims().last(), w.dims()) else {
        bail!("linear: input {:?} / weight {:?}", x.dims(), w.dims());
    };
    if k != wk || k == 0 {
        bail!(
            "linear: input {:?} does not fit weight {:?}",
            x.dims(),
            w.dims()
        );
    }
    Ok((x.shape().elem_count() / k, k, n))
}

fn out_shape(x: &Layout, n: usize) -> Shape {
    let mut d = x.dims().to_vec();
    if let Some(last) = d.last_mut() {
        *last = n;
    }
    Shape::from(d)
}

/// `x·Wᵀ` through candle's CPU matrix product, without copying either operand.
fn product(xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<Vec<f32>> {
    let (m, k, n) = dims(xl, wl)?;
    if !xl.is_contiguous() || !wl.is_contiguous() {
        bail!("linear: the fused op needs contiguous operands");
    }
    let lhs = Layout::contiguous_with_offset((m, k), xl.start_offset());
    let rhs = Layout::contiguous_with_offset((n, k), wl.start_offset()).transpose(0, 1)?;
    match xs.matmul(ws, (1, m, n, k), &lhs, &rhs)? {
        CpuStorage::F32(y) => Ok(y),
        other => bail!("linear: f32 only, got {:?}", other.dtype()),
    }
}

/// Gradients of `x` and `W` from the output gradient `g`: `g·W` and `gᵀ·x`.
fn grads(x: &Tensor, w: &Tensor, g: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let (x, w) = (x.detach(), w.detach());
    let k = w.dim(1)?;
    let n = w.dim(0)?;
    let rows = x.elem_count() / k;
    let (x2, g2) = (x.reshape((rows, k))?, g.contiguous()?.reshape((rows, n))?);
    let dx = g2.matmul(&w)?.reshape(x.shape())?;
    let dw = g2.t()?.matmul(&x2)?;
    Ok((dx, dw, g2))
}

/// `x·Wᵀ` (`x` `[..., in]`, `W` `[out, in]`).
pub(crate) struct Linear;

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "sidrec-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, _, n) = dims(l1, l2)?;
        Ok((CpuStorage::F32(product(s1, l1, s2, l2)?), out_shape(l1, n)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = grads(x, w, grad)?;
        Ok((Some(dx), Some(dw)))
    }
}

/// `x·Wᵀ + b` (`b` `[out]`).
pub(crate) struct LinearBias;

impl CustomOp3 for LinearBias {
    fn name(&self) -> &'static str {
        "sidrec-linear-bias"
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
        let (_, _, n) = dims(l1, l2)?;
        let b = slice(s3, l3, "linear bias")?;
        if b.len() != n {
            bail!("linear: bias {:?} for {n} outputs", l3.dims());
        }
        let mut y = product(s1, l1, s2, l2)?;
        super::simd(|| {
            for row in y.chunks_mut(n) {
                row.iter_mut().zip(b).for_each(|(y, b)| *y += b);
            }
        });
        Ok((CpuStorage::F32(y), out_shape(l1, n)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, g2) = grads(x, w, grad)?;
        let n = w.dim(0)?;
        // Column sums row by row (candle's sum over dim 0 walks the columns with a stride).
        let db = super::with_f32(&g2, "linear grad", |g| {
            let mut db = vec![0f32; n];
            super::simd(|| {
                for row in g.chunks(n) {
                    db.iter_mut().zip(row).for_each(|(d, g)| *d += g);
                }
            });
            Ok(db)
        })?;
        Ok((Some(dx), Some(dw), Some(super::tensor(db, &[n])?)))
    }
}

/// `x·Wᵀ (+ b)` over the last dim of `x`, differentiable in every input.
pub(crate) fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    match b {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, LinearBias),
        None => x.apply_op2(&w, Linear),
    }
}
