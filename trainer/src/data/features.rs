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

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sidrec::data::{DatasetDir, InteractionRow, Items, Split};
use sidrec::prompt::{
    ItemType, PromptContext, PromptTokens, TokenGroup, UserSegment, ITEM_TYPE_FIELD,
};
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
        let f: Self = sidrec::io::parse_json(&path, text.as_bytes(), "a value-feature file")?;
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

/// Price above which an item is of type `I` (the reference's GPR rule).
pub const ITEM_TYPE_PRICE: f64 = 50.0;

/// Every how many training examples one is shown `[USER_UNKNOWN]` instead of its user's
/// segment, so that the token requests without a segment (and new users) get is trained.
pub const UNKNOWN_USER_EVERY: usize = 10;

/// How user segments were derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentBasis {
    /// Mean train rating: > 4.5 high, > 3.5 mid, else low (the reference's rule).
    Rating,
    /// Train rows per user, cut at the users' tertiles `(t1, t2)`: `< t1` low, `< t2` mid,
    /// else high.
    Activity(u64, u64),
}

impl Features {
    /// True when the file has review ratings of users (`data amazon23`).
    pub fn has_user_ratings(&self) -> bool {
        self.users.values().any(|u| u.mean_rating.is_some())
    }

    /// True when the file has item prices.
    pub fn has_prices(&self) -> bool {
        self.items.values().any(|f| f.price.is_some())
    }

    /// Every listed user's segment, and how they were derived: by mean rating where the file
    /// has ratings (a user without one is unknown), else by train activity.
    pub fn user_segments(&self) -> (SegmentBasis, BTreeMap<String, UserSegment>) {
        if self.has_user_ratings() {
            let seg = |u: &UserFeatures| match u.mean_rating {
                Some(r) if r > 4.5 => UserSegment::High,
                Some(r) if r > 3.5 => UserSegment::Mid,
                Some(_) => UserSegment::Low,
                None => UserSegment::Unknown,
            };
            let map = self
                .users
                .iter()
                .map(|(k, u)| (k.clone(), seg(u)))
                .collect();
            return (SegmentBasis::Rating, map);
        }
        let mut counts: Vec<u64> = self.users.values().map(|u| u.train_count).collect();
        counts.sort_unstable();
        let n = counts.len();
        let (t1, t2) = if n == 0 {
            (0, 0)
        } else {
            (counts[n / 3], counts[2 * n / 3])
        };
        let seg = |c: u64| {
            if c < t1 {
                UserSegment::Low
            } else if c < t2 {
                UserSegment::Mid
            } else {
                UserSegment::High
            }
        };
        let map = self
            .users
            .iter()
            .map(|(k, u)| (k.clone(), seg(u.train_count)))
            .collect();
        (SegmentBasis::Activity(t1, t2), map)
    }

    /// Every catalogue item's type. A type the item file already records (field
    /// `item_type`, `"I"`/`"O"`) is kept. Otherwise, where the file has prices, the
    /// reference's rule: `I` when the price is above [`ITEM_TYPE_PRICE`] or the item has a brand
    /// (not empty, not `Unknown`); without prices, `I` when the item's train count is above the
    /// catalogue's median, so the head of the popularity curve is `I` and the tail `O`.
    pub fn item_types(&self, items: &Items) -> BTreeMap<ItemId, ItemType> {
        let recorded = |id: &ItemId| {
            items
                .get(id)
                .and_then(|m| m.extra.get(ITEM_TYPE_FIELD))
                .and_then(|v| v.as_str())
                .and_then(|s| s.parse::<ItemType>().ok())
        };
        let by_price = self.has_prices();
        let mut counts: Vec<u64> = self.items.values().map(|f| f.train_count).collect();
        counts.sort_unstable();
        let median = counts.get(counts.len() / 2).copied().unwrap_or(0);
        let mut out = BTreeMap::new();
        for id in items.keys().chain(self.items.keys()) {
            if out.contains_key(id) {
                continue;
            }
            let f = self.items.get(id);
            let t = recorded(id).unwrap_or_else(|| {
                let is_item = if by_price {
                    let price = f.and_then(|f| f.price).unwrap_or(0.0);
                    let brand = items
                        .get(id)
                        .and_then(|m| m.extra.get("brand"))
                        .and_then(|v| v.as_str())
                        .map(str::trim)
                        .is_some_and(|b| !b.is_empty() && b != "Unknown");
                    price > ITEM_TYPE_PRICE || brand
                } else {
                    f.is_some_and(|f| f.train_count > median)
                };
                if is_item {
                    ItemType::Premium
                } else {
                    ItemType::Organic
                }
            });
            out.insert(*id, t);
        }
        out
    }
}

/// The prompt context of each dataset row for a checkpoint's prompt tokens: the user's segment
/// from `features.json` (unknown for a user it does not list) and the home-page context, since
/// the dataset files carry no request context.
#[derive(Debug, Clone, Default)]
pub struct RowContexts {
    users: HashMap<String, UserSegment>,
}

impl RowContexts {
    /// Contexts for prompts without the user group (every row the default context).
    pub fn none() -> Self {
        Self::default()
    }

