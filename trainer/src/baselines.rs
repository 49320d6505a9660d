//! Non-learned rankers that every learned model must beat, fitted on the train split.
//!
//! * [`Popularity`]: items by how often they are a train target (ties: lower item id first).
//! * [`LastItemTransition`]: items by how often they followed the history's last item in train
//!   rows (`last history item → target` counts), backed off to popularity for the rest of the list
//!   and for unseen last items. Nothing is excluded (history items may be recommended).

use std::collections::HashMap;

use sidrec::data::InteractionRow;
use sidrec::ItemId;

/// Something that turns a history into a ranked list of items.
pub trait Ranker {
    /// The `k` best items for `history` (oldest first), best first, without duplicates.
    fn recommend(&self, history: &[ItemId], k: usize) -> Vec<ItemId>;
}

/// 0-based position of `target` in `list`.
pub fn rank_of(list: &[ItemId], target: ItemId) -> Option<usize> {
    list.iter().position(|&i| i == target)
}

/// Train-target counts.
#[derive(Debug, Clone, Default)]
pub struct Popularity {
    counts: HashMap<ItemId, u32>,
    ranked: Vec<ItemId>,
}

impl Popularity {
    /// Count targets of `train`.
    pub fn fit(train: &[InteractionRow]) -> Self {
        let mut counts: HashMap<ItemId, u32> = HashMap::new();
        for r in train {
            *counts.entry(r.item_id).or_default() += 1;
        }
        let mut ranked: Vec<ItemId> = counts.keys().copied().collect();
        ranked.sort_by(|a, b| counts[b].cmp(&counts[a]).then(a.cmp(b)));
        Self { counts, ranked }
    }

    /// How often `item` was a train target.
    pub fn count(&self, item: ItemId) -> u32 {
        self.counts.get(&item).copied().unwrap_or(0)
    }

    /// All counted items, most popular first.
    pub fn ranked(&self) -> &[ItemId] {
        &self.ranked
    }
}

impl Ranker for Popularity {
    fn recommend(&self, _history: &[ItemId], k: usize) -> Vec<ItemId> {
        self.ranked.iter().take(k).copied().collect()
    }
}

/// Counts of `last history item → target` over train rows, with popularity back-off.
#[derive(Debug, Clone, Default)]
pub struct LastItemTransition {
    /// For each last item, the followers sorted by count desc, popularity desc, id asc.
    next: HashMap<ItemId, Vec<ItemId>>,
    popularity: Popularity,
}

impl LastItemTransition {
    /// Fit on `train`.
    pub fn fit(train: &[InteractionRow]) -> Self {
        let popularity = Popularity::fit(train);
        let mut counts: HashMap<ItemId, HashMap<ItemId, u32>> = HashMap::new();
        for r in train {
            if let Some(&last) = r.history_item_id.last() {
                *counts
                    .entry(last)
                    .or_default()
                    .entry(r.item_id)
                    .or_default() += 1;
            }
        }
        let next = counts
            .into_iter()
            .map(|(last, followers)| {
                let mut list: Vec<(ItemId, u32)> = followers.into_iter().collect();
                list.sort_by(|a, b| {
                    b.1.cmp(&a.1)
                        .then(popularity.count(b.0).cmp(&popularity.count(a.0)))
                        .then(a.0.cmp(&b.0))
                });
                (last, list.into_iter().map(|(i, _)| i).collect())
            })
            .collect();
        Self { next, popularity }
    }
}

impl Ranker for LastItemTransition {
    fn recommend(&self, history: &[ItemId], k: usize) -> Vec<ItemId> {
        let mut out: Vec<ItemId> = history
            .last()
            .and_then(|l| self.next.get(l))
            .map(|v| v.iter().take(k).copied().collect())
            .unwrap_or_default();
        for &i in self.popularity.ranked() {
            if out.len() >= k {
                break;
            }
            if !out.contains(&i) {
                out.push(i);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(hist: &[ItemId], target: ItemId) -> InteractionRow {
        InteractionRow {
            user_id: "A0".into(),
            history_item_title: hist.iter().map(|i| i.to_string()).collect(),
            item_title: target.to_string(),
            history_item_id: hist.to_vec(),
            item_id: target,
            history_item_sid: vec![],
            item_sid: String::new(),
        }
    }

    #[test]
    fn popularity_and_transitions() {
        let train = [
            row(&[1], 2),
            row(&[1], 3),
            row(&[5, 1], 3),
            row(&[4], 9),
            row(&[4], 9),
        ];
        let pop = Popularity::fit(&train);
        assert_eq!(pop.recommend(&[], 3), [3, 9, 2]);
        let tr = LastItemTransition::fit(&train);
        assert_eq!(tr.recommend(&[7, 1], 4), [3, 2, 9]);
        assert_eq!(tr.recommend(&[4], 2), [9, 3]);
        assert_eq!(tr.recommend(&[8], 2), [3, 9]);
        assert_eq!(rank_of(&[3, 2, 9], 9), Some(2));
    }
}
