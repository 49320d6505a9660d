//! `rq-vae`: the reference's RQ-VAE (MINIONEREC §7.2), and the trained residual quantizer that
//! `rq-kmeans-plus` ([`super::rqkplus`]) shares with it.
//!
//! Model: an MLP encoder `[d, 2048, 1024, 512, 256, 128, 64, 32]` (Linear → ReLU, no activation
//! after the last Linear, xavier-normal weights, zero biases, no dropout or batch norm), a mirrored
//! decoder, and `L` residual codebooks of `K × 32`. Level `l` takes the nearest code `e_l` of the
//! residual `r_l` (`r_0 = z`); exactly as the reference codes its straight-through estimator, the
//! level output is `o_l = r_l + sg(e_l − r_l)`, the next residual `r_{l+1} = r_l − o_l` (so no
//! gradient reaches the encoder through levels ≥ 1) and `z_q = Σ o_l`. Loss:
//! `mse(x̂, x) + mean_l [mse(e_l, sg(r_l)) + β·mse(sg(e_l), r_l)]`, β = 0.25.
//!
//! Training as the reference: AdamW (β 0.9/0.999, ε 1e-8, weight decay 0), lr 1e-3 with a linear
//! warm-up then constant, global gradient-norm clipping at 1.0, shuffled mini-batches; the
//! codebooks start as k-means centroids of the first latents (level by level on the residuals);
//! every `eval_every` epochs the codes of all items are computed and the model with the lowest
//! collision rate so far (strict improvement, the reference's `best_collision_model`) gives the
//! SIDs. Differences, all for run time on a 2-core CPU: 150 epochs instead of 10 000 and batch
//! 512 instead of 20 480 (one reference epoch is a single step on the whole catalogue; ours is 8
//! steps, so 150 epochs are 1 200 steps), warm-up 5 epochs instead of 50, evaluation every 10
//! epochs instead of 50. The k-means initialisation runs on all items (the reference's first batch
//! is the whole catalogue, as its batch exceeds the item count) with this crate's k-means.
//!
//! Everything is seeded (weights, shuffling, k-means), so a seed gives the same SIDs on one
//! machine and thread count.

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Linear, Module, Optimizer, ParamsAdamW};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::kmeans::{kmeans, nearest, KMeansConfig};
use super::report::CollisionStats;
use crate::error::{Error, Result};
use crate::npy::Matrix;
use crate::random::standard_normal;

/// Rows per forward pass when encoding the whole catalogue (no gradients).
const EVAL_ROWS: usize = 1024;

/// Settings of a trained residual quantizer (`rq-vae`, `rq-kmeans-plus`).
#[derive(Debug, Clone, PartialEq)]
pub struct NeuralConfig {
    /// Passes over the items.
    pub epochs: usize,
    /// Items per optimizer step.
    pub batch_size: usize,
    /// Peak learning rate (constant after the warm-up).
    pub lr: f64,
    /// Epochs of linear learning-rate warm-up.
    pub warmup_epochs: usize,
    /// Evaluate the collision rate of all items every this many epochs (and after the last).
    pub eval_every: usize,
    /// Commitment weight β.
    pub beta: f64,
    /// Clip the global gradient norm to this value (0: no clipping).
    pub grad_clip: f64,
    /// Encoder hidden widths (the decoder mirrors them).
    pub hidden: Vec<usize>,
    /// Latent (codebook) dimension for `rq-vae`; `rq-kmeans-plus` uses the embedding dimension.
    pub latent_dim: usize,
    /// Compute device: `cpu`, `cuda` or `cuda:N`.
    pub device: String,
}

impl NeuralConfig {
    /// `rq-vae` defaults (the reference's model, a shorter schedule; see the module docs).
    pub fn rq_vae() -> Self {
        Self {
            epochs: 150,
            batch_size: 512,
            lr: 1e-3,
            warmup_epochs: 5,
            eval_every: 10,
            beta: 0.25,
            grad_clip: 1.0,
            hidden: vec![2048, 1024, 512, 256, 128, 64],
            latent_dim: 32,
            device: "cpu".into(),
        }
    }

