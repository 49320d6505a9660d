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

use crate::error::Result;
use crate::sft::batch::{make_batch, Batch};
use crate::sft::tasks::{Example, Task};

/// One completion to train on.
#[derive(Debug, Clone, Copy)]
pub struct Sequence<'a> {
    /// Prompt token ids.
    pub prompt: &'a [u32],
    /// Completion token ids (SID, `\n`, EOS).
    pub completion: &'a [u32],
    /// Group-normalised advantage.
    pub advantage: f32,
    /// The SFT task of the same shape (batch bookkeeping only).
    pub task: Task,
}

/// A padded batch of sequences with per-token advantages and normalisation weights.
pub struct Prepared {
    /// The model inputs; `positions`/`targets` are the completion tokens, sequence by sequence.
    pub batch: Batch,
    /// Advantage of each completion token's sequence `[N]`.
    pub advantages: Tensor,
    /// `1 / (completion length × sequences in the step)` per token `[N]`.
    pub weights: Tensor,
}

/// Build a micro-batch of `seqs`; `step_sequences` is the number of sequences in the whole
/// optimizer step (the loss is their mean, however the step is split into micro-batches).
pub fn prepare(
    seqs: &[Sequence<'_>],
    step_sequences: usize,
    pad: u32,
    device: &Device,
) -> Result<Prepared> {
    let examples: Vec<Example> = seqs
        .iter()
        .map(|s| Example {
            ids: [s.prompt, s.completion].concat(),
            prompt_len: s.prompt.len(),
            task: s.task,
            prompt_targets: Vec::new(),
        })
        .collect();
    let refs: Vec<&Example> = examples.iter().collect();
    let batch = make_batch(&refs, pad, device)?;
    let mut adv = Vec::with_capacity(batch.supervised);
    let mut w = Vec::with_capacity(batch.supervised);
    for s in seqs {
        let n = s.completion.len();
        adv.extend(std::iter::repeat_n(s.advantage, n));
        w.extend(std::iter::repeat_n(
            1.0 / (n.max(1) * step_sequences.max(1)) as f32,
            n,
        ));
    }
    let n = adv.len();
    Ok(Prepared {
        batch,
        advantages: Tensor::from_vec(adv, n, device)?,
        weights: Tensor::from_vec(w, n, device)?,
    })
}

/// Log-probability `[N]` of each completion token under `model` (full-vocabulary log-softmax).
pub fn token_logps(model: &Qwen2, batch: &Batch, mode: Mode) -> Result<Tensor> {
    let hidden = model.forward_hidden(&batch.ids, Some(&batch.mask), mode)?;
    let (b, l, h) = hidden.dims3()?;
    let picked = hidden
        .reshape((b * l, h))?
        .index_select(&batch.positions, 0)?;
    let logp = candle_nn::ops::log_softmax(&model.logits(&picked)?, D::Minus1)?;
    Ok(logp.gather(&batch.targets.unsqueeze(1)?, 1)?.squeeze(1)?)
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
