//! `sidrec-trainer sft`: the training loop.
//!
//! AdamW with warmup + linear/cosine decay, global-norm clipping, gradient accumulation,
//! length-bucketed deterministic batches, periodic validation (beam-search HR@10/NDCG@10 on a
//! sample of the valid split, and loss), early stopping, the best checkpoint kept, and `--resume`
//! that continues with the same data order and optimizer state. The loss is computed only at the
//! supervised positions, so the vocabulary projection never runs over prompt tokens.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use sidrec::checkpoint::{self, Checkpoint, NewCheckpoint};
use sidrec::data::{DatasetDir, Split};
use sidrec::decode::{DecodeRequest, Decoder, ScoreMode, SearchConfig};
use sidrec::metrics::MetricsAccumulator;
use sidrec::model::{checkpoint as hf, Mode, Qwen2};
use sidrec::prompt;

use super::batch::{epoch_batches, make_batch, Batch};
use super::optim::{learning_rate, sorted_vars, AdamW, AdamWConfig, GradAccumulator};
use super::tasks::{Example, Task, TaskBuilder};
use crate::cli::{BestBy, SftArgs};
use crate::error::{Result, TrainerError};
use crate::progress;

/// Where the loop is, saved beside the last checkpoint so that `--resume` can continue.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// Current epoch (0-based).
    pub epoch: usize,
    /// Micro-batches of the current epoch already consumed.
    pub batch: usize,
    /// Optimizer steps taken.
    pub step: usize,
    /// Best value so far of the figure that picks `best` (see `best_by`).
    pub best: Option<f64>,
    /// That figure (runs saved before it existed used NDCG@10).
    #[serde(default)]
    pub best_by: BestBy,
    /// Validations since the best one.
    pub bad_evals: usize,
    /// Set once training has finished (early stop or last epoch).
    pub done: bool,
}

/// The variables `--freeze-llm` trains (row-masked to the SID tokens).
const FREEZE_LLM_TRAINABLE: [&str; 2] = ["model.embed_tokens.weight", "lm_head.weight"];

impl TrainState {
    /// Where a run starts. Resuming: the loop state saved in `last_dir`, the optimizer state
    /// loaded into `opt`, and `metrics_path` cut back to the saved step; `None` when that run had
    /// already finished. Otherwise a fresh state, and a stale `metrics_path` removed.
    pub fn start(
        resuming: bool,
        best_by: BestBy,
        last_dir: &Path,
        metrics_path: &Path,
        opt: &mut AdamW,
    ) -> Result<Option<Self>> {
        if !resuming {
            if metrics_path.exists() {
                std::fs::remove_file(metrics_path)
                    .map_err(|e| TrainerError::io(metrics_path, e))?;
            }
            return Ok(Some(Self {
                best_by,
                ..Self::default()
            }));
        }
        let p = last_dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&p).map_err(|e| TrainerError::io(&p, e))?;
        let state: Self = serde_json::from_str(&text)
            .map_err(|e| TrainerError::parse(&p, e.line() as u64, e.to_string()))?;
        if state.best_by != best_by {
            return Err(TrainerError::Invalid(format!(
                "{}: the run picks its best checkpoint by {}; resume it with that, not {}",
                p.display(),
                state.best_by.key(),
                best_by.key()
            )));
        }
        opt.load(&last_dir.join(OPTIM_FILE))?;
        eprintln!(
            "resuming at epoch {} batch {} (step {})",
            state.epoch, state.batch, state.step
        );
        if state.done {
            eprintln!("training had already finished; nothing to do");
            return Ok(None);
        }
        truncate_metrics(metrics_path, state.step)?;
        Ok(Some(state))
    }

    /// Book validation `v` as [`Self::record_validation`] does, then append its record to
    /// `metrics_path`, print it above the bar and redraw `out_dir/curves.svg`.
    pub fn log_validation(
        &mut self,
        v: &Validation,
        epoch: usize,
        metrics_path: &Path,
        out_dir: &Path,
        pb: &indicatif::ProgressBar,
    ) -> Result<(bool, serde_json::Value)> {
        let (improved, record) = self.record_validation(v, epoch);
        append_jsonl(metrics_path, &record)?;
        pb.println(format!("step {}: {}", self.step, v.summary(improved)));
        crate::plot::redraw_run(metrics_path, out_dir)?;
        Ok((improved, record))
    }

    /// The files a `last/` checkpoint carries for `--resume`, written in the same atomic
    /// checkpoint as the weights so that a kill never leaves them out of step: this loop state
    /// and the optimizer state.
    pub fn resume_files(&self, opt: &AdamW) -> Result<Vec<(String, Vec<u8>)>> {
        let text =
            serde_json::to_vec_pretty(self).map_err(|e| TrainerError::Invalid(e.to_string()))?;
        Ok(vec![
            (STATE_FILE.to_string(), text),
            (OPTIM_FILE.to_string(), opt.to_bytes()?),
        ])
    }

    /// Book validation `v` (best value of the `best_by` figure so far, validations since it)
    /// and return whether it improved on the best, with its `metrics.jsonl` record.
    pub fn record_validation(&mut self, v: &Validation, epoch: usize) -> (bool, serde_json::Value) {
        let value = match self.best_by {
            BestBy::Ndcg10 => v.ndcg10,
            BestBy::Loss => v.loss,
        };
        let improved = self.best.is_none_or(|b| match self.best_by {
            BestBy::Ndcg10 => value > b,
            BestBy::Loss => value < b,
        });
        if improved {
            self.best = Some(value);
            self.bad_evals = 0;
        } else {
            self.bad_evals += 1;
        }
        let record = serde_json::json!({"step": self.step, "epoch": epoch,
            "valid_rows": v.rows, "valid_hr10": v.hr10, "valid_ndcg10": v.ndcg10,
            "valid_loss": v.loss, "best": improved});
        (improved, record)
    }
}

