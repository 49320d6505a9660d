//! `compare`: is configuration B really better than configuration A on the same rows?
//!
//! Two `eval` runs of the same split differ by a few rows at HR@10 ≈ 0.1, well inside what the
//! choice of rows alone would move, and two training seeds of one command differ by as much.
//! This reads each run's `predictions.json`, pairs the runs row by row and reports, per metric,
//! each side's mean and spread over its runs, the difference with a 95% interval and a p-value.
//!
//! Rows are compared in item ids whenever every run names them so: a baseline eval lists item
//! ids, and a generative eval records the target item and the items each predicted SID names. A
//! generative row is a hit at rank r when the SID at rank r names the target item, which is
//! calc.py's SID equality. Only when no run carries item ids (all generative, from an older eval)
//! are rows compared by SID strings.
//!
//! Statistics. Every run of both sides scores the same rows, so the pairing is by row.
//! * One run per side: the paired bootstrap over rows (95% interval of `b − a`) and the paired
//!   sign-flip (randomisation) test. Most rows are hit or missed by both runs; only the rows
//!   where they disagree carry information, and pairing uses exactly those.
//! * Several runs (seeds) on a side: each row's score is averaged over that side's runs, and a
//!   two-level bootstrap resamples rows (shared by both sides, keeping the pairing) and, within
//!   each side, runs with replacement. Its 95% interval therefore carries both the choice of rows
//!   and seed-to-seed spread; the p-value is read off the same distribution (twice the smaller
//!   tail beyond 0), so `p < 0.05` exactly when the interval excludes 0. With three seeds the
//!   seed level is coarse and, if anything, too narrow (a bootstrap of n draws has (n−1)/n of the
//!   variance), so each pair of runs is also tested on its own (the per-run table): when one
//!   side has a single run (a deterministic baseline) every run of the other side is compared
//!   with it, with equal counts runs pair in the order given (seed i with seed i), otherwise
//!   every pair.

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::cli::CompareArgs;
use crate::error::{Result, TrainerError};
use sidrec::metrics::{strip_prediction, strip_target};
use sidrec::ItemId;

/// One row of either kind of `predictions.json`; other fields are ignored.
#[derive(Debug, Deserialize)]
struct PredictionRow {
    output: String,
    predict: Vec<String>,
    /// Generative evals: the items each predicted SID names.
    #[serde(default)]
    predict_items: Option<Vec<Vec<ItemId>>>,
    /// Generative evals: the target item.
    #[serde(default)]
    target_item: Option<ItemId>,
    /// The history in item ids (both kinds, from current evals).
    #[serde(default)]
    history: Option<Vec<ItemId>>,
}

/// How a run names its targets.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Item(ItemId),
    Sid(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Item(i) => write!(f, "item {i}"),
            Target::Sid(s) => write!(f, "SID {s}"),
        }
    }
}

/// One run read back: per row its target, history (if recorded) and the target's rank.
#[derive(Debug)]
struct Run {
    path: PathBuf,
    targets: Vec<Target>,
    histories: Vec<Option<Vec<ItemId>>>,
    ranks: Vec<Option<usize>>,
}

impl Run {
    fn by_items(&self) -> bool {
        matches!(self.targets.first(), Some(Target::Item(_)))
    }
}

/// The comparison of one metric (HR@K or NDCG@K) between two sides.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MetricComparison {
    /// `HR@10`, `NDCG@5`, ...
    pub metric: String,
    /// Side A: mean over its runs of the mean over rows.
    pub a: f64,
    /// Side B: the same.
    pub b: f64,
    /// Sample standard deviation over side A's runs (0 for one run).
    pub a_sd: f64,
    /// Sample standard deviation over side B's runs (0 for one run).
    pub b_sd: f64,
    /// `b − a`.
    pub diff: f64,
    /// 2.5th percentile of the bootstrap distribution of `b − a`.
    pub ci_low: f64,
    /// 97.5th percentile of the bootstrap distribution of `b − a`.
    pub ci_high: f64,
    /// Two-sided p-value of "no difference".
    pub p_value: f64,
    /// Test behind `p_value`: `sign-flip` (one run per side) or `bootstrap` (rows and runs).
    pub test: String,
    /// Rows where B scores higher than A (run-averaged scores).
    pub rows_b_better: usize,
    /// Rows where A scores higher than B.
    pub rows_a_better: usize,
}

