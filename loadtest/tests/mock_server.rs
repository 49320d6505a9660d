//! The load tester against a stand-in server on 127.0.0.1 (tests/common): coordinated-omission
//! correction, bounds on rates and counts, checks of every answer, sweeps, and the reports.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::ProgressBar;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sidrec_loadtest::driver::{self, Arrivals, Client, Phase};
use sidrec_loadtest::run::{self, RunContext};
use sidrec_loadtest::scenario::Scenario;
use sidrec_loadtest::workload::{MixSpec, Workload};
use sidrec_loadtest::{load_catalogue, Report};
use tokio::time::Instant;

struct Fixture {
    dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    common::write_dataset(dir.path());
    Fixture { dir }
}

fn client(f: &Fixture, url: &str) -> (Client, driver::SharedWorkload) {
    let cat = Arc::new(load_catalogue(f.dir.path()).unwrap());
    let histories = Workload::random_histories(&cat, 100, 1);
    let w = Workload::new(MixSpec::default(), cat.clone(), histories, "t-".into()).unwrap();
    let base = driver::target(url, false).unwrap();
    (
        Client::new(base, Duration::from_secs(10), cat).unwrap(),
        Arc::new(Mutex::new((w, ChaCha8Rng::seed_from_u64(1)))),
    )
}

fn phase(arrivals: Arrivals, rate: f64, concurrency: usize, duration_ms: u64) -> Phase {
    Phase {
        label: "t".into(),
        arrivals,
        rate,
        concurrency,
        warmup: Duration::ZERO,
        duration: Duration::from_millis(duration_ms),
        max_requests: 100_000,
    }
}

