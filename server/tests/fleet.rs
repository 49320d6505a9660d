//! A fleet without Docker: one Redis, two `sidrec-server` processes on different loopback ports
//! sharing it and one model directory, and a client that spreads requests over both and fails
//! over to the other replica on a transport error, as the load balancer in front of a real
//! fleet does. A checkpoint published on the Redis reload channel switches both replicas with no
//! failed or invalid answer; histories written through one replica are read through the other;
//! a replica killed mid-run leaves the other serving. Skips without `redis-server` (see
//! [`common::redis`]).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use serde_json::{json, Value};
use sidrec_server::store::{RedisConfig, RedisStore};

const PREFIX: &str = "fleet:";
const CHANNEL: &str = "fleet:reload";
const K: usize = 5;

/// One server process, killed (SIGKILL) on drop.
struct Replica {
    base: String,
    child: Option<std::process::Child>,
}

impl Replica {
    fn spawn(models: &std::path::Path, redis_url: &str) -> Self {
        let (child, base) = common::spawn_binary(
            models,
            &[
                "--redis-url",
                redis_url,
                "--redis-prefix",
                PREFIX,
                "--reload-channel",
                CHANNEL,
                // Only the reload channel swaps checkpoints here, so that the test sees the
                // channel (not each replica's directory watcher) switch the fleet.
                "--watch-interval",
                "0s",
                // Every request decodes (the shared response cache would answer most of the
                // load's few distinct histories; tests/redis_store.rs covers it).
                "--cache-ttl",
                "0s",
            ],
        );
        Self {
            base,
            child: Some(child),
        }
    }

    /// SIGKILL, as a crashed or evicted replica: no drain, in-flight requests are cut.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The version `GET /v1/model` reports, if the replica answers.
async fn serving_version(base: &str) -> Option<String> {
    let r = common::client()
        .get(format!("{base}/v1/model"))
        .send()
        .await
        .ok()?;
    let v: Value = r.json().await.ok()?;
    v["version"].as_str().map(str::to_owned)
}

/// Wait until every replica serves `version`; returns when each switched (as first seen).
async fn wait_all_serving(bases: &[String], version: &str, within: Duration) -> Vec<Instant> {
    let t = Instant::now();
    let mut seen: Vec<Option<Instant>> = vec![None; bases.len()];
    while seen.iter().any(Option::is_none) {
        for (i, base) in bases.iter().enumerate() {
            if seen[i].is_none() && serving_version(base).await.as_deref() == Some(version) {
                seen[i] = Some(Instant::now());
            }
        }
        assert!(
            t.elapsed() < within,
            "{version} not serving on every replica within {within:?}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen.into_iter().flatten().collect()
}

/// Why a `/v1/recommend` answer is not a valid recommendation of one of `versions`, if it is not.
fn invalid_reason(status: u16, body: &Value, versions: &[String]) -> Option<String> {
    if status != 200 {
        return Some(format!("status {status}: {body}"));
    }
    let resp = common::documented_response("POST", "/v1/recommend", 200);
    let schema = &resp["content"]["application/json"]["schema"];
    if !common::validator(schema).is_valid(body) {
        return Some(format!("breaks the contract: {body}"));
    }
    let version = body["model_version"].as_str().unwrap_or_default();
    if !versions.iter().any(|v| v == version) {
        return Some(format!("unknown model_version {version:?}"));
    }
    let items = body["items"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if items.len() != K {
        return Some(format!("{} items, asked for {K}", items.len()));
    }
    for (rank, item) in items.iter().enumerate() {
        let id = item["item_id"].as_u64();
        let known = common::FIXTURE
            .iter()
            .find(|f| Some(u64::from(f.0)) == id)
            .map(|f| f.2);
        if known != item["sid"].as_str() || item["rank"].as_u64() != Some(rank as u64 + 1) {
            return Some(format!("item {item} is not the catalogue's"));
        }
    }
    None
}

/// One answered request of the load.
struct Answer {
    started: Instant,
    replica: usize,
    version: String,
    latency: Duration,
}

/// What the load saw.
#[derive(Default)]
struct Tally {
    answers: Vec<Answer>,
    /// Requests that got no answer from any replica.
    failed: Vec<String>,
    /// Answers that are not a valid recommendation.
    invalid: Vec<String>,
    /// Transport errors retried on the other replica.
    failovers: usize,
}

/// Closed-loop load: `clients` tasks, each sending `/v1/recommend` round-robin over `bases`
/// until `stop`; on a transport error the request is retried once on the next replica (the
/// request is read-only, so the retry is safe, as with nginx's `proxy_next_upstream`).
fn start_load(
    bases: Arc<Vec<String>>,
    versions: Arc<Mutex<Vec<String>>>,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Tally>> {
    let next = Arc::new(AtomicUsize::new(0));
    (0..clients)
        .map(|c| {
            let (bases, versions, stop, next) =
                (bases.clone(), versions.clone(), stop.clone(), next.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .no_proxy()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .expect("an HTTP client");
                let mut tally = Tally::default();
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let len = common::FIXTURE.len();
                    let history = [(c + n) % len, (c * 3 + n * 7) % len];
                    let body = json!({"history": history, "k": K});
                    let first = next.fetch_add(1, Ordering::Relaxed) % bases.len();
                    let started = Instant::now();
                    let mut answered = None;
                    let mut errors = Vec::new();
                    for attempt in 0..bases.len() {
                        let replica = (first + attempt) % bases.len();
                        let sent = http
                            .post(format!("{}/v1/recommend", bases[replica]))
                            .json(&body)
                            .send()
                            .await;
                        let got = match sent {
                            Ok(r) => {
                                let status = r.status().as_u16();
                                r.json::<Value>().await.map(|v| (status, v))
                            }
                            Err(e) => Err(e),
                        };
                        match got {
                            Ok(a) => {
                                answered = Some((replica, a));
                                break;
                            }
                            Err(e) => {
                                errors.push(format!("{}: {e}", bases[replica]));
                                if attempt + 1 < bases.len() {
                                    tally.failovers += 1;
                                }
                            }
                        }
                    }
                    let Some((replica, (status, v))) = answered else {
                        tally.failed.push(errors.join("; "));
                        continue;
                    };
                    let known = versions.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    if let Some(why) = invalid_reason(status, &v, &known) {
                        tally.invalid.push(why);
                        continue;
                    }
                    tally.answers.push(Answer {
                        started,
                        replica,
                        version: v["model_version"].as_str().unwrap_or_default().into(),
                        latency: started.elapsed(),
                    });
                }
                tally
            })
        })
        .collect()
}

/// Stop the load and merge what every client saw.
async fn stop_load(stop: &AtomicBool, handles: Vec<tokio::task::JoinHandle<Tally>>) -> Tally {
    stop.store(true, Ordering::Relaxed);
    let mut all = Tally::default();
    for h in handles {
        let t = h.await.expect("a load client panicked");
        all.answers.extend(t.answers);
        all.failed.extend(t.failed);
        all.invalid.extend(t.invalid);
        all.failovers += t.failovers;
    }
    all
}

/// One line of the report: answers per replica and version, latency percentiles.
fn describe(phase: &str, t: &Tally, wall: Duration) -> String {
    let mut per: BTreeMap<(usize, &str), usize> = BTreeMap::new();
    for a in &t.answers {
        *per.entry((a.replica, a.version.as_str())).or_default() += 1;
    }
    let mut lat: Vec<f64> = t
        .answers
        .iter()
        .map(|a| a.latency.as_secs_f64() * 1e3)
        .collect();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)));
    let per = per
        .iter()
        .map(|((r, v), n)| format!("replica {}/{v}: {n}", ["A", "B"][*r]))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{phase}: {} answers in {:.1} s ({per}); failed {}, invalid {}, failovers {}; \
         p50 {:.0} ms, p99 {:.0} ms",
        t.answers.len(),
        wall.as_secs_f64(),
        t.failed.len(),
        t.invalid.len(),
        t.failovers,
        pct(0.5).copied().unwrap_or(f64::NAN),
        pct(0.99).copied().unwrap_or(f64::NAN),
    )
}

