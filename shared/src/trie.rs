//! The compiled SID trie used by constrained decoding (DESIGN §4).
//!
//! The trie is stored as flat per-depth tables (CSR): depth `d` holds nodes `0..num_nodes(d)`,
//! node `n`'s children are the edges `offsets[n]..offsets[n + 1]` of the level-`d` edge arrays.
//! Nodes are numbered in edge order, so the child reached through edge `e` is node `e` at depth
//! `d + 1`: no per-edge child array is stored, and a node's children are a contiguous id range.
//! Children are sorted by model token id (binary search, and masks in token order), and each edge
//! also records its *slot* in the level's sorted list of distinct tokens, so beam search can score
//! only that level's tokens and gather/mask by slot.

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;

use crate::error::{Error, Result};
use crate::sid::{ItemId, Sid, SidIndex, SidToken};

/// Codes below this are looked up in a dense per-level table; larger ones in a hash map, so a
/// stray huge code cannot make the dense table explode.
const DENSE_CODE_LIMIT: u32 = 1 << 16;

/// Marks an unmapped code in the dense tables (so `u32::MAX` is not a usable token id).
const NO_TOKEN: u32 = u32::MAX;

/// Mapping between SID tokens `(level, code)` and model token ids, in both directions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SidVocab {
    /// Per level, token id of each code below [`DENSE_CODE_LIMIT`] ([`NO_TOKEN`] when unmapped).
    dense: Vec<Vec<u32>>,
    /// Tokens whose code is too large for the dense tables.
    sparse: HashMap<SidToken, u32>,
    /// Token id → token.
    reverse: HashMap<u32, SidToken>,
}

impl SidVocab {
    /// A vocabulary from explicit `(token, id)` pairs; a token or id given twice is an error.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (SidToken, u32)>) -> Result<Self> {
        let mut v = SidVocab::default();
        for (tok, id) in pairs {
            v.insert(tok, id)?;
        }
        Ok(v)
    }

    /// A vocabulary for every token used by `index`, asking `f` for each token's id.
    pub fn from_fn(index: &SidIndex, mut f: impl FnMut(SidToken) -> Option<u32>) -> Result<Self> {
        let mut v = SidVocab::default();
        for tok in distinct_tokens(index) {
            let id =
                f(tok).ok_or_else(|| Error::Invalid(format!("no token id for SID token {tok}")))?;
            v.insert(tok, id)?;
        }
        Ok(v)
    }

    /// Ids `first_id, first_id + 1, ...` in the order of [`SidIndex::sorted_token_strings`],
    /// which is how the reference's TokenExtender adds the SID tokens to the tokenizer.
    pub fn sequential(index: &SidIndex, first_id: u32) -> Result<Self> {
        let mut v = SidVocab::default();
        for (i, s) in index.sorted_token_strings().iter().enumerate() {
            let tok: SidToken = s.parse()?;
            let id = u32::try_from(i)
                .ok()
                .and_then(|i| first_id.checked_add(i))
                .ok_or_else(|| Error::Invalid(format!("token id overflow assigning {s}")))?;
            v.insert(tok, id)?;
        }
        Ok(v)
    }

    fn insert(&mut self, tok: SidToken, id: u32) -> Result<()> {
        if id == NO_TOKEN {
            return Err(Error::Invalid(format!(
                "token id {id} of {tok} is reserved"
            )));
        }
        if let Some(&old) = self.reverse.get(&id) {
            if old != tok {
                return Err(Error::Invalid(format!(
                    "token id {id} given to both {old} and {tok}"
                )));
            }
        }
        if let Some(old) = self.token_id(tok) {
            if old != id {
                return Err(Error::Invalid(format!(
                    "SID token {tok} given two ids, {old} and {id}"
                )));
            }
            return Ok(());
        }
        let level = tok.level as usize;
        if tok.code < DENSE_CODE_LIMIT {
            if self.dense.len() <= level {
                self.dense.resize(level + 1, Vec::new());
            }
            let table = &mut self.dense[level];
            let c = tok.code as usize;
            if table.len() <= c {
                table.resize(c + 1, NO_TOKEN);
            }
            table[c] = id;
        } else {
            self.sparse.insert(tok, id);
        }
        self.reverse.insert(id, tok);
        Ok(())
    }

    /// Model token id of a SID token.
    pub fn token_id(&self, tok: SidToken) -> Option<u32> {
        if tok.code < DENSE_CODE_LIMIT {
            let id = *self.dense.get(tok.level as usize)?.get(tok.code as usize)?;
            (id != NO_TOKEN).then_some(id)
        } else {
            self.sparse.get(&tok).copied()
        }
    }

    /// SID token of a model token id.
    pub fn token(&self, id: u32) -> Option<SidToken> {
        self.reverse.get(&id).copied()
    }

    /// Number of mapped tokens.
    pub fn len(&self) -> usize {
        self.reverse.len()
    }

    /// True when no token is mapped.
    pub fn is_empty(&self) -> bool {
        self.reverse.is_empty()
    }

    /// All `(token, id)` pairs, sorted by id.
    pub fn pairs(&self) -> Vec<(SidToken, u32)> {
        let mut v: Vec<_> = self.reverse.iter().map(|(&id, &t)| (t, id)).collect();
        v.sort_by_key(|&(_, id)| id);
        v
    }

    /// The items written in a row of token ids, as `(start, end)` positions: each starts at a
    /// level-0 SID token and runs over the deeper SID tokens after it. A SID cut short (a
    /// truncated first item, one being generated) is still an item here; whether it names a
    /// catalogue item is for the caller to ask.
    pub fn item_spans(&self, ids: &[u32]) -> Vec<(usize, usize)> {
        let mut spans = Vec::new();
        let mut i = 0;
        while i < ids.len() {
            if self.token(ids[i]).is_some_and(|t| t.level == 0) {
                let start = i;
                i += 1;
                while i < ids.len() && self.token(ids[i]).is_some_and(|t| t.level > 0) {
                    i += 1;
                }
                spans.push((start, i));
            } else {
                i += 1;
            }
        }
        spans
    }
}

