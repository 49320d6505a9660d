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

use super::{axpy, dot, exp_masked, simd, slice, tensor, with_f32};

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
                            let sum = exp_masked(&mut s, m);
                            for (j, &p) in s.iter().enumerate() {
                                if p != 0.0 {
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
                        exp_masked(&mut s, lse_i);
                        for (j, &p) in s.iter().enumerate() {
                            if p == 0.0 {
                                continue;
                            }
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

/// Head counts and size of a packed projection `[B, L, (heads + 2·kv_heads)·d]`: per token,
/// the query heads, then the key heads, then the value heads (the layout of one matrix product
/// with the q/k/v weights stacked).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PackedHeads {
    pub(crate) heads: usize,
    pub(crate) kv_heads: usize,
    pub(crate) head_dim: usize,
}

impl PackedHeads {
    fn width(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.head_dim
    }

    fn k_at(&self, kvh: usize) -> usize {
        (self.heads + kvh) * self.head_dim
    }

    fn v_at(&self, kvh: usize) -> usize {
        (self.heads + self.kv_heads + kvh) * self.head_dim
    }
}

/// Causal self-attention straight from the packed q/k/v projection of unpadded rows, RoPE
/// included: `qkv` `[n, (H + 2·KV)·d]` holds the real tokens of every batch row one after
/// another (row `r` is tokens `offsets[r]..offsets[r + 1]`), cos/sin `[n, d/2]`; output
/// `[n, H·d]` and the gradient in the packed layout.
///
/// The model's training pass uses this instead of splitting the projection per head,
/// transposing to `[B, H, L, d]` and rotating as separate ops, each of which copies the
/// activations once forward and once backward, and it never touches padding: a query attends to
/// the keys of its own row up to itself, which is what the causal + padding mask leaves of a
/// padded batch. Queries are rotated on the fly; the rotated keys (`[n, KV, d]`, small) are kept
/// for the backward pass with the log-sum-exps. Parallel over batch rows, which own disjoint
/// rows of the output and of the gradient.
pub(crate) struct PackedAttention {
    heads: PackedHeads,
    offsets: Vec<usize>,
    /// Per token, the keys of its row (`from..to`, positions within the row) it may not see;
    /// empty: plain causal attention.
    hidden: Vec<(u32, u32)>,
    scale: f32,
    /// Rotated keys `[n, KV, d]` and log-sum-exps `[n, H]` from the forward pass.
    saved: OnceLock<(Vec<f32>, Vec<f32>)>,
}

impl PackedAttention {
    /// Keys of its row hidden from token `t`.
    fn hidden(&self, t: usize) -> std::ops::Range<usize> {
        match self.hidden.get(t) {
            Some(&(from, to)) => from as usize..to as usize,
            None => 0..0,
        }
    }

    fn dims(&self, qkv: &[usize], cos: &[usize]) -> Result<usize> {
        let PackedHeads {
            heads,
            kv_heads,
            head_dim: d,
        } = self.heads;
        let (&[n, w], &[cn, half]) = (qkv, cos) else {
            bail!("packed attention: qkv {qkv:?} / tables {cos:?} are not 2-D");
        };
        if w != self.heads.width()
            || kv_heads == 0
            || heads % kv_heads != 0
            || d % 2 != 0
            || (cn, 2 * half) != (n, d)
        {
            bail!(
                "packed attention: qkv {qkv:?} and tables {cos:?} do not fit {:?}",
                self.heads
            );
        }
        if self.offsets.first() != Some(&0)
            || self.offsets.last() != Some(&n)
            || self.offsets.windows(2).any(|w| w[0] > w[1])
        {
            bail!("packed attention: row offsets do not cover the {n} tokens");
        }
        if !self.hidden.is_empty() && self.hidden.len() != n {
            bail!(
                "packed attention: {} hidden-key spans for {n} tokens",
                self.hidden.len()
            );
        }
        Ok(n)
    }
}

impl CustomOp3 for PackedAttention {
    fn name(&self) -> &'static str {
        "sidrec-packed-attention"
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
        let n = self.dims(l1.dims(), l2.dims())?;
        let (qkv, cos, sin) = (
            slice(s1, l1, "attention qkv")?,
            slice(s2, l2, "attention cos")?,
            slice(s3, l3, "attention sin")?,
        );
        if sin.len() != cos.len() {
            bail!(
                "packed attention: sin {:?} and cos {:?} differ",
                l3.dims(),
                l2.dims()
            );
        }
        let ph = self.heads;
        let (heads, kv_heads, d) = (ph.heads, ph.kv_heads, ph.head_dim);
        let (w, half, g) = (ph.width(), d / 2, heads / kv_heads);
        let scale = self.scale;
        let rows = row_ranges(&self.offsets);
        // Rotated keys, token-major [n, KV, d]: a row's keys of one head are `d·KV` apart.
        let mut kr = vec![0f32; n * kv_heads * d];
        kr.par_chunks_mut(kv_heads * d)
            .enumerate()
            .for_each(|(t, kr)| {
                simd(|| {
                    let (c, s) = (&cos[t * half..][..half], &sin[t * half..][..half]);
                    for kvh in 0..kv_heads {
                        let x = &qkv[t * w + ph.k_at(kvh)..][..d];
                        super::rope::rotate_row(x, c, s, 1.0, &mut kr[kvh * d..][..d]);
                    }
                })
            });
        let mut y = vec![0f32; n * heads * d];
        let mut lse = vec![0f32; n * heads];
        split_rows(&mut y, &rows, heads * d)
            .into_par_iter()
            .zip(split_rows(&mut lse, &rows, heads))
            .zip(rows.par_iter())
            .for_each(|((y, lse), range)| {
                simd(|| {
                    let (start, len) = (range.start, range.len());
                    let (mut s, mut qr) = (vec![0f32; len], vec![0f32; d]);
                    for h in 0..heads {
                        let kvh = h / g;
                        for i in 0..len {
                            let t = start + i;
                            let (c, sn) = (&cos[t * half..][..half], &sin[t * half..][..half]);
                            super::rope::rotate_row(
                                &qkv[t * w + h * d..][..d],
                                c,
                                sn,
                                1.0,
                                &mut qr,
                            );
                            let s = &mut s[..=i];
                            let hidden = self.hidden(t);
                            let mut m = f32::NEG_INFINITY;
                            for (j, sj) in s.iter_mut().enumerate() {
                                if hidden.contains(&j) {
                                    *sj = f32::NEG_INFINITY;
                                    continue;
                                }
                                let kj = &kr[((start + j) * kv_heads + kvh) * d..][..d];
                                *sj = scale * dot(&qr, kj);
                                m = m.max(*sj);
                            }
                            let sum = exp_masked(s, m);
                            let oi = &mut y[(i * heads + h) * d..][..d];
                            for (j, &p) in s.iter().enumerate() {
                                if p != 0.0 {
                                    axpy(p, &qkv[(start + j) * w + ph.v_at(kvh)..][..d], oi);
                                }
                            }
                            let inv = 1.0 / sum;
                            oi.iter_mut().for_each(|x| *x *= inv);
                            lse[i * heads + h] = m + sum.ln();
                        }
                    }
                })
            });
        if self.saved.set((kr, lse)).is_err() {
            bail!("packed attention: an op instance ran forward twice");
        }
        Ok((CpuStorage::F32(y), Shape::from((n, heads * d))))
    }

    fn bwd(
        &self,
        qkv: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        self.dims(qkv.dims(), cos.dims())?;
        let Some((kr, lse)) = self.saved.get() else {
            bail!("packed attention: backward before forward");
        };
        let dqkv = with_f32(qkv, "attention qkv", |qkv| {
            with_f32(cos, "attention cos", |cos| {
                with_f32(sin, "attention sin", |sin| {
                    with_f32(res, "attention out", |o| {
                        with_f32(grad, "attention grad", |go| {
                            let t = PackedTensors {
                                qkv,
                                cos,
                                sin,
                                o,
                                go,
                                kr,
                                lse,
                            };
                            Ok(self.backward(&t))
                        })
                    })
                })
            })
        })?;
        Ok((Some(tensor(dqkv, qkv.dims())?), None, None))
    }
}

/// The slices the packed attention's backward reads.
struct PackedTensors<'a> {
    qkv: &'a [f32],
    cos: &'a [f32],
    sin: &'a [f32],
    o: &'a [f32],
    go: &'a [f32],
    kr: &'a [f32],
    lse: &'a [f32],
}

