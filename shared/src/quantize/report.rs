//! SID quality report: collisions, per-level codebook use, reconstruction error.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::kmeans::cluster_means;
use crate::error::{Error, Result};
use crate::npy::Matrix;
use crate::sid::SidIndex;

/// How many items share SIDs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollisionStats {
    /// `(items − distinct SIDs) / items`, as the reference computes it.
    pub collision_rate: f64,
    /// Distinct SIDs.
    pub unique_sids: usize,
    /// SIDs shared by two or more items.
    pub collided_groups: usize,
    /// Items whose SID is shared.
    pub collided_items: usize,
    /// Most items sharing one SID.
    pub max_items_per_sid: usize,
}

impl CollisionStats {
    /// Statistics of a list of per-item keys (code tuples).
    pub fn of<K: std::hash::Hash + Eq>(keys: impl IntoIterator<Item = K>) -> Self {
        let mut counts: HashMap<K, usize> = HashMap::new();
        let mut n = 0usize;
        for k in keys {
            *counts.entry(k).or_default() += 1;
            n += 1;
        }
        let collided: Vec<usize> = counts.values().copied().filter(|&c| c > 1).collect();
        Self {
            collision_rate: if n == 0 {
                0.0
            } else {
                (n - counts.len()) as f64 / n as f64
            },
            unique_sids: counts.len(),
            collided_groups: collided.len(),
            collided_items: collided.iter().sum(),
            max_items_per_sid: counts.values().copied().max().unwrap_or(0),
        }
    }
}

/// Statistics of one quantization level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelStats {
    /// 0-based level (`a` = 0).
    pub level: usize,
    /// Codebook size K.
    pub codebook_size: usize,
    /// Codes used by at least one item.
    pub used_codes: usize,
    /// `used_codes / K`.
    pub utilisation: f64,
    /// `exp(entropy)` of the code-usage distribution (K when perfectly uniform).
    pub perplexity: f64,
    /// Fewest items on a used code.
    pub min_items_per_code: usize,
    /// Most items on one code.
    pub max_items_per_code: usize,
    /// Mean squared error (element mean) of the residual left after this level.
    pub residual_mse: f64,
}

/// The SID quality report written as `sid-report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SidReport {
    /// How the SIDs were made (`rq-kmeans`, `rq-kmeans-constrained`) or `index` for an existing one.
    pub method: String,
    /// Collision policy applied (`extra-level`, `sinkhorn`, `none`; `index` for an existing one).
    pub collision_policy: String,
    /// Items.
    pub items: usize,
    /// Embedding dimension.
    pub dim: usize,
    /// Quantization levels (for an existing index: the shortest SID length; longer SIDs carry
    /// dedup tokens).
    pub quantization_levels: usize,
    /// Collisions of the quantization codes alone (before the policy).
    pub before: CollisionStats,
    /// Collisions of the final SIDs (after the policy).
    pub after: CollisionStats,
    /// Items whose SID has more tokens than the quantization levels (`<d_r>` dedup tokens).
    pub items_with_extra_tokens: usize,
    /// Longest SID in tokens.
    pub max_sid_len: usize,
    /// Per quantization level.
    pub levels: Vec<LevelStats>,
    /// MSE (element mean) of the embeddings vs the sum of their chosen centroids.
    pub reconstruction_mse: f64,
    /// Mean square of the embeddings themselves (the MSE of reconstructing with zeros).
    pub data_mean_square: f64,
    /// `codebooks` (the quantizer's centroids), `code-means` (per level, the mean residual of the
    /// items on each code, for an index without codebooks) or `decoder` (rq-vae, rq-kmeans-plus:
    /// the decoder's output from the quantized latent; their levels use code means).
    pub reconstruction_source: String,
    /// Seconds taken to build the SIDs (or to compute this report, for an existing index).
    pub wall_time_s: f64,
    /// Training summary of the trained quantizers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<super::rqvae::TrainingSummary>,
}

