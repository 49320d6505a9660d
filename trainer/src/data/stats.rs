//! `data stats`: counts, history lengths, repeat rates, SID collisions, and two baselines
//! (popularity, last-item transition; see [`crate::baselines`]) evaluated on one split with
//! HR@K / NDCG@K.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use sidrec::data::{DatasetDir, InteractionRow, Split};
use sidrec::{ItemId, SidIndex};

use crate::baselines::{rank_of, LastItemTransition, Popularity, Ranker};
use crate::cli::StatsArgs;
use crate::error::{Result, TrainerError};
use crate::progress;
use sidrec::metrics::{MetricsAccumulator, MetricsReport, TOP_KS};

/// SID sharing in the dataset's index.
#[derive(Debug, Clone, Serialize)]
pub struct CollisionSummary {
    /// Items in the index.
    pub items: usize,
    /// Distinct SIDs.
    pub unique_sids: usize,
    /// SIDs shared by two or more items.
    pub collided_groups: usize,
    /// Items whose SID is shared.
    pub collided_items: usize,
    /// Size of the largest group (1 when nothing collides).
    pub max_group_size: usize,
    /// SID levels (longest SID).
    pub levels: usize,
}

/// The compiled SID trie of the dataset's index (what constrained decoding walks).
#[derive(Debug, Clone, Serialize)]
pub struct TrieSummary {
    /// Nodes at each depth (the root is depth 0).
    pub nodes_per_depth: Vec<usize>,
    /// Bytes of its flat tables.
    pub heap_bytes: usize,
    /// Wall time of the compile (ms).
    pub build_ms: f64,
}

/// Compile the SID trie of `index` (token ids assigned in the reference's sorted order).
pub fn trie_summary(index: &SidIndex) -> Result<TrieSummary> {
    let start = std::time::Instant::now();
    let vocab = sidrec::trie::SidVocab::sequential(index, 0)?;
    let trie = sidrec::trie::SidTrie::build(index, &vocab)?;
    let build_ms = start.elapsed().as_secs_f64() * 1e3;
    Ok(TrieSummary {
        nodes_per_depth: (0..=trie.num_levels()).map(|d| trie.num_nodes(d)).collect(),
        heap_bytes: trie.heap_bytes(),
        build_ms,
    })
}

/// A baseline's scores on the evaluated split.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineResult {
    /// Ranker name.
    pub name: String,
    /// HR@K / NDCG@K.
    pub metrics: MetricsReport,
}

/// Everything `data stats` reports.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetStats {
    /// The dataset directory.
    pub data: String,
    /// Items in the item metadata.
    pub items: usize,
    /// Distinct items appearing anywhere in the splits.
    pub items_in_splits: usize,
    /// Distinct users over all splits.
    pub users: usize,
    /// Rows per split.
    pub rows: BTreeMap<String, usize>,
    /// Distinct users per split.
    pub users_per_split: BTreeMap<String, usize>,
    /// The split the histogram, rates and baselines refer to.
    pub split: String,
    /// History length → rows.
    pub history_length: BTreeMap<usize, usize>,
    /// Mean history length.
    pub mean_history_length: f64,
    /// Share of rows whose target equals the last history item.
    pub repeat_last_rate: f64,
    /// Share of rows whose target appears anywhere in the history.
    pub target_in_history_rate: f64,
    /// Share of rows whose target is never a train target (unreachable for the baselines).
    pub cold_target_rate: f64,
    /// SID collisions, when the dataset has an index.
    pub collisions: Option<CollisionSummary>,
    /// The compiled SID trie, when the dataset has an index.
    pub trie: Option<TrieSummary>,
    /// Baselines fitted on train and evaluated on `split`.
    pub baselines: Vec<BaselineResult>,
}

impl DatasetStats {
    /// A baseline's report by name.
    pub fn baseline(&self, name: &str) -> Option<&MetricsReport> {
        self.baselines
            .iter()
            .find(|b| b.name == name)
            .map(|b| &b.metrics)
    }
}

