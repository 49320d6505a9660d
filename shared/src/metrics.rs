//! Ranking metrics exactly as the reference's `calc.py` computes them (MINIONEREC.md §5.4).
//!
//! One relevant item per row: a row's rank is the position of the first prediction equal to the
//! target, HR@K is the share of ALL rows with rank < K and NDCG@K the mean of 1/log2(rank + 2)
//! over those rows. Predictions are compared as SID strings, so a collided SID is a hit for every
//! item sharing it.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The cut-offs `calc.py` reports, before dropping those above the number of predictions.
pub const TOP_KS: [usize; 6] = [1, 3, 5, 10, 20, 50];

/// The cut-offs of [`TOP_KS`] not larger than `num_predictions` (calc.py's `valid_topk`).
pub fn ks_for(num_predictions: usize) -> Vec<usize> {
    TOP_KS
        .into_iter()
        .filter(|&k| k <= num_predictions)
        .collect()
}

/// Python's `str.isspace()` (what a bare `.strip()` removes): also the `\x1c`..`\x1f`
/// separators, which Rust's `char::is_whitespace` does not include.
fn is_python_space(c: char) -> bool {
    matches!(
        c,
        '\t'..='\r'
            | '\x1c'..='\x1f'
            | ' '
            | '\u{85}'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
    )
}

/// A target as calc.py reads it: `output.strip(" \n\"")`.
pub fn strip_target(s: &str) -> &str {
    s.trim_matches([' ', '\n', '"'])
}

/// A prediction as calc.py reads it: `p.strip("\"\n").strip()`.
pub fn strip_prediction(s: &str) -> &str {
    s.trim_matches(['"', '\n']).trim_matches(is_python_space)
}

/// An item-catalogue key as calc.py reads it from the info file: `line.split('\t')[0].strip()`.
pub fn strip_item(line: &str) -> &str {
    line.split('\t')
        .next()
        .unwrap_or_default()
        .trim_matches(is_python_space)
}

/// Scan one row's predictions (already stripped) as calc.py does: the rank of the first
/// prediction equal to `target`, and the number of predictions outside `item_set` seen up to
/// and including that hit (the whole list on a miss). No de-duplication.
pub fn rank_and_invalid<S: AsRef<str>>(
    predictions: &[S],
    target: &str,
    item_set: &HashSet<String>,
) -> (Option<usize>, usize) {
    let mut invalid = 0;
    for (i, p) in predictions.iter().enumerate() {
        let p = p.as_ref();
        // calc.py checks membership before comparing, so an out-of-catalogue hit still counts.
        if !item_set.contains(p) {
            invalid += 1;
        }
        if p == target {
            return (Some(i), invalid);
        }
    }
    (None, invalid)
}

/// calc.py over whole rows: `predictions[i]` (beam order) against `targets[i]`, both raw strings
/// stripped here as calc.py strips them; `item_set` holds the catalogue's SID strings as
/// [`strip_item`] gives them. The cut-offs come from the first row's number of predictions.
pub fn evaluate<S: AsRef<str>>(
    predictions: &[Vec<S>],
    targets: &[String],
    item_set: &HashSet<String>,
) -> Result<MetricsReport> {
    if predictions.len() != targets.len() {
        return Err(Error::Invalid(format!(
            "{} prediction lists for {} targets",
            predictions.len(),
            targets.len()
        )));
    }
    let ks = ks_for(predictions.first().map_or(0, Vec::len));
    let mut acc = MetricsAccumulator::new(ks);
    for (preds, target) in predictions.iter().zip(targets) {
        let stripped: Vec<&str> = preds.iter().map(|p| strip_prediction(p.as_ref())).collect();
        let (rank, invalid) = rank_and_invalid(&stripped, strip_target(target), item_set);
        acc.add(rank, invalid);
    }
    Ok(acc.report())
}

/// Row-by-row metric sums, for callers that rank without strings (e.g. full-ranking baselines).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsAccumulator {
    ks: Vec<usize>,
    hits: Vec<u64>,
    /// Per K, the sum of 1/ln(rank + 2), scaled at the end as calc.py does.
    gains: Vec<f64>,
    n: usize,
    invalid: usize,
}

