//! `sidrec-trainer eval --baseline …`: full-ranking evaluation of the non-generative baselines
//! on a split, written in the generative eval's report shape (`report.json`, `report.md`,
//! `predictions.json`) and scored by the same code (`sidrec::metrics::evaluate`, calc.py's
//! rules) on each row's top `--num-beams` items, compared as item-id strings.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;
use sidrec::data::Split;
use sidrec::ItemId;

use super::SasRec;
use crate::baselines::{LastItemTransition, Popularity, Ranker};
use crate::cli::{BaselineKind, EvalArgs};
use crate::error::{Result, TrainerError};
use crate::eval::{peak_rss_mib, read_rows, write_outputs, EvalReport};
use crate::progress;

/// One row of a baseline's `predictions.json`: history and target item ids, the ranked list.
#[derive(Debug, Clone, Serialize)]
struct BaselinePrediction {
    history: Vec<ItemId>,
    output: String,
    predict: Vec<String>,
    scores: Vec<f32>,
}

/// Evaluate a baseline as `args` asks (split, limit, list length `--num-beams`, output dir).
pub fn run(args: &EvalArgs, kind: BaselineKind) -> Result<EvalReport> {
    if args.num_beams == 0 {
        return Err(TrainerError::Invalid(
            "--num-beams (the ranked list length) must be at least 1".into(),
        ));
    }
    let (ds, split_path, rows) = read_rows(args)?;
    let k = args.num_beams;
    let mut lists: Vec<Vec<(ItemId, f32)>> = Vec::with_capacity(rows.len());
    let name: String;
    let version: String;
    let catalogue: Vec<ItemId>;
    let pb = progress::bar(rows.len() as u64, "rank");
    let start = Instant::now();
    match kind {
        BaselineKind::Sasrec => {
            let dir = args.sasrec.as_ref().ok_or_else(|| {
                TrainerError::Invalid("--baseline sasrec needs --sasrec DIR".into())
            })?;
            let device = sidrec::device::parse_device(&args.device)?;
            let model = SasRec::load(dir, &device)?;
            for (line, r) in &rows {
                for &id in r.history_item_id.iter().chain([&r.item_id]) {
                    if model.index_of(id).is_none() {
                        return Err(TrainerError::parse(
                            &split_path,
                            *line,
                            format!("item {id} is not in the SASRec model's vocabulary"),
                        ));
                    }
                }
                if r.history_item_id.is_empty() {
                    return Err(TrainerError::parse(&split_path, *line, "empty history"));
                }
            }
            for chunk in rows.chunks(512) {
                let hist: Vec<&[ItemId]> = chunk
                    .iter()
                    .map(|(_, r)| r.history_item_id.as_slice())
                    .collect();
                for scores in model.score_all(&hist)? {
                    lists.push(
                        super::top_k(&scores, k)
                            .into_iter()
                            .map(|i| (model.items()[i], scores[i]))
                            .collect(),
                    );
                }
                pb.inc(chunk.len() as u64);
            }
            name = dir.display().to_string();
            version = model.meta.version.clone();
            catalogue = model.items().to_vec();
        }
        BaselineKind::Popularity | BaselineKind::Transition => {
            let train = ds.read_split(Split::Train)?;
            let ranker: Box<dyn Ranker> = match kind {
                BaselineKind::Popularity => Box::new(Popularity::fit(&train)),
                _ => Box::new(LastItemTransition::fit(&train)),
            };
            for (_, r) in &rows {
                // Non-learned lists carry their rank as the score (higher is better).
                let list = ranker.recommend(&r.history_item_id, k);
                let n = list.len() as f32;
                lists.push(
                    list.into_iter()
                        .enumerate()
                        .map(|(i, id)| (id, n - i as f32))
                        .collect(),
                );
                pb.inc(1);
            }
            name = format!("{kind} (fitted on {} train rows)", train.len());
            version = kind.to_string();
            catalogue = ds.read_items()?.keys().copied().collect();
        }
    }
    pb.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();

    let predictions: Vec<Vec<String>> = lists
        .iter()
        .map(|l| l.iter().map(|(id, _)| id.to_string()).collect())
        .collect();
    let targets: Vec<String> = rows.iter().map(|(_, r)| r.item_id.to_string()).collect();
    let item_set: HashSet<String> = catalogue.iter().map(|i| i.to_string()).collect();
    let metrics = sidrec::metrics::evaluate(&predictions, &targets, &item_set)?;
    let report = EvalReport {
        checkpoint: name,
        version,
        data: args.data.display().to_string(),
        split: args.split.to_string(),
        rows: rows.len(),
        num_beams: k,
        mode: "full-ranking".into(),
        prompt_style: "none".into(),
        max_history: None,
        models: 0,
        model_weights: None,
        pool: None,
        item_free_share: None,
        ranker: "baseline".into(),
        hybrid: None,
        metrics,
        decode_seconds: seconds,
        rows_per_second: rows.len() as f64 / seconds.max(1e-9),
        peak_rss_mib: peak_rss_mib(),
    };
    let out: PathBuf = match (&args.out, kind, &args.sasrec) {
        (Some(o), _, _) => o.clone(),
        (None, BaselineKind::Sasrec, Some(dir)) => dir.join(format!("eval-{}", args.split)),
        _ => {
            return Err(TrainerError::Invalid(format!(
                "--baseline {kind} needs --out DIR"
            )))
        }
    };
    let preds: Vec<BaselinePrediction> = rows
        .iter()
        .zip(lists)
        .zip(predictions)
        .map(|(((_, r), list), predict)| BaselinePrediction {
            history: r.history_item_id.clone(),
            output: r.item_id.to_string(),
            predict,
            scores: list.iter().map(|(_, s)| *s).collect(),
        })
        .collect();
    write_outputs(&out, &report, &preds)?;
    Ok(report)
}