fn distinct_tokens(index: &SidIndex) -> BTreeSet<SidToken> {
    index.iter().flat_map(|(_, sid)| sid.tokens()).collect()
}

/// Tables of one depth: its nodes, their outgoing edges (SID level `depth`) and terminal items.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Level {
    /// `num_nodes + 1` entries: node `n`'s edges are `offsets[n]..offsets[n + 1]`.
    offsets: Vec<u32>,
    /// Token id of each edge, ascending within a node.
    child_tokens: Vec<u32>,
    /// Slot of each edge's token in `level_tokens`.
    child_slots: Vec<u32>,
    /// `num_nodes + 1` entries: node `n`'s items are `items[item_offsets[n]..item_offsets[n + 1]]`.
    item_offsets: Vec<u32>,
    /// Items whose SID ends at each node, in item-id order within a node.
    items: Vec<ItemId>,
    /// Distinct token ids on this level's edges, ascending.
    level_tokens: Vec<u32>,
    /// SID code of each `level_tokens` slot.
    level_codes: Vec<u32>,
    /// Slots ordered by code, to map a `Sid`'s codes to slots by binary search.
    slots_by_code: Vec<u32>,
    /// Largest number of children of a node at this depth.
    max_children: u32,
}

impl Level {
    fn heap_bytes(&self) -> usize {
        4 * (self.offsets.capacity()
            + self.child_tokens.capacity()
            + self.child_slots.capacity()
            + self.item_offsets.capacity()
            + self.items.capacity()
            + self.level_tokens.capacity()
            + self.level_codes.capacity()
            + self.slots_by_code.capacity())
    }

    fn shrink(&mut self) {
        for v in [
            &mut self.offsets,
            &mut self.child_tokens,
            &mut self.child_slots,
            &mut self.item_offsets,
            &mut self.items,
            &mut self.level_tokens,
            &mut self.level_codes,
            &mut self.slots_by_code,
        ] {
            v.shrink_to_fit();
        }
    }
}

