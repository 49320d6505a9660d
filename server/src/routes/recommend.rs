//! `POST /v1/recommend` and `POST /v1/recommend/batch`: validate, resolve the history against the
//! serving engine's catalogue, hand the prompts to the inference facade, shape the beams into
//! items.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sidrec::decode::Hypothesis;
use sidrec::prompt::PromptContext;
use sidrec::{ItemId, Sid};

use super::body::{self, json_body};
use crate::engine::batcher::JobOutput;
use crate::engine::{Engine, Infer, Prompt};
use crate::error::ApiError;
use crate::state::AppState;

/// Default `k`.
pub const DEFAULT_K: usize = 10;
/// Largest `k`.
pub const MAX_K: usize = 100;
/// Default `num_beams`.
pub const DEFAULT_NUM_BEAMS: usize = 50;
/// Largest `num_beams`.
pub const MAX_NUM_BEAMS: usize = 200;
/// Longest `history` / `history_sids`.
pub const MAX_HISTORY_ITEMS: usize = 50;
/// Longest `exclude`.
pub const MAX_EXCLUDE: usize = 1000;
/// Header of a `/v1/recommend` answer: `hit` when it came from the response cache, else `miss`.
pub static CACHE_HEADER: HeaderName = HeaderName::from_static("x-sidrec-cache");
/// Header of a `/v1/recommend/batch` answer: how many of its results came from the cache.
pub static CACHE_HITS_HEADER: HeaderName = HeaderName::from_static("x-sidrec-cache-hits");
/// Most requests in one `/v1/recommend/batch` call.
pub const MAX_BATCH_REQUESTS: usize = 64;
/// Longest `user_id`.
pub const MAX_USER_ID_CHARS: usize = 128;

const FIELDS: [&str; 9] = [
    "history",
    "history_sids",
    "user_id",
    "k",
    "num_beams",
    "exclude",
    "exclude_history",
    "user_segment",
    "context",
];

/// Where the history comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum HistorySource {
    /// Item ids.
    Items(Vec<ItemId>),
    /// SIDs.
    Sids(Vec<Sid>),
    /// The history store's list for this user.
    User(String),
}

/// A syntactically valid recommendation request.
#[derive(Debug, Clone, PartialEq)]
pub struct RecommendParams {
    /// The history.
    pub source: HistorySource,
    /// Items to return.
    pub k: usize,
    /// Beam width.
    pub num_beams: usize,
    /// Items never to return.
    pub exclude: Vec<ItemId>,
    /// Never return history items.
    pub exclude_history: bool,
    /// `user_segment` and `context` (defaults: unknown, homepage); only a checkpoint trained
    /// with those prompt tokens reads them.
    pub context: PromptContext,
}

