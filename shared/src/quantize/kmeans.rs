//! k-means: seeded k-means++ initialisation, Lloyd iterations with a tolerance, empty-cluster
//! repair, and the nearest-centroid / top-M searches every quantizer here is built on.
//!
//! Distances are computed as `‖x‖² − 2·x·c + ‖c‖²` with the dot products `X·Cᵀ` done by candle's
//! CPU matmul (gemm) in blocks of [`BLOCK_ROWS`] rows, so memory stays at one `BLOCK_ROWS × K`
//! block per call besides the data. Everything that sums floats does so in a fixed order, so the
//! results depend only on the data and the seed, not on thread scheduling.

use candle_core::{Device, Tensor};
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::{Error, Result};

/// Rows per matmul block in the distance searches.
pub const BLOCK_ROWS: usize = 4096;

/// k-means settings.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeansConfig {
    /// Number of clusters K.
    pub k: usize,
    /// Most Lloyd iterations.
    pub max_iter: usize,
    /// Stop when the inertia improves by less than this fraction between iterations.
    pub tol: f64,
    /// Seed of the k-means++ initialisation and of the training sample.
    pub seed: u64,
    /// Train on a random sample of at most this many points per centroid (faiss'
    /// `max_points_per_centroid`, default 256); `None` trains on every point.
    pub max_points_per_centroid: Option<usize>,
}

impl KMeansConfig {
    /// K clusters with the defaults: 100 iterations, tol 1e-4, seed 42, 256 points per centroid.
    pub fn new(k: usize) -> Self {
        Self {
            k,
            max_iter: 100,
            tol: 1e-4,
            seed: 42,
            max_points_per_centroid: Some(256),
        }
    }
}

/// A trained k-means model.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeans {
    /// `k × dim` centroids, row-major.
    pub centroids: Vec<f32>,
    /// Number of clusters.
    pub k: usize,
    /// Dimension.
    pub dim: usize,
    /// Lloyd iterations run.
    pub iterations: usize,
    /// Sum of squared distances of the training points to their centroids.
    pub inertia: f64,
}

/// Squared L2 norm of every `dim`-long row of `x`.
pub fn row_norms(x: &[f32], dim: usize) -> Vec<f32> {
    x.par_chunks(dim.max(1))
        .map(|r| r.iter().map(|v| v * v).sum())
        .collect()
}

/// Squared L2 distance of two vectors.
#[inline]
pub fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            let t = x[i] - y[i];
            acc[i] += t * t;
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        let t = x - y;
        s += t * t;
    }
    s
}

/// For every row of `x` (`n × dim`), call `f(row, x_norm, dots)` where `dots[j] = x·c_j` for the
/// `k` centroids `c` (`k × dim`); returns the results in row order.
pub fn map_dots<T, F>(x: &[f32], dim: usize, c: &[f32], k: usize, f: F) -> Result<Vec<T>>
where
    T: Send,
    F: Fn(usize, &[f32]) -> T + Sync,
{
    if dim == 0 || k == 0 {
        return Err(Error::Invalid(
            "k-means: dimension and K must be positive".into(),
        ));
    }
    let n = x.len() / dim;
    let cpu = Device::Cpu;
    let ct = Tensor::from_slice(c, (k, dim), &cpu)?.t()?;
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(BLOCK_ROWS) {
        let rows = BLOCK_ROWS.min(n - start);
        let xb = Tensor::from_slice(&x[start * dim..(start + rows) * dim], (rows, dim), &cpu)?;
        let dots: Vec<f32> = xb.matmul(&ct)?.flatten_all()?.to_vec1()?;
        let part: Vec<T> = dots
            .par_chunks(k)
            .enumerate()
            .map(|(i, d)| f(start + i, d))
            .collect();
        out.extend(part);
    }
    Ok(out)
}

