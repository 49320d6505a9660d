//! The hybrid ranker: the generative model's beam candidates re-scored with an item-level model,
//! `score = log p(SID) + λ · score_item(history, item)`.
//!
//! The item-level model is a last-item transition table fitted on a train split: how often item
//! `i` followed item `l` as the next item. It is stored beside the model as `hybrid.json` in a
//! checkpoint directory (hashed in `sidrec.json` like every other file), so that `eval` and the
//! server re-rank through the one function [`Hybrid::rerank`] and agree on every row.
//!
//! The beam decides *which* items are candidates (and their SID's log-probability); the table
//! only re-orders them. λ = 0 is the pure model.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::InteractionRow;
use crate::error::{Error, Result};
use crate::ItemId;

/// File name of the hybrid ranker inside a checkpoint directory.
pub const HYBRID_FILE: &str = "hybrid.json";
/// Current `hybrid.json` format.
pub const HYBRID_FORMAT_VERSION: u32 = 1;
/// The item-level model `hybrid.json` holds.
pub const ITEM_MODEL: &str = "last-item-transition";

/// Counts of `last history item → next item` over the rows of a split, with the split's
/// next-item counts (popularity) as the smoothing prior.
///
/// The score of item `i` after last item `l` is the log of a Dirichlet-smoothed transition
/// probability whose prior is popularity:
///
/// `score(l, i) = ln((c(l→i) + β·q(i)) / (c(l) + β))`, `q(i) = (t(i) + 1) / (T + N)`,
///
/// with `c(l→i)` the transition count, `c(l)` its row total, `t(i)` how often `i` was a next
/// item, `T` the rows, `N` the catalogue size and β the prior's strength. It is a proper
/// log-probability, so it adds to the model's log-probability on the same scale; an unseen last
/// item falls back to (smoothed) popularity, as the transition baseline does; and two items
/// that never followed `l` keep the model's order between them unless their popularity differs.
/// A plain additive `(c + α)/(c(l) + αN)` would give every unseen follower the same score and
/// so could not use popularity at all; β is chosen on valid beside λ.
#[derive(Debug, Clone, PartialEq)]
pub struct TransitionScorer {
    /// last item → (row total, next item → count).
    next: HashMap<ItemId, (u32, HashMap<ItemId, u32>)>,
    /// next item → how often it was one.
    targets: HashMap<ItemId, u32>,
    /// Rows counted.
    rows: u64,
    /// Catalogue size `N`.
    num_items: usize,
}

impl TransitionScorer {
    /// Count the transitions of `rows` (rows with an empty history count towards popularity
    /// only) for a catalogue of `num_items` items.
    pub fn fit(rows: &[InteractionRow], num_items: usize) -> Self {
        let mut s = Self {
            next: HashMap::new(),
            targets: HashMap::new(),
            rows: rows.len() as u64,
            num_items,
        };
        for r in rows {
            *s.targets.entry(r.item_id).or_default() += 1;
            if let Some(&last) = r.history_item_id.last() {
                let (total, followers) = s.next.entry(last).or_default();
                *total += 1;
                *followers.entry(r.item_id).or_default() += 1;
            }
        }
        s
    }

    /// `score(last, item)` with prior strength `beta` (see the type's documentation); `last`
    /// is `None` for an empty history.
    pub fn score(&self, last: Option<ItemId>, item: ItemId, beta: f64) -> f64 {
        let t = self.targets.get(&item).copied().unwrap_or(0) as f64;
        let q = (t + 1.0) / (self.rows as f64 + self.num_items.max(1) as f64);
        let (c_li, c_l) = last
            .and_then(|l| self.next.get(&l))
            .map(|(total, f)| (f.get(&item).copied().unwrap_or(0) as f64, *total as f64))
            .unwrap_or((0.0, 0.0));
        ((c_li + beta * q) / (c_l + beta)).ln()
    }

    /// Rows the table was counted over.
    pub fn rows(&self) -> u64 {
        self.rows
    }
}

