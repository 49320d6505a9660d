//! Checkpoint loading with one file damaged: `sidrec.json`, `config.json`,
//! `model.safetensors`, `tokenizer.json`, `sid_index.json` or `items.json` replaced by the
//! input, truncated, or with bytes flipped. Each file's own reader runs (the safetensors and
//! tokenizer parsers are reached without the sha256 check that would stop a full load first),
//! then the full [`Checkpoint::load`]. Any damage must give an error, never a panic.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{DType, Device};
use libfuzzer_sys::fuzz_target;
use sidrec::checkpoint::{self, Checkpoint, NewCheckpoint};
use sidrec::data::{index, items, ItemMeta, Items};
use sidrec::model::{checkpoint as hf, Qwen2, Qwen2Config, TokenIds};
use sidrec::prompt::{self, PromptStyle};
use sidrec::tokenizer::SidTokenizer;
use sidrec::{Sid, SidIndex};

const FILES: [&str; 6] = [
    checkpoint::META_FILE,
    hf::CONFIG_FILE,
    hf::WEIGHTS_FILE,
    checkpoint::TOKENIZER_FILE,
    checkpoint::SID_INDEX_FILE,
    checkpoint::ITEMS_FILE,
];

/// A tiny valid checkpoint, written once per process, and a working copy to damage.
struct Base {
    _tmp: tempfile::TempDir,
    work: PathBuf,
    originals: Vec<Vec<u8>>,
    index: SidIndex,
    eos: String,
}

fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().join("ck");
        let sids = ["<a_1><b_2><c_3>", "<a_1><b_2><c_4>", "<a_2><b_0><c_0>"];
        let mut index = SidIndex::new();
        let mut items = Items::new();
        for (i, s) in sids.iter().enumerate() {
            index.insert(i as u32, s.parse::<Sid>().unwrap());
            items.insert(i as u32, ItemMeta::new(format!("item {i}"), "d"));
        }
        let corpus: Vec<String> = sids
            .iter()
            .flat_map(|a| {
                sids.iter().map(move |b| {
                    let p = prompt::sft_seqrec(PromptStyle::Compact, &[*a], b);
                    p.text() + &p.response
                })
            })
            .collect();
        let tokenizer = SidTokenizer::train_bpe(corpus.iter(), 200, &index).unwrap();
        // Hidden 16, MLP 32, one layer, 2 heads over 1 key/value head: small and fast.
        let mut cfg = Qwen2Config::new(tokenizer.vocab_size(), 16, 32, 1, 2, 1, true);
        cfg.bos_token_id = Some(tokenizer.eos_id());
        cfg.eos_token_id = Some(TokenIds::One(tokenizer.eos_id()));
        let varmap = candle_nn::VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let model = Qwen2::new(&cfg, vb).unwrap();
        checkpoint::write(
            &work,
            &NewCheckpoint {
                model: &model,
                tokenizer: &tokenizer,
                index: &index,
                items: &items,
                prompt_style: PromptStyle::Compact,
                stage: "fuzz",
                collision_policy: "as-indexed",
                data_fingerprint: None,
                metrics: serde_json::json!({}),
                score_mode: None,
                prompt_tokens: prompt::PromptTokens::none(),
                max_history: None,
                item_window: None,
                extra_files: Vec::new(),
            },
        )
        .unwrap();
        let originals = FILES
            .iter()
            .map(|f| std::fs::read(work.join(f)).unwrap())
            .collect();
        let eos = checkpoint::read_meta(&work).unwrap().eos_token;
        Base {
            _tmp: tmp,
            work,
            originals,
            index,
            eos,
        }
    })
}

/// The damaged bytes of `original` that `data` describes.
fn damage(original: &[u8], mode: u8, data: &[u8]) -> Vec<u8> {
    match mode % 3 {
        0 => data.to_vec(),
        1 => {
            let cut = data
                .iter()
                .take(4)
                .fold(0usize, |acc, &b| acc << 8 | b as usize);
            original[..cut % (original.len() + 1)].to_vec()
        }
        _ => {
            let mut out = original.to_vec();
            if !out.is_empty() {
                for pair in data.chunks(3) {
                    let pos = pair
                        .iter()
                        .take(2)
                        .fold(0usize, |a, &b| a << 8 | b as usize);
                    let len = out.len();
                    out[pos % len] ^= pair.get(2).copied().unwrap_or(0xff);
                }
            }
            out
        }
    }
}

fn load_all(dir: &Path, index: &SidIndex, eos: &str) {
    let _ = checkpoint::read_meta(dir);
    let _ = hf::load_config(dir);
    let _ = hf::load(dir, None, &Device::Cpu);
    let _ = SidTokenizer::from_file(dir.join(checkpoint::TOKENIZER_FILE), eos, index);
    let _ = index::read_index(dir.join(checkpoint::SID_INDEX_FILE));
    let _ = items::read_items(dir.join(checkpoint::ITEMS_FILE));
    let _ = Checkpoint::load(dir, &Device::Cpu, None);
}

fuzz_target!(|data: &[u8]| {
    let [which, mode, rest @ ..] = data else {
        return;
    };
    let b = base();
    let i = *which as usize % FILES.len();
    let path = b.work.join(FILES[i]);
    std::fs::write(&path, damage(&b.originals[i], *mode, rest)).unwrap();
    load_all(&b.work, &b.index, &b.eos);
    std::fs::write(&path, &b.originals[i]).unwrap();
});
