//! `rq-kmeans-plus`: RQ-KMeans+ (MINIONEREC §7.5), a residual encoder on top of constrained
//! RQ-KMeans.
//!
//! The model is [`super::rqvae`]'s with the latent dimension equal to the embedding dimension
//! `d`: the encoder is `d → 2048 → 1024 → 512 → 256 → 128 → 64 → d` used as **Z = X + MLP(X)**
//! with its last Linear zero-initialised (so Z = X at the start), the decoder mirrors it
//! (xavier), and the `L` codebooks (`K × d`) are warm-started from an `rq-kmeans-constrained` run
//! on the embeddings with the same seed — so before training, the codes are the nearest-centroid
//! codes of that run. Training is the same loop as RQ-VAE (loss, AdamW, warm-up, clipping,
//! best-collision-rate selection) with the reference's lr 1e-4. As for RQ-VAE the schedule is
//! shortened for a 2-core CPU: 100 epochs of batch 256 (15 steps each on 3 686 items, 1 500 steps)
//! instead of 10 000 epochs of batch 2048 (2 steps each, 20 000 steps), 5 warm-up epochs instead
//! of 50, evaluation every 10 epochs instead of 50.

use super::rq::{kmeans_levels, Method, RqConfig};
use super::rqvae::{train, Model, NeuralCodes, NeuralConfig};
use crate::error::Result;
use crate::npy::Matrix;

/// Train RQ-KMeans+ on `x` and return the codes of its best evaluation.
pub(crate) fn rq_kmeans_plus(
    x: &Matrix,
    cfg: &RqConfig,
    ncfg: &NeuralConfig,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<NeuralCodes> {
    let warm = RqConfig {
        method: Method::RqKmeansConstrained,
        ..cfg.clone()
    };
    let (_, codebooks) = kmeans_levels(x, &warm, progress)?;
    let model = Model::new(x.cols, ncfg, true, cfg.levels, cfg.codebook_size, cfg.seed)?;
    for (l, cb) in codebooks.iter().enumerate() {
        model.set_codebook(l, cb)?;
    }
    let t = train(model, x, ncfg, cfg.seed, "rq-kmeans-plus epochs", progress)?;
    NeuralCodes::from_trained(t, x.rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn starts_as_the_identity_with_warm_codebooks() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let x = Matrix::new(120, 6, (0..720).map(|_| rng.gen_range(-1.0..1.0)).collect());
        let cfg = RqConfig {
            method: Method::RqKmeansPlus,
            levels: 2,
            codebook_size: 4,
            ..RqConfig::default()
        };
        let ncfg = NeuralConfig {
            epochs: 0,
            hidden: vec![16, 8],
            ..NeuralConfig::rq_kmeans_plus()
        };
        let out = rq_kmeans_plus(&x, &cfg, &ncfg, &mut |_, _, _| {}).unwrap();
        // Zero-initialised last layer: Z = X exactly.
        assert_eq!(out.latents.data, x.data);
        // Codebooks are the constrained run's, codes are nearest-centroid codes of X under them.
        let warm = RqConfig {
            method: Method::RqKmeansConstrained,
            ..cfg.clone()
        };
        let (_, cbs) = kmeans_levels(&x, &warm, &mut |_, _, _| {}).unwrap();
        assert_eq!(out.codebooks, cbs);
        let mut r = x.data.clone();
        for (l, cb) in cbs.iter().enumerate() {
            let (lc, _) = super::super::kmeans::nearest(&r, 6, cb, 4).unwrap();
            assert_eq!(lc, out.codes[l]);
            super::super::rqvae::subtract_codes(&mut r, 6, cb, &lc);
        }
    }
}
