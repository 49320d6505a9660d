//! SID index files (`.index.json`): `{"<item id>": ["<a_12>", "<b_7>", "<c_200>"]}`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::sid::{ItemId, Sid, SidIndex};

/// Parse `.index.json` text; `path` is used in messages.
pub fn parse_index(text: &str, path: &Path) -> Result<SidIndex> {
    let raw: BTreeMap<String, Vec<String>> =
        crate::io::parse_json(path, text.as_bytes(), "a SID index")?;
    let mut index = SidIndex::new();
    for (key, tokens) in raw {
        let id: ItemId = key.parse().map_err(|_| {
            Error::Invalid(format!(
                "{}: item key `{key}` is not a non-negative integer id",
                path.display()
            ))
        })?;
        let sid = Sid::from_tokens(&tokens)
            .map_err(|e| Error::Invalid(format!("{}: item `{key}`: {e}", path.display())))?;
        index.insert(id, sid);
    }
    Ok(index)
}

/// Read an `.index.json` file.
pub fn read_index(path: impl AsRef<Path>) -> Result<SidIndex> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_index(&text, path)
}

/// Write an `.index.json` file atomically, one line, as Python's `json.dump` does.
pub fn write_index(path: impl AsRef<Path>, index: &SidIndex) -> Result<()> {
    crate::io::write_atomic(path.as_ref(), |w| {
        w.write_all(b"{")?;
        for (i, (id, sid)) in index.iter().enumerate() {
            if i > 0 {
                w.write_all(b", ")?;
            }
            let toks: Vec<String> = sid.tokens().map(|t| format!("\"{t}\"")).collect();
            write!(w, "\"{id}\": [{}]", toks.join(", "))?;
        }
        w.write_all(b"}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let text =
            r#"{"1": ["<a_1>", "<b_2>", "<c_3>"], "0": ["<a_0>", "<b_0>", "<c_0>", "<d_1>"]}"#;
        let idx = parse_index(text, Path::new("x.index.json")).unwrap();
        assert_eq!(idx.get(0).unwrap().to_string(), "<a_0><b_0><c_0><d_1>");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.index.json");
        write_index(&p, &idx).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            r#"{"0": ["<a_0>", "<b_0>", "<c_0>", "<d_1>"], "1": ["<a_1>", "<b_2>", "<c_3>"]}"#
        );
        assert_eq!(read_index(&p).unwrap(), idx);
        let e = parse_index(r#"{"7": ["<a_1>", "<c_2>"]}"#, Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("item `7`"), "{e}");
        let e = parse_index(r#"{"7": []}"#, Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("item `7`"), "{e}");
    }
}
