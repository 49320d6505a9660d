//! Value-aware fine-tuning (`sft --value-weighting`, GPR's VAFT): each example's loss is
//! weighted by the value of the item its response names.
//!
//! With `v` the item's value in [0, 1] from the dataset's `features.json` and `α` =
//! `--value-alpha`, an example gets the raw weight `1 + α·v`, then every weight is divided by the
//! mean raw weight over all supervised training tokens:
//!
//! `w_e = (1 + α·v_e) / (Σ_f n_f·(1 + α·v_f) / Σ_f n_f)`  (`n_f` = supervised tokens of `f`)
//!
//! so a loss that is the same on every token gives the same total with or without weighting,
//! and the learning rate keeps its meaning. The batch loss stays a per-token mean,
//! `Σ_t w_{e(t)}·nll_t / #supervised`. Unlike the reference (`ln(1 + v)`, which gives items of
//! value 0 no loss at all), every item keeps a positive weight, `1 / mean` at `v = 0`, so the
//! model still learns to write the SIDs of items nobody bought yet. An example without a target
//! item, or whose item `features.json` does not list, counts as `v = 0`.

use candle_core::Tensor;

use crate::data::features::Features;
use crate::error::{Result, TrainerError};
use crate::train::batch::{Batch, Example};

/// Supervised tokens of an example (as `make_batch` counts them).
fn supervised_len(e: &Example) -> usize {
    e.prompt_targets.len() + e.ids.len().saturating_sub(e.prompt_len.max(1))
}

/// The weight of every example, mean 1 over supervised tokens (see the module docs).
pub fn example_weights(examples: &[Example], features: &Features, alpha: f64) -> Result<Vec<f32>> {
    if !(alpha.is_finite() && alpha >= 0.0) {
        return Err(TrainerError::Invalid(format!(
            "--value-alpha {alpha}: must be a finite number >= 0"
        )));
    }
    let raw: Vec<f64> = examples
        .iter()
        .map(|e| 1.0 + alpha * e.target.map_or(0.0, |i| features.value(i)))
        .collect();
    let (mut num, mut den) = (0f64, 0f64);
    for (e, r) in examples.iter().zip(&raw) {
        let n = supervised_len(e) as f64;
        num += n * r;
        den += n;
    }
    let mean = if den > 0.0 { num / den } else { 1.0 };
    Ok(raw.into_iter().map(|r| (r / mean) as f32).collect())
}

