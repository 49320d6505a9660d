//! Item-ID input embeddings: one learned vector per catalogue item, added to the model's input
//! at the last SID token of every complete item of a prompt.
//!
//! Why: a SID spreads an item over three or four code tokens shared with many other items, so a
//! small model has to compose them before it can recall what tends to follow that item. A
//! vector per item hands it the item itself, which is what a last-item transition table keys
//! on (TIGER-style recommenders report gains of 6–17 % from such embeddings).
//!
//! Why on the *last* token: no position then sees the vector of an item whose SID it is still
//! writing. While the model writes a SID (training on a history with `--history-loss`, or beam
//! search), the tokens inside that SID carry only their code embeddings; the item's vector
//! appears at its final token, whose prediction is already the next item (or the separator).
//! Generated tokens never get one: the item is not known until its SID is complete.
//!
//! Rows are 1-based, one per distinct SID, in the order each SID first appears in item-id order
//! of the checkpoint's SID index; row 0 means "no item" and is masked out, so it never trains.
//! Items that share a SID (an index built with collisions left as they are) share a row: a
//! prompt names items by their SIDs only, so nothing could tell those items apart anyway. With
//! unique SIDs, row `r` is simply the `r`-th item.

use std::collections::HashMap;

use super::copy_gate::CopyTarget;
use crate::error::{Error, Result};
use crate::trie::SidVocab;
use crate::SidIndex;

/// Finds complete item SIDs in token ids and names their item-embedding rows.
#[derive(Debug, Clone)]
pub struct ItemLookup {
    vocab: SidVocab,
    /// SID token ids → 1-based row.
    by_sid: HashMap<Vec<u32>, u32>,
    rows: usize,
}

impl ItemLookup {
    /// The lookup of a checkpoint: its tokenizer's SID vocabulary and its SID index.
    pub fn new(vocab: &SidVocab, index: &SidIndex) -> Result<Self> {
        let mut by_sid = HashMap::with_capacity(index.len());
        for (item, sid) in index.iter() {
            let ids = sid
                .tokens()
                .map(|t| {
                    vocab.token_id(t).ok_or_else(|| {
                        Error::Invalid(format!(
                            "SID token {t} of item {item} is not in the vocabulary"
                        ))
                    })
                })
                .collect::<Result<Vec<u32>>>()?;
            let next = u32::try_from(by_sid.len() + 1)
                .map_err(|_| Error::Invalid("too many items for item embeddings".into()))?;
            by_sid.entry(ids).or_insert(next);
        }
        let rows = by_sid.len() + 1;
        Ok(Self {
            vocab: vocab.clone(),
            by_sid,
            rows,
        })
    }

    /// Rows of the embedding table a model over `index` needs: its distinct SIDs, plus row 0.
    pub fn rows_for(index: &SidIndex) -> usize {
        let distinct: std::collections::HashSet<_> = index.iter().map(|(_, sid)| sid).collect();
        distinct.len() + 1
    }

    /// The SID level of token `id` (`None`: not a SID token).
    pub fn level_of(&self, id: u32) -> Option<usize> {
        self.vocab.token(id).map(|t| t.level as usize)
    }

    /// The SID (token ids) that the nearest SID token before `end` closes, when the tokens
    /// before it count its levels down to 0; `None` when there is no SID token before `end`.
    pub fn sid_before(&self, ids: &[u32], end: usize) -> Option<Vec<u32>> {
        let last = (0..end.min(ids.len()))
            .rev()
            .find(|&j| self.level_of(ids[j]).is_some())?;
        let start = last.checked_sub(self.level_of(ids[last])?)?;
        let sid = &ids[start..=last];
        self.counts_levels(sid).then(|| sid.to_vec())
    }

    /// Whether `ids` are SID tokens of levels 0, 1, 2, ... in order.
    fn counts_levels(&self, ids: &[u32]) -> bool {
        ids.iter()
            .enumerate()
            .all(|(k, &id)| self.level_of(id) == Some(k))
    }

    /// Where the copy gate acts on the token at `t` of a row: when it is level `l` of a SID
    /// whose levels before it repeat those of the SID before it, that SID's level-`l` token
    /// ([`super::copy_gate`]).
    pub fn copy_target_at(&self, ids: &[u32], t: usize) -> Option<CopyTarget> {
        let level = self.level_of(*ids.get(t)?)?;
        let start = t.checked_sub(level)?;
        let written = &ids[start..t];
        if !self.counts_levels(written) {
            return None;
        }
        let prev = self.sid_before(ids, start)?;
        (prev.len() > level && prev[..level] == *written).then(|| CopyTarget {
            token: prev[level],
            level,
        })
    }

