//! Fused CPU kernels (f32) with hand-written backward passes.
//!
//! A small decoder spends most of a training step outside matrix products: written with plain
//! tensor ops, RMSNorm, RoPE, the attention softmax, SwiGLU and the loss are each a dozen
//! elementwise ops that allocate a temporary apiece, and the backward graph doubles that. Each
//! kernel here is one pass over memory forward and one backward, parallel over rows (or batch ×
//! heads) on rayon's global pool, the pool candle's matrix products use too.
//!
//! In training the model also packs its projections: q/k/v are one matrix product whose output
//! [`attention::packed_attention`] reads in place (RoPE included, no per-head transposes), and
//! gate/up are one product whose halves [`swiglu::swiglu`] reads. Every linear layer is one op
//! ([`linear::linear`]), which spares candle's backward pass a zero-filled gradient buffer and an
//! extra pass for each of the five view and broadcast nodes a layer otherwise has.
//!
//! The kernels run for contiguous f32 tensors on the CPU ([`applies`]); any other dtype or device
//! takes the differentiable composite path in `qwen2.rs`, which is also the reference their tests
//! compare values and gradients against.

pub(crate) mod attention;
pub(crate) mod cross_entropy;
pub(crate) mod linear;
pub(crate) mod norm;
pub(crate) mod rope;
pub(crate) mod swiglu;

pub use cross_entropy::{cross_entropy, log_sum_exp_rows};

use candle_core::{bail, CpuStorage, DType, Layout, Result, Storage, Tensor};

/// True when the fused kernels can run on `t`: an f32 tensor on the CPU.
pub fn applies(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// The f32 elements of a contiguous CPU storage, from its layout's offset.
pub(crate) fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{what}: the fused kernel needs a contiguous tensor"),
    }
}

/// Run `f` over the f32 elements of `t` (made contiguous first), borrowed from its storage.
pub(crate) fn with_f32<R>(
    t: &Tensor,
    what: &str,
    f: impl FnOnce(&[f32]) -> Result<R>,
) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => f(slice(cpu, layout, what)?),
        _ => bail!("{what}: the fused kernels run on the CPU only"),
    }
}

/// A CPU tensor of `shape` holding `data`.
pub(crate) fn tensor(data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
    Tensor::from_vec(data, shape, &candle_core::Device::Cpu)
}

/// Run `f` compiled for AVX2 and FMA when the CPU has them, else as built.
///
/// The release build targets baseline x86-64 (SSE2) so that its binaries run anywhere; the
/// kernels' loops (and the [`dot`]/[`axpy`] they inline) are generic enough for the compiler to
/// vectorise twice as wide when `f` is inlined into this AVX2 context. The check is a cached
/// atomic load.
#[inline]
pub(crate) fn simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn wide<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            // SAFETY: the CPU was just checked to support both features.
            return unsafe { wide(f) };
        }
    }
    f()
}

/// Dot product with eight independent accumulators, so that the compiler can keep them in
/// vector registers (a single running sum serialises on the add latency).
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let chunks = n / 8;
    for c in 0..chunks {
        let (x, y) = (&a[c * 8..c * 8 + 8], &b[c * 8..c * 8 + 8]);
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s = (acc[0] + acc[4]) + (acc[1] + acc[5]) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for k in chunks * 8..n {
        s += a[k] * b[k];
    }
    s
}

/// `e^x` for `x` in about `[-87, 88]` (clamped outside: a tiny positive value below, a huge
/// finite one above), within a few ulp of `f32::exp`.
///
/// Cephes' `expf` reduction and polynomial, written without branches or calls so that a loop
/// over it vectorises (libm's `expf` is a scalar call, and the softmax, SwiGLU and
/// cross-entropy loops spent a tenth of a step in it).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    let x = x.clamp(-87.3, 88.3);
    let n = (x * LOG2E + 0.5).floor();
    // ln 2 split in two so that the reduction is exact to f32 precision.
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

/// Sum with eight independent accumulators (see [`dot`]).
#[inline]
pub(crate) fn sum(a: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for k in 0..8 {
            acc[k] += a[c * 8 + k];
        }
    }
    let mut s = (acc[0] + acc[4]) + (acc[1] + acc[5]) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for &x in &a[chunks * 8..] {
        s += x;
    }
    s
}

/// Softmax numerators in place: `s[j] = e^(s[j] - shift)`, and 0 where `s[j]` is `-inf` (a
/// masked key); returns their sum.
#[inline]
pub(crate) fn exp_masked(s: &mut [f32], shift: f32) -> f32 {
    for x in s.iter_mut() {
        let p = exp(*x - shift);
        *x = if *x == f32::NEG_INFINITY { 0.0 } else { p };
    }
    sum(s)
}

/// `y += alpha * x`.
#[inline]
pub(crate) fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += alpha * x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_a_few_ulp_of_libm() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (want, got) = (x.exp(), exp(x));
            assert!(
                ((got - want) / want).abs() < 4e-7,
                "exp({x}) = {got}, libm {want}"
            );
            x += 0.013;
        }
        assert!(exp(f32::NEG_INFINITY) >= 0.0 && exp(f32::NEG_INFINITY) < 1e-37);
        assert!(exp(1000.0).is_finite());
        let mut s = [0.0, f32::NEG_INFINITY, -1.0, 2.0];
        let total = exp_masked(&mut s, 2.0);
        assert_eq!(s[1], 0.0);
        assert!((total - (1.0 + (-2f32).exp() + (-3f32).exp())).abs() < 1e-6);
    }

    #[test]
    fn dot_matches_a_plain_sum_for_every_tail_length() {
        for n in 0..20 {
            let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| 1.0 + i as f32 * 0.25).collect();
            let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - want).abs() < 1e-4, "n = {n}");
        }
    }
}

#[cfg(test)]
mod kernel_tests;
