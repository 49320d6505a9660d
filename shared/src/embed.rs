//! Item text embeddings: the first step of SID construction.
//!
//! * [`clean_text`] / [`item_text`] build the text of an item exactly as the reference's
//!   `rq/text2emb/amazon_text2emb.py` does (`clean_text(title)` and `clean_text(description)`
//!   joined with one space, `unknown item` when both are empty);
//! * [`TextEncoder`] runs a BERT-family encoder (e.g. sentence-transformers all-MiniLM-L6-v2:
//!   a directory with `config.json`, `model.safetensors`, `tokenizer.json`) and pools its last
//!   hidden state with a masked mean (the reference's pooling), optionally L2-normalised. On the
//!   CPU the forward pass is [`bert`]'s, over the batch's real tokens only (no padding, fused
//!   element-wise passes); on other devices it is candle-transformers' `BertModel` over padded
//!   batches;
//! * [`TextEncoder::encode_all`] embeds many texts in length-sorted batches and returns a
//!   [`Matrix`] in input order, ready for [`crate::npy::write_npy`].
//!
//! Differences from the reference, all deliberate:
//! * the encoder is a small BERT model rather than the user-supplied decoder LLM the reference
//!   runs (in fp16 with `max_length` 2048); the default maximum length here is 256 tokens
//!   (all-MiniLM-L6-v2's trained length) and texts are truncated to it;
//! * texts are batched by token length instead of in item order; nothing is padded on the CPU,
//!   and elsewhere padding is to the longest text of each batch (the encoder's `tokenizer.json`
//!   pads everything to 128 tokens, which is overridden). With masked mean pooling the result
//!   does not depend on the batching beyond floating-point rounding.

mod bert;
pub mod cooc;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
#[cfg(feature = "cuda")]
use candle_transformers::models::bert::BertModel;
use tokenizers::utils::padding::{PaddingDirection, PaddingParams, PaddingStrategy};
use tokenizers::utils::truncation::TruncationParams;
use tokenizers::{Encoding, Tokenizer};

use crate::data::{ItemMeta, Items};
use crate::error::{Error, Result};
use crate::npy::Matrix;
use crate::sid::ItemId;

/// Text used for an item whose title and description are both empty after cleaning.
pub const UNKNOWN_ITEM: &str = "unknown item";

/// Cleaned texts of this many characters or more are dropped (the reference's cut-off).
pub const MAX_CLEAN_CHARS: usize = 2000;

