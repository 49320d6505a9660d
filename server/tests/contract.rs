//! Schemathesis against a running server: every operation of `openapi/openapi.yaml`, with
//! examples generated from the contract (valid and invalid), a fixed seed, and every check
//! schemathesis has (status codes, headers, content types and bodies conform; no 5xx; invalid
//! data rejected; valid data accepted). The server is the in-process model server of the other
//! tests (tiny checkpoint, fixture catalogue).
//!
//! `SIDREC_SCHEMATHESIS` names the `st` command (`scripts/schemathesis.sh` installs it and
//! `scripts/test.sh` sets it); without it the test skips, unless `SIDREC_REQUIRE_SHARED=1`.

mod common;

use std::process::Command;

use common::*;
use sidrec_server::HttpLimits;

/// Test cases per operation and phase: enough to reach every parameter (the coverage phase
/// adds one case per boundary and per invalid type of each) while keeping the run short.
const MAX_EXAMPLES: &str = "40";
const SEED: &str = "20261129";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_contract_violations() {
    let Some(st) = std::env::var_os("SIDREC_SCHEMATHESIS") else {
        sidrec::testing::skip("SIDREC_SCHEMATHESIS is unset (run scripts/schemathesis.sh)");
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let ck = root.path().join("models").join("v1");
    write_checkpoint(&ck, "v1");
    let s = model_server(model_options(&ck), HttpLimits::default()).await;
    // Histories for `user_id` requests, so that valid examples can be answered.
    for user in ["0", "user", "a"] {
        let body = serde_json::json!({"user_id": user, "item_ids": [1, 2]});
        let (st, _) = post_checked(&s, "/v1/events", &body).await;
        assert_eq!(st, 200);
    }
    let config = root.path().join("schemathesis.toml");
    std::fs::write(&config, include_str!("schemathesis.toml")).unwrap();
    let report = root.path().join("report");
    let url = s.url("/openapi.yaml");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(st)
            .arg("--config-file")
            .arg(&config)
            .args(["run", &url, "--checks", "all", "--seed", SEED])
            .args([
                "--max-examples",
                MAX_EXAMPLES,
                "--workers",
                "2",
                "--no-color",
            ])
            .args(["--generation-database", "none", "--request-timeout", "20"])
            .args(["--header", "Authorization: Bearer s3cret"])
            .arg("--report-dir")
            .arg(&report)
            .env("NO_PROXY", "127.0.0.1")
            .output()
            .expect("cannot run schemathesis")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "schemathesis found failures (above)");
}
