//! `sidrec-trainer sasrec`: train SASRec as the reference's `sasrec.py` does (MINIONEREC.md §8).
//!
//! One example per train row (history → target). Loss `bce`: binary cross-entropy with logits on
//! the target's logit (label 1) plus one uniformly sampled other item's logit (label 0), each
//! averaged over the batch; `ce`: softmax cross-entropy over the whole catalogue. Adam with L2
//! weight decay (PyTorch's `Adam(weight_decay=…)`), a full-ranking evaluation of the valid split
//! after every epoch, and early stopping when NDCG@20 has not improved for `--patience` epochs;
//! the best epoch's weights are kept. Initialisation, data order, negatives and dropout all come
//! from `--seed`, so a run repeats exactly on the same thread count.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var, D};
use clap::Args;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use sidrec::data::{DatasetDir, Split};
use sidrec::metrics::{MetricsAccumulator, MetricsReport, TOP_KS};
use sidrec::ItemId;

use super::model::{log_softmax_last, DropoutMasks, SasRecConfig, SasRecNet, SeqBatch};
use super::{finish_model_dir, rank_of_target, SasRecMeta, TrainSummary, METRICS_FILE};
use crate::error::{Result, TrainerError};
use crate::progress;

/// Training objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SasRecLoss {
    /// BCE on the target and one sampled negative (the reference's `--loss_type bce`).
    Bce,
    /// Softmax cross-entropy over every item.
    Ce,
}

impl std::fmt::Display for SasRecLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SasRecLoss::Bce => "bce",
            SasRecLoss::Ce => "ce",
        })
    }
}

/// Arguments of `sasrec` (defaults: the reference's hyper-parameters).
#[derive(Debug, Clone, Args)]
pub struct SasRecArgs {
    /// Dataset directory (train split for training, valid split for early stopping).
    #[arg(long, env = "SIDREC_DATA")]
    pub data: PathBuf,
    /// Output model directory (`model.safetensors`, `sasrec.json`, `metrics.jsonl`); built in a
    /// hidden temp directory beside it and renamed into place at the end.
    #[arg(long)]
    pub out: PathBuf,
    /// Objective.
    #[arg(long, value_enum, default_value = "bce")]
    pub loss: SasRecLoss,
    /// Most epochs.
    #[arg(long, default_value_t = 500)]
    pub epochs: usize,
    /// Epochs without a better valid NDCG@20 before stopping.
    #[arg(long, default_value_t = 20)]
    pub patience: usize,
    /// Rows per optimizer step.
    #[arg(long, default_value_t = 1024)]
    pub batch_size: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Adam L2 weight decay.
    #[arg(long, default_value_t = 1e-5)]
    pub weight_decay: f64,
    /// Embedding / hidden width.
    #[arg(long, default_value_t = 32)]
    pub hidden: usize,
    /// Longest history (newer items are kept).
    #[arg(long, default_value_t = 10)]
    pub max_len: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 1)]
    pub heads: usize,
    /// Dropout rate.
    #[arg(long, default_value_t = 0.3)]
    pub dropout: f64,
    /// Validate on only the first N valid rows.
    #[arg(long)]
    pub valid_limit: Option<usize>,
    /// Seed of initialisation, data order, negatives and dropout.
    #[arg(long, default_value_t = 42, env = "SIDREC_SEED")]
    pub seed: u64,
    /// Compute device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", env = "SIDREC_DEVICE")]
    pub device: String,
}

/// Histories and targets as vocabulary indices.
#[derive(Debug, Clone, Default)]
pub struct Examples {
    /// Histories, oldest first.
    pub histories: Vec<Vec<u32>>,
    /// Next item of each history.
    pub targets: Vec<u32>,
}

