//! sidrec checkpoints: an HF Qwen2 directory plus everything needed to serve it.
//!
//! Layout (DESIGN §3): `config.json`, `model.safetensors`, `tokenizer.json`,
//! `tokenizer_config.json`, `sid_index.json`, `items.json` and `sidrec.json`. A checkpoint is
//! complete only when `sidrec.json` exists: writers fill a temp directory, fsync every file,
//! write `sidrec.json` (with the sha256 of every other file) last, and rename the directory into
//! place. Readers verify the hashes, so a torn or tampered checkpoint is refused, not served.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::{index, items, Items};
use crate::decode::{check_item_free_share, Mixture, Pool, ScoreMode};
use crate::ensemble;
use crate::error::{Error, Result};
use crate::hybrid::{Hybrid, HYBRID_FILE};
use crate::model::{checkpoint as hf, ItemLookup, Qwen2};
use crate::prompt::{ItemTypes, PromptEncoder, PromptStyle, PromptTokens};
use crate::sid::SidIndex;
use crate::tokenizer::SidTokenizer;

/// The metadata file whose presence marks a complete checkpoint.
pub const META_FILE: &str = "sidrec.json";
/// SID index file name inside a checkpoint.
pub const SID_INDEX_FILE: &str = "sid_index.json";
/// Item metadata file name inside a checkpoint.
pub const ITEMS_FILE: &str = "items.json";
/// Tokenizer file name inside a checkpoint.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Current `sidrec.json` format.
pub const FORMAT_VERSION: u32 = 1;

/// What `sidrec.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Format of this file.
    pub format_version: u32,
    /// Identifier of this checkpoint, named in every response served from it.
    pub version: String,
    /// Prompt templates the model was trained with.
    pub prompt_style: PromptStyle,
    /// Number of SID levels (the longest SID).
    pub sid_levels: usize,
    /// Training stage that produced it (`init`, `sft`, `grpo`, ...).
    pub stage: String,
    /// EOS token string of the tokenizer.
    pub eos_token: String,
    /// How items that share a SID were handled when the index was built.
    pub collision_policy: String,
    /// Seconds since the Unix epoch at writing.
    pub created_unix: u64,
    /// Fingerprint of the training data (sha256 of the dataset files), if known.
    pub data_fingerprint: Option<String>,
    /// Free-form metrics (validation scores, step counts, ...).
    #[serde(default)]
    pub metrics: serde_json::Value,
    /// Beam scores the model was trained for, used where none is asked for: `fast` after
    /// `sft --sid-softmax level`; absent means `exact`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_mode: Option<ScoreMode>,
    /// Optional prompt-token groups its prompts carry (`["user", "item-type"]`); absent means
    /// none, the plain prompts of checkpoints written before the field existed.
    #[serde(default, skip_serializing_if = "PromptTokens::is_empty")]
    pub prompt_tokens: PromptTokens,
    /// How many of the latest history items its recommendation prompts keep (`sft
    /// --max-history`); absent means all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_history: Option<usize>,
    /// Items before its own that each token attended to in training (`sft --item-window`);
    /// absent means whole rows. Further SFT of the checkpoint keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_window: Option<usize>,
    /// sha256 of every other file of the checkpoint.
    pub files: BTreeMap<String, String>,
}

/// A loaded checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Where it was loaded from.
    pub dir: PathBuf,
    /// Its metadata.
    pub meta: CheckpointMeta,
    /// The model.
    pub model: Qwen2,
    /// The tokenizer, with the SID tokens.
    pub tokenizer: SidTokenizer,
    /// Item → SID.
    pub index: Arc<SidIndex>,
    /// Item metadata.
    pub items: Arc<Items>,
    /// Item types of the item table, by SID (empty unless the item-type group is on).
    pub item_types: Arc<ItemTypes>,
    /// The hybrid ranker of `hybrid.json`, when the checkpoint has one.
    pub hybrid: Option<Arc<Hybrid>>,
    /// The further models of an ensemble checkpoint (`ensemble.json`), decoded with `model`;
    /// empty for a single model.
    pub members: Vec<Qwen2>,
    /// Each model's share of the token mixture (`model` first, then `members`; they sum to
    /// one): `[1.0]` for a single model.
    pub model_weights: Vec<f64>,
    /// How an ensemble's models combine their scores (`mean` for a single model).
    pub pool: Pool,
    /// The share of the first SID level's token mixture that the models' item-free twins take
    /// (0: no twins).
    pub item_free_share: f64,
    /// The item-free twins of [`Self::models`], built the first time a mixture needs them.
    twins: OnceLock<Vec<Qwen2>>,
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// True when `dir` holds a complete checkpoint (its `sidrec.json` exists).
pub fn is_complete(dir: &Path) -> bool {
    dir.join(META_FILE).is_file()
}