    /// Rows of the embedding table this lookup indexes (items + 1).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// For each position of `ids`, the row of the item whose SID ends there (0: none).
    ///
    /// A SID is a run of SID tokens whose levels count up from 0; it ends where the next token
    /// is not the following level. Runs that are no catalogue item (a truncated first item, a
    /// SID being written) get no row.
    pub fn rows_of(&self, ids: &[u32]) -> Vec<u32> {
        let mut out = vec![0; ids.len()];
        let mut start: Option<usize> = None;
        let close = |start: Option<usize>, end: usize, out: &mut Vec<u32>| {
            if let Some(s) = start {
                if let Some(&row) = self.by_sid.get(&ids[s..end]) {
                    out[end - 1] = row;
                }
            }
        };
        for (t, &id) in ids.iter().enumerate() {
            let level = self.vocab.token(id).map(|tok| tok.level as usize);
            match (level, start) {
                (Some(l), Some(s)) if l == t - s => {}
                (Some(0), _) => {
                    close(start, t, &mut out);
                    start = Some(t);
                }
                _ => {
                    close(start, t, &mut out);
                    start = None;
                }
            }
        }
        close(start, ids.len(), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sid::{Sid, SidToken};

    /// Items 10 (a0 b1 c2), 11 (a0 b1 c3), 12 (a1 b0 c0 d1); token id = 100 + 10·level + code.
    fn lookup() -> ItemLookup {
        let mut index = SidIndex::new();
        index.insert(10, Sid::from_codes(vec![0, 1, 2]));
        index.insert(11, Sid::from_codes(vec![0, 1, 3]));
        index.insert(12, Sid::from_codes(vec![1, 0, 0, 1]));
        let vocab = SidVocab::from_fn(&index, |t: SidToken| {
            Some(100 + 10 * t.level as u32 + t.code)
        })
        .unwrap();
        ItemLookup::new(&vocab, &index).unwrap()
    }

    #[test]
    fn copy_targets_repeat_the_previous_sid() {
        let l = lookup();
        // "x a0 b1 c2 , a0 b1 c3 , a1 ...": the second item repeats a0 b1 of the first.
        let ids = [7, 100, 111, 122, 5, 100, 111, 123, 5, 101];
        let at = |t| l.copy_target_at(&ids, t);
        assert_eq!(
            at(5),
            Some(CopyTarget {
                token: 100,
                level: 0
            })
        );
        assert_eq!(
            at(6),
            Some(CopyTarget {
                token: 111,
                level: 1
            })
        );
        assert_eq!(
            at(7),
            Some(CopyTarget {
                token: 122,
                level: 2
            })
        );
        // Not SID tokens, and a SID that no longer repeats its predecessor after a1.
        assert_eq!(at(4), None);
        assert_eq!(
            at(9),
            Some(CopyTarget {
                token: 100,
                level: 0
            })
        );
        let ids2 = [100, 111, 122, 5, 101, 110];
        assert_eq!(l.copy_target_at(&ids2, 5), None);
        // The first SID of a row has nothing before it.
        assert_eq!(l.copy_target_at(&ids, 1), None);
        assert_eq!(l.sid_before(&ids, 5), Some(vec![100, 111, 122]));
        assert_eq!(l.sid_before(&ids, 1), None);
    }

    #[test]
    fn rows_sit_on_the_last_token_of_complete_sids() {
        let l = lookup();
        assert_eq!(l.rows(), 4);
        // "x a0 b1 c2 , a1 b0 c0 d1 a0 b1 c3 y": separators optional, a new level-0 token ends
        // the previous SID.
        let ids = [7, 100, 111, 122, 5, 101, 110, 120, 131, 100, 111, 123, 9];
        assert_eq!(l.rows_of(&ids), vec![0, 0, 0, 1, 0, 0, 0, 0, 3, 0, 0, 2, 0]);
    }

    #[test]
    fn partial_and_unknown_sids_get_no_row() {
        let l = lookup();
        // A SID cut at the start (b1 c2), one being written (a0 b1), one not in the catalogue
        // (a0 b1 c4, code 4 unmapped so c is not a SID token: the run is a0 b1 only).
        assert_eq!(l.rows_of(&[111, 122, 5]), vec![0, 0, 0]);
        assert_eq!(l.rows_of(&[100, 111]), vec![0, 0]);
        assert_eq!(l.rows_of(&[100, 111, 124]), vec![0, 0, 0]);
        // A SID ending the sequence is closed.
        assert_eq!(l.rows_of(&[5, 100, 111, 123]), vec![0, 0, 0, 2]);
        assert_eq!(l.rows_of(&[]), Vec::<u32>::new());
    }

    #[test]
    fn items_sharing_a_sid_share_a_row() {
        let mut index = SidIndex::new();
        index.insert(10, Sid::from_codes(vec![0, 1, 2]));
        index.insert(11, Sid::from_codes(vec![0, 1, 2]));
        index.insert(12, Sid::from_codes(vec![1, 0, 0]));
        let vocab = SidVocab::from_fn(&index, |t: SidToken| {
            Some(100 + 10 * t.level as u32 + t.code)
        })
        .unwrap();
        let l = ItemLookup::new(&vocab, &index).unwrap();
        assert_eq!(l.rows(), 3);
        assert_eq!(ItemLookup::rows_for(&index), 3);
        // The later distinct SID gets row 2, not its item's position (3).
        assert_eq!(
            l.rows_of(&[100, 111, 122, 101, 110, 120]),
            vec![0, 0, 1, 0, 0, 2]
        );
    }
}
