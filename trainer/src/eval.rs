//! `sidrec-trainer eval`: constrained beam search over a split, scored as the reference's
//! calc.py scores it (HR@K / NDCG@K on the beam list, invalid count).
//!
//! Histories are mapped to SIDs through the checkpoint's own index (not the CSV's SID columns),
//! so a dataset whose SIDs were rebuilt is still evaluated against the model's SIDs.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use sidrec::checkpoint::Checkpoint;
use sidrec::data::{DatasetDir, Split};
use sidrec::decode::{DecodeRequest, Decoder, SearchConfig};
use sidrec::hybrid::Hybrid;
use sidrec::metrics::{self, MetricsReport};
use sidrec::prompt::PromptStyle;
use sidrec::ItemId;

use crate::cli::{EvalArgs, OnOff};
use crate::data::features::RowContexts;
use crate::error::{Result, TrainerError};
use crate::progress;

/// What `eval` writes to `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Checkpoint directory.
    pub checkpoint: String,
    /// Checkpoint version.
    pub version: String,
    /// Dataset directory.
    pub data: String,
    /// Evaluated split.
    pub split: String,
    /// Rows evaluated.
    pub rows: usize,
    /// Beams per prompt.
    pub num_beams: usize,
    /// Score mode.
    pub mode: String,
    /// Prompt style used.
    pub prompt_style: String,
    /// History items the prompts kept (`None`: all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_history: Option<usize>,
    /// Models decoded together: more than one for an ensemble checkpoint (0 for a baseline).
    pub models: usize,
    /// An ensemble's mixture weights, the checkpoint's own model first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_weights: Option<Vec<f64>>,
    /// How an ensemble's models combined (`mean` or `product`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// The share of the mixture the models' item-free twins took, when they were decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_free_share: Option<f64>,
    /// What ranked the lists: `model` (the beam's order), `hybrid` (the beam's items re-ranked
    /// by the checkpoint's hybrid ranker) or `baseline`.
    pub ranker: String,
    /// The hybrid ranker's settings, when `ranker` is `hybrid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hybrid: Option<HybridSummary>,
    /// HR/NDCG@K and the invalid count.
    pub metrics: MetricsReport,
    /// Wall time of decoding (s).
    pub decode_seconds: f64,
    /// Rows per second of decoding.
    pub rows_per_second: f64,
    /// Peak resident memory of the process (MiB), where the OS reports it.
    pub peak_rss_mib: Option<f64>,
}

/// The settings of a hybrid ranker, as reports name them.
#[derive(Debug, Clone, Serialize)]
pub struct HybridSummary {
    /// The item-level model.
    pub item_model: String,
    /// Weight λ of its score.
    pub lambda: f32,
    /// Prior strength β of the smoothed transition probability.
    pub prior_strength: f64,
}

impl HybridSummary {
    /// The summary of `h`.
    pub fn of(h: &Hybrid) -> Self {
        Self {
            item_model: sidrec::hybrid::ITEM_MODEL.into(),
            lambda: h.lambda,
            prior_strength: h.prior_strength,
        }
    }
}

/// One beam of a row: its SID, the items it names and its log-probability.
#[derive(Debug, Clone, PartialEq)]
pub struct Beam {
    /// The SID as written.
    pub sid: String,
    /// Catalogue items with that SID, in id order.
    pub items: Vec<ItemId>,
    /// Log-probability of the SID.
    pub score: f32,
}

/// A row's ranked list as `predictions.json` records it.
#[derive(Debug, Clone, PartialEq)]
pub struct RowRanking {
    /// SIDs, best first.
    pub predict: Vec<String>,
    /// Their ranking scores (the hybrid score of the SID's best item under a hybrid).
    pub scores: Vec<f32>,
    /// The model's log-probability of each SID, under a hybrid.
    pub model_scores: Option<Vec<f32>>,
    /// The items of each SID.
    pub predict_items: Vec<Vec<ItemId>>,
}

