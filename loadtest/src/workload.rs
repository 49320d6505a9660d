//! What to send: a weighted mix of operations built from a catalogue and a dataset split.
//!
//! An operation is what one arrival of the schedule does: one `/v1/recommend`, one
//! `/v1/recommend/batch` of several requests, one `/v1/events` followed by a `user_id`
//! recommendation, or one `/v1/sid/lookup`. Each carries what its answer must satisfy
//! ([`Expect`]), so every response can be checked.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sidrec::catalogue::Catalogue;
use sidrec::data::{DatasetDir, Split};
use sidrec::ItemId;

/// Longest history sent (the server refuses more than 50 items).
pub const MAX_HISTORY: usize = 50;
/// Most requests in one `/v1/recommend/batch` call (the server's limit).
pub const MAX_BATCH: usize = 64;
/// Random histories drawn when the data directory has no usable split.
pub const RANDOM_HISTORIES: usize = 1000;

/// The kinds of operation.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// `POST /v1/recommend` with a history.
    Recommend,
    /// `POST /v1/recommend/batch`.
    Batch,
    /// `POST /v1/events`, then `POST /v1/recommend` with that `user_id`.
    User,
    /// `GET /v1/sid/lookup` by item id, SID or title.
    Lookup,
}

impl OpKind {
    /// Every kind, in report order.
    pub const ALL: [OpKind; 4] = [
        OpKind::Recommend,
        OpKind::Batch,
        OpKind::User,
        OpKind::Lookup,
    ];

    /// The name used in scenario files and reports.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Recommend => "recommend",
            OpKind::Batch => "batch",
            OpKind::User => "user",
            OpKind::Lookup => "lookup",
        }
    }
}

/// A value drawn per request: a fixed number or weighted choices (`10` or `[[10, 3], [5, 1]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Choice {
    /// Always this value.
    Fixed(usize),
    /// `[value, weight]` pairs.
    Weighted(Vec<(usize, f64)>),
}

impl Choice {
    /// Draw one value.
    pub fn sample(&self, rng: &mut ChaCha8Rng) -> usize {
        match self {
            Choice::Fixed(v) => *v,
            Choice::Weighted(pairs) => {
                let total: f64 = pairs.iter().map(|p| p.1).sum();
                let mut x = rng.gen_range(0.0..total);
                for &(v, w) in pairs {
                    if x < w {
                        return v;
                    }
                    x -= w;
                }
                pairs.last().map_or(0, |p| p.0)
            }
        }
    }

    /// The values it can take.
    pub fn values(&self) -> Vec<usize> {
        match self {
            Choice::Fixed(v) => vec![*v],
            Choice::Weighted(p) => p.iter().map(|p| p.0).collect(),
        }
    }

    fn validate(&self, field: &str, lo: usize, hi: usize) -> anyhow::Result<()> {
        if let Choice::Weighted(p) = self {
            anyhow::ensure!(
                !p.is_empty(),
                "mix.{field}: give at least one [value, weight]"
            );
            anyhow::ensure!(
                p.iter().all(|p| p.1.is_finite() && p.1 > 0.0),
                "mix.{field}: weights must be positive"
            );
        }
        for v in self.values() {
            anyhow::ensure!(
                (lo..=hi).contains(&v),
                "mix.{field}: {v} is outside {lo}..={hi}"
            );
        }
        Ok(())
    }
}

/// The `[mix]` table of a scenario: relative weights of the operation kinds and the request
/// parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MixSpec {
    /// Weight of [`OpKind::Recommend`].
    pub recommend: f64,
    /// Weight of [`OpKind::Batch`].
    pub batch: f64,
    /// Weight of [`OpKind::User`].
    pub user: f64,
    /// Weight of [`OpKind::Lookup`].
    pub lookup: f64,
    /// Requests per batch call.
    pub batch_size: usize,
    /// `k` of each recommendation.
    pub k: Choice,
    /// `num_beams` of each recommendation.
    pub num_beams: Choice,
    /// Random catalogue items sent as `exclude` with each recommendation.
    pub exclude: usize,
    /// Share of history recommendations sent with `exclude_history: true`.
    pub exclude_history: f64,
}

impl Default for MixSpec {
    fn default() -> Self {
        Self {
            recommend: 1.0,
            batch: 0.0,
            user: 0.0,
            lookup: 0.0,
            batch_size: 4,
            k: Choice::Fixed(10),
            num_beams: Choice::Fixed(50),
            exclude: 0,
            exclude_history: 0.0,
        }
    }
}

