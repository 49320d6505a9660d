//! BERT inference on the CPU over packed tokens, pooled by a per-text mean.
//!
//! candle-transformers' `BertModel` pads a batch to its longest text and runs every op as a
//! tensor op: an `erff` call per GELU element, an unfused softmax over `[batch, heads, len,
//! len]` scores with a padding mask, and a temporary per element-wise op. Here the batch's real
//! tokens form one `[tokens, hidden]` matrix: each linear layer is one matrix product over them
//! (gemm, its bias and residual folded into the destination), attention runs per text over its
//! own token range straight from the packed q/k/v projection (so there is no mask and no padded
//! score), and the element-wise work is a few fused, vectorisable passes: bias + GELU with a
//! polynomial `erf`, bias + residual + LayerNorm, the softmax inside attention.
//!
//! The weights are the checkpoint's (the names of Hugging Face's `BertModel`, optionally under a
//! `bert.` or `<model_type>.` prefix); the result matches candle-transformers' model to float
//! rounding.

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use rayon::prelude::*;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::kernels::{exp, simd};

/// The fields of a Hugging Face BERT `config.json` that the forward pass reads (the rest, such
/// as dropout rates, do not change inference and are ignored).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: HiddenAct,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    /// Only absolute position embeddings are implemented; any other kind is refused when the
    /// config is read, not run wrongly.
    #[serde(default)]
    pub position_embedding_type: PositionEmbeddingType,
    /// The prefix the weights may sit under (`<model_type>.`).
    pub model_type: Option<String>,
}

/// The intermediate activation of a BERT layer, by its `config.json` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) enum HiddenAct {
    /// Exact (erf) GELU.
    #[serde(rename = "gelu")]
    Gelu,
    /// The tanh approximation of GELU.
    #[serde(
        rename = "gelu_new",
        alias = "gelu_pytorch_tanh",
        alias = "geluapproximate"
    )]
    GeluApproximate,
    #[serde(rename = "relu")]
    Relu,
}

/// How positions enter the embeddings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PositionEmbeddingType {
    #[default]
    Absolute,
}

/// Rows per rayon task in the element-wise passes (a pass over a row is ~1 µs of work).
const ROWS_PER_TASK: usize = 64;

/// A LayerNorm's scale and shift.
struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

/// One transformer layer; weight matrices are stored transposed (`[in, out]`, row-major).
struct Layer {
    /// Query, key and value side by side: `[hidden, 3·hidden]`.
    qkv: Vec<f32>,
    qkv_bias: Vec<f32>,
    attn_out: Vec<f32>,
    attn_out_bias: Vec<f32>,
    attn_norm: Norm,
    up: Vec<f32>,
    up_bias: Vec<f32>,
    down: Vec<f32>,
    down_bias: Vec<f32>,
    out_norm: Norm,
}

/// A BERT encoder's weights, ready for [`Bert::pooled`].
pub(crate) struct Bert {
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    emb_norm: Norm,
    layers: Vec<Layer>,
    hidden: usize,
    heads: usize,
    intermediate: usize,
    eps: f32,
    act: HiddenAct,
}

/// Working memory of a forward pass, kept between batches so that its pages are touched once.
#[derive(Default)]
pub(crate) struct Scratch {
    h: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    inter: Vec<f32>,
}

/// Named f32 tensors of a checkpoint, with the prefix its BERT weights sit under.
struct Weights<'a> {
    tensors: &'a HashMap<String, Tensor>,
    prefix: String,
}

impl Weights<'_> {
    /// The tensor `name` as row-major f32, checked against `shape`.
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let full = format!("{}{name}", self.prefix);
        let t = self
            .tensors
            .get(&full)
            .ok_or_else(|| Error::Invalid(format!("no tensor {full}")))?;
        if t.dims() != shape {
            return Err(Error::Invalid(format!(
                "tensor {full} has shape {:?}, the config implies {shape:?}",
                t.dims()
            )));
        }
        Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    }

    /// A `[out, in]` linear weight, transposed to `[in, out]` (the products' right operand).
    fn linear_t(&self, name: &str, out: usize, inp: usize) -> Result<Vec<f32>> {
        let w = self.get(&format!("{name}.weight"), &[out, inp])?;
        let mut t = vec![0f32; w.len()];
        for (o, row) in w.chunks_exact(inp).enumerate() {
            for (i, &x) in row.iter().enumerate() {
                t[i * out + o] = x;
            }
        }
        Ok(t)
    }

    fn bias(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        self.get(&format!("{name}.bias"), &[n])
    }

    fn norm(&self, name: &str, n: usize) -> Result<Norm> {
        Ok(Norm {
            weight: self.get(&format!("{name}.weight"), &[n])?,
            bias: self.get(&format!("{name}.bias"), &[n])?,
        })
    }
}

