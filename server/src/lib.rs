//! `sidrec-server`: the HTTP front of sidrec.
//!
//! Built like a small TGI router: [`config`] (CLI), [`state`] (shared state: swappable
//! catalogue and engine), [`engine`] (checkpoint loading, the dynamic batcher, hot swap),
//! [`store`] (user histories, response cache, reload channel), [`error`] (one error type, one JSON shape), [`routes`]
//! (handlers), [`metrics`] (Prometheus), [`conn`] (the accept loop: header timeout, connection
//! cap), and [`app`] / [`serve`] here, which assemble the middleware stack and run it until
//! shutdown. The contract of every route is
//! `openapi/openapi.yaml`.

pub mod config;
pub mod conn;
pub mod engine;
pub mod error;
pub mod metrics;
pub mod routes;
pub mod search;
pub mod state;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

pub use config::Config;
pub use error::ApiError;
pub use state::{AppState, LoadedCatalogue, ModelOptions, ServerOptions};

/// Header carrying the request id.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Limits applied to every request.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Deadline of a request (504 past it).
    pub request_timeout: Duration,
    /// Largest body (413 past it).
    pub max_body_bytes: usize,
    /// Origins allowed by CORS (`*` for any); empty: no CORS headers.
    pub cors_origins: Vec<String>,
    /// Longest a client may take to send a body (408 past it).
    pub body_read_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            max_body_bytes: 1 << 20,
            cors_origins: Vec::new(),
            body_read_timeout: Duration::from_secs(5),
        }
    }
}

impl From<&Config> for HttpLimits {
    fn from(c: &Config) -> Self {
        Self {
            request_timeout: c.request_timeout,
            max_body_bytes: c.max_body_bytes,
            cors_origins: c.cors_origin.clone(),
            body_read_timeout: c.body_read_timeout,
        }
    }
}

/// Read the whole body before the handler runs, within `limit` (408 past it): a client that
/// trickles its body cannot hold a handler (and its deadline budget) open. Bodies are small
/// (`--max-body-bytes`) and every handler buffers them anyway.
async fn read_body(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match tokio::time::timeout(limit, axum::body::to_bytes(body, usize::MAX)).await {
        Err(_) => return ApiError::BodyTimeout.into_response(),
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            let too_large =
                std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
                    e.source()
                })
                .any(|e| e.is::<http_body_util::LengthLimitError>());
            return if too_large {
                ApiError::PayloadTooLarge.into_response()
            } else {
                ApiError::InvalidRequest {
                    field: None,
                    message: "the request body could not be read".into(),
                }
                .into_response()
            };
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The CORS layer for `origins` (`*`: any origin), or `None` when CORS is off.
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o.trim() == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| axum::http::HeaderValue::from_str(o.trim()).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                REQUEST_ID.clone(),
            ])
            .expose_headers([
                REQUEST_ID.clone(),
                header::RETRY_AFTER,
                routes::recommend::CACHE_HEADER.clone(),
                routes::recommend::CACHE_HITS_HEADER.clone(),
            ]),
    )
}

/// Give error responses that layers or axum itself produced (405, 413, timeout 504, ...) the
/// JSON error shape, so that every error a client sees has it.
async fn json_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let err = match status {
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed(method.to_string()),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
        StatusCode::GATEWAY_TIMEOUT => ApiError::DeadlineExceeded,
        StatusCode::REQUEST_TIMEOUT => ApiError::BodyTimeout,
        s if s.is_client_error() => ApiError::InvalidRequest {
            field: None,
            message: if text.is_empty() { s.to_string() } else { text },
        },
        s => ApiError::Internal(if text.is_empty() { s.to_string() } else { text }),
    };
    let mut new = err.into_response();
    // Keep headers such as `Allow` from the original response.
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            new.headers_mut().insert(name.clone(), value.clone());
        }
    }
    *new.status_mut() = status;
    new
}

/// The application: [`routes`] under the [`with_middleware`] stack.
pub fn app(state: AppState, limits: HttpLimits) -> Router {
    with_middleware(routes(), state, limits)
}

/// Every implemented route, without middleware.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/recommend", post(routes::recommend::recommend))
        .route(
            "/v1/recommend/batch",
            post(routes::recommend::recommend_batch),
        )
        .route("/v1/events", post(routes::events::events))
        .route("/v1/model", get(routes::model::model))
        .route("/admin/reload", post(routes::model::admin_reload))
        .route("/v1/sid/lookup", get(routes::lookup::lookup))
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/metrics", get(routes::meta::metrics))
        .route("/openapi.yaml", get(routes::meta::openapi))
        .fallback(routes::not_found)
}

/// Put `routes` (routes and fallback already added) under the server's middleware stack.
pub fn with_middleware(routes: Router<AppState>, state: AppState, limits: HttpLimits) -> Router {
    // `Router::layer` wraps every route (and the fallback) after routing; the last layer added
    // is the outermost. Innermost first: body read (timeout), body limits, deadline, error
    // shape, metrics (which see
    // the final status and the route template), compression, request ids and tracing, CORS
    // (outermost, so that preflight requests are answered before anything else).
    routes
        .layer(middleware::from_fn_with_state(
            limits.body_read_timeout,
            read_body,
        ))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(RequestBodyLimitLayer::new(limits.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(CompressionLayer::new())
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<Body>| {
                    let id = req
                        .headers()
                        .get(&REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        uri = %req.uri(),
                        request_id = %id,
                    )
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
        .layer(tower::util::option_layer(cors(&limits.cors_origins)))
        .with_state(state)
}

/// Serve `app` on `listener` with the default [`conn::ConnLimits`] until `shutdown`
/// completes, then finish in-flight requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    conn::serve(listener, app, conn::ConnLimits::default(), shutdown).await
}

/// Resolves on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for ctrl-c: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("ctrl-c: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
    }
}

