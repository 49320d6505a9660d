//! The copy gate: a learned logit for writing the previous item's SID again.
//!
//! Why: users buy consumables again, and the item after `X` is often `X` itself. A small model
//! learns that transition between *first codes* from many items, but repeating the second and
//! third codes of a particular item is a copy it only learns item by item: an item it has not
//! seen repeated in training loses its repeat at the later codes, where the beams take other
//! items of the same first code. A last-item transition table ranks the repeats it has counted
//! first, and on data with repeats that alone kept a model that is better everywhere else level
//! with it (BENCHMARKS.md, "The copy gate").
//!
//! So the model gets, per SID level `l`, a weight vector `w_l` and a bias `b_l`: wherever it
//! writes level `l` of an item whose levels so far repeat those of the item before it (the last
//! history item when it writes the response, the previous history item inside a history), the
//! logit of the previous item's level-`l` token gains `w_l · h + b_l`, with `h` the final
//! hidden state. The gate is learned with the rest of the model from the same loss, so it
//! learns from the hidden state *when* to copy (a consumable, not a drill); zero-initialised, a
//! fresh gate leaves the model as it was. It is part of the model's distribution, applied
//! wherever the model scores tokens: training and validation losses, beam search (exact and
//! fast), sampling, and GRPO's token log-probabilities.

use candle_core::{DType, Tensor};

use super::item_embedding::ItemLookup;
use crate::error::{Error, Result};

/// Where the copy gate adds its logit for one scored position: at `token`, from level `level`'s
/// weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyTarget {
    /// Token id of the previous item's SID at `level`.
    pub token: u32,
    /// SID level being written.
    pub level: usize,
}

/// The gate's weights: `[levels, hidden]` and `[levels]`.
#[derive(Debug, Clone)]
pub struct CopyGate {
    weight: Tensor,
    bias: Tensor,
}

impl CopyGate {
    /// A gate from its weight `[levels, hidden]` and bias `[levels]`.
    pub fn new(weight: Tensor, bias: Tensor) -> Result<Self> {
        let (levels, _) = weight.dims2()?;
        if bias.dims1()? != levels {
            return Err(Error::Invalid(format!(
                "copy gate: {levels} weight rows but {} biases",
                bias.dims1()?
            )));
        }
        Ok(Self { weight, bias })
    }

    /// SID levels the gate has weights for.
    pub fn levels(&self) -> usize {
        self.weight.dims()[0]
    }

    /// The weight `[levels, hidden]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias `[levels]`.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// `logits` `[N, C]` with row `i`'s gate logit (from `hidden` `[N, H]`) added at column
    /// `column(t.token)` wherever `copies[i]` is `Some(t)`. `column` maps a token id to its
    /// column (the identity for full-vocabulary logits); a token with no column, or a level
    /// the gate has no weights for, adds nothing. Differentiable in `logits`, `hidden` and the
    /// gate.
    pub fn add_to_logits(
        &self,
        logits: &Tensor,
        hidden: &Tensor,
        copies: &[Option<CopyTarget>],
        column: impl Fn(u32) -> Option<usize>,
    ) -> Result<Tensor> {
        let (n, c) = logits.dims2()?;
        if copies.len() != n {
            return Err(Error::Invalid(format!(
                "copy gate: {} copy targets for {n} rows of logits",
                copies.len()
            )));
        }
        let mut at = vec![0f32; n * c];
        let mut level = vec![0u32; n];
        let mut any = false;
        for (i, t) in copies.iter().enumerate() {
            let Some(t) = t else { continue };
            let Some(col) = column(t.token).filter(|&col| col < c) else {
                continue;
            };
            if t.level >= self.levels() {
                continue;
            }
            at[i * c + col] = 1.0;
            level[i] = t.level as u32;
            any = true;
        }
        if !any {
            return Ok(logits.clone());
        }
        let device = logits.device();
        let at = Tensor::from_vec(at, (n, c), device)?;
        let level = Tensor::from_vec(level, (n, 1), device)?;
        let gate = hidden
            .to_dtype(DType::F32)?
            .matmul(&self.weight.to_dtype(DType::F32)?.t()?)?
            .broadcast_add(&self.bias.to_dtype(DType::F32)?)?
            .gather(&level, 1)?;
        Ok((logits + at.broadcast_mul(&gate)?)?)
    }
}

