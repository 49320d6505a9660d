//! A dataset directory: the three splits, item metadata and (optionally) the SID index.
//!
//! Our own layout uses fixed names (`train.csv`, `valid.csv`, `test.csv`, `items.json`,
//! `sid_index.json`, `info.txt`); a flat MiniOneRec-style folder (`<Name>.item.json`,
//! `<Name>.index.json`, `<Name>.info.txt`) is accepted as well.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::{index, info, items, split};
use crate::error::{Error, Result};
use crate::sid::SidIndex;

/// File names of our dataset layout.
pub mod names {
    /// Training split.
    pub const TRAIN: &str = "train.csv";
    /// Validation split.
    pub const VALID: &str = "valid.csv";
    /// Test split.
    pub const TEST: &str = "test.csv";
    /// Item metadata.
    pub const ITEMS: &str = "items.json";
    /// SID index.
    pub const SID_INDEX: &str = "sid_index.json";
    /// Info file (`SID<TAB>title<TAB>id`).
    pub const INFO: &str = "info.txt";
}

/// One of the three temporal splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// Earliest 80 % of samples.
    Train,
    /// Next 10 %.
    Valid,
    /// Latest 10 %.
    Test,
}

impl Split {
    /// All splits in temporal order.
    pub const ALL: [Split; 3] = [Split::Train, Split::Valid, Split::Test];

    /// The split's name (`train`, `valid`, `test`).
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Split {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "train" => Ok(Split::Train),
            "valid" | "validation" => Ok(Split::Valid),
            "test" => Ok(Split::Test),
            _ => Err(Error::Invalid(format!(
                "unknown split `{s}` (expected train, valid or test)"
            ))),
        }
    }
}

/// Where each file of a dataset directory is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetDir {
    /// The directory itself.
    pub root: PathBuf,
    /// Item metadata file.
    pub items: PathBuf,
    /// SID index, if the dataset has one.
    pub index: Option<PathBuf>,
    /// Info file, if present.
    pub info: Option<PathBuf>,
}

/// The single file in `dir` whose name ends with `suffix`, if exactly one exists.
fn one_with_suffix(dir: &Path, suffix: &str) -> Result<Option<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(suffix) && !name.starts_with('.') {
            found.push(entry.path());
        }
    }
    found.sort();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(Error::Invalid(format!(
            "{}: several `*{suffix}` files ({}); keep one",
            dir.display(),
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

impl DatasetDir {
    /// Find the files of the dataset in `root`.
    pub fn discover(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        if !root.is_dir() {
            return Err(Error::Invalid(format!(
                "{}: not a dataset directory",
                root.display()
            )));
        }
        let fixed = |name: &str| Some(root.join(name)).filter(|p| p.is_file());
        let items = match fixed(names::ITEMS) {
            Some(p) => p,
            None => one_with_suffix(&root, ".item.json")?.ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: no `{}` or `*.item.json`",
                    root.display(),
                    names::ITEMS
                ))
            })?,
        };
        let index = match fixed(names::SID_INDEX) {
            Some(p) => Some(p),
            None => one_with_suffix(&root, ".index.json")?,
        };
        let info = match fixed(names::INFO) {
            Some(p) => Some(p),
            None => one_with_suffix(&root, ".info.txt")?,
        };
        Ok(Self {
            root,
            items,
            index,
            info,
        })
    }

    /// Path of a split's CSV.
    pub fn split_path(&self, split: Split) -> PathBuf {
        self.root.join(format!("{}.csv", split.name()))
    }

    /// Read a split.
    pub fn read_split(&self, split: Split) -> Result<Vec<split::InteractionRow>> {
        split::read_split(self.split_path(split))
    }

    /// Read the item metadata.
    pub fn read_items(&self) -> Result<items::Items> {
        items::read_items(&self.items)
    }

    /// Read the SID index; an error if the dataset has none.
    pub fn read_index(&self) -> Result<SidIndex> {
        let p = self.index.as_ref().ok_or_else(|| {
            Error::Invalid(format!(
                "{}: no SID index (`{}` or `*.index.json`); build one with `sidrec-trainer sid`",
                self.root.display(),
                names::SID_INDEX
            ))
        })?;
        index::read_index(p)
    }

    /// Read the info file, if present.
    pub fn read_info(&self) -> Result<Option<Vec<info::InfoLine>>> {
        self.info.as_ref().map(info::read_info).transpose()
    }
}

/// The content of a dataset directory, for writing.
#[derive(Debug, Clone, Default)]
pub struct DatasetFiles {
    /// Training rows.
    pub train: Vec<split::InteractionRow>,
    /// Validation rows.
    pub valid: Vec<split::InteractionRow>,
    /// Test rows.
    pub test: Vec<split::InteractionRow>,
    /// Item metadata.
    pub items: items::Items,
    /// SID index (optional: synthesized and raw datasets get theirs from `trainer sid`).
    pub index: Option<SidIndex>,
}

impl DatasetFiles {
    /// The rows of a split.
    pub fn rows(&self, split: Split) -> &[split::InteractionRow] {
        match split {
            Split::Train => &self.train,
            Split::Valid => &self.valid,
            Split::Test => &self.test,
        }
    }

    /// Write all files into `dir` (each atomically) in our layout; returns the written paths.
    pub fn write(&self, dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut written = Vec::new();
        // Items first: a reader that finds the splits can rely on the metadata being there.
        let p = dir.join(names::ITEMS);
        items::write_items(&p, &self.items)?;
        written.push(p);
        if let Some(idx) = &self.index {
            let p = dir.join(names::SID_INDEX);
            index::write_index(&p, idx)?;
            written.push(p);
        }
        for s in Split::ALL {
            let p = dir.join(format!("{}.csv", s.name()));
            split::write_split(&p, self.rows(s))?;
            written.push(p);
        }
        Ok(written)
    }
}
