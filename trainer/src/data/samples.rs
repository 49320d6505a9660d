//! The reference's sample construction and temporal split (MINIONEREC.md §1.1), shared by
//! `data synth` and `data amazon18`.
//!
//! For each user's time-sorted sequence `i_0..i_{n-1}` and every position `t ≥ 1` there is one
//! sample: history `items[max(t-10, 0)..t]`, target `items[t]`. All samples of all users (users in
//! the given order, positions in order) are stably sorted by the target's timestamp and cut
//! globally: train = first `int(0.8·M)`, valid = next `int(0.9·M) − int(0.8·M)`, test = the rest.

use sidrec::data::{InteractionRow, Items};
use sidrec::{ItemId, SidIndex};

/// Longest history kept in a sample.
pub const MAX_HISTORY: usize = 10;

/// One user's interactions, already sorted by time (oldest first).
#[derive(Debug, Clone)]
pub struct UserSequence {
    /// User id as written in the CSVs (MiniOneRec writes `A<uid>`).
    pub user_id: String,
    /// `(item, unix timestamp)` pairs, oldest first.
    pub events: Vec<(ItemId, i64)>,
}

/// One sample before it becomes a CSV row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Index of the user in the input.
    pub user: usize,
    /// History item ids, oldest first (1 to 10 of them).
    pub history: Vec<ItemId>,
    /// Target item id.
    pub target: ItemId,
    /// Timestamp of the target interaction.
    pub timestamp: i64,
    /// Index of the target in the user's events (its history is the events before it).
    pub position: usize,
}

/// The three splits, in temporal order.
#[derive(Debug, Clone, Default)]
pub struct SplitSamples {
    /// Earliest 80 %.
    pub train: Vec<Sample>,
    /// Next 10 %.
    pub valid: Vec<Sample>,
    /// Latest 10 %.
    pub test: Vec<Sample>,
}

/// Python's `int(m * f)` for the split boundaries (same double arithmetic, truncation).
pub fn split_boundaries(m: usize) -> (usize, usize) {
    let train_end = (m as f64 * 0.8) as usize;
    let valid_end = (m as f64 * 0.9) as usize;
    (train_end, valid_end)
}

/// Sliding-window samples of every user, globally sorted by target time (stable) and split 8:1:1.
pub fn build_and_split(users: &[UserSequence]) -> SplitSamples {
    let mut all = Vec::new();
    for (u, seq) in users.iter().enumerate() {
        for t in 1..seq.events.len() {
            let st = t.saturating_sub(MAX_HISTORY);
            all.push(Sample {
                user: u,
                history: seq.events[st..t].iter().map(|e| e.0).collect(),
                target: seq.events[t].0,
                timestamp: seq.events[t].1,
                position: t,
            });
        }
    }
    // `sort_by_key` is stable, as Python's `list.sort`.
    all.sort_by_key(|s| s.timestamp);
    let (train_end, valid_end) = split_boundaries(all.len());
    let test = all.split_off(valid_end);
    let valid = all.split_off(train_end);
    SplitSamples {
        train: all,
        valid,
        test,
    }
}

/// CSV rows for `samples`: titles from `items` (fallback `Item_<id>` as `convert_dataset.py`),
/// SIDs from `index` when given, else empty SID columns (`[]` and `""`).
pub fn to_rows(
    samples: &[Sample],
    users: &[UserSequence],
    items: &Items,
    index: Option<&SidIndex>,
) -> Vec<InteractionRow> {
    let title = |id: ItemId| {
        items
            .get(&id)
            .map(|m| m.title.clone())
            .unwrap_or_else(|| format!("Item_{id}"))
    };
    let sid = |id: ItemId| index.and_then(|x| x.get(id)).map(|s| s.to_string());
    samples
        .iter()
        .map(|s| InteractionRow {
            user_id: users
                .get(s.user)
                .map(|u| u.user_id.clone())
                .unwrap_or_default(),
            history_item_title: s.history.iter().map(|&i| title(i)).collect(),
            item_title: title(s.target),
            history_item_id: s.history.clone(),
            item_id: s.target,
            history_item_sid: s.history.iter().filter_map(|&i| sid(i)).collect(),
            item_sid: sid(s.target).unwrap_or_default(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_int_boundaries() {
        assert_eq!(split_boundaries(10), (8, 9));
        assert_eq!(split_boundaries(7), (5, 6));
        assert_eq!(split_boundaries(3), (2, 2));
        let users = vec![UserSequence {
            user_id: "A0".into(),
            events: (0..13).map(|i| (i as ItemId, 100 - i as i64)).collect(),
        }];
        let s = build_and_split(&users);
        let all: Vec<_> = s.train.iter().chain(&s.valid).chain(&s.test).collect();
        assert_eq!(all.len(), 12);
        // Timestamps decrease with t, so the sort reverses the order.
        assert_eq!(all[0].target, 12);
        assert_eq!(all[0].history, (2..12).collect::<Vec<_>>());
        assert_eq!(all[11].history, [0]);
    }
}
