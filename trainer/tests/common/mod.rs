//! Helpers shared by the trainer's end-to-end tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `sidrec-trainer` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_sidrec-trainer");

/// Run `sidrec-trainer args` and fail the test, with its stderr, unless it succeeds.
pub fn ok(args: &[&str]) -> Output {
    let o = Command::new(BIN).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Run `sidrec-trainer args` and kill it as soon as its first `last/` save (`run/last/train-state.json`)
/// exists: a run interrupted mid-way, for the `--resume` tests.
pub fn kill_after_first_save(args: &[&str], run: &Path) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let state = run.join("last/train-state.json");
    let start = Instant::now();
    while !state.is_file() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no save appeared"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
