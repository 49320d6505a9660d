//! Hot swap: pick the checkpoint to serve, load and verify it beside the serving one, swap.
//!
//! `--model-dir` is either one checkpoint (it holds `sidrec.json`) or a directory of
//! checkpoints; then the newest complete one is served: the subdirectory (names starting with
//! `.` are ignored, so writers can stage there) with a `sidrec.json`, newest by the
//! `created_unix` it records (the file's modification time when it cannot be read), ties broken
//! by the larger directory name. The watcher polls every `--watch-interval`; when the newest
//! checkpoint is not the serving one and has not already failed, it is loaded. A checkpoint that
//! fails (hash mismatch, bad files, a verification decode that fails) leaves the old engine
//! serving; the failure is logged, counted (`sidrec_reloads_total{result="failed"}`) and shown
//! as `last_reload_error` by `GET /v1/model` until a reload succeeds.
//!
//! `/admin/reload` may name another directory, which must resolve (symbolic links followed)
//! inside `--model-dir` or one of the `--reload-allow` directories: anything else, and any path
//! that does not exist, gets one and the same error. Paths shown to clients (`GET /v1/model`,
//! reload errors) are relative to the allowed directory that holds them, named by its last
//! component, never absolute.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde::Serialize;

use super::{Engine, EngineError};
use crate::state::{AppState, ModelOptions};

/// A complete checkpoint found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its directory.
    pub dir: PathBuf,
    /// The version its `sidrec.json` records, or the file's modification time when unreadable.
    pub stamp: String,
    created: u64,
}

fn candidate(dir: &Path) -> Option<Candidate> {
    let meta_path = dir.join(sidrec::checkpoint::META_FILE);
    let fs_meta = std::fs::metadata(&meta_path).ok()?;
    if !fs_meta.is_file() {
        return None;
    }
    let mtime = fs_meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let parsed = std::fs::read(&meta_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    let version = parsed
        .as_ref()
        .and_then(|v| v.get("version")?.as_str().map(str::to_owned));
    let created = parsed
        .as_ref()
        .and_then(|v| v.get("created_unix")?.as_u64())
        .unwrap_or(mtime);
    Some(Candidate {
        dir: dir.to_path_buf(),
        stamp: version.unwrap_or_else(|| format!("mtime-{mtime}")),
        created,
    })
}

/// The checkpoint `dir` designates: itself when complete, else its newest complete
/// subdirectory; `None` when there is none.
pub fn resolve(dir: &Path) -> std::io::Result<Option<Candidate>> {
    if let Some(c) = candidate(dir) {
        return Ok(Some(c));
    }
    let mut best: Option<Candidate> = None;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if let Some(c) = candidate(&path) {
            let newer = best
                .as_ref()
                .is_none_or(|b| (c.created, &c.dir) > (b.created, &b.dir));
            if newer {
                best = Some(c);
            }
        }
    }
    Ok(best)
}

/// Body of a successful `/admin/reload`.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadOutcome {
    /// The version now serving.
    pub version: String,
    /// The version served before.
    pub previous_version: Option<String>,
    /// Time to load and verify, in milliseconds.
    pub loaded_ms: f64,
}

/// The directories reloads may read: `--model-dir` and the `--reload-allow` ones.
fn roots(opts: &ModelOptions) -> Vec<PathBuf> {
    std::iter::once(&opts.dir)
        .chain(&opts.reload_allow)
        .cloned()
        .collect()
}

/// The directory `requested` names (relative paths are taken from `--model-dir`), when it
/// exists inside one of `roots`; symbolic links are followed first, so none leads out.
pub fn confine(roots: &[PathBuf], base: &Path, requested: &Path) -> Result<PathBuf, EngineError> {
    let joined = base.join(requested);
    let real = joined
        .canonicalize()
        .map_err(|_| EngineError::ReloadPathRefused)?;
    let inside = roots.iter().any(|root| {
        root.canonicalize()
            .is_ok_and(|r| real == r || real.starts_with(&r))
    });
    if inside && real.is_dir() {
        Ok(real)
    } else {
        Err(EngineError::ReloadPathRefused)
    }
}

/// `path` as shown to clients: relative to the root holding it, prefixed by the root's last
/// component (`models/v3`); `checkpoint` for a path under none of them.
pub fn public_path(roots: &[PathBuf], path: &Path) -> String {
    for root in roots {
        let forms = [Some(root.clone()), root.canonicalize().ok()];
        for form in forms.iter().flatten() {
            if let Ok(rel) = path.strip_prefix(form) {
                let name = form
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                return Path::new(&name).join(rel).display().to_string();
            }
        }
    }
    "checkpoint".into()
}

