//! SASRec, the sequential-recommendation baseline of the MiniOneRec paper and the model behind
//! its `cf` reward (MINIONEREC.md §8).
//!
//! * [`model`] — the network (the reference's one-block, one-head SASRec) in candle;
//! * [`train`] — `sidrec-trainer sasrec`: BCE with one sampled negative (or full softmax CE),
//!   Adam, full-ranking validation every epoch, early stopping on NDCG@20;
//! * [`eval`] — `sidrec-trainer eval --baseline sasrec|popularity|transition`: full-ranking
//!   evaluation with the generative eval's metric code and report shape.
//!
//! A model directory holds `model.safetensors` (the reference's `state_dict` names),
//! `metrics.jsonl` (one line per epoch) and `sasrec.json` ([`SasRecMeta`]: shape, item
//! vocabulary, training settings, validation metrics, the weights' sha256). It is written into a
//! temp directory beside its final place and renamed there, `sasrec.json` last.

pub mod eval;
pub mod model;
pub mod train;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use sidrec::metrics::MetricsReport;
use sidrec::ItemId;

use crate::error::{Result, TrainerError};
pub use model::{SasRecConfig, SasRecNet, SeqBatch};
pub use train::{SasRecArgs, SasRecLoss};

/// Version of the `sasrec.json` layout.
pub const FORMAT_VERSION: u32 = 1;
/// Weights file of a model directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Metadata file of a model directory; its presence marks the directory complete.
pub const META_FILE: &str = "sasrec.json";
/// Per-epoch log of a training run.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// How a model was trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Dataset directory.
    pub data: String,
    /// `bce` or `ce`.
    pub loss: String,
    /// Seed of initialisation, data order, negatives and dropout.
    pub seed: u64,
    /// Adam learning rate.
    pub lr: f64,
    /// Adam (L2) weight decay.
    pub weight_decay: f64,
    /// Rows per optimizer step.
    pub batch_size: usize,
    /// Epochs without a better valid NDCG@20 before stopping.
    pub patience: usize,
    /// Training rows.
    pub train_rows: usize,
    /// Validation rows.
    pub valid_rows: usize,
    /// Epochs run.
    pub epochs_run: usize,
    /// Epoch (1-based) whose weights were kept.
    pub best_epoch: usize,
    /// Wall time of training, validation included (s).
    pub wall_seconds: f64,
}

/// `sasrec.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SasRecMeta {
    /// Layout version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// `sasrec-<unix time>-<weights sha256 prefix>`.
    pub version: String,
    /// Network shape.
    pub config: SasRecConfig,
    /// Item id of each vocabulary index (the padding index is `items.len()`).
    pub items: Vec<ItemId>,
    /// Training settings and outcome (absent for hand-made models).
    pub train: Option<TrainSummary>,
    /// Full-ranking validation metrics of the kept weights.
    pub valid: Option<MetricsReport>,
    /// sha256 of `model.safetensors`, checked on load.
    pub weights_sha256: String,
    /// Creation time (Unix seconds).
    pub created_unix: u64,
}

/// A trained SASRec model ready to score: weights, shape and item vocabulary.
pub struct SasRec {
    /// Its `sasrec.json`.
    pub meta: SasRecMeta,
    net: SasRecNet,
    index: HashMap<ItemId, u32>,
    device: Device,
}

