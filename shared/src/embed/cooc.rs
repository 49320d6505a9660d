//! Item embeddings from co-occurrence in users' histories: the collaborative half of a SID.
//!
//! Text embeddings place items by what they are; two items bought one after the other may read
//! nothing alike (a sander and its sanding discs). Concatenated with text embeddings before
//! quantization (`sid --embeddings text.npy,cooc.npy`), these vectors pull items that users take
//! together toward the same SID prefixes, so that the model's next-item step stays inside fewer
//! branches of the trie.
//!
//! The method is PPMI-SVD (Levy & Goldberg, 2014): counts `C[i][j]` of item pairs within a
//! window of each history (made symmetric), positive pointwise mutual information
//! `max(0, ln(C[i][j] · total / (c_i · c_j)))`, and its rank-`dim` truncated SVD; item `i`'s
//! vector is `U[i] · sqrt(S)`. The matrix is sparse (an item meets few others), so the SVD is a
//! seeded subspace iteration over the sparse rows followed by a Rayleigh–Ritz step, never a
//! dense `items × items` matrix. Items without any pair get a zero vector: they have no
//! collaborative signal, and a zero block leaves their place to the text half.

use std::collections::HashMap;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::npy::Matrix;
use crate::random::standard_normal;

/// Settings of [`cooc_embeddings`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CoocConfig {
    /// Vector size (the SVD's rank); at most the number of items.
    pub dim: usize,
    /// Subspace-iteration rounds; the error falls as `(σ_{dim+8} / σ_dim)^iterations`.
    pub iterations: usize,
    /// Seed of the iteration's random start; the same seed gives the same vectors.
    pub seed: u64,
}

impl Default for CoocConfig {
    fn default() -> Self {
        CoocConfig {
            dim: 32,
            iterations: 100,
            seed: 42,
        }
    }
}

/// What [`cooc_embeddings`] built.
#[derive(Debug, Clone)]
pub struct CoocEmbeddings {
    /// `[items, dim]`, row `i` = item index `i`.
    pub matrix: Matrix,
    /// The PPMI matrix's largest singular values, one per column, largest first.
    pub singular_values: Vec<f64>,
    /// Distinct unordered item pairs with a count (pairs of an item with itself are left out).
    pub pairs: usize,
    /// Items with a positive PMI to at least one other item (the others have zero vectors).
    pub items_with_pairs: usize,
}

/// Columns beyond `dim` carried through the iteration: they make the `dim` wanted ones converge
/// at the ratio to the `dim + OVERSAMPLE`-th singular value instead of the `dim + 1`-th.
const OVERSAMPLE: usize = 8;

/// PPMI-SVD vectors of `items` items from `pairs` of item indices (each occurrence once; order
/// and direction do not matter, and a pair of an item with itself is ignored).
pub fn cooc_embeddings(
    items: usize,
    pairs: impl IntoIterator<Item = (usize, usize)>,
    cfg: &CoocConfig,
) -> Result<CoocEmbeddings> {
    if cfg.dim == 0 || cfg.dim > items {
        return Err(Error::Invalid(format!(
            "co-occurrence dimension must be between 1 and the number of items ({items}), got {}",
            cfg.dim
        )));
    }
    if cfg.iterations == 0 {
        return Err(Error::Invalid(
            "co-occurrence SVD needs at least one iteration".into(),
        ));
    }
    let mut counts: HashMap<(usize, usize), f64> = HashMap::new();
    for (a, b) in pairs {
        if a >= items || b >= items {
            return Err(Error::Invalid(format!(
                "co-occurrence pair ({a}, {b}) names an item index beyond {items} items"
            )));
        }
        if a != b {
            *counts.entry((a.min(b), a.max(b))).or_default() += 1.0;
        }
    }
    let ppmi = SparseSym::ppmi(items, &counts);
    let (vectors, values) = truncated_svd(&ppmi, cfg);
    let mut data = vec![0f32; items * cfg.dim];
    for (c, (col, s)) in vectors.iter().zip(&values).enumerate() {
        let scale = s.sqrt();
        for (i, v) in col.iter().enumerate() {
            // A pairless item's row of the matrix is zero, so every singular vector with a
            // non-zero value is zero there; rounding (and the random columns that stand in for
            // the null space) would leave dust.
            if !ppmi.rows[i].is_empty() {
                data[i * cfg.dim + c] = (v * scale) as f32;
            }
        }
    }
    Ok(CoocEmbeddings {
        matrix: Matrix::new(items, cfg.dim, data),
        singular_values: values,
        pairs: counts.len(),
        items_with_pairs: ppmi.rows.iter().filter(|r| !r.is_empty()).count(),
    })
}

/// A symmetric sparse matrix, row by row: `(column, value)` entries.
struct SparseSym {
    rows: Vec<Vec<(usize, f64)>>,
}

