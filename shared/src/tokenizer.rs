//! Tokenizers with SID tokens: a HuggingFace `tokenizer.json` extended the way the reference's
//! TokenExtender does it, or a small byte-level BPE trained from scratch on a dataset's text.

use std::path::Path;

use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, DecoderWrapper, PostProcessorWrapper, PreTokenizerWrapper};
use tokenizers::{Tokenizer, TokenizerBuilder};

use crate::error::{Error, Result};
use crate::prompt::{Prompt, PromptTokens};
use crate::sid::SidIndex;
use crate::trie::SidVocab;

/// End-of-text token of from-scratch tokenizers (Qwen2's base EOS, so tooling treats it alike).
pub const EOS_TOKEN: &str = "<|endoftext|>";

fn tok_err(what: impl std::fmt::Display, e: tokenizers::Error) -> Error {
    Error::Invalid(format!("{what}: {e}"))
}

/// Read a `tokenizer.json` with the tokenizers library. A damaged file is an error naming it,
/// never a panic.
pub fn read_tokenizer_file(path: &Path) -> Result<Tokenizer> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    // Parsed into a JSON value first (which checks the syntax, UTF-8 and escapes of the whole
    // file), then read from that value: the tokenizers library panics when its own parse of
    // the `decoder` member fails (on a truncated file, invalid UTF-8 or a lone surrogate
    // escape, found by fuzzing), which cannot happen on a value already parsed. Anything else
    // it might panic on is caught.
    let json: serde_json::Value = crate::io::parse_json(path, &bytes, "a tokenizer file")?;
    std::panic::catch_unwind(|| serde_json::from_value::<Tokenizer>(json))
        .map_err(|_| {
            Error::Invalid(format!(
                "{}: the tokenizers library cannot read this file",
                path.display()
            ))
        })?
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
}

/// A tokenizer that knows the catalogue's SID tokens, its EOS and its newline token.
#[derive(Clone)]
pub struct SidTokenizer {
    inner: Tokenizer,
    eos_id: u32,
    newline_id: u32,
    sid_vocab: SidVocab,
}

impl std::fmt::Debug for SidTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SidTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("eos_id", &self.eos_id)
            .field("newline_id", &self.newline_id)
            .finish()
    }
}

impl SidTokenizer {
    /// Wrap a tokenizer that already holds every SID token of `index` as a single token.
    pub fn new(inner: Tokenizer, eos_token: &str, index: &SidIndex) -> Result<Self> {
        let eos_id = inner
            .token_to_id(eos_token)
            .ok_or_else(|| Error::Invalid(format!("tokenizer has no EOS token `{eos_token}`")))?;
        let nl = inner
            .encode_fast("\n", false)
            .map_err(|e| tok_err("encoding a newline", e))?;
        let &[newline_id] = nl.get_ids() else {
            return Err(Error::Invalid(format!(
                "the tokenizer splits a newline into {} tokens; SID decoding needs exactly one",
                nl.get_ids().len()
            )));
        };
        let mut missing = Vec::new();
        let sid_vocab = SidVocab::from_fn(index, |tok| {
            let id = inner.token_to_id(&tok.to_string());
            if id.is_none() {
                missing.push(tok.to_string());
            }
            id
        });
        if !missing.is_empty() {
            missing.truncate(5);
            return Err(Error::Invalid(format!(
                "tokenizer lacks SID tokens of the index (e.g. {}); extend it with the index",
                missing.join(", ")
            )));
        }
        let sid_vocab = sid_vocab?;
        Ok(Self {
            inner,
            eos_id,
            newline_id,
            sid_vocab,
        })
    }

    /// Load `tokenizer.json`, checking it covers `index`. A damaged file is an error, never a
    /// panic.
    pub fn from_file(path: impl AsRef<Path>, eos_token: &str, index: &SidIndex) -> Result<Self> {
        let inner = read_tokenizer_file(path.as_ref())?;
        Self::new(without_padding(inner), eos_token, index)
    }

    /// The reference's TokenExtender: add every SID token (Python string order) as a normal
    /// added token. Returns the tokenizer and the vocabulary size before the extension.
    pub fn extend(base: Tokenizer, eos_token: &str, index: &SidIndex) -> Result<(Self, usize)> {
        let mut base = without_padding(base);
        let old = base.get_vocab_size(true);
        let tokens: Vec<AddedToken> = index
            .sorted_token_strings()
            .into_iter()
            .map(|t| AddedToken::from(t, false))
            .collect();
        base.add_tokens(&tokens);
        Ok((Self::new(base, eos_token, index)?, old))
    }