/// Rank one row's beams: in beam order, or re-ranked by `hybrid` through
/// [`Hybrid::rerank`] (the server's function): a SID at the place of its best item, its items
/// in the hybrid's order, so that calc.py's SID metrics and `compare`'s item rule read the
/// list the server serves.
pub fn rank_row(hybrid: Option<&Hybrid>, history: &[ItemId], beams: &[Beam]) -> RowRanking {
    let Some(h) = hybrid else {
        return RowRanking {
            predict: beams.iter().map(|b| b.sid.clone()).collect(),
            scores: beams.iter().map(|b| b.score).collect(),
            model_scores: None,
            predict_items: beams.iter().map(|b| b.items.clone()).collect(),
        };
    };
    let cands = sidrec::hybrid::candidates(beams.iter().map(|b| (&b.items[..], b.score)), &[]);
    let mut out = RowRanking {
        predict: Vec::with_capacity(beams.len()),
        scores: Vec::with_capacity(beams.len()),
        model_scores: Some(Vec::with_capacity(beams.len())),
        predict_items: Vec::with_capacity(beams.len()),
    };
    let mut current = None;
    for r in h.rerank(history, &cands) {
        // A SID's items come together, its best first.
        if current == Some(r.beam) {
            if let Some(items) = out.predict_items.last_mut() {
                items.push(r.item);
            }
            continue;
        }
        current = Some(r.beam);
        let b = &beams[r.beam];
        out.predict.push(b.sid.clone());
        out.scores.push(r.score);
        if let Some(m) = out.model_scores.as_mut() {
            m.push(b.score);
        }
        out.predict_items.push(vec![r.item]);
    }
    out
}

/// One row of `predictions.json`: the reference's shape (`input`, `output`, `predict`) plus the
/// beam scores and the exact prompt token ids, so that an independent decoder can be compared,
/// and the row in item ids (history, target, the items each predicted SID names), so that
/// `compare` can pair it with a baseline's list of items.
#[derive(Debug, Clone, Serialize)]
struct Prediction {
    input: String,
    output: String,
    predict: Vec<String>,
    scores: Vec<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_scores: Option<Vec<f32>>,
    prompt_ids: Vec<u32>,
    history: Vec<ItemId>,
    target_item: ItemId,
    predict_items: Vec<Vec<ItemId>>,
}

/// Rows read for `eval`: the dataset, the split file, its rows with their CSV line numbers.
pub type EvalRows = (
    DatasetDir,
    PathBuf,
    Vec<(u64, sidrec::data::InteractionRow)>,
);

/// The rows `eval` scores: the split's rows (with their CSV line numbers), cut to `--limit`;
/// an empty result is an error naming the file.
pub fn read_rows(args: &EvalArgs) -> Result<EvalRows> {
    let ds = DatasetDir::discover(&args.data)?;
    let split_path = ds.split_path(args.split);
    let mut rows = sidrec::data::split::read_split_numbered(&split_path)?;
    if let Some(n) = args.limit {
        rows.truncate(n);
    }
    if rows.is_empty() {
        return Err(TrainerError::Invalid(format!(
            "{}: no rows to evaluate",
            split_path.display()
        )));
    }
    Ok((ds, split_path, rows))
}

/// Write `report.json`, `report.md` and `predictions.json` into `out` (each atomically) and
/// print the report.
pub fn write_outputs<P: Serialize>(
    out: &Path,
    report: &EvalReport,
    predictions: &[P],
) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| TrainerError::io(out, e))?;
    let report_json = serde_json::to_vec_pretty(report)
        .map_err(|e| TrainerError::Invalid(format!("serialising the report: {e}")))?;
    sidrec::io::write_bytes_atomic(&out.join("report.json"), &report_json)?;
    sidrec::io::write_bytes_atomic(&out.join("report.md"), render(report).as_bytes())?;
    let preds_json = serde_json::to_vec_pretty(predictions)
        .map_err(|e| TrainerError::Invalid(format!("serialising predictions: {e}")))?;
    sidrec::io::write_bytes_atomic(&out.join("predictions.json"), &preds_json)?;
    print!("{}", render(report));
    println!("wrote {}", out.display());
    Ok(())
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// A `--max-history` value as a limit: 0 keeps every history item.
pub fn history_limit(n: usize) -> Option<usize> {
    (n > 0).then_some(n)
}

/// Markdown rendering of a report.
pub fn render(r: &EvalReport) -> String {
    format!(
        "# Evaluation of `{}`\n\n- version: `{}`\n- data: `{}` split `{}` ({} rows)\n- {} beams, `{}` scores, `{}` prompts{}\n- ranker: {}\n- decode: {:.1} s, {:.2} rows/s, peak RSS {}\n\n{}\n",
        r.checkpoint,
        r.version,
        r.data,
        r.split,
        r.rows,
        r.num_beams,
        r.mode,
        r.prompt_style,
        r.max_history
            .map(|n| format!(", history cut to its last {n} item{}", if n == 1 { "" } else { "s" }))
            .unwrap_or_default(),
        match &r.hybrid {
            Some(h) => format!(
                "hybrid (the model's beam re-ranked by log p + {} x {} score, prior strength {})",
                h.lambda, h.item_model, h.prior_strength
            ),
            None => r.ranker.clone(),
        } + &mixture_text(r),
        r.decode_seconds,
        r.rows_per_second,
        r.peak_rss_mib
            .map(|m| format!("{m:.0} MiB"))
            .unwrap_or_else(|| "n/a".into()),
        r.metrics.to_markdown()
    )
}

