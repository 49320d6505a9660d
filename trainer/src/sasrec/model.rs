//! The SASRec network of MiniOneRec's `SASRecModules_ori.py` (MINIONEREC.md §8), in candle.
//!
//! Parameter names and shapes are the PyTorch `state_dict` of the reference's `SASRec` module
//! (`feed_forward.w_1.weight` keeps its Conv1d shape `[h, h, 1]`), so a `model.safetensors`
//! written here loads into the reference with `load_state_dict` and back.
//!
//! Only the differentiable building blocks are used (plain-tensor layer norm and softmax):
//! candle-nn's fused `layer_norm` / `softmax_last_dim` have no backward.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var, D};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainerError};

/// Masked attention scores, as the reference's `-2**32 + 1`.
const MASKED: f64 = -4_294_967_295.0;
/// PyTorch's `nn.LayerNorm` default epsilon.
const LN_EPS: f64 = 1e-5;

/// Shape of a SASRec model (the reference's `SASRec(32, item_num, 10, 0.3, device)`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SasRecConfig {
    /// Catalogue size; the padding id is `num_items`.
    pub num_items: usize,
    /// Embedding and hidden width.
    pub hidden: usize,
    /// Longest history (the reference's `state_size`); longer histories keep their newest items.
    pub max_len: usize,
    /// Attention heads (`hidden` must be a multiple).
    pub num_heads: usize,
    /// Dropout rate of the embeddings, the attention weights and the feed-forward output.
    pub dropout: f64,
}

impl SasRecConfig {
    /// The reference's hyper-parameters for a catalogue of `num_items`.
    pub fn reference(num_items: usize) -> Self {
        Self {
            num_items,
            hidden: 32,
            max_len: 10,
            num_heads: 1,
            dropout: 0.3,
        }
    }

    /// Reject shapes the network cannot have.
    pub fn validate(&self) -> Result<()> {
        if self.num_items == 0 || self.hidden == 0 || self.max_len == 0 || self.num_heads == 0 {
            return Err(TrainerError::Invalid(
                "sasrec: items, hidden size, max length and heads must be at least 1".into(),
            ));
        }
        if !self.hidden.is_multiple_of(self.num_heads) {
            return Err(TrainerError::Invalid(format!(
                "sasrec: hidden size {} is not a multiple of {} heads",
                self.hidden, self.num_heads
            )));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(TrainerError::Invalid(format!(
                "sasrec: dropout {} is outside [0, 1)",
                self.dropout
            )));
        }
        Ok(())
    }

    /// Every parameter's name and shape, in a fixed order.
    pub fn shapes(&self) -> Vec<(&'static str, Vec<usize>)> {
        let (n, h, l) = (self.num_items, self.hidden, self.max_len);
        vec![
            ("item_embeddings.weight", vec![n + 1, h]),
            ("positional_embeddings.weight", vec![l, h]),
            ("ln_1.weight", vec![h]),
            ("ln_1.bias", vec![h]),
            ("ln_2.weight", vec![h]),
            ("ln_2.bias", vec![h]),
            ("ln_3.weight", vec![h]),
            ("ln_3.bias", vec![h]),
            ("mh_attn.linear_q.weight", vec![h, h]),
            ("mh_attn.linear_q.bias", vec![h]),
            ("mh_attn.linear_k.weight", vec![h, h]),
            ("mh_attn.linear_k.bias", vec![h]),
            ("mh_attn.linear_v.weight", vec![h, h]),
            ("mh_attn.linear_v.bias", vec![h]),
            ("feed_forward.w_1.weight", vec![h, h, 1]),
            ("feed_forward.w_1.bias", vec![h]),
            ("feed_forward.w_2.weight", vec![h, h, 1]),
            ("feed_forward.w_2.bias", vec![h]),
            ("feed_forward.layer_norm.weight", vec![h]),
            ("feed_forward.layer_norm.bias", vec![h]),
            ("s_fc.weight", vec![n, h]),
            ("s_fc.bias", vec![n]),
        ]
    }
}

/// A standard normal draw (Box-Muller), so that initialisation depends on the seed only.
fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// Dropout keep-masks (already scaled by 1/(1−p)) for one training forward, drawn from the
/// trainer's seeded generator so that runs repeat exactly.
pub struct DropoutMasks {
    /// `[B, L, h]` on the embeddings.
    pub emb: Tensor,
    /// `[B, heads, 1, L]` on the attention weights of the gathered position.
    pub attn: Tensor,
    /// `[B, h]` on the feed-forward output of the gathered position.
    pub ffn: Tensor,
}

