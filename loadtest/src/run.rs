//! Running a scenario: one phase (with hot swaps and commands alongside), or a sweep of
//! phases, with the server's metrics sampled throughout; then the expectations are checked.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sidrec::data::Split;
use tokio::time::Instant;

use crate::actions::{self, ActionRecord, SwapTarget};
use crate::driver::{self, Client, Phase};
use crate::record::PhaseReport;
use crate::report::{Check, Report, Sustainable, SweepResult, SweepStep};
use crate::scenario::Scenario;
use crate::workload::Workload;

/// Default per-request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything a run needs besides the scenario file.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// Base URL of the server.
    pub url: String,
    /// Allow a target other than loopback.
    pub allow_remote: bool,
    /// Dataset (or checkpoint) directory: the catalogue answers are checked against, and the
    /// split whose histories are sent.
    pub data: PathBuf,
    /// Which split's histories.
    pub split: Split,
    /// The knee rate, for scenarios that give `knee_fraction`.
    pub knee: Option<f64>,
    /// Overrides the scenario's measured window.
    pub duration: Option<Duration>,
    /// Hot swaps: where and what to publish.
    pub swap: Option<SwapTarget>,
    /// Draw a progress bar on the terminal.
    pub progress: bool,
    /// Where the scenario came from (for the report).
    pub scenario_file: Option<PathBuf>,
}

fn progress_bar(enabled: bool) -> ProgressBar {
    let target = if enabled {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let pb = ProgressBar::with_draw_target(Some(0), target);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:>14} [{bar:30}] {pos:>3}/{len:3} s  {msg}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// Whether a sweep step is sustainable at a p99 target.
fn sustainable(step: &PhaseReport, p99_ms: f64, min_ok_share: f64) -> bool {
    step.sent > 0 && step.ok_share >= min_ok_share && step.latency_intended.p99_ms < p99_ms
}

/// The largest rate `r` such that every step up to `r` is sustainable at `p99_ms` (so a lucky
/// step above a failed one does not count).
pub fn max_sustainable(steps: &[PhaseReport], p99_ms: f64, min_ok_share: f64) -> Option<f64> {
    let mut best = None;
    for s in steps {
        if !sustainable(s, p99_ms, min_ok_share) {
            break;
        }
        best = s.offered_rate;
    }
    best
}

/// Run `scenario` as `ctx` says.
pub async fn run(scenario: &Scenario, ctx: &RunContext) -> anyhow::Result<Report> {
    let base = driver::target(&ctx.url, ctx.allow_remote)?;
    let catalogue = Arc::new(crate::load_catalogue(&ctx.data)?);
    let (histories, source) = Workload::histories_from(&ctx.data, ctx.split, &catalogue)?;
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let workload = Workload::new(
        scenario.mix.clone(),
        catalogue.clone(),
        histories,
        format!("loadtest-{}-{started_unix}-", scenario.name),
    )?;
    let n_histories = workload.histories();
    let shared: driver::SharedWorkload = Arc::new(Mutex::new((
        workload,
        ChaCha8Rng::seed_from_u64(scenario.load.seed),
    )));
    let timeout = scenario.load.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let client = Client::new(base, timeout, catalogue)?;
    if scenario.hot_swap.is_some() && ctx.swap.is_none() {
        anyhow::bail!(
            "scenario {} publishes checkpoints: give --model-dir (the server's) and --checkpoint",
            scenario.name
        );
    }

    let run_start = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let sampler = tokio::spawn(crate::scrape::sample(
        client.clone(),
        run_start,
        Duration::from_secs(1),
        stop_rx,
    ));
    let pb = progress_bar(ctx.progress);
    let mut phases = Vec::new();
    let mut actions_done: Vec<ActionRecord> = Vec::new();
    let mut sweep = None;
    let l = &scenario.load;
    let duration = ctx.duration.or(l.duration).unwrap_or_default();

    if let Some(sw) = &scenario.sweep {
        let ladder = sw.ladder()?;
        for (i, &rate) in ladder.iter().enumerate() {
            let phase = Phase {
                label: format!("step {}/{}", i + 1, ladder.len()),
                arrivals: l.arrivals,
                rate,
                concurrency: l.concurrency,
                warmup: sw.step_warmup,
                duration: ctx.duration.unwrap_or(sw.step_duration),
                max_requests: l.max_requests,
            };
            let rep = driver::run_phase(&client, &shared, &phase, run_start, &pb).await?;
            let past_knee = !sustainable(&rep, sw.knee_p99_ms, sw.min_ok_share);
            phases.push(rep);
            // One step past the knee is enough: the steps above it only queue more.
            if past_knee {
                break;
            }
        }
        let steps = phases
            .iter()
            .map(|p| SweepStep {
                offered_rate: p.offered_rate.unwrap_or(0.0),
                sent_rate: p.sent_rate,
                ok_rate: p.ok_rate,
                ok_share: p.ok_share,
                p50_ms: p.latency_intended.p50_ms,
                p99_ms: p.latency_intended.p99_ms,
                p99_actual_ms: p.latency_actual.p99_ms,
                p999_ms: p.latency_intended.p999_ms,
            })
            .collect();
        let mut targets = sw.p99_targets_ms.clone();
        targets.sort_by(f64::total_cmp);
        sweep = Some(SweepResult {
            steps,
            sustainable: targets
                .iter()
                .map(|&t| Sustainable {
                    p99_ms: t,
                    max_rate: max_sustainable(&phases, t, sw.min_ok_share),
                })
                .collect(),
            knee_p99_ms: sw.knee_p99_ms,
            knee_rate: max_sustainable(&phases, sw.knee_p99_ms, sw.min_ok_share),
            min_ok_share: sw.min_ok_share,
            reached_end: phases.len() == ladder.len()
                && phases
                    .last()
                    .is_some_and(|p| sustainable(p, sw.knee_p99_ms, sw.min_ok_share)),
        });
    } else {
        let rate = match (l.rate, l.knee_fraction) {
            (Some(r), _) => r,
            (None, Some(f)) => {
                let knee = ctx.knee.ok_or_else(|| {
                    anyhow::anyhow!(
                        "scenario {} runs at {f} x the knee: give --knee RATE or --knee-from SWEEP.json",
                        scenario.name
                    )
                })?;
                anyhow::ensure!(knee.is_finite() && knee > 0.0, "--knee must be positive");
                f * knee
            }
            (None, None) => 0.0,
        };
        let phase = Phase {
            label: scenario.name.clone(),
            arrivals: l.arrivals,
            rate,
            concurrency: l.concurrency,
            warmup: l.warmup.unwrap_or_default(),
            duration,
            max_requests: l.max_requests,
        };
        let until = run_start + phase.warmup + phase.duration;
        let swaps = match (&scenario.hot_swap, &ctx.swap) {
            (Some(h), Some(t)) => Some(tokio::spawn(actions::hot_swaps(
                client.clone(),
                t.clone(),
                h.every,
                h.via,
                run_start,
                until,
            ))),
            _ => None,
        };
        let cmds = tokio::spawn(actions::commands(scenario.commands.clone(), run_start));
        let rep = driver::run_phase(&client, &shared, &phase, run_start, &pb).await;
        if let Some(s) = swaps {
            match s.await? {
                Ok(v) => actions_done.extend(v),
                Err(e) => actions_done.push(ActionRecord {
                    t_s: 0.0,
                    kind: "swap".into(),
                    what: "loading the source checkpoint".into(),
                    ok: false,
                    detail: format!("{e:#}"),
                    ..ActionRecord::default()
                }),
            }
        }
        // Commands due after the load ended still run (a restart must not be skipped).
        actions_done.extend(cmds.await?);
        phases.push(rep?);
    }
    pb.finish_and_clear();
    let _ = stop_tx.send(());
    let server = sampler.await?;
    actions_done.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));

    let mut report = Report {
        tool: format!("sidrec-loadtest {}", env!("CARGO_PKG_VERSION")),
        scenario: scenario.clone(),
        scenario_file: ctx.scenario_file.as_ref().map(|p| p.display().to_string()),
        url: ctx.url.clone(),
        started_unix,
        histories: format!("{n_histories} histories from {source}"),
        knee_input: ctx.knee,
        phases,
        sweep,
        actions: actions_done,
        server,
        checks: Vec::new(),
    };
    report.checks = checks(&report);
    Ok(report)
}

