//! `sid` (build Semantic IDs from item embeddings) and `sid-report` (judge any SID index).
//!
//! `sid` reads the dataset directory and the embeddings (`.npy`, float32 `[items, dim]`, row `i` =
//! the `i`-th item in id order; several files are joined side by side as weighted unit-length
//! rows, e.g. text and `embed-cooc` vectors), builds SIDs with `sidrec::quantize`, and writes `sid_index.json`
//! and `sid-report.json`. Writing into the dataset directory itself (the default) also rewrites
//! the SID columns of the three split CSVs and the info file from the new index, so the dataset
//! stays consistent; with `--out DIR` a complete dataset (items, index, splits, info, report) is
//! written into `DIR` and the input is left alone. Every file is written atomically.

use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use sidrec::data::dataset::names;
use sidrec::data::index::{read_index, write_index};
use sidrec::data::info::{write_info, InfoLine};
use sidrec::data::split::write_split;
use sidrec::data::{DatasetDir, DatasetFiles, InteractionRow, Split};
use sidrec::npy::{read_npy, Matrix};
use sidrec::quantize::{build_sids, sid_report, Method, RqConfig, SidReport};
use sidrec::{ItemId, SidIndex};

use crate::cli::{SidArgs, SidReportArgs};
use crate::error::{Result, TrainerError};
use crate::progress;

/// Name of the report written beside the index.
pub const REPORT_FILE: &str = "sid-report.json";

/// The SID columns of `rows` recomputed from `index` (history SIDs of unindexed items are
/// dropped and a missing target SID is empty, as the reference's converter does).
pub fn resid_rows(rows: &mut [InteractionRow], index: &SidIndex) {
    for r in rows {
        r.history_item_sid = r
            .history_item_id
            .iter()
            .filter_map(|&i| index.get(i).map(|s| s.to_string()))
            .collect();
        r.item_sid = index
            .get(r.item_id)
            .map(|s| s.to_string())
            .unwrap_or_default();
    }
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| TrainerError::Invalid(format!("cannot serialise the report: {e}")))?;
    sidrec::io::write_bytes_atomic(path, format!("{text}\n").as_bytes())?;
    Ok(())
}

/// Progress bars that follow the library's `(stage, done, total)` events.
struct Bars {
    current: Option<(String, ProgressBar)>,
}

impl Bars {
    fn update(&mut self, stage: &str, done: u64, total: u64) {
        if self.current.as_ref().is_none_or(|(s, _)| s != stage) {
            if let Some((_, pb)) = self.current.take() {
                pb.finish_and_clear();
            }
            self.current = Some((stage.to_string(), progress::bar(total, stage)));
        }
        if let Some((_, pb)) = &self.current {
            pb.set_length(total);
            pb.set_position(done);
        }
    }

    fn finish(&mut self) {
        if let Some((_, pb)) = self.current.take() {
            pb.finish_and_clear();
        }
    }
}

/// Read embeddings and check them against the number of items.
fn read_embeddings(path: &Path, items: usize) -> Result<Matrix> {
    let m = read_npy(path)?;
    if m.rows != items {
        return Err(TrainerError::Invalid(format!(
            "{}: {} embedding rows but the dataset has {items} items (row i must be the i-th item \
             in id order)",
            path.display(),
            m.rows
        )));
    }
    Ok(m)
}

/// The `--embeddings` files as one matrix: one file as it is; several side by side, each row of
/// each file scaled to unit length (a zero row stays zero) and then by the file's weight.
fn joined_embeddings(paths: &[PathBuf], weights: &[f32], items: usize) -> Result<Matrix> {
    if !weights.is_empty() && weights.len() != paths.len() {
        return Err(TrainerError::Invalid(format!(
            "--embedding-weights has {} values for {} --embeddings files",
            weights.len(),
            paths.len()
        )));
    }
    if let Some(w) = weights.iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
        return Err(TrainerError::Invalid(format!(
            "--embedding-weights must be finite and non-negative (got {w})"
        )));
    }
    let blocks = paths
        .iter()
        .map(|p| read_embeddings(p, items))
        .collect::<Result<Vec<_>>>()?;
    if let [one] = &blocks[..] {
        if !weights.is_empty() {
            eprintln!("note: --embedding-weights only affects two or more --embeddings files");
        }
        return Ok(one.clone());
    }
    let cols: usize = blocks.iter().map(|b| b.cols).sum();
    let mut data = Vec::with_capacity(items * cols);
    for i in 0..items {
        for (k, b) in blocks.iter().enumerate() {
            let r = b.row(i);
            let norm = r.iter().map(|x| x * x).sum::<f32>().sqrt();
            let scale = if norm > 0.0 {
                weights.get(k).copied().unwrap_or(1.0) / norm
            } else {
                0.0
            };
            data.extend(r.iter().map(|x| x * scale));
        }
    }
    Ok(Matrix::new(items, cols, data))
}

