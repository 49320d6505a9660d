//! The reference's three RL datasets (MINIONEREC.md §2.3, §6.2) as tokenised prompts with
//! their targets.
//!
//! RL prompts have no instruction header: the whole prompt is the `### User Input:` block,
//! tokenised as one string. Deliberate differences from the reference: each example keeps its
//! own target item (no global prompt → target dicts), empty descriptions are skipped instead of
//! collapsing into one shared prompt, and the title-history sample is drawn with our own seeded
//! shuffle (pandas' `sample(random_state=0)` order is not reproduced).

use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sidrec::data::{InteractionRow, Items};
use sidrec::prompt::{self, Prompt, PromptEncoder};
use sidrec::ItemId;

use crate::data::features::RowContexts;
use crate::error::{Result, TrainerError};

/// Which RL dataset an example comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RlTask {
    /// SID history → next SID (`SidDataset`).
    SeqRec,
    /// Item title or description → its SID (`RLTitle2SidDataset`).
    Text2Sid,
    /// Title history → next SID (`RLSeqTitle2SidDataset`).
    Title2Sid,
}

impl RlTask {
    /// All tasks, in the reference's concatenation order.
    pub const ALL: [RlTask; 3] = [RlTask::SeqRec, RlTask::Text2Sid, RlTask::Title2Sid];

    /// Name used in `--tasks`.
    pub fn name(self) -> &'static str {
        match self {
            RlTask::SeqRec => "seqrec",
            RlTask::Text2Sid => "text2sid",
            RlTask::Title2Sid => "title2sid",
        }
    }
}

/// Parse `--tasks`: `all` or a comma list of task names.
pub fn parse_tasks(spec: &str) -> Result<Vec<RlTask>> {
    if spec.trim() == "all" {
        return Ok(RlTask::ALL.to_vec());
    }
    spec.split(',')
        .map(|s| {
            RlTask::ALL
                .into_iter()
                .find(|t| t.name() == s.trim())
                .ok_or_else(|| {
                    TrainerError::Invalid(format!(
                        "--tasks: unknown task `{}` (expected all or a list of: {})",
                        s.trim(),
                        RlTask::ALL.map(|t| t.name()).join(", ")
                    ))
                })
        })
        .collect()
}

/// One RL prompt with the item it should produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RlExample {
    /// Dataset it comes from.
    pub task: RlTask,
    /// Prompt token ids.
    pub prompt: Vec<u32>,
    /// Target item.
    pub target: ItemId,
    /// Target SID string.
    pub target_sid: String,
    /// The user's history (empty for title/description prompts).
    pub history: Vec<ItemId>,
}

/// The description the reference uses: the first element when the stored text is a Python list
/// literal (`['...']`), else the text itself.
pub fn description_text(raw: &str) -> String {
    let t = raw.trim();
    if t.starts_with('[') && t.ends_with(']') {
        if let Ok(list) = sidrec::data::pylit::parse_str_list(t) {
            return list.into_iter().next().unwrap_or_default();
        }
    }
    t.to_string()
}

/// Builds the RL examples of the chosen tasks.
pub struct RlDataBuilder<'a> {
    /// Prompt templates, tokenizer and item → SID (the checkpoint's): the one prompt path.
    pub prompts: PromptEncoder<'a>,
    /// Each row's prompt context (user segment), for checkpoints with prompt tokens.
    pub contexts: &'a RowContexts,
    /// Item metadata.
    pub items: &'a Items,
    /// Category phrase of the title prompts.
    pub category: String,
    /// Longest prompt in tokens; longer prompts keep their last ids (left truncation).
    pub max_prompt_len: usize,
    /// Rows sampled for the title-history task (the reference samples 10 000).
    pub title_history_rows: usize,
    /// Seed of that sample and of the truncated histories.
    pub seed: u64,
    /// Extra SID-history prompts per row whose history keeps only its newest m items (distinct
    /// m drawn from 1..len−1): contexts the SFT model has not memorised (0 = off).
    pub truncated_histories: usize,
}