/// Collisions of an index.
pub fn collisions(index: &SidIndex) -> CollisionSummary {
    let mut groups: BTreeMap<String, usize> = BTreeMap::new();
    for (_, sid) in index.iter() {
        *groups.entry(sid.to_string()).or_default() += 1;
    }
    let shared: Vec<usize> = groups.values().copied().filter(|&n| n > 1).collect();
    CollisionSummary {
        items: index.len(),
        unique_sids: groups.len(),
        collided_groups: shared.len(),
        collided_items: shared.iter().sum(),
        max_group_size: shared.iter().copied().max().unwrap_or(1),
        levels: index.max_levels(),
    }
}

/// Evaluate `ranker` on `rows` (top-`max(ks)` lists, nothing excluded).
pub fn evaluate(ranker: &dyn Ranker, rows: &[InteractionRow], name: &str) -> MetricsReport {
    let k_max = TOP_KS.iter().copied().max().unwrap_or(50);
    let mut acc = MetricsAccumulator::new(TOP_KS.to_vec());
    let pb = progress::bar(rows.len() as u64, name);
    for r in rows {
        let list = ranker.recommend(&r.history_item_id, k_max);
        acc.add(rank_of(&list, r.item_id), 0);
        pb.inc(1);
    }
    pb.finish_and_clear();
    acc.report()
}

fn ratio(n: usize, d: usize) -> f64 {
    if d == 0 {
        0.0
    } else {
        n as f64 / d as f64
    }
}

/// Compute the statistics of the dataset in `dir`, evaluating on `split`.
pub fn compute(dir: &Path, split: Split) -> Result<DatasetStats> {
    let ds = DatasetDir::discover(dir)?;
    let items = ds.read_items()?;
    let mut rows_by_split = BTreeMap::new();
    for s in Split::ALL {
        rows_by_split.insert(s.name(), ds.read_split(s)?);
    }
    let get = |s: Split| {
        rows_by_split
            .get(s.name())
            .map(Vec::as_slice)
            .unwrap_or(&[])
    };
    let train = get(Split::Train);
    let eval = get(split);
    if train.is_empty() {
        return Err(TrainerError::Invalid(format!(
            "{}: the train split is empty; nothing to fit the baselines on",
            ds.split_path(Split::Train).display()
        )));
    }

    let mut all_users = BTreeSet::new();
    let mut all_items: BTreeSet<ItemId> = BTreeSet::new();
    let mut rows = BTreeMap::new();
    let mut users_per_split = BTreeMap::new();
    for s in Split::ALL {
        let rs = get(s);
        let users: BTreeSet<&str> = rs.iter().map(|r| r.user_id.as_str()).collect();
        users_per_split.insert(s.name().to_string(), users.len());
        all_users.extend(users);
        for r in rs {
            all_items.insert(r.item_id);
            all_items.extend(&r.history_item_id);
        }
        rows.insert(s.name().to_string(), rs.len());
    }

    let mut history_length = BTreeMap::new();
    let (mut repeat_last, mut in_history, mut cold, mut hist_sum) = (0, 0, 0, 0);
    let train_targets: BTreeSet<ItemId> = train.iter().map(|r| r.item_id).collect();
    for r in eval {
        *history_length.entry(r.history_item_id.len()).or_insert(0) += 1;
        hist_sum += r.history_item_id.len();
        repeat_last += usize::from(r.history_item_id.last() == Some(&r.item_id));
        in_history += usize::from(r.history_item_id.contains(&r.item_id));
        cold += usize::from(!train_targets.contains(&r.item_id));
    }

    let (collisions, trie) = match &ds.index {
        Some(_) => {
            let index = ds.read_index()?;
            (Some(collisions(&index)), Some(trie_summary(&index)?))
        }
        None => (None, None),
    };

    let pop = Popularity::fit(train);
    let trans = LastItemTransition::fit(train);
    let baselines = vec![
        BaselineResult {
            name: "popularity".into(),
            metrics: evaluate(&pop, eval, "popularity"),
        },
        BaselineResult {
            name: "last-item-transition".into(),
            metrics: evaluate(&trans, eval, "last-item-transition"),
        },
    ];

    Ok(DatasetStats {
        data: dir.display().to_string(),
        items: items.len(),
        items_in_splits: all_items.len(),
        users: all_users.len(),
        rows,
        users_per_split,
        split: split.name().to_string(),
        history_length,
        mean_history_length: ratio(hist_sum, eval.len()),
        repeat_last_rate: ratio(repeat_last, eval.len()),
        target_in_history_rate: ratio(in_history, eval.len()),
        cold_target_rate: ratio(cold, eval.len()),
        collisions,
        trie,
        baselines,
    })
}

