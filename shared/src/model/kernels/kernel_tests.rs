//! Each fused kernel against the composite tensor-op form it replaces: values and the
//! gradient of every input, on random data with padding and grouped-query shapes.

use candle_core::{Device, Tensor, Var, D};

use super::attention::{attention, packed_attention, PackedHeads};
use super::cross_entropy;
use super::linear::linear;
use super::norm::rms_norm;
use super::rope::rope;
use super::swiglu::swiglu;
use crate::testing::{max_abs, max_abs_diff as max_diff};

const TOL: f32 = 2e-4;

fn randn(shape: &[usize], seed: u64) -> Tensor {
    // A fixed-seed stream so that failures reproduce.
    let n: usize = shape.iter().product();
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let data: Vec<f32> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

/// Values and gradients (under a random upstream gradient `w`) of `fused` and `reference`
/// applied to the same fresh variables agree within [`TOL`] (relative to the largest value).
fn check(
    inputs: &[Tensor],
    fused: impl Fn(&[Tensor]) -> Tensor,
    reference: impl Fn(&[Tensor]) -> Tensor,
) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let (yf, yr) = (fused(&ts), reference(&ts));
    let scale = max_abs(&yr).max(1.0);
    let d = max_diff(&yf, &yr);
    assert!(d <= TOL * scale, "values differ by {d}");
    let w = randn(yr.dims(), 99);
    let gf = (yf * &w).unwrap().sum_all().unwrap().backward().unwrap();
    let gr = (yr * &w).unwrap().sum_all().unwrap().backward().unwrap();
    for (i, t) in ts.iter().enumerate() {
        let (a, b) = (gf.get(t), gr.get(t));
        let (Some(a), Some(b)) = (a, b) else {
            panic!(
                "input {i}: gradient missing (fused {}, reference {})",
                a.is_some(),
                b.is_some()
            );
        };
        let scale = max_abs(b).max(1.0);
        let d = max_diff(a, b);
        assert!(d <= TOL * scale, "input {i}: gradients differ by {d}");
        let nonzero = a
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(nonzero > 0.0, "input {i}: zero gradient");
    }
}

fn ref_rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Tensor {
    let var = x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
    let normed = x
        .broadcast_div(&(var + eps).unwrap().sqrt().unwrap())
        .unwrap();
    normed.broadcast_mul(w).unwrap()
}

#[test]
fn rms_norm_matches_the_composite_form() {
    // 150 rows: more than one block of the parallel dw reduction.
    check(
        &[randn(&[3, 50, 24], 1), (randn(&[24], 2) + 1.0).unwrap()],
        |t| rms_norm(&t[0], &t[1], 1e-6).unwrap(),
        |t| ref_rms_norm(&t[0], &t[1], 1e-6),
    );
}

#[test]
fn linear_matches_matmul_plus_bias() {
    let x = randn(&[3, 5, 12], 21);
    let (w, b) = (randn(&[7, 12], 22), randn(&[7], 23));
    let reference = |t: &[Tensor]| {
        let y = t[0]
            .reshape((15, 12))
            .unwrap()
            .matmul(&t[1].t().unwrap())
            .unwrap();
        let y = match t.get(2) {
            Some(b) => y.broadcast_add(b).unwrap(),
            None => y,
        };
        y.reshape((3, 5, 7)).unwrap()
    };
    check(
        &[x.clone(), w.clone(), b],
        |t| linear(&t[0], &t[1], Some(&t[2])).unwrap(),
        reference,
    );
    check(
        &[x.clone(), w],
        |t| linear(&t[0], &t[1], None).unwrap(),
        reference,
    );
    assert!(linear(&x, &randn(&[7, 11], 24), None).is_err());
}

fn ref_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let full = |t: &Tensor| {
        Tensor::cat(&[t, t], D::Minus1)
            .unwrap()
            .unsqueeze(1)
            .unwrap()
    };
    let d = x.dim(D::Minus1).unwrap();
    let x1 = x.narrow(D::Minus1, 0, d / 2).unwrap();
    let x2 = x.narrow(D::Minus1, d / 2, d / 2).unwrap();
    let rotated = Tensor::cat(&[&x2.neg().unwrap(), &x1], D::Minus1).unwrap();
    (x.broadcast_mul(&full(cos)).unwrap() + rotated.broadcast_mul(&full(sin)).unwrap()).unwrap()
}

