//! Causal self-attention with padding masks, softmax fused, and its backward.
//!
//! Nothing `[B, H, L, T]`-sized is stored: the forward pass keeps one log-sum-exp per query row,
//! and the backward pass recomputes each row's probabilities from it (as FlashAttention does).
//! Grouped-query attention reads each key/value head for its `g` query heads in place; the
//! backward runs per (batch row, key/value head), so the gradients of a shared head are summed
//! without locks.

use std::sync::OnceLock;

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{axpy, dot, simd, slice, tensor, with_f32};

/// Shapes of one attention call.
#[derive(Debug, Clone, Copy)]
struct Dims {
    b: usize,
    heads: usize,
    kv_heads: usize,
    l: usize,
    t: usize,
    d: usize,
}

impl Dims {
    fn groups(&self) -> usize {
        self.heads / self.kv_heads
    }
}

/// Softmax attention of `q` `[B, H, L, d]` over `k`/`v` `[B, KV, T, d]` under an additive
/// mask `[B, 1, L, T]` (`-inf` = blocked; every row must keep one key), output `[B, L, H*d]`.
pub(crate) struct Attention {
    mask: Tensor,
    scale: f32,
    /// Log-sum-exp of every query row `[B, H, L]`, kept from the forward pass for the backward.
    lse: OnceLock<Vec<f32>>,
}

fn dims_of(q: &[usize], k: &[usize], v: &[usize]) -> Result<Dims> {
    let (&[b, heads, l, d], &[kb, kv_heads, t, kd]) = (q, k) else {
        bail!("attention: q {q:?} / k {k:?} are not 4-D");
    };
    if kb != b || kd != d || v != k || kv_heads == 0 || heads % kv_heads != 0 {
        bail!("attention: q {q:?}, k {k:?}, v {v:?} do not fit");
    }
    Ok(Dims {
        b,
        heads,
        kv_heads,
        l,
        t,
        d,
    })
}