/// One run of A against one run of B.
#[derive(Debug, Clone, Serialize)]
pub struct RunPair {
    /// Run A's predictions file.
    pub a: String,
    /// Run B's predictions file.
    pub b: String,
    /// Paired bootstrap and sign-flip test per metric.
    pub metrics: Vec<MetricComparison>,
}

/// Everything `compare` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Side A's predictions files (one per run).
    pub a: Vec<String>,
    /// Side B's predictions files.
    pub b: Vec<String>,
    /// Paired rows.
    pub rows: usize,
    /// Whether rows were matched by item ids (else by SID strings).
    pub by_items: bool,
    /// Bootstrap resamples (and sign flips).
    pub resamples: usize,
    /// Seed of the resampling procedures.
    pub seed: u64,
    /// Side against side, one entry per metric, HR first, then NDCG, by K.
    pub metrics: Vec<MetricComparison>,
    /// Run against run (empty when each side has one run: `metrics` is that pair).
    pub pairs: Vec<RunPair>,
}

/// `predictions.json` of an eval directory, or the file itself.
fn predictions_path(p: &Path) -> PathBuf {
    if p.is_dir() {
        p.join("predictions.json")
    } else {
        p.to_path_buf()
    }
}

/// Read one run: targets in item ids where the file has them, else SIDs as calc.py strips them.
fn read_run(path: &Path) -> Result<Run> {
    let path = predictions_path(path);
    let rows: Vec<PredictionRow> = sidrec::io::read_json(&path, "an eval predictions.json")?;
    if rows.is_empty() {
        return Err(TrainerError::Invalid(format!(
            "{} has no rows",
            path.display()
        )));
    }
    let n = rows.len();
    let mut run = Run {
        path,
        targets: Vec::with_capacity(n),
        histories: Vec::with_capacity(n),
        ranks: Vec::with_capacity(n),
    };
    for (i, row) in rows.into_iter().enumerate() {
        let item_target = strip_target(&row.output).parse::<ItemId>().ok();
        let (target, rank) = match (&row.predict_items, row.target_item.or(item_target)) {
            // Generative with item ids: a hit where the predicted SID names the target.
            (Some(lists), Some(t)) => (
                Target::Item(t),
                lists.iter().position(|items| items.contains(&t)),
            ),
            // A baseline: the output and every prediction are item ids.
            (None, Some(t)) => {
                let list = row
                    .predict
                    .iter()
                    .map(|p| strip_prediction(p).parse::<ItemId>())
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|_| {
                        TrainerError::Invalid(format!(
                            "{} row {i} (0-based): target {t} is an item id but a prediction is not",
                            run.path.display()
                        ))
                    })?;
                (Target::Item(t), list.iter().position(|&p| p == t))
            }
            (Some(_), None) => {
                return Err(TrainerError::Invalid(format!(
                    "{} row {i} (0-based): predict_items without target_item",
                    run.path.display()
                )))
            }
            (None, None) => {
                let t = strip_target(&row.output).to_string();
                let rank = row.predict.iter().position(|p| strip_prediction(p) == t);
                (Target::Sid(t), rank)
            }
        };
        if i > 0 && matches!(target, Target::Item(_)) != run.by_items() {
            return Err(TrainerError::Invalid(format!(
                "{} row {i} (0-based) names its target as {target} but row 0 as {}",
                run.path.display(),
                run.targets[0]
            )));
        }
        run.targets.push(target);
        run.histories.push(row.history);
        run.ranks.push(rank);
    }
    Ok(run)
}

/// Check that `other` scores the same rows as `first`, by target (and history where both have
/// it), naming the first row that differs.
fn check_same_rows(first: &Run, other: &Run) -> Result<()> {
    let (pa, pb) = (first.path.display(), other.path.display());
    if first.targets.len() != other.targets.len() {
        return Err(TrainerError::Invalid(format!(
            "{pa} has {} rows but {pb} has {}: compare evals of the same split and --limit",
            first.targets.len(),
            other.targets.len()
        )));
    }
    if first.by_items() != other.by_items() {
        let old = if first.by_items() { &pb } else { &pa };
        return Err(TrainerError::Invalid(format!(
            "{old} names targets by SID only (written by an older `eval`), the other run by item \
             ids: re-run `eval` for it, which records item ids, to compare it with a baseline"
        )));
    }
    for i in 0..first.targets.len() {
        if first.targets[i] != other.targets[i] {
            return Err(TrainerError::Invalid(format!(
                "row {i} (0-based) has target {} in {pa} but {} in {pb}: the runs are not over \
                 the same rows",
                first.targets[i], other.targets[i]
            )));
        }
        if let (Some(ha), Some(hb)) = (&first.histories[i], &other.histories[i]) {
            if ha != hb {
                return Err(TrainerError::Invalid(format!(
                    "row {i} (0-based) has history {ha:?} in {pa} but {hb:?} in {pb}: the runs \
                     are not over the same rows"
                )));
            }
        }
    }
    Ok(())
}

