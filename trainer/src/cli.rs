//! The command line: `sidrec-trainer data {synth, import-minionerec, amazon18, amazon23,
//! features, stats}`, `init`, `eval`,
//! `sid`, `sid-report`.
//! `embed`.
//! `sasrec`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Offline side of sidrec: build datasets, create checkpoints and evaluate them.
#[derive(Debug, Parser)]
#[command(name = "sidrec-trainer", version, about, long_about = None)]
pub struct Cli {
    /// CPU threads for tensor work (candle's thread pool). Small models often run faster on
    /// one thread: candle's parallel ops spin on a barrier, which costs more than it saves
    /// when the operations are small or the cores are shared. Default: all cores.
    #[arg(long, global = true, env = "SIDREC_THREADS")]
    pub threads: Option<usize>,
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
    /// Create an untrained from-scratch checkpoint: BPE tokenizer with SID tokens + preset model.
    Init(InitArgs),
    /// Supervised fine-tuning on the reference's five tasks, with validation and early stopping.
    Sft(SftArgs),
    /// Reinforcement learning with GRPO: constrained rollouts, rule/ranking/semantic rewards, KL.
    Grpo(GrpoArgs),
    /// Evaluate a checkpoint with constrained beam search: HR/NDCG@K, invalid count, speed.
    Eval(EvalArgs),
    /// Build Semantic IDs from item embeddings (residual k-means, RQ-VAE or RQ-KMeans+); rewrites
    /// the dataset's SIDs.
    Sid(SidArgs),
    /// Report the quality of any SID index against item embeddings (collisions, codebook use,
    /// reconstruction error).
    SidReport(SidReportArgs),
    /// Embed every item's text with a BERT-family encoder into a float32 `.npy` [items, dim].
    Embed(EmbedArgs),
    /// Embed every item by the items it meets in train histories (PPMI of nearby pairs, truncated
    /// SVD) into a float32 `.npy` [items, dim], the collaborative half of `sid --embeddings`.
    EmbedCooc(EmbedCoocArgs),
    /// Draw a run's curves (loss, validation HR@10/NDCG@10, ...) from its metrics.jsonl to SVG.
    Plot(PlotArgs),
    /// Is run B better than run A? Paired bootstrap CI and sign-flip p-value of HR/NDCG@K
    /// differences between two evals' predictions.json over the same rows.
    Compare(CompareArgs),
    /// Hybrid ranker: fit a last-item transition table on train, choose λ on valid for
    /// `log p(SID) + λ·transition score` over the model's beam, write a checkpoint that carries it.
    Hybrid(HybridArgs),
    /// Ensemble: store further models (same tokenizer and SID index) beside a checkpoint's own;
    /// beam search scores each token by their (weighted) mean probability. `eval`, `hybrid` and
    /// the server load the result as one checkpoint.
    Ensemble(EnsembleArgs),
    /// Train the SASRec baseline (the reference's sasrec.py): BCE or CE, early stopping on
    /// valid NDCG@20.
    Sasrec(crate::sasrec::SasRecArgs),
}

/// Arguments of `compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Side A (the baseline): eval output directories or predictions.json files, one per run
    /// (seed); a comma list or the flag repeated.
    #[arg(long, required = true, value_delimiter = ',')]
    pub a: Vec<PathBuf>,
    /// Side B (the candidate), its runs over the same rows as A's.
    #[arg(long, required = true, value_delimiter = ',')]
    pub b: Vec<PathBuf>,
    /// Cut-offs K of HR@K and NDCG@K.
    #[arg(long, value_delimiter = ',', default_value = "1,3,5,10")]
    pub ks: Vec<usize>,
    /// Bootstrap resamples (and sign flips).
    #[arg(long, default_value_t = 10_000)]
    pub resamples: usize,
    /// Seed of the resampling.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Also write the comparison as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Arguments of `plot`.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// A run directory (its `metrics.jsonl`) or a metrics.jsonl file.
    #[arg(long)]
    pub run: PathBuf,
    /// Output SVG (default: `curves.svg` beside the metrics file).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A panel as a comma list of metrics keys; repeat for more panels (default: loss,
    /// validation, reward, KL, throughput and learning-rate panels, where present).
    #[arg(long)]
    pub panel: Vec<String>,
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
    /// Preprocess raw Amazon Reviews 2023 (any category) + metadata; also writes features.json.
    Amazon23(Amazon23Args),
    /// Compute features.json (item value, user activity) from the train split's popularity,
    /// for datasets without price or rating fields.
    Features(FeaturesArgs),
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

