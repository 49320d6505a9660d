//! `data import-minionerec`: MiniOneRec's files → a dataset directory in our layout
//! (`train.csv valid.csv test.csv items.json sid_index.json info.txt`).
//!
//! Where the files come from (explicit `--train/--valid/--test/--items/--index/--info` flags
//! override whatever `--from` finds):
//! * a **MiniOneRec data tree** (MINIONEREC.md §1.2): `<root>/{train,valid,test}/<Name>*.csv`,
//!   `<root>/info/<Name>*.txt`, and `<Name>.item.json` / `<Name>.index.json` anywhere below the
//!   root (the reference keeps them in `<root>/index/` next to the splits' folders, or in
//!   `<root>/<Name>/`); with several datasets in one tree, `--name` picks one, otherwise the one
//!   whose name prefixes the CSV file name is taken;
//! * a **flat folder** such as `shared/data/industrial` (`train.csv`, `valid.csv`, `test.csv`,
//!   `<Name>.item.json`, `<Name>.index.json`, `<Name>.info.txt`), or one of our own dataset dirs.
//!
//! Before anything is written the inputs are checked against each other: every row's item ids
//! have metadata, every `item_sid` equals the index's SID of `item_id`, every history SID list
//! equals the index's SIDs of the history ids (ids without an index entry dropped, as
//! `convert_dataset.py` does), and every info line agrees with the index. Problems are reported
//! as `file:line: ...`.

use std::path::{Path, PathBuf};

use sidrec::data::info::{self, InfoLine};
use sidrec::data::{
    dataset::names, index, items, split, DatasetDir, DatasetFiles, InteractionRow, Split,
};
use sidrec::SidIndex;

use crate::cli::ImportArgs;
use crate::error::{Result, TrainerError};

/// How many problems are listed in an [`TrainerError::Inconsistent`] error.
const MAX_LISTED: usize = 20;

/// The input files of an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    /// Train split CSV.
    pub train: PathBuf,
    /// Validation split CSV.
    pub valid: PathBuf,
    /// Test split CSV.
    pub test: PathBuf,
    /// Item metadata.
    pub items: PathBuf,
    /// SID index, if any.
    pub index: Option<PathBuf>,
    /// Info file, if any.
    pub info: Option<PathBuf>,
}

impl Sources {
    /// The CSV of a split.
    pub fn split(&self, s: Split) -> &Path {
        match s {
            Split::Train => &self.train,
            Split::Valid => &self.valid,
            Split::Test => &self.test,
        }
    }
}

#[derive(Debug, Default)]
struct Found {
    train: Option<PathBuf>,
    valid: Option<PathBuf>,
    test: Option<PathBuf>,
    items: Option<PathBuf>,
    index: Option<PathBuf>,
    info: Option<PathBuf>,
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| TrainerError::io(dir, e))? {
        let entry = entry.map_err(|e| TrainerError::io(dir, e))?;
        out.push(entry.path());
    }
    out.sort();
    Ok(out)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Exactly one of `candidates`, or an error naming them.
