//! Per-user interaction histories behind one small trait, so that `/v1/events` and `user_id`
//! requests do not care whether histories live in process memory ([`MemoryHistory`]) or in Redis.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use sidrec::ItemId;

/// A history store failure (the store is down or answered nonsense); served as 503
/// `history_store_unavailable`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct HistoryError(pub String);

/// The boxed future a [`HistoryStore`] method returns (object-safe async).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, HistoryError>> + Send + 'a>>;

/// Where user histories live.
pub trait HistoryStore: Send + Sync + fmt::Debug {
    /// Append `item_ids` (oldest first) to `user_id`'s history, keep only its newest `cap`
    /// entries, and return the history's length afterwards.
    fn append<'a>(
        &'a self,
        user_id: &'a str,
        item_ids: &'a [ItemId],
        cap: usize,
    ) -> StoreFuture<'a, usize>;

    /// The newest `max_len` entries of `user_id`'s history, oldest first (empty when unknown).
    fn history<'a>(&'a self, user_id: &'a str, max_len: usize) -> StoreFuture<'a, Vec<String>>;
}

/// Histories in process memory: lost on restart, not shared between replicas.
#[derive(Debug, Default)]
pub struct MemoryHistory {
    users: Mutex<HashMap<String, VecDeque<ItemId>>>,
}

impl MemoryHistory {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl HistoryStore for MemoryHistory {
    fn append<'a>(
        &'a self,
        user_id: &'a str,
        item_ids: &'a [ItemId],
        cap: usize,
    ) -> StoreFuture<'a, usize> {
        Box::pin(async move {
            let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
            let list = users.entry(user_id.to_owned()).or_default();
            list.extend(item_ids.iter().copied());
            while list.len() > cap {
                list.pop_front();
            }
            Ok(list.len())
        })
    }

    fn history<'a>(&'a self, user_id: &'a str, max_len: usize) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async move {
            let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
            Ok(users
                .get(user_id)
                .map(|l| {
                    let skip = l.len().saturating_sub(max_len);
                    l.iter().skip(skip).map(|i| i.to_string()).collect()
                })
                .unwrap_or_default())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_history_is_capped_and_ordered() {
        let h = MemoryHistory::new();
        assert_eq!(h.append("u", &[1, 2, 3], 4).await.unwrap(), 3);
        assert_eq!(h.append("u", &[4, 5], 4).await.unwrap(), 4);
        assert_eq!(h.history("u", 10).await.unwrap(), ["2", "3", "4", "5"]);
        assert_eq!(h.history("u", 2).await.unwrap(), ["4", "5"]);
        assert!(h.history("nobody", 10).await.unwrap().is_empty());
    }
}
