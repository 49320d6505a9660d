//! A run's directories and checkpoints: where it starts (`--init`, or `last/` when resuming),
//! the starting checkpoint loaded once with its weights as trainable variables, and the atomic
//! `best/` and `last/` saves after each validation.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use sidrec::checkpoint::{self, Checkpoint, NewCheckpoint};
use sidrec::data::DatasetDir;
use sidrec::model::{checkpoint as hf, Qwen2, Qwen2Config};

use super::optim::AdamW;
use super::state::TrainState;
use super::validate::Validation;
use crate::error::{Result, TrainerError};

/// The directories of a training run.
#[derive(Debug, Clone)]
pub struct RunDirs {
    /// `--out`.
    pub out: PathBuf,
    /// `out/last`: the newest save, with the resume state.
    pub last: PathBuf,
    /// `out/best`: the best validation so far.
    pub best: PathBuf,
    /// `out/metrics.jsonl`.
    pub metrics: PathBuf,
    /// Whether this run continues from `last/` (asked for and `last/` is complete).
    pub resuming: bool,
}

impl RunDirs {
    /// The directories under `out`; resuming only when asked and a complete `last/` exists.
    pub fn new(out: &Path, resume: bool) -> Self {
        let last = out.join("last");
        Self {
            out: out.to_path_buf(),
            resuming: resume && checkpoint::is_complete(&last),
            best: out.join("best"),
            metrics: out.join("metrics.jsonl"),
            last,
        }
    }

    /// Where the weights and loop state come from: `last/` when resuming, else `init`.
    pub fn start<'a>(&'a self, init: &'a Path) -> &'a Path {
        if self.resuming {
            &self.last
        } else {
            init
        }
    }

    /// Create `out`.
    pub fn create(&self) -> Result<()> {
        std::fs::create_dir_all(&self.out).map_err(|e| TrainerError::io(&self.out, e))
    }
}

/// A fresh F32 model with the architecture of `cfg`, its weights in a new `VarMap`.
pub fn var_model(cfg: &Qwen2Config, device: &Device) -> Result<(VarMap, Qwen2)> {
    let varmap = VarMap::new();
    let model = Qwen2::new(cfg, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
    Ok((varmap, model))
}

/// The checkpoint in `dir` with its model as trainable F32 variables on `device` (the weights
/// read once, straight into the variables), and the `VarMap` that holds them.
pub fn load_trainable(dir: &Path, device: &Device) -> Result<(Checkpoint, VarMap)> {
    let mut vars = None;
    let ck = Checkpoint::load_with(dir, |dir| {
        let cfg = hf::load_config(dir)?;
        let varmap = VarMap::new();
        let model = Qwen2::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
        hf::load_into_varmap(dir, &varmap)?;
        vars = Some(varmap);
        Ok(model)
    })?;
    let varmap = vars.ok_or_else(|| TrainerError::Invalid("model was not loaded".into()))?;
    Ok((ck, varmap))
}

/// Save `ck` (its current model weights, tokenizer, index and items) as a `stage` checkpoint in
/// `dir`, atomically, with `metrics` and the `extra_files` (e.g. the resume state). Loops save
/// through [`RunCheckpoints::after_validation`], which decides what goes where.
fn save(
    dir: &Path,
    ck: &Checkpoint,
    stage: &str,
    metrics: serde_json::Value,
    extra_files: Vec<(String, Vec<u8>)>,
) -> Result<()> {
    checkpoint::write(
        dir,
        &NewCheckpoint {
            model: &ck.model,
            tokenizer: &ck.tokenizer,
            index: &ck.index,
            items: &ck.items,
            prompt_style: ck.meta.prompt_style,
            stage,
            collision_policy: &ck.meta.collision_policy,
            data_fingerprint: ck.meta.data_fingerprint.clone(),
            metrics,
            extra_files,
            score_mode: ck.meta.score_mode,
            prompt_tokens: ck.meta.prompt_tokens,
            max_history: ck.meta.max_history,
            item_window: ck.meta.item_window,
        },
    )?;
    Ok(())
}

/// What a training loop does after each validation, the same for every stage: book and log
/// it, save `best/` when it improved and `last/` always, and say whether to stop.
pub struct RunCheckpoints<'a> {
    /// The run's directories.
    pub dirs: &'a RunDirs,
    /// The checkpoint being trained (its model holds the current weights).
    pub base: &'a Checkpoint,
    /// The stage name written into saved checkpoints (`sft`, `grpo`).
    pub stage: &'a str,
    /// Validations in a row without a better one after which the run stops (`None`: never).
    pub patience: Option<usize>,
    /// The run's progress bar, above which validations are printed.
    pub pb: &'a indicatif::ProgressBar,
}

impl RunCheckpoints<'_> {
    /// After validation `v` at `epoch`: book and log it in `state` (`metrics.jsonl`, the
    /// terminal, `curves.svg`), save `best/` when it improved and `last/` always, `last/` with
    /// `state`'s resume files and `extra` in the same atomic write, so that a kill never leaves
    /// them out of step with the weights. Returns whether the loop stops: at the end of its
    /// schedule (`at_end`) or after `patience` validations without improvement.
    pub fn after_validation(
        &self,
        state: &mut TrainState,
        v: &Validation,
        epoch: usize,
        at_end: bool,
        opt: &AdamW,
        extra: Vec<(String, Vec<u8>)>,
    ) -> Result<bool> {
        let (improved, record) =
            state.log_validation(v, epoch, &self.dirs.metrics, &self.dirs.out, self.pb)?;
        let stop = at_end || self.patience.is_some_and(|p| state.bad_evals >= p);
        state.done = stop;
        if improved {
            save(
                &self.dirs.best,
                self.base,
                self.stage,
                record.clone(),
                Vec::new(),
            )?;
        }
        let mut files = state.resume_files(opt)?;
        files.extend(extra);
        save(&self.dirs.last, self.base, self.stage, record, files)?;
        Ok(stop)
    }

    /// Clear the progress bar and print how the run ended: steps, time, its best validation
    /// and where `best/` and `last/` are.
    pub fn finish(&self, state: &TrainState, elapsed: std::time::Duration) {
        self.pb.finish_and_clear();
        println!(
            "trained {} {} steps in {:.0} s; best {} {:.4}; wrote {} and {}",
            state.step,
            self.stage,
            elapsed.as_secs_f64(),
            state.best_by.key(),
            state.best.unwrap_or(0.0),
            self.dirs.best.display(),
            self.dirs.last.display()
        );
    }
}

/// The category phrase of the title prompts, from the dataset's item file name.
pub fn category(ds: &DatasetDir) -> String {
    let name = ds
        .items
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".item.json"))
        .unwrap_or("items");
    sidrec::prompt::category_phrase(name)
}
