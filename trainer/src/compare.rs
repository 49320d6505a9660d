//! `compare`: is checkpoint B really better than checkpoint A on the same rows?
//!
//! Two `eval` runs of the same split differ by a few rows at HR@10 ≈ 0.1, well inside what the
//! choice of rows alone would move. This reads both runs' `predictions.json` (generative or
//! baseline: both carry `output` and a ranked `predict` list), pairs them row by row and reports,
//! per metric, the difference of the means with a paired bootstrap 95% interval and a paired
//! sign-flip (randomisation) p-value. Pairing matters: most rows are hit or missed by both runs,
//! and only the rows where they disagree carry information about the difference.

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::cli::CompareArgs;
use crate::error::{Result, TrainerError};
use sidrec::metrics::{strip_prediction, strip_target};

/// One row of either kind of `predictions.json`; other fields are ignored.
#[derive(Debug, Deserialize)]
struct PredictionRow {
    output: String,
    predict: Vec<String>,
}

/// The paired comparison of one metric (HR@K or NDCG@K).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MetricComparison {
    /// `HR@10`, `NDCG@5`, ...
    pub metric: String,
    /// Mean over rows for run A.
    pub a: f64,
    /// Mean over rows for run B.
    pub b: f64,
    /// `b − a`.
    pub diff: f64,
    /// 2.5th percentile of the bootstrap distribution of `b − a`.
    pub ci_low: f64,
    /// 97.5th percentile of the bootstrap distribution of `b − a`.
    pub ci_high: f64,
    /// Two-sided p-value of the paired sign-flip test of "no difference".
    pub p_value: f64,
    /// Rows where B scores higher than A.
    pub rows_b_better: usize,
    /// Rows where A scores higher than B.
    pub rows_a_better: usize,
}

/// Everything `compare` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Run A's predictions file.
    pub a: String,
    /// Run B's predictions file.
    pub b: String,
    /// Paired rows.
    pub rows: usize,
    /// Bootstrap and sign-flip resamples.
    pub resamples: usize,
    /// Seed of both resampling procedures.
    pub seed: u64,
    /// One entry per metric, HR first, then NDCG, by K.
    pub metrics: Vec<MetricComparison>,
}

/// `predictions.json` of an eval directory, or the file itself.
fn predictions_path(p: &Path) -> PathBuf {
    if p.is_dir() {
        p.join("predictions.json")
    } else {
        p.to_path_buf()
    }
}

/// Per-row rank of the target in each row's list (`None` on a miss), as calc.py strips them.
fn read_ranks(path: &Path) -> Result<(Vec<String>, Vec<Option<usize>>)> {
    let bytes = std::fs::read(path).map_err(|e| TrainerError::io(path, e))?;
    let rows: Vec<PredictionRow> = serde_json::from_slice(&bytes).map_err(|e| {
        TrainerError::parse(
            path,
            e.line() as u64,
            format!("not an eval predictions.json: {e}"),
        )
    })?;
    let mut targets = Vec::with_capacity(rows.len());
    let mut ranks = Vec::with_capacity(rows.len());
    for row in rows {
        let target = strip_target(&row.output).to_string();
        ranks.push(
            row.predict
                .iter()
                .position(|p| strip_prediction(p) == target),
        );
        targets.push(target);
    }
    Ok((targets, ranks))
}

/// HR@k and NDCG@k of one row whose target sits at `rank`.
fn row_scores(rank: Option<usize>, k: usize) -> (f64, f64) {
    match rank {
        Some(r) if r < k => (1.0, 1.0 / ((r + 2) as f64).log2()),
        _ => (0.0, 0.0),
    }
}

/// Paired comparison of per-row scores `a` and `b` (same length, non-empty).
pub fn compare_scores(
    metric: &str,
    a: &[f64],
    b: &[f64],
    resamples: usize,
    seed: u64,
) -> MetricComparison {
    let n = a.len();
    let diffs: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / n as f64;
    let observed = mean(&diffs);

    // Bootstrap over rows: resample row indices, keep the pairing.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut boot: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| diffs[rng.gen_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    boot.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        if boot.is_empty() {
            observed
        } else {
            boot[((q * (boot.len() - 1) as f64).round() as usize).min(boot.len() - 1)]
        }
    };

    // Sign flips: under "no difference" each row's difference is as likely negated. Only the
    // rows that differ move the statistic, so flip just those.
    let nonzero: Vec<f64> = diffs.iter().copied().filter(|d| *d != 0.0).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_f11b);
    let tol = 1e-12 * (1.0 + observed.abs());
    let extreme = (0..resamples)
        .filter(|_| {
            let s: f64 = nonzero
                .iter()
                .map(|d| if rng.gen::<bool>() { *d } else { -*d })
                .sum();
            (s / n as f64).abs() >= observed.abs() - tol
        })
        .count();
    // (extreme + 1) / (resamples + 1): the observed labelling counts as one of the draws, so the
    // p-value is never 0.
    let p_value = (extreme + 1) as f64 / (resamples + 1) as f64;

    MetricComparison {
        metric: metric.to_string(),
        a: mean(a),
        b: mean(b),
        diff: observed,
        ci_low: pct(0.025),
        ci_high: pct(0.975),
        p_value,
        rows_b_better: diffs.iter().filter(|d| **d > 0.0).count(),
        rows_a_better: diffs.iter().filter(|d| **d < 0.0).count(),
    }
}

