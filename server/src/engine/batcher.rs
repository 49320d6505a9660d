//! Dynamic batching, in the style of text-generation-inference's router: handlers put decode
//! jobs on a bounded queue; one dedicated compute thread (not a tokio worker) takes the first
//! waiting job, keeps collecting until `max_batch_size` jobs or `max_batch_wait` have passed, and
//! decodes them.
//!
//! A batch may mix checkpoints (a swap happened while jobs waited) and `num_beams` values: jobs
//! are grouped by (engine, `num_beams`) and each group is one `beam_search` call, because one
//! call has one beam width and one model. `k` and exclusions are per job (the decoder takes
//! per-prompt exclusions; `k` only cuts the returned list), so they never split a group.
//!
//! Admission control counts queued jobs: a submission that would take the queue past
//! `max_queue` is refused at once (429 with `Retry-After`). Jobs whose handler has gone (its
//! deadline passed, the client disconnected) are dropped before decoding.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use sidrec::decode::Hypothesis;
use sidrec::ItemId;
use tokio::sync::oneshot;

use super::Engine;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// Batching limits.
#[derive(Debug, Clone, Copy)]
pub struct BatcherConfig {
    /// Most prompts decoded together.
    pub max_batch_size: usize,
    /// Longest a batch waits for more jobs after its first.
    pub max_batch_wait: Duration,
    /// Most jobs waiting; past it submissions get 429.
    pub max_queue: usize,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        Self {
            max_batch_size: 8,
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
    reply: oneshot::Sender<Result<JobOutput, String>>,
}

/// The receiving half of a submitted job.
pub type JobReceiver = oneshot::Receiver<Result<JobOutput, String>>;

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
}

/// Handle on the queue and its compute thread. The thread ends when the handle is dropped
/// and the queue is empty.
#[derive(Debug)]
pub struct Batcher {
    tx: mpsc::Sender<Job>,
    depth: Arc<AtomicUsize>,
    cfg: BatcherConfig,
    metrics: Metrics,
}

impl Batcher {
    /// Start the compute thread.
    pub fn start(cfg: BatcherConfig, metrics: Metrics) -> std::io::Result<Self> {
        let cfg = BatcherConfig {
            max_batch_size: cfg.max_batch_size.max(1),
            max_queue: cfg.max_queue.max(1),
            ..cfg
        };
        let (tx, rx) = mpsc::channel::<Job>();
        let depth = Arc::new(AtomicUsize::new(0));
        let worker = Worker {
            rx,
            depth: depth.clone(),
            cfg,
            metrics: metrics.clone(),
        };
        std::thread::Builder::new()
            .name("sidrec-batcher".into())
            .spawn(move || worker.run())?;
        Ok(Self {
            tx,
            depth,
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
        self.depth.load(Ordering::SeqCst)
    }

    /// Queue `jobs` together, or refuse them all with `overloaded` when the queue has no room
    /// (an empty queue always takes them, so a batch larger than the queue is not starved).
    pub fn submit(&self, jobs: Vec<Job>) -> Result<(), ApiError> {
        let n = jobs.len();
        let mut cur = self.depth.load(Ordering::SeqCst);
        loop {
            if cur > 0 && cur + n > self.cfg.max_queue {
                return Err(ApiError::Overloaded(cur));
            }
            match self
                .depth
                .compare_exchange(cur, cur + n, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        self.metrics.queue_depth.set((cur + n) as i64);
        for job in jobs {
            if self.tx.send(job).is_err() {
                return Err(ApiError::Internal("the batcher thread has stopped".into()));
            }
        }
        Ok(())
    }
}

struct Worker {
    rx: mpsc::Receiver<Job>,
    depth: Arc<AtomicUsize>,
    cfg: BatcherConfig,
    metrics: Metrics,
}

impl Worker {
    fn run(self) {
        while let Ok(first) = self.rx.recv() {
            let mut batch = vec![first];
            let until = Instant::now() + self.cfg.max_batch_wait;
            while batch.len() < self.cfg.max_batch_size {
                // Take what is already waiting without delay, then wait out the window.
                match self.rx.try_recv() {
                    Ok(job) => {
                        batch.push(job);
                        continue;
                    }
                    Err(mpsc::TryRecvError::Disconnected) => break,
                    Err(mpsc::TryRecvError::Empty) => {}
                }
                let now = Instant::now();
                if now >= until {
                    break;
                }
                match self.rx.recv_timeout(until - now) {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let left = self.depth.fetch_sub(batch.len(), Ordering::SeqCst) - batch.len();
            self.metrics.queue_depth.set(left as i64);
            self.run_batch(batch);
        }
        tracing::debug!("batcher stopped");
    }

    fn run_batch(&self, batch: Vec<Job>) {
        let now = Instant::now();
        let live: Vec<Job> = batch
            .into_iter()
            .filter(|j| !j.reply.is_closed() && j.deadline > now)
            .collect();
        // Group by (engine, num_beams), keeping arrival order within and between groups.
        let mut groups: Vec<Vec<Job>> = Vec::new();
        for job in live {
            match groups
                .iter_mut()
                .find(|g| Arc::ptr_eq(&g[0].engine, &job.engine) && g[0].num_beams == job.num_beams)
            {
                Some(g) => g.push(job),
                None => groups.push(vec![job]),
            }
        }
        for group in groups {
            self.run_group(group);
        }
    }

    fn run_group(&self, group: Vec<Job>) {
        let start = Instant::now();
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
            Ok(Err(e)) => Err(format!("decoding failed: {e}")),
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
                tracing::error!(version = engine.version(), "{e}");
                for job in group {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}