/// File of the loop state inside a `last/` checkpoint.
pub const STATE_FILE: &str = "train-state.json";
/// File of the optimizer state inside a `last/` checkpoint.
pub const OPTIM_FILE: &str = "optimizer.safetensors";

/// Sum of negative log-likelihoods of the supervised tokens of `batch`.
pub fn batch_nll(model: &Qwen2, batch: &Batch, mode: Mode) -> Result<Tensor> {
    let hidden = model.forward_hidden(&batch.ids, Some(&batch.mask), mode)?;
    let (b, l, h) = hidden.dims3()?;
    let picked = hidden
        .reshape((b * l, h))?
        .index_select(&batch.positions, 0)?;
    let logits = model.logits(&picked)?;
    Ok(sidrec::model::kernels::cross_entropy(&logits, &batch.targets)?.sum_all()?)
}

/// Validation: beam-search HR@10 / NDCG@10 and the mean loss on a sample of the valid split.
#[derive(Debug, Clone, Serialize)]
pub struct Validation {
    /// Rows evaluated.
    pub rows: usize,
    /// HR@10.
    pub hr10: f64,
    /// NDCG@10.
    pub ndcg10: f64,
    /// Mean per-token loss of the SID-history task on the sample.
    pub loss: f64,
}

impl Validation {
    /// One progress line: `valid HR@10 … NDCG@10 … loss …`, marked when it is the best so far.
    pub fn summary(&self, best: bool) -> String {
        format!(
            "valid HR@10 {:.4} NDCG@10 {:.4} loss {:.4}{}",
            self.hr10,
            self.ndcg10,
            self.loss,
            if best { " (best)" } else { "" }
        )
    }
}

/// A fixed validation sample: beam-search prompts with their target SIDs, and loss examples.
pub struct Validator {
    /// Evaluation prompts (token ids).
    pub prompts: Vec<Vec<u32>>,
    /// Target SID string of each prompt.
    pub targets: Vec<String>,
    /// Examples whose mean loss is reported.
    pub examples: Vec<Example>,
    /// Constrained decoder of the catalogue.
    pub decoder: Decoder,
    /// Beams per prompt.
    pub num_beams: usize,
    /// Prompts per decoding batch.
    pub batch_size: usize,
}

impl Validator {
    /// HR@10 / NDCG@10 and the mean loss of `model` on the sample.
    pub fn run(&self, model: &Qwen2, pad: u32, device: &Device) -> Result<Validation> {
        let cfg = SearchConfig {
            num_beams: self.num_beams,
            top_k: self.num_beams.min(10),
            mode: ScoreMode::Exact,
        };
        let mut acc = MetricsAccumulator::new(vec![10]);
        for (chunk, targets) in self
            .prompts
            .chunks(self.batch_size)
            .zip(self.targets.chunks(self.batch_size))
        {
            let reqs: Vec<DecodeRequest> = chunk
                .iter()
                .map(|p| DecodeRequest {
                    prompt: p,
                    exclude: &[],
                })
                .collect();
            for (hyps, target) in self
                .decoder
                .beam_search(model, &reqs, &cfg)?
                .iter()
                .zip(targets)
            {
                let rank = hyps.iter().position(|h| &h.sid.to_string() == target);
                acc.add(rank, 0);
            }
        }
        let report = acc.report();
        let (mut nll, mut n) = (0f64, 0usize);
        for chunk in self.examples.chunks(self.batch_size.max(1) * 4) {
            let refs: Vec<&Example> = chunk.iter().collect();
            let batch = make_batch(&refs, pad, device)?;
            nll += batch_nll(model, &batch, Mode::Infer)?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            n += batch.supervised;
        }
        Ok(Validation {
            rows: self.prompts.len(),
            hr10: report.hr.get(&10).copied().unwrap_or(0.0),
            ndcg10: report.ndcg.get(&10).copied().unwrap_or(0.0),
            loss: nll / n.max(1) as f64,
        })
    }
}