/// The catalogue's SIDs compiled into a trie over model token ids (flat per-depth CSR tables).
///
/// Depth `d` (0 = root, which is node 0) holds the nodes reached after `d` SID tokens; the edges
/// leaving depth `d` carry level-`d` tokens. `num_levels()` is the longest SID, so depths run
/// `0..=num_levels()`. A node may be terminal (items end there) and still have children, which
/// is how SIDs of different lengths (e.g. 3 and 4 levels) share one trie. Methods taking a
/// `(depth, node)` pair panic on ids that are not from this trie (they are not input data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidTrie {
    levels: Vec<Level>,
    num_items: usize,
}

impl SidTrie {
    /// Compile `index` with the token ids of `vocab`; an empty index, an empty SID or a token
    /// missing from `vocab` is an error.
    pub fn build(index: &SidIndex, vocab: &SidVocab) -> Result<SidTrie> {
        if index.is_empty() {
            return Err(Error::Invalid(
                "cannot build a SID trie from an empty index".into(),
            ));
        }
        if index.len() >= u32::MAX as usize {
            return Err(Error::Invalid(format!(
                "{} items exceed the trie's u32 offsets",
                index.len()
            )));
        }
        let depth = index.max_levels();
        let sorted = SortedPaths::new(index, vocab, depth)?;

        // One pass over the sorted paths: the node on the current path at each depth is always
        // the last node created at that depth, so nodes come out numbered in edge order.
        let mut child_count: Vec<Vec<u32>> = vec![Vec::new(); depth + 1];
        let mut item_count: Vec<Vec<u32>> = vec![Vec::new(); depth + 1];
        let mut child_tokens: Vec<Vec<u32>> = vec![Vec::new(); depth + 1];
        let mut items: Vec<Vec<ItemId>> = vec![Vec::new(); depth + 1];
        child_count[0].push(0);
        item_count[0].push(0);
        let mut prev: &[u32] = &[];
        for row in 0..sorted.ids.len() {
            let p = sorted.path(row);
            let lcp = prev.iter().zip(p).take_while(|(a, b)| a == b).count();
            for d in lcp..p.len() {
                // Depth d always has a current node: the root, or one created on this path.
                if let Some(c) = child_count[d].last_mut() {
                    *c += 1;
                }
                child_tokens[d].push(p[d]);
                child_count[d + 1].push(0);
                item_count[d + 1].push(0);
            }
            let k = p.len();
            if let Some(c) = item_count[k].last_mut() {
                *c += 1;
            }
            items[k].push(sorted.ids[row]);
            prev = p;
        }

        let mut levels = Vec::with_capacity(depth + 1);
        for d in 0..=depth {
            let tokens = std::mem::take(&mut child_tokens[d]);
            let mut level_tokens = tokens.clone();
            level_tokens.sort_unstable();
            level_tokens.dedup();
            let child_slots: Vec<u32> = tokens
                .iter()
                .map(|t| level_tokens.partition_point(|x| x < t) as u32)
                .collect();
            let mut level_codes = Vec::with_capacity(level_tokens.len());
            for &t in &level_tokens {
                match vocab.token(t) {
                    Some(tok) => level_codes.push(tok.code),
                    None => {
                        return Err(Error::Invalid(format!(
                            "token id {t} has no SID token in the vocabulary"
                        )))
                    }
                }
            }
            let mut slots_by_code: Vec<u32> = (0..level_tokens.len() as u32).collect();
            slots_by_code.sort_unstable_by_key(|&s| level_codes[s as usize]);
            let max_children = child_count[d].iter().copied().max().unwrap_or(0);
            let mut level = Level {
                offsets: prefix_sums(&child_count[d]),
                child_tokens: tokens,
                child_slots,
                item_offsets: prefix_sums(&item_count[d]),
                items: std::mem::take(&mut items[d]),
                level_tokens,
                level_codes,
                slots_by_code,
                max_children,
            };
            level.shrink();
            levels.push(level);
        }
        Ok(SidTrie {
            levels,
            num_items: index.len(),
        })
    }

    /// Number of SID levels (the longest SID); depths run `0..=num_levels()`.
    pub fn num_levels(&self) -> usize {
        self.levels.len() - 1
    }

