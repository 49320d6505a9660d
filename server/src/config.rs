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
    /// `*.item.json`) and the SID index (`sid_index.json` or `*.index.json`): the catalogue of a
    /// server without a model. With `--model-dir` the serving checkpoint's catalogue is used.
    #[arg(
        long,
        env = "SIDREC_DATA",
        value_name = "DIR",
        required_unless_present = "model_dir"
    )]
    pub data: Option<PathBuf>,

    /// Checkpoint to serve: a checkpoint directory (it holds `sidrec.json`), or a directory of
    /// checkpoints, of which the newest complete one is served and watched for (hot swap).
    #[arg(
        long,
        env = "SIDREC_MODEL_DIR",
        value_name = "DIR",
        conflicts_with = "data"
    )]
    pub model_dir: Option<PathBuf>,

    /// Compute device: `cpu`, `cuda` or `cuda:N` (CUDA needs a build with `--features cuda`).
    #[arg(long, env = "SIDREC_DEVICE", default_value = "cpu")]
    pub device: String,

    /// Beam scoring: `exact` (full-vocabulary log-softmax, the reference's scores) or `fast`
    /// (per-level log-softmax). Default: each checkpoint's own (`fast` for a model trained with
    /// `sft --sid-softmax level`), else exact.
    #[arg(long, env = "SIDREC_SCORE_MODE")]
    pub score_mode: Option<sidrec::decode::ScoreMode>,

    /// Most prompts decoded together by the dynamic batcher.
    #[arg(long, env = "SIDREC_MAX_BATCH_SIZE", default_value_t = 8)]
    pub max_batch_size: usize,

    /// Longest a batch waits for more requests after its first (e.g. `2ms`).
    #[arg(long, env = "SIDREC_MAX_BATCH_WAIT", default_value = "2ms", value_parser = parse_duration_or_zero)]
    pub max_batch_wait: Duration,

    /// Most beams (summed over prompts) decoded together; a large request then shares the
    /// compute thread with others batch by batch.
    #[arg(long, env = "SIDREC_MAX_BATCH_BEAMS", default_value_t = 400)]
    pub max_batch_beams: usize,

    /// Most recommendation requests waiting for the model; past it requests get 429.
    #[arg(long, env = "SIDREC_MAX_QUEUE", default_value_t = 256)]
    pub max_queue: usize,

    /// Most beams of one request (`num_beams`, or `limit` of a `mode=model` lookup); at most
    /// the contract's 200.
    #[arg(long, env = "SIDREC_MAX_BEAMS_PER_REQUEST", default_value_t = 200,
          value_parser = clap::value_parser!(u16).range(1..=200))]
    pub max_beams_per_request: u16,

    /// Most beams of one `/v1/recommend/batch` call, summed over its requests.
    #[arg(long, env = "SIDREC_MAX_BEAMS_PER_CALL", default_value_t = 12_800)]
    pub max_beams_per_call: usize,

    /// Directories besides `--model-dir` from which `POST /admin/reload` may load a checkpoint
    /// (comma-separated).
    #[arg(
        long,
        env = "SIDREC_RELOAD_ALLOW",
        value_delimiter = ',',
        value_name = "DIR"
    )]
    pub reload_allow: Vec<PathBuf>,

    /// How often `--model-dir` is checked for a newer checkpoint (`0s`: never; reload with
    /// `POST /admin/reload` only).
    #[arg(long, env = "SIDREC_WATCH_INTERVAL", default_value = "5s", value_parser = parse_duration_or_zero)]
    pub watch_interval: Duration,

    /// Bearer token of `POST /admin/reload` (without it the admin routes answer 401).
    #[arg(long, env = "SIDREC_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Most recent history items put in a prompt (MiniOneRec's histories hold at most 10).
    #[arg(long, env = "SIDREC_MAX_HISTORY", default_value_t = 10)]
    pub max_history: usize,

    /// Longest history kept per user by `POST /v1/events` (oldest entries are dropped).
    #[arg(long, env = "SIDREC_HISTORY_CAP", default_value_t = 100)]
    pub history_cap: usize,

    /// Redis holding user histories and the response cache, shared by every replica, and
    /// carrying reload messages (`redis://[user:password@]host[:port][/db]`). Without it both
    /// live in process memory.
    #[arg(long, env = "SIDREC_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key this server writes (several deployments can share a Redis).
    #[arg(long, env = "SIDREC_REDIS_PREFIX", default_value = "sidrec:")]
    pub redis_prefix: String,

    /// Redis channel whose messages make the server load the newest checkpoint of
    /// `--model-dir`, as `POST /admin/reload` does.
    #[arg(long, env = "SIDREC_RELOAD_CHANNEL", default_value = "sidrec:reload")]
    pub reload_channel: String,

    /// How long a `/v1/recommend` response is cached (`0s`: no response cache).
    #[arg(long, env = "SIDREC_CACHE_TTL", default_value = "60s", value_parser = parse_duration_or_zero)]
    pub cache_ttl: Duration,

    /// Most responses held by the in-process response cache (used without `--redis-url`).
    #[arg(long, env = "SIDREC_CACHE_CAPACITY", default_value_t = 10_000)]
    pub cache_capacity: usize,

    /// Allow cross-origin requests from these origins (comma-separated, or `*`); CORS is off
    /// without it.
    #[arg(long, env = "SIDREC_CORS_ORIGIN", value_delimiter = ',')]
    pub cors_origin: Vec<String>,

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

    /// Longest a client may take to send a request's headers (also the idle time allowed
    /// between requests on a kept-alive connection); past it the connection is closed.
    #[arg(long, env = "SIDREC_HEADER_READ_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// Longest a client may take to send a request's body; past it the answer is 408.
    #[arg(long, env = "SIDREC_BODY_READ_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub body_read_timeout: Duration,

    /// Most open connections; past it new connections are answered 503 and closed.
    #[arg(long, env = "SIDREC_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Log filter in `tracing` `EnvFilter` syntax (`info`, `sidrec_server=debug,tower_http=debug`).
    #[arg(long, env = "SIDREC_LOG", default_value = "info")]
    pub log_level: String,

    /// Write logs as JSON lines instead of text.
    #[arg(long, env = "SIDREC_LOG_JSON")]
    pub log_json: bool,
}

