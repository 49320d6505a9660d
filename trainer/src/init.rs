//! `sidrec-trainer init`: an untrained from-scratch checkpoint for a dataset.
//!
//! Trains a byte-level BPE on the dataset's prompt texts (SID tokens added whole, in the
//! reference's sorted order), sizes the preset model to that vocabulary, and writes a complete
//! checkpoint. SFT starts from it; evaluation of it gives the untrained floor.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use sidrec::checkpoint::{self, NewCheckpoint};
use sidrec::data::{DatasetDir, InteractionRow, Items, Split};
use sidrec::model::checkpoint as hf;
use sidrec::model::{Qwen2, Qwen2Config, TokenIds};
use sidrec::prompt::{self, PromptStyle, PromptTokens, TokenGroup, ITEM_TYPE_FIELD};
use sidrec::tokenizer::SidTokenizer;
use sidrec::SidIndex;

use crate::cli::{InitArgs, Preset};
use crate::data::features::{Features, RowContexts};
use crate::error::{Result, TrainerError};

/// Texts the tokenizer is trained on: the prompts and responses of the training tasks, items
/// mapped to SIDs by the prompt encoder's rule (an item without a SID is an error).
pub fn tokenizer_corpus(
    style: PromptStyle,
    rows: &[InteractionRow],
    items: &Items,
    index: &SidIndex,
) -> Result<Vec<String>> {
    let sid = |id| prompt::item_sid(index, id);
    let category = "items";
    let mut texts = Vec::with_capacity(rows.len() * 2 + items.len() * 2);
    for r in rows {
        let hist = prompt::history_sids(index, &r.history_item_id)?;
        let target = sid(r.item_id)?;
        let p = prompt::sft_seqrec(style, &hist, &target);
        texts.push(p.text() + &p.response);
        let p = prompt::eval_seqrec(style, &hist);
        texts.push(p.text());
        let p = prompt::title_history_to_sid(style, category, &r.history_item_title, &target);
        texts.push(p.text() + &p.response);
    }
    for (id, meta) in items {
        // The catalogue may list items the index left out; they have no SID to learn.
        let Ok(s) = sid(*id) else { continue };
        let p = prompt::title_to_sid(style, &meta.title, &s);
        texts.push(p.text() + &p.response);
        let p = prompt::sid_to_title(style, &s, &meta.title);
        texts.push(p.text() + &p.response);
    }
    Ok(texts)
}

/// The preset's config for a vocabulary of `vocab` tokens with the given EOS id.
pub fn preset_config(preset: Preset, vocab: usize, eos_id: u32) -> Qwen2Config {
    let mut cfg = match preset {
        Preset::Tiny => Qwen2Config::tiny(vocab),
        Preset::Base => Qwen2Config::base(vocab),
        Preset::Small => Qwen2Config::small(vocab),
    };
    cfg.max_position_embeddings = 2048;
    cfg.bos_token_id = Some(eos_id);
    cfg.eos_token_id = Some(TokenIds::One(eos_id));
    cfg
}

/// `rows` of `t` (a `[n, hidden]` matrix): the first `keep` rows of `t`, then rows at the mean
/// of those `keep` rows (HF's `resize_token_embeddings` with mean initialisation, except that
/// rows past the old tokenizer are never reused: in Qwen2 checkpoints they are untrained padding).
pub fn resize_rows(t: &Tensor, keep: usize, rows: usize) -> Result<Tensor> {
    let keep = keep.min(t.dim(0)?).min(rows);
    let old = t.narrow(0, 0, keep)?;
    if rows == keep {
        return Ok(old);
    }
    let mean = old.mean_keepdim(0)?;
    let fresh = mean.repeat((rows - keep, 1))?;
    Ok(Tensor::cat(&[&old, &fresh], 0)?)
}

/// A HF Qwen2 base model with the SID tokens added: the extended tokenizer and the model.
fn from_base(
    base: &Path,
    eos: &str,
    index: &SidIndex,
    tokens: &PromptTokens,
    device: &Device,
) -> Result<(SidTokenizer, Qwen2)> {
    let tok_path = base.join("tokenizer.json");
    let inner = sidrec::tokenizer::read_tokenizer_file(&tok_path)?;
    let (mut tokenizer, old_vocab) = SidTokenizer::extend(inner, eos, index)?;
    tokenizer.add_prompt_tokens(tokens)?;
    let mut cfg = hf::load_config(base)?;
    let rows = tokenizer.vocab_size();
    let mut tensors: HashMap<String, Tensor> = hf::load_tensors(base, &Device::Cpu)?
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?)))
        .collect::<candle_core::Result<_>>()?;
    for name in ["model.embed_tokens.weight", "lm_head.weight"] {
        if let Some(t) = tensors.remove(name) {
            tensors.insert(name.to_string(), resize_rows(&t, old_vocab, rows)?);
        }
    }
    cfg.vocab_size = rows;
    let tensors = tensors
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_device(device)?)))
        .collect::<candle_core::Result<HashMap<_, _>>>()?;
    let model = Qwen2::new(&cfg, VarBuilder::from_tensors(tensors, DType::F32, device))?;
    eprintln!(
        "{}: {} SID and prompt tokens added to a {}-token vocabulary; embeddings resized to {rows} rows",
        base.display(),
        rows.saturating_sub(old_vocab),
        old_vocab
    );
    Ok((tokenizer, model))
}

