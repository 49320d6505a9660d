//! A stand-in for sidrec-server on 127.0.0.1: the public routes the load tester uses, answering
//! from a small catalogue, with knobs for stalls, refusals, broken answers and versions.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use sidrec::data::{DatasetFiles, ItemMeta};
use sidrec::{Sid, SidIndex};
use tokio::time::Instant;

/// Catalogue size of the fixture.
pub const ITEMS: u32 = 60;

/// SID of item `id` in the fixture.
pub fn sid(id: u32) -> Sid {
    Sid::from_codes(vec![id % 7, id / 7, id])
}

/// Write the fixture dataset (items, SID index, and a test split) into `dir`.
pub fn write_dataset(dir: &std::path::Path) {
    let mut files = DatasetFiles::default();
    let mut index = SidIndex::new();
    for id in 0..ITEMS {
        files
            .items
            .insert(id, ItemMeta::new(format!("Widget model {id} steel"), ""));
        index.insert(id, sid(id));
    }
    files.index = Some(index);
    files.write(dir).unwrap();
}

/// How the mock behaves.
#[derive(Debug, Default)]
pub struct Knobs {
    /// Requests arriving in this window (from the server's start) wait until its end.
    pub stall: Option<(Duration, Duration)>,
    /// Time each recommendation takes.
    pub service: Duration,
    /// Serve recommendations one at a time (a single worker).
    pub serial: bool,
    /// Refuse every n-th recommendation with 429.
    pub refuse_every: Option<u64>,
    /// Return an excluded or duplicated item.
    pub broken: bool,
    /// Versions answered in turn, switching every this many answers.
    pub versions: Vec<String>,
    pub switch_every: u64,
}

pub struct Mock {
    knobs: Knobs,
    start: Instant,
    count: AtomicU64,
    worker: tokio::sync::Mutex<()>,
    users: Mutex<HashMap<String, Vec<u64>>>,
    queue: AtomicU64,
}

type S = Arc<Mock>;

impl Mock {
    fn version(&self, n: u64) -> String {
        if self.knobs.versions.is_empty() {
            return "mock-v1".into();
        }
        let i = (n / self.knobs.switch_every.max(1)) as usize % self.knobs.versions.len();
        self.knobs.versions[i].clone()
    }