/// Arguments of `data amazon23`.
#[derive(Debug, Clone, Args)]
pub struct Amazon23Args {
    /// Reviews, one JSON object per line (`<Category>.jsonl`, optionally gzipped).
    #[arg(long)]
    pub reviews: PathBuf,
    /// Item metadata, one JSON object per line (`meta_<Category>.jsonl`, optionally gzipped).
    #[arg(long)]
    pub meta: PathBuf,
    /// Output dataset directory.
    #[arg(long, env = "SIDREC_DATA")]
    pub out: PathBuf,
    /// K of the iterative k-core, applied to users AND items.
    #[arg(long, default_value_t = 5)]
    pub user_k: usize,
    /// Start of the time window, `YYYY-MM` (UTC midnight of day 1).
    #[arg(long, default_value = "1996-01")]
    pub start: String,
    /// End of the time window, `YYYY-MM` (UTC midnight of day 1; inclusive).
    #[arg(long, default_value = "2025-01")]
    pub end: String,
}

/// Arguments of `data features`.
#[derive(Debug, Clone, Args)]
pub struct FeaturesArgs {
    /// Dataset directory (its train split and items are read; features.json is written there).
    #[arg(long, env = "SIDREC_DATA")]
    pub data: PathBuf,
    /// Replace an existing features.json (e.g. the richer one `data amazon23` wrote).
    #[arg(long)]
    pub force: bool,
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

/// Which validation figure picks the `best` checkpoint (and drives early stopping).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum BestBy {
    /// Highest beam-search NDCG@10 on the validation rows.
    #[default]
    Ndcg10,
    /// Lowest SID-history loss on the validation rows (the reference's `eval_loss`).
    Loss,
}

impl BestBy {
    /// The `metrics.jsonl` key of the figure.
    pub fn key(self) -> &'static str {
        match self {
            BestBy::Ndcg10 => "valid_ndcg10",
            BestBy::Loss => "valid_loss",
        }
    }
}

/// Softmax of the SID tokens' training loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SidSoftmax {
    /// Over the whole vocabulary: the reference's loss, matching `exact` beam scores.
    #[default]
    Full,
    /// Over the SID token's level only: matching `fast` beam scores.
    Level,
}

/// Model size presets for from-scratch models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// About 1M parameters plus embeddings (hidden 128, 4 layers): tests and the quickstart.
    Tiny,
    /// About 10M parameters plus embeddings (hidden 384, 6 layers): the size at which
    /// published Semantic-ID recommenders stop gaining; for quality work.
    Base,
    /// About 22M parameters plus embeddings (hidden 512, 8 layers).
    Small,
}

/// A group of optional prompt tokens (`init --prompt-tokens`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PromptTokenGroup {
    /// A user-segment token before the history ([USER_HIGH|MID|LOW|UNKNOWN]).
    User,
    /// A request-context token before the history ([CTX_BROWSE|SEARCH|HOMEPAGE]).
    Context,
    /// An item-type token ([I_TOKEN]/[O_TOKEN]) before every history SID.
    ItemType,
}

impl From<PromptTokenGroup> for sidrec::prompt::TokenGroup {
    fn from(g: PromptTokenGroup) -> Self {
        match g {
            PromptTokenGroup::User => Self::User,
            PromptTokenGroup::Context => Self::Context,
            PromptTokenGroup::ItemType => Self::ItemType,
        }
    }
}

