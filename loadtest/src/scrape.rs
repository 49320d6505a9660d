//! The server's own view during a run: `/metrics` sampled every second (queue depth, batch
//! size, beams/s, in-flight requests, serving version).

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::driver::Client;

/// One sample of the server's metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerSample {
    /// From the start of the run (s).
    pub t_s: f64,
    /// `sidrec_queue_depth`: decode jobs waiting.
    pub queue_depth: Option<f64>,
    /// `sidrec_http_requests_in_flight`.
    pub in_flight: Option<f64>,
    /// Mean prompts per batched beam search since the previous sample.
    pub batch_size: Option<f64>,
    /// Beams decoded per second since the previous sample.
    pub beams_per_s: Option<f64>,
    /// The version `sidrec_model_info` marks as serving.
    pub version: Option<String>,
}

/// Metric values of a Prometheus text exposition, keyed by the series as written
/// (`name` or `name{labels}`).
pub fn parse(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // The value follows the series; a label value may hold spaces, so split after `}`.
        let (series, rest) = match line.rfind('}') {
            Some(i) => (&line[..=i], &line[i + 1..]),
            None => match line.split_once(char::is_whitespace) {
                Some((s, r)) => (s, r),
                None => continue,
            },
        };
        if let Some(v) = rest.split_whitespace().next().and_then(|v| v.parse().ok()) {
            out.insert(series.to_owned(), v);
        }
    }
    out
}

/// The serving version from `sidrec_model_info{version="..."} 1`.
fn version(m: &HashMap<String, f64>) -> Option<String> {
    m.iter()
        .filter(|(k, v)| k.starts_with("sidrec_model_info{") && **v >= 1.0)
        .find_map(|(k, _)| {
            let start = k.find("version=\"")? + "version=\"".len();
            let end = start + k[start..].find('"')?;
            Some(k[start..end].to_owned())
        })
}

/// Sample `/metrics` every `every` until `stop` fires; a failed scrape is skipped (the server
/// may be restarting), so samples may have gaps.
pub async fn sample(
    client: Client,
    run_start: Instant,
    every: Duration,
    mut stop: oneshot::Receiver<()>,
) -> Vec<ServerSample> {
    let mut out = Vec::new();
    let mut prev: Option<(Instant, HashMap<String, f64>)> = None;
    let url = client.url("metrics");
    loop {
        let got = async {
            let r = client
                .http()
                .get(url.clone())
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .ok()?;
            r.status().is_success().then_some(())?;
            r.text().await.ok()
        }
        .await;
        let now = Instant::now();
        if let Some(text) = got {
            let m = parse(&text);
            let mut s = ServerSample {
                t_s: now.duration_since(run_start).as_secs_f64(),
                queue_depth: m.get("sidrec_queue_depth").copied(),
                in_flight: m.get("sidrec_http_requests_in_flight").copied(),
                version: version(&m),
                ..ServerSample::default()
            };
            if let Some((t, p)) = &prev {
                let d = |k: &str| Some(m.get(k)? - p.get(k)?);
                let dt = now.duration_since(*t).as_secs_f64().max(1e-9);
                s.beams_per_s = d("sidrec_beams_decoded_total").map(|b| b / dt);
                s.batch_size = match (d("sidrec_batch_size_sum"), d("sidrec_batch_size_count")) {
                    (Some(sum), Some(n)) if n > 0.0 => Some(sum / n),
                    _ => None,
                };
            }
            prev = Some((now, m));
            out.push(s);
        }
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_is_parsed() {
        let text = "# HELP sidrec_queue_depth x\n# TYPE sidrec_queue_depth gauge\n\
                    sidrec_queue_depth 3\n\
                    sidrec_batch_size_sum 12.5\n\
                    sidrec_model_info{version=\"sft-1 2\"} 1\n\
                    sidrec_model_info{version=\"old\"} 0\n\
                    sidrec_http_requests_total{route=\"/v1/recommend\",method=\"POST\",status=\"200\"} 7\n";
        let m = parse(text);
        assert_eq!(m["sidrec_queue_depth"], 3.0);
        assert_eq!(m["sidrec_batch_size_sum"], 12.5);
        assert_eq!(
            m["sidrec_http_requests_total{route=\"/v1/recommend\",method=\"POST\",status=\"200\"}"],
            7.0
        );
        assert_eq!(version(&m).as_deref(), Some("sft-1 2"));
    }
}
