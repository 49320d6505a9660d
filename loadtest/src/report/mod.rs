//! The result of a run: JSON (for regression checks), a terminal summary, a Markdown table
//! and a self-contained HTML page ([`html`]).

pub mod html;

use std::fmt;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::actions::ActionRecord;
use crate::record::PhaseReport;
use crate::scenario::Scenario;
use crate::scrape::ServerSample;

/// One step of a sweep, in short.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SweepStep {
    /// Offered rate (operations/s).
    pub offered_rate: f64,
    /// Operations intended per second of the measured window.
    pub sent_rate: f64,
    /// Successful operations per second.
    pub ok_rate: f64,
    /// Share that succeeded.
    pub ok_share: f64,
    /// Median latency from the intended send time (ms).
    pub p50_ms: f64,
    /// p99 from the intended send time (ms).
    pub p99_ms: f64,
    /// p99 from the actual send (ms).
    pub p99_actual_ms: f64,
    /// p99.9 from the intended send time (ms).
    pub p999_ms: f64,
}

/// The largest sustainable rate at one p99 target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sustainable {
    /// The target (ms).
    pub p99_ms: f64,
    /// The largest offered rate such that it and every lower step kept p99 below the target
    /// with enough successes; none when even the first step missed.
    pub max_rate: Option<f64>,
}

/// What a sweep found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SweepResult {
    /// Every step run.
    pub steps: Vec<SweepStep>,
    /// Per p99 target.
    pub sustainable: Vec<Sustainable>,
    /// The knee's p99 target (ms).
    pub knee_p99_ms: f64,
    /// The knee: the largest sustainable rate at `knee_p99_ms`.
    pub knee_rate: Option<f64>,
    /// A step is sustainable only with at least this share of successes.
    pub min_ok_share: f64,
    /// The last step was still sustainable: the knee lies above the ladder.
    pub reached_end: bool,
}

/// One expectation of the scenario, evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// The `[expect]` field.
    pub name: String,
    /// Whether it held.
    pub ok: bool,
    /// What was measured.
    pub detail: String,
}

/// Everything a run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The tool and its version.
    pub tool: String,
    /// The scenario as run.
    pub scenario: Scenario,
    /// Where it was read from.
    pub scenario_file: Option<String>,
    /// Base URL of the server.
    pub url: String,
    /// Start time (Unix seconds).
    pub started_unix: u64,
    /// Where the histories came from.
    pub histories: String,
    /// The knee rate given to a `knee_fraction` scenario.
    pub knee_input: Option<f64>,
    /// The phases: one, or one per sweep step.
    pub phases: Vec<PhaseReport>,
    /// A sweep's findings.
    pub sweep: Option<SweepResult>,
    /// Hot swaps and commands.
    pub actions: Vec<ActionRecord>,
    /// The server's metrics, sampled.
    pub server: Vec<ServerSample>,
    /// The scenario's expectations.
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether every expectation held.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// Read a JSON report.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not a sidrec-loadtest report", path.display()))
    }

    /// Write `<dir>/<name>.json` and `<dir>/<name>.html` (atomically); returns their paths.
    pub fn write(&self, dir: &Path) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let json_path = dir.join(format!("{}.json", self.scenario.name));
        let html_path = dir.join(format!("{}.html", self.scenario.name));
        let json = serde_json::to_string_pretty(self)? + "\n";
        sidrec::io::write_bytes_atomic(&json_path, json.as_bytes())?;
        sidrec::io::write_bytes_atomic(&html_path, html::render(self).as_bytes())?;
        Ok((json_path, html_path))
    }

    /// Versions that answered, over every phase.
    pub fn versions(&self) -> std::collections::BTreeMap<String, u64> {
        let mut out = std::collections::BTreeMap::new();
        for p in &self.phases {
            for (v, n) in &p.versions {
                *out.entry(v.clone()).or_insert(0) += n;
            }
        }
        out
    }

    /// One Markdown table row per phase, and the sweep's findings.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        s += &format!(
            "**{}**: {}\n\n",
            self.scenario.name, self.scenario.description
        );
        if let Some(sw) = &self.sweep {
            s += "| offered (ops/s) | ok (ops/s) | ok share | p50 ms | p99 ms | p99.9 ms | p99 from actual send ms |\n";
            s += "|---:|---:|---:|---:|---:|---:|---:|\n";
            for st in &sw.steps {
                s += &format!(
                    "| {:.1} | {:.1} | {:.3} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
                    st.offered_rate,
                    st.ok_rate,
                    st.ok_share,
                    st.p50_ms,
                    st.p99_ms,
                    st.p999_ms,
                    st.p99_actual_ms
                );
            }
            s += "\n";
            for t in &sw.sustainable {
                s += &format!(
                    "- max sustainable rate at p99 < {} ms: {}\n",
                    t.p99_ms,
                    rate_text(t.max_rate, sw)
                );
            }
            s += &format!(
                "- knee (p99 < {} ms, ≥ {:.0} % ok): {}\n",
                sw.knee_p99_ms,
                sw.min_ok_share * 100.0,
                rate_text(sw.knee_rate, sw)
            );
        } else {
            s += "| phase | offered (ops/s) | ok (ops/s) | ok | 429 | 504 | other failed | invalid | p50 ms | p99 ms | p99.9 ms | max ms | p99 of 2xx ms | versions |\n";
            s += "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
            for p in &self.phases {
                let c = &p.counts;
                let l = &p.latency_intended;
                s += &format!(
                    "| {} | {} | {:.1} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} |\n",
                    p.label,
                    p.offered_rate.map_or("closed".into(), |r| format!("{r:.1}")),
                    p.ok_rate,
                    c.ok,
                    c.rejected_429,
                    c.deadline_504,
                    c.failed() - c.rejected_429 - c.deadline_504,
                    c.invalid,
                    l.p50_ms,
                    l.p99_ms,
                    l.p999_ms,
                    l.max_ms,
                    p.latency_ok.p99_ms,
                    p.versions.len()
                );
            }
            s += "\n";
            let total: u64 = self.phases.iter().map(|p| p.counts.total()).sum();
            let rejected: u64 = self.phases.iter().map(|p| p.counts.rejected_429).sum();
            if total > 0 {
                s += &format!(
                    "- 429 share: {:.1} % of {total} operations\n",
                    100.0 * rejected as f64 / total as f64
                );
            }
        }
        let hits: u64 = self.phases.iter().map(|p| p.cache_hits).sum();
        if hits > 0 {
            s += &format!("- answers from the server's response cache: {hits}\n");
        }
        let swaps: Vec<&ActionRecord> = self.actions.iter().filter(|a| a.kind == "swap").collect();
        if !swaps.is_empty() {
            let ok = swaps.iter().filter(|a| a.ok).count();
            let worst = swaps
                .iter()
                .filter_map(|a| a.serving_after_ms)
                .fold(0.0, f64::max);
            s += &format!(
                "- checkpoints swapped in: {ok} of {} (slowest to serve: {worst:.0} ms after writing)\n",
                swaps.len()
            );
        }
        for a in self.actions.iter().filter(|a| a.kind == "command") {
            s += &format!(
                "- at {:.1} s: `{}` ({})\n",
                a.t_s,
                a.what,
                if a.ok { "ok" } else { "failed" }
            );
        }
        for c in &self.checks {
            s += &format!(
                "- expect {}: {} ({})\n",
                c.name,
                if c.ok { "held" } else { "FAILED" },
                c.detail
            );
        }
        s
    }
}

