//! Scenario files (TOML): what to send, how fast, for how long, what to do to the system
//! meanwhile, and what must hold. `loadtest/scenarios/README.md` documents every field.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Deserializer, Serialize};

use crate::driver::Arrivals;
use crate::workload::MixSpec;

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    sidrec::duration::parse_duration(&s).map_err(serde::de::Error::custom)
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| sidrec::duration::parse_duration(&s).map_err(serde::de::Error::custom))
        .transpose()
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{}ms", d.as_millis()))
}

fn ser_opt_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_duration(d, s),
        None => s.serialize_none(),
    }
}

/// A scenario file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name (report file names use it).
    pub name: String,
    /// What it shows.
    #[serde(default)]
    pub description: String,
    /// The schedule.
    pub load: LoadSpec,
    /// What to send.
    #[serde(default)]
    pub mix: MixSpec,
    /// Step the offered rate instead of one run at `load.rate`.
    pub sweep: Option<SweepSpec>,
    /// Publish a new checkpoint periodically during the run.
    pub hot_swap: Option<HotSwapSpec>,
    /// Shell commands run at given times during the run.
    #[serde(default)]
    pub commands: Vec<CommandSpec>,
    /// What must hold (the exit status says whether it did).
    #[serde(default)]
    pub expect: ExpectSpec,
}

/// The `[load]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadSpec {
    /// `constant`, `poisson` or `closed`.
    pub arrivals: Arrivals,
    /// Operations per second of an open loop.
    pub rate: Option<f64>,
    /// Or: this fraction of the knee rate (given with `--knee` or `--knee-from`).
    pub knee_fraction: Option<f64>,
    /// Closed loop: workers; open loop: most operations in flight.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Measured window (a sweep uses `sweep.step_duration` instead).
    #[serde(
        default,
        deserialize_with = "opt_duration",
        serialize_with = "ser_opt_duration"
    )]
    pub duration: Option<Duration>,
    /// Sent before the measured window, not measured.
    #[serde(
        default,
        deserialize_with = "opt_duration",
        serialize_with = "ser_opt_duration"
    )]
    pub warmup: Option<Duration>,
    /// Most operations sent in a phase, warm-up included.
    #[serde(default = "default_max_requests")]
    pub max_requests: u64,
    /// Per-request timeout.
    #[serde(
        default,
        deserialize_with = "opt_duration",
        serialize_with = "ser_opt_duration"
    )]
    pub timeout: Option<Duration>,
    /// Seed of the operation stream.
    #[serde(default)]
    pub seed: u64,
}

fn default_concurrency() -> usize {
    256
}

fn default_max_requests() -> u64 {
    100_000
}

/// Longest measured window or sweep step: runs stay short on a shared machine.
pub const MAX_DURATION: Duration = Duration::from_secs(600);

/// The `[sweep]` table: offered rates stepped up until the knee is passed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    /// Explicit rates; or leave empty and give `start`, `factor`, `max_rate`.
    #[serde(default)]
    pub rates: Vec<f64>,
    /// First rate of a geometric ladder.
    pub start: Option<f64>,
    /// Ratio between steps of the ladder.
    pub factor: Option<f64>,
    /// Last rate of the ladder.
    pub max_rate: Option<f64>,
    /// Warm-up of each step.
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub step_warmup: Duration,
    /// Measured window of each step.
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub step_duration: Duration,
    /// Report the largest sustainable rate at p99 below each of these (ms).
    pub p99_targets_ms: Vec<f64>,
    /// The knee: the largest sustainable rate at p99 below this (ms).
    pub knee_p99_ms: f64,
    /// A step is sustainable only when at least this share of its operations succeed.
    #[serde(default = "default_min_ok_share")]
    pub min_ok_share: f64,
}

fn default_min_ok_share() -> f64 {
    0.99
}

