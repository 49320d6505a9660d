//! `sidrec-trainer sft`: the training loop.
//!
//! AdamW with warmup + linear/cosine decay, global-norm clipping, gradient accumulation,
//! length-bucketed deterministic batches, periodic validation (beam-search HR@10/NDCG@10 on a
//! sample of the valid split, and loss), early stopping, the best checkpoint kept, and `--resume`
//! that continues with the same data order and optimizer state. The loss is computed only at the
//! supervised positions, so the vocabulary projection never runs over prompt tokens.

use std::time::Instant;

use candle_core::DType;
use sidrec::data::{DatasetDir, Split};
use sidrec::decode::Decoder;
use sidrec::model::Mode;

use super::tasks::{Task, TaskBuilder};
use crate::cli::{SftArgs, SidSoftmax};
use crate::data::features::RowContexts;
use crate::error::{Result, TrainerError};
use crate::progress;
use crate::train::batch::{epoch_batches, make_batch, Example};
use crate::train::objective::{supervised_loss, LevelSets, LossOptions, SupervisedLoss};
use crate::train::optim::{learning_rate, sorted_vars, AdamW, AdamWConfig, GradAccumulator};
use crate::train::run::{category, load_trainable, RunCheckpoints, RunDirs};
use crate::train::soft_targets::SoftTargets;
use crate::train::state::{append_jsonl, TrainState};
use crate::train::validate::Validator;