/// The item table a checkpoint with `tokens` is written with: with the item-type group, every
/// item's type ([`Features::item_types`]) in its `item_type` field.
pub fn items_for_tokens(tokens: &PromptTokens, ds: &DatasetDir, items: &Items) -> Result<Items> {
    let mut items = items.clone();
    if tokens.has(TokenGroup::ItemType) {
        let types = Features::load(&ds.root)?.item_types(&items);
        let n_i = types
            .values()
            .filter(|&&t| t == prompt::ItemType::Premium)
            .count();
        eprintln!("item types: {n_i} I, {} O", types.len() - n_i);
        for (id, meta) in items.iter_mut() {
            let t = types.get(id).copied().unwrap_or(prompt::ItemType::Organic);
            meta.extra.insert(ITEM_TYPE_FIELD.into(), t.name().into());
        }
    }
    Ok(items)
}

/// `sidrec-trainer init`.
pub fn run(args: &InitArgs) -> Result<()> {
    let device = sidrec::device::parse_device(&args.device)?;
    let ds = DatasetDir::discover(&args.data)?;
    let index = ds.read_index()?;
    let tokens = PromptTokens::new(
        &args
            .prompt_tokens
            .iter()
            .map(|&g| g.into())
            .collect::<Vec<TokenGroup>>(),
    );
    // Fail here, not at the first `sft`, when the features the tokens need are missing.
    RowContexts::load(&tokens, &ds.root)?;
    let items = items_for_tokens(&tokens, &ds, &ds.read_items()?)?;
    let train = ds.read_split(Split::Train)?;
    if let Some(base) = &args.base {
        let (tokenizer, model) = from_base(base, &args.eos_token, &index, &tokens, &device)?;
        return write_init(args, &ds, &index, &items, &tokens, &tokenizer, &model);
    }
    // The BPE is trained on the plain prompts, so a checkpoint with prompt tokens has the same
    // BPE and SID ids as one without, plus the prompt tokens at the end of the vocabulary.
    let corpus = tokenizer_corpus(args.prompt_style, &train, &items, &index)?;
    eprintln!(
        "training a {}-token BPE on {} texts ...",
        args.vocab_size,
        corpus.len()
    );
    let mut tokenizer = SidTokenizer::train_bpe(corpus.iter(), args.vocab_size, &index)?;
    tokenizer.add_prompt_tokens(&tokens)?;
    let mut cfg = preset_config(args.preset, tokenizer.vocab_size(), tokenizer.eos_id());
    for (flag, value, field) in [
        ("--layers", args.layers, &mut cfg.num_hidden_layers),
        (
            "--intermediate-size",
            args.intermediate_size,
            &mut cfg.intermediate_size,
        ),
    ] {
        match value {
            Some(0) => return Err(TrainerError::Invalid(format!("{flag} must be at least 1"))),
            Some(v) => *field = v,
            None => {}
        }
    }
    if args.item_embeddings {
        cfg.item_embeddings = Some(sidrec::model::ItemLookup::rows_for(&index));
    }
    if args.copy_gate {
        cfg.copy_levels = Some(index.max_levels());
    }
    let varmap = VarMap::new();
    let model = Qwen2::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
    Qwen2::seed_fresh_weights(&varmap, &cfg, args.seed)?;
    write_init(args, &ds, &index, &items, &tokens, &tokenizer, &model)
}

fn write_init(
    args: &InitArgs,
    ds: &DatasetDir,
    index: &SidIndex,
    items: &Items,
    tokens: &PromptTokens,
    tokenizer: &SidTokenizer,
    model: &Qwen2,
) -> Result<()> {
    let mut files = vec![ds.items.clone(), ds.split_path(Split::Train)];
    files.extend(ds.index.clone());
    if tokens.has(TokenGroup::User) || tokens.has(TokenGroup::ItemType) {
        files.push(Features::path_in(&ds.root));
    }
    let meta = checkpoint::write(
        &args.out,
        &NewCheckpoint {
            model,
            tokenizer,
            index,
            items,
            prompt_style: args.prompt_style,
            stage: "init",
            collision_policy: "as-indexed",
            data_fingerprint: Some(checkpoint::fingerprint(&files)?),
            metrics: serde_json::json!({}),
            score_mode: None,
            prompt_tokens: *tokens,
            max_history: None,
            item_window: None,
            extra_files: Vec::new(),
        },
    )?;
    println!(
        "wrote {} ({} parameters, vocab {}, version {}{})",
        args.out.display(),
        model.config().num_parameters(),
        tokenizer.vocab_size(),
        meta.version,
        if tokens.is_empty() {
            String::new()
        } else {
            format!(", prompt tokens {tokens}")
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resized_rows_keep_the_old_ones_and_start_new_ones_at_their_mean() {
        let t = Tensor::new(&[[1f32, 2.], [3., 4.], [100., 100.]], &Device::Cpu).unwrap();
        // Row 2 is past the old tokenizer (padding): it is replaced, not reused.
        let r = resize_rows(&t, 2, 4).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(
            r,
            vec![vec![1., 2.], vec![3., 4.], vec![2., 3.], vec![2., 3.]]
        );
        let r = resize_rows(&t, 2, 2).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(r, vec![vec![1., 2.], vec![3., 4.]]);
    }
}
