//! Soft targets for the SID tokens of item-to-item transitions (`sft --soft-targets ALPHA`).
//!
//! A supervised SID token that writes an item following another item of the same row is
//! trained against a mixture: `1 − α` on the row's own token, `α` on the distribution of the
//! token that follows the same code prefix in every supervised transition from the same
//! previous item in the training examples (the transition counts a last-item table keeps,
//! read per SID level given the true codes before it).
//!
//! Why: with `--item-window 1` the model predicts each item from the one before it, and the
//! one-hot targets of all the occurrences of a previous item sum to exactly these counts, so at
//! α = 1 the objective of an epoch is unchanged while each step sees every companion of the
//! item with its frequency, instead of the one companion its row happens to name. Items seen
//! once or twice as companions are then taught at every occurrence of the item, which is what
//! a model that has to learn these associations in a few CPU-minutes lacks. Decoding is
//! untouched: the model stays purely generative.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use sidrec::trie::SidVocab;

use super::batch::{Batch, Example};
use crate::error::{Result, TrainerError};

/// The transition counts of a training set and the weight `α` of the soft part of a target.
pub struct SoftTargets {
    vocab: SidVocab,
    alpha: f32,
    /// Per previous item (its SID tokens): each following item's SID tokens and how many
    /// supervised transitions lead there.
    next: HashMap<Vec<u32>, Vec<(Vec<u32>, u32)>>,
}

/// An item's SID tokens in a row, as `(start, end)`.
type Span = (usize, usize);

impl SoftTargets {
    /// Counts every transition between consecutive items of an example whose second item is
    /// supervised there (history items with `--history-loss`, and the response).
    pub fn from_examples(examples: &[Example], vocab: SidVocab, alpha: f32) -> Result<Self> {
        if !(0.0..=1.0).contains(&alpha) {
            return Err(TrainerError::Invalid(format!(
                "--soft-targets {alpha}: must be between 0 and 1"
            )));
        }
        let mut counts: HashMap<Vec<u32>, HashMap<Vec<u32>, u32>> = HashMap::new();
        for e in examples {
            let supervised = |t: usize| t >= e.prompt_len || e.prompt_targets.contains(&t);
            let spans = vocab.item_spans(&e.ids);
            for w in spans.windows(2) {
                let ((ps, pe), (ns, ne)) = (w[0], w[1]);
                if supervised(ns) {
                    *counts
                        .entry(e.ids[ps..pe].to_vec())
                        .or_default()
                        .entry(e.ids[ns..ne].to_vec())
                        .or_default() += 1;
                }
            }
        }
        if counts.is_empty() {
            return Err(TrainerError::Invalid(
                "--soft-targets: the training examples hold no supervised item that follows \
                 another (train the seqrec task, with --history-loss for the history items)"
                    .into(),
            ));
        }
        let next = counts
            .into_iter()
            .map(|(prev, n)| {
                let mut n: Vec<(Vec<u32>, u32)> = n.into_iter().collect();
                n.sort();
                (prev, n)
            })
            .collect();
        Ok(Self { vocab, alpha, next })
    }

    /// Number of distinct previous items and of transitions counted.
    pub fn size(&self) -> (usize, u64) {
        let pairs = self
            .next
            .values()
            .flat_map(|n| n.iter().map(|&(_, c)| u64::from(c)))
            .sum();
        (self.next.len(), pairs)
    }