/// Arguments of `init`.
#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// Dataset directory with items and a SID index.
    #[arg(long, env = "SIDREC_DATA")]
    pub data: PathBuf,
    /// Output checkpoint directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Model size.
    #[arg(long, value_enum, default_value = "tiny")]
    pub preset: Preset,
    /// Number of transformer layers, instead of the preset's.
    #[arg(long, conflicts_with = "base")]
    pub layers: Option<usize>,
    /// Width of each layer's MLP (`intermediate_size`), instead of the preset's. Wide and shallow
    /// learns item-to-item associations fastest per CPU-second (BENCHMARKS.md, "Quickstart
    /// model"): the quickstart uses `--layers 2 --intermediate-size 2048`.
    #[arg(long, conflicts_with = "base")]
    pub intermediate_size: Option<usize>,
    /// Prompt templates the model will be trained with.
    #[arg(long, default_value = "compact")]
    pub prompt_style: sidrec::prompt::PromptStyle,
    /// Target size of the byte-level BPE vocabulary (before the SID tokens are added).
    #[arg(long, default_value_t = 4000)]
    pub vocab_size: usize,
    /// Optional prompt tokens, comma-separated (e.g. `user,item-type`): added to the tokenizer,
    /// recorded in the checkpoint, and carried by every SID-history prompt it is trained,
    /// evaluated and served with. `user` and `item-type` read the dataset's `features.json`.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub prompt_tokens: Vec<PromptTokenGroup>,
    /// Add a learned embedding per catalogue item to the input, at the last SID token of each
    /// history item (a sidrec extension: such checkpoints are not loadable by HF transformers).
    #[arg(long)]
    pub item_embeddings: bool,
    /// Add a copy gate: per SID level, a learned logit for writing the previous item's SID
    /// again (the last history item's, for a recommendation), learned with the rest of the
    /// model from when it pays (a consumable bought again). For data with repeat purchases
    /// (a sidrec extension: such checkpoints are not loadable by HF transformers).
    #[arg(long)]
    pub copy_gate: bool,
    /// Seed of a fresh model's random weights (the same seed gives the same checkpoint).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Start from a HuggingFace Qwen2 checkpoint directory (`config.json`, safetensors,
    /// `tokenizer.json`) instead of a preset: its tokenizer is extended with the SID tokens (the
    /// reference's TokenExtender) and the embeddings resized, new rows at the mean of the old.
    #[arg(long, conflicts_with_all = ["preset", "item_embeddings", "copy_gate"])]
    pub base: Option<PathBuf>,
    /// End-of-sequence token of `--base`'s tokenizer.
    #[arg(long, default_value = "<|endoftext|>")]
    pub eos_token: String,
    /// Compute device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", env = "SIDREC_DEVICE")]
    pub device: String,
}

/// Arguments of `eval`.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// Checkpoint directory (must contain `sidrec.json`).
    #[arg(long, env = "SIDREC_CHECKPOINT", required_unless_present = "baseline")]
    pub checkpoint: Option<PathBuf>,
    /// Evaluate a non-generative baseline instead of a checkpoint: each row's top `--num-beams`
    /// items by full ranking, scored with the same metric code.
    #[arg(long, value_enum)]
    pub baseline: Option<BaselineKind>,
    /// SASRec model directory (from `sidrec-trainer sasrec`), for `--baseline sasrec`.
    #[arg(long, required_if_eq("baseline", "sasrec"))]
    pub sasrec: Option<PathBuf>,
    /// Dataset directory holding the split.
    #[arg(long, env = "SIDREC_DATA")]
    pub data: PathBuf,
    /// Split to evaluate.
    #[arg(long, default_value = "test")]
    pub split: sidrec::data::Split,
    /// Beams per prompt; the metrics use the whole beam list (top-K is its prefix).
    #[arg(long, default_value_t = 50)]
    pub num_beams: usize,
    /// Prompts decoded together.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Beam scores: `exact` (the reference's full-vocabulary log-probs) or `fast` (per-level
    /// log-probs). Default: the checkpoint's (`fast` after `sft --sid-softmax level`), else exact.
    #[arg(long)]
    pub mode: Option<sidrec::decode::ScoreMode>,
    /// How an ensemble's models combine (`mean` or `product`), overriding the checkpoint's
    /// (`sidrec-trainer ensemble --pool`); for choosing it on the valid split.
    #[arg(long)]
    pub pool: Option<sidrec::decode::Pool>,
    /// Share of the first level's mixture given to the models' item-free twins (0: none), overriding the
    /// checkpoint's (`sidrec-trainer ensemble --item-free-share`); for choosing it on the valid
    /// split. Needs models with item embeddings.
    #[arg(long)]
    pub item_free_share: Option<f64>,
    /// Prompt templates (default: the checkpoint's).
    #[arg(long)]
    pub prompt_style: Option<sidrec::prompt::PromptStyle>,
    /// Evaluate only the first N rows.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Keep only the last N history items of each prompt (0: all), overriding the
    /// checkpoint's `sft --max-history`; for choosing N on the valid split.
    #[arg(long)]
    pub max_history: Option<usize>,
    /// Compute device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", env = "SIDREC_DEVICE")]
    pub device: String,
    /// Output directory for report.json, report.md and predictions.json
    /// (default: `<checkpoint>/eval-<split>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Ranking of a checkpoint with a hybrid ranker (`hybrid.json`): `on` re-ranks the beam's
    /// items by `log p + λ·transition score`, `off` reports the pure model. Default: on when
    /// the checkpoint has one.
    #[arg(long, value_enum)]
    pub hybrid: Option<OnOff>,
}

