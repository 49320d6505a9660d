//! Locating the reference dataset for tests and benchmarks.
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