/// The copy target of each row a decoding step scores. `last[p]` is prompt `p`'s last history
/// SID (token ids); at `step` 0 there is one row per prompt, afterwards `per_prompt` rows per
/// prompt whose tokens so far are `prefixes[row]` (each at least `step` long).
pub fn step_copies(
    last: &[Option<Vec<u32>>],
    prefixes: &[Vec<u32>],
    step: usize,
    per_prompt: usize,
) -> Vec<Option<CopyTarget>> {
    if step == 0 {
        return last
            .iter()
            .map(|l| {
                l.as_ref()
                    .and_then(|l| l.first().map(|&token| CopyTarget { token, level: 0 }))
            })
            .collect();
    }
    prefixes
        .iter()
        .enumerate()
        .map(|(row, prefix)| {
            let l = last.get(row / per_prompt.max(1))?.as_ref()?;
            (l.len() > step && prefix.len() >= step && l[..step] == prefix[..step]).then(|| {
                CopyTarget {
                    token: l[step],
                    level: step,
                }
            })
        })
        .collect()
}

/// The last history SID of each prompt (`None` without a lookup or without a SID).
pub fn last_sids(lookup: Option<&ItemLookup>, prompts: &[&[u32]]) -> Vec<Option<Vec<u32>>> {
    prompts
        .iter()
        .map(|p| lookup.and_then(|lk| lk.sid_before(p, p.len())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn the_gate_adds_its_logit_at_the_copied_column_only() {
        let d = Device::Cpu;
        // Two levels, hidden 2: level 0 gate = h0 + 1, level 1 gate = 2·h1.
        let gate = CopyGate::new(
            Tensor::new(&[[1f32, 0.0], [0.0, 2.0]], &d).unwrap(),
            Tensor::new(&[1f32, 0.0], &d).unwrap(),
        )
        .unwrap();
        let logits = Tensor::zeros((3, 4), DType::F32, &d).unwrap();
        let hidden = Tensor::new(&[[0.5f32, 3.0], [0.5, 3.0], [1.0, 1.0]], &d).unwrap();
        let copies = [
            Some(CopyTarget { token: 2, level: 0 }),
            Some(CopyTarget { token: 3, level: 1 }),
            None,
        ];
        let out = gate
            .add_to_logits(&logits, &hidden, &copies, |t| Some(t as usize))
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(out[0], vec![0.0, 0.0, 1.5, 0.0]);
        assert_eq!(out[1], vec![0.0, 0.0, 0.0, 6.0]);
        assert_eq!(out[2], vec![0.0; 4]);
        // A token without a column adds nothing.
        let none = gate
            .add_to_logits(&logits, &hidden, &copies, |_| None)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(none, vec![vec![0.0; 4]; 3]);
    }

    #[test]
    fn step_copies_follow_the_last_sid_while_the_prefix_repeats_it() {
        let last = vec![Some(vec![10, 20, 30]), None];
        assert_eq!(
            step_copies(&last, &[], 0, 2),
            vec![
                Some(CopyTarget {
                    token: 10,
                    level: 0
                }),
                None
            ]
        );
        // Rows 0 and 1 belong to prompt 0, rows 2 and 3 to prompt 1 (no last SID).
        let prefixes = vec![vec![10, 20], vec![10, 21], vec![10, 20], vec![11, 20]];
        assert_eq!(
            step_copies(&last, &prefixes, 2, 2),
            vec![
                Some(CopyTarget {
                    token: 30,
                    level: 2
                }),
                None,
                None,
                None
            ]
        );
        // Past the last SID's length there is nothing to copy.
        assert_eq!(step_copies(&last, &[vec![10, 20, 30]], 3, 2), vec![None]);
    }
}
