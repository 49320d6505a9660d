//! The GRPO objective (MINIONEREC.md §6.3): per-token policy gradient with the group advantage,
//! the k3 KL estimator against a frozen reference model, and (for several updates per rollout
//! batch) PPO-style ratio clipping.
//!
//! Per token: `−(min(ρ·A, clip(ρ, 1−ε, 1+ε)·A) − β·kl)` with `ρ = exp(logp − logp_old)` and
//! `kl = exp(ref − logp) − (ref − logp) − 1`. On the first update `logp_old` is `logp` detached,
//! so `ρ ≡ 1` and the gradient is the reference's `exp(logp − sg(logp))·A`. The loss is the mean
//! over each sequence's completion tokens, then the mean over the sequences of the step.

use candle_core::{Device, Tensor, D};
use sidrec::model::{Mode, Qwen2};

use crate::error::{Result, TrainerError};

/// One completion to train on.
#[derive(Debug, Clone, Copy)]
pub struct Sequence<'a> {
    /// Prompt token ids.
    pub prompt: &'a [u32],
    /// Completion token ids (SID, `\n`, EOS).
    pub completion: &'a [u32],
    /// Group-normalised advantage.
    pub advantage: f32,
}

/// A micro-batch laid out for [`Qwen2::forward_grouped_hidden`]: each distinct prompt once,
/// its completions beside it, plus per-token advantages and normalisation weights.
pub struct Prepared {
    /// Distinct prompts (consecutive sequences with equal prompts share one), left-padded
    /// `[B, P]`.
    pub prompt_ids: Tensor,
    /// Real length of each prompt.
    pub prompt_lengths: Vec<usize>,
    /// Completions, right-padded `[n, S]`.
    pub completions: Tensor,
    /// The prompt row each completion continues.
    pub prompt_of: Vec<usize>,
    /// Index of each real completion token in the flattened `[n * S]` `[N]` (u32).
    pub positions: Tensor,
    /// The completion tokens `[N]` (u32).
    pub targets: Tensor,
    /// Advantage of each completion token's sequence `[N]`.
    pub advantages: Tensor,
    /// `1 / (completion length × sequences in the step)` per token `[N]`.
    pub weights: Tensor,
    /// Each sequence's prompt and completion ids and its prompt length: where the copy gate
    /// acts on a completion token depends on the SIDs before it.
    pub sequences: Vec<(Vec<u32>, usize)>,
}