impl PackedAttention {
    /// Gradient of the packed projection: queries and keys rotated back by the opposite angle.
    fn backward(&self, t: &PackedTensors) -> Vec<f32> {
        let ph = self.heads;
        let (heads, kv_heads, d) = (ph.heads, ph.kv_heads, ph.head_dim);
        let (w, half, g) = (ph.width(), d / 2, heads / kv_heads);
        let scale = self.scale;
        let rows = row_ranges(&self.offsets);
        let n = self.offsets.last().copied().unwrap_or(0);
        let mut dqkv = vec![0f32; n * w];
        split_rows(&mut dqkv, &rows, w)
            .into_par_iter()
            .zip(rows.par_iter())
            .for_each(|(dx, range)| {
                simd(|| {
                    let (start, len) = (range.start, range.len());
                    let (mut s, mut qr, mut dqr) = (vec![0f32; len], vec![0f32; d], vec![0f32; d]);
                    let mut dkr = vec![0f32; len * d];
                    let angles = |i: usize| {
                        let at = (start + i) * half;
                        (&t.cos[at..at + half], &t.sin[at..at + half])
                    };
                    for kvh in 0..kv_heads {
                        let kj = |j: usize| &t.kr[((start + j) * kv_heads + kvh) * d..][..d];
                        let vj = |j: usize| &t.qkv[(start + j) * w + ph.v_at(kvh)..][..d];
                        dkr.iter_mut().for_each(|x| *x = 0.0);
                        for h in kvh * g..(kvh + 1) * g {
                            for i in 0..len {
                                let tok = start + i;
                                let lse_i = t.lse[tok * heads + h];
                                let (c, sn) = angles(i);
                                super::rope::rotate_row(
                                    &t.qkv[tok * w + h * d..][..d],
                                    c,
                                    sn,
                                    1.0,
                                    &mut qr,
                                );
                                let at = (tok * heads + h) * d;
                                let (oi, goi) = (&t.o[at..at + d], &t.go[at..at + d]);
                                let s = &mut s[..=i];
                                let hidden = self.hidden(tok);
                                for (j, sj) in s.iter_mut().enumerate() {
                                    *sj = if hidden.contains(&j) {
                                        f32::NEG_INFINITY
                                    } else {
                                        scale * dot(&qr, kj(j))
                                    };
                                }
                                exp_masked(s, lse_i);
                                let di = dot(goi, oi);
                                dqr.iter_mut().for_each(|x| *x = 0.0);
                                for (j, &p) in s.iter().enumerate() {
                                    if p == 0.0 {
                                        continue;
                                    }
                                    let ds = p * (dot(goi, vj(j)) - di) * scale;
                                    axpy(ds, kj(j), &mut dqr);
                                    axpy(ds, &qr, &mut dkr[j * d..][..d]);
                                    axpy(p, goi, &mut dx[j * w + ph.v_at(kvh)..][..d]);
                                }
                                super::rope::rotate_row(
                                    &dqr,
                                    c,
                                    sn,
                                    -1.0,
                                    &mut dx[i * w + h * d..][..d],
                                );
                            }
                        }
                        for j in 0..len {
                            let (c, sn) = angles(j);
                            let at = j * w + ph.k_at(kvh);
                            super::rope::rotate_row(
                                &dkr[j * d..][..d],
                                c,
                                sn,
                                -1.0,
                                &mut dx[at..at + d],
                            );
                        }
                    }
                })
            });
        dqkv
    }
}