    /// The target distribution `[supervised, vocab_size]` of `batch`: the one-hot target of
    /// every supervised token, mixed with the counted distribution where the token writes (or
    /// ends) an item that follows another item of its row.
    pub fn dense(&self, batch: &Batch, vocab_size: usize) -> Result<Tensor> {
        let (_, l) = batch.ids.dims2()?;
        let ids = batch.ids.flatten_all()?.to_vec1::<u32>()?;
        let mask = batch.mask.flatten_all()?.to_vec1::<u32>()?;
        let positions = batch.positions.to_vec1::<u32>()?;
        let targets = batch.targets.to_vec1::<u32>()?;
        let mut q = vec![0f32; positions.len() * vocab_size];
        // Per batch row: its real (unpadded) tokens and their items, found once.
        let mut rows: HashMap<usize, (&[u32], Vec<Span>)> = HashMap::new();
        for (i, (&p, &y)) in positions.iter().zip(&targets).enumerate() {
            let out = &mut q[i * vocab_size..(i + 1) * vocab_size];
            let (b, k) = (p as usize / l, p as usize % l + 1);
            let (row, spans) = rows.entry(b).or_insert_with(|| {
                let real = mask[b * l..(b + 1) * l].iter().filter(|&&m| m == 1).count();
                let row = &ids[b * l..b * l + real];
                (row, self.vocab.item_spans(row))
            });
            let dist = self.distribution(row, spans, k);
            let onehot = if dist.is_empty() {
                1.0
            } else {
                1.0 - self.alpha
            };
            put(out, y, onehot)?;
            for (t, w) in dist {
                put(out, t, self.alpha * w)?;
            }
        }
        Ok(Tensor::from_vec(
            q,
            (positions.len(), vocab_size),
            &Device::Cpu,
        )?)
    }

    /// The counted distribution of token `row[k]` (normalised; empty where none applies).
    fn distribution(&self, row: &[u32], spans: &[Span], k: usize) -> Vec<(u32, f32)> {
        // The item whose token (or else whose end, the token after it) is `row[k]`, and the
        // one before it.
        let Some(j) = spans
            .iter()
            .position(|&(s, e)| s <= k && k < e)
            .or_else(|| spans.iter().position(|&(_, e)| e == k))
        else {
            return Vec::new();
        };
        if j == 0 || k >= row.len() {
            return Vec::new();
        }
        let ((ps, pe), (s, e)) = (spans[j - 1], spans[j]);
        let Some(next) = self.next.get(&row[ps..pe]) else {
            return Vec::new();
        };
        let (prefix, depth) = (&row[s..k], k - s);
        let end = row.get(e).copied();
        let mut dist: Vec<(u32, f32)> = Vec::new();
        for (sid, c) in next {
            if sid.len() < depth || sid[..depth] != *prefix {
                continue;
            }
            let tok = match sid.get(depth) {
                Some(&t) => t,
                // That item ends here: its mass goes to whatever follows this row's item
                // (the separator or the `\n` of a response); at the end of a row, nowhere.
                None => match end {
                    Some(t) => t,
                    None => continue,
                },
            };
            match dist.iter_mut().find(|(t, _)| *t == tok) {
                Some((_, w)) => *w += *c as f32,
                None => dist.push((tok, *c as f32)),
            }
        }
        let total: f32 = dist.iter().map(|&(_, w)| w).sum();
        dist.iter_mut()
            .for_each(|(_, w)| *w /= total.max(f32::MIN_POSITIVE));
        dist
    }
}

