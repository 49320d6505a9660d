//! Sending: the HTTP client that performs and checks operations, and the open- and closed-loop
//! schedules of one phase.
//!
//! Open loop: operation `i` is due at a time fixed in advance (evenly spaced, or Poisson
//! arrivals), whatever happened to earlier ones. It is spawned at that time; when
//! `concurrency` operations are already in flight it waits for a slot, and that wait counts in
//! its latency from the intended time. A closed loop (N workers, each sending its next request
//! when the previous one returns) slows down exactly when the server does, so it never measures
//! the queueing a stall causes ("coordinated omission"); it is offered for capacity tests, and
//! its two latencies are equal by construction.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::ProgressBar;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sidrec::catalogue::Catalogue;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

use crate::check;
use crate::record::{Outcome, PhaseReport, Recorder, Sample};
use crate::workload::{LookupKey, Op, Workload};

/// How operations arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Arrivals {
    /// Open loop, evenly spaced.
    Constant,
    /// Open loop, exponential gaps (a Poisson process).
    Poisson,
    /// Closed loop: `concurrency` workers back to back.
    Closed,
}

impl Arrivals {
    /// The name used in scenario files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Arrivals::Constant => "constant",
            Arrivals::Poisson => "poisson",
            Arrivals::Closed => "closed",
        }
    }
}

/// Refuse targets other than loopback unless `allow_remote`; returns the base URL with a
/// trailing slash.
pub fn target(url: &str, allow_remote: bool) -> anyhow::Result<Url> {
    let mut base: Url = url
        .parse()
        .map_err(|e| anyhow::anyhow!("--url {url}: {e}"))?;
    anyhow::ensure!(
        base.scheme() == "http",
        "--url {url}: must be an http:// URL"
    );
    let loopback = match base.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    anyhow::ensure!(
        loopback || allow_remote,
        "--url {url}: not a loopback address (127.0.0.1, ::1, localhost); \
         pass --allow-remote to load-test another machine"
    );
    if !base.path().ends_with('/') {
        let p = format!("{}/", base.path());
        base.set_path(&p);
    }
    Ok(base)
}

/// Performs operations against one server and checks the answers.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    catalogue: Arc<Catalogue>,
}

/// What performing one operation gave.
#[derive(Debug, Clone)]
pub struct Performed {
    /// How it ended.
    pub outcome: Outcome,
    /// `model_version`s of the answers.
    pub versions: Vec<String>,
    /// Answers from the server's response cache.
    pub cache_hits: u64,
}

impl Performed {
    fn failed(outcome: Outcome) -> Self {
        Self {
            outcome,
            versions: Vec::new(),
            cache_hits: 0,
        }
    }
}

fn transport(e: reqwest::Error) -> Outcome {
    if e.is_timeout() {
        Outcome::Timeout
    } else {
        // The innermost cause says what happened (refused, reset, ...).
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg = s.to_string();
            src = s.source();
        }
        Outcome::Transport(msg)
    }
}

impl Client {
    /// A client of the server at `base` (see [`target`]) with a per-request `timeout`.
    pub fn new(base: Url, timeout: Duration, catalogue: Arc<Catalogue>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .pool_max_idle_per_host(1024)
            .build()?;
        Ok(Self {
            http,
            base,
            catalogue,
        })
    }

    /// The server's base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The underlying HTTP client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `path` (no leading `/`) under the base URL.
    pub fn url(&self, path: &str) -> Url {
        self.base.join(path).unwrap_or_else(|_| self.base.clone())
    }

    /// POST `body`; returns the status, the cache-hit count from the headers and the body as
    /// JSON (`Null` when it is not JSON).
    async fn post(&self, path: &str, body: &Value) -> Result<(u16, u64, Value), Outcome> {
        let resp = self
            .http
            .post(self.url(path))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(transport)?;
        Self::read(resp).await
    }

