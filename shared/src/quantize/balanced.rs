//! Capacity-constrained ("balanced") assignment of points to fixed centroids.
//!
//! **Capacities.** With `n` points and `K` codes every code gets `⌊n/K⌋` slots and `n mod K` codes
//! get one more, so the capacities sum to exactly `n`. The extra slots go to the codes most points
//! would pick first (highest count of nearest-centroid votes, ties to the lower code), not to the
//! first codes by number as the reference's `--uniform` option does.
//!
//! **Assignment (sorted regret).** Each point's `M` nearest codes are found (`M = min(32, K)`).
//! Points are visited by decreasing *regret* — the distance to the second-nearest code minus the
//! distance to the nearest — so points with the most to lose choose first (ties by point index).
//! A point takes its nearest code that still has a free slot; if all of its `M` candidates are
//! full, the distances to every code are computed and it takes the nearest code with a free slot.
//!
//! **Bounds.** A free slot always exists while a point is unassigned (total capacity `n`, fewer
//! than `n` points placed), so every point gets a code, no code exceeds its capacity, and because
//! all `n` slots are filled every code ends with exactly its capacity: sizes are `⌊n/K⌋` or
//! `⌊n/K⌋ + 1`, inside the reference's `KMeansConstrained` bounds `[⌊n/K⌋ − 1, ⌊n/K⌋ + 1]`.
//! The reference's uniform option could instead overfill a code: when a point's candidates and
//! its arg-max code are full it falls back to `argmin(remaining)`, the *fullest* code, and
//! capacities go negative; here that case cannot happen.

use crate::error::Result;

use super::kmeans::{sq_dist, top_m};

/// Candidates per point kept from the distance search.
pub const CANDIDATES: usize = 32;

/// Capacities summing to `n`: `⌊n/K⌋` each, `+1` for the `n mod K` codes with most nearest votes.
pub fn capacities(n: usize, k: usize, votes: &[usize]) -> Vec<usize> {
    let base = n / k;
    let extra = n % k;
    let mut caps = vec![base; k];
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| votes[b].cmp(&votes[a]).then(a.cmp(&b)));
    for &j in order.iter().take(extra) {
        caps[j] += 1;
    }
    caps
}

/// Assign every row of `x` (`n × dim`) to one of the `k` centroids `c` so that code sizes are
/// `⌊n/K⌋` or `⌊n/K⌋ + 1` (see the module docs). Returns the codes and squared distances.
pub fn assign_balanced(x: &[f32], dim: usize, c: &[f32], k: usize) -> Result<(Vec<u32>, Vec<f32>)> {
    let n = x.len() / dim;
    let cand = top_m(x, dim, c, k, CANDIDATES)?;
    let mut votes = vec![0usize; k];
    for cs in &cand {
        votes[cs[0].0 as usize] += 1;
    }
    let mut remaining = capacities(n, k, &votes);
    let regret = |cs: &[(u32, f32)]| if cs.len() > 1 { cs[1].1 - cs[0].1 } else { 0.0 };
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_by(|&a, &b| {
        regret(&cand[b as usize])
            .total_cmp(&regret(&cand[a as usize]))
            .then(a.cmp(&b))
    });
    let mut codes = vec![0u32; n];
    let mut dists = vec![0f32; n];
    for i in order {
        let i = i as usize;
        let choice = cand[i]
            .iter()
            .find(|(j, _)| remaining[*j as usize] > 0)
            .copied()
            .unwrap_or_else(|| {
                let r = &x[i * dim..(i + 1) * dim];
                (0..k)
                    .filter(|&j| remaining[j] > 0)
                    .map(|j| (j as u32, sq_dist(r, &c[j * dim..(j + 1) * dim])))
                    .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
                    .expect("total capacity equals the number of points")
            });
        remaining[choice.0 as usize] -= 1;
        codes[i] = choice.0;
        dists[i] = choice.1;
    }
    Ok((codes, dists))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn sizes(codes: &[u32], k: usize) -> Vec<usize> {
        let mut s = vec![0; k];
        for &c in codes {
            s[c as usize] += 1;
        }
        s
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        /// The size bounds hold for any data, including heavily skewed data where most points
        /// prefer the same code.
        #[test]
        fn sizes_are_floor_or_floor_plus_one(n in 1usize..400, k in 1usize..70, seed in 0u64..1000, skew in 0u8..2) {
            let dim = 3;
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let x: Vec<f32> = (0..n * dim)
                .map(|i| if skew == 1 && i % 5 != 0 { 0.0 } else { rng.gen_range(-1.0..1.0) })
                .collect();
            let c: Vec<f32> = (0..k * dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let (codes, _) = assign_balanced(&x, dim, &c, k).unwrap();
            prop_assert_eq!(codes.len(), n);
            for s in sizes(&codes, k) {
                prop_assert!(s == n / k || s == n / k + 1, "size {} with n={} k={}", s, n, k);
            }
        }
    }

    #[test]
    fn unconstrained_choice_is_kept_when_it_fits() {
        // Two well separated pairs and two centroids: the balanced answer is the nearest one.
        let x = [0.0f32, 0.1, 10.0, 10.1];
        let c = [0.0f32, 10.0];
        let (codes, _) = assign_balanced(&x, 1, &c, 2).unwrap();
        assert_eq!(codes, [0, 0, 1, 1]);
        // Three points near code 0, capacity 2 each: the point with the least regret moves.
        let x = [0.0f32, 0.2, 4.0, 10.0];
        let (codes, _) = assign_balanced(&x, 1, &c, 2).unwrap();
        assert_eq!(codes, [0, 0, 1, 1]);
        assert_eq!(capacities(7, 3, &[0, 5, 1]), [2, 3, 2]);
    }
}