    /// Train a byte-level BPE of about `vocab_size` tokens on `texts`, then add the SID tokens
    /// (and EOS) as whole tokens: the tokenizer of a from-scratch model.
    pub fn train_bpe<I, S>(texts: I, vocab_size: usize, index: &SidIndex) -> Result<Self>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
    {
        let mut trainer = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(vec![AddedToken::from(EOS_TOKEN, true)])
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let mut tk: tokenizers::TokenizerImpl<
            BPE,
            NormalizerWrapper,
            PreTokenizerWrapper,
            PostProcessorWrapper,
            DecoderWrapper,
        > = TokenizerBuilder::new()
            .with_model(BPE::default())
            .with_normalizer(None)
            .with_pre_tokenizer(Some(ByteLevel::new(false, true, true).into()))
            .with_post_processor(Some(ByteLevel::new(false, true, true).into()))
            .with_decoder(Some(ByteLevel::new(false, true, true).into()))
            .build()
            .map_err(|e| tok_err("building the BPE tokenizer", e))?;
        // SID tokens never reach the BPE trainer: they are removed from the training text so
        // that no merges are spent on their pieces.
        let sids: Vec<String> = index.sorted_token_strings();
        let texts = texts.map(|t| strip_sid_tokens(t.as_ref()));
        tk.train(&mut trainer, texts)
            .map_err(|e| tok_err("training the BPE tokenizer", e))?;
        let mut tokenizer: Tokenizer = tk.into();
        let added: Vec<AddedToken> = sids
            .into_iter()
            .map(|t| AddedToken::from(t, false))
            .collect();
        tokenizer.add_tokens(&added);
        Self::new(tokenizer, EOS_TOKEN, index)
    }

    /// Add the tokens of `tokens`' groups as single special tokens (after every other token,
    /// so the BPE and SID ids stay those of the same tokenizer without them). Idempotent.
    pub fn add_prompt_tokens(&mut self, tokens: &PromptTokens) -> Result<()> {
        let added: Vec<AddedToken> = tokens
            .token_strings()
            .into_iter()
            .map(|t| AddedToken::from(t, true))
            .collect();
        self.inner.add_special_tokens(&added);
        self.check_prompt_tokens(tokens)
    }

    /// An error naming the first token of `tokens`' groups that is not a single token here.
    pub fn check_prompt_tokens(&self, tokens: &PromptTokens) -> Result<()> {
        for t in tokens.token_strings() {
            let single = self
                .inner
                .encode_fast(t, false)
                .map(|e| {
                    e.get_ids().len() == 1 && self.inner.token_to_id(t) == Some(e.get_ids()[0])
                })
                .unwrap_or(false);
            if !single {
                return Err(Error::Invalid(format!(
                    "the tokenizer has no single token `{t}` (prompt tokens {tokens}); \
                     it was not built with them"
                )));
            }
        }
        Ok(())
    }

    /// Tokens of `text`, without special tokens.
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| tok_err("encoding text", e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of a prompt: each part encoded separately, concatenated (as the reference).
    pub fn encode_prompt(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        for part in &prompt.parts {
            ids.extend(self.encode_text(part)?);
        }
        Ok(ids)
    }

    /// Token ids of the prompt's response followed by EOS (the supervised part of SFT).
    pub fn encode_response(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        let mut ids = self.encode_text(&prompt.response)?;
        ids.push(self.eos_id);
        Ok(ids)
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| tok_err("decoding tokens", e))
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Id of the EOS token.
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Id of the single token that encodes `"\n"`.
    pub fn newline_id(&self) -> u32 {
        self.newline_id
    }

    /// The SID-token ids.
    pub fn sid_vocab(&self) -> &SidVocab {
        &self.sid_vocab
    }

    /// The wrapped HuggingFace tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Write `tokenizer.json` and a `tokenizer_config.json` that `transformers` understands.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        let json = self
            .inner
            .to_string(true)
            .map_err(|e| tok_err("serialising the tokenizer", e))?;
        crate::io::write_bytes_atomic(&dir.join("tokenizer.json"), json.as_bytes())?;
        let eos = self.inner.id_to_token(self.eos_id).unwrap_or_default();
        let config = serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "eos_token": eos,
            "pad_token": eos,
            "padding_side": "left",
            "model_max_length": 4096,
            "clean_up_tokenization_spaces": false,
        });
        let text =
            serde_json::to_string_pretty(&config).map_err(|e| Error::Invalid(e.to_string()))?;
        crate::io::write_bytes_atomic(&dir.join("tokenizer_config.json"), text.as_bytes())
    }
}

/// Padding is the batcher's job (left padding, per batch); a fixed padding in the file would
/// inflate every prompt.
fn without_padding(mut t: Tokenizer) -> Tokenizer {
    t.with_padding(None);
    t.with_truncation(None).ok();
    t
}

