//! Batched, trie-constrained beam search and constrained sampling.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, D};
use serde::{Deserialize, Serialize};

use super::mixture::{Mixture, Pool};
use super::tables::{candidate_edges, neg_inf, DecodeTables};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::model::copy_gate::{self, CopyTarget};
use crate::model::kernels::log_sum_exp_rows;
use crate::model::{BeamCache, PromptCache, Qwen2};
use crate::sid::{ItemId, Sid, SidIndex};
use crate::trie::{SidTrie, SidVocab};

/// How a candidate token is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScoreMode {
    /// Full-vocabulary log-softmax, `\n` and EOS steps included: the reference's beam scores.
    #[default]
    Exact,
    /// Log-softmax over the tokens of the current SID level only; `\n`/EOS steps are skipped.
    Fast,
}

impl fmt::Display for ScoreMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScoreMode::Exact => "exact",
            ScoreMode::Fast => "fast",
        })
    }
}

impl FromStr for ScoreMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "exact" => Ok(ScoreMode::Exact),
            "fast" => Ok(ScoreMode::Fast),
            _ => Err(Error::Invalid(format!(
                "unknown score mode `{s}` (expected exact or fast)"
            ))),
        }
    }
}

/// One prompt to decode.
#[derive(Debug, Clone, Copy)]
pub struct DecodeRequest<'a> {
    /// Prompt token ids (unpadded).
    pub prompt: &'a [u32],
    /// Items that must not be returned.
    pub exclude: &'a [ItemId],
}

/// Beam-search settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchConfig {
    /// Beams kept per prompt.
    pub num_beams: usize,
    /// Hypotheses returned per prompt (≤ `num_beams`).
    pub top_k: usize,
    /// Scoring.
    pub mode: ScoreMode,
}

/// One decoded SID with the items it names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hypothesis {
    /// The SID written.
    pub sid: Sid,
    /// Catalogue items with this SID (several under a collision), in id order.
    pub items: Vec<ItemId>,
    /// Sum of the scored tokens' log-probabilities.
    pub score: f32,
}

/// Constrained decoding for one catalogue: the trie on the host for mapping results back, and
/// its transition tables on the compute device.
#[derive(Debug, Clone)]
pub struct Decoder {
    trie: Arc<SidTrie>,
    vocab: SidVocab,
    index: Arc<SidIndex>,
    tables: DecodeTables,
}

impl Decoder {
    /// Compile the decoder of `index` for a tokenizer with the given SID/`\n`/EOS token ids.
    pub fn new(
        index: Arc<SidIndex>,
        vocab: SidVocab,
        newline_id: u32,
        eos_id: u32,
        device: &Device,
    ) -> Result<Self> {
        let trie = Arc::new(SidTrie::build(&index, &vocab)?);
        let tables = DecodeTables::new(&trie, newline_id, eos_id, device)?;
        Ok(Self {
            trie,
            vocab,
            index,
            tables,
        })
    }

    /// The decoder of a checkpoint's catalogue (its SID index) and tokenizer, on `device`: what
    /// `eval`, training validation, GRPO rollouts and the server decode with.
    pub fn for_checkpoint(ck: &Checkpoint, device: &Device) -> Result<Self> {
        Self::new(
            ck.index.clone(),
            ck.tokenizer.sid_vocab().clone(),
            ck.tokenizer.newline_id(),
            ck.tokenizer.eos_id(),
            device,
        )
    }

    /// The compiled trie.
    pub fn trie(&self) -> &SidTrie {
        &self.trie
    }

    /// The device tables.
    pub fn tables(&self) -> &DecodeTables {
        &self.tables
    }

    /// Token ids of an item's SID.
    pub fn item_tokens(&self, item: ItemId) -> Option<Vec<u32>> {
        let sid = self.index.get(item)?;
        sid.tokens().map(|t| self.vocab.token_id(t)).collect()
    }

