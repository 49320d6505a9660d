//! Dynamic batching, in the style of text-generation-inference's router: the inference facade
//! ([`super::infer`]) offers decode jobs to a queue; one dedicated compute thread (not a tokio
//! worker) takes the next batch, waiting up to `max_batch_wait` for it to fill, and decodes it
//! with one `beam_search` call.
//!
//! Admission, order, batch forming and shedding are the plain-data rules of
//! [`super::schedule`]; this module only runs them under a lock and moves jobs and answers
//! between threads. A batch holds jobs of one engine and one beam width (one call has one model
//! and one beam width); `k` and exclusions are per job and never split a batch.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sidrec::decode::Hypothesis;
use sidrec::ItemId;
use tokio::sync::oneshot;

use super::schedule::{Limits, Offer, Queue, Refusal};
use super::{Engine, EngineError};
use crate::metrics::Metrics;

/// Batching limits.
#[derive(Debug, Clone, Copy)]
pub struct BatcherConfig {
    /// Most prompts decoded together.
    pub max_batch_size: usize,
    /// Most beams (summed over prompts) decoded together.
    pub max_batch_beams: usize,
    /// Longest a batch waits for more jobs after its first.
    pub max_batch_wait: Duration,
    /// Most jobs waiting; past it submissions get 429.
    pub max_queue: usize,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        Self {
            max_batch_size: 8,
            max_batch_beams: 400,
            max_batch_wait: Duration::from_millis(2),
            max_queue: 256,
        }
    }
}

/// What a finished job gets back.
#[derive(Debug, Clone)]
pub struct JobOutput {
    /// Every beam, best first.
    pub hypotheses: Vec<Hypothesis>,
    /// Time from submission to the start of its decode.
    pub queue: Duration,
    /// Time of the decode call that served it.
    pub inference: Duration,
}

/// The receiving half of a submitted job.
pub type JobReceiver = oneshot::Receiver<Result<JobOutput, EngineError>>;

/// One prompt to decode.
pub struct Job {
    /// The engine that validated and encoded it (and will decode it).
    pub engine: Arc<Engine>,
    /// Prompt tokens.
    pub prompt: Vec<u32>,
    /// Items the decoder must not return.
    pub exclude: Vec<ItemId>,
    /// Beam width.
    pub num_beams: usize,
    /// Past this instant nobody waits for the answer.
    pub deadline: Instant,
    enqueued: Instant,
    reply: oneshot::Sender<Result<JobOutput, EngineError>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("version", &self.engine.version())
            .field("prompt_tokens", &self.prompt.len())
            .field("num_beams", &self.num_beams)
            .finish_non_exhaustive()
    }
}

impl Job {
    /// A job and the receiver its answer arrives on.
    pub fn new(
        engine: Arc<Engine>,
        prompt: Vec<u32>,
        exclude: Vec<ItemId>,
        num_beams: usize,
        deadline: Instant,
    ) -> (Self, JobReceiver) {
        let (tx, rx) = oneshot::channel();
        let job = Job {
            engine,
            prompt,
            exclude,
            num_beams,
            deadline,
            enqueued: Instant::now(),
            reply: tx,
        };
        (job, rx)
    }

    fn offer(self) -> Offer<Job> {
        Offer {
            cost: self.num_beams as u64,
            // The engine's address tells engines apart while jobs hold them.
            group: (Arc::as_ptr(&self.engine) as usize, self.num_beams),
            deadline: self.deadline,
            item: self,
        }
    }
}

impl From<Refusal> for EngineError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::QueueFull {
                queued,
                retry_after,
            } => EngineError::QueueFull {
                queued,
                retry_after,
            },
            Refusal::WouldMissDeadline { retry_after } => {
                EngineError::WouldMissDeadline { retry_after }
            }
            Refusal::Expired | Refusal::Cancelled => EngineError::DeadlineExceeded,
        }
    }
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue<Job>>,
    wake: Condvar,
    closed: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue<Job>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Handle on the queue and its compute thread. The thread ends when the handle is dropped
/// and the queue is empty.
#[derive(Debug)]
pub struct Batcher {
    shared: Arc<Shared>,
    cfg: BatcherConfig,
    metrics: Metrics,
}

