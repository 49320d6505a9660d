//! `sidrec-loadtest`: an open-loop load generator for `sidrec-server`.
//!
//! Open loop: request `i` is due at `start + i / rate`, whatever happened to earlier requests.
//! A closed-loop generator (N workers, each sending its next request when the previous one
//! returns) slows down exactly when the server does, so it sends fewer requests during a stall
//! and never measures the queueing those requests would have met: the "coordinated omission"
//! that makes tail latencies look far better than users see them. Here the schedule never
//! waits for responses, and each latency is measured from the request's *scheduled* time, so
//! it includes any queueing, in the server or in this process.
//!
//! `concurrency_limit` bounds the requests in flight (and so this process' memory): a request
//! due while the limit is reached is not sent and is counted in `dropped_at_limit`.

pub mod report;
pub mod scenario;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

pub use report::{Latency, Report};
pub use scenario::{RequestSpec, Scenario, ScenarioKind};

/// How to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Base URL of the server (`http://127.0.0.1:8080`).
    pub url: String,
    /// Requests per second.
    pub rate: f64,
    /// How long to send for.
    pub duration: Duration,
    /// Most requests in flight.
    pub concurrency_limit: usize,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Seed of the query stream.
    pub seed: u64,
}

/// The outcome of one request.
enum Outcome {
    Status { status: u16, latency: Duration },
    Timeout,
    Transport,
}

/// Build the URL of a request.
fn url_of(base: &reqwest::Url, spec: &RequestSpec) -> anyhow::Result<reqwest::Url> {
    let mut url = base.join(spec.path.trim_start_matches('/'))?;
    if !spec.query.is_empty() {
        let mut q = url.query_pairs_mut();
        for (k, v) in &spec.query {
            q.append_pair(k, v);
        }
    }
    Ok(url)
}

/// Run `scenario` against `cfg.url` on an open-loop schedule and report.
pub async fn run(cfg: &LoadConfig, mut scenario: Box<dyn Scenario>) -> anyhow::Result<Report> {
    anyhow::ensure!(
        cfg.rate.is_finite() && cfg.rate > 0.0,
        "--rate must be positive"
    );
    anyhow::ensure!(
        cfg.concurrency_limit > 0,
        "--concurrency-limit must be positive"
    );
    let mut base: reqwest::Url = cfg
        .url
        .parse()
        .with_context(|| format!("--url {}", cfg.url))?;
    anyhow::ensure!(base.scheme() == "http", "--url must be an http:// URL");
    if !base.path().ends_with('/') {
        let p = format!("{}/", base.path());
        base.set_path(&p);
    }
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(cfg.timeout)
        .pool_max_idle_per_host(cfg.concurrency_limit)
        .build()?;

    let total = (cfg.rate * cfg.duration.as_secs_f64()).round() as u64;
    let sem = Arc::new(Semaphore::new(cfg.concurrency_limit));
    let (tx, mut rx) = mpsc::unbounded_channel::<Outcome>();

    // Collect outcomes while sending, so memory stays bounded by the requests in flight.
    let collector = tokio::spawn(async move {
        let mut hist =
            Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
        let mut ok = 0u64;
        let mut by_status = BTreeMap::new();
        let (mut timeouts, mut transport) = (0u64, 0u64);
        while let Some(o) = rx.recv().await {
            match o {
                Outcome::Status { status, latency } => {
                    hist.saturating_record(latency.as_micros().max(1) as u64);
                    if (200..300).contains(&status) {
                        ok += 1;
                    } else {
                        *by_status.entry(status).or_insert(0u64) += 1;
                    }
                }
                Outcome::Timeout => timeouts += 1,
                Outcome::Transport => transport += 1,
            }
        }
        (hist, ok, by_status, timeouts, transport)
    });

    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let (mut sent, mut dropped) = (0u64, 0u64);
    let mut max_lag = Duration::ZERO;
    let start = Instant::now();
    let mut last_due = start;
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / cfg.rate);
        tokio::time::sleep_until(due).await;
        max_lag = max_lag.max(Instant::now().saturating_duration_since(due));
        last_due = due;
        let spec = scenario.next_request(&mut rng);
        let Ok(permit) = sem.clone().try_acquire_owned() else {
            dropped += 1;
            continue;
        };
        let url = url_of(&base, &spec)?;
        let mut req = client.request(spec.method.clone(), url);
        if let Some(body) = spec.json_body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        sent += 1;
        let tx = tx.clone();
        tokio::spawn(async move {
            let outcome = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    match resp.bytes().await {
                        Ok(_) => Outcome::Status {
                            status,
                            latency: due.elapsed(),
                        },
                        Err(e) if e.is_timeout() => Outcome::Timeout,
                        Err(_) => Outcome::Transport,
                    }
                }
                Err(e) if e.is_timeout() => Outcome::Timeout,
                Err(_) => Outcome::Transport,
            };
            drop(permit);
            let _ = tx.send(outcome);
        });
    }
    let send_window = (last_due - start) + Duration::from_secs_f64(1.0 / cfg.rate);
    drop(tx);
    let (hist, ok, errors_by_status, timeouts, transport_errors) = collector.await?;
    let elapsed = start.elapsed();

    Ok(Report {
        scenario: scenario.name().to_owned(),
        url: cfg.url.clone(),
        target_rate: cfg.rate,
        duration_s: cfg.duration.as_secs_f64(),
        concurrency_limit: cfg.concurrency_limit,
        scheduled: total,
        sent,
        dropped_at_limit: dropped,
        ok,
        errors_by_status,
        timeouts,
        transport_errors,
        achieved_rate: if total == 0 {
            0.0
        } else {
            sent as f64 / send_window.as_secs_f64()
        },
        ok_throughput: ok as f64 / elapsed.as_secs_f64().max(1e-9),
        elapsed_s: elapsed.as_secs_f64(),
        generator_max_lag_ms: max_lag.as_secs_f64() * 1e3,
        latency: Latency::from_micros(&hist),
    })
}

pub use sidrec::duration::parse_duration;
