//! JSON body parsing with the contract's error codes: bodies are read as a `serde_json::Value`
//! and checked field by field, so that every error names the field at fault (serde's derive
//! would report unknown fields and wrong types as one opaque message).

use axum::http::{header, HeaderMap};
use serde_json::{Map, Value};
use sidrec::ItemId;

use crate::error::ApiError;

/// True when the request says its body is JSON (`application/json`, `...+json`).
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
        .unwrap_or(false)
}

/// The body as JSON: 415 without a JSON content type, 400 when it does not parse.
pub fn json_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    if !is_json(headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    serde_json::from_slice(body).map_err(|e| ApiError::InvalidRequest {
        field: None,
        message: format!("the body is not valid JSON: {e}"),
    })
}

/// `v` as an object, else 400.
pub fn object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, ApiError> {
    v.as_object().ok_or_else(|| ApiError::InvalidRequest {
        field: None,
        message: format!("{what} must be a JSON object"),
    })
}

/// 400 naming the first member of `obj` that is not in `known`.
pub fn known_fields(obj: &Map<String, Value>, known: &[&str]) -> Result<(), ApiError> {
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ApiError::invalid_request(
            k.clone(),
            format!("unknown field `{k}` (known: {})", known.join(", ")),
        )),
        None => Ok(()),
    }
}

/// `v` as an array, else 400 naming `field`.
pub fn array<'a>(v: &'a Value, field: &'static str) -> Result<&'a Vec<Value>, ApiError> {
    v.as_array()
        .ok_or_else(|| ApiError::invalid_request(field, format!("{field} must be an array")))
}

/// `v` as an integer, as JSON Schema counts them: `130` and `130.0` are both the integer 130
/// (`130.5`, strings and numbers beyond `i64` are not).
pub fn integer(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| {
        let f = v.as_f64()?;
        // Exactly representable and inside i64: the cast below is exact.
        (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
    })
}

/// An array of item ids (integers in `0..=u32::MAX`), else 400 naming `field`.
pub fn item_ids(v: &Value, field: &'static str) -> Result<Vec<ItemId>, ApiError> {
    array(v, field)?
        .iter()
        .map(|x| {
            integer(x)
                .and_then(|n| ItemId::try_from(n).ok())
                .ok_or_else(|| {
                    ApiError::invalid_request(
                        field,
                        format!("{field} holds {x}; item ids are integers in 0..=4294967295"),
                    )
                })
        })
        .collect()
}

/// Optional integer member `field` of `obj` in `lo..=hi` (`default` when absent): 400 when not
/// an integer, 422 when out of range.
pub fn int_in(
    obj: &Map<String, Value>,
    field: &'static str,
    lo: usize,
    hi: usize,
    default: usize,
) -> Result<usize, ApiError> {
    let Some(v) = obj.get(field) else {
        return Ok(default);
    };
    let n = integer(v)
        .ok_or_else(|| ApiError::invalid_request(field, format!("{field} must be an integer")))?;
    if n < lo as i64 || n > hi as i64 {
        return Err(ApiError::invalid_argument(
            field,
            format!("{field} must be between {lo} and {hi}, got {n}"),
        ));
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers_as_json_schema_counts_them() {
        assert_eq!(integer(&json!(130)), Some(130));
        assert_eq!(integer(&json!(130.0)), Some(130));
        assert_eq!(integer(&json!(-2.0)), Some(-2));
        assert_eq!(integer(&json!(130.5)), None);
        assert_eq!(integer(&json!(1e300)), None);
        assert_eq!(integer(&json!("130")), None);
        assert_eq!(item_ids(&json!([1.0, 2]), "h").unwrap(), vec![1, 2]);
        assert!(item_ids(&json!([-1.0]), "h").is_err());
    }
}
