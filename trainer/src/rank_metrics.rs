//! HR@K / NDCG@K over ranked recommendation lists, as the reference computes them: a sample's
//! target at 0-based rank `r` counts as a hit at every K > r and adds `1 / log2(r + 2)` to NDCG@K.
//!
//! The API mirrors `sidrec::metrics` (`MetricsAccumulator::add(rank, invalid)` → `MetricsReport
//! {n, ks, hr, ndcg, invalid}`), which is being written on another branch; when it lands this
//! module becomes a re-export.

use serde::Serialize;

/// The cut-offs reported by `data stats`.
pub const DEFAULT_KS: [usize; 6] = [1, 3, 5, 10, 20, 50];

/// Running sums of hits and discounted gains per cut-off.
#[derive(Debug, Clone)]
pub struct MetricsAccumulator {
    ks: Vec<usize>,
    hits: Vec<u64>,
    gains: Vec<f64>,
    n: u64,
    invalid: u64,
}

impl MetricsAccumulator {
    /// An empty accumulator for the cut-offs `ks`.
    pub fn new(ks: &[usize]) -> Self {
        Self {
            ks: ks.to_vec(),
            hits: vec![0; ks.len()],
            gains: vec![0.0; ks.len()],
            n: 0,
            invalid: 0,
        }
    }

    /// One sample: the target's 0-based rank in the recommendation list (`None`: not in it), and
    /// how many invalid (non-item) outputs the list contained.
    pub fn add(&mut self, rank: Option<usize>, invalid: usize) {
        self.n += 1;
        self.invalid += invalid as u64;
        if let Some(r) = rank {
            for (i, &k) in self.ks.iter().enumerate() {
                if r < k {
                    self.hits[i] += 1;
                    self.gains[i] += 1.0 / ((r + 2) as f64).log2();
                }
            }
        }
    }

    /// The averages so far.
    pub fn report(&self) -> MetricsReport {
        let n = self.n.max(1) as f64;
        MetricsReport {
            n: self.n as usize,
            ks: self.ks.clone(),
            hr: self.hits.iter().map(|&h| h as f64 / n).collect(),
            ndcg: self.gains.iter().map(|&g| g / n).collect(),
            invalid: self.invalid as usize,
        }
    }
}

/// HR@K and NDCG@K for each K, over `n` samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricsReport {
    /// Number of samples.
    pub n: usize,
    /// The cut-offs.
    pub ks: Vec<usize>,
    /// Hit rate per cut-off.
    pub hr: Vec<f64>,
    /// NDCG per cut-off.
    pub ndcg: Vec<f64>,
    /// Invalid outputs in all.
    pub invalid: usize,
}

impl MetricsReport {
    /// HR at cut-off `k`, if it was measured.
    pub fn hr_at(&self, k: usize) -> Option<f64> {
        self.ks.iter().position(|&x| x == k).map(|i| self.hr[i])
    }

    /// NDCG at cut-off `k`, if it was measured.
    pub fn ndcg_at(&self, k: usize) -> Option<f64> {
        self.ks.iter().position(|&x| x == k).map(|i| self.ndcg[i])
    }

    /// A Markdown table: one row, labelled `name`, with HR@K then NDCG@K columns.
    pub fn markdown_row(&self, name: &str) -> String {
        let mut s = format!("| {name} |");
        for v in self.hr.iter().chain(&self.ndcg) {
            s.push_str(&format!(" {v:.4} |"));
        }
        s
    }

    /// The header of [`Self::markdown_row`] tables.
    pub fn markdown_header(&self) -> String {
        let mut head = String::from("| ranker |");
        let mut rule = String::from("|---|");
        for k in &self.ks {
            head.push_str(&format!(" HR@{k} |"));
            rule.push_str("---|");
        }
        for k in &self.ks {
            head.push_str(&format!(" NDCG@{k} |"));
            rule.push_str("---|");
        }
        format!("{head}\n{rule}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_and_gains() {
        let mut m = MetricsAccumulator::new(&[1, 3]);
        m.add(Some(0), 0);
        m.add(Some(2), 0);
        m.add(None, 1);
        let r = m.report();
        assert_eq!(r.n, 3);
        assert!((r.hr[0] - 1.0 / 3.0).abs() < 1e-12);
        assert!((r.hr[1] - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.ndcg[1] - (1.0 + 0.5) / 3.0).abs() < 1e-12);
        assert_eq!(r.invalid, 1);
    }
}
