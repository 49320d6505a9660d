//! `sidrec-trainer hybrid`: fit the last-item transition table on the train split, choose λ
//! (and the table's prior strength β) on the valid split by re-ranking the model's beams, and
//! write a new checkpoint that carries the ranker as `hybrid.json`.
//!
//! Choosing on valid only re-ranks beams already decoded, so the whole grid costs one valid
//! decode (or none, with `--valid-eval`). The input checkpoint is never modified.

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;
use serde_json::json;
use sidrec::checkpoint::{self, Checkpoint};
use sidrec::data::{DatasetDir, Split};
use sidrec::hybrid::{FittedOn, Hybrid, TransitionScorer, HYBRID_FILE};
use sidrec::metrics::{self, MetricsReport};
use sidrec::ItemId;

use crate::cli::{EvalArgs, HybridArgs, OnOff};
use crate::error::{Result, TrainerError};
use crate::eval::{self, Beam};

/// One valid row: its history, target SID and beams.
#[derive(Debug, Clone)]
struct ValidRow {
    history: Vec<ItemId>,
    target: String,
    beams: Vec<Beam>,
}

/// The fields of an eval's `predictions.json` row that re-ranking needs.
#[derive(Debug, Deserialize)]
struct PredictionRow {
    output: String,
    predict: Vec<String>,
    scores: Vec<f32>,
    #[serde(default)]
    model_scores: Option<Vec<f32>>,
    history: Option<Vec<ItemId>>,
    predict_items: Option<Vec<Vec<ItemId>>>,
}

/// The fields of an eval's `report.json` that say what it is.
#[derive(Debug, Deserialize)]
struct ReportHead {
    version: String,
    split: String,
    #[serde(default)]
    ranker: Option<String>,
}

/// One point of the grid and its valid metrics.
#[derive(Debug, Clone, Copy)]
struct GridPoint {
    lambda: f32,
    prior_strength: f64,
    hr10: f64,
    ndcg10: f64,
}

/// Read the rows of a finished pure valid eval of `ck` in `dir`; anything else (another
/// checkpoint, another split, a hybrid eval, a baseline's rows) is refused naming the file.
fn read_valid_eval(dir: &Path, ck: &Checkpoint) -> Result<Vec<ValidRow>> {
    let report_path = dir.join("report.json");
    let head: ReportHead = sidrec::io::read_json(&report_path, "an eval report")?;
    let refuse = |m: String| TrainerError::Invalid(format!("{}: {m}", report_path.display()));
    if head.version != ck.meta.version {
        return Err(refuse(format!(
            "an eval of version {}, not of {} ({})",
            head.version,
            ck.dir.display(),
            ck.meta.version
        )));
    }
    if head.split != Split::Valid.to_string() {
        return Err(refuse(format!(
            "an eval of the {} split; λ is chosen on valid",
            head.split
        )));
    }
    if head.ranker.as_deref().is_some_and(|r| r != "model") {
        return Err(refuse(
            "not a pure model eval (rerun it with --hybrid off)".into(),
        ));
    }
    let preds_path = dir.join("predictions.json");
    let rows: Vec<PredictionRow> = sidrec::io::read_json(&preds_path, "an eval predictions.json")?;
    rows.into_iter()
        .enumerate()
        .map(|(i, r)| {
            let bad = |m: &str| {
                TrainerError::Invalid(format!("{} row {i} (0-based): {m}", preds_path.display()))
            };
            if r.model_scores.is_some() {
                return Err(bad(
                    "a hybrid eval's row (rerun the eval with --hybrid off)",
                ));
            }
            let history = r
                .history
                .ok_or_else(|| bad("no `history` (an eval from an older build?)"))?;
            let items = r
                .predict_items
                .ok_or_else(|| bad("no `predict_items` (an eval from an older build?)"))?;
            if items.len() != r.predict.len() || r.scores.len() != r.predict.len() {
                return Err(bad("predict, scores and predict_items differ in length"));
            }
            let beams = r
                .predict
                .into_iter()
                .zip(items)
                .zip(r.scores)
                .map(|((sid, items), score)| Beam { sid, items, score })
                .collect();
            Ok(ValidRow {
                history,
                target: r.output,
                beams,
            })
        })
        .collect()
}

