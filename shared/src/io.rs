//! Crash-safe file writing: nothing already stored is lost if a write is interrupted.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Read the JSON file `path` as `what` (e.g. "a checkpoint manifest"): a read error names the
/// file, a parse error also its line and column.
pub fn read_json<T: DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_json(path, &bytes, what)
}

/// Parse JSON `bytes` read from `path` as `what` (see [`read_json`]).
pub fn parse_json<T: DeserializeOwned>(path: &Path, bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::parse(
            path,
            e.line() as u64,
            e.column() as u64,
            format!("not {what}: {e}"),
        )
    })
}

/// A temp path next to `path`, unique to this process and call.
fn temp_sibling(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// fsync a directory so that a rename inside it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Write `path` through `fill`: into a temp file beside it, fsync'd, then renamed over `path`.
/// Readers see the old content or the new, never a torn file.
pub fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new(""));
    if !parent.as_os_str().is_empty() {
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let tmp = temp_sibling(path);
    let result = (|| {
        let file = File::create(&tmp)?;
        let mut w = BufWriter::new(file);
        fill(&mut w)?;
        w.flush()?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    sync_dir(parent)
}

/// Write `bytes` to `path` atomically.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |w| w.write_all(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_keeps_old_content_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        write_bytes_atomic(&p, b"old").unwrap();
        let err = write_atomic(&p, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("disk on fire"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk on fire"));
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        write_bytes_atomic(&p, b"new").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
    }

    #[test]
    fn json_errors_name_the_file_and_where_it_breaks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.json");
        let missing = read_json::<Vec<u32>>(&p, "a list").unwrap_err();
        assert!(
            matches!(&missing, Error::Io { path, .. } if path == &p),
            "{missing}"
        );
        fs::write(&p, "[1,\n 2,\n x]").unwrap();
        match read_json::<Vec<u32>>(&p, "a list").unwrap_err() {
            Error::Parse {
                path,
                line,
                column,
                message,
            } => {
                assert_eq!((path.as_path(), line, column), (p.as_path(), 3, 2));
                assert!(message.starts_with("not a list: "), "{message}");
            }
            e => panic!("expected a parse error, got {e}"),
        }
        fs::write(&p, "[1, 2]").unwrap();
        assert_eq!(read_json::<Vec<u32>>(&p, "a list").unwrap(), vec![1, 2]);
    }
}
