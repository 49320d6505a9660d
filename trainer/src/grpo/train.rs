//! `sidrec-trainer grpo`: the training loop.
//!
//! Per rollout batch: `--prompts-per-step` prompts, `G` completions each from the constrained
//! decoder, rewards per group, group-normalised advantages, then `--num-iterations` optimizer
//! steps on those completions (gradients accumulated over micro-batches of `--micro-batch`
//! completions). The reference model is a frozen copy of `--init`, optionally pulled toward the
//! policy every `--sync-ref-every` steps. Validation, best/last checkpoints, metrics.jsonl and
//! `--resume` work as in SFT, with the reference weights saved alongside when they move.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use sidrec::checkpoint;
use sidrec::data::{DatasetDir, Split};
use sidrec::decode::Decoder;
use sidrec::model::{checkpoint as hf, Mode};
use sidrec::Sid;

use super::data::{parse_tasks, RlDataBuilder, RlExample};
use super::loss::{grpo_loss, prepare, token_logps, LossConfig, Prepared, Sequence};
use super::rewards::{
    group_advantages, CfScorer, GroupTarget, ItemEmbeddings, RewardSpec, Rewarder,
};
use super::rollout::{sid_completion, Roller, RolloutMode};
use crate::cli::GrpoArgs;
use crate::data::features::RowContexts;
use crate::error::{Result, TrainerError};
use crate::progress;
use crate::train::batch::epoch_batches;
use crate::train::optim::{learning_rate, sorted_vars, AdamW, AdamWConfig, GradAccumulator};
use crate::train::run::{category, load_trainable, var_model, RunCheckpoints, RunDirs};
use crate::train::state::{append_jsonl, TrainState};
use crate::train::validate::Validator;

/// File of the (moving) reference model's weights inside a `last/` checkpoint.
pub const REF_FILE: &str = "ref_model.safetensors";

fn check_args(args: &GrpoArgs) -> Result<()> {
    let bad = |m: &str| Err(TrainerError::Invalid(m.to_string()));
    if args.num_generations < 2 {
        return bad("--num-generations must be at least 2 (advantages are normalised per group)");
    }
    if args.prompts_per_step == 0 || args.micro_batch == 0 || args.epochs == 0 {
        return bad("--prompts-per-step, --micro-batch and --epochs must be at least 1");
    }
    if args.num_iterations == 0 || args.eval_every == 0 || args.log_every == 0 {
        return bad("--num-iterations, --eval-every and --log-every must be at least 1");
    }
    if !(args.beta >= 0.0 && args.beta.is_finite()) {
        return bad("--beta must be a finite number >= 0");
    }
    if !(args.epsilon > 0.0 && args.epsilon < 1.0) {
        return bad("--epsilon must be in (0, 1)");
    }
    if !(args.temperature > 0.0 && args.temperature.is_finite()) {
        return bad("--temperature must be > 0");
    }
    if !(args.ref_mixup_alpha > 0.0 && args.ref_mixup_alpha <= 1.0) {
        return bad("--ref-mixup-alpha must be in (0, 1]");
    }
    if !(0.0..1.0).contains(&args.warmup_ratio) {
        return bad("--warmup-ratio must be in [0, 1)");
    }
    Ok(())
}

/// The variables' values as safetensors bytes (name order).
fn vars_bytes(vars: &[(String, Var)]) -> Result<Vec<u8>> {
    let owned: Vec<(String, Tensor)> = vars
        .iter()
        .map(|(n, v)| Ok((n.clone(), v.as_tensor().contiguous()?)))
        .collect::<Result<_>>()?;
    safetensors::serialize(owned.iter().map(|(k, t)| (k.as_str(), t)), None)
        .map_err(|e| TrainerError::Invalid(format!("serialising the reference model: {e}")))
}

/// Overwrite `vars` with the tensors of a file written by [`vars_bytes`].
fn load_vars(vars: &[(String, Var)], path: &Path) -> Result<()> {
    let device = vars
        .first()
        .map(|(_, v)| v.device().clone())
        .unwrap_or(Device::Cpu);
    let map: HashMap<String, Tensor> = candle_core::safetensors::load(path, &device)
        .map_err(|e| TrainerError::Invalid(format!("{}: {e}", path.display())))?;
    for (name, var) in vars {
        let t = map.get(name).ok_or_else(|| {
            TrainerError::Invalid(format!("{}: no tensor {name}", path.display()))
        })?;
        var.set(t)?;
    }
    Ok(())
}

