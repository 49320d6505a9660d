//! The Redis store against a real `redis-server` that each test starts on a free port (installed
//! by `scripts/redis-server.sh`). Tests that need it skip when `redis-server` is not on PATH,
//! unless `SIDREC_REQUIRE_SHARED=1`, in which case they fail.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sidrec::testing::REQUIRE_SHARED_ENV;
use sidrec_server::store::{
    cache_key, subscribe_reloads_with, HistoryStore, RedisConfig, RedisStore, ReloadEvent,
    ResponseCache, StoreError, SubscribeOptions,
};
use tokio::sync::mpsc;

/// A throw-away `redis-server` (no persistence) on 127.0.0.1, killed on drop.
struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Start one, or `None` (with a note) when `redis-server` is not installed.
    fn start() -> Option<Self> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            let required = std::env::var(REQUIRE_SHARED_ENV).is_ok_and(|v| v == "1");
            assert!(
                !required,
                "{REQUIRE_SHARED_ENV}=1 but redis-server is not installed \
                 (run scripts/redis-server.sh)"
            );
            eprintln!("skipping: redis-server is not installed (run scripts/redis-server.sh)");
            return None;
        }
        let port = free_port();
        let mut server = Self { port, child: None };
        server.spawn();
        Some(server)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ping(self.port) {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on port {} within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL it: no goodbye to clients, as in a crash.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port (empty: nothing is persisted).
    fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("cannot bind a free port");
    l.local_addr().expect("no local address").port()
}

/// Whether a Redis answers PING on `port`.
fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

fn config(server: &RedisServer, prefix: &str) -> RedisConfig {
    RedisConfig {
        key_prefix: prefix.into(),
        ..RedisConfig::new(server.url())
    }
}

/// The next event within `within`, panicking otherwise.
async fn next_event(rx: &mut mpsc::Receiver<ReloadEvent>, within: Duration) -> ReloadEvent {
    tokio::time::timeout(within, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no reload event within {within:?}"))
        .expect("the reload subscription ended")
}

fn quick_resubscribe() -> SubscribeOptions {
    SubscribeOptions {
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(400),
        ..SubscribeOptions::default()
    }
}

#[tokio::test]
async fn history_is_a_capped_list_under_the_prefix() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store: Arc<dyn HistoryStore> = Arc::new(RedisStore::open(&config(&server, "t1:")).unwrap());
    assert_eq!(store.append("u", &[1, 2, 3], 4).await.unwrap(), 3);
    assert_eq!(store.append("u", &[4, 5], 4).await.unwrap(), 4);
    assert_eq!(store.history("u", 10).await.unwrap(), ["2", "3", "4", "5"]);
    assert_eq!(store.history("u", 2).await.unwrap(), ["4", "5"]);
    assert!(store.history("u", 0).await.unwrap().is_empty());
    assert!(store.history("nobody", 10).await.unwrap().is_empty());
    // Appending nothing reports the length and changes nothing.
    assert_eq!(store.append("u", &[], 4).await.unwrap(), 4);
    // Histories are per user.
    assert_eq!(store.append("v", &[9], 4).await.unwrap(), 1);
    assert_eq!(store.history("v", 10).await.unwrap(), ["9"]);
    assert_eq!(store.history("u", 10).await.unwrap(), ["2", "3", "4", "5"]);
    // A cap of 0 keeps nothing.
    assert_eq!(store.append("v", &[10, 11], 0).await.unwrap(), 0);
    assert!(store.history("v", 10).await.unwrap().is_empty());

    // The list really lives at `{prefix}hist:{user}`, capped in Redis itself.
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let raw: Vec<String> = redis::cmd("LRANGE")
        .arg("t1:hist:u")
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(raw, ["2", "3", "4", "5"]);
    // A key of another type under the history key is a command error, not "unavailable".
    let _: () = redis::cmd("SET")
        .arg("t1:hist:w")
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(matches!(
        store.history("w", 10).await,
        Err(StoreError::Command(_))
    ));
}

