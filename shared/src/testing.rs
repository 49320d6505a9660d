//! Locating the reference dataset and the text encoder for tests and benchmarks, and the
//! fixtures and tensor comparisons the tests of every crate share.
//!
//! The Industrial_and_Scientific split lives outside the repository, in the read-only
//! `../shared/data/industrial` folder beside the checkout. Tests that need it call
//! [`industrial_dir`]: when the folder is missing they are skipped with a message, unless
//! `SIDREC_REQUIRE_SHARED=1` (set by `.ci/run`), in which case they fail.
//!
//! Every skip goes through [`skip`], so that `scripts/test.sh` can report how many of the tests
//! cargo counts as passed did not really run, and why.

use std::io::Write;
use std::path::PathBuf;

use candle_core::Tensor;

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

/// Environment variable naming a file to which [`skip`] appends one line per skipped test
/// (`scripts/test.sh` sets it and prints the count and reasons after cargo's summary).
pub const SKIP_LOG_ENV: &str = "SIDREC_SKIP_LOG";

/// Record that the running test cannot run for `reason` (a missing prerequisite) and should
/// return early: prints `SKIP <test>: <reason>` to stderr and appends `<test>\t<reason>` to
/// `$SIDREC_SKIP_LOG` when set.
///
/// # Panics
/// When `SIDREC_REQUIRE_SHARED=1`: there every prerequisite must be present.
pub fn skip(reason: &str) {
    let required = std::env::var(REQUIRE_SHARED_ENV).is_ok_and(|v| v == "1");
    assert!(!required, "{REQUIRE_SHARED_ENV}=1 but {reason}");
    skip_optional(reason);
}

/// [`skip`] for a prerequisite that CI does not provide either (e.g. a browser): recorded and
/// counted the same way, but never a failure.
pub fn skip_optional(reason: &str) {
    let test = current_test();
    eprintln!("SKIP {test}: {reason}");
    if let Some(log) = std::env::var_os(SKIP_LOG_ENV) {
        // One short write per line with O_APPEND: lines from parallel tests and test binaries
        // do not interleave.
        let line = format!("{test}\t{}\n", reason.replace(['\t', '\n'], " "));
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            eprintln!(
                "cannot append to {SKIP_LOG_ENV}={}: {e}",
                log.to_string_lossy()
            );
        }
    }
}

/// `<test binary>::<test>`: libtest names each test's thread after the test; the binary's
/// file name loses cargo's `-<hash>` suffix.
fn current_test() -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| match s.rsplit_once('-') {
            Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_owned(),
            _ => s,
        })
        .unwrap_or_else(|| "?".into());
    let thread = std::thread::current();
    match thread.name() {
        Some(name) if name != "main" => format!("{binary}::{name}"),
        _ => binary,
    }
}

/// `shared/data/industrial`, or `None` (after [`skip`]) when the test should be skipped.
///
/// # Panics
/// When the folder is missing and `SIDREC_REQUIRE_SHARED=1`.
pub fn industrial_dir() -> Option<PathBuf> {
    let dir = shared_dir().map(|d| d.join("data/industrial"));
    match dir {
        Some(d) if d.is_dir() => Some(d),
        _ => {
            skip(&format!(
                "../shared/data/industrial not found (set {SHARED_DIR_ENV} to the shared folder)"
            ));
            None
        }
    }
}

/// Environment variable naming the text-encoder directory (set by `scripts/test.sh`).
pub const ENCODER_DIR_ENV: &str = "SIDREC_ENCODER_DIR";

/// The all-MiniLM-L6-v2 encoder directory for tests: `$SIDREC_ENCODER_DIR`, else
/// `<repo>/.cache/encoders/all-MiniLM-L6-v2` (where `scripts/fetch-encoder.sh` puts it), if it
/// holds every file of [`crate::embed::ENCODER_FILES`]; otherwise `None` after [`skip`].
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
    skip(&format!(
        "no text encoder in {} (run scripts/fetch-encoder.sh or set {ENCODER_DIR_ENV})",
        dir.display()
    ));
    None
}

/// Largest absolute element of `t` (as f32). Panics on a tensor error: for tests.
pub fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .and_then(|a| a.flatten_all())
        .and_then(|a| a.max(0))
        .and_then(|a| a.to_dtype(candle_core::DType::F32))
        .and_then(|a| a.to_scalar::<f32>())
        .expect("max |t| of a tensor")
}

/// Largest `|a - b|` over two tensors of the same shape. Panics otherwise: for tests.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    max_abs(&(a - b).expect("a - b"))
}

/// A train row of one user (`u`) by item ids only: `history` → `target`, no titles or SIDs.
pub fn interaction_row(
    history: &[crate::ItemId],
    target: crate::ItemId,
) -> crate::data::InteractionRow {
    crate::data::InteractionRow {
        user_id: "u".into(),
        history_item_title: vec![],
        item_title: String::new(),
        history_item_id: history.to_vec(),
        item_id: target,
        history_item_sid: vec![],
        item_sid: String::new(),
    }
}