/// Append one JSON line to `path`.
pub fn append_jsonl(path: &Path, value: &serde_json::Value) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| TrainerError::io(path, e))?;
    writeln!(f, "{value}").map_err(|e| TrainerError::io(path, e))
}

/// Drop metrics lines logged after `step` (by a run that was killed after its last save).
pub fn truncate_metrics(path: &Path, step: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s as usize <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    sidrec::io::write_bytes_atomic(path, kept.as_bytes())?;
    Ok(())
}

fn parse_tasks(spec: &str) -> Result<Vec<Task>> {
    if spec == "all" {
        return Ok(Task::ALL.to_vec());
    }
    spec.split(',')
        .map(|s| {
            Task::ALL
                .into_iter()
                .find(|t| t.name() == s.trim())
                .ok_or_else(|| {
                    TrainerError::Invalid(format!(
                        "unknown task `{s}` (expected all or a list of: {})",
                        Task::ALL.map(|t| t.name()).join(", ")
                    ))
                })
        })
        .collect()
}

/// `sidrec-trainer sft`.
pub fn run(args: &SftArgs) -> Result<()> {
    if args.batch_size == 0 || args.grad_accum == 0 || args.epochs == 0 {
        return Err(TrainerError::Invalid(
            "--batch-size, --grad-accum and --epochs must be at least 1".into(),
        ));
    }
    let device = sidrec::device::parse_device(&args.device)?;
    let last_dir = args.out.join("last");
    let best_dir = args.out.join("best");
    let resuming = args.resume && checkpoint::is_complete(&last_dir);
    let start_dir: PathBuf = if resuming {
        last_dir.clone()
    } else {
        args.init.clone()
    };
    let base = Checkpoint::load(&start_dir, &Device::Cpu, Some(DType::F32))?;
    let varmap = VarMap::new();
    let model = Qwen2::new(
        base.model.config(),
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
    )?;
    hf::load_into_varmap(&start_dir, &varmap)?;
    model.set_dropout(args.dropout)?;
    let tokenizer = base.tokenizer.clone();
    let style = base.meta.prompt_style;
    let tasks = parse_tasks(&args.tasks)?;

    let ds = DatasetDir::discover(&args.data)?;
    let mut train_rows = ds.read_split(Split::Train)?;
    if args.include_valid {
        train_rows.extend(ds.read_split(Split::Valid)?);
    }
    let name = ds
        .items
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".item.json"))
        .unwrap_or("items")
        .to_string();
    let builder = TaskBuilder {
        style,
        tokenizer: &tokenizer,
        index: &base.index,
        items: &base.items,
        category: prompt::category_phrase(&name),
        cutoff: args.cutoff,
        history_loss: args.history_loss,
    };
    let examples = builder.build(&train_rows, &tasks)?;
    if examples.is_empty() {
        return Err(TrainerError::Invalid("no training examples".into()));
    }
    let lengths: Vec<usize> = examples.iter().map(|e| e.ids.len()).collect();
    let weights = if args.value_weighting {
        let features = crate::data::features::Features::load(&ds.root)?;
        let w = super::value::example_weights(&examples, &features, args.value_alpha)?;
        let (lo, hi) = w
            .iter()
            .fold((f32::INFINITY, 0f32), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        eprintln!(
            "--value-weighting: example weights {lo:.3}..{hi:.3} (alpha {})",
            args.value_alpha
        );
        Some(w)
    } else {
        None
    };
    eprintln!(
        "{} training examples ({} tokens) from {} rows; tasks: {}",
        examples.len(),
        lengths.iter().sum::<usize>(),
        train_rows.len(),
        tasks.iter().map(|t| t.name()).collect::<Vec<_>>().join(",")
    );

    // Validation sample: the first rows of the valid split (fixed, so runs are comparable).
    let mut valid_rows = ds.read_split(Split::Valid)?;
    valid_rows.truncate(args.valid_rows);
    // The validation loss stays the response loss, whatever `--history-loss` says.
    let valid_examples = TaskBuilder {
        history_loss: false,
        ..builder
    }
    .build(&valid_rows, &[Task::SeqRec])?;
    let mut prompts = Vec::new();
    let mut targets = Vec::new();
    for r in &valid_rows {
        let hist: Vec<String> = r
            .history_item_id
            .iter()
            .filter_map(|&i| base.index.get(i).map(|s| s.to_string()))
            .collect();
        prompts.push(tokenizer.encode_prompt(&prompt::eval_seqrec(style, &hist))?);
        targets.push(
            base.index
                .get(r.item_id)
                .map(|s| s.to_string())
                .unwrap_or_default(),
        );
    }
    let validator = Validator {
        prompts,
        targets,
        examples: valid_examples,
        decoder: Decoder::new(
            base.index.clone(),
            tokenizer.sid_vocab().clone(),
            tokenizer.newline_id(),
            tokenizer.eos_id(),
            &device,
        )?,
        num_beams: args.valid_beams,
        batch_size: 16,
    };

    std::fs::create_dir_all(&args.out).map_err(|e| TrainerError::io(&args.out, e))?;
    let mut vars = sorted_vars(&varmap)?;
    if args.freeze_llm {
        // Only the SID rows of the token embeddings (and of an untied output head) learn; every
        // other parameter is left out of the optimizer and stays bit-identical.
        vars.retain(|(name, _)| FREEZE_LLM_TRAINABLE.contains(&name.as_str()));
    }
    let mut opt = AdamW::new(
        vars.clone(),
        AdamWConfig {
            weight_decay: args.weight_decay,
            ..AdamWConfig::default()
        },
    )?;
    if args.freeze_llm {
        let sid_rows: Vec<u32> = tokenizer
            .sid_vocab()
            .pairs()
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        for (name, _) in &vars {
            opt.train_only_rows(name, &sid_rows)?;
        }
        eprintln!(
            "--freeze-llm: training {} SID rows of {}",
            sid_rows.len(),
            vars.iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let metrics_path = args.out.join("metrics.jsonl");
    let Some(mut state) =
        TrainState::start(resuming, args.best_by, &last_dir, &metrics_path, &mut opt)?
    else {
        return Ok(());
    };
    let batches_per_epoch = lengths.len().div_ceil(args.batch_size);
    let steps_per_epoch = batches_per_epoch.div_ceil(args.grad_accum);
    let total_steps = match args.max_steps {
        Some(m) => m.min(steps_per_epoch * args.epochs),
        None => steps_per_epoch * args.epochs,
    };
    let pad = tokenizer.eos_id();
    let save = |dir: &Path,
                metrics: serde_json::Value,
                extra_files: Vec<(String, Vec<u8>)>|
     -> Result<()> {
        checkpoint::write(
            dir,
            &NewCheckpoint {
                model: &model,
                tokenizer: &tokenizer,
                index: &base.index,
                items: &base.items,
                prompt_style: style,
                stage: "sft",
                collision_policy: &base.meta.collision_policy,
                data_fingerprint: base.meta.data_fingerprint.clone(),
                metrics,
                extra_files,
            },
        )?;
        Ok(())
    };

    let pb = progress::bar(total_steps as u64, "sft");
    pb.set_position(state.step as u64);
    let mut acc = GradAccumulator::default();
    let mut in_group = 0usize;
    let (mut group_nll, mut group_sup, mut window_tokens) = (0f64, 0usize, 0usize);
    let mut window_start = Instant::now();
    let started = Instant::now();
    'epochs: for epoch in state.epoch..args.epochs {
        let batches = epoch_batches(&lengths, args.batch_size, args.seed, epoch);
        let first = if epoch == state.epoch { state.batch } else { 0 };
        for (bi, idx) in batches.iter().enumerate().skip(first) {
            let refs: Vec<&Example> = idx.iter().map(|&i| &examples[i]).collect();
            let batch = make_batch(&refs, pad, &device)?;
            // Masks depend on (seed, epoch, batch) only, so a resumed run draws the same ones.
            model.seed_dropout(
                args.seed ^ ((epoch as u64) << 32 | bi as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            let nll = match &weights {
                Some(w) => {
                    let w: Vec<f32> = idx.iter().map(|&i| w[i]).collect();
                    super::value::weighted_batch_nll(&model, &batch, &w, Mode::Train)?
                }
                None => batch_nll(&model, &batch, Mode::Train)?,
            };
            let loss = (&nll / (batch.supervised.max(1) * args.grad_accum) as f64)?;
            acc.add(&vars, &loss.backward()?)?;
            group_nll += nll.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            group_sup += batch.supervised;
            window_tokens += batch.tokens;
            in_group += 1;
            state.epoch = epoch;
            state.batch = bi + 1;
            let last_of_epoch = bi + 1 == batches.len();
            if in_group < args.grad_accum && !last_of_epoch {
                continue;
            }
            let lr = learning_rate(args.lr, state.step, args.warmup, total_steps, args.cosine);
            let grad_norm = opt.step(&mut acc, lr, Some(args.clip))?;
            state.step += 1;
            in_group = 0;
            let loss_value = group_nll / group_sup.max(1) as f64;
            (group_nll, group_sup) = (0.0, 0);
            let tps = window_tokens as f64 / window_start.elapsed().as_secs_f64().max(1e-9);
            pb.set_position(state.step as u64);
            pb.set_message(format!("loss {loss_value:.3} {tps:.0} tok/s"));
            if state.step % args.log_every == 0 {
                append_jsonl(
                    &metrics_path,
                    &serde_json::json!({"step": state.step, "epoch": epoch, "loss": loss_value,
                        "lr": lr, "grad_norm": grad_norm, "tokens_per_s": tps,
                        "elapsed_s": started.elapsed().as_secs_f64()}),
                )?;
                window_tokens = 0;
                window_start = Instant::now();
            }
            let at_end = state.step >= total_steps;
            if state.step % args.eval_every == 0 || at_end || last_of_epoch {
                let v = validator.run(&model, pad, &device)?;
                let (improved, record) =
                    state.log_validation(&v, epoch, &metrics_path, &args.out, &pb)?;
                let stop = at_end || state.bad_evals >= args.patience;
                state.done = stop;
                if improved {
                    save(&best_dir, record.clone(), Vec::new())?;
                }
                save(&last_dir, record, state.resume_files(&opt)?)?;
                if stop {
                    break 'epochs;
                }
            }
        }
    }
    pb.finish_and_clear();
    println!(
        "trained {} steps in {:.0} s; best {} {:.4}; wrote {} and {}",
        state.step,
        started.elapsed().as_secs_f64(),
        state.best_by.key(),
        state.best.unwrap_or(0.0),
        best_dir.display(),
        last_dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_follows_the_chosen_figure_and_resume_refuses_another() {
        let v = |ndcg10: f64, loss: f64| Validation {
            rows: 8,
            hr10: 0.0,
            ndcg10,
            loss,
        };
        // NDCG@10 rises then falls while the loss falls then rises.
        let seq = [v(0.05, 2.3), v(0.06, 2.1), v(0.07, 2.2), v(0.06, 2.4)];
        let mut by_ndcg = TrainState::default();
        let mut by_loss = TrainState {
            best_by: BestBy::Loss,
            ..TrainState::default()
        };
        let flags = |st: &mut TrainState| -> Vec<bool> {
            seq.iter().map(|x| st.record_validation(x, 0).0).collect()
        };
        assert_eq!(flags(&mut by_ndcg), [true, true, true, false]);
        assert_eq!((by_ndcg.best, by_ndcg.bad_evals), (Some(0.07), 1));
        assert_eq!(flags(&mut by_loss), [true, true, false, false]);
        assert_eq!((by_loss.best, by_loss.bad_evals), (Some(2.1), 2));

        // A run saved with one figure does not resume under the other.
        let dir = tempfile::tempdir().unwrap();
        let text = serde_json::to_vec(&by_loss).unwrap();
        std::fs::write(dir.path().join(STATE_FILE), text).unwrap();
        let vars = candle_nn::VarMap::new();
        let mut opt = AdamW::new(sorted_vars(&vars).unwrap(), AdamWConfig::default()).unwrap();
        let metrics = dir.path().join("metrics.jsonl");
        let e = TrainState::start(true, BestBy::Ndcg10, dir.path(), &metrics, &mut opt)
            .unwrap_err()
            .to_string();
        assert!(e.contains("valid_loss") && e.contains(STATE_FILE), "{e}");
        // A state file from before `best_by` existed reads as NDCG@10.
        let old: TrainState = serde_json::from_str(
            r#"{"epoch":1,"batch":2,"step":3,"best":0.1,"bad_evals":0,"done":false}"#,
        )
        .unwrap();
        assert_eq!(old.best_by, BestBy::Ndcg10);
    }

    #[test]
    fn task_lists_parse() {
        assert_eq!(parse_tasks("all").unwrap().len(), 5);
        assert_eq!(
            parse_tasks("seqrec, title2sid").unwrap(),
            [Task::SeqRec, Task::TitleToSid]
        );
        assert!(parse_tasks("nope").is_err());
    }
}
