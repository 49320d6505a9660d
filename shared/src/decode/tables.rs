//! The SID trie compiled into per-step transition tables that live on the compute device.
//!
//! Decoding runs in lock-step: step `s` chooses the token at SID depth `s`, and two more steps
//! write `\n` and EOS, as the reference's trie does (`SID`, `\n`, EOS). A beam's state at step
//! `s` is a trie node at depth `s`, or one of two extra states: `NL` (the SID ended with `\n`,
//! EOS comes next) and `DONE` (finished; it stays there at zero cost). SIDs of different lengths
//! therefore finish at different steps without leaving the lock-step.
//!
//! Each step's edges are stored CSR-style (`offsets`, then per edge: token, next state, slot
//! and whether it is scored), so a step gathers the candidates of every beam with a few
//! `index_select`s and never materialises a vocabulary-sized mask. Memory grows with the number
//! of trie edges, which is what lets the same code serve a million-item catalogue.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::sid::ItemId;
use crate::trie::SidTrie;

/// One decoding step's transition table, on the device, plus the host copies that exclusions
/// and result mapping need.
#[derive(Debug, Clone)]
pub(crate) struct StepTable {
    /// States that exist at this step (trie nodes at the depth, then `NL`, then `DONE`).
    pub num_states: usize,
    /// Largest out-degree of a state at this step.
    pub max_edges: usize,
    /// u32 `[num_states + 1]`.
    pub offsets: Tensor,
    /// u32 `[edges]` token id of each edge.
    pub tokens: Tensor,
    /// u32 `[edges]` state reached at the next step.
    pub next: Tensor,
    /// u32 `[edges]` slot of the edge's token in `level_tokens` (fast mode).
    pub slots: Tensor,
    /// f32 `[edges]`: 1 where the token's log-probability counts, 0 for `DONE`'s self loop.
    pub scored: Tensor,
    /// u32 `[level]`: the tokens fast mode normalises over at this step.
    pub level_tokens: Tensor,
    /// Host copy of `offsets`.
    pub host_offsets: Vec<u32>,
    /// Host map of each of `level_tokens` to its slot (where fast mode's copy gate adds its
    /// logit).
    pub host_level_slots: HashMap<u32, usize>,
}

/// The decoding automaton of one catalogue and tokenizer, on one device.
#[derive(Debug, Clone)]
pub struct DecodeTables {
    pub(crate) steps: Vec<StepTable>,
    pub(crate) newline_id: u32,
    pub(crate) eos_id: u32,
    device: Device,
    /// Number of SID levels (the longest SID).
    levels: usize,
    /// Per depth: first child node id (at depth + 1) of each trie node, to find a node's parent.
    child_start: Vec<Vec<u32>>,
    /// Per depth: number of children of each trie node.
    child_count: Vec<Vec<u32>>,
}

fn u32_tensor(v: Vec<u32>, device: &Device) -> Result<Tensor> {
    let n = v.len();
    Ok(Tensor::from_vec(v, n, device)?)
}