impl SweepSpec {
    /// The rates to step through, ascending.
    pub fn ladder(&self) -> anyhow::Result<Vec<f64>> {
        let rates = if !self.rates.is_empty() {
            self.rates.clone()
        } else {
            let (Some(start), Some(factor), Some(max)) = (self.start, self.factor, self.max_rate)
            else {
                anyhow::bail!("sweep: give `rates`, or `start`, `factor` and `max_rate`");
            };
            anyhow::ensure!(
                start > 0.0 && factor > 1.0 && max >= start,
                "sweep: need start > 0, factor > 1 and max_rate >= start"
            );
            let mut v = vec![start];
            while let Some(&last) = v.last() {
                let next = last * factor;
                if next > max * (1.0 + 1e-9) || v.len() >= 100 {
                    break;
                }
                v.push(next);
            }
            v
        };
        anyhow::ensure!(
            rates.iter().all(|r| r.is_finite() && *r > 0.0),
            "sweep: rates must be positive"
        );
        anyhow::ensure!(
            rates.windows(2).all(|w| w[0] < w[1]),
            "sweep: rates must be ascending"
        );
        anyhow::ensure!(rates.len() <= 100, "sweep: at most 100 steps");
        Ok(rates)
    }
}

/// How a hot swap reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwapVia {
    /// Written into the model directory; the server's watcher finds it.
    Directory,
    /// Written into the model directory, then `POST /admin/reload` with its path.
    Admin,
    /// Directory and admin in turn.
    Alternate,
}

/// The `[hot_swap]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HotSwapSpec {
    /// A new checkpoint this often (from the start of the run, warm-up included).
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub every: Duration,
    /// How the server learns of it.
    pub via: SwapVia,
}

/// A `[[commands]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    /// When, from the start of the run (warm-up included).
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub at: Duration,
    /// Run with `sh -c` (environment inherited).
    pub run: String,
}

/// The `[expect]` table; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectSpec {
    /// Most failed operations (non-2xx, timeouts, transport errors, batch entry errors).
    pub max_failed: Option<u64>,
    /// Most invalid answers.
    pub max_invalid: Option<u64>,
    /// Fewest distinct `model_version`s among the answers.
    pub min_versions: Option<usize>,
    /// Largest p99 latency (from the intended send time) of the successful operations (ms).
    pub max_p99_ms: Option<f64>,
    /// Fewest checkpoints swapped in.
    pub min_swaps: Option<usize>,
}