/// Valid metrics of `rows` ranked by `hybrid` (`None`: the beam's order).
fn score(
    rows: &[ValidRow],
    hybrid: Option<&Hybrid>,
    item_set: &HashSet<String>,
) -> Result<MetricsReport> {
    let predictions: Vec<Vec<String>> = rows
        .iter()
        .map(|r| eval::rank_row(hybrid, &r.history, &r.beams).predict)
        .collect();
    let targets: Vec<String> = rows.iter().map(|r| r.target.clone()).collect();
    Ok(metrics::evaluate(&predictions, &targets, item_set)?)
}

fn at10(m: &MetricsReport) -> (f64, f64) {
    (
        m.hr.get(&10).copied().unwrap_or(0.0),
        m.ndcg.get(&10).copied().unwrap_or(0.0),
    )
}

/// `sidrec-trainer hybrid`.
pub fn run(args: &HybridArgs) -> Result<()> {
    if args.num_beams == 0 || args.batch_size == 0 {
        return Err(TrainerError::Invalid(
            "--num-beams and --batch-size must be at least 1".into(),
        ));
    }
    if let Some(l) = args.lambdas.iter().find(|l| !l.is_finite() || **l < 0.0) {
        return Err(TrainerError::Invalid(format!(
            "--lambdas: {l} is not a finite weight >= 0"
        )));
    }
    if args.prior_strengths.is_empty() {
        return Err(TrainerError::Invalid("--prior-strengths is empty".into()));
    }
    if let Some(b) = args
        .prior_strengths
        .iter()
        .find(|b| !b.is_finite() || **b <= 0.0)
    {
        return Err(TrainerError::Invalid(format!(
            "--prior-strengths: {b} is not a finite strength > 0"
        )));
    }
    let ds = DatasetDir::discover(&args.data)?;
    let train = ds.read_split(Split::Train)?;
    if train.is_empty() {
        return Err(TrainerError::Invalid(format!(
            "{}: no train rows to fit the transition table on",
            ds.split_path(Split::Train).display()
        )));
    }

    let (ck, rows, valid_source) = match &args.valid_eval {
        Some(dir) => {
            let device = sidrec::device::parse_device(&args.device)?;
            let ck = Checkpoint::load(&args.checkpoint, &device, None)?;
            let rows = read_valid_eval(dir, &ck)?;
            (ck, rows, dir.display().to_string())
        }
        None => {
            let eval_args = EvalArgs {
                checkpoint: Some(args.checkpoint.clone()),
                baseline: None,
                sasrec: None,
                data: args.data.clone(),
                split: Split::Valid,
                num_beams: args.num_beams,
                batch_size: args.batch_size,
                mode: None,
                pool: None,
                item_free_share: None,
                prompt_style: None,
                limit: args.valid_rows,
                max_history: None,
                device: args.device.clone(),
                out: None,
                hybrid: Some(OnOff::Off),
            };
            let d = eval::decode(&eval_args, &args.checkpoint)?;
            let rows = d
                .rows
                .iter()
                .zip(d.targets)
                .zip(d.beams)
                .map(|(((_, r), target), beams)| ValidRow {
                    history: r.history_item_id.clone(),
                    target,
                    beams,
                })
                .collect();
            (
                d.ck,
                rows,
                format!("{} (decoded here)", ds.split_path(Split::Valid).display()),
            )
        }
    };
    if rows.is_empty() {
        return Err(TrainerError::Invalid(format!(
            "{valid_source}: no valid rows"
        )));
    }

    let scorer = TransitionScorer::fit(&train, ck.index.len());
    let fitted_on = FittedOn {
        data: args.data.display().to_string(),
        split: Split::Train.to_string(),
        rows: scorer.rows(),
    };
    let item_set: HashSet<String> = ck.index.iter().map(|(_, s)| s.to_string()).collect();
    let pure = score(&rows, None, &item_set)?;
    let (pure_hr, pure_ndcg) = at10(&pure);
    println!(
        "valid ({} rows from {valid_source}): pure model HR@10 {pure_hr:.4} NDCG@10 {pure_ndcg:.4}",
        rows.len()
    );
    println!("| λ | β | HR@10 | NDCG@10 |\n|---:|---:|---:|---:|");
    let mut grid = vec![GridPoint {
        lambda: 0.0,
        prior_strength: args.prior_strengths[0],
        hr10: pure_hr,
        ndcg10: pure_ndcg,
    }];
    let mut candidate = Hybrid {
        lambda: 0.0,
        prior_strength: args.prior_strengths[0],
        scorer,
        fitted_on,
        selection: serde_json::Value::Null,
    };
    for &beta in &args.prior_strengths {
        for &lambda in args.lambdas.iter().filter(|&&l| l > 0.0) {
            candidate.lambda = lambda;
            candidate.prior_strength = beta;
            let (hr10, ndcg10) = at10(&score(&rows, Some(&candidate), &item_set)?);
            println!("| {lambda} | {beta} | {hr10:.4} | {ndcg10:.4} |");
            grid.push(GridPoint {
                lambda,
                prior_strength: beta,
                hr10,
                ndcg10,
            });
        }
    }
    // Best valid NDCG@10, then HR@10; on a tie the earlier point (λ = 0 first) stays.
    let best = grid.iter().copied().fold(grid[0], |b, p| {
        if (p.ndcg10, p.hr10) > (b.ndcg10, b.hr10) {
            p
        } else {
            b
        }
    });
    candidate.lambda = best.lambda;
    candidate.prior_strength = best.prior_strength;
    candidate.selection = json!({
        "split": "valid",
        "rows": rows.len(),
        "num_beams": rows.first().map(|r| r.beams.len()),
        "source": valid_source,
        "metric": "ndcg@10",
        "pure": {"hr@10": pure_hr, "ndcg@10": pure_ndcg},
        "chosen": {"lambda": best.lambda, "prior_strength": best.prior_strength,
                   "hr@10": best.hr10, "ndcg@10": best.ndcg10},
        "grid": grid.iter().map(|p| json!({
            "lambda": p.lambda, "prior_strength": p.prior_strength,
            "hr@10": p.hr10, "ndcg@10": p.ndcg10,
        })).collect::<Vec<_>>(),
    });
    if best.lambda == 0.0 {
        eprintln!(
            "note: no λ > 0 beat the pure model on valid; the hybrid is written with λ = 0 \
             (it ranks as the model does)"
        );
    }
    let mut metrics = ck.meta.metrics.clone();
    let summary = json!({
        "lambda": best.lambda,
        "prior_strength": best.prior_strength,
        "valid": {"hr@10": best.hr10, "ndcg@10": best.ndcg10},
        "valid_pure": {"hr@10": pure_hr, "ndcg@10": pure_ndcg},
    });
    match metrics.as_object_mut() {
        Some(m) => {
            m.insert("hybrid".into(), summary);
        }
        None => metrics = json!({ "hybrid": summary }),
    }
    let bytes = candidate.to_json()?;
    let meta = checkpoint::derive(
        &args.checkpoint,
        &args.out,
        &[(HYBRID_FILE.to_string(), bytes)],
        metrics,
    )?;
    println!(
        "chosen on valid: λ = {}, β = {} (HR@10 {:.4}, NDCG@10 {:.4}; pure {pure_hr:.4} / {pure_ndcg:.4})",
        best.lambda, best.prior_strength, best.hr10, best.ndcg10
    );
    println!("wrote {} (version {})", args.out.display(), meta.version);
    Ok(())
}
