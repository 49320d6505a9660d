//! One path from a history of items to prompt token ids, for training, evaluation and serving.
//!
//! `init` (the tokenizer's corpus), `sft`, `grpo`, `eval` and the server all turn item ids into
//! SID strings here and prompts into token ids here, so the model is served exactly the prompts
//! it was trained and evaluated on.
//!
//! The rule for an item without a SID: it is an error ([`Error::NoSid`]) naming the item, never
//! silently dropped (the model would see another history than the user's) and never an empty
//! string (the model would see a prompt shape it was never trained on). A caller that knowingly
//! accepts stale items, such as the server's history store written under an older catalogue,
//! drops them itself before encoding, where that policy is visible.

use super::{eval_seqrec, Prompt, PromptStyle};
use crate::error::{Error, Result};
use crate::sid::{ItemId, Sid, SidIndex};
use crate::tokenizer::SidTokenizer;

/// The SID string of `item`, or [`Error::NoSid`].
pub fn item_sid(index: &SidIndex, item: ItemId) -> Result<String> {
    index
        .get(item)
        .map(|s| s.to_string())
        .ok_or(Error::NoSid(item))
}

/// The SID strings of a history (oldest first), or [`Error::NoSid`] for its first item without one.
pub fn history_sids(index: &SidIndex, history: &[ItemId]) -> Result<Vec<String>> {
    history.iter().map(|&i| item_sid(index, i)).collect()
}

/// A checkpoint's prompt templates, tokenizer and SID index: histories in, token ids out.
#[derive(Debug, Clone, Copy)]
pub struct PromptEncoder<'a> {
    style: PromptStyle,
    tokenizer: &'a SidTokenizer,
    index: &'a SidIndex,
}

/// A prompt encoded for decoding: its text (for reports) and its token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPrompt {
    /// The prompt text (its parts joined).
    pub text: String,
    /// Its token ids, each part tokenised on its own.
    pub ids: Vec<u32>,
}

impl<'a> PromptEncoder<'a> {
    /// An encoder for prompts of `style`, tokenised by `tokenizer`, items mapped through `index`.
    pub fn new(style: PromptStyle, tokenizer: &'a SidTokenizer, index: &'a SidIndex) -> Self {
        Self {
            style,
            tokenizer,
            index,
        }
    }

    /// The prompt templates.
    pub fn style(&self) -> PromptStyle {
        self.style
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &'a SidTokenizer {
        self.tokenizer
    }

    /// The SID index items are mapped through.
    pub fn index(&self) -> &'a SidIndex {
        self.index
    }

    /// The SID string of `item` (the module's rule: no SID is an error).
    pub fn sid(&self, item: ItemId) -> Result<String> {
        item_sid(self.index, item)
    }

    /// The SID strings of a history, oldest first (the module's rule: no SID is an error).
    pub fn sids(&self, history: &[ItemId]) -> Result<Vec<String>> {
        history_sids(self.index, history)
    }

    /// Token ids of the prompt's parts (each tokenised on its own), without the response.
    pub fn encode(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        self.tokenizer.encode_prompt(prompt)
    }

    /// Token ids of the prompt and of its response followed by EOS (a training example).
    pub fn encode_with_response(&self, prompt: &Prompt) -> Result<(Vec<u32>, Vec<u32>)> {
        Ok((
            self.tokenizer.encode_prompt(prompt)?,
            self.tokenizer.encode_response(prompt)?,
        ))
    }

    /// The next-item prompt for a history of items: what `eval` decodes and the server serves.
    pub fn recommend(&self, history: &[ItemId]) -> Result<EncodedPrompt> {
        self.recommend_sids(&self.sids(history)?)
    }

    /// The next-item prompt for a history already given as SIDs (oldest first).
    pub fn recommend_sids<S: AsRef<str>>(&self, history: &[S]) -> Result<EncodedPrompt> {
        let p = eval_seqrec(self.style, history);
        Ok(EncodedPrompt {
            ids: self.encode(&p)?,
            text: p.text(),
        })
    }

    /// [`Self::recommend_sids`] for parsed SIDs.
    pub fn recommend_parsed(&self, history: &[Sid]) -> Result<EncodedPrompt> {
        let sids: Vec<String> = history.iter().map(Sid::to_string).collect();
        self.recommend_sids(&sids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_without_a_sid_are_an_error_naming_them() {
        let mut index = SidIndex::new();
        index.insert(1, "<a_1><b_2>".parse().unwrap());
        index.insert(2, "<a_3><b_4>".parse().unwrap());
        assert_eq!(
            history_sids(&index, &[2, 1]).unwrap(),
            ["<a_3><b_4>", "<a_1><b_2>"]
        );
        let e = history_sids(&index, &[1, 7, 8]).unwrap_err();
        assert!(matches!(e, Error::NoSid(7)), "{e:?}");
        assert!(e.to_string().contains("item 7"), "{e}");

        let corpus = ["history: <a_1><b_2> <a_3><b_4>\nnext:\n<a_1><b_2>\n"];
        let tk = SidTokenizer::train_bpe(corpus.iter(), 300, &index).unwrap();
        let enc = PromptEncoder::new(PromptStyle::Compact, &tk, &index);
        let by_items = enc.recommend(&[1, 2]).unwrap();
        assert_eq!(by_items.text, "history: <a_1><b_2> <a_3><b_4>\nnext:\n");
        let sids: Vec<Sid> = ["<a_1><b_2>", "<a_3><b_4>"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(enc.recommend_parsed(&sids).unwrap(), by_items);
        assert!(matches!(enc.recommend(&[1, 9]), Err(Error::NoSid(9))));
    }
}
