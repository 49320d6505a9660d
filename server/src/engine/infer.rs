//! The inference facade (text-generation-inference's `Infer`): the one place that turns
//! prepared prompts into batcher jobs, admits them and waits for their answers. Routes prepare
//! prompts against an engine and call [`Infer::generate`] or [`Infer::generate_call`]; they
//! never build jobs or touch the queue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sidrec::ItemId;

use super::batcher::{Batcher, BatcherConfig, Job, JobOutput, JobReceiver};
use super::{Engine, EngineError};
use crate::metrics::Metrics;

/// Beam limits of one request and of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeamLimits {
    /// Most beams of one request (`num_beams`, or `limit` of a `mode=model` lookup).
    pub per_request: usize,
    /// Most beams of one call, summed over its requests (`/v1/recommend/batch`).
    pub per_call: usize,
}

impl Default for BeamLimits {
    fn default() -> Self {
        Self {
            per_request: 200,
            per_call: 64 * 200,
        }
    }
}

/// One prompt, ready to decode.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// Prompt tokens (from [`Engine::encode`] or [`Engine::encode_title`]).
    pub tokens: Vec<u32>,
    /// Items the decoder must not return.
    pub exclude: Vec<ItemId>,
    /// Beam width.
    pub num_beams: usize,
}

/// A call of several prompts answers this long before its deadline, with what is done by then:
/// an entry that overruns costs only itself, not the whole call.
pub const CALL_ANSWER_MARGIN: Duration = Duration::from_millis(25);

/// The facade: the batcher and the beam limits.
#[derive(Debug)]
pub struct Infer {
    batcher: Batcher,
    limits: BeamLimits,
}

impl Infer {
    /// Start the batcher's compute thread.
    pub fn start(
        cfg: BatcherConfig,
        limits: BeamLimits,
        metrics: Metrics,
    ) -> std::io::Result<Self> {
        Ok(Self {
            batcher: Batcher::start(cfg, metrics)?,
            limits,
        })
    }

    /// The batching limits in force.
    pub fn batcher_config(&self) -> BatcherConfig {
        self.batcher.config()
    }

    /// The beam limits in force.
    pub fn beam_limits(&self) -> BeamLimits {
        self.limits
    }

    /// Jobs waiting now.
    pub fn queue_depth(&self) -> usize {
        self.batcher.queue_depth()
    }

    /// Measured decoding rate in beams per second (none before the first decode).
    pub fn beams_per_second(&self) -> Option<f64> {
        self.batcher.beams_per_second()
    }

    /// Decode one full batch (as many prompts and beams as a batch may hold) with `engine`
    /// before it serves, so that admission starts from a measured rate rather than a guess.
    /// Blocking: run it off the async workers.
    pub fn warm_up(&self, engine: &Engine) -> sidrec::Result<()> {
        let cfg = self.batcher.config();
        let Some(first) = engine.catalogue.catalogue.iter().next() else {
            return Ok(());
        };
        let prompt = engine.encode(
            std::slice::from_ref(&first.sid),
            1,
            &sidrec::prompt::PromptContext::default(),
        )?;
        let prompts = cfg.max_batch_size.max(1);
        let beams = (cfg.max_batch_beams / prompts).clamp(1, self.limits.per_request);
        let batch: Vec<(&[u32], &[ItemId])> = vec![(prompt.as_slice(), &[][..]); prompts];
        let start = Instant::now();
        engine.decode(&batch, beams)?;
        self.batcher.seed_rate(prompts * beams, start.elapsed());
        Ok(())
    }

    fn check_request(&self, p: &Prompt, field: &'static str) -> Result<(), EngineError> {
        if p.num_beams == 0 || p.num_beams > self.limits.per_request {
            return Err(EngineError::BeamLimit {
                field,
                message: format!(
                    "{field} must be between 1 and {} on this server, got {}",
                    self.limits.per_request, p.num_beams
                ),
            });
        }
        Ok(())
    }

    /// Decode one prompt on `engine` before `deadline`: refused at once when it cannot finish
    /// in time. `field` names the input that set its beam width (for a limit error).
    pub async fn generate(
        &self,
        engine: &Arc<Engine>,
        prompt: Prompt,
        field: &'static str,
        deadline: Instant,
    ) -> Result<JobOutput, EngineError> {
        self.check_request(&prompt, field)?;
        let (job, rx) = Job::new(
            engine.clone(),
            prompt.tokens,
            prompt.exclude,
            prompt.num_beams,
            deadline,
        );
        self.batcher.submit(vec![job]).remove(0)?;
        wait(rx, deadline).await
    }

    /// Decode the prompts of one call (`/v1/recommend/batch`) before `deadline`. Each prompt
    /// is admitted on its own, and answered, refused or timed out on its own (prompts are
    /// answered by [`CALL_ANSWER_MARGIN`] before `deadline`, so that the call can still answer
    /// with the rest); when none is admitted the whole call is refused with the first refusal.
    /// The call's beams must stay within [`BeamLimits::per_call`].
    pub async fn generate_call(
        &self,
        engine: &Arc<Engine>,
        prompts: Vec<Prompt>,
        deadline: Instant,
    ) -> Result<Vec<Result<JobOutput, EngineError>>, EngineError> {
        for p in &prompts {
            self.check_request(p, "num_beams")?;
        }
        let total: usize = prompts.iter().map(|p| p.num_beams).sum();
        if total > self.limits.per_call {
            return Err(EngineError::BeamLimit {
                field: "requests",
                message: format!(
                    "the requests ask for {total} beams in all; this server takes at most {} \
                     per call",
                    self.limits.per_call
                ),
            });
        }
        if prompts.is_empty() {
            return Ok(Vec::new());
        }
        let deadline = deadline.checked_sub(CALL_ANSWER_MARGIN).unwrap_or(deadline);
        let (jobs, receivers): (Vec<Job>, Vec<JobReceiver>) = prompts
            .into_iter()
            .map(|p| Job::new(engine.clone(), p.tokens, p.exclude, p.num_beams, deadline))
            .unzip();
        let verdicts = self.batcher.submit(jobs);
        if verdicts.iter().all(Result::is_err) {
            let first = verdicts.into_iter().find_map(Result::err);
            return Err(first.unwrap_or(EngineError::Stopped));
        }
        let mut out = Vec::with_capacity(verdicts.len());
        for (verdict, rx) in verdicts.into_iter().zip(receivers) {
            out.push(match verdict {
                Ok(()) => wait(rx, deadline).await,
                Err(e) => Err(e),
            });
        }
        Ok(out)
    }
}

/// Wait for a job's answer until `deadline`.
async fn wait(rx: JobReceiver, deadline: Instant) -> Result<JobOutput, EngineError> {
    match tokio::time::timeout_at(deadline.into(), rx).await {
        Err(_) => Err(EngineError::DeadlineExceeded),
        Ok(Ok(answer)) => answer,
        // The batcher answers or sheds every job it takes; a dropped sender means it stopped.
        Ok(Err(_)) if Instant::now() >= deadline => Err(EngineError::DeadlineExceeded),
        Ok(Err(_)) => Err(EngineError::Stopped),
    }
}
