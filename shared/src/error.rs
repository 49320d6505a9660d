//! The library's one error type.

use std::path::PathBuf;

/// Result alias for the `sidrec` library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong inside the library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file's content is malformed at a known place (1-based line and column).
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse {
        /// The file involved.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// 1-based column (field number for CSV, character for text).
        column: u64,
        /// What is wrong.
        message: String,
    },
    /// A SID or SID token is malformed.
    #[error("invalid SID: {0}")]
    Sid(String),
    /// An item has no SID in the index a prompt is built with.
    #[error("item {0} has no SID in the index")]
    NoSid(crate::sid::ItemId),
    /// Input that is well-formed but inconsistent or unusable.
    #[error("{0}")]
    Invalid(String),
    /// A tensor operation failed.
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

impl Error {
    /// Wrap an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A parse error at `line`/`column` of `path`.
    pub fn parse(
        path: impl Into<PathBuf>,
        line: u64,
        column: u64,
        message: impl Into<String>,
    ) -> Self {
        Error::Parse {
            path: path.into(),
            line,
            column,
            message: message.into(),
        }
    }
}