#[tokio::test]
async fn history_ttl_drops_idle_histories() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = RedisStore::open(&RedisConfig {
        history_ttl: Some(Duration::from_millis(300)),
        ..config(&server, "t2:")
    })
    .unwrap();
    store.append("u", &[1], 10).await.unwrap();
    assert_eq!(store.history("u", 10).await.unwrap(), ["1"]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(store.history("u", 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn response_cache_round_trips_and_expires() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let cache: Arc<dyn ResponseCache> =
        Arc::new(RedisStore::open(&config(&server, "t3:")).unwrap());
    let req = json!({"history": [1, 2], "k": 10, "exclude": [5, 3]});
    let same = json!({"exclude": [3, 5], "k": 10, "history": [1, 2]});
    let key = cache_key("ckpt-1", &req);
    assert_eq!(cache.cache_get(&key).await.unwrap(), None);
    let body = br#"{"items":[]}"#;
    cache
        .cache_put(&key, body, Duration::from_millis(400))
        .await
        .unwrap();
    // An equivalent request hits; the same request under another checkpoint misses.
    assert_eq!(
        cache
            .cache_get(&cache_key("ckpt-1", &same))
            .await
            .unwrap()
            .as_deref(),
        Some(&body[..])
    );
    assert_eq!(
        cache.cache_get(&cache_key("ckpt-2", &req)).await.unwrap(),
        None
    );
    // A zero TTL stores nothing.
    let other = cache_key("ckpt-1", &json!({"history": [7]}));
    cache.cache_put(&other, b"x", Duration::ZERO).await.unwrap();
    assert_eq!(cache.cache_get(&other).await.unwrap(), None);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        cache.cache_get(&key).await.unwrap(),
        None,
        "entry outlived its TTL"
    );
}

#[tokio::test]
async fn reload_messages_are_delivered() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = RedisStore::open(&config(&server, "t4:")).unwrap();
    let mut rx = subscribe_reloads_with(&server.url(), "t4:reload", quick_resubscribe()).unwrap();
    assert_eq!(
        next_event(&mut rx, Duration::from_secs(5)).await,
        ReloadEvent::Subscribed
    );
    assert_eq!(
        store.publish_reload("t4:reload", "/ckpt/v2").await.unwrap(),
        1
    );
    assert_eq!(
        next_event(&mut rx, Duration::from_secs(5)).await,
        ReloadEvent::Message("/ckpt/v2".into())
    );
    // Other channels are not delivered.
    assert_eq!(store.publish_reload("other", "x").await.unwrap(), 0);
}

#[tokio::test]
async fn unreachable_redis_fails_fast_as_unavailable() {
    // Nothing listens on this port: no redis-server needed.
    let url = format!("redis://127.0.0.1:{}/", free_port());
    let store = RedisStore::open(&RedisConfig::new(url)).unwrap();
    for _ in 0..3 {
        let t = Instant::now();
        let err = store.history("u", 10).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "took {:?}",
            t.elapsed()
        );
    }
    assert!(matches!(
        RedisStore::open(&RedisConfig::new("http://nope")),
        Err(StoreError::Config(_))
    ));
}

#[tokio::test]
async fn store_and_subscriber_survive_a_redis_restart() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let store = RedisStore::open(&config(&server, "t5:")).unwrap();
    let mut rx = subscribe_reloads_with(&server.url(), "t5:reload", quick_resubscribe()).unwrap();
    assert_eq!(
        next_event(&mut rx, Duration::from_secs(5)).await,
        ReloadEvent::Subscribed
    );
    store.append("u", &[1, 2], 10).await.unwrap();
    assert_eq!(store.history("u", 10).await.unwrap(), ["1", "2"]);

    server.kill();
    // While Redis is down every call fails, each within about op_timeout (1 s), never hanging.
    for _ in 0..3 {
        let t = Instant::now();
        let err = store.history("u", 10).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "took {:?}",
            t.elapsed()
        );
        let err = store.append("u", &[3], 10).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    }

    server.restart();
    // The same store reconnects by itself (the first call after the restart may still see the
    // broken connection).
    let deadline = Instant::now() + Duration::from_secs(10);
    let hist = loop {
        match store.history("u", 10).await {
            Ok(h) => break h,
            Err(StoreError::Unavailable(e)) => {
                assert!(Instant::now() < deadline, "no reconnect within 10 s: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    // Nothing was persisted, so the restarted Redis is empty.
    assert!(hist.is_empty());
    assert_eq!(store.append("u", &[3], 10).await.unwrap(), 1);
    assert_eq!(store.history("u", 10).await.unwrap(), ["3"]);

    // The subscriber resubscribed by itself and gets messages published after the restart.
    assert_eq!(
        next_event(&mut rx, Duration::from_secs(10)).await,
        ReloadEvent::Subscribed
    );
    assert_eq!(
        store.publish_reload("t5:reload", "/ckpt/v3").await.unwrap(),
        1
    );
    assert_eq!(
        next_event(&mut rx, Duration::from_secs(5)).await,
        ReloadEvent::Message("/ckpt/v3".into())
    );
}
