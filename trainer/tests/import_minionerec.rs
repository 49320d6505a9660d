//! `data import-minionerec`: the shipped Industrial folder, a MiniOneRec data tree, explicit
//! files, and mismatch reports.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sidrec::data::{split, DatasetDir, Split};
use sidrec_trainer::data::synth::{synthesize, write, SynthConfig};

const BIN: &str = env!("CARGO_BIN_EXE_sidrec-trainer");

fn trainer(args: &[&str], paths: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (flag, p) in paths {
        cmd.arg(flag).arg(p);
    }
    cmd.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn industrial_round_trip() {
    let Some(ind) = sidrec::testing::industrial_dir() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("industrial");
    let o = trainer(
        &["data", "import-minionerec"],
        &[("--from", &ind), ("--out", &out)],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(&format!("wrote {}", out.join("sid_index.json").display())));
    let ds = DatasetDir::discover(&out).unwrap();
    let counts: Vec<usize> = Split::ALL
        .iter()
        .map(|&s| ds.read_split(s).unwrap().len())
        .collect();
    assert_eq!(counts, [10393, 4532, 4533]);
    assert_eq!(ds.read_items().unwrap().len(), 3686);
    assert_eq!(ds.read_index().unwrap().len(), 3686);
    assert_eq!(ds.read_info().unwrap().unwrap().len(), 3686);
    // Rows survive unchanged; valid/test (published as is) even byte for byte.
    for s in Split::ALL {
        let name = format!("{}.csv", s.name());
        assert_eq!(
            split::read_split(ind.join(&name)).unwrap(),
            ds.read_split(s).unwrap(),
            "{name}"
        );
    }
    for name in ["valid.csv", "test.csv"] {
        assert_eq!(
            std::fs::read(ind.join(name)).unwrap(),
            std::fs::read(out.join(name)).unwrap()
        );
    }
    // Our own layout imports as well.
    let again = dir.path().join("again");
    let o = trainer(
        &["data", "import-minionerec"],
        &[("--from", &out), ("--out", &again)],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read(out.join("test.csv")).unwrap(),
        std::fs::read(again.join("test.csv")).unwrap()
    );
}

/// A MiniOneRec-style tree made from a small synthetic dataset, plus a decoy dataset's item file.
fn make_tree(root: &Path) -> (PathBuf, usize) {
    let ds = synthesize(
        SynthConfig {
            items: 200,
            users: 60,
            seed: 11,
        },
        false,
    )
    .unwrap();
    let flat = root.join("flat");
    write(&ds, &flat).unwrap();
    let tree = root.join("Amazon");
    let name = "Fix_5_2016-10-2018-11";
    for s in ["train", "valid", "test"] {
        std::fs::create_dir_all(tree.join(s)).unwrap();
        std::fs::copy(
            flat.join(format!("{s}.csv")),
            tree.join(s).join(format!("{name}.csv")),
        )
        .unwrap();
    }
    std::fs::create_dir_all(tree.join("info")).unwrap();
    std::fs::copy(
        flat.join("info.txt"),
        tree.join("info").join(format!("{name}.txt")),
    )
    .unwrap();
    std::fs::create_dir_all(tree.join("index")).unwrap();
    std::fs::copy(flat.join("items.json"), tree.join("index/Fix.item.json")).unwrap();
    std::fs::copy(
        flat.join("sid_index.json"),
        tree.join("index/Fix.index.json"),
    )
    .unwrap();
    std::fs::copy(flat.join("items.json"), tree.join("index/Other.item.json")).unwrap();
    (tree, ds.files.test.len())
}

#[test]
fn minionerec_tree_and_explicit_files() {
    let dir = tempfile::tempdir().unwrap();
    let (tree, n_test) = make_tree(dir.path());
    let out = dir.path().join("out");
    let o = trainer(
        &["data", "import-minionerec"],
        &[("--from", &tree), ("--out", &out)],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("index/Fix.item.json"), "{}", text(&o));
    assert_eq!(
        DatasetDir::discover(&out)
            .unwrap()
            .read_split(Split::Test)
            .unwrap()
            .len(),
        n_test
    );

    // An explicit flag overrides what the tree provides; a missing one is named.
    let missing = dir.path().join("nope.index.json");
    let o = trainer(
        &["data", "import-minionerec"],
        &[("--from", &tree), ("--index", &missing), ("--out", &out)],
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains(&missing.display().to_string()),
        "{}",
        text(&o)
    );

    // Only explicit files (no index, no info): SID columns are not checked.
    let o = trainer(
        &["data", "import-minionerec"],
        &[
            ("--train", &tree.join("train/Fix_5_2016-10-2018-11.csv")),
            ("--valid", &tree.join("valid/Fix_5_2016-10-2018-11.csv")),
            ("--test", &tree.join("test/Fix_5_2016-10-2018-11.csv")),
            ("--items", &tree.join("index/Fix.item.json")),
            ("--out", &dir.path().join("explicit")),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(DatasetDir::discover(dir.path().join("explicit"))
        .unwrap()
        .index
        .is_none());
}

#[test]
fn sid_mismatches_are_reported_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let (tree, _) = make_tree(dir.path());
    let valid = tree.join("valid/Fix_5_2016-10-2018-11.csv");
    let rows = split::read_split(&valid).unwrap();
    // Give row 3 (line 4) another item's SID.
    let mut bad = rows.clone();
    bad[2].item_sid = rows
        .iter()
        .find(|r| r.item_id != rows[2].item_id)
        .unwrap()
        .item_sid
        .clone();
    split::write_split(&valid, &bad).unwrap();
    let out = dir.path().join("out");
    let o = trainer(
        &["data", "import-minionerec"],
        &[("--from", &tree), ("--out", &out)],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let expected = format!("{}:4: item_sid `{}`", valid.display(), bad[2].item_sid);
    assert!(text(&o).contains(&expected), "{}", text(&o));
    assert!(text(&o).contains("1 inconsistencies"), "{}", text(&o));
    assert!(!out.exists(), "nothing is written when the inputs disagree");
}
