//! The Qwen2 decoder: modules, the full-sequence forward (training and prefill) and the
//! shared-prompt decode step.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use super::cache::{BeamCache, LayerKv, PromptCache};
use super::config::Qwen2Config;
use super::copy_gate::{CopyGate, CopyTarget};
use super::item_embedding::ItemLookup;
use super::kernels;
use super::layout::{BatchLayout, ItemWindow, RopeTables, Rotary, BLOCKED};
use super::Mode;
use crate::{Error, Result};

type CResult<T> = candle_core::Result<T>;

/// Name of the item-vector table (`init --item-embeddings`) among the model's weights.
pub const ITEM_EMBEDDINGS_VAR: &str = "model.embed_items.weight";
/// Name of the copy gate's weight `[levels, hidden]` (`init --copy-gate`).
pub const COPY_GATE_WEIGHT_VAR: &str = "model.copy_gate.weight";
/// Name of the copy gate's bias `[levels]`.
pub const COPY_GATE_BIAS_VAR: &str = "model.copy_gate.bias";

/// How one forward pass runs its non-matmul ops: the mode, and whether the fused CPU kernels
/// (`kernels`) replace the composite tensor-op forms (decided once per pass, for the whole
/// pass, so that the RoPE tables and every layer agree).
#[derive(Debug, Clone, Copy)]
struct Ops {
    mode: Mode,
    fused: bool,
}

/// Training-time dropout with masks drawn from a seeded stream, so that a run (and a resumed
/// run) is reproducible: the trainer sets the seed before every forward pass.
#[derive(Debug, Default)]
struct Dropout {
    /// Drop probability as f32 bits (0 = off).
    p_bits: AtomicU32,
    /// Seed of the current forward pass.
    seed: AtomicU64,
    /// Masks drawn since the seed was set.
    drawn: AtomicU64,
}

impl Dropout {
    /// Set the drop probability; `what` names the setting in the error for one outside [0, 1).
    fn set_p(&self, p: f32, what: &str) -> Result<()> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::Invalid(format!("{what} {p} is outside [0, 1)")));
        }
        self.p_bits.store(p.to_bits(), Ordering::Relaxed);
        Ok(())
    }

    /// The probability and the generator of the next mask of this pass, or `None` when
    /// nothing is dropped (outside training, or off).
    fn next_mask(&self, mode: Mode) -> Option<(f32, ChaCha8Rng)> {
        let p = f32::from_bits(self.p_bits.load(Ordering::Relaxed));
        if mode != Mode::Train || p <= 0.0 {
            return None;
        }
        let stream = self.drawn.fetch_add(1, Ordering::Relaxed);
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed.load(Ordering::Relaxed));
        rng.set_stream(stream);
        Some((p, rng))
    }

    fn apply(&self, x: &Tensor, mode: Mode) -> CResult<Tensor> {
        let Some((p, mut rng)) = self.next_mask(mode) else {
            return Ok(x.clone());
        };
        let scale = 1.0 / (1.0 - p);
        let keep: Vec<f32> = (0..x.elem_count())
            .map(|_| if rng.gen::<f32>() < p { 0.0 } else { scale })
            .collect();
        let mask = Tensor::from_vec(keep, x.shape(), x.device())?.to_dtype(x.dtype())?;
        x * mask
    }

    /// Whether each of `n` rows is kept, from the same seeded stream (all of them outside
    /// training or when off); a dropped row is removed whole and the kept ones are not scaled.
    fn keep_rows(&self, n: usize, mode: Mode) -> Vec<bool> {
        match self.next_mask(mode) {
            None => vec![true; n],
            Some((p, mut rng)) => (0..n).map(|_| rng.gen::<f32>() >= p).collect(),
        }
    }
}

/// A linear layer that folds the batch into the rows of one matrix product.
///
/// candle-nn's `Linear` broadcasts the weight over the batch of a 3-D input and runs a batched
/// matmul, whose backward materialises one weight gradient per batch row (`[B, out, in]`) and
/// sums them. Reshaping `[B, L, in]` to `[B*L, in]` gives one GEMM each way instead; on this CPU
/// the two measured the same CPU time per SFT step (BENCHMARKS.md, "SFT throughput"), but the
/// folded form needs no `[B, out, in]` temporary, which matters for larger batches and on GPU.
#[derive(Debug, Clone)]
struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    fn weight(&self) -> &Tensor {
        &self.weight
    }

    fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The layer as one fused op when `ops.fused` (see `kernels::linear`), else as tensor ops.
    fn apply(&self, x: &Tensor, ops: Ops) -> CResult<Tensor> {
        if ops.fused {
            kernels::linear::linear(x, &self.weight, self.bias.as_ref())
        } else {
            self.forward(x)
        }
    }
}

/// Up to this many rows a CPU [`Linear`] computes `(W·xᵀ)ᵀ` instead of `x·Wᵀ` (see there).
const FEW_ROWS: usize = 64;

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        let dims = x.dims();
        let in_dim = dims.last().copied().unwrap_or(0);
        let rows = x.elem_count() / in_dim.max(1);
        let x2 = x.reshape((rows, in_dim))?;
        let y = if rows <= FEW_ROWS && self.weight.device().is_cpu() {
            // gemm computes a row-major `x·Wᵀ` as its transpose `W·xᵀ` and first copies
            // ("packs") all of `W` into its kernel layout; for a few rows, as in a beam-search
            // decode step, that copy costs as much as the product. Asked for `W·xᵀ` itself, it
            // reads `W` in place and packs only the rows of `x`; the transpose of the small
            // `[out, rows]` result is the cheaper copy.
            self.weight.matmul(&x2.t()?)?.t()?.contiguous()?
        } else {
            x2.matmul(&self.weight.t()?)?
        };
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out = dims.to_vec();
        if let Some(last) = out.last_mut() {
            *last = self.weight.dim(0)?;
        }
        y.reshape(out)
    }
}

/// One matrix product for several linear layers that read the same input: their weights (and
/// biases, all or none) stacked along the output dim, output `[..., Σ out]` in the order given.
///
/// The stacked weight is built per call from the layers' own weights, so the parameters, their
/// names, checkpoints and the optimizer's view stay per projection, and `cat`'s backward hands
/// each layer its slice of the gradient. The copy costs one pass over the weights, small next to
/// the product over every token of a batch; in return the backward pass runs one product for the
/// input's gradient instead of one per layer plus the sums of their results.
fn packed_forward(x: &Tensor, layers: &[&Linear], ops: Ops) -> CResult<Tensor> {
    let weights: Vec<&Tensor> = layers.iter().map(|l| &l.weight).collect();
    let biases: Option<Vec<&Tensor>> = layers.iter().map(|l| l.bias.as_ref()).collect();
    let packed = Linear::new(
        Tensor::cat(&weights, 0)?,
        biases.map(|b| Tensor::cat(&b, 0)).transpose()?,
    );
    packed.apply(x, ops)
}

