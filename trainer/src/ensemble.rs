//! `sidrec-trainer ensemble`: write a checkpoint that decodes several trained models together.

use candle_core::Device;
use sidrec::checkpoint::Checkpoint;
use sidrec::decode::normalized_weights;

use crate::cli::EnsembleArgs;
use crate::error::{Result, TrainerError};

/// `sidrec-trainer ensemble`.
pub fn run(args: &EnsembleArgs) -> Result<()> {
    let models = args.members.len() + 1;
    // Checked before any checkpoint is read, so that a typo costs nothing.
    let weights = args.weights.clone().unwrap_or_else(|| vec![1.0; models]);
    let weights = normalized_weights(&weights, models)
        .map_err(|e| TrainerError::Invalid(format!("--weights: {e}")))?;
    let device = Device::Cpu;
    let primary = Checkpoint::load(&args.checkpoint, &device, None)?;
    let members = args
        .members
        .iter()
        .map(|dir| Checkpoint::load(dir, &device, None))
        .collect::<sidrec::Result<Vec<_>>>()?;
    let meta = sidrec::ensemble::write(
        &primary,
        &members,
        Some(&weights),
        args.pool,
        args.item_free_share,
        &args.out,
    )?;
    let parameters: usize = std::iter::once(&primary)
        .chain(&members)
        .map(|c| c.model.config().num_parameters())
        .sum();
    let twins = if args.item_free_share > 0.0 {
        format!(", item-free twins at share {}", args.item_free_share)
    } else {
        String::new()
    };
    let what = if models > 1 {
        format!(
            "an ensemble of {models} models, weights {}",
            shares(&weights)
        )
    } else {
        "one model".to_string()
    };
    println!(
        "wrote {} ({what}, pooled by {}{twins}, {parameters} parameters, version {})",
        args.out.display(),
        args.pool,
        meta.version
    );
    Ok(())
}

/// Mixture shares as `eval`'s report and this command print them: `0.286 / 0.286 / 0.143`.
pub fn shares(weights: &[f64]) -> String {
    weights
        .iter()
        .map(|w| format!("{w:.3}"))
        .collect::<Vec<_>>()
        .join(" / ")
}