/// `sidrec-trainer sid`.
pub fn run(args: &SidArgs) -> Result<()> {
    let ds = DatasetDir::discover(&args.data)?;
    let items = ds.read_items()?;
    let ids: Vec<ItemId> = items.keys().copied().collect();
    let x = joined_embeddings(&args.embeddings, &args.embedding_weights, ids.len())?;
    let mut cfg = RqConfig {
        method: args.method.into(),
        levels: args.levels,
        codebook_size: args.codebook_size,
        seed: args.seed,
        balanced: args.balanced,
        collisions: args.collisions.into(),
        max_iter: args.max_iter,
        ..RqConfig::default()
    };
    let trained = matches!(cfg.method, Method::RqVae | Method::RqKmeansPlus);
    if trained {
        let mut n = cfg.neural_config();
        n.epochs = args.epochs.unwrap_or(n.epochs);
        n.batch_size = args.batch_size.unwrap_or(n.batch_size);
        n.lr = args.lr.unwrap_or(n.lr);
        n.warmup_epochs = args.warmup_epochs.unwrap_or(n.warmup_epochs);
        n.eval_every = args.eval_every.unwrap_or(n.eval_every);
        n.device = args.device.clone();
        if n.batch_size == 0 || n.eval_every == 0 {
            return Err(TrainerError::Invalid(
                "--batch-size and --eval-every must be at least 1".into(),
            ));
        }
        if !(n.lr.is_finite() && n.lr > 0.0) {
            return Err(TrainerError::Invalid(format!(
                "--lr must be a positive number (got {})",
                n.lr
            )));
        }
        cfg.neural = Some(n);
    } else if args.epochs.is_some()
        || args.batch_size.is_some()
        || args.lr.is_some()
        || args.warmup_epochs.is_some()
        || args.eval_every.is_some()
    {
        eprintln!("note: --epochs, --batch-size, --lr, --warmup-epochs and --eval-every only affect rq-vae and rq-kmeans-plus");
    }
    if args.balanced && cfg.method != Method::RqKmeans {
        eprintln!(
            "note: --balanced only affects rq-kmeans (rq-kmeans-constrained is always balanced)"
        );
    }
    eprintln!(
        "building SIDs: {} on {} items x {} dims, {} levels x {} codes, seed {}",
        cfg.method, x.rows, x.cols, cfg.levels, cfg.codebook_size, cfg.seed
    );
    let mut bars = Bars { current: None };
    let out = build_sids(&x, &cfg, &mut |s, d, t| bars.update(s, d, t))?;
    bars.finish();
    let index: SidIndex = ids.iter().copied().zip(out.sids).collect();

    let in_place = match &args.out {
        None => true,
        Some(o) => same_dir(o, &ds.root),
    };
    let out_dir = args.out.clone().unwrap_or_else(|| ds.root.clone());
    let mut written = Vec::new();
    let splits = {
        let mut v = Vec::new();
        for s in Split::ALL {
            let p = ds.split_path(s);
            let mut rows = if p.is_file() {
                ds.read_split(s)?
            } else {
                Vec::new()
            };
            resid_rows(&mut rows, &index);
            v.push((s, p.is_file(), rows));
        }
        v
    };
    let info: Vec<InfoLine> = index
        .iter()
        .map(|(id, sid)| InfoLine {
            sid: sid.clone(),
            title: items.get(&id).map(|m| m.title.clone()).unwrap_or_default(),
            item_id: id,
        })
        .collect();
    if in_place {
        // Index first: a reader that sees new split SIDs finds the matching index.
        let p = ds.root.join(names::SID_INDEX);
        write_index(&p, &index)?;
        written.push(p);
        for (s, exists, rows) in &splits {
            if *exists {
                let p = ds.split_path(*s);
                write_split(&p, rows)?;
                written.push(p);
            }
        }
        let p = ds.info.clone().unwrap_or_else(|| ds.root.join(names::INFO));
        write_info(&p, &info)?;
        written.push(p);
        if let Some(old) = ds
            .index
            .as_ref()
            .filter(|p| !same_file(p, &ds.root.join(names::SID_INDEX)))
        {
            eprintln!(
                "note: {} is left as it was; {} (the new index) takes precedence when the dataset is read",
                old.display(),
                names::SID_INDEX
            );
        }
    } else {
        let [(_, _, train), (_, _, valid), (_, _, test)] = <[_; 3]>::try_from(splits)
            .map_err(|_| TrainerError::Invalid("internal: three splits expected".into()))?;
        let files = DatasetFiles {
            train,
            valid,
            test,
            items,
            index: Some(index),
        };
        written.extend(files.write(&out_dir)?);
        let p = out_dir.join(names::INFO);
        write_info(&p, &info)?;
        written.push(p);
    }
    let p = out_dir.join(REPORT_FILE);
    write_json(&p, &out.report)?;
    written.push(p);
    println!("{}", out.report.summary());
    for p in written {
        println!("wrote {}", p.display());
    }
    Ok(())
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    same_dir(a, b)
}