impl SasRec {
    /// Wrap a network and its vocabulary (`items[i]` is vocabulary index `i`).
    pub fn new(net: SasRecNet, meta: SasRecMeta, device: &Device) -> Result<Self> {
        if meta.items.len() != net.cfg.num_items || meta.config != net.cfg {
            return Err(TrainerError::Invalid(format!(
                "sasrec: {} vocabulary items for a {}-item network",
                meta.items.len(),
                net.cfg.num_items
            )));
        }
        let index: HashMap<ItemId, u32> = meta
            .items
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, i as u32))
            .collect();
        if index.len() != meta.items.len() {
            return Err(TrainerError::Invalid(
                "sasrec: the item vocabulary repeats an id".into(),
            ));
        }
        Ok(Self {
            meta,
            net,
            index,
            device: device.clone(),
        })
    }

    /// Load a model directory written by `sidrec-trainer sasrec` (or [`SasRec::save`]).
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let meta_path = dir.join(META_FILE);
        let meta: SasRecMeta = sidrec::io::read_json(&meta_path, "a sasrec.json")?;
        if meta.format_version != FORMAT_VERSION {
            return Err(TrainerError::Invalid(format!(
                "{}: format_version {} (this build reads {FORMAT_VERSION})",
                meta_path.display(),
                meta.format_version
            )));
        }
        let weights = dir.join(WEIGHTS_FILE);
        let sha = sidrec::checkpoint::sha256_file(&weights)?;
        if sha != meta.weights_sha256 {
            return Err(TrainerError::Invalid(format!(
                "{}: sha256 {sha} differs from sasrec.json's {}",
                weights.display(),
                meta.weights_sha256
            )));
        }
        let tensors = candle_core::safetensors::load(&weights, device)
            .map_err(|e| TrainerError::Invalid(format!("{}: {e}", weights.display())))?;
        let net = SasRecNet::from_tensors(meta.config, tensors.into_iter().collect())
            .map_err(|e| TrainerError::Invalid(format!("{}: {e}", weights.display())))?;
        Self::new(net, meta, device)
    }

    /// Write this model to `dir` atomically (temp directory beside it, then rename).
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let work = work_dir_for(dir.as_ref())?;
        std::fs::create_dir_all(&work).map_err(|e| TrainerError::io(&work, e))?;
        finish_model_dir(
            &work,
            dir.as_ref(),
            &self.net.snapshot()?,
            self.meta.clone(),
        )?;
        Ok(())
    }

    /// The network.
    pub fn net(&self) -> &SasRecNet {
        &self.net
    }

    /// Item ids by vocabulary index.
    pub fn items(&self) -> &[ItemId] {
        &self.meta.items
    }

    /// Vocabulary index of an item id.
    pub fn index_of(&self, id: ItemId) -> Option<u32> {
        self.index.get(&id).copied()
    }

    fn index_of_str(&self, id: &str, what: &str) -> Result<u32> {
        id.trim()
            .parse::<ItemId>()
            .ok()
            .and_then(|i| self.index_of(i))
            .ok_or_else(|| TrainerError::Invalid(format!("sasrec: unknown {what} item id `{id}`")))
    }

    fn indices(&self, ids: &[ItemId], what: &str) -> Result<Vec<u32>> {
        ids.iter()
            .map(|&i| {
                self.index_of(i).ok_or_else(|| {
                    TrainerError::Invalid(format!("sasrec: unknown {what} item id `{i}`"))
                })
            })
            .collect()
    }

    /// Hidden states `[B, h]` after histories of vocabulary indices.
    fn hidden(&self, histories: &[&[u32]]) -> Result<Tensor> {
        let batch = SeqBatch::new(histories, &self.net.cfg, &self.device)?;
        self.net.hidden(&batch, None)
    }

    /// Raw logits (the reference's `cf` reward) of `candidate_item_ids` as the next item after
    /// `history_item_ids` (oldest first). Unknown ids and an empty history are errors.
    pub fn score_candidates(
        &self,
        history_item_ids: &[String],
        candidate_item_ids: &[String],
    ) -> Result<Vec<f32>> {
        let mut out = self.score_candidates_batch(
            std::slice::from_ref(&history_item_ids.to_vec()),
            std::slice::from_ref(&candidate_item_ids.to_vec()),
        )?;
        Ok(out.pop().unwrap_or_default())
    }

    /// [`SasRec::score_candidates`] for many histories in one forward pass; row `i` scores
    /// `candidates[i]` (rows may hold different numbers of candidates).
    pub fn score_candidates_batch(
        &self,
        histories: &[Vec<String>],
        candidates: &[Vec<String>],
    ) -> Result<Vec<Vec<f32>>> {
        if histories.len() != candidates.len() {
            return Err(TrainerError::Invalid(format!(
                "sasrec: {} histories for {} candidate lists",
                histories.len(),
                candidates.len()
            )));
        }
        if histories.is_empty() {
            return Ok(Vec::new());
        }
        let hist: Vec<Vec<u32>> = histories
            .iter()
            .map(|h| {
                h.iter()
                    .map(|i| self.index_of_str(i, "history"))
                    .collect::<Result<_>>()
            })
            .collect::<Result<_>>()?;
        let width = candidates.iter().map(Vec::len).max().unwrap_or(0);
        if width == 0 {
            return Ok(vec![Vec::new(); histories.len()]);
        }
        // Short rows are padded with index 0 and cut back afterwards.
        let mut flat = Vec::with_capacity(candidates.len() * width);
        for c in candidates {
            for i in c {
                flat.push(self.index_of_str(i, "candidate")?);
            }
            flat.extend(std::iter::repeat_n(0u32, width - c.len()));
        }
        let refs: Vec<&[u32]> = hist.iter().map(Vec::as_slice).collect();
        let hidden = self.hidden(&refs)?;
        let items = Tensor::from_vec(flat, (candidates.len(), width), &self.device)?;
        let scores = self
            .net
            .candidate_logits(&hidden, &items)?
            .to_vec2::<f32>()?;
        Ok(scores
            .into_iter()
            .zip(candidates)
            .map(|(mut row, c)| {
                row.truncate(c.len());
                row
            })
            .collect())
    }

    /// Logits over the whole vocabulary after each history of item ids, `[B][num_items]` (in
    /// vocabulary order, see [`SasRec::items`]).
    pub fn score_all(&self, histories: &[&[ItemId]]) -> Result<Vec<Vec<f32>>> {
        let hist: Vec<Vec<u32>> = histories
            .iter()
            .map(|h| self.indices(h, "history"))
            .collect::<Result<_>>()?;
        let refs: Vec<&[u32]> = hist.iter().map(Vec::as_slice).collect();
        let hidden = self.hidden(&refs)?;
        Ok(self.net.all_logits(&hidden)?.to_vec2::<f32>()?)
    }

    /// The `k` best item ids after `history`, best first, with their logits (full ranking; ties
    /// go to the lower vocabulary index).
    pub fn recommend(&self, history: &[ItemId], k: usize) -> Result<Vec<(ItemId, f32)>> {
        let scores = self.score_all(&[history])?;
        let row = scores.first().map(Vec::as_slice).unwrap_or_default();
        Ok(top_k(row, k)
            .into_iter()
            .map(|i| (self.meta.items[i], row[i]))
            .collect())
    }
}

