//! The model side of the server: a loaded checkpoint ready to decode ([`Engine`]), the
//! inference facade routes call ([`infer`]), the dynamic [`batcher`] behind it and its
//! scheduling rules ([`schedule`]), [`reload`] (hot swap from a watched directory or
//! `/admin/reload`), and the engine's error type ([`EngineError`]).
//!
//! An [`Engine`] is immutable once built. Requests take an `Arc` of the engine serving when they
//! arrive, validate and encode against it, and are decoded by that same engine, so a swap never
//! mixes a catalogue with another checkpoint's model, and in-flight batches finish on the old one.

pub mod batcher;
pub mod error;
pub mod infer;
pub mod reload;
pub mod schedule;

pub use error::EngineError;
pub use infer::{BeamLimits, Infer, Prompt};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use candle_core::Device;
use sidrec::catalogue::Catalogue;
use sidrec::checkpoint::{Checkpoint, CheckpointMeta};
use sidrec::decode::{DecodeRequest, Decoder, Hypothesis, Mixture, Pool, ScoreMode, SearchConfig};
use sidrec::hybrid::Hybrid;
use sidrec::model::Qwen2;
use sidrec::prompt::{self, ItemTypes, PromptContext, PromptEncoder};
use sidrec::tokenizer::SidTokenizer;
use sidrec::{ItemId, Sid, SidIndex};

use crate::state::LoadedCatalogue;

/// Beams of the verification decode of [`Engine::verify`].
pub const VERIFY_BEAMS: usize = 4;

/// A checkpoint loaded on a device: model, tokenizer, constrained decoder and its catalogue.
pub struct Engine {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// The checkpoint as shown to clients (relative to the directory it was allowed by).
    pub name: String,
    /// Its `sidrec.json`.
    pub meta: CheckpointMeta,
    /// The catalogue (item ids ↔ SIDs ↔ titles) of this checkpoint.
    pub catalogue: Arc<LoadedCatalogue>,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// How beams are scored.
    pub mode: ScoreMode,
    /// The device it runs on (`cpu`, `cuda:0`).
    pub device: String,
    /// Parameters of the model (of every model, for an ensemble).
    pub num_parameters: usize,
    /// The checkpoint's hybrid ranker (`hybrid.json`): when present, `/v1/recommend` re-ranks
    /// the beam's items with it, as `eval` does.
    pub hybrid: Option<Arc<Hybrid>>,
    /// The checkpoint's model, then an ensemble's members.
    models: Vec<Qwen2>,
    /// Each model's share of the token mixture (they sum to one).
    model_weights: Vec<f64>,
    /// How the models' scores combine.
    pool: Pool,
    /// The models' item-free twins (empty when the checkpoint has none).
    twins: Vec<Qwen2>,
    /// The twins' share of the first SID level's token mixture (0: none).
    item_free_share: f64,
    tokenizer: SidTokenizer,
    index: Arc<SidIndex>,
    item_types: Arc<ItemTypes>,
    decoder: Decoder,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("dir", &self.dir)
            .field("version", &self.meta.version)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

/// Name of a device as the `--device` flag spells it.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

impl Engine {
    /// Load (and hash-verify) the checkpoint in `dir` onto `device` and compile its decoder;
    /// `name` is how clients see it; beams are scored in `mode`, or by default in the mode the
    /// checkpoint was trained for. Blocking: run it off the async workers.
    pub fn load(
        dir: &Path,
        name: &str,
        device: &Device,
        mode: Option<ScoreMode>,
    ) -> sidrec::Result<Self> {
        let ck = Checkpoint::load(dir, device, None)?;
        let mode = mode.or(ck.meta.score_mode).unwrap_or_default();
        let catalogue = Catalogue::new(&ck.index, &ck.items)?;
        let decoder = Decoder::for_checkpoint(&ck, device)?;
        let num_parameters = (ck.models().iter())
            .map(|m| m.config().num_parameters())
            .sum();
        let models: Vec<Qwen2> = std::iter::once(ck.model).chain(ck.members).collect();
        let twins = if ck.item_free_share > 0.0 {
            (models.iter())
                .map(Qwen2::without_item_vectors)
                .collect::<sidrec::Result<_>>()?
        } else {
            Vec::new()
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            name: name.to_owned(),
            catalogue: Arc::new(LoadedCatalogue::new(catalogue, name)),
            loaded_at: SystemTime::now(),
            mode,
            device: device_name(device),
            num_parameters,
            hybrid: ck.hybrid,
            meta: ck.meta,
            model_weights: ck.model_weights,
            pool: ck.pool,
            item_free_share: ck.item_free_share,
            models,
            twins,
            tokenizer: ck.tokenizer,
            index: ck.index,
            item_types: ck.item_types,
            decoder,
        })
    }