/// A switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// Arguments of `ensemble`.
#[derive(Debug, Args)]
pub struct EnsembleArgs {
    /// The checkpoint whose tokenizer, SID index, prompt settings and model come first (read
    /// only).
    #[arg(long, env = "SIDREC_CHECKPOINT")]
    pub checkpoint: PathBuf,
    /// The other members' checkpoints (a comma list or the flag repeated); each needs
    /// `--checkpoint`'s tokenizer, SID index and prompt tokens. May be left out with
    /// `--item-free-share`: one model beside its own twin.
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "item_free_share"
    )]
    pub members: Vec<PathBuf>,
    /// Relative shares of the token mixture, one per model (`--checkpoint`'s first, then the
    /// members'), positive; divided by their sum. Default: equal shares.
    #[arg(long, value_delimiter = ',')]
    pub weights: Option<Vec<f64>>,
    /// How the models' token scores combine: `mean` (log of the weighted mean probability) or
    /// `product` (weighted mean log-probability: an item ranks high only when every model gives
    /// it weight).
    #[arg(long, default_value_t = sidrec::decode::Pool::Mean)]
    pub pool: sidrec::decode::Pool,
    /// Share of the first SID level's mixture given to item-free twins (0: none): each model
    /// also scores the first code without its item vectors, from the same weights, as item
    /// dropout (`sft --item-dropout`) trained it, and its twin takes this share of its weight
    /// there; later levels are the models' alone. The two predictions err on different rows:
    /// the vector recalls pairs seen in training, the SID codes generalise to the group of
    /// items that follows. Needs models with item embeddings; costs one more prompt pass per
    /// model.
    #[arg(long, default_value_t = 0.0)]
    pub item_free_share: f64,
    /// The new checkpoint directory (written atomically).
    #[arg(long)]
    pub out: PathBuf,
}

/// Arguments of `hybrid`.
#[derive(Debug, Args)]
pub struct HybridArgs {
    /// The checkpoint whose beam candidates are re-ranked (read only).
    #[arg(long, env = "SIDREC_CHECKPOINT")]
    pub checkpoint: PathBuf,
    /// Dataset directory: the transition table is fitted on its train split, λ chosen on valid.
    #[arg(long, env = "SIDREC_DATA")]
    pub data: PathBuf,
    /// The new checkpoint directory: a copy of `--checkpoint` plus `hybrid.json`.
    #[arg(long)]
    pub out: PathBuf,
    /// A finished `eval --split valid --hybrid off` of this checkpoint (its directory) to choose
    /// λ on, instead of decoding the valid split here.
    #[arg(long)]
    pub valid_eval: Option<PathBuf>,
    /// Valid rows to decode when no `--valid-eval` is given (the first N; default: all).
    #[arg(long)]
    pub valid_rows: Option<usize>,
    /// Beams per prompt of the valid decode (the candidates that are re-ranked).
    #[arg(long, default_value_t = 50)]
    pub num_beams: usize,
    /// Prompts decoded together.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Grid of λ (weights of the transition score); 0 (the pure model) is always tried.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.05,0.1,0.2,0.3,0.5,0.7,1,1.5,2,3"
    )]
    pub lambdas: Vec<f32>,
    /// Grid of the prior strength β of the smoothed transition probability.
    #[arg(long, value_delimiter = ',', default_value = "0.1,1,10,100")]
    pub prior_strengths: Vec<f64>,
    /// Compute device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", env = "SIDREC_DEVICE")]
    pub device: String,
}

/// Baselines `eval --baseline` can score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BaselineKind {
    /// Items by train-target count.
    Popularity,
    /// Followers of the history's last item in train, backed off to popularity.
    Transition,
    /// A trained SASRec model (`--sasrec DIR`).
    Sasrec,
}

impl std::fmt::Display for BaselineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BaselineKind::Popularity => "popularity",
            BaselineKind::Transition => "transition",
            BaselineKind::Sasrec => "sasrec",
        })
    }
}