    /// `rq-kmeans-plus` defaults (see [`super::rqkplus`]).
    pub fn rq_kmeans_plus() -> Self {
        Self {
            epochs: 100,
            batch_size: 256,
            lr: 1e-4,
            ..Self::rq_vae()
        }
    }
}

/// Training summary, kept in the SID report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    /// Epochs run.
    pub epochs: usize,
    /// Optimizer steps run.
    pub steps: usize,
    /// Mean training loss of each epoch (reconstruction + quantization).
    pub epoch_loss: Vec<f64>,
    /// Epoch (1-based) whose model gives the SIDs: the lowest collision rate at an evaluation.
    pub best_epoch: usize,
    /// Collision rate of the raw codes at `best_epoch`.
    pub best_collision_rate: f64,
    /// Device the model was trained on.
    pub device: String,
}

/// One Linear layer's parameters (weight `out × in`, bias `out`).
struct Layer {
    w: Var,
    b: Var,
    linear: Linear,
}

/// An MLP: Linear → ReLU between layers, nothing after the last.
struct Mlp {
    layers: Vec<Layer>,
}

/// Xavier-normal `out × in` weights: N(0, 2 / (in + out)).
fn xavier(rng: &mut ChaCha8Rng, out: usize, inp: usize) -> Vec<f32> {
    let sd = (2.0 / (inp + out) as f64).sqrt();
    (0..out * inp)
        .map(|_| (standard_normal(rng) * sd) as f32)
        .collect()
}

impl Mlp {
    /// Layers `dims[0] → dims[1] → …`; `zero_last` zero-initialises the last Linear.
    fn new(dims: &[usize], zero_last: bool, rng: &mut ChaCha8Rng, dev: &Device) -> Result<Self> {
        let mut layers = Vec::new();
        for (i, w) in dims.windows(2).enumerate() {
            let (inp, out) = (w[0], w[1]);
            let wv = if zero_last && i + 2 == dims.len() {
                vec![0.0; out * inp]
            } else {
                xavier(rng, out, inp)
            };
            let w = Var::from_tensor(&Tensor::from_vec(wv, (out, inp), dev)?)?;
            let b = Var::zeros(out, DType::F32, dev)?;
            let linear = Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone()));
            layers.push(Layer { w, b, linear });
        }
        Ok(Self { layers })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        let last = self.layers.len().saturating_sub(1);
        for (i, l) in self.layers.iter().enumerate() {
            h = l.linear.forward(&h)?;
            if i < last {
                h = h.relu()?;
            }
        }
        Ok(h)
    }

    fn vars(&self) -> impl Iterator<Item = &Var> {
        self.layers.iter().flat_map(|l| [&l.w, &l.b])
    }
}

/// Encoder, decoder and residual codebooks.
pub(crate) struct Model {
    enc: Mlp,
    dec: Mlp,
    /// `Z = X + encoder(X)` (rq-kmeans-plus) instead of `Z = encoder(X)`.
    residual: bool,
    codebooks: Vec<Var>,
    beta: f64,
    dev: Device,
}

/// Nearest codebook row of each residual row (`r`: `B × e`, `cb`: `K × e`).
fn argmin_codes(r: &Tensor, cb: &Tensor) -> Result<Tensor> {
    let r2 = r.sqr()?.sum_keepdim(1)?;
    let c2 = cb.sqr()?.sum_keepdim(1)?.t()?;
    let d = r2
        .broadcast_add(&c2)?
        .broadcast_sub(&(r.matmul(&cb.t()?)? * 2.0)?)?;
    Ok(d.argmin(D::Minus1)?)
}

