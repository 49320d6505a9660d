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
//!
//! The SID-history prompts (SFT, RL, evaluation and serving) carry the checkpoint's optional
//! prompt tokens ([`PromptTokens`]): the U/E tokens of a [`PromptContext`] before the history and
//! an item-type token before each history SID. They are built only here.

use super::{
    eval_seqrec_led, rl_seqrec_led, sft_seqrec_led, ItemTypes, Prompt, PromptContext, PromptStyle,
    PromptTokens, TokenGroup,
};
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
    tokens: PromptTokens,
    item_types: Option<&'a ItemTypes>,
    max_history: Option<usize>,
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
    /// Its prompts carry no optional tokens; see [`Self::with_tokens`].
    pub fn new(style: PromptStyle, tokenizer: &'a SidTokenizer, index: &'a SidIndex) -> Self {
        Self {
            style,
            tokenizer,
            index,
            tokens: PromptTokens::none(),
            item_types: None,
            max_history: None,
        }
    }

    /// The same encoder writing prompts of `style` instead.
    pub fn with_style(self, style: PromptStyle) -> Self {
        Self { style, ..self }
    }

    /// The same encoder whose recommendation prompts (eval, serving, RL rollouts) keep only the
    /// last `n` history items; `None` keeps them all. SFT examples stay whole: with the history
    /// loss they already train every shorter context, and a long row is the cheapest way to.
    pub fn with_max_history(self, n: Option<usize>) -> Self {
        Self {
            max_history: n,
            ..self
        }
    }

    /// How many history items its recommendation prompts keep (`None`: all).
    pub fn max_history(&self) -> Option<usize> {
        self.max_history
    }

    /// The part of `history` (oldest first) that recommendation prompts keep.
    fn recent<'h, T>(&self, history: &'h [T]) -> &'h [T] {
        match self.max_history {
            Some(n) if history.len() > n => &history[history.len() - n..],
            _ => history,
        }
    }

    /// The same encoder whose SID-history prompts carry the groups of `tokens`, item types
    /// taken from `item_types` (a SID it does not know is `O`).
    pub fn with_tokens(self, tokens: PromptTokens, item_types: &'a ItemTypes) -> Self {
        Self {
            tokens,
            item_types: Some(item_types),
            ..self
        }
    }

    /// The optional prompt tokens its SID-history prompts carry.
    pub fn tokens(&self) -> PromptTokens {
        self.tokens
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

    /// History SIDs as the SID-history prompts write them: each prefixed with its item-type
    /// token when that group is on.
    pub fn decorate<S: AsRef<str>>(&self, sids: &[S]) -> Vec<String> {
        if !self.tokens.has(TokenGroup::ItemType) {
            return sids.iter().map(|s| s.as_ref().to_owned()).collect();
        }
        sids.iter()
            .map(|s| {
                let s = s.as_ref();
                let t = self
                    .item_types
                    .map_or(super::ItemType::Organic, |types| types.get(s));
                format!("{}{s}", t.token())
            })
            .collect()
    }

    /// The SFT example for `history` → `target` in context `ctx` (the response is the bare SID).
    pub fn sft_seqrec(
        &self,
        history: &[ItemId],
        target: ItemId,
        ctx: &PromptContext,
    ) -> Result<Prompt> {
        let hist = self.decorate(&self.sids(history)?);
        Ok(sft_seqrec_led(
            self.style,
            &self.tokens.lead(ctx),
            &hist,
            &self.sid(target)?,
        ))
    }

    /// The RL prompt for `history` in context `ctx`.
    pub fn rl_seqrec(&self, history: &[ItemId], ctx: &PromptContext) -> Result<Prompt> {
        let hist = self.decorate(&self.sids(self.recent(history))?);
        Ok(rl_seqrec_led(self.style, &self.tokens.lead(ctx), &hist))
    }

    /// The next-item prompt for a history of items: what `eval` decodes and the server serves.
    pub fn recommend(&self, history: &[ItemId], ctx: &PromptContext) -> Result<EncodedPrompt> {
        self.recommend_sids(&self.sids(self.recent(history))?, ctx)
    }

    /// The next-item prompt for a history already given as SIDs (oldest first).
    pub fn recommend_sids<S: AsRef<str>>(
        &self,
        history: &[S],
        ctx: &PromptContext,
    ) -> Result<EncodedPrompt> {
        let history = self.recent(history);
        let p = eval_seqrec_led(self.style, &self.tokens.lead(ctx), &self.decorate(history));
        Ok(EncodedPrompt {
            ids: self.encode(&p)?,
            text: p.text(),
        })
    }

    /// [`Self::recommend_sids`] for parsed SIDs.
    pub fn recommend_parsed(&self, history: &[Sid], ctx: &PromptContext) -> Result<EncodedPrompt> {
        let sids: Vec<String> = self.recent(history).iter().map(Sid::to_string).collect();
        self.recommend_sids(&sids, ctx)
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
        let ctx = PromptContext::default();
        let by_items = enc.recommend(&[1, 2], &ctx).unwrap();
        assert_eq!(by_items.text, "history: <a_1><b_2> <a_3><b_4>\nnext:\n");
        let sids: Vec<Sid> = ["<a_1><b_2>", "<a_3><b_4>"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(enc.recommend_parsed(&sids, &ctx).unwrap(), by_items);
        assert!(matches!(enc.recommend(&[1, 9], &ctx), Err(Error::NoSid(9))));
    }

    #[test]
    fn max_history_cuts_recommendation_prompts_but_not_training_examples() {
        let mut index = SidIndex::new();
        index.insert(1, "<a_1><b_2>".parse().unwrap());
        index.insert(2, "<a_3><b_4>".parse().unwrap());
        index.insert(3, "<a_2><b_1>".parse().unwrap());
        let corpus = ["history: <a_1><b_2> <a_3><b_4> <a_2><b_1>\nnext:\n<a_1><b_2>\n"];
        let tk = SidTokenizer::train_bpe(corpus.iter(), 300, &index).unwrap();
        let ctx = PromptContext::default();
        let all = PromptEncoder::new(PromptStyle::Compact, &tk, &index);
        let last = all.with_max_history(Some(1));
        assert_eq!(last.max_history(), Some(1));
        let p = last.recommend(&[1, 2, 3], &ctx).unwrap();
        assert_eq!(p, all.recommend(&[3], &ctx).unwrap());
        assert_eq!(p.text, "history: <a_2><b_1>\nnext:\n");
        let sids = ["<a_1><b_2>", "<a_3><b_4>", "<a_2><b_1>"];
        assert_eq!(last.recommend_sids(&sids, &ctx).unwrap(), p);
        assert_eq!(
            last.rl_seqrec(&[1, 2, 3], &ctx).unwrap(),
            all.rl_seqrec(&[3], &ctx).unwrap()
        );
        // Shorter histories are untouched, and SFT examples keep the whole history.
        assert_eq!(
            last.with_max_history(Some(5))
                .recommend(&[1, 2], &ctx)
                .unwrap(),
            all.recommend(&[1, 2], &ctx).unwrap()
        );
        assert_eq!(
            last.sft_seqrec(&[1, 2], 3, &ctx).unwrap(),
            all.sft_seqrec(&[1, 2], 3, &ctx).unwrap()
        );
    }

    #[test]
    fn prompts_with_tokens_are_exact_and_the_response_is_the_bare_sid() {
        use crate::prompt::{ItemType, RequestContext, UserSegment};
        use std::collections::BTreeMap;
        let mut index = SidIndex::new();
        index.insert(1, "<a_1><b_2>".parse().unwrap());
        index.insert(2, "<a_3><b_4>".parse().unwrap());
        let corpus = ["history: <a_1><b_2> <a_3><b_4>\nnext:\n<a_1><b_2>\n"];
        let mut tk = SidTokenizer::train_bpe(corpus.iter(), 300, &index).unwrap();
        let all = PromptTokens::new(&TokenGroup::ALL);
        let plain_vocab = tk.vocab_size();
        tk.add_prompt_tokens(&all).unwrap();
        assert_eq!(tk.vocab_size(), plain_vocab + 9);
        let types = ItemTypes::from_map(&BTreeMap::from([(2, ItemType::Premium)]), &index);
        let ctx = PromptContext {
            user: UserSegment::Low,
            context: RequestContext::Browse,
        };

        let enc = PromptEncoder::new(PromptStyle::Compact, &tk, &index).with_tokens(all, &types);
        let p = enc.recommend(&[1, 2], &ctx).unwrap();
        assert_eq!(
            p.text,
            "[USER_LOW] [CTX_BROWSE] history: [O_TOKEN]<a_1><b_2> [I_TOKEN]<a_3><b_4>\nnext:\n"
        );
        // Each prompt token is one id.
        for t in all.token_strings() {
            let id = tk.inner().token_to_id(t).unwrap();
            assert_eq!(
                p.ids.iter().filter(|&&x| x == id).count(),
                usize::from(p.text.contains(t))
            );
        }
        let s = enc.sft_seqrec(&[1], 2, &ctx).unwrap();
        assert_eq!(
            s.text(),
            "[USER_LOW] [CTX_BROWSE] history: [O_TOKEN]<a_1><b_2>\nnext:\n"
        );
        assert_eq!(s.response, "<a_3><b_4>\n");
        // The SID-history form gives the same prompt as the item form.
        assert_eq!(
            enc.recommend_sids(&["<a_1><b_2>", "<a_3><b_4>"], &ctx)
                .unwrap(),
            p
        );

        let mm = PromptEncoder::new(PromptStyle::Minionerec, &tk, &index).with_tokens(
            PromptTokens::new(&[TokenGroup::User, TokenGroup::ItemType]),
            &types,
        );
        assert_eq!(
            mm.rl_seqrec(&[2, 1], &PromptContext::default()).unwrap().text(),
            "### User Input: \n[USER_UNKNOWN] The user has interacted with items [I_TOKEN]<a_3><b_4>, [O_TOKEN]<a_1><b_2> in chronological order. Can you predict the next possible item that the user may expect?\n\n### Response:\n"
        );
        let e = mm.recommend(&[1], &ctx).unwrap();
        assert!(e.text.ends_with(
            "### User Input: \n[USER_LOW] Can you predict the next possible item the user may expect, given the following chronological interaction history: [O_TOKEN]<a_1><b_2>\n\n### Response:\n"
        ), "{}", e.text);

        // Without tokens the prompts are the plain ones, whatever the context says.
        let plain = PromptEncoder::new(PromptStyle::Compact, &tk, &index);
        assert_eq!(
            plain.recommend(&[1, 2], &ctx).unwrap().text,
            "history: <a_1><b_2> <a_3><b_4>\nnext:\n"
        );
    }
}