impl Scenario {
    /// Parse and check a scenario file.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("scenario {}", path.display()))
    }

    /// Parse and check scenario text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let s: Scenario = toml::from_str(text)?;
        s.validate()?;
        Ok(s)
    }

    /// Refuse scenarios that are unbounded or contradictory.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.name.is_empty()
                && self
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "name: use letters, digits, `-` and `_`"
        );
        self.mix.validate()?;
        let l = &self.load;
        match (l.duration, self.sweep.is_some()) {
            (Some(d), false) => anyhow::ensure!(
                d <= MAX_DURATION,
                "load.duration must be at most {} s",
                MAX_DURATION.as_secs()
            ),
            (None, false) => anyhow::bail!("load.duration is required"),
            (Some(_), true) => {
                anyhow::bail!("a sweep takes sweep.step_duration, not load.duration")
            }
            (None, true) => {}
        }
        anyhow::ensure!(l.concurrency > 0, "load.concurrency must be positive");
        anyhow::ensure!(l.max_requests > 0, "load.max_requests must be positive");
        let open = l.arrivals != Arrivals::Closed;
        match (self.sweep.is_some(), open, l.rate, l.knee_fraction) {
            (true, false, _, _) => anyhow::bail!("a sweep needs open-loop arrivals"),
            (true, true, _, _) => {}
            (false, true, Some(_), Some(_)) => {
                anyhow::bail!("load: give `rate` or `knee_fraction`, not both")
            }
            (false, true, None, None) => {
                anyhow::bail!("load: an open loop needs `rate` or `knee_fraction`")
            }
            (false, true, Some(r), None) => {
                anyhow::ensure!(r.is_finite() && r > 0.0, "load.rate must be positive")
            }
            (false, true, None, Some(f)) => {
                anyhow::ensure!(
                    f.is_finite() && f > 0.0,
                    "load.knee_fraction must be positive"
                )
            }
            (false, false, _, _) => {}
        }
        if let Some(sw) = &self.sweep {
            sw.ladder()?;
            anyhow::ensure!(
                !sw.step_duration.is_zero() && sw.step_duration <= MAX_DURATION,
                "sweep.step_duration must be positive and at most {} s",
                MAX_DURATION.as_secs()
            );
            anyhow::ensure!(
                !sw.p99_targets_ms.is_empty()
                    && sw.p99_targets_ms.iter().all(|x| x.is_finite() && *x > 0.0),
                "sweep.p99_targets_ms: give positive targets"
            );
            anyhow::ensure!(
                sw.knee_p99_ms.is_finite() && sw.knee_p99_ms > 0.0,
                "sweep.knee_p99_ms must be positive"
            );
            anyhow::ensure!(
                (0.0..=1.0).contains(&sw.min_ok_share),
                "sweep.min_ok_share must be a share in 0..=1"
            );
            anyhow::ensure!(
                self.hot_swap.is_none() && self.commands.is_empty(),
                "a sweep runs no hot swaps or commands"
            );
        }
        if let Some(h) = &self.hot_swap {
            anyhow::ensure!(
                h.every >= Duration::from_secs(1),
                "hot_swap.every must be at least 1s"
            );
        }
        Ok(())
    }

    /// The whole run's length (warm-up plus measured window) of a single-phase scenario.
    pub fn run_length(&self) -> Duration {
        self.load.warmup.unwrap_or_default() + self.load.duration.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                let s = Scenario::from_file(&p).unwrap();
                assert_eq!(
                    p.file_stem().unwrap().to_str().unwrap(),
                    s.name,
                    "file name and scenario name agree"
                );
                let bound = match &s.sweep {
                    Some(sw) => {
                        (sw.step_warmup + sw.step_duration).as_secs_f64()
                            * sw.ladder().unwrap().len() as f64
                    }
                    None => s.run_length().as_secs_f64(),
                };
                // A sweep may exceed it (it stops at the knee); single runs stay short.
                if s.sweep.is_none() {
                    assert!(bound <= 60.0, "{}: {bound} s", s.name);
                }
                n += 1;
            }
        }
        assert!(n >= 5, "baseline, sweep, hot-swap, redis-outage, overload");
    }

    #[test]
    fn bad_scenarios_are_refused() {
        let ok = "name = \"x\"\n[load]\narrivals = \"poisson\"\nrate = 5\nduration = \"2s\"\n";
        assert!(Scenario::parse(ok).is_ok());
        for bad in [
            ok.replace("rate = 5", "rate = 5\nknee_fraction = 0.5"),
            ok.replace("rate = 5\n", ""),
            ok.replace("\"2s\"", "\"2 weeks\""),
            ok.replace("\"2s\"", "\"3600s\""),
            ok.replace("name = \"x\"", "name = \"../x\""),
            ok.to_owned() + "surprise = 1\n",
            ok.to_owned() + "[mix]\nk = 80\n",
            ok.to_owned() + "[sweep]\nrates = [3, 2]\nstep_warmup = \"1s\"\nstep_duration = \"1s\"\np99_targets_ms = [100]\nknee_p99_ms = 100\n",
        ] {
            assert!(Scenario::parse(&bad).is_err(), "{bad}");
        }
        let closed = ok.replace("\"poisson\"\nrate = 5", "\"closed\"\nconcurrency = 4");
        assert!(Scenario::parse(&closed).is_ok());
    }
}
