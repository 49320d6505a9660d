//! `GET /healthz` (alive) and `GET /readyz` (catalogue and, if configured, model serving).

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use crate::error::ApiError;
use crate::state::{AppState, CatalogueInfo};

/// Body of `/healthz`.
#[derive(Debug, Serialize)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

/// Body of `/readyz` when ready.
#[derive(Debug, Serialize)]
pub struct Ready {
    /// Always `ready`.
    pub status: &'static str,
    /// The serving catalogue.
    pub catalogue: CatalogueInfo,
    /// The serving model's version (absent on a server without a model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// `GET /healthz`: the process answers.
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// `GET /readyz`: 200 once the catalogue is loaded and, on a server with `--model-dir`, once a
/// model is serving (an engine is only swapped in after a real decode worked); else 503
/// `not_ready` with `Retry-After`.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    let model = if state.serves_model() {
        let Some(engine) = state.engine() else {
            let why = match state.reload_status().last_error {
                Some(e) => format!("no model is serving yet; the last load failed: {e}"),
                None => "the model is still loading".into(),
            };
            return Err(ApiError::NotReady(why));
        };
        Some(engine.version().to_owned())
    } else {
        None
    };
    let cat = state.catalogue()?;
    Ok(Json(Ready {
        status: "ready",
        catalogue: cat.info.clone(),
        model,
    }))
}
