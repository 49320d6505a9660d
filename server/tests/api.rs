//! End-to-end tests of every implemented route over HTTP on 127.0.0.1, with every response
//! validated against `openapi/openapi.yaml`.

mod common;

use common::*;
use serde_json::Value;
use sidrec_server::{AppState, HttpLimits};

const LOOKUP: &str = "/v1/sid/lookup";

async fn fixture_server() -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let server = TestServer::over(dir.path()).await;
    (dir, server)
}

fn enc(s: &str) -> String {
    // Minimal percent-encoding for the characters the tests use.
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn contract_document_is_valid_json_schema() {
    let doc = openapi();
    assert_eq!(doc["openapi"].as_str().unwrap(), "3.1.0");
    for (name, _) in doc["components"]["schemas"].as_object().unwrap() {
        validator(&serde_json::json!({ "$ref": format!("#/components/schemas/{name}") }));
    }
    for path in [
        "/v1/recommend",
        "/v1/recommend/batch",
        "/v1/sid/lookup",
        "/v1/events",
        "/v1/model",
        "/admin/reload",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.yaml",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the contract"
        );
    }
    // Every code the server can produce is in the documented enum.
    let codes: Vec<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for c in [
        "invalid_request",
        "missing_parameter",
        "conflicting_parameters",
        "invalid_sid",
        "invalid_argument",
        "item_not_found",
        "sid_not_found",
        "not_found",
        "method_not_allowed",
        "payload_too_large",
        "not_ready",
        "model_not_loaded",
        "deadline_exceeded",
        "internal",
        "unsupported_media_type",
        "unknown_items",
        "unauthorized",
        "reload_in_progress",
        "checkpoint_invalid",
        "overloaded",
        "history_store_unavailable",
    ] {
        assert!(codes.contains(&c), "{c} not documented");
    }
    // Schemas reject what they should.
    let lookup_item = validator(&serde_json::json!({"$ref": "#/components/schemas/LookupItem"}));
    assert!(!lookup_item
        .is_valid(&serde_json::json!({"item_id": 1, "sid": "a_1", "title": "", "match": "exact"})));
    let req = validator(&serde_json::json!({"$ref": "#/components/schemas/RecommendRequest"}));
    assert!(req.is_valid(&serde_json::json!({"history": [1, 2], "k": 10})));
    assert!(!req.is_valid(&serde_json::json!({"history": [1], "user_id": "u"})));
    assert!(!req.is_valid(&serde_json::json!({"k": 10})));
    assert!(!req.is_valid(&serde_json::json!({"history": [1], "k": 0})));
    let err = validator(&serde_json::json!({"$ref": "#/components/schemas/ErrorBody"}));
    assert!(err.is_valid(&serde_json::json!({"error": {"code": "not_found", "message": "x"}})));
    assert!(!err.is_valid(&serde_json::json!({"error": {"code": "oops", "message": "x"}})));
    assert!(!err.is_valid(&serde_json::json!({"error": {"code": "not_found"}})));
    // Response schemas are closed: an undocumented member is a contract break.
    let lookup = documented_response("GET", "/v1/sid/lookup", 200);
    let lookup = validator(&lookup["content"]["application/json"]["schema"]);
    assert!(lookup.is_valid(&serde_json::json!({"by": "sid", "query": "q", "items": []})));
    assert!(!lookup.is_valid(&serde_json::json!({"by": "sid", "query": "q", "items": [], "x": 1})));
}

#[tokio::test]
async fn health_ready_and_request_ids() {
    let (_d, s) = fixture_server().await;
    let (st, body) = get_checked(&s, "/healthz", "/healthz").await;
    assert_eq!((st, body["status"].as_str()), (200, Some("ok")));
    let (st, body) = get_checked(&s, "/readyz", "/readyz").await;
    assert_eq!(st, 200);
    assert_eq!(body["catalogue"]["items"], 8);
    assert_eq!(body["catalogue"]["unique_sids"], 7);
    assert_eq!(body["catalogue"]["collided_items"], 2);
    assert_eq!(body["catalogue"]["sid_levels"], 3);

    // A client's request id comes back; otherwise the server makes one.
    let r = client()
        .get(s.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let r = client().get(s.url("/healthz")).send().await.unwrap();
    assert!(r.headers()["x-request-id"].len() >= 16);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn not_ready_until_the_catalogue_loads() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let state = AppState::new(Some(dir.path().to_path_buf()));
    let s = TestServer::start(state.clone(), HttpLimits::default()).await;
    let (st, body) = get_checked(&s, "/healthz", "/healthz").await;
    assert_eq!((st, body["status"].as_str()), (200, Some("ok")));
    for (route, pq) in [("/readyz", "/readyz"), (LOOKUP, "/v1/sid/lookup?item_id=0")] {
        let (st, body) = get_checked(&s, route, pq).await;
        assert_eq!((st, code(&body)), (503, "not_ready"), "{pq}");
    }
    state.load_configured().await.unwrap();
    let (st, _) = get_checked(&s, "/readyz", "/readyz").await;
    assert_eq!(st, 200);
    let (st, _) = get_checked(&s, LOOKUP, "/v1/sid/lookup?item_id=0").await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn a_broken_data_dir_fails_to_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("items.json"), "{\"0\": {\"title\": \"x\"}}").unwrap();
    let state = AppState::new(Some(dir.path().to_path_buf()));
    let e = state.load_configured().await.unwrap_err();
    assert!(e.to_string().contains("no SID index"), "{e}");
    assert!(state.catalogue().is_err());
}