fn ctx(f: &Fixture, url: &str) -> RunContext {
    RunContext {
        url: url.to_owned(),
        allow_remote: false,
        data: f.dir.path().to_path_buf(),
        split: sidrec::data::Split::Test,
        knee: None,
        duration: None,
        swap: None,
        progress: false,
        scenario_file: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_shows_in_the_latency_from_the_intended_send_time() {
    // One request in flight at a time (as one connection of a closed-loop tool): requests due
    // during the 1 s stall wait in the generator. From their actual send they look fast; from
    // their intended send time they carry the stall.
    let stall = Duration::from_millis(1000);
    let url = common::start(common::Knobs {
        stall: Some((
            Duration::from_millis(800),
            Duration::from_millis(800) + stall,
        )),
        service: Duration::from_millis(2),
        ..Default::default()
    })
    .await;
    let f = fixture();
    let (c, w) = client(&f, &url);
    let start = Instant::now();
    let r = driver::run_phase(
        &c,
        &w,
        &phase(Arrivals::Constant, 100.0, 1, 3000),
        start,
        &ProgressBar::hidden(),
    )
    .await
    .unwrap();
    assert_eq!(r.counts.ok, 300, "{r:?}");
    let (intended, actual) = (&r.latency_intended, &r.latency_actual);
    // About 100 of the 300 requests were due during the stall: the p99 lies among them, near
    // the stall's length, and the slowest waited the whole stall.
    assert!(
        intended.p99_ms >= 0.9 * stall.as_millis() as f64,
        "{intended:?}"
    );
    // The stall is timed from the mock server's start, a few milliseconds before the
    // generator's: the first request due in it is on the 10 ms arrival grid and waits the stall
    // less that offset, so up to one arrival interval less than the stall.
    assert!(
        intended.max_ms >= stall.as_millis() as f64 - 10.0,
        "{intended:?}"
    );
    assert!(
        intended.p90_ms >= 0.3 * stall.as_millis() as f64,
        "{intended:?}"
    );
    // Measured from the actual send only the one request caught in the stall is slow.
    assert!(actual.p99_ms < 0.2 * stall.as_millis() as f64, "{actual:?}");
    assert!(
        actual.max_ms >= 0.9 * stall.as_millis() as f64,
        "{actual:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_and_counts_are_bounded() {
    let url = common::start(common::Knobs::default()).await;
    let f = fixture();
    let (c, w) = client(&f, &url);
    let hidden = ProgressBar::hidden();
    let t0 = Instant::now();

    // Constant: exactly rate × duration measured, the warm-up's sent but not counted.
    let mut p = phase(Arrivals::Constant, 40.0, 64, 1000);
    p.warmup = Duration::from_millis(500);
    let r = driver::run_phase(&c, &w, &p, t0, &hidden).await.unwrap();
    assert_eq!((r.sent, r.warmup_ops, r.counts.ok), (40, 20, 40), "{r:?}");
    assert!((r.sent_rate - 40.0).abs() < 1e-6);
    assert_eq!(r.offered_rate, Some(40.0));
    assert!(t0.elapsed() < Duration::from_secs(4));

    // max_requests cuts the phase short, warm-up included.
    let mut p = phase(Arrivals::Constant, 200.0, 64, 5000);
    p.warmup = Duration::from_millis(100);
    p.max_requests = 50;
    let t = Instant::now();
    let r = driver::run_phase(&c, &w, &p, t0, &hidden).await.unwrap();
    assert_eq!(r.sent + r.warmup_ops, 50, "{r:?}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "stopped at the count, not the duration"
    );

    // Poisson: the count is random but near rate × duration.
    let r = driver::run_phase(
        &c,
        &w,
        &phase(Arrivals::Poisson, 200.0, 64, 2000),
        t0,
        &hidden,
    )
    .await
    .unwrap();
    assert!((300..=500).contains(&r.sent), "{r:?}");
    assert_eq!(r.counts.ok, r.sent);

    // Closed loop: bounded by the count and by the duration.
    let mut p = phase(Arrivals::Closed, 0.0, 3, 5000);
    p.max_requests = 30;
    let r = driver::run_phase(&c, &w, &p, t0, &hidden).await.unwrap();
    assert_eq!(r.sent, 30, "{r:?}");
    assert_eq!(r.offered_rate, None);
    let slow = common::start(common::Knobs {
        service: Duration::from_millis(50),
        ..Default::default()
    })
    .await;
    let (c2, w2) = client(&f, &slow);
    let t = Instant::now();
    let r = driver::run_phase(&c2, &w2, &phase(Arrivals::Closed, 0.0, 2, 500), t0, &hidden)
        .await
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    // Two workers, 50 ms each, 0.5 s: about 20.
    assert!((14..=24).contains(&r.sent), "{r:?}");
    assert_eq!(
        r.latency_intended, r.latency_actual,
        "a closed loop has no intended time"
    );

    // Bad phases and targets are refused.
    assert!(
        driver::run_phase(&c, &w, &phase(Arrivals::Poisson, 0.0, 4, 100), t0, &hidden)
            .await
            .is_err()
    );
    assert!(driver::target("http://10.1.2.3:8080", false).is_err());
    assert!(driver::target("http://example.com", false).is_err());
    assert!(driver::target("http://10.1.2.3:8080", true).is_ok());
    assert!(driver::target("https://127.0.0.1", false).is_err());
    assert!(driver::target("http://[::1]:9", false).is_ok());
    assert!(driver::target("http://localhost:9", false).is_ok());
}

const MIXED: &str = r#"
name = "mixed"
description = "every operation kind"
[load]
arrivals = "poisson"
rate = 60
warmup = "500ms"
duration = "2s"
[mix]
recommend = 4
batch = 1
user = 2
lookup = 2
batch_size = 3
k = [[10, 1], [5, 1]]
num_beams = 20
exclude = 3
exclude_history = 0.5
[[commands]]
at = "1s"
run = "echo marker"
[expect]
max_failed = 0
max_invalid = 0
min_versions = 2
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_run_is_checked_and_reported_as_json_and_html() {
    let url = common::start(common::Knobs {
        versions: vec!["v-a".into(), "v-b".into()],
        switch_every: 40,
        service: Duration::from_millis(3),
        ..Default::default()
    })
    .await;
    let f = fixture();
    let scenario = Scenario::parse(MIXED).unwrap();
    let r = run::run(&scenario, &ctx(&f, &url)).await.unwrap();
    let p = &r.phases[0];
    assert_eq!(p.counts.invalid, 0, "{:?}", p.invalid_examples);
    assert_eq!(p.counts.failed(), 0, "{:?}", p.failure_examples);
    assert!(p.sent > 80, "{p:?}");
    for kind in ["recommend", "batch", "user", "lookup"] {
        assert!(p.by_kind[kind].counts.ok > 0, "{kind}: {:?}", p.by_kind);
    }
    assert!(r.versions().len() >= 2, "{:?}", r.versions());
    assert!(r.passed(), "{:?}", r.checks);
    assert_eq!(r.actions.len(), 1);
    assert!(r.actions[0].ok && r.actions[0].detail.contains("marker"));
    assert!((r.actions[0].t_s - 1.0).abs() < 0.3);
    assert!(
        r.server.len() >= 2,
        "metrics sampled every second: {:?}",
        r.server
    );
    assert!(r
        .server
        .iter()
        .any(|s| s.beams_per_s.is_some_and(|b| b > 0.0)));
    assert!(p.timeline.len() >= 2);

    let out = tempfile::tempdir().unwrap();
    let (json, html) = r.write(out.path()).unwrap();
    let back = Report::read(&json).unwrap();
    assert_eq!(
        (
            &back.scenario,
            &back.phases[0].counts,
            &back.checks,
            &back.actions
        ),
        (&r.scenario, &r.phases[0].counts, &r.checks, &r.actions),
        "the JSON reads back"
    );
    assert_eq!(back.phases[0].timeline.len(), p.timeline.len());
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.matches("<svg").count() >= 7, "one chart per view");
    assert!(page.matches("<path").count() >= 10);
    assert!(
        !page.contains("<script") && !page.contains("src=\"http"),
        "self-contained"
    );
    assert!(page.contains("v-a") && page.contains("v-b"));
    let md = r.markdown();
    assert!(
        md.contains("| mixed |") && md.contains("expect max_invalid: held"),
        "{md}"
    );
    let text = r.to_string();
    assert!(
        text.contains("latency from intended") && text.contains("p99.9"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_answers_and_refusals_are_counted_and_fail_the_expectations() {
    let url = common::start(common::Knobs {
        broken: true,
        refuse_every: Some(4),
        ..Default::default()
    })
    .await;
    let f = fixture();
    let scenario = Scenario::parse(&MIXED.replace("min_versions = 2", "")).unwrap();
    let r = run::run(&scenario, &ctx(&f, &url)).await.unwrap();
    let p = &r.phases[0];
    assert!(
        p.counts.invalid > 0 && p.counts.rejected_429 > 0,
        "{:?}",
        p.counts
    );
    for kind in ["recommend", "batch", "user"] {
        assert_eq!(
            p.by_kind[kind].counts.ok, 0,
            "every recommendation repeats an item"
        );
    }
    assert!(!p.invalid_examples.is_empty());
    assert!(p.failure_examples.iter().any(|e| e.contains("429")));
    assert!(!r.passed());
    assert!(r.checks.iter().any(|c| c.name == "max_invalid" && !c.ok));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_finds_the_knee_of_a_single_worker_server() {
    // One worker at 20 ms per request: 50 requests/s at most.
    let url = common::start(common::Knobs {
        service: Duration::from_millis(20),
        serial: true,
        ..Default::default()
    })
    .await;
    let f = fixture();
    let text = r#"
name = "sweep"
[load]
arrivals = "constant"
[sweep]
rates = [10, 20, 80, 160]
step_warmup = "200ms"
step_duration = "1s"
p99_targets_ms = [60, 500]
knee_p99_ms = 500
"#;
    let r = run::run(&Scenario::parse(text).unwrap(), &ctx(&f, &url))
        .await
        .unwrap();
    let sw = r.sweep.as_ref().unwrap();
    // 80/s overloads it: p99 grows past 500 ms within the step, and the sweep stops there.
    assert_eq!(sw.steps.len(), 3, "{sw:?}");
    assert_eq!(sw.knee_rate, Some(20.0), "{sw:?}");
    assert_eq!(sw.sustainable[1].max_rate, Some(20.0));
    assert!(sw.steps[2].p99_ms > 500.0);
    assert!(!sw.reached_end);
    let md = r.markdown();
    assert!(
        md.contains("max sustainable rate at p99 < 500 ms: 20.0 ops/s"),
        "{md}"
    );
    let page = sidrec_loadtest::report::html::render(&r);
    assert!(page.contains("Latency vs offered rate"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_renders_in_headless_chromium() {
    let has = |b: &str| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {b}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has("chromium") && !has("chromium-browser") {
        sidrec::testing::skip_optional(
            "chromium is not installed (apt-get install -y chromium); \
             the HTML report was not rendered",
        );
        return;
    }
    let url = common::start(common::Knobs {
        versions: vec!["v-a".into(), "v-b".into()],
        switch_every: 30,
        ..Default::default()
    })
    .await;
    let f = fixture();
    let r = run::run(&Scenario::parse(MIXED).unwrap(), &ctx(&f, &url))
        .await
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let (_, html) = r.write(out.path()).unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/check-report-html.sh");
    let shot = out.path().join("page.png");
    let o = tokio::process::Command::new(script)
        .arg(&html)
        .arg(&shot)
        .args(["7", "10"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("<svg> charts"), "{stdout}");
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "a real screenshot"
    );
}