/// Arguments of `sft`.
#[derive(Debug, Clone, Args)]
pub struct SftArgs {
    /// Starting checkpoint (from `init`, or an earlier `sft`).
    #[arg(long)]
    pub init: PathBuf,
    /// Dataset directory (train split for training, valid split for validation).
    #[arg(long, env = "SIDREC_DATA")]
    pub data: PathBuf,
    /// Output directory: `best/` and `last/` checkpoints and `metrics.jsonl`.
    #[arg(long)]
    pub out: PathBuf,
    /// Tasks: `all` or a comma list of seqrec, alignment, seq2title, title2title, title2sid.
    #[arg(long, default_value = "all")]
    pub tasks: String,
    /// Dropout on the embeddings and residual branches while training (0: off, as the
    /// reference's Qwen2). Masks come from `--seed`, so runs and resumes are reproducible.
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f32,
    /// Probability that a history item's learned vector (`init --item-embeddings`) is left out
    /// of a training pass, its SID tokens kept, so the model cannot lean on the vector alone
    /// (0: off). Needs a checkpoint with item embeddings; masks come from `--seed`.
    #[arg(long, default_value_t = 0.0)]
    pub item_dropout: f32,
    /// Learning-rate factor of the item vectors (`init --item-embeddings`): each vector gets a
    /// gradient only from the rows its item is in, so it can learn faster than the weights
    /// every row trains (1: the same rate).
    #[arg(long, default_value_t = 1.0)]
    pub item_lr_scale: f64,
    /// Also supervise the SIDs inside the history of SID-history → SID examples (each predicted
    /// from the items before it, as SASRec trains), not only the response: about ten times more
    /// supervised tokens per forward pass. A deliberate extension of the reference.
    #[arg(long)]
    pub history_loss: bool,
    /// With `--history-loss`: leave out the SID-history rows whose history and target begin a
    /// longer row of the same user (the early windows of a sliding-window split). The longer
    /// row's history loss already predicts each of their items from the same earlier items, so
    /// an epoch covers every transition in about half the tokens. Assumes `--cutoff` keeps
    /// whole rows.
    #[arg(long)]
    pub drop_covered_rows: bool,
    /// Also train every SID-history row with only its last N history items (0: off): short
    /// contexts in which the last items alone must predict the next, the association a
    /// last-item transition table is made of, without the rest of a long history to dilute it.
    #[arg(long, default_value_t = 0)]
    pub recent_history: usize,
    /// Recommendation prompts of the checkpoints it writes (its own validation, `eval`, the
    /// server, GRPO rollouts) keep only the last N history items (0: all). Training examples
    /// stay whole. Where the next item depends mostly on the last few, a long history only
    /// dilutes what the model learned about them; choose N on the valid split with `eval
    /// --max-history`.
    #[arg(long)]
    pub max_history: Option<usize>,
    /// Train with attention restricted to the last N items: each token sees the prompt's
    /// header, the N items before its own and its own item, so that every supervised
    /// transition of a whole row is learned from what a prompt cut to its last N items
    /// (`--max-history`, which defaults to N) will give. For data where the next item depends
    /// mostly on the last few.
    #[arg(long)]
    pub item_window: Option<usize>,
    /// Train only the SID tokens' rows of the embeddings (and of an untied output head); every
    /// other parameter stays bit-identical. For adapting a pretrained base model cheaply.
    #[arg(long)]
    pub freeze_llm: bool,
    /// Also train on the valid split (report such runs as train+valid).
    #[arg(long)]
    pub include_valid: bool,
    /// Softmax of the SID tokens' loss: `full` (the whole vocabulary, as the reference) or
    /// `level` (each SID token against its level's codes only, the scores `--mode fast`
    /// decoding ranks by; validation then decodes in fast mode). Title text keeps the full one.
    #[arg(long, value_enum, default_value_t = SidSoftmax::Full)]
    pub sid_softmax: SidSoftmax,
    /// Weight of an auxiliary next-item loss (0: off): at the last SID token of each history
    /// item, the item-embedding table, used as an output head, is trained to name the item that
    /// follows. A dense signal for item-to-item associations; decoding never reads it. Needs a
    /// checkpoint with item embeddings (`init --item-embeddings`).
    #[arg(long, default_value_t = 0.0)]
    pub next_item_loss: f64,
    /// Weight α of soft targets for item-to-item transitions (0: off). Each supervised SID
    /// token of an item that follows another is trained against `1 − α` on its own token plus
    /// `α` on how often each token follows the same codes after the same previous item across
    /// the training examples: the same objective over an epoch at α = 1 (with `--item-window 1`),
    /// less noise per step. Needs `--sid-softmax full`; decoding is unchanged.
    #[arg(long, default_value_t = 0.0)]
    pub soft_targets: f32,
    /// Weight each example's loss by the value of the item it names (VAFT): `1 + α·value`
    /// from the dataset's features.json, normalised to mean 1 over supervised tokens.
    #[arg(long)]
    pub value_weighting: bool,
    /// α of `--value-weighting` (0: plain SFT).
    #[arg(long, default_value_t = 1.0, requires = "value_weighting")]
    pub value_alpha: f64,
    /// Passes over the training examples.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Stop after this many optimizer steps.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Examples per micro-batch.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-4)]
    pub lr: f64,
    /// Linear warmup steps.
    #[arg(long, default_value_t = 20)]
    pub warmup: usize,
    /// Cosine instead of linear decay after warmup.
    #[arg(long)]
    pub cosine: bool,
    /// Decoupled weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Global gradient-norm clip.
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    /// Longest example in tokens (longer ones lose the start of their prompt).
    #[arg(long, default_value_t = 512)]
    pub cutoff: usize,
    /// Validate every N optimizer steps and at the end of each epoch; 0 validates once, at
    /// the end of training (`best` is then `last`).
    #[arg(long, default_value_t = 200)]
    pub eval_every: usize,
    /// Valid rows used for validation.
    #[arg(long, default_value_t = 256)]
    pub valid_rows: usize,
    /// Beams for validation decoding (HR@10/NDCG@10 use the top 10).
    #[arg(long, default_value_t = 20)]
    pub valid_beams: usize,
    /// What picks `best` and drives `--patience`: valid NDCG@10, or valid loss as the
    /// reference (`load_best_model_at_end` on `eval_loss`).
    #[arg(long, value_enum, default_value_t = BestBy::Ndcg10)]
    pub best_by: BestBy,
    /// Validations without improvement before stopping.
    #[arg(long, default_value_t = 3)]
    pub patience: usize,
    /// Log to metrics.jsonl every N steps.
    #[arg(long, default_value_t = 10)]
    pub log_every: usize,
    /// Seed of the data order.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Continue from `<out>/last` (same data order and optimizer state) if it exists.
    #[arg(long)]
    pub resume: bool,
    /// Compute device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", env = "SIDREC_DEVICE")]
    pub device: String,
}

