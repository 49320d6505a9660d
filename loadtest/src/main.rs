//! `sidrec-loadtest` binary.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use sidrec_loadtest::scenario::{load_catalogue, Recommend};
use sidrec_loadtest::{parse_duration, run, LoadConfig, ScenarioKind};

/// Open-loop load generator for sidrec-server: sends requests on a fixed schedule (not waiting
/// for responses), measures latency from each request's scheduled time, and reports counts and
/// percentiles.
#[derive(Debug, Parser)]
#[command(name = "sidrec-loadtest", version, about)]
struct Cli {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Requests per second (open loop).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// How long to send for (`5s`, `500ms`, `2m`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Most requests in flight; requests due beyond it are counted as dropped, not sent.
    #[arg(long, default_value_t = 256)]
    concurrency_limit: usize,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// What to send.
    #[arg(long, value_enum, default_value_t = ScenarioKind::LookupTitle)]
    scenario: ScenarioKind,
    /// Dataset or checkpoint directory to draw queries from (items + SID index).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Seed of the query stream.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let catalogue = load_catalogue(&cli.data)?;
    let scenario: Box<dyn sidrec_loadtest::Scenario> = match cli.scenario {
        ScenarioKind::Recommend => Box::new(Recommend::from_dir(&cli.data, &catalogue)?),
        kind => kind.build(&catalogue)?,
    };
    let cfg = LoadConfig {
        url: cli.url,
        rate: cli.rate,
        duration: cli.duration,
        concurrency_limit: cli.concurrency_limit,
        timeout: cli.timeout,
        seed: cli.seed,
    };
    let report = run(&cfg, scenario).await?;
    println!("{report}");
    if let Some(out) = &cli.out {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(out, json + "\n").with_context(|| format!("writing {}", out.display()))?;
        println!("report written to {}", out.display());
    }
    Ok(())
}
