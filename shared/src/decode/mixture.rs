//! The models an ensemble decodes together, the weight of each and how their scores combine.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::Qwen2;

/// How an ensemble combines its members' log-probabilities of a candidate token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    /// `log(Σ_k w_k · p_k)`: the weighted mean probability. A token that any member is sure of
    /// keeps a high score.
    #[default]
    Mean,
    /// `Σ_k w_k · log p_k`: the weighted mean log-probability (a product of experts). Summed over
    /// an item's tokens it is the weighted mean of the members' log-probabilities of the whole
    /// item, so an item ranks high only when every member gives it weight.
    Product,
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pool::Mean => "mean",
            Pool::Product => "product",
        })
    }
}

impl FromStr for Pool {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "mean" => Ok(Pool::Mean),
            "product" => Ok(Pool::Product),
            _ => Err(Error::Invalid(format!(
                "unknown pool `{s}` (expected mean or product)"
            ))),
        }
    }
}

/// Models scored as one: each candidate token gets the members' scores combined by a [`Pool`]
/// (by default `log(Σ_k w_k · p_k(token | prefix))`), with weights that sum to one. Weights let
/// a model that is sure of few things (one that memorises the item pairs of the train split,
/// say) lift those without pulling the rest of the ranking as far as an equal share would.
#[derive(Debug, Clone)]
pub struct Mixture<'m> {
    models: Vec<&'m Qwen2>,
    weights: Vec<f64>,
    pool: Pool,
    /// How many of `models`, at the end, are item-free twins (they score the first level only).
    twins: usize,
}

impl<'m> Mixture<'m> {
    /// The models with equal weights (one model: that model).
    pub fn equal(models: Vec<&'m Qwen2>) -> Result<Self> {
        let k = models.len();
        Self::weighted(models, vec![1.0; k])
    }

    /// The models with relative `weights`, one each, positive and finite; they are divided by
    /// their sum.
    pub fn weighted(models: Vec<&'m Qwen2>, weights: Vec<f64>) -> Result<Self> {
        let weights = normalized_weights(&weights, models.len())?;
        Ok(Self {
            models,
            weights,
            pool: Pool::Mean,
            twins: 0,
        })
    }

    /// The same models and weights, combined by `pool`.
    pub fn pooled(self, pool: Pool) -> Self {
        Self { pool, ..self }
    }

    /// The same models joined by their item-free twins ([`Qwen2::without_item_vectors`], one
    /// per model, in the same order), which score the first SID level only: there they take
    /// `share` of every model's weight (model `k` keeps `(1 − share) · w_k`, its twin gets
    /// `share · w_k`); the later levels are the models' alone, at their own weights. `share` 0
    /// leaves the mixture as it is; it must be below 1, so that the item vectors keep a say.
    ///
    /// Why the first level only: the SID codes' prediction generalises to pairs of items never
    /// seen in training by the group of items that follows (the first code); inside a group,
    /// which item it is, the item vectors' memory is the better judge (measured on valid, a
    /// twin at every level ranks worse).
    pub fn with_item_free_twins(self, twins: Vec<&'m Qwen2>, share: f64) -> Result<Self> {
        check_item_free_share(share)?;
        if share == 0.0 {
            return Ok(self);
        }
        if self.twins > 0 {
            return Err(Error::Invalid(
                "the mixture already has item-free twins".into(),
            ));
        }
        if twins.len() != self.models.len() {
            return Err(Error::Invalid(format!(
                "{} item-free twins for {} models",
                twins.len(),
                self.models.len()
            )));
        }
        let weights = (self.weights.iter().map(|w| w * (1.0 - share)))
            .chain(self.weights.iter().map(|w| w * share))
            .collect();
        let twins_count = twins.len();
        let models = self.models.into_iter().chain(twins).collect();
        Ok(Self {
            models,
            weights,
            pool: self.pool,
            twins: twins_count,
        })
    }

    /// How many of [`Self::models`], at the end, are item-free twins.
    pub fn twins(&self) -> usize {
        self.twins
    }

    /// The weights of the levels after the first: the models without their twins, each at its
    /// own share (they sum to one).
    pub fn later_weights(&self) -> Vec<f64> {
        let kept = &self.weights[..self.models.len() - self.twins];
        let total: f64 = kept.iter().sum();
        kept.iter().map(|w| w / total).collect()
    }

    /// The models, in decoding order.
    pub fn models(&self) -> &[&'m Qwen2] {
        &self.models
    }

    /// Each model's weight at the first level (they sum to one; see [`Self::later_weights`]).
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// How the members' scores combine.
    pub fn pool(&self) -> Pool {
        self.pool
    }
}

/// An error unless `share` (of a mixture, for item-free twins) is in [0, 1).
pub fn check_item_free_share(share: f64) -> Result<()> {
    if (0.0..1.0).contains(&share) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "item-free share {share} is outside [0, 1)"
        )))
    }
}

/// `weights` divided by their sum, after checking there is one per model (`models` of them),
/// each positive and finite.
pub fn normalized_weights(weights: &[f64], models: usize) -> Result<Vec<f64>> {
    if models == 0 {
        return Err(Error::Invalid(
            "an ensemble needs at least one model".into(),
        ));
    }
    if weights.len() != models {
        return Err(Error::Invalid(format!(
            "{} mixture weights for {models} models (one per model, the first model's first)",
            weights.len()
        )));
    }
    if let Some(w) = weights.iter().find(|w| !(w.is_finite() && **w > 0.0)) {
        return Err(Error::Invalid(format!(
            "mixture weight {w} is not a positive finite number"
        )));
    }
    let total: f64 = weights.iter().sum();
    if weights.iter().all(|&w| w == weights[0]) {
        // Exactly 1/K each, whatever rounding the sum had.
        return Ok(vec![1.0 / models as f64; models]);
    }
    Ok(weights.iter().map(|w| w / total).collect())
}
