//! Locating the reference dataset and the text encoder for tests and benchmarks.
//!
//! The Industrial_and_Scientific split lives outside the repository, in the read-only
//! `../shared/data/industrial` folder beside the checkout. Tests that need it call
//! [`industrial_dir`]: when the folder is missing they are skipped with a message, unless
//! `SIDREC_REQUIRE_SHARED=1` (set by `.ci/run`), in which case they fail.

use std::path::PathBuf;

/// Environment variable that overrides the location of the `shared` folder.
pub const SHARED_DIR_ENV: &str = "SIDREC_SHARED_DIR";
/// Environment variable that turns a missing `shared` folder into a test failure.
pub const REQUIRE_SHARED_ENV: &str = "SIDREC_REQUIRE_SHARED";

/// The `shared` folder beside the repository (or `$SIDREC_SHARED_DIR`), if it exists.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os(SHARED_DIR_ENV) {
        Some(d) => PathBuf::from(d),
        // This crate sits at <repo>/shared, so the folder beside the repo is ../../shared.
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
    };
    dir.is_dir().then(|| dir.canonicalize().unwrap_or(dir))
}

/// `shared/data/industrial`, or `None` (after printing why) when the test should be skipped.
///
/// # Panics
/// When the folder is missing and `SIDREC_REQUIRE_SHARED=1`.
pub fn industrial_dir() -> Option<PathBuf> {
    let dir = shared_dir().map(|d| d.join("data/industrial"));
    match dir {
        Some(d) if d.is_dir() => Some(d),
        _ => {
            let required = std::env::var(REQUIRE_SHARED_ENV).is_ok_and(|v| v == "1");
            assert!(
                !required,
                "{REQUIRE_SHARED_ENV}=1 but ../shared/data/industrial is missing \
                 (set {SHARED_DIR_ENV} to the shared folder)"
            );
            eprintln!("skipped: ../shared/data/industrial not found (set {SHARED_DIR_ENV})");
            None
        }
    }
}

/// Environment variable naming the text-encoder directory (set by `scripts/test.sh`).
pub const ENCODER_DIR_ENV: &str = "SIDREC_ENCODER_DIR";

/// The all-MiniLM-L6-v2 encoder directory for tests: `$SIDREC_ENCODER_DIR`, else
/// `<repo>/.cache/encoders/all-MiniLM-L6-v2` (where `scripts/fetch-encoder.sh` puts it), if it
/// holds every file of [`crate::embed::ENCODER_FILES`]; otherwise `None` after printing why.
///
/// # Panics
/// When no encoder is found and `SIDREC_REQUIRE_SHARED=1`.
pub fn encoder_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os(ENCODER_DIR_ENV) {
        Some(d) => PathBuf::from(d),
        None => {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/encoders/all-MiniLM-L6-v2")
        }
    };
    let complete = crate::embed::ENCODER_FILES
        .iter()
        .all(|f| dir.join(f).is_file());
    if complete {
        return Some(dir);
    }
    let required = std::env::var(REQUIRE_SHARED_ENV).is_ok_and(|v| v == "1");
    assert!(
        !required,
        "{REQUIRE_SHARED_ENV}=1 but no text encoder in {} (run scripts/fetch-encoder.sh or set \
         {ENCODER_DIR_ENV})",
        dir.display()
    );
    eprintln!(
        "skipped: no text encoder in {} (run scripts/fetch-encoder.sh or set {ENCODER_DIR_ENV})",
        dir.display()
    );
    None
}