impl Examples {
    /// Rows.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// True without rows.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

/// Read a split's `history_item_id` / `item_id` columns as vocabulary indices; an unknown item
/// or an empty history is an error naming the file and line.
pub fn load_examples(
    path: &Path,
    index: &HashMap<ItemId, u32>,
    limit: Option<usize>,
) -> Result<Examples> {
    let mut rows = sidrec::data::split::read_split_numbered(path)?;
    if let Some(n) = limit {
        rows.truncate(n);
    }
    let mut ex = Examples::default();
    for (line, r) in rows {
        let idx = |id: ItemId| {
            index.get(&id).copied().ok_or_else(|| {
                TrainerError::parse(path, line, format!("item {id} is not in the catalogue"))
            })
        };
        if r.history_item_id.is_empty() {
            return Err(TrainerError::parse(path, line, "empty history_item_id"));
        }
        ex.histories.push(
            r.history_item_id
                .iter()
                .map(|&i| idx(i))
                .collect::<Result<_>>()?,
        );
        ex.targets.push(idx(r.item_id)?);
    }
    Ok(ex)
}

/// `log(1 + exp(x))` without overflow.
fn softplus(x: &Tensor) -> Result<Tensor> {
    let tail = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    Ok((x.relu()? + tail)?)
}

/// A uniformly drawn item other than `target` (the reference's negative).
fn sample_negative(target: u32, num_items: usize, rng: &mut ChaCha8Rng) -> u32 {
    loop {
        let n = rng.gen_range(0..num_items as u32);
        if n != target {
            return n;
        }
    }
}

/// The training loss of one batch (`rows` index into `ex`), with dropout and negatives from
/// `rng`.
pub fn batch_loss(
    net: &SasRecNet,
    ex: &Examples,
    rows: &[usize],
    loss: SasRecLoss,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Result<Tensor> {
    let cfg = net.cfg;
    let hist: Vec<&[u32]> = rows.iter().map(|&i| ex.histories[i].as_slice()).collect();
    let targets: Vec<u32> = rows.iter().map(|&i| ex.targets[i]).collect();
    let batch = SeqBatch::new(&hist, &cfg, device)?;
    let masks = if cfg.dropout > 0.0 {
        Some(DropoutMasks::draw(&cfg, rows.len(), rng, device)?)
    } else {
        None
    };
    let hidden = net.hidden(&batch, masks.as_ref())?;
    let target_t = Tensor::from_vec(targets.clone(), rows.len(), device)?;
    match loss {
        SasRecLoss::Bce => {
            let negs: Vec<u32> = targets
                .iter()
                .map(|&t| sample_negative(t, cfg.num_items, rng))
                .collect();
            let neg_t = Tensor::from_vec(negs, rows.len(), device)?;
            let pos = net.item_logits(&hidden, &target_t)?;
            let neg = net.item_logits(&hidden, &neg_t)?;
            Ok((softplus(&pos.neg()?)?.mean_all()? + softplus(&neg)?.mean_all()?)?)
        }
        SasRecLoss::Ce => {
            let lsm = log_softmax_last(&net.all_logits(&hidden)?)?;
            let picked = lsm.gather(&target_t.unsqueeze(1)?, D::Minus1)?;
            Ok(picked.mean_all()?.neg()?)
        }
    }
}

/// PyTorch's `Adam` (L2 weight decay added to the gradient, bias-corrected moments).
pub struct Adam {
    vars: Vec<Var>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: i32,
    lr: f64,
    weight_decay: f64,
}

impl Adam {
    /// Zero moments for `vars`.
    pub fn new(vars: Vec<Var>, lr: f64, weight_decay: f64) -> Result<Self> {
        let m = vars
            .iter()
            .map(|v| v.zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            v: m.clone(),
            m,
            vars,
            step: 0,
            lr,
            weight_decay,
        })
    }

    /// One update from `grads` (variables without a gradient still decay, as in PyTorch where
    /// every parameter of the model has a dense gradient).
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        const B1: f64 = 0.9;
        const B2: f64 = 0.999;
        const EPS: f64 = 1e-8;
        self.step += 1;
        let bc1 = 1.0 - B1.powi(self.step);
        let bc2 = 1.0 - B2.powi(self.step);
        for (i, var) in self.vars.iter().enumerate() {
            // Detached: otherwise every moment would keep the previous step's op graph alive and
            // memory would grow with each step.
            let theta = var.as_tensor().detach();
            let g = match grads.get(var.as_tensor()) {
                Some(g) => g.detach(),
                None => theta.zeros_like()?,
            };
            let g = if self.weight_decay != 0.0 {
                (g + (&theta * self.weight_decay)?)?
            } else {
                g
            };
            let m = ((&self.m[i] * B1)? + (&g * (1.0 - B1))?)?;
            let v = ((&self.v[i] * B2)? + (g.sqr()? * (1.0 - B2))?)?;
            let denom = ((&v / bc2)?.sqrt()? + EPS)?;
            let update = ((&m / bc1)? / denom)?;
            var.set(&(&theta - (update * self.lr)?)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }
}

/// Full-ranking HR/NDCG@{1,3,5,10,20,50} of `net` on `ex` (nothing excluded; ties go to the
/// lower vocabulary index).
pub fn full_ranking_metrics(
    net: &SasRecNet,
    ex: &Examples,
    batch_size: usize,
    device: &Device,
) -> Result<MetricsReport> {
    let mut acc = MetricsAccumulator::new(TOP_KS.to_vec());
    let order: Vec<usize> = (0..ex.len()).collect();
    for chunk in order.chunks(batch_size.max(1)) {
        let hist: Vec<&[u32]> = chunk.iter().map(|&i| ex.histories[i].as_slice()).collect();
        let batch = SeqBatch::new(&hist, &net.cfg, device)?;
        let logits = net
            .all_logits(&net.hidden(&batch, None)?)?
            .to_vec2::<f32>()?;
        for (&i, row) in chunk.iter().zip(&logits) {
            acc.add(Some(rank_of_target(row, ex.targets[i] as usize)), 0);
        }
    }
    Ok(acc.report())
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize)]
struct EpochLog {
    epoch: usize,
    loss: f64,
    valid_hr: std::collections::BTreeMap<usize, f64>,
    valid_ndcg: std::collections::BTreeMap<usize, f64>,
    best_ndcg20: f64,
    seconds: f64,
}

/// The best epoch so far: its number, valid metrics and weights.
struct Best {
    epoch: usize,
    report: MetricsReport,
    weights: Vec<(String, Tensor)>,
}

fn ndcg20(r: &MetricsReport) -> f64 {
    r.ndcg.get(&20).copied().unwrap_or(0.0)
}

/// `sidrec-trainer sasrec`: train, keep the best epoch, write the model directory.
pub fn run(args: &SasRecArgs) -> Result<SasRecMeta> {
    if args.batch_size == 0 || args.epochs == 0 {
        return Err(TrainerError::Invalid(
            "sasrec: --batch-size and --epochs must be at least 1".into(),
        ));
    }
    let device = sidrec::device::parse_device(&args.device)?;
    let ds = DatasetDir::discover(&args.data)?;
    let items: Vec<ItemId> = ds.read_items()?.keys().copied().collect();
    if items.len() < 2 {
        return Err(TrainerError::Invalid(format!(
            "{}: sasrec needs at least 2 items",
            args.data.display()
        )));
    }
    let index: HashMap<ItemId, u32> = items
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, i as u32))
        .collect();
    let train = load_examples(&ds.split_path(Split::Train), &index, None)?;
    let valid = load_examples(&ds.split_path(Split::Valid), &index, args.valid_limit)?;
    if train.is_empty() || valid.is_empty() {
        return Err(TrainerError::Invalid(format!(
            "{}: sasrec needs train and valid rows",
            args.data.display()
        )));
    }
    let cfg = SasRecConfig {
        num_items: items.len(),
        hidden: args.hidden,
        max_len: args.max_len,
        num_heads: args.heads,
        dropout: args.dropout,
    };
    cfg.validate()?;

    let mut init_rng = ChaCha8Rng::seed_from_u64(args.seed);
    let net = SasRecNet::init(cfg, &mut init_rng, &device)?;
    let mut order_rng = ChaCha8Rng::seed_from_u64(args.seed);
    order_rng.set_stream(1);
    let mut noise_rng = ChaCha8Rng::seed_from_u64(args.seed);
    noise_rng.set_stream(2);
    let mut adam = Adam::new(
        net.vars().iter().map(|(_, v)| v.clone()).collect(),
        args.lr,
        args.weight_decay,
    )?;

    let work = super::work_dir_for(&args.out)?;
    std::fs::create_dir_all(&work).map_err(|e| TrainerError::io(&work, e))?;
    let log_path = work.join(METRICS_FILE);
    let mut log = std::fs::File::create(&log_path).map_err(|e| TrainerError::io(&log_path, e))?;
    eprintln!(
        "sasrec: {} items, {} train / {} valid rows, loss {}; live log {}",
        items.len(),
        train.len(),
        valid.len(),
        args.loss,
        log_path.display()
    );

    let start = Instant::now();
    let pb = progress::bar(args.epochs as u64, "sasrec epochs");
    let mut best: Option<Best> = None;
    let mut since_best = 0;
    let mut epochs_run = 0;
    let mut order: Vec<usize> = (0..train.len()).collect();
    let result = (|| -> Result<()> {
        for epoch in 1..=args.epochs {
            order.shuffle(&mut order_rng);
            let mut loss_sum = 0.0;
            for chunk in order.chunks(args.batch_size) {
                let loss = batch_loss(&net, &train, chunk, args.loss, &mut noise_rng, &device)?;
                let grads = loss.backward()?;
                adam.step(&grads)?;
                loss_sum += loss.to_scalar::<f32>()? as f64 * chunk.len() as f64;
            }
            let loss = loss_sum / train.len() as f64;
            if !loss.is_finite() {
                return Err(TrainerError::Invalid(format!(
                    "sasrec: the loss became {loss} at epoch {epoch} (try a lower --lr)"
                )));
            }
            let report = full_ranking_metrics(&net, &valid, 1024, &device)?;
            epochs_run = epoch;
            let improved = best
                .as_ref()
                .is_none_or(|b| ndcg20(&report) > ndcg20(&b.report));
            if improved {
                best = Some(Best {
                    epoch,
                    report: report.clone(),
                    weights: net.snapshot()?,
                });
                since_best = 0;
            } else {
                since_best += 1;
            }
            let best_ndcg = best.as_ref().map_or(0.0, |b| ndcg20(&b.report));
            let line = EpochLog {
                epoch,
                loss,
                valid_hr: report.hr.clone(),
                valid_ndcg: report.ndcg.clone(),
                best_ndcg20: best_ndcg,
                seconds: start.elapsed().as_secs_f64(),
            };
            let json = serde_json::to_string(&line)
                .map_err(|e| TrainerError::Invalid(format!("serialising metrics: {e}")))?;
            writeln!(log, "{json}").map_err(|e| TrainerError::io(&log_path, e))?;
            pb.set_message(format!(
                "loss {loss:.4} ndcg@20 {:.4} best {best_ndcg:.4}",
                ndcg20(&report)
            ));
            pb.inc(1);
            if since_best >= args.patience {
                break;
            }
        }
        Ok(())
    })();
    pb.finish_and_clear();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&work);
        return Err(e);
    }
    log.sync_all().map_err(|e| TrainerError::io(&log_path, e))?;
    let Some(Best {
        epoch: best_epoch,
        report: valid_report,
        weights: snapshot,
    }) = best
    else {
        return Err(TrainerError::Invalid("sasrec: no epoch ran".into()));
    };
    let meta = SasRecMeta {
        format_version: super::FORMAT_VERSION,
        version: String::new(),
        config: cfg,
        items,
        train: Some(TrainSummary {
            data: args.data.display().to_string(),
            loss: args.loss.to_string(),
            seed: args.seed,
            lr: args.lr,
            weight_decay: args.weight_decay,
            batch_size: args.batch_size,
            patience: args.patience,
            train_rows: train.len(),
            valid_rows: valid.len(),
            epochs_run,
            best_epoch,
            wall_seconds: start.elapsed().as_secs_f64(),
        }),
        valid: Some(valid_report.clone()),
        weights_sha256: String::new(),
        created_unix: 0,
    };
    let meta = finish_model_dir(&work, &args.out, &snapshot, meta)?;
    println!(
        "sasrec: {epochs_run} epochs in {:.1} s, best epoch {best_epoch}: valid NDCG@20 {:.4}, HR@10 {:.4}",
        start.elapsed().as_secs_f64(),
        ndcg20(&valid_report),
        valid_report.hr.get(&10).copied().unwrap_or(0.0)
    );
    println!("wrote {}", args.out.display());
    Ok(meta)
}