/// Python's `str.isspace()` (what `str.strip()` removes).
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// Python's `\w` for `str` patterns: alphanumeric (Unicode) or `_`.
fn is_py_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Remove every match of the reference's `</?\w+[^>]*>` (an HTML-ish tag).
fn remove_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(lt) = rest.find('<') {
        out.push_str(&rest[..lt]);
        let after = &rest[lt + 1..];
        let name = after.strip_prefix('/').unwrap_or(after);
        let is_tag = name.chars().next().is_some_and(is_py_word);
        match after.find('>') {
            Some(gt) if is_tag => rest = &after[gt + 1..],
            _ => {
                out.push('<');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The reference's `clean_text` (for a string value):
///
/// 1. strip surrounding whitespace;
/// 2. unescape HTML entities (`html.unescape`);
/// 3. remove `</?\w+[^>]*>` tags;
/// 4. delete every `"`, `\n` and `\r`;
/// 5. replace the run of trailing dots by exactly one `.` (append `.` when there is none; as in
///    the reference the first character is never counted, so `"."` becomes `".."`);
/// 6. return `""` when the result has [`MAX_CLEAN_CHARS`] characters or more.
///
/// So `""` becomes `"."`. HTML unescaping uses the HTML5 entity table (as Python does);
/// Python's extras for malformed input (legacy entity names without `;`, the cp1252 mapping of
/// numeric references 0x80–0x9f) are not reproduced.
pub fn clean_text(raw: &str) -> String {
    let stripped = raw.trim_matches(is_py_space);
    let unescaped = html_escape::decode_html_entities(stripped);
    let mut text = remove_tags(&unescaped);
    text.retain(|c| !matches!(c, '"' | '\n' | '\r'));
    let chars = text.chars().count();
    let trailing = text.chars().rev().take_while(|&c| c == '.').count();
    let cut = trailing.min(chars.saturating_sub(1));
    // Dots are one byte each, so `cut` characters are `cut` bytes.
    text.truncate(text.len() - cut);
    text.push('.');
    if text.chars().count() >= MAX_CLEAN_CHARS {
        return String::new();
    }
    text
}

/// The text embedded for an item: cleaned title and description, each kept when non-empty after
/// stripping, joined with one space; [`UNKNOWN_ITEM`] when neither is kept.
pub fn item_text(meta: &ItemMeta) -> String {
    let parts: Vec<String> = [&meta.title, &meta.description]
        .into_iter()
        .map(|v| clean_text(v).trim_matches(is_py_space).to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if parts.is_empty() {
        UNKNOWN_ITEM.to_string()
    } else {
        parts.join(" ")
    }
}

/// Ids and texts of all items, in item id order (the row order of the embedding matrix).
pub fn item_texts(items: &Items) -> (Vec<ItemId>, Vec<String>) {
    items.iter().map(|(id, m)| (*id, item_text(m))).unzip()
}

/// How [`TextEncoder::encode_all`] batches and pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Texts per forward pass.
    pub batch_size: usize,
    /// L2-normalise each embedding.
    pub normalize: bool,
    /// Batch texts of similar token length together (much less padding); the output order is
    /// the input order either way.
    pub sort_by_length: bool,
    /// Cap on `texts × longest length` per batch (0: no cap). Long texts then go in smaller
    /// batches, which bounds the working memory of a forward pass.
    pub max_batch_tokens: usize,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            batch_size: 64,
            normalize: false,
            sort_by_length: true,
            max_batch_tokens: 4096,
        }
    }
}

/// Files a text-encoder directory must hold.
pub const ENCODER_FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];

/// The forward pass a [`TextEncoder`] runs.
enum Model {
    /// Packed tokens on the CPU.
    Packed(bert::Bert),
    /// candle-transformers' model over padded batches, and the device they go to. Only CUDA
    /// builds have another device than the CPU, so only they compile candle-transformers.
    #[cfg(feature = "cuda")]
    Padded(BertModel, Device),
}

/// A BERT-family sentence encoder with masked mean pooling.
pub struct TextEncoder {
    model: Model,
    /// Pads to the longest text of a batch, truncates to `max_length`.
    tokenizer: Tokenizer,
    /// The same without padding (for pre-tokenising everything before batching).
    unpadded: Tokenizer,
    dim: usize,
    max_length: usize,
    dir: PathBuf,
}

fn at(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{}: {e}", path.display()))
}