/// Set up `tracing` logs with an `EnvFilter` directive (`RUST_LOG` wins when set).
pub fn init_tracing(filter: &str, json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    // Colours only on a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    let res = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if let Err(e) = res {
        eprintln!("logging already set up: {e}");
    }
}

/// The state `config` describes (the catalogue and model are loaded later, by [`run`]).
pub fn state_for(config: &Config) -> anyhow::Result<AppState> {
    let model = match &config.model_dir {
        None => None,
        Some(dir) => {
            anyhow::ensure!(
                dir.is_dir(),
                "--model-dir {}: not a directory",
                dir.display()
            );
            let device = sidrec::device::parse_device(&config.device)?;
            Some(ModelOptions {
                dir: dir.clone(),
                device,
                mode: config.score_mode,
                batcher: engine::batcher::BatcherConfig {
                    max_batch_size: config.max_batch_size,
                    max_batch_beams: config.max_batch_beams,
                    max_batch_wait: config.max_batch_wait,
                    max_queue: config.max_queue,
                },
                beams: engine::BeamLimits {
                    per_request: usize::from(config.max_beams_per_request),
                    per_call: config.max_beams_per_call,
                },
                reload_allow: config.reload_allow.clone(),
            })
        }
    };
    anyhow::ensure!(
        config.max_batch_size >= 1
            && config.max_queue >= 1
            && config.max_batch_beams >= 1
            && config.max_beams_per_call >= 1
            && config.max_connections >= 1,
        "--max-batch-size, --max-batch-beams, --max-queue, --max-beams-per-call and \
         --max-connections must be at least 1"
    );
    let (history, cache): (Arc<dyn store::HistoryStore>, Arc<dyn store::ResponseCache>) =
        match &config.redis_url {
            Some(url) => {
                let redis = Arc::new(store::RedisStore::open(&store::RedisConfig {
                    key_prefix: config.redis_prefix.clone(),
                    ..store::RedisConfig::new(url.clone())
                })?);
                (redis.clone(), redis)
            }
            None => (
                Arc::new(store::MemoryHistory::new()),
                Arc::new(store::MemoryCache::new(config.cache_capacity)),
            ),
        };
    let state = AppState::with_options(ServerOptions {
        data_dir: config.data.clone(),
        model,
        history,
        history_cap: config.history_cap.max(1),
        cache: Some(cache),
        cache_ttl: config.cache_ttl,
        max_history: config.max_history.max(1),
        request_timeout: config.request_timeout,
        admin_token: config.admin_token.clone().filter(|t| !t.is_empty()),
    })?;
    Ok(state)
}

/// Run the server of `config`: bind, load the catalogue (or the model, whose checkpoint brings
/// its catalogue) in the background (`/readyz` turns 200 when done), watch `--model-dir` for
/// newer checkpoints, serve until ctrl-c / SIGTERM, then let in-flight requests (and the decode
/// jobs they wait for) finish. A catalogue that fails to load stops the server with that error;
/// a model that fails to load leaves it not ready, waiting for a loadable checkpoint.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let state = state_for(&config)?;
    serve_state(config, state).await
}

/// [`run`] with a prepared state (e.g. one with another history store).
pub async fn serve_state(config: Config, state: AppState) -> anyhow::Result<()> {
    let listener = TcpListener::bind((config.host, config.port))
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}:{}: {e}", config.host, config.port))?;
    let source = config
        .model_dir
        .as_ref()
        .or(config.data.as_ref())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    tracing::info!(addr = %listener.local_addr()?, source = %source, "listening");

    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();
    if state.serves_model() {
        let watcher = state.clone();
        let interval = config.watch_interval;
        tokio::spawn(async move {
            if interval.is_zero() {
                engine::reload::check_once(&watcher).await;
            } else {
                engine::reload::watch(watcher, interval).await;
            }
        });
        if let Some(url) = &config.redis_url {
            let rx = store::subscribe_reloads(url, &config.reload_channel)?;
            tokio::spawn(engine::reload::follow_channel(state.clone(), rx));
        }
    } else {
        let loader = state.clone();
        tokio::spawn(async move {
            if let Err(e) = loader.load_configured().await {
                let _ = failed_tx.send(e);
            }
        });
    }
    let failure = std::sync::Arc::new(std::sync::Mutex::new(None));
    let shutdown = {
        let failure = failure.clone();
        async move {
            tokio::select! {
                _ = shutdown_signal() => {}
                Ok(e) = failed_rx => {
                    tracing::error!("cannot load the catalogue: {e:#}");
                    *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                }
            }
        }
    };
    let conn_limits = conn::ConnLimits {
        header_read_timeout: config.header_read_timeout,
        max_connections: config.max_connections,
        metrics: Some(state.metrics().clone()),
    };
    let router = app(state, HttpLimits::from(&config));
    conn::serve(listener, router, conn_limits, shutdown).await?;
    let failed = failure.lock().unwrap_or_else(|p| p.into_inner()).take();
    match failed {
        Some(e) => Err(e.context(format!("loading {source}"))),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}
