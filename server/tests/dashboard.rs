//! The Grafana dashboard and Prometheus configuration of the compose fleet (docker/) query only
//! metrics the server really exports. (Flags, environment variables and manifests are checked
//! against the binaries by scripts/check-deploy.sh.)

use std::collections::BTreeSet;

use sidrec_server::metrics::Metrics;

/// Sample names of the server's `/metrics` text, with one series of every labelled metric.
fn exported() -> BTreeSet<String> {
    let m = Metrics::new();
    m.requests
        .with_label_values(&["/v1/recommend", "POST", "200"])
        .inc();
    m.duration
        .with_label_values(&["/v1/recommend", "POST"])
        .observe(0.01);
    m.set_model_version("v1");
    m.render()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

/// Every `sidrec_*` word of `text`.
fn referenced(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("sidrec_") {
        let word: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + word.len()..];
        out.insert(word);
    }
    out
}

#[test]
fn dashboard_queries_only_exported_metrics() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker");
    let dashboard =
        std::fs::read_to_string(format!("{root}/grafana/dashboards/sidrec.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let exprs: Vec<&str> = json["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    let used = referenced(&exprs.join("\n"));
    let exported = exported();
    let missing: Vec<_> = used.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "not exported by the server: {missing:?}"
    );
    // The panels the fleet needs are all there.
    for metric in [
        "sidrec_http_requests_total",
        "sidrec_http_request_duration_seconds_bucket",
        "sidrec_queue_depth",
        "sidrec_batch_size_sum",
        "sidrec_beams_decoded_total",
        "sidrec_reloads_total",
        "sidrec_model_info",
    ] {
        assert!(used.contains(metric), "the dashboard shows no {metric}");
    }
    // Prometheus scrapes the path the server serves its metrics on.
    let prometheus = std::fs::read_to_string(format!("{root}/prometheus.yml")).unwrap();
    assert!(prometheus.contains("metrics_path: /metrics"));
}