/// The report for an index file (or a dataset directory holding one) and embeddings.
pub fn report_for(
    index: &Path,
    embeddings: &Path,
    codebook_size: Option<usize>,
) -> Result<SidReport> {
    let index_path: PathBuf = if index.is_dir() {
        DatasetDir::discover(index)?.index.ok_or_else(|| {
            TrainerError::Invalid(format!(
                "{}: no SID index in this directory",
                index.display()
            ))
        })?
    } else {
        index.to_path_buf()
    };
    let idx = read_index(&index_path)?;
    let x = read_embeddings(embeddings, idx.len())?;
    Ok(sid_report(&idx, &x, codebook_size)?)
}

/// `sidrec-trainer sid-report`.
pub fn run_report(args: &SidReportArgs) -> Result<()> {
    let r = report_for(&args.index, &args.embeddings, args.codebook_size)?;
    println!("{}", r.summary());
    if let Some(p) = &args.json {
        write_json(p, &r)?;
        println!("wrote {}", p.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sidrec::npy::write_npy;

    #[test]
    fn several_embedding_files_join_as_weighted_unit_rows() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("text.npy");
        let cooc = dir.path().join("cooc.npy");
        write_npy(&text, &Matrix::new(2, 2, vec![3.0, 4.0, 0.0, 2.0])).unwrap();
        write_npy(&cooc, &Matrix::new(2, 1, vec![-5.0, 0.0])).unwrap();
        let paths = [text.clone(), cooc.clone()];
        let x = joined_embeddings(&paths, &[1.0, 2.0], 2).unwrap();
        assert_eq!((x.rows, x.cols), (2, 3));
        // Row 0: (3, 4) / 5 and -5 / 5 · 2; row 1: (0, 2) / 2 and a zero row kept zero.
        assert_eq!(x.data, vec![0.6, 0.8, -2.0, 0.0, 1.0, 0.0]);
        // One file is used as it is.
        let one = joined_embeddings(std::slice::from_ref(&text), &[], 2).unwrap();
        assert_eq!(one.data, vec![3.0, 4.0, 0.0, 2.0]);
        let err = joined_embeddings(&paths, &[1.0], 2).unwrap_err();
        assert!(err.to_string().contains("1 values for 2"), "{err}");
        let err = joined_embeddings(&paths, &[1.0, -1.0], 2).unwrap_err();
        assert!(err.to_string().contains("non-negative"), "{err}");
        let err = joined_embeddings(&paths, &[], 3).unwrap_err();
        assert!(err.to_string().contains("3 items"), "{err}");
    }
}