impl RlDataBuilder<'_> {
    fn sid(&self, id: ItemId) -> Result<String> {
        Ok(self.prompts.sid(id)?)
    }

    fn example(
        &self,
        task: RlTask,
        p: &Prompt,
        target: ItemId,
        history: Vec<ItemId>,
    ) -> Result<RlExample> {
        let ids = self.prompts.encode(p)?;
        let cut = ids.len().saturating_sub(self.max_prompt_len.max(1));
        Ok(RlExample {
            task,
            prompt: ids[cut..].to_vec(),
            target,
            target_sid: self.sid(target)?,
            history,
        })
    }

    /// The examples of `tasks` built from `rows` (and, for `text2sid`, from the catalogue).
    pub fn build(&self, rows: &[InteractionRow], tasks: &[RlTask]) -> Result<Vec<RlExample>> {
        let mut out = Vec::new();
        for &task in RlTask::ALL.iter().filter(|t| tasks.contains(t)) {
            match task {
                RlTask::SeqRec => {
                    let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x7a11_c0de);
                    for (n, r) in rows.iter().enumerate() {
                        let ctx = self.contexts.training(r, n);
                        let hist = &r.history_item_id;
                        let p = self.prompts.rl_seqrec(hist, &ctx)?;
                        out.push(self.example(task, &p, r.item_id, hist.clone())?);
                        if self.truncated_histories == 0 || hist.len() < 2 {
                            continue;
                        }
                        let mut keep: Vec<usize> = (1..hist.len()).collect();
                        keep.shuffle(&mut rng);
                        keep.truncate(self.truncated_histories);
                        keep.sort_unstable();
                        for m in keep {
                            let cut = hist.len() - m;
                            let p = self.prompts.rl_seqrec(&hist[cut..], &ctx)?;
                            out.push(self.example(task, &p, r.item_id, hist[cut..].to_vec())?);
                        }
                    }
                }
                RlTask::Text2Sid => {
                    // As the reference: dicts keyed by text, the last item with a text wins;
                    // first all titles, then all descriptions.
                    let mut by_title: BTreeMap<String, ItemId> = BTreeMap::new();
                    let mut by_desc: BTreeMap<String, ItemId> = BTreeMap::new();
                    let (mut title_order, mut desc_order) = (Vec::new(), Vec::new());
                    for (id, _) in self.prompts.index().iter() {
                        let Some(meta) = self.items.get(&id) else {
                            continue;
                        };
                        if !meta.title.is_empty()
                            && by_title.insert(meta.title.clone(), id).is_none()
                        {
                            title_order.push(meta.title.clone());
                        }
                        let d = description_text(&meta.description);
                        if !d.is_empty() && by_desc.insert(d.clone(), id).is_none() {
                            desc_order.push(d);
                        }
                    }
                    for t in &title_order {
                        let p = prompt::rl_title(self.prompts.style(), t);
                        out.push(self.example(task, &p, by_title[t], Vec::new())?);
                    }
                    for d in &desc_order {
                        let p = prompt::rl_description(self.prompts.style(), d);
                        out.push(self.example(task, &p, by_desc[d], Vec::new())?);
                    }
                }
                RlTask::Title2Sid => {
                    let mut order: Vec<usize> = (0..rows.len()).collect();
                    order.shuffle(&mut ChaCha8Rng::seed_from_u64(self.seed));
                    order.truncate(self.title_history_rows);
                    order.sort_unstable();
                    for i in order {
                        let r = &rows[i];
                        let p = prompt::rl_title_history(
                            self.prompts.style(),
                            &self.category,
                            &r.history_item_title,
                        );
                        out.push(self.example(task, &p, r.item_id, r.history_item_id.clone())?);
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_take_the_first_list_element() {
        assert_eq!(description_text("['First part.', 'Second']"), "First part.");
        assert_eq!(description_text("[]"), "");
        assert_eq!(description_text("plain text"), "plain text");
        assert!(parse_tasks("seqrec,nope").is_err());
        assert_eq!(parse_tasks("all").unwrap().len(), 3);
    }
}