impl MixSpec {
    /// Weight of one kind.
    pub fn weight(&self, kind: OpKind) -> f64 {
        match kind {
            OpKind::Recommend => self.recommend,
            OpKind::Batch => self.batch,
            OpKind::User => self.user,
            OpKind::Lookup => self.lookup,
        }
    }

    /// Refuse mixes the server would reject or that send nothing.
    pub fn validate(&self) -> anyhow::Result<()> {
        let weights = OpKind::ALL.map(|k| self.weight(k));
        anyhow::ensure!(
            weights.iter().all(|w| w.is_finite() && *w >= 0.0),
            "mix: weights must be non-negative numbers"
        );
        anyhow::ensure!(
            weights.iter().sum::<f64>() > 0.0,
            "mix: at least one of recommend, batch, user, lookup must have a positive weight"
        );
        anyhow::ensure!(
            (1..=MAX_BATCH).contains(&self.batch_size),
            "mix.batch_size must be 1 to {MAX_BATCH}"
        );
        self.k.validate("k", 1, 100)?;
        self.num_beams.validate("num_beams", 1, 200)?;
        let max_k = self.k.values().into_iter().max().unwrap_or(1);
        let min_beams = self.num_beams.values().into_iter().min().unwrap_or(1);
        anyhow::ensure!(
            max_k <= min_beams,
            "mix: every k must be at most every num_beams (k {max_k} > num_beams {min_beams})"
        );
        anyhow::ensure!(self.exclude <= 1000, "mix.exclude must be at most 1000");
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.exclude_history),
            "mix.exclude_history must be a share in 0..=1"
        );
        Ok(())
    }
}

/// What a recommendation answer must satisfy.
#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    /// At most this many items.
    pub k: usize,
    /// Items that must not appear (the `exclude` list, and the history when excluded).
    pub excluded: BTreeSet<ItemId>,
}

/// The lookup parameter of a [`Op::Lookup`].
#[derive(Debug, Clone, PartialEq)]
pub enum LookupKey {
    /// `item_id=`.
    ItemId(ItemId),
    /// `sid=`.
    Sid(String),
    /// `title=`.
    Title(String),
}

/// One operation to perform.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `POST /v1/recommend`.
    Recommend {
        /// Request body.
        body: Value,
        /// What the answer must satisfy.
        expect: Expect,
    },
    /// `POST /v1/recommend/batch`.
    Batch {
        /// Request body.
        body: Value,
        /// Per entry.
        expects: Vec<Expect>,
    },
    /// `POST /v1/events`, then `POST /v1/recommend` by `user_id`.
    User {
        /// Body of the events call.
        events: Value,
        /// Body of the recommendation.
        body: Value,
        /// What the answer must satisfy.
        expect: Expect,
    },
    /// `GET /v1/sid/lookup`.
    Lookup(LookupKey),
}

impl Op {
    /// Its kind.
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Recommend { .. } => OpKind::Recommend,
            Op::Batch { .. } => OpKind::Batch,
            Op::User { .. } => OpKind::User,
            Op::Lookup(_) => OpKind::Lookup,
        }
    }
}

/// Draws operations for a mix over a catalogue and a set of histories.
#[derive(Debug, Clone)]
pub struct Workload {
    mix: MixSpec,
    catalogue: Arc<Catalogue>,
    items: Vec<ItemId>,
    histories: Vec<Vec<ItemId>>,
    user_prefix: String,
    next_user: u64,
}

impl Workload {
    /// A workload over `histories` (items outside the catalogue are dropped, histories are cut
    /// to their newest [`MAX_HISTORY`] items, empty ones skipped). `user_prefix` keeps the
    /// `user_id`s of one run apart from every other run's.
    pub fn new(
        mix: MixSpec,
        catalogue: Arc<Catalogue>,
        histories: Vec<Vec<ItemId>>,
        user_prefix: String,
    ) -> anyhow::Result<Self> {
        mix.validate()?;
        let mut items: Vec<ItemId> = catalogue.iter().map(|i| i.id).collect();
        items.sort_unstable();
        anyhow::ensure!(!items.is_empty(), "the catalogue is empty");
        let histories: Vec<Vec<ItemId>> = histories
            .into_iter()
            .map(|h| {
                let h: Vec<ItemId> = h
                    .into_iter()
                    .filter(|&i| catalogue.get(i).is_some())
                    .collect();
                h[h.len().saturating_sub(MAX_HISTORY)..].to_vec()
            })
            .filter(|h| !h.is_empty())
            .collect();
        anyhow::ensure!(
            !histories.is_empty(),
            "no history with a catalogue item to send"
        );
        Ok(Self {
            mix,
            catalogue,
            items,
            histories,
            user_prefix,
            next_user: 0,
        })
    }

