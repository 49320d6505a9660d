//! `GET /v1/model` (the serving checkpoint) and `POST /admin/reload` (hot swap on demand).

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::Json;
use serde_json::{json, Map, Value};

use super::body::{self, json_body};
use crate::engine::reload::{self, ReloadOutcome};
use crate::engine::EngineError;
use crate::error::ApiError;
use crate::state::AppState;

/// `t` as an RFC 3339 UTC timestamp with milliseconds (`2026-11-25T21:04:05.123Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// `GET /v1/model`: the serving checkpoint's metadata, the decoding settings and the last failed
/// reload (`last_reload_error`, `null` when the last reload worked).
pub async fn model(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let status = state.reload_status();
    let Some(e) = state.engine() else {
        return Err(match status.last_error {
            Some(err) => {
                ApiError::NotReady(format!("no model is serving; last load failed: {err}"))
            }
            None => ApiError::ModelNotLoaded,
        });
    };
    // Only numeric metrics are part of the contract; nested groups are flattened with dots.
    let mut metrics = Map::new();
    fn flatten(prefix: &str, v: &Value, out: &mut Map<String, Value>) {
        match v {
            Value::Number(_) => {
                out.insert(prefix.to_owned(), v.clone());
            }
            Value::Object(o) => {
                for (k, v) in o {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&key, v, out);
                }
            }
            _ => {}
        }
    }
    flatten("", &e.meta.metrics, &mut metrics);
    let batcher = state.infer().map(|i| i.batcher_config());
    let beams = state.infer().map(|i| i.beam_limits());
    Ok(Json(json!({
        "version": e.version(),
        "checkpoint": e.name,
        "model_type": "qwen2",
        "prompt_style": e.meta.prompt_style.to_string(),
        "prompt_tokens": e.meta.prompt_tokens.groups().iter().map(|g| g.name()).collect::<Vec<_>>(),
        "sid_levels": e.meta.sid_levels,
        "items": e.catalogue.info.items,
        "stage": e.meta.stage,
        "loaded_at": rfc3339(e.loaded_at),
        "created_at": rfc3339(UNIX_EPOCH + std::time::Duration::from_secs(e.meta.created_unix)),
        "metrics": metrics,
        "collision_policy": e.meta.collision_policy,
        "num_parameters": e.num_parameters,
        "num_models": e.num_models(),
        "model_weights": e.model_weights(),
        "pool": e.pool().to_string(),
        "item_free_share": e.item_free_share(),
        "device": e.device,
        "score_mode": e.mode.to_string(),
        "hybrid": e.hybrid.as_ref().map(|h| json!({
            "item_model": sidrec::hybrid::ITEM_MODEL,
            "lambda": h.lambda,
            "prior_strength": h.prior_strength,
        })),
        "max_history": e.history_limit(state.options().max_history),
        "max_batch_size": batcher.map(|b| b.max_batch_size),
        "max_batch_wait_ms": batcher.map(|b| b.max_batch_wait.as_secs_f64() * 1e3),
        "max_queue": batcher.map(|b| b.max_queue),
        "max_batch_beams": batcher.map(|b| b.max_batch_beams),
        "max_beams_per_request": beams.map(|b| b.per_request),
        "max_beams_per_call": beams.map(|b| b.per_call),
        "beams_per_second": state.infer().and_then(|i| i.beams_per_second()),
        "last_reload_error": status.last_error,
    })))
}

/// Constant-time comparison of the SHA-256 digests, so that response times tell nothing about
/// the token: neither the bytes that match nor its length.
fn same(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

/// 401 unless the request carries `Authorization: Bearer <--admin-token>`.
pub fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = state.options().admin_token.as_deref() else {
        return Err(ApiError::Unauthorized(
            "admin routes are disabled: start the server with --admin-token".into(),
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match given {
        None => Err(ApiError::Unauthorized(
            "missing `Authorization: Bearer <token>`".into(),
        )),
        Some(t) if same(t.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::Unauthorized("wrong admin token".into())),
    }
}

/// `POST /admin/reload`: body absent or `{}` reloads `--model-dir` (its newest checkpoint);
/// `{"path": DIR}` loads another directory inside `--model-dir` or a `--reload-allow` one.
/// 409 while another reload runs.
pub async fn admin_reload(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ReloadOutcome>, ApiError> {
    authorize(&state, &headers)?;
    let path = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let v = json_body(&headers, &body)?;
        let obj = body::object(&v, "the request")?;
        body::known_fields(obj, &["path"])?;
        match obj.get("path") {
            None => None,
            Some(Value::String(s)) if !s.trim().is_empty() => Some(PathBuf::from(s)),
            Some(Value::String(_)) => {
                return Err(ApiError::invalid_argument("path", "path must not be empty"))
            }
            Some(_) => return Err(ApiError::invalid_request("path", "path must be a string")),
        }
    };
    if !state.serves_model() {
        return Err(ApiError::invalid_argument(
            "path",
            "this server was started without --model-dir and serves no model",
        ));
    }
    // The reload runs in its own task: if this request times out or its client goes away, the
    // checkpoint still finishes loading and is swapped in (or its failure recorded).
    let task = tokio::spawn(async move {
        let _guard = state
            .reload_lock()
            .try_lock()
            .map_err(|_| EngineError::ReloadInProgress)?;
        reload::reload_locked(&state, path).await
    });
    task.await
        .map_err(|e| ApiError::Internal(format!("the reload task failed: {e}")))?
        .map(Json)
        .map_err(ApiError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_764_104_645_123);
        assert_eq!(rfc3339(t), "2025-11-25T21:04:05.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn token_comparison() {
        assert!(same(b"s3cret", b"s3cret"));
        assert!(!same(b"s3cret", b"s3cre"));
        assert!(!same(b"s3cret", b"s3crex"));
        assert!(!same(b"", b"x"));
    }
}
