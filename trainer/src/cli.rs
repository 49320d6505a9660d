//! The command line: `sidrec-trainer data {synth, import-minionerec, amazon18, stats}`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Offline side of sidrec: build and inspect datasets (later stages: embed, sid, sft, grpo).
#[derive(Debug, Parser)]
#[command(name = "sidrec-trainer", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level command groups.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build, import and inspect dataset directories.
    #[command(subcommand)]
    Data(DataCommand),
}

/// `sidrec-trainer data ...`
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Synthesize the default dataset: a product catalogue and users with learnable habits.
    Synth(SynthArgs),
    /// Import MiniOneRec CSV splits + item/index/info files into a dataset directory.
    ImportMinionerec(ImportArgs),
    /// Preprocess raw Amazon-2018 reviews + metadata exactly as MiniOneRec does.
    Amazon18(Amazon18Args),
    /// Print dataset statistics and evaluate popularity / last-item-transition baselines.
    Stats(StatsArgs),
}

/// Arguments of `data synth`.
#[derive(Debug, Clone, Args)]
pub struct SynthArgs {
    /// Number of items in the catalogue.
    #[arg(long, default_value_t = 3000, env = "SIDREC_SYNTH_ITEMS")]
    pub items: usize,
    /// Number of users.
    #[arg(long, default_value_t = 4000, env = "SIDREC_SYNTH_USERS")]
    pub users: usize,
    /// Random seed; the same seed gives byte-identical files.
    #[arg(long, default_value_t = 42, env = "SIDREC_SEED")]
    pub seed: u64,
    /// Output dataset directory.
    #[arg(long, env = "SIDREC_DATA")]
    pub out: PathBuf,
}

/// Arguments of `data import-minionerec`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// A MiniOneRec data tree (`train/ valid/ test/ info/` + `*.item.json`, `*.index.json`
    /// anywhere below) or a flat folder (`train.csv`, `valid.csv`, `test.csv`, `<Name>.item.json`,
    /// `<Name>.index.json`, `<Name>.info.txt`). Explicit file flags override what is found here.
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// Dataset name used to pick files in a tree holding several (e.g. `Industrial_and_Scientific`).
    #[arg(long)]
    pub name: Option<String>,
    /// Train split CSV.
    #[arg(long)]
    pub train: Option<PathBuf>,
    /// Validation split CSV.
    #[arg(long)]
    pub valid: Option<PathBuf>,
    /// Test split CSV.
    #[arg(long)]
    pub test: Option<PathBuf>,
    /// Item metadata (`<Name>.item.json`).
    #[arg(long)]
    pub items: Option<PathBuf>,
    /// SID index (`<Name>.index.json`).
    #[arg(long)]
    pub index: Option<PathBuf>,
    /// Info file (`SID<TAB>title<TAB>item_id`).
    #[arg(long)]
    pub info: Option<PathBuf>,
    /// Output dataset directory.
    #[arg(long, env = "SIDREC_DATA")]
    pub out: PathBuf,
}

/// Arguments of `data amazon18`.
#[derive(Debug, Clone, Args)]
pub struct Amazon18Args {
    /// Reviews, one JSON object per line (`<Category>_5.json`, optionally gzipped).
    #[arg(long)]
    pub reviews: PathBuf,
    /// Item metadata, one JSON object per line (`meta_<Category>.json`, optionally gzipped).
    #[arg(long)]
    pub meta: PathBuf,
    /// Output dataset directory.
    #[arg(long, env = "SIDREC_DATA")]
    pub out: PathBuf,
    /// K of the iterative k-core, applied to users AND items (as the reference does).
    #[arg(long, default_value_t = 5)]
    pub user_k: usize,
    /// Start of the time window, `YYYY-MM` (UTC midnight of day 1).
    #[arg(long, default_value = "2016-10")]
    pub start: String,
    /// End of the time window, `YYYY-MM` (UTC midnight of day 1; inclusive).
    #[arg(long, default_value = "2018-11")]
    pub end: String,
    /// If fewer items survive, move the start one year earlier and redo everything
    /// (the reference hard-codes 3000).
    #[arg(long, default_value_t = 3000)]
    pub min_items: usize,
}

/// Arguments of `data stats`.
#[derive(Debug, Clone, Args)]
pub struct StatsArgs {
    /// Dataset directory (ours or a flat MiniOneRec folder).
    #[arg(long, env = "SIDREC_DATA")]
    pub data: PathBuf,
    /// Split on which the baselines are evaluated (`train`, `valid` or `test`).
    #[arg(long, default_value = "test")]
    pub split: sidrec::data::Split,
    /// Also write the statistics as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}