/// Parse and bound-check one request object (no catalogue needed).
pub fn parse_request(v: &Value) -> Result<RecommendParams, ApiError> {
    let obj = body::object(v, "the request")?;
    body::known_fields(obj, &FIELDS)?;
    let given: Vec<&'static str> = ["history", "history_sids", "user_id"]
        .into_iter()
        .filter(|f| obj.contains_key(*f))
        .collect();
    let source = match given.as_slice() {
        [] => {
            return Err(ApiError::MissingParameter {
                fields: vec!["history", "history_sids", "user_id"],
            })
        }
        ["history"] => {
            let ids = body::item_ids(&obj["history"], "history")?;
            check_history_len(ids.len(), "history")?;
            HistorySource::Items(ids)
        }
        ["history_sids"] => {
            let arr = body::array(&obj["history_sids"], "history_sids")?;
            check_history_len(arr.len(), "history_sids")?;
            let sids = arr
                .iter()
                .map(|s| {
                    let s = s.as_str().ok_or_else(|| {
                        ApiError::invalid_request("history_sids", "history_sids must be strings")
                    })?;
                    s.parse::<Sid>().map_err(|e| ApiError::InvalidSid {
                        field: "history_sids",
                        message: format!("`{s}`: {e}"),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            HistorySource::Sids(sids)
        }
        ["user_id"] => HistorySource::User(user_id(&obj["user_id"])?),
        _ => return Err(ApiError::ConflictingParameters { fields: given }),
    };
    let k = body::int_in(obj, "k", 1, MAX_K, DEFAULT_K)?;
    let num_beams = body::int_in(obj, "num_beams", 1, MAX_NUM_BEAMS, DEFAULT_NUM_BEAMS)?;
    if k > num_beams {
        return Err(ApiError::invalid_argument(
            "k",
            format!("k ({k}) must not exceed num_beams ({num_beams})"),
        ));
    }
    let exclude = match obj.get("exclude") {
        None => Vec::new(),
        Some(v) => {
            let ids = body::item_ids(v, "exclude")?;
            if ids.len() > MAX_EXCLUDE {
                return Err(ApiError::invalid_argument(
                    "exclude",
                    format!("exclude has {} items; at most {MAX_EXCLUDE}", ids.len()),
                ));
            }
            ids
        }
    };
    let exclude_history = match obj.get("exclude_history") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::invalid_request(
                "exclude_history",
                "exclude_history must be true or false",
            ))
        }
    };
    let context = PromptContext {
        user: closed_enum(obj, "user_segment")?.unwrap_or_default(),
        context: closed_enum(obj, "context")?.unwrap_or_default(),
    };
    Ok(RecommendParams {
        source,
        k,
        num_beams,
        exclude,
        exclude_history,
        context,
    })
}

/// Optional member `field` of `obj` as a value of a closed enum (a user segment, a context): 400 when not a string, 422 naming the allowed values when unknown.
fn closed_enum<T: std::str::FromStr<Err = sidrec::Error>>(
    obj: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<T>, ApiError> {
    let Some(v) = obj.get(field) else {
        return Ok(None);
    };
    let s = v
        .as_str()
        .ok_or_else(|| ApiError::invalid_request(field, format!("{field} must be a string")))?;
    s.parse::<T>()
        .map(Some)
        .map_err(|e| ApiError::invalid_argument(field, format!("{field}: {e}")))
}

/// A `user_id` value: a string of 1 to 128 characters.
pub fn user_id(v: &Value) -> Result<String, ApiError> {
    let s = v
        .as_str()
        .ok_or_else(|| ApiError::invalid_request("user_id", "user_id must be a string"))?;
    let n = s.chars().count();
    if n == 0 || n > MAX_USER_ID_CHARS {
        return Err(ApiError::invalid_argument(
            "user_id",
            format!("user_id must have 1 to {MAX_USER_ID_CHARS} characters"),
        ));
    }
    Ok(s.to_owned())
}

fn check_history_len(n: usize, field: &'static str) -> Result<(), ApiError> {
    if n == 0 {
        return Err(ApiError::invalid_argument(
            field,
            format!("{field} must not be empty"),
        ));
    }
    if n > MAX_HISTORY_ITEMS {
        return Err(ApiError::invalid_argument(
            field,
            format!("{field} has {n} items; at most {MAX_HISTORY_ITEMS}"),
        ));
    }
    Ok(())
}

/// A request resolved against one engine, ready to queue.
#[derive(Debug)]
pub struct Prepared {
    prompt: Vec<u32>,
    /// The history's newest item: all a hybrid ranker reads.
    last_item: Option<ItemId>,
    exclude: Vec<ItemId>,
    k: usize,
    num_beams: usize,
}

/// Resolve the history (store look-up, catalogue checks), build the prompt and the exclusions.
pub async fn prepare(
    state: &AppState,
    engine: &Engine,
    p: RecommendParams,
) -> Result<Prepared, ApiError> {
    let cat = &engine.catalogue.catalogue;
    let max_history = state.options().max_history.max(1);
    let mut unknown: Vec<ItemId> = Vec::new();
    let mut fields: Vec<&'static str> = Vec::new();
    let mut note_unknown = |ids: &[ItemId], field: &'static str| {
        for &i in ids {
            if cat.get(i).is_none() && !unknown.contains(&i) {
                unknown.push(i);
                if !fields.contains(&field) {
                    fields.push(field);
                }
            }
        }
    };
    // (history item ids, for exclusion; the SIDs when the request named SIDs, for the prompt)
    let (hist_items, sids): (Vec<ItemId>, Option<Vec<Sid>>) = match p.source {
        HistorySource::Items(ids) => {
            note_unknown(&ids, "history");
            note_unknown(&p.exclude, "exclude");
            (ids, None)
        }
        HistorySource::Sids(sids) => {
            note_unknown(&p.exclude, "exclude");
            let mut items = Vec::new();
            for s in &sids {
                let with = cat.items_with_sid(s);
                if with.is_empty() {
                    return Err(ApiError::invalid_argument(
                        "history_sids",
                        format!("{s} is not the SID of any catalogue item"),
                    ));
                }
                items.extend_from_slice(with);
            }
            (items, Some(sids))
        }
        HistorySource::User(user) => {
            note_unknown(&p.exclude, "exclude");
            let stored = state
                .history()
                .history(&user, max_history)
                .await
                .map_err(ApiError::from)?;
            // Items recorded under an older catalogue that the serving one lacks are skipped
            // (the prompt encoder refuses items without a SID; this is where they are dropped).
            let ids: Vec<ItemId> = stored
                .iter()
                .filter_map(|s| s.parse::<ItemId>().ok())
                .filter(|&i| cat.get(i).is_some())
                .collect();
            if ids.is_empty() {
                return Err(ApiError::invalid_argument(
                    "user_id",
                    format!("user `{user}` has no history (send it with POST /v1/events)"),
                ));
            }
            (ids, None)
        }
    };
    if !unknown.is_empty() {
        return Err(ApiError::UnknownItems {
            field: fields.join(", "),
            item_ids: unknown,
        });
    }
    // A checkpoint without prompt tokens builds its plain prompts whatever the context says.
    let prompt = match &sids {
        Some(sids) => engine.encode(sids, max_history, &p.context),
        None => engine.encode_items(&hist_items, max_history, &p.context),
    }
    .map_err(|e| crate::engine::EngineError::Encode(e.to_string()))?;
    // For `history_sids`, the newest SID's items are the last ones, in id order; the last of
    // them stands for it (several only where items share a SID).
    let last_item = hist_items.last().copied();
    let mut exclude = p.exclude;
    if p.exclude_history {
        exclude.extend(hist_items);
    }
    exclude.sort_unstable();
    exclude.dedup();
    Ok(Prepared {
        prompt,
        last_item,
        exclude,
        k: p.k,
        num_beams: p.num_beams,
    })
}

impl Prepared {
    /// The prompt to decode.
    fn prompt(&self) -> Prompt {
        Prompt {
            tokens: self.prompt.clone(),
            exclude: self.exclude.clone(),
            num_beams: self.num_beams,
        }
    }

    /// The response cache key under `engine`: everything the answer depends on (prompt,
    /// exclusions with the history's folded in, `k`, `num_beams`, and under a hybrid ranker the
    /// last item, which items sharing a SID would otherwise confuse), so that requests differing
    /// only in form (defaults spelt out, a `user_id` or the history it resolves to) share it.
    fn cache_key(&self, engine: &Engine) -> String {
        let mut normalised = serde_json::json!({
            "prompt": self.prompt,
            "exclude": self.exclude,
            "k": self.k,
            "num_beams": self.num_beams,
        });
        if engine.hybrid.is_some() {
            normalised["last_item"] = serde_json::json!(self.last_item);
        }
        crate::store::cache_key(engine.version(), &normalised)
    }
}

/// The cached answer under `key`, if any. A cache that fails is logged and counted, and the
/// request is computed as on a miss.
async fn cache_get(state: &AppState, key: &str, start: Instant) -> Option<RecommendResponse> {
    let cache = state.cache()?;
    let bytes = match cache.cache_get(key).await {
        Ok(b) => b?,
        Err(e) => {
            state.metrics().cache_errors.inc();
            tracing::warn!("response cache read failed, computing the answer: {e}");
            return None;
        }
    };
    match serde_json::from_slice::<RecommendResponse>(&bytes) {
        Ok(mut r) => {
            state.metrics().cache_hits.inc();
            r.timing = Timing {
                queue_ms: 0.0,
                inference_ms: 0.0,
                total_ms: ms(start.elapsed()),
            };
            Some(r)
        }
        Err(e) => {
            state.metrics().cache_errors.inc();
            tracing::warn!("unreadable response cache entry, computing the answer: {e}");
            None
        }
    }
}

/// Cache `response` under `key` in the background: the client does not wait for the cache, and
/// a failure is only logged and counted.
fn cache_put(state: &AppState, key: String, response: &RecommendResponse) {
    if state.cache().is_none() {
        return;
    }
    let bytes = match serde_json::to_vec(response) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("cannot serialise a response for the cache: {e}");
            return;
        }
    };
    let state = state.clone();
    tokio::spawn(async move {
        let Some(cache) = state.cache() else { return };
        if let Err(e) = cache
            .cache_put(&key, &bytes, state.options().cache_ttl)
            .await
        {
            state.metrics().cache_errors.inc();
            tracing::warn!("response cache write failed: {e}");
        }
    });
}