fn mask_tensor(shape: &[usize], p: f64, rng: &mut ChaCha8Rng, device: &Device) -> Result<Tensor> {
    let len: usize = shape.iter().product();
    let keep = (1.0 / (1.0 - p)) as f32;
    let v: Vec<f32> = (0..len)
        .map(|_| if rng.gen::<f64>() < p { 0.0 } else { keep })
        .collect();
    Ok(Tensor::from_vec(v, shape, device)?)
}

impl DropoutMasks {
    /// Fresh masks for a batch of `batch` rows.
    pub fn draw(
        cfg: &SasRecConfig,
        batch: usize,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<Self> {
        let p = cfg.dropout;
        Ok(Self {
            emb: mask_tensor(&[batch, cfg.max_len, cfg.hidden], p, rng, device)?,
            attn: mask_tensor(&[batch, cfg.num_heads, 1, cfg.max_len], p, rng, device)?,
            ffn: mask_tensor(&[batch, cfg.hidden], p, rng, device)?,
        })
    }
}

/// A batch of histories in the reference's layout: vocabulary indices right-padded with
/// `num_items` to `max_len`, and the true lengths.
#[derive(Debug, Clone)]
pub struct SeqBatch {
    /// `[B, L]` u32 indices.
    pub seq: Tensor,
    /// `[B, L, 1]` f32: 1 at real items, 0 at padding.
    pub pad_mask: Tensor,
    /// `[B, 1, 1, L]` f32 additive attention mask for the last real position: 0 where a key may
    /// be attended to (a real item at or before it), `-2^32+1` elsewhere.
    pub key_mask: Tensor,
    /// `[B]` u32 index of the last real position (`len − 1`).
    pub last: Tensor,
    /// Rows in the batch.
    pub rows: usize,
}

impl SeqBatch {
    /// Build from histories of vocabulary indices (oldest first; only the newest `max_len` are
    /// kept). Every history must hold at least one item.
    pub fn new(histories: &[&[u32]], cfg: &SasRecConfig, device: &Device) -> Result<Self> {
        let (l, pad) = (cfg.max_len, cfg.num_items as u32);
        let b = histories.len();
        let mut seq = Vec::with_capacity(b * l);
        let mut pad_mask = Vec::with_capacity(b * l);
        let mut key_mask = Vec::with_capacity(b * l);
        let mut last = Vec::with_capacity(b);
        for h in histories {
            if h.is_empty() {
                return Err(TrainerError::Invalid(
                    "sasrec: a history must hold at least one item".into(),
                ));
            }
            let h = &h[h.len().saturating_sub(l)..];
            for i in 0..l {
                let real = i < h.len();
                seq.push(if real { h[i] } else { pad });
                pad_mask.push(if real { 1f32 } else { 0.0 });
                // Right padding + causality: the last real position sees exactly the real items.
                key_mask.push(if real { 0f32 } else { MASKED as f32 });
            }
            last.push((h.len() - 1) as u32);
        }
        Ok(Self {
            seq: Tensor::from_vec(seq, (b, l), device)?,
            pad_mask: Tensor::from_vec(pad_mask, (b, l, 1), device)?,
            key_mask: Tensor::from_vec(key_mask, (b, 1, 1, l), device)?,
            last: Tensor::from_vec(last, b, device)?,
            rows: b,
        })
    }
}

/// Plain-tensor layer norm over the last dimension (biased variance, as PyTorch).
fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xn = xc.broadcast_div(&(var + LN_EPS)?.sqrt()?)?;
    Ok(xn.broadcast_mul(w)?.broadcast_add(b)?)
}

/// `x @ wᵀ + b` for `x` of any rank (`w`: `[out, in]`).
fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let inner = dims[dims.len() - 1];
    let rows = x.elem_count() / inner.max(1);
    let y = x
        .reshape((rows, inner))?
        .matmul(&w.t()?)?
        .broadcast_add(b)?;
    let mut out = dims;
    let last = out.len() - 1;
    out[last] = w.dim(0)?;
    Ok(y.reshape(out)?)
}

/// Softmax over the last dimension from differentiable ops; the max is a constant shift.
fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// Log-softmax over the last dimension from differentiable ops.
pub fn log_softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?)
}

