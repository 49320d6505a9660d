//! `data amazon18`.
use crate::cli::Amazon18Args;
use crate::error::Result;
/// `sidrec-trainer data amazon18`.
pub fn run(_args: &Amazon18Args) -> Result<()> {
    Ok(())
}
