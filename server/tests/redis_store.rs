//! The Redis store against a real `redis-server` that each test starts on a free port (installed
//! by `scripts/redis-server.sh`), alone and wired into the server binary. Tests that need it
//! skip when `redis-server` is not on PATH (see [`common::redis`]).

mod common;

use common::redis::{free_port, RedisServer};

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sidrec_server::store::{
    cache_key, subscribe_reloads_with, HistoryStore, RedisConfig, RedisStore, ReloadEvent,
    ResponseCache, StoreError, SubscribeOptions,
};
use tokio::sync::mpsc;

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

/// POST `body` to the server at `base`; check the answer against the contract.
async fn post_to(
    base: &str,
    path: &str,
    body: &serde_json::Value,
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let resp = common::client()
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body: serde_json::Value = resp.json().await.unwrap();
    common::check_contract("POST", path, status, &headers, &body);
    (status, headers, body)
}

/// The value of the counter `name` in the server's `/metrics`.
async fn counter(base: &str, name: &str) -> f64 {
    let text = common::client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// Poll `GET /v1/model` until the serving version is `version`.
async fn wait_for_version(base: &str, version: &str, within: Duration) {
    let t = Instant::now();
    loop {
        let r = common::client()
            .get(format!("{base}/v1/model"))
            .send()
            .await;
        if let Ok(r) = r {
            if let Ok(v) = r.json::<serde_json::Value>().await {
                if v["version"] == version {
                    return;
                }
            }
        }
        assert!(
            t.elapsed() < within,
            "{version} not serving within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn cache_header(h: &reqwest::header::HeaderMap) -> &str {
    h.get("x-sidrec-cache").unwrap().to_str().unwrap()
}

/// Kills the server binary on drop, so that a failing test leaves no process behind.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn server_with_redis_histories_cache_outage_and_reload_channel() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let models = root.path().join("models");
    std::fs::create_dir(&models).unwrap();
    let v1 = common::write_checkpoint(&models.join("v1"), "v1");
    let url = redis.url();
    let (child, base) = common::spawn_binary(
        &models,
        &[
            "--redis-url",
            &url,
            "--redis-prefix",
            "it:",
            "--reload-channel",
            "it:reload",
            // Only the reload channel may swap checkpoints in this test.
            "--watch-interval",
            "0s",
        ],
    );
    let _child = Killed(child);
    wait_for_version(&base, &v1, Duration::from_secs(60)).await;

    // Events go to Redis, and a user_id request reads them back.
    let (st, _, body) = post_to(
        &base,
        "/v1/events",
        &json!({"user_id": "u", "item_ids": [0, 1, 2]}),
    )
    .await;
    assert_eq!(
        (st, body["history_length"].as_u64()),
        (200, Some(3)),
        "{body}"
    );
    let raw: Vec<String> = {
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("LRANGE")
            .arg("it:hist:u")
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .unwrap()
    };
    assert_eq!(raw, ["0", "1", "2"]);
    let by_user = json!({"user_id": "u", "k": 3});
    let (st, h, first) = post_to(&base, "/v1/recommend", &by_user).await;
    assert_eq!((st, cache_header(&h)), (200, "miss"), "{first}");
    assert_eq!(first["items"].as_array().unwrap().len(), 3);

    // The same request again is a cache hit (the write is in the background: retry a little),
    // and so is the explicit history it resolves to, with the defaults spelt out.
    let hits_before = counter(&base, "sidrec_cache_hits_total").await;
    let t = Instant::now();
    let again = loop {
        let (st, h, body) = post_to(&base, "/v1/recommend", &by_user).await;
        assert_eq!(st, 200, "{body}");
        if cache_header(&h) == "hit" {
            break body;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "never a cache hit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(again["items"], first["items"]);
    assert_eq!(again["timing"]["inference_ms"], 0.0);
    let explicit = json!({"history": [0, 1, 2], "k": 3, "num_beams": 50, "exclude": []});
    let (st, h, body) = post_to(&base, "/v1/recommend", &explicit).await;
    assert_eq!((st, cache_header(&h)), (200, "hit"));
    assert_eq!(body["items"], first["items"]);
    assert!(counter(&base, "sidrec_cache_hits_total").await >= hits_before + 2.0);
    // A batch looks up each entry: the cached one is a hit, the others are not.
    let batch = json!({"requests": [by_user, {"history": [99]}, {"history": [5], "k": 1}]});
    let (st, h, body) = post_to(&base, "/v1/recommend/batch", &batch).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(h.get("x-sidrec-cache-hits").unwrap(), "1");
    // (Batch results go through serde_json::Value, which widens the f32 scores: compare ids.)
    let item_ids = |v: &serde_json::Value| -> Vec<u64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|i| i["item_id"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(
        item_ids(&body["results"][0]["items"]),
        item_ids(&first["items"])
    );
    assert_eq!(common::code(&body["results"][1]), "unknown_items");
    assert_eq!(body["results"][2]["items"].as_array().unwrap().len(), 1);

    // A message on the reload channel swaps in the newer checkpoint of --model-dir; its answers
    // are not the old checkpoint's cached ones.
    let v2 = common::write_checkpoint(&models.join("v2"), "v2");
    let store = RedisStore::open(&config(&redis, "it:")).unwrap();
    assert_eq!(store.publish_reload("it:reload", "v2").await.unwrap(), 1);
    wait_for_version(&base, &v2, Duration::from_secs(60)).await;
    let (st, h, body) = post_to(&base, "/v1/recommend", &by_user).await;
    assert_eq!((st, cache_header(&h)), (200, "miss"));
    assert_eq!(body["model_version"], v2.as_str());

    // Redis down: requests carrying their history are still served (the cache failure is
    // counted), user_id requests and events get 503 history_store_unavailable with Retry-After
    // (check_contract requires the header).
    redis.kill();
    let errors_before = counter(&base, "sidrec_cache_errors_total").await;
    let (st, h, body) = post_to(&base, "/v1/recommend", &json!({"history": [3, 4], "k": 2})).await;
    assert_eq!((st, cache_header(&h)), (200, "miss"), "{body}");
    assert!(counter(&base, "sidrec_cache_errors_total").await > errors_before);
    let (st, h, body) = post_to(&base, "/v1/recommend", &by_user).await;
    assert_eq!(
        (st, common::code(&body)),
        (503, "history_store_unavailable"),
        "{body}"
    );
    assert!(h.contains_key("retry-after"));
    // The cause (Redis's address, the command) stays in the server's log.
    let text = body.to_string();
    assert!(
        !text.contains("127.0.0.1") && !text.contains("Redis") && !text.contains("LRANGE"),
        "{text}"
    );
    let (st, _, body) = post_to(
        &base,
        "/v1/events",
        &json!({"user_id": "u", "item_ids": [5]}),
    )
    .await;
    assert_eq!(
        (st, common::code(&body)),
        (503, "history_store_unavailable")
    );

    // A checkpoint published while the subscription was down (its message would be lost) is
    // picked up when the subscription comes back.
    let v3 = common::write_checkpoint(&models.join("v3"), "v3");

    // Redis back (empty): the same server process serves user_id requests again.
    redis.restart();
    let t = Instant::now();
    loop {
        let (st, _, body) = post_to(
            &base,
            "/v1/events",
            &json!({"user_id": "u", "item_ids": [5, 6]}),
        )
        .await;
        if st == 200 {
            assert_eq!(body["history_length"], 2);
            break;
        }
        assert_eq!(common::code(&body), "history_store_unavailable");
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no reconnect within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (st, _, body) = post_to(&base, "/v1/recommend", &by_user).await;
    assert_eq!(st, 200, "{body}");
    wait_for_version(&base, &v3, Duration::from_secs(60)).await;
}