    /// Number of nodes at `depth` (1 at the root).
    pub fn num_nodes(&self, depth: usize) -> usize {
        self.levels[depth].offsets.len() - 1
    }

    /// Number of indexed items (all leaves' item lists together).
    pub fn num_items(&self) -> usize {
        self.num_items
    }

    /// Token ids allowed after `node` at `depth`, ascending (empty at a pure leaf).
    pub fn allowed(&self, depth: usize, node: u32) -> &[u32] {
        let lv = &self.levels[depth];
        &lv.child_tokens[edge_range(&lv.offsets, node)]
    }

    /// Slots in [`level_tokens`](Self::level_tokens)`(depth)` of the allowed tokens, ascending.
    pub fn allowed_slots(&self, depth: usize, node: u32) -> &[u32] {
        let lv = &self.levels[depth];
        &lv.child_slots[edge_range(&lv.offsets, node)]
    }

    /// Children of `node`: their token ids (ascending) and their node ids at `depth + 1`
    /// (a contiguous range, in the same order).
    pub fn children(&self, depth: usize, node: u32) -> (&[u32], Range<u32>) {
        let lv = &self.levels[depth];
        let r = edge_range(&lv.offsets, node);
        (&lv.child_tokens[r.clone()], r.start as u32..r.end as u32)
    }

    /// The child of `node` reached with `token`, if that token is allowed.
    pub fn step(&self, depth: usize, node: u32, token: u32) -> Option<u32> {
        let lv = self.levels.get(depth)?;
        let r = edge_range(&lv.offsets, node);
        let pos = lv.child_tokens[r.clone()].binary_search(&token).ok()?;
        Some((r.start + pos) as u32)
    }

    /// The child of `node` reached with the token in `slot` of the level's token list.
    pub fn step_slot(&self, depth: usize, node: u32, slot: u32) -> Option<u32> {
        let lv = self.levels.get(depth)?;
        let r = edge_range(&lv.offsets, node);
        let pos = lv.child_slots[r.clone()].binary_search(&slot).ok()?;
        Some((r.start + pos) as u32)
    }

    /// Items whose SID ends at `node` (item-id order; several when SIDs collide).
    pub fn items(&self, depth: usize, node: u32) -> &[ItemId] {
        let lv = &self.levels[depth];
        &lv.items[edge_range(&lv.item_offsets, node)]
    }

    /// True when at least one item's SID ends at `node`.
    pub fn is_terminal(&self, depth: usize, node: u32) -> bool {
        !self.items(depth, node).is_empty()
    }

    /// Largest number of children of any node at `depth` (0 at the deepest level).
    pub fn max_children(&self, depth: usize) -> usize {
        self.levels[depth].max_children as usize
    }

    /// Distinct token ids on the edges leaving `depth` (SID level `depth`), ascending; a token's
    /// index in this list is its slot.
    pub fn level_tokens(&self, depth: usize) -> &[u32] {
        &self.levels[depth].level_tokens
    }

    /// The tokens a beam step at `depth` chooses among in fast mode, which normalises over
    /// them: the level's tokens ([`level_tokens`](Self::level_tokens), slot order), then
    /// `newline` when some SID ends at `depth`. At the deepest depth only `newline`; past it,
    /// nothing.
    pub fn step_tokens(&self, depth: usize, newline: u32) -> Vec<u32> {
        let mut tokens = if depth < self.num_levels() {
            self.level_tokens(depth).to_vec()
        } else {
            Vec::new()
        };
        let nodes = if depth <= self.num_levels() {
            self.num_nodes(depth)
        } else {
            0
        };
        if (0..nodes as u32).any(|u| self.is_terminal(depth, u)) {
            tokens.push(newline);
        }
        tokens
    }

    /// SID codes of [`level_tokens`](Self::level_tokens)`(depth)`, slot by slot.
    pub fn level_codes(&self, depth: usize) -> &[u32] {
        &self.levels[depth].level_codes
    }

    /// Node reached by a path of token ids from the root.
    pub fn walk_tokens(&self, tokens: &[u32]) -> Option<u32> {
        let mut node = 0;
        for (d, &t) in tokens.iter().enumerate() {
            node = self.step(d, node, t)?;
        }
        Some(node)
    }

