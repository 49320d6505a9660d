//! The five SFT tasks of the reference (MINIONEREC.md §2.1), as tokenised examples.
//!
//! Each example is `prompt ids ++ response ids ++ EOS` with loss only on the response and EOS
//! (see [`Example`]); tasks come out in the reference's order.
//! Deliberate differences from the reference: alignment tasks use the full SID (the reference
//! truncates to three tokens, which breaks 4-level SIDs), and a title missing from the item
//! metadata drops the title tasks of that row instead of training on a placeholder.

use std::collections::BTreeMap;

use rand_mt::Mt;
use sidrec::data::{InteractionRow, Items};
use sidrec::prompt::{self, Prompt, PromptEncoder};
use sidrec::ItemId;

use crate::data::features::RowContexts;
use crate::error::Result;
use crate::train::batch::Example;

/// Which of the five tasks an example comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Task {
    /// SID history → next SID (`SidSFTDataset`).
    SeqRec,
    /// SID ↔ title (`SidItemFeatDataset`).
    Alignment,
    /// SID history → next title (`FusionSeqRecDataset`).
    SeqToTitle,
    /// Title history → next title (`SFTData`).
    TitleToTitle,
    /// Title history → next SID (`TitleHistory2SidSFTDataset`).
    TitleToSid,
}

impl Task {
    /// All tasks, in the reference's concatenation order.
    pub const ALL: [Task; 5] = [
        Task::SeqRec,
        Task::Alignment,
        Task::SeqToTitle,
        Task::TitleToTitle,
        Task::TitleToSid,
    ];

    /// Short name used in flags and reports.
    pub fn name(self) -> &'static str {
        match self {
            Task::SeqRec => "seqrec",
            Task::Alignment => "alignment",
            Task::SeqToTitle => "seq2title",
            Task::TitleToTitle => "title2title",
            Task::TitleToSid => "title2sid",
        }
    }
}

/// The reference's `random.seed(42); random.randint(0, 10)` sequence that picks the instruction
/// variant of each title → title example (CPython: MT19937 seeded by `init_by_array([seed])`,
/// `randint` by rejection over `getrandbits(4)`).
pub struct PythonRandInt {
    mt: Mt,
}

impl PythonRandInt {
    /// Seeded as Python's `random.seed(seed)` for a small non-negative integer seed.
    pub fn new(seed: u32) -> Self {
        Self {
            mt: Mt::new_with_key(std::iter::once(seed)),
        }
    }

    /// `random.randint(0, n - 1)` for `1 <= n <= 2^31`.
    pub fn below(&mut self, n: u32) -> u32 {
        let k = 32 - n.leading_zeros();
        loop {
            let r = self.mt.next_u32() >> (32 - k);
            if r < n {
                return r;
            }
        }
    }
}

/// Build, tokenise and truncate the examples of the chosen tasks.
pub struct TaskBuilder<'a> {
    /// Prompt templates, tokenizer and item → SID: the library's one prompt path.
    pub prompts: PromptEncoder<'a>,
    /// Item metadata (titles).
    pub items: &'a Items,
    /// Category phrase used by the title tasks (e.g. `industrial and scientific items`).
    pub category: String,
    /// Longest example; longer ones keep their last `cutoff` ids, as the reference does.
    pub cutoff: usize,
    /// Also supervise the SIDs inside SID histories (a deliberate extension; see `--history-loss`).
    pub history_loss: bool,
    /// SID-history rows to leave out, one flag per row ([`covered_rows`], for
    /// `--drop-covered-rows`); `None` keeps every row. Other tasks always use every row.
    pub covered: Option<&'a [bool]>,
    /// Also train every SID-history row (covered or not) with its history cut to its last
    /// `recent_history` items (0: off; rows no longer than that add nothing).
    pub recent_history: usize,
    /// Each row's prompt context (user segment), for checkpoints with prompt tokens.
    pub contexts: &'a RowContexts,
}

