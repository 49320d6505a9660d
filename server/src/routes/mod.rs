//! Route handlers, one file per route group.

pub mod body;
pub mod events;
pub mod health;
pub mod lookup;
pub mod meta;
pub mod model;
pub mod recommend;

use axum::http::{Method, Uri};

use crate::error::ApiError;

/// Fallback for paths that match no route.
pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("{method} {}", uri.path()))
}