    /// Items of the SID spelled by a path of token ids (None unless it is an indexed SID).
    pub fn lookup_tokens(&self, tokens: &[u32]) -> Option<&[ItemId]> {
        let node = self.walk_tokens(tokens)?;
        let items = self.items(tokens.len(), node);
        (!items.is_empty()).then_some(items)
    }

    /// Items with this SID (None unless it is an indexed SID).
    pub fn lookup(&self, sid: &Sid) -> Option<&[ItemId]> {
        if sid.len() > self.num_levels() {
            return None;
        }
        let mut node = 0;
        for (d, &code) in sid.codes().iter().enumerate() {
            let lv = &self.levels[d];
            let i = lv
                .slots_by_code
                .binary_search_by_key(&code, |&s| lv.level_codes[s as usize])
                .ok()?;
            node = self.step_slot(d, node, lv.slots_by_code[i])?;
        }
        let items = self.items(sid.len(), node);
        (!items.is_empty()).then_some(items)
    }

    /// Dense mask over the level's slots: `mask[slot]` is true when that token may follow `node`.
    pub fn allowed_mask(&self, depth: usize, node: u32) -> Vec<bool> {
        let mut mask = vec![false; self.level_tokens(depth).len()];
        for &s in self.allowed_slots(depth, node) {
            mask[s as usize] = true;
        }
        mask
    }

    /// Row-major `num_nodes(depth) × level_tokens(depth).len()` allowed-mask of a whole depth,
    /// or None when it would exceed `max_cells` (then use the CSR tables instead).
    pub fn level_mask(&self, depth: usize, max_cells: usize) -> Option<Vec<bool>> {
        let width = self.level_tokens(depth).len();
        let rows = self.num_nodes(depth);
        let cells = rows.checked_mul(width)?;
        if cells > max_cells {
            return None;
        }
        let lv = &self.levels[depth];
        let mut mask = vec![false; cells];
        for node in 0..rows {
            for &s in &lv.child_slots[edge_range(&lv.offsets, node as u32)] {
                mask[node * width + s as usize] = true;
            }
        }
        Some(mask)
    }

    /// Exact heap bytes held by the trie's tables.
    pub fn heap_bytes(&self) -> usize {
        self.levels.capacity() * std::mem::size_of::<Level>()
            + self.levels.iter().map(Level::heap_bytes).sum::<usize>()
    }

    /// Every indexed SID with its items, in trie order (token ids ascending, prefixes first).
    pub fn paths(&self) -> Paths<'_> {
        Paths {
            trie: self,
            stack: vec![(0, 0)],
            codes: Vec::new(),
        }
    }
}

/// Iterator over the `(Sid, items)` of a trie; see [`SidTrie::paths`].
#[derive(Debug, Clone)]
pub struct Paths<'a> {
    trie: &'a SidTrie,
    /// Pending `(depth, node)`, popped in pre-order.
    stack: Vec<(usize, u32)>,
    /// Codes of the path to the node being visited.
    codes: Vec<u32>,
}