    /// Histories of 1 to 10 random catalogue items.
    pub fn random_histories(catalogue: &Catalogue, n: usize, seed: u64) -> Vec<Vec<ItemId>> {
        use rand::SeedableRng;
        let ids: Vec<ItemId> = catalogue.iter().map(|i| i.id).collect();
        if ids.is_empty() {
            return Vec::new();
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let len = rng.gen_range(1..=10);
                (0..len).map(|_| ids[rng.gen_range(0..ids.len())]).collect()
            })
            .collect()
    }

    /// The histories of `split` in the dataset `dir`, or random ones when it has no such
    /// split (a checkpoint directory, say). Returns them and where they came from.
    pub fn histories_from(
        dir: &Path,
        split: Split,
        catalogue: &Catalogue,
    ) -> anyhow::Result<(Vec<Vec<ItemId>>, String)> {
        let ds = DatasetDir::discover(dir)?;
        let path = ds.split_path(split);
        if path.is_file() {
            let rows = ds
                .read_split(split)
                .with_context(|| format!("reading {}", path.display()))?;
            let h: Vec<Vec<ItemId>> = rows.into_iter().map(|r| r.history_item_id).collect();
            if h.iter().flatten().any(|&i| catalogue.get(i).is_some()) {
                return Ok((h, path.display().to_string()));
            }
        }
        Ok((
            Self::random_histories(catalogue, RANDOM_HISTORIES, 0),
            format!(
                "random catalogue items ({} has no usable {split} split)",
                dir.display()
            ),
        ))
    }

    /// The mix.
    pub fn mix(&self) -> &MixSpec {
        &self.mix
    }

    /// The catalogue answers are checked against.
    pub fn catalogue(&self) -> &Arc<Catalogue> {
        &self.catalogue
    }

    /// Histories available.
    pub fn histories(&self) -> usize {
        self.histories.len()
    }

    fn pick_kind(&self, rng: &mut ChaCha8Rng) -> OpKind {
        let total: f64 = OpKind::ALL.iter().map(|&k| self.mix.weight(k)).sum();
        let mut x = rng.gen_range(0.0..total);
        for k in OpKind::ALL {
            let w = self.mix.weight(k);
            if x < w {
                return k;
            }
            x -= w;
        }
        OpKind::Recommend
    }

    /// A recommendation body with history (`source`: `"history"` or `"user_id"`).
    fn request(
        &self,
        rng: &mut ChaCha8Rng,
        source: (&str, Value),
        history: &[ItemId],
        force_exclude_history: bool,
    ) -> (Value, Expect) {
        let num_beams = self.mix.num_beams.sample(rng);
        let k = self.mix.k.sample(rng).min(num_beams);
        let mut body = json!({ "k": k, "num_beams": num_beams });
        body[source.0] = source.1;
        let mut excluded = BTreeSet::new();
        if self.mix.exclude > 0 {
            let ex: Vec<ItemId> = (0..self.mix.exclude)
                .map(|_| self.items[rng.gen_range(0..self.items.len())])
                .collect();
            excluded.extend(ex.iter().copied());
            body["exclude"] = json!(ex);
        }
        if force_exclude_history || rng.gen_bool(self.mix.exclude_history) {
            body["exclude_history"] = json!(true);
            excluded.extend(history.iter().copied());
        }
        (body, Expect { k, excluded })
    }

    /// The next operation.
    pub fn next_op(&mut self, rng: &mut ChaCha8Rng) -> Op {
        let history =
            |rng: &mut ChaCha8Rng, h: &[Vec<ItemId>]| h[rng.gen_range(0..h.len())].clone();
        match self.pick_kind(rng) {
            OpKind::Recommend => {
                let h = history(rng, &self.histories);
                let (body, expect) = self.request(rng, ("history", json!(h)), &h, false);
                Op::Recommend { body, expect }
            }
            OpKind::Batch => {
                let (mut bodies, mut expects) = (Vec::new(), Vec::new());
                for _ in 0..self.mix.batch_size {
                    let h = history(rng, &self.histories);
                    let (b, e) = self.request(rng, ("history", json!(h)), &h, false);
                    bodies.push(b);
                    expects.push(e);
                }
                Op::Batch {
                    body: json!({ "requests": bodies }),
                    expects,
                }
            }
            OpKind::User => {
                // A fresh user per operation: its stored history is exactly what was sent, so
                // `exclude_history` can be checked.
                let user = format!("{}{}", self.user_prefix, self.next_user);
                self.next_user += 1;
                let mut h = history(rng, &self.histories);
                h.truncate(crate::workload::MAX_EVENT_ITEMS);
                let events = json!({ "user_id": user, "item_ids": h });
                let (body, expect) = self.request(rng, ("user_id", json!(user)), &h, true);
                Op::User {
                    events,
                    body,
                    expect,
                }
            }
            OpKind::Lookup => {
                let id = self.items[rng.gen_range(0..self.items.len())];
                let Some(item) = self.catalogue.get(id) else {
                    return Op::Lookup(LookupKey::ItemId(id));
                };
                Op::Lookup(match rng.gen_range(0..3) {
                    0 => LookupKey::ItemId(id),
                    1 => LookupKey::Sid(item.sid.to_string()),
                    _ if !item.title.trim().is_empty() => LookupKey::Title(item.title.clone()),
                    _ => LookupKey::ItemId(id),
                })
            }
        }
    }
}