impl SidReport {
    /// A short human-readable summary.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} items, dim {}, method {}, collisions {}: collision rate {:.4} -> {:.4} \
             (groups {} -> {}, max items per SID {} -> {}), {} items with extra tokens\n",
            self.items,
            self.dim,
            self.method,
            self.collision_policy,
            self.before.collision_rate,
            self.after.collision_rate,
            self.before.collided_groups,
            self.after.collided_groups,
            self.before.max_items_per_sid,
            self.after.max_items_per_sid,
            self.items_with_extra_tokens,
        );
        for l in &self.levels {
            s += &format!(
                "  level {}: {}/{} codes used ({:.1}%), perplexity {:.1}, items per code {}..{}, residual MSE {:.6}\n",
                (b'a' + l.level as u8) as char,
                l.used_codes,
                l.codebook_size,
                100.0 * l.utilisation,
                l.perplexity,
                l.min_items_per_code,
                l.max_items_per_code,
                l.residual_mse
            );
        }
        s += &format!(
            "  reconstruction MSE {:.6} ({}; data mean square {:.6}), {:.2} s",
            self.reconstruction_mse,
            self.reconstruction_source,
            self.data_mean_square,
            self.wall_time_s
        );
        if let Some(t) = &self.training {
            s += &format!(
                "\n  trained {} epochs ({} steps) on {}: loss {:.6} -> {:.6}, SIDs from epoch {} \
                 (collision rate {:.4})",
                t.epochs,
                t.steps,
                t.device,
                t.epoch_loss.first().copied().unwrap_or(f64::NAN),
                t.epoch_loss.last().copied().unwrap_or(f64::NAN),
                t.best_epoch,
                t.best_collision_rate
            );
        }
        s
    }
}

/// Per-level code usage and residual MSE; shared by the builder and [`sid_report`].
///
/// `codes[l][i]` is item `i`'s code at quantization level `l`; `codebooks[l]` (`K_l × dim`) when
/// the centroids are known, otherwise each level is reconstructed by its code means.
pub(crate) fn level_stats(
    x: &Matrix,
    codes: &[Vec<u32>],
    sizes: &[usize],
    codebooks: Option<&[Vec<f32>]>,
) -> (Vec<LevelStats>, f64) {
    let d = x.cols;
    let n = x.rows;
    let mut residual = x.data.clone();
    let mut out = Vec::new();
    for (l, lc) in codes.iter().enumerate() {
        let k = sizes[l];
        let centroids: Vec<Option<Vec<f32>>> = match codebooks {
            Some(cb) => (0..k)
                .map(|j| Some(cb[l][j * d..(j + 1) * d].to_vec()))
                .collect(),
            None => cluster_means(&residual, d, lc, k),
        };
        for (i, &c) in lc.iter().enumerate() {
            if let Some(cv) = &centroids[c as usize] {
                for (r, v) in residual[i * d..(i + 1) * d].iter_mut().zip(cv) {
                    *r -= v;
                }
            }
        }
        let mut counts = vec![0usize; k];
        for &c in lc {
            counts[c as usize] += 1;
        }
        let used: Vec<usize> = counts.iter().copied().filter(|&c| c > 0).collect();
        let entropy: f64 = used
            .iter()
            .map(|&c| {
                let p = c as f64 / n as f64;
                -p * p.ln()
            })
            .sum();
        out.push(LevelStats {
            level: l,
            codebook_size: k,
            used_codes: used.len(),
            utilisation: used.len() as f64 / k as f64,
            perplexity: entropy.exp(),
            min_items_per_code: used.iter().copied().min().unwrap_or(0),
            max_items_per_code: used.iter().copied().max().unwrap_or(0),
            residual_mse: mean_square(&residual),
        });
    }
    let mse = out
        .last()
        .map_or_else(|| mean_square(&x.data), |l| l.residual_mse);
    (out, mse)
}

/// Mean of the squares (f64 accumulation).
pub(crate) fn mean_square(v: &[f32]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.iter().map(|&a| (a as f64) * (a as f64)).sum::<f64>() / v.len() as f64
}