/// One candidate of the beam: an item, the beam (SID) it came from and that SID's
/// log-probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// The item.
    pub item: ItemId,
    /// Index of its beam in the beam list: items sharing a SID share it.
    pub beam: usize,
    /// Log-probability of its SID under the model (the beam's score).
    pub model_score: f32,
}

/// A re-ranked candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranked {
    /// The item.
    pub item: ItemId,
    /// Index of its beam in the beam list.
    pub beam: usize,
    /// Log-probability of its SID under the model.
    pub model_score: f32,
    /// `model_score + λ · score_item`.
    pub score: f32,
}

/// Where the transition table came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedOn {
    /// The dataset directory.
    pub data: String,
    /// The split counted (`train`).
    pub split: String,
    /// Its rows.
    pub rows: u64,
}

/// The model's candidates re-scored by a last-item transition table.
#[derive(Debug, Clone, PartialEq)]
pub struct Hybrid {
    /// Weight of the item-level score.
    pub lambda: f32,
    /// Prior strength β of [`TransitionScorer::score`].
    pub prior_strength: f64,
    /// The item-level model.
    pub scorer: TransitionScorer,
    /// Where the table came from.
    pub fitted_on: FittedOn,
    /// How λ and β were chosen (free form: split, rows, grid, metrics).
    pub selection: serde_json::Value,
}

/// One last item's followers in `hybrid.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TransitionRow {
    last: ItemId,
    next: Vec<(ItemId, u32)>,
}

/// `hybrid.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct HybridFile {
    format_version: u32,
    item_model: String,
    lambda: f32,
    prior_strength: f64,
    num_items: usize,
    fitted_on: FittedOn,
    #[serde(default)]
    selection: serde_json::Value,
    /// next item → count, by item id.
    targets: Vec<(ItemId, u32)>,
    /// By last item id; followers by item id.
    transitions: Vec<TransitionRow>,
}

impl Hybrid {
    /// Re-rank `candidates` (the beam's items, best first) for a history (oldest first): each
    /// item scores `model_score + λ · score(last item, item)`; a SID (its beam's items) ranks by
    /// its best item, and its items stay together, best first. The model cannot tell items of
    /// one SID apart, so keeping them together keeps the list a ranking of SIDs, which calc.py
    /// scores and the pure beam gives. Ties keep the beam's order (items of a SID: id order).
    /// Only the history's last item is read.
    pub fn rerank(&self, history: &[ItemId], candidates: &[Candidate]) -> Vec<Ranked> {
        let last = history.last().copied();
        let mut out: Vec<Ranked> = candidates
            .iter()
            .map(|c| {
                let item = self.scorer.score(last, c.item, self.prior_strength);
                Ranked {
                    item: c.item,
                    beam: c.beam,
                    model_score: c.model_score,
                    score: (c.model_score as f64 + self.lambda as f64 * item) as f32,
                }
            })
            .collect();
        let mut best: HashMap<usize, f32> = HashMap::new();
        for r in &out {
            let b = best.entry(r.beam).or_insert(f32::NEG_INFINITY);
            *b = b.max(r.score);
        }
        let best_of = |r: &Ranked| best.get(&r.beam).copied().unwrap_or(r.score);
        // Stable, so equal scores (λ = 0, or equal counts and popularity) keep the beam's order.
        out.sort_by(|a, b| {
            best_of(b)
                .total_cmp(&best_of(a))
                .then(a.beam.cmp(&b.beam))
                .then(b.score.total_cmp(&a.score))
        });
        out
    }

    /// Serialise as `hybrid.json` (deterministic: maps sorted by item id).
    pub fn to_json(&self) -> Result<Vec<u8>> {
        let targets: BTreeMap<ItemId, u32> =
            self.scorer.targets.iter().map(|(&k, &v)| (k, v)).collect();
        let transitions: BTreeMap<ItemId, &(u32, HashMap<ItemId, u32>)> =
            self.scorer.next.iter().map(|(&k, v)| (k, v)).collect();
        let file = HybridFile {
            format_version: HYBRID_FORMAT_VERSION,
            item_model: ITEM_MODEL.into(),
            lambda: self.lambda,
            prior_strength: self.prior_strength,
            num_items: self.scorer.num_items,
            fitted_on: FittedOn {
                rows: self.scorer.rows,
                ..self.fitted_on.clone()
            },
            selection: self.selection.clone(),
            targets: targets.into_iter().collect(),
            transitions: transitions
                .into_iter()
                .map(|(last, (_, f))| {
                    let next: BTreeMap<ItemId, u32> = f.iter().map(|(&k, &v)| (k, v)).collect();
                    TransitionRow {
                        last,
                        next: next.into_iter().collect(),
                    }
                })
                .collect(),
        };
        serde_json::to_vec(&file)
            .map_err(|e| Error::Invalid(format!("serialising {HYBRID_FILE}: {e}")))
    }

