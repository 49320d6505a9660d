//! `sidrec-trainer`: the offline side of sidrec. All logic lives in the library crate.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    sidrec::device::tune_allocator();
    let cli = sidrec_trainer::cli::Cli::parse();
    if let Some(n) = cli.threads.filter(|&n| n > 0) {
        // candle and gemm size their pools from RAYON_NUM_THREADS; set it before any tensor op.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        // MKL's OpenMP pool ignores rayon's setting and would otherwise take every core.
        #[cfg(feature = "mkl")]
        for var in ["MKL_NUM_THREADS", "OMP_NUM_THREADS"] {
            std::env::set_var(var, n.to_string());
        }
    }
    match sidrec::device::run_in_pool(|| sidrec_trainer::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
