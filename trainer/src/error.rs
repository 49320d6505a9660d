//! The trainer's one error type, and its mapping to process exit codes.

use std::path::{Path, PathBuf};

/// Result alias for the trainer.
pub type Result<T, E = TrainerError> = std::result::Result<T, E>;

/// Everything a `sidrec-trainer` command can fail with. Messages name the file (and line, where
/// one is known) so that a user can go straight to the problem.
#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    /// An error from the `sidrec` library (its messages already name files and lines).
    #[error(transparent)]
    Data(#[from] sidrec::Error),
    /// A file could not be opened, read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A line of an input file is malformed.
    #[error("{}:{line}: {message}", path.display())]
    Parse {
        /// The file involved.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// The inputs are well-formed but disagree with each other (e.g. a CSV SID differs from the
    /// index). `details` lists the first problems, each starting with `file:line:`.
    #[error("{count} inconsistencies found; first {}:\n{}", details.len(), details.join("\n"))]
    Inconsistent {
        /// How many problems were found in all.
        count: usize,
        /// The first few, one per line.
        details: Vec<String>,
    },
    /// Arguments or inputs that cannot be used (missing files, empty results, ...).
    #[error("{0}")]
    Invalid(String),
}

impl TrainerError {
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        TrainerError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A malformed line `line` (1-based) of `path`.
    pub fn parse(path: impl AsRef<Path>, line: u64, message: impl Into<String>) -> Self {
        TrainerError::Parse {
            path: path.as_ref().to_path_buf(),
            line,
            message: message.into(),
        }
    }

    /// The process exit code for this error: 1 unusable input or inconsistent data, 3 I/O,
    /// 4 a malformed file. (Command-line usage errors exit with clap's 2.)
    pub fn exit_code(&self) -> u8 {
        match self {
            TrainerError::Io { .. } | TrainerError::Data(sidrec::Error::Io { .. }) => 3,
            TrainerError::Parse { .. } | TrainerError::Data(sidrec::Error::Parse { .. }) => 4,
            _ => 1,
        }
    }
}

impl From<candle_core::Error> for TrainerError {
    fn from(e: candle_core::Error) -> Self {
        TrainerError::Data(sidrec::Error::Candle(e))
    }
}