#[test]
fn rope_matches_the_rotate_half_form() {
    let angles = (randn(&[2, 5, 4], 3) * 3.0).unwrap();
    let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
    let x = randn(&[2, 3, 5, 8], 4);
    let y = rope(&x, &cos, &sin).unwrap();
    assert!(max_diff(&y, &ref_rope(&x, &cos, &sin)) < 1e-5);
    // Only x gets a gradient: check it through a variable.
    let v = Var::from_tensor(&x).unwrap();
    let w = randn(&[2, 3, 5, 8], 5);
    let g1 = (rope(v.as_tensor(), &cos, &sin).unwrap() * &w)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g2 = (ref_rope(v.as_tensor(), &cos, &sin) * &w)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let (a, b) = (
        g1.get(v.as_tensor()).unwrap(),
        g2.get(v.as_tensor()).unwrap(),
    );
    assert!(max_diff(a, b) < 1e-5);
}

#[test]
fn swiglu_matches_silu_times_up_on_the_packed_halves() {
    // 4·7 rows of 2·33: an odd width, and more rows than one parallel task takes.
    let packed = Tensor::cat(
        &[
            (randn(&[4, 7, 33], 6) * 4.0).unwrap(),
            randn(&[4, 7, 33], 7),
        ],
        2,
    )
    .unwrap();
    check(
        &[packed],
        |t| swiglu(&t[0]).unwrap(),
        |t| {
            let (gate, up) = (
                t[0].narrow(2, 0, 33).unwrap(),
                t[0].narrow(2, 33, 33).unwrap(),
            );
            (gate.silu().unwrap() * up).unwrap()
        },
    );
    let odd = randn(&[2, 5], 8);
    assert!(swiglu(&odd).is_err(), "an odd width has no halves");
}

/// A causal + left-padding additive mask `[B, 1, L, L]` (a pad row sees itself only).
fn causal_mask(lengths: &[usize], l: usize) -> Tensor {
    let mut m = Vec::new();
    for &n in lengths {
        for i in 0..l {
            for j in 0..l {
                let real_j = j + n >= l;
                let ok = (j <= i && real_j) || j == i;
                m.push(if ok { 0.0 } else { f32::NEG_INFINITY });
            }
        }
    }
    Tensor::from_vec(m, (lengths.len(), 1, l, l), &Device::Cpu).unwrap()
}

fn ref_attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, scale: f64) -> Tensor {
    let (b, h, l, d) = q.dims4().unwrap();
    let kvh = k.dim(1).unwrap();
    let g = h / kvh;
    // Repeat K/V per query head, the textbook way.
    let rep = |t: &Tensor| {
        let (b, kvh, t_, d) = t.dims4().unwrap();
        t.unsqueeze(2)
            .unwrap()
            .expand((b, kvh, g, t_, d))
            .unwrap()
            .reshape((b, kvh * g, t_, d))
            .unwrap()
    };
    let (k, v) = (rep(k), rep(v));
    let s = (q.matmul(&k.t().unwrap()).unwrap() * scale)
        .unwrap()
        .broadcast_add(mask)
        .unwrap();
    let p = candle_nn::ops::softmax(&s, D::Minus1).unwrap();
    p.matmul(&v)
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .reshape((b, l, h * d))
        .unwrap()
}

#[test]
fn attention_matches_softmax_attention_with_padding_and_gqa() {
    let (b, h, kvh, l, d) = (3, 4, 2, 6, 8);
    let mask = causal_mask(&[6, 4, 1], l);
    let scale = 1.0 / (d as f64).sqrt();
    check(
        &[
            (randn(&[b, h, l, d], 8) * 2.0).unwrap(),
            (randn(&[b, kvh, l, d], 9) * 2.0).unwrap(),
            randn(&[b, kvh, l, d], 10),
        ],
        |t| attention(&t[0], &t[1], &t[2], &mask, scale).unwrap(),
        |t| ref_attention(&t[0], &t[1], &t[2], &mask, scale),
    );
}