/// Human-readable rendering (baselines as a Markdown table).
pub fn render(s: &DatasetStats) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "dataset: {}", s.data);
    let _ = writeln!(
        o,
        "items: {} in items.json, {} appear in the splits; users: {}",
        s.items, s.items_in_splits, s.users
    );
    for name in ["train", "valid", "test"] {
        let _ = writeln!(
            o,
            "  {name:<5} rows {:>7}  users {:>6}",
            s.rows.get(name).copied().unwrap_or(0),
            s.users_per_split.get(name).copied().unwrap_or(0)
        );
    }
    let _ = writeln!(o, "split `{}`:", s.split);
    let hist: Vec<String> = s
        .history_length
        .iter()
        .map(|(l, n)| format!("{l}:{n}"))
        .collect();
    let _ = writeln!(o, "  history length histogram: {}", hist.join(" "));
    let _ = writeln!(o, "  mean history length: {:.2}", s.mean_history_length);
    let _ = writeln!(
        o,
        "  target == last history item: {:.2}%   target in history: {:.2}%   target never a train target: {:.2}%",
        100.0 * s.repeat_last_rate,
        100.0 * s.target_in_history_rate,
        100.0 * s.cold_target_rate
    );
    match &s.collisions {
        Some(c) => {
            let _ = writeln!(
                o,
                "SID index: {} items, {} unique SIDs, {} collided groups ({} items, largest {}), {} levels",
                c.items, c.unique_sids, c.collided_groups, c.collided_items, c.max_group_size, c.levels
            );
        }
        None => {
            let _ = writeln!(o, "SID index: none");
        }
    }
    if let Some(t) = &s.trie {
        let nodes: Vec<String> = t.nodes_per_depth.iter().map(|n| n.to_string()).collect();
        let _ = writeln!(
            o,
            "SID trie: nodes per depth {}, {} bytes, compiled in {:.1} ms",
            nodes.join("/"),
            t.heap_bytes,
            t.build_ms
        );
    }
    if let Some(first) = s.baselines.first() {
        let _ = writeln!(
            o,
            "\nbaselines (fitted on train, evaluated on {} rows of `{}`):",
            first.metrics.n, s.split
        );
        let _ = writeln!(o, "{}", baseline_table(&s.baselines));
    }
    o
}

/// A Markdown table with one row per baseline: HR@K columns, then NDCG@K columns.
pub fn baseline_table(baselines: &[BaselineResult]) -> String {
    let Some(first) = baselines.first() else {
        return String::new();
    };
    let ks = &first.metrics.ks;
    let mut o = String::from("| ranker |");
    for k in ks {
        let _ = write!(o, " HR@{k} |");
    }
    for k in ks {
        let _ = write!(o, " NDCG@{k} |");
    }
    o.push_str("\n|---|");
    o.push_str(&"---:|".repeat(2 * ks.len()));
    for b in baselines {
        let _ = write!(o, "\n| {} |", b.name);
        for map in [&b.metrics.hr, &b.metrics.ndcg] {
            for k in ks {
                let _ = write!(o, " {:.4} |", map.get(k).copied().unwrap_or(f64::NAN));
            }
        }
    }
    o
}

/// `sidrec-trainer data stats`.
pub fn run(args: &StatsArgs) -> Result<()> {
    let stats = compute(&args.data, args.split)?;
    print!("{}", render(&stats));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&stats)
            .map_err(|e| TrainerError::Invalid(format!("{}: {e}", path.display())))?;
        sidrec::io::write_bytes_atomic(path, text.as_bytes())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