    /// Parse `hybrid.json` bytes read from `path` (named in errors).
    pub fn from_json(path: &Path, bytes: &[u8]) -> Result<Self> {
        let file: HybridFile = crate::io::parse_json(path, bytes, "a hybrid ranker file")?;
        let bad = |m: String| Error::Invalid(format!("{}: {m}", path.display()));
        if file.format_version > HYBRID_FORMAT_VERSION {
            return Err(bad(format!(
                "format {} is newer than this build understands ({HYBRID_FORMAT_VERSION})",
                file.format_version
            )));
        }
        if file.item_model != ITEM_MODEL {
            return Err(bad(format!(
                "item_model `{}` is not supported (only `{ITEM_MODEL}`)",
                file.item_model
            )));
        }
        if !file.lambda.is_finite() || file.lambda < 0.0 {
            return Err(bad(format!(
                "lambda must be finite and >= 0, got {}",
                file.lambda
            )));
        }
        if !file.prior_strength.is_finite() || file.prior_strength <= 0.0 {
            return Err(bad(format!(
                "prior_strength must be finite and > 0, got {}",
                file.prior_strength
            )));
        }
        let mut next = HashMap::with_capacity(file.transitions.len());
        for row in file.transitions {
            let followers: HashMap<ItemId, u32> = row.next.into_iter().collect();
            let total = followers.values().fold(0u32, |a, &c| a.saturating_add(c));
            if next.insert(row.last, (total, followers)).is_some() {
                return Err(bad(format!("last item {} is listed twice", row.last)));
            }
        }
        Ok(Self {
            lambda: file.lambda,
            prior_strength: file.prior_strength,
            scorer: TransitionScorer {
                next,
                targets: file.targets.into_iter().collect(),
                rows: file.fitted_on.rows,
                num_items: file.num_items,
            },
            fitted_on: file.fitted_on,
            selection: file.selection,
        })
    }

    /// Read `path` (a `hybrid.json`).
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(path, &bytes)
    }
}