/// Compare two predictions files row by row at cut-offs `ks`.
pub fn compare_files(
    a: &Path,
    b: &Path,
    ks: &[usize],
    resamples: usize,
    seed: u64,
) -> Result<Comparison> {
    let (pa, pb) = (predictions_path(a), predictions_path(b));
    let (ta, ra) = read_ranks(&pa)?;
    let (tb, rb) = read_ranks(&pb)?;
    if ta.len() != tb.len() {
        return Err(TrainerError::Invalid(format!(
            "{} has {} rows but {} has {}: compare two evals of the same split and --limit",
            pa.display(),
            ta.len(),
            pb.display(),
            tb.len()
        )));
    }
    if ta.is_empty() {
        return Err(TrainerError::Invalid(format!(
            "{} has no rows",
            pa.display()
        )));
    }
    if let Some(i) = (0..ta.len()).find(|&i| ta[i] != tb[i]) {
        return Err(TrainerError::Invalid(format!(
            "row {} (0-based) has target {:?} in {} but {:?} in {}: the runs are not over the same rows \
             (a generative eval and a baseline eval name targets differently)",
            i,
            ta[i],
            pa.display(),
            tb[i],
            pb.display()
        )));
    }
    let mut metrics = Vec::new();
    for (name, pick) in [("HR", 0usize), ("NDCG", 1)] {
        for &k in ks {
            let score = |ranks: &[Option<usize>]| -> Vec<f64> {
                ranks
                    .iter()
                    .map(|r| {
                        let (hr, ndcg) = row_scores(*r, k);
                        if pick == 0 {
                            hr
                        } else {
                            ndcg
                        }
                    })
                    .collect()
            };
            metrics.push(compare_scores(
                &format!("{name}@{k}"),
                &score(&ra),
                &score(&rb),
                resamples,
                seed,
            ));
        }
    }
    Ok(Comparison {
        a: pa.display().to_string(),
        b: pb.display().to_string(),
        rows: ta.len(),
        resamples,
        seed,
        metrics,
    })
}

/// A p-value to three decimals, or `< 0.001` (the floor is 1 / (resamples + 1)).
fn format_p(p: f64) -> String {
    if p < 0.001 {
        "< 0.001".into()
    } else {
        format!("{p:.3}")
    }
}

impl Comparison {
    /// Markdown table, one line per metric.
    pub fn to_markdown(&self) -> String {
        let mut s = format!(
            "A: {}\nB: {}\n{} paired rows; {} bootstrap resamples and {} sign flips (seed {})\n\n\
             | metric | A | B | B − A | 95% CI (paired bootstrap) | p (sign-flip) | rows B > A | rows A > B |\n\
             |---|---:|---:|---:|---|---:|---:|---:|\n",
            self.a, self.b, self.rows, self.resamples, self.resamples, self.seed
        );
        for m in &self.metrics {
            s.push_str(&format!(
                "| {} | {:.4} | {:.4} | {:+.4} | [{:+.4}, {:+.4}] | {} | {} | {} |\n",
                m.metric,
                m.a,
                m.b,
                m.diff,
                m.ci_low,
                m.ci_high,
                format_p(m.p_value),
                m.rows_b_better,
                m.rows_a_better
            ));
        }
        s
    }
}