/// `dst <- src`, variable by variable (same names, same order).
fn copy_vars(src: &[(String, Var)], dst: &[(String, Var)]) -> Result<()> {
    for ((sn, s), (dn, d)) in src.iter().zip(dst) {
        if sn != dn {
            return Err(TrainerError::Invalid(format!(
                "policy and reference variables differ: {sn} vs {dn}"
            )));
        }
        d.set(s.as_tensor())?;
    }
    Ok(())
}

/// `ref <- alpha * policy + (1 - alpha) * ref`, variable by variable (same names, same order).
pub fn mix_reference(
    policy: &[(String, Var)],
    reference: &[(String, Var)],
    alpha: f64,
) -> Result<()> {
    for ((pn, p), (rn, r)) in policy.iter().zip(reference) {
        if pn != rn {
            return Err(TrainerError::Invalid(format!(
                "policy and reference variables differ: {pn} vs {rn}"
            )));
        }
        let mixed = ((p.as_tensor() * alpha)? + (r.as_tensor() * (1.0 - alpha))?)?;
        r.set(&mixed)?;
    }
    Ok(())
}

/// What one rollout batch produced.
#[derive(Default)]
struct RolloutStats {
    reward_sum: f64,
    completions: usize,
    prompts_hit: usize,
    prompts: usize,
}

/// `sidrec-trainer grpo`; `--sasrec DIR` supplies the `cf` reward's scorer.
pub fn run(args: &GrpoArgs) -> Result<()> {
    let cf: Option<Arc<dyn CfScorer>> = match &args.sasrec {
        Some(dir) => {
            let device = sidrec::device::parse_device(&args.device)?;
            Some(Arc::new(crate::sasrec::SasRec::load(dir, &device)?))
        }
        None => None,
    };
    run_with(args, cf)
}