#[test]
fn packed_attention_matches_split_rotate_and_attend_per_row() {
    // Unpadded rows of 6, 4, 0 and 1 tokens; per token: 4 query heads, then 2 key heads, then
    // 2 value heads, of 8 dims each.
    let (h, kvh, d) = (4, 2, 8);
    let lengths = [6usize, 4, 0, 1];
    let offsets: Vec<usize> = std::iter::once(0)
        .chain(lengths.iter().scan(0, |n, &l| {
            *n += l;
            Some(*n)
        }))
        .collect();
    let n = offsets[lengths.len()];
    let scale = 1.0 / (d as f64).sqrt();
    let angles = (randn(&[n, d / 2], 14) * 3.0).unwrap();
    let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
    let heads = PackedHeads {
        heads: h,
        kv_heads: kvh,
        head_dim: d,
    };
    check(
        &[(randn(&[n, (h + 2 * kvh) * d], 15) * 2.0).unwrap()],
        |t| packed_attention(&t[0], &cos, &sin, offsets.clone(), Vec::new(), heads, scale).unwrap(),
        |t| {
            // Each row on its own, padded to nothing, through the split/rotate/attend path.
            let rows: Vec<Tensor> = lengths
                .iter()
                .zip(&offsets)
                .filter(|(&l, _)| l > 0)
                .map(|(&l, &at)| {
                    let x = t[0].narrow(0, at, l).unwrap();
                    let (c, s) = (
                        cos.narrow(0, at, l).unwrap().unsqueeze(0).unwrap(),
                        sin.narrow(0, at, l).unwrap().unsqueeze(0).unwrap(),
                    );
                    let split = |from: usize, heads: usize| {
                        x.narrow(1, from * d, heads * d)
                            .unwrap()
                            .reshape((1, l, heads, d))
                            .unwrap()
                            .transpose(1, 2)
                            .unwrap()
                            .contiguous()
                            .unwrap()
                    };
                    let q = ref_rope(&split(0, h), &c, &s);
                    let k = ref_rope(&split(h, kvh), &c, &s);
                    let mask = causal_mask(&[l], l);
                    ref_attention(&q, &k, &split(h + kvh, kvh), &mask, scale)
                        .squeeze(0)
                        .unwrap()
                })
                .collect();
            Tensor::cat(&rows, 0).unwrap()
        },
    );
    let bad = vec![0, 5, n + 1];
    assert!(packed_attention(
        &randn(&[n, (h + 2 * kvh) * d], 16),
        &cos,
        &sin,
        bad,
        Vec::new(),
        heads,
        scale
    )
    .is_err());
}

#[test]
fn attention_with_more_keys_than_queries_matches() {
    // The suffix form: 3 queries against 5 prompt keys (2 padded) and their own 3 keys.
    let (b, h, kvh, l, p, d) = (2, 2, 1, 3, 5, 4);
    let mut m = Vec::new();
    for pad in [0usize, 2] {
        for i in 0..l {
            m.extend((0..p).map(|j| if j < pad { f32::NEG_INFINITY } else { 0.0 }));
            m.extend((0..l).map(|j| if j <= i { 0.0 } else { f32::NEG_INFINITY }));
        }
    }
    let mask = Tensor::from_vec(m, (b, 1, l, p + l), &Device::Cpu).unwrap();
    check(
        &[
            randn(&[b, h, l, d], 11),
            randn(&[b, kvh, p + l, d], 12),
            randn(&[b, kvh, p + l, d], 13),
        ],
        |t| attention(&t[0], &t[1], &t[2], &mask, 0.5).unwrap(),
        |t| ref_attention(&t[0], &t[1], &t[2], &mask, 0.5),
    );
}

#[test]
fn cross_entropy_matches_log_softmax_and_gather() {
    let targets = Tensor::from_vec(vec![0u32, 9, 3, 3, 7], 5, &Device::Cpu).unwrap();
    check(
        &[(randn(&[5, 10], 19) * 5.0).unwrap()],
        |t| cross_entropy(&t[0], &targets).unwrap(),
        |t| {
            candle_nn::ops::log_softmax(&t[0], D::Minus1)
                .unwrap()
                .gather(&targets.unsqueeze(1).unwrap(), 1)
                .unwrap()
                .squeeze(1)
                .unwrap()
                .neg()
                .unwrap()
        },
    );
    let bad = Tensor::from_vec(vec![0u32, 10, 0, 0, 0], 5, &Device::Cpu).unwrap();
    let err = cross_entropy(&randn(&[5, 10], 20), &bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("target 10"), "{err}");
}

#[test]
fn row_log_sum_exp_matches_the_composite_form() {
    // 13 columns: one 8-wide block and a tail; values spread over ±40 around per-row offsets.
    let x = ((randn(&[37, 13], 41) * 40.0).unwrap() + 5.0).unwrap();
    let fused = super::log_sum_exp_rows(&x).unwrap();
    let max = x.max_keepdim(D::Minus1).unwrap();
    let reference = (x
        .broadcast_sub(&max)
        .unwrap()
        .exp()
        .unwrap()
        .sum_keepdim(D::Minus1)
        .unwrap()
        .log()
        .unwrap()
        + max)
        .unwrap();
    assert_eq!(fused.dims(), [37, 1]);
    let d = max_diff(&fused, &reference);
    assert!(d <= 1e-5 * max_abs(&reference).max(1.0), "differ by {d}");
    // A transposed (non-contiguous) input gives the same as its contiguous copy.
    let t = x.t().unwrap();
    let a = super::log_sum_exp_rows(&t).unwrap();
    let b = super::log_sum_exp_rows(&t.contiguous().unwrap()).unwrap();
    assert_eq!(max_diff(&a, &b), 0.0);
}