/// How the report names an ensemble's mixture and item-free twins (empty for one plain model).
fn mixture_text(r: &EvalReport) -> String {
    let pool = r.pool.as_deref().unwrap_or("mean");
    let twins = r
        .item_free_share
        .map(|s| format!(", item-free twins at share {s}"))
        .unwrap_or_default();
    if r.models > 1 {
        let weights = crate::ensemble::shares(r.model_weights.as_deref().unwrap_or_default());
        format!(
            " (an ensemble of {} models, weights {weights}, pooled by {pool}{twins})",
            r.models
        )
    } else if r.item_free_share.is_some() {
        format!(" (pooled by {pool}{twins})")
    } else {
        String::new()
    }
}

/// A split decoded by a checkpoint: every row's prompt and beams, before ranking.
pub struct Decoded {
    /// The checkpoint.
    pub ck: Checkpoint,
    /// The rows (with their CSV line numbers).
    pub rows: Vec<(u64, sidrec::data::InteractionRow)>,
    /// Prompt texts.
    pub inputs: Vec<String>,
    /// Prompt token ids.
    pub prompts: Vec<Vec<u32>>,
    /// Target SIDs.
    pub targets: Vec<String>,
    /// Beams per row, best first.
    pub beams: Vec<Vec<Beam>>,
    /// Score mode.
    pub mode: sidrec::decode::ScoreMode,
    /// How an ensemble's models combined.
    pub pool: sidrec::decode::Pool,
    /// The share of the mixture the item-free twins took (0: none).
    pub item_free_share: f64,
    /// Prompt style.
    pub style: PromptStyle,
    /// History items the prompts kept (`None`: all).
    pub max_history: Option<usize>,
    /// Wall time of decoding (s).
    pub decode_seconds: f64,
}