impl Batcher {
    /// Start the compute thread.
    pub fn start(cfg: BatcherConfig, metrics: Metrics) -> std::io::Result<Self> {
        let cfg = BatcherConfig {
            max_batch_size: cfg.max_batch_size.max(1),
            max_batch_beams: cfg.max_batch_beams.max(1),
            max_queue: cfg.max_queue.max(1),
            ..cfg
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::new(Limits {
                max_prompts: cfg.max_batch_size,
                max_cost: cfg.max_batch_beams as u64,
                max_queue: cfg.max_queue,
            })),
            wake: Condvar::new(),
            closed: AtomicBool::new(false),
        });
        let worker = Worker {
            shared: shared.clone(),
            cfg,
            metrics: metrics.clone(),
        };
        std::thread::Builder::new()
            .name("sidrec-batcher".into())
            .spawn(move || worker.run())?;
        Ok(Self {
            shared,
            cfg,
            metrics,
        })
    }

    /// The limits in force.
    pub fn config(&self) -> BatcherConfig {
        self.cfg
    }

    /// Jobs waiting now.
    pub fn queue_depth(&self) -> usize {
        self.shared.lock().len()
    }

    /// Measured decoding rate, in beams per second (none before the first decode).
    pub fn beams_per_second(&self) -> Option<f64> {
        self.shared.lock().rate().rate()
    }

    /// Seed the rate estimate from a decode measured outside the batcher (a checkpoint's
    /// verification), while no batch has been measured.
    pub fn seed_rate(&self, beams: usize, elapsed: Duration) {
        self.shared.lock().seed_rate(beams as u64, elapsed);
    }

    /// Offer the jobs of one call; each is queued or refused on its own (see
    /// [`super::schedule`]). The verdicts come in the order of `jobs`.
    pub fn submit(&self, jobs: Vec<Job>) -> Vec<Result<(), EngineError>> {
        let now = Instant::now();
        let offers = jobs.into_iter().map(Job::offer).collect();
        let (verdicts, depth) = {
            let mut q = self.shared.lock();
            let v = q.admit(offers, now);
            (v, q.len())
        };
        self.metrics.queue_depth.set(depth as i64);
        self.shared.wake.notify_one();
        verdicts
            .into_iter()
            .map(|v| {
                v.map_err(|(_job, why)| {
                    self.metrics.refused.with_label_values(&[why.label()]).inc();
                    EngineError::from(why)
                })
            })
            .collect()
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
    }
}

impl Refusal {
    /// Metric label of the reason.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::QueueFull { .. } => "queue_full",
            Refusal::WouldMissDeadline { .. } => "would_miss_deadline",
            Refusal::Expired => "expired",
            Refusal::Cancelled => "cancelled",
        }
    }
}

struct Worker {
    shared: Arc<Shared>,
    cfg: BatcherConfig,
    metrics: Metrics,
}

impl Worker {
    fn run(self) {
        loop {
            let mut q = self.shared.lock();
            while q.is_empty() {
                if self.shared.closed.load(Ordering::SeqCst) {
                    tracing::debug!("batcher stopped");
                    return;
                }
                q = self.shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            // Give the batch a moment to fill, unless it is full already.
            let until = Instant::now() + self.cfg.max_batch_wait;
            while !q.batch_full() {
                let now = Instant::now();
                if now >= until {
                    break;
                }
                q = self
                    .shared
                    .wake
                    .wait_timeout(q, until - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            let batch = q.next_batch(Instant::now(), |j| !j.reply.is_closed());
            self.metrics.queue_depth.set(q.len() as i64);
            drop(q);
            for (job, why) in batch.shed {
                self.metrics.refused.with_label_values(&[why.label()]).inc();
                let _ = job.reply.send(Err(why.into()));
            }
            if batch.jobs.is_empty() {
                self.shared.lock().finished(0, Duration::ZERO);
                continue;
            }
            let start = Instant::now();
            self.run_group(batch.jobs, start);
            self.shared.lock().finished(batch.cost, start.elapsed());
        }
    }

    fn run_group(&self, group: Vec<Job>, start: Instant) {
        let engine = group[0].engine.clone();
        let num_beams = group[0].num_beams;
        let prompts: Vec<(&[u32], &[ItemId])> = group
            .iter()
            .map(|j| (j.prompt.as_slice(), j.exclude.as_slice()))
            .collect();
        // A panic in the decoder must not take the compute thread (and the server) down.
        let result =
            std::panic::catch_unwind(AssertUnwindSafe(|| engine.decode(&prompts, num_beams)));
        let inference = start.elapsed();
        let m = &self.metrics;
        m.inference_duration.observe(inference.as_secs_f64());
        m.batch_size.observe(group.len() as f64);
        m.beams_decoded.inc_by((group.len() * num_beams) as u64);
        let result = match result {
            Ok(Ok(out)) if out.len() == group.len() => Ok(out),
            Ok(Ok(out)) => Err(format!(
                "decoder returned {} results for {} prompts",
                out.len(),
                group.len()
            )),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the decoder panicked".to_string()),
        };
        match result {
            Ok(outs) => {
                for (job, hypotheses) in group.into_iter().zip(outs) {
                    let queue = start.saturating_duration_since(job.enqueued);
                    m.queue_duration.observe(queue.as_secs_f64());
                    let _ = job.reply.send(Ok(JobOutput {
                        hypotheses,
                        queue,
                        inference,
                    }));
                }
            }
            Err(e) => {
                tracing::error!(version = engine.version(), "decoding failed: {e}");
                for job in group {
                    let _ = job.reply.send(Err(EngineError::Decode(e.clone())));
                }
            }
        }
    }
}
