//! `sidrec-loadtest` binary.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use sidrec_loadtest::actions::SwapTarget;
use sidrec_loadtest::run::{self, RunContext};
use sidrec_loadtest::scenario::Scenario;
use sidrec_loadtest::{parse_duration, Report};

/// Load tests of sidrec-server from scenario files: open- or closed-loop workloads, sweeps to
/// find the knee, hot swaps and outages under load; JSON, HTML and terminal reports.
#[derive(Debug, Parser)]
#[command(name = "sidrec-loadtest", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario file and write `<name>.json` and `<name>.html` into --out-dir.
    Run(Box<RunArgs>),
    /// Print Markdown tables of reports (for BENCHMARKS.md).
    Markdown {
        /// JSON reports.
        #[arg(required = true)]
        reports: Vec<PathBuf>,
    },
    /// Print the knee rate of a sweep report (operations/s); fails when it found none.
    Knee {
        /// JSON report of a sweep.
        report: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SplitArg {
    Train,
    Valid,
    Test,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Scenario file (TOML; see loadtest/scenarios/README.md).
    #[arg(long, short = 's', value_name = "FILE")]
    scenario: PathBuf,
    /// Base URL of the server.
    #[arg(
        long,
        env = "SIDREC_LOADTEST_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// Allow a target that is not a loopback address.
    #[arg(long)]
    allow_remote: bool,
    /// Dataset (or checkpoint) directory: the catalogue answers are checked against, and the
    /// split whose histories are sent.
    #[arg(long, env = "SIDREC_DATA", value_name = "DIR")]
    data: PathBuf,
    /// Split whose histories are sent (random catalogue histories when it is missing).
    #[arg(long, value_enum, default_value_t = SplitArg::Test)]
    split: SplitArg,
    /// Knee rate (operations/s) for scenarios that run at a fraction of it.
    #[arg(long, conflicts_with = "knee_from")]
    knee: Option<f64>,
    /// Read the knee rate from a sweep's JSON report.
    #[arg(long, value_name = "FILE")]
    knee_from: Option<PathBuf>,
    /// Override the measured window (each step of a sweep).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Where to write the reports.
    #[arg(long, default_value = "loadtest-reports", value_name = "DIR")]
    out_dir: PathBuf,
    /// The server's --model-dir, where hot-swap scenarios publish checkpoints.
    #[arg(long, env = "SIDREC_MODEL_DIR", value_name = "DIR")]
    model_dir: Option<PathBuf>,
    /// Checkpoint whose weights published checkpoints carry.
    #[arg(long, value_name = "DIR")]
    checkpoint: Option<PathBuf>,
    /// Bearer token of the server's /admin/reload.
    #[arg(long, env = "SIDREC_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

async fn run_cmd(a: RunArgs) -> anyhow::Result<bool> {
    let scenario = Scenario::from_file(&a.scenario)?;
    let knee = match (&a.knee, &a.knee_from) {
        (Some(k), _) => Some(*k),
        (None, Some(p)) => {
            let r = Report::read(p)?;
            let k = r
                .sweep
                .and_then(|s| s.knee_rate)
                .with_context(|| format!("{}: the sweep found no knee", p.display()))?;
            Some(k)
        }
        (None, None) => None,
    };
    let swap = match (&a.model_dir, &a.checkpoint) {
        (Some(m), Some(c)) => Some(SwapTarget {
            model_dir: m.clone(),
            source: c.clone(),
            admin_token: a.admin_token.clone(),
        }),
        (None, None) => None,
        _ => anyhow::bail!("give --model-dir and --checkpoint together"),
    };
    let ctx = RunContext {
        url: a.url,
        allow_remote: a.allow_remote,
        data: a.data,
        split: match a.split {
            SplitArg::Train => sidrec::data::Split::Train,
            SplitArg::Valid => sidrec::data::Split::Valid,
            SplitArg::Test => sidrec::data::Split::Test,
        },
        knee,
        duration: a.duration,
        swap,
        progress: !a.no_progress,
        scenario_file: Some(a.scenario.clone()),
    };
    let report = run::run(&scenario, &ctx).await?;
    print!("{report}");
    let (json, html) = report.write(&a.out_dir)?;
    println!("reports: {} {}", json.display(), html.display());
    Ok(report.passed())
}

fn markdown(reports: &[PathBuf]) -> anyhow::Result<bool> {
    for p in reports {
        println!("{}", Report::read(p)?.markdown());
    }
    Ok(true)
}

fn knee(report: &std::path::Path) -> anyhow::Result<bool> {
    let k = Report::read(report)?
        .sweep
        .and_then(|s| s.knee_rate)
        .with_context(|| format!("{}: no knee found", report.display()))?;
    println!("{k}");
    Ok(true)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => run_cmd(*a).await,
        Command::Markdown { reports } => markdown(&reports),
        Command::Knee { report } => knee(&report),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("error: some expectations of the scenario did not hold (see above)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
