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

/// Run `sidrec-trainer args`, fail the test if it succeeds, and return its stderr.
pub fn fails(args: &[&str]) -> String {
    let o = Command::new(BIN).args(args).output().unwrap();
    assert!(!o.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A JSON file the test expects to exist and parse.
pub fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
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

/// Run `sidrec-trainer args`, let its first `last/` save complete, then SIGKILL it the moment
/// a later save's staging directory (`.last.tmp-…` or `.best.tmp-…`, see
/// `sidrec::checkpoint::write`) appears
/// in `run`: a crash in the middle of writing a checkpoint. Returns the staging directories
/// the kill left behind (empty when the save finished between seeing it and the kill).
pub fn kill_during_a_later_save(args: &[&str], run: &Path) -> Vec<String> {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let state = run.join("last/train-state.json");
    while !state.is_file() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no save appeared"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let staging = |run: &Path| -> Vec<String> {
        std::fs::read_dir(run)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(".last.tmp-") || n.starts_with(".best.tmp-"))
                    .collect()
            })
            .unwrap_or_default()
    };
    // Polled without sleeping: a tiny model's save takes milliseconds.
    while staging(run).is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run finished without another save"
        );
        assert!(start.elapsed() < Duration::from_secs(300), "no second save");
        std::thread::yield_now();
    }
    child.kill().unwrap();
    child.wait().unwrap();
    staging(run)
}
