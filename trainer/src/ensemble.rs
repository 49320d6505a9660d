//! `sidrec-trainer ensemble`: write a checkpoint that decodes several trained models together.

use candle_core::Device;
use sidrec::checkpoint::Checkpoint;

use crate::cli::EnsembleArgs;
use crate::error::Result;

/// `sidrec-trainer ensemble`.
pub fn run(args: &EnsembleArgs) -> Result<()> {
    let device = Device::Cpu;
    let primary = Checkpoint::load(&args.checkpoint, &device, None)?;
    let members = args
        .members
        .iter()
        .map(|dir| Checkpoint::load(dir, &device, None))
        .collect::<sidrec::Result<Vec<_>>>()?;
    let meta = sidrec::ensemble::write(&primary, &members, &args.out)?;
    let parameters: usize = std::iter::once(&primary)
        .chain(&members)
        .map(|c| c.model.config().num_parameters())
        .sum();
    println!(
        "wrote {} (an ensemble of {} models, {parameters} parameters, version {})",
        args.out.display(),
        members.len() + 1,
        meta.version
    );
    Ok(())
}