fn rate_text(r: Option<f64>, sw: &SweepResult) -> String {
    match r {
        Some(r) if sw.reached_end && Some(r) == sw.steps.last().map(|s| s.offered_rate) => {
            format!("≥ {r:.1} ops/s (the last step; the ladder ended first)")
        }
        Some(r) => format!("{r:.1} ops/s"),
        None => "below the first step".into(),
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "scenario {} against {} ({})",
            self.scenario.name, self.url, self.histories
        )?;
        for p in &self.phases {
            let c = &p.counts;
            writeln!(
                f,
                "  {:<12} offered {:>7}  sent {:>7.1}/s  ok {:>7.1}/s  ok {} invalid {} 429 {} 504 {} other {} timeouts {} transport {}",
                p.label,
                p.offered_rate.map_or("closed".into(), |r| format!("{r:.1}/s")),
                p.sent_rate,
                p.ok_rate,
                c.ok,
                c.invalid,
                c.rejected_429,
                c.deadline_504,
                c.other_status.values().sum::<u64>() + c.entry_errors,
                c.timeouts,
                c.transport
            )?;
            for (name, l) in [
                ("intended", &p.latency_intended),
                ("actual", &p.latency_actual),
                ("2xx", &p.latency_ok),
            ] {
                writeln!(
                    f,
                    "    latency from {name:<8} ms: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  (n = {})",
                    l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.count
                )?;
            }
            if !p.versions.is_empty() {
                let v: Vec<String> = p
                    .versions
                    .iter()
                    .map(|(v, n)| format!("{v}: {n}"))
                    .collect();
                writeln!(f, "    versions {}", v.join(", "))?;
            }
            if p.cache_hits > 0 {
                writeln!(f, "    response cache hits {}", p.cache_hits)?;
            }
            for e in p.invalid_examples.iter().chain(&p.failure_examples) {
                writeln!(f, "    e.g. {e}")?;
            }
            if p.generator_max_lag_ms > 50.0 {
                writeln!(
                    f,
                    "    note: this generator fell {:.0} ms behind its schedule",
                    p.generator_max_lag_ms
                )?;
            }
        }
        if let Some(sw) = &self.sweep {
            for t in &sw.sustainable {
                writeln!(
                    f,
                    "  max sustainable rate at p99 < {} ms: {}",
                    t.p99_ms,
                    rate_text(t.max_rate, sw)
                )?;
            }
            writeln!(
                f,
                "  knee (p99 < {} ms): {}",
                sw.knee_p99_ms,
                rate_text(sw.knee_rate, sw)
            )?;
        }
        for a in &self.actions {
            writeln!(
                f,
                "  {:>6.1} s {} {}: {}",
                a.t_s,
                if a.ok { "ok  " } else { "FAIL" },
                a.what,
                a.detail
            )?;
        }
        if let Some(last) = self.server.iter().rev().find(|s| s.version.is_some()) {
            let peak = self
                .server
                .iter()
                .filter_map(|s| s.queue_depth)
                .fold(0.0, f64::max);
            writeln!(
                f,
                "  server: {} metric samples, peak queue depth {peak}, last version {}",
                self.server.len(),
                last.version.as_deref().unwrap_or("-")
            )?;
        }
        for c in &self.checks {
            writeln!(
                f,
                "  expect {:<13} {}  {}",
                c.name,
                if c.ok { "ok  " } else { "FAIL" },
                c.detail
            )?;
        }
        Ok(())
    }
}
