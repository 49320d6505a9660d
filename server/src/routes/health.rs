//! `GET /healthz` (alive) and `GET /readyz` (catalogue loaded).

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
}

/// `GET /healthz`: the process answers.
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// `GET /readyz`: 200 once the catalogue is loaded, else 503 `not_ready` with `Retry-After`.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    let cat = state.catalogue()?;
    Ok(Json(Ready {
        status: "ready",
        catalogue: cat.info.clone(),
    }))
}
