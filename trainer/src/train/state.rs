//! A run's loop state: where it is (epoch, batch, step), its best validation so far, the files a
//! `last/` checkpoint carries for `--resume`, and `metrics.jsonl`.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::optim::AdamW;
use super::validate::Validation;
use crate::cli::BestBy;
use crate::error::{Result, TrainerError};

/// Where the loop is, saved beside the last checkpoint so that `--resume` can continue.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// Current epoch (0-based).
    pub epoch: usize,
    /// Micro-batches of the current epoch already consumed.
    pub batch: usize,
    /// Optimizer steps taken.
    pub step: usize,
    /// Best value so far of the figure that picks `best` (see `best_by`).
    pub best: Option<f64>,
    /// That figure (runs saved before it existed used NDCG@10).
    #[serde(default)]
    pub best_by: BestBy,
    /// Validations since the best one.
    pub bad_evals: usize,
    /// Set once training has finished (early stop or last epoch).
    pub done: bool,
}

impl TrainState {
    /// Where a run starts. Resuming: the loop state saved in `last_dir`, the optimizer state
    /// loaded into `opt`, and `metrics_path` cut back to the saved step; `None` when that run had
    /// already finished. Otherwise a fresh state, and a stale `metrics_path` removed.
    pub fn start(
        resuming: bool,
        best_by: BestBy,
        last_dir: &Path,
        metrics_path: &Path,
        opt: &mut AdamW,
    ) -> Result<Option<Self>> {
        if !resuming {
            if metrics_path.exists() {
                std::fs::remove_file(metrics_path)
                    .map_err(|e| TrainerError::io(metrics_path, e))?;
            }
            return Ok(Some(Self {
                best_by,
                ..Self::default()
            }));
        }
        let p = last_dir.join(STATE_FILE);
        let state: Self = sidrec::io::read_json(&p, "a training state file")?;
        if state.best_by != best_by {
            return Err(TrainerError::Invalid(format!(
                "{}: the run picks its best checkpoint by {}; resume it with that, not {}",
                p.display(),
                state.best_by.key(),
                best_by.key()
            )));
        }
        opt.load(&last_dir.join(OPTIM_FILE))?;
        eprintln!(
            "resuming at epoch {} batch {} (step {})",
            state.epoch, state.batch, state.step
        );
        if state.done {
            eprintln!("training had already finished; nothing to do");
            return Ok(None);
        }
        truncate_metrics(metrics_path, state.step)?;
        Ok(Some(state))
    }

    /// Book validation `v` as [`Self::record_validation`] does, then append its record to
    /// `metrics_path`, print it above the bar and redraw `out_dir/curves.svg`.
    pub fn log_validation(
        &mut self,
        v: &Validation,
        epoch: usize,
        metrics_path: &Path,
        out_dir: &Path,
        pb: &indicatif::ProgressBar,
    ) -> Result<(bool, serde_json::Value)> {
        let (improved, record) = self.record_validation(v, epoch);
        append_jsonl(metrics_path, &record)?;
        pb.println(format!("step {}: {}", self.step, v.summary(improved)));
        crate::plot::redraw_run(metrics_path, out_dir)?;
        Ok((improved, record))
    }

    /// The files a `last/` checkpoint carries for `--resume`, written in the same atomic
    /// checkpoint as the weights so that a kill never leaves them out of step: this loop state
    /// and the optimizer state.
    pub fn resume_files(&self, opt: &AdamW) -> Result<Vec<(String, Vec<u8>)>> {
        let text =
            serde_json::to_vec_pretty(self).map_err(|e| TrainerError::Invalid(e.to_string()))?;
        Ok(vec![
            (STATE_FILE.to_string(), text),
            (OPTIM_FILE.to_string(), opt.to_bytes()?),
        ])
    }

    /// Book validation `v` (best value of the `best_by` figure so far, validations since it)
    /// and return whether it improved on the best, with its `metrics.jsonl` record.
    pub fn record_validation(&mut self, v: &Validation, epoch: usize) -> (bool, serde_json::Value) {
        let value = match self.best_by {
            BestBy::Ndcg10 => v.ndcg10,
            BestBy::Loss => v.loss,
        };
        let improved = self.best.is_none_or(|b| match self.best_by {
            BestBy::Ndcg10 => value > b,
            BestBy::Loss => value < b,
        });
        if improved {
            self.best = Some(value);
            self.bad_evals = 0;
        } else {
            self.bad_evals += 1;
        }
        let record = serde_json::json!({"step": self.step, "epoch": epoch,
            "valid_rows": v.rows, "valid_hr10": v.hr10, "valid_ndcg10": v.ndcg10,
            "valid_loss": v.loss, "best": improved});
        (improved, record)
    }
}

/// File of the loop state inside a `last/` checkpoint.
pub const STATE_FILE: &str = "train-state.json";
/// File of the optimizer state inside a `last/` checkpoint.
pub const OPTIM_FILE: &str = "optimizer.safetensors";

/// Append one JSON line to `path`.
pub fn append_jsonl(path: &Path, value: &serde_json::Value) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| TrainerError::io(path, e))?;
    writeln!(f, "{value}").map_err(|e| TrainerError::io(path, e))
}

/// Drop metrics lines logged after `step` (by a run that was killed after its last save).
pub fn truncate_metrics(path: &Path, step: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s as usize <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    sidrec::io::write_bytes_atomic(path, kept.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::optim::{sorted_vars, AdamWConfig};

    #[test]
    fn best_follows_the_chosen_figure_and_resume_refuses_another() {
        let v = |ndcg10: f64, loss: f64| Validation {
            rows: 8,
            hr10: 0.0,
            ndcg10,
            loss,
        };
        // NDCG@10 rises then falls while the loss falls then rises.
        let seq = [v(0.05, 2.3), v(0.06, 2.1), v(0.07, 2.2), v(0.06, 2.4)];
        let mut by_ndcg = TrainState::default();
        let mut by_loss = TrainState {
            best_by: BestBy::Loss,
            ..TrainState::default()
        };
        let flags = |st: &mut TrainState| -> Vec<bool> {
            seq.iter().map(|x| st.record_validation(x, 0).0).collect()
        };
        assert_eq!(flags(&mut by_ndcg), [true, true, true, false]);
        assert_eq!((by_ndcg.best, by_ndcg.bad_evals), (Some(0.07), 1));
        assert_eq!(flags(&mut by_loss), [true, true, false, false]);
        assert_eq!((by_loss.best, by_loss.bad_evals), (Some(2.1), 2));

        // A run saved with one figure does not resume under the other.
        let dir = tempfile::tempdir().unwrap();
        let text = serde_json::to_vec(&by_loss).unwrap();
        std::fs::write(dir.path().join(STATE_FILE), text).unwrap();
        let vars = candle_nn::VarMap::new();
        let mut opt = AdamW::new(sorted_vars(&vars).unwrap(), AdamWConfig::default()).unwrap();
        let metrics = dir.path().join("metrics.jsonl");
        let e = TrainState::start(true, BestBy::Ndcg10, dir.path(), &metrics, &mut opt)
            .unwrap_err()
            .to_string();
        assert!(e.contains("valid_loss") && e.contains(STATE_FILE), "{e}");
        // A state file from before `best_by` existed reads as NDCG@10.
        let old: TrainState = serde_json::from_str(
            r#"{"epoch":1,"batch":2,"step":3,"best":0.1,"bad_evals":0,"done":false}"#,
        )
        .unwrap();
        assert_eq!(old.best_by, BestBy::Ndcg10);
    }
}
