//! Command line and environment configuration.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// `sidrec-server`: serves SID lookups (and, with a model, recommendations) over HTTP.
#[derive(Debug, Clone, Parser)]
#[command(name = "sidrec-server", version, about, long_about = None)]
pub struct Config {
    /// Dataset or checkpoint directory holding the item metadata (`items.json` or
    /// `*.item.json`) and the SID index (`sid_index.json` or `*.index.json`).
    #[arg(long, env = "SIDREC_DATA", value_name = "DIR")]
    pub data: PathBuf,

    /// Address to listen on.
    #[arg(long, env = "SIDREC_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,

    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "SIDREC_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Deadline of every request (e.g. `10s`, `500ms`); past it the answer is 504.
    #[arg(long, env = "SIDREC_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Largest request body accepted, in bytes; larger bodies get 413.
    #[arg(long, env = "SIDREC_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,

    /// Log filter in `tracing` `EnvFilter` syntax (`info`, `sidrec_server=debug,tower_http=debug`).
    #[arg(long, env = "SIDREC_LOG", default_value = "info")]
    pub log_level: String,

    /// Write logs as JSON lines instead of text.
    #[arg(long, env = "SIDREC_LOG_JSON")]
    pub log_json: bool,
}

pub use sidrec::duration::parse_duration;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_parses() {
        Config::command_for_test();
    }

    impl Config {
        fn command_for_test() {
            use clap::CommandFactory;
            Config::command().debug_assert();
        }
    }
}
