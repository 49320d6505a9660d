//! Measurement of one phase: every finished operation becomes a [`Sample`]; the [`Recorder`]
//! folds them into histograms, counts and a per-second timeline, so memory does not grow with
//! the number of requests.
//!
//! Two latencies per operation: from its *intended* send time (the schedule's, so time spent
//! waiting behind a stalled server or a full in-flight limit counts: coordinated omission
//! corrected) and from its *actual* send.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::workload::OpKind;

/// How an operation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// 2xx and the answer passed every check.
    Ok,
    /// 2xx but the answer broke a check.
    Invalid(String),
    /// A non-2xx status.
    Status(u16),
    /// A batch answered 2xx with an error body in one of its entries.
    EntryError(String),
    /// No answer within the client timeout.
    Timeout,
    /// Connection refused, reset, unreadable body, ...
    Transport(String),
}

/// One finished operation.
#[derive(Debug, Clone)]
pub struct Sample {
    /// What it was.
    pub kind: OpKind,
    /// When the schedule wanted it sent.
    pub intended: Instant,
    /// When it was sent.
    pub actual: Instant,
    /// When its answer was read.
    pub end: Instant,
    /// How it ended.
    pub outcome: Outcome,
    /// `model_version`s of its answers.
    pub versions: Vec<String>,
    /// Answers served from the server's response cache.
    pub cache_hits: u64,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Operations measured.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

impl Latency {
    /// Percentiles of a histogram recorded in microseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let q = |p: f64| h.value_at_quantile(p) as f64 / 1e3;
        Self {
            count: h.len(),
            mean_ms: h.mean() / 1e3,
            p50_ms: q(0.50),
            p90_ms: q(0.90),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: h.max() as f64 / 1e3,
        }
    }
}

/// Operations by outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// 2xx and valid.
    pub ok: u64,
    /// 2xx but invalid.
    pub invalid: u64,
    /// 429 (refused by admission control).
    pub rejected_429: u64,
    /// 504 (deadline exceeded).
    pub deadline_504: u64,
    /// Other non-2xx statuses, by status.
    pub other_status: BTreeMap<u16, u64>,
    /// Batches with an error entry.
    pub entry_errors: u64,
    /// No answer within the client timeout.
    pub timeouts: u64,
    /// Transport failures.
    pub transport: u64,
}

impl Counts {
    /// Every operation that did not succeed and was not invalid.
    pub fn failed(&self) -> u64 {
        self.rejected_429
            + self.deadline_504
            + self.other_status.values().sum::<u64>()
            + self.entry_errors
            + self.timeouts
            + self.transport
    }

    /// Every operation.
    pub fn total(&self) -> u64 {
        self.ok + self.invalid + self.failed()
    }

    fn add(&mut self, o: &Outcome) {
        match o {
            Outcome::Ok => self.ok += 1,
            Outcome::Invalid(_) => self.invalid += 1,
            Outcome::Status(429) => self.rejected_429 += 1,
            Outcome::Status(504) => self.deadline_504 += 1,
            Outcome::Status(s) => *self.other_status.entry(*s).or_insert(0) += 1,
            Outcome::EntryError(_) => self.entry_errors += 1,
            Outcome::Timeout => self.timeouts += 1,
            Outcome::Transport(_) => self.transport += 1,
        }
    }
}

/// Per operation kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KindStats {
    /// Outcomes.
    pub counts: Counts,
    /// Latency from the intended send time.
    pub latency: Latency,
}

/// One second of a phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bin {
    /// Start of the second, from the start of the run (s).
    pub t_s: f64,
    /// Operations intended in this second.
    pub offered: u64,
    /// Operations that finished in this second.
    pub completed: u64,
    /// Of which succeeded.
    pub ok: u64,
    /// Of which got 429.
    pub rejected: u64,
    /// Of which failed otherwise or were invalid.
    pub errors: u64,
    /// Latency percentiles of the operations intended in this second (from the intended time).
    pub latency: Latency,
    /// `model_version`s of the answers that finished in this second.
    pub versions: BTreeMap<String, u64>,
}