impl Model {
    /// A fresh model; `codebooks` (each `K × e`, row-major) or zeros until [`Model::kmeans_init`].
    pub(crate) fn new(
        d: usize,
        cfg: &NeuralConfig,
        residual: bool,
        levels: usize,
        k: usize,
        seed: u64,
    ) -> Result<Self> {
        let dev = crate::device::parse_device(&cfg.device)?;
        let e = if residual { d } else { cfg.latent_dim };
        if e == 0 || cfg.hidden.contains(&0) {
            return Err(Error::Invalid(
                "rq-vae layer widths and latent dimension must be ≥ 1".into(),
            ));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut enc_dims = vec![d];
        enc_dims.extend(&cfg.hidden);
        enc_dims.push(e);
        let mut dec_dims = enc_dims.clone();
        dec_dims.reverse();
        let enc = Mlp::new(&enc_dims, residual, &mut rng, &dev)?;
        let dec = Mlp::new(&dec_dims, false, &mut rng, &dev)?;
        let codebooks = (0..levels)
            .map(|_| Var::zeros((k, e), DType::F32, &dev))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            enc,
            dec,
            residual,
            codebooks,
            beta: cfg.beta,
            dev,
        })
    }

    pub(crate) fn latent_dim(&self) -> usize {
        self.codebooks.first().map_or(0, |c| c.dims()[1])
    }

    fn vars(&self) -> Vec<Var> {
        let mut v: Vec<Var> = self.enc.vars().chain(self.dec.vars()).cloned().collect();
        v.extend(self.codebooks.iter().cloned());
        v
    }

    /// Overwrite level `l`'s codebook (`K × e`, row-major).
    pub(crate) fn set_codebook(&self, l: usize, data: &[f32]) -> Result<()> {
        let cb = &self.codebooks[l];
        cb.set(&Tensor::from_slice(data, cb.dims(), &self.dev)?)?;
        Ok(())
    }

    fn encode(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.enc.forward(x)?;
        Ok(if self.residual { (x + h)? } else { h })
    }

    /// Training forward: `(total loss, reconstruction loss)` for a batch `x` (`B × d`).
    fn loss(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let z = self.encode(x)?;
        let mut r = z;
        let mut zq: Option<Tensor> = None;
        let mut rq = Vec::with_capacity(self.codebooks.len());
        for cb in &self.codebooks {
            let cbt = cb.as_tensor();
            let idx = argmin_codes(&r.detach(), &cbt.detach())?;
            let e = cbt.index_select(&idx, 0)?;
            let codebook = (&e - r.detach())?.sqr()?.mean_all()?;
            let commit = (e.detach() - &r)?.sqr()?.mean_all()?;
            rq.push((codebook + (commit * self.beta)?)?);
            let o = (&r + (&e - &r)?.detach())?;
            r = (&r - &o)?;
            zq = Some(match zq {
                None => o,
                Some(s) => (s + o)?,
            });
        }
        let zq = zq.ok_or_else(|| Error::Invalid("no quantization levels".into()))?;
        let recon = (self.dec.forward(&zq)? - x)?.sqr()?.mean_all()?;
        let rq_loss = (Tensor::stack(&rq, 0)?.mean_all())?;
        Ok(((&recon + rq_loss)?, recon))
    }

    /// Latents of all rows of `x` (no gradients), `n × e` row-major.
    pub(crate) fn latents(&self, x: &Matrix) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(x.rows * self.latent_dim());
        for start in (0..x.rows).step_by(EVAL_ROWS) {
            let end = (start + EVAL_ROWS).min(x.rows);
            let xb = Tensor::from_slice(
                &x.data[start * x.cols..end * x.cols],
                (end - start, x.cols),
                &self.dev,
            )?;
            let z = self.encode(&xb)?.detach();
            out.extend(z.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// Codebooks as row-major vectors.
    pub(crate) fn codebook_vecs(&self) -> Result<Vec<Vec<f32>>> {
        self.codebooks
            .iter()
            .map(|c| Ok(c.as_tensor().flatten_all()?.to_vec1::<f32>()?))
            .collect()
    }

    /// Greedy residual codes of latents `z` (`n × e`): `codes[l][i]`.
    pub(crate) fn codes_of(&self, z: &[f32]) -> Result<Vec<Vec<u32>>> {
        let e = self.latent_dim();
        let k = self.codebooks.first().map_or(0, |c| c.dims()[0]);
        let mut r = z.to_vec();
        let mut codes = Vec::new();
        for cb in self.codebook_vecs()? {
            let (lc, _) = nearest(&r, e, &cb, k)?;
            subtract_codes(&mut r, e, &cb, &lc);
            codes.push(lc);
        }
        Ok(codes)
    }

    /// MSE (element mean) of `x` against the decoder's output for the given codes.
    pub(crate) fn reconstruction_mse(&self, x: &Matrix, codes: &[Vec<u32>]) -> Result<f64> {
        let mut sum = 0.0f64;
        for start in (0..x.rows).step_by(EVAL_ROWS) {
            let end = (start + EVAL_ROWS).min(x.rows);
            let mut zq: Option<Tensor> = None;
            for (cb, lc) in self.codebooks.iter().zip(codes) {
                let idx = Tensor::from_slice(&lc[start..end], end - start, &self.dev)?;
                let e = cb.as_tensor().detach().index_select(&idx, 0)?;
                zq = Some(match zq {
                    None => e,
                    Some(s) => (s + e)?,
                });
            }
            let zq = zq.ok_or_else(|| Error::Invalid("no quantization levels".into()))?;
            let xb = Tensor::from_slice(
                &x.data[start * x.cols..end * x.cols],
                (end - start, x.cols),
                &self.dev,
            )?;
            let err = (self.dec.forward(&zq)?.detach() - xb)?
                .sqr()?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            sum += err;
        }
        Ok(sum / (x.rows * x.cols).max(1) as f64)
    }
}

/// `r[i] −= cb[codes[i]]` for every `e`-long row.
pub(crate) fn subtract_codes(r: &mut [f32], e: usize, cb: &[f32], codes: &[u32]) {
    for (row, &c) in r.chunks_mut(e).zip(codes) {
        let cv = &cb[c as usize * e..(c as usize + 1) * e];
        row.iter_mut().zip(cv).for_each(|(a, b)| *a -= b);
    }
}

/// Set each level's codebook to the k-means centroids of that level's residual latents.
pub(crate) fn kmeans_init(
    model: &Model,
    x: &Matrix,
    k: usize,
    seed: u64,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<()> {
    let e = model.latent_dim();
    let mut r = model.latents(x)?;
    for l in 0..model.codebooks.len() {
        let cfg = KMeansConfig {
            k,
            max_iter: 100,
            tol: 1e-4,
            seed: seed.wrapping_add(l as u64),
            max_points_per_centroid: None,
        };
        let label = format!("level {} k-means init", (b'a' + l as u8) as char);
        let km = kmeans(&r, e, &cfg, &mut |a, b| progress(&label, a, b))?;
        model.set_codebook(l, &km.centroids)?;
        let (lc, _) = nearest(&r, e, &km.centroids, k)?;
        subtract_codes(&mut r, e, &km.centroids, &lc);
    }
    Ok(())
}

/// What [`train`] leaves: the model restored to its best evaluation, that evaluation's codes and
/// latents, and a summary.
pub(crate) struct Trained {
    pub model: Model,
    pub codes: Vec<Vec<u32>>,
    pub latents: Vec<f32>,
    pub summary: TrainingSummary,
}

/// Train `model` on the rows of `x` (see the module docs); `label` names the progress stage.
pub(crate) fn train(
    model: Model,
    x: &Matrix,
    cfg: &NeuralConfig,
    seed: u64,
    label: &str,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<Trained> {
    if cfg.batch_size == 0 || cfg.eval_every == 0 {
        return Err(Error::Invalid(
            "batch size and evaluation interval must be ≥ 1".into(),
        ));
    }
    let (n, d) = (x.rows, x.cols);
    let vars = model.vars();
    let mut opt = AdamW::new(
        vars.clone(),
        ParamsAdamW {
            lr: cfg.lr,
            weight_decay: 0.0,
            ..ParamsAdamW::default()
        },
    )?;
    let xt = Tensor::from_slice(&x.data, (n, d), &model.dev)?;
    let batches = n.div_ceil(cfg.batch_size);
    let warmup_steps = cfg.warmup_epochs * batches;
    // Shuffling has its own stream so that weights and order do not depend on each other.
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0053_4855_4646_4c45);
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut step = 0usize;
    let mut epoch_loss = Vec::with_capacity(cfg.epochs);
    let mut best: Option<(f64, usize, Vec<Tensor>)> = None;
    let snapshot = |best: &mut Option<(f64, usize, Vec<Tensor>)>, epoch: usize| -> Result<()> {
        let z = model.latents(x)?;
        let codes = model.codes_of(&z)?;
        let rate =
            CollisionStats::of((0..n).map(|i| codes.iter().map(|c| c[i]).collect::<Vec<_>>()))
                .collision_rate;
        if best.as_ref().is_none_or(|(b, _, _)| rate < *b) {
            let copy = vars
                .iter()
                .map(|v| v.as_tensor().copy())
                .collect::<candle_core::Result<Vec<_>>>()?;
            *best = Some((rate, epoch, copy));
        }
        Ok(())
    };
    if cfg.epochs == 0 {
        snapshot(&mut best, 0)?;
    }
    for epoch in 0..cfg.epochs {
        order.shuffle(&mut rng);
        let mut sum = 0.0f64;
        for chunk in order.chunks(cfg.batch_size) {
            step += 1;
            let lr = if step <= warmup_steps {
                cfg.lr * step as f64 / warmup_steps as f64
            } else {
                cfg.lr
            };
            opt.set_learning_rate(lr);
            let idx = Tensor::from_slice(chunk, chunk.len(), &model.dev)?;
            let xb = xt.index_select(&idx, 0)?;
            let (loss, _) = model.loss(&xb)?;
            let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !value.is_finite() {
                return Err(Error::Invalid(format!(
                    "{label}: the training loss became {value} at epoch {}; lower the learning rate",
                    epoch + 1
                )));
            }
            sum += value * chunk.len() as f64;
            let mut grads = loss.backward()?;
            if cfg.grad_clip > 0.0 {
                clip_grad_norm(&vars, &mut grads, cfg.grad_clip)?;
            }
            opt.step(&grads)?;
        }
        epoch_loss.push(sum / n as f64);
        if (epoch + 1) % cfg.eval_every == 0 || epoch + 1 == cfg.epochs {
            snapshot(&mut best, epoch + 1)?;
        }
        progress(label, epoch as u64 + 1, cfg.epochs as u64);
    }
    let (best_rate, best_epoch, saved) =
        best.ok_or_else(|| Error::Invalid("internal: no evaluation ran".into()))?;
    for (v, s) in vars.iter().zip(&saved) {
        v.set(s)?;
    }
    let latents = model.latents(x)?;
    let codes = model.codes_of(&latents)?;
    Ok(Trained {
        summary: TrainingSummary {
            epochs: cfg.epochs,
            steps: step,
            epoch_loss,
            best_epoch,
            best_collision_rate: best_rate,
            device: cfg.device.clone(),
        },
        model,
        codes,
        latents,
    })
}

/// Scale all gradients so that their global L2 norm is at most `max` (torch's
/// `clip_grad_norm_`: factor `max / (norm + 1e-6)` when below 1).
fn clip_grad_norm(
    vars: &[Var],
    grads: &mut candle_core::backprop::GradStore,
    max: f64,
) -> Result<()> {
    let mut sq = 0.0f64;
    for v in vars {
        if let Some(g) = grads.get(v) {
            sq += g
                .sqr()?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
        }
    }
    let factor = max / (sq.sqrt() + 1e-6);
    if factor < 1.0 {
        for v in vars {
            if let Some(g) = grads.get(v) {
                let scaled = (g * factor)?;
                grads.insert(v, scaled);
            }
        }
    }
    Ok(())
}

/// Result of [`rq_vae`].
pub(crate) struct NeuralCodes {
    /// `codes[l][i]`.
    pub codes: Vec<Vec<u32>>,
    /// Latents of all items (`n × latent_dim`), the space the codebooks live in.
    pub latents: Matrix,
    /// Latent codebooks (`K × latent_dim` each).
    pub codebooks: Vec<Vec<f32>>,
    /// The trained model (for the decoder's reconstruction error).
    pub model: Model,
    /// Training summary.
    pub summary: TrainingSummary,
}

impl NeuralCodes {
    pub(crate) fn from_trained(t: Trained, n: usize) -> Result<Self> {
        let e = t.model.latent_dim();
        Ok(Self {
            codebooks: t.model.codebook_vecs()?,
            latents: Matrix::new(n, e, t.latents),
            codes: t.codes,
            model: t.model,
            summary: t.summary,
        })
    }
}

/// Train an RQ-VAE on `x` and return the codes of its best evaluation.
pub(crate) fn rq_vae(
    x: &Matrix,
    levels: usize,
    k: usize,
    seed: u64,
    cfg: &NeuralConfig,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<NeuralCodes> {
    let model = Model::new(x.cols, cfg, false, levels, k, seed)?;
    kmeans_init(&model, x, k, seed, progress)?;
    let t = train(model, x, cfg, seed, "rq-vae epochs", progress)?;
    NeuralCodes::from_trained(t, x.rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn random(n: usize, d: usize, seed: u64) -> Matrix {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // A few clusters, so that there is structure to learn.
        let centres: Vec<f32> = (0..8 * d).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let data = (0..n)
            .flat_map(|i| {
                let c = i % 8;
                let mut v = centres[c * d..(c + 1) * d].to_vec();
                v.iter_mut()
                    .for_each(|a| *a += 0.3 * rng.gen_range(-1.0f32..1.0));
                v
            })
            .collect();
        Matrix::new(n, d, data)
    }

    fn small() -> NeuralConfig {
        NeuralConfig {
            epochs: 30,
            batch_size: 32,
            warmup_epochs: 2,
            eval_every: 5,
            hidden: vec![32, 16],
            latent_dim: 8,
            ..NeuralConfig::rq_vae()
        }
    }

    #[test]
    fn loss_decreases_and_every_trainable_tensor_gets_a_gradient() {
        let x = random(200, 12, 1);
        let cfg = small();
        let model = Model::new(12, &cfg, false, 3, 8, 3).unwrap();
        kmeans_init(&model, &x, 8, 3, &mut |_, _, _| {}).unwrap();
        // Gradient check: a fused op without backward would leave some tensor without one.
        let xt = Tensor::from_slice(&x.data, (200, 12), &Device::Cpu).unwrap();
        let (loss, _) = model.loss(&xt).unwrap();
        let grads = loss.backward().unwrap();
        for (i, v) in model.vars().iter().enumerate() {
            let g = grads
                .get(v)
                .unwrap_or_else(|| panic!("var {i} has no gradient"));
            let norm = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            // Decoder biases and all weights get gradients; codebooks get them by the codebook loss.
            assert!(norm > 0.0, "var {i} has a zero gradient");
        }
        let t = train(model, &x, &cfg, 3, "t", &mut |_, _, _| {}).unwrap();
        let l = &t.summary.epoch_loss;
        assert_eq!(l.len(), 30);
        let first: f64 = l[..3].iter().sum();
        let last: f64 = l[27..].iter().sum();
        assert!(last < 0.7 * first, "loss did not decrease: {l:?}");
        assert_eq!(t.summary.steps, 30 * 200usize.div_ceil(32));
        // The codes of the restored best model have the recorded collision rate.
        let rate =
            CollisionStats::of((0..200).map(|i| t.codes.iter().map(|c| c[i]).collect::<Vec<_>>()))
                .collision_rate;
        assert_eq!(rate, t.summary.best_collision_rate);
    }

    #[test]
    fn gradient_clipping_bounds_the_global_norm() {
        let dev = Device::Cpu;
        let a = Var::from_tensor(&Tensor::new(&[1.0f32, 2.0], &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::new(&[3.0f32], &dev).unwrap()).unwrap();
        let loss = ((a.as_tensor().sqr().unwrap().sum_all().unwrap() * 10.0).unwrap()
            + (b.as_tensor() * 5.0).unwrap().sum_all().unwrap())
        .unwrap();
        let mut g = loss.backward().unwrap();
        let vars = vec![a.clone(), b.clone()];
        clip_grad_norm(&vars, &mut g, 1.0).unwrap();
        let ga = g.get(&a).unwrap().to_vec1::<f32>().unwrap();
        let gb = g.get(&b).unwrap().to_vec1::<f32>().unwrap();
        let norm = (ga.iter().chain(&gb).map(|v| v * v).sum::<f32>()).sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
        // Directions are kept: (20, 40, 5) / ‖·‖.
        assert!((ga[1] / ga[0] - 2.0).abs() < 1e-4 && (ga[0] / gb[0] - 4.0).abs() < 1e-4);
    }
}