    async fn read(resp: reqwest::Response) -> Result<(u16, u64, Value), Outcome> {
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let hits = match (header("x-sidrec-cache"), header("x-sidrec-cache-hits")) {
            (Some(h), _) if h == "hit" => 1,
            (_, Some(n)) => n.parse().unwrap_or(0),
            _ => 0,
        };
        let bytes = resp.bytes().await.map_err(transport)?;
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, hits, v))
    }

    /// Perform and check one operation.
    pub async fn perform(&self, op: &Op) -> Performed {
        match self.perform_inner(op).await {
            Ok(p) => p,
            Err(o) => Performed::failed(o),
        }
    }

    async fn perform_inner(&self, op: &Op) -> Result<Performed, Outcome> {
        let cat = &self.catalogue;
        let ok = |versions: Vec<String>, cache_hits| Performed {
            outcome: Outcome::Ok,
            versions,
            cache_hits,
        };
        let invalid = |m: String| Performed::failed(Outcome::Invalid(m));
        let success = |status: u16| (200..300).contains(&status);
        match op {
            Op::Recommend { body, expect } => {
                let (status, hits, v) = self.post("v1/recommend", body).await?;
                if !success(status) {
                    return Err(Outcome::Status(status));
                }
                Ok(match check::recommendation(&v, expect, cat) {
                    Ok(version) => ok(vec![version], hits),
                    Err(m) => invalid(m),
                })
            }
            Op::Batch { body, expects } => {
                let (status, hits, v) = self.post("v1/recommend/batch", body).await?;
                if !success(status) {
                    return Err(Outcome::Status(status));
                }
                Ok(match check::batch(&v, expects, cat) {
                    Ok(versions) => ok(versions, hits),
                    Err(check::BatchProblem::EntryError(m)) => {
                        Performed::failed(Outcome::EntryError(m))
                    }
                    Err(check::BatchProblem::Invalid(m)) => invalid(m),
                })
            }
            Op::User {
                events,
                body,
                expect,
            } => {
                let (status, _, _) = self.post("v1/events", events).await?;
                if !success(status) {
                    return Err(Outcome::Status(status));
                }
                let (status, hits, v) = self.post("v1/recommend", body).await?;
                if !success(status) {
                    return Err(Outcome::Status(status));
                }
                Ok(match check::recommendation(&v, expect, cat) {
                    Ok(version) => ok(vec![version], hits),
                    Err(m) => invalid(m),
                })
            }
            Op::Lookup(key) => {
                let mut url = self.url("v1/sid/lookup");
                {
                    let mut q = url.query_pairs_mut();
                    match key {
                        LookupKey::ItemId(i) => q.append_pair("item_id", &i.to_string()),
                        LookupKey::Sid(s) => q.append_pair("sid", s),
                        LookupKey::Title(t) => q.append_pair("title", t),
                    };
                }
                let resp = self.http.get(url).send().await.map_err(transport)?;
                let (status, _, v) = Self::read(resp).await?;
                if !success(status) {
                    return Err(Outcome::Status(status));
                }
                Ok(match check::lookup(&v, key, cat) {
                    Ok(()) => ok(Vec::new(), 0),
                    Err(m) => invalid(m),
                })
            }
        }
    }
}

/// One phase: a schedule, a warm-up and a measured window.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    /// Its name in the report.
    pub label: String,
    /// How operations arrive.
    pub arrivals: Arrivals,
    /// Operations per second (open loop).
    pub rate: f64,
    /// Workers (closed loop) or most operations in flight (open loop).
    pub concurrency: usize,
    /// Sent but not measured.
    pub warmup: Duration,
    /// Measured window.
    pub duration: Duration,
    /// Most operations sent, warm-up included.
    pub max_requests: u64,
}

impl Phase {
    /// Refuse phases that would send nothing or without bound.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.arrivals != Arrivals::Closed {
            anyhow::ensure!(
                self.rate.is_finite() && self.rate > 0.0,
                "{}: the rate must be a positive number of operations per second",
                self.label
            );
        }
        anyhow::ensure!(
            self.concurrency > 0,
            "{}: concurrency must be positive",
            self.label
        );
        anyhow::ensure!(
            !self.duration.is_zero(),
            "{}: the duration must be positive",
            self.label
        );
        anyhow::ensure!(
            self.max_requests > 0,
            "{}: max_requests must be positive",
            self.label
        );
        Ok(())
    }
}

/// Live counters for the progress bar.
#[derive(Debug, Default)]
struct Live {
    done: AtomicU64,
    ok: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
}

/// A workload and its random stream, shared by the senders of a phase.
pub type SharedWorkload = Arc<Mutex<(Workload, ChaCha8Rng)>>;

fn next_op(w: &SharedWorkload) -> Op {
    let mut g = w.lock().unwrap_or_else(|p| p.into_inner());
    let (wl, rng) = &mut *g;
    wl.next_op(rng)
}