impl Bert {
    /// The encoder of `cfg` from a checkpoint's tensors.
    pub(crate) fn load(tensors: &HashMap<String, Tensor>, cfg: &Config) -> Result<Self> {
        // Absolute positions are the only kind the config parses to; should another be added,
        // this stops compiling rather than running it wrongly.
        let PositionEmbeddingType::Absolute = cfg.position_embedding_type;
        let (hidden, heads, inter) = (
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.intermediate_size,
        );
        if heads == 0 || hidden == 0 || hidden % heads != 0 {
            return Err(Error::Invalid(format!(
                "hidden size {hidden} is not a multiple of {heads} attention heads"
            )));
        }
        let word_name = "embeddings.word_embeddings.weight";
        let mut prefixes = vec![String::new(), "bert.".to_string()];
        if let Some(t) = &cfg.model_type {
            prefixes.push(format!("{t}."));
        }
        let prefix = prefixes
            .into_iter()
            .find(|p| tensors.contains_key(&format!("{p}{word_name}")))
            .ok_or_else(|| Error::Invalid(format!("no tensor {word_name} (nor under bert.)")))?;
        let w = Weights { tensors, prefix };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            let a = format!("{p}.attention");
            let (q, k, v) = (
                w.linear_t(&format!("{a}.self.query"), hidden, hidden)?,
                w.linear_t(&format!("{a}.self.key"), hidden, hidden)?,
                w.linear_t(&format!("{a}.self.value"), hidden, hidden)?,
            );
            let mut qkv = Vec::with_capacity(3 * hidden * hidden);
            for i in 0..hidden {
                for m in [&q, &k, &v] {
                    qkv.extend_from_slice(&m[i * hidden..(i + 1) * hidden]);
                }
            }
            let mut qkv_bias = w.bias(&format!("{a}.self.query"), hidden)?;
            qkv_bias.extend(w.bias(&format!("{a}.self.key"), hidden)?);
            qkv_bias.extend(w.bias(&format!("{a}.self.value"), hidden)?);
            layers.push(Layer {
                qkv,
                qkv_bias,
                attn_out: w.linear_t(&format!("{a}.output.dense"), hidden, hidden)?,
                attn_out_bias: w.bias(&format!("{a}.output.dense"), hidden)?,
                attn_norm: w.norm(&format!("{a}.output.LayerNorm"), hidden)?,
                up: w.linear_t(&format!("{p}.intermediate.dense"), inter, hidden)?,
                up_bias: w.bias(&format!("{p}.intermediate.dense"), inter)?,
                down: w.linear_t(&format!("{p}.output.dense"), hidden, inter)?,
                down_bias: w.bias(&format!("{p}.output.dense"), hidden)?,
                out_norm: w.norm(&format!("{p}.output.LayerNorm"), hidden)?,
            });
        }
        Ok(Self {
            word: w.get(word_name, &[cfg.vocab_size, hidden])?,
            position: w.get(
                "embeddings.position_embeddings.weight",
                &[cfg.max_position_embeddings, hidden],
            )?,
            token_type: w.get(
                "embeddings.token_type_embeddings.weight",
                &[cfg.type_vocab_size, hidden],
            )?,
            emb_norm: w.norm("embeddings.LayerNorm", hidden)?,
            layers,
            hidden,
            heads,
            intermediate: inter,
            eps: cfg.layer_norm_eps as f32,
            act: cfg.hidden_act,
        })
    }

    /// Mean of the last hidden state over each text's tokens: `[texts.len(), hidden]`.
    ///
    /// `texts` holds each text's token ids and token type ids (of equal length, special tokens
    /// included, no padding). An empty text pools to zeros.
    pub(crate) fn pooled(&self, texts: &[(&[u32], &[u32])], s: &mut Scratch) -> Result<Vec<f32>> {
        let hd = self.hidden;
        let mut ranges = Vec::with_capacity(texts.len());
        let mut n = 0;
        let positions = self.position.len() / hd;
        for (i, (ids, types)) in texts.iter().enumerate() {
            if ids.len() != types.len() || ids.len() > positions {
                return Err(Error::Invalid(format!(
                    "text {i}: {} token ids, {} type ids, at most {positions} positions",
                    ids.len(),
                    types.len()
                )));
            }
            ranges.push(n..n + ids.len());
            n += ids.len();
        }
        resize(&mut s.h, n * hd);
        self.embed(texts, &ranges, &mut s.h)?;
        resize(&mut s.qkv, n * 3 * hd);
        resize(&mut s.ctx, n * hd);
        resize(&mut s.inter, n * self.intermediate);
        for layer in &self.layers {
            self.layer(layer, &ranges, s);
        }
        let mut out = vec![0f32; texts.len() * hd];
        for (o, r) in out.chunks_exact_mut(hd).zip(&ranges) {
            if r.is_empty() {
                continue;
            }
            for row in s.h[r.start * hd..r.end * hd].chunks_exact(hd) {
                add_assign(o, row);
            }
            let inv = 1.0 / r.len() as f32;
            o.iter_mut().for_each(|x| *x *= inv);
        }
        Ok(out)
    }

    /// Word + position + token type embeddings, LayerNorm'd, into `h`.
    fn embed(
        &self,
        texts: &[(&[u32], &[u32])],
        ranges: &[std::ops::Range<usize>],
        h: &mut [f32],
    ) -> Result<()> {
        let hd = self.hidden;
        let (vocab, types) = (self.word.len() / hd, self.token_type.len() / hd);
        for ((ids, tys), r) in texts.iter().zip(ranges) {
            let rows = h[r.start * hd..r.end * hd].chunks_exact_mut(hd);
            for (p, ((&id, &ty), row)) in ids.iter().zip(tys.iter()).zip(rows).enumerate() {
                let (id, ty) = (id as usize, ty as usize);
                if id >= vocab || ty >= types {
                    return Err(Error::Invalid(format!(
                        "token id {id} / type id {ty} outside the encoder's {vocab} / {types}"
                    )));
                }
                row.copy_from_slice(&self.word[id * hd..(id + 1) * hd]);
                add_assign(row, &self.position[p * hd..(p + 1) * hd]);
                add_assign(row, &self.token_type[ty * hd..(ty + 1) * hd]);
            }
        }
        let zeros = vec![0f32; hd];
        add_norm(h, &zeros, &self.emb_norm, self.eps);
        Ok(())
    }

    fn layer(&self, l: &Layer, ranges: &[std::ops::Range<usize>], s: &mut Scratch) {
        let hd = self.hidden;
        let n = s.h.len() / hd;
        fill_rows(&mut s.qkv, &l.qkv_bias);
        matmul(&mut s.qkv, &s.h, &l.qkv, n, hd, 3 * hd);
        self.attention(&s.qkv, &mut s.ctx, ranges);
        // The residual is already in `h`: the product adds onto it.
        matmul(&mut s.h, &s.ctx, &l.attn_out, n, hd, hd);
        add_norm(&mut s.h, &l.attn_out_bias, &l.attn_norm, self.eps);
        fill_rows(&mut s.inter, &l.up_bias);
        matmul(&mut s.inter, &s.h, &l.up, n, hd, self.intermediate);
        activate(&mut s.inter, self.act);
        matmul(&mut s.h, &s.inter, &l.down, n, self.intermediate, hd);
        add_norm(&mut s.h, &l.down_bias, &l.out_norm, self.eps);
    }

    /// Softmax attention of every text over its own tokens, all heads, from the packed
    /// `[tokens, q | k | v]` projection into `ctx` `[tokens, hidden]`.
    fn attention(&self, qkv: &[f32], ctx: &mut [f32], ranges: &[std::ops::Range<usize>]) {
        let hd = self.hidden;
        let mut parts = Vec::with_capacity(ranges.len());
        let mut rest = ctx;
        for r in ranges {
            let (part, tail) = rest.split_at_mut(r.len() * hd);
            parts.push((&qkv[r.start * 3 * hd..r.end * 3 * hd], part));
            rest = tail;
        }
        parts
            .into_par_iter()
            .for_each(|(qkv, ctx)| attend(qkv, ctx, hd, self.heads));
    }
}