fn one_of(mut candidates: Vec<PathBuf>, what: &str, where_: &Path) -> Result<Option<PathBuf>> {
    match candidates.len() {
        0 => Ok(None),
        1 => Ok(candidates.pop()),
        _ => Err(TrainerError::Invalid(format!(
            "{}: several {what} ({}); pick one with --name or an explicit flag",
            where_.display(),
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Files in `dir` (not hidden) ending with `suffix`, starting with `name` when given.
fn matching(dir: &Path, suffix: &str, name: Option<&str>) -> Result<Vec<PathBuf>> {
    Ok(list_dir(dir)?
        .into_iter()
        .filter(|p| p.is_file())
        .filter(|p| {
            let n = file_name(p);
            !n.starts_with('.')
                && n.ends_with(suffix)
                && name.is_none_or(|name| n.starts_with(name))
        })
        .collect())
}

/// Files below `root` (at most `depth` folders down) whose name ends with `suffix`.
fn find_below(root: &Path, suffix: &str, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    for p in list_dir(root)? {
        let n = file_name(&p);
        if n.starts_with('.') {
            continue;
        }
        if p.is_dir() && depth > 0 {
            find_below(&p, suffix, depth - 1, out)?;
        } else if p.is_file() && n.ends_with(suffix) {
            out.push(p);
        }
    }
    Ok(())
}

/// `<Name>.item.json` / `<Name>.index.json` somewhere below a tree's root.
fn find_named_json(
    root: &Path,
    suffix: &str,
    name: Option<&str>,
    csv: Option<&Path>,
) -> Result<Option<PathBuf>> {
    let mut all = Vec::new();
    find_below(root, suffix, 3, &mut all)?;
    let stem = |p: &PathBuf| file_name(p).trim_end_matches(suffix).to_string();
    let mut picked: Vec<PathBuf> = match name {
        Some(name) => all.into_iter().filter(|p| stem(p) == name).collect(),
        None => all,
    };
    if picked.len() > 1 {
        if let Some(csv) = csv {
            let csv_name = file_name(csv);
            picked.retain(|p| csv_name.starts_with(&stem(p)));
        }
    }
    one_of(picked, &format!("`*{suffix}` files"), root)
}

/// Find the input files of an import from `--from` and the explicit flags.
pub fn resolve(args: &ImportArgs) -> Result<Sources> {
    let mut f = Found::default();
    if let Some(root) = &args.from {
        if !root.is_dir() {
            return Err(TrainerError::Invalid(format!(
                "{}: no such directory",
                root.display()
            )));
        }
        let name = args.name.as_deref();
        if root.join(names::TRAIN).is_file() {
            let ds = DatasetDir::discover(root)?;
            f.train = Some(ds.split_path(Split::Train));
            f.valid = Some(ds.split_path(Split::Valid));
            f.test = Some(ds.split_path(Split::Test));
            f.items = Some(ds.items);
            f.index = ds.index;
            f.info = ds.info;
        } else if root.join("train").is_dir() {
            let csv = |s: &str| -> Result<Option<PathBuf>> {
                let dir = root.join(s);
                if !dir.is_dir() {
                    return Ok(None);
                }
                one_of(matching(&dir, ".csv", name)?, "split CSVs", &dir)
            };
            f.train = csv("train")?;
            f.valid = csv("valid")?;
            f.test = csv("test")?;
            let info_dir = root.join("info");
            if info_dir.is_dir() {
                f.info = one_of(matching(&info_dir, ".txt", name)?, "info files", &info_dir)?;
            }
            f.items = find_named_json(root, ".item.json", name, f.train.as_deref())?;
            f.index = find_named_json(root, ".index.json", name, f.train.as_deref())?;
        } else {
            return Err(TrainerError::Invalid(format!(
                "{}: neither a flat dataset folder (no `train.csv`) nor a MiniOneRec data tree (no `train/`)",
                root.display()
            )));
        }
    }
    let pick = |explicit: &Option<PathBuf>, found: Option<PathBuf>| explicit.clone().or(found);
    let need = |p: Option<PathBuf>, flag: &str| -> Result<PathBuf> {
        let p = p.ok_or_else(|| {
            TrainerError::Invalid(format!(
                "no {flag} file found: pass --{flag} FILE or --from DIR"
            ))
        })?;
        if !p.is_file() {
            return Err(TrainerError::io(
                &p,
                std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
            ));
        }
        Ok(p)
    };
    let optional = |p: Option<PathBuf>| -> Result<Option<PathBuf>> {
        match p {
            Some(p) if !p.is_file() => Err(TrainerError::io(
                &p,
                std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
            )),
            other => Ok(other),
        }
    };
    Ok(Sources {
        train: need(pick(&args.train, f.train), "train")?,
        valid: need(pick(&args.valid, f.valid), "valid")?,
        test: need(pick(&args.test, f.test), "test")?,
        items: need(pick(&args.items, f.items), "items")?,
        index: optional(pick(&args.index, f.index))?,
        info: optional(pick(&args.info, f.info))?,
    })
}

/// Check every row of `rows` (read from `path`) against the items and the index.
fn check_rows(
    path: &Path,
    rows: &[(u64, InteractionRow)],
    items: &sidrec::data::Items,
    index: Option<&SidIndex>,
    problems: &mut Vec<String>,
) {
    let at = |line: u64| format!("{}:{line}", path.display());
    for (line, r) in rows {
        for id in r.history_item_id.iter().chain(std::iter::once(&r.item_id)) {
            if !items.contains_key(id) {
                problems.push(format!(
                    "{}: item {id} has no metadata in the items file",
                    at(*line)
                ));
            }
        }
        let Some(index) = index else { continue };
        match index.get(r.item_id) {
            None => problems.push(format!(
                "{}: item {} has no SID in the index",
                at(*line),
                r.item_id
            )),
            Some(sid) if sid.to_string() != r.item_sid => problems.push(format!(
                "{}: item_sid `{}` but the index gives `{sid}` for item {}",
                at(*line),
                r.item_sid,
                r.item_id
            )),
            Some(_) => {}
        }
        let expected: Vec<String> = r
            .history_item_id
            .iter()
            .filter_map(|&i| index.get(i).map(|s| s.to_string()))
            .collect();
        if expected != r.history_item_sid {
            let first = expected
                .iter()
                .zip(&r.history_item_sid)
                .position(|(a, b)| a != b)
                .unwrap_or(expected.len().min(r.history_item_sid.len()));
            problems.push(format!(
                "{}: history_item_sid differs from the index at position {first} (CSV `{}`, index `{}`)",
                at(*line),
                r.history_item_sid.get(first).map(String::as_str).unwrap_or("<none>"),
                expected.get(first).map(String::as_str).unwrap_or("<none>")
            ));
        }
    }
}

fn check_info(path: &Path, lines: &[InfoLine], index: &SidIndex, problems: &mut Vec<String>) {
    for (i, l) in lines.iter().enumerate() {
        match index.get(l.item_id) {
            None => problems.push(format!(
                "{}:{}: item {} has no SID in the index",
                path.display(),
                i + 1,
                l.item_id
            )),
            Some(sid) if *sid != l.sid => problems.push(format!(
                "{}:{}: SID `{}` but the index gives `{sid}` for item {}",
                path.display(),
                i + 1,
                l.sid,
                l.item_id
            )),
            Some(_) => {}
        }
    }
}

/// An imported, checked dataset.
#[derive(Debug, Clone)]
pub struct Imported {
    /// Splits, items and index.
    pub files: DatasetFiles,
    /// Info lines (read, or made from the index and titles).
    pub info: Option<Vec<InfoLine>>,
}

/// Read and cross-check the sources.
pub fn import(src: &Sources) -> Result<Imported> {
    let items = items::read_items(&src.items)?;
    let index = src.index.as_ref().map(index::read_index).transpose()?;
    let info_lines = src.info.as_ref().map(info::read_info).transpose()?;
    let mut problems = Vec::new();
    let mut splits = Vec::new();
    for s in Split::ALL {
        let path = src.split(s);
        let rows = split::read_split_numbered(path)?;
        check_rows(path, &rows, &items, index.as_ref(), &mut problems);
        splits.push(rows.into_iter().map(|(_, r)| r).collect::<Vec<_>>());
    }
    if let (Some(lines), Some(idx), Some(p)) = (&info_lines, &index, &src.info) {
        check_info(p, lines, idx, &mut problems);
    }
    if !problems.is_empty() {
        let count = problems.len();
        problems.truncate(MAX_LISTED);
        return Err(TrainerError::Inconsistent {
            count,
            details: problems,
        });
    }
    let info = info_lines.or_else(|| {
        index.as_ref().map(|idx| {
            idx.iter()
                .map(|(id, sid)| InfoLine {
                    sid: sid.clone(),
                    title: items.get(&id).map(|m| m.title.clone()).unwrap_or_default(),
                    item_id: id,
                })
                .collect()
        })
    });
    let mut it = splits.into_iter();
    let files = DatasetFiles {
        train: it.next().unwrap_or_default(),
        valid: it.next().unwrap_or_default(),
        test: it.next().unwrap_or_default(),
        items,
        index,
    };
    Ok(Imported { files, info })
}

/// Write an import into `dir`; returns the written paths.
pub fn write(imp: &Imported, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = imp.files.write(dir)?;
    if let Some(lines) = &imp.info {
        let p = dir.join(names::INFO);
        info::write_info(&p, lines)?;
        written.push(p);
    }
    Ok(written)
}

/// `sidrec-trainer data import-minionerec`.
pub fn run(args: &ImportArgs) -> Result<()> {
    let src = resolve(args)?;
    for (what, p) in [
        ("train", Some(&src.train)),
        ("valid", Some(&src.valid)),
        ("test", Some(&src.test)),
        ("items", Some(&src.items)),
        ("index", src.index.as_ref()),
        ("info", src.info.as_ref()),
    ] {
        match p {
            Some(p) => println!("{what:>5}: {}", p.display()),
            None => println!("{what:>5}: (none)"),
        }
    }
    let imp = import(&src)?;
    println!(
        "checked: {} items, {} SIDs, train {} / valid {} / test {} rows, all consistent",
        imp.files.items.len(),
        imp.files.index.as_ref().map_or(0, SidIndex::len),
        imp.files.train.len(),
        imp.files.valid.len(),
        imp.files.test.len()
    );
    for p in write(&imp, &args.out)? {
        println!("wrote {}", p.display());
    }
    Ok(())
}
