//! Supervised examples and their length-bucketed deterministic batching into padded tensors.

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sidrec::prompt::{Prompt, PromptEncoder};
use sidrec::ItemId;

use crate::error::Result;

/// One tokenised training example: `prompt ids ++ response ids ++ EOS`, loss on the response
/// and EOS (and on `prompt_targets`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Prompt and response token ids.
    pub ids: Vec<u32>,
    /// Number of leading ids that carry no loss (the prompt, after truncation).
    pub prompt_len: usize,
    /// Prompt positions whose token is also supervised (each predicted from the ids before
    /// it): the SID tokens of every history item after the first, with `--history-loss`.
    pub prompt_targets: Vec<usize>,
    /// The item the response names: the next item of a history task, the item of an
    /// alignment pair (`sft --value-weighting` weighs the example by its value).
    pub target: Option<ItemId>,
}

impl Example {
    /// `prompt` and its response through the prompt encoder; longer than `cutoff` ids, it keeps
    /// its last `cutoff` (the response survives, as the reference truncates).
    pub fn encode(prompts: &PromptEncoder<'_>, prompt: &Prompt, cutoff: usize) -> Result<Self> {
        let (mut ids, response) = prompts.encode_with_response(prompt)?;
        let prompt_len = ids.len();
        ids.extend(response);
        let cut = ids.len().saturating_sub(cutoff);
        Ok(Self {
            ids: ids[cut..].to_vec(),
            prompt_len: prompt_len.saturating_sub(cut),
            prompt_targets: Vec::new(),
            target: None,
        })
    }

    /// Number of supervised tokens (response + EOS).
    pub fn target_len(&self) -> usize {
        self.ids.len() - self.prompt_len
    }
}

/// A right-padded batch with the positions whose next token is supervised.
pub struct Batch {
    /// Token ids `[B, L]` (u32), right-padded.
    pub ids: Tensor,
    /// `[B, L]` u32, 1 on real tokens.
    pub mask: Tensor,
    /// Flat positions `b * L + t` (u32) whose hidden state predicts a supervised token.
    pub positions: Tensor,
    /// The supervised tokens, aligned with `positions` (u32).
    pub targets: Tensor,
    /// For each supervised position, the index of its example in the batch.
    pub example_of: Vec<u32>,
    /// Real (unpadded) tokens in the batch.
    pub tokens: usize,
    /// Supervised tokens in the batch.
    pub supervised: usize,
}

/// Pad `examples` into one batch; pads use `pad_id` and are masked out.
pub fn make_batch(examples: &[&Example], pad_id: u32, device: &Device) -> Result<Batch> {
    let b = examples.len();
    let l = examples
        .iter()
        .map(|e| e.ids.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let mut ids = vec![pad_id; b * l];
    let mut mask = vec![0u32; b * l];
    let (mut positions, mut targets, mut example_of) = (Vec::new(), Vec::new(), Vec::new());
    let mut tokens = 0;
    for (i, e) in examples.iter().enumerate() {
        let row = i * l;
        ids[row..row + e.ids.len()].copy_from_slice(&e.ids);
        mask[row..row + e.ids.len()].iter_mut().for_each(|m| *m = 1);
        tokens += e.ids.len();
        // Position t predicts token t + 1; supervision starts with the first response token,
        // plus the history SIDs chosen by `--history-loss`.
        for &t in &e.prompt_targets {
            positions.push((row + t - 1) as u32);
            targets.push(e.ids[t]);
        }
        for t in e.prompt_len.max(1) - 1..e.ids.len() - 1 {
            positions.push((row + t) as u32);
            targets.push(e.ids[t + 1]);
        }
        example_of.resize(positions.len(), i as u32);
    }
    let n = positions.len();
    Ok(Batch {
        ids: Tensor::from_vec(ids, (b, l), device)?,
        mask: Tensor::from_vec(mask, (b, l), device)?,
        positions: Tensor::from_vec(positions, n, device)?,
        targets: Tensor::from_vec(targets, n, device)?,
        example_of,
        tokens,
        supervised: n,
    })
}

/// The batches of one epoch as example indices: shuffled with `seed + epoch`, then sorted by
/// length within windows of 64 batches (less padding) and the batch order shuffled again. The
/// same seed and epoch always give the same batches, which is what `--resume` relies on.
pub fn epoch_batches(
    lengths: &[usize],
    batch_size: usize,
    seed: u64,
    epoch: usize,
) -> Vec<Vec<usize>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(epoch as u64));
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.shuffle(&mut rng);
    let window = batch_size.max(1) * 64;
    let mut batches = Vec::new();
    for chunk in order.chunks_mut(window) {
        chunk.sort_by_key(|&i| lengths[i]);
        batches.extend(chunk.chunks(batch_size.max(1)).map(|c| c.to_vec()));
    }
    batches.shuffle(&mut rng);
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supervised_positions_cover_response_and_eos() {
        let e = Example {
            ids: vec![5, 6, 7, 8, 9],
            prompt_len: 3,
            prompt_targets: Vec::new(),
            target: None,
        };
        let f = Example {
            ids: vec![1, 2],
            prompt_len: 1,
            prompt_targets: Vec::new(),
            target: None,
        };
        let b = make_batch(&[&e, &f], 0, &Device::Cpu).unwrap();
        assert_eq!(
            b.ids.to_vec2::<u32>().unwrap(),
            [[5, 6, 7, 8, 9], [1, 2, 0, 0, 0]]
        );
        assert_eq!(b.positions.to_vec1::<u32>().unwrap(), [2, 3, 5]);
        assert_eq!(b.targets.to_vec1::<u32>().unwrap(), [8, 9, 2]);
        assert_eq!((b.tokens, b.supervised), (7, 3));
        assert_eq!(b.example_of, [0, 0, 1]);

        // Supervised prompt tokens are predicted from the position before them.
        let g = Example {
            prompt_targets: vec![1, 2],
            ..e.clone()
        };
        let b = make_batch(&[&g], 0, &Device::Cpu).unwrap();
        assert_eq!(b.positions.to_vec1::<u32>().unwrap(), [0, 1, 2, 3]);
        assert_eq!(b.targets.to_vec1::<u32>().unwrap(), [6, 7, 8, 9]);
    }

    #[test]
    fn batches_are_deterministic_and_cover_everything() {
        let lengths: Vec<usize> = (0..1000).map(|i| (i * 37) % 101).collect();
        let a = epoch_batches(&lengths, 16, 7, 0);
        assert_eq!(a, epoch_batches(&lengths, 16, 7, 0));
        assert_ne!(a, epoch_batches(&lengths, 16, 7, 1));
        let mut all: Vec<usize> = a.concat();
        all.sort();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
    }
}