impl<'a> Iterator for Paths<'a> {
    type Item = (Sid, &'a [ItemId]);

    fn next(&mut self) -> Option<Self::Item> {
        let trie = self.trie;
        while let Some((d, node)) = self.stack.pop() {
            if d > 0 {
                // Node ids at depth d equal the edge index that reaches them from depth d - 1.
                let lv = &trie.levels[d - 1];
                let slot = lv.child_slots[node as usize] as usize;
                self.codes.truncate(d - 1);
                self.codes.push(lv.level_codes[slot]);
            }
            let (_, kids) = trie.children(d, node);
            self.stack.extend(kids.rev().map(|c| (d + 1, c)));
            let items = trie.items(d, node);
            if !items.is_empty() {
                return Some((Sid::from_codes(self.codes.clone()), items));
            }
        }
        None
    }
}

/// The index's token-id paths in trie order: lexicographic (a prefix before its extensions, each
/// subtree contiguous), ties in item-id order. Stored flat with a fixed stride, sequentially.
struct SortedPaths {
    stride: usize,
    tokens: Vec<u32>,
    lens: Vec<u8>,
    ids: Vec<ItemId>,
}

impl SortedPaths {
    fn new(index: &SidIndex, vocab: &SidVocab, depth: usize) -> Result<Self> {
        for (item, sid) in index.iter() {
            if sid.is_empty() {
                return Err(Error::Invalid(format!("item {item} has an empty SID")));
            }
        }
        let token = |item: ItemId, tok: SidToken| {
            vocab.token_id(tok).ok_or_else(|| {
                Error::Invalid(format!("SID token {tok} of item {item} has no token id"))
            })
        };
        let n = index.len();
        let mut out = SortedPaths {
            stride: depth,
            tokens: Vec::with_capacity(n * depth),
            lens: Vec::with_capacity(n),
            ids: Vec::with_capacity(n),
        };
        if let Some(packing) = Packing::new(index, vocab, depth) {
            // Fast path: sort one integer key per item instead of comparing slices.
            let mut keys = Vec::with_capacity(n);
            for (item, sid) in index.iter() {
                let mut key = 0u64;
                for (l, tok) in sid.tokens().enumerate() {
                    let rank = packing.rank(l, tok.code).ok_or_else(|| {
                        Error::Invalid(format!("SID token {tok} of item {item} has no token id"))
                    })?;
                    key |= (rank as u64) << packing.shift[l];
                }
                keys.push((key, item));
            }
            // Keys of equal SIDs tie, and then the item id decides: item-id order in a leaf.
            keys.sort_unstable();
            for (key, item) in keys {
                let mut len = 0;
                for l in 0..depth {
                    let field = (key >> packing.shift[l]) as u32 & packing.mask[l];
                    if field == 0 {
                        break;
                    }
                    out.tokens.push(packing.tokens[l][field as usize - 1]);
                    len += 1;
                }
                out.tokens.resize(out.tokens.len() + depth - len, 0);
                out.lens.push(len as u8);
                out.ids.push(item);
            }
        } else {
            let mut paths = vec![0u32; n * depth];
            let mut lens = Vec::with_capacity(n);
            let mut ids = Vec::with_capacity(n);
            for (row, (item, sid)) in index.iter().enumerate() {
                for (l, tok) in sid.tokens().enumerate() {
                    paths[row * depth + l] = token(item, tok)?;
                }
                lens.push(sid.len());
                ids.push(item);
            }
            let path = |row: usize| &paths[row * depth..row * depth + lens[row]];
            let mut order: Vec<usize> = (0..n).collect();
            // Stable, and the index iterates by item id: item-id order among equal SIDs.
            order.sort_by(|&a, &b| path(a).cmp(path(b)));
            for row in order {
                out.tokens
                    .extend_from_slice(&paths[row * depth..(row + 1) * depth]);
                out.lens.push(lens[row] as u8);
                out.ids.push(ids[row]);
            }
        }
        Ok(out)
    }

    fn path(&self, row: usize) -> &[u32] {
        let start = row * self.stride;
        &self.tokens[start..start + self.lens[row] as usize]
    }
}

/// Packs a SID into a `u64` sort key: per level, a bit field holding 1 + the rank of the code's
/// token id among that level's token ids, and 0 past the SID's end so a prefix sorts first.
struct Packing {
    shift: Vec<u32>,
    mask: Vec<u32>,
    /// Per level, rank (1-based) of each code's token id; 0 for codes without one.
    rank_of_code: Vec<Vec<u32>>,
    /// Per level, token ids in rank order.
    tokens: Vec<Vec<u32>>,
}

impl Packing {
    /// None when the codes are too large for dense tables or the fields exceed 64 bits.
    fn new(index: &SidIndex, vocab: &SidVocab, depth: usize) -> Option<Self> {
        let sizes = index.codebook_sizes();
        let mut p = Packing {
            shift: Vec::with_capacity(depth),
            mask: Vec::with_capacity(depth),
            rank_of_code: Vec::with_capacity(depth),
            tokens: Vec::with_capacity(depth),
        };
        let mut used_bits = 0u32;
        for (l, &size) in sizes.iter().enumerate() {
            if size > DENSE_CODE_LIMIT {
                return None;
            }
            let mut by_token: Vec<(u32, u32)> = (0..size)
                .filter_map(|c| Some((vocab.token_id(SidToken::new(l, c))?, c)))
                .collect();
            by_token.sort_unstable();
            let mut rank_of_code = vec![0u32; size as usize];
            for (r, &(_, c)) in by_token.iter().enumerate() {
                rank_of_code[c as usize] = r as u32 + 1;
            }
            let bits = 32 - (by_token.len() as u32).leading_zeros();
            used_bits += bits;
            // No mapped token at a level: let the general path report the missing token.
            if bits == 0 || used_bits > 64 {
                return None;
            }
            // Level 0 takes the most significant bits.
            p.shift.push(64 - used_bits);
            p.mask.push(((1u64 << bits) - 1) as u32);
            p.rank_of_code.push(rank_of_code);
            p.tokens
                .push(by_token.into_iter().map(|(t, _)| t).collect());
        }
        Some(p)
    }