/// The report for ANY existing index (e.g. MiniOneRec's shipped one) and the item embeddings
/// (row `i` = the `i`-th item of the index in id order).
///
/// The quantization levels are the first `min SID length` tokens; tokens beyond that are
/// treated as dedup tokens (they count in `after` but not in `before` or the level statistics).
/// Codebook sizes are `codebook_size` when given, else the largest code + 1 per level. With no
/// codebooks, each level is reconstructed by the mean residual of the items on each code (for a
/// converged k-means level this equals its centroid).
pub fn sid_report(
    index: &SidIndex,
    embeddings: &Matrix,
    codebook_size: Option<usize>,
) -> Result<SidReport> {
    let t0 = std::time::Instant::now();
    if index.len() != embeddings.rows {
        return Err(Error::Invalid(format!(
            "the index has {} items but the embeddings have {} rows (row i = i-th item in id order)",
            index.len(),
            embeddings.rows
        )));
    }
    if index.is_empty() {
        return Err(Error::Invalid("empty SID index".into()));
    }
    let q = index.iter().map(|(_, s)| s.len()).min().unwrap_or(0);
    let mut codes = vec![Vec::with_capacity(index.len()); q];
    for (_, sid) in index.iter() {
        for (l, c) in codes.iter_mut().enumerate() {
            c.push(sid.codes()[l]);
        }
    }
    let inferred = index.codebook_sizes();
    let sizes: Vec<usize> = (0..q)
        .map(|l| {
            let need = inferred[l] as usize;
            codebook_size.map_or(need, |k| k.max(need))
        })
        .collect();
    let (levels, mse) = level_stats(embeddings, &codes, &sizes, None);
    let before = CollisionStats::of(index.iter().map(|(_, s)| &s.codes()[..q]));
    let after = CollisionStats::of(index.iter().map(|(_, s)| s.codes()));
    Ok(SidReport {
        method: "index".into(),
        collision_policy: "index".into(),
        items: index.len(),
        dim: embeddings.cols,
        quantization_levels: q,
        before,
        after,
        items_with_extra_tokens: index.iter().filter(|(_, s)| s.len() > q).count(),
        max_sid_len: index.max_levels(),
        levels,
        reconstruction_mse: mse,
        data_mean_square: mean_square(&embeddings.data),
        reconstruction_source: "code-means".into(),
        wall_time_s: t0.elapsed().as_secs_f64(),
        training: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sid::Sid;

    /// Hand-computed: 1-D points 0, 2, 10, 12, 12 with codes a = 0 0 1 1 1, b = 0 1 0 1 1; items
    /// 3 and 4 collide and carry `<d_0>`, `<d_1>`.
    #[test]
    fn hand_computed_tiny_case() {
        let sids = [
            vec![0, 0],
            vec![0, 1],
            vec![1, 0],
            vec![1, 1, 0],
            vec![1, 1, 1],
        ];
        let index: SidIndex = sids
            .iter()
            .enumerate()
            .map(|(i, c)| (i as u32, Sid::from_codes(c.clone())))
            .collect();
        let x = Matrix::new(5, 1, vec![0.0, 2.0, 10.0, 12.0, 12.0]);
        let r = sid_report(&index, &x, None).unwrap();
        assert_eq!(r.quantization_levels, 2);
        assert_eq!(r.items_with_extra_tokens, 2);
        assert_eq!(r.max_sid_len, 3);
        // Before: 4 distinct pairs of 5 items; after: all distinct.
        assert!((r.before.collision_rate - 0.2).abs() < 1e-12);
        assert_eq!(
            (
                r.before.collided_groups,
                r.before.collided_items,
                r.before.max_items_per_sid
            ),
            (1, 2, 2)
        );
        assert_eq!(r.after.collision_rate, 0.0);
        assert_eq!(r.after.max_items_per_sid, 1);
        // Level a: means 1 and 34/3; residuals -1, 1, -4/3, 2/3, 2/3 → MSE 14/15.
        let a = &r.levels[0];
        assert_eq!((a.codebook_size, a.used_codes), (2, 2));
        assert!(
            (a.residual_mse - 14.0 / 15.0).abs() < 1e-6,
            "{}",
            a.residual_mse
        );
        let h = -(0.4f64 * 0.4f64.ln() + 0.6 * 0.6f64.ln());
        assert!((a.perplexity - h.exp()).abs() < 1e-9);
        assert_eq!((a.min_items_per_code, a.max_items_per_code), (2, 3));
        // Level b: means -7/6 and 7/9; residuals 1/6, 2/9, -1/6, -1/9, -1/9 → MSE 7/270.
        assert!((r.reconstruction_mse - 7.0 / 270.0).abs() < 1e-6);
        assert!((r.data_mean_square - (4.0 + 100.0 + 144.0 * 2.0) / 5.0).abs() < 1e-9);
        // A larger declared codebook lowers the utilisation.
        let r = sid_report(&index, &x, Some(4)).unwrap();
        assert_eq!(r.levels[1].utilisation, 0.5);
        // Row count must match.
        assert!(sid_report(&index, &Matrix::new(1, 1, vec![0.0]), None).is_err());
    }
}
