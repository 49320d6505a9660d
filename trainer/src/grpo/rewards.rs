//! GRPO rewards (MINIONEREC.md §6.1) and group-normalised advantages (§6.2).
//!
//! Every group is one prompt's `G` completions in rollout order (beam rank for beam rollouts),
//! scored against that example's own target item. The reference looks targets up through global
//! string-keyed dicts, so identical histories with different targets share one target; here each
//! example carries its target, so that cannot happen.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use sidrec::ItemId;

use crate::error::{Result, TrainerError};

/// A collaborative-filtering model that scores candidate items given a user's history
/// (the reference uses the raw logit of a SASRec model).
pub trait CfScorer: Send + Sync {
    /// One score per candidate, in order, for a history of item ids (oldest first).
    fn score_candidates(
        &self,
        history_item_ids: &[String],
        candidate_item_ids: &[String],
    ) -> Result<Vec<f32>>;
}

/// One reward function of `--reward`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RewardKind {
    /// 1 if the completion is the target SID, else 0.
    Rule,
    /// `rule` plus the rank-aware penalty (the reference's default `ranking`).
    Ranking,
    /// The rank-aware penalty alone.
    RankingOnly,
    /// Cosine similarity of the target's and the completion's item embeddings.
    Semantic,
    /// A collaborative-filtering score of the completion given the history.
    Cf,
    /// Hierarchical prefix match of the SID tokens (0.2 / 0.5 / 1.0, [`hepo_rewards`]).
    Hepo,
}

impl RewardKind {
    /// Every kind, in the order the help text lists them.
    pub const ALL: [RewardKind; 6] = [
        RewardKind::Rule,
        RewardKind::Ranking,
        RewardKind::RankingOnly,
        RewardKind::Semantic,
        RewardKind::Cf,
        RewardKind::Hepo,
    ];

    /// Name used in `--reward`.
    pub fn name(self) -> &'static str {
        match self {
            RewardKind::Rule => "rule",
            RewardKind::Ranking => "ranking",
            RewardKind::RankingOnly => "ranking_only",
            RewardKind::Semantic => "semantic",
            RewardKind::Cf => "cf",
            RewardKind::Hepo => "hepo",
        }
    }
}

/// A weighted sum of reward functions, e.g. `ranking,cf:0.1` (weight 1 when omitted).
#[derive(Debug, Clone, PartialEq)]
pub struct RewardSpec {
    /// The terms, in the order given.
    pub terms: Vec<(RewardKind, f64)>,
}

impl RewardSpec {
    /// True if the spec uses `kind`.
    pub fn uses(&self, kind: RewardKind) -> bool {
        self.terms.iter().any(|(k, _)| *k == kind)
    }
}

impl fmt::Display for RewardSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .terms
            .iter()
            .map(|(k, w)| {
                if *w == 1.0 {
                    k.name().to_string()
                } else {
                    format!("{}:{w}", k.name())
                }
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl FromStr for RewardSpec {
    type Err = TrainerError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |msg: String| TrainerError::Invalid(format!("--reward `{s}`: {msg}"));
        let names = RewardKind::ALL.map(|k| k.name()).join(", ");
        let mut terms: Vec<(RewardKind, f64)> = Vec::new();
        for term in s.split(',').map(str::trim) {
            if term.is_empty() {
                return Err(bad(format!(
                    "empty term (expected a comma list of NAME or NAME:WEIGHT, NAME one of {names})"
                )));
            }
            let (name, weight) = match term.split_once(':') {
                Some((n, w)) => {
                    let w: f64 = w.trim().parse().map_err(|_| {
                        bad(format!("weight `{}` of `{}` is not a number", w.trim(), n))
                    })?;
                    if !w.is_finite() {
                        return Err(bad(format!("weight of `{n}` must be finite")));
                    }
                    (n.trim(), w)
                }
                None => (term, 1.0),
            };
            let kind = RewardKind::ALL
                .into_iter()
                .find(|k| k.name() == name)
                .ok_or_else(|| bad(format!("unknown reward `{name}` (expected one of {names})")))?;
            if terms.iter().any(|(k, _)| *k == kind) {
                return Err(bad(format!("`{name}` appears twice")));
            }
            terms.push((kind, weight));
        }
        Ok(Self { terms })
    }
}

/// The rank-aware penalty weights `w_i = -(1/log2(i+2)) / Σ_j 1/log2(j+2)`, `i < g` (sum −1).
pub fn ranking_weights(g: usize) -> Vec<f64> {
    let raw: Vec<f64> = (0..g).map(|i| 1.0 / ((i + 2) as f64).log2()).collect();
    let total: f64 = raw.iter().sum();
    raw.into_iter().map(|r| -r / total).collect()
}

/// One completion of a group: its SID string and the catalogue items it names.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// SID string, e.g. `<a_1><b_2><c_3>`.
    pub sid: String,
    /// Items with this SID (several only under a collision), in id order.
    pub items: Vec<ItemId>,
}

