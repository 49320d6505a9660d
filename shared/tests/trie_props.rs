//! Property tests of the compiled SID trie against a naive map of the index.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use sidrec::trie::{SidTrie, SidVocab};
use sidrec::{ItemId, Sid, SidIndex};

/// Random SIDs of 3 or 4 levels with tiny codebooks, so prefixes are shared and SIDs collide.
fn arb_sid() -> impl Strategy<Value = Vec<u32>> {
    (3usize..=4, prop::collection::vec(0u32..4, 4)).prop_map(|(len, mut codes)| {
        codes.truncate(len);
        codes
    })
}

/// Multiplier that makes codes too large for the trie's packed sort keys, so both of its
/// sorting paths are exercised.
const HUGE: u32 = 70_001;

/// 1..300 items with random distinct ids; with `huge`, codes are spread out (0, 70001, ...).
fn arb_index() -> impl Strategy<Value = SidIndex> {
    let items = prop::collection::btree_map(0u32..100_000, arb_sid(), 1..300);
    (items, any::<bool>()).prop_map(|(m, huge)| {
        let scale = if huge { HUGE } else { 1 };
        m.into_iter()
            .map(|(i, c)| {
                (
                    i,
                    Sid::from_codes(c.into_iter().map(|x| x * scale).collect()),
                )
            })
            .collect()
    })
}

/// Either the reference's sequential ids or a closure that reverses code order, so children
/// must be sorted by token id rather than by code.
fn vocab(index: &SidIndex, scrambled: bool) -> SidVocab {
    if scrambled {
        SidVocab::from_fn(index, |t| {
            Some(1_000_000_000 - 10_000_000 * t.level as u32 - t.code)
        })
        .unwrap()
    } else {
        SidVocab::sequential(index, 151_665).unwrap()
    }
}

fn expected(index: &SidIndex) -> BTreeMap<Sid, Vec<ItemId>> {
    let mut m: BTreeMap<Sid, Vec<ItemId>> = BTreeMap::new();
    for (item, sid) in index.iter() {
        m.entry(sid.clone()).or_default().push(item);
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn indexed_sids_are_exactly_the_paths(index in arb_index(), scrambled in any::<bool>()) {
        let v = vocab(&index, scrambled);
        let trie = SidTrie::build(&index, &v).unwrap();
        let want = expected(&index);
        prop_assert_eq!(trie.num_items(), index.len());
        prop_assert_eq!(trie.num_levels(), index.max_levels());

        // Every indexed SID is a path whose leaf lists exactly its items, in id order.
        for (sid, items) in &want {
            prop_assert_eq!(trie.lookup(sid), Some(&items[..]));
            let tokens: Vec<u32> = sid.tokens().map(|t| v.token_id(t).unwrap()).collect();
            prop_assert_eq!(trie.lookup_tokens(&tokens), Some(&items[..]));
        }

        // Enumerating the trie yields the same set, each SID once.
        let got: Vec<(Sid, Vec<ItemId>)> = trie.paths().map(|(s, i)| (s, i.to_vec())).collect();
        let got_map: BTreeMap<Sid, Vec<ItemId>> = got.iter().cloned().collect();
        prop_assert_eq!(got.len(), got_map.len());
        prop_assert_eq!(&got_map, &want);
    }

    #[test]
    fn non_indexed_sids_are_not_paths(
        index in arb_index(),
        probes in prop::collection::vec(prop::collection::vec(0u32..5, 1..=5), 50),
        scrambled in any::<bool>(),
    ) {
        let v = vocab(&index, scrambled);
        let trie = SidTrie::build(&index, &v).unwrap();
        let want = expected(&index);
        for codes in probes {
            let scale = if index.codebook_sizes()[0] > HUGE { HUGE } else { 1 };
            let sid = Sid::from_codes(codes.into_iter().map(|x| x * scale).collect());
            if want.contains_key(&sid) {
                continue;
            }
            prop_assert_eq!(trie.lookup(&sid), None);
            // Walking it by token id stops early or ends on a non-terminal node.
            let mut node = Some(0u32);
            for (d, tok) in sid.tokens().enumerate() {
                node = node.and_then(|n| v.token_id(tok).and_then(|t| trie.step(d, n, t)));
            }
            if let Some(n) = node {
                prop_assert!(!trie.is_terminal(sid.len(), n));
            }
        }
    }

    #[test]
    fn tables_are_well_formed(index in arb_index(), scrambled in any::<bool>()) {
        let v = vocab(&index, scrambled);
        let trie = SidTrie::build(&index, &v).unwrap();
        prop_assert_eq!(trie.num_nodes(0), 1);
        for d in 0..=trie.num_levels() {
            let level = trie.level_tokens(d);
            prop_assert!(level.windows(2).all(|w| w[0] < w[1]), "level tokens sorted, unique");
            prop_assert_eq!(trie.level_codes(d).len(), level.len());
            for (slot, (&tok, &code)) in level.iter().zip(trie.level_codes(d)).enumerate() {
                let st = v.token(tok).unwrap();
                prop_assert_eq!((st.level as usize, st.code), (d, code), "slot {}", slot);
            }
            let mut child_ids = Vec::new();
            let mut used = BTreeSet::new();
            let mut max_children = 0;
            for node in 0..trie.num_nodes(d) as u32 {
                let (tokens, kids) = trie.children(d, node);
                prop_assert_eq!(tokens, trie.allowed(d, node));
                prop_assert_eq!(tokens.len(), kids.len());
                prop_assert!(tokens.windows(2).all(|w| w[0] < w[1]), "children sorted, unique");
                // No dead ends: every non-root node ends an item's SID or leads on.
                prop_assert!(d == 0 || trie.is_terminal(d, node) || !tokens.is_empty());
                max_children = max_children.max(tokens.len());
                let slots = trie.allowed_slots(d, node);
                let mask = trie.allowed_mask(d, node);
                prop_assert_eq!(mask.len(), level.len());
                prop_assert_eq!(mask.iter().filter(|&&b| b).count(), tokens.len());
                for ((&t, &s), kid) in tokens.iter().zip(slots).zip(kids) {
                    prop_assert_eq!(level[s as usize], t);
                    prop_assert!(mask[s as usize]);
                    prop_assert_eq!(trie.step(d, node, t), Some(kid));
                    prop_assert_eq!(trie.step_slot(d, node, s), Some(kid));
                    used.insert(t);
                    child_ids.push(kid);
                }
            }
            // Each node at depth d + 1 has exactly one parent.
            if d < trie.num_levels() {
                prop_assert_eq!(child_ids, (0..trie.num_nodes(d + 1) as u32).collect::<Vec<_>>());
            } else {
                prop_assert!(child_ids.is_empty());
            }
            prop_assert_eq!(used.into_iter().collect::<Vec<_>>(), level.to_vec());
            prop_assert_eq!(trie.max_children(d), max_children);
            if let Some(dense) = trie.level_mask(d, usize::MAX) {
                for node in 0..trie.num_nodes(d) {
                    let row = &dense[node * level.len()..(node + 1) * level.len()];
                    prop_assert_eq!(row, &trie.allowed_mask(d, node as u32)[..]);
                }
            }
        }
        let items: usize = (0..=trie.num_levels())
            .flat_map(|d| (0..trie.num_nodes(d) as u32).map(move |n| (d, n)))
            .map(|(d, n)| trie.items(d, n).len())
            .sum();
        prop_assert_eq!(items, index.len());
    }
}