impl MetricsAccumulator {
    /// An empty accumulator reporting the cut-offs `ks`.
    pub fn new(ks: Vec<usize>) -> Self {
        let len = ks.len();
        Self {
            ks,
            hits: vec![0; len],
            gains: vec![0.0; len],
            n: 0,
            invalid: 0,
        }
    }

    /// Add one row: the 0-based rank of its target (None on a miss) and its invalid count.
    pub fn add(&mut self, rank: Option<usize>, invalid: usize) {
        self.n += 1;
        self.invalid += invalid;
        let Some(rank) = rank else { return };
        for (j, &k) in self.ks.iter().enumerate() {
            if rank < k {
                self.hits[j] += 1;
                self.gains[j] += 1.0 / ((rank + 2) as f64).ln();
            }
        }
    }

    /// Rows added so far.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True before the first row.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The metrics so far (all zero with no rows, where calc.py would divide by zero).
    pub fn report(&self) -> MetricsReport {
        let n = self.n as f64;
        let mut hr = BTreeMap::new();
        let mut ndcg = BTreeMap::new();
        for (j, &k) in self.ks.iter().enumerate() {
            if self.n == 0 {
                hr.insert(k, 0.0);
                ndcg.insert(k, 0.0);
                continue;
            }
            hr.insert(k, self.hits[j] as f64 / n);
            // Same operation order as calc.py: sum / len / (1 / ln 2).
            ndcg.insert(k, self.gains[j] / n / (1.0 / 2f64.ln()));
        }
        MetricsReport {
            n: self.n,
            ks: self.ks.clone(),
            hr,
            ndcg,
            invalid: self.invalid,
        }
    }
}

/// HR@K and NDCG@K over `n` rows, plus calc.py's count of out-of-catalogue predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsReport {
    /// Number of rows.
    pub n: usize,
    /// Cut-offs, ascending.
    pub ks: Vec<usize>,
    /// Hit rate per cut-off.
    pub hr: BTreeMap<usize, f64>,
    /// NDCG per cut-off.
    pub ndcg: BTreeMap<usize, f64>,
    /// Predictions outside the catalogue, ranked before the hit or in a missed row.
    pub invalid: usize,
}