/// Build a micro-batch of `seqs`; `step_sequences` is the number of sequences in the whole
/// optimizer step (the loss is their mean, however the step is split into micro-batches).
/// A group's completions should be consecutive: that is what lets them share one prompt pass.
pub fn prepare(
    seqs: &[Sequence<'_>],
    step_sequences: usize,
    pad: u32,
    device: &Device,
) -> Result<Prepared> {
    if seqs.is_empty()
        || seqs
            .iter()
            .any(|s| s.prompt.is_empty() || s.completion.is_empty())
    {
        return Err(TrainerError::Invalid(
            "a GRPO micro-batch needs sequences with non-empty prompts and completions".into(),
        ));
    }
    let mut prompts: Vec<&[u32]> = Vec::new();
    let mut prompt_of = Vec::with_capacity(seqs.len());
    for s in seqs {
        if prompts.last() != Some(&s.prompt) {
            prompts.push(s.prompt);
        }
        prompt_of.push(prompts.len() - 1);
    }
    let p = prompts.iter().map(|x| x.len()).max().unwrap_or(1);
    let mut pids = Vec::with_capacity(prompts.len() * p);
    for x in &prompts {
        pids.extend(std::iter::repeat_n(pad, p - x.len()));
        pids.extend_from_slice(x);
    }
    let width = seqs.iter().map(|x| x.completion.len()).max().unwrap_or(1);
    let mut cids = Vec::with_capacity(seqs.len() * width);
    let (mut positions, mut targets, mut adv, mut w) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (r, s) in seqs.iter().enumerate() {
        let n = s.completion.len();
        cids.extend_from_slice(s.completion);
        cids.extend(std::iter::repeat_n(pad, width - n));
        positions.extend((0..n).map(|j| (r * width + j) as u32));
        targets.extend_from_slice(s.completion);
        adv.extend(std::iter::repeat_n(s.advantage, n));
        w.extend(std::iter::repeat_n(
            1.0 / (n * step_sequences.max(1)) as f32,
            n,
        ));
    }
    let n = adv.len();
    Ok(Prepared {
        prompt_ids: Tensor::from_vec(pids, (prompts.len(), p), device)?,
        prompt_lengths: prompts.iter().map(|x| x.len()).collect(),
        completions: Tensor::from_vec(cids, (seqs.len(), width), device)?,
        prompt_of,
        positions: Tensor::from_vec(positions, n, device)?,
        targets: Tensor::from_vec(targets, n, device)?,
        advantages: Tensor::from_vec(adv, n, device)?,
        weights: Tensor::from_vec(w, n, device)?,
        sequences: seqs
            .iter()
            .map(|s| ([s.prompt, s.completion].concat(), s.prompt.len()))
            .collect(),
    })
}

/// Log-probability `[N]` of each completion token under `model` (full-vocabulary log-softmax).
/// Each prompt runs once however many completions continue it.
pub fn token_logps(model: &Qwen2, p: &Prepared, mode: Mode) -> Result<Tensor> {
    let hidden = model.forward_grouped_hidden(
        &p.prompt_ids,
        &p.prompt_lengths,
        &p.completions,
        &p.prompt_of,
        mode,
    )?;
    let (n, s, h) = hidden.dims3()?;
    let picked = hidden.reshape((n * s, h))?.index_select(&p.positions, 0)?;
    let logits = model.logits(&picked)?;
    let logits = match (model.has_copy_gate(), model.item_lookup()) {
        (false, _) => logits,
        (true, None) => {
            return Err(TrainerError::Invalid(
                "the model has a copy gate but no item lookup is attached".into(),
            ))
        }
        (true, Some(lookup)) => {
            let copies: Vec<_> = p
                .sequences
                .iter()
                .flat_map(|(ids, prompt_len)| {
                    (*prompt_len..ids.len()).map(|t| lookup.copy_target_at(ids, t))
                })
                .collect();
            model.with_copy_logits(&logits, &picked, &copies)?
        }
    };
    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    Ok(logp.gather(&p.targets.unsqueeze(1)?, 1)?.squeeze(1)?)
}

/// GRPO settings of the objective.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossConfig {
    /// KL coefficient β.
    pub beta: f64,
    /// Ratio clipping ε (`None`: no clipping).
    pub epsilon: Option<f64>,
}

/// The step's loss contribution (scalar, differentiable) and the per-token KL `[N]` (detached).
pub fn grpo_loss(
    logp: &Tensor,
    ref_logp: &Tensor,
    old_logp: Option<&Tensor>,
    prepared: &Prepared,
    cfg: &LossConfig,
) -> Result<(Tensor, Tensor)> {
    let adv = &prepared.advantages;
    let old = match old_logp {
        Some(o) => o.detach(),
        None => logp.detach(),
    };
    let ratio = (logp - &old)?.exp()?;
    let unclipped = (&ratio * adv)?;
    let objective = match cfg.epsilon {
        Some(eps) => {
            let clipped = (ratio.clamp(1.0 - eps, 1.0 + eps)? * adv)?;
            unclipped.minimum(&clipped)?
        }
        None => unclipped,
    };
    let d = (ref_logp.detach() - logp)?;
    let kl = ((d.exp()? - &d)? - 1.0)?;
    let per_token = ((&kl * cfg.beta)? - objective)?;
    let loss = (per_token * &prepared.weights)?.sum_all()?;
    Ok((loss, kl.detach()))
}
