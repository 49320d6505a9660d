//! The model routes end to end on a tiny random-weight checkpoint of the fixture catalogue:
//! recommendations and their validation, events, `/v1/model`, `/admin/reload`, hot swap under
//! load, a corrupt checkpoint, admission control (429), deadlines (504) and the SIGTERM drain of
//! the real binary. Every response is validated against `openapi/openapi.yaml`.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use sidrec_server::engine::batcher::BatcherConfig;
use sidrec_server::HttpLimits;

const REC: &str = "/v1/recommend";
const BATCH: &str = "/v1/recommend/batch";

fn ids(body: &Value) -> Vec<u64> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["item_id"].as_u64().unwrap())
        .collect()
}

/// Write `stage`'s checkpoint into `model_dir/name` the way a trainer publishes one: built
/// elsewhere on the same file system, renamed into place when complete.
fn publish(root: &Path, model_dir: &Path, name: &str, corrupt: bool) -> String {
    let staging = root.join(format!("staging-{name}"));
    let version = write_checkpoint(&staging, name);
    if corrupt {
        let weights = staging.join("model.safetensors");
        let mut bytes = std::fs::read(&weights).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&weights, bytes).unwrap();
    }
    std::fs::rename(&staging, model_dir.join(name)).unwrap();
    version
}

async fn model_json(s: &TestServer) -> Value {
    let (st, body) = get_checked(s, "/v1/model", "/v1/model").await;
    assert_eq!(st, 200, "{body}");
    body
}