/// `message` with every allowed root (as configured and with links resolved) replaced by its
/// last component, so that errors name files without revealing absolute paths.
pub fn redact(roots: &[PathBuf], message: &str) -> String {
    let mut forms: Vec<(String, String)> = Vec::new();
    for root in roots {
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for form in [Some(root.clone()), root.canonicalize().ok()]
            .into_iter()
            .flatten()
        {
            forms.push((form.display().to_string(), name.clone()));
        }
    }
    // Longest first, so a root inside another is replaced whole.
    forms.sort_by_key(|(f, _)| std::cmp::Reverse(f.len()));
    let mut out = message.to_owned();
    for (form, name) in forms {
        if form.len() > 1 {
            out = out.replace(&form, &name);
        }
    }
    out
}

/// Load the checkpoint `path` designates (default: `--model-dir`; otherwise confined to the
/// allowed directories), verify it with a real decode and swap it in. The caller holds the
/// reload lock.
pub async fn reload_locked(
    state: &AppState,
    path: Option<PathBuf>,
) -> Result<ReloadOutcome, EngineError> {
    let Some(opts) = state.options().model.clone() else {
        return Err(EngineError::NotLoaded);
    };
    let roots = roots(&opts);
    let dir = match path {
        None => opts.dir.clone(),
        Some(p) => {
            let dir = confine(&roots, &opts.dir, &p)?;
            // A directory that holds no checkpoint is "not found" too.
            if !matches!(resolve(&dir), Ok(Some(_))) {
                return Err(EngineError::ReloadPathRefused);
            }
            dir
        }
    };
    let cand = match resolve(&dir) {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Err(fail(
                state,
                &dir,
                "none".into(),
                format!(
                    "{}: no complete checkpoint (no sidrec.json)",
                    public_path(&roots, &dir)
                ),
            ))
        }
        Err(e) => {
            return Err(fail(
                state,
                &dir,
                "none".into(),
                format!("{}: {e}", public_path(&roots, &dir)),
            ))
        }
    };
    let start = Instant::now();
    let load_dir = cand.dir.clone();
    let name = public_path(&roots, &cand.dir);
    let warm = state.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        let engine = Engine::load(&load_dir, &name, &opts.device, opts.mode)?;
        engine.verify()?;
        if let Some(infer) = warm.infer() {
            infer.warm_up(&engine)?;
        }
        Ok::<_, sidrec::Error>(engine)
    })
    .await
    .map_err(|e| EngineError::CheckpointInvalid(format!("the loading task failed: {e}")))?;
    let engine = match loaded {
        Ok(e) => Arc::new(e),
        Err(e) => return Err(fail(state, &cand.dir, cand.stamp, e.to_string())),
    };
    let loaded_ms = start.elapsed().as_secs_f64() * 1e3;
    let version = engine.version().to_owned();
    let previous = state.set_engine(engine);
    state.set_reload_failure(None);
    state.metrics().reloads.with_label_values(&["ok"]).inc();
    let previous_version = previous.map(|p| p.version().to_owned());
    tracing::info!(
        version = %version,
        previous = previous_version.as_deref().unwrap_or("-"),
        checkpoint = %cand.dir.display(),
        loaded_ms,
        "checkpoint loaded, verified and swapped in"
    );
    Ok(ReloadOutcome {
        version,
        previous_version,
        loaded_ms,
    })
}

/// Log and record a failed reload; the recorded (public) message has the paths redacted.
fn fail(state: &AppState, dir: &Path, stamp: String, error: String) -> EngineError {
    tracing::error!(checkpoint = %dir.display(), "reload failed, previous checkpoint keeps serving: {error}");
    state.metrics().reloads.with_label_values(&["failed"]).inc();
    let public = match &state.options().model {
        Some(opts) => redact(&roots(opts), &error),
        None => error,
    };
    state.set_reload_failure(Some((dir.to_path_buf(), stamp, public.clone())));
    EngineError::CheckpointInvalid(public)
}

/// One watcher tick: reload when the newest checkpoint is neither serving nor already failed.
pub async fn check_once(state: &AppState) {
    let Some(opts) = state.options().model.clone() else {
        return;
    };
    let cand = match resolve(&opts.dir) {
        Ok(Some(c)) => c,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(dir = %opts.dir.display(), "cannot scan the model directory: {e}");
            return;
        }
    };
    let _guard = state.reload_lock().lock().await;
    if let Some(e) = state.engine() {
        if same_dir(&e.dir, &cand.dir) && e.version() == cand.stamp {
            return;
        }
    }
    if state.reload_status().last_failed == Some((cand.dir.clone(), cand.stamp.clone())) {
        return;
    }
    // The newest checkpoint of `--model-dir` itself, not a path to confine: a relative
    // `--model-dir` would otherwise be joined onto itself and refused. Failures are already
    // logged, counted and recorded by `reload_locked`.
    let _ = reload_locked(state, None).await;
}