    /// Contexts for `tokens` from the dataset in `dir`: reads `features.json` when the user
    /// group is on (an error naming the file and the command that writes it when it is missing).
    pub fn load(tokens: &PromptTokens, dir: &Path) -> Result<Self> {
        if !tokens.has(TokenGroup::User) {
            return Ok(Self::none());
        }
        let f = Features::load(dir)?;
        let (basis, users) = f.user_segments();
        let mut n = [0usize; 4];
        for s in users.values() {
            n[UserSegment::ALL.iter().position(|x| x == s).unwrap_or(3)] += 1;
        }
        eprintln!(
            "user segments ({}): {} high, {} mid, {} low, {} unknown of {} users",
            match basis {
                SegmentBasis::Rating => "by mean train rating".to_string(),
                SegmentBasis::Activity(t1, t2) =>
                    format!("by train rows: low < {t1} <= mid < {t2} <= high"),
            },
            n[0],
            n[1],
            n[2],
            n[3],
            users.len()
        );
        Ok(Self {
            users: users.into_iter().collect(),
        })
    }

    /// The context of `row` at evaluation and validation.
    pub fn of(&self, row: &InteractionRow) -> PromptContext {
        PromptContext {
            user: self
                .users
                .get(&row.user_id)
                .copied()
                .unwrap_or(UserSegment::Unknown),
            ..PromptContext::default()
        }
    }

    /// The context of training example `n` (row `row`): as [`Self::of`], except that one
    /// example in [`UNKNOWN_USER_EVERY`] is shown an unknown user.
    pub fn training(&self, row: &InteractionRow, n: usize) -> PromptContext {
        if n % UNKNOWN_USER_EVERY == UNKNOWN_USER_EVERY - 1 {
            PromptContext::default()
        } else {
            self.of(row)
        }
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

    #[test]
    fn segments_and_types_fall_back_to_train_activity_and_popularity() {
        let items: Items = (0..4)
            .map(|i| (i, sidrec::data::ItemMeta::new(format!("t{i}"), "")))
            .collect();
        // Users: A0 3 rows, A1 1 row, A2 2 rows; items: 1 → 4, 2 → 2, 0 and 3 → 0.
        let train = vec![
            row("A0", &[0], 1),
            row("A0", &[1], 1),
            row("A0", &[1], 2),
            row("A1", &[2], 1),
            row("A2", &[0], 1),
            row("A2", &[1], 2),
        ];
        let f = Features::from_train(&train, &items);
        let (basis, seg) = f.user_segments();
        // Sorted counts [1, 2, 3]: t1 = counts[1] = 2, t2 = counts[2] = 3.
        assert_eq!(basis, SegmentBasis::Activity(2, 3));
        assert_eq!(seg["A1"], UserSegment::Low);
        assert_eq!(seg["A2"], UserSegment::Mid);
        assert_eq!(seg["A0"], UserSegment::High);
        // Sorted item counts [0, 0, 2, 4]: median counts[2] = 2; only item 1 is above it.
        let t = f.item_types(&items);
        assert_eq!(
            t.values().copied().collect::<Vec<_>>(),
            [
                ItemType::Organic,
                ItemType::Premium,
                ItemType::Organic,
                ItemType::Organic
            ]
        );

        let ctx = RowContexts {
            users: seg.into_iter().collect(),
        };
        assert_eq!(ctx.of(&train[0]).user, UserSegment::High);
        assert_eq!(ctx.of(&row("new", &[0], 1)).user, UserSegment::Unknown);
        assert_eq!(
            ctx.of(&train[0]).context,
            sidrec::prompt::RequestContext::Homepage
        );
        let shown: Vec<UserSegment> = (0..20).map(|n| ctx.training(&train[3], n).user).collect();
        assert_eq!(
            shown.iter().filter(|&&s| s == UserSegment::Unknown).count(),
            2
        );
        assert_eq!(shown[9], UserSegment::Unknown);
        assert_eq!(shown[0], UserSegment::Low);
    }

    #[test]
    fn segments_and_types_use_ratings_prices_and_brands_when_known() {
        let mut items: Items = (0..4)
            .map(|i| (i, sidrec::data::ItemMeta::new(format!("t{i}"), "")))
            .collect();
        items
            .get_mut(&1)
            .unwrap()
            .extra
            .insert("brand".into(), "Acme".into());
        items
            .get_mut(&2)
            .unwrap()
            .extra
            .insert("brand".into(), "Unknown".into());
        items
            .get_mut(&3)
            .unwrap()
            .extra
            .insert(ITEM_TYPE_FIELD.into(), "I".into());
        let train = vec![row("A0", &[0], 1), row("A1", &[1], 2), row("A2", &[1], 2)];
        let mut f = Features::from_train(&train, &items);
        f.items.get_mut(&0).unwrap().price = Some(50.01);
        f.items.get_mut(&2).unwrap().price = Some(50.0);
        f.users.get_mut("A0").unwrap().mean_rating = Some(4.6);
        f.users.get_mut("A1").unwrap().mean_rating = Some(4.5);
        f.users.get_mut("A2").unwrap().mean_rating = Some(3.5);
        f.users.insert(
            "A3".into(),
            UserFeatures {
                train_count: 1,
                mean_rating: None,
                verified_share: None,
            },
        );
        let (basis, seg) = f.user_segments();
        assert_eq!(basis, SegmentBasis::Rating);
        assert_eq!(
            ["A0", "A1", "A2", "A3"].map(|u| seg[u]),
            [
                UserSegment::High,
                UserSegment::Mid,
                UserSegment::Low,
                UserSegment::Unknown
            ]
        );
        // 0: price > 50; 1: branded; 2: price 50 and brand "Unknown"; 3: recorded in the item file.
        let t = f.item_types(&items);
        assert_eq!(
            t.values().copied().collect::<Vec<_>>(),
            [
                ItemType::Premium,
                ItemType::Premium,
                ItemType::Organic,
                ItemType::Premium
            ]
        );
    }
}