/// Remove `<x_N>` SID tokens from a text.
fn strip_sid_tokens(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        match tail.find('>') {
            Some(end) if tail[..=end].parse::<crate::sid::SidToken>().is_ok() => {
                rest = &tail[end + 1..];
            }
            _ => {
                out.push('<');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::{eval_seqrec, PromptStyle};
    use crate::sid::Sid;

    fn index() -> SidIndex {
        [
            (0, Sid::from_codes(vec![1, 2, 3])),
            (1, Sid::from_codes(vec![10, 2, 30])),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn trained_bpe_keeps_sid_tokens_whole() {
        let idx = index();
        let texts = (0..50).map(|i| format!("the user bought item {i} and then <a_1><b_2><c_3>\n"));
        let tk = SidTokenizer::train_bpe(texts, 300, &idx).unwrap();
        let ids = tk.encode_text("<a_10><b_2><c_30>\n").unwrap();
        let expect: Vec<u32> = ["<a_10>", "<b_2>", "<c_30>"]
            .iter()
            .map(|t| tk.inner().token_to_id(t).unwrap())
            .chain([tk.newline_id()])
            .collect();
        assert_eq!(ids, expect);
        assert_eq!(tk.decode(&ids).unwrap(), "<a_10><b_2><c_30>\n");
        // Prompt parts are encoded separately and concatenated.
        let p = eval_seqrec(PromptStyle::Minionerec, &["<a_1><b_2><c_3>"]);
        let whole: Vec<u32> = p
            .parts
            .iter()
            .flat_map(|part| tk.encode_text(part).unwrap())
            .collect();
        assert_eq!(tk.encode_prompt(&p).unwrap(), whole);
        assert_eq!(strip_sid_tokens("a<a_1>b<c>d<z_9"), "ab<c>d<z_9");
        let dir = tempfile::tempdir().unwrap();
        tk.save(dir.path()).unwrap();
        let back =
            SidTokenizer::from_file(dir.path().join("tokenizer.json"), EOS_TOKEN, &idx).unwrap();
        assert_eq!(back.encode_prompt(&p).unwrap(), whole);
        assert_eq!(back.sid_vocab().len(), tk.sid_vocab().len());
    }

    /// Regression (fuzzing, `checkpoint_files`): a truncated `tokenizer.json` made the
    /// tokenizers library panic while reading the `decoder` member.
    #[test]
    fn a_truncated_tokenizer_file_is_an_error() {
        let idx = index();
        let texts = (0..20).map(|i| format!("item {i} <a_1><b_2><c_3>\n"));
        let tk = SidTokenizer::train_bpe(texts, 300, &idx).unwrap();
        let dir = tempfile::tempdir().unwrap();
        tk.save(dir.path()).unwrap();
        let path = dir.path().join("tokenizer.json");
        let whole = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&whole);
        let decoder = text.find("\"decoder\"").expect("a decoder member") + 20;
        let cuts = (0..whole.len())
            .step_by(whole.len() / 150 + 1)
            .chain([decoder]);
        for cut in cuts {
            std::fs::write(&path, &whole[..cut]).unwrap();
            assert!(
                SidTokenizer::from_file(&path, EOS_TOKEN, &idx).is_err(),
                "cut at {cut}"
            );
        }
    }

    /// Regression (fuzzing, `checkpoint_files`): one byte of the `decoder` member flipped to
    /// invalid UTF-8 made the tokenizers library panic (caught, but a panic all the same); a
    /// lone surrogate escape did too. Both are now refused by the JSON check, before the
    /// library parses anything (its panics would read "cannot read this file").
    #[test]
    fn a_tokenizer_file_with_invalid_text_is_an_error() {
        let idx = index();
        let texts = (0..20).map(|i| format!("item {i} <a_1><b_2><c_3>\n"));
        let tk = SidTokenizer::train_bpe(texts, 300, &idx).unwrap();
        let dir = tempfile::tempdir().unwrap();
        tk.save(dir.path()).unwrap();
        let path = dir.path().join("tokenizer.json");
        let whole = std::fs::read_to_string(&path).unwrap();
        let decoder = whole.find("\"decoder\"").expect("a decoder member");
        let at = decoder
            + whole[decoder..]
                .find("\"ByteLevel\"")
                .expect("a ByteLevel decoder")
            + 9;
        let mut flipped = whole.clone().into_bytes();
        flipped[at] ^= 0xff;
        let surrogate = format!("{}\\ud800{}", &whole[..at], &whole[at..]);
        for bad in [flipped, surrogate.into_bytes()] {
            std::fs::write(&path, &bad).unwrap();
            let e = SidTokenizer::from_file(&path, EOS_TOKEN, &idx).unwrap_err();
            let msg = e.to_string();
            assert!(msg.starts_with(&path.display().to_string()), "{msg}");
            assert!(!msg.contains("cannot read this file"), "{msg}");
        }
        // The undamaged file still loads.
        std::fs::write(&path, &whole).unwrap();
        SidTokenizer::from_file(&path, EOS_TOKEN, &idx).unwrap();
    }

    #[test]
    fn missing_sid_tokens_are_reported() {
        let idx = index();
        let tk = SidTokenizer::train_bpe(["hello world\n"; 10].into_iter(), 280, &idx).unwrap();
        let mut other = idx.clone();
        other.insert(2, Sid::from_codes(vec![7, 7, 7]));
        let e = SidTokenizer::new(tk.inner().clone(), EOS_TOKEN, &other).unwrap_err();
        assert!(e.to_string().contains("<a_7>"), "{e}");
    }
}
