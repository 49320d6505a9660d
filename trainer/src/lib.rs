//! The `sidrec-trainer` library: everything behind the `sidrec-trainer` binary.
//!
//! * [`cli`] — the command-line interface (clap derive);
//! * [`data`] — `data synth`, `data import-minionerec`, `data amazon18`, `data amazon23`,
//!   `data features`, `data stats`;
//! * [`baselines`] — popularity and last-item-transition rankers used by `data stats` (scored
//!   with `sidrec::metrics`);
//! * [`init`] — `init`: an untrained from-scratch checkpoint;
//! * [`eval`] — `eval`: constrained beam search over a split, HR/NDCG@K report;
//! * [`sid`] — `sid` (residual k-means SIDs from one or several joined embeddings) and
//!   `sid-report`;
//! * [`sft`] — `sft`: supervised fine-tuning on the reference's five tasks;
//! * [`train`] — what the training stages share: run directories, loading and saving, loop
//!   state and resume, validation, the optimizer, batches;
//! * [`grpo`] — `grpo`: reinforcement learning with group-normalised rewards and a KL penalty;
//! * [`embed`] — `embed`: item text embeddings (`.npy`) with a BERT-family encoder;
//! * [`embed_cooc`] — `embed-cooc`: item vectors from train co-occurrence (PPMI-SVD, `.npy`);
//! * [`sasrec`] — `sasrec`: the SASRec baseline (training, full-ranking eval, `cf` scores);
//! * [`compare`] — `compare`: paired significance of the difference between two evals;
//! * [`ensemble`] — `ensemble`: several trained models stored and decoded as one checkpoint;
//! * [`error`] — the crate's one error type.

pub mod baselines;
pub mod cli;
pub mod compare;
pub mod data;
pub mod embed;
pub mod embed_cooc;
pub mod ensemble;
pub mod error;
pub mod eval;
pub mod grpo;
pub mod hybrid;
pub mod init;
pub mod plot;
pub mod progress;
pub mod sasrec;
pub mod sft;
pub mod sid;
pub mod train;

pub use error::{Result, TrainerError};

use cli::{Cli, Command, DataCommand};

/// Run one parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Data(cmd) => match cmd {
            DataCommand::Synth(a) => data::synth::run(&a),
            DataCommand::ImportMinionerec(a) => data::minionerec::run(&a),
            DataCommand::Amazon18(a) => data::amazon18::run(&a),
            DataCommand::Amazon23(a) => data::amazon23::run(&a),
            DataCommand::Features(a) => data::features::run(&a),
            DataCommand::Stats(a) => data::stats::run(&a),
        },
        Command::Init(a) => init::run(&a),
        Command::Sft(a) => sft::train::run(&a),
        Command::Grpo(a) => grpo::train::run(&a),
        Command::Eval(a) => eval::run(&a),
        Command::Sid(a) => sid::run(&a),
        Command::SidReport(a) => sid::run_report(&a),
        Command::Embed(a) => embed::run(&a),
        Command::EmbedCooc(a) => embed_cooc::run(&a),
        Command::Plot(a) => plot::run(&a),
        Command::Compare(a) => compare::run(&a),
        Command::Hybrid(a) => hybrid::run(&a),
        Command::Ensemble(a) => ensemble::run(&a),
        Command::Sasrec(a) => sasrec::train::run(&a).map(|_| ()),
    }
}