/// Token ranges of the batch rows from their offsets.
fn row_ranges(offsets: &[usize]) -> Vec<std::ops::Range<usize>> {
    offsets.windows(2).map(|w| w[0]..w[1]).collect()
}

/// `data` (rows of `width` values, one per token) cut into the consecutive parts of `rows`.
fn split_rows<'a>(
    mut data: &'a mut [f32],
    rows: &[std::ops::Range<usize>],
    width: usize,
) -> Vec<&'a mut [f32]> {
    let mut parts = Vec::with_capacity(rows.len());
    for r in rows {
        let (head, tail) = data.split_at_mut(r.len() * width);
        parts.push(head);
        data = tail;
    }
    parts
}

/// Fused RoPE + causal attention of the packed q/k/v projection of unpadded rows (see
/// [`PackedAttention`]): `qkv` `[n, (H + 2·KV)·d]`, cos/sin `[n, d/2]`, row `r` is tokens
/// `offsets[r]..offsets[r + 1]`, `hidden[t]` the keys of its row token `t` may not see
/// (positions `from..to` within the row; empty: none hidden); output `[n, H·d]`.
/// Differentiable in `qkv`.
pub(crate) fn packed_attention(
    qkv: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    offsets: Vec<usize>,
    hidden: Vec<(u32, u32)>,
    heads: PackedHeads,
    scale: f64,
) -> Result<Tensor> {
    let op = PackedAttention {
        heads,
        offsets,
        hidden,
        scale: scale as f32,
        saved: OnceLock::new(),
    };
    qkv.contiguous()?
        .apply_op3(&cos.contiguous()?, &sin.contiguous()?, op)
}
