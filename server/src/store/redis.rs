//! Redis behind the store traits: capped history lists, the response cache and the reload
//! channel.
//!
//! Every command goes through one [`ConnectionManager`], which reconnects by itself after Redis
//! restarts. Every command is bounded by `op_timeout`, so a Redis that is down or unreachable
//! costs a request at most that long and yields [`StoreError::Unavailable`], never a hang.

use std::future::Future;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{AsyncCommands, Client, ErrorKind, RedisError, RedisResult, ServerErrorKind};
use futures_util::StreamExt;
use sidrec::ItemId;
use tokio::sync::mpsc;

use super::{HistoryStore, ResponseCache, StoreError, StoreFuture};

/// How to reach Redis and lay out keys.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://[user:password@]host[:port][/db]`, `rediss://...` or `unix:///path`.
    pub url: String,
    /// Prepended to every key, so that several deployments can share one Redis.
    pub key_prefix: String,
    /// The longest any one operation may take, reconnecting included.
    pub op_timeout: Duration,
    /// The longest one connection attempt may take.
    pub connect_timeout: Duration,
    /// Drop a history this long after its last append (`None`: keep it forever).
    pub history_ttl: Option<Duration>,
}

impl RedisConfig {
    /// The defaults for `url`: prefix `sidrec:`, 1 s per operation, 500 ms per connection
    /// attempt, histories kept forever.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key_prefix: "sidrec:".into(),
            op_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_millis(500),
            history_ttl: None,
        }
    }
}

/// Histories, cached responses and reload messages in Redis. Cheap to clone (one shared
/// connection underneath).
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    client: Client,
    prefix: String,
    op_timeout: Duration,
    history_ttl: Option<Duration>,
    addr: String,
}

impl std::fmt::Debug for RedisStore {
    // The URL may hold a password: show only the address.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("addr", &self.addr)
            .field("prefix", &self.prefix)
            .field("op_timeout", &self.op_timeout)
            .finish()
    }
}

fn open_client(url: &str) -> Result<Client, StoreError> {
    Client::open(url).map_err(|e| StoreError::Config(format!("--redis-url: {e}")))
}

/// Whether a Redis error means "cannot be reached right now" rather than "refused this".
fn is_unavailable(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ClusterDown
            )
        )
}