/// `sidrec-trainer compare`: print the table, and write it as JSON with `--json`.
pub fn run(args: &CompareArgs) -> Result<()> {
    if args.ks.is_empty() || args.ks.contains(&0) {
        return Err(TrainerError::Invalid(
            "--ks must list cut-offs of at least 1".into(),
        ));
    }
    if args.resamples == 0 {
        return Err(TrainerError::Invalid(
            "--resamples must be at least 1".into(),
        ));
    }
    let c = compare_files(&args.a, &args.b, &args.ks, args.resamples, args.seed)?;
    print!("{}", c.to_markdown());
    if let Some(path) = &args.json {
        let bytes = serde_json::to_vec_pretty(&c)
            .map_err(|e| TrainerError::Invalid(format!("serialising the comparison: {e}")))?;
        sidrec::io::write_bytes_atomic(path, &bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_runs_have_zero_difference_and_p_one() {
        let a = vec![1.0, 0.0, 0.5, 0.0];
        let c = compare_scores("HR@1", &a, &a, 200, 1);
        assert_eq!(c.diff, 0.0);
        assert_eq!((c.ci_low, c.ci_high), (0.0, 0.0));
        assert_eq!(c.p_value, 1.0);
        assert_eq!((c.rows_a_better, c.rows_b_better), (0, 0));
    }

    #[test]
    fn a_consistent_gain_is_significant_and_a_single_row_is_not() {
        // B wins on 40 of 1000 rows and never loses: p ≈ 2^-40 → the floor 1/(R+1).
        let a = vec![0.0; 1000];
        let mut b = a.clone();
        b[..40].iter_mut().for_each(|x| *x = 1.0);
        let c = compare_scores("HR@10", &a, &b, 2000, 7);
        assert!((c.diff - 0.04).abs() < 1e-12);
        assert!(c.ci_low > 0.0 && c.ci_high > c.ci_low, "{c:?}");
        assert!(c.p_value < 0.001, "{c:?}");
        assert_eq!((c.rows_b_better, c.rows_a_better), (40, 0));

        // One row of 1000: as likely a coin flip as not (p = 1 exactly for one flipped row).
        let mut b1 = a.clone();
        b1[3] = 1.0;
        let c1 = compare_scores("HR@10", &a, &b1, 2000, 7);
        assert!(c1.p_value > 0.9, "{c1:?}");
        assert!(c1.ci_low <= 0.0, "{c1:?}");
    }

    #[test]
    fn balanced_wins_and_losses_are_not_significant() {
        let a: Vec<f64> = (0..500).map(|i| (i % 2) as f64).collect();
        let b: Vec<f64> = (0..500).map(|i| ((i + 1) % 2) as f64).collect();
        let c = compare_scores("HR@1", &a, &b, 1000, 3);
        assert_eq!(c.diff, 0.0);
        assert!(c.p_value > 0.5, "{c:?}");
        assert!(c.ci_low < 0.0 && c.ci_high > 0.0, "{c:?}");
    }

    #[test]
    fn files_are_paired_by_row_and_mismatched_rows_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, rows: serde_json::Value| {
            let p = dir.path().join(name);
            std::fs::write(&p, serde_json::to_vec(&rows).unwrap()).unwrap();
            p
        };
        // Generative shape (extra fields ignored), targets with calc.py's trailing newline.
        let a = write(
            "a.json",
            serde_json::json!([
                {"input": "x", "output": "<a_1>\n", "predict": ["<a_2>", "<a_1>"], "scores": [0, 0]},
                {"input": "y", "output": "<a_3>\n", "predict": ["<a_4>", "<a_5>"], "scores": [0, 0]},
            ]),
        );
        let b = write(
            "b.json",
            serde_json::json!([
                {"output": "<a_1>", "predict": ["<a_1>\n", "<a_2>"]},
                {"output": "<a_3>", "predict": ["<a_4>", "<a_5>"]},
            ]),
        );
        let c = compare_files(&a, &b, &[1, 2], 100, 1).unwrap();
        assert_eq!(c.rows, 2);
        let hr1 = &c.metrics[0];
        assert_eq!(hr1.metric, "HR@1");
        assert_eq!((hr1.a, hr1.b, hr1.diff), (0.0, 0.5, 0.5));
        let ndcg2 = &c.metrics[3];
        assert_eq!(ndcg2.metric, "NDCG@2");
        assert!((ndcg2.a - 0.5 / 3f64.log2()).abs() < 1e-12);
        assert!((ndcg2.b - 0.5).abs() < 1e-12);
        assert!(c
            .to_markdown()
            .contains("| HR@1 | 0.0000 | 0.5000 | +0.5000 |"));

        let other = write(
            "other.json",
            serde_json::json!([
                {"output": "<a_1>", "predict": ["<a_1>"]},
                {"output": "<a_9>", "predict": ["<a_9>"]},
            ]),
        );
        let e = compare_files(&a, &other, &[1], 10, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("row 1") && e.contains("<a_9>"), "{e}");
        let short = write(
            "short.json",
            serde_json::json!([{"output": "<a_1>", "predict": []}]),
        );
        let e = compare_files(&a, &short, &[1], 10, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("has 2 rows"), "{e}");
        let bad = write("bad.json", serde_json::json!({"rows": 1}));
        let e = compare_files(&bad, &a, &[1], 10, 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bad.json") && e.contains("predictions.json"),
            "{e}"
        );
    }

    #[test]
    fn tiny_p_values_print_as_a_bound() {
        assert_eq!(format_p(1.0 / 10_001.0), "< 0.001");
        assert_eq!(format_p(0.0123), "0.012");
    }

    #[test]
    fn row_scores_follow_calc_py() {
        assert_eq!(row_scores(Some(0), 1), (1.0, 1.0));
        assert_eq!(row_scores(Some(1), 1), (0.0, 0.0));
        let (hr, ndcg) = row_scores(Some(2), 5);
        assert_eq!(hr, 1.0);
        assert!((ndcg - 0.5).abs() < 1e-12);
        assert_eq!(row_scores(None, 50), (0.0, 0.0));
    }
}