/// Scores of query row `qi` against keys `k` (`[T, d]`) into `s`, `-inf` where `mask` blocks;
/// returns their maximum.
#[inline]
fn scores(qi: &[f32], k: &[f32], mask: &[f32], scale: f32, d: usize, s: &mut [f32]) -> f32 {
    let mut m = f32::NEG_INFINITY;
    for (j, (s, &mj)) in s.iter_mut().zip(mask).enumerate() {
        *s = if mj == f32::NEG_INFINITY {
            f32::NEG_INFINITY
        } else {
            scale * dot(qi, &k[j * d..(j + 1) * d]) + mj
        };
        m = m.max(*s);
    }
    m
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "sidrec-attention"
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
        let dm = dims_of(l1.dims(), l2.dims(), l3.dims())?;
        let (q, k, v) = (
            slice(s1, l1, "attention q")?,
            slice(s2, l2, "attention k")?,
            slice(s3, l3, "attention v")?,
        );
        let Dims {
            b, heads, l, t, d, ..
        } = dm;
        let g = dm.groups();
        let scale = self.scale;
        let (out, lse) = with_f32(&self.mask, "attention mask", |mask| {
            if mask.len() != b * l * t {
                bail!(
                    "attention: mask {:?} for [B, L, T] = [{b}, {l}, {t}]",
                    self.mask.dims()
                );
            }
            // Per (batch row, head): rows of the head-major output and their log-sum-exps.
            let mut o = vec![0f32; b * heads * l * d];
            let mut lse = vec![0f32; b * heads * l];
            o.par_chunks_mut(l * d)
                .zip(lse.par_chunks_mut(l))
                .enumerate()
                .for_each(|(bh, (o, lse))| {
                    simd(|| {
                        let (bi, h) = (bh / heads, bh % heads);
                        let kvh = h / g;
                        let q = &q[bh * l * d..(bh + 1) * l * d];
                        let kv = (bi * dm.kv_heads + kvh) * t * d;
                        let (k, v) = (&k[kv..kv + t * d], &v[kv..kv + t * d]);
                        let mut s = vec![0f32; t];
                        for i in 0..l {
                            let mrow = &mask[(bi * l + i) * t..(bi * l + i + 1) * t];
                            let m = scores(&q[i * d..(i + 1) * d], k, mrow, scale, d, &mut s);
                            let oi = &mut o[i * d..(i + 1) * d];
                            if m == f32::NEG_INFINITY {
                                lse[i] = f32::INFINITY;
                                continue;
                            }
                            let mut sum = 0f32;
                            for (j, &sj) in s.iter().enumerate() {
                                if sj != f32::NEG_INFINITY {
                                    let p = (sj - m).exp();
                                    sum += p;
                                    axpy(p, &v[j * d..(j + 1) * d], oi);
                                }
                            }
                            let inv = 1.0 / sum;
                            oi.iter_mut().for_each(|x| *x *= inv);
                            lse[i] = m + sum.ln();
                        }
                    })
                });
            Ok((o, lse))
        })?;
        // Head-major [B, H, L, d] to the [B, L, H*d] the output projection reads.
        let mut y = vec![0f32; out.len()];
        y.par_chunks_mut(l * heads * d)
            .enumerate()
            .for_each(|(bi, y)| {
                for h in 0..heads {
                    for i in 0..l {
                        let src = ((bi * heads + h) * l + i) * d;
                        y[(i * heads + h) * d..(i * heads + h + 1) * d]
                            .copy_from_slice(&out[src..src + d]);
                    }
                }
            });
        // A second forward of the same op instance (never done by the model) keeps the first
        // statistics, which would be wrong; refuse instead.
        if self.lse.set(lse).is_err() {
            bail!("attention: an op instance ran forward twice");
        }
        Ok((CpuStorage::F32(y), Shape::from((b, l, heads * d))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dm = dims_of(q.dims(), k.dims(), v.dims())?;
        let Some(lse) = self.lse.get() else {
            bail!("attention: backward before forward");
        };
        let (dq, dk, dv) = with_f32(q, "attention q", |q| {
            with_f32(k, "attention k", |k| {
                with_f32(v, "attention v", |v| {
                    with_f32(res, "attention out", |o| {
                        with_f32(grad, "attention grad", |go| {
                            with_f32(&self.mask, "attention mask", |mask| {
                                Ok(backward(dm, self.scale, q, k, v, o, go, mask, lse))
                            })
                        })
                    })
                })
            })
        })?;
        Ok((
            Some(tensor(dq, q.dims())?),
            Some(tensor(dk, k.dims())?),
            Some(tensor(dv, v.dims())?),
        ))
    }
}

/// Gradients of q, k, v; `o` and `go` are `[B, L, H*d]`.
#[allow(clippy::too_many_arguments)]
fn backward(
    dm: Dims,
    scale: f32,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    o: &[f32],
    go: &[f32],
    mask: &[f32],
    lse: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let Dims {
        b: _,
        heads,
        kv_heads,
        l,
        t,
        d,
    } = dm;
    let g = dm.groups();
    let mut dq = vec![0f32; q.len()];
    let mut dk = vec![0f32; k.len()];
    let mut dv = vec![0f32; v.len()];
    dq.par_chunks_mut(g * l * d)
        .zip(dk.par_chunks_mut(t * d))
        .zip(dv.par_chunks_mut(t * d))
        .enumerate()
        .for_each(|(bk, ((dq, dk), dv))| {
            simd(|| {
                let (bi, kvh) = (bk / kv_heads, bk % kv_heads);
                let (k, v) = (
                    &k[bk * t * d..(bk + 1) * t * d],
                    &v[bk * t * d..(bk + 1) * t * d],
                );
                let mut s = vec![0f32; t];
                for gi in 0..g {
                    let h = kvh * g + gi;
                    let bh = bi * heads + h;
                    let q = &q[bh * l * d..(bh + 1) * l * d];
                    let dq = &mut dq[gi * l * d..(gi + 1) * l * d];
                    for i in 0..l {
                        let lse_i = lse[bh * l + i];
                        if !lse_i.is_finite() {
                            continue;
                        }
                        let row = ((bi * l + i) * heads + h) * d;
                        let (oi, goi) = (&o[row..row + d], &go[row..row + d]);
                        let qi = &q[i * d..(i + 1) * d];
                        let mrow = &mask[(bi * l + i) * t..(bi * l + i + 1) * t];
                        scores(qi, k, mrow, scale, d, &mut s);
                        let di = dot(goi, oi);
                        let dqi = &mut dq[i * d..(i + 1) * d];
                        for (j, &sj) in s.iter().enumerate() {
                            if sj == f32::NEG_INFINITY {
                                continue;
                            }
                            let p = (sj - lse_i).exp();
                            let (kj, vj) = (&k[j * d..(j + 1) * d], &v[j * d..(j + 1) * d]);
                            let ds = p * (dot(goi, vj) - di) * scale;
                            axpy(ds, kj, dqi);
                            axpy(ds, qi, &mut dk[j * d..(j + 1) * d]);
                            axpy(p, goi, &mut dv[j * d..(j + 1) * d]);
                        }
                    }
                }
            })
        });
    (dq, dk, dv)
}

/// Fused attention (see [`Attention`]); `mask` `[B, 1, L, T]` f32, output `[B, L, H*d]`.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    scale: f64,
) -> Result<Tensor> {
    let op = Attention {
        mask: mask.contiguous()?,
        scale: scale as f32,
        lse: OnceLock::new(),
    };
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}