/// One recommended item.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecommendedItem {
    /// 1 for the best.
    pub rank: usize,
    /// Item id.
    pub item_id: ItemId,
    /// Its SID.
    pub sid: String,
    /// Its title.
    pub title: String,
    /// What the list is ranked by: the beam's log-probability, or under a hybrid ranker
    /// `model_score + λ · transition score`.
    pub score: f32,
    /// The beam's log-probability (absent only in cache entries of older servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_score: Option<f32>,
}

/// Where the time went, in milliseconds (a cached answer has no queue or inference time).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timing {
    /// Waiting in the batcher's queue.
    pub queue_ms: f64,
    /// The decode call that served the request.
    pub inference_ms: f64,
    /// Everything, from the handler's start.
    pub total_ms: f64,
}

/// Body of a recommendation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecommendResponse {
    /// Best first.
    pub items: Vec<RecommendedItem>,
    /// The checkpoint that produced them.
    pub model_version: String,
    /// Timing.
    pub timing: Timing,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The best `k` distinct items of the beams that `exclude` does not name, best first: in beam
/// order (a SID shared by several items yields them in id order, with the beam's score), or,
/// when the engine has a hybrid ranker, re-ranked by it for a history whose newest item is
/// `last_item` ([`sidrec::hybrid::Hybrid::rerank`], the function `eval` ranks with: items of a
/// SID stay together, the SID placed by its best item).
pub fn rank_items(
    engine: &Engine,
    last_item: Option<ItemId>,
    exclude: &[ItemId],
    k: usize,
    hypotheses: &[Hypothesis],
) -> Vec<RecommendedItem> {
    let cat = &engine.catalogue.catalogue;
    let candidates =
        sidrec::hybrid::candidates(hypotheses.iter().map(|h| (&h.items[..], h.score)), exclude);
    let ranked: Vec<(ItemId, usize, f32, f32)> = match &engine.hybrid {
        Some(h) => h
            .rerank(last_item.as_slice(), &candidates)
            .into_iter()
            .map(|r| (r.item, r.beam, r.score, r.model_score))
            .collect(),
        None => candidates
            .iter()
            .map(|c| (c.item, c.beam, c.model_score, c.model_score))
            .collect(),
    };
    ranked
        .into_iter()
        .take(k)
        .enumerate()
        .map(|(i, (id, beam, score, model_score))| RecommendedItem {
            rank: i + 1,
            item_id: id,
            sid: hypotheses
                .get(beam)
                .map(|h| h.sid.to_string())
                .unwrap_or_default(),
            title: cat.get(id).map(|i| i.title.clone()).unwrap_or_default(),
            score,
            model_score: Some(model_score),
        })
        .collect()
}

