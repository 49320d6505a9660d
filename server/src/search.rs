//! Fuzzy title search over a catalogue: character trigrams of normalised titles.
//!
//! A title is normalised (lowercase, whitespace collapsed, as [`normalize_title`]), padded with a
//! space on each side, and cut into its set of character trigrams. An inverted index maps each
//! trigram to the titles that contain it, so a query only scores titles that share at least one
//! trigram with it. The score of a title `T` for a query `Q` is
//! `(dice + coverage) / 2` where `dice = 2|Q∩T| / (|Q|+|T|)` and `coverage = |Q∩T| / |Q|`:
//! Dice alone penalises long catalogue titles that contain the whole query, coverage alone
//! cannot tell them from the exact title. Identical normalised titles score 1.

use std::collections::HashMap;

use sidrec::catalogue::{normalize_title, Catalogue};
use sidrec::ItemId;

/// One fuzzy hit.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The item.
    pub item: ItemId,
    /// Score in `[0, 1]`.
    pub score: f64,
}

/// Trigram index of a catalogue's titles.
#[derive(Debug, Default)]
pub struct TitleIndex {
    /// Item id and trigram count of each indexed title.
    titles: Vec<(ItemId, u32)>,
    /// Trigram → indices into `titles`.
    postings: HashMap<[char; 3], Vec<u32>>,
}

/// The distinct trigrams of a normalised, space-padded title.
fn trigrams(title: &str) -> Vec<[char; 3]> {
    let norm = normalize_title(title);
    if norm.is_empty() {
        return Vec::new();
    }
    let chars: Vec<char> = std::iter::once(' ')
        .chain(norm.chars())
        .chain(std::iter::once(' '))
        .collect();
    let mut grams: Vec<[char; 3]> = chars.windows(3).map(|w| [w[0], w[1], w[2]]).collect();
    grams.sort_unstable();
    grams.dedup();
    grams
}

impl TitleIndex {
    /// Index every titled item of `catalogue`.
    pub fn new(catalogue: &Catalogue) -> Self {
        let mut index = TitleIndex::default();
        for item in catalogue.iter() {
            let grams = trigrams(&item.title);
            if grams.is_empty() {
                continue;
            }
            let slot = index.titles.len() as u32;
            index.titles.push((item.id, grams.len() as u32));
            for g in grams {
                index.postings.entry(g).or_default().push(slot);
            }
        }
        index
    }

    /// Number of indexed titles.
    pub fn len(&self) -> usize {
        self.titles.len()
    }

    /// True when no title is indexed.
    pub fn is_empty(&self) -> bool {
        self.titles.is_empty()
    }

    /// The best `limit` titles with `score >= min_score`, best first (ties by item id), never
    /// the items in `skip`.
    pub fn search(&self, query: &str, limit: usize, min_score: f64, skip: &[ItemId]) -> Vec<Hit> {
        let q = trigrams(query);
        if q.is_empty() || limit == 0 {
            return Vec::new();
        }
        let mut shared: HashMap<u32, u32> = HashMap::new();
        for g in &q {
            if let Some(list) = self.postings.get(g) {
                for &slot in list {
                    *shared.entry(slot).or_default() += 1;
                }
            }
        }
        let qn = q.len() as f64;
        let mut hits: Vec<Hit> = shared
            .into_iter()
            .filter_map(|(slot, n)| {
                let (item, tn) = self.titles[slot as usize];
                let n = n as f64;
                let dice = 2.0 * n / (qn + tn as f64);
                let score = 0.5 * (dice + n / qn);
                (score >= min_score && !skip.contains(&item)).then_some(Hit { item, score })
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item)));
        hits.truncate(limit);
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sidrec::data::{ItemMeta, Items};
    use sidrec::SidIndex;

    fn catalogue(titles: &[&str]) -> Catalogue {
        let index: SidIndex = (0..titles.len() as u32)
            .map(|i| (i, sidrec::Sid::from_codes(vec![i, 0, 0])))
            .collect();
        let items: Items = titles
            .iter()
            .enumerate()
            .map(|(i, t)| (i as u32, ItemMeta::new(*t, "")))
            .collect();
        Catalogue::new(&index, &items).unwrap()
    }

    #[test]
    fn ranks_similar_titles_first() {
        let cat = catalogue(&[
            "Patty Paper 500 Sheets",
            "Stainless Steel Hinge",
            "Patty paper",
            "Wax Paper Roll",
            "",
        ]);
        let idx = TitleIndex::new(&cat);
        assert_eq!(idx.len(), 4);
        let hits = idx.search("patty paper", 10, 0.0, &[]);
        assert_eq!(
            hits[0],
            Hit {
                item: 2,
                score: 1.0
            }
        );
        assert_eq!(hits[1].item, 0);
        assert!(hits[1].score > 0.6 && hits[1].score < 1.0, "{hits:?}");
        let ids: Vec<_> = idx
            .search("patty paper", 10, 0.0, &[2])
            .iter()
            .map(|h| h.item)
            .collect();
        assert_eq!(ids[0], 0);
        assert!(!ids.contains(&2));
        assert!(idx.search("hinge steel", 1, 0.3, &[])[0].item == 1);
        assert!(idx.search("zzzzqqq", 10, 0.1, &[]).is_empty());
        assert!(idx.search("   ", 10, 0.0, &[]).is_empty());
    }
}