/// Read and check `sidrec.json` and the hashes of the files it lists.
pub fn read_meta(dir: &Path) -> Result<CheckpointMeta> {
    let path = dir.join(META_FILE);
    if !path.is_file() {
        return Err(Error::Invalid(format!(
            "{}: not a complete sidrec checkpoint (no {META_FILE})",
            dir.display()
        )));
    }
    let meta: CheckpointMeta = crate::io::read_json(&path, "a checkpoint manifest")?;
    if meta.format_version > FORMAT_VERSION {
        return Err(Error::Invalid(format!(
            "{}: format {} is newer than this build understands ({FORMAT_VERSION})",
            path.display(),
            meta.format_version
        )));
    }
    for (name, want) in &meta.files {
        if name.contains('/') || name.contains("..") {
            return Err(Error::Invalid(format!(
                "{}: bad file name `{name}`",
                path.display()
            )));
        }
        let got = sha256_file(&dir.join(name))?;
        if &got != want {
            return Err(Error::Invalid(format!(
                "{}: sha256 mismatch (checkpoint is corrupt or was modified)",
                dir.join(name).display()
            )));
        }
    }
    Ok(meta)
}

impl CheckpointMeta {
    /// The prompt encoder these settings describe (style, prompt tokens, history limit) over a
    /// checkpoint's tokenizer, index and item types: what every loader of a checkpoint (the
    /// trainer, `eval`, the server's engine) builds its prompts with.
    pub fn prompt_encoder<'a>(
        &self,
        tokenizer: &'a SidTokenizer,
        index: &'a SidIndex,
        item_types: &'a ItemTypes,
    ) -> PromptEncoder<'a> {
        PromptEncoder::new(self.prompt_style, tokenizer, index)
            .with_tokens(self.prompt_tokens, item_types)
            .with_max_history(self.max_history)
    }
}

impl Checkpoint {
    /// Load a complete checkpoint onto `device` (weights in `dtype`, or as stored).
    /// An ensemble checkpoint loads every member.
    pub fn load(dir: impl AsRef<Path>, device: &Device, dtype: Option<DType>) -> Result<Self> {
        let mut ck = Self::load_parts(dir.as_ref(), |dir| hf::load(dir, dtype, device))?;
        if let Some(manifest) = ensemble::read_manifest(&ck.dir, &ck.meta)? {
            let members = ensemble::load_members(&ck.dir, &manifest, dtype, device)?;
            for m in &members {
                ck.check_member_model(m)?;
            }
            ck.members = members;
            ck.model_weights = manifest.checked_weights()?;
            ck.pool = manifest.pool;
            ck.item_free_share = manifest.item_free_share;
        }
        Ok(ck)
    }

    /// Load a complete single-model checkpoint whose model `load_model` builds from the
    /// directory (once), e.g. as trainable variables; everything else is read and checked as
    /// [`Self::load`] does. An ensemble is refused: training continues one model, and its
    /// members are trained (and resumed) from their own checkpoints.
    pub fn load_with(
        dir: impl AsRef<Path>,
        load_model: impl FnOnce(&Path) -> Result<Qwen2>,
    ) -> Result<Self> {
        let ck = Self::load_parts(dir.as_ref(), load_model)?;
        if ensemble::read_manifest(&ck.dir, &ck.meta)?.is_some() {
            return Err(Error::Invalid(format!(
                "{} is an ensemble ({}): training starts from one model; use one of its \
                 members' own checkpoints",
                ck.dir.display(),
                ensemble::ENSEMBLE_FILE
            )));
        }
        Ok(ck)
    }

    /// Every model of the checkpoint: its own first, then an ensemble's members.
    pub fn models(&self) -> Vec<&Qwen2> {
        std::iter::once(&self.model).chain(&self.members).collect()
    }

