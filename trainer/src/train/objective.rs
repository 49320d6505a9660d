//! The supervised objective of a batch, from one forward pass: the tokens' negative
//! log-likelihood (over the whole vocabulary, or per SID level with `--sid-softmax level`),
//! optionally weighted per example, plus the optional next-item loss; or, with soft targets,
//! the cross-entropy against them.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use sidrec::model::{kernels, Mode, Qwen2};
use sidrec::tokenizer::SidTokenizer;
use sidrec::trie::{SidTrie, SidVocab};
use sidrec::SidIndex;

use super::batch::Batch;
use super::soft_targets::SoftTargets;
use crate::error::{Result, TrainerError};

/// What the loss of a batch includes beyond the plain token NLL.
#[derive(Clone, Copy, Default)]
pub struct LossOptions<'a> {
    /// Per supervised token (aligned with `Batch::targets`), the weight of its example.
    pub token_weights: Option<&'a Tensor>,
    /// Normalise each SID token over its level only (see [`LevelSets`]).
    pub levels: Option<&'a LevelSets>,
    /// Add the next-item loss (see [`supervised_loss`]).
    pub next_item: bool,
    /// Train against these soft targets (whole-vocabulary softmax only).
    pub soft: Option<&'a SoftTargets>,
}

/// The loss terms of one batch.
pub struct SupervisedLoss {
    /// Sum of the supervised tokens' negative log-likelihoods (each times its weight when
    /// token weights were given).
    pub nll: Tensor,
    /// Sum of the next-item negative log-likelihoods and how many items they cover.
    pub next_item: Option<(Tensor, usize)>,
    /// With soft targets: the summed cross-entropy against them (each times its weight), the
    /// term to descend instead of `nll`, which is then only reported.
    pub soft: Option<Tensor>,
}

/// Sum of negative log-likelihoods of the supervised tokens of `batch` (whole vocabulary).
pub fn batch_nll(model: &Qwen2, batch: &Batch, mode: Mode) -> Result<Tensor> {
    Ok(supervised_loss(model, batch, LossOptions::default(), mode)?.nll)
}

/// The losses of `batch` under `opts`.
///
/// The next-item loss: at the last SID token of every complete item of a row, the
/// item-embedding table used as an output head ([`Qwen2::item_scores`]) is trained to name the
/// item that follows it in the row (the next history item, or the response's). It gives the
/// item-to-item associations a last-item transition table keys on a direct, dense gradient;
/// decoding never reads the head.
pub fn supervised_loss(
    model: &Qwen2,
    batch: &Batch,
    opts: LossOptions<'_>,
    mode: Mode,
) -> Result<SupervisedLoss> {
    if model.has_copy_gate() && (opts.levels.is_some() || opts.soft.is_some()) {
        return Err(TrainerError::Invalid(
            "the copy gate (init --copy-gate) needs the whole-vocabulary softmax without soft \
             targets (--sid-softmax full, no --soft-targets)"
                .into(),
        ));
    }
    let pairs = if opts.next_item {
        next_item_pairs(model, batch)?
    } else {
        None
    };
    let positions = match &pairs {
        Some((p, _)) => Tensor::cat(&[&batch.positions, p], 0)?,
        None => batch.positions.clone(),
    };
    let hidden = model.forward_hidden_at(&batch.ids, Some(&batch.mask), &positions, mode)?;
    let n = batch.supervised;
    let tokens = hidden.narrow(0, 0, n)?;
    let (nll, soft) = match (opts.levels, opts.soft) {
        (Some(_), Some(_)) => {
            return Err(TrainerError::Invalid(
                "soft targets need the whole-vocabulary softmax (--sid-softmax full)".into(),
            ))
        }
        (None, None) => {
            let copies = model.copy_targets(&batch.ids, &batch.positions)?;
            let logits = model.with_copy_logits(&model.logits(&tokens)?, &tokens, &copies)?;
            (
                weighted_sum(
                    kernels::cross_entropy(&logits, &batch.targets)?,
                    opts.token_weights,
                )?,
                None,
            )
        }
        (Some(sets), None) => (sets.nll(model, batch, &tokens, opts.token_weights)?, None),
        (None, Some(targets)) => {
            let logits = model.logits(&tokens)?;
            let logp = log_softmax(&logits)?;
            let q = targets
                .dense(batch, logits.dim(1)?)?
                .to_device(logits.device())?;
            let soft = weighted_sum((q * &logp)?.sum(1)?.neg()?, opts.token_weights)?;
            let picked = logp.gather(&batch.targets.unsqueeze(1)?, 1)?.squeeze(1)?;
            let nll = weighted_sum(picked.neg()?.detach(), opts.token_weights)?;
            (nll, Some(soft))
        }
    };
    let next_item = match pairs {
        Some((_, rows)) => {
            let k = rows.dim(0)?;
            let scores = model.item_scores(&hidden.narrow(0, n, k)?)?;
            Some((kernels::cross_entropy(&scores, &rows)?.sum_all()?, k))
        }
        None => None,
    };
    Ok(SupervisedLoss {
        nll,
        next_item,
        soft,
    })
}