impl RedisStore {
    /// A store for `config`. Does not wait for Redis: the first command connects, so the server
    /// starts (and serves requests that carry their history) while Redis is down. Call
    /// [`RedisStore::ping`] to check it is reachable. Must be called inside a Tokio runtime.
    pub fn open(config: &RedisConfig) -> Result<Self, StoreError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(StoreError::Config(
                "RedisStore::open must run inside a Tokio runtime".into(),
            ));
        }
        let client = open_client(&config.url)?;
        let addr = client.get_connection_info().addr().to_string();
        // One quick connection attempt (and one retry) per reconnect: a request waits at most
        // `op_timeout` anyway, and the next request starts another reconnect.
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.op_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(config.connect_timeout);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)
            .map_err(|e| StoreError::Config(format!("Redis at {addr}: {e}")))?;
        Ok(Self {
            conn,
            client,
            prefix: config.key_prefix.clone(),
            op_timeout: config.op_timeout,
            history_ttl: config.history_ttl,
            addr,
        })
    }

    /// The Redis key holding `user_id`'s history.
    pub fn history_key(&self, user_id: &str) -> String {
        format!("{}hist:{user_id}", self.prefix)
    }

    /// The Redis key holding the cached response with [`super::cache_key`] `key`.
    pub fn cache_redis_key(&self, key: &str) -> String {
        format!("{}cache:{key}", self.prefix)
    }

    /// Run one Redis operation under `op_timeout`, mapping its failure to a [`StoreError`].
    async fn exec<T>(
        &self,
        what: &str,
        op: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.op_timeout, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if is_unavailable(&e) => Err(StoreError::Unavailable(format!(
                "Redis at {}: {what}: {e}",
                self.addr
            ))),
            Ok(Err(e)) => Err(StoreError::Command(format!(
                "Redis at {}: {what}: {e}",
                self.addr
            ))),
            Err(_) => Err(StoreError::Unavailable(format!(
                "Redis at {}: {what}: no answer within {:?}",
                self.addr, self.op_timeout
            ))),
        }
    }

    /// Check that Redis answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        self.exec("PING", async move {
            ::redis::cmd("PING").query_async::<String>(&mut conn).await
        })
        .await
        .map(|_| ())
    }

    /// Append to a history; see [`HistoryStore::append`].
    pub async fn append_history(
        &self,
        user_id: &str,
        item_ids: &[ItemId],
        cap: usize,
    ) -> Result<usize, StoreError> {
        let key = self.history_key(user_id);
        let mut conn = self.conn.clone();
        if cap == 0 {
            // LTRIM with a start of -0 would keep everything; a cap of 0 keeps nothing.
            return self
                .exec("DEL", async move { conn.del::<_, ()>(&key).await })
                .await
                .map(|_| 0);
        }
        if item_ids.is_empty() {
            return self
                .exec("LLEN", async move { conn.llen::<_, usize>(&key).await })
                .await;
        }
        let start = -(cap.min(i64::MAX as usize) as i64);
        let mut pipe = ::redis::pipe();
        // MULTI/EXEC: readers never see the list past its cap, and a crash between the two
        // commands cannot leave it uncapped.
        pipe.atomic()
            .rpush(&key, item_ids)
            .ltrim(&key, start as isize, -1)
            .ignore();
        if let Some(ttl) = self.history_ttl {
            pipe.pexpire(&key, ttl.as_millis().min(i64::MAX as u128) as i64)
                .ignore();
        }
        let (pushed,): (usize,) = self
            .exec(
                "RPUSH+LTRIM",
                async move { pipe.query_async(&mut conn).await },
            )
            .await?;
        Ok(pushed.min(cap))
    }

    /// Read a history; see [`HistoryStore::history`].
    pub async fn read_history(
        &self,
        user_id: &str,
        max_len: usize,
    ) -> Result<Vec<String>, StoreError> {
        if max_len == 0 {
            return Ok(Vec::new());
        }
        let key = self.history_key(user_id);
        let start = -(max_len.min(i64::MAX as usize) as i64);
        let mut conn = self.conn.clone();
        self.exec("LRANGE", async move {
            conn.lrange::<_, Vec<String>>(&key, start as isize, -1)
                .await
        })
        .await
    }

    /// The cached response under `key` ([`super::cache_key`]), if any.
    pub async fn get_cached(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.cache_redis_key(key);
        let mut conn = self.conn.clone();
        self.exec(
            "GET",
            async move { conn.get::<_, Option<Vec<u8>>>(&key).await },
        )
        .await
    }

    /// Cache `bytes` under `key` for `ttl` (millisecond precision; a zero `ttl` stores nothing).
    pub async fn put_cached(
        &self,
        key: &str,
        bytes: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        if ttl.is_zero() {
            return Ok(());
        }
        let key = self.cache_redis_key(key);
        let ms = ttl.as_millis().clamp(1, u64::MAX as u128) as u64;
        let mut conn = self.conn.clone();
        self.exec("SET PX", async move {
            conn.pset_ex::<_, _, ()>(&key, bytes, ms).await
        })
        .await
    }

    /// Publish a reload message on `channel`; returns how many subscribers received it (0 when
    /// no replica listens right now: Redis pub/sub does not keep messages).
    pub async fn publish_reload(&self, channel: &str, message: &str) -> Result<usize, StoreError> {
        let mut conn = self.conn.clone();
        self.exec("PUBLISH", async move {
            conn.publish::<_, _, usize>(channel, message).await
        })
        .await
    }

    /// Subscribe to `channel` on this store's Redis; see [`subscribe_reloads`].
    pub fn subscribe_reloads(
        &self,
        channel: &str,
        options: SubscribeOptions,
    ) -> mpsc::Receiver<ReloadEvent> {
        spawn_reload_loop(self.client.clone(), channel.to_owned(), options)
    }
}

impl HistoryStore for RedisStore {
    fn append<'a>(
        &'a self,
        user_id: &'a str,
        item_ids: &'a [ItemId],
        cap: usize,
    ) -> StoreFuture<'a, usize> {
        Box::pin(self.append_history(user_id, item_ids, cap))
    }

    fn history<'a>(&'a self, user_id: &'a str, max_len: usize) -> StoreFuture<'a, Vec<String>> {
        Box::pin(self.read_history(user_id, max_len))
    }
}

impl ResponseCache for RedisStore {
    fn cache_get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(self.get_cached(key))
    }

    fn cache_put<'a>(
        &'a self,
        key: &'a str,
        bytes: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.put_cached(key, bytes, ttl))
    }
}

