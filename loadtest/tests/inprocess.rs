//! The load generator against an in-process server on 127.0.0.1, ~1 s at a low rate.

use std::time::Duration;

use sidrec::data::{DatasetFiles, ItemMeta};
use sidrec::{Sid, SidIndex};
use sidrec_loadtest::scenario::load_catalogue;
use sidrec_loadtest::{run, LoadConfig, Report, ScenarioKind};
use sidrec_server::{app, serve, AppState, HttpLimits, LoadedCatalogue};

/// Write `n` items (ids 0..n) with distinct titles and SIDs.
fn write_dataset(dir: &std::path::Path, n: u32) {
    let mut files = DatasetFiles::default();
    let mut index = SidIndex::new();
    for id in 0..n {
        files
            .items
            .insert(id, ItemMeta::new(format!("Widget model {id} steel"), ""));
        index.insert(id, Sid::from_codes(vec![id % 7, id / 7, id]));
    }
    files.index = Some(index);
    files.write(dir).unwrap();
}

/// Start a server over `dir`; returns its base URL and a stop handle.
async fn start(dir: &std::path::Path) -> (String, tokio::sync::oneshot::Sender<()>) {
    let state = AppState::with_catalogue(LoadedCatalogue::load(dir).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, app(state, HttpLimits::default()), async {
        let _ = rx.await;
    }));
    (url, tx)
}

fn config(url: &str, rate: f64) -> LoadConfig {
    LoadConfig {
        url: url.to_owned(),
        rate,
        duration: Duration::from_secs(1),
        concurrency_limit: 32,
        timeout: Duration::from_secs(5),
        seed: 7,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lookup_scenario_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 50);
    let (url, _stop) = start(dir.path()).await;
    let cat = load_catalogue(dir.path()).unwrap();
    for kind in [
        ScenarioKind::LookupTitle,
        ScenarioKind::LookupSid,
        ScenarioKind::LookupId,
    ] {
        let r: Report = run(&config(&url, 40.0), kind.build(&cat).unwrap())
            .await
            .unwrap();
        assert_eq!(r.scenario, kind.name());
        assert_eq!(r.scheduled, 40, "{r}");
        assert_eq!(r.sent + r.dropped_at_limit, r.scheduled);
        assert_eq!(r.dropped_at_limit, 0, "{r}");
        assert_eq!(r.ok, 40, "{r}");
        assert!(r.errors_by_status.is_empty() && r.timeouts == 0 && r.transport_errors == 0);
        assert_eq!(r.latency.count, 40);
        assert!(r.latency.p50_ms > 0.0 && r.latency.p50_ms <= r.latency.p99_ms);
        assert!(r.latency.p99_ms <= r.latency.max_ms);
        assert!((r.achieved_rate - 40.0).abs() < 8.0, "{r}");
        assert!(r.elapsed_s >= 0.9 && r.elapsed_s < 5.0, "{r}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["latency"]["count"], 40);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_statuses_and_refused_connections_are_counted() {
    // The server knows items 0..20; the load test draws ids 0..40, so about half are 404s.
    let served = tempfile::tempdir().unwrap();
    write_dataset(served.path(), 20);
    let drawn = tempfile::tempdir().unwrap();
    write_dataset(drawn.path(), 40);
    let (url, stop) = start(served.path()).await;
    let cat = load_catalogue(drawn.path()).unwrap();
    let r = run(
        &config(&url, 50.0),
        ScenarioKind::LookupId.build(&cat).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.scheduled, 50);
    let not_found = r.errors_by_status.get(&404).copied().unwrap_or(0);
    assert_eq!(r.ok + not_found, 50, "{r}");
    assert!(r.ok > 10 && not_found > 10, "{r}");
    assert_eq!(r.error_responses(), not_found);

    // With the server gone every request is a transport error.
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut cfg = config(&url, 20.0);
    cfg.duration = Duration::from_millis(500);
    let r = run(&cfg, ScenarioKind::LookupId.build(&cat).unwrap())
        .await
        .unwrap();
    assert_eq!(r.scheduled, 10);
    assert_eq!(r.transport_errors, 10, "{r}");
    assert_eq!(r.ok, 0);
}

#[tokio::test]
async fn bad_configs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 3);
    let cat = load_catalogue(dir.path()).unwrap();
    let mut cfg = config("https://127.0.0.1:1", 10.0);
    assert!(run(&cfg, ScenarioKind::LookupId.build(&cat).unwrap())
        .await
        .is_err());
    cfg.url = "http://127.0.0.1:1".into();
    cfg.rate = 0.0;
    assert!(run(&cfg, ScenarioKind::LookupId.build(&cat).unwrap())
        .await
        .is_err());
    assert_eq!(
        sidrec_loadtest::parse_duration("250ms").unwrap(),
        Duration::from_millis(250)
    );
    assert!(sidrec_loadtest::parse_duration("5 fortnights").is_err());
}
