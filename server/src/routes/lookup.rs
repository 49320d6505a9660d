//! `GET /v1/sid/lookup?title=…|sid=…|item_id=…`: translation between titles, SIDs and item ids.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::Serialize;
use sidrec::{ItemId, Sid};

use crate::error::ApiError;
use crate::state::{AppState, LoadedCatalogue};

/// Default and largest `limit`.
pub const DEFAULT_LIMIT: usize = 10;
/// Largest `limit`.
pub const MAX_LIMIT: usize = 100;
/// Default `min_score`.
pub const DEFAULT_MIN_SCORE: f64 = 0.3;
/// Longest title accepted, in characters.
pub const MAX_TITLE_CHARS: usize = 1000;
/// Longest SID string accepted, in bytes.
pub const MAX_SID_BYTES: usize = 400;

/// How an item matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchKind {
    /// Same id, same SID, or same title up to case and whitespace.
    Exact,
    /// A similar title.
    Fuzzy,
}

/// One item of a lookup response.
#[derive(Debug, Clone, Serialize)]
pub struct LookupItem {
    /// Item id.
    pub item_id: ItemId,
    /// The item's SID.
    pub sid: String,
    /// The item's title.
    pub title: String,
    /// How it matched.
    #[serde(rename = "match")]
    pub match_kind: MatchKind,
    /// Title similarity in `[0, 1]` (title lookups only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

/// Body of a lookup response.
#[derive(Debug, Clone, Serialize)]
pub struct LookupResponse {
    /// Which parameter was looked up: `title`, `sid` or `item_id`.
    pub by: &'static str,
    /// The value looked up.
    pub query: String,
    /// The matching items.
    pub items: Vec<LookupItem>,
}

/// What to look up.
#[derive(Debug, Clone, PartialEq)]
enum Key {
    Title(String),
    Sid(Sid),
    ItemId(ItemId),
}

/// Validated lookup parameters.
#[derive(Debug, Clone, PartialEq)]
struct Params {
    key: Key,
    raw: String,
    limit: usize,
    min_score: f64,
    /// `mode=model`: ask the model (title lookups only).
    by_model: bool,
}

const KEYS: [&str; 3] = ["title", "sid", "item_id"];
const KNOWN: [&str; 6] = ["title", "sid", "item_id", "limit", "min_score", "mode"];

fn parse(pairs: Vec<(String, String)>) -> Result<Params, ApiError> {
    let mut seen: Vec<(&'static str, String)> = Vec::new();
    for (k, v) in pairs {
        let Some(&name) = KNOWN.iter().find(|&&n| n == k) else {
            return Err(ApiError::invalid_request(
                k.clone(),
                format!(
                    "unknown query parameter `{k}` (known: {})",
                    KNOWN.join(", ")
                ),
            ));
        };
        if seen.iter().any(|(n, _)| *n == name) {
            return Err(ApiError::invalid_request(
                name,
                format!("query parameter `{name}` is given more than once"),
            ));
        }
        seen.push((name, v));
    }
    let get = |name: &str| {
        seen.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    };

    let given: Vec<&'static str> = KEYS.into_iter().filter(|k| get(k).is_some()).collect();
    let which = match given.as_slice() {
        [] => {
            return Err(ApiError::MissingParameter {
                fields: KEYS.to_vec(),
            })
        }
        [one] => *one,
        _ => return Err(ApiError::ConflictingParameters { fields: given }),
    };
    let raw = get(which).unwrap_or_default().to_owned();

    let limit = match get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => {
            let n: i64 = v.trim().parse().map_err(|_| {
                ApiError::invalid_request("limit", format!("limit `{v}` is not an integer"))
            })?;
            if !(1..=MAX_LIMIT as i64).contains(&n) {
                return Err(ApiError::invalid_argument(
                    "limit",
                    format!("limit must be between 1 and {MAX_LIMIT}, got {n}"),
                ));
            }
            n as usize
        }
    };
    let min_score = match get("min_score") {
        None => DEFAULT_MIN_SCORE,
        Some(v) => {
            let x: f64 = v.trim().parse().map_err(|_| {
                ApiError::invalid_request("min_score", format!("min_score `{v}` is not a number"))
            })?;
            if !(0.0..=1.0).contains(&x) {
                return Err(ApiError::invalid_argument(
                    "min_score",
                    format!("min_score must be between 0 and 1, got {v}"),
                ));
            }
            x
        }
    };
    let by_model = match get("mode") {
        None | Some("catalogue") => false,
        Some("model") if which == "title" => true,
        Some("model") => {
            return Err(ApiError::invalid_argument(
                "mode",
                "mode=model applies to title lookups only",
            ))
        }
        Some(other) => {
            return Err(ApiError::invalid_argument(
                "mode",
                format!("mode must be `catalogue` or `model`, got `{other}`"),
            ))
        }
    };

    let key = match which {
        "title" => {
            if raw.trim().is_empty() {
                return Err(ApiError::invalid_argument(
                    "title",
                    "title must not be empty",
                ));
            }
            if raw.chars().count() > MAX_TITLE_CHARS {
                return Err(ApiError::invalid_argument(
                    "title",
                    format!("title is longer than {MAX_TITLE_CHARS} characters"),
                ));
            }
            Key::Title(raw.clone())
        }
        "sid" => {
            if raw.len() > MAX_SID_BYTES {
                return Err(ApiError::InvalidSid {
                    field: "sid",
                    message: format!("sid is longer than {MAX_SID_BYTES} bytes"),
                });
            }
            let sid: Sid = raw
                .parse()
                .map_err(|e: sidrec::Error| ApiError::InvalidSid {
                    field: "sid",
                    message: e.to_string(),
                })?;
            Key::Sid(sid)
        }
        _ => {
            let id: ItemId = raw.trim().parse().map_err(|_| {
                ApiError::invalid_request(
                    "item_id",
                    format!("item_id `{raw}` is not an integer in 0..=4294967295"),
                )
            })?;
            Key::ItemId(id)
        }
    };
    Ok(Params {
        key,
        raw,
        limit,
        min_score,
        by_model,
    })
}

fn item(cat: &LoadedCatalogue, id: ItemId, kind: MatchKind, score: Option<f64>) -> LookupItem {
    let it = cat
        .catalogue
        .get(id)
        .expect("ids come from the catalogue's own maps");
    LookupItem {
        item_id: id,
        sid: it.sid.to_string(),
        title: it.title.clone(),
        match_kind: kind,
        score,
    }
}

/// Answer validated parameters from a catalogue.
fn answer(cat: &LoadedCatalogue, p: Params) -> Result<LookupResponse, ApiError> {
    let (by, items) = match &p.key {
        Key::ItemId(id) => {
            if cat.catalogue.get(*id).is_none() {
                return Err(ApiError::ItemNotFound(*id));
            }
            ("item_id", vec![item(cat, *id, MatchKind::Exact, None)])
        }
        Key::Sid(sid) => {
            let ids = cat.catalogue.items_with_sid(sid);
            if ids.is_empty() {
                return Err(ApiError::SidNotFound(sid.to_string()));
            }
            let items = ids
                .iter()
                .map(|&id| item(cat, id, MatchKind::Exact, None))
                .collect();
            ("sid", items)
        }
        Key::Title(title) => {
            let exact = cat.catalogue.items_with_title(title);
            let mut items: Vec<LookupItem> = exact
                .iter()
                .take(p.limit)
                .map(|&id| item(cat, id, MatchKind::Exact, Some(1.0)))
                .collect();
            let room = p.limit - items.len();
            for hit in cat.titles.search(title, room, p.min_score, exact) {
                // A different title can normalise to the same trigram set; only the exact
                // title map says "exact", so cap fuzzy scores just below 1.
                let score = hit.score.min(0.999_999);
                items.push(item(cat, hit.item, MatchKind::Fuzzy, Some(score)));
            }
            ("title", items)
        }
    };
    Ok(LookupResponse {
        by,
        query: p.raw,
        items,
    })
}

/// `GET /v1/sid/lookup`.
pub async fn lookup(
    State(state): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<LookupResponse>, ApiError> {
    let Query(pairs) = query.map_err(|e| ApiError::InvalidRequest {
        field: None,
        message: e.body_text(),
    })?;
    let params = parse(pairs)?;
    if params.by_model {
        return by_model(&state, params).await.map(Json);
    }
    let cat = state.catalogue()?;
    answer(&cat, params).map(Json)
}

/// `mode=model`: the reference's title→SID task. The model writes SIDs for the title prompt
/// with `limit`-wide constrained beam search (through the batcher, like recommendations); the
/// items of the best beams come back as `fuzzy` matches scored by the beam's probability
/// (`min_score` does not apply: it is a title-similarity threshold).
async fn by_model(state: &AppState, p: Params) -> Result<LookupResponse, ApiError> {
    use crate::engine::{EngineError, Prompt};
    let Key::Title(title) = &p.key else {
        return Err(ApiError::invalid_argument(
            "mode",
            "mode=model applies to title lookups only",
        ));
    };
    let infer = state.infer().ok_or(ApiError::ModelNotLoaded)?;
    let engine = state.engine().ok_or(ApiError::ModelNotLoaded)?;
    let tokens = engine
        .encode_title(title)
        .map_err(|e| EngineError::Encode(e.to_string()))?;
    let deadline = std::time::Instant::now() + state.options().request_timeout;
    let prompt = Prompt {
        tokens,
        exclude: Vec::new(),
        num_beams: p.limit,
    };
    let out = infer.generate(&engine, prompt, "limit", deadline).await?;
    let cat = &engine.catalogue;
    let mut items = Vec::new();
    'beams: for h in &out.hypotheses {
        // A probability, kept below 1 as fuzzy scores are.
        let score = f64::from(h.score).exp().min(0.999_999);
        for &id in &h.items {
            if items.len() == p.limit {
                break 'beams;
            }
            items.push(item(cat, id, MatchKind::Fuzzy, Some(score)));
        }
    }
    Ok(LookupResponse {
        by: "title",
        query: p.raw,
        items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &[(&str, &str)]) -> Result<Params, ApiError> {
        parse(
            s.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
    }

    #[test]
    fn parameter_rules() {
        let code = |r: Result<Params, ApiError>| r.unwrap_err().code();
        assert_eq!(code(q(&[])), "missing_parameter");
        assert_eq!(
            code(q(&[("title", "a"), ("sid", "<a_1>")])),
            "conflicting_parameters"
        );
        assert_eq!(
            code(q(&[("title", "a"), ("title", "b")])),
            "invalid_request"
        );
        assert_eq!(code(q(&[("titel", "a")])), "invalid_request");
        assert_eq!(code(q(&[("title", "  ")])), "invalid_argument");
        assert_eq!(
            code(q(&[("title", "a"), ("limit", "0")])),
            "invalid_argument"
        );
        assert_eq!(
            code(q(&[("title", "a"), ("limit", "x")])),
            "invalid_request"
        );
        assert_eq!(
            code(q(&[("title", "a"), ("min_score", "1.5")])),
            "invalid_argument"
        );
        assert_eq!(
            code(q(&[("title", "a"), ("min_score", "NaN")])),
            "invalid_argument"
        );
        assert!(q(&[("title", "a"), ("mode", "model")]).unwrap().by_model);
        assert_eq!(
            code(q(&[("sid", "<a_1>"), ("mode", "model")])),
            "invalid_argument"
        );
        assert_eq!(code(q(&[("sid", "<a_1><c_2>")])), "invalid_sid");
        assert_eq!(code(q(&[("item_id", "-1")])), "invalid_request");
        let p = q(&[("item_id", "7"), ("mode", "catalogue")]).unwrap();
        assert_eq!(p.key, Key::ItemId(7));
        assert_eq!((p.limit, p.min_score), (DEFAULT_LIMIT, DEFAULT_MIN_SCORE));
    }
}