/// What a reload subscription yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadEvent {
    /// The subscription is (again) in place. Sent after every (re)subscription: messages
    /// published while it was down are lost, so a receiver should check for a new checkpoint
    /// itself when it sees this after the first time.
    Subscribed,
    /// A message published on the channel (its payload, lossily decoded as UTF-8).
    Message(String),
}

/// Timing of a reload subscription.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    /// The longest one connect-and-subscribe attempt, or one liveness ping, may take.
    pub connect_timeout: Duration,
    /// The first wait after a failure; doubled after each further failure.
    pub min_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// How often the live subscription is pinged, to notice a connection that died silently.
    pub ping_interval: Duration,
    /// Events held for a slow receiver before the subscription waits for it.
    pub buffer: usize,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            ping_interval: Duration::from_secs(5),
            buffer: 16,
        }
    }
}

/// Subscribe to `channel` at `url` with [`SubscribeOptions::default`]; see
/// [`subscribe_reloads_with`].
pub fn subscribe_reloads(
    url: &str,
    channel: &str,
) -> Result<mpsc::Receiver<ReloadEvent>, StoreError> {
    subscribe_reloads_with(url, channel, SubscribeOptions::default())
}

/// Subscribe to `channel` at `url` in a background task that resubscribes, with exponential
/// backoff, whenever the connection is lost (Redis restarted, network cut). The task ends when
/// the returned receiver is dropped. Fails only on a malformed URL; an unreachable Redis is
/// retried. Must be called inside a Tokio runtime.
pub fn subscribe_reloads_with(
    url: &str,
    channel: &str,
    options: SubscribeOptions,
) -> Result<mpsc::Receiver<ReloadEvent>, StoreError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(StoreError::Config(
            "subscribe_reloads must run inside a Tokio runtime".into(),
        ));
    }
    let client = open_client(url)?;
    Ok(spawn_reload_loop(client, channel.to_owned(), options))
}

fn spawn_reload_loop(
    client: Client,
    channel: String,
    options: SubscribeOptions,
) -> mpsc::Receiver<ReloadEvent> {
    let (tx, rx) = mpsc::channel(options.buffer.max(1));
    tokio::spawn(reload_loop(client, channel, options, tx));
    rx
}

async fn subscribe_once(
    client: &Client,
    channel: &str,
) -> RedisResult<(::redis::aio::PubSubSink, ::redis::aio::PubSubStream)> {
    let (mut sink, stream) = client.get_async_pubsub().await?.split();
    sink.subscribe(channel).await?;
    Ok((sink, stream))
}

async fn reload_loop(
    client: Client,
    channel: String,
    options: SubscribeOptions,
    tx: mpsc::Sender<ReloadEvent>,
) {
    let addr = client.get_connection_info().addr().to_string();
    let mut backoff = options.min_backoff;
    loop {
        let attempt = tokio::select! {
            _ = tx.closed() => return,
            r = tokio::time::timeout(options.connect_timeout, subscribe_once(&client, &channel)) => r,
        };
        match attempt {
            Ok(Ok((mut sink, mut stream))) => {
                tracing::info!(%addr, %channel, "subscribed to the reload channel");
                backoff = options.min_backoff;
                if tx.send(ReloadEvent::Subscribed).await.is_err() {
                    return;
                }
                let mut ping = tokio::time::interval_at(
                    tokio::time::Instant::now() + options.ping_interval,
                    options.ping_interval,
                );
                loop {
                    tokio::select! {
                        _ = tx.closed() => return,
                        msg = stream.next() => match msg {
                            Some(msg) => {
                                let payload = String::from_utf8_lossy(msg.get_payload_bytes());
                                let event = ReloadEvent::Message(payload.into_owned());
                                if tx.send(event).await.is_err() {
                                    return;
                                }
                            }
                            None => {
                                tracing::warn!(%addr, %channel, "reload subscription lost; resubscribing");
                                break;
                            }
                        },
                        _ = ping.tick() => {
                            let pong = tokio::time::timeout(
                                options.connect_timeout,
                                sink.ping::<::redis::Value>(),
                            )
                            .await;
                            if !matches!(pong, Ok(Ok(_))) {
                                tracing::warn!(%addr, %channel, "reload subscription does not answer pings; resubscribing");
                                break;
                            }
                        }
                    }
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(%addr, %channel, error = %e, retry_in = ?backoff, "cannot subscribe to the reload channel");
            }
            Err(_) => {
                tracing::warn!(%addr, %channel, retry_in = ?backoff, "subscribing to the reload channel timed out");
            }
        }
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(options.max_backoff);
    }
}