/// Run one phase and measure it. Times in the report are relative to `run_start`.
pub async fn run_phase(
    client: &Client,
    workload: &SharedWorkload,
    phase: &Phase,
    run_start: Instant,
    progress: &ProgressBar,
) -> anyhow::Result<PhaseReport> {
    phase.validate()?;
    let start = Instant::now();
    let measure_start = start + phase.warmup;
    let end = measure_start + phase.duration;
    let (tx, mut rx) = mpsc::unbounded_channel::<Sample>();
    let live = Arc::new(Live::default());

    let total = (phase.warmup + phase.duration).as_secs_f64();
    progress.set_length(total.ceil() as u64);
    progress.set_position(0);
    progress.set_prefix(phase.label.clone());
    let ticker = {
        let (live, progress) = (live.clone(), progress.clone());
        tokio::spawn(async move {
            loop {
                let t = start.elapsed().as_secs_f64();
                progress.set_position((t.min(total)) as u64);
                progress.set_message(format!(
                    "done {}  ok {}  429 {}  failed/invalid {}",
                    live.done.load(Ordering::Relaxed),
                    live.ok.load(Ordering::Relaxed),
                    live.rejected.load(Ordering::Relaxed),
                    live.failed.load(Ordering::Relaxed),
                ));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };

    let collector = {
        let live = live.clone();
        tokio::spawn(async move {
            let mut rec = Recorder::new(run_start, measure_start);
            let mut warmup_ops = 0u64;
            while let Some(s) = rx.recv().await {
                live.done.fetch_add(1, Ordering::Relaxed);
                match s.outcome {
                    Outcome::Ok => &live.ok,
                    Outcome::Status(429) => &live.rejected,
                    _ => &live.failed,
                }
                .fetch_add(1, Ordering::Relaxed);
                if rec.measures(s.intended) {
                    rec.record(&s);
                } else {
                    warmup_ops += 1;
                }
            }
            (rec, warmup_ops)
        })
    };

    let mut max_lag = Duration::ZERO;
    let mut sent = 0u64;
    match phase.arrivals {
        Arrivals::Constant | Arrivals::Poisson => {
            let sem = Arc::new(Semaphore::new(phase.concurrency));
            let mut rng = {
                use rand::SeedableRng;
                let seed = workload.lock().map(|mut g| g.1.gen()).unwrap_or(0);
                ChaCha8Rng::seed_from_u64(seed)
            };
            let mut offset = 0.0f64;
            while sent < phase.max_requests {
                let intended = start + Duration::from_secs_f64(offset);
                if intended >= end {
                    break;
                }
                tokio::time::sleep_until(intended).await;
                max_lag = max_lag.max(Instant::now().saturating_duration_since(intended));
                let op = next_op(workload);
                let (client, sem, tx) = (client.clone(), sem.clone(), tx.clone());
                tokio::spawn(async move {
                    let Ok(_permit) = sem.acquire_owned().await else {
                        return;
                    };
                    let actual = Instant::now();
                    let p = client.perform(&op).await;
                    let _ = tx.send(Sample {
                        kind: op.kind(),
                        intended,
                        actual,
                        end: Instant::now(),
                        outcome: p.outcome,
                        versions: p.versions,
                        cache_hits: p.cache_hits,
                    });
                });
                sent += 1;
                offset += match phase.arrivals {
                    Arrivals::Poisson => {
                        let u: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
                        -u.ln() / phase.rate
                    }
                    _ => 1.0 / phase.rate,
                };
            }
        }
        Arrivals::Closed => {
            let count = Arc::new(AtomicU64::new(0));
            let mut workers = Vec::new();
            for _ in 0..phase.concurrency {
                let (client, tx, count, workload) =
                    (client.clone(), tx.clone(), count.clone(), workload.clone());
                let max = phase.max_requests;
                workers.push(tokio::spawn(async move {
                    while Instant::now() < end && count.fetch_add(1, Ordering::Relaxed) < max {
                        let op = next_op(&workload);
                        let actual = Instant::now();
                        let p = client.perform(&op).await;
                        let _ = tx.send(Sample {
                            kind: op.kind(),
                            intended: actual,
                            actual,
                            end: Instant::now(),
                            outcome: p.outcome,
                            versions: p.versions,
                            cache_hits: p.cache_hits,
                        });
                    }
                }));
            }
            for w in workers {
                w.await?;
            }
            sent = count.load(Ordering::Relaxed).min(phase.max_requests);
        }
    }
    let stopped_at = Instant::now().min(end);
    drop(tx);
    let (rec, warmup_ops) = collector.await?;
    ticker.abort();
    progress.set_position(total.ceil() as u64);
    // A phase cut short by max_requests is measured over the time it actually sent for.
    let window = if sent >= phase.max_requests {
        stopped_at.saturating_duration_since(measure_start)
    } else {
        phase.duration
    };
    let header = PhaseReport {
        label: phase.label.clone(),
        arrivals: phase.arrivals.name().to_owned(),
        offered_rate: (phase.arrivals != Arrivals::Closed).then_some(phase.rate),
        concurrency: phase.concurrency,
        warmup_s: phase.warmup.as_secs_f64(),
        warmup_ops,
        generator_max_lag_ms: max_lag.as_secs_f64() * 1e3,
        ..PhaseReport::default()
    };
    Ok(rec.finish(window, header))
}