/// What a group is scored against.
#[derive(Debug, Clone, Copy)]
pub struct GroupTarget<'a> {
    /// The target item.
    pub item: ItemId,
    /// Its SID string.
    pub sid: &'a str,
    /// The user's history (empty for title/description prompts).
    pub history: &'a [ItemId],
}

/// `rule`: 1 where the completion's SID is the target SID (as the reference compares strings,
/// an item sharing the target's SID counts as a hit).
pub fn rule_rewards(target_sid: &str, cands: &[Candidate]) -> Vec<f64> {
    cands
        .iter()
        .map(|c| f64::from(u8::from(c.sid == target_sid)))
        .collect()
}

/// `ranking_only`: in a group with at least one hit, each miss at in-group index `i` gets
/// `weights[i]` and hits get 0; a group without a hit gets all zeros.
pub fn ranking_penalty(target_sid: &str, cands: &[Candidate], weights: &[f64]) -> Vec<f64> {
    if !cands.iter().any(|c| c.sid == target_sid) {
        return vec![0.0; cands.len()];
    }
    cands
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if c.sid == target_sid {
                0.0
            } else {
                weights.get(i).copied().unwrap_or(0.0)
            }
        })
        .collect()
}

/// `hepo` rewards by the number of leading SID tokens a completion shares with the target:
/// one level 0.2, two levels 0.5, the whole SID 1.0.
pub const HEPO_LEVEL_REWARDS: [f64; 3] = [0.2, 0.5, 1.0];

/// The `<...>` tokens of a SID string, in order (`<a_1><b_2>` → `["<a_1>", "<b_2>"]`).
pub fn sid_tokens(sid: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = sid;
    while let Some(lt) = rest.find('<') {
        let after = &rest[lt..];
        match after.find('>') {
            Some(gt) if gt > 1 => {
                out.push(&after[..=gt]);
                rest = &after[gt + 1..];
            }
            Some(gt) => rest = &after[gt + 1..],
            None => break,
        }
    }
    out
}

/// `hepo`: the hierarchical prefix-match reward of GPR's HEPO as the reference's `rl_gpr.py`
/// means it: 0 when the first SID token differs, 0.2 when only the first matches, 0.5 when the
/// first two match, 1.0 when the completion is the target SID. The reference splits SIDs on
/// `[...]` although they are written `<...>`, so its reward is always 0; here the tokens are
/// the `<...>` groups. It also pays 1.0 for the first three tokens alone; with four-token SIDs
/// (collisions resolved by an extra level) that would reward a different item as a hit, so a
/// match of three tokens out of four pays the two-level 0.5.
pub fn hepo_rewards(target_sid: &str, cands: &[Candidate]) -> Vec<f64> {
    let target = sid_tokens(target_sid);
    cands
        .iter()
        .map(|c| {
            let toks = sid_tokens(&c.sid);
            if !target.is_empty() && toks == target {
                return HEPO_LEVEL_REWARDS[2];
            }
            let shared = toks.iter().zip(&target).take_while(|(a, b)| a == b).count();
            match shared {
                0 => 0.0,
                1 => HEPO_LEVEL_REWARDS[0],
                _ => HEPO_LEVEL_REWARDS[1],
            }
        })
        .collect()
}

/// Item embeddings for the `semantic` reward: a `trainer embed` `.npy` and its ids file.
#[derive(Debug, Clone)]
pub struct ItemEmbeddings {
    path: PathBuf,
    rows: HashMap<ItemId, Vec<f32>>,
}