/// Which rows are the start of a longer row of the same user: their history and target,
/// in order, begin that row's history. Sliding-window splits (MiniOneRec's) hold one such row
/// per early position of each user. With the history loss, the longer row already predicts
/// each of those items from exactly the items before it, so the shorter row repeats that work.
pub fn covered_rows(rows: &[InteractionRow]) -> Vec<bool> {
    let mut by_user: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        by_user.entry(r.user_id.as_str()).or_default().push(i);
    }
    let mut covered = vec![false; rows.len()];
    for members in by_user.values() {
        for &i in members {
            let short = &rows[i];
            let n = short.history_item_id.len();
            covered[i] = members.iter().any(|&j| {
                let long = &rows[j].history_item_id;
                long.len() > n && long[..n] == short.history_item_id[..] && long[n] == short.item_id
            });
        }
    }
    covered
}

impl TaskBuilder<'_> {
    fn sid(&self, id: ItemId) -> Result<String> {
        Ok(self.prompts.sid(id)?)
    }

    fn title(&self, id: ItemId) -> Option<&str> {
        self.items.get(&id).map(|m| m.title.as_str())
    }

    fn encode(&self, p: &Prompt, task: Task, target: ItemId) -> Result<Example> {
        let mut ex = Example::encode(&self.prompts, p, self.cutoff)?;
        ex.target = Some(target);
        if self.history_loss && task == Task::SeqRec {
            ex.prompt_targets = self.history_targets(&ex.ids[..ex.prompt_len]);
        }
        Ok(ex)
    }

    /// The SID tokens of the prompt except the first run of them (the first history item, or
    /// what truncation left of it), which has no earlier item to be predicted from.
    fn history_targets(&self, prompt: &[u32]) -> Vec<usize> {
        let vocab = self.prompts.tokenizer().sid_vocab();
        let is_sid = |id: u32| vocab.token(id).is_some();
        let Some(first) = prompt.iter().position(|&id| is_sid(id)) else {
            return Vec::new();
        };
        let after_first = prompt[first..]
            .iter()
            .position(|&id| !is_sid(id))
            .map_or(prompt.len(), |n| first + n);
        (after_first..prompt.len())
            .filter(|&t| is_sid(prompt[t]))
            .collect()
    }

    /// The examples of `tasks` built from `rows` (and, for alignment, from the catalogue).
    pub fn build(&self, rows: &[InteractionRow], tasks: &[Task]) -> Result<Vec<Example>> {
        let mut out = Vec::new();
        for &task in Task::ALL.iter().filter(|t| tasks.contains(t)) {
            match task {
                Task::SeqRec => {
                    for (n, r) in rows.iter().enumerate() {
                        let ctx = self.contexts.training(r, n);
                        let history = &r.history_item_id;
                        if self.recent_history > 0 && history.len() > self.recent_history {
                            let recent = &history[history.len() - self.recent_history..];
                            let p = self.prompts.sft_seqrec(recent, r.item_id, &ctx)?;
                            out.push(self.encode(&p, task, r.item_id)?);
                        }
                        if self.covered.and_then(|c| c.get(n)) == Some(&true) {
                            continue;
                        }
                        let p = self.prompts.sft_seqrec(history, r.item_id, &ctx)?;
                        out.push(self.encode(&p, task, r.item_id)?);
                    }
                }
                Task::Alignment => {
                    // As the reference: every SID → title first, then every title → SID, each a
                    // dict where the last writer wins (duplicate titles / shared SIDs).
                    let mut sid2title: BTreeMap<String, (String, ItemId)> = BTreeMap::new();
                    let mut title2sid: BTreeMap<String, (String, ItemId)> = BTreeMap::new();
                    let mut title_order = Vec::new();
                    let mut sid_order = Vec::new();
                    for (id, sid) in self.prompts.index().iter() {
                        let Some(title) = self.title(id) else {
                            continue;
                        };
                        let sid = sid.to_string();
                        if sid2title
                            .insert(sid.clone(), (title.to_string(), id))
                            .is_none()
                        {
                            sid_order.push(sid.clone());
                        }
                        if title2sid.insert(title.to_string(), (sid, id)).is_none() {
                            title_order.push(title.to_string());
                        }
                    }
                    for sid in &sid_order {
                        let (title, id) = &sid2title[sid];
                        let p = prompt::sid_to_title(self.prompts.style(), sid, title);
                        out.push(self.encode(&p, task, *id)?);
                    }
                    for title in &title_order {
                        let (sid, id) = &title2sid[title];
                        let p = prompt::title_to_sid(self.prompts.style(), title, sid);
                        out.push(self.encode(&p, task, *id)?);
                    }
                }
                Task::SeqToTitle => {
                    for r in rows {
                        let Some(title) = self.title(r.item_id) else {
                            continue;
                        };
                        let hist = self.history_sids(r)?;
                        let p = prompt::seqrec_to_title(self.prompts.style(), &hist, title);
                        out.push(self.encode(&p, task, r.item_id)?);
                    }
                }
                Task::TitleToTitle => {
                    let mut rng = PythonRandInt::new(42);
                    for r in rows {
                        let variant = rng.below(prompt::TITLE_TASK_INSTRUCTIONS.len() as u32);
                        let p = prompt::title_history_to_title(
                            self.prompts.style(),
                            &self.category,
                            variant as usize,
                            &r.history_item_title,
                            &r.item_title,
                        );
                        out.push(self.encode(&p, task, r.item_id)?);
                    }
                }
                Task::TitleToSid => {
                    for r in rows {
                        let p = prompt::title_history_to_sid(
                            self.prompts.style(),
                            &self.category,
                            &r.history_item_title,
                            &self.sid(r.item_id)?,
                        );
                        out.push(self.encode(&p, task, r.item_id)?);
                    }
                }
            }
        }
        Ok(out)
    }

    fn history_sids(&self, r: &InteractionRow) -> Result<Vec<String>> {
        Ok(self.prompts.sids(&r.history_item_id)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sidrec::data::ItemMeta;
    use sidrec::prompt::PromptStyle;
    use sidrec::tokenizer::SidTokenizer;
    use sidrec::{Sid, SidIndex};

    #[test]
    fn python_randint_sequence_matches_cpython() {
        // CPython 3.11: random.seed(42); [random.randint(0, 10) for _ in range(12)]
        let mut r = PythonRandInt::new(42);
        let got: Vec<u32> = (0..12).map(|_| r.below(11)).collect();
        assert_eq!(got, [10, 1, 0, 4, 3, 3, 2, 1, 10, 8, 1, 9]);
    }

    #[test]
    fn examples_supervise_only_the_response() {
        let index: SidIndex = [
            (0, Sid::from_codes(vec![1, 2, 3])),
            (1, Sid::from_codes(vec![4, 5, 6])),
            (2, Sid::from_codes(vec![4, 5, 6])),
        ]
        .into_iter()
        .collect();
        let items: Items = [
            (0, ItemMeta::new("Red Hammer", "")),
            (1, ItemMeta::new("Blue Nails", "")),
            (2, ItemMeta::new("Blue Nails", "")),
        ]
        .into_iter()
        .collect();
        let texts =
            ["history: <a_1><b_2><c_3>\nnext:\n<a_4><b_5><c_6>\n title: Red Hammer sid:"; 20];
        let tk = SidTokenizer::train_bpe(texts.iter(), 300, &index).unwrap();
        let row = InteractionRow {
            user_id: "A1".into(),
            history_item_title: vec!["Red Hammer".into()],
            item_title: "Blue Nails".into(),
            history_item_id: vec![0],
            item_id: 1,
            history_item_sid: vec!["<a_1><b_2><c_3>".into()],
            item_sid: "<a_4><b_5><c_6>".into(),
        };
        let b = TaskBuilder {
            prompts: PromptEncoder::new(PromptStyle::Compact, &tk, &index),
            items: &items,
            category: "items".into(),
            cutoff: 512,
            history_loss: false,
            covered: None,
            recent_history: 0,
            contexts: &RowContexts::none(),
        };
        let ex = b.build(std::slice::from_ref(&row), &Task::ALL).unwrap();
        // seqrec, 2 sid→title + 2 title→sid (one SID and one title are shared), seq2title,
        // title2title, title2sid.
        let count = |t: Task| b.build(std::slice::from_ref(&row), &[t]).unwrap().len();
        assert_eq!(count(Task::SeqRec), 1);
        assert_eq!(count(Task::Alignment), 4);
        assert_eq!(ex.len(), 8);
        let seqrec = &ex[0];
        assert_eq!(
            seqrec,
            &b.build(std::slice::from_ref(&row), &[Task::SeqRec])
                .unwrap()[0]
        );
        let expect: Vec<u32> = tk.encode_text("<a_4><b_5><c_6>\n").unwrap();
        let target = &seqrec.ids[seqrec.prompt_len..];
        assert_eq!(&target[..target.len() - 1], expect.as_slice());
        assert_eq!(*target.last().unwrap(), tk.eos_id());
        // Truncation keeps the response and shortens the prompt from the left.
        let short = TaskBuilder { cutoff: 6, ..b };
        let ex = short
            .build(std::slice::from_ref(&row), &[Task::SeqRec])
            .unwrap();
        assert_eq!(ex[0].ids.len(), 6);
        assert_eq!(ex[0].target_len(), seqrec.target_len());
        assert_eq!(&ex[0].ids[ex[0].prompt_len..], target);
    }

    #[test]
    fn history_loss_supervises_every_history_sid_but_the_first_item() {
        let index: SidIndex = [
            (0, Sid::from_codes(vec![1, 2, 3])),
            (1, Sid::from_codes(vec![4, 5, 6])),
            (2, Sid::from_codes(vec![7, 8, 9])),
        ]
        .into_iter()
        .collect();
        let items: Items = [(0, ItemMeta::new("Red Hammer", ""))].into_iter().collect();
        let texts = ["history: <a_1><b_2><c_3> <a_4><b_5><c_6>\nnext:\n<a_7><b_8><c_9>\n"; 20];
        let tk = SidTokenizer::train_bpe(texts.iter(), 300, &index).unwrap();
        let row = InteractionRow {
            user_id: "A1".into(),
            history_item_title: vec![],
            item_title: String::new(),
            history_item_id: vec![0, 1],
            item_id: 2,
            history_item_sid: vec![],
            item_sid: String::new(),
        };
        let b = TaskBuilder {
            prompts: PromptEncoder::new(PromptStyle::Compact, &tk, &index),
            items: &items,
            category: "items".into(),
            cutoff: 512,
            history_loss: true,
            covered: None,
            recent_history: 0,
            contexts: &RowContexts::none(),
        };
        let ex = b
            .build(std::slice::from_ref(&row), &[Task::SeqRec])
            .unwrap();
        let e = &ex[0];
        let second: Vec<u32> = tk.encode_text("<a_4><b_5><c_6>").unwrap();
        let picked: Vec<u32> = e.prompt_targets.iter().map(|&t| e.ids[t]).collect();
        assert_eq!(picked, second);
        assert!(e.prompt_targets.iter().all(|&t| t > 0 && t < e.prompt_len));
        // Without the flag only the response is supervised.
        let plain = TaskBuilder {
            history_loss: false,
            covered: None,
            recent_history: 0,
            ..b
        };
        let ex = plain
            .build(std::slice::from_ref(&row), &[Task::SeqRec])
            .unwrap();
        assert!(ex[0].prompt_targets.is_empty());
    }

    fn window(user: &str, history: &[ItemId], target: ItemId) -> InteractionRow {
        InteractionRow {
            user_id: user.into(),
            ..sidrec::testing::interaction_row(history, target)
        }
    }

    #[test]
    fn covered_rows_are_the_starts_of_longer_rows_of_the_same_user() {
        let rows = [
            window("A1", &[0], 1),       // starts row 2: covered
            window("A1", &[0, 1], 2),    // starts row 2: covered
            window("A1", &[0, 1, 2], 3), // the longest window
            window("A1", &[1, 2, 3], 4), // slid: no row starts with it
            window("A2", &[0], 1),       // another user's: row 2 does not cover it
            window("A1", &[0], 2),       // same start, another target: not covered
            window("A1", &[0, 1, 2], 3), // a duplicate of row 2, not longer: kept
        ];
        assert_eq!(
            covered_rows(&rows),
            [true, true, false, false, false, false, false]
        );
        assert_eq!(covered_rows(&[]), Vec::<bool>::new());
    }

    /// Items 0..4 with two-level SIDs, a tokenizer for them, and one user's sliding windows
    /// 0 → 1, 0 1 → 2, 0 1 2 → 3.
    fn one_users_windows() -> (SidIndex, SidTokenizer, [InteractionRow; 3]) {
        let index: SidIndex = (0..4)
            .map(|i| (i, Sid::from_codes(vec![i + 1, i + 2])))
            .collect();
        let texts = ["history: <a_1><b_2> <a_2><b_3> <a_3><b_4>\nnext:\n<a_4><b_5>\n"; 20];
        let tk = SidTokenizer::train_bpe(texts.iter(), 300, &index).unwrap();
        let rows = [
            window("A1", &[0], 1),
            window("A1", &[0, 1], 2),
            window("A1", &[0, 1, 2], 3),
        ];
        (index, tk, rows)
    }

    #[test]
    fn dropping_covered_rows_keeps_every_supervised_item() {
        let (index, tk, rows) = one_users_windows();
        let items = Items::new();
        let b = TaskBuilder {
            prompts: PromptEncoder::new(PromptStyle::Compact, &tk, &index),
            items: &items,
            category: "items".into(),
            cutoff: 512,
            history_loss: true,
            covered: Some(&covered_rows(&rows)),
            recent_history: 0,
            contexts: &RowContexts::none(),
        };
        let ex = b.build(&rows, &[Task::SeqRec]).unwrap();
        assert_eq!(ex.len(), 1);
        assert_eq!(ex[0].target, Some(3));
        // Items 1 and 2, the dropped rows' targets, are supervised inside the kept row's history.
        let supervised: Vec<u32> = ex[0].prompt_targets.iter().map(|&t| ex[0].ids[t]).collect();
        let mut expect = tk.encode_text("<a_2><b_3>").unwrap();
        expect.extend(tk.encode_text("<a_3><b_4>").unwrap());
        assert_eq!(supervised, expect);
        // Other tasks still see every row.
        let all = b.build(&rows, &[Task::SeqRec, Task::TitleToSid]).unwrap();
        assert_eq!(all.len(), 1 + rows.len());
    }

    #[test]
    fn recent_history_adds_each_row_cut_to_its_last_items() {
        let (index, tk, rows) = one_users_windows();
        let items = Items::new();
        let covered = covered_rows(&rows);
        let b = TaskBuilder {
            prompts: PromptEncoder::new(PromptStyle::Compact, &tk, &index),
            items: &items,
            category: "items".into(),
            cutoff: 512,
            history_loss: true,
            covered: Some(&covered),
            recent_history: 1,
            contexts: &RowContexts::none(),
        };
        let ex = b.build(&rows, &[Task::SeqRec]).unwrap();
        // Covered rows still give their short view: 1 → 2 (from row 2), 2 → 3 (row 3), then
        // the kept row whole; row 1 is already one item long.
        let prompts = PromptEncoder::new(PromptStyle::Compact, &tk, &index);
        let ctx = RowContexts::none().training(&rows[0], 0);
        let expect = |h: &[ItemId], t: ItemId| {
            Example::encode(&prompts, &prompts.sft_seqrec(h, t, &ctx).unwrap(), 512)
                .unwrap()
                .ids
        };
        let ids: Vec<&[u32]> = ex.iter().map(|e| e.ids.as_slice()).collect();
        assert_eq!(
            ids,
            [
                expect(&[1], 2).as_slice(),
                expect(&[2], 3).as_slice(),
                expect(&[0, 1, 2], 3).as_slice()
            ]
        );
        // A one-item history has no history targets: only the response is supervised.
        assert!(ex[0].prompt_targets.is_empty());
        assert_eq!(ex[2].prompt_targets.len(), 4);
    }
}