impl TextEncoder {
    /// Load `dir` (`config.json`, `model.safetensors`, `tokenizer.json` of a BERT-family model)
    /// on `device`; texts are truncated to `max_length` tokens.
    pub fn load(dir: impl AsRef<Path>, device: &Device, max_length: usize) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(Error::Invalid(format!(
                "encoder directory {} does not exist (scripts/fetch-encoder.sh {} fetches \
                 all-MiniLM-L6-v2 there)",
                dir.display(),
                dir.display()
            )));
        }
        let missing: Vec<&str> = ENCODER_FILES
            .into_iter()
            .filter(|f| !dir.join(f).is_file())
            .collect();
        if !missing.is_empty() {
            return Err(Error::Invalid(format!(
                "encoder directory {} lacks {} (expected a BERT-family model: {})",
                dir.display(),
                missing.join(", "),
                ENCODER_FILES.join(", ")
            )));
        }
        if max_length == 0 {
            return Err(Error::Invalid("max length must be at least 1 token".into()));
        }

        let cfg_path = dir.join("config.json");
        let cfg: bert::Config = crate::io::read_json(&cfg_path, "a BERT config")?;
        if max_length > cfg.max_position_embeddings {
            return Err(Error::Invalid(format!(
                "max length {max_length} exceeds the encoder's {} positions ({})",
                cfg.max_position_embeddings,
                cfg_path.display()
            )));
        }

        let weights = dir.join("model.safetensors");
        let bytes = std::fs::read(&weights).map_err(|e| Error::io(&weights, e))?;
        let tensors =
            candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| at(&weights, e))?;
        drop(bytes);
        let model = if device.is_cpu() {
            Model::Packed(bert::Bert::load(&tensors, &cfg).map_err(|e| at(&weights, e))?)
        } else {
            Self::padded(tensors, &cfg_path, device).map_err(|e| at(&weights, e))?
        };

        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer = crate::tokenizer::read_tokenizer_file(&tok_path)?;
        let padding = tokenizer.get_padding().cloned().unwrap_or_default();
        let truncation = TruncationParams {
            max_length,
            ..tokenizer.get_truncation().cloned().unwrap_or_default()
        };
        tokenizer
            .with_truncation(Some(truncation))
            .map_err(|e| at(&tok_path, e))?;
        let mut unpadded = tokenizer.clone();
        unpadded.with_padding(None);
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            ..padding
        }));

        Ok(Self {
            model,
            tokenizer,
            unpadded,
            dim: cfg.hidden_size,
            max_length,
            dir: dir.to_path_buf(),
        })
    }

    /// Embedding dimension (the model's hidden size).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Maximum tokens per text (longer texts are truncated).
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The tokenizer used for batches (longest-in-batch padding, truncation to `max_length`).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn tokenize(&self, tok: &Tokenizer, texts: &[&str]) -> Result<Vec<Encoding>> {
        tok.encode_batch_fast(texts.to_vec(), true)
            .map_err(|e| at(&self.dir.join("tokenizer.json"), e))
    }

    /// Token ids of `text` as the encoder sees it (special tokens included, truncated).
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.tokenize(&self.unpadded, &[text])?;
        Ok(enc[0].get_ids().to_vec())
    }

    /// candle-transformers' padded model of the encoder at `cfg_path` on a non-CPU `device`.
    #[cfg(feature = "cuda")]
    fn padded(
        tensors: std::collections::HashMap<String, Tensor>,
        cfg_path: &Path,
        device: &Device,
    ) -> Result<Model> {
        use candle_transformers::models::bert::Config;
        let cfg: Config = crate::io::read_json(cfg_path, "a BERT config")?;
        let vb = candle_nn::VarBuilder::from_tensors(tensors, candle_core::DType::F32, device);
        Ok(Model::Padded(BertModel::load(vb, &cfg)?, device.clone()))
    }

    /// Without CUDA there is no device but the CPU, whose model is the packed one.
    #[cfg(not(feature = "cuda"))]
    fn padded(
        _tensors: std::collections::HashMap<String, Tensor>,
        _cfg_path: &Path,
        device: &Device,
    ) -> Result<Model> {
        Err(Error::Invalid(format!(
            "the text encoder runs on the CPU or, in a build with `--features cuda`, on CUDA; \
             not on {device:?}"
        )))
    }

    /// Embed one batch of texts: `[texts.len(), dim]`, row-major.
    pub fn encode_batch(&self, texts: &[&str], normalize: bool) -> Result<Vec<f32>> {
        let tok = match self.model {
            Model::Packed(_) => &self.unpadded,
            #[cfg(feature = "cuda")]
            Model::Padded(..) => &self.tokenizer,
        };
        let encodings = self.tokenize(tok, texts)?;
        let refs: Vec<&Encoding> = encodings.iter().collect();
        self.forward(&refs, normalize, &mut bert::Scratch::default())
    }

    /// Run the model on already tokenised texts; `[n, dim]`.
    fn forward(
        &self,
        encodings: &[&Encoding],
        normalize: bool,
        scratch: &mut bert::Scratch,
    ) -> Result<Vec<f32>> {
        if encodings.is_empty() {
            return Ok(Vec::new());
        }
        let mut pooled = match &self.model {
            Model::Packed(m) => {
                // Encodings from the unpadded tokenizer: every token is real.
                let texts: Vec<(&[u32], &[u32])> = encodings
                    .iter()
                    .map(|e| (e.get_ids(), e.get_type_ids()))
                    .collect();
                m.pooled(&texts, scratch)?
            }
            #[cfg(feature = "cuda")]
            Model::Padded(m, dev) => self.pooled_padded(m, dev, encodings)?,
        };
        if normalize {
            for row in pooled.chunks_exact_mut(self.dim) {
                // torch.nn.functional.normalize: x / max(||x||, 1e-12)
                let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                row.iter_mut().for_each(|x| *x /= norm);
            }
        }
        Ok(pooled)
    }

    /// candle-transformers' model on the texts padded to the longest, masked mean; `[n, dim]`.
    #[cfg(feature = "cuda")]
    fn pooled_padded(
        &self,
        model: &BertModel,
        dev: &Device,
        encodings: &[&Encoding],
    ) -> Result<Vec<f32>> {
        let n = encodings.len();
        let len = encodings.iter().map(|e| e.len()).max().unwrap_or(0).max(1);
        // The padding `load` gave the batch tokenizer (the encoder's own pad ids).
        let padding = self.tokenizer.get_padding().cloned().unwrap_or_default();
        let mut ids = vec![padding.pad_id; n * len];
        let mut types = vec![padding.pad_type_id; n * len];
        let mut mask = vec![0u32; n * len];
        for (i, e) in encodings.iter().enumerate() {
            let row = i * len;
            let l = e.len();
            ids[row..row + l].copy_from_slice(e.get_ids());
            types[row..row + l].copy_from_slice(e.get_type_ids());
            mask[row..row + l].copy_from_slice(e.get_attention_mask());
        }
        let ids = Tensor::from_vec(ids, (n, len), dev)?;
        let types = Tensor::from_vec(types, (n, len), dev)?;
        let mask = Tensor::from_vec(mask, (n, len), dev)?;
        let hidden = model.forward(&ids, &types, Some(&mask))?; // [n, len, dim]
        let mask = mask.to_dtype(candle_core::DType::F32)?.unsqueeze(2)?; // [n, len, 1]
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // [n, dim]
        let counts = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?; // [n, 1]
        let pooled = summed.broadcast_div(&counts)?;
        Ok(pooled.flatten_all()?.to_vec1::<f32>()?)
    }

    /// Embed `texts` (in batches of `opts.batch_size`, by token length if `opts.sort_by_length`)
    /// into a `[texts.len(), dim]` matrix in input order. `progress(n)` is called after each
    /// batch with the number of texts it held.
    pub fn encode_all<S: AsRef<str>>(
        &self,
        texts: &[S],
        opts: EncodeOptions,
        mut progress: impl FnMut(usize),
    ) -> Result<Matrix> {
        let batch_size = opts.batch_size.max(1);
        let refs: Vec<&str> = texts.iter().map(|t| t.as_ref()).collect();
        let encodings = self.tokenize(&self.unpadded, &refs)?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        if opts.sort_by_length {
            // Longest first: the largest batch shapes are allocated once, at the start.
            order.sort_by_key(|&i| std::cmp::Reverse(encodings[i].len()));
        }
        let dim = self.dim;
        let mut data = vec![0f32; texts.len() * dim];
        let mut batches: Vec<&[usize]> = Vec::new();
        let mut start = 0;
        while start < order.len() {
            let mut end = start;
            let mut longest = 0;
            while end < order.len() && end - start < batch_size {
                let l = longest.max(encodings[order[end]].len());
                if end > start
                    && opts.max_batch_tokens > 0
                    && l * (end - start + 1) > opts.max_batch_tokens
                {
                    break;
                }
                longest = l;
                end += 1;
            }
            batches.push(&order[start..end]);
            start = end;
        }
        let mut scratch = bert::Scratch::default();
        for chunk in batches {
            let batch: Vec<&Encoding> = chunk.iter().map(|&i| &encodings[i]).collect();
            let out = self.forward(&batch, opts.normalize, &mut scratch)?;
            for (k, &i) in chunk.iter().enumerate() {
                data[i * dim..(i + 1) * dim].copy_from_slice(&out[k * dim..(k + 1) * dim]);
            }
            progress(chunk.len());
        }
        Ok(Matrix::new(texts.len(), dim, data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_text_matches_the_reference() {
        // Entities are unescaped, then tags removed, then quotes and newlines deleted.
        assert_eq!(clean_text("  Tom &amp; Jerry  "), "Tom & Jerry.");
        assert_eq!(clean_text("5&quot; pipe"), "5 pipe.");
        assert_eq!(clean_text("&lt;b&gt;bold&lt;/b&gt; text"), "bold text.");
        assert_eq!(clean_text("a <br/>b<p class=x>c</p>"), "a bc.");
        assert_eq!(clean_text("1 < 2 and 3 > 2"), "1 < 2 and 3 > 2.");
        assert_eq!(clean_text("a <3 b"), "a <3 b.");
        assert_eq!(clean_text("x </ y>"), "x </ y>.");
        assert_eq!(clean_text("line1\nline2\r\n\"q\""), "line1line2q.");
        assert_eq!(
            clean_text("&rdquo;Hi&rdquo; &#39;x&#x27;"),
            "\u{201d}Hi\u{201d} 'x'."
        );
        // Trailing dots collapse to one; the first character is never counted.
        assert_eq!(clean_text("Wrench..."), "Wrench.");
        assert_eq!(clean_text("Wrench. "), "Wrench.");
        assert_eq!(clean_text("Wrench"), "Wrench.");
        assert_eq!(clean_text(""), ".");
        assert_eq!(clean_text("   "), ".");
        assert_eq!(clean_text("."), "..");
        assert_eq!(clean_text("..."), "..");
        // The description format MiniOneRec stores (a Python list repr) keeps its brackets.
        assert_eq!(
            clean_text("['Pack of 50', 'Zinc']"),
            "['Pack of 50', 'Zinc']."
        );
        assert_eq!(clean_text("[]"), "[].");
        // 2000 characters or more (after the final dot) are dropped.
        assert_eq!(clean_text(&"é".repeat(1998)).chars().count(), 1999);
        assert_eq!(clean_text(&"é".repeat(1999)), "");
        assert_eq!(clean_text(&"x".repeat(5000)), "");
        assert_eq!(clean_text(&format!("{}...", "x".repeat(1998))).len(), 1999);
    }

    #[test]
    fn item_text_joins_cleaned_fields() {
        assert_eq!(
            item_text(&ItemMeta::new("Hex bolt", "['Zinc plated']")),
            "Hex bolt. ['Zinc plated']."
        );
        assert_eq!(item_text(&ItemMeta::new("Hex bolt", "")), "Hex bolt. .");
        assert_eq!(
            item_text(&ItemMeta::new("Hex bolt", "x".repeat(3000))),
            "Hex bolt."
        );
        assert_eq!(
            item_text(&ItemMeta::new("t".repeat(2000), "d".repeat(2000))),
            UNKNOWN_ITEM
        );
        let mut items = Items::new();
        items.insert(7, ItemMeta::new("b", ""));
        items.insert(2, ItemMeta::new("a", ""));
        let (ids, texts) = item_texts(&items);
        assert_eq!(ids, vec![2, 7]);
        assert_eq!(texts, vec!["a. .", "b. ."]);
    }
}
