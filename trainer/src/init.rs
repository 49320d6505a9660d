//! `sidrec-trainer init`: an untrained from-scratch checkpoint for a dataset.
//!
//! Trains a byte-level BPE on the dataset's prompt texts (SID tokens added whole, in the
//! reference's sorted order), sizes the preset model to that vocabulary, and writes a complete
//! checkpoint. SFT starts from it; evaluation of it gives the untrained floor.

use candle_core::DType;
use candle_nn::{VarBuilder, VarMap};
use sidrec::checkpoint::{self, NewCheckpoint};
use sidrec::data::{DatasetDir, InteractionRow, Items, Split};
use sidrec::model::{Qwen2, Qwen2Config, TokenIds};
use sidrec::prompt::{self, PromptStyle};
use sidrec::tokenizer::SidTokenizer;
use sidrec::SidIndex;

use crate::cli::{InitArgs, Preset};
use crate::error::Result;

/// Texts the tokenizer is trained on: the prompts and responses of the training tasks.
pub fn tokenizer_corpus(
    style: PromptStyle,
    rows: &[InteractionRow],
    items: &Items,
    index: &SidIndex,
) -> Vec<String> {
    let sid = |id| index.get(id).map(|s| s.to_string()).unwrap_or_default();
    let category = "items";
    let mut texts = Vec::with_capacity(rows.len() * 2 + items.len() * 2);
    for r in rows {
        let hist: Vec<String> = r.history_item_id.iter().map(|&i| sid(i)).collect();
        let p = prompt::sft_seqrec(style, &hist, &sid(r.item_id));
        texts.push(p.text() + &p.response);
        let p = prompt::eval_seqrec(style, &hist);
        texts.push(p.text());
        let p =
            prompt::title_history_to_sid(style, category, &r.history_item_title, &sid(r.item_id));
        texts.push(p.text() + &p.response);
    }
    for (id, meta) in items {
        let p = prompt::title_to_sid(style, &meta.title, &sid(*id));
        texts.push(p.text() + &p.response);
        let p = prompt::sid_to_title(style, &sid(*id), &meta.title);
        texts.push(p.text() + &p.response);
    }
    texts
}

/// The preset's config for a vocabulary of `vocab` tokens with the given EOS id.
pub fn preset_config(preset: Preset, vocab: usize, eos_id: u32) -> Qwen2Config {
    let mut cfg = match preset {
        Preset::Tiny => Qwen2Config::tiny(vocab),
        Preset::Small => Qwen2Config::small(vocab),
    };
    cfg.max_position_embeddings = 2048;
    cfg.bos_token_id = Some(eos_id);
    cfg.eos_token_id = Some(TokenIds::One(eos_id));
    cfg
}

/// `sidrec-trainer init`.
pub fn run(args: &InitArgs) -> Result<()> {
    let device = sidrec::device::parse_device(&args.device)?;
    let ds = DatasetDir::discover(&args.data)?;
    let index = ds.read_index()?;
    let items = ds.read_items()?;
    let train = ds.read_split(Split::Train)?;
    let corpus = tokenizer_corpus(args.prompt_style, &train, &items, &index);
    eprintln!(
        "training a {}-token BPE on {} texts ...",
        args.vocab_size,
        corpus.len()
    );
    let tokenizer = SidTokenizer::train_bpe(corpus.iter(), args.vocab_size, &index)?;
    let cfg = preset_config(args.preset, tokenizer.vocab_size(), tokenizer.eos_id());
    let varmap = VarMap::new();
    let model = Qwen2::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
    let mut files = vec![ds.items.clone(), ds.split_path(Split::Train)];
    files.extend(ds.index.clone());
    let meta = checkpoint::write(
        &args.out,
        &NewCheckpoint {
            model: &model,
            tokenizer: &tokenizer,
            index: &index,
            items: &items,
            prompt_style: args.prompt_style,
            stage: "init",
            collision_policy: "as-indexed",
            data_fingerprint: Some(checkpoint::fingerprint(&files)?),
            metrics: serde_json::json!({}),
            extra_files: Vec::new(),
        },
    )?;
    println!(
        "wrote {} ({} parameters, vocab {}, version {})",
        args.out.display(),
        cfg.num_parameters(),
        tokenizer.vocab_size(),
        meta.version
    );
    Ok(())
}