impl DecodeTables {
    /// Compile `trie` for a tokenizer whose `\n` and EOS tokens are `newline_id` / `eos_id`.
    pub fn new(trie: &SidTrie, newline_id: u32, eos_id: u32, device: &Device) -> Result<Self> {
        let levels = trie.num_levels();
        let mut steps = Vec::with_capacity(levels + 2);
        let mut child_start = Vec::with_capacity(levels + 1);
        let mut child_count = Vec::with_capacity(levels + 1);
        // States at step s: trie nodes at depth s (none past the deepest level), NL, DONE.
        let trie_states = |s: usize| if s <= levels { trie.num_nodes(s) } else { 0 };
        for s in 0..levels + 2 {
            let n_trie = trie_states(s);
            let n_next = trie_states(s + 1);
            let (nl_next, done_next) = (n_next as u32, n_next as u32 + 1);
            let mut level_tokens = trie.step_tokens(s, newline_id);
            // Only the edges of terminal nodes use it, and then `\n` is the step's last token.
            let newline_slot = level_tokens.len().saturating_sub(1) as u32;
            let mut offsets = Vec::with_capacity(n_trie + 3);
            let (mut tokens, mut next, mut slots, mut scored) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let mut starts = Vec::with_capacity(n_trie);
            let mut counts = Vec::with_capacity(n_trie);
            offsets.push(0u32);
            for u in 0..n_trie as u32 {
                let (toks, range) = if s < levels {
                    trie.children(s, u)
                } else {
                    (&[][..], 0..0)
                };
                let terminal = trie.is_terminal(s, u);
                if toks.is_empty() && !terminal {
                    return Err(Error::Invalid(format!(
                        "SID trie node {u} at depth {s} has neither children nor items"
                    )));
                }
                starts.push(range.start);
                counts.push(toks.len() as u32);
                let slots_u = if s < levels {
                    trie.allowed_slots(s, u)
                } else {
                    &[][..]
                };
                for ((&t, child), &slot) in toks.iter().zip(range).zip(slots_u) {
                    tokens.push(t);
                    next.push(child);
                    slots.push(slot);
                    scored.push(1f32);
                }
                if terminal {
                    tokens.push(newline_id);
                    next.push(nl_next);
                    slots.push(newline_slot);
                    scored.push(1f32);
                }
                offsets.push(tokens.len() as u32);
            }
            // NL: EOS is forced but its log-probability counts (as the reference's score does).
            tokens.push(eos_id);
            next.push(done_next);
            slots.push(0);
            scored.push(1f32);
            offsets.push(tokens.len() as u32);
            // DONE: stays finished at no cost.
            tokens.push(eos_id);
            next.push(done_next);
            slots.push(0);
            scored.push(0f32);
            offsets.push(tokens.len() as u32);
            let max_edges = offsets
                .windows(2)
                .map(|w| (w[1] - w[0]) as usize)
                .max()
                .unwrap_or(1);
            if level_tokens.is_empty() {
                // Fast mode never scores these steps; keep the tensor non-empty for uniformity.
                level_tokens.push(eos_id);
            }
            let n_edges = scored.len();
            let host_level_slots = level_tokens
                .iter()
                .enumerate()
                .map(|(slot, &t)| (t, slot))
                .collect();
            steps.push(StepTable {
                num_states: n_trie + 2,
                max_edges,
                offsets: u32_tensor(offsets.clone(), device)?,
                tokens: u32_tensor(tokens, device)?,
                next: u32_tensor(next, device)?,
                slots: u32_tensor(slots, device)?,
                scored: Tensor::from_vec(scored, n_edges, device)?,
                level_tokens: u32_tensor(level_tokens, device)?,
                host_offsets: offsets,
                host_level_slots,
            });
            if s <= levels {
                child_start.push(starts);
                child_count.push(counts);
            }
        }
        Ok(Self {
            steps,
            newline_id,
            eos_id,
            device: device.clone(),
            levels,
            child_start,
            child_count,
        })
    }

    /// Number of lock-step decoding steps (SID levels + `\n` + EOS).
    pub fn num_steps(&self) -> usize {
        self.steps.len()
    }

    /// Number of SID levels.
    pub fn levels(&self) -> usize {
        self.levels
    }

    /// The device the tables live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Bytes the tables occupy on the device.
    pub fn device_bytes(&self) -> usize {
        self.steps
            .iter()
            .map(|t| {
                [
                    &t.offsets,
                    &t.tokens,
                    &t.next,
                    &t.slots,
                    &t.scored,
                    &t.level_tokens,
                ]
                .iter()
                .map(|x| x.elem_count() * x.dtype().size_in_bytes())
                .sum::<usize>()
            })
            .sum()
    }