    /// Left-pad prompts with EOS into a `[B, P]` u32 tensor; returns it and the lengths.
    fn pad_prompts(
        &self,
        reqs: &[DecodeRequest<'_>],
        device: &Device,
    ) -> Result<(Tensor, Vec<usize>)> {
        let lengths: Vec<usize> = reqs.iter().map(|r| r.prompt.len()).collect();
        if let Some(i) = lengths.iter().position(|&n| n == 0) {
            return Err(Error::Invalid(format!("prompt {i} is empty")));
        }
        let p = lengths.iter().copied().max().unwrap_or(0);
        let mut data = Vec::with_capacity(reqs.len() * p);
        for r in reqs {
            data.extend(std::iter::repeat_n(self.tables.eos_id, p - r.prompt.len()));
            data.extend_from_slice(r.prompt);
        }
        Ok((Tensor::from_vec(data, (reqs.len(), p), device)?, lengths))
    }

    /// Per step, the excluded edges of each prompt.
    fn exclusions(&self, reqs: &[DecodeRequest<'_>]) -> Vec<Vec<Vec<u32>>> {
        reqs.iter()
            .map(|r| {
                if r.exclude.is_empty() {
                    vec![Vec::new(); self.tables.num_steps()]
                } else {
                    self.tables
                        .exclusion_edges(&self.trie, |i| self.item_tokens(i), r.exclude)
                }
            })
            .collect()
    }

    /// u8 `[rows, max_edges]`: 1 where a candidate edge is excluded for its prompt at `step`;
    /// `None` when no prompt excludes anything there. Rows are grouped by prompt (`b` prompts).
    fn excluded(
        &self,
        exclusions: &[Vec<Vec<u32>>],
        step: usize,
        cand: &Tensor,
        b: usize,
    ) -> Result<Option<Tensor>> {
        let per_prompt: Vec<&[u32]> = exclusions.iter().map(|e| e[step].as_slice()).collect();
        let Some(ex) = self.tables.exclusion_tensor(&per_prompt)? else {
            return Ok(None);
        };
        let (rows, m) = cand.dims2()?;
        let e = ex.dim(1)?;
        let hit = cand
            .reshape((b, rows / b * m, 1))?
            .broadcast_eq(&ex.reshape((b, 1, e))?)?
            .max(D::Minus1)?
            .reshape((rows, m))?;
        Ok(Some(hit))
    }

    /// Log-probabilities `[rows, max_edges]` of each row's candidate edges at `step`.
    #[allow(clippy::too_many_arguments)]
    fn candidate_logp(
        &self,
        model: &Qwen2,
        hidden: &Tensor,
        step: usize,
        cand: &Tensor,
        mode: ScoreMode,
        copies: &[Option<CopyTarget>],
    ) -> Result<Tensor> {
        let table = &self.tables.steps[step];
        let (rows, m) = cand.dims2()?;
        let flat = cand.flatten_all()?;
        let logp = match mode {
            ScoreMode::Exact => {
                let tok = table.tokens.index_select(&flat, 0)?.reshape((rows, m))?;
                // In blocks of rows, so that the full-vocabulary logits of a large batch stay
                // a few MB (cache-sized, reused) instead of one buffer of rows × vocabulary.
                let blocks = (0..rows)
                    .step_by(EXACT_BLOCK_ROWS)
                    .map(|start| {
                        let n = EXACT_BLOCK_ROWS.min(rows - start);
                        let h = hidden.narrow(0, start, n)?;
                        let logits = model.logits(&h)?;
                        let logits = if copies.is_empty() {
                            logits
                        } else {
                            model.with_copy_logits(&logits, &h, &copies[start..start + n])?
                        };
                        let lse = log_sum_exp_rows(&logits)?;
                        Ok(logits
                            .gather(&tok.narrow(0, start, n)?, 1)?
                            .broadcast_sub(&lse)?)
                    })
                    .collect::<Result<Vec<_>>>()?;
                Tensor::cat(&blocks, 0)?
            }
            ScoreMode::Fast => {
                let logits = model.logits_for(hidden, &table.level_tokens)?;
                let logits = if copies.is_empty() {
                    logits
                } else {
                    model.with_copy_logits_for(&logits, hidden, copies, |t| {
                        table.host_level_slots.get(&t).copied()
                    })?
                };
                let lse = log_sum_exp_rows(&logits)?;
                let slot = table.slots.index_select(&flat, 0)?.reshape((rows, m))?;
                logits.gather(&slot, 1)?.broadcast_sub(&lse)?
            }
        };
        let scored = table.scored.index_select(&flat, 0)?.reshape((rows, m))?;
        Ok((logp * scored)?)
    }

    /// [`Self::candidate_logp`] of every row. At step 0 all rows of a prompt sit at the root
    /// with the prompt's hidden state (`hidden`: `[B, hidden]`), so each prompt is scored once
    /// and the result repeated for its rows (`owner`: `[rows]`, the prompt of each row) instead
    /// of projecting `rows` identical hidden states (a full-vocabulary lm_head in exact mode).
    #[allow(clippy::too_many_arguments)]
    fn step_logp(
        &self,
        model: &Qwen2,
        hidden: &Tensor,
        step: usize,
        cand: &Tensor,
        mode: ScoreMode,
        b: usize,
        owner: &Tensor,
        copies: &[Option<CopyTarget>],
    ) -> Result<Tensor> {
        if step > 0 {
            return self.candidate_logp(model, hidden, step, cand, mode, copies);
        }
        // Every row is at the root state, so any `b` rows hold the root's candidates.
        let root = cand.narrow(0, 0, b)?;
        let logp = self.candidate_logp(model, hidden, step, &root, mode, copies)?;
        Ok(logp.index_select(owner, 0)?)
    }

    /// Each prompt's last history SID, for the copy gate; empty when no model has one.
    fn last_sids(&self, models: &[&Qwen2], reqs: &[DecodeRequest<'_>]) -> Vec<Option<Vec<u32>>> {
        let Some(gated) = models.iter().find(|m| m.has_copy_gate()) else {
            return Vec::new();
        };
        let prompts: Vec<&[u32]> = reqs.iter().map(|r| r.prompt).collect();
        copy_gate::last_sids(gated.item_lookup(), &prompts)
    }

    /// The copy targets of the rows `step` scores (one per prompt at step 0, one per row
    /// after), from the tokens the rows have written so far (`history`: `[rows, step]`); empty
    /// when no model has a copy gate.
    fn step_copies(
        &self,
        last_sids: &[Option<Vec<u32>>],
        history: Option<&Tensor>,
        step: usize,
        per_prompt: usize,
    ) -> Result<Vec<Option<CopyTarget>>> {
        if last_sids.is_empty() {
            return Ok(Vec::new());
        }
        let prefixes = match (step, history) {
            (0, _) | (_, None) => Vec::new(),
            (_, Some(h)) => h.to_vec2::<u32>()?,
        };
        Ok(copy_gate::step_copies(
            last_sids, &prefixes, step, per_prompt,
        ))
    }

    /// Steps that need the model's scores in `mode`.
    fn steps_to_run(&self, mode: ScoreMode) -> usize {
        match mode {
            ScoreMode::Exact => self.tables.num_steps(),
            // After the last SID level only `\n`/EOS remain, which fast mode does not score.
            ScoreMode::Fast => self.tables.levels(),
        }
    }

    /// Beam search for a batch of prompts; returns each prompt's best hypotheses, best first.
    pub fn beam_search(
        &self,
        model: &Qwen2,
        reqs: &[DecodeRequest<'_>],
        cfg: &SearchConfig,
    ) -> Result<Vec<Vec<Hypothesis>>> {
        self.beam_search_ensemble(&Mixture::equal(vec![model])?, reqs, cfg)
    }

    /// Beam search scored by an ensemble: at every step each candidate token's score combines
    /// the members' log-probabilities by the mixture's [`Pool`] (the log of their weighted mean
    /// probability, or their weighted mean log-probability). Every member runs its own prefill
    /// and KV caches over the same prompts and beams, so the members must share the tokenizer;
    /// one member is exactly [`Self::beam_search`]. Item-free twins
    /// ([`Mixture::with_item_free_twins`]) score the first step only, from their prefill.
    pub fn beam_search_ensemble(
        &self,
        mixture: &Mixture<'_>,
        reqs: &[DecodeRequest<'_>],
        cfg: &SearchConfig,
    ) -> Result<Vec<Vec<Hypothesis>>> {
        if reqs.is_empty() {
            return Ok(Vec::new());
        }
        if cfg.num_beams == 0 || cfg.top_k == 0 || cfg.top_k > cfg.num_beams {
            return Err(Error::Invalid(format!(
                "need 1 <= top_k ({}) <= num_beams ({})",
                cfg.top_k, cfg.num_beams
            )));
        }
        let device = self.tables.device().clone();
        let (b, nb) = (reqs.len(), cfg.num_beams);
        let rows = b * nb;
        let (ids, lengths) = self.pad_prompts(reqs, &device)?;
        let mut members = mixture
            .models()
            .iter()
            .zip(mixture.weights())
            .map(|(&model, &weight)| {
                // `[B, hidden]` at step 0 (every beam of a prompt is at the root with the
                // prompt's hidden state), `[rows, hidden]` afterwards.
                let (hidden, prompt_cache) = model.prefill_hidden(&ids, &lengths)?;
                Ok(MemberState {
                    model,
                    weight,
                    hidden,
                    prompt_cache,
                    beam_cache: BeamCache::new(model.num_layers()),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let owner: Vec<u32> = (0..rows).map(|r| (r / nb) as u32).collect();
        let owner = Tensor::from_vec(owner, rows, &device)?;
        let last_sids = self.last_sids(mixture.models(), reqs);
        let mut states = Tensor::zeros(rows, DType::U32, &device)?;
        // Only beam 0 of each prompt is live at first, as in HuggingFace's beam search.
        let init: Vec<f32> = (0..rows)
            .map(|r| if r % nb == 0 { 0.0 } else { f32::NEG_INFINITY })
            .collect();
        let mut scores = Tensor::from_vec(init, rows, &device)?;
        let mut history: Option<Tensor> = None;
        let exclusions = self.exclusions(reqs);
        let row_base = Tensor::arange(0u32, b as u32, &device)?
            .affine(nb as f64, 0.0)?
            .reshape((b, 1))?;
        let run = self.steps_to_run(cfg.mode);
        for step in 0..run {
            let table = &self.tables.steps[step];
            let (cand, valid) = candidate_edges(table, &states)?;
            let m = table.max_edges;
            let copies = self.step_copies(&last_sids, history.as_ref(), step, nb)?;
            let logp = self.ensemble_logp(
                &members,
                mixture.pool(),
                step,
                &cand,
                cfg.mode,
                b,
                &owner,
                &copies,
            )?;
            let mut cand_scores = scores.reshape((rows, 1))?.broadcast_add(&logp)?;
            let ninf = neg_inf(&[rows, m], &device)?;
            cand_scores = valid.where_cond(&cand_scores, &ninf)?;
            if let Some(hit) = self.excluded(&exclusions, step, &cand, b)? {
                cand_scores = hit.where_cond(&ninf, &cand_scores)?;
            }
            let (flat_choice, parent, new_scores) = select_top(&cand_scores, b, nb, &row_base)?;
            let edge = cand.flatten_all()?.index_select(&flat_choice, 0)?;
            states = table.next.index_select(&edge, 0)?;
            let tokens = table.tokens.index_select(&edge, 0)?;
            scores = new_scores;
            if step == 0 && mixture.twins() > 0 {
                // Item-free twins score the first level only: they need no beam steps.
                members.truncate(members.len() - mixture.twins());
                for (s, w) in members.iter_mut().zip(mixture.later_weights()) {
                    s.weight = w;
                }
            }
            history = Some(match history {
                None => tokens.reshape((rows, 1))?,
                Some(h) => Tensor::cat(
                    &[&h.index_select(&parent, 0)?, &tokens.reshape((rows, 1))?],
                    1,
                )?,
            });
            if step + 1 < run {
                for s in &mut members {
                    if step > 0 {
                        s.beam_cache.reorder(&parent)?;
                    }
                    s.hidden = s.model.decode_step_hidden(
                        &tokens,
                        &s.prompt_cache,
                        &mut s.beam_cache,
                        nb,
                    )?;
                }
            }
        }
        let history = history.ok_or_else(|| Error::Invalid("the trie has no levels".into()))?;
        self.collect(&history, &scores, b, nb, cfg.top_k)
    }

    /// [`Self::step_logp`] of an ensemble, the members combined by `pool`: `log(Σ_k w_k p_k)`
    /// (computed from the largest member log-probability so that no probability underflows) or
    /// `Σ_k w_k log p_k`.
    #[allow(clippy::too_many_arguments)]
    fn ensemble_logp(
        &self,
        members: &[MemberState<'_>],
        pool: Pool,
        step: usize,
        cand: &Tensor,
        mode: ScoreMode,
        b: usize,
        owner: &Tensor,
        copies: &[Option<CopyTarget>],
    ) -> Result<Tensor> {
        let per_member = members
            .iter()
            .map(|s| self.step_logp(s.model, &s.hidden, step, cand, mode, b, owner, copies))
            .collect::<Result<Vec<_>>>()?;
        if let [single] = per_member.as_slice() {
            return Ok(single.clone());
        }
        let all = Tensor::stack(&per_member, 0)?;
        if pool == Pool::Product {
            let w: Vec<f32> = members.iter().map(|m| m.weight as f32).collect();
            let w = Tensor::from_vec(w, (members.len(), 1, 1), all.device())?;
            return Ok(all.broadcast_mul(&w)?.sum(0)?);
        }
        let top = all.max_keepdim(0)?;
        let rel = all.broadcast_sub(&top)?.exp()?;
        let mean = if members.iter().all(|m| m.weight == members[0].weight) {
            // The plain mean, as equal weights have always been decoded.
            rel.mean_keepdim(0)?
        } else {
            let w: Vec<f32> = members.iter().map(|m| m.weight as f32).collect();
            let w = Tensor::from_vec(w, (members.len(), 1, 1), all.device())?;
            rel.broadcast_mul(&w)?.sum_keepdim(0)?
        };
        Ok((mean.log()? + top)?.squeeze(0)?)
    }

    /// Draw `num_samples` constrained samples per prompt at `temperature` (each row independent;
    /// scores are the untempered log-probabilities). Same masks as beam search.
    pub fn sample(
        &self,
        model: &Qwen2,
        reqs: &[DecodeRequest<'_>],
        num_samples: usize,
        temperature: f64,
        mode: ScoreMode,
    ) -> Result<Vec<Vec<Hypothesis>>> {
        if reqs.is_empty() {
            return Ok(Vec::new());
        }
        if num_samples == 0 || temperature <= 0.0 || !temperature.is_finite() {
            return Err(Error::Invalid(format!(
                "need num_samples >= 1 and temperature > 0 (got {num_samples}, {temperature})"
            )));
        }
        let device = self.tables.device().clone();
        let (b, ns) = (reqs.len(), num_samples);
        let rows = b * ns;
        let (ids, lengths) = self.pad_prompts(reqs, &device)?;
        let (hidden0, prompt_cache) = model.prefill_hidden(&ids, &lengths)?;
        let last_sids = self.last_sids(&[model], reqs);
        let owner: Vec<u32> = (0..rows).map(|r| (r / ns) as u32).collect();
        let owner = Tensor::from_vec(owner, rows, &device)?;
        // `[B, hidden]` at step 0, `[rows, hidden]` afterwards (see `beam_search`).
        let mut hidden = hidden0;
        let mut states = Tensor::zeros(rows, DType::U32, &device)?;
        let mut scores = Tensor::zeros(rows, DType::F32, &device)?;
        let mut history: Option<Tensor> = None;
        let mut beam_cache = BeamCache::new(model.num_layers());
        let exclusions = self.exclusions(reqs);
        let run = self.steps_to_run(mode);
        let rows_arange = Tensor::arange(0u32, rows as u32, &device)?;
        for step in 0..run {
            let table = &self.tables.steps[step];
            let (cand, valid) = candidate_edges(table, &states)?;
            let m = table.max_edges;
            let copies = self.step_copies(&last_sids, history.as_ref(), step, ns)?;
            let logp = self.step_logp(model, &hidden, step, &cand, mode, b, &owner, &copies)?;
            let ninf = neg_inf(&[rows, m], &device)?;
            let mut allowed = valid.clone();
            if let Some(hit) = self.excluded(&exclusions, step, &cand, b)? {
                allowed = hit.where_cond(&Tensor::zeros_like(&valid)?, &valid)?;
            }
            // Gumbel-max: argmax(logp / T + G) is a draw from softmax(logp / T) over the allowed.
            let u = Tensor::rand(1e-10f32, 1.0, (rows, m), &device)?;
            let gumbel = u.log()?.neg()?.log()?.neg()?;
            let keyed = ((&logp / temperature)? + gumbel)?;
            let keyed = allowed.where_cond(&keyed, &ninf)?;
            let choice = keyed.argmax(D::Minus1)?.to_dtype(DType::U32)?;
            let flat_choice = (rows_arange.affine(m as f64, 0.0)? + &choice)?;
            let edge = cand.flatten_all()?.index_select(&flat_choice, 0)?;
            let picked = logp.flatten_all()?.index_select(&flat_choice, 0)?;
            scores = (scores + picked)?;
            states = table.next.index_select(&edge, 0)?;
            let tokens = table.tokens.index_select(&edge, 0)?;
            history = Some(match history {
                None => tokens.reshape((rows, 1))?,
                Some(h) => Tensor::cat(&[&h, &tokens.reshape((rows, 1))?], 1)?,
            });
            if step + 1 < run {
                hidden = model.decode_step_hidden(&tokens, &prompt_cache, &mut beam_cache, ns)?;
            }
        }
        let history = history.ok_or_else(|| Error::Invalid("the trie has no levels".into()))?;
        let mut out = self.collect(&history, &scores, b, ns, ns)?;
        // Samples keep draw order; a fully excluded catalogue leaves rows with no valid draw.
        for hyps in &mut out {
            hyps.retain(|h| h.score.is_finite());
        }
        Ok(out)
    }

    /// Read back the first `k` rows of each prompt and map their tokens to SIDs and items.
    fn collect(
        &self,
        history: &Tensor,
        scores: &Tensor,
        b: usize,
        per_prompt: usize,
        k: usize,
    ) -> Result<Vec<Vec<Hypothesis>>> {
        let device = history.device();
        let rows: Vec<u32> = (0..b)
            .flat_map(|p| (0..k).map(move |j| (p * per_prompt + j) as u32))
            .collect();
        let n = rows.len();
        let rows = Tensor::from_vec(rows, n, device)?;
        // The only device → host transfer of the search: k rows per prompt.
        let toks = history.index_select(&rows, 0)?.to_vec2::<u32>()?;
        let sc = scores.index_select(&rows, 0)?.to_vec1::<f32>()?;
        let mut out = Vec::with_capacity(b);
        for p in 0..b {
            let mut hyps = Vec::with_capacity(k);
            for j in 0..k {
                let i = p * k + j;
                if !sc[i].is_finite() {
                    continue; // fewer valid SIDs than beams
                }
                let sid_tokens: Vec<u32> = toks[i]
                    .iter()
                    .copied()
                    .take_while(|&t| t != self.tables.newline_id && t != self.tables.eos_id)
                    .collect();
                let codes: Option<Vec<u32>> = sid_tokens
                    .iter()
                    .map(|&t| self.vocab.token(t).map(|tok| tok.code))
                    .collect();
                let items = self.trie.lookup_tokens(&sid_tokens);
                match (codes, items) {
                    (Some(codes), Some(items)) if !items.is_empty() => hyps.push(Hypothesis {
                        sid: Sid::from_codes(codes),
                        items: items.to_vec(),
                        score: sc[i],
                    }),
                    _ => {
                        return Err(Error::Invalid(format!(
                            "decoding left the trie with tokens {sid_tokens:?}: this is a bug"
                        )))
                    }
                }
            }
            out.push(hyps);
        }
        Ok(out)
    }
}

/// One ensemble member's running state in a search: its weight, hidden states and KV caches.
struct MemberState<'m> {
    model: &'m Qwen2,
    /// Its share of the token mixture.
    weight: f64,
    hidden: Tensor,
    prompt_cache: PromptCache,
    beam_cache: BeamCache,
}

/// Rows of beams whose full-vocabulary logits exact mode computes at once.
const EXACT_BLOCK_ROWS: usize = 256;

/// Keep the best `nb` candidates of each prompt. `cand_scores` is `[B * nb, m]`.
/// Returns the flat candidate index `[B * nb]` (into `rows * m`), the parent row of each new
/// beam, and the new beam scores, best first within each prompt.
///
/// Two stages keep every sort short (each row's best `nb`, then the prompt's best of those
/// `nb * nb`): CUDA's `arg_sort` cannot sort rows longer than 8192 columns.
fn select_top(
    cand_scores: &Tensor,
    b: usize,
    nb: usize,
    row_base: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let device = cand_scores.device();
    let (rows, m) = cand_scores.dims2()?;
    let k1 = nb.min(m);
    let idx1 = cand_scores
        .arg_sort_last_dim(false)?
        .narrow(1, 0, k1)?
        .contiguous()?;
    let s1 = cand_scores.gather(&idx1, 1)?;
    let s2 = s1.reshape((b, nb * k1))?;
    let idx2 = s2
        .arg_sort_last_dim(false)?
        .narrow(1, 0, nb)?
        .contiguous()?;
    let new_scores = s2.gather(&idx2, 1)?.reshape(rows)?;
    let k1_t = Tensor::new(k1 as u32, device)?;
    let local_beam = idx2.broadcast_div(&k1_t)?;
    let pos = (&idx2 - local_beam.broadcast_mul(&k1_t)?)?;
    let parent = local_beam.broadcast_add(row_base)?.reshape(rows)?;
    let first_stage = (parent.broadcast_mul(&k1_t)? + pos.reshape(rows)?)?;
    let choice = idx1.flatten_all()?.index_select(&first_stage, 0)?;
    let m_t = Tensor::new(m as u32, device)?;
    let flat_choice = (parent.broadcast_mul(&m_t)? + choice)?;
    Ok((flat_choice, parent, new_scores))
}