/// Evaluate the scenario's `[expect]` table (and the generator's own health).
pub fn checks(r: &Report) -> Vec<Check> {
    let e = &r.scenario.expect;
    let (mut failed, mut invalid) = (0u64, 0u64);
    let mut versions = std::collections::BTreeSet::new();
    for p in &r.phases {
        failed += p.counts.failed();
        invalid += p.counts.invalid;
        versions.extend(p.versions.keys().cloned());
    }
    let mut out = Vec::new();
    let mut check = |name: &str, ok: bool, detail: String| {
        out.push(Check {
            name: name.to_owned(),
            ok,
            detail,
        })
    };
    if let Some(m) = e.max_failed {
        check(
            "max_failed",
            failed <= m,
            format!("{failed} failed (at most {m})"),
        );
    }
    if let Some(m) = e.max_invalid {
        check(
            "max_invalid",
            invalid <= m,
            format!("{invalid} invalid (at most {m})"),
        );
    }
    if let Some(m) = e.min_versions {
        check(
            "min_versions",
            versions.len() >= m,
            format!("{} versions answered (at least {m})", versions.len()),
        );
    }
    if let Some(m) = e.max_p99_ms {
        let worst = r
            .phases
            .iter()
            .map(|p| p.latency_ok.p99_ms)
            .fold(0.0, f64::max);
        check(
            "max_p99_ms",
            worst <= m,
            format!("p99 {worst:.1} ms (at most {m} ms)"),
        );
    }
    if let Some(m) = e.min_swaps {
        let n = r
            .actions
            .iter()
            .filter(|a| a.kind == "swap" && a.ok)
            .count();
        check(
            "min_swaps",
            n >= m,
            format!("{n} checkpoints swapped in (at least {m})"),
        );
    }
    let failed_actions: Vec<&str> = r
        .actions
        .iter()
        .filter(|a| !a.ok)
        .map(|a| a.what.as_str())
        .collect();
    if !r.actions.is_empty() {
        check(
            "actions",
            failed_actions.is_empty(),
            if failed_actions.is_empty() {
                format!("{} actions succeeded", r.actions.len())
            } else {
                format!("failed: {}", failed_actions.join("; "))
            },
        );
    }
    out
}
