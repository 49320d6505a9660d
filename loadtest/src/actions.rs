//! What a scenario does to the system while it is under load: publish new checkpoints (hot
//! swap) and run shell commands (stop and restart Redis, ...). Each action is recorded with
//! its time, so the report can mark it on the charts.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;

use crate::driver::Client;
use crate::scenario::{CommandSpec, SwapVia};

/// One action taken during the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// From the start of the run (s).
    pub t_s: f64,
    /// `swap` or `command`.
    pub kind: String,
    /// What was done (the checkpoint and how it was announced, or the command).
    pub what: String,
    /// Whether it worked.
    pub ok: bool,
    /// Details: the new version and how long until it served, or the command's output.
    pub detail: String,
    /// A swap's new version.
    pub version: Option<String>,
    /// A swap: from writing the checkpoint to the server reporting it as serving (ms).
    pub serving_after_ms: Option<f64>,
}

/// Where and how to publish checkpoints.
#[derive(Debug, Clone)]
pub struct SwapTarget {
    /// The server's `--model-dir` (a directory of checkpoints).
    pub model_dir: PathBuf,
    /// The checkpoint whose weights every published checkpoint carries.
    pub source: PathBuf,
    /// Bearer token of `/admin/reload`.
    pub admin_token: Option<String>,
}

/// Longest wait for a published checkpoint to serve.
const SWAP_WAIT: Duration = Duration::from_secs(30);

/// Publish a new checkpoint every `every` (from `run_start`) until `until`, announced as `via`
/// says. Every checkpoint is written with the project's checkpoint writer (atomically, with a
/// fresh version), then the server's `/v1/model` is polled until it serves that version.
pub async fn hot_swaps(
    client: Client,
    target: SwapTarget,
    every: Duration,
    via: SwapVia,
    run_start: Instant,
    until: Instant,
) -> anyhow::Result<Vec<ActionRecord>> {
    let src = target.source.clone();
    let ck = tokio::task::spawn_blocking(move || {
        let device = sidrec::device::parse_device("cpu")?;
        sidrec::checkpoint::Checkpoint::load(&src, &device, None)
    })
    .await??;
    let ck = Arc::new(ck);
    let mut out = Vec::new();
    let mut n = 0u32;
    loop {
        let at = run_start + every * (n + 1);
        if at >= until {
            break;
        }
        tokio::time::sleep_until(at).await;
        let how = match (via, n % 2) {
            (SwapVia::Directory, _) | (SwapVia::Alternate, 0) => SwapVia::Directory,
            _ => SwapVia::Admin,
        };
        out.push(publish(&client, &target, &ck, n, how, run_start).await);
        n += 1;
    }
    Ok(out)
}

async fn publish(
    client: &Client,
    target: &SwapTarget,
    ck: &Arc<sidrec::checkpoint::Checkpoint>,
    n: u32,
    how: SwapVia,
    run_start: Instant,
) -> ActionRecord {
    let t0 = Instant::now();
    let dir = target.model_dir.join(format!(
        "loadtest-swap-{}-{n:03}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    ));
    let mut rec = ActionRecord {
        t_s: t0.duration_since(run_start).as_secs_f64(),
        kind: "swap".into(),
        what: format!(
            "{} via {}",
            dir.display(),
            if how == SwapVia::Admin {
                "/admin/reload"
            } else {
                "the model directory"
            }
        ),
        ..ActionRecord::default()
    };
    let (ck2, dir2) = (ck.clone(), dir.clone());
    let written = tokio::task::spawn_blocking(move || {
        sidrec::checkpoint::write(
            &dir2,
            &sidrec::checkpoint::NewCheckpoint {
                model: &ck2.model,
                tokenizer: &ck2.tokenizer,
                index: &ck2.index,
                items: &ck2.items,
                prompt_style: ck2.meta.prompt_style,
                stage: &ck2.meta.stage,
                collision_policy: &ck2.meta.collision_policy,
                data_fingerprint: ck2.meta.data_fingerprint.clone(),
                metrics: ck2.meta.metrics.clone(),
                score_mode: None,
                prompt_tokens: Default::default(),
                max_history: None,
                item_window: None,
                extra_files: Vec::new(),
            },
        )
    })
    .await;
    let meta = match written {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            rec.detail = format!("writing the checkpoint failed: {e}");
            return rec;
        }
        Err(e) => {
            rec.detail = format!("the writing task failed: {e}");
            return rec;
        }
    };
    rec.version = Some(meta.version.clone());
    let written_at = Instant::now();
    if how == SwapVia::Admin {
        // The server reads a relative path from its --model-dir, not from our working
        // directory: send the absolute path of what was just written.
        let path = std::path::absolute(&dir).unwrap_or_else(|_| dir.clone());
        let mut req = client
            .http()
            .post(client.url("admin/reload"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(json!({ "path": path }).to_string())
            .timeout(SWAP_WAIT);
        if let Some(t) = &target.admin_token {
            req = req.bearer_auth(t);
        }
        match req.send().await {
            // 409: the watcher is already loading it; the poll below sees it serve.
            Ok(r) if r.status().is_success() || r.status().as_u16() == 409 => {}
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                rec.detail = format!("/admin/reload answered {status}: {body}");
                return rec;
            }
            Err(e) => {
                rec.detail = format!("/admin/reload failed: {e}");
                return rec;
            }
        }
    }
    while written_at.elapsed() < SWAP_WAIT {
        let serving = async {
            let r = client
                .http()
                .get(client.url("v1/model"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .ok()?;
            let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.ok()?).ok()?;
            v["version"].as_str().map(str::to_owned)
        }
        .await;
        if serving.as_deref() == Some(meta.version.as_str()) {
            let ms = written_at.elapsed().as_secs_f64() * 1e3;
            rec.ok = true;
            rec.serving_after_ms = Some(ms);
            rec.detail = format!(
                "{} serving {ms:.0} ms after it was written (writing took {:.0} ms)",
                meta.version,
                written_at.duration_since(t0).as_secs_f64() * 1e3
            );
            return rec;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rec.detail = format!(
        "{} was not serving {} s after it was written",
        meta.version,
        SWAP_WAIT.as_secs()
    );
    rec
}

/// Run each command at its time (from `run_start`) with `sh -c`.
pub async fn commands(cmds: Vec<CommandSpec>, run_start: Instant) -> Vec<ActionRecord> {
    let mut cmds = cmds;
    cmds.sort_by_key(|c| c.at);
    let mut out = Vec::new();
    for c in cmds {
        tokio::time::sleep_until(run_start + c.at).await;
        let t_s = run_start.elapsed().as_secs_f64();
        let result = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&c.run)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await;
        let (ok, detail) = match result {
            Ok(o) => {
                let tail = |b: &[u8]| {
                    let s = String::from_utf8_lossy(b);
                    let s = s.trim();
                    let from = s.char_indices().rev().nth(299).map_or(0, |(i, _)| i);
                    s[from..].to_owned()
                };
                (
                    o.status.success(),
                    format!("{} {} {}", o.status, tail(&o.stdout), tail(&o.stderr))
                        .trim()
                        .to_owned(),
                )
            }
            Err(e) => (false, format!("could not start sh: {e}")),
        };
        out.push(ActionRecord {
            t_s,
            kind: "command".into(),
            what: c.run,
            ok,
            detail,
            ..ActionRecord::default()
        });
    }
    out
}
