//! The engine's error type: what admission, decoding and reloading can fail with, in the
//! engine's own terms. `crate::error` maps it to HTTP, once.

use std::time::Duration;

/// Everything the inference facade, the batcher and reloads can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// No model is configured, or none has loaded yet.
    #[error("no model is serving (none is configured, or it is still loading)")]
    NotLoaded,
    /// `--max-queue` jobs are waiting.
    #[error("the request queue is full ({queued} waiting); retry later")]
    QueueFull {
        /// Jobs waiting.
        queued: usize,
        /// Estimated time until the queued work is done.
        retry_after: Duration,
    },
    /// The work queued ahead and the request's own cannot be done before its deadline.
    #[error(
        "the server cannot finish this request before its deadline \
         (about {} ms of work is queued ahead of it); retry later",
        .retry_after.as_millis()
    )]
    WouldMissDeadline {
        /// Estimated time until the work queued ahead of it is done.
        retry_after: Duration,
    },
    /// The request's deadline passed.
    #[error("the request did not finish within its deadline")]
    DeadlineExceeded,
    /// A request or call over the configured beam limits.
    #[error("{message}")]
    BeamLimit {
        /// The input at fault (`num_beams`, `requests`, `limit`).
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The prompt could not be encoded.
    #[error("encoding the prompt: {0}")]
    Encode(String),
    /// The decoder failed or panicked.
    #[error("decoding failed: {0}")]
    Decode(String),
    /// The batcher's compute thread is gone.
    #[error("the batcher has stopped")]
    Stopped,
    /// `/admin/reload` of a path that does not exist or lies outside the directories reloads
    /// may read (one error for both, so that it reveals nothing about other paths).
    #[error("no checkpoint at this path among the directories reloads may read")]
    ReloadPathRefused,
    /// Another reload is running.
    #[error("another reload is in progress")]
    ReloadInProgress,
    /// A checkpoint that failed to load or verify (the old one keeps serving). The message
    /// names files relative to the directory they were allowed by.
    #[error("checkpoint rejected, the previous one keeps serving: {0}")]
    CheckpointInvalid(String),
}

impl EngineError {
    /// Seconds a refused client should wait, for the errors that carry an estimate.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            EngineError::QueueFull { retry_after, .. }
            | EngineError::WouldMissDeadline { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}
