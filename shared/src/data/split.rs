//! MiniOneRec CSV splits: one row per (history, next item) sample.
//!
//! Columns, in this order: `user_id,history_item_title,item_title,history_item_id,item_id,
//! history_item_sid,item_sid`; the list columns are Python list literals (see [`super::pylit`]).

use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::pylit;
use crate::error::{Error, Result};
use crate::sid::ItemId;

/// The header MiniOneRec writes, in order.
pub const COLUMNS: [&str; 7] = [
    "user_id",
    "history_item_title",
    "item_title",
    "history_item_id",
    "item_id",
    "history_item_sid",
    "item_sid",
];

/// One sample: a user's recent items (oldest first) and the item that came next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InteractionRow {
    /// User identifier as written (MiniOneRec prefixes `A`).
    pub user_id: String,
    /// Titles of the history items.
    pub history_item_title: Vec<String>,
    /// Title of the target item.
    pub item_title: String,
    /// History item ids, oldest first.
    pub history_item_id: Vec<ItemId>,
    /// Target item id.
    pub item_id: ItemId,
    /// SID strings of the history items (may be shorter than the ids if some had no SID).
    pub history_item_sid: Vec<String>,
    /// SID string of the target.
    pub item_sid: String,
}

fn field_err(path: &Path, line: u64, col: usize, msg: impl std::fmt::Display) -> Error {
    Error::parse(
        path,
        line,
        col as u64 + 1,
        format!("column `{}`: {msg}", COLUMNS[col]),
    )
}

fn parse_id(path: &Path, line: u64, col: usize, v: i64) -> Result<ItemId> {
    ItemId::try_from(v).map_err(|_| field_err(path, line, col, format!("item id {v} out of range")))
}

/// Parse a split from any reader; `path` is used in error messages only.
pub fn read_split_from(reader: impl Read, path: &Path) -> Result<Vec<InteractionRow>> {
    Ok(read_split_numbered_from(reader, path)?
        .into_iter()
        .map(|(_, row)| row)
        .collect())
}

/// Like [`read_split_from`], with each row's 1-based starting line number (for messages).
pub fn read_split_numbered_from(
    reader: impl Read,
    path: &Path,
) -> Result<Vec<(u64, InteractionRow)>> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(reader);
    let csv_err = |e: csv::Error| {
        let line = e.position().map_or(0, |p| p.line());
        Error::parse(path, line, 1, e.to_string())
    };
    let headers = rdr.headers().map_err(csv_err)?.clone();
    if headers.iter().ne(COLUMNS.iter().copied()) {
        return Err(Error::parse(
            path,
            1,
            1,
            format!(
                "expected header `{}`, found `{}`",
                COLUMNS.join(","),
                headers.iter().collect::<Vec<_>>().join(",")
            ),
        ));
    }
    let mut rows = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(csv_err(e)),
        }
        let line = record.position().map_or(0, |p| p.line());
        let f = |i: usize| &record[i];
        let strs = |i: usize| pylit::parse_str_list(f(i)).map_err(|e| field_err(path, line, i, e));
        let history_ids = pylit::parse_int_list(f(3))
            .map_err(|e| field_err(path, line, 3, e))?
            .into_iter()
            .map(|v| parse_id(path, line, 3, v))
            .collect::<Result<Vec<_>>>()?;
        let item_id: i64 = f(4)
            .trim()
            .parse()
            .map_err(|_| field_err(path, line, 4, format!("`{}` is not an integer", f(4))))?;
        let row = InteractionRow {
            user_id: f(0).to_string(),
            history_item_title: strs(1)?,
            item_title: f(2).to_string(),
            history_item_id: history_ids,
            item_id: parse_id(path, line, 4, item_id)?,
            history_item_sid: strs(5)?,
            item_sid: f(6).to_string(),
        };
        if row.history_item_title.len() != row.history_item_id.len() {
            return Err(field_err(
                path,
                line,
                1,
                format!(
                    "{} titles for {} history item ids",
                    row.history_item_title.len(),
                    row.history_item_id.len()
                ),
            ));
        }
        rows.push((line, row));
    }
    Ok(rows)
}

/// Read a split CSV file.
pub fn read_split(path: impl AsRef<Path>) -> Result<Vec<InteractionRow>> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    read_split_from(std::io::BufReader::new(file), path)
}

/// Read a split CSV file with each row's 1-based starting line number.
pub fn read_split_numbered(path: impl AsRef<Path>) -> Result<Vec<(u64, InteractionRow)>> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    read_split_numbered_from(std::io::BufReader::new(file), path)
}

/// Write rows as pandas' `to_csv(index=False)` does (minimal quoting, `\n` line ends).
pub fn write_split_to(writer: impl Write, rows: &[InteractionRow]) -> std::io::Result<()> {
    let mut w = csv::WriterBuilder::new()
        .quote_style(csv::QuoteStyle::Necessary)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(writer);
    let map = |e: csv::Error| std::io::Error::other(e.to_string());
    w.write_record(COLUMNS).map_err(map)?;
    for r in rows {
        w.write_record([
            r.user_id.as_str(),
            &pylit::repr_str_list(&r.history_item_title),
            &r.item_title,
            &pylit::repr_int_list(&r.history_item_id),
            &r.item_id.to_string(),
            &pylit::repr_str_list(&r.history_item_sid),
            &r.item_sid,
        ])
        .map_err(map)?;
    }
    w.flush()
}

/// Write a split CSV file atomically.
pub fn write_split(path: impl AsRef<Path>, rows: &[InteractionRow]) -> Result<()> {
    crate::io::write_atomic(path.as_ref(), |w| write_split_to(w, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "user_id,history_item_title,item_title,history_item_id,item_id,history_item_sid,item_sid\n\
A1,['Kit'],\"Dap 08648, Clear\",[3437],642,['<a_224><b_38><c_1>'],<a_244><b_35><c_73>\n\
A1,\"['Kit', \"\"O'Brien \\\\ Sons\"\"]\",Nail,\"[3437, 642]\",2520,\"['<a_224><b_38><c_1>', '<a_244><b_35><c_73>']\",<a_42><b_133><c_2>\n";

    #[test]
    fn parses_and_rewrites_byte_identically() {
        let rows = read_split_from(SAMPLE.as_bytes(), Path::new("s.csv")).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].history_item_title, ["Kit", "O'Brien \\ Sons"]);
        assert_eq!(rows[1].history_item_id, [3437, 642]);
        assert_eq!(rows[0].item_title, "Dap 08648, Clear");
        let mut out = Vec::new();
        write_split_to(&mut out, &rows).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), SAMPLE);
    }

    #[test]
    fn errors_name_line_and_column() {
        let bad = SAMPLE.replace("\"[3437, 642]\"", "\"[3437, x]\"");
        let err = read_split_from(bad.as_bytes(), Path::new("s.csv"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("s.csv:3:4: column `history_item_id`"),
            "{err}"
        );
        let bad = SAMPLE.replace(",642,", ",-5,");
        let err = read_split_from(bad.as_bytes(), Path::new("s.csv"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.csv:2:5:"), "{err}");
        let err = read_split_from("a,b\n1,2\n".as_bytes(), Path::new("h.csv"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("h.csv:1:1: expected header"), "{err}");
        let short = "user_id,history_item_title,item_title,history_item_id,item_id,history_item_sid,item_sid\nA1,[]\n";
        let err = read_split_from(short.as_bytes(), Path::new("s.csv"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.csv:2:"), "{err}");
    }
}