fn linear(in_dim: usize, out_dim: usize, bias: bool, std: f64, vb: VarBuilder) -> CResult<Linear> {
    let init = Init::Randn {
        mean: 0.0,
        stdev: std,
    };
    let weight = vb.get_with_hints((out_dim, in_dim), "weight", init)?;
    let bias = if bias {
        Some(vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?)
    } else {
        None
    };
    Ok(Linear::new(weight, bias))
}

/// Softmax over the last dim of `scores + mask`, computed in f32 as HF does.
fn masked_softmax(scores: &Tensor, mask: &Tensor, mode: Mode) -> CResult<Tensor> {
    let dtype = scores.dtype();
    let s = scores.to_dtype(DType::F32)?.broadcast_add(mask)?;
    let p = match mode {
        Mode::Infer => candle_nn::ops::softmax_last_dim(&s)?,
        Mode::Train => candle_nn::ops::softmax(&s, D::Minus1)?,
    };
    p.to_dtype(dtype)
}

#[derive(Debug, Clone)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(dim: usize, eps: f64, vb: VarBuilder) -> CResult<Self> {
        let weight = vb.get_with_hints(dim, "weight", Init::Const(1.0))?;
        Ok(Self { weight, eps })
    }

    fn forward(&self, x: &Tensor, ops: Ops) -> CResult<Tensor> {
        if ops.fused {
            return kernels::norm::rms_norm(x, &self.weight, self.eps as f32);
        }
        match ops.mode {
            Mode::Infer => {
                candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps as f32)
            }
            Mode::Train => {
                // HF order: normalise in f32, round to the model dtype, then scale.
                let dtype = x.dtype();
                let x = x.to_dtype(DType::F32)?;
                let var = x.sqr()?.mean_keepdim(D::Minus1)?;
                let normed = x.broadcast_div(&(var + self.eps)?.sqrt()?)?;
                normed.to_dtype(dtype)?.broadcast_mul(&self.weight)
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn new(cfg: &Qwen2Config, vb: VarBuilder) -> CResult<Self> {
        let (h, i, std) = (
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.initializer_range,
        );
        Ok(Self {
            gate_proj: linear(h, i, false, std, vb.pp("gate_proj"))?,
            up_proj: linear(h, i, false, std, vb.pp("up_proj"))?,
            down_proj: linear(i, h, false, std, vb.pp("down_proj"))?,
        })
    }

    fn forward(&self, x: &Tensor, ops: Ops) -> CResult<Tensor> {
        let y = if ops.fused {
            let gate_up = packed_forward(x, &[&self.gate_proj, &self.up_proj], ops)?;
            kernels::swiglu::swiglu(&gate_up)?
        } else {
            (self.gate_proj.forward(x)?.silu()? * self.up_proj.forward(x)?)?
        };
        self.down_proj.apply(&y, ops)
    }
}

#[derive(Debug, Clone)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    scale: f64,
}

impl Attention {
    fn new(cfg: &Qwen2Config, vb: VarBuilder) -> CResult<Self> {
        let (h, std) = (cfg.hidden_size, cfg.initializer_range);
        let (heads, kv_heads, head_dim) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
        Ok(Self {
            q_proj: linear(h, heads * head_dim, true, std, vb.pp("q_proj"))?,
            k_proj: linear(h, kv_heads * head_dim, true, std, vb.pp("k_proj"))?,
            v_proj: linear(h, kv_heads * head_dim, true, std, vb.pp("v_proj"))?,
            o_proj: linear(heads * head_dim, h, false, std, vb.pp("o_proj"))?,
            heads,
            kv_heads,
            head_dim,
            scale: 1.0 / (head_dim as f64).sqrt(),
        })
    }

    fn groups(&self) -> usize {
        self.heads / self.kv_heads
    }

    /// Rotated queries `[B, heads, L, d]` and keys, and values `[B, kv, L, d]`, of `x`
    /// `[B, L, hidden]`.
    fn project_qkv(&self, x: &Tensor, rope: &RopeTables) -> CResult<(Tensor, Tensor, Tensor)> {
        let (b, l, _) = x.dims3()?;
        let d = self.head_dim;
        let split = |t: Tensor, n: usize| t.reshape((b, l, n, d))?.transpose(1, 2)?.contiguous();
        let q = rope.apply(&split(self.q_proj.forward(x)?, self.heads)?)?;
        let k = rope.apply(&split(self.k_proj.forward(x)?, self.kv_heads)?)?;
        let v = split(self.v_proj.forward(x)?, self.kv_heads)?;
        Ok((q, k, v))
    }