/// Decode the rows `args` names with `checkpoint` (constrained beam search, `--num-beams`).
pub fn decode(args: &EvalArgs, checkpoint: &Path) -> Result<Decoded> {
    let device = sidrec::device::parse_device(&args.device)?;
    let ck = Checkpoint::load(checkpoint, &device, None)?;
    let style: PromptStyle = args.prompt_style.unwrap_or(ck.meta.prompt_style);
    let (ds, split_path, rows) = read_rows(args)?;
    let max_history = match args.max_history {
        Some(n) => history_limit(n),
        None => ck.meta.max_history,
    };
    let encoder = ck.prompts().with_style(style).with_max_history(max_history);
    let contexts = RowContexts::load(&ck.meta.prompt_tokens, &ds.root)?;
    let path = split_path.as_path();
    let at_line = |line: u64| {
        move |e: sidrec::Error| match e {
            sidrec::Error::NoSid(id) => TrainerError::parse(
                path,
                line,
                format!("item {id} has no SID in the checkpoint's index"),
            ),
            e => e.into(),
        }
    };
    let mut prompts = Vec::with_capacity(rows.len());
    let mut inputs = Vec::with_capacity(rows.len());
    let mut targets = Vec::with_capacity(rows.len());
    for (line, r) in &rows {
        let p = encoder
            .recommend(&r.history_item_id, &contexts.of(r))
            .map_err(at_line(*line))?;
        prompts.push(p.ids);
        inputs.push(p.text);
        targets.push(encoder.sid(r.item_id).map_err(at_line(*line))?);
    }

    let pool = args.pool.unwrap_or(ck.pool);
    let item_free_share = args.item_free_share.unwrap_or(ck.item_free_share);
    let mixture = ck
        .mixture_with(pool, item_free_share)
        .map_err(|e| TrainerError::Invalid(format!("--item-free-share: {e}")))?;
    let decoder = Decoder::for_checkpoint(&ck, &device)?;
    let mode = args.mode.or(ck.meta.score_mode).unwrap_or_default();
    let cfg = SearchConfig {
        num_beams: args.num_beams,
        top_k: args.num_beams,
        mode,
    };
    // Batches of similar length waste less compute on padding; results go back in row order.
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(prompts[i].len()));
    let mut beams: Vec<Vec<Beam>> = vec![Vec::new(); prompts.len()];
    let pb = progress::bar(prompts.len() as u64, "eval");
    let start = Instant::now();
    for chunk in order.chunks(args.batch_size) {
        let reqs: Vec<DecodeRequest> = chunk
            .iter()
            .map(|&i| DecodeRequest {
                prompt: &prompts[i],
                exclude: &[],
            })
            .collect();
        let out = decoder.beam_search_ensemble(&mixture, &reqs, &cfg)?;
        for (&i, hyps) in chunk.iter().zip(out) {
            beams[i] = hyps
                .into_iter()
                .map(|h| Beam {
                    sid: h.sid.to_string(),
                    items: h.items,
                    score: h.score,
                })
                .collect();
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    Ok(Decoded {
        ck,
        rows,
        inputs,
        prompts,
        targets,
        beams,
        mode,
        pool,
        item_free_share,
        style,
        max_history,
        decode_seconds: start.elapsed().as_secs_f64(),
    })
}

/// The hybrid ranker `--hybrid` asks for from `ck`: its own unless `off`; `on` without one is
/// an error naming the checkpoint.
pub fn chosen_hybrid(ck: &Checkpoint, switch: Option<OnOff>) -> Result<Option<&Hybrid>> {
    match (switch, ck.hybrid.as_deref()) {
        (Some(OnOff::Off), _) => Ok(None),
        (Some(OnOff::On), None) => Err(TrainerError::Invalid(format!(
            "--hybrid on: {} has no {} (write one with `sidrec-trainer hybrid`)",
            ck.dir.display(),
            sidrec::hybrid::HYBRID_FILE
        ))),
        (_, h) => Ok(h),
    }
}

/// `sidrec-trainer eval`.
pub fn run(args: &EvalArgs) -> Result<()> {
    if args.batch_size == 0 || args.num_beams == 0 {
        return Err(TrainerError::Invalid(
            "--batch-size and --num-beams must be at least 1".into(),
        ));
    }
    if let Some(kind) = args.baseline {
        return crate::sasrec::eval::run(args, kind).map(|_| ());
    }
    let checkpoint = args
        .checkpoint
        .as_ref()
        .ok_or_else(|| TrainerError::Invalid("eval needs --checkpoint or --baseline".into()))?;
    let d = decode(args, checkpoint)?;
    let hybrid = chosen_hybrid(&d.ck, args.hybrid)?;
    let ranked: Vec<RowRanking> = d
        .rows
        .iter()
        .zip(&d.beams)
        .map(|((_, r), b)| rank_row(hybrid, &r.history_item_id, b))
        .collect();

    let item_set: HashSet<String> = d.ck.index.iter().map(|(_, s)| s.to_string()).collect();
    let predictions: Vec<Vec<&str>> = ranked
        .iter()
        .map(|r| r.predict.iter().map(String::as_str).collect())
        .collect();
    let metrics = metrics::evaluate(&predictions, &d.targets, &item_set)?;
    let n = d.prompts.len();
    let report = EvalReport {
        checkpoint: checkpoint.display().to_string(),
        version: d.ck.meta.version.clone(),
        data: args.data.display().to_string(),
        split: args.split.to_string(),
        rows: n,
        num_beams: args.num_beams,
        mode: d.mode.to_string(),
        prompt_style: d.style.to_string(),
        max_history: d.max_history,
        models: d.ck.models().len(),
        model_weights: (d.ck.models().len() > 1).then(|| d.ck.model_weights.clone()),
        pool: (d.ck.models().len() > 1 || d.item_free_share > 0.0).then(|| d.pool.to_string()),
        item_free_share: (d.item_free_share > 0.0).then_some(d.item_free_share),
        ranker: if hybrid.is_some() { "hybrid" } else { "model" }.into(),
        hybrid: hybrid.map(HybridSummary::of),
        metrics,
        decode_seconds: d.decode_seconds,
        rows_per_second: n as f64 / d.decode_seconds.max(1e-9),
        peak_rss_mib: peak_rss_mib(),
    };
    let out: PathBuf = args
        .out
        .clone()
        .unwrap_or_else(|| checkpoint.join(format!("eval-{}", args.split)));
    let preds: Vec<Prediction> = d
        .inputs
        .into_iter()
        .zip(&d.targets)
        .zip(ranked)
        .zip(d.prompts)
        .zip(&d.rows)
        .map(
            |((((input, target), r), prompt_ids), (_, row))| Prediction {
                input,
                output: format!("{target}\n"),
                predict: r.predict,
                scores: r.scores,
                model_scores: r.model_scores,
                prompt_ids,
                history: row.history_item_id.clone(),
                target_item: row.item_id,
                predict_items: r.predict_items,
            },
        )
        .collect();
    write_outputs(&out, &report, &preds)?;
    if Split::Train == args.split {
        eprintln!("note: evaluating on the training split measures fit, not generalisation");
    }
    Ok(())
}
