//! `data import-minionerec`.
use crate::cli::ImportArgs;
use crate::error::Result;
/// `sidrec-trainer data import-minionerec`.
pub fn run(_args: &ImportArgs) -> Result<()> {
    Ok(())
}