    /// Queries `[B, heads, L, d]` against keys/values `[B, kv, T, d]` under the additive `mask`
    /// (`[B, 1, L, T]`), through `o_proj`: `[B, L, hidden]`.
    ///
    /// GQA without repeating K/V: the `g` query heads of one KV head are stacked along the
    /// sequence dim (`[B, kv, g*L, d]`), which is a free reshape of `[B, heads, L, d]`.
    fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &Tensor,
        ops: Ops,
    ) -> CResult<Tensor> {
        if ops.fused {
            let out = kernels::attention::attention(q, k, v, mask, self.scale)?;
            return self.o_proj.apply(&out, ops);
        }
        let mode = ops.mode;
        let (b, _, l, _) = q.dims4()?;
        let t = k.dim(2)?;
        let (h, kvh, d, g) = (self.heads, self.kv_heads, self.head_dim, self.groups());
        let scores = q.reshape((b, kvh, g * l, d))?.matmul(&k.t()?)?;
        let scores = (scores * self.scale)?.reshape((b, h, l, t))?;
        let w = masked_softmax(&scores, mask, mode)?;
        let out = w.reshape((b, kvh, g * l, t))?.matmul(v)?;
        let out = out
            .reshape((b, h, l, d))?
            .transpose(1, 2)?
            .reshape((b, l, h * d))?;
        self.o_proj.forward(&out)
    }

    /// Self-attention over unpadded rows (`x` `[n, hidden]`, row `r` is tokens
    /// `offsets[r]..offsets[r + 1]`) through the fused packed kernel: one projection for q/k/v,
    /// RoPE and attention in one op. The training pass, which needs no keys/values.
    fn forward_packed(
        &self,
        x: &Tensor,
        rope: &RopeTables,
        offsets: &[usize],
        hidden: &[(u32, u32)],
        ops: Ops,
    ) -> CResult<Tensor> {
        let RopeTables::Kernel { cos, sin } = rope else {
            candle_core::bail!("the packed attention needs the kernel's RoPE tables");
        };
        let half = self.head_dim / 2;
        let (cos, sin) = (cos.reshape(((), half))?, sin.reshape(((), half))?);
        let qkv = packed_forward(x, &[&self.q_proj, &self.k_proj, &self.v_proj], ops)?;
        let heads = kernels::attention::PackedHeads {
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
        };
        let out = kernels::attention::packed_attention(
            &qkv,
            &cos,
            &sin,
            offsets.to_vec(),
            hidden.to_vec(),
            heads,
            self.scale,
        )?;
        self.o_proj.apply(&out, ops)
    }

    /// Self-attention over whole rows; returns the output and the rotated keys/values.
    fn forward_full(
        &self,
        x: &Tensor,
        rope: &RopeTables,
        mask: &Tensor,
        ops: Ops,
    ) -> CResult<(Tensor, LayerKv)> {
        let (q, k, v) = self.project_qkv(x, rope)?;
        let out = self.attend(&q, &k, &v, mask, ops)?;
        Ok((out, LayerKv { k, v }))
    }

    /// Completion tokens (`[n, s, hidden]`, row `r` continues prompt `prompt_of[r]`) against
    /// [their prompt's K/V ; their own causal K/V], differentiable in `Train` mode.
    ///
    /// The prompt K/V are gathered per row with `index_select`, whose backward sums the rows'
    /// gradients back onto the one prompt pass they came from.
    fn forward_suffix(
        &self,
        x: &Tensor,
        rope: &RopeTables,
        prompt: &LayerKv,
        prompt_of: &Tensor,
        mask: &Tensor,
        ops: Ops,
    ) -> CResult<Tensor> {
        let (q, k, v) = self.project_qkv(x, rope)?;
        let k = Tensor::cat(&[&prompt.k.index_select(prompt_of, 0)?, &k], 2)?;
        let v = Tensor::cat(&[&prompt.v.index_select(prompt_of, 0)?, &v], 2)?;
        self.attend(&q, &k, &v, mask, ops)
    }

    /// One decode token per beam row against [its prompt's shared K/V ; its own beam K/V].
    ///
    /// The prompt part regroups the queries of a prompt's `nb` beams as
    /// `[B, kv, g*nb, d]` and multiplies them by the prompt's `K^T` once, so prompt K/V are
    /// never copied per beam.
    #[allow(clippy::too_many_arguments)]
    fn forward_decode(
        &self,
        x: &Tensor,
        rope: &RopeTables,
        prompt: &LayerKv,
        mask: &Tensor,
        beams: &mut BeamCache,
        layer: usize,
        nb: usize,
    ) -> Result<Tensor> {
        let n = x.dim(0)?;
        let b = n / nb;
        let (h, kvh, d, g) = (self.heads, self.kv_heads, self.head_dim, self.groups());
        let p = prompt.k.dim(2)?;
        // With one token per row, [n, 1, heads*d] is already laid out as [n, heads, 1, d].
        let q = rope.apply(&self.q_proj.forward(x)?.reshape((n, h, 1, d))?)?;
        let k = rope.apply(&self.k_proj.forward(x)?.reshape((n, kvh, 1, d))?)?;
        let v = self.v_proj.forward(x)?.reshape((n, kvh, 1, d))?;
        let beam = beams.append(layer, k, v)?;
        let t = beam.k.dim(2)?;

        let qp = q
            .reshape((b, nb, kvh, g, d))?
            .permute((0, 2, 3, 1, 4))?
            .contiguous()?
            .reshape((b, kvh, g * nb, d))?;
        let sp = qp
            .matmul(&prompt.k.t()?)?
            .reshape((b, kvh, g, nb, p))?
            .permute((0, 3, 1, 2, 4))?
            .contiguous()?
            .reshape((n, h, 1, p))?;
        let sb = q
            .reshape((n, kvh, g, d))?
            .matmul(&beam.k.t()?)?
            .reshape((n, h, 1, t))?;
        let scores = (Tensor::cat(&[&sp, &sb], 3)? * self.scale)?;
        let w = masked_softmax(&scores, mask, Mode::Infer)?;

        let wp = w
            .narrow(3, 0, p)?
            .contiguous()?
            .reshape((b, nb, kvh, g, p))?
            .permute((0, 2, 3, 1, 4))?
            .contiguous()?
            .reshape((b, kvh, g * nb, p))?;
        let op = wp
            .matmul(&prompt.v)?
            .reshape((b, kvh, g, nb, d))?
            .permute((0, 3, 1, 2, 4))?
            .contiguous()?
            .reshape((n, h * d))?;
        let wb = w.narrow(3, p, t)?.contiguous()?.reshape((n, kvh, g, t))?;
        let ob = wb.matmul(&beam.v)?.reshape((n, h * d))?;
        let out = (op + ob)?.reshape((n, 1, h * d))?;
        Ok(self.o_proj.forward(&out)?)
    }
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    self_attn: Attention,
    mlp: Mlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
    dropout: Arc<Dropout>,
}

impl DecoderLayer {
    fn new(cfg: &Qwen2Config, vb: VarBuilder, dropout: &Arc<Dropout>) -> CResult<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        Ok(Self {
            self_attn: Attention::new(cfg, vb.pp("self_attn"))?,
            mlp: Mlp::new(cfg, vb.pp("mlp"))?,
            input_layernorm: RmsNorm::new(h, eps, vb.pp("input_layernorm"))?,
            post_attention_layernorm: RmsNorm::new(h, eps, vb.pp("post_attention_layernorm"))?,
            dropout: dropout.clone(),
        })
    }

    fn mlp_block(&self, x: &Tensor, ops: Ops) -> CResult<Tensor> {
        let y = self.post_attention_layernorm.forward(x, ops)?;
        x + self.dropout.apply(&self.mlp.forward(&y, ops)?, ops.mode)?
    }

    fn forward_full(
        &self,
        x: &Tensor,
        rope: &RopeTables,
        mask: &Tensor,
        ops: Ops,
    ) -> CResult<(Tensor, LayerKv)> {
        let y = self.input_layernorm.forward(x, ops)?;
        let (y, kv) = self.self_attn.forward_full(&y, rope, mask, ops)?;
        let x = (x + self.dropout.apply(&y, ops.mode)?)?;
        Ok((self.mlp_block(&x, ops)?, kv))
    }

    /// One layer over unpadded rows (see [`Attention::forward_packed`]).
    fn forward_unpadded(
        &self,
        x: &Tensor,
        rope: &RopeTables,
        offsets: &[usize],
        hidden: &[(u32, u32)],
        ops: Ops,
    ) -> CResult<Tensor> {
        let y = self.input_layernorm.forward(x, ops)?;
        let y = self
            .self_attn
            .forward_packed(&y, rope, offsets, hidden, ops)?;
        let x = (x + self.dropout.apply(&y, ops.mode)?)?;
        self.mlp_block(&x, ops)
    }

    fn forward_suffix(
        &self,
        x: &Tensor,
        rope: &RopeTables,
        prompt: &LayerKv,
        prompt_of: &Tensor,
        mask: &Tensor,
        ops: Ops,
    ) -> CResult<Tensor> {
        let y = self.input_layernorm.forward(x, ops)?;
        let y = self
            .self_attn
            .forward_suffix(&y, rope, prompt, prompt_of, mask, ops)?;
        let x = (x + self.dropout.apply(&y, ops.mode)?)?;
        self.mlp_block(&x, ops)
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_decode(
        &self,
        x: &Tensor,
        rope: &RopeTables,
        prompt: &LayerKv,
        mask: &Tensor,
        beams: &mut BeamCache,
        layer: usize,
        nb: usize,
        ops: Ops,
    ) -> Result<Tensor> {
        let y = self.input_layernorm.forward(x, ops)?;
        let y = self
            .self_attn
            .forward_decode(&y, rope, prompt, mask, beams, layer, nb)?;
        let x = (x + y)?;
        Ok(self.mlp_block(&x, ops)?)
    }
}