/// The parameters of a SASRec model, by name (trainable [`Var`]s while training).
pub struct SasRecNet {
    /// Shape.
    pub cfg: SasRecConfig,
    vars: Vec<(String, Var)>,
    by_name: HashMap<String, usize>,
}

impl SasRecNet {
    /// A freshly initialised network (the reference's initialisation, from `seed`).
    pub fn init(cfg: SasRecConfig, rng: &mut ChaCha8Rng, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let mut tensors = Vec::new();
        for (name, shape) in cfg.shapes() {
            let v = init_param(name, &shape, cfg.hidden, rng);
            tensors.push((name.to_string(), Tensor::from_vec(v, shape, device)?));
        }
        Self::from_tensors(cfg, tensors)
    }

    /// Wrap named tensors (checked against `cfg`'s shapes) as trainable variables.
    pub fn from_tensors(cfg: SasRecConfig, tensors: Vec<(String, Tensor)>) -> Result<Self> {
        cfg.validate()?;
        let mut given: HashMap<String, Tensor> = tensors.into_iter().collect();
        let mut vars = Vec::new();
        let mut by_name = HashMap::new();
        for (name, shape) in cfg.shapes() {
            let t = given.remove(name).ok_or_else(|| {
                TrainerError::Invalid(format!("sasrec: missing parameter `{name}`"))
            })?;
            if t.dims() != shape.as_slice() {
                return Err(TrainerError::Invalid(format!(
                    "sasrec: parameter `{name}` has shape {:?}, expected {shape:?}",
                    t.dims()
                )));
            }
            by_name.insert(name.to_string(), vars.len());
            vars.push((
                name.to_string(),
                Var::from_tensor(&t.to_dtype(DType::F32)?)?,
            ));
        }
        if let Some(extra) = given.keys().next() {
            return Err(TrainerError::Invalid(format!(
                "sasrec: unexpected parameter `{extra}`"
            )));
        }
        Ok(Self { cfg, vars, by_name })
    }

    /// The trainable variables, in [`SasRecConfig::shapes`] order.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// Detached copies of every parameter (e.g. the best epoch's state).
    pub fn snapshot(&self) -> Result<Vec<(String, Tensor)>> {
        self.vars
            .iter()
            .map(|(n, v)| Ok((n.clone(), v.as_tensor().detach().copy()?)))
            .collect()
    }

    /// Overwrite every parameter with a [`SasRecNet::snapshot`].
    pub fn restore(&self, snap: &[(String, Tensor)]) -> Result<()> {
        for (name, t) in snap {
            self.var(name)?.set(t)?;
        }
        Ok(())
    }

    fn var(&self, name: &str) -> Result<&Var> {
        self.by_name
            .get(name)
            .map(|&i| &self.vars[i].1)
            .ok_or_else(|| TrainerError::Invalid(format!("sasrec: no parameter `{name}`")))
    }

    fn p(&self, name: &str) -> Result<&Tensor> {
        Ok(self.var(name)?.as_tensor())
    }