    /// Every model of the checkpoint with its share of the token mixture, for decoding: the
    /// ensemble's pool and item-free twins as `ensemble.json` records them.
    pub fn mixture(&self) -> Result<Mixture<'_>> {
        self.mixture_with(self.pool, self.item_free_share)
    }

    /// [`Self::mixture`] with another pool and item-free share (`eval` tries them on valid).
    pub fn mixture_with(&self, pool: Pool, item_free_share: f64) -> Result<Mixture<'_>> {
        check_item_free_share(item_free_share)?;
        let mixture = Mixture::weighted(self.models(), self.model_weights.clone())?.pooled(pool);
        if item_free_share == 0.0 {
            return Ok(mixture);
        }
        let twins = match self.twins.get() {
            Some(twins) => twins,
            None => {
                let built = (self.models().iter())
                    .map(|m| m.without_item_vectors())
                    .collect::<Result<Vec<_>>>()?;
                self.twins.get_or_init(|| built)
            }
        };
        mixture.with_item_free_twins(twins.iter().collect(), item_free_share)
    }

    fn load_parts(dir: &Path, load_model: impl FnOnce(&Path) -> Result<Qwen2>) -> Result<Self> {
        let dir = dir.to_path_buf();
        let meta = read_meta(&dir)?;
        let index = index::read_index(dir.join(SID_INDEX_FILE))?;
        let items = items::read_items(dir.join(ITEMS_FILE))?;
        let tokenizer = SidTokenizer::from_file(dir.join(TOKENIZER_FILE), &meta.eos_token, &index)?;
        tokenizer.check_prompt_tokens(&meta.prompt_tokens)?;
        let item_types = prompt_item_types(&meta.prompt_tokens, &items, &index)?;
        let hybrid = read_hybrid(&dir, &meta)?;
        let model = load_model(&dir)?;
        let ck = Self {
            dir,
            meta,
            model,
            tokenizer,
            index: Arc::new(index),
            items: Arc::new(items),
            item_types: Arc::new(item_types),
            hybrid: hybrid.map(Arc::new),
            members: Vec::new(),
            model_weights: vec![1.0],
            pool: Pool::Mean,
            item_free_share: 0.0,
            twins: OnceLock::new(),
        };
        ck.check_member_model(&ck.model)?;
        Ok(ck)
    }

    /// Attach the item lookup to a model of this checkpoint (its own or a member) and check
    /// that its vocabulary covers the tokenizer's.
    fn check_member_model(&self, model: &Qwen2) -> Result<()> {
        attach_item_lookup(model, &self.tokenizer, &self.index)?;
        if model.config().vocab_size < self.tokenizer.vocab_size() {
            return Err(Error::Invalid(format!(
                "{}: model vocabulary ({}) is smaller than the tokenizer's ({})",
                self.dir.display(),
                model.config().vocab_size,
                self.tokenizer.vocab_size()
            )));
        }
        Ok(())
    }

    /// Its prompts: the one path from a history to token ids, in its prompt style, with the
    /// prompt tokens it was trained with.
    pub fn prompts(&self) -> PromptEncoder<'_> {
        self.meta
            .prompt_encoder(&self.tokenizer, &self.index, &self.item_types)
    }

    /// The sha256 of one of its files: the hash `sidrec.json` lists, verified when it was
    /// loaded, or computed for a file it does not list.
    fn file_sha256(&self, name: &str) -> Result<String> {
        match self.meta.files.get(name) {
            Some(hash) => Ok(hash.clone()),
            None => sha256_file(&self.dir.join(name)),
        }
    }

    /// Refuse `other` as an ensemble partner of this checkpoint unless both read prompts and
    /// write SIDs alike: the same tokenizer and SID index (byte for byte) and the same prompt
    /// tokens, so that one prompt's token ids and one beam's tokens mean the same to both.
    pub fn check_ensemble_member(&self, other: &Checkpoint) -> Result<()> {
        for file in [TOKENIZER_FILE, SID_INDEX_FILE] {
            if self.file_sha256(file)? != other.file_sha256(file)? {
                return Err(Error::Invalid(format!(
                    "{} cannot join an ensemble with {}: their {file} differ (ensemble members \
                     must come from `init` runs on the same data and SID index)",
                    other.dir.display(),
                    self.dir.display()
                )));
            }
        }
        if self.meta.prompt_tokens != other.meta.prompt_tokens {
            return Err(Error::Invalid(format!(
                "{} cannot join an ensemble with {}: they were trained with different prompt \
                 tokens",
                other.dir.display(),
                self.dir.display()
            )));
        }
        Ok(())
    }
}

/// The checkpoint's `hybrid.json`, if it has one. Only a file that `sidrec.json` lists (and so
/// hash-verified) counts: one dropped in afterwards is refused rather than served unverified.
pub fn read_hybrid(dir: &Path, meta: &CheckpointMeta) -> Result<Option<Hybrid>> {
    let path = dir.join(HYBRID_FILE);
    if meta.files.contains_key(HYBRID_FILE) {
        return Hybrid::read(&path).map(Some);
    }
    if path.exists() {
        return Err(Error::Invalid(format!(
            "{}: not listed in {META_FILE}, so not verified; write hybrid checkpoints with \
             `sidrec-trainer hybrid`",
            path.display()
        )));
    }
    Ok(None)
}