impl ItemEmbeddings {
    /// Read `<npy>` and `<npy>.ids.json` (the row ids `trainer embed` writes).
    pub fn load(npy: &Path) -> Result<Self> {
        let m = sidrec::npy::read_npy(npy)?;
        let ids_path = crate::embed::ids_path(npy);
        let ids: Vec<ItemId> = sidrec::io::read_json(&ids_path, "an item id list")?;
        if ids.len() != m.rows {
            return Err(TrainerError::Invalid(format!(
                "{}: {} ids for {} rows of {}",
                ids_path.display(),
                ids.len(),
                m.rows,
                npy.display()
            )));
        }
        let rows = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, m.row(i).to_vec()))
            .collect();
        Ok(Self {
            path: npy.to_path_buf(),
            rows,
        })
    }

    /// Embeddings given directly (tests, or callers with their own store).
    pub fn from_rows(path: impl Into<PathBuf>, rows: HashMap<ItemId, Vec<f32>>) -> Self {
        Self {
            path: path.into(),
            rows,
        }
    }

    fn row(&self, id: ItemId) -> Result<&[f32]> {
        self.rows.get(&id).map(Vec::as_slice).ok_or_else(|| {
            TrainerError::Invalid(format!(
                "{}: no embedding for item {id}",
                self.path.display()
            ))
        })
    }

    /// Cosine similarity of two items' embeddings (0 when either is the zero vector).
    pub fn cosine(&self, a: ItemId, b: ItemId) -> Result<f64> {
        let (x, y) = (self.row(a)?, self.row(b)?);
        let (mut dot, mut nx, mut ny) = (0f64, 0f64, 0f64);
        for (&p, &q) in x.iter().zip(y) {
            dot += f64::from(p) * f64::from(q);
            nx += f64::from(p) * f64::from(p);
            ny += f64::from(q) * f64::from(q);
        }
        let denom = nx.sqrt() * ny.sqrt();
        Ok(if denom > 0.0 { dot / denom } else { 0.0 })
    }
}

/// The item a candidate stands for when a reward needs one item: the target itself when the
/// candidate's SID names it (a hit under a collision), else the first item of the SID.
fn candidate_item(c: &Candidate, target: ItemId) -> Option<ItemId> {
    if c.items.contains(&target) {
        Some(target)
    } else {
        c.items.first().copied()
    }
}

/// Scores groups with a [`RewardSpec`].
#[derive(Clone)]
pub struct Rewarder {
    spec: RewardSpec,
    weights: Vec<f64>,
    embeddings: Option<Arc<ItemEmbeddings>>,
    cf: Option<Arc<dyn CfScorer>>,
}

impl Rewarder {
    /// A rewarder for groups of `num_generations`; `semantic` needs `embeddings`, `cf` a scorer.
    pub fn new(
        spec: RewardSpec,
        num_generations: usize,
        embeddings: Option<Arc<ItemEmbeddings>>,
        cf: Option<Arc<dyn CfScorer>>,
    ) -> Result<Self> {
        if spec.uses(RewardKind::Semantic) && embeddings.is_none() {
            return Err(TrainerError::Invalid(
                "reward `semantic` needs --item-embeddings (a `trainer embed` .npy)".into(),
            ));
        }
        if spec.uses(RewardKind::Cf) && cf.is_none() {
            return Err(TrainerError::Invalid(
                "reward `cf` needs a collaborative-filtering scorer: pass --sasrec DIR (a `sidrec-trainer sasrec` model)"
                    .into(),
            ));
        }
        Ok(Self {
            spec,
            weights: ranking_weights(num_generations),
            embeddings,
            cf,
        })
    }

    /// The spec being scored.
    pub fn spec(&self) -> &RewardSpec {
        &self.spec
    }

    /// The summed, weighted reward of each candidate of one group.
    pub fn group(&self, target: &GroupTarget<'_>, cands: &[Candidate]) -> Result<Vec<f64>> {
        let mut total = vec![0.0; cands.len()];
        let mut add = |w: f64, r: Vec<f64>| {
            for (t, x) in total.iter_mut().zip(r) {
                *t += w * x;
            }
        };
        for &(kind, w) in &self.spec.terms {
            match kind {
                RewardKind::Rule => add(w, rule_rewards(target.sid, cands)),
                RewardKind::Hepo => add(w, hepo_rewards(target.sid, cands)),
                RewardKind::RankingOnly => {
                    add(w, ranking_penalty(target.sid, cands, &self.weights))
                }
                RewardKind::Ranking => {
                    add(w, rule_rewards(target.sid, cands));
                    add(w, ranking_penalty(target.sid, cands, &self.weights));
                }
                RewardKind::Semantic => {
                    let emb = self.embeddings.as_ref().ok_or_else(|| {
                        TrainerError::Invalid("reward `semantic` has no embeddings".into())
                    })?;
                    let r = cands
                        .iter()
                        .map(|c| match candidate_item(c, target.item) {
                            Some(i) => emb.cosine(target.item, i),
                            None => Ok(0.0),
                        })
                        .collect::<Result<Vec<f64>>>()?;
                    add(w, r);
                }
                RewardKind::Cf => {
                    let cf = self
                        .cf
                        .as_ref()
                        .ok_or_else(|| TrainerError::Invalid("reward `cf` has no scorer".into()))?;
                    // Title/description prompts have no history to score against (the reference
                    // crashes on them); their groups get no cf reward.
                    if target.history.is_empty() {
                        continue;
                    }
                    let history: Vec<String> =
                        target.history.iter().map(|i| i.to_string()).collect();
                    let ids: Vec<String> = cands
                        .iter()
                        .map(|c| {
                            candidate_item(c, target.item)
                                .map(|i| i.to_string())
                                .unwrap_or_default()
                        })
                        .collect();
                    let scores = cf.score_candidates(&history, &ids)?;
                    if scores.len() != cands.len() {
                        return Err(TrainerError::Invalid(format!(
                            "cf scorer returned {} scores for {} candidates",
                            scores.len(),
                            cands.len()
                        )));
                    }
                    add(w, scores.into_iter().map(f64::from).collect());
                }
            }
        }
        Ok(total)
    }
}

