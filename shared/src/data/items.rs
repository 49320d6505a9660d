//! Item metadata (`.item.json`): `{"<id>": {"title", "description", "brand", "categories", ...}}`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sid::ItemId;

/// What is known about one item; fields beyond title and description are kept as they came.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemMeta {
    /// Product title.
    pub title: String,
    /// Description (MiniOneRec stores the repr of a Python list of strings here).
    #[serde(default)]
    pub description: String,
    /// Any other fields (`brand`, `categories`, ...), preserved on re-write.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ItemMeta {
    /// An item with a title and description and no other fields.
    pub fn new(title: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            description: description.into(),
            extra: Default::default(),
        }
    }
}

/// All items of a catalogue, by id.
pub type Items = BTreeMap<ItemId, ItemMeta>;

/// Parse `.item.json` text; `path` is used in messages.
pub fn parse_items(text: &str, path: &Path) -> Result<Items> {
    let raw: BTreeMap<String, serde_json::Value> =
        crate::io::parse_json(path, text.as_bytes(), "an item file")?;
    let mut items = Items::new();
    for (key, value) in raw {
        let id: ItemId = key.parse().map_err(|_| {
            Error::Invalid(format!(
                "{}: item key `{key}` is not a non-negative integer id",
                path.display()
            ))
        })?;
        let meta: ItemMeta = serde_json::from_value(value)
            .map_err(|e| Error::Invalid(format!("{}: item `{key}`: {e}", path.display())))?;
        items.insert(id, meta);
    }
    Ok(items)
}

/// Read an `.item.json` file.
pub fn read_items(path: impl AsRef<Path>) -> Result<Items> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_items(&text, path)
}

/// Write an `.item.json` file atomically (2-space indent, ids in numeric order).
pub fn write_items(path: impl AsRef<Path>, items: &Items) -> Result<()> {
    let as_strings: serde_json::Map<String, serde_json::Value> = items
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::to_value(v).unwrap_or_default()))
        .collect();
    // serde_json::Map sorts keys as strings; keep numeric order by writing entries ourselves.
    crate::io::write_atomic(path.as_ref(), |w| {
        w.write_all(b"{")?;
        for (i, (id, _)) in items.iter().enumerate() {
            let key = id.to_string();
            let value = serde_json::to_string_pretty(&as_strings[&key])?;
            let value = value.replace('\n', "\n  ");
            if i > 0 {
                w.write_all(b",")?;
            }
            write!(w, "\n  \"{key}\": {value}")?;
        }
        w.write_all(b"\n}\n")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_extra_fields_and_numeric_order() {
        let text = r#"{"10": {"title": "B", "description": "", "brand": "X", "categories": ""},
                      "2": {"title": "A"}}"#;
        let items = parse_items(text, Path::new("i.json")).unwrap();
        assert_eq!(items.keys().copied().collect::<Vec<_>>(), [2, 10]);
        assert_eq!(items[&10].extra["brand"], "X");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("i.json");
        write_items(&p, &items).unwrap();
        let written = std::fs::read_to_string(&p).unwrap();
        assert!(written.find("\"2\"").unwrap() < written.find("\"10\"").unwrap());
        assert_eq!(read_items(&p).unwrap(), items);
    }

    #[test]
    fn bad_files_are_named() {
        let e = parse_items("{\"x\": {\"title\": \"a\"}}", Path::new("i.json")).unwrap_err();
        assert!(e.to_string().contains("i.json: item key `x`"), "{e}");
        let e = parse_items("{\"1\": {}}", Path::new("i.json")).unwrap_err();
        assert!(e.to_string().contains("missing field `title`"), "{e}");
        let e = parse_items("{\n\"1\": [", Path::new("i.json")).unwrap_err();
        assert!(e.to_string().starts_with("i.json:2:"), "{e}");
    }
}