impl MetricsReport {
    /// A Markdown table: one row per cut-off, then the row and invalid counts.
    pub fn to_markdown(&self) -> String {
        let mut s = String::from("| K | HR@K | NDCG@K |\n|---:|---:|---:|\n");
        for &k in &self.ks {
            let hr = self.hr.get(&k).copied().unwrap_or(f64::NAN);
            let ndcg = self.ndcg.get(&k).copied().unwrap_or(f64::NAN);
            let _ = writeln!(s, "| {k} | {hr:.4} | {ndcg:.4} |");
        }
        let _ = write!(
            s,
            "\nrows: {}, invalid predictions: {}\n",
            self.n, self.invalid
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LN2: f64 = std::f64::consts::LN_2;

    fn set(items: &[&str]) -> HashSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Ten catalogue items `<a_0><b_0>` .. `<a_9><b_0>`.
    fn catalogue() -> HashSet<String> {
        (0..10).map(|i| format!("<a_{i}><b_0>")).collect()
    }

    fn item(i: usize) -> String {
        format!("<a_{i}><b_0>")
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn hits_at_ranks_0_2_9_and_a_miss() {
        let preds: Vec<Vec<String>> = (0..4).map(|_| (0..10).map(item).collect()).collect();
        let targets = vec![item(0), item(2), item(9), "<a_99><b_0>".to_string()];
        let r = evaluate(&preds, &targets, &catalogue()).unwrap();
        assert_eq!(r.n, 4);
        assert_eq!(r.ks, [1, 3, 5, 10]);
        assert_eq!(r.invalid, 0);
        // HR@1: rank 0 only; @3 and @5: ranks 0, 2; @10: ranks 0, 2, 9.
        assert_eq!(r.hr[&1], 0.25);
        assert_eq!(r.hr[&3], 0.5);
        assert_eq!(r.hr[&5], 0.5);
        assert_eq!(r.hr[&10], 0.75);
        // Gains: rank 0 → 1, rank 2 → 1/log2(4) = 0.5, rank 9 → 1/log2(11).
        assert!(close(r.ndcg[&1], 1.0 / 4.0));
        assert!(close(r.ndcg[&3], 1.5 / 4.0));
        assert!(close(r.ndcg[&5], 1.5 / 4.0));
        assert!(close(r.ndcg[&10], (1.5 + LN2 / 11f64.ln()) / 4.0));
    }

    #[test]
    fn invalid_predictions_count_only_up_to_the_hit() {
        let items = catalogue();
        // Two invalid before the hit at rank 3, one invalid after it: 2 counted.
        let row1 = strings(&[
            "<a_50><b_0>",
            item(1).as_str(),
            "junk",
            item(4).as_str(),
            "junk2",
        ]);
        // A full miss with one invalid prediction: counted.
        let row2 = strings(&[
            item(1).as_str(),
            "bad",
            item(2).as_str(),
            item(3).as_str(),
            item(5).as_str(),
        ]);
        let preds = vec![row1, row2];
        let targets = vec![item(4), item(7)];
        let r = evaluate(&preds, &targets, &items).unwrap();
        assert_eq!(r.invalid, 3);
        assert_eq!(r.ks, [1, 3, 5]);
        assert_eq!(r.hr[&1], 0.0);
        assert_eq!(r.hr[&3], 0.0);
        assert_eq!(r.hr[&5], 0.5);
        assert!(close(r.ndcg[&5], 0.5 * LN2 / 5f64.ln()));
        // A hit on a prediction outside the catalogue is still scanned as invalid first.
        assert_eq!(rank_and_invalid(&["x", "y"], "y", &items), (Some(1), 2));
    }

    #[test]
    fn duplicates_are_not_removed_and_the_first_match_wins() {
        let preds = vec![strings(&["<a_1><b_0>", "<a_1><b_0>", "<a_2><b_0>"])];
        let r = evaluate(&preds, &[item(2)], &catalogue()).unwrap();
        // Rank 2, not 1: the duplicate keeps its slot.
        assert_eq!(r.hr[&1], 0.0);
        assert_eq!(r.hr[&3], 1.0);
        assert!(close(r.ndcg[&3], 0.5));
        let r = evaluate(&preds, &[item(1)], &catalogue()).unwrap();
        assert_eq!(r.hr[&1], 1.0);
        assert_eq!(r.ndcg[&1], 1.0);
    }

    #[test]
    fn ks_come_from_the_first_row_and_may_exceed_later_lists() {
        assert_eq!(ks_for(0), Vec::<usize>::new());
        assert_eq!(ks_for(2), [1]);
        assert_eq!(ks_for(50), TOP_KS);
        assert_eq!(ks_for(200), TOP_KS);
        // The first row has 20 predictions; the second only 2, so K = 20 exceeds its list.
        let first: Vec<String> = (0..20).map(|i| format!("<a_{i}><b_0>")).collect();
        let second = vec![item(5), item(3)];
        let r = evaluate(&[first, second], &[item(19), item(3)], &catalogue()).unwrap();
        assert_eq!(r.ks, [1, 3, 5, 10, 20]);
        // The first row's list holds 10 predictions outside the catalogue before its hit.
        assert_eq!(r.invalid, 10);
        assert_eq!(r.hr[&1], 0.0);
        assert_eq!(r.hr[&3], 0.5);
        assert_eq!(r.hr[&10], 0.5);
        assert_eq!(r.hr[&20], 1.0);
        // Gains: rank 19 → 1/log2(21), rank 1 → 1/log2(3).
        assert!(close(
            r.ndcg[&20],
            (LN2 / 3f64.ln() + LN2 / 21f64.ln()) / 2.0
        ));
    }

    #[test]
    fn stripping_matches_python() {
        assert_eq!(strip_target(" \"<a_1><b_0>\"\n"), "<a_1><b_0>");
        // strip(" \n\"") does not remove tabs.
        assert_eq!(strip_target("\t<a_1>\n"), "\t<a_1>");
        assert_eq!(strip_prediction("\"\n <a_1><b_0> \t\n\""), "<a_1><b_0>");
        // Quotes inside whitespace survive: the quote strip runs first.
        assert_eq!(strip_prediction(" \"<a_1>\" "), "\"<a_1>\"");
        assert_eq!(strip_prediction("\x1c<a_1>\u{3000}"), "<a_1>");
        assert_eq!(strip_item("<a_1><b_0>\tTitle\t42\n"), "<a_1><b_0>");
        let preds = vec![strings(&["\"<a_3><b_0>\"\n", "\n<a_1><b_0> "])];
        let targets = strings(&["\"<a_1><b_0>\"\n"]);
        let r = evaluate(&preds, &targets, &catalogue()).unwrap();
        assert_eq!(r.hr[&1], 0.0);
        assert_eq!(r.invalid, 0);
        let r2 = evaluate(&preds, &[" <a_1><b_0>".to_string()], &set(&[])).unwrap();
        // Both predictions are outside an empty catalogue; the hit is at rank 1.
        assert_eq!(r2.invalid, 2);
        assert_eq!(r2.ndcg[&1], 0.0);
    }

    #[test]
    fn bit_identical_to_calc_py() {
        // Expected values printed by Python (calc.py's arithmetic on these ranks, repr()).
        let ranks = [
            Some(0),
            Some(4),
            None,
            Some(2),
            Some(7),
            Some(1),
            None,
            Some(49),
            Some(19),
            Some(3),
            Some(12),
            Some(0),
            Some(33),
        ];
        let mut acc = MetricsAccumulator::new(TOP_KS.to_vec());
        for r in ranks {
            acc.add(r, 0);
        }
        let r = acc.report();
        let ndcg = [
            0.15384615384615385,
            0.24084075027472746,
            0.303727624529184,
            0.32799415351270156,
            0.3657110599537898,
            0.3942687873601489,
        ];
        let hr = [
            0.15384615384615385,
            0.3076923076923077,
            0.46153846153846156,
            0.5384615384615384,
            0.6923076923076923,
            0.8461538461538461,
        ];
        for (j, k) in TOP_KS.iter().enumerate() {
            assert_eq!(r.ndcg[k], ndcg[j], "NDCG@{k}");
            assert_eq!(r.hr[k], hr[j], "HR@{k}");
        }
    }

    #[test]
    fn accumulator_report_and_markdown() {
        let mut acc = MetricsAccumulator::new(vec![1, 5]);
        assert!(acc.is_empty());
        assert_eq!(acc.report().hr[&5], 0.0);
        acc.add(Some(0), 0);
        acc.add(Some(4), 1);
        acc.add(None, 2);
        let r = acc.report();
        assert_eq!((r.n, r.invalid), (3, 3));
        assert!(close(r.hr[&5], 2.0 / 3.0));
        assert!(close(r.ndcg[&5], (1.0 + LN2 / 6f64.ln()) / 3.0));
        let md = r.to_markdown();
        assert!(
            md.starts_with("| K | HR@K | NDCG@K |\n|---:|---:|---:|\n| 1 | 0.3333 | 0.3333 |\n")
        );
        assert!(md.contains("| 5 | 0.6667 | 0.4623 |"), "{md}");
        assert!(md.contains("rows: 3, invalid predictions: 3"));
        let json = serde_json::to_string(&r).unwrap();
        let back: MetricsReport = serde_json::from_str(&json).unwrap();
        // serde_json's default float parsing may differ from the printed value in the last bit.
        assert_eq!(
            (back.n, &back.ks, &back.hr, back.invalid),
            (r.n, &r.ks, &r.hr, r.invalid)
        );
        assert!(r.ks.iter().all(|k| close(back.ndcg[k], r.ndcg[k])));
        assert!(evaluate(&[vec!["x"]], &[], &set(&[])).is_err());
    }
}
