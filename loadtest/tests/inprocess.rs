//! Lookups against the real server (catalogue only, in process on 127.0.0.1): every answer
//! passes the load tester's checks, and a server that goes away shows as transport errors.

mod common;

use std::time::Duration;

use sidrec_loadtest::run::{self, RunContext};
use sidrec_loadtest::scenario::Scenario;
use sidrec_server::{app, serve, AppState, HttpLimits, LoadedCatalogue};

const LOOKUPS: &str = r#"
name = "lookups"
[load]
arrivals = "constant"
rate = 50
duration = "1s"
[mix]
recommend = 0
lookup = 1
[expect]
max_failed = 0
max_invalid = 0
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_against_the_real_server_pass_every_check() {
    let dir = tempfile::tempdir().unwrap();
    common::write_dataset(dir.path());
    let state = AppState::with_catalogue(LoadedCatalogue::load(dir.path()).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, app(state, HttpLimits::default()), async {
        let _ = rx.await;
    }));
    let ctx = RunContext {
        url: url.clone(),
        allow_remote: false,
        data: dir.path().to_path_buf(),
        split: sidrec::data::Split::Test,
        knee: None,
        duration: None,
        swap: None,
        progress: false,
        scenario_file: None,
    };
    let scenario = Scenario::parse(LOOKUPS).unwrap();
    let r = run::run(&scenario, &ctx).await.unwrap();
    let p = &r.phases[0];
    assert_eq!(
        p.counts.ok, 50,
        "{:?} {:?}",
        p.invalid_examples, p.failure_examples
    );
    assert!(r.passed(), "{:?}", r.checks);
    assert!(!r.server.is_empty(), "the real /metrics was sampled");

    let _ = tx.send(());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = run::run(&scenario, &ctx).await.unwrap();
    assert_eq!(r.phases[0].counts.transport, 50, "{:?}", r.phases[0].counts);
    assert!(!r.passed());
}