    async fn answer(&self, req: &Value, history: Vec<u64>) -> Result<Value, StatusCode> {
        let n = self.count.fetch_add(1, Ordering::Relaxed);
        if let Some(e) = self.knobs.refuse_every {
            if n % e == e - 1 {
                return Err(StatusCode::TOO_MANY_REQUESTS);
            }
        }
        self.queue.fetch_add(1, Ordering::Relaxed);
        if let Some((from, to)) = self.knobs.stall {
            let now = self.start.elapsed();
            if now >= from && now < to {
                tokio::time::sleep_until(self.start + to).await;
            }
        }
        {
            let _g = if self.knobs.serial {
                Some(self.worker.lock().await)
            } else {
                None
            };
            tokio::time::sleep(self.knobs.service).await;
        }
        self.queue.fetch_sub(1, Ordering::Relaxed);
        let k = req["k"].as_u64().unwrap_or(10);
        let mut excluded: Vec<u64> = req["exclude"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        if req["exclude_history"] == json!(true) {
            excluded.extend(history);
        }
        let mut items = Vec::new();
        for id in 0..u64::from(ITEMS) {
            if items.len() as u64 == k {
                break;
            }
            if excluded.contains(&id) && !self.knobs.broken {
                continue;
            }
            items.push(
                json!({"rank": items.len() + 1, "item_id": id, "sid": sid(id as u32).to_string(),
                              "title": format!("Widget model {id} steel"), "score": -(id as f64)}),
            );
        }
        if self.knobs.broken && !items.is_empty() {
            let first = items[0].clone();
            items.push(first);
        }
        Ok(json!({"items": items, "model_version": self.version(n),
                  "timing": {"queue_ms": 0.0, "inference_ms": 0.0, "total_ms": 0.0}}))
    }
}

async fn recommend(State(m): State<S>, Json(v): Json<Value>) -> impl IntoResponse {
    let history = if let Some(u) = v["user_id"].as_str() {
        match m.users.lock().unwrap().get(u) {
            Some(h) => h.clone(),
            None => {
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Json(json!({"error": {"code": "no_history", "message": "x"}})),
                )
            }
        }
    } else {
        v["history"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default()
    };
    match m.answer(&v, history).await {
        Ok(a) => (StatusCode::OK, Json(a)),
        Err(s) => (
            s,
            Json(json!({"error": {"code": "overloaded", "message": "x"}})),
        ),
    }
}

async fn batch(State(m): State<S>, Json(v): Json<Value>) -> impl IntoResponse {
    let mut results = Vec::new();
    for r in v["requests"].as_array().cloned().unwrap_or_default() {
        let h = r["history"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        match m.answer(&r, h).await {
            Ok(a) => results.push(a),
            Err(s) => {
                return (
                    s,
                    Json(json!({"error": {"code": "overloaded", "message": "x"}})),
                )
            }
        }
    }
    (StatusCode::OK, Json(json!({ "results": results })))
}

async fn events(State(m): State<S>, Json(v): Json<Value>) -> Json<Value> {
    let u = v["user_id"].as_str().unwrap_or_default().to_owned();
    let ids: Vec<u64> = v["item_ids"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let mut users = m.users.lock().unwrap();
    let h = users.entry(u.clone()).or_default();
    h.extend(ids);
    Json(json!({"user_id": u, "history_length": h.len()}))
}

async fn lookup(Query(q): Query<HashMap<String, String>>) -> Json<Value> {
    let item = |id: u32| json!({"item_id": id, "sid": sid(id).to_string(), "title": format!("Widget model {id} steel"), "match": "exact"});
    let items: Vec<Value> = if let Some(id) = q.get("item_id").and_then(|s| s.parse::<u32>().ok()) {
        (id < ITEMS).then(|| item(id)).into_iter().collect()
    } else if let Some(s) = q.get("sid") {
        (0..ITEMS)
            .filter(|&i| sid(i).to_string() == *s)
            .map(item)
            .collect()
    } else if let Some(t) = q.get("title") {
        (0..ITEMS)
            .filter(|&i| format!("Widget model {i} steel") == *t)
            .map(item)
            .collect()
    } else {
        Vec::new()
    };
    Json(json!({"by": "x", "query": "x", "items": items}))
}

async fn metrics(State(m): State<S>) -> String {
    let n = m.count.load(Ordering::Relaxed);
    format!(
        "# TYPE sidrec_queue_depth gauge\nsidrec_queue_depth {}\nsidrec_http_requests_in_flight {}\n\
         sidrec_batch_size_sum {}\nsidrec_batch_size_count {}\nsidrec_beams_decoded_total {}\n\
         sidrec_model_info{{version=\"{}\"}} 1\n",
        m.queue.load(Ordering::Relaxed),
        m.queue.load(Ordering::Relaxed),
        n * 2,
        n,
        n * 50,
        m.version(n)
    )
}

async fn model(State(m): State<S>) -> Json<Value> {
    Json(json!({"version": m.version(m.count.load(Ordering::Relaxed))}))
}

/// Start the mock; returns its base URL (the server runs until the test's runtime ends).
pub async fn start(knobs: Knobs) -> String {
    let state = Arc::new(Mock {
        knobs,
        start: Instant::now(),
        count: AtomicU64::new(0),
        worker: tokio::sync::Mutex::new(()),
        users: Mutex::new(HashMap::new()),
        queue: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/v1/recommend", post(recommend))
        .route("/v1/recommend/batch", post(batch))
        .route("/v1/events", post(events))
        .route("/v1/sid/lookup", get(lookup))
        .route("/v1/model", get(model))
        .route("/metrics", get(metrics))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}