/// Everything measured in one phase (one offered rate or one concurrency).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseReport {
    /// Name of the phase (`run`, `sweep step 3`, ...).
    pub label: String,
    /// `constant`, `poisson` or `closed`.
    pub arrivals: String,
    /// Offered rate of an open loop (operations/s); none for a closed loop.
    pub offered_rate: Option<f64>,
    /// Workers of a closed loop, or the most operations in flight of an open loop.
    pub concurrency: usize,
    /// Warm-up before measuring (s); operations intended then are sent but not counted.
    pub warmup_s: f64,
    /// Measured window (s).
    pub duration_s: f64,
    /// Start of the measured window, from the start of the run (s).
    pub start_s: f64,
    /// Operations sent during warm-up (not measured).
    pub warmup_ops: u64,
    /// Operations intended in the measured window.
    pub sent: u64,
    /// Operations intended per second of the measured window.
    pub sent_rate: f64,
    /// Successful operations per second of the measured window.
    pub ok_rate: f64,
    /// Share of the measured operations that succeeded.
    pub ok_share: f64,
    /// Outcomes.
    pub counts: Counts,
    /// Latency from the intended send time (coordinated omission corrected), every operation
    /// that ended (timeouts at the time they gave up).
    pub latency_intended: Latency,
    /// Latency from the actual send.
    pub latency_actual: Latency,
    /// Latency from the intended send time of the successful operations only.
    pub latency_ok: Latency,
    /// Per operation kind.
    pub by_kind: BTreeMap<String, KindStats>,
    /// Answers per `model_version`.
    pub versions: BTreeMap<String, u64>,
    /// Answers served from the server's response cache.
    pub cache_hits: u64,
    /// The first few invalid answers, explained.
    pub invalid_examples: Vec<String>,
    /// The first few failures, explained.
    pub failure_examples: Vec<String>,
    /// Largest delay of this generator behind its own schedule (ms); when large, the load
    /// generator, not the server, limited the rate.
    pub generator_max_lag_ms: f64,
    /// Second by second.
    pub timeline: Vec<Bin>,
}

const EXAMPLES: usize = 5;

fn histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, sigfig).expect("constant bounds are valid")
}

fn micros(d: Duration) -> u64 {
    d.as_micros().clamp(1, 3_600_000_000) as u64
}

#[derive(Debug)]
struct BinAcc {
    bin: Bin,
    hist: Histogram<u64>,
}

/// Folds samples of one phase.
#[derive(Debug)]
pub struct Recorder {
    run_start: Instant,
    measure_start: Instant,
    counts: Counts,
    intended: Histogram<u64>,
    actual: Histogram<u64>,
    ok: Histogram<u64>,
    kinds: BTreeMap<OpKind, (Counts, Histogram<u64>)>,
    versions: BTreeMap<String, u64>,
    cache_hits: u64,
    invalid_examples: Vec<String>,
    failure_examples: Vec<String>,
    bins: Vec<BinAcc>,
}

impl Recorder {
    /// A recorder whose measured window starts at `measure_start`; times in the timeline are
    /// relative to `run_start`.
    pub fn new(run_start: Instant, measure_start: Instant) -> Self {
        Self {
            run_start,
            measure_start,
            counts: Counts::default(),
            intended: histogram(3),
            actual: histogram(3),
            ok: histogram(3),
            kinds: BTreeMap::new(),
            versions: BTreeMap::new(),
            cache_hits: 0,
            invalid_examples: Vec::new(),
            failure_examples: Vec::new(),
            bins: Vec::new(),
        }
    }

    fn bin(&mut self, at: Instant) -> &mut BinAcc {
        let i = at.saturating_duration_since(self.measure_start).as_secs() as usize;
        while self.bins.len() <= i {
            let t = self.measure_start + Duration::from_secs(self.bins.len() as u64);
            self.bins.push(BinAcc {
                bin: Bin {
                    t_s: t.duration_since(self.run_start).as_secs_f64(),
                    ..Bin::default()
                },
                hist: histogram(2),
            });
        }
        &mut self.bins[i]
    }

    /// Whether an operation intended at `t` is measured (not warm-up).
    pub fn measures(&self, t: Instant) -> bool {
        t >= self.measure_start
    }

    /// Add one measured sample.
    pub fn record(&mut self, s: &Sample) {
        let from_intended = micros(s.end.saturating_duration_since(s.intended));
        let from_actual = micros(s.end.saturating_duration_since(s.actual));
        self.counts.add(&s.outcome);
        self.intended.saturating_record(from_intended);
        self.actual.saturating_record(from_actual);
        let kind = self
            .kinds
            .entry(s.kind)
            .or_insert_with(|| (Counts::default(), histogram(2)));
        kind.0.add(&s.outcome);
        kind.1.saturating_record(from_intended);
        for v in &s.versions {
            *self.versions.entry(v.clone()).or_insert(0) += 1;
        }
        self.cache_hits += s.cache_hits;
        match &s.outcome {
            Outcome::Ok => self.ok.saturating_record(from_intended),
            Outcome::Invalid(m) if self.invalid_examples.len() < EXAMPLES => {
                self.invalid_examples
                    .push(format!("{}: {m}", s.kind.name()));
            }
            Outcome::Invalid(_) => {}
            other if self.failure_examples.len() < EXAMPLES => {
                let what = match other {
                    Outcome::Status(st) => format!("HTTP {st}"),
                    Outcome::EntryError(m) => format!("batch entry error {m}"),
                    Outcome::Timeout => "timeout".into(),
                    Outcome::Transport(m) => format!("transport: {m}"),
                    _ => String::new(),
                };
                self.failure_examples
                    .push(format!("{}: {what}", s.kind.name()));
            }
            _ => {}
        }
        let b = self.bin(s.intended);
        b.bin.offered += 1;
        b.hist.saturating_record(from_intended);
        let b = self.bin(s.end);
        b.bin.completed += 1;
        match s.outcome {
            Outcome::Ok => b.bin.ok += 1,
            Outcome::Status(429) => b.bin.rejected += 1,
            _ => b.bin.errors += 1,
        }
        for v in &s.versions {
            *b.bin.versions.entry(v.clone()).or_insert(0) += 1;
        }
    }