/// The item types prompts with `tokens` need: read from the item table when the item-type
/// group is on, else none.
pub fn prompt_item_types(
    tokens: &PromptTokens,
    items: &Items,
    index: &SidIndex,
) -> Result<ItemTypes> {
    if tokens.has(crate::prompt::TokenGroup::ItemType) {
        ItemTypes::from_items(items, index)
    } else {
        Ok(ItemTypes::default())
    }
}

/// Attach the item lookup of `tokenizer` and `index` to `model` when it has item embeddings or a
/// copy gate (a model built from a checkpoint's config for training needs it as much as a loaded
/// one).
pub fn attach_item_lookup(model: &Qwen2, tokenizer: &SidTokenizer, index: &SidIndex) -> Result<()> {
    if model.has_item_embeddings() || model.has_copy_gate() {
        model.attach_item_lookup(ItemLookup::new(tokenizer.sid_vocab(), index)?)?;
    }
    Ok(())
}

/// What a writer provides; hashes, time and version are filled in by [`write`].
#[derive(Debug, Clone)]
pub struct NewCheckpoint<'a> {
    /// The model to save.
    pub model: &'a Qwen2,
    /// Its tokenizer.
    pub tokenizer: &'a SidTokenizer,
    /// The SID index.
    pub index: &'a SidIndex,
    /// Item metadata.
    pub items: &'a Items,
    /// Prompt style.
    pub prompt_style: PromptStyle,
    /// Training stage.
    pub stage: &'a str,
    /// Collision policy of the index.
    pub collision_policy: &'a str,
    /// Data fingerprint, if known.
    pub data_fingerprint: Option<String>,
    /// Metrics to record.
    pub metrics: serde_json::Value,
    /// Further files to store (name, bytes), e.g. a trainer's resume state; hashed like the rest.
    pub extra_files: Vec<(String, Vec<u8>)>,
    /// Beam scores the model was trained for (`None`: exact).
    pub score_mode: Option<ScoreMode>,
    /// Optional prompt-token groups the tokenizer holds and the prompts carry.
    pub prompt_tokens: PromptTokens,
    /// History items its recommendation prompts keep (`None`: all).
    pub max_history: Option<usize>,
    /// Items before its own each token attended to in training (`None`: whole rows).
    pub item_window: Option<usize>,
}

/// Write a checkpoint to `dir` atomically: build it in a temp directory beside `dir`, then
/// rename. An existing complete checkpoint at `dir` is replaced only after the new one is whole.
pub fn write(dir: impl AsRef<Path>, ck: &NewCheckpoint<'_>) -> Result<CheckpointMeta> {
    let stage = Staging::new(dir.as_ref())?;
    let tmp = stage.tmp.clone();
    stage.finish(|| {
        // A checkpoint whose prompts name tokens its tokenizer lacks could never be served.
        ck.tokenizer.check_prompt_tokens(&ck.prompt_tokens)?;
        hf::save(ck.model, &tmp)?;
        ck.tokenizer.save(&tmp)?;
        index::write_index(tmp.join(SID_INDEX_FILE), ck.index)?;
        items::write_items(tmp.join(ITEMS_FILE), ck.items)?;
        write_extra_files(&tmp, &ck.extra_files)?;
        Ok(CheckpointMeta {
            format_version: FORMAT_VERSION,
            version: String::new(),
            prompt_style: ck.prompt_style,
            sid_levels: ck.index.max_levels(),
            stage: ck.stage.to_string(),
            eos_token: ck
                .tokenizer
                .inner()
                .id_to_token(ck.tokenizer.eos_id())
                .unwrap_or_default(),
            collision_policy: ck.collision_policy.to_string(),
            created_unix: 0,
            data_fingerprint: ck.data_fingerprint.clone(),
            metrics: ck.metrics.clone(),
            score_mode: ck.score_mode,
            prompt_tokens: ck.prompt_tokens,
            max_history: ck.max_history,
            item_window: ck.item_window,
            files: BTreeMap::new(),
        })
    })
}