/// The value of the sample `name` (with its labels, e.g. `x{result="ok"}`) in `/metrics`.
async fn metric(base: &str, sample: &str) -> Option<f64> {
    let text = common::client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix(sample)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// POST `body` to `base` + `path`, contract-checked; returns status and body.
async fn post(base: &str, path: &str, body: &Value) -> (u16, Value) {
    let resp = common::client()
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{base}{path}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body: Value = resp.json().await.expect("a JSON body");
    common::check_contract("POST", path, status, &headers, &body);
    (status, body)
}

/// Write a checkpoint off the runtime's threads (training its tokenizer takes a moment).
async fn write_checkpoint(dir: PathBuf, stage: &'static str) -> String {
    tokio::task::spawn_blocking(move || common::write_checkpoint(&dir, stage))
        .await
        .expect("writing a checkpoint panicked")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_redis_roll_a_checkpoint_and_survive_a_kill() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let models = root.path().join("models");
    std::fs::create_dir(&models).unwrap();
    let v1 = write_checkpoint(models.join("v1"), "v1").await;
    let url = redis.url();
    let mut a = Replica::spawn(&models, &url);
    let mut b = Replica::spawn(&models, &url);
    assert_ne!(a.base, b.base);
    let bases = Arc::new(vec![a.base.clone(), b.base.clone()]);
    wait_all_serving(&bases, &v1, Duration::from_secs(60)).await;
    let versions = Arc::new(Mutex::new(vec![v1.clone()]));
    let mut report = vec![format!(
        "fleet: redis 127.0.0.1:{}, replica A {}, replica B {}",
        redis.port, a.base, b.base
    )];

    // 1. Roll a checkpoint under load: the trainer writes v2 into the shared directory and
    //    publishes on the reload channel; both replicas switch, nothing fails.
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let load = start_load(bases.clone(), versions.clone(), 4, stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // (checkpoint::write is atomic, and with `--watch-interval 0s` only the channel makes
    // replicas look, so the checker learns v2 before any replica can serve it.)
    let v2 = write_checkpoint(models.join("v2"), "v2").await;
    versions.lock().unwrap().push(v2.clone());
    assert_ne!(v1, v2);
    let store = RedisStore::open(&RedisConfig {
        key_prefix: PREFIX.into(),
        ..RedisConfig::new(url.clone())
    })
    .unwrap();
    let published = Instant::now();
    assert_eq!(
        store.publish_reload(CHANNEL, "v2").await.unwrap(),
        2,
        "both replicas subscribe to the reload channel"
    );
    let switched = wait_all_serving(&bases, &v2, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rolled = stop_load(&stop, load).await;
    report.push(format!(
        "reload: both replicas serving v2 {:.0} ms / {:.0} ms after the publish",
        (switched[0] - published).as_secs_f64() * 1e3,
        (switched[1] - published).as_secs_f64() * 1e3,
    ));
    report.push(describe("rolling load", &rolled, t0.elapsed()));
    assert!(rolled.failed.is_empty(), "failed: {:?}", rolled.failed);
    assert!(rolled.invalid.is_empty(), "invalid: {:?}", rolled.invalid);
    for (r, &switched_at) in switched.iter().enumerate() {
        let of = |v: &str| {
            rolled
                .answers
                .iter()
                .filter(|x| x.replica == r && x.version == v)
                .count()
        };
        assert!(
            of(&v1) > 0 && of(&v2) > 0,
            "replica {r} did not serve both versions"
        );
        // Requests sent after a replica reported v2 are answered by v2.
        let stale = rolled
            .answers
            .iter()
            .filter(|x| x.replica == r && x.started > switched_at && x.version != v2)
            .count();
        assert_eq!(stale, 0, "replica {r} answered with v1 after switching");
    }
    for base in bases.iter() {
        assert_eq!(
            metric(base, &format!("sidrec_model_info{{version=\"{v2}\"}}")).await,
            Some(1.0)
        );
        assert!(metric(base, "sidrec_reloads_total{result=\"ok\"}").await >= Some(2.0));
    }

    // 2. Histories live in Redis: written through A, extended through B, used by B.
    let (st, body) = post(
        &a.base,
        "/v1/events",
        &json!({"user_id": "ada", "item_ids": [0, 1, 2]}),
    )
    .await;
    assert_eq!((st, body["history_length"].as_u64()), (200, Some(3)));
    let (st, body) = post(
        &b.base,
        "/v1/events",
        &json!({"user_id": "ada", "item_ids": [3]}),
    )
    .await;
    assert_eq!((st, body["history_length"].as_u64()), (200, Some(4)));
    let (st, by_user) = post(
        &b.base,
        "/v1/recommend",
        &json!({"user_id": "ada", "k": K, "exclude_history": true}),
    )
    .await;
    assert_eq!(st, 200, "{by_user}");
    let (st, explicit) = post(
        &a.base,
        "/v1/recommend",
        &json!({"history": [0, 1, 2, 3], "k": K, "exclude": [0, 1, 2, 3]}),
    )
    .await;
    assert_eq!(st, 200, "{explicit}");
    let ids = |v: &Value| -> Vec<u64> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["item_id"].as_u64().unwrap())
            .collect()
    };
    assert!(ids(&by_user).iter().all(|i| *i > 3), "{by_user}");
    assert_eq!(ids(&by_user), ids(&explicit));
    report.push(format!(
        "histories: 3 events through A + 1 through B = length 4; B's user_id answer {:?} \
         equals A's answer for the explicit history",
        ids(&by_user)
    ));

    // 3. Kill B mid-run: the client fails over to A, which keeps serving.
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let load = start_load(bases.clone(), versions.clone(), 4, stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    b.kill();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let survived = stop_load(&stop, load).await;
    report.push(describe("replica B killed", &survived, t0.elapsed()));
    assert!(survived.failed.is_empty(), "failed: {:?}", survived.failed);
    assert!(
        survived.invalid.is_empty(),
        "invalid: {:?}",
        survived.invalid
    );
    assert!(
        survived.failovers > 0,
        "no request went to the killed replica"
    );
    let after_kill = |r: usize| {
        survived
            .answers
            .iter()
            .filter(|x| x.replica == r && x.started > killed)
            .count()
    };
    assert!(after_kill(0) > 0, "A answered nothing after B died");
    assert_eq!(after_kill(1), 0, "a dead replica answered");
    assert!(survived.answers.iter().all(|x| x.version == v2));
    // A still reads the shared histories.
    let (st, again) = post(
        &a.base,
        "/v1/recommend",
        &json!({"user_id": "ada", "k": K, "exclude_history": true}),
    )
    .await;
    assert_eq!((st, ids(&again)), (200, ids(&by_user)));
    a.kill();

    for line in &report {
        println!("{line}");
    }
}