/// Log-probabilities over the last dimension of `[N, V]` logits. The row maximum only keeps
/// the exponentials in range and cancels out of the value, so it is held out of the backward
/// pass.
fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    let shifted = logits.broadcast_sub(&logits.max_keepdim(1)?.detach())?;
    let lse = shifted.exp()?.sum_keepdim(1)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?)
}

fn weighted_sum(nll: Tensor, weights: Option<&Tensor>) -> Result<Tensor> {
    Ok(match weights {
        Some(w) => (nll * w)?.sum_all()?,
        None => nll.sum_all()?,
    })
}

/// Flat positions of the complete items of `batch` that another item follows in the same
/// row, and the item-embedding row of that next item; `None` when there is no such pair.
fn next_item_pairs(model: &Qwen2, batch: &Batch) -> Result<Option<(Tensor, Tensor)>> {
    let (_, l) = batch.ids.dims2()?;
    let ids = batch.ids.to_vec2::<u32>()?;
    let mask = batch.mask.to_vec2::<u32>()?;
    let (mut positions, mut next) = (Vec::new(), Vec::new());
    for (b, (row, m)) in ids.iter().zip(&mask).enumerate() {
        let real = m.iter().filter(|&&x| x == 1).count();
        let Some(rows) = model.item_rows_of(&row[..real])? else {
            return Err(TrainerError::Invalid(
                "--next-item-loss needs a checkpoint with item embeddings \
                 (init --item-embeddings)"
                    .into(),
            ));
        };
        let items: Vec<(usize, u32)> = rows
            .iter()
            .enumerate()
            .filter(|&(_, &r)| r != 0)
            .map(|(t, &r)| (t, r))
            .collect();
        for w in items.windows(2) {
            positions.push((b * l + w[0].0) as u32);
            next.push(w[1].1);
        }
    }
    if positions.is_empty() {
        return Ok(None);
    }
    let device = batch.ids.device();
    let k = positions.len();
    Ok(Some((
        Tensor::from_vec(positions, k, device)?,
        Tensor::from_vec(next, k, device)?,
    )))
}

/// The per-level softmax of `--sid-softmax level`: each supervised SID token is normalised
/// over the tokens that a fast-mode beam step (`ScoreMode::Fast`) normalises over at its depth:
/// the codes of its level, plus `\n` where a SID may end. The `\n` that ends a full-length SID
/// and the EOS after it are forced in decoding, so they carry no loss; every other target
/// (title text of the alignment tasks) keeps the whole-vocabulary softmax.
///
/// Why: the model then spends nothing on pushing down thousands of tokens that constrained
/// decoding can never pick, and training optimises exactly the scores fast decoding ranks by.
#[derive(Clone)]
pub struct LevelSets {
    vocab: SidVocab,
    newline: u32,
    eos: u32,
    /// Per depth: the token ids normalised over, and each one's slot among them.
    depths: Vec<(Tensor, HashMap<u32, u32>)>,
}

/// How one supervised token is scored by the level loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scored {
    /// Over the whole vocabulary.
    Full,
    /// Over depth `.0`'s tokens; `.1` is its slot there.
    Level(usize, u32),
    /// Forced in decoding: no loss.
    Forced,
}

impl LevelSets {
    /// The sets of a checkpoint's SID index and tokenizer.
    pub fn new(index: &SidIndex, tokenizer: &SidTokenizer, device: &Device) -> Result<Self> {
        let vocab = tokenizer.sid_vocab().clone();
        let trie = SidTrie::build(index, &vocab)?;
        Self::from_parts(
            vocab,
            &trie,
            tokenizer.newline_id(),
            tokenizer.eos_id(),
            device,
        )
    }

    /// The sets of `trie`, whose SID tokens `vocab` names, with these `\n` and EOS ids.
    pub fn from_parts(
        vocab: SidVocab,
        trie: &SidTrie,
        newline: u32,
        eos: u32,
        device: &Device,
    ) -> Result<Self> {
        let mut depths = Vec::with_capacity(trie.num_levels());
        for d in 0..trie.num_levels() {
            let tokens = trie.step_tokens(d, newline);
            let slots = tokens
                .iter()
                .enumerate()
                .map(|(i, &t)| (t, i as u32))
                .collect();
            let n = tokens.len();
            depths.push((Tensor::from_vec(tokens, n, device)?, slots));
        }
        Ok(Self {
            vocab,
            newline,
            eos,
            depths,
        })
    }

    /// How the token `row[t + 1]`, predicted at `t`, is scored.
    fn classify(&self, row: &[u32], t: usize) -> Scored {
        let target = row[t + 1];
        // How many SID tokens end just before `end`: the depth of a SID being written there.
        let sid_run = |end: usize| {
            row[..end]
                .iter()
                .rev()
                .take_while(|&&id| self.vocab.token(id).is_some())
                .count()
        };
        let at_depth = |depth: usize| match self.depths.get(depth) {
            Some((_, slots)) => slots
                .get(&target)
                .map_or(Scored::Full, |&s| Scored::Level(depth, s)),
            None => Scored::Forced,
        };
        if let Some(tok) = self.vocab.token(target) {
            return at_depth(tok.level as usize);
        }
        if target == self.newline {
            let run = sid_run(t + 1);
            if run > 0 {
                return at_depth(run);
            }
        }
        if target == self.eos && t > 0 && row[t] == self.newline && sid_run(t) > 0 {
            return Scored::Forced;
        }
        Scored::Full
    }

