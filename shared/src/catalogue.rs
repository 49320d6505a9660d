//! The catalogue: item id ↔ SID ↔ title, and which items share a SID.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::data::items::Items;
use crate::error::{Error, Result};
use crate::sid::{ItemId, Sid, SidIndex};

/// One catalogue entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogueItem {
    /// Item id.
    pub id: ItemId,
    /// Title (empty if the metadata has none for this id).
    pub title: String,
    /// The item's SID.
    pub sid: Sid,
}

/// Items that share one SID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollisionGroup {
    /// The shared SID, as a string.
    pub sid: String,
    /// The items, in id order.
    pub items: Vec<ItemId>,
}

/// Summary of SID sharing in a catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollisionReport {
    /// Items with a SID.
    pub items: usize,
    /// Distinct SIDs.
    pub unique_sids: usize,
    /// SIDs shared by two or more items.
    pub collided_groups: usize,
    /// Items whose SID is shared.
    pub collided_items: usize,
    /// Size of the largest group.
    pub max_group_size: usize,
    /// Every group of two or more, largest first, then by SID.
    pub groups: Vec<CollisionGroup>,
}

/// Lowercased, whitespace-collapsed title used for exact title lookups.
pub fn normalize_title(title: &str) -> String {
    title
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Item id ↔ SID ↔ title maps of one catalogue.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    items: BTreeMap<ItemId, CatalogueItem>,
    by_sid: HashMap<Sid, Vec<ItemId>>,
    by_title: HashMap<String, Vec<ItemId>>,
}

impl Catalogue {
    /// Join a SID index with item metadata. Every indexed item must have metadata.
    pub fn new(index: &SidIndex, items: &Items) -> Result<Self> {
        let mut cat = Catalogue::default();
        let mut missing = Vec::new();
        for (id, sid) in index.iter() {
            let Some(meta) = items.get(&id) else {
                missing.push(id);
                continue;
            };
            cat.insert(CatalogueItem {
                id,
                title: meta.title.clone(),
                sid: sid.clone(),
            });
        }
        if !missing.is_empty() {
            let shown: Vec<String> = missing.iter().take(10).map(|i| i.to_string()).collect();
            return Err(Error::Invalid(format!(
                "{} indexed item(s) have no metadata: {}{}",
                missing.len(),
                shown.join(", "),
                if missing.len() > 10 { ", ..." } else { "" }
            )));
        }
        Ok(cat)
    }

    /// Add (or replace) an item.
    pub fn insert(&mut self, item: CatalogueItem) {
        if let Some(old) = self.items.remove(&item.id) {
            if let Some(v) = self.by_sid.get_mut(&old.sid) {
                v.retain(|&i| i != old.id);
            }
            if let Some(v) = self.by_title.get_mut(&normalize_title(&old.title)) {
                v.retain(|&i| i != old.id);
            }
        }
        let ids = self.by_sid.entry(item.sid.clone()).or_default();
        let pos = ids.partition_point(|&i| i < item.id);
        ids.insert(pos, item.id);
        let ids = self
            .by_title
            .entry(normalize_title(&item.title))
            .or_default();
        let pos = ids.partition_point(|&i| i < item.id);
        ids.insert(pos, item.id);
        self.items.insert(item.id, item);
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// An item by id.
    pub fn get(&self, id: ItemId) -> Option<&CatalogueItem> {
        self.items.get(&id)
    }

    /// Items with this SID (several under a collision), in id order.
    pub fn items_with_sid(&self, sid: &Sid) -> &[ItemId] {
        self.by_sid.get(sid).map_or(&[], Vec::as_slice)
    }

    /// Items whose title equals `title` up to case and whitespace.
    pub fn items_with_title(&self, title: &str) -> &[ItemId] {
        self.by_title
            .get(&normalize_title(title))
            .map_or(&[], Vec::as_slice)
    }

    /// All items in id order.
    pub fn iter(&self) -> impl Iterator<Item = &CatalogueItem> + '_ {
        self.items.values()
    }

    /// The SID index of this catalogue.
    pub fn sid_index(&self) -> SidIndex {
        self.items.values().map(|i| (i.id, i.sid.clone())).collect()
    }

    /// Which items share a SID.
    pub fn collision_report(&self) -> CollisionReport {
        let mut groups: Vec<CollisionGroup> = self
            .by_sid
            .iter()
            .filter(|(_, ids)| ids.len() > 1)
            .map(|(sid, ids)| CollisionGroup {
                sid: sid.to_string(),
                items: ids.clone(),
            })
            .collect();
        groups.sort_by(|a, b| b.items.len().cmp(&a.items.len()).then(a.sid.cmp(&b.sid)));
        CollisionReport {
            items: self.items.len(),
            unique_sids: self.by_sid.values().filter(|v| !v.is_empty()).count(),
            collided_groups: groups.len(),
            collided_items: groups.iter().map(|g| g.items.len()).sum(),
            max_group_size: groups.iter().map(|g| g.items.len()).max().unwrap_or(1),
            groups,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::items::ItemMeta;

    #[test]
    fn maps_and_collisions() {
        let index: SidIndex = [
            (0, "<a_1><b_1><c_1>".parse().unwrap()),
            (1, "<a_1><b_1><c_2>".parse().unwrap()),
            (2, "<a_1><b_1><c_1>".parse().unwrap()),
        ]
        .into_iter()
        .collect();
        let items: Items = [
            (0, ItemMeta::new("Patty Paper", "")),
            (1, ItemMeta::new("Hinge", "")),
            (2, ItemMeta::new("patty  paper", "")),
        ]
        .into_iter()
        .collect();
        let cat = Catalogue::new(&index, &items).unwrap();
        assert_eq!(
            cat.items_with_sid(&"<a_1><b_1><c_1>".parse().unwrap()),
            [0, 2]
        );
        assert_eq!(cat.items_with_title("PATTY PAPER"), [0, 2]);
        let r = cat.collision_report();
        assert_eq!(
            (r.unique_sids, r.collided_groups, r.collided_items),
            (2, 1, 2)
        );
        assert_eq!(r.max_group_size, 2);
        let mut few = items.clone();
        few.remove(&1);
        let e = Catalogue::new(&index, &few).unwrap_err();
        assert!(
            e.to_string()
                .contains("1 indexed item(s) have no metadata: 1"),
            "{e}"
        );
    }
}
