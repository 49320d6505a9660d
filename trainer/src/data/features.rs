//! Item value and user features (`features.json` in a dataset directory), for value-aware
//! training and for prompts that carry user context.
//!
//! Every count comes from the **train split only**, so nothing about the validation or test
//! period leaks into training through these features:
//!
//! * `train_count` of an item: train rows whose target is the item (the popularity the
//!   `popularity` baseline ranks by); of a user: the user's train rows.
//! * From the raw data, where it has them (`data amazon23`): the item's `price`,
//!   `average_rating` and `rating_number` as the metadata gives them (catalogue fields, not
//!   derived from our splits), and `mean_rating` / `verified_share` over the reviews that are
//!   part of the train split (a user's events up to their last train target).
//!
//! **Value** of an item, in [0, 1]:
//! `raw = ln(1 + price) + ln(1 + train_count)` (price 0 when unknown), min-max normalised over
//! the catalogue: `value = (raw − min) / (max − min)`, or 0.5 for every item when all raws are
//! equal. Without prices (`data features`, e.g. Industrial) the value is the normalised
//! log-popularity. This is the reference's GPR value (`ln(1+price) + ln(1+#reviews)`, min-max),
//! with the review count taken from the train split instead of from all reviews.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sidrec::data::{DatasetDir, InteractionRow, Items, Split};
use sidrec::ItemId;

use crate::cli::FeaturesArgs;
use crate::error::{Result, TrainerError};

/// File name of the features in a dataset directory.
pub const FEATURES_FILE: &str = "features.json";

/// Version of the file layout written here.
pub const FEATURES_FORMAT: u32 = 1;

/// The value formula, as written into the file.
pub const VALUE_FORMULA: &str =
    "minmax(ln(1 + price) + ln(1 + train_count)); price 0 when unknown; 0.5 when all equal";

/// Where the features came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeatureSource {
    /// Raw Amazon-2023 reviews and metadata (`data amazon23`).
    Amazon23,
    /// Train-split popularity only (`data features`).
    TrainPopularity,
}

/// What is known about one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemFeatures {
    /// Train rows with this item as target.
    pub train_count: u64,
    /// Price from the metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<f64>,
    /// Catalogue-wide average rating from the metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_rating: Option<f64>,
    /// Catalogue-wide number of ratings from the metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating_number: Option<u64>,
    /// Mean rating of its train reviews.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_rating: Option<f64>,
    /// Share of its train reviews that are verified purchases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_share: Option<f64>,
    /// Value in [0, 1] ([`VALUE_FORMULA`]).
    pub value: f64,
}

impl ItemFeatures {
    fn with_count(train_count: u64) -> Self {
        Self {
            train_count,
            price: None,
            average_rating: None,
            rating_number: None,
            mean_rating: None,
            verified_share: None,
            value: 0.0,
        }
    }
}

/// What is known about one user (keyed by the CSV `user_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserFeatures {
    /// The user's train rows.
    pub train_count: u64,
    /// Mean rating of the user's train reviews.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_rating: Option<f64>,
    /// Share of the user's train reviews that are verified purchases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_share: Option<f64>,
}

/// The content of `features.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Features {
    /// Layout version ([`FEATURES_FORMAT`]).
    pub format: u32,
    /// Where the fields came from.
    pub source: FeatureSource,
    /// How `value` was computed.
    pub value_formula: String,
    /// Train rows the counts were taken from.
    pub train_rows: usize,
    /// Every catalogue item, by id.
    pub items: BTreeMap<ItemId, ItemFeatures>,
    /// Every user with a train row, by CSV `user_id`.
    pub users: BTreeMap<String, UserFeatures>,
}

/// Per-review facts that feed the review aggregates.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReviewFacts {
    /// Star rating, if given.
    pub(crate) rating: Option<f64>,
    /// Verified purchase, if given.
    pub(crate) verified: Option<bool>,
}

/// Running mean of ratings and share of verified purchases.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReviewAggregate {
    ratings: (f64, u64),
    verified: (u64, u64),
}

impl ReviewAggregate {
    /// Count one review.
    pub(crate) fn add(&mut self, f: ReviewFacts) {
        if let Some(r) = f.rating {
            self.ratings.0 += r;
            self.ratings.1 += 1;
        }
        if let Some(v) = f.verified {
            self.verified.0 += u64::from(v);
            self.verified.1 += 1;
        }
    }

    /// Mean rating, if any review had one.
    pub(crate) fn mean_rating(&self) -> Option<f64> {
        (self.ratings.1 > 0).then(|| self.ratings.0 / self.ratings.1 as f64)
    }

    /// Verified share, if any review said.
    pub(crate) fn verified_share(&self) -> Option<f64> {
        (self.verified.1 > 0).then(|| self.verified.0 as f64 / self.verified.1 as f64)
    }
}