    /// The phase's report. `window` is the measured window's length; `header` carries the
    /// phase's configuration (label, arrivals, rates, ...), whose counters are filled here.
    pub fn finish(self, window: Duration, mut header: PhaseReport) -> PhaseReport {
        let secs = window.as_secs_f64().max(1e-9);
        let sent = self.counts.total();
        header.start_s = self
            .measure_start
            .duration_since(self.run_start)
            .as_secs_f64();
        header.duration_s = window.as_secs_f64();
        header.sent = sent;
        header.sent_rate = sent as f64 / secs;
        header.ok_rate = self.counts.ok as f64 / secs;
        header.ok_share = if sent == 0 {
            0.0
        } else {
            self.counts.ok as f64 / sent as f64
        };
        header.latency_intended = Latency::of(&self.intended);
        header.latency_actual = Latency::of(&self.actual);
        header.latency_ok = Latency::of(&self.ok);
        header.by_kind = self
            .kinds
            .iter()
            .map(|(k, (c, h))| {
                (
                    k.name().to_owned(),
                    KindStats {
                        counts: c.clone(),
                        latency: Latency::of(h),
                    },
                )
            })
            .collect();
        header.counts = self.counts;
        header.versions = self.versions;
        header.cache_hits = self.cache_hits;
        header.invalid_examples = self.invalid_examples;
        header.failure_examples = self.failure_examples;
        header.timeline = self
            .bins
            .into_iter()
            .map(|b| Bin {
                latency: Latency::of(&b.hist),
                ..b.bin
            })
            .collect();
        header
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_counts_and_bins() {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0, t0 + Duration::from_secs(1));
        assert!(!r.measures(t0));
        let sample = |at_ms: u64, wait_ms: u64, took_ms: u64, outcome: Outcome| Sample {
            kind: OpKind::Recommend,
            intended: t0 + Duration::from_millis(at_ms),
            actual: t0 + Duration::from_millis(at_ms + wait_ms),
            end: t0 + Duration::from_millis(at_ms + wait_ms + took_ms),
            outcome,
            versions: vec!["v1".into()],
            cache_hits: 0,
        };
        // 98 fast answers, then two that waited 2 s behind a stall before being sent.
        for i in 0..98 {
            r.record(&sample(1000 + i * 10, 0, 5, Outcome::Ok));
        }
        r.record(&sample(2500, 2000, 5, Outcome::Ok));
        r.record(&sample(2600, 2000, 5, Outcome::Status(429)));
        let rep = r.finish(Duration::from_secs(2), PhaseReport::default());
        assert_eq!(rep.sent, 100);
        assert_eq!((rep.counts.ok, rep.counts.rejected_429), (99, 1));
        assert!((rep.ok_share - 0.99).abs() < 1e-9);
        assert!((rep.sent_rate - 50.0).abs() < 1e-9);
        assert!(
            rep.latency_intended.max_ms >= 2000.0,
            "{:?}",
            rep.latency_intended
        );
        assert!(rep.latency_actual.max_ms < 6.0, "{:?}", rep.latency_actual);
        assert!(rep.latency_intended.p99_ms >= 2000.0);
        assert_eq!(rep.latency_ok.count, 99);
        assert_eq!(rep.versions["v1"], 100);
        assert_eq!(rep.failure_examples, vec!["recommend: HTTP 429".to_owned()]);
        // Bins by second from the start of the measured window; the stalled ones finish in
        // the fourth second.
        assert_eq!(rep.timeline.len(), 4);
        assert_eq!(rep.timeline[0].offered, 98);
        assert!((rep.timeline[0].t_s - 1.0).abs() < 1e-6);
        assert_eq!(rep.timeline[3].completed, 2);
        assert_eq!(rep.start_s, 1.0);
    }
}
