//! `POST /v1/events`: append interactions to a user's history in the history store.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;
use sidrec::ItemId;

use super::body::{self, json_body};
use super::recommend::user_id;
use crate::error::ApiError;
use crate::state::AppState;

/// Most item ids in one call.
pub const MAX_EVENT_ITEMS: usize = 100;

/// Body of the answer.
#[derive(Debug, Serialize)]
pub struct EventsResponse {
    /// The user.
    pub user_id: String,
    /// Length of the stored history after appending (capped).
    pub history_length: usize,
}

/// `POST /v1/events`.
pub async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<EventsResponse>, ApiError> {
    let v = json_body(&headers, &body)?;
    let obj = body::object(&v, "the request")?;
    body::known_fields(obj, &["user_id", "item_ids"])?;
    let user = user_id(obj.get("user_id").ok_or(ApiError::MissingParameter {
        fields: vec!["user_id"],
    })?)?;
    let ids = body::item_ids(
        obj.get("item_ids").ok_or(ApiError::MissingParameter {
            fields: vec!["item_ids"],
        })?,
        "item_ids",
    )?;
    if ids.is_empty() || ids.len() > MAX_EVENT_ITEMS {
        return Err(ApiError::invalid_argument(
            "item_ids",
            format!(
                "item_ids has {} items; give 1 to {MAX_EVENT_ITEMS}",
                ids.len()
            ),
        ));
    }
    let cat = state.catalogue()?;
    let mut unknown: Vec<ItemId> = Vec::new();
    for &i in &ids {
        if cat.catalogue.get(i).is_none() && !unknown.contains(&i) {
            unknown.push(i);
        }
    }
    if !unknown.is_empty() {
        return Err(ApiError::UnknownItems {
            field: "item_ids".into(),
            item_ids: unknown,
        });
    }
    let history_length = state
        .history()
        .append(&user, &ids, state.options().history_cap.max(1))
        .await
        .map_err(ApiError::from)?;
    Ok(Json(EventsResponse {
        user_id: user,
        history_length,
    }))
}
