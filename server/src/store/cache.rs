//! Response cache keys and the in-process cache used when there is no Redis.

use std::fmt::Write as _;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{ResponseCache, StoreError, StoreFuture};

/// Request members whose order carries no meaning: sorted and deduplicated before hashing.
const SET_MEMBERS: &[&str] = &["exclude"];

/// The canonical text of a request: object members sorted by name at every depth, members whose
/// value is `null` dropped (absent and `null` mean the same), the arrays named in
/// [`SET_MEMBERS`] (`exclude`) sorted and deduplicated, no whitespace. Two requests that must get
/// the same response have the same canonical text, given that the caller filled in defaults.
pub fn canonical_json(request: &Value) -> String {
    let mut out = String::new();
    write_canonical(request, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> =
                map.iter().filter(|(_, v)| !v.is_null()).collect();
            members.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (name, value)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(name.clone()).to_string());
                out.push(':');
                match value {
                    Value::Array(items) if SET_MEMBERS.contains(&name.as_str()) => {
                        let mut texts: Vec<String> = items.iter().map(canonical_json).collect();
                        texts.sort();
                        texts.dedup();
                        out.push('[');
                        out.push_str(&texts.join(","));
                        out.push(']');
                    }
                    other => write_canonical(other, out),
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The response cache key of `request` served by checkpoint `checkpoint_version`: the hex SHA-256
/// of the version and the request's [`canonical_json`].
///
/// Pass the request as the server understood it, with defaults filled in (parse it into its
/// typed form, then serialise that back), so that `{"history":[1]}` and
/// `{"history":[1],"k":10}` share a key. A `user_id` request depends on the stored history, so
/// key it on the history it resolved to, not on the user id. Keys change with the checkpoint
/// version, so a hot swap never serves responses of the previous model.
pub fn cache_key(checkpoint_version: &str, request: &Value) -> String {
    let mut h = Sha256::new();
    h.update(checkpoint_version.as_bytes());
    // A separator that cannot occur in the canonical JSON keeps version and request apart.
    h.update([0u8]);
    h.update(canonical_json(request).as_bytes());
    let digest = h.finalize();
    let mut hex = String::with_capacity(64);
    for b in digest {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// A bounded in-process response cache: least recently used entries are evicted past
/// `capacity`, and entries expire after their TTL. Used when the server runs without Redis;
/// not shared between replicas.
#[derive(Debug)]
pub struct MemoryCache {
    entries: Mutex<LruCache<String, (Instant, Vec<u8>)>>,
}

impl MemoryCache {
    /// A cache holding at most `capacity` responses (at least one).
    pub fn new(capacity: usize) -> Self {
        let cap = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Self {
            entries: Mutex::new(LruCache::new(cap)),
        }
    }

    /// The number of entries held, expired ones included until they are looked up or evicted.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, (Instant, Vec<u8>)>> {
        // A panic while holding the lock cannot leave the LRU half-updated in a way that
        // matters for a cache; keep serving.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bytes under `key`, if present and not expired (synchronous form of `cache_get`).
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let mut entries = self.lock();
        let now = Instant::now();
        match entries.get(key) {
            Some((expires, bytes)) if *expires > now => Some(bytes.clone()),
            Some(_) => {
                entries.pop(key);
                None
            }
            None => None,
        }
    }

    /// Store `bytes` under `key` for `ttl` (synchronous form of `cache_put`).
    pub fn put(&self, key: &str, bytes: &[u8], ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        // A TTL too large to add to `now` means "as long as the LRU keeps it".
        let now = Instant::now();
        let expires = now
            .checked_add(ttl)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600));
        self.lock().put(key.to_owned(), (expires, bytes.to_vec()));
    }
}

impl ResponseCache for MemoryCache {
    fn cache_get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move { Ok::<_, StoreError>(self.get(key)) })
    }

    fn cache_put<'a>(
        &'a self,
        key: &'a str,
        bytes: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.put(key, bytes, ttl);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_form_ignores_member_order_nulls_and_exclude_order() {
        let a = json!({"k": 10, "history": [3, 1, 2], "exclude": [9, 7, 9], "num_beams": null});
        let b = json!({"exclude": [7, 9], "history": [3, 1, 2], "k": 10});
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(
            canonical_json(&a),
            r#"{"exclude":[7,9],"history":[3,1,2],"k":10}"#
        );
        assert_eq!(cache_key("v1", &a), cache_key("v1", &b));
        // History order matters; so do the checkpoint version and every other value.
        let c = json!({"k": 10, "history": [1, 2, 3], "exclude": [7, 9]});
        assert_ne!(cache_key("v1", &a), cache_key("v1", &c));
        assert_ne!(cache_key("v1", &a), cache_key("v2", &a));
        assert_ne!(
            cache_key("v1", &a),
            cache_key(
                "v1",
                &json!({"k": 5, "history": [3, 1, 2], "exclude": [7, 9]})
            )
        );
        assert_eq!(cache_key("v1", &a).len(), 64);
    }

    #[test]
    fn nested_requests_are_canonical_too() {
        let a = json!({"requests": [{"history": [1], "exclude": [2, 1]}, {"user_id": "u"}]});
        let b = json!({"requests": [{"exclude": [1, 2], "history": [1]}, {"user_id": "u"}]});
        assert_eq!(cache_key("v", &a), cache_key("v", &b));
        // Batch order is meaningful (responses come back in request order).
        let c = json!({"requests": [{"user_id": "u"}, {"history": [1], "exclude": [1, 2]}]});
        assert_ne!(cache_key("v", &a), cache_key("v", &c));
    }

    #[test]
    fn memory_cache_expires_and_evicts() {
        let c = MemoryCache::new(2);
        c.put("a", b"1", Duration::from_secs(60));
        c.put("b", b"2", Duration::from_millis(1));
        c.put("z", b"0", Duration::ZERO);
        assert_eq!(c.get("a").as_deref(), Some(&b"1"[..]));
        assert_eq!(c.get("z"), None);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.get("b"), None, "expired entry served");
        c.put("b", b"2", Duration::from_secs(60));
        // Touch "b": "a" is then the least recently used entry when "c" arrives.
        c.get("b");
        c.put("c", b"3", Duration::from_secs(60));
        assert_eq!(c.get("a"), None, "least recently used entry kept");
        assert_eq!(c.get("b").as_deref(), Some(&b"2"[..]));
        assert_eq!(c.get("c").as_deref(), Some(&b"3"[..]));
        assert_eq!(c.len(), 2);
    }
}
