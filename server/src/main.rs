//! `sidrec-server` binary: parse the configuration, set up logs, run.

use clap::Parser;
use sidrec_server::{init_tracing, run, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    init_tracing(&config.log_level, config.log_json);
    run(config).await
}