/// Most item ids in one `/v1/events` call (the server's limit).
pub const MAX_EVENT_ITEMS: usize = 100;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::SeedableRng;
    use sidrec::data::{ItemMeta, Items};
    use sidrec::{Sid, SidIndex};

    pub(crate) fn catalogue(n: u32) -> Arc<Catalogue> {
        let index: SidIndex = (0..n)
            .map(|i| (i, Sid::from_codes(vec![i % 5, i / 5, i])))
            .collect();
        let items: Items = (0..n)
            .map(|i| (i, ItemMeta::new(format!("item {i}"), "")))
            .collect();
        Arc::new(Catalogue::new(&index, &items).unwrap())
    }

    #[test]
    fn the_mix_is_honoured_and_bodies_are_valid() {
        let mix = MixSpec {
            recommend: 2.0,
            batch: 1.0,
            user: 1.0,
            lookup: 0.0,
            batch_size: 3,
            k: Choice::Weighted(vec![(5, 1.0), (10, 1.0)]),
            num_beams: Choice::Fixed(20),
            exclude: 2,
            exclude_history: 0.5,
        };
        let cat = catalogue(30);
        let histories = vec![vec![1, 2, 3], vec![999], vec![4, 999, 5]];
        let mut w = Workload::new(mix, cat, histories, "u-".into()).unwrap();
        assert_eq!(w.histories(), 2, "the all-unknown history is dropped");
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut counts = std::collections::BTreeMap::new();
        for _ in 0..4000 {
            let op = w.next_op(&mut rng);
            *counts.entry(op.kind()).or_insert(0) += 1;
            match op {
                Op::Recommend { body, expect } => {
                    let k = body["k"].as_u64().unwrap() as usize;
                    assert!(k == 5 || k == 10);
                    assert_eq!(expect.k, k);
                    let h: Vec<u64> = serde_json::from_value(body["history"].clone()).unwrap();
                    assert!(h.iter().all(|&i| i != 999));
                    for e in body["exclude"].as_array().unwrap() {
                        assert!(expect.excluded.contains(&(e.as_u64().unwrap() as u32)));
                    }
                }
                Op::Batch { body, expects } => {
                    assert_eq!(body["requests"].as_array().unwrap().len(), 3);
                    assert_eq!(expects.len(), 3);
                }
                Op::User {
                    events,
                    body,
                    expect,
                } => {
                    assert_eq!(events["user_id"], body["user_id"]);
                    assert_eq!(body["exclude_history"], true);
                    for i in events["item_ids"].as_array().unwrap() {
                        assert!(expect.excluded.contains(&(i.as_u64().unwrap() as u32)));
                    }
                }
                Op::Lookup(_) => panic!("lookup has weight 0"),
            }
        }
        let share = |k| counts[&k] as f64 / 4000.0;
        assert!((share(OpKind::Recommend) - 0.5).abs() < 0.04, "{counts:?}");
        assert!((share(OpKind::Batch) - 0.25).abs() < 0.04, "{counts:?}");
        assert!((share(OpKind::User) - 0.25).abs() < 0.04, "{counts:?}");
    }

    #[test]
    fn bad_mixes_are_refused() {
        let bad = [
            MixSpec {
                recommend: 0.0,
                ..MixSpec::default()
            },
            MixSpec {
                k: Choice::Fixed(60),
                ..MixSpec::default()
            },
            MixSpec {
                num_beams: Choice::Weighted(vec![]),
                ..MixSpec::default()
            },
            MixSpec {
                batch_size: 65,
                ..MixSpec::default()
            },
            MixSpec {
                exclude_history: 1.5,
                ..MixSpec::default()
            },
        ];
        for m in bad {
            assert!(m.validate().is_err(), "{m:?}");
        }
        assert!(MixSpec::default().validate().is_ok());
    }
}
