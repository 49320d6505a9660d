//! Per-user histories in process memory, the history store of a server without Redis.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use sidrec::ItemId;

use super::{HistoryStore, StoreFuture};

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