/// A Qwen2 causal LM with HF weight names, usable for training and for cached decoding.
#[derive(Debug, Clone)]
pub struct Qwen2 {
    cfg: Qwen2Config,
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Tensor,
    /// `[items + 1, hidden]` when the config asks for item embeddings.
    embed_items: Option<Tensor>,
    /// A learned logit for writing the previous item's SID again (see [`CopyGate`]).
    copy_gate: Option<CopyGate>,
    /// Where item SIDs end in token ids; attached after loading, shared by clones.
    item_lookup: Arc<OnceLock<ItemLookup>>,
    /// Attention of training passes restricted to the latest items; shared by clones.
    item_window: Arc<OnceLock<ItemWindow>>,
    rotary: Rotary,
    dtype: DType,
    device: Device,
    dropout: Arc<Dropout>,
    /// Training-time removal of whole item vectors (see [`Self::set_item_dropout`]).
    item_dropout: Arc<Dropout>,
    /// Whether f32 CPU passes use the fused kernels (the default); shared by clones.
    fused: Arc<AtomicBool>,
}

impl Qwen2 {
    /// Dropout probability `p` on the embeddings and on both residual branches of every layer,
    /// in [`Mode::Train`] only (0 turns it off; the default).
    pub fn set_dropout(&self, p: f32) -> Result<()> {
        self.dropout.set_p(p, "dropout")
    }

    /// Probability `p` that an item's vector (item embeddings) is left out of a history item's
    /// input in [`Mode::Train`], its SID tokens still there (0 turns it off; the default).
    ///
    /// Why: with the vector always present a small model memorises the pairs of items it has
    /// seen follow each other and stops learning what the SID codes say, which is all it has
    /// for an item it has rarely seen. Left out at random, the vector has to add to the SID's
    /// prediction rather than replace it. Kept vectors are not rescaled: inference always adds
    /// the vector, so a kept vector has the size it will have there.
    pub fn set_item_dropout(&self, p: f32) -> Result<()> {
        if p > 0.0 && self.embed_items.is_none() {
            return Err(Error::Invalid(
                "item dropout needs a model with item embeddings".into(),
            ));
        }
        self.item_dropout.set_p(p, "item dropout")
    }

