//! Prometheus metrics and the middleware that records every request.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::state::AppState;

/// Route label of requests that match no route (keeps the label set bounded).
pub const UNMATCHED: &str = "unmatched";
/// Method label of methods outside HTTP's standard set (keeps the label set bounded).
pub const OTHER_METHOD: &str = "other";

/// The method label of `method`: its name for the standard methods, [`OTHER_METHOD`] else.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => OTHER_METHOD,
    }
}

/// The server's metrics, in a registry of its own (so several servers can share a process).
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Requests by route template, method and status.
    pub requests: IntCounterVec,
    /// Request duration by route template and method.
    pub duration: HistogramVec,
    /// Requests being served now.
    pub in_flight: IntGauge,
    /// Items in the loaded catalogue.
    pub catalogue_items: IntGauge,
    /// Time decode jobs wait in the batcher's queue.
    pub queue_duration: Histogram,
    /// Duration of each `beam_search` call.
    pub inference_duration: Histogram,
    /// Prompts per `beam_search` call.
    pub batch_size: Histogram,
    /// Decode jobs waiting in the queue.
    pub queue_depth: IntGauge,
    /// Beams decoded (prompts × `num_beams`); its rate is beams/s.
    pub beams_decoded: IntCounter,
    /// Decode jobs refused at admission or shed from the queue, by reason.
    pub refused: IntCounterVec,
    /// Connections refused because `--max-connections` were open.
    pub connections_refused: IntCounter,
    /// Open connections.
    pub connections_open: IntGauge,
    /// Responses served from the response cache.
    pub cache_hits: IntCounter,
    /// Response cache reads and writes that failed (the request was served without the cache).
    pub cache_errors: IntCounter,
    /// Checkpoint reloads by result (`ok`, `failed`).
    pub reloads: IntCounterVec,
    /// 1 for the serving checkpoint's version.
    pub model_info: IntGaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Register all metrics in a fresh registry.
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("sidrec".into()), None).expect("a constant prefix is valid");
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request duration (until the response head) by route and method",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["route", "method"],
        )
        .expect("valid metric");
        let in_flight =
            IntGauge::new("http_requests_in_flight", "HTTP requests being served").expect("valid");
        let catalogue_items =
            IntGauge::new("catalogue_items", "Items in the loaded catalogue").expect("valid");
        let seconds = |name: &str, help: &str| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]))
            .expect("valid metric")
        };
        let queue_duration = seconds(
            "queue_duration_seconds",
            "Time decode jobs wait in the batcher queue",
        );
        let inference_duration = seconds(
            "inference_duration_seconds",
            "Duration of each batched beam search",
        );
        let batch_size = Histogram::with_opts(
            HistogramOpts::new("batch_size", "Prompts per batched beam search")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
        )
        .expect("valid metric");
        let queue_depth =
            IntGauge::new("queue_depth", "Decode jobs waiting in the queue").expect("valid");
        let beams_decoded = IntCounter::new(
            "beams_decoded_total",
            "Beams decoded (prompts times num_beams)",
        )
        .expect("valid");
        let refused = IntCounterVec::new(
            Opts::new(
                "jobs_refused_total",
                "Decode jobs refused at admission or shed from the queue, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let connections_refused = IntCounter::new(
            "connections_refused_total",
            "Connections refused because --max-connections were open",
        )
        .expect("valid");
        let connections_open =
            IntGauge::new("connections_open", "Open HTTP connections").expect("valid");
        let cache_hits = IntCounter::new(
            "cache_hits_total",
            "Responses served from the response cache",
        )
        .expect("valid");
        let cache_errors = IntCounter::new(
            "cache_errors_total",
            "Response cache reads and writes that failed (requests are served without the cache)",
        )
        .expect("valid");
        let reloads = IntCounterVec::new(
            Opts::new("reloads_total", "Checkpoint reloads by result"),
            &["result"],
        )
        .expect("valid metric");
        let model_info = IntGaugeVec::new(
            Opts::new("model_info", "1 for the serving checkpoint's version"),
            &["version"],
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(in_flight.clone()),
            Box::new(catalogue_items.clone()),
            Box::new(queue_duration.clone()),
            Box::new(inference_duration.clone()),
            Box::new(batch_size.clone()),
            Box::new(queue_depth.clone()),
            Box::new(beams_decoded.clone()),
            Box::new(refused.clone()),
            Box::new(connections_refused.clone()),
            Box::new(connections_open.clone()),
            Box::new(cache_hits.clone()),
            Box::new(cache_errors.clone()),
            Box::new(reloads.clone()),
            Box::new(model_info.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        // Both results exist from the start, so a rate() over them never sees a missing series.
        for result in ["ok", "failed"] {
            reloads.with_label_values(&[result]);
        }
        for reason in ["queue_full", "would_miss_deadline", "expired", "cancelled"] {
            refused.with_label_values(&[reason]);
        }
        Self {
            registry,
            requests,
            duration,
            in_flight,
            catalogue_items,
            queue_duration,
            inference_duration,
            batch_size,
            queue_depth,
            beams_decoded,
            refused,
            connections_refused,
            connections_open,
            cache_hits,
            cache_errors,
            reloads,
            model_info,
        }
    }

    /// Mark `version` as the serving checkpoint.
    pub fn set_model_version(&self, version: &str) {
        self.model_info.reset();
        self.model_info.with_label_values(&[version]).set(1);
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encoding to a Vec cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

/// Response header giving the server's own time for the request (W3C Server Timing):
/// `app;dur=<milliseconds>`, from routing to the answer, so a client can tell time spent
/// in the server from time spent reaching it.
pub static SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// Middleware (added with `Router::layer`, so it runs after routing and sees the route
/// template): counts requests, observes their duration and reports it in [`SERVER_TIMING`].
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned();
    let method = method_label(req.method());
    let metrics = state.metrics();
    // A guard, so that a request dropped mid-way (client gone) still leaves the gauge.
    struct InFlight(IntGauge);
    impl Drop for InFlight {
        fn drop(&mut self) {
            self.0.dec();
        }
    }
    metrics.in_flight.inc();
    let _guard = InFlight(metrics.in_flight.clone());
    let start = Instant::now();
    let mut resp = next.run(req).await;
    let took = start.elapsed();
    metrics
        .duration
        .with_label_values(&[route.as_str(), method])
        .observe(took.as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&format!("app;dur={:.3}", took.as_secs_f64() * 1e3)) {
        resp.headers_mut().insert(SERVER_TIMING.clone(), v);
    }
    metrics
        .requests
        .with_label_values(&[route.as_str(), method, resp.status().as_str()])
        .inc();
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_share_one_label() {
        use axum::http::Method;
        assert_eq!(method_label(&Method::POST), "POST");
        for m in ["ZZPROBE", "FOO", "get"] {
            assert_eq!(
                method_label(&Method::from_bytes(m.as_bytes()).unwrap()),
                "other"
            );
        }
    }
}