fn put(row: &mut [f32], token: u32, w: f32) -> Result<()> {
    let n = row.len();
    let cell = row.get_mut(token as usize).ok_or_else(|| {
        TrainerError::Invalid(format!(
            "token {token} is outside the model's vocabulary of {n}"
        ))
    })?;
    *cell += w;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::batch::make_batch;
    use sidrec::sid::{Sid, SidToken};
    use sidrec::SidIndex;

    const SEP: u32 = 1;
    const NL: u32 = 2;
    const EOS: u32 = 3;
    const V: usize = 140;

    /// Token id = 100 + 10·level + code. Items: A (a0 b0), B (a1 b1), C (a1 b2), D (a2 b0).
    fn vocab() -> SidVocab {
        let mut index = SidIndex::new();
        for (item, codes) in [(1, [0, 0]), (2, [1, 1]), (3, [1, 2]), (4, [2, 0])] {
            index.insert(item, Sid::from_codes(codes.to_vec()));
        }
        SidVocab::from_fn(&index, |t: SidToken| {
            Some(100 + 10 * t.level as u32 + t.code)
        })
        .unwrap()
    }
    const A: [u32; 2] = [100, 110];
    const B: [u32; 2] = [101, 111];
    const C: [u32; 2] = [101, 112];
    const D: [u32; 2] = [102, 110];

    /// "h: PREV SEP" prompt and "NEXT \n EOS" response.
    fn pair(prev: [u32; 2], next: [u32; 2]) -> Example {
        let ids = vec![9, prev[0], prev[1], SEP, next[0], next[1], NL, EOS];
        Example {
            ids,
            prompt_len: 4,
            prompt_targets: Vec::new(),
            target: None,
        }
    }

    /// The nonzero cells of each row of `q`.
    fn rows(q: &Tensor) -> Vec<Vec<(u32, f32)>> {
        q.to_vec2::<f32>()
            .unwrap()
            .into_iter()
            .map(|r| {
                r.into_iter()
                    .enumerate()
                    .filter(|&(_, w)| w != 0.0)
                    .map(|(t, w)| (t as u32, w))
                    .collect()
            })
            .collect()
    }

    fn assert_row(got: &[(u32, f32)], want: &[(u32, f32)]) {
        assert_eq!(got.len(), want.len(), "{got:?} against {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!(
                g.0 == w.0 && (g.1 - w.1).abs() < 1e-6,
                "{got:?} against {want:?}"
            );
        }
    }

    #[test]
    fn targets_spread_over_the_counted_companions_of_the_previous_item() {
        // A → B twice, A → C once, A → D once; D → A once.
        let examples = vec![pair(A, B), pair(A, B), pair(A, C), pair(A, D), pair(D, A)];
        let soft = SoftTargets::from_examples(&examples, vocab(), 1.0).unwrap();
        assert_eq!(soft.size(), (2, 5));
        let batch = make_batch(&[&examples[2]], EOS, &Device::Cpu).unwrap();
        // Supervised: a1 (depth 0), b2 (depth 1), `\n`, EOS.
        let q = rows(&soft.dense(&batch, V).unwrap());
        assert_row(&q[0], &[(101, 0.75), (102, 0.25)]); // B, B, C share a1
        assert_row(&q[1], &[(111, 2.0 / 3.0), (112, 1.0 / 3.0)]); // given a1
        assert_row(&q[2], &[(NL, 1.0)]); // C ends after two codes
        assert_row(&q[3], &[(EOS, 1.0)]); // not an item token: one-hot

        // Half and half at α = 0.5; the row's own token keeps its half.
        let soft = SoftTargets::from_examples(&examples, vocab(), 0.5).unwrap();
        let q = rows(&soft.dense(&batch, V).unwrap());
        assert_row(&q[0], &[(101, 0.5 + 0.375), (102, 0.125)]);
        assert_row(&q[1], &[(111, 1.0 / 3.0), (112, 0.5 + 1.0 / 6.0)]);

        // An item with no previous item in its row keeps its one-hot target.
        let first = Example {
            ids: vec![9, SEP, B[0], B[1], NL, EOS],
            prompt_len: 2,
            prompt_targets: Vec::new(),
            target: None,
        };
        let batch = make_batch(&[&first], EOS, &Device::Cpu).unwrap();
        let q = rows(&soft.dense(&batch, V).unwrap());
        assert_row(&q[0], &[(101, 1.0)]);
    }

    #[test]
    fn at_alpha_one_the_targets_of_all_occurrences_sum_to_their_one_hot_counts() {
        // With history supervision: each row holds several transitions, in prompt and response.
        let row = |items: &[[u32; 2]]| {
            let mut ids = vec![9];
            let mut targets = Vec::new();
            for (n, it) in items[..items.len() - 1].iter().enumerate() {
                if n > 0 {
                    targets.extend([ids.len(), ids.len() + 1]);
                }
                ids.extend(it);
                ids.push(SEP);
            }
            let prompt_len = ids.len();
            ids.extend(items[items.len() - 1]);
            ids.extend([NL, EOS]);
            Example {
                ids,
                prompt_len,
                prompt_targets: targets,
                target: None,
            }
        };
        let examples = vec![
            row(&[A, B, D, A, C]),
            row(&[D, A, B]),
            row(&[A, D, A, B]),
            row(&[C, A, C]),
        ];
        // Supervised history items that follow another count; the first item of a row does not.
        let soft = SoftTargets::from_examples(&examples, vocab(), 1.0).unwrap();
        assert_eq!(soft.size().1, 4 + 2 + 3 + 2);
        let refs: Vec<&Example> = examples.iter().collect();
        let batch = make_batch(&refs, EOS, &Device::Cpu).unwrap();
        let q = soft.dense(&batch, V).unwrap();
        let onehot = SoftTargets::from_examples(&examples, vocab(), 0.0)
            .unwrap()
            .dense(&batch, V)
            .unwrap();
        // Each row sums to one.
        for s in q.sum(1).unwrap().to_vec1::<f32>().unwrap() {
            assert!((s - 1.0).abs() < 1e-6);
        }
        // Summed over the positions that share (previous item, prefix), soft and one-hot agree.
        let (_, l) = batch.ids.dims2().unwrap();
        let ids = batch.ids.flatten_all().unwrap().to_vec1::<u32>().unwrap();
        let mut sums: HashMap<Vec<u32>, (Vec<f32>, Vec<f32>)> = HashMap::new();
        let (q, onehot) = (
            q.to_vec2::<f32>().unwrap(),
            onehot.to_vec2::<f32>().unwrap(),
        );
        for (i, &p) in batch.positions.to_vec1::<u32>().unwrap().iter().enumerate() {
            let (b, k) = (p as usize / l, p as usize % l + 1);
            let row = &ids[b * l..(b + 1) * l];
            // Context: every token of the row from the previous item's start to k.
            let spans = vocab().item_spans(row);
            let Some(j) = spans.iter().position(|&(s, e)| s <= k && k <= e) else {
                continue;
            };
            if j == 0 {
                continue;
            }
            let key = [&row[spans[j - 1].0..spans[j - 1].1], &row[spans[j].0..k]].concat();
            let e = sums.entry(key).or_insert((vec![0.0; V], vec![0.0; V]));
            for t in 0..V {
                e.0[t] += q[i][t];
                e.1[t] += onehot[i][t];
            }
        }
        assert!(sums.len() > 5);
        for (key, (soft, hard)) in sums {
            for t in 0..V {
                assert!((soft[t] - hard[t]).abs() < 1e-5, "{key:?} token {t}");
            }
        }
    }

    #[test]
    fn items_written_without_a_separator_are_told_apart() {
        // "h: A B \n EOS" with nothing between A and B, and A → C elsewhere.
        let adjacent = Example {
            ids: vec![9, A[0], A[1], B[0], B[1], NL, EOS],
            prompt_len: 3,
            prompt_targets: Vec::new(),
            target: None,
        };
        let examples = vec![adjacent.clone(), pair(A, C), pair(A, D)];
        let soft = SoftTargets::from_examples(&examples, vocab(), 1.0).unwrap();
        assert_eq!(soft.size(), (1, 3));
        let batch = make_batch(&[&adjacent], EOS, &Device::Cpu).unwrap();
        let q = rows(&soft.dense(&batch, V).unwrap());
        assert_row(&q[0], &[(101, 2.0 / 3.0), (102, 1.0 / 3.0)]);
        assert_row(&q[1], &[(111, 0.5), (112, 0.5)]);
    }

    #[test]
    fn bad_settings_are_refused() {
        let examples = vec![pair(A, B)];
        assert!(SoftTargets::from_examples(&examples, vocab(), 1.5).is_err());
        let lone = Example {
            ids: vec![9, SEP, B[0], B[1], NL, EOS],
            prompt_len: 2,
            prompt_targets: Vec::new(),
            target: None,
        };
        let err = SoftTargets::from_examples(&[lone], vocab(), 0.5)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no supervised item"), "{err}");
    }
}