/// Whether two paths name the same directory (one may be relative, the other canonical).
fn same_dir(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// Poll `--model-dir` every `interval` forever (the first check is immediate).
pub async fn watch(state: AppState, interval: Duration) {
    loop {
        check_once(&state).await;
        tokio::time::sleep(interval).await;
    }
}

/// Load the newest checkpoint of `--model-dir` unless it is already serving (a failed one is
/// retried: a reload request is the operator's way to say "try again").
async fn reload_newest(state: &AppState) {
    let Some(opts) = state.options().model.clone() else {
        return;
    };
    let _guard = state.reload_lock().lock().await;
    if let (Ok(Some(cand)), Some(e)) = (resolve(&opts.dir), state.engine()) {
        if same_dir(&e.dir, &cand.dir) && e.version() == cand.stamp {
            tracing::info!(version = %cand.stamp, "reload requested; the newest checkpoint is already serving");
            return;
        }
    }
    // Failures are already logged, counted and recorded by `reload_locked`.
    let _ = reload_locked(state, None).await;
}

/// Follow the Redis reload channel until it closes: every message loads the newest checkpoint
/// of `--model-dir` (as `POST /admin/reload` does; the payload is only logged), and so does
/// every resubscription after the first, since messages published while the subscription was
/// down are lost.
pub async fn follow_channel(
    state: AppState,
    mut events: tokio::sync::mpsc::Receiver<crate::store::ReloadEvent>,
) {
    use crate::store::ReloadEvent;
    let mut subscribed_before = false;
    while let Some(event) = events.recv().await {
        match event {
            ReloadEvent::Subscribed if !subscribed_before => subscribed_before = true,
            ReloadEvent::Subscribed => {
                tracing::info!("reload channel resubscribed; checking for a missed checkpoint");
                check_once(&state).await;
            }
            ReloadEvent::Message(payload) => {
                tracing::info!(%payload, "reload requested on the reload channel");
                reload_newest(&state).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_killed_writer_leaves_is_never_a_candidate() {
        let tmp = tempfile::tempdir().unwrap();
        let models = tmp.path();
        let meta = |dir: &Path, created: u64| {
            std::fs::create_dir_all(dir).unwrap();
            let v = serde_json::json!({"version": dir.file_name().unwrap().to_string_lossy(),
                "created_unix": created});
            std::fs::write(dir.join(sidrec::checkpoint::META_FILE), v.to_string()).unwrap();
        };
        meta(&models.join("v1"), 100);
        // `checkpoint::write` builds in `.NAME.tmp-PID-TIME` and renames when complete: a
        // writer killed before the rename leaves that (even with its sidrec.json written).
        meta(&models.join(".v2.tmp-4242-200"), 200);
        // A directory being filled by hand, without sidrec.json yet.
        std::fs::create_dir_all(models.join("v3")).unwrap();
        std::fs::write(models.join("v3").join("model.safetensors"), b"partial").unwrap();
        let c = resolve(models).unwrap().unwrap();
        assert_eq!(c.dir, models.join("v1"));
    }

    #[test]
    fn confinement_and_public_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let models = tmp.path().join("models");
        let other = tmp.path().join("other");
        let outside = tmp.path().join("outside");
        for d in [&models, &other, &outside] {
            std::fs::create_dir_all(d.join("v1")).unwrap();
        }
        let roots = vec![models.clone(), other.clone()];
        let ok = confine(&roots, &models, Path::new("v1")).unwrap();
        assert!(ok.ends_with("models/v1"));
        assert!(confine(&roots, &models, &other.join("v1")).is_ok());
        for bad in [
            outside.join("v1"),
            models.join("../outside/v1"),
            models.join("missing"),
            PathBuf::from("/"),
        ] {
            assert!(
                matches!(
                    confine(&roots, &models, &bad),
                    Err(EngineError::ReloadPathRefused)
                ),
                "{bad:?}"
            );
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&outside, models.join("link")).unwrap();
            assert!(confine(&roots, &models, Path::new("link/v1")).is_err());
        }
        assert_eq!(public_path(&roots, &ok), "models/v1");
        assert_eq!(public_path(&roots, &outside), "checkpoint");
        let msg = format!("{}/v1/model.safetensors: sha256 mismatch", models.display());
        let red = redact(&roots, &msg);
        assert_eq!(red, "models/v1/model.safetensors: sha256 mismatch");
        assert!(!red.contains(&tmp.path().display().to_string()));
    }
}