    /// Seed the dropout masks of the next forward pass (call once per pass for reproducible,
    /// resumable training).
    pub fn seed_dropout(&self, seed: u64) {
        self.dropout.seed.store(seed, Ordering::Relaxed);
        self.dropout.drawn.store(0, Ordering::Relaxed);
        // Another stream family than the activation masks', so the two are independent.
        self.item_dropout
            .seed
            .store(seed ^ 0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        self.item_dropout.drawn.store(0, Ordering::Relaxed);
    }

    /// Use the fused CPU kernels for f32 passes on the CPU (`true`, the default) or the
    /// composite tensor-op forms everywhere (`false`: the reference the kernels are tested
    /// against, and the "before" of benchmarks).
    pub fn set_fused_kernels(&self, on: bool) {
        self.fused.store(on, Ordering::Relaxed);
    }

    /// The ops of one forward pass in `mode`.
    ///
    /// Inference keeps candle-nn's inference kernels and the matrix-product attention:
    /// measured side by side, beam-search decoding with a fused per-row attention kernel was
    /// slower (BENCHMARKS.md, "Fused CPU kernels"): a decode step's attention is a batch of small
    /// matrix products, which gemm runs better than per-row dot products.
    fn ops(&self, mode: Mode) -> Ops {
        let fused = mode == Mode::Train
            && self.fused.load(Ordering::Relaxed)
            && self.dtype == DType::F32
            && self.device.is_cpu();
        Ops { mode, fused }
    }

    /// Build the model from `vb` (a `VarMap`-backed builder creates fresh HF-style weights).
    pub fn new(cfg: &Qwen2Config, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let std = cfg.initializer_range;
        let randn = Init::Randn {
            mean: 0.0,
            stdev: std,
        };
        let vb_m = vb.pp("model");
        let embed_tokens = vb_m.pp("embed_tokens").get_with_hints(
            (cfg.vocab_size, cfg.hidden_size),
            "weight",
            randn,
        )?;
        let dropout = Arc::new(Dropout::default());
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(cfg, vb_m.pp("layers").pp(i), &dropout))
            .collect::<CResult<Vec<_>>>()?;
        let norm = RmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, vb_m.pp("norm"))?;
        // Zero-initialised: a fresh table leaves the model as it was until training moves it.
        let embed_items = match cfg.item_embeddings {
            None => None,
            Some(rows) => Some(vb_m.pp("embed_items").get_with_hints(
                (rows, cfg.hidden_size),
                "weight",
                Init::Const(0.0),
            )?),
        };
        // Zero-initialised, as the item table: a fresh gate changes nothing until it trains.
        let copy_gate = match cfg.copy_levels {
            None => None,
            Some(l) => {
                let vb_g = vb_m.pp("copy_gate");
                Some(CopyGate::new(
                    vb_g.get_with_hints((l, cfg.hidden_size), "weight", Init::Const(0.0))?,
                    vb_g.get_with_hints(l, "bias", Init::Const(0.0))?,
                )?)
            }
        };
        let lm_head = if cfg.tie_word_embeddings {
            embed_tokens.clone()
        } else {
            vb.pp("lm_head")
                .get_with_hints((cfg.vocab_size, cfg.hidden_size), "weight", randn)?
        };
        Ok(Self {
            cfg: cfg.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            embed_items,
            copy_gate,
            item_lookup: Arc::new(OnceLock::new()),
            item_window: Arc::new(OnceLock::new()),
            rotary: Rotary::new(cfg.head_dim(), cfg.rope_theta),
            dtype: vb.dtype(),
            device: vb.device().clone(),
            dropout,
            item_dropout: Arc::new(Dropout::default()),
            fused: Arc::new(AtomicBool::new(kernels_from_env())),
        })
    }

    /// Restrict the attention of every whole-row pass (training, and the loss of validation
    /// rows) to the latest items of each row (see [`ItemWindow`]). Prompt decoding
    /// ([`Self::prefill`], [`Self::decode_step`]) is unaffected: its prompts are cut to those
    /// items instead. An error when a window is already set.
    pub fn set_item_window(&self, window: ItemWindow) -> Result<()> {
        self.item_window
            .set(window)
            .map_err(|_| Error::Invalid("the model already has an item window".into()))
    }

    /// Redraw from `seed` every weight of a fresh `varmap`-backed model that [`Self::new`] drew
    /// at random (N(0, `initializer_range`): token embeddings, projections, an untied head), so
    /// that a fresh model depends on the seed only; candle's CPU generator cannot be seeded.
    /// Constant-initialised tensors (norms, biases, the item table, the copy gate) keep their
    /// values.
    pub fn seed_fresh_weights(varmap: &VarMap, cfg: &Qwen2Config, seed: u64) -> Result<()> {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| Error::Invalid("the model's variables are poisoned".into()))?;
        let mut names: Vec<&String> = data
            .keys()
            .filter(|n| {
                n.ends_with(".weight")
                    && !n.contains("norm")
                    && !n.contains("embed_items")
                    && !n.contains("copy_gate")
            })
            .collect();
        names.sort();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for name in names {
            let var = &data[name];
            let values: Vec<f32> = (0..var.elem_count())
                .map(|_| (crate::random::standard_normal(&mut rng) * cfg.initializer_range) as f32)
                .collect();
            let t = Tensor::from_vec(values, var.shape(), var.device())?.to_dtype(var.dtype())?;
            var.set(&t)?;
        }
        Ok(())
    }

    /// Whether the model adds item embeddings to its input (then it needs
    /// [`Self::attach_item_lookup`] before a forward pass over prompts).
    pub fn has_item_embeddings(&self) -> bool {
        self.embed_items.is_some()
    }

    /// This model reading prompts through their SID tokens alone, its item vectors left out
    /// (weights shared, nothing copied): the prediction item dropout trains beside the one with
    /// the vectors. An error for a model without item embeddings.
    ///
    /// Why: a model trained with `sft --item-dropout` has learned both predictions, and they
    /// err on different rows: the vector recalls the pairs seen in training, the codes
    /// generalise to pairs never seen. Scoring the first SID code together
    /// ([`crate::decode::Mixture::with_item_free_twins`]), the two rank better than either.
    pub fn without_item_vectors(&self) -> Result<Self> {
        if self.embed_items.is_none() {
            return Err(Error::Invalid(
                "the model has no item vectors to leave out (init --item-embeddings)".into(),
            ));
        }
        Ok(Self {
            embed_items: None,
            ..self.clone()
        })
    }

    /// Attach the lookup that finds item SIDs in token ids (built from the checkpoint's
    /// tokenizer and SID index). A no-op for models with neither item embeddings nor a copy
    /// gate; an error when its row count differs from the item table's, or when another lookup
    /// is already attached.
    pub fn attach_item_lookup(&self, lookup: ItemLookup) -> Result<()> {
        if self.embed_items.is_none() && self.copy_gate.is_none() {
            return Ok(());
        }
        let rows = match &self.embed_items {
            Some(table) => table.dim(0)?,
            None => lookup.rows(),
        };
        if lookup.rows() != rows {
            return Err(Error::Invalid(format!(
                "the item-embedding table has {rows} rows but the SID index has {} distinct SIDs \
                 (+1): the checkpoint's index and weights do not belong together",
                lookup.rows() - 1
            )));
        }
        self.item_lookup
            .set(lookup)
            .map_err(|_| Error::Invalid("an item lookup is already attached".into()))
    }

    /// For each token of one row of ids, the item-embedding row of the item whose SID ends
    /// there (0: none); `None` for a model without item embeddings.
    pub fn item_rows_of(&self, ids: &[u32]) -> Result<Option<Vec<u32>>> {
        if self.embed_items.is_none() {
            return Ok(None);
        }
        let lookup = self.item_lookup.get().ok_or_else(|| {
            Error::Invalid("the model has item embeddings but no item lookup is attached".into())
        })?;
        Ok(Some(lookup.rows_of(ids)))
    }

    /// f32 scores `[P, rows]` of every item-embedding row for final hidden states `[P, hidden]`:
    /// the item table used as an output head, tied to the input as the LM head is to the token
    /// embeddings. Training reads it to predict the next item by id (`sft --next-item-loss`).
    pub fn item_scores(&self, hidden: &Tensor) -> Result<Tensor> {
        let table = self.embed_items.as_ref().ok_or_else(|| {
            Error::Invalid("the model has no item embeddings (init --item-embeddings)".into())
        })?;
        project(hidden, table)
    }

    /// The lookup attached by [`Self::attach_item_lookup`], if any.
    pub fn item_lookup(&self) -> Option<&ItemLookup> {
        self.item_lookup.get()
    }

    /// Whether the model has a copy gate (`init --copy-gate`; it then needs
    /// [`Self::attach_item_lookup`] to find the SIDs it copies).
    pub fn has_copy_gate(&self) -> bool {
        self.copy_gate.is_some()
    }

    /// `logits` `[N, vocab]` for final hidden states `[N, hidden]` with the copy gate's logit
    /// added where `copies` names a target ([`CopyGate::add_to_logits`]); unchanged for a model
    /// without a gate.
    pub fn with_copy_logits(
        &self,
        logits: &Tensor,
        hidden: &Tensor,
        copies: &[Option<CopyTarget>],
    ) -> Result<Tensor> {
        self.with_copy_logits_for(logits, hidden, copies, |t| Some(t as usize))
    }

    /// [`Self::with_copy_logits`] for logits over a subset of the vocabulary (`column` maps a
    /// token id to its column).
    pub fn with_copy_logits_for(
        &self,
        logits: &Tensor,
        hidden: &Tensor,
        copies: &[Option<CopyTarget>],
        column: impl Fn(u32) -> Option<usize>,
    ) -> Result<Tensor> {
        match &self.copy_gate {
            Some(g) => g.add_to_logits(logits, hidden, copies, column),
            None => Ok(logits.clone()),
        }
    }

    /// The copy targets of the supervised tokens of a padded batch (`ids`: `[B, L]`;
    /// `positions`: flat `b * L + t` whose hidden state predicts the token at `t + 1`); all
    /// `None` for a model without a gate.
    pub fn copy_targets(
        &self,
        ids: &Tensor,
        positions: &Tensor,
    ) -> Result<Vec<Option<CopyTarget>>> {
        let n = positions.dims1()?;
        let (Some(_), Some(lookup)) = (&self.copy_gate, self.item_lookup.get()) else {
            if self.copy_gate.is_some() {
                return Err(Error::Invalid(
                    "the model has a copy gate but no item lookup is attached".into(),
                ));
            }
            return Ok(vec![None; n]);
        };
        let rows = ids.to_vec2::<u32>()?;
        let l = rows.first().map_or(0, Vec::len);
        Ok(positions
            .to_vec1::<u32>()?
            .into_iter()
            .map(|p| {
                let (b, t) = (p as usize / l.max(1), p as usize % l.max(1));
                rows.get(b).and_then(|r| lookup.copy_target_at(r, t + 1))
            })
            .collect())
    }

    /// The model's configuration.
    pub fn config(&self) -> &Qwen2Config {
        &self.cfg
    }

    /// Dtype of the weights and activations (logits are always f32).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Number of decoder layers (what [`BeamCache::new`] needs).
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The token embedding matrix `[vocab, hidden]`.
    pub fn embed_weight(&self) -> &Tensor {
        &self.embed_tokens
    }

    /// The output projection `[vocab, hidden]` (the embedding matrix when tied).
    pub fn lm_head_weight(&self) -> &Tensor {
        &self.lm_head
    }

    /// Every weight under its HF name (`lm_head.weight` only when untied).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            self.embed_tokens.clone(),
        )];
        let push_linear = |out: &mut Vec<(String, Tensor)>, name: String, l: &Linear| {
            out.push((format!("{name}.weight"), l.weight().clone()));
            if let Some(b) = l.bias() {
                out.push((format!("{name}.bias"), b.clone()));
            }
        };
        for (i, layer) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            let a = &layer.self_attn;
            for (n, l) in [
                ("q_proj", &a.q_proj),
                ("k_proj", &a.k_proj),
                ("v_proj", &a.v_proj),
                ("o_proj", &a.o_proj),
            ] {
                push_linear(&mut out, format!("{p}.self_attn.{n}"), l);
            }
            let m = &layer.mlp;
            for (n, l) in [
                ("gate_proj", &m.gate_proj),
                ("up_proj", &m.up_proj),
                ("down_proj", &m.down_proj),
            ] {
                push_linear(&mut out, format!("{p}.mlp.{n}"), l);
            }
            out.push((
                format!("{p}.input_layernorm.weight"),
                layer.input_layernorm.weight.clone(),
            ));
            out.push((
                format!("{p}.post_attention_layernorm.weight"),
                layer.post_attention_layernorm.weight.clone(),
            ));
        }
        out.push(("model.norm.weight".to_string(), self.norm.weight.clone()));
        if let Some(t) = &self.embed_items {
            out.push((ITEM_EMBEDDINGS_VAR.to_string(), t.clone()));
        }
        if let Some(g) = &self.copy_gate {
            out.push((COPY_GATE_WEIGHT_VAR.to_string(), g.weight().clone()));
            out.push((COPY_GATE_BIAS_VAR.to_string(), g.bias().clone()));
        }
        if !self.cfg.tie_word_embeddings {
            out.push(("lm_head.weight".to_string(), self.lm_head.clone()));
        }
        out
    }

    fn embed(&self, ids: &Tensor) -> CResult<Tensor> {
        let mut dims = ids.dims().to_vec();
        let flat = self.embed_tokens.index_select(&ids.flatten_all()?, 0)?;
        dims.push(self.cfg.hidden_size);
        flat.reshape(dims)
    }

    /// Input embeddings of whole rows `[B, L]`: token embeddings plus, with item embeddings,
    /// each item's vector at the last token of its SID (in training, less the ones item dropout
    /// leaves out).
    fn embed_input(&self, ids: &Tensor, mode: Mode) -> CResult<Tensor> {
        let x = self.embed(ids)?;
        let Some(table) = &self.embed_items else {
            return Ok(x);
        };
        let lookup = self.item_lookup.get().ok_or_else(|| {
            candle_core::Error::Msg(
                "the model has item embeddings but no item lookup is attached".into(),
            )
        })?;
        let (b, l) = ids.dims2()?;
        let rows: Vec<u32> = ids
            .to_vec2::<u32>()?
            .iter()
            .flat_map(|row| lookup.rows_of(row))
            .collect();
        let keep = self.item_dropout.keep_rows(rows.len(), mode);
        let present: Vec<f32> = rows
            .iter()
            .zip(keep)
            .map(|(&r, k)| f32::from(u8::from(r != 0 && k)))
            .collect();
        let rows = Tensor::from_vec(rows, b * l, &self.device)?;
        let present = Tensor::from_vec(present, (b * l, 1), &self.device)?.to_dtype(self.dtype)?;
        let items = table
            .index_select(&rows, 0)?
            .broadcast_mul(&present)?
            .reshape((b, l, self.cfg.hidden_size))?;
        x + items
    }

    /// Decoder stack over whole rows; returns the pre-norm hidden states and each layer's K/V.
    fn run_full(
        &self,
        ids: &Tensor,
        layout: &BatchLayout,
        ops: Ops,
    ) -> CResult<(Tensor, Vec<LayerKv>)> {
        let (b, l) = (layout.batch, layout.len);
        let rope = self.rotary.tables(
            &layout.positions,
            b,
            l,
            ops.mode,
            ops.fused,
            self.dtype,
            &self.device,
        )?;
        let mask = layout.self_attention_mask(&self.device)?;
        let mut x = self
            .dropout
            .apply(&self.embed_input(ids, ops.mode)?, ops.mode)?;
        let mut kvs = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let (y, kv) = layer.forward_full(&x, &rope, &mask, ops)?;
            x = y;
            kvs.push(kv);
        }
        Ok((x, kvs))
    }

    /// Decoder stack over the real tokens of a padded batch only, as one `[n, hidden]` matrix
    /// (the real tokens in row-major order): pre-norm hidden states. The fused training pass:
    /// no matrix product, kernel or gradient touches padding.
    fn run_unpadded(&self, ids: &Tensor, layout: &BatchLayout, ops: Ops) -> Result<Tensor> {
        let real: Vec<u32> = (0..layout.real.len() as u32)
            .filter(|&i| layout.real[i as usize])
            .collect();
        if real.is_empty() {
            return Err(Error::Invalid("the batch has no real tokens".into()));
        }
        let mut offsets = vec![0usize];
        for row in layout.real.chunks(layout.len.max(1)) {
            let n = offsets.last().copied().unwrap_or(0);
            offsets.push(n + row.iter().filter(|&&r| r).count());
        }
        let positions: Vec<u32> = real.iter().map(|&i| layout.positions[i as usize]).collect();
        let hidden: Vec<(u32, u32)> = match &layout.hidden {
            Some(h) => real.iter().map(|&i| h[i as usize]).collect(),
            None => Vec::new(),
        };
        let n = real.len();
        let rope =
            self.rotary
                .tables(&positions, 1, n, ops.mode, true, self.dtype, &self.device)?;
        let real = Tensor::from_vec(real, n, &self.device)?;
        let embedded = if self.embed_items.is_some() {
            // Item SIDs are found on the whole rows, before the padding is dropped.
            self.embed_input(ids, ops.mode)?
                .reshape((layout.batch * layout.len, self.cfg.hidden_size))?
                .index_select(&real, 0)?
        } else {
            let ids = ids.flatten_all()?.index_select(&real, 0)?;
            self.embed_tokens.index_select(&ids, 0)?
        };
        let mut x = self.dropout.apply(&embedded, ops.mode)?;
        for layer in &self.layers {
            x = layer.forward_unpadded(&x, &rope, &offsets, &hidden, ops)?;
        }
        Ok(x)
    }

    /// Final hidden states `[P, hidden]` at `positions` (u32 `[P]`, flat indices into the
    /// `[B, L]` batch, each a real token) of a padded batch: the rows of
    /// [`Self::forward_hidden`] that a loss reads. With the fused kernels the pass runs on the
    /// real tokens only, which is why it exists.
    pub fn forward_hidden_at(
        &self,
        ids: &Tensor,
        mask: Option<&Tensor>,
        positions: &Tensor,
        mode: Mode,
    ) -> Result<Tensor> {
        let layout = self.layout_of(ids, mask)?;
        let total = layout.real.len();
        // Rank of each real token among the real tokens, for the unpadded pass.
        let mut rank = vec![u32::MAX; total];
        let mut next = 0u32;
        for (r, &real) in rank.iter_mut().zip(&layout.real) {
            if real {
                *r = next;
                next += 1;
            }
        }
        let wanted = positions.to_vec1::<u32>()?;
        let picked = wanted
            .iter()
            .map(|&p| match rank.get(p as usize) {
                Some(&r) if r != u32::MAX => Ok(r),
                _ => Err(Error::Invalid(format!(
                    "position {p} is not a real token of the [{}, {}] batch",
                    layout.batch, layout.len
                ))),
            })
            .collect::<Result<Vec<u32>>>()?;
        let ops = self.ops(mode);
        if !ops.fused {
            let hidden = self.forward_hidden(ids, mask, mode)?;
            let h = self.cfg.hidden_size;
            return Ok(hidden.reshape((total, h))?.index_select(positions, 0)?);
        }
        let x = self.run_unpadded(ids, &layout, ops)?;
        let picked = Tensor::from_vec(picked, wanted.len(), &self.device)?;
        // The final norm is per row: normalising only the picked rows gives the same values.
        Ok(self.norm.forward(&x.index_select(&picked, 0)?, ops)?)
    }

    /// The layout of `ids` `[B, L]` (whole rows) under the padding `mask`, with the item
    /// window if the model has one.
    fn layout_of(&self, ids: &Tensor, mask: Option<&Tensor>) -> Result<BatchLayout> {
        let layout = self.padding_layout(ids, mask)?;
        Ok(match self.item_window.get() {
            Some(window) => layout.with_item_window(&ids.flatten_all()?.to_vec1::<u32>()?, window),
            None => layout,
        })
    }

    /// The padding layout of `ids` `[B, L]` under `mask`.
    fn padding_layout(&self, ids: &Tensor, mask: Option<&Tensor>) -> Result<BatchLayout> {
        let (b, l) = ids.dims2()?;
        Ok(match mask {
            None => BatchLayout::dense(b, l),
            Some(m) => {
                if m.dims() != [b, l] {
                    return Err(Error::Invalid(format!(
                        "attention mask shape {:?} does not match input ids [{b}, {l}]",
                        m.dims()
                    )));
                }
                let flags = m
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?
                    .into_iter()
                    .map(|x| x != 0.0)
                    .collect();
                BatchLayout::from_flags(flags, b, l)
            }
        })
    }

    /// Final hidden states `[B, L, hidden]` of a padded batch (`mask`: `[B, L]`, non-zero = real
    /// token, any padding side; `None` = no padding).
    pub fn forward_hidden(
        &self,
        ids: &Tensor,
        mask: Option<&Tensor>,
        mode: Mode,
    ) -> Result<Tensor> {
        let layout = self.layout_of(ids, mask)?;
        let ops = self.ops(mode);
        let (x, _) = self.run_full(ids, &layout, ops)?;
        Ok(self.norm.forward(&x, ops)?)
    }

    /// Differentiable logits `[B, L, vocab]` (f32) for every position of a padded batch,
    /// without the copy gate's logit (it depends on the SIDs of each row: see
    /// [`Self::copy_targets`] and [`Self::with_copy_logits`]).
    pub fn forward_train(&self, ids: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let hidden = self.forward_hidden(ids, mask, Mode::Train)?;
        self.logits(&hidden)
    }

    /// Final hidden states `[n, S, hidden]` that score each completion token, for completions
    /// that share prompts: the prompts run once, not once per completion.
    ///
    /// `prompt_ids` `[B, P]` is left-padded (row `i` has `lengths[i]` real tokens at the end);
    /// `completions` `[n, S]` (u32) are right-padded and row `r` continues prompt
    /// `prompt_of[r]`. Position `j` of row `r` is the state after the prompt and completion
    /// tokens `0..j`, whose logits score completion token `j` (position 0 is the prompt's last
    /// state). Equal to [`Self::forward_hidden`] on each prompt + completion run alone, at
    /// those positions; differentiable in `Train` mode. What the padding of a short completion
    /// yields is unspecified.
    pub fn forward_grouped_hidden(
        &self,
        prompt_ids: &Tensor,
        lengths: &[usize],
        completions: &Tensor,
        prompt_of: &[usize],
        mode: Mode,
    ) -> Result<Tensor> {
        let (b, p) = prompt_ids.dims2()?;
        let (n, s) = completions.dims2()?;
        if lengths.len() != b || prompt_of.len() != n {
            return Err(Error::Invalid(format!(
                "{} prompt lengths and {} prompt indices for {b} prompts and {n} completions",
                lengths.len(),
                prompt_of.len()
            )));
        }
        if let Some(bad) = lengths.iter().find(|&&l| l == 0 || l > p) {
            return Err(Error::Invalid(format!(
                "prompt length {bad} outside 1..={p} (the padded length)"
            )));
        }
        if let Some(bad) = prompt_of.iter().find(|&&i| i >= b) {
            return Err(Error::Invalid(format!(
                "completion of prompt {bad}, but there are {b} prompts"
            )));
        }
        if s == 0 {
            return Err(Error::Invalid("empty completions".into()));
        }
        let layout = BatchLayout::left_padded(lengths, p);
        let ops = self.ops(mode);
        let (xp, kvs) = self.run_full(prompt_ids, &layout, ops)?;
        let idx: Vec<u32> = prompt_of.iter().map(|&i| i as u32).collect();
        let idx = Tensor::from_vec(idx, n, &self.device)?;
        let first = self
            .norm
            .forward(&xp.narrow(1, p - 1, 1)?, ops)?
            .index_select(&idx, 0)?;
        if s == 1 {
            return Ok(first);
        }
        // Completion tokens 0..S-1 continue their prompt at positions lengths[i], lengths[i]+1, ...
        let t = s - 1;
        let ids = completions.narrow(1, 0, t)?.contiguous()?;
        let mut positions = Vec::with_capacity(n * t);
        let mut mask = Vec::with_capacity(n * t * (p + t));
        for &i in prompt_of {
            positions.extend((0..t).map(|j| (lengths[i] + j) as u32));
            let real = &layout.real[i * p..(i + 1) * p];
            for j in 0..t {
                mask.extend(real.iter().map(|&r| if r { 0.0 } else { BLOCKED }));
                mask.extend((0..t).map(|c| if c <= j { 0.0 } else { BLOCKED }));
            }
        }
        let mask = Tensor::from_vec(mask, (n, 1, t, p + t), &self.device)?;
        let rope =
            self.rotary
                .tables(&positions, n, t, mode, ops.fused, self.dtype, &self.device)?;
        let mut x = self.dropout.apply(&self.embed(&ids)?, mode)?;
        for (layer, kv) in self.layers.iter().zip(&kvs) {
            x = layer.forward_suffix(&x, &rope, kv, &idx, &mask, ops)?;
        }
        let rest = self.norm.forward(&x, ops)?;
        Ok(Tensor::cat(&[&first, &rest], 1)?)
    }

    /// f32 logits `[..., vocab]` of final hidden states `[..., hidden]`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        project(hidden, &self.lm_head)
    }

    /// f32 logits `[..., K]` over only the vocabulary ids `token_ids` (`[K]`, u32).
    pub fn logits_for(&self, hidden: &Tensor, token_ids: &Tensor) -> Result<Tensor> {
        project(hidden, &self.lm_head.index_select(token_ids, 0)?)
    }

    /// Run left-padded prompts `[B, P]` (row `i` has `lengths[i]` real tokens at the end) once;
    /// returns the last position's final hidden states `[B, hidden]` and the prompt cache.
    pub fn prefill_hidden(&self, ids: &Tensor, lengths: &[usize]) -> Result<(Tensor, PromptCache)> {
        let (b, p) = ids.dims2()?;
        if lengths.len() != b {
            return Err(Error::Invalid(format!(
                "{} prompt lengths for a batch of {b}",
                lengths.len()
            )));
        }
        if let Some(bad) = lengths.iter().find(|&&n| n == 0 || n > p) {
            return Err(Error::Invalid(format!(
                "prompt length {bad} outside 1..={p} (the padded length)"
            )));
        }
        let layout = BatchLayout::left_padded(lengths, p);
        let ops = self.ops(Mode::Infer);
        let (x, layers) = self.run_full(ids, &layout, ops)?;
        let last = x.narrow(1, p - 1, 1)?.squeeze(1)?;
        let hidden = self.norm.forward(&last, ops)?;
        let cache = PromptCache {
            layers,
            key_mask: layout.key_mask(&self.device)?,
            lengths: lengths.to_vec(),
        };
        Ok((hidden, cache))
    }

    /// [`Self::prefill_hidden`] followed by full-vocabulary f32 logits `[B, vocab]` (without the
    /// copy gate's logit, which beam search adds per prompt).
    pub fn prefill(&self, ids: &Tensor, lengths: &[usize]) -> Result<(Tensor, PromptCache)> {
        let (hidden, cache) = self.prefill_hidden(ids, lengths)?;
        Ok((self.logits(&hidden)?, cache))
    }

    /// One decode step for `B * beams_per_prompt` beam rows (`tokens`: u32 `[rows]`, row `r`
    /// belongs to prompt `r / beams_per_prompt`); appends to `beams` and returns final hidden
    /// states `[rows, hidden]`.
    pub fn decode_step_hidden(
        &self,
        tokens: &Tensor,
        prompt: &PromptCache,
        beams: &mut BeamCache,
        beams_per_prompt: usize,
    ) -> Result<Tensor> {
        let n = tokens.dims1()?;
        let (b, nb) = (prompt.batch(), beams_per_prompt);
        if nb == 0 || n != b * nb {
            return Err(Error::Invalid(format!(
                "{n} decode tokens for {b} prompts x {nb} beams"
            )));
        }
        if let Some(rows) = beams.rows() {
            if rows != n {
                return Err(Error::Invalid(format!(
                    "beam cache has {rows} rows but the step has {n} tokens"
                )));
            }
        }
        if beams.layers.len() != self.layers.len() || prompt.layers.len() != self.layers.len() {
            return Err(Error::Invalid(format!(
                "caches have {} (beam) / {} (prompt) layers, the model {}",
                beams.layers.len(),
                prompt.layers.len(),
                self.layers.len()
            )));
        }
        let t = beams.len();
        let positions: Vec<u32> = (0..n)
            .map(|r| (prompt.lengths[r / nb] + t) as u32)
            .collect();
        let ops = self.ops(Mode::Infer);
        let rope = self.rotary.tables(
            &positions,
            n,
            1,
            Mode::Infer,
            ops.fused,
            self.dtype,
            &self.device,
        )?;
        let owner: Vec<u32> = (0..n).map(|r| (r / nb) as u32).collect();
        let owner = Tensor::from_vec(owner, n, &self.device)?;
        let prompt_mask = prompt.key_mask.index_select(&owner, 0)?;
        let own = Tensor::zeros((n, t + 1), DType::F32, &self.device)?;
        let p = prompt.padded_len();
        let mask = Tensor::cat(&[&prompt_mask, &own], 1)?.reshape((n, 1, 1, p + t + 1))?;

        let mut x = self.embed(&tokens.reshape((n, 1))?)?;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward_decode(&x, &rope, &prompt.layers[i], &mask, beams, i, nb, ops)?;
        }
        beams.advance();
        Ok(self
            .norm
            .forward(&x.reshape((n, self.cfg.hidden_size))?, ops)?)
    }

    /// [`Self::decode_step_hidden`] followed by full-vocabulary f32 logits `[rows, vocab]`
    /// (without the copy gate's logit, which beam search adds per row).
    pub fn decode_step(
        &self,
        tokens: &Tensor,
        prompt: &PromptCache,
        beams: &mut BeamCache,
        beams_per_prompt: usize,
    ) -> Result<Tensor> {
        let hidden = self.decode_step_hidden(tokens, prompt, beams, beams_per_prompt)?;
        self.logits(&hidden)
    }
}