/// Group-normalised advantages `(r − mean) / (std + 1e-4)` with the unbiased (N−1) standard
/// deviation, as the reference's `torch.std`. Groups of fewer than two, or with equal rewards,
/// have zero advantage.
pub fn group_advantages(rewards: &[f64]) -> Vec<f64> {
    let n = rewards.len();
    // Equal rewards carry no signal; test it exactly, since the mean of equal floats can differ
    // from them in the last bit and would leave ~1e-12 advantages behind.
    if n < 2 || rewards.iter().all(|&r| r == rewards[0]) {
        return vec![0.0; n];
    }
    let mean = rewards.iter().sum::<f64>() / n as f64;
    let var = rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let std = var.sqrt();
    rewards.iter().map(|r| (r - mean) / (std + 1e-4)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(sid: &str) -> Candidate {
        Candidate {
            sid: sid.into(),
            items: vec![],
        }
    }

    #[test]
    fn sid_tokens_are_the_angle_bracket_groups() {
        assert_eq!(
            sid_tokens("<a_60><b_159><c_203>"),
            ["<a_60>", "<b_159>", "<c_203>"]
        );
        assert_eq!(sid_tokens("x<a_1> <b_2>y<>"), ["<a_1>", "<b_2>"]);
        // The reference's `\[.*?\]` finds nothing in such a SID; these find nothing either way.
        assert!(sid_tokens("[a_1][b_2]").is_empty());
        assert!(sid_tokens("").is_empty());
    }

    #[test]
    fn hepo_pays_per_level() {
        let t = "<a_1><b_2><c_3>";
        let cands = [
            cand("<a_9><b_2><c_3>"), // first level differs: nothing, however much else matches
            cand("<a_1><b_9><c_3>"), // level 1 only
            cand("<a_1><b_2><c_9>"), // levels 1-2
            cand("<a_1><b_2><c_3>"), // the target
            cand(""),                // an empty completion
        ];
        assert_eq!(hepo_rewards(t, &cands), [0.0, 0.2, 0.5, 1.0, 0.0]);
        // Four-level SIDs: three shared tokens are not the item; the full SID is.
        let t4 = "<a_1><b_2><c_3><d_2>";
        let r = hepo_rewards(
            t4,
            &[cand("<a_1><b_2><c_3><d_1>"), cand("<a_1><b_2><c_3><d_2>")],
        );
        assert_eq!(r, [0.5, 1.0]);
        // A prefix of the target is not the target.
        assert_eq!(hepo_rewards(t4, &[cand("<a_1><b_2><c_3>")]), [0.5]);
    }

    #[test]
    fn hepo_combines_in_weighted_sums() {
        let spec: RewardSpec = "rule,hepo:0.5".parse().unwrap();
        assert_eq!(
            spec.terms,
            [(RewardKind::Rule, 1.0), (RewardKind::Hepo, 0.5)]
        );
        assert_eq!(spec.to_string(), "rule,hepo:0.5");
        let rw = Rewarder::new(spec, 3, None, None).unwrap();
        let target = GroupTarget {
            item: 7,
            sid: "<a_1><b_2><c_3>",
            history: &[],
        };
        let cands = [
            cand("<a_1><b_2><c_3>"),
            cand("<a_1><b_5><c_3>"),
            cand("<a_4><b_2><c_3>"),
        ];
        // rule 1 + 0.5·1.0; 0 + 0.5·0.2; 0 + 0.
        let r = rw.group(&target, &cands).unwrap();
        assert!((r[0] - 1.5).abs() < 1e-12 && (r[1] - 0.1).abs() < 1e-12 && r[2] == 0.0);
        // hepo alone separates the misses that `rule` scores alike.
        let hepo = Rewarder::new("hepo".parse().unwrap(), 3, None, None).unwrap();
        let r = hepo.group(&target, &cands[1..]).unwrap();
        assert!(group_advantages(&r)[0] > 0.0);
    }
}