    fn rank(&self, level: usize, code: u32) -> Option<u32> {
        let r = *self.rank_of_code.get(level)?.get(code as usize)?;
        (r != 0).then_some(r)
    }
}

fn edge_range(offsets: &[u32], node: u32) -> Range<usize> {
    let n = node as usize;
    offsets[n] as usize..offsets[n + 1] as usize
}

fn prefix_sums(counts: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(counts.len() + 1);
    let mut acc = 0u32;
    out.push(0);
    for &c in counts {
        acc += c;
        out.push(acc);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(s: &str) -> Sid {
        s.parse().unwrap()
    }

    fn index(rows: &[(ItemId, &str)]) -> SidIndex {
        rows.iter().map(|&(i, s)| (i, sid(s))).collect()
    }

    #[test]
    fn item_spans_start_at_level_0_and_run_over_the_deeper_levels() {
        // Token id = 100 + 10·level + code; 7 and 8 are not SID tokens.
        let vocab = SidVocab::from_pairs((0..3u8).flat_map(|level| {
            (0..3u32).map(move |code| (SidToken { level, code }, 100 + 10 * level as u32 + code))
        }))
        .unwrap();
        // a0 b1 c2 | sep | a1 b0 | a2 (directly after) c1 | sep | b1 (no level 0: no item)
        let ids = [7, 100, 111, 122, 8, 101, 110, 102, 121, 7, 111];
        assert_eq!(vocab.item_spans(&ids), vec![(1, 4), (5, 7), (7, 9)]);
        assert!(vocab.item_spans(&[7, 8, 111]).is_empty());
    }

    #[test]
    fn empty_index_is_an_error() {
        let idx = SidIndex::new();
        let v = SidVocab::sequential(&idx, 10).unwrap();
        let err = SidTrie::build(&idx, &v).unwrap_err().to_string();
        assert!(err.contains("empty index"), "{err}");
    }

    #[test]
    fn small_trie_with_mixed_lengths_and_collisions() {
        let idx = index(&[
            (0, "<a_1><b_2><c_3>"),
            (1, "<a_1><b_2><c_3><d_0>"),
            (2, "<a_1><b_2><c_4>"),
            (3, "<a_0><b_2><c_3>"),
            (4, "<a_1><b_2><c_3>"),
        ]);
        let v = SidVocab::sequential(&idx, 100).unwrap();
        // Python string order: <a_0> <a_1> <b_2> <c_3> <c_4> <d_0>.
        assert_eq!(v.token_id(SidToken::new(0, 0)), Some(100));
        assert_eq!(v.token_id(SidToken::new(3, 0)), Some(105));
        let t = SidTrie::build(&idx, &v).unwrap();
        assert_eq!(t.num_levels(), 4);
        assert_eq!(t.num_items(), 5);
        assert_eq!(
            (0..=4).map(|d| t.num_nodes(d)).collect::<Vec<_>>(),
            [1, 2, 2, 3, 1]
        );
        assert_eq!(t.allowed(0, 0), &[100, 101]);
        assert_eq!(t.lookup(&sid("<a_1><b_2><c_3>")), Some(&[0, 4][..]));
        assert_eq!(t.lookup(&sid("<a_1><b_2><c_3><d_0>")), Some(&[1][..]));
        assert_eq!(t.lookup(&sid("<a_1><b_2>")), None);
        assert_eq!(t.lookup(&sid("<a_0><b_2><c_4>")), None);
        let n = t.walk_tokens(&[101, 102, 103]).unwrap();
        assert!(t.is_terminal(3, n));
        assert_eq!(t.allowed(3, n), &[105]);
        assert_eq!(t.max_children(0), 2);
        assert_eq!(t.max_children(2), 2);
        assert_eq!(t.max_children(4), 0);
        assert_eq!(t.level_tokens(2), &[103, 104]);
        assert_eq!(t.allowed_mask(2, 1), [true, true]);
        assert_eq!(t.allowed_mask(2, 0), [true, false]);
        assert_eq!(t.level_mask(2, 100).unwrap(), [true, false, true, true]);
        assert!(t.level_mask(2, 3).is_none());
        let paths: Vec<String> = t.paths().map(|(s, i)| format!("{s}{i:?}")).collect();
        assert_eq!(
            paths,
            [
                "<a_0><b_2><c_3>[3]",
                "<a_1><b_2><c_3>[0, 4]",
                "<a_1><b_2><c_3><d_0>[1]",
                "<a_1><b_2><c_4>[2]",
            ]
        );
    }

    #[test]
    fn vocab_rejects_conflicts_and_missing_tokens() {
        let a = SidToken::new(0, 1);
        let b = SidToken::new(1, 1);
        assert!(SidVocab::from_pairs([(a, 5), (b, 5)]).is_err());
        assert!(SidVocab::from_pairs([(a, 5), (a, 6)]).is_err());
        assert!(SidVocab::from_pairs([(a, 5), (a, 5)]).is_ok());
        let big = SidToken::new(25, 4_000_000);
        let v = SidVocab::from_pairs([(big, 200_000)]).unwrap();
        assert_eq!(v.token_id(big), Some(200_000));
        assert_eq!(v.token(200_000), Some(big));
        let idx = index(&[(0, "<a_1><b_1>")]);
        assert!(SidVocab::from_fn(&idx, |t| (t.level == 0).then_some(7)).is_err());
        let partial = SidVocab::from_pairs([(a, 5)]).unwrap();
        assert!(SidTrie::build(&idx, &partial).is_err());
    }

    #[test]
    fn deep_sids_and_large_codebooks() {
        // 26 levels of 4096 codes do not fit the packed sort key; 4 levels do. Both must work.
        for levels in [4usize, 26] {
            let idx: SidIndex = (0..500u32)
                .map(|i| {
                    let codes = (0..levels as u32)
                        .map(|l| (i * 7919 + l * 31) % 4096)
                        .collect();
                    (i, Sid::from_codes(codes))
                })
                .chain([(500, Sid::from_codes(vec![4095; levels]))])
                .collect();
            let v = SidVocab::sequential(&idx, 151_665).unwrap();
            let t = SidTrie::build(&idx, &v).unwrap();
            assert_eq!(t.num_levels(), levels);
            for (item, sid) in idx.iter() {
                assert_eq!(t.lookup(sid), Some(&[item][..]));
            }
            assert_eq!(t.paths().count(), 501);
        }
    }

    #[test]
    fn children_follow_token_ids_not_codes() {
        let idx = index(&[(0, "<a_1><b_0>"), (1, "<a_2><b_0>"), (2, "<a_3><b_0>")]);
        // Reverse the token order relative to the codes.
        let v = SidVocab::from_fn(&idx, |t| Some(1000 - 10 * t.level as u32 - t.code)).unwrap();
        let t = SidTrie::build(&idx, &v).unwrap();
        assert_eq!(t.allowed(0, 0), &[997, 998, 999]);
        assert_eq!(t.level_codes(0), &[3, 2, 1]);
        assert_eq!(t.lookup(&sid("<a_3><b_0>")), Some(&[2][..]));
        let order: Vec<ItemId> = t.paths().flat_map(|(_, i)| i.to_vec()).collect();
        assert_eq!(order, [2, 1, 0]);
    }
}