    /// Summed NLL of `batch`'s supervised tokens (final hidden states `hidden`, aligned with
    /// its targets), each over its set.
    fn nll(
        &self,
        model: &Qwen2,
        batch: &Batch,
        hidden: &Tensor,
        weights: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (_, l) = batch.ids.dims2()?;
        let ids = batch.ids.flatten_all()?.to_vec1::<u32>()?;
        let positions = batch.positions.to_vec1::<u32>()?;
        let targets = batch.targets.to_vec1::<u32>()?;
        // Per group (0: whole vocabulary, 1 + d: depth d): rows of `hidden` and their targets.
        let mut groups: Vec<(Vec<u32>, Vec<u32>)> = vec![Default::default(); 1 + self.depths.len()];
        for (i, &p) in positions.iter().enumerate() {
            let (row, t) = ((p as usize) / l, (p as usize) % l);
            match self.classify(&ids[row * l..(row + 1) * l], t) {
                Scored::Full => {
                    groups[0].0.push(i as u32);
                    groups[0].1.push(targets[i]);
                }
                Scored::Level(d, slot) => {
                    groups[1 + d].0.push(i as u32);
                    groups[1 + d].1.push(slot);
                }
                Scored::Forced => {}
            }
        }
        let device = hidden.device();
        let mut total = Tensor::zeros((), DType::F32, device)?;
        for (g, (rows, tgt)) in groups.into_iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            let k = rows.len();
            let rows = Tensor::from_vec(rows, k, device)?;
            let h = hidden.index_select(&rows, 0)?;
            let logits = match g {
                0 => model.logits(&h)?,
                d => model.logits_for(&h, &self.depths[d - 1].0)?,
            };
            let nll = kernels::cross_entropy(&logits, &Tensor::from_vec(tgt, k, device)?)?;
            let w = weights.map(|w| w.index_select(&rows, 0)).transpose()?;
            total = (total + weighted_sum(nll, w.as_ref())?)?;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sidrec::sid::{Sid, SidToken};

    const NL: u32 = 1;
    const EOS: u32 = 2;

    /// Items 10 (a0 b1 c2), 11 (a0 b1 c3, d0), 12 (a1 b0 c0); token id = 100 + 10·level + code.
    fn sets() -> LevelSets {
        let mut index = SidIndex::new();
        index.insert(10, Sid::from_codes(vec![0, 1, 2]));
        index.insert(11, Sid::from_codes(vec![0, 1, 3, 0]));
        index.insert(12, Sid::from_codes(vec![1, 0, 0]));
        let vocab = SidVocab::from_fn(&index, |t: SidToken| {
            Some(100 + 10 * t.level as u32 + t.code)
        })
        .unwrap();
        let trie = SidTrie::build(&index, &vocab).unwrap();
        LevelSets::from_parts(vocab, &trie, NL, EOS, &Device::Cpu).unwrap()
    }

    #[test]
    fn each_target_is_scored_over_what_fast_decoding_normalises() {
        let s = sets();
        let tokens = |d: usize| s.depths[d].0.to_vec1::<u32>().unwrap();
        // Depth 0: a0 a1; depth 1: b0 b1; depth 2: c0 c2 c3; depth 3: d0, and `\n` where a
        // three-code SID ends.
        assert_eq!(tokens(0), [100, 101]);
        assert_eq!(tokens(1), [110, 111]);
        assert_eq!(tokens(2), [120, 122, 123]);
        assert_eq!(tokens(3), [130, NL]);
        // "x : a0 b1 c3 d0 \n EOS" and "y a1 b0 c0 \n EOS", as prompt text, SID and response.
        let row = [7, 8, 100, 111, 123, 130, NL, EOS];
        let at = |t: usize| s.classify(&row, t);
        assert_eq!(at(0), Scored::Full, "text keeps the whole vocabulary");
        assert_eq!(at(1), Scored::Level(0, 0));
        assert_eq!(at(2), Scored::Level(1, 1));
        assert_eq!(at(3), Scored::Level(2, 2));
        assert_eq!(at(4), Scored::Level(3, 0));
        assert_eq!(
            at(5),
            Scored::Forced,
            "`\\n` after a full-length SID is forced"
        );
        assert_eq!(at(6), Scored::Forced, "so is the EOS after it");
        let row = [9, 101, 110, 120, NL, EOS];
        assert_eq!(
            s.classify(&row, 3),
            Scored::Level(3, 1),
            "`\\n` ends a 3-code SID"
        );
        assert_eq!(s.classify(&row, 4), Scored::Forced);
        // A newline or EOS after text is ordinary text.
        assert_eq!(s.classify(&[5, NL, EOS], 0), Scored::Full);
        assert_eq!(s.classify(&[5, NL, EOS], 1), Scored::Full);
    }
}
