//! Cross-entropy of logits against target ids, log-softmax fused, with its backward.

use std::sync::OnceLock;

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{applies, simd, slice, tensor, with_f32};

/// Per-row negative log-likelihood of `targets` (u32 `[N]`) under `logits` (`[N, V]`).
pub(crate) struct CrossEntropy {
    /// Log-sum-exp of every row, kept from the forward pass for the backward.
    lse: OnceLock<Vec<f32>>,
}

fn targets_of(s: &CpuStorage, l: &Layout) -> Result<Vec<usize>> {
    let ids = s.as_slice::<u32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(ids[a..b].iter().map(|&i| i as usize).collect()),
        None => bail!("cross_entropy: targets must be contiguous"),
    }
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "sidrec-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let logits = slice(s1, l1, "cross_entropy logits")?;
        let targets = targets_of(s2, l2)?;
        let &[n, vocab] = l1.dims() else {
            bail!("cross_entropy: logits {:?} are not [N, V]", l1.dims());
        };
        if targets.len() != n {
            bail!("cross_entropy: {} targets for {n} rows", targets.len());
        }
        if let Some(bad) = targets.iter().find(|&&t| t >= vocab) {
            bail!("cross_entropy: target {bad} outside a vocabulary of {vocab}");
        }
        let lse = rows_lse(logits, vocab);
        let nll: Vec<f32> = (0..n)
            .map(|i| lse[i] - logits[i * vocab + targets[i]])
            .collect();
        if self.lse.set(lse).is_err() {
            bail!("cross_entropy: an op instance ran forward twice");
        }
        Ok((CpuStorage::F32(nll), Shape::from(n)))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let Some(lse) = self.lse.get() else {
            bail!("cross_entropy: backward before forward");
        };
        let vocab = logits.dim(1)?;
        let targets = targets.to_vec1::<u32>()?;
        let g = grad.to_vec1::<f32>()?;
        let dl = with_f32(logits, "cross_entropy logits", |x| {
            let mut dl = vec![0f32; x.len()];
            dl.par_chunks_mut(vocab)
                .zip(x.par_chunks(vocab))
                .enumerate()
                .for_each(|(i, (dl, x))| {
                    simd(|| {
                        for (d, &xi) in dl.iter_mut().zip(x) {
                            *d = g[i] * super::exp(xi - lse[i]);
                        }
                        dl[targets[i] as usize] -= g[i];
                    })
                });
            Ok(dl)
        })?;
        Ok((Some(tensor(dl, logits.dims())?), None))
    }
}

/// Log-sum-exp of every `vocab`-wide row of `x`, in parallel over rows, with the vectorised
/// [`super::exp`] and no temporary per row.
fn rows_lse(x: &[f32], vocab: usize) -> Vec<f32> {
    let mut lse = vec![0f32; x.len() / vocab.max(1)];
    lse.par_iter_mut()
        .zip(x.par_chunks(vocab.max(1)))
        .for_each(|(lse, row)| {
            simd(|| {
                let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut acc = [0f32; 8];
                let chunks = row.chunks_exact(8);
                let tail: f32 = chunks.remainder().iter().map(|&v| super::exp(v - m)).sum();
                for c in chunks {
                    for k in 0..8 {
                        acc[k] += super::exp(c[k] - m);
                    }
                }
                *lse = m + (super::sum(&acc) + tail).ln();
            })
        });
    lse
}

/// Log-sum-exp over the last dim of `x` (`[N, V]` → `[N, 1]`), not differentiable: the fused
/// kernel for f32 CPU tensors, else tensor ops. What exact-mode beam search normalises every
/// beam's full-vocabulary logits by; candle's ops make four passes, two temporaries of the
/// logits' size and a scalar libm call per element.
pub fn log_sum_exp_rows(x: &Tensor) -> Result<Tensor> {
    let (n, vocab) = x.dims2()?;
    if applies(x) && vocab > 0 {
        let lse = with_f32(x, "log_sum_exp_rows", |x| Ok(rows_lse(x, vocab)))?;
        return tensor(lse, &[n, 1]);
    }
    let max = x.max_keepdim(candle_core::D::Minus1)?;
    let sum = x
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(candle_core::D::Minus1)?;
    sum.log()? + max
}

/// Per-row negative log-likelihood `[N]` of `targets` (u32 `[N]`) under `logits` (`[N, V]`),
/// differentiable in the logits: the fused kernel for f32 CPU logits, else candle's
/// `log_softmax` and `gather`.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if applies(logits) {
        let op = CrossEntropy {
            lse: OnceLock::new(),
        };
        logits.contiguous()?.apply_op2(&targets.contiguous()?, op)
    } else {
        candle_nn::ops::log_softmax(logits, candle_core::D::Minus1)?
            .gather(&targets.unsqueeze(1)?, 1)?
            .squeeze(1)?
            .neg()
    }
}