    /// Models decoded together: 1, or an ensemble checkpoint's size.
    pub fn num_models(&self) -> usize {
        self.models.len()
    }

    /// Each model's share of the token mixture, the checkpoint's own model first.
    pub fn model_weights(&self) -> &[f64] {
        &self.model_weights
    }

    /// How an ensemble's models combine their scores.
    pub fn pool(&self) -> Pool {
        self.pool
    }

    /// The share of the first SID level's token mixture that the item-free twins take (0: none).
    pub fn item_free_share(&self) -> f64 {
        self.item_free_share
    }

    /// The checkpoint's version, named in every response it serves.
    pub fn version(&self) -> &str {
        &self.meta.version
    }

    /// A real decode (one catalogue item as the history, [`VERIFY_BEAMS`] beams) that must
    /// return catalogue SIDs: what `/readyz` and a hot swap require before serving.
    pub fn verify(&self) -> sidrec::Result<()> {
        let first =
            self.catalogue.catalogue.iter().next().ok_or_else(|| {
                sidrec::Error::Invalid("the checkpoint's catalogue is empty".into())
            })?;
        let prompt = self.encode(
            std::slice::from_ref(&first.sid),
            1,
            &PromptContext::default(),
        )?;
        let out = self.decode(&[(prompt.as_slice(), &[][..])], VERIFY_BEAMS)?;
        let hyps = out.first().map(Vec::as_slice).unwrap_or_default();
        if hyps.is_empty() {
            return Err(sidrec::Error::Invalid(
                "verification decode returned no hypotheses".into(),
            ));
        }
        for h in hyps {
            if !h.score.is_finite() || h.items.is_empty() {
                return Err(sidrec::Error::Invalid(format!(
                    "verification decode returned an invalid hypothesis {} (score {})",
                    h.sid, h.score
                )));
            }
        }
        Ok(())
    }

    /// Its prompts: the library's one path from a history to token ids, with the prompt tokens
    /// the checkpoint was trained with, so that a history is served exactly the prompt `eval`
    /// scores and training builds.
    pub fn prompts(&self) -> PromptEncoder<'_> {
        self.meta
            .prompt_encoder(&self.tokenizer, &self.index, &self.item_types)
    }

    /// How many of a history's newest items its prompts keep under the server's
    /// `--max-history` cap: the cap, or the checkpoint's own limit (`sft --max-history`) where
    /// that is smaller.
    pub fn history_limit(&self, server_max: usize) -> usize {
        self.meta
            .max_history
            .map_or(server_max, |n| n.min(server_max))
    }

    /// Prompt tokens for a history of catalogue items (oldest first), of which the newest
    /// [`Self::history_limit`] are used, in context `ctx` (used only by a checkpoint with
    /// prompt tokens): what `/v1/recommend` decodes for `history` and `user_id`.
    pub fn encode_items(
        &self,
        history: &[ItemId],
        max_history: usize,
        ctx: &PromptContext,
    ) -> sidrec::Result<Vec<u32>> {
        let limit = Some(self.history_limit(max_history));
        Ok(self
            .prompts()
            .with_max_history(limit)
            .recommend(history, ctx)?
            .ids)
    }

    /// Prompt tokens for a history of SIDs (oldest first), of which the newest
    /// [`Self::history_limit`] are used, in context `ctx`: what `/v1/recommend` decodes for
    /// `history_sids`.
    pub fn encode(
        &self,
        history: &[Sid],
        max_history: usize,
        ctx: &PromptContext,
    ) -> sidrec::Result<Vec<u32>> {
        let limit = Some(self.history_limit(max_history));
        Ok(self
            .prompts()
            .with_max_history(limit)
            .recommend_parsed(history, ctx)?
            .ids)
    }

    /// Prompt tokens of the title→SID task for `title`, in the checkpoint's prompt style.
    pub fn encode_title(&self, title: &str) -> sidrec::Result<Vec<u32>> {
        self.prompts()
            .encode(&prompt::title_to_sid(self.meta.prompt_style, title, ""))
    }

    /// Beam search for prompts that share `num_beams`: every beam is returned, best first.
    pub fn decode(
        &self,
        prompts: &[(&[u32], &[ItemId])],
        num_beams: usize,
    ) -> sidrec::Result<Vec<Vec<Hypothesis>>> {
        let reqs: Vec<DecodeRequest> = prompts
            .iter()
            .map(|&(prompt, exclude)| DecodeRequest { prompt, exclude })
            .collect();
        let cfg = SearchConfig {
            num_beams,
            top_k: num_beams,
            mode: self.mode,
        };
        let mixture = Mixture::weighted(self.models.iter().collect(), self.model_weights.clone())?
            .pooled(self.pool)
            .with_item_free_twins(self.twins.iter().collect(), self.item_free_share)?;
        self.decoder.beam_search_ensemble(&mixture, &reqs, &cfg)
    }
}
