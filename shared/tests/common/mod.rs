//! Helpers shared by the model tests: tiny configs and random models.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sidrec::model::{Qwen2, Qwen2Config};

/// A tiny config: hidden 64, 2 layers, 4 query heads over `kv_heads` KV heads, vocab 300.
pub fn tiny_cfg(kv_heads: usize, tied: bool) -> Qwen2Config {
    let mut cfg = Qwen2Config::new(300, 64, 128, 2, 4, kv_heads, tied);
    cfg.max_position_embeddings = 512;
    cfg
}

fn normal(rng: &mut ChaCha8Rng) -> f32 {
    // Box-Muller; the rand 0.8 normal distribution lives in rand_distr, which we don't pull in.
    let u1: f32 = rng.gen_range(1e-7f32..1.0);
    let u2: f32 = rng.gen_range(0.0f32..1.0);
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

/// A `VarMap`-backed f32 model whose every weight is random (biases and norms included), so
/// that each parameter matters to the output.
pub fn random_model(cfg: &Qwen2Config, seed: u64) -> (VarMap, Qwen2) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = Qwen2::new(cfg, vb).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data = varmap.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let n = var.elem_count();
        let values: Vec<f32> = (0..n)
            .map(|_| {
                let z = normal(&mut rng);
                if name.ends_with("norm.weight") {
                    1.0 + 0.1 * z
                } else if name.ends_with("bias") {
                    0.1 * z
                } else {
                    0.15 * z
                }
            })
            .collect();
        let t = Tensor::from_vec(values, var.shape(), &Device::Cpu).unwrap();
        var.set(&t).unwrap();
    }
    drop(data);
    (varmap, model)
}

/// Random token ids in `1..vocab` (0 is kept as the pad id).
pub fn random_ids(rng: &mut ChaCha8Rng, n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|_| rng.gen_range(1..vocab as u32)).collect()
}

/// Left-pad `rows` with 0 to their max length; returns ids `[B, L]` and the lengths.
pub fn left_pad(rows: &[Vec<u32>]) -> (Tensor, Vec<usize>) {
    let l = rows.iter().map(Vec::len).max().unwrap();
    let mut data = Vec::new();
    for r in rows {
        data.extend(std::iter::repeat_n(0, l - r.len()));
        data.extend_from_slice(r);
    }
    let lengths = rows.iter().map(Vec::len).collect();
    (
        Tensor::from_vec(data, (rows.len(), l), &Device::Cpu).unwrap(),
        lengths,
    )
}

/// One unpadded row as a `[1, L]` tensor.
pub fn row(ids: &[u32]) -> Tensor {
    Tensor::from_vec(ids.to_vec(), (1, ids.len()), &Device::Cpu).unwrap()
}

/// Full-vocabulary logits of the last position of `ids` run alone through the training path.
pub fn alone_last_logits(model: &Qwen2, ids: &[u32]) -> Tensor {
    let logits = model.forward_train(&row(ids), None).unwrap();
    logits.get(0).unwrap().get(ids.len() - 1).unwrap()
}