/// One text's attention (see [`Bert::attention`]); `qkv` and `ctx` hold its rows only.
///
/// Both products of a head are gemm calls reading q, k and v in place through strides (k as
/// the transposed right operand): plain loops over these `len × len × head_dim` shapes ran at
/// a tenth of gemm's rate and took a quarter of the forward pass.
fn attend(qkv: &[f32], ctx: &mut [f32], hidden: usize, heads: usize) {
    let d = hidden / heads;
    let w = 3 * hidden;
    let len = ctx.len() / hidden;
    assert!(qkv.len() == len * w && d * heads == hidden);
    if len == 0 {
        return;
    }
    let scale = 1.0 / (d as f32).sqrt();
    let mut scores = vec![0f32; len * len];
    for h in 0..heads {
        // SAFETY: every index the strides address is below `len * w` (q, k, v) for `qkv`,
        // `len * len` for `scores` and `len * hidden` for `ctx` (checked above), and the
        // destinations are borrowed mutably apart from the operands.
        unsafe {
            gemm::gemm(
                len,
                len,
                d,
                scores.as_mut_ptr(),
                1,
                len as isize,
                false,
                qkv.as_ptr().add(h * d),
                1,
                w as isize,
                qkv.as_ptr().add(hidden + h * d),
                w as isize,
                1,
                0.0,
                scale,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        simd(|| {
            for row in scores.chunks_exact_mut(len) {
                softmax(row)
            }
        });
        // SAFETY: as above.
        unsafe {
            gemm::gemm(
                len,
                d,
                len,
                ctx.as_mut_ptr().add(h * d),
                1,
                hidden as isize,
                false,
                scores.as_ptr(),
                1,
                len as isize,
                qkv.as_ptr().add(2 * hidden + h * d),
                1,
                w as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }
}

/// Softmax of `row` in place.
#[inline(always)]
fn softmax(row: &mut [f32]) {
    let mut max = f32::NEG_INFINITY;
    for &x in row.iter() {
        max = max.max(x);
    }
    for x in row.iter_mut() {
        *x = exp(*x - max);
    }
    let inv = 1.0 / crate::model::kernels::sum(row);
    for x in row.iter_mut() {
        *x *= inv;
    }
}

/// Make `v` hold `n` elements; old contents are left (every pass overwrites what it reads).
fn resize(v: &mut Vec<f32>, n: usize) {
    v.resize(n, 0.0);
}

fn add_assign(y: &mut [f32], x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += x;
    }
}

/// Every row of `m` (rows of `row.len()`) set to `row`.
fn fill_rows(m: &mut [f32], row: &[f32]) {
    m.par_chunks_mut(row.len() * ROWS_PER_TASK).for_each(|c| {
        for r in c.chunks_exact_mut(row.len()) {
            r.copy_from_slice(row);
        }
    });
}

/// `dst[m, n] += a[m, k] · b[k, n]`, all row-major, on the current rayon pool.
fn matmul(dst: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize) {
    assert!(dst.len() == m * n && a.len() == m * k && b.len() == k * n);
    if m == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the three buffers hold exactly the m·n, m·k and k·n elements the strides address
    // (checked above), and `dst` is borrowed mutably, so it overlaps neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            true,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// Each row of `h`: `LayerNorm(row + bias)`, in place.
fn add_norm(h: &mut [f32], bias: &[f32], norm: &Norm, eps: f32) {
    let hd = bias.len();
    h.par_chunks_mut(hd * ROWS_PER_TASK).for_each(|c| {
        simd(|| {
            for row in c.chunks_exact_mut(hd) {
                add_assign(row, bias);
                let mean = crate::model::kernels::sum(row) / hd as f32;
                let mut var = 0f32;
                for x in row.iter_mut() {
                    *x -= mean;
                    var += *x * *x;
                }
                let inv = 1.0 / (var / hd as f32 + eps).sqrt();
                for ((x, w), b) in row.iter_mut().zip(&norm.weight).zip(&norm.bias) {
                    *x = *x * inv * w + b;
                }
            }
        })
    });
}

/// The intermediate activation, in place.
fn activate(x: &mut [f32], act: HiddenAct) {
    x.par_chunks_mut(4096).for_each(|c| {
        simd(|| match act {
            HiddenAct::Gelu => c.iter_mut().for_each(|x| *x = gelu(*x)),
            HiddenAct::GeluApproximate => c.iter_mut().for_each(|x| *x = gelu_tanh(*x)),
            HiddenAct::Relu => c.iter_mut().for_each(|x| *x = x.max(0.0)),
        })
    });
}

/// `x·Φ(x)` with the exact (erf) normal CDF, as BERT's `gelu`.
#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// The tanh approximation of GELU (`gelu_new` / candle's `gelu`).
#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    let y = 0.797_884_6 * (x + 0.044_715 * x * x * x);
    // tanh(y) = 1 − 2 / (e^{2y} + 1), which saturates correctly at both ends.
    0.5 * x * (2.0 - 2.0 / (exp(2.0 * y) + 1.0))
}

/// `erf(x)` as a rational function of `x` (odd degree-13 numerator, even degree-8 denominator:
/// Eigen's and XLA's `erf` for float; erf is ±1 in f32 beyond ±4), without branches or calls so
/// that a loop over it vectorises. It is evaluated in f64: in f32 the Horner sums lose digits
/// for |x| > 1 (4.2e-7 largest error, against 6.5e-8 for the function itself).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = (x as f64).clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_258_013_06e-10 + 2.770_681_424_959_02e-8;
    p = x2 * p + -2.101_024_020_825_08e-6;
    p = x2 * p + -5.692_506_394_623_46e-5;
    p = x2 * p + -7.349_906_303_268_55e-4;
    p = x2 * p + -2.954_599_808_540_25e-3;
    p = x2 * p + -1.609_603_332_624_15e-2;
    let mut q = x2 * -1.456_607_184_649_96e-5 + -2.133_740_552_789_05e-4;
    q = x2 * q + -1.682_826_974_382_03e-3;
    q = x2 * q + -7.373_329_167_204_68e-3;
    q = x2 * q + -1.426_473_905_141_89e-2;
    (x * p / q) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" {
        #[link_name = "erf"]
        fn erf_f64(x: f64) -> f64;
    }

    #[test]
    fn erf_is_within_1e_7_of_libm() {
        let mut worst = 0f64;
        let mut x = -6.0f32;
        while x <= 6.0 {
            // SAFETY: libm's erf is a pure function of its argument.
            let want = unsafe { erf_f64(x as f64) };
            worst = worst.max((erf(x) as f64 - want).abs());
            x += 1e-4;
        }
        assert!(worst <= 1e-7, "largest |erf error| {worst}");
        assert_eq!(erf(0.0), 0.0);
        assert!((erf(f32::INFINITY) - 1.0).abs() <= 1e-7 && (erf(-9.0) + 1.0).abs() <= 1e-7);
    }

    #[test]
    fn configs_read_the_forward_pass_fields_and_refuse_other_position_embeddings() {
        let minilm = r#"{"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1,
            "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 384,
            "initializer_range": 0.02, "intermediate_size": 1536, "layer_norm_eps": 1e-12,
            "max_position_embeddings": 512, "model_type": "bert", "num_attention_heads": 12,
            "num_hidden_layers": 6, "pad_token_id": 0, "position_embedding_type": "absolute",
            "type_vocab_size": 2, "vocab_size": 30522}"#;
        let cfg: Config = serde_json::from_str(minilm).unwrap();
        assert_eq!(
            (
                cfg.hidden_size,
                cfg.intermediate_size,
                cfg.num_hidden_layers
            ),
            (384, 1536, 6)
        );
        assert_eq!(cfg.hidden_act, HiddenAct::Gelu);
        assert_eq!(cfg.model_type.as_deref(), Some("bert"));
        for (name, act) in [
            ("gelu_new", HiddenAct::GeluApproximate),
            ("gelu_pytorch_tanh", HiddenAct::GeluApproximate),
            ("relu", HiddenAct::Relu),
        ] {
            let json = minilm.replace(r#""gelu""#, &format!("\"{name}\""));
            assert_eq!(
                serde_json::from_str::<Config>(&json).unwrap().hidden_act,
                act
            );
        }
        let no_type = minilm.replace(r#""position_embedding_type": "absolute","#, "");
        let cfg: Config = serde_json::from_str(&no_type).unwrap();
        assert_eq!(cfg.position_embedding_type, PositionEmbeddingType::Absolute);
        let relative = minilm.replace(r#""absolute""#, r#""relative_key""#);
        let err = serde_json::from_str::<Config>(&relative)
            .unwrap_err()
            .to_string();
        assert!(err.contains("relative_key"), "{err}");
        let swish = minilm.replace(r#""gelu""#, r#""swish""#);
        let err = serde_json::from_str::<Config>(&swish)
            .unwrap_err()
            .to_string();
        assert!(err.contains("swish"), "{err}");
    }

    #[test]
    fn gelu_tanh_matches_its_definition() {
        for i in -200..=200 {
            let x = i as f32 * 0.05;
            let want = 0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044_715 * x * x * x)).tanh());
            assert!((gelu_tanh(x) - want).abs() < 2e-6, "x = {x}");
        }
    }
}
