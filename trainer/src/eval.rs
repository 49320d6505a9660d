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
use sidrec::metrics::{self, MetricsReport};
use sidrec::prompt::{PromptEncoder, PromptStyle};
use sidrec::ItemId;

use crate::cli::EvalArgs;
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
    /// HR/NDCG@K and the invalid count.
    pub metrics: MetricsReport,
    /// Wall time of decoding (s).
    pub decode_seconds: f64,
    /// Rows per second of decoding.
    pub rows_per_second: f64,
    /// Peak resident memory of the process (MiB), where the OS reports it.
    pub peak_rss_mib: Option<f64>,
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
        "# Evaluation of `{}`\n\n- version: `{}`\n- data: `{}` split `{}` ({} rows)\n- {} beams, `{}` scores, `{}` prompts{}\n- decode: {:.1} s, {:.2} rows/s, peak RSS {}\n\n{}\n",
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
        r.decode_seconds,
        r.rows_per_second,
        r.peak_rss_mib
            .map(|m| format!("{m:.0} MiB"))
            .unwrap_or_else(|| "n/a".into()),
        r.metrics.to_markdown()
    )
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
    let device = sidrec::device::parse_device(&args.device)?;
    let ck = Checkpoint::load(checkpoint, &device, None)?;
    let style: PromptStyle = args.prompt_style.unwrap_or(ck.meta.prompt_style);
    let (ds, split_path, rows) = read_rows(args)?;
    let max_history = match args.max_history {
        Some(n) => history_limit(n),
        None => ck.meta.max_history,
    };
    let encoder = PromptEncoder::new(style, &ck.tokenizer, &ck.index)
        .with_tokens(ck.meta.prompt_tokens, &ck.item_types)
        .with_max_history(max_history);
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
    let mut predictions: Vec<Vec<String>> = vec![Vec::new(); prompts.len()];
    let mut scores: Vec<Vec<f32>> = vec![Vec::new(); prompts.len()];
    let mut predict_items: Vec<Vec<Vec<ItemId>>> = vec![Vec::new(); prompts.len()];
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
        let out = decoder.beam_search(&ck.model, &reqs, &cfg)?;
        for (&i, hyps) in chunk.iter().zip(out) {
            predictions[i] = hyps.iter().map(|h| h.sid.to_string()).collect();
            scores[i] = hyps.iter().map(|h| h.score).collect();
            predict_items[i] = hyps.into_iter().map(|h| h.items).collect();
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    let decode_seconds = start.elapsed().as_secs_f64();

    let item_set: HashSet<String> = ck.index.iter().map(|(_, s)| s.to_string()).collect();
    let metrics = metrics::evaluate(&predictions, &targets, &item_set)?;
    let report = EvalReport {
        checkpoint: checkpoint.display().to_string(),
        version: ck.meta.version.clone(),
        data: args.data.display().to_string(),
        split: args.split.to_string(),
        rows: prompts.len(),
        num_beams: args.num_beams,
        mode: mode.to_string(),
        prompt_style: style.to_string(),
        max_history,
        metrics,
        decode_seconds,
        rows_per_second: prompts.len() as f64 / decode_seconds.max(1e-9),
        peak_rss_mib: peak_rss_mib(),
    };
    let out: PathBuf = args
        .out
        .clone()
        .unwrap_or_else(|| checkpoint.join(format!("eval-{}", args.split)));
    let preds: Vec<Prediction> = inputs
        .into_iter()
        .zip(&targets)
        .zip(predictions)
        .zip(scores)
        .zip(prompts)
        .zip(predict_items)
        .zip(&rows)
        .map(
            |((((((input, target), predict), scores), prompt_ids), predict_items), (_, row))| {
                Prediction {
                    input,
                    output: format!("{target}\n"),
                    predict,
                    scores,
                    prompt_ids,
                    history: row.history_item_id.clone(),
                    target_item: row.item_id,
                    predict_items,
                }
            },
        )
        .collect();
    write_outputs(&out, &report, &preds)?;
    if Split::Train == args.split {
        eprintln!("note: evaluating on the training split measures fit, not generalisation");
    }
    Ok(())
}
