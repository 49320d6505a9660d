//! Rollouts: `G` completions per prompt from the shared constrained decoder, either beam search
//! (deterministic, best first, as the reference's `beam_search=True`) or constrained sampling.

use std::fmt;
use std::str::FromStr;

use sidrec::decode::{DecodeRequest, Decoder, Hypothesis, ScoreMode, SearchConfig};
use sidrec::model::Qwen2;
use sidrec::tokenizer::SidTokenizer;
use sidrec::{ItemId, Sid};

use super::rewards::Candidate;
use crate::error::{Result, TrainerError};

/// How completions are generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RolloutMode {
    /// Constrained beam search with `G` beams; group order = beam rank.
    #[default]
    Beam,
    /// `G` independent constrained samples at `--temperature`.
    Sample,
}

impl fmt::Display for RolloutMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RolloutMode::Beam => "beam",
            RolloutMode::Sample => "sample",
        })
    }
}

impl FromStr for RolloutMode {
    type Err = TrainerError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "beam" => Ok(RolloutMode::Beam),
            "sample" => Ok(RolloutMode::Sample),
            _ => Err(TrainerError::Invalid(format!(
                "--rollout: unknown mode `{s}` (expected beam or sample)"
            ))),
        }
    }
}

/// One generated completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The SID and its items.
    pub candidate: Candidate,
    /// Completion token ids: the SID tokens, `\n` and EOS (what the loss is computed on).
    pub tokens: Vec<u32>,
}

/// Generates groups of completions.
pub struct Roller {
    /// The constrained decoder of the catalogue.
    pub decoder: Decoder,
    /// Beam or sample.
    pub mode: RolloutMode,
    /// Completions per prompt.
    pub num_generations: usize,
    /// Sampling temperature (sample mode only).
    pub temperature: f64,
}

impl Roller {
    /// One group per prompt, in prompt order (fewer than `G` members only when the catalogue
    /// has fewer than `G` items).
    pub fn generate(
        &self,
        model: &Qwen2,
        tokenizer: &SidTokenizer,
        prompts: &[&[u32]],
    ) -> Result<Vec<Vec<Completion>>> {
        let reqs: Vec<DecodeRequest> = prompts
            .iter()
            .map(|p| DecodeRequest {
                prompt: p,
                exclude: &[],
            })
            .collect();
        let g = self.num_generations;
        let hyps = match self.mode {
            RolloutMode::Beam => self.decoder.beam_search(
                model,
                &reqs,
                &SearchConfig {
                    num_beams: g,
                    top_k: g,
                    mode: ScoreMode::Exact,
                },
            )?,
            RolloutMode::Sample => {
                self.decoder
                    .sample(model, &reqs, g, self.temperature, ScoreMode::Exact)?
            }
        };
        hyps.into_iter()
            .map(|group| group.iter().map(|h| completion(h, tokenizer)).collect())
            .collect()
    }
}

fn completion(h: &Hypothesis, tokenizer: &SidTokenizer) -> Result<Completion> {
    sid_completion(&h.sid, h.items.clone(), tokenizer)
}

/// The completion a rollout would produce for `sid` (its tokens, `\n`, EOS): how the target is
/// put into a group that missed it (`--add-target`).
pub fn sid_completion(
    sid: &Sid,
    items: Vec<ItemId>,
    tokenizer: &SidTokenizer,
) -> Result<Completion> {
    let vocab = tokenizer.sid_vocab();
    let mut tokens = sid
        .tokens()
        .map(|t| {
            vocab.token_id(t).ok_or_else(|| {
                TrainerError::Invalid(format!("SID token {t} is not in the tokenizer"))
            })
        })
        .collect::<Result<Vec<u32>>>()?;
    tokens.push(tokenizer.newline_id());
    tokens.push(tokenizer.eos_id());
    Ok(Completion {
        candidate: Candidate {
            sid: sid.to_string(),
            items,
        },
        tokens,
    })
}
