//! The accept loop: HTTP/1 connections with a header-read timeout and a cap on how many are
//! open, drained gracefully on shutdown.
//!
//! A client that does not finish sending its headers within `header_read_timeout` (or leaves a
//! kept-alive connection idle that long) has its connection closed; hyper sends no response
//! then, because no request was read. Connections past `max_connections` are answered at once
//! with a 503 `overloaded` error and closed, so a flood of slow connections cannot pile up
//! file descriptors and tasks. The body-read timeout (408) is a middleware of the app, as it
//! concerns requests, not connections.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::error::ApiError;
use crate::metrics::Metrics;

/// Limits of the accept loop.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Longest a client may take to send a request's headers, and longest a kept-alive
    /// connection may stay idle.
    pub header_read_timeout: Duration,
    /// Most open connections.
    pub max_connections: usize,
    /// Where connection counts are recorded (none: not recorded).
    pub metrics: Option<Metrics>,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(5),
            max_connections: 1024,
            metrics: None,
        }
    }
}

/// How long a refused connection is given to take its 503.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Answer a connection over the cap with a 503 and close it.
async fn refuse(mut stream: TcpStream) {
    let err = ApiError::Overloaded {
        message: "too many open connections; retry later".into(),
        retry_after_s: 1,
    };
    let body = serde_json::to_string(&err.body()).unwrap_or_default();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, write).await;
}

/// Serve `app` on `listener` until `shutdown` completes, then let open connections finish
/// their in-flight requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if let Some(m) = &limits.metrics {
                m.connections_refused.inc();
            }
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout);
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        let gauge = limits.metrics.as_ref().map(|m| m.connections_open.clone());
        tokio::spawn(async move {
            if let Some(g) = &gauge {
                g.inc();
            }
            if let Err(e) = conn.await {
                tracing::debug!("connection ended: {e}");
            }
            if let Some(g) = &gauge {
                g.dec();
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