/// Arguments of `embed`.
#[derive(Debug, Clone, Args)]
pub struct EmbedArgs {
    /// Dataset directory (its items file is embedded).
    #[arg(long, env = "SIDREC_DATA")]
    pub data: PathBuf,
    /// Encoder directory: `config.json`, `model.safetensors`, `tokenizer.json` of a BERT-family
    /// model (`scripts/fetch-encoder.sh` fetches all-MiniLM-L6-v2).
    #[arg(long, env = "SIDREC_ENCODER_DIR")]
    pub encoder: PathBuf,
    /// Output `.npy` (float32 [items, dim], rows in item id order); the row ids go to
    /// `<out>.ids.json`.
    #[arg(long)]
    pub out: PathBuf,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// L2-normalise the embeddings (the reference does not).
    #[arg(long)]
    pub normalize: bool,
    /// Maximum tokens per text; longer texts are truncated.
    #[arg(long, default_value_t = 256)]
    pub max_length: usize,
    /// Cap on texts × longest length per batch (0: none); long texts go in smaller batches.
    #[arg(long, default_value_t = 4096)]
    pub max_batch_tokens: usize,
    /// Batch texts in item order instead of by token length (slower; for measurements).
    #[arg(long)]
    pub no_sort: bool,
    /// Compute device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", env = "SIDREC_DEVICE")]
    pub device: String,
}

/// Arguments of `embed-cooc`.
#[derive(Debug, Clone, Args)]
pub struct EmbedCoocArgs {
    /// Dataset directory (its train split gives the pairs; its items file the rows).
    #[arg(long, env = "SIDREC_DATA")]
    pub data: PathBuf,
    /// Output `.npy` (float32 [items, dim], rows in item id order); the row ids go to
    /// `<out>.ids.json`.
    #[arg(long)]
    pub out: PathBuf,
    /// Vector size (the SVD's rank).
    #[arg(long, default_value_t = 32)]
    pub dim: usize,
    /// Each train row pairs its target with each of its last this many history items.
    #[arg(long, default_value_t = 3)]
    pub window: usize,
    /// Subspace-iteration rounds of the truncated SVD.
    #[arg(long, default_value_t = 100)]
    pub iterations: usize,
    /// Seed of the SVD's random start; the same seed gives the same vectors.
    #[arg(long, default_value_t = 42, env = "SIDREC_SEED")]
    pub seed: u64,
}

/// SID construction methods offered by `sid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SidMethod {
    /// Residual k-means (faiss-style greedy RQ); `--balanced` balances each level.
    RqKmeans,
    /// Residual balanced k-means: code sizes within floor(n/K)..floor(n/K)+1 at every level.
    RqKmeansConstrained,
    /// RQ-VAE (MLP auto-encoder, residual VQ in a 32-d latent, k-means-initialised codebooks).
    RqVae,
    /// RQ-KMeans+: Z = X + MLP(X) on codebooks warm-started from rq-kmeans-constrained.
    RqKmeansPlus,
}

impl From<SidMethod> for sidrec::quantize::Method {
    fn from(m: SidMethod) -> Self {
        match m {
            SidMethod::RqKmeans => sidrec::quantize::Method::RqKmeans,
            SidMethod::RqKmeansConstrained => sidrec::quantize::Method::RqKmeansConstrained,
            SidMethod::RqVae => sidrec::quantize::Method::RqVae,
            SidMethod::RqKmeansPlus => sidrec::quantize::Method::RqKmeansPlus,
        }
    }
}