    /// The (step, edge) whose choice finishes the SID ending at trie node `node` of `depth`:
    /// the edge into a pure leaf, or the `\n` edge of a node that also has children.
    pub(crate) fn finishing_edge(
        &self,
        trie: &SidTrie,
        depth: usize,
        node: u32,
    ) -> Option<(usize, u32)> {
        if !trie.is_terminal(depth, node) {
            return None;
        }
        let own_children = self.child_count[depth][node as usize];
        if own_children > 0 || depth == 0 {
            let start = self.steps[depth].host_offsets[node as usize];
            return Some((depth, start + own_children));
        }
        // Children are numbered contiguously in parent order: the parent is the last node
        // whose first child is at or before `node`, among nodes that have children.
        let starts = &self.child_start[depth - 1];
        let counts = &self.child_count[depth - 1];
        let mut p = starts.partition_point(|&c| c <= node);
        while p > 0 {
            p -= 1;
            if counts[p] > 0 && starts[p] <= node && node < starts[p] + counts[p] {
                let edge = self.steps[depth - 1].host_offsets[p] + (node - starts[p]);
                return Some((depth - 1, edge));
            }
            if counts[p] > 0 {
                break;
            }
        }
        None
    }

    /// Per step, the edges to forbid so that none of `items` is recommended. A SID shared by
    /// several items is forbidden only when all of them are excluded.
    pub(crate) fn exclusion_edges(
        &self,
        trie: &SidTrie,
        sids_of: impl Fn(ItemId) -> Option<Vec<u32>>,
        items: &[ItemId],
    ) -> Vec<Vec<u32>> {
        let mut per_step = vec![Vec::new(); self.steps.len()];
        let excluded: std::collections::HashSet<ItemId> = items.iter().copied().collect();
        for &item in items {
            let Some(tokens) = sids_of(item) else {
                continue;
            };
            let Some(node) = trie.walk_tokens(&tokens) else {
                continue;
            };
            let depth = tokens.len();
            if !trie.items(depth, node).iter().all(|i| excluded.contains(i)) {
                continue;
            }
            if let Some((step, edge)) = self.finishing_edge(trie, depth, node) {
                if !per_step[step].contains(&edge) {
                    per_step[step].push(edge);
                }
            }
        }
        per_step
    }

    /// Tensor of the excluded edges of each prompt at one step: u32 `[B, E]`, padded with an
    /// id no edge has (`u32::MAX`); `None` when no prompt excludes anything at this step.
    pub(crate) fn exclusion_tensor(&self, per_prompt: &[&[u32]]) -> Result<Option<Tensor>> {
        let width = per_prompt.iter().map(|v| v.len()).max().unwrap_or(0);
        if width == 0 {
            return Ok(None);
        }
        let mut data = Vec::with_capacity(per_prompt.len() * width);
        for v in per_prompt {
            data.extend_from_slice(v);
            data.extend(std::iter::repeat_n(u32::MAX, width - v.len()));
        }
        Ok(Some(Tensor::from_vec(
            data,
            (per_prompt.len(), width),
            &self.device,
        )?))
    }
}

/// `[rows]` u32 states → candidate edges `[rows, max_edges]` (u32, clamped to valid ids) and a
/// validity mask `[rows, max_edges]` (u8).
pub(crate) fn candidate_edges(table: &StepTable, states: &Tensor) -> Result<(Tensor, Tensor)> {
    let device = states.device();
    let rows = states.dims1()?;
    let m = table.max_edges;
    let start = table.offsets.index_select(states, 0)?;
    let end = table
        .offsets
        .narrow(0, 1, table.num_states)?
        .index_select(states, 0)?;
    let arange = Tensor::arange(0u32, m as u32, device)?.reshape((1, m))?;
    let cand = start.reshape((rows, 1))?.broadcast_add(&arange)?;
    let valid = cand.broadcast_lt(&end.reshape((rows, 1))?)?;
    // Invalid slots point at the state's first edge so that gathers stay in bounds.
    let cand = valid.where_cond(&cand, &start.reshape((rows, 1))?.broadcast_as((rows, m))?)?;
    Ok((cand, valid))
}

/// A scalar `-inf` tensor broadcastable to `shape`.
pub(crate) fn neg_inf(shape: &[usize], device: &Device) -> Result<Tensor> {
    Ok(Tensor::new(f32::NEG_INFINITY, device)?
        .to_dtype(DType::F32)?
        .broadcast_as(shape)?)
}
