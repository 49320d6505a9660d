//! State the server keeps outside the model: user histories, the response cache and the fleet's
//! reload channel (DESIGN §6).
//!
//! Without Redis, histories live in the server's memory ([`MemoryHistory`])
//! and responses are cached by [`MemoryCache`]. With `--redis-url`, [`RedisStore`] keeps both in
//! Redis, shared by every replica, and [`subscribe_reloads`] / [`RedisStore::publish_reload`]
//! carry "load a new checkpoint" messages to the whole fleet. Callers hold the stores as
//! `Arc<dyn HistoryStore>` / `Arc<dyn ResponseCache>` and never see which one they have.

mod cache;
mod memory;
mod redis;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use sidrec::ItemId;

pub use self::cache::{cache_key, canonical_json, MemoryCache};
pub use self::memory::MemoryHistory;
pub use self::redis::{
    subscribe_reloads, subscribe_reloads_with, RedisConfig, RedisStore, ReloadEvent,
    SubscribeOptions,
};

/// Every failure of a store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or did not answer in time (Redis down, restarting, loading
    /// its data, network partition). Requests that need it are served 503; the store recovers
    /// by itself when Redis is back.
    #[error("history store unavailable: {0}")]
    Unavailable(String),
    /// The store's configuration is unusable (a malformed `--redis-url`).
    #[error("invalid Redis configuration: {0}")]
    Config(String),
    /// Redis answered with an error that retrying will not fix (e.g. a key of the wrong type
    /// written by something else).
    #[error("Redis command failed: {0}")]
    Command(String),
}

/// The boxed future a store method returns: object-safe async, so that stores can be held as
/// `Arc<dyn HistoryStore>` / `Arc<dyn ResponseCache>`.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Where user histories live.
pub trait HistoryStore: Send + Sync + fmt::Debug {
    /// Append `item_ids` (oldest first) to `user_id`'s history, keep only its newest `cap`
    /// entries, and return the history's length afterwards.
    fn append<'a>(
        &'a self,
        user_id: &'a str,
        item_ids: &'a [ItemId],
        cap: usize,
    ) -> StoreFuture<'a, usize>;

    /// The newest `max_len` entries of `user_id`'s history, oldest first (empty when unknown).
    fn history<'a>(&'a self, user_id: &'a str, max_len: usize) -> StoreFuture<'a, Vec<String>>;
}

/// A cache of serialised responses, keyed by [`cache_key`].
pub trait ResponseCache: Send + Sync + fmt::Debug {
    /// The bytes stored under `key`, if present and not expired.
    fn cache_get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>>;

    /// Store `bytes` under `key` for `ttl` (a zero `ttl` stores nothing).
    fn cache_put<'a>(&'a self, key: &'a str, bytes: &'a [u8], ttl: Duration)
        -> StoreFuture<'a, ()>;
}
