//! Info files (`info/<name>.txt`): one `SID<TAB>title<TAB>item_id` line per item.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::sid::{ItemId, Sid};

/// One line of an info file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoLine {
    /// The item's SID.
    pub sid: Sid,
    /// The item's title.
    pub title: String,
    /// The item id.
    pub item_id: ItemId,
}

/// Parse info-file text; `path` is used in messages.
pub fn parse_info(text: &str, path: &Path) -> Result<Vec<InfoLine>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let lineno = i as u64 + 1;
        if line.is_empty() {
            continue;
        }
        // Titles could in principle hold a TAB; the SID and id never do.
        let (Some((sid, rest)), true) = (line.split_once('\t'), line.matches('\t').count() >= 2)
        else {
            return Err(Error::parse(
                path,
                lineno,
                1,
                "expected `SID<TAB>title<TAB>item_id`",
            ));
        };
        let (title, id) = rest.rsplit_once('\t').unwrap_or((rest, ""));
        let sid: Sid = sid
            .parse()
            .map_err(|e| Error::parse(path, lineno, 1, format!("{e}")))?;
        let item_id: ItemId = id
            .trim()
            .parse()
            .map_err(|_| Error::parse(path, lineno, 3, format!("`{id}` is not an item id")))?;
        out.push(InfoLine {
            sid,
            title: title.to_string(),
            item_id,
        });
    }
    Ok(out)
}

/// Read an info file.
pub fn read_info(path: impl AsRef<Path>) -> Result<Vec<InfoLine>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_info(&text, path)
}

/// Write an info file atomically.
pub fn write_info(path: impl AsRef<Path>, lines: &[InfoLine]) -> Result<()> {
    crate::io::write_atomic(path.as_ref(), |w| {
        for l in lines {
            writeln!(w, "{}\t{}\t{}", l.sid, l.title, l.item_id)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_errors() {
        let lines = parse_info("<a_1><b_2><c_3>\tA\tB title\t7\n", Path::new("i.txt")).unwrap();
        assert_eq!(lines[0].title, "A\tB title");
        assert_eq!(lines[0].item_id, 7);
        let e = parse_info("<a_1><b_2>\tx\n", Path::new("i.txt")).unwrap_err();
        assert!(e.to_string().starts_with("i.txt:1:1:"), "{e}");
        let e = parse_info("ok\n<a_1>\tx\tseven\n", Path::new("i.txt")).unwrap_err();
        assert!(e.to_string().starts_with("i.txt:1:1"), "{e}");
        let e = parse_info("<a_1>\tx\tseven\n", Path::new("i.txt")).unwrap_err();
        assert!(e.to_string().starts_with("i.txt:1:3:"), "{e}");
    }
}