/// Nearest centroid (lowest index on ties) and squared distance for every row of `x`.
pub fn nearest(x: &[f32], dim: usize, c: &[f32], k: usize) -> Result<(Vec<u32>, Vec<f32>)> {
    let xn = row_norms(x, dim);
    let cn = row_norms(c, dim);
    let res = map_dots(x, dim, c, k, |i, dots| {
        let mut best = (f32::INFINITY, 0u32);
        for (j, (&dt, &cj)) in dots.iter().zip(&cn).enumerate() {
            let dist = cj - 2.0 * dt;
            if dist < best.0 {
                best = (dist, j as u32);
            }
        }
        (best.1, (best.0 + xn[i]).max(0.0))
    })?;
    Ok(res.into_iter().unzip())
}

/// The `m` nearest centroids of every row, nearest first (ties by index), as `(code, sq dist)`.
pub fn top_m(x: &[f32], dim: usize, c: &[f32], k: usize, m: usize) -> Result<Vec<Vec<(u32, f32)>>> {
    let m = m.clamp(1, k);
    let xn = row_norms(x, dim);
    let cn = row_norms(c, dim);
    map_dots(x, dim, c, k, |i, dots| {
        let mut all: Vec<(f32, u32)> = dots
            .iter()
            .zip(&cn)
            .enumerate()
            .map(|(j, (&dt, &cj))| ((cj - 2.0 * dt + xn[i]).max(0.0), j as u32))
            .collect();
        let cmp = |a: &(f32, u32), b: &(f32, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
        if m < k {
            all.select_nth_unstable_by(m - 1, cmp);
            all.truncate(m);
        }
        all.sort_by(cmp);
        all.into_iter().map(|(d, j)| (j, d)).collect()
    })
}

/// Mean of the rows assigned to each cluster (`None` for an empty cluster), summed in row order.
pub fn cluster_means(x: &[f32], dim: usize, labels: &[u32], k: usize) -> Vec<Option<Vec<f32>>> {
    let mut members: Vec<Vec<u32>> = vec![Vec::new(); k];
    for (i, &l) in labels.iter().enumerate() {
        members[l as usize].push(i as u32);
    }
    members
        .par_iter()
        .map(|ids| {
            if ids.is_empty() {
                return None;
            }
            let mut s = vec![0f64; dim];
            for &i in ids {
                let r = &x[i as usize * dim..(i as usize + 1) * dim];
                for (a, &v) in s.iter_mut().zip(r) {
                    *a += v as f64;
                }
            }
            let inv = 1.0 / ids.len() as f64;
            Some(s.into_iter().map(|v| (v * inv) as f32).collect())
        })
        .collect()
}

/// k-means++ seeding (D² sampling) of `k` centroids from the rows of `x`.
pub fn kmeans_pp(x: &[f32], dim: usize, k: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let n = x.len() / dim;
    let row = |i: usize| &x[i * dim..(i + 1) * dim];
    let mut centroids = Vec::with_capacity(k * dim);
    let first = rng.gen_range(0..n);
    centroids.extend_from_slice(row(first));
    let mut mind: Vec<f32> = x.par_chunks(dim).map(|r| sq_dist(r, row(first))).collect();
    for _ in 1..k {
        let total: f64 = mind.iter().map(|&v| v as f64).sum();
        let pick = if total <= 0.0 {
            // Every point coincides with a centroid: repeat one (the repair step separates them).
            rng.gen_range(0..n)
        } else {
            let target = rng.gen::<f64>() * total;
            let mut acc = 0.0;
            let mut pick = n - 1;
            for (i, &v) in mind.iter().enumerate() {
                acc += v as f64;
                if acc > target && v > 0.0 {
                    pick = i;
                    break;
                }
            }
            pick
        };
        let c = row(pick).to_vec();
        mind.par_iter_mut()
            .zip(x.par_chunks(dim))
            .for_each(|(m, r)| *m = m.min(sq_dist(r, &c)));
        centroids.extend_from_slice(&c);
    }
    centroids
}

/// Give every empty cluster the point farthest from its own centroid (taken from clusters with at
/// least two members), as faiss and sklearn do in spirit. Returns how many clusters were repaired.
pub fn repair_empty(
    x: &[f32],
    dim: usize,
    labels: &mut [u32],
    dists: &[f32],
    centroids: &mut [f32],
    means: &[Option<Vec<f32>>],
) -> usize {
    let k = means.len();
    let mut counts = vec![0usize; k];
    for &l in labels.iter() {
        counts[l as usize] += 1;
    }
    let empty: Vec<usize> = (0..k).filter(|&j| counts[j] == 0).collect();
    if empty.is_empty() {
        return 0;
    }
    let mut order: Vec<u32> = (0..labels.len() as u32).collect();
    order.sort_by(|&a, &b| {
        dists[b as usize]
            .total_cmp(&dists[a as usize])
            .then(a.cmp(&b))
    });
    let mut next = order.into_iter();
    let mut repaired = 0;
    for j in empty {
        for p in next.by_ref() {
            let old = labels[p as usize] as usize;
            if counts[old] > 1 {
                counts[old] -= 1;
                counts[j] = 1;
                labels[p as usize] = j as u32;
                centroids[j * dim..(j + 1) * dim]
                    .copy_from_slice(&x[p as usize * dim..(p as usize + 1) * dim]);
                repaired += 1;
                break;
            }
        }
    }
    repaired
}

/// Train k-means on the rows of `x` (`n × dim`). `progress(done, total)` is called after each
/// Lloyd iteration. Needs `n ≥ 1`; with `n < k` some centroids repeat points.
pub fn kmeans(
    x: &[f32],
    dim: usize,
    cfg: &KMeansConfig,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<KMeans> {
    let k = cfg.k;
    if dim == 0 || k == 0 || x.is_empty() || !x.len().is_multiple_of(dim) {
        return Err(Error::Invalid(format!(
            "k-means: need a non-empty n × {dim} matrix and K ≥ 1 (got {} values, K = {k})",
            x.len()
        )));
    }
    let n = x.len() / dim;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    // Training sample, as faiss does (sorted, so the result does not depend on sample order).
    let sampled: Option<Vec<f32>> = match cfg.max_points_per_centroid {
        Some(p) if n > p.saturating_mul(k) => {
            let mut idx = sample(&mut rng, n, p * k).into_vec();
            idx.sort_unstable();
            let mut s = Vec::with_capacity(idx.len() * dim);
            for i in idx {
                s.extend_from_slice(&x[i * dim..(i + 1) * dim]);
            }
            Some(s)
        }
        _ => None,
    };
    let xs: &[f32] = sampled.as_deref().unwrap_or(x);
    let mut centroids = kmeans_pp(xs, dim, k, &mut rng);
    let mut prev = f64::INFINITY;
    let mut inertia = f64::INFINITY;
    let mut iterations = 0;
    for it in 0..cfg.max_iter.max(1) {
        let (mut labels, dists) = nearest(xs, dim, &centroids, k)?;
        inertia = dists.iter().map(|&v| v as f64).sum();
        iterations = it + 1;
        let means = cluster_means(xs, dim, &labels, k);
        for (j, m) in means.iter().enumerate() {
            if let Some(m) = m {
                centroids[j * dim..(j + 1) * dim].copy_from_slice(m);
            }
        }
        let repaired = repair_empty(xs, dim, &mut labels, &dists, &mut centroids, &means);
        progress(iterations as u64, cfg.max_iter as u64);
        if repaired == 0 && (prev - inertia) <= cfg.tol * prev.max(f64::MIN_POSITIVE) {
            break;
        }
        prev = inertia;
    }
    Ok(KMeans {
        centroids,
        k,
        dim,
        iterations,
        inertia,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr_free::gauss;

    /// Box–Muller normals without another dependency.
    mod rand_distr_free {
        use rand::Rng;
        pub fn gauss(rng: &mut impl Rng) -> f32 {
            let u1: f64 = rng.gen_range(1e-12..1.0);
            let u2: f64 = rng.gen();
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        }
    }

    pub(crate) fn blobs(centers: &[Vec<f32>], per: usize, sd: f32, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut x = Vec::new();
        for _ in 0..per {
            for c in centers {
                for &v in c {
                    x.push(v + sd * gauss(&mut rng));
                }
            }
        }
        x
    }

    #[test]
    fn recovers_separable_blobs() {
        let centers: Vec<Vec<f32>> = (0..6)
            .map(|i| {
                (0..8)
                    .map(|j| if j == i { 20.0 } else { (i as f32) * 0.5 })
                    .collect()
            })
            .collect();
        let x = blobs(&centers, 50, 0.3, 1);
        let mut cfg = KMeansConfig::new(6);
        cfg.seed = 3;
        let km = kmeans(&x, 8, &cfg, &mut |_, _| {}).unwrap();
        let (labels, _) = nearest(&x, 8, &km.centroids, 6).unwrap();
        // Points are laid out blob after blob within each round: point i belongs to blob i % 6.
        let mut map = vec![None; 6];
        for (i, &l) in labels.iter().enumerate() {
            let b = i % 6;
            match map[b] {
                None => map[b] = Some(l),
                Some(m) => assert_eq!(m, l, "blob {b} split"),
            }
        }
        let mut used: Vec<u32> = map.into_iter().map(Option::unwrap).collect();
        used.sort();
        used.dedup();
        assert_eq!(used.len(), 6, "two blobs merged");
        for c in &centers {
            let best = (0..6)
                .map(|j| sq_dist(c, &km.centroids[j * 8..(j + 1) * 8]))
                .fold(f32::INFINITY, f32::min);
            assert!(best < 0.05, "centre not recovered: {best}");
        }
    }

    #[test]
    fn nearest_matches_brute_force_and_top_m_is_sorted() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (n, d, k) = (5000, 13, 37);
        let x: Vec<f32> = (0..n * d).map(|_| gauss(&mut rng)).collect();
        let c: Vec<f32> = (0..k * d).map(|_| gauss(&mut rng)).collect();
        let (lab, dist) = nearest(&x, d, &c, k).unwrap();
        let top = top_m(&x, d, &c, k, 5).unwrap();
        for i in (0..n).step_by(97) {
            let r = &x[i * d..(i + 1) * d];
            let bf: Vec<f32> = (0..k).map(|j| sq_dist(r, &c[j * d..(j + 1) * d])).collect();
            let j = lab[i] as usize;
            let m = bf.iter().cloned().fold(f32::INFINITY, f32::min);
            assert!(bf[j] <= m + 1e-3, "row {i}");
            assert!((dist[i] - bf[j]).abs() < 1e-3);
            assert_eq!(top[i].len(), 5);
            assert!(top[i].windows(2).all(|w| w[0].1 <= w[1].1));
            assert!((top[i][0].1 - m).abs() < 1e-3);
        }
    }

    #[test]
    fn empty_clusters_are_repaired_and_runs_are_deterministic() {
        // 10 distinct points, K = 10, plus duplicates: every cluster must end non-empty.
        let mut x = Vec::new();
        for i in 0..10 {
            for _ in 0..(1 + i % 3) {
                x.extend_from_slice(&[i as f32, (i * i) as f32]);
            }
        }
        let cfg = KMeansConfig::new(10);
        let a = kmeans(&x, 2, &cfg, &mut |_, _| {}).unwrap();
        let (labels, _) = nearest(&x, 2, &a.centroids, 10).unwrap();
        let mut used: Vec<u32> = labels.clone();
        used.sort();
        used.dedup();
        assert_eq!(used.len(), 10);
        let b = kmeans(&x, 2, &cfg, &mut |_, _| {}).unwrap();
        assert_eq!(a, b);
        // Fewer points than clusters still works.
        let few = kmeans(&x[..6], 2, &cfg, &mut |_, _| {}).unwrap();
        assert_eq!(few.centroids.len(), 20);
    }
}