fn respond(engine: &Engine, p: &Prepared, out: JobOutput, start: Instant) -> RecommendResponse {
    RecommendResponse {
        items: rank_items(engine, p.last_item, &p.exclude, p.k, &out.hypotheses),
        model_version: engine.version().to_owned(),
        timing: Timing {
            queue_ms: ms(out.queue),
            inference_ms: ms(out.inference),
            total_ms: ms(start.elapsed()),
        },
    }
}

/// The serving engine and the facade that decodes on it.
fn serving(state: &AppState) -> Result<(Arc<Engine>, &Infer), ApiError> {
    let infer = state.infer().ok_or(ApiError::ModelNotLoaded)?;
    let engine = state.engine().ok_or(ApiError::ModelNotLoaded)?;
    Ok((engine, infer))
}

/// `POST /v1/recommend`.
pub async fn recommend(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let start = Instant::now();
    let deadline = start + state.options().request_timeout;
    let v = json_body(&headers, &body)?;
    let params = parse_request(&v)?;
    let (engine, infer) = serving(&state)?;
    let prepared = prepare(&state, &engine, params).await?;
    let key = prepared.cache_key(&engine);
    if let Some(hit) = cache_get(&state, &key, start).await {
        let marker = (CACHE_HEADER.clone(), HeaderValue::from_static("hit"));
        return Ok(([marker], Json(hit)).into_response());
    }
    let out = infer
        .generate(&engine, prepared.prompt(), "num_beams", deadline)
        .await?;
    let response = respond(&engine, &prepared, out, start);
    cache_put(&state, key, &response);
    let marker = (CACHE_HEADER.clone(), HeaderValue::from_static("miss"));
    Ok(([marker], Json(response)).into_response())
}