/// The variables `--freeze-llm` trains (row-masked to the SID tokens).
const FREEZE_LLM_TRAINABLE: [&str; 2] = ["model.embed_tokens.weight", "lm_head.weight"];

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
    let dirs = RunDirs::new(&args.out, args.resume);
    let (mut base, varmap) = load_trainable(dirs.start(&args.init), &device)?;
    if let Some(n) = args.item_window {
        if n == 0 {
            return Err(TrainerError::Invalid(
                "--item-window must be at least 1 (leave it out for whole rows)".into(),
            ));
        }
        base.meta.item_window = Some(n);
    }
    if let Some(n) = args.max_history.or(args.item_window) {
        base.meta.max_history = crate::eval::history_limit(n);
    }
    // Saved checkpoints name the beam scores their loss trained, for eval and the server.
    base.meta.score_mode = match args.sid_softmax {
        SidSoftmax::Full => None,
        SidSoftmax::Level => Some(sidrec::decode::ScoreMode::Fast),
    };
    let base = base;
    let model = &base.model;
    model.set_dropout(args.dropout)?;
    model
        .set_item_dropout(args.item_dropout)
        .map_err(|e| TrainerError::Invalid(format!("--item-dropout: {e}")))?;
    if let Some(n) = base.meta.item_window {
        let window = sidrec::model::ItemWindow::new(base.tokenizer.sid_vocab().clone(), n);
        model.set_item_window(window)?;
    }
    if !(args.next_item_loss.is_finite() && args.next_item_loss >= 0.0) {
        return Err(TrainerError::Invalid(format!(
            "--next-item-loss {}: must be a finite number >= 0",
            args.next_item_loss
        )));
    }
    if args.next_item_loss > 0.0 && !model.has_item_embeddings() {
        return Err(TrainerError::Invalid(format!(
            "--next-item-loss needs a checkpoint with item embeddings; {} has none \
             (create it with init --item-embeddings)",
            dirs.start(&args.init).display()
        )));
    }
    let tokenizer = &base.tokenizer;
    let tasks = parse_tasks(&args.tasks)?;
    if args.drop_covered_rows && !(args.history_loss && tasks.contains(&Task::SeqRec)) {
        return Err(TrainerError::Invalid(
            "--drop-covered-rows needs --history-loss and the seqrec task: only then does \
             a longer row supervise what a covered row would"
                .into(),
        ));
    }

    let ds = DatasetDir::discover(&args.data)?;
    let mut train_rows = ds.read_split(Split::Train)?;
    if args.include_valid {
        train_rows.extend(ds.read_split(Split::Valid)?);
    }
    let contexts = RowContexts::load(&base.meta.prompt_tokens, &ds.root)?;
    let covered = args
        .drop_covered_rows
        .then(|| super::tasks::covered_rows(&train_rows));
    let builder = TaskBuilder {
        prompts: base.prompts(),
        items: &base.items,
        category: category(&ds),
        cutoff: args.cutoff,
        history_loss: args.history_loss,
        covered: covered.as_deref(),
        recent_history: args.recent_history,
        contexts: &contexts,
    };
    let examples = builder.build(&train_rows, &tasks)?;
    if examples.is_empty() {
        return Err(TrainerError::Invalid("no training examples".into()));
    }
    let lengths: Vec<usize> = examples.iter().map(|e| e.ids.len()).collect();
    // `from_examples` refuses a weight outside [0, 1] (NaN included).
    let soft = if args.soft_targets == 0.0 {
        None
    } else {
        if args.sid_softmax != SidSoftmax::Full {
            return Err(TrainerError::Invalid(
                "--soft-targets needs --sid-softmax full".into(),
            ));
        }
        let soft = SoftTargets::from_examples(
            &examples,
            tokenizer.sid_vocab().clone(),
            args.soft_targets,
        )?;
        let (items, pairs) = soft.size();
        eprintln!(
            "--soft-targets {}: {pairs} supervised transitions from {items} items",
            args.soft_targets
        );
        Some(soft)
    };
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
    let dropped = covered.as_ref().map_or(String::new(), |c| {
        let n = c.iter().filter(|&&c| c).count();
        format!(" ({n} covered SID-history rows left out)")
    });
    eprintln!(
        "{} training examples ({} tokens) from {} rows{dropped}; tasks: {}",
        examples.len(),
        lengths.iter().sum::<usize>(),
        train_rows.len(),
        tasks.iter().map(|t| t.name()).collect::<Vec<_>>().join(",")
    );

    // Validation sample: the first rows of the valid split (fixed, so runs are comparable).
    let mut valid_rows = ds.read_split(Split::Valid)?;
    valid_rows.truncate(args.valid_rows);
    let validator = Validator::new(
        base.prompts(),
        &contexts,
        &valid_rows,
        args.cutoff,
        Decoder::for_checkpoint(&base, &device)?,
        args.valid_beams,
    )?;
    let (levels, validator) = match args.sid_softmax {
        SidSoftmax::Full => (None, validator),
        SidSoftmax::Level => {
            let sets = LevelSets::new(&base.index, tokenizer, &device)?;
            (Some(sets.clone()), validator.with_levels(sets))
        }
    };

    dirs.create()?;
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
    if args.item_lr_scale != 1.0 {
        if !model.has_item_embeddings() {
            return Err(TrainerError::Invalid(format!(
                "--item-lr-scale needs a checkpoint with item embeddings; {} has none \
                 (create it with init --item-embeddings)",
                dirs.start(&args.init).display()
            )));
        }
        opt.scale_lr(sidrec::model::ITEM_EMBEDDINGS_VAR, args.item_lr_scale)
            .map_err(|e| TrainerError::Invalid(format!("--item-lr-scale: {e}")))?;
    }
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
    let metrics_path = &dirs.metrics;
    let Some(mut state) = TrainState::start(
        dirs.resuming,
        args.best_by,
        &dirs.last,
        metrics_path,
        &mut opt,
    )?
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

    let pb = progress::bar(total_steps as u64, "sft");
    pb.set_position(state.step as u64);
    let checkpoints = RunCheckpoints {
        dirs: &dirs,
        base: &base,
        stage: "sft",
        patience: Some(args.patience),
        pb: &pb,
    };
    let mut acc = GradAccumulator::default();
    let mut in_group = 0usize;
    let (mut group_nll, mut group_sup, mut window_tokens) = (0f64, 0usize, 0usize);
    let (mut group_item_nll, mut group_items) = (0f64, 0usize);
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
            let token_weights = match &weights {
                Some(w) => {
                    let w: Vec<f32> = idx.iter().map(|&i| w[i]).collect();
                    Some(super::value::token_weights(&batch, &w)?)
                }
                None => None,
            };
            let opts = LossOptions {
                token_weights: token_weights.as_ref(),
                levels: levels.as_ref(),
                next_item: args.next_item_loss > 0.0,
                soft: soft.as_ref(),
            };
            let SupervisedLoss {
                nll,
                next_item,
                soft: soft_loss,
            } = supervised_loss(model, &batch, opts, Mode::Train)?;
            let descend = soft_loss.as_ref().unwrap_or(&nll);
            let mut loss = (descend / (batch.supervised.max(1) * args.grad_accum) as f64)?;
            if let Some((item_nll, k)) = &next_item {
                let scale = args.next_item_loss / (k.max(&1) * args.grad_accum) as f64;
                loss = (loss + (item_nll * scale)?)?;
                group_item_nll += item_nll.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                group_items += k;
            }
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
            let item_loss = (group_items > 0).then(|| group_item_nll / group_items as f64);
            (group_nll, group_sup, group_item_nll, group_items) = (0.0, 0, 0.0, 0);
            let tps = window_tokens as f64 / window_start.elapsed().as_secs_f64().max(1e-9);
            pb.set_position(state.step as u64);
            pb.set_message(format!("loss {loss_value:.3} {tps:.0} tok/s"));
            if state.step % args.log_every == 0 {
                let mut record = serde_json::json!({"step": state.step, "epoch": epoch,
                    "loss": loss_value, "lr": lr, "grad_norm": grad_norm, "tokens_per_s": tps,
                    "elapsed_s": started.elapsed().as_secs_f64()});
                if let Some(l) = item_loss {
                    record["next_item_loss"] = l.into();
                }
                append_jsonl(metrics_path, &record)?;
                window_tokens = 0;
                window_start = Instant::now();
            }
            let at_end = state.step >= total_steps;
            // `--eval-every 0`: one validation, at the end, where each one costs as much as
            // dozens of steps of a small model.
            let due = args.eval_every > 0 && (state.step % args.eval_every == 0 || last_of_epoch);
            if due || at_end {
                let v = validator.run(model, pad, &device)?;
                if checkpoints.after_validation(&mut state, &v, epoch, at_end, &opt, Vec::new())? {
                    break 'epochs;
                }
            }
        }
    }
    checkpoints.finish(&state, started.elapsed());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