/// HR@k and NDCG@k of one row whose target sits at `rank`.
fn row_scores(rank: Option<usize>, k: usize) -> (f64, f64) {
    match rank {
        Some(r) if r < k => (1.0, 1.0 / ((r + 2) as f64).log2()),
        _ => (0.0, 0.0),
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Sample standard deviation (n − 1); 0 for fewer than two values.
fn sample_sd(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

/// The `q` quantile of sorted `v` (nearest rank), or `fallback` when `v` is empty.
fn quantile(v: &[f64], q: f64, fallback: f64) -> f64 {
    if v.is_empty() {
        fallback
    } else {
        v[((q * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)]
    }
}

/// Paired comparison of per-row scores `a` and `b` of one run each (same length, non-empty).
pub fn compare_scores(
    metric: &str,
    a: &[f64],
    b: &[f64],
    resamples: usize,
    seed: u64,
) -> MetricComparison {
    let n = a.len();
    let diffs: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
    let observed = mean(&diffs);

    // Bootstrap over rows: resample row indices, keep the pairing.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut boot: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| diffs[rng.gen_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    boot.sort_by(f64::total_cmp);

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
        a_sd: 0.0,
        b_sd: 0.0,
        diff: observed,
        ci_low: quantile(&boot, 0.025, observed),
        ci_high: quantile(&boot, 0.975, observed),
        p_value,
        test: "sign-flip".into(),
        rows_b_better: diffs.iter().filter(|d| **d > 0.0).count(),
        rows_a_better: diffs.iter().filter(|d| **d < 0.0).count(),
    }
}

/// Side against side when a side has several runs: `a[run][row]`, `b[run][row]` (every run the
/// same non-zero length). Row scores are averaged over each side's runs; the two-level
/// bootstrap resamples rows (shared by both sides) and runs within each side.
pub fn compare_runs(
    metric: &str,
    a: &[Vec<f64>],
    b: &[Vec<f64>],
    resamples: usize,
    seed: u64,
) -> MetricComparison {
    if a.len() == 1 && b.len() == 1 {
        return compare_scores(metric, &a[0], &b[0], resamples, seed);
    }
    let n = a[0].len();
    let avg = |side: &[Vec<f64>]| -> Vec<f64> {
        (0..n)
            .map(|r| side.iter().map(|run| run[r]).sum::<f64>() / side.len() as f64)
            .collect()
    };
    let (a_avg, b_avg) = (avg(a), avg(b));
    let diffs: Vec<f64> = a_avg.iter().zip(&b_avg).map(|(x, y)| y - x).collect();
    let observed = mean(&diffs);

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut boot = Vec::with_capacity(resamples);
    let mut rows = vec![0usize; n];
    for _ in 0..resamples {
        rows.iter_mut().for_each(|r| *r = rng.gen_range(0..n));
        // Each drawn run's mean over the drawn rows; a side's value is the mean over its draws.
        let mut side_mean = |side: &[Vec<f64>]| -> f64 {
            let k = side.len();
            (0..k)
                .map(|_| {
                    let run = &side[rng.gen_range(0..k)];
                    rows.iter().map(|&r| run[r]).sum::<f64>() / n as f64
                })
                .sum::<f64>()
                / k as f64
        };
        let ma = side_mean(a);
        let mb = side_mean(b);
        boot.push(mb - ma);
    }
    boot.sort_by(f64::total_cmp);
    // Twice the smaller tail at or beyond 0, counting the observed value as one draw.
    let below = boot.iter().filter(|d| **d <= 0.0).count();
    let above = boot.iter().filter(|d| **d >= 0.0).count();
    let p_value = ((2 * below.min(above) + 1) as f64 / (resamples + 1) as f64).min(1.0);

    let run_means = |side: &[Vec<f64>]| -> Vec<f64> { side.iter().map(|r| mean(r)).collect() };
    let (ma, mb) = (run_means(a), run_means(b));
    MetricComparison {
        metric: metric.to_string(),
        a: mean(&ma),
        b: mean(&mb),
        a_sd: sample_sd(&ma),
        b_sd: sample_sd(&mb),
        diff: observed,
        ci_low: quantile(&boot, 0.025, observed),
        ci_high: quantile(&boot, 0.975, observed),
        p_value,
        test: "bootstrap".into(),
        rows_b_better: diffs.iter().filter(|d| **d > 0.0).count(),
        rows_a_better: diffs.iter().filter(|d| **d < 0.0).count(),
    }
}

/// Which runs of A meet which runs of B in the per-run table (indices).
fn run_pairs(na: usize, nb: usize) -> Vec<(usize, usize)> {
    if na == 1 && nb == 1 {
        Vec::new()
    } else if na == 1 {
        (0..nb).map(|j| (0, j)).collect()
    } else if nb == 1 {
        (0..na).map(|i| (i, 0)).collect()
    } else if na == nb {
        (0..na).map(|i| (i, i)).collect()
    } else {
        (0..na).flat_map(|i| (0..nb).map(move |j| (i, j))).collect()
    }
}

/// Metric names and per-row scores of `ranks` at cut-offs `ks`, HR first, then NDCG.
fn metric_scores(ranks: &[Option<usize>], ks: &[usize]) -> Vec<(String, Vec<f64>)> {
    let mut out = Vec::new();
    for (name, pick_ndcg) in [("HR", false), ("NDCG", true)] {
        for &k in ks {
            let s = ranks
                .iter()
                .map(|r| {
                    let (hr, ndcg) = row_scores(*r, k);
                    if pick_ndcg {
                        ndcg
                    } else {
                        hr
                    }
                })
                .collect();
            out.push((format!("{name}@{k}"), s));
        }
    }
    out
}

/// Compare the runs of side A with the runs of side B row by row at cut-offs `ks`.
pub fn compare_files(
    a: &[PathBuf],
    b: &[PathBuf],
    ks: &[usize],
    resamples: usize,
    seed: u64,
) -> Result<Comparison> {
    if a.is_empty() || b.is_empty() {
        return Err(TrainerError::Invalid(
            "--a and --b each need at least one eval".into(),
        ));
    }
    let ra = a.iter().map(|p| read_run(p)).collect::<Result<Vec<_>>>()?;
    let rb = b.iter().map(|p| read_run(p)).collect::<Result<Vec<_>>>()?;
    for other in ra.iter().skip(1).chain(&rb) {
        check_same_rows(&ra[0], other)?;
    }
    // scores[side][run] = [(metric, per-row scores)]
    let sa: Vec<_> = ra.iter().map(|r| metric_scores(&r.ranks, ks)).collect();
    let sb: Vec<_> = rb.iter().map(|r| metric_scores(&r.ranks, ks)).collect();
    let n_metrics = sa[0].len();
    let metrics = (0..n_metrics)
        .map(|m| {
            let side = |s: &[Vec<(String, Vec<f64>)>]| -> Vec<Vec<f64>> {
                s.iter().map(|run| run[m].1.clone()).collect()
            };
            compare_runs(&sa[0][m].0, &side(&sa), &side(&sb), resamples, seed)
        })
        .collect();
    let pairs = run_pairs(ra.len(), rb.len())
        .into_iter()
        .map(|(i, j)| RunPair {
            a: ra[i].path.display().to_string(),
            b: rb[j].path.display().to_string(),
            metrics: (0..n_metrics)
                .map(|m| compare_scores(&sa[i][m].0, &sa[i][m].1, &sb[j][m].1, resamples, seed))
                .collect(),
        })
        .collect();
    let names = |runs: &[Run]| runs.iter().map(|r| r.path.display().to_string()).collect();
    Ok(Comparison {
        a: names(&ra),
        b: names(&rb),
        rows: ra[0].targets.len(),
        by_items: ra[0].by_items(),
        resamples,
        seed,
        metrics,
        pairs,
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

/// `0.1234` for one run, `0.1234 ± 0.0056` (sample sd over runs) for several.
fn format_side(mean: f64, sd: f64, runs: usize) -> String {
    if runs > 1 {
        format!("{mean:.4} ± {sd:.4}")
    } else {
        format!("{mean:.4}")
    }
}

impl Comparison {
    /// Markdown: the side-against-side table, then the run-against-run table if there is one.
    pub fn to_markdown(&self) -> String {
        let list = |v: &[String]| v.join(", ");
        let (na, nb) = (self.a.len(), self.b.len());
        let several = na > 1 || nb > 1;
        let mut s = format!(
            "A ({na} run{}): {}\nB ({nb} run{}): {}\n{} paired rows, matched by {}; {} resamples (seed {})\n",
            if na == 1 { "" } else { "s" },
            list(&self.a),
            if nb == 1 { "" } else { "s" },
            list(&self.b),
            self.rows,
            if self.by_items { "item id" } else { "SID" },
            self.resamples,
            self.seed
        );
        if several {
            s.push_str(
                "A and B: mean ± sample sd over runs; B − A on run-averaged rows, 95% CI and p from \
                 a bootstrap over rows and runs\n",
            );
        }
        s.push_str(
            "\n| metric | A | B | B − A | 95% CI | p | test | rows B > A | rows A > B |\n\
             |---|---:|---:|---:|---|---:|---|---:|---:|\n",
        );
        for m in &self.metrics {
            s.push_str(&format!(
                "| {} | {} | {} | {:+.4} | [{:+.4}, {:+.4}] | {} | {} | {} | {} |\n",
                m.metric,
                format_side(m.a, m.a_sd, na),
                format_side(m.b, m.b_sd, nb),
                m.diff,
                m.ci_low,
                m.ci_high,
                format_p(m.p_value),
                m.test,
                m.rows_b_better,
                m.rows_a_better
            ));
        }
        if !self.pairs.is_empty() {
            s.push_str(
                "\nRun against run (paired bootstrap CI, sign-flip p):\n\n\
                 | A run | B run | metric | A | B | B − A | 95% CI | p |\n\
                 |---|---|---|---:|---:|---:|---|---:|\n",
            );
            for pair in &self.pairs {
                for m in &pair.metrics {
                    s.push_str(&format!(
                        "| {} | {} | {} | {:.4} | {:.4} | {:+.4} | [{:+.4}, {:+.4}] | {} |\n",
                        pair.a,
                        pair.b,
                        m.metric,
                        m.a,
                        m.b,
                        m.diff,
                        m.ci_low,
                        m.ci_high,
                        format_p(m.p_value)
                    ));
                }
            }
        }
        s
    }
}

/// `sidrec-trainer compare`: print the tables, and write them as JSON with `--json`.
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
        let c = compare_files(
            std::slice::from_ref(&a),
            std::slice::from_ref(&b),
            &[1, 2],
            100,
            1,
        )
        .unwrap();
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
        assert!(!c.by_items && c.pairs.is_empty());

        let other = write(
            "other.json",
            serde_json::json!([
                {"output": "<a_1>", "predict": ["<a_1>"]},
                {"output": "<a_9>", "predict": ["<a_9>"]},
            ]),
        );
        let e = compare_files(std::slice::from_ref(&a), &[other], &[1], 10, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("row 1") && e.contains("<a_9>"), "{e}");
        let short = write(
            "short.json",
            serde_json::json!([{"output": "<a_1>", "predict": []}]),
        );
        let e = compare_files(std::slice::from_ref(&a), &[short], &[1], 10, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("has 2 rows"), "{e}");
        let bad = write("bad.json", serde_json::json!({"rows": 1}));
        let e = compare_files(&[bad], std::slice::from_ref(&a), &[1], 10, 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bad.json") && e.contains("predictions.json"),
            "{e}"
        );
    }

    #[test]
    fn generative_and_baseline_rows_meet_in_item_ids() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, rows: serde_json::Value| {
            let p = dir.path().join(name);
            std::fs::write(&p, serde_json::to_vec(&rows).unwrap()).unwrap();
            p
        };
        // A collision: SID <a_1> names items 7 and 8; a hit for target 8 at rank 0.
        let gen = write(
            "gen.json",
            serde_json::json!([
                {"output": "<a_1>\n", "predict": ["<a_1>", "<a_2>"], "history": [1, 2],
                 "target_item": 8, "predict_items": [[7, 8], [9]]},
                {"output": "<a_3>\n", "predict": ["<a_2>", "<a_3>"], "history": [3],
                 "target_item": 5, "predict_items": [[9], [5]]},
            ]),
        );
        let base = write(
            "base.json",
            serde_json::json!([
                {"output": "8", "predict": ["9", "8"], "history": [1, 2]},
                {"output": "5", "predict": ["5", "9"], "history": [3]},
            ]),
        );
        let c = compare_files(
            std::slice::from_ref(&base),
            std::slice::from_ref(&gen),
            &[1],
            50,
            1,
        )
        .unwrap();
        assert!(c.by_items);
        // HR@1: baseline hits row 1, generative row 0.
        assert_eq!((c.metrics[0].a, c.metrics[0].b), (0.5, 0.5));
        assert_eq!(
            (c.metrics[0].rows_a_better, c.metrics[0].rows_b_better),
            (1, 1)
        );

        // Other histories are other rows, even with the same targets.
        let moved = write(
            "moved.json",
            serde_json::json!([
                {"output": "8", "predict": ["8"], "history": [1, 4]},
                {"output": "5", "predict": ["5"], "history": [3]},
            ]),
        );
        let e = compare_files(std::slice::from_ref(&gen), &[moved], &[1], 10, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("row 0") && e.contains("history"), "{e}");
        // An older generative eval (SIDs only) cannot meet a baseline.
        let old = write(
            "old.json",
            serde_json::json!([
                {"output": "<a_1>\n", "predict": ["<a_1>"]},
                {"output": "<a_3>\n", "predict": ["<a_3>"]},
            ]),
        );
        let e = compare_files(&[base], std::slice::from_ref(&old), &[1], 10, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("old.json") && e.contains("re-run `eval`"), "{e}");
    }

    #[test]
    fn several_runs_average_rows_and_widen_with_seed_spread() {
        let n = 400;
        let a = vec![vec![0.0; n]];
        // Three seeds that all gain 40 rows: significant, and the pooled mean is their mean.
        let gain = |rows: std::ops::Range<usize>| -> Vec<f64> {
            (0..n)
                .map(|i| f64::from(u8::from(rows.contains(&i))))
                .collect()
        };
        let b = vec![gain(0..40), gain(40..80), gain(80..120)];
        let c = compare_runs("HR@10", &a, &b, 2000, 5);
        assert_eq!(c.test, "bootstrap");
        assert!(
            (c.b - 0.1).abs() < 1e-12 && c.b_sd < 1e-12 && c.a_sd == 0.0,
            "{c:?}"
        );
        assert!(c.ci_low > 0.0 && c.p_value < 0.01, "{c:?}");
        assert_eq!(c.rows_b_better, 120);

        // Same mean gain, but one seed carries all of it and the others lose: the seed level
        // of the bootstrap makes the interval cover 0.
        let lose = |rows: std::ops::Range<usize>| -> Vec<f64> {
            (0..n)
                .map(|i| f64::from(u8::from(!rows.contains(&i))))
                .collect()
        };
        let base = vec![vec![1.0; n]];
        let mixed = vec![lose(0..0), lose(0..0), lose(0..0)];
        let same = compare_runs("HR@10", &base, &mixed, 500, 5);
        assert_eq!((same.diff, same.p_value), (0.0, 1.0));
        let half = vec![gain(0..200)];
        let spread = vec![gain(0..380), gain(0..190), gain(0..190)];
        let c = compare_runs("HR@10", &half, &spread, 2000, 5);
        assert!(c.diff > 0.1 && c.b_sd > 0.2, "{c:?}");
        assert!(c.ci_low < 0.0 && c.p_value > 0.05, "{c:?}");
        let flat = vec![vec![0.0; n]];
        // With a single run each, it is the paired sign-flip test.
        assert_eq!(
            compare_runs("HR@1", &flat, &[gain(0..40)], 100, 1).test,
            "sign-flip"
        );
        assert_eq!(run_pairs(1, 3), [(0, 0), (0, 1), (0, 2)]);
        assert_eq!(run_pairs(2, 2), [(0, 0), (1, 1)]);
        assert_eq!(run_pairs(2, 3).len(), 6);
        assert!(run_pairs(1, 1).is_empty());
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