/// Write a new checkpoint at `dst`: the complete checkpoint `src` (verified, left untouched)
/// with `extra_files` added or replaced and `metrics` as its metrics, under a new version.
/// Atomic as [`write`]; `dst` must not be `src`.
pub fn derive(
    src: &Path,
    dst: &Path,
    extra_files: &[(String, Vec<u8>)],
    metrics: serde_json::Value,
) -> Result<CheckpointMeta> {
    let old = read_meta(src)?;
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same(src, dst) {
        return Err(Error::Invalid(format!(
            "{}: the output must be another directory than the input checkpoint",
            dst.display()
        )));
    }
    let stage = Staging::new(dst)?;
    let tmp = stage.tmp.clone();
    stage.finish(|| {
        for name in old.files.keys() {
            if extra_files.iter().any(|(n, _)| n == name) {
                continue;
            }
            let (from, to) = (src.join(name), tmp.join(name));
            std::fs::copy(&from, &to).map_err(|e| Error::io(&from, e))?;
            // The copy may have raced with a writer: the new hashes must match the verified ones.
            if sha256_file(&to)? != old.files[name] {
                return Err(Error::Invalid(format!(
                    "{}: changed while it was being copied",
                    from.display()
                )));
            }
        }
        write_extra_files(&tmp, extra_files)?;
        Ok(CheckpointMeta {
            metrics,
            files: BTreeMap::new(),
            ..old.clone()
        })
    })
}

fn write_extra_files(tmp: &Path, files: &[(String, Vec<u8>)]) -> Result<()> {
    for (name, bytes) in files {
        if name.contains('/') || name.starts_with('.') || name == META_FILE {
            return Err(Error::Invalid(format!("bad checkpoint file name `{name}`")));
        }
        crate::io::write_bytes_atomic(&tmp.join(name), bytes)?;
    }
    Ok(())
}

/// A checkpoint being written: a temp directory beside its final place.
struct Staging {
    dir: PathBuf,
    parent: PathBuf,
    name: String,
    created_unix: u64,
    tmp: PathBuf,
}

impl Staging {
    fn new(dir: &Path) -> Result<Self> {
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        let name = dir
            .file_name()
            .ok_or_else(|| Error::Invalid(format!("{}: not a directory name", dir.display())))?
            .to_string_lossy()
            .into_owned();
        let created_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let tmp = parent.join(format!(".{name}.tmp-{}-{created_unix}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            parent,
            name,
            created_unix,
            tmp,
        })
    }

    /// Run `fill` (it writes the files into the temp directory and returns the metadata less
    /// its hashes, version and time), write `sidrec.json` last and move the directory into
    /// place; on failure the temp directory is removed and nothing else changes.
    fn finish(self, fill: impl FnOnce() -> Result<CheckpointMeta>) -> Result<CheckpointMeta> {
        let tmp = &self.tmp;
        let result = (|| {
            let mut meta = fill()?;
            let mut files = BTreeMap::new();
            for entry in std::fs::read_dir(tmp).map_err(|e| Error::io(tmp, e))? {
                let entry = entry.map_err(|e| Error::io(tmp, e))?;
                let fname = entry.file_name().to_string_lossy().into_owned();
                if !fname.starts_with('.') {
                    files.insert(fname, sha256_file(&entry.path())?);
                }
            }
            let mut h = Sha256::new();
            for (f, s) in &files {
                h.update(f.as_bytes());
                h.update(s.as_bytes());
            }
            let digest = format!("{:x}", h.finalize());
            meta.format_version = FORMAT_VERSION;
            meta.version = format!("{}-{}-{}", meta.stage, self.created_unix, &digest[..12]);
            meta.created_unix = self.created_unix;
            meta.files = files;
            let json =
                serde_json::to_vec_pretty(&meta).map_err(|e| Error::Invalid(e.to_string()))?;
            // Last: its presence is what makes the checkpoint complete.
            crate::io::write_bytes_atomic(&tmp.join(META_FILE), &json)?;
            Ok(meta)
        })();
        let meta = match result {
            Ok(m) => m,
            Err(e) => {
                let _ = std::fs::remove_dir_all(tmp);
                return Err(e);
            }
        };
        let (dir, parent, name) = (&self.dir, &self.parent, &self.name);
        if dir.exists() {
            // Move the old one aside first: a rename cannot replace a non-empty directory.
            let old = parent.join(format!(
                ".{name}.old-{}-{}",
                std::process::id(),
                self.created_unix
            ));
            std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
            std::fs::rename(tmp, dir).map_err(|e| Error::io(dir, e))?;
            let _ = std::fs::remove_dir_all(&old);
        } else {
            std::fs::rename(tmp, dir).map_err(|e| Error::io(dir, e))?;
        }
        crate::io::sync_dir(parent)?;
        Ok(meta)
    }
}

/// Fingerprint of a set of files: sha256 over their names and contents' hashes.
pub fn fingerprint(paths: &[PathBuf]) -> Result<String> {
    let mut h = Sha256::new();
    for p in paths {
        h.update(
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        h.update(sha256_file(p)?.as_bytes());
    }
    Ok(format!("{:x}", h.finalize()))
}