pub use sidrec::duration::parse_duration;

/// [`parse_duration`] that also accepts zero (`0`, `0s`, `0ms`), for flags where zero means
/// "off" or "no wait".
pub fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let digits = t.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    if !digits.is_empty() && digits.parse::<f64>().is_ok_and(|v| v == 0.0) {
        parse_duration(&t.replacen(digits, "1", 1)).map(|_| Duration::ZERO)
    } else {
        parse_duration(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_parses() {
        Config::command_for_test();
        let c =
            Config::try_parse_from(["s", "--model-dir", "m", "--watch-interval", "0s"]).unwrap();
        assert_eq!(c.watch_interval, Duration::ZERO);
        assert_eq!(
            (c.redis_url.as_deref(), c.redis_prefix.as_str()),
            (None, "sidrec:")
        );
        assert_eq!(c.reload_channel, "sidrec:reload");
        assert_eq!(c.cache_ttl, Duration::from_secs(60));
        let c = Config::try_parse_from(["s", "--model-dir", "m", "--cache-ttl", "0s"]).unwrap();
        assert!(c.cache_ttl.is_zero());
        assert!(c.data.is_none());
        assert!(
            Config::try_parse_from(["s"]).is_err(),
            "--data or --model-dir is required"
        );
        assert!(Config::try_parse_from(["s", "--data", "d", "--model-dir", "m"]).is_err());
    }

    #[test]
    fn zero_durations() {
        assert_eq!(parse_duration_or_zero("0ms").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration_or_zero("0").unwrap(), Duration::ZERO);
        assert_eq!(
            parse_duration_or_zero("5ms").unwrap(),
            Duration::from_millis(5)
        );
        assert!(parse_duration_or_zero("0 parsecs").is_err());
        assert!(parse_duration_or_zero("-1s").is_err());
    }

    impl Config {
        fn command_for_test() {
            use clap::CommandFactory;
            Config::command().debug_assert();
        }
    }
}
