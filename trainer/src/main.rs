//! `sidrec-trainer`: the offline side of sidrec. All logic lives in the library crate.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = sidrec_trainer::cli::Cli::parse();
    match sidrec_trainer::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