/// `grpo` with an optional collaborative-filtering scorer for the `cf` reward.
pub fn run_with(args: &GrpoArgs, cf: Option<Arc<dyn CfScorer>>) -> Result<()> {
    check_args(args)?;
    let spec: RewardSpec = args.reward.parse()?;
    let rollout_mode: RolloutMode = args.rollout.parse()?;
    let tasks = parse_tasks(&args.tasks)?;
    let embeddings = match (
        &args.item_embeddings,
        spec.uses(super::rewards::RewardKind::Semantic),
    ) {
        (Some(p), true) => Some(Arc::new(ItemEmbeddings::load(p)?)),
        (Some(p), false) => {
            eprintln!(
                "note: --item-embeddings {} is unused (no semantic reward)",
                p.display()
            );
            None
        }
        (None, _) => None,
    };
    let rewarder = Rewarder::new(spec, args.num_generations, embeddings, cf)?;

    let device = sidrec::device::parse_device(&args.device)?;
    let dirs = RunDirs::new(&args.out, args.resume);
    let (base, varmap) = load_trainable(dirs.start(&args.init), &device)?;
    let model = &base.model;
    let (ref_varmap, ref_model) = var_model(model.config(), &device)?;
    checkpoint::attach_item_lookup(&ref_model, &base.tokenizer, &base.index)?;
    // Dropout regularises the policy update only; the frozen reference stays deterministic.
    model.set_dropout(args.dropout)?;
    let vars = sorted_vars(&varmap)?;
    let ref_vars = sorted_vars(&ref_varmap)?;
    if dirs.resuming && dirs.last.join(REF_FILE).is_file() {
        load_vars(&ref_vars, &dirs.last.join(REF_FILE))?;
    } else if dirs.resuming {
        hf::load_into_varmap(&args.init, &ref_varmap)?;
    } else {
        // A fresh run's reference is `--init`, whose weights the policy has just been given.
        copy_vars(&vars, &ref_vars)?;
    }
    let tokenizer = &base.tokenizer;

    let ds = DatasetDir::discover(&args.data)?;
    let train_rows = ds.read_split(Split::Train)?;
    let contexts = RowContexts::load(&base.meta.prompt_tokens, &ds.root)?;
    let examples: Vec<RlExample> = RlDataBuilder {
        prompts: base.prompts(),
        contexts: &contexts,
        items: &base.items,
        category: category(&ds),
        max_prompt_len: args.max_prompt_len,
        title_history_rows: args.title_history_rows,
        seed: args.seed,
        truncated_histories: args.truncated_histories,
    }
    .build(&train_rows, &tasks)?;
    if examples.is_empty() {
        return Err(TrainerError::Invalid("no RL prompts".into()));
    }
    let lengths: Vec<usize> = examples.iter().map(|e| e.prompt.len()).collect();
    eprintln!(
        "{} RL prompts from {} rows; tasks: {}; reward: {}; rollout: {} x {}",
        examples.len(),
        train_rows.len(),
        tasks.iter().map(|t| t.name()).collect::<Vec<_>>().join(","),
        rewarder.spec(),
        rollout_mode,
        args.num_generations
    );

    let decoder = Decoder::for_checkpoint(&base, &device)?;
    // Validation: SFT's (beam-search HR@10/NDCG@10 with the eval prompt, and the seqrec loss),
    // on the first valid rows so that runs are comparable.
    let mut valid_rows = ds.read_split(Split::Valid)?;
    valid_rows.truncate(args.valid_rows);
    let validator = Validator::new(
        base.prompts(),
        &contexts,
        &valid_rows,
        args.max_prompt_len + 16,
        decoder.clone(),
        args.valid_beams,
    )?;
    let roller = Roller {
        decoder,
        mode: rollout_mode,
        num_generations: args.num_generations,
        temperature: args.temperature,
    };

    dirs.create()?;
    let mut opt = AdamW::new(
        vars.clone(),
        AdamWConfig {
            weight_decay: args.weight_decay,
            ..AdamWConfig::default()
        },
    )?;
    let metrics_path = &dirs.metrics;
    let Some(mut state) = TrainState::start(
        dirs.resuming,
        crate::cli::BestBy::Ndcg10,
        &dirs.last,
        metrics_path,
        &mut opt,
    )?
    else {
        return Ok(());
    };

    let batches_per_epoch = lengths.len().div_ceil(args.prompts_per_step);
    let all_steps = batches_per_epoch * args.epochs * args.num_iterations;
    let total_steps = args.max_steps.map_or(all_steps, |m| m.min(all_steps));
    let warmup = (args.warmup_ratio * total_steps as f64).ceil() as usize;
    let loss_cfg = LossConfig {
        beta: args.beta,
        // With one update per rollout batch the ratio is identically 1: nothing to clip.
        epsilon: (args.num_iterations > 1).then_some(args.epsilon),
    };
    let pad = tokenizer.eos_id();

    let pb = progress::bar(total_steps as u64, "grpo");
    pb.set_position(state.step as u64);
    let checkpoints = RunCheckpoints {
        dirs: &dirs,
        base: &base,
        stage: "grpo",
        patience: args.patience,
        pb: &pb,
    };
    let mut acc = GradAccumulator::default();
    let started = Instant::now();
    'epochs: for epoch in state.epoch..args.epochs {
        let batches = epoch_batches(&lengths, args.prompts_per_step, args.seed, epoch);
        let first = if epoch == state.epoch { state.batch } else { 0 };
        for (bi, idx) in batches.iter().enumerate().skip(first) {
            let t0 = Instant::now();
            let prompts: Vec<&[u32]> = idx.iter().map(|&i| examples[i].prompt.as_slice()).collect();
            let mut groups = roller.generate(model, tokenizer, &prompts)?;
            let mut stats = RolloutStats::default();
            let mut hits = Vec::with_capacity(groups.len());
            for (&i, group) in idx.iter().zip(groups.iter_mut()) {
                let ex = &examples[i];
                let hit = group.iter().any(|c| c.candidate.sid == ex.target_sid);
                hits.push(hit);
                if args.add_target && !hit {
                    if let Some(last) = group.last_mut() {
                        let sid: Sid = ex.target_sid.parse()?;
                        *last = sid_completion(&sid, vec![ex.target], tokenizer)?;
                    }
                }
            }
            let mut seqs: Vec<Sequence> = Vec::new();
            for ((&i, group), hit) in idx.iter().zip(&groups).zip(hits) {
                let ex = &examples[i];
                let cands: Vec<_> = group.iter().map(|c| c.candidate.clone()).collect();
                let target = GroupTarget {
                    item: ex.target,
                    sid: &ex.target_sid,
                    history: &ex.history,
                };
                let rewards = rewarder.group(&target, &cands)?;
                stats.reward_sum += rewards.iter().sum::<f64>();
                stats.completions += rewards.len();
                stats.prompts += 1;
                // The policy's own hit rate, before `--add-target` filled any group.
                stats.prompts_hit += usize::from(hit);
                for (c, a) in group.iter().zip(group_advantages(&rewards)) {
                    seqs.push(Sequence {
                        prompt: &ex.prompt,
                        completion: &c.tokens,
                        advantage: a as f32,
                    });
                }
            }
            let rollout_s = t0.elapsed().as_secs_f64();
            let t1 = Instant::now();
            // Whole groups per micro-batch, so that each prompt runs once per forward pass.
            let g = args.num_generations.max(1);
            let chunks: Vec<Prepared> = seqs
                .chunks((args.micro_batch / g).max(1) * g)
                .map(|c| prepare(c, seqs.len(), pad, &device))
                .collect::<Result<_>>()?;
            // Same forward implementation as the policy's, so the KL of an unchanged policy is 0.
            let ref_logps: Vec<Tensor> = chunks
                .iter()
                .map(|p| Ok(token_logps(&ref_model, p, Mode::Train)?.detach()))
                .collect::<Result<_>>()?;
            let mut old: Vec<Option<Tensor>> = vec![None; chunks.len()];
            let prev_step = state.step;
            for it in 0..args.num_iterations {
                let (mut loss_sum, mut kl_sum, mut tokens) = (0f64, 0f64, 0usize);
                for (k, p) in chunks.iter().enumerate() {
                    // Masks depend on (seed, step, micro-batch) only, so a resume draws the same.
                    model.seed_dropout(
                        args.seed
                            ^ ((state.step as u64) << 24 | k as u64)
                                .wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    );
                    let logp = token_logps(model, p, Mode::Train)?;
                    let (loss, kl) =
                        grpo_loss(&logp, &ref_logps[k], old[k].as_ref(), p, &loss_cfg)?;
                    acc.add(&vars, &loss.backward()?)?;
                    if it == 0 {
                        old[k] = Some(logp.detach());
                    }
                    loss_sum += loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                    kl_sum += kl.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                    tokens += kl.dim(0)?;
                }
                let lr = learning_rate(args.lr, state.step, warmup, total_steps, !args.linear);
                let grad_norm = opt.step(&mut acc, lr, Some(args.clip))?;
                state.step += 1;
                if args.sync_ref_every > 0 && state.step % args.sync_ref_every == 0 {
                    mix_reference(&vars, &ref_vars, args.ref_mixup_alpha)?;
                }
                let reward = stats.reward_sum / stats.completions.max(1) as f64;
                let hit_rate = stats.prompts_hit as f64 / stats.prompts.max(1) as f64;
                let kl = kl_sum / tokens.max(1) as f64;
                pb.set_position(state.step as u64);
                pb.set_message(format!("r {reward:.3} hit {hit_rate:.2} kl {kl:.4}"));
                if state.step % args.log_every == 0 {
                    append_jsonl(
                        metrics_path,
                        &serde_json::json!({"step": state.step, "epoch": epoch, "iteration": it,
                            "loss": loss_sum, "reward": reward, "hit_rate": hit_rate, "kl": kl,
                            "lr": lr, "grad_norm": grad_norm, "prompts": stats.prompts,
                            "completions": stats.completions, "rollout_s": rollout_s,
                            "update_s": t1.elapsed().as_secs_f64(),
                            "elapsed_s": started.elapsed().as_secs_f64()}),
                    )?;
                }
                if state.step >= total_steps {
                    break;
                }
            }
            state.epoch = epoch;
            state.batch = bi + 1;
            let at_end =
                state.step >= total_steps || (epoch + 1 == args.epochs && bi + 1 == batches.len());
            if state.step / args.eval_every > prev_step / args.eval_every || at_end {
                let v = validator.run(model, pad, &device)?;
                // The reference model, when it moves, rides in the same atomic write.
                let mut extra = Vec::new();
                if args.sync_ref_every > 0 {
                    extra.push((REF_FILE.to_string(), vars_bytes(&ref_vars)?));
                }
                if checkpoints.after_validation(&mut state, &v, epoch, at_end, &opt, extra)? {
                    break 'epochs;
                }
            }
        }
    }
    checkpoints.finish(&state, started.elapsed());
    Ok(())
}