#[tokio::test]
async fn lookup_by_item_id() {
    let (_d, s) = fixture_server().await;
    let (st, body) = get_checked(&s, LOOKUP, "/v1/sid/lookup?item_id=1").await;
    assert_eq!(st, 200);
    assert_eq!(body["by"], "item_id");
    assert_eq!(body["query"], "1");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["item_id"], 1);
    assert_eq!(items[0]["sid"], "<a_1><b_2><c_4>");
    assert_eq!(items[0]["title"], "Stainless Steel Door Hinge");
    assert_eq!(items[0]["match"], "exact");
    assert!(items[0].get("score").is_none());

    let (st, body) = get_checked(&s, LOOKUP, "/v1/sid/lookup?item_id=999").await;
    assert_eq!((st, code(&body)), (404, "item_not_found"));
    assert_eq!(body["error"]["field"], "item_id");
    for bad in ["abc", "-1", "4294967296", "1.5", ""] {
        let (st, body) = get_checked(&s, LOOKUP, &format!("/v1/sid/lookup?item_id={bad}")).await;
        assert_eq!((st, code(&body)), (400, "invalid_request"), "item_id={bad}");
        assert_eq!(body["error"]["field"], "item_id");
    }
}

#[tokio::test]
async fn lookup_by_sid_returns_every_item_sharing_it() {
    let (_d, s) = fixture_server().await;
    let (st, body) = get_checked(
        &s,
        LOOKUP,
        &format!("/v1/sid/lookup?sid={}", enc("<a_3><b_1><c_7>")),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(body["by"], "sid");
    let ids: Vec<u64> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["item_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [3, 4]);

    let (st, body) = get_checked(
        &s,
        LOOKUP,
        &format!("/v1/sid/lookup?sid={}", enc("<a_9><b_9><c_9>")),
    )
    .await;
    assert_eq!((st, code(&body)), (404, "sid_not_found"));
    for bad in ["a_1", "<a_1><c_2>", "<a_1><b_2", "<A_1>", "<a_x>"] {
        let (st, body) = get_checked(&s, LOOKUP, &format!("/v1/sid/lookup?sid={}", enc(bad))).await;
        assert_eq!((st, code(&body)), (422, "invalid_sid"), "sid={bad}");
        assert_eq!(body["error"]["field"], "sid");
    }
    let long = "<a_1>".repeat(100);
    let (st, body) = get_checked(&s, LOOKUP, &format!("/v1/sid/lookup?sid={}", enc(&long))).await;
    assert_eq!((st, code(&body)), (422, "invalid_sid"));
}

#[tokio::test]
async fn lookup_by_title_exact_then_fuzzy() {
    let (_d, s) = fixture_server().await;
    let (st, body) = get_checked(
        &s,
        LOOKUP,
        &format!(
            "/v1/sid/lookup?title={}",
            enc("  PATTY paper 500   sheets ")
        ),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(body["by"], "title");
    let items = body["items"].as_array().unwrap();
    // Both items whose title is equal up to case/whitespace are exact, in id order.
    assert_eq!(items[0]["item_id"], 0);
    assert_eq!(items[1]["item_id"], 5);
    for i in &items[..2] {
        assert_eq!(i["match"], "exact");
        assert_eq!(i["score"], 1.0);
    }
    for i in &items[2..] {
        assert_eq!(i["match"], "fuzzy");
        assert!(i["score"].as_f64().unwrap() < 1.0);
    }

    // Fuzzy only, best first, scores non-increasing, limit respected.
    let (st, body) = get_checked(
        &s,
        LOOKUP,
        &format!(
            "/v1/sid/lookup?title={}&limit=2&min_score=0",
            enc("digital calipers")
        ),
    )
    .await;
    assert_eq!(st, 200);
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let ids: Vec<u64> = items
        .iter()
        .map(|i| i["item_id"].as_u64().unwrap())
        .collect();
    assert!(ids.contains(&3) && ids.contains(&4), "{body}");
    assert!(items.iter().all(|i| i["match"] == "fuzzy"));
    assert!(items[0]["score"].as_f64() >= items[1]["score"].as_f64());

    // Nothing similar: an empty list, not an error.
    let (st, body) = get_checked(&s, LOOKUP, "/v1/sid/lookup?title=zzqqxxjj").await;
    assert_eq!(st, 200);
    assert_eq!(body["items"].as_array().unwrap().len(), 0);

    for (q, status, c, field) in [
        ("title=%20%20", 422, "invalid_argument", "title"),
        ("title=a&limit=0", 422, "invalid_argument", "limit"),
        ("title=a&limit=101", 422, "invalid_argument", "limit"),
        ("title=a&limit=ten", 400, "invalid_request", "limit"),
        ("title=a&min_score=2", 422, "invalid_argument", "min_score"),
        ("title=a&mode=oracle", 422, "invalid_argument", "mode"),
    ] {
        let (st, body) = get_checked(&s, LOOKUP, &format!("/v1/sid/lookup?{q}")).await;
        assert_eq!((st, code(&body)), (status, c), "{q}");
        assert_eq!(body["error"]["field"], field, "{q}");
    }
    let long = "x".repeat(1001);
    let (st, body) = get_checked(&s, LOOKUP, &format!("/v1/sid/lookup?title={long}")).await;
    assert_eq!((st, code(&body)), (422, "invalid_argument"));
}

#[tokio::test]
async fn lookup_parameter_rules() {
    let (_d, s) = fixture_server().await;
    for (q, status, c) in [
        ("", 400, "missing_parameter"),
        ("limit=3", 400, "missing_parameter"),
        ("title=a&item_id=1", 400, "conflicting_parameters"),
        (
            "sid=%3Ca_1%3E&item_id=1&title=x",
            400,
            "conflicting_parameters",
        ),
        ("item_id=1&item_id=2", 400, "invalid_request"),
        ("titel=hinge", 400, "invalid_request"),
        ("title=hinge&mode=model", 503, "model_not_loaded"),
        ("item_id=1&mode=model", 422, "invalid_argument"),
    ] {
        let (st, body) = get_checked(&s, LOOKUP, &format!("/v1/sid/lookup?{q}")).await;
        assert_eq!((st, code(&body)), (status, c), "{q}: {body}");
    }
    let (_, body) = get_checked(&s, LOOKUP, "/v1/sid/lookup").await;
    assert_eq!(body["error"]["field"], "title, sid, item_id");
}

#[tokio::test]
async fn unknown_routes_methods_and_large_bodies_get_the_error_shape() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let state = AppState::with_catalogue(sidrec_server::LoadedCatalogue::load(dir.path()).unwrap());
    let limits = HttpLimits {
        max_body_bytes: 1024,
        ..HttpLimits::default()
    };
    let s = TestServer::start(state, limits).await;

    let r = client().get(s.url("/v1/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers().contains_key("x-request-id"));
    let body: Value = r.json().await.unwrap();
    check_schema("ErrorBody", &body);
    assert_eq!(code(&body), "not_found");

    let r = client().post(s.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.headers().contains_key("allow"));
    let body: Value = r.json().await.unwrap();
    check_schema("ErrorBody", &body);
    assert_eq!(code(&body), "method_not_allowed");

    let r = client()
        .get(s.url("/healthz"))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    check_schema("ErrorBody", &body);
    assert_eq!(code(&body), "payload_too_large");
}

#[tokio::test]
async fn openapi_is_served_and_compressed_on_request() {
    let (_d, s) = fixture_server().await;
    let r = client().get(s.url("/openapi.yaml")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/yaml");
    let text = r.text().await.unwrap();
    assert_eq!(text, include_str!("../../openapi/openapi.yaml"));

    let r = client()
        .get(s.url("/openapi.yaml"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let zipped = r.bytes().await.unwrap();
    assert!(zipped.len() < text.len() / 2);
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let (_d, s) = fixture_server().await;
    let c = client();
    for q in ["item_id=1", "item_id=2", "item_id=999"] {
        c.get(s.url(&format!("/v1/sid/lookup?{q}")))
            .send()
            .await
            .unwrap();
    }
    c.get(s.url("/nowhere/12345")).send().await.unwrap();
    let r = c.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = r.text().await.unwrap();
    let has = |needle: &str| text.lines().any(|l| l.starts_with(needle));
    assert!(
        has(r#"sidrec_http_requests_total{method="GET",route="/v1/sid/lookup",status="200"} 2"#),
        "{text}"
    );
    assert!(has(
        r#"sidrec_http_requests_total{method="GET",route="/v1/sid/lookup",status="404"} 1"#
    ));
    assert!(has(
        r#"sidrec_http_requests_total{method="GET",route="unmatched",status="404"} 1"#
    ));
    assert!(
        !text.contains("/nowhere/12345"),
        "raw paths must not become labels"
    );
    assert!(has(
        r#"sidrec_http_request_duration_seconds_count{method="GET",route="/v1/sid/lookup"} 3"#
    ));
    assert!(has("sidrec_catalogue_items 8"));
    assert!(
        has("sidrec_http_requests_in_flight 1"),
        "the /metrics request itself"
    );
}

#[tokio::test]
async fn graceful_stop_finishes() {
    let (_d, s) = fixture_server().await;
    let base = s.base.clone();
    s.stop().await.unwrap();
    assert!(client()
        .get(format!("{base}/healthz"))
        .send()
        .await
        .is_err());
}

#[tokio::test]
async fn industrial_catalogue() {
    let Some(dir) = sidrec::testing::industrial_dir() else {
        return;
    };
    let s = TestServer::over(&dir).await;
    let (st, body) = get_checked(&s, "/readyz", "/readyz").await;
    assert_eq!(st, 200);
    assert_eq!(body["catalogue"]["items"], 3686);

    let (st, body) = get_checked(&s, LOOKUP, "/v1/sid/lookup?item_id=0").await;
    assert_eq!(st, 200);
    let item = body["items"][0].clone();
    assert_eq!(item["sid"], "<a_236><b_231><c_226>");
    let title = item["title"].as_str().unwrap().to_owned();

    // title -> the same item, exact; sid -> the item (possibly with others sharing the SID).
    let (st, body) = get_checked(
        &s,
        LOOKUP,
        &format!("/v1/sid/lookup?title={}", enc(&title.to_uppercase())),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(body["items"][0]["match"], "exact");
    assert!(body["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["item_id"] == 0 && i["match"] == "exact"));
    let (st, body) = get_checked(
        &s,
        LOOKUP,
        &format!("/v1/sid/lookup?sid={}", enc(item["sid"].as_str().unwrap())),
    )
    .await;
    assert_eq!(st, 200);
    assert!(body["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["item_id"] == 0));

    // A partial title finds the item among the fuzzy matches.
    let partial: String = title
        .split_whitespace()
        .take(4)
        .collect::<Vec<_>>()
        .join(" ");
    let (st, body) = get_checked(
        &s,
        LOOKUP,
        &format!("/v1/sid/lookup?title={}&limit=20", enc(&partial)),
    )
    .await;
    assert_eq!(st, 200);
    assert!(
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["item_id"] == 0),
        "{partial}: {body}"
    );
}

/// The real routes plus `/slow`, which answers after `delay`, under the real middleware.
async fn server_with_slow_route(
    delay: std::time::Duration,
    timeout: std::time::Duration,
) -> TestServer {
    let state = AppState::with_catalogue(sidrec_server::LoadedCatalogue::new(
        sidrec::catalogue::Catalogue::default(),
        "empty",
    ));
    let routes = sidrec_server::routes().route(
        "/slow",
        axum::routing::get(move || async move {
            tokio::time::sleep(delay).await;
            "done"
        }),
    );
    let limits = HttpLimits {
        request_timeout: timeout,
        ..HttpLimits::default()
    };
    let router = sidrec_server::with_middleware(routes, state.clone(), limits);
    TestServer::start_router(state, router).await
}

#[tokio::test]
async fn deadline_gives_504_in_the_error_shape() {
    let s = server_with_slow_route(
        std::time::Duration::from_secs(5),
        std::time::Duration::from_millis(100),
    )
    .await;
    let t = std::time::Instant::now();
    let r = client().get(s.url("/slow")).send().await.unwrap();
    assert!(t.elapsed() < std::time::Duration::from_secs(3));
    assert_eq!(r.status(), 504);
    assert!(r.headers().contains_key("x-request-id"));
    let body: Value = r.json().await.unwrap();
    check_schema("ErrorBody", &body);
    assert_eq!(code(&body), "deadline_exceeded");
    let text = client()
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"sidrec_http_requests_total{method="GET",route="/slow",status="504"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let s = server_with_slow_route(
        std::time::Duration::from_millis(500),
        std::time::Duration::from_secs(5),
    )
    .await;
    let url = s.url("/slow");
    let pending = tokio::spawn(async move { client().get(url).send().await });
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let t = std::time::Instant::now();
    s.stop().await.unwrap();
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(200),
        "stop did not wait"
    );
    let r = pending.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "done");
}