/// Whether new models use the fused CPU kernels: yes unless `SIDREC_KERNELS=composite`
/// (an escape hatch and the A/B switch of the command-line tools).
fn kernels_from_env() -> bool {
    std::env::var("SIDREC_KERNELS").map_or(true, |v| v.trim() != "composite")
}

/// `x @ w^T` over the last dim, in the weights' dtype, returned as f32.
fn project(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let dims = x.dims();
    let (last, lead) = match dims.split_last() {
        Some((&last, lead)) => (last, lead.to_vec()),
        None => return Err(Error::Invalid("cannot project a scalar".to_string())),
    };
    let rows: usize = lead.iter().product();
    let y = x.reshape((rows, last))?.matmul(&w.t()?)?;
    let mut out = lead;
    out.push(w.dim(0)?);
    Ok(y.reshape(out)?.to_dtype(DType::F32)?)
}

/// A `[B, L]` u32 mask (1 = real) for left-padded rows of the given lengths.
pub fn left_padded_mask(lengths: &[usize], len: usize, device: &Device) -> Result<Tensor> {
    let data: Vec<u32> = lengths
        .iter()
        .flat_map(|&n| (0..len).map(move |j| u32::from(j + n >= len)))
        .collect();
    Ok(Tensor::from_vec(data, (lengths.len(), len), device)?)
}
