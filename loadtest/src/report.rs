//! The load test's result.

use std::collections::BTreeMap;
use std::fmt;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Latency {
    /// Responses measured.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

impl Latency {
    /// Percentiles of a histogram recorded in microseconds.
    pub fn from_micros(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1e3;
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            mean_ms: h.mean() / 1e3,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Base URL.
    pub url: String,
    /// Requested rate (requests/s).
    pub target_rate: f64,
    /// Requested duration (s).
    pub duration_s: f64,
    /// Largest number of requests in flight allowed.
    pub concurrency_limit: usize,
    /// Requests the schedule called for.
    pub scheduled: u64,
    /// Requests sent.
    pub sent: u64,
    /// Scheduled requests not sent because `concurrency_limit` requests were in flight.
    pub dropped_at_limit: u64,
    /// Responses with a 2xx status.
    pub ok: u64,
    /// Responses with another status, by status code.
    pub errors_by_status: BTreeMap<u16, u64>,
    /// Requests that got no response within the client timeout.
    pub timeouts: u64,
    /// Requests that failed otherwise (connection refused, reset, ...).
    pub transport_errors: u64,
    /// Sent requests per second over the sending phase.
    pub achieved_rate: f64,
    /// 2xx responses per second over the whole run.
    pub ok_throughput: f64,
    /// Wall time of the whole run, until the last response (s).
    pub elapsed_s: f64,
    /// Largest delay of the generator behind its own schedule (ms); large values mean the
    /// load generator, not the server, limited the rate.
    pub generator_max_lag_ms: f64,
    /// Latency of every request that got an HTTP response (any status), from its scheduled
    /// send time to the end of its body.
    pub latency: Latency,
}

impl Report {
    /// Responses with a non-2xx status.
    pub fn error_responses(&self) -> u64 {
        self.errors_by_status.values().sum()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "scenario {} against {} at {:.1} req/s for {:.1} s (max {} in flight)",
            self.scenario, self.url, self.target_rate, self.duration_s, self.concurrency_limit
        )?;
        writeln!(
            f,
            "  scheduled {}  sent {}  dropped at limit {}  achieved {:.1} req/s",
            self.scheduled, self.sent, self.dropped_at_limit, self.achieved_rate
        )?;
        let errs: Vec<String> = self
            .errors_by_status
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        writeln!(
            f,
            "  ok {}  errors by status {{{}}}  timeouts {}  transport errors {}",
            self.ok,
            errs.join(", "),
            self.timeouts,
            self.transport_errors
        )?;
        let l = &self.latency;
        writeln!(
            f,
            "  latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}  mean {:.3}  (n = {})",
            l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms, l.mean_ms, l.count
        )?;
        write!(
            f,
            "  ok throughput {:.1} req/s over {:.2} s; generator max lag {:.3} ms",
            self.ok_throughput, self.elapsed_s, self.generator_max_lag_ms
        )
    }
}