    /// The hidden state after each history (`[B, h]`, the reference's `state_hidden`).
    ///
    /// Only the last real position's output is ever read (`extract_axis_1(ff_out, len − 1)`), and
    /// with right padding and the causal mask that position attends to exactly the real items, so
    /// queries, the feed-forward block and the final norms are computed for that position alone:
    /// the same numbers as the reference's full `[B, L, h]` pass, at a fraction of the work.
    /// `dropout` is `None` in evaluation.
    pub fn hidden(&self, batch: &SeqBatch, dropout: Option<&DropoutMasks>) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (b, l, h) = (batch.rows, cfg.max_len, cfg.hidden);
        let (heads, hd) = (cfg.num_heads, cfg.hidden / cfg.num_heads);
        let emb = self
            .p("item_embeddings.weight")?
            .index_select(&batch.seq.flatten_all()?, 0)?
            .reshape((b, l, h))?;
        let mut x = emb.broadcast_add(self.p("positional_embeddings.weight")?)?;
        if let Some(d) = dropout {
            x = (x * &d.emb)?;
        }
        let x = x.broadcast_mul(&batch.pad_mask)?;
        // The gathered position's row of the sequence: [B, h].
        let idx = batch
            .last
            .reshape((b, 1, 1))?
            .broadcast_as((b, 1, h))?
            .contiguous()?;
        let x_last = x.gather(&idx, 1)?.squeeze(1)?;
        let q_in = layer_norm(&x_last, self.p("ln_1.weight")?, self.p("ln_1.bias")?)?;
        let q = linear(
            &q_in,
            self.p("mh_attn.linear_q.weight")?,
            self.p("mh_attn.linear_q.bias")?,
        )?;
        let k = linear(
            &x,
            self.p("mh_attn.linear_k.weight")?,
            self.p("mh_attn.linear_k.bias")?,
        )?;
        let v = linear(
            &x,
            self.p("mh_attn.linear_v.weight")?,
            self.p("mh_attn.linear_v.bias")?,
        )?;
        let q = q.reshape((b, heads, 1, hd))?;
        let k = k
            .reshape((b, l, heads, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let v = v
            .reshape((b, l, heads, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        // The reference scales by √hidden, not √head_dim.
        let scores = (q.matmul(&k.transpose(2, 3)?.contiguous()?)? / (h as f64).sqrt())?
            .broadcast_add(&batch.key_mask)?;
        let mut w = softmax_last(&scores)?;
        if let Some(d) = dropout {
            w = (w * &d.attn)?;
        }
        let attn = w.matmul(&v)?.reshape((b, h))?;
        let attn = (attn + &q_in)?;
        let f_in = layer_norm(&attn, self.p("ln_2.weight")?, self.p("ln_2.bias")?)?;
        let w1 = self.p("feed_forward.w_1.weight")?.squeeze(2)?;
        let w2 = self.p("feed_forward.w_2.weight")?.squeeze(2)?;
        let f = linear(&f_in, &w1, self.p("feed_forward.w_1.bias")?)?.relu()?;
        let mut f = linear(&f, &w2, self.p("feed_forward.w_2.bias")?)?;
        if let Some(d) = dropout {
            f = (f * &d.ffn)?;
        }
        let f = layer_norm(
            &(f + &f_in)?,
            self.p("feed_forward.layer_norm.weight")?,
            self.p("feed_forward.layer_norm.bias")?,
        )?;
        layer_norm(&f, self.p("ln_3.weight")?, self.p("ln_3.bias")?)
    }

    /// Logits over the whole catalogue, `[B, num_items]`.
    pub fn all_logits(&self, hidden: &Tensor) -> Result<Tensor> {
        linear(hidden, self.p("s_fc.weight")?, self.p("s_fc.bias")?)
    }

    /// Logits of one item per row, `[B]` (`items`: `[B]` u32 indices), without the full
    /// projection.
    pub fn item_logits(&self, hidden: &Tensor, items: &Tensor) -> Result<Tensor> {
        let w = self.p("s_fc.weight")?.index_select(items, 0)?;
        let b = self.p("s_fc.bias")?.index_select(items, 0)?;
        Ok(((hidden * w)?.sum(D::Minus1)? + b)?)
    }

    /// Logits of several items per row, `[B, C]` (`items`: `[B, C]` u32 indices).
    pub fn candidate_logits(&self, hidden: &Tensor, items: &Tensor) -> Result<Tensor> {
        let (b, c) = items.dims2()?;
        let h = self.cfg.hidden;
        let flat = items.flatten_all()?;
        let w = self
            .p("s_fc.weight")?
            .index_select(&flat, 0)?
            .reshape((b, c, h))?;
        let bias = self
            .p("s_fc.bias")?
            .index_select(&flat, 0)?
            .reshape((b, c))?;
        let dot = w.matmul(&hidden.unsqueeze(2)?)?.squeeze(2)?;
        Ok((dot + bias)?)
    }
}

/// One parameter's initial values, the reference's: item embeddings N(0, 0.01), positional
/// embeddings N(0, 1) (PyTorch's `nn.Embedding` default), layer norms 1 / 0, linear and 1×1 conv
/// weights and biases U(±1/√fan_in) (PyTorch's defaults).
fn init_param(name: &str, shape: &[usize], hidden: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let len: usize = shape.iter().product();
    match name {
        "item_embeddings.weight" => (0..len).map(|_| 0.01 * normal(rng)).collect(),
        "positional_embeddings.weight" => (0..len).map(|_| normal(rng)).collect(),
        n if n.starts_with("ln_") || n.contains("layer_norm") => {
            vec![if n.ends_with("weight") { 1.0 } else { 0.0 }; len]
        }
        _ => {
            // Every linear layer (and 1×1 conv) here reads a hidden vector: fan_in = hidden.
            let bound = 1.0 / (hidden as f64).sqrt();
            (0..len)
                .map(|_| rng.gen_range(-bound..bound) as f32)
                .collect()
        }
    }
}