/// Indices of the `k` largest scores, best first; ties go to the lower index.
pub fn top_k(scores: &[f32], k: usize) -> Vec<usize> {
    let better = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then_with(|| a.cmp(b));
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    let k = k.min(idx.len());
    if k == 0 {
        return Vec::new();
    }
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, better);
        idx.truncate(k);
    }
    idx.sort_by(better);
    idx
}

/// 0-based full-ranking position of `target`: items scored higher, plus items scored equal with
/// a lower index (the order [`top_k`] gives).
pub fn rank_of_target(scores: &[f32], target: usize) -> usize {
    let t = scores[target];
    scores
        .iter()
        .enumerate()
        .filter(|&(i, &s)| s.total_cmp(&t).is_gt() || (s.total_cmp(&t).is_eq() && i < target))
        .count()
}

/// A hidden work directory beside `dir` for building it.
pub fn work_dir_for(dir: &Path) -> Result<PathBuf> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = dir
        .file_name()
        .ok_or_else(|| TrainerError::Invalid(format!("{}: not a directory name", dir.display())))?
        .to_string_lossy()
        .into_owned();
    let now = unix_now();
    let work = parent.join(format!(".{name}.tmp-{}-{now}", std::process::id()));
    if work.exists() {
        std::fs::remove_dir_all(&work).map_err(|e| TrainerError::io(&work, e))?;
    }
    Ok(work)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Complete a model directory: write the weights into `work`, then `sasrec.json` (with the
/// weights' hash and a fresh version), fsync, and rename `work` to `dir` (replacing an old one
/// only once the new one is whole). Returns the written metadata.
pub fn finish_model_dir(
    work: &Path,
    dir: &Path,
    tensors: &[(String, Tensor)],
    mut meta: SasRecMeta,
) -> Result<SasRecMeta> {
    let result = (|| -> Result<SasRecMeta> {
        let mut sorted: Vec<(String, Tensor)> = tensors
            .iter()
            .map(|(n, t)| Ok((n.clone(), t.to_device(&Device::Cpu)?.contiguous()?)))
            .collect::<Result<_>>()?;
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let bytes = safetensors::serialize(sorted.iter().map(|(k, t)| (k.as_str(), t)), None)
            .map_err(|e| TrainerError::Invalid(format!("serialising SASRec weights: {e}")))?;
        let weights = work.join(WEIGHTS_FILE);
        sidrec::io::write_bytes_atomic(&weights, &bytes)?;
        meta.weights_sha256 = sidrec::checkpoint::sha256_file(&weights)?;
        meta.created_unix = unix_now();
        meta.version = format!(
            "sasrec-{}-{}",
            meta.created_unix,
            &meta.weights_sha256[..12.min(meta.weights_sha256.len())]
        );
        meta.format_version = FORMAT_VERSION;
        let json = serde_json::to_vec_pretty(&meta)
            .map_err(|e| TrainerError::Invalid(format!("serialising sasrec.json: {e}")))?;
        // Last: its presence is what makes the directory a model.
        sidrec::io::write_bytes_atomic(&work.join(META_FILE), &json)?;
        Ok(meta)
    })();
    let meta = match result {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_dir_all(work);
            return Err(e);
        }
    };
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if dir.exists() {
        // A rename cannot replace a non-empty directory: move the old one aside first.
        let mut old = work.as_os_str().to_owned();
        old.push(".old");
        let old = PathBuf::from(old);
        std::fs::rename(dir, &old).map_err(|e| TrainerError::io(dir, e))?;
        std::fs::rename(work, dir).map_err(|e| TrainerError::io(dir, e))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(work, dir).map_err(|e| TrainerError::io(dir, e))?;
    }
    sidrec::io::sync_dir(parent)?;
    Ok(meta)
}

/// SASRec's raw logits are the GRPO `cf` reward (the reference's `cf_reward`).
impl crate::grpo::rewards::CfScorer for SasRec {
    fn score_candidates(
        &self,
        history_item_ids: &[String],
        candidate_item_ids: &[String],
    ) -> Result<Vec<f32>> {
        SasRec::score_candidates(self, history_item_ids, candidate_item_ids)
    }
}