/// Per supervised token of `batch`, the weight of its example (`weights` indexed by the
/// batch's examples), for [`crate::train::objective::LossOptions`].
pub fn token_weights(batch: &Batch, weights: &[f32]) -> Result<Tensor> {
    let per_token: Vec<f32> = batch
        .example_of
        .iter()
        .map(|&e| weights.get(e as usize).copied().unwrap_or(1.0))
        .collect();
    Ok(Tensor::from_vec(
        per_token,
        batch.example_of.len(),
        batch.targets.device(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};
    use candle_nn::{VarBuilder, VarMap};
    use sidrec::data::{InteractionRow, ItemMeta, Items};
    use sidrec::model::{Mode, Qwen2, Qwen2Config};

    use crate::data::features::Features;
    use crate::train::batch::make_batch;
    use crate::train::objective::{batch_nll, supervised_loss, LossOptions};

    /// Weighted sum of the negative log-likelihoods of the supervised tokens of `batch`:
    /// `Σ_t weights[example_of[t]]·nll_t`, `weights` indexed by the batch's examples.
    fn weighted_batch_nll(
        model: &Qwen2,
        batch: &Batch,
        weights: &[f32],
        mode: Mode,
    ) -> Result<Tensor> {
        let w = token_weights(batch, weights)?;
        let opts = LossOptions {
            token_weights: Some(&w),
            ..LossOptions::default()
        };
        Ok(supervised_loss(model, batch, opts, mode)?.nll)
    }

    fn example(ids: Vec<u32>, prompt_len: usize, target: u32) -> Example {
        Example {
            ids,
            prompt_len,
            prompt_targets: Vec::new(),
            target: Some(target),
        }
    }

    /// Items 0..3; item 1 is the most popular (value 1), items 0 and 2 never a target (value 0).
    fn features() -> Features {
        let items: Items = (0..3)
            .map(|i| (i, ItemMeta::new(format!("t{i}"), "")))
            .collect();
        let row = |t: u32| InteractionRow {
            user_id: "A0".into(),
            history_item_title: vec![],
            item_title: String::new(),
            history_item_id: vec![0],
            item_id: t,
            history_item_sid: vec![],
            item_sid: String::new(),
        };
        Features::from_train(&[row(1), row(1)], &items)
    }

    #[test]
    fn weights_have_token_mean_one_and_zero_value_items_keep_weight() {
        let f = features();
        assert_eq!((f.value(0), f.value(1)), (0.0, 1.0));
        // Supervised tokens: 2 and 4.
        let ex = [
            example(vec![1, 2, 3, 4], 2, 0),
            example(vec![1, 2, 3, 4, 5, 6], 2, 1),
        ];
        let w = example_weights(&ex, &f, 1.0).unwrap();
        // Raw 1 and 2; token mean (2·1 + 4·2) / 6 = 5/3.
        assert!(
            (w[0] - 0.6).abs() < 1e-6 && (w[1] - 1.2).abs() < 1e-6,
            "{w:?}"
        );
        assert!(((2.0 * w[0] + 4.0 * w[1]) / 6.0 - 1.0).abs() < 1e-6);
        // α = 0 is plain SFT; an unknown item counts as value 0.
        assert_eq!(example_weights(&ex, &f, 0.0).unwrap(), [1.0, 1.0]);
        let unknown = [example(vec![1, 2, 3], 1, 99), example(vec![1, 2, 3], 1, 0)];
        assert_eq!(example_weights(&unknown, &f, 1.0).unwrap(), [1.0, 1.0]);
        assert!(example_weights(&ex, &f, -1.0).is_err());
    }

    #[test]
    fn weighting_scales_each_examples_gradient() {
        let device = Device::Cpu;
        let varmap = VarMap::new();
        let model = Qwen2::new(
            &Qwen2Config::tiny(16),
            VarBuilder::from_varmap(&varmap, DType::F32, &device),
        )
        .unwrap();
        let vars: Vec<Var> = varmap.all_vars();
        let a = example(vec![3, 4, 5, 6], 2, 0); // value 0
        let b = example(vec![7, 8, 9, 10, 11], 3, 1); // value 1
        let w = example_weights(&[a.clone(), b.clone()], &features(), 1.0).unwrap();
        assert!(w[0] > 0.0 && w[1] > w[0]);
        let grads = |exs: &[&Example], weights: Option<&[f32]>| {
            let batch = make_batch(exs, 0, &device).unwrap();
            let nll = match weights {
                Some(w) => weighted_batch_nll(&model, &batch, w, Mode::Train).unwrap(),
                None => batch_nll(&model, &batch, Mode::Train).unwrap(),
            };
            let g = nll.backward().unwrap();
            vars.iter()
                .map(|v| {
                    g.get(v)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap()
                })
                .collect::<Vec<_>>()
        };
        // d(w_a·S_a + w_b·S_b) = w_a·dS_a + w_b·dS_b, each S from the example alone.
        let joint = grads(&[&a, &b], Some(&w));
        let (ga, gb) = (grads(&[&a], None), grads(&[&b], None));
        let mut biggest = 0f32;
        for ((j, x), y) in joint.iter().zip(&ga).zip(&gb) {
            for ((j, x), y) in j.iter().zip(x).zip(y) {
                let want = w[0] * x + w[1] * y;
                assert!(
                    (j - want).abs() <= 1e-4 * (1.0 + want.abs()),
                    "{j} vs {want}"
                );
                biggest = biggest.max(x.abs());
            }
        }
        // The zero-value example has a real gradient, and it still reaches the joint one.
        assert!(biggest > 1e-4);
        // Unit weights are plain SFT.
        let plain = grads(&[&a, &b], None);
        let ones = grads(&[&a, &b], Some(&[1.0, 1.0]));
        for (p, o) in plain.iter().zip(&ones) {
            for (p, o) in p.iter().zip(o) {
                assert!((p - o).abs() <= 1e-5 * (1.0 + p.abs()));
            }
        }
    }
}