#[tokio::test]
async fn recommend_events_model_and_admin() {
    let root = tempfile::tempdir().unwrap();
    let models = root.path().join("models");
    std::fs::create_dir(&models).unwrap();
    let v1 = publish(root.path(), &models, "v1", false);
    let limits = HttpLimits {
        max_body_bytes: 8192,
        ..HttpLimits::default()
    };
    let mut options = model_options(&models);
    if let Some(m) = options.model.as_mut() {
        m.reload_allow = vec![root.path().join("elsewhere")];
    }
    let s = model_server(options, limits).await;

    let (st, body) = get_checked(&s, "/readyz", "/readyz").await;
    assert_eq!((st, body["model"].as_str()), (200, Some(v1.as_str())));
    assert_eq!(body["catalogue"]["items"], 8);
    let m = model_json(&s).await;
    assert_eq!(m["version"], v1.as_str());
    assert_eq!(m["prompt_style"], "compact");
    assert_eq!(
        (m["sid_levels"].as_u64(), m["items"].as_u64()),
        (Some(3), Some(8))
    );
    assert_eq!(m["metrics"]["hr@10"], 0.25);
    assert_eq!(m["metrics"]["valid.ndcg@10"], 0.125);
    assert!(m["last_reload_error"].is_null());
    assert!(m["checkpoint"].as_str().unwrap().ends_with("v1"));

    // The beams cover all 7 SIDs, so k = 8 returns every item once (3 and 4 share a SID),
    // best first with non-increasing log-probabilities.
    let (st, body) = post_checked(&s, REC, &json!({"history": [0, 1], "k": 8})).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["model_version"], v1.as_str());
    let got = ids(&body);
    assert_eq!(
        got.iter().copied().collect::<HashSet<_>>(),
        (0..8).collect()
    );
    let items = body["items"].as_array().unwrap();
    for (i, it) in items.iter().enumerate() {
        assert_eq!(it["rank"], i + 1);
        let fixture = FIXTURE[it["item_id"].as_u64().unwrap() as usize];
        assert_eq!(
            (it["sid"].as_str(), it["title"].as_str()),
            (Some(fixture.2), Some(fixture.1))
        );
        assert!(it["score"].as_f64().unwrap() <= 0.0);
        if i > 0 {
            assert!(it["score"].as_f64() <= items[i - 1]["score"].as_f64());
        }
    }
    let pos3 = got.iter().position(|&i| i == 3).unwrap();
    assert_eq!(
        got[pos3 + 1],
        4,
        "items sharing a SID come together, in id order"
    );
    assert!(body["timing"]["total_ms"].as_f64() >= body["timing"]["inference_ms"].as_f64());

    // k cuts the list; exclusions (explicit and the history's) never come back.
    let (st, body) = post_checked(&s, REC, &json!({"history": [0], "k": 3, "num_beams": 5})).await;
    assert_eq!((st, ids(&body).len()), (200, 3));
    let (st, body) = post_checked(
        &s,
        REC,
        &json!({"history": [1, 2], "k": 8, "exclude": [0, 3], "exclude_history": true}),
    )
    .await;
    assert_eq!(st, 200);
    let got: HashSet<u64> = ids(&body).into_iter().collect();
    assert_eq!(got, [4, 5, 6, 7].into_iter().collect(), "{body}");
    // History as SIDs gives what the same history as item ids gives.
    let (_, by_id) = post_checked(&s, REC, &json!({"history": [7, 2], "k": 5})).await;
    let (st, by_sid) = post_checked(
        &s,
        REC,
        &json!({"history_sids": ["<a_6><b_0><c_1>", "<a_2><b_0><c_0>"], "k": 5}),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(ids(&by_id), ids(&by_sid));

    // Histories from /v1/events.
    let (st, body) =
        post_checked(&s, "/v1/events", &json!({"user_id": "u1", "item_ids": [7]})).await;
    assert_eq!((st, body["history_length"].as_u64()), (200, Some(1)));
    let (st, body) =
        post_checked(&s, "/v1/events", &json!({"user_id": "u1", "item_ids": [2]})).await;
    assert_eq!((st, body["history_length"].as_u64()), (200, Some(2)));
    let (st, by_user) = post_checked(&s, REC, &json!({"user_id": "u1", "k": 5})).await;
    assert_eq!(st, 200);
    assert_eq!(ids(&by_user), ids(&by_id), "the stored history is [7, 2]");
    let (st, body) = post_checked(
        &s,
        "/v1/events",
        &json!({"user_id": "u1", "item_ids": [1, 99, 98]}),
    )
    .await;
    assert_eq!((st, code(&body)), (422, "unknown_items"));
    assert_eq!(body["error"]["details"]["item_ids"], json!([99, 98]));
    for (bad, status, c) in [
        (json!({"user_id": "u1"}), 400, "missing_parameter"),
        (
            json!({"user_id": "", "item_ids": [1]}),
            422,
            "invalid_argument",
        ),
        (
            json!({"user_id": "u1", "item_ids": []}),
            422,
            "invalid_argument",
        ),
        (
            json!({"user_id": 5, "item_ids": [1]}),
            400,
            "invalid_request",
        ),
    ] {
        let (st, body) = post_checked(&s, "/v1/events", &bad).await;
        assert_eq!((st, code(&body)), (status, c), "{bad}");
    }

    // Every documented input error, with its field.
    let many: Vec<u32> = (0..51).map(|i| i % 8).collect();
    for (bad, status, c, field) in [
        (
            json!({}),
            400,
            "missing_parameter",
            "history, history_sids, user_id",
        ),
        (
            json!({"history": [1], "user_id": "u"}),
            400,
            "conflicting_parameters",
            "history, user_id",
        ),
        (json!({"history": []}), 422, "invalid_argument", "history"),
        (
            json!({ "history": many }),
            422,
            "invalid_argument",
            "history",
        ),
        (
            json!({"history": [1], "k": 20, "num_beams": 10}),
            422,
            "invalid_argument",
            "k",
        ),
        (
            json!({"history": [1], "k": 0}),
            422,
            "invalid_argument",
            "k",
        ),
        (
            json!({"history": [1], "num_beams": 201}),
            422,
            "invalid_argument",
            "num_beams",
        ),
        (
            json!({"history": [1], "k": "ten"}),
            400,
            "invalid_request",
            "k",
        ),
        (
            json!({"history": [1, -2]}),
            400,
            "invalid_request",
            "history",
        ),
        (
            json!({"history": [1], "colour": "red"}),
            400,
            "invalid_request",
            "colour",
        ),
        (
            json!({"history_sids": ["<a_1><c_2>"]}),
            422,
            "invalid_sid",
            "history_sids",
        ),
        (
            json!({"history_sids": ["<a_9><b_9><c_9>"]}),
            422,
            "invalid_argument",
            "history_sids",
        ),
        (
            json!({"user_id": "nobody"}),
            422,
            "invalid_argument",
            "user_id",
        ),
        (
            json!({"history": [1, 999, 998, 999], "exclude": [997]}),
            422,
            "unknown_items",
            "history, exclude",
        ),
    ] {
        let (st, body) = post_checked(&s, REC, &bad).await;
        assert_eq!((st, code(&body)), (status, c), "{bad}: {body}");
        assert_eq!(body["error"]["field"], field, "{bad}");
        if c == "unknown_items" {
            assert_eq!(body["error"]["details"]["item_ids"], json!([999, 998, 997]));
            assert!(body["error"]["message"].as_str().unwrap().contains("999"));
        }
    }
    let (st, body) = post_raw(
        &s,
        REC,
        Some("application/json"),
        b"{\"history\": [1".to_vec(),
        None,
    )
    .await;
    assert_eq!((st, code(&body)), (400, "invalid_request"));
    let (st, body) = post_raw(
        &s,
        REC,
        Some("text/plain"),
        b"{\"history\": [1]}".to_vec(),
        None,
    )
    .await;
    assert_eq!((st, code(&body)), (415, "unsupported_media_type"));
    let (st, body) = post_raw(&s, REC, None, b"{\"history\": [1]}".to_vec(), None).await;
    assert_eq!((st, code(&body)), (415, "unsupported_media_type"));
    let huge = format!(
        "{{\"history\": [1], \"exclude\": [{}]}}",
        vec!["1"; 5000].join(",")
    );
    let (st, body) = post_raw(&s, REC, Some("application/json"), huge.into_bytes(), None).await;
    assert_eq!((st, code(&body)), (413, "payload_too_large"));

    // mode=model: the model writes SIDs for a title; a catalogue-wide beam returns items.
    let (st, body) = get_checked(
        &s,
        "/v1/sid/lookup",
        "/v1/sid/lookup?title=Digital%20Caliper&mode=model&limit=8",
    )
    .await;
    assert_eq!((st, body["by"].as_str()), (200, Some("title")), "{body}");
    let got = ids(&body);
    assert_eq!(
        got.iter().copied().collect::<HashSet<_>>(),
        (0..8).collect()
    );
    for it in body["items"].as_array().unwrap() {
        assert_eq!(it["match"], "fuzzy");
        let p = it["score"].as_f64().unwrap();
        assert!(p > 0.0 && p < 1.0, "{p}");
    }

    // Batch: entries fail alone; a malformed batch fails whole.
    let (st, body) = post_checked(
        &s,
        BATCH,
        &json!({"requests": [
            {"history": [0, 1], "k": 8},
            {"history": [12345]},
            {"history_sids": ["<a_6><b_0><c_1>", "<a_2><b_0><c_0>"], "k": 5, "num_beams": 20},
            {"k": 3}
        ]}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let r = body["results"].as_array().unwrap();
    assert_eq!(r.len(), 4);
    assert_eq!(ids(&r[0]).len(), 8);
    assert_eq!(code(&r[1]), "unknown_items");
    assert_eq!(ids(&r[2]), ids(&by_id), "same answer in a batch as alone");
    assert_eq!(code(&r[3]), "missing_parameter");
    for (bad, status, c) in [
        (json!({"requests": []}), 422, "invalid_argument"),
        (
            json!({"requests": vec![json!({"history": [1]}); 65]}),
            422,
            "invalid_argument",
        ),
        (
            json!({"requests": {"history": [1]}}),
            400,
            "invalid_request",
        ),
        (json!({"history": [1]}), 400, "invalid_request"),
    ] {
        let (st, body) = post_checked(&s, BATCH, &bad).await;
        assert_eq!((st, code(&body)), (status, c), "{bad}");
    }

    // Admin reload: bearer token, body rules, a bad path keeps the old checkpoint serving.
    for (token, body) in [(None, "{}"), (Some("wrong"), "{}")] {
        let (st, b) = post_raw(
            &s,
            "/admin/reload",
            Some("application/json"),
            body.into(),
            token,
        )
        .await;
        assert_eq!((st, code(&b)), (401, "unauthorized"));
    }
    {
        // While another reload (here: the test) holds the reload lock, a reload is a 409.
        let _busy = s.state.reload_lock().lock().await;
        let (st, b) = post_raw(&s, "/admin/reload", None, Vec::new(), Some("s3cret")).await;
        assert_eq!((st, code(&b)), (409, "reload_in_progress"));
    }
    let (st, b) = post_raw(&s, "/admin/reload", None, Vec::new(), Some("s3cret")).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        (b["version"].as_str(), b["previous_version"].as_str()),
        (Some(v1.as_str()), Some(v1.as_str()))
    );
    let (st, b) = post_raw(
        &s,
        "/admin/reload",
        Some("application/json"),
        br#"{"paht": "x"}"#.to_vec(),
        Some("s3cret"),
    )
    .await;
    assert_eq!((st, code(&b)), (400, "invalid_request"));
    // Paths that do not exist, hold no checkpoint or lie outside the allowed directories all
    // get one error, and none of them counts as a failed reload.
    let outside = root.path().join("outside");
    write_checkpoint(&outside, "outside");
    for path in [
        root.path().join("nowhere"),
        outside.clone(),
        models.join("../outside"),
        models.join("v1").join("missing"),
        std::path::PathBuf::from("/etc"),
    ] {
        let body = json!({ "path": path }).to_string();
        let (st, b) = post_raw(
            &s,
            "/admin/reload",
            Some("application/json"),
            body.into_bytes(),
            Some("s3cret"),
        )
        .await;
        assert_eq!((st, code(&b)), (422, "checkpoint_not_found"), "{path:?}");
        let text = b.to_string();
        assert!(!text.contains(&root.path().display().to_string()), "{text}");
    }
    let m = model_json(&s).await;
    assert_eq!(m["version"], v1.as_str());
    assert!(m["last_reload_error"].is_null());
    assert_eq!(m["checkpoint"], "models/v1");
    // An explicit path to another checkpoint swaps to it.
    let other = root.path().join("elsewhere");
    let v2 = write_checkpoint(&other, "other");
    let body = json!({"path": other}).to_string();
    let (st, b) = post_raw(
        &s,
        "/admin/reload",
        Some("application/json"),
        body.into_bytes(),
        Some("s3cret"),
    )
    .await;
    assert_eq!((st, b["version"].as_str()), (200, Some(v2.as_str())), "{b}");
    let (_, body) = post_checked(&s, REC, &json!({"history": [0]})).await;
    assert_eq!(body["model_version"], v2.as_str());
    assert!(model_json(&s).await["last_reload_error"].is_null());

    let text = client()
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let has = |needle: &str| text.lines().any(|l| l.starts_with(needle));
    assert!(has(r#"sidrec_reloads_total{result="ok"} 3"#), "{text}");
    assert!(has(r#"sidrec_reloads_total{result="failed"} 0"#));
    assert!(has(&format!(r#"sidrec_model_info{{version="{v2}"}} 1"#)));
    assert!(!text.contains(&format!(r#"version="{v1}""#)));
    assert!(has(
        r#"sidrec_http_requests_total{method="POST",route="/v1/recommend",status="200"}"#
    ));
    assert!(has(
        r#"sidrec_http_requests_total{method="POST",route="/v1/recommend",status="422"}"#
    ));
    assert!(has("sidrec_batch_size_count"));
    assert!(has("sidrec_queue_duration_seconds_count"));
    assert!(has("sidrec_inference_duration_seconds_count"));
    assert!(has("sidrec_queue_depth 0"));
    assert!(has("sidrec_cache_hits_total 0"));
    let beams: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("sidrec_beams_decoded_total "))
        .unwrap()
        .parse()
        .unwrap();
    // 50 + 5 + 50 + 50 + 50 + 50 (single requests) + 8 (title lookup) + 50 + 20 (batch)
    // + 50 (after the swap).
    assert_eq!(beams, 383.0);
}

#[tokio::test]
async fn no_model_means_503_and_lookup_still_works() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let s = TestServer::over(dir.path()).await;
    let (st, body) = post_checked(&s, REC, &json!({"history": [1]})).await;
    assert_eq!((st, code(&body)), (503, "model_not_loaded"));
    let (st, body) = get_checked(&s, "/v1/model", "/v1/model").await;
    assert_eq!((st, code(&body)), (503, "model_not_loaded"));
    let (st, body) = post_raw(&s, "/admin/reload", None, Vec::new(), Some("x")).await;
    assert_eq!(
        (st, code(&body)),
        (401, "unauthorized"),
        "no --admin-token: admin is off"
    );
    // Events only need the catalogue.
    let (st, _) = post_checked(&s, "/v1/events", &json!({"user_id": "u", "item_ids": [1]})).await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn hot_swap_under_load_and_a_corrupt_checkpoint() {
    let root = tempfile::tempdir().unwrap();
    let models = root.path().join("models");
    std::fs::create_dir(&models).unwrap();
    let v1 = publish(root.path(), &models, "v1", false);
    let s = model_server(model_options(&models), HttpLimits::default()).await;
    let state = s.state.clone();
    tokio::spawn(sidrec_server::engine::reload::watch(
        state,
        Duration::from_millis(50),
    ));

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4u32 {
        let (url, stop, v1) = (s.url(REC), stop.clone(), v1.clone());
        clients.push(tokio::spawn(async move {
            let http = client();
            let mut seen: Vec<String> = Vec::new();
            let mut failures = Vec::new();
            // Stop once told to and past the swap: on a loaded machine a request sent before the
            // swap may answer (from v1) well after it.
            while !(stop.load(Ordering::SeqCst)
                && (seen.last().is_some_and(|v| *v != v1) || !failures.is_empty()))
            {
                let r = http
                    .post(&url)
                    .json(&json!({"history": [c % 8, (c + 3) % 8], "k": 5, "num_beams": 20}))
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap();
                if status == 200 {
                    seen.push(body["model_version"].as_str().unwrap().to_owned());
                } else {
                    failures.push(body);
                }
            }
            (seen, failures)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let v2 = publish(root.path(), &models, "v2", false);
    let t = Instant::now();
    while model_json(&s).await["version"] != v2.as_str() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the watcher never swapped in v2"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        let (seen, failures) = c.await.unwrap();
        assert!(
            failures.is_empty(),
            "failed requests during the swap: {failures:?}"
        );
        assert!(seen.iter().all(|v| *v == v1 || *v == v2));
        // Each client's answers switch once, from v1 to v2.
        let first_v2 = seen.iter().position(|v| *v == v2).expect("v2 served");
        assert!(seen[first_v2..].iter().all(|v| *v == v2), "{seen:?}");
        assert!(seen[..first_v2].iter().all(|v| *v == v1));
    }

    // A corrupt newer checkpoint: refused, v2 keeps serving, the error is reported.
    publish(root.path(), &models, "v3", true);
    let t = Instant::now();
    let m = loop {
        let m = model_json(&s).await;
        if !m["last_reload_error"].is_null() {
            break m;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the corrupt checkpoint was not tried"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(m["version"], v2.as_str());
    let err = m["last_reload_error"].as_str().unwrap();
    assert!(
        err.contains("sha256 mismatch") && err.contains("models/v3"),
        "{err}"
    );
    assert!(
        !err.contains(&root.path().display().to_string()),
        "an absolute path in a public error: {err}"
    );
    let (st, body) = post_checked(&s, REC, &json!({"history": [1]})).await;
    assert_eq!(
        (st, body["model_version"].as_str()),
        (200, Some(v2.as_str()))
    );
    let (st, _) = get_checked(&s, "/readyz", "/readyz").await;
    assert_eq!(st, 200);
    // The watcher does not retry the same broken checkpoint every tick.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = client()
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"sidrec_reloads_total{result="failed"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"sidrec_reloads_total{result="ok"} 2"#),
        "{text}"
    );
}

#[tokio::test]
async fn full_queue_gives_429_and_deadlines_give_504() {
    let root = tempfile::tempdir().unwrap();
    let ck = root.path().join("ck");
    write_checkpoint(&ck, "v1");
    let mut options = model_options(&ck);
    if let Some(m) = options.model.as_mut() {
        m.batcher = BatcherConfig {
            max_batch_size: 1,
            max_batch_wait: Duration::ZERO,
            max_queue: 1,
            ..BatcherConfig::default()
        };
    }
    let s = model_server(options, HttpLimits::default()).await;
    let history: Vec<u32> = (0..50).map(|i| i % 8).collect();
    let body = json!({"history": history, "num_beams": 200});
    let mut pending = Vec::new();
    for _ in 0..24 {
        let (url, body) = (s.url(REC), body.clone());
        pending.push(tokio::spawn(async move {
            let r = client().post(url).json(&body).send().await.unwrap();
            let headers = r.headers().clone();
            (
                r.status().as_u16(),
                headers,
                r.json::<Value>().await.unwrap(),
            )
        }));
    }
    let (mut ok, mut overloaded) = (0, 0);
    for p in pending {
        let (st, headers, body) = p.await.unwrap();
        check_contract("POST", REC, st, &headers, &body);
        match st {
            200 => ok += 1,
            429 => {
                overloaded += 1;
                assert_eq!(code(&body), "overloaded");
                let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
                assert!(retry >= 1);
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(ok >= 1 && overloaded >= 1, "ok {ok}, 429 {overloaded}");

    let mut options = model_options(&ck);
    options.request_timeout = Duration::from_millis(1);
    let limits = HttpLimits {
        request_timeout: Duration::from_millis(1),
        ..HttpLimits::default()
    };
    let s = model_server(options, limits).await;
    // A 1 ms deadline: refused at admission (it cannot finish in time) or timed out, never
    // decoded.
    let (st, body) = post_checked(&s, REC, &body).await;
    assert!(
        [(504, "deadline_exceeded"), (429, "overloaded")].contains(&(st, code(&body))),
        "{st} {body}"
    );
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_0() {
    let root = tempfile::tempdir().unwrap();
    let ck = root.path().join("ck");
    write_checkpoint(&ck, "v1");
    let (mut child, base) = spawn_binary(&ck, &[]);
    let http = client();
    let t = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(60), "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let history: Vec<u32> = (0..50).map(|i| i % 8).collect();
    let n = 6;
    let mut pending = Vec::new();
    for _ in 0..n {
        let (url, body) = (
            format!("{base}{REC}"),
            json!({"history": history, "num_beams": 200}),
        );
        pending.push(tokio::spawn(async move {
            let r = client().post(url).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }));
    }
    // Signal once the requests are in (the metrics request itself is in flight too).
    let t = Instant::now();
    loop {
        let text = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let in_flight: i64 = text
            .lines()
            .find_map(|l| l.strip_prefix("sidrec_http_requests_in_flight "))
            .unwrap()
            .parse()
            .unwrap();
        if in_flight > n as i64 || pending.iter().all(|p| p.is_finished()) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let unfinished = pending.iter().filter(|p| !p.is_finished()).count();
    assert!(
        unfinished > 0,
        "every request finished before the signal: nothing drained"
    );
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    for p in pending {
        let (st, body) = p.await.unwrap();
        assert_eq!(st, 200, "{body}");
        assert_eq!(
            body["items"].as_array().unwrap().len(),
            8,
            "k = 10 of 8 items: all"
        );
    }
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
    assert!(http.get(format!("{base}/healthz")).send().await.is_err());
}

/// A relative `--model-dir` (as the quickstart passes) is loaded and served: the watcher's
/// candidate must not be confined a second time relative to itself.
#[tokio::test]
async fn a_relative_model_dir_is_served() {
    let root = tempfile::tempdir().unwrap();
    let models = root.path().join("models");
    std::fs::create_dir(&models).unwrap();
    let v1 = publish(root.path(), &models, "v1", false);
    let (mut child, base) = common::spawn_binary_in(
        Some(root.path()),
        Path::new("models"),
        &["--watch-interval", "1s"],
    );
    let client = client();
    let mut ready = None;
    for _ in 0..100 {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                ready = Some(r.json::<Value>().await.unwrap());
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    child.kill().unwrap();
    let _ = child.wait();
    let ready = ready.expect("the server never became ready with a relative --model-dir");
    assert_eq!(ready["model"], v1.as_str());
}

/// Unless `--score-mode` says otherwise, a checkpoint is scored in the mode it was trained for
/// (`score_mode` in its `sidrec.json`; absent means exact).
#[tokio::test]
async fn a_checkpoint_is_scored_as_it_was_trained_unless_told() {
    let root = tempfile::tempdir().unwrap();
    let ck = root.path().join("ck");
    write_checkpoint(&ck, "v1");
    let meta_path = ck.join("sidrec.json");
    let mut meta: Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    meta["score_mode"] = json!("fast");
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    for (asked, served) in [
        (None, "fast"),
        (Some(sidrec::decode::ScoreMode::Exact), "exact"),
    ] {
        let mut options = model_options(&ck);
        if let Some(m) = options.model.as_mut() {
            m.mode = asked;
        }
        let s = model_server(options, HttpLimits::default()).await;
        assert_eq!(
            model_json(&s).await["score_mode"],
            served,
            "asked {asked:?}"
        );
        let (st, body) = post_checked(&s, "/v1/recommend", &json!({"history": [1, 2]})).await;
        assert_eq!(st, 200, "{body}");
    }
}