/// Body of a batch answer: per request, a response or an error body.
#[derive(Debug, Serialize)]
pub struct BatchResponse {
    /// `results[i]` answers `requests[i]`.
    pub results: Vec<Value>,
}

fn to_value<T: Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap_or_else(|e| {
        serde_json::json!({"error": {"code": "internal", "message": format!("serialising: {e}")}})
    })
}

/// `POST /v1/recommend/batch`.
pub async fn recommend_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let start = Instant::now();
    let deadline = start + state.options().request_timeout;
    let v = json_body(&headers, &body)?;
    let obj: &Map<String, Value> = body::object(&v, "the request")?;
    body::known_fields(obj, &["requests"])?;
    let list = body::array(
        obj.get("requests").ok_or(ApiError::MissingParameter {
            fields: vec!["requests"],
        })?,
        "requests",
    )?;
    if list.is_empty() || list.len() > MAX_BATCH_REQUESTS {
        return Err(ApiError::invalid_argument(
            "requests",
            format!(
                "requests has {} entries; give 1 to {MAX_BATCH_REQUESTS}",
                list.len()
            ),
        ));
    }
    let (engine, infer) = serving(&state)?;
    let mut slots: Vec<Result<Prepared, ApiError>> = Vec::with_capacity(list.len());
    // Per entry: its cache key and, on a hit, the cached answer.
    let mut cached: Vec<(String, Option<RecommendResponse>)> = Vec::with_capacity(list.len());
    for entry in list {
        let prepared = match parse_request(entry) {
            Ok(p) => prepare(&state, &engine, p).await,
            Err(e) => Err(e),
        };
        cached.push(match &prepared {
            Ok(p) => {
                let key = p.cache_key(&engine);
                let hit = cache_get(&state, &key, start).await;
                (key, hit)
            }
            Err(_) => (String::new(), None),
        });
        slots.push(prepared);
    }
    let hits = cached.iter().filter(|c| c.1.is_some()).count();
    // The entries to decode: prepared and not answered from the cache.
    let prompts: Vec<Prompt> = slots
        .iter()
        .zip(&cached)
        .filter_map(|(slot, (_, hit))| match slot {
            Ok(p) if hit.is_none() => Some(p.prompt()),
            _ => None,
        })
        .collect();
    let mut outputs = infer
        .generate_call(&engine, prompts, deadline)
        .await?
        .into_iter();
    let mut results = Vec::with_capacity(slots.len());
    for (slot, (key, hit)) in slots.into_iter().zip(cached) {
        let value = match (slot, hit) {
            (Err(e), _) => to_value(&e.body()),
            (Ok(_), Some(hit)) => to_value(&hit),
            (Ok(p), None) => match outputs.next() {
                Some(Ok(out)) => {
                    let response = respond(&engine, &p, out, start);
                    cache_put(&state, key, &response);
                    to_value(&response)
                }
                Some(Err(e)) => to_value(&ApiError::from(e).body()),
                None => to_value(&ApiError::Internal("lost a batch entry".into()).body()),
            },
        };
        results.push(value);
    }
    let marker = (CACHE_HITS_HEADER.clone(), HeaderValue::from(hits));
    Ok(([marker], Json(BatchResponse { results })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sidrec::prompt::{RequestContext, UserSegment};

    fn code(v: Value) -> &'static str {
        parse_request(&v).unwrap_err().code()
    }

    #[test]
    fn request_rules() {
        let p = parse_request(&json!({"history": [1, 2]})).unwrap();
        assert_eq!(p.source, HistorySource::Items(vec![1, 2]));
        assert_eq!((p.k, p.num_beams), (DEFAULT_K, DEFAULT_NUM_BEAMS));
        assert!(!p.exclude_history);
        assert_eq!(code(json!({})), "missing_parameter");
        assert_eq!(code(json!({"k": 3})), "missing_parameter");
        assert_eq!(
            code(json!({"history": [1], "user_id": "u"})),
            "conflicting_parameters"
        );
        assert_eq!(code(json!({"history": []})), "invalid_argument");
        assert_eq!(code(json!({"history": [1], "k": 0})), "invalid_argument");
        assert_eq!(code(json!({"history": [1], "k": "3"})), "invalid_request");
        assert_eq!(code(json!({"history": [1], "k": 2.5})), "invalid_request");
        assert_eq!(
            code(json!({"history": [1], "k": 20, "num_beams": 10})),
            "invalid_argument"
        );
        assert_eq!(code(json!({"history": [-1]})), "invalid_request");
        assert_eq!(code(json!({"history": [4294967296u64]})), "invalid_request");
        assert_eq!(
            code(json!({"history": [1], "colour": 1})),
            "invalid_request"
        );
        assert_eq!(code(json!({"history_sids": ["<a_1><c_1>"]})), "invalid_sid");
        assert_eq!(code(json!({"user_id": ""})), "invalid_argument");
        assert_eq!(code(json!([1, 2])), "invalid_request");
        assert_eq!(
            code(json!({"history": [1], "exclude_history": 1})),
            "invalid_request"
        );
        let p =
            parse_request(&json!({"history": [1], "user_segment": "high", "context": "search"}))
                .unwrap();
        assert_eq!(p.context.user, UserSegment::High);
        assert_eq!(p.context.context, RequestContext::Search);
        assert_eq!(
            parse_request(&json!({"history": [1]})).unwrap().context,
            PromptContext::default()
        );
        let e = parse_request(&json!({"history": [1], "user_segment": "vip"})).unwrap_err();
        assert_eq!(
            (e.code(), e.field().as_deref()),
            ("invalid_argument", Some("user_segment"))
        );
        let e = parse_request(&json!({"history": [1], "context": 3})).unwrap_err();
        assert_eq!(
            (e.code(), e.field().as_deref()),
            ("invalid_request", Some("context"))
        );
        let many: Vec<u32> = (0..51).collect();
        assert_eq!(code(json!({ "history": many })), "invalid_argument");
    }
}