impl SparseSym {
    /// The PPMI matrix of unordered pair counts (each count stands for both directions).
    fn ppmi(items: usize, counts: &HashMap<(usize, usize), f64>) -> Self {
        let mut marginal = vec![0f64; items];
        for (&(a, b), &c) in counts {
            marginal[a] += c;
            marginal[b] += c;
        }
        let total: f64 = marginal.iter().sum();
        let mut rows = vec![Vec::new(); items];
        for (&(a, b), &c) in counts {
            let pmi = (c * total / (marginal[a] * marginal[b])).ln();
            if pmi > 0.0 {
                rows[a].push((b, pmi));
                rows[b].push((a, pmi));
            }
        }
        // HashMap order is random per process: sorted rows make the sums, and so the vectors,
        // the same from run to run.
        for r in &mut rows {
            r.sort_unstable_by_key(|&(j, _)| j);
        }
        SparseSym { rows }
    }

    /// `self · x` for a column vector `x`.
    fn mul(&self, x: &[f64]) -> Vec<f64> {
        self.rows
            .iter()
            .map(|r| r.iter().map(|&(j, v)| v * x[j]).sum())
            .collect()
    }
}

/// The `cfg.dim` leading singular vectors (columns) and values of the symmetric `m`.
fn truncated_svd(m: &SparseSym, cfg: &CoocConfig) -> (Vec<Vec<f64>>, Vec<f64>) {
    let n = m.rows.len();
    let block = (cfg.dim + OVERSAMPLE).min(n);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut q: Vec<Vec<f64>> = (0..block)
        .map(|_| (0..n).map(|_| standard_normal(&mut rng)).collect())
        .collect();
    orthonormalize(&mut q, &mut rng);
    for _ in 0..cfg.iterations {
        q = q.iter().map(|c| m.mul(c)).collect();
        orthonormalize(&mut q, &mut rng);
    }
    // Rayleigh–Ritz: the eigenpairs of Qᵀ M Q give the best vectors inside the subspace.
    let mq: Vec<Vec<f64>> = q.iter().map(|c| m.mul(c)).collect();
    let mut h = vec![0f64; block * block];
    for a in 0..block {
        for b in 0..block {
            h[a * block + b] = 0.5 * (dot(&q[a], &mq[b]) + dot(&q[b], &mq[a]));
        }
    }
    let (values, y) = symmetric_eigen(&mut h, block);
    // A symmetric matrix's singular values are its eigenvalues' magnitudes.
    let mut order: Vec<usize> = (0..block).collect();
    order.sort_by(|&a, &b| values[b].abs().total_cmp(&values[a].abs()));
    let mut vectors = Vec::with_capacity(cfg.dim);
    let mut singular = Vec::with_capacity(cfg.dim);
    for &k in order.iter().take(cfg.dim) {
        let mut u = vec![0f64; n];
        for (a, qa) in q.iter().enumerate() {
            let w = y[a * block + k];
            for (ui, qi) in u.iter_mut().zip(qa) {
                *ui += w * qi;
            }
        }
        // A singular vector's sign is arbitrary: fix it so that reruns and other seeds agree.
        let peak = u
            .iter()
            .copied()
            .fold(0f64, |p, v| if v.abs() > p.abs() { v } else { p });
        if peak < 0.0 {
            u.iter_mut().for_each(|v| *v = -*v);
        }
        vectors.push(u);
        singular.push(values[k].abs());
    }
    (vectors, singular)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Orthonormal columns by modified Gram–Schmidt, run twice (one pass loses orthogonality when
/// the columns are nearly parallel, as power iteration makes them). A column that collapses
/// (the matrix's rank is below the block size) restarts from a fresh random direction.
fn orthonormalize(cols: &mut [Vec<f64>], rng: &mut ChaCha8Rng) {
    for k in 0..cols.len() {
        for attempt in 0..3 {
            let before = dot(&cols[k], &cols[k]).sqrt();
            for _ in 0..2 {
                for j in 0..k {
                    let (done, rest) = cols.split_at_mut(k);
                    let r = dot(&done[j], &rest[0]);
                    for (x, y) in rest[0].iter_mut().zip(&done[j]) {
                        *x -= r * y;
                    }
                }
            }
            let norm = dot(&cols[k], &cols[k]).sqrt();
            if norm > 1e-10 * before.max(1e-300) && norm > 1e-300 {
                cols[k].iter_mut().for_each(|x| *x /= norm);
                break;
            }
            if attempt == 2 {
                // Only possible when k ≥ n, which the block size rules out; keep it finite.
                cols[k].iter_mut().for_each(|x| *x = 0.0);
                break;
            }
            let n = cols[k].len();
            cols[k] = (0..n).map(|_| standard_normal(rng)).collect();
        }
    }
}

/// Eigenvalues and eigenvectors (column `k` of the row-major result) of the symmetric `n × n`
/// row-major `a`, by cyclic Jacobi rotations; `a` is overwritten. The Rayleigh–Ritz matrix is
/// at most a few dozen rows, where Jacobi is exact to rounding and needs no library.
fn symmetric_eigen(a: &mut [f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let scale: f64 = a.iter().map(|x| x * x).sum::<f64>().max(f64::MIN_POSITIVE);
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|p| (p + 1..n).map(move |q| (p, q)))
            .map(|(p, q)| a[p * n + q] * a[p * n + q])
            .sum();
        if off <= 1e-30 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        let d: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
        d / (na * nb)
    }

    #[test]
    fn jacobi_diagonalises_a_symmetric_matrix() {
        let n = 6;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut a = vec![0f64; n * n];
        for p in 0..n {
            for q in p..n {
                let x = standard_normal(&mut rng);
                a[p * n + q] = x;
                a[q * n + p] = x;
            }
        }
        let orig = a.clone();
        let (values, v) = symmetric_eigen(&mut a, n);
        for k in 0..n {
            for i in 0..n {
                let av: f64 = (0..n).map(|j| orig[i * n + j] * v[j * n + k]).sum();
                assert!((av - values[k] * v[i * n + k]).abs() < 1e-10, "A v != λ v");
            }
            for l in 0..n {
                let vv: f64 = (0..n).map(|i| v[i * n + k] * v[i * n + l]).sum();
                assert!((vv - if k == l { 1.0 } else { 0.0 }).abs() < 1e-10);
            }
        }
    }

    #[test]
    fn subspace_iteration_finds_the_dense_solvers_leading_singular_values() {
        // A random sparse PPMI matrix: the truncated SVD must equal the dense eigen-solve's
        // largest magnitudes.
        let items = 40;
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let pairs: Vec<(usize, usize)> = (0..300)
            .map(|_| {
                let a = (standard_normal(&mut rng).abs() * 10.0) as usize % items;
                let b = (standard_normal(&mut rng).abs() * 13.0) as usize % items;
                (a, b)
            })
            .collect();
        let mut counts = HashMap::new();
        for &(a, b) in &pairs {
            if a != b {
                *counts.entry((a.min(b), a.max(b))).or_insert(0.0) += 1.0;
            }
        }
        let m = SparseSym::ppmi(items, &counts);
        let mut dense = vec![0f64; items * items];
        for (i, r) in m.rows.iter().enumerate() {
            for &(j, v) in r {
                dense[i * items + j] = v;
            }
        }
        let (mut values, _) = symmetric_eigen(&mut dense, items);
        values.iter_mut().for_each(|v| *v = v.abs());
        values.sort_by(|a, b| b.total_cmp(a));
        let cfg = CoocConfig {
            dim: 5,
            iterations: 300,
            seed: 1,
        };
        let e = cooc_embeddings(items, pairs, &cfg).unwrap();
        for k in 0..5 {
            assert!(
                (e.singular_values[k] - values[k]).abs() < 1e-6 * values[0],
                "σ{k}: {} against {}",
                e.singular_values[k],
                values[k]
            );
        }
    }

    #[test]
    fn items_taken_together_get_close_vectors_and_loners_get_zeros() {
        // Two groups whose items only ever co-occur within their group (every pair once: items
        // 0-4 and 5-7); item 8 is only ever paired with itself.
        let mut pairs = Vec::new();
        for group in [0..5, 5..8] {
            for a in group.clone() {
                for b in a + 1..group.end {
                    pairs.push((b, a));
                }
            }
        }
        pairs.push((8, 8));
        let cfg = CoocConfig {
            dim: 2,
            ..CoocConfig::default()
        };
        let e = cooc_embeddings(9, pairs.clone(), &cfg).unwrap();
        assert_eq!(e.pairs, 13);
        assert_eq!(e.items_with_pairs, 8);
        assert!(e.matrix.row(8).iter().all(|&x| x == 0.0));
        for (a, b) in [(0, 4), (1, 3), (5, 7)] {
            let c = cosine(e.matrix.row(a), e.matrix.row(b));
            assert!(c > 0.999, "items {a} and {b} of one group: cosine {c}");
        }
        let c = cosine(e.matrix.row(0), e.matrix.row(6));
        assert!(c.abs() < 1e-3, "items of two groups: cosine {c}");
        // PPMI of K3 (each pair ln(26/4)) has the larger leading singular value, 2 ln 6.5.
        assert!((e.singular_values[0] - 2.0 * 6.5f64.ln()).abs() < 1e-9);
        // Deterministic for a seed, sign included.
        let again = cooc_embeddings(9, pairs, &cfg).unwrap();
        assert_eq!(e.matrix.data, again.matrix.data);
    }

    #[test]
    fn bad_settings_and_pairs_are_refused() {
        let cfg = CoocConfig::default();
        assert!(
            cooc_embeddings(10, [(0, 1)], &cfg).is_err(),
            "dim 32 > 10 items"
        );
        let small = CoocConfig { dim: 2, ..cfg };
        let err = cooc_embeddings(10, [(0, 10)], &small).unwrap_err();
        assert!(err.to_string().contains("beyond 10 items"), "{err}");
    }
}