/// What `sid` does with items whose codes collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Collisions {
    /// Collided items get one more token `<d_r>` (r = rank in the group): SIDs become unique.
    ExtraLevel,
    /// The reference's Sinkhorn re-assignment of the last level (up to 20 rounds; may leave
    /// collisions between identical embeddings).
    Sinkhorn,
    /// Keep collisions.
    None,
}

impl From<Collisions> for sidrec::quantize::CollisionPolicy {
    fn from(c: Collisions) -> Self {
        match c {
            Collisions::ExtraLevel => sidrec::quantize::CollisionPolicy::ExtraLevel,
            Collisions::Sinkhorn => sidrec::quantize::CollisionPolicy::Sinkhorn,
            Collisions::None => sidrec::quantize::CollisionPolicy::None,
        }
    }
}

/// Arguments of `sid`.
#[derive(Debug, Clone, Args)]
pub struct SidArgs {
    /// Dataset directory (items, splits; an existing index is replaced).
    #[arg(long, env = "SIDREC_DATA")]
    pub data: PathBuf,
    /// Item embeddings: `.npy`, float32 [items, dim], row i = the i-th item in id order. Several
    /// files (comma-separated, e.g. text and `embed-cooc` vectors) are joined side by side, each
    /// row of each file scaled to unit length first, so that each file counts by its weight
    /// rather than by its dimension or scale.
    #[arg(long, value_delimiter = ',', required = true)]
    pub embeddings: Vec<PathBuf>,
    /// With several `--embeddings`: the weight of each file's unit-length rows (default: 1 each).
    #[arg(long, value_delimiter = ',')]
    pub embedding_weights: Vec<f32>,
    /// Quantizer.
    #[arg(long, value_enum, default_value = "rq-kmeans")]
    pub method: SidMethod,
    /// Quantization levels.
    #[arg(long, default_value_t = 3)]
    pub levels: usize,
    /// Codes per level.
    #[arg(long, default_value_t = 256)]
    pub codebook_size: usize,
    /// Random seed (level l uses seed + l); the same seed gives the same SIDs.
    #[arg(long, default_value_t = 42, env = "SIDREC_SEED")]
    pub seed: u64,
    /// Collision policy.
    #[arg(long, value_enum, default_value = "extra-level")]
    pub collisions: Collisions,
    /// rq-kmeans: balanced assignment per level (sizes floor(n/K) or floor(n/K)+1).
    #[arg(long)]
    pub balanced: bool,
    /// Most Lloyd iterations per level.
    #[arg(long, default_value_t = 100)]
    pub max_iter: usize,
    /// rq-vae / rq-kmeans-plus: training epochs (default 150 / 100).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// rq-vae / rq-kmeans-plus: items per optimizer step (default 512 / 256).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// rq-vae / rq-kmeans-plus: learning rate after the warm-up (default 1e-3 / 1e-4).
    #[arg(long)]
    pub lr: Option<f64>,
    /// rq-vae / rq-kmeans-plus: epochs of linear learning-rate warm-up (default 5).
    #[arg(long)]
    pub warmup_epochs: Option<usize>,
    /// rq-vae / rq-kmeans-plus: evaluate the collision rate every this many epochs and keep the
    /// best model (default 10).
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// rq-vae / rq-kmeans-plus: compute device: cpu, cuda or cuda:N (CUDA needs `--features cuda`).
    #[arg(long, default_value = "cpu", env = "SIDREC_DEVICE")]
    pub device: String,
    /// Output directory (default: the dataset directory, whose SID columns and info file are
    /// rewritten). Another directory receives a complete consistent copy of the dataset.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Arguments of `sid-report`.
#[derive(Debug, Clone, Args)]
pub struct SidReportArgs {
    /// SID index (`.index.json`, or a dataset directory holding one).
    #[arg(long)]
    pub index: PathBuf,
    /// Item embeddings: `.npy`, float32 [items, dim], row i = the i-th indexed item in id order.
    #[arg(long)]
    pub embeddings: PathBuf,
    /// Codebook size used for utilisation (default: the largest code + 1, per level).
    #[arg(long)]
    pub codebook_size: Option<usize>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Arguments of `grpo`.
#[derive(Debug, Clone, Args)]
pub struct GrpoArgs {
    /// Starting checkpoint (usually an `sft` best); also the frozen KL reference.
    #[arg(long)]
    pub init: PathBuf,
    /// Dataset directory (train split for the RL prompts, valid split for validation).
    #[arg(long, env = "SIDREC_DATA")]
    pub data: PathBuf,
    /// Output directory: `best/` and `last/` checkpoints and `metrics.jsonl`.
    #[arg(long)]
    pub out: PathBuf,
    /// RL datasets: `all` or a comma list of seqrec (SID history), text2sid (title or
    /// description), title2sid (title history).
    #[arg(long, default_value = "all")]
    pub tasks: String,
    /// Train rows sampled for the title2sid task.
    #[arg(long, default_value_t = 10_000)]
    pub title_history_rows: usize,
    /// Extra SID-history prompts per train row with the history cut to its newest m items
    /// (distinct random m < its length): contexts the SFT model has not memorised. 0 = off (the
    /// reference).
    #[arg(long, default_value_t = 0)]
    pub truncated_histories: usize,
    /// In a group without the target, replace its last completion with the target (the
    /// reference's `add_gt`, which replaces it in every group): every prompt then gives a signal.
    #[arg(long)]
    pub add_target: bool,
    /// Reward: a comma list of rule, ranking, ranking_only, semantic, cf, hepo, each optionally
    /// weighted as NAME:WEIGHT (e.g. `ranking,semantic:0.5` or `rule,hepo:0.5`).
    #[arg(long, default_value = "ranking")]
    pub reward: String,
    /// Item embeddings for the `semantic` reward: a `trainer embed` `.npy` (its row ids are read
    /// from `<npy>.ids.json`).
    #[arg(long)]
    pub item_embeddings: Option<PathBuf>,
    /// A `sidrec-trainer sasrec` model directory: its logits are the `cf` reward.
    #[arg(long)]
    pub sasrec: Option<PathBuf>,
    /// How completions are generated: beam (deterministic, as the reference) or sample.
    #[arg(long, default_value = "beam")]
    pub rollout: String,
    /// Completions per prompt (the group size G).
    #[arg(long, default_value_t = 16)]
    pub num_generations: usize,
    /// Sampling temperature (`--rollout sample`).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// KL coefficient β.
    #[arg(long, default_value_t = 1e-3)]
    pub beta: f64,
    /// Ratio clipping ε, applied when `--num-iterations` > 1.
    #[arg(long, default_value_t = 0.2)]
    pub epsilon: f64,
    /// Optimizer steps per rollout batch (1 = the reference's on-policy update).
    #[arg(long, default_value_t = 1)]
    pub num_iterations: usize,
    /// Every N optimizer steps move the reference toward the policy (0: never).
    #[arg(long, default_value_t = 0)]
    pub sync_ref_every: usize,
    /// Mixing weight α of that sync: ref <- α·policy + (1−α)·ref.
    #[arg(long, default_value_t = 0.6)]
    pub ref_mixup_alpha: f64,
    /// Prompts per rollout batch (each gives G completions; one optimizer step per iteration).
    #[arg(long, default_value_t = 4)]
    pub prompts_per_step: usize,
    /// Completions per forward/backward pass (gradients are accumulated over the step).
    #[arg(long, default_value_t = 64)]
    pub micro_batch: usize,
    /// Passes over the RL prompts.
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Stop after this many optimizer steps.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-5)]
    pub lr: f64,
    /// Warmup as a fraction of all optimizer steps.
    #[arg(long, default_value_t = 0.03)]
    pub warmup_ratio: f64,
    /// Linear instead of cosine decay after warmup.
    #[arg(long)]
    pub linear: bool,
    /// Decoupled weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Global gradient-norm clip.
    #[arg(long, default_value_t = 0.3)]
    pub clip: f64,
    /// Dropout in the policy's training forward passes (not in rollouts, validation or the
    /// reference model); 0 = off, as the reference. Masks come from `--seed`.
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f32,
    /// Longest prompt in tokens (longer prompts lose their start).
    #[arg(long, default_value_t = 512)]
    pub max_prompt_len: usize,
    /// Validate every N optimizer steps (and at the end).
    #[arg(long, default_value_t = 50)]
    pub eval_every: usize,
    /// Valid rows used for validation.
    #[arg(long, default_value_t = 256)]
    pub valid_rows: usize,
    /// Beams for validation decoding (HR@10/NDCG@10 use the top 10).
    #[arg(long, default_value_t = 20)]
    pub valid_beams: usize,
    /// Stop after this many validations without improvement (default: never stop early).
    #[arg(long)]
    pub patience: Option<usize>,
    /// Log to metrics.jsonl every N steps.
    #[arg(long, default_value_t = 1)]
    pub log_every: usize,
    /// Seed of the prompt order and of the title-history sample.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Continue from `<out>/last` (same prompt order, optimizer and reference state) if it exists.
    #[arg(long)]
    pub resume: bool,
    /// Compute device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", env = "SIDREC_DEVICE")]
    pub device: String,
}