/// The beam's candidates in beam order: each beam's items (several under a shared SID, in id
/// order, all with the beam's score), each item once, without `exclude`d items.
pub fn candidates<'a>(
    beams: impl IntoIterator<Item = (&'a [ItemId], f32)>,
    exclude: &[ItemId],
) -> Vec<Candidate> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (beam, (items, score)) in beams.into_iter().enumerate() {
        for &item in items {
            if !exclude.contains(&item) && seen.insert(item) {
                out.push(Candidate {
                    item,
                    beam,
                    model_score: score,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::interaction_row as row;

    fn hybrid(lambda: f32, beta: f64) -> Hybrid {
        let train = [
            row(&[1], 2),
            row(&[5, 1], 2),
            row(&[1], 3),
            row(&[4], 9),
            row(&[4], 9),
        ];
        Hybrid {
            lambda,
            prior_strength: beta,
            scorer: TransitionScorer::fit(&train, 10),
            fitted_on: FittedOn {
                data: "d".into(),
                split: "train".into(),
                rows: 5,
            },
            selection: serde_json::json!({"split": "valid"}),
        }
    }

    #[test]
    fn the_score_is_a_smoothed_log_probability_backed_off_to_popularity() {
        let h = hybrid(1.0, 1.0);
        let s = &h.scorer;
        // q(2) = (2 + 1) / (5 + 10); after item 1: (2 + 0.2) / (3 + 1).
        assert!((s.score(Some(1), 2, 1.0) - (2.2f64 / 4.0).ln()).abs() < 1e-12);
        // An unseen last item (and no history) gives q(i): popularity.
        assert!((s.score(Some(7), 9, 1.0) - (3.0f64 / 15.0).ln()).abs() < 1e-12);
        assert_eq!(s.score(None, 9, 1.0), s.score(Some(7), 9, 1.0));
        // Probabilities over the catalogue after a seen last item sum to 1.
        let total: f64 = (0..10).map(|i| s.score(Some(1), i, 1.0).exp()).sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
    }

    fn cand(item: ItemId, beam: usize, model_score: f32) -> Candidate {
        Candidate {
            item,
            beam,
            model_score,
        }
    }

    #[test]
    fn rerank_adds_lambda_times_the_item_score_and_keeps_the_beam_order_on_ties() {
        let cands = [
            cand(9, 0, -1.0),
            cand(3, 1, -1.5),
            cand(2, 2, -2.0),
            cand(8, 3, -2.0),
        ];
        let pure = hybrid(0.0, 1.0).rerank(&[4, 1], &cands);
        assert_eq!(
            pure.iter().map(|r| r.item).collect::<Vec<_>>(),
            [9, 3, 2, 8]
        );
        assert!(pure.iter().all(|r| r.score == r.model_score));
        let h = hybrid(1.0, 1.0);
        let ranked = h.rerank(&[4, 1], &cands);
        // After item 1: 2 followed twice, 3 once; 9 never (popular), 8 never (unseen).
        assert_eq!(
            ranked.iter().map(|r| r.item).collect::<Vec<_>>(),
            [2, 3, 9, 8]
        );
        for r in &ranked {
            let want = r.model_score as f64 + h.scorer.score(Some(1), r.item, 1.0);
            assert!((r.score as f64 - want).abs() < 1e-5);
        }
    }

    #[test]
    fn items_of_one_sid_stay_together_ranked_by_the_best() {
        // Beam 0 names items 8 and 2 (a shared SID); 2 follows 1 twice, so the SID leads with
        // 2, and 8 comes right after it although 3 (beam 1) scores above 8.
        let cands = [cand(8, 0, -1.0), cand(2, 0, -1.0), cand(3, 1, -1.5)];
        let ranked = hybrid(1.0, 1.0).rerank(&[1], &cands);
        assert_eq!(
            ranked.iter().map(|r| (r.item, r.beam)).collect::<Vec<_>>(),
            [(2, 0), (8, 0), (3, 1)]
        );
        assert!(ranked[2].score > ranked[1].score);
    }

    #[test]
    fn candidates_expand_shared_sids_once_and_skip_exclusions() {
        let a: &[ItemId] = &[3, 4];
        let b: &[ItemId] = &[7];
        let c: &[ItemId] = &[4];
        let got = candidates([(a, -1.0), (b, -2.0), (c, -3.0)], &[7]);
        assert_eq!(got, [cand(3, 0, -1.0), cand(4, 0, -1.0)]);
    }

    #[test]
    fn the_file_round_trips_and_bad_files_are_refused_by_name() {
        let h = hybrid(0.5, 10.0);
        let bytes = h.to_json().unwrap();
        let p = Path::new("ck/hybrid.json");
        assert_eq!(Hybrid::from_json(p, &bytes).unwrap(), h);
        assert_eq!(
            h.to_json().unwrap(),
            bytes,
            "serialisation is deterministic"
        );
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["lambda"] = serde_json::json!(-1.0);
        let e = Hybrid::from_json(p, v.to_string().as_bytes()).unwrap_err();
        assert!(
            e.to_string().contains("ck/hybrid.json") && e.to_string().contains("lambda"),
            "{e}"
        );
        v["lambda"] = serde_json::json!(0.5);
        v["item_model"] = serde_json::json!("sasrec");
        let e = Hybrid::from_json(p, v.to_string().as_bytes()).unwrap_err();
        assert!(e.to_string().contains("item_model"), "{e}");
        let e = Hybrid::from_json(p, b"{\"lambda\": ").unwrap_err();
        assert!(e.to_string().starts_with("ck/hybrid.json:1:"), "{e}");
    }
}
