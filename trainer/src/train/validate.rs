//! Validation during training: beam-search HR@10 / NDCG@10 with the evaluation prompt and the
//! mean loss of the SID-history task, on a fixed sample of the valid split.

use candle_core::{DType, Device};
use serde::Serialize;
use sidrec::data::InteractionRow;
use sidrec::decode::{DecodeRequest, Decoder, ScoreMode, SearchConfig};
use sidrec::metrics::MetricsAccumulator;
use sidrec::model::{Mode, Qwen2};
use sidrec::prompt::PromptEncoder;

use super::batch::{make_batch, Example};
use super::objective::{supervised_loss, LevelSets, LossOptions};
use crate::data::features::RowContexts;
use crate::error::Result;

/// Validation: beam-search HR@10 / NDCG@10 and the mean loss on a sample of the valid split.
#[derive(Debug, Clone, Serialize)]
pub struct Validation {
    /// Rows evaluated.
    pub rows: usize,
    /// HR@10.
    pub hr10: f64,
    /// NDCG@10.
    pub ndcg10: f64,
    /// Mean per-token loss of the SID-history task on the sample.
    pub loss: f64,
}

impl Validation {
    /// One progress line: `valid HR@10 … NDCG@10 … loss …`, marked when it is the best so far.
    pub fn summary(&self, best: bool) -> String {
        format!(
            "valid HR@10 {:.4} NDCG@10 {:.4} loss {:.4}{}",
            self.hr10,
            self.ndcg10,
            self.loss,
            if best { " (best)" } else { "" }
        )
    }
}

/// A fixed validation sample: beam-search prompts with their target SIDs, and loss examples.
pub struct Validator {
    /// Evaluation prompts (token ids).
    pub prompts: Vec<Vec<u32>>,
    /// Target SID string of each prompt.
    pub targets: Vec<String>,
    /// Examples whose mean loss is reported.
    pub examples: Vec<Example>,
    /// Constrained decoder of the catalogue.
    pub decoder: Decoder,
    /// Beams per prompt.
    pub num_beams: usize,
    /// Prompts per decoding batch.
    pub batch_size: usize,
    /// Beam scores: fast for a model trained with the per-level softmax, else exact.
    pub mode: ScoreMode,
    /// The per-level softmax the loss is reported with, when training uses it.
    pub levels: Option<LevelSets>,
}

impl Validator {
    /// The sample of `rows`: their next-item prompts and targets through the one prompt path,
    /// and their SID-history training examples (cut to `cutoff` ids) for the loss, decoded
    /// with `decoder` at `num_beams`.
    pub fn new(
        prompts: PromptEncoder<'_>,
        contexts: &RowContexts,
        rows: &[InteractionRow],
        cutoff: usize,
        decoder: Decoder,
        num_beams: usize,
    ) -> Result<Self> {
        let mut ids = Vec::with_capacity(rows.len());
        let mut targets = Vec::with_capacity(rows.len());
        let mut examples = Vec::with_capacity(rows.len());
        for r in rows {
            let ctx = contexts.of(r);
            let target = prompts.sid(r.item_id)?;
            ids.push(prompts.recommend(&r.history_item_id, &ctx)?.ids);
            // The response loss only, whatever `--history-loss` says for training.
            let p = prompts.sft_seqrec(&r.history_item_id, r.item_id, &ctx)?;
            examples.push(Example::encode(&prompts, &p, cutoff)?);
            targets.push(target);
        }
        Ok(Self {
            prompts: ids,
            targets,
            examples,
            decoder,
            num_beams,
            batch_size: 16,
            mode: ScoreMode::Exact,
            levels: None,
        })
    }

    /// Validate as a model trained with the per-level softmax is used: fast-mode beam scores,
    /// and the loss over the same per-level sets.
    pub fn with_levels(mut self, levels: LevelSets) -> Self {
        self.mode = ScoreMode::Fast;
        self.levels = Some(levels);
        self
    }

    /// HR@10 / NDCG@10 and the mean loss of `model` on the sample.
    pub fn run(&self, model: &Qwen2, pad: u32, device: &Device) -> Result<Validation> {
        let cfg = SearchConfig {
            num_beams: self.num_beams,
            top_k: self.num_beams.min(10),
            mode: self.mode,
        };
        let mut acc = MetricsAccumulator::new(vec![10]);
        for (chunk, targets) in self
            .prompts
            .chunks(self.batch_size)
            .zip(self.targets.chunks(self.batch_size))
        {
            let reqs: Vec<DecodeRequest> = chunk
                .iter()
                .map(|p| DecodeRequest {
                    prompt: p,
                    exclude: &[],
                })
                .collect();
            for (hyps, target) in self
                .decoder
                .beam_search(model, &reqs, &cfg)?
                .iter()
                .zip(targets)
            {
                let rank = hyps.iter().position(|h| &h.sid.to_string() == target);
                acc.add(rank, 0);
            }
        }
        let report = acc.report();
        let (mut nll, mut n) = (0f64, 0usize);
        for chunk in self.examples.chunks(self.batch_size.max(1) * 4) {
            let refs: Vec<&Example> = chunk.iter().collect();
            let batch = make_batch(&refs, pad, device)?;
            let opts = LossOptions {
                levels: self.levels.as_ref(),
                ..LossOptions::default()
            };
            nll += supervised_loss(model, &batch, opts, Mode::Infer)?
                .nll
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            n += batch.supervised;
        }
        Ok(Validation {
            rows: self.prompts.len(),
            hr10: report.hr.get(&10).copied().unwrap_or(0.0),
            ndcg10: report.ndcg.get(&10).copied().unwrap_or(0.0),
            loss: nll / n.max(1) as f64,
        })
    }
}