impl Features {
    /// Counts from the train rows for every item of the catalogue (and every item the rows
    /// name), values from the counts alone.
    pub fn from_train(train: &[InteractionRow], items: &Items) -> Self {
        let mut item_counts: BTreeMap<ItemId, u64> = items.keys().map(|&i| (i, 0)).collect();
        let mut users: BTreeMap<String, UserFeatures> = BTreeMap::new();
        for r in train {
            *item_counts.entry(r.item_id).or_default() += 1;
            users
                .entry(r.user_id.clone())
                .or_insert(UserFeatures {
                    train_count: 0,
                    mean_rating: None,
                    verified_share: None,
                })
                .train_count += 1;
        }
        let mut f = Self {
            format: FEATURES_FORMAT,
            source: FeatureSource::TrainPopularity,
            value_formula: VALUE_FORMULA.into(),
            train_rows: train.len(),
            items: item_counts
                .into_iter()
                .map(|(i, c)| (i, ItemFeatures::with_count(c)))
                .collect(),
            users,
        };
        f.assign_values();
        f
    }

    /// Recompute every item's `value` from its price and train count ([`VALUE_FORMULA`]).
    pub fn assign_values(&mut self) {
        let raw: Vec<f64> = self
            .items
            .values()
            .map(|f| {
                let price = f.price.filter(|p| p.is_finite() && *p > 0.0).unwrap_or(0.0);
                price.ln_1p() + (f.train_count as f64).ln_1p()
            })
            .collect();
        let lo = raw.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = raw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        for (f, r) in self.items.values_mut().zip(raw) {
            f.value = if hi > lo { (r - lo) / (hi - lo) } else { 0.5 };
        }
    }

    /// The value of an item (0 for an item the file does not know).
    pub fn value(&self, item: ItemId) -> f64 {
        self.items.get(&item).map_or(0.0, |f| f.value)
    }

    /// Path of the features file in a dataset directory.
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join(FEATURES_FILE)
    }

    /// Read `features.json` from a dataset directory.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = Self::path_in(dir);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                TrainerError::Invalid(format!(
                    "{}: no item features; compute them with `sidrec-trainer data features --data {}`",
                    path.display(),
                    dir.display()
                ))
            } else {
                TrainerError::io(&path, e)
            }
        })?;
        let f: Self = serde_json::from_str(&text)
            .map_err(|e| TrainerError::parse(&path, e.line() as u64, e.to_string()))?;
        if f.format != FEATURES_FORMAT {
            return Err(TrainerError::Invalid(format!(
                "{}: format {} (this build reads {FEATURES_FORMAT})",
                path.display(),
                f.format
            )));
        }
        if let Some((id, bad)) = f
            .items
            .iter()
            .find(|(_, x)| !(0.0..=1.0).contains(&x.value))
        {
            return Err(TrainerError::Invalid(format!(
                "{}: item {id}: value {} is outside [0, 1]",
                path.display(),
                bad.value
            )));
        }
        Ok(f)
    }

    /// Write `features.json` into a dataset directory, atomically.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        let path = Self::path_in(dir);
        sidrec::io::write_atomic(&path, |w| {
            serde_json::to_writer_pretty(&mut *w, self)?;
            w.write_all(b"\n")
        })?;
        Ok(path)
    }
}

/// `sidrec-trainer data features`.
pub fn run(args: &FeaturesArgs) -> Result<()> {
    let ds = DatasetDir::discover(&args.data)?;
    let path = Features::path_in(&ds.root);
    if path.exists() && !args.force {
        return Err(TrainerError::Invalid(format!(
            "{} exists; pass --force to replace it with train-popularity features",
            path.display()
        )));
    }
    let train = ds.read_split(Split::Train)?;
    let items = ds.read_items()?;
    let f = Features::from_train(&train, &items);
    let with_train = f.items.values().filter(|x| x.train_count > 0).count();
    println!(
        "{} items ({} with train rows), {} users from {} train rows",
        f.items.len(),
        with_train,
        f.users.len(),
        f.train_rows
    );
    println!("wrote {}", f.write(&ds.root)?.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(user: &str, hist: &[ItemId], target: ItemId) -> InteractionRow {
        InteractionRow {
            user_id: user.into(),
            history_item_title: vec![],
            item_title: String::new(),
            history_item_id: hist.to_vec(),
            item_id: target,
            history_item_sid: vec![],
            item_sid: String::new(),
        }
    }

    #[test]
    fn values_are_minmax_of_log_counts_and_prices() {
        let items: Items = (0..4)
            .map(|i| (i, sidrec::data::ItemMeta::new(format!("t{i}"), "")))
            .collect();
        let train = vec![
            row("A0", &[0], 1),
            row("A0", &[0, 1], 1),
            row("A1", &[2], 1),
            row("A1", &[2, 1], 2),
        ];
        let mut f = Features::from_train(&train, &items);
        // Counts: item 0 → 0, 1 → 3, 2 → 1, 3 → 0 (history items do not count).
        let counts: Vec<u64> = f.items.values().map(|x| x.train_count).collect();
        assert_eq!(counts, [0, 3, 1, 0]);
        assert_eq!(f.users["A0"].train_count, 2);
        assert_eq!(f.value(0), 0.0);
        assert_eq!(f.value(1), 1.0);
        assert!((f.value(2) - 2f64.ln() / 4f64.ln()).abs() < 1e-12);
        // A price lifts an unpopular item: ln(1+15) = ln 16 > ln 4.
        f.items.get_mut(&3).unwrap().price = Some(15.0);
        f.assign_values();
        assert_eq!(f.value(3), 1.0);
        assert!((f.value(1) - 4f64.ln() / 16f64.ln()).abs() < 1e-12);
        // All equal → 0.5.
        let g = Features::from_train(&[], &items);
        assert!(g.items.values().all(|x| x.value == 0.5));
    }
}
