//! Every 2xx answer is checked: a recommendation's items are distinct catalogue items with
//! their catalogue SIDs, at most `k`, ranked 1.., never excluded; a lookup answers what was
//! asked. A failed check makes the response *invalid* (reported, and refused by `[expect]`).

use std::collections::HashSet;

use serde_json::Value;
use sidrec::catalogue::Catalogue;
use sidrec::ItemId;

use crate::workload::{Expect, LookupKey};

/// Check one recommendation answer; returns its `model_version`.
pub fn recommendation(v: &Value, expect: &Expect, cat: &Catalogue) -> Result<String, String> {
    let version = v["model_version"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or("no model_version")?
        .to_owned();
    let items = v["items"].as_array().ok_or("no items array")?;
    if items.len() > expect.k {
        return Err(format!("{} items for k = {}", items.len(), expect.k));
    }
    let mut seen = HashSet::new();
    for (i, it) in items.iter().enumerate() {
        let id = it["item_id"]
            .as_u64()
            .and_then(|i| ItemId::try_from(i).ok())
            .ok_or_else(|| format!("items[{i}] has no item_id"))?;
        if !seen.insert(id) {
            return Err(format!("item {id} appears twice"));
        }
        let Some(item) = cat.get(id) else {
            return Err(format!("item {id} is not in the catalogue"));
        };
        if it["sid"].as_str() != Some(item.sid.to_string().as_str()) {
            return Err(format!("item {id} has SID {} in the answer", it["sid"]));
        }
        if expect.excluded.contains(&id) {
            return Err(format!("item {id} was excluded"));
        }
        if it["rank"].as_u64() != Some(i as u64 + 1) {
            return Err(format!("items[{i}] has rank {}", it["rank"]));
        }
    }
    Ok(version)
}

/// Check a batch answer entry by entry; returns the versions seen. An entry that is an error
/// body is a failure of the batch, not an invalid answer, and is reported as such.
pub fn batch(v: &Value, expects: &[Expect], cat: &Catalogue) -> Result<Vec<String>, BatchProblem> {
    let results = v["results"]
        .as_array()
        .ok_or_else(|| BatchProblem::Invalid("no results array".into()))?;
    if results.len() != expects.len() {
        return Err(BatchProblem::Invalid(format!(
            "{} results for {} requests",
            results.len(),
            expects.len()
        )));
    }
    let mut versions = Vec::new();
    for (i, (r, e)) in results.iter().zip(expects).enumerate() {
        if let Some(code) = r["error"]["code"].as_str() {
            return Err(BatchProblem::EntryError(format!("results[{i}]: {code}")));
        }
        versions.push(
            recommendation(r, e, cat)
                .map_err(|m| BatchProblem::Invalid(format!("results[{i}]: {m}")))?,
        );
    }
    Ok(versions)
}

/// Why a batch answer is not a success.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchProblem {
    /// An entry answered with an error body.
    EntryError(String),
    /// The answer breaks the contract.
    Invalid(String),
}

/// Check a lookup answer.
pub fn lookup(v: &Value, key: &LookupKey, cat: &Catalogue) -> Result<(), String> {
    let items = v["items"].as_array().ok_or("no items array")?;
    for it in items {
        let id = it["item_id"]
            .as_u64()
            .and_then(|i| ItemId::try_from(i).ok())
            .ok_or("an item has no item_id")?;
        let Some(item) = cat.get(id) else {
            return Err(format!("item {id} is not in the catalogue"));
        };
        if it["sid"].as_str() != Some(item.sid.to_string().as_str()) {
            return Err(format!("item {id} has SID {} in the answer", it["sid"]));
        }
    }
    match key {
        LookupKey::ItemId(id) => {
            if items.len() != 1 || items[0]["item_id"].as_u64() != Some(u64::from(*id)) {
                return Err(format!("item_id={id} did not answer exactly item {id}"));
            }
        }
        LookupKey::Sid(sid) => {
            if items.is_empty() || items.iter().any(|it| it["sid"].as_str() != Some(sid)) {
                return Err(format!("sid={sid} answered other SIDs or nothing"));
            }
        }
        LookupKey::Title(title) => {
            if items.is_empty() {
                return Err(format!("title={title:?} (a catalogue title) found nothing"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeSet;

    #[test]
    fn broken_answers_are_caught() {
        let cat = crate::workload::tests::catalogue(10);
        let sid = |i: u32| cat.get(i).unwrap().sid.to_string();
        let item = |i: u32, rank: usize| json!({"item_id": i, "sid": sid(i), "rank": rank});
        let expect = Expect {
            k: 3,
            excluded: BTreeSet::from([7]),
        };
        let ok = json!({"model_version": "v1", "items": [item(1, 1), item(2, 2)]});
        assert_eq!(recommendation(&ok, &expect, &cat).unwrap(), "v1");
        let bad = [
            json!({"items": [item(1, 1)]}),
            json!({"model_version": "v1", "items": [item(1, 1), item(1, 2)]}),
            json!({"model_version": "v1", "items": [item(7, 1)]}),
            json!({"model_version": "v1", "items": [{"item_id": 99, "sid": "x", "rank": 1}]}),
            json!({"model_version": "v1", "items": [{"item_id": 1, "sid": sid(2), "rank": 1}]}),
            json!({"model_version": "v1", "items": [item(1, 1), item(2, 2), item(3, 3), item(4, 4)]}),
            json!({"model_version": "v1", "items": [item(1, 2)]}),
        ];
        for b in &bad {
            assert!(recommendation(b, &expect, &cat).is_err(), "{b}");
        }
        let entries = json!({"results": [ok.clone(), {"error": {"code": "unknown_items"}}]});
        assert!(matches!(
            batch(&entries, &[expect.clone(), expect.clone()], &cat),
            Err(BatchProblem::EntryError(_))
        ));
        let two = json!({"results": [ok.clone(), ok]});
        assert_eq!(
            batch(&two, &[expect.clone(), expect], &cat).unwrap().len(),
            2
        );

        let l = json!({"items": [{"item_id": 3, "sid": sid(3)}]});
        assert!(lookup(&l, &LookupKey::ItemId(3), &cat).is_ok());
        assert!(lookup(&l, &LookupKey::ItemId(4), &cat).is_err());
        assert!(lookup(&l, &LookupKey::Sid(sid(3)), &cat).is_ok());
        assert!(lookup(&l, &LookupKey::Sid(sid(4)), &cat).is_err());
        assert!(lookup(
            &json!({"items": []}),
            &LookupKey::Title("item 3".into()),
            &cat
        )
        .is_err());
    }
}
