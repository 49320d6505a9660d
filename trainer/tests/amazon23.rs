//! `data amazon23` on the hand-made Amazon-2023 fixture in `tests/fixtures/amazon23/`, every
//! expected value derived by hand below, and `data features` on a dataset without prices.
//!
//! Reviews (offsets in seconds after 2020-09-13T12:26:40Z, window 2020-01..2023-01, K = 2):
//! ```text
//! line user item  +s   rating verified
//!  1   U1   P1   100   5      yes
//!  2   U1   P2   300   4      yes
//!  3   U1   P7   500   5      yes
//!  4   U2   P2    50   5      yes
//!  5   U2   P1   400   4      yes
//!  6   U2   P4    60   3      yes   P4's title is empty → item invalid
//!  7   (no user_id)                 malformed
//!  8   U3   P3   700   3      yes
//!  9   U3   P1   200   3      no
//! 10   U3   P7   800   4      yes
//! 11   U4   P6    30   5      yes   P6: one review → removed in pass 1
//! 12   U4   P3    40   5      yes   U4 then has one → removed in pass 2
//! 13   not JSON                     malformed
//! 14   U5   P3   900   5      no
//! 15   U5   P2  1000   1      no
//! 16   U5   P7    20   1      yes
//! 17   (blank line: ignored)
//! 18   U1   P1   2019-06-01         before the window
//! 19   a JSON array                 malformed
//! 20   timestamp "soon"             malformed
//! 21   U2   P2   600   2      no
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use sidrec::data::{DatasetDir, Split};
use sidrec_trainer::data::amazon23::{process, Amazon23Options};
use sidrec_trainer::data::features::{FeatureSource, Features};

const BIN: &str = env!("CARGO_BIN_EXE_sidrec-trainer");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/amazon23")
        .join(name)
}

fn opts() -> Amazon23Options {
    Amazon23Options {
        k: 2,
        start: (2020, 1),
        end: (2023, 1),
    }
}

fn run_cli(reviews: &Path, meta: &Path, out: &Path) -> String {
    let o = Command::new(BIN)
        .args(["data", "amazon23", "--user-k", "2", "--start", "2020-01"])
        .args(["--end", "2023-01", "--reviews"])
        .arg(reviews)
        .arg("--meta")
        .arg(meta)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn fixture_matches_hand_derivation() {
    let res = process(
        &fixture("Fixture.jsonl"),
        &fixture("meta_Fixture.jsonl"),
        &opts(),
    )
    .unwrap();
    let r = &res.report;
    assert_eq!((r.reviews_read, r.reviews_malformed.count), (16, 4));
    let lines: Vec<&str> = r
        .reviews_malformed
        .first
        .iter()
        .map(|l| l.rsplit_once("Fixture.jsonl:").unwrap().1)
        .collect();
    assert_eq!(lines[0], "7: missing `user_id`");
    assert!(lines[1].starts_with("13: invalid JSON"), "{}", lines[1]);
    assert_eq!(lines[2], "19: not a JSON object");
    assert_eq!(lines[3], "20: `timestamp` is not an integer (milliseconds)");
    // Metadata: 8 good lines (P3 twice), 3 malformed: no parent_asin, cut-off JSON,
    // a non-integer rating_number.
    assert_eq!((r.meta_read, r.meta_malformed.count), (8, 3));
    assert!(r.meta_malformed.first[0].ends_with(":8: missing `parent_asin`"));
    assert!(r.meta_malformed.first[1].contains(":9: invalid JSON"));
    assert!(r.meta_malformed.first[2].ends_with(":11: `rating_number` is not a number"));
    // Valid titles: P1 P2 P3 P6 P7 (P4 empty; P5 `<i></i>` is empty once cleaned). P7's 25 words
    // are fine in 2023.
    assert_eq!(r.valid_titles, 5);

    // k-core: pass 1 (line 6's P4 and line 18's date out) counts 14 reviews and drops P6; pass 2
    // drops U4; pass 3 removes nothing.
    let p = &r.passes;
    assert_eq!(p.len(), 3);
    assert_eq!((p[0].users, p[0].items, p[0].reviews), (5, 5, 14));
    assert_eq!(p[0].removed_items, ["P6"]);
    assert_eq!(p[1].removed_users, ["U4"]);
    assert!(p[1].removed_items.is_empty());
    assert_eq!((p[2].users, p[2].items, p[2].reviews), (4, 4, 12));
    assert_eq!(r.user_ids, ["U1", "U2", "U3", "U5"]);
    // Items by first encounter, each user's reviews in time order: U1 → P1 P2 P7; U3 → P3.
    assert_eq!(r.item_asins, ["P1", "P2", "P7", "P3"]);
    assert_eq!((r.users, r.items, r.interactions), (4, 4, 12));

    // Samples by target time: A0 +300 (P2 ← [P1]), A1 +400, A0 +500, A1 +600, A2 +700, A2 +800 |
    // A3 +900 | A3 +1000. 8 samples → 6 / 1 / 1.
    let f = &res.files;
    let targets = |rows: &[sidrec::data::InteractionRow]| {
        rows.iter()
            .map(|r| (r.user_id.clone(), r.item_id))
            .collect::<Vec<_>>()
    };
    let s = |u: &str, i: u32| (u.to_string(), i);
    assert_eq!(
        targets(&f.train),
        [
            s("A0", 1),
            s("A1", 0),
            s("A0", 2),
            s("A1", 1),
            s("A2", 3),
            s("A2", 2)
        ]
    );
    assert_eq!(targets(&f.valid), [s("A3", 3)]);
    assert_eq!(targets(&f.test), [s("A3", 1)]);
    assert_eq!(f.test[0].history_item_id, [2, 3]);
    assert_eq!(f.train[3].history_item_id, [1, 0]);

    // Items: the 2023 field mapping; P3 from its last metadata line.
    let i0 = &f.items[&0];
    assert_eq!(i0.title, "Kestrel Brad Nails & Staples");
    assert_eq!(i0.description, "Strong nails Pack of 100");
    assert_eq!(i0.extra["features"], "Steel 1 inch");
    assert_eq!(i0.extra["categories"], "Tools, Fasteners");
    assert_eq!(i0.extra["brand"], "Kestrel");
    assert_eq!(i0.extra["main_category"], "Industrial & Scientific");
    assert_eq!(i0.extra["details"]["Material"], "Steel");
    assert_eq!(
        i0.extra["images"],
        serde_json::json!(["https://img/h1.jpg"])
    );
    assert_eq!(
        f.items[&1].extra["images"],
        serde_json::json!(["https://img/l2.jpg"])
    );
    assert_eq!(f.items[&2].title.split(' ').count(), 25);
    assert_eq!(f.items[&3].title, "Wood Glue Max");
    assert_eq!(f.items[&3].extra["brand"], "GlueCo");

    // Features: counts from train targets only; review aggregates over the events of A0..A2
    // (A3 = U5 has no train row, so its reviews — lines 14-16 — count nowhere).
    let x = &res.features;
    assert_eq!(x.source, FeatureSource::Amazon23);
    assert_eq!(x.train_rows, 6);
    let counts: Vec<u64> = x.items.values().map(|i| i.train_count).collect();
    assert_eq!(counts, [1, 2, 2, 1]);
    let (p1, p2, p7, p3) = (&x.items[&0], &x.items[&1], &x.items[&2], &x.items[&3]);
    assert_eq!(
        (p1.price, p1.average_rating, p1.rating_number),
        (Some(12.99), Some(4.5), Some(120))
    );
    assert_eq!(p2.price, Some(8.5)); // "$8.50"
    assert_eq!((p7.price, p7.average_rating), (None, None));
    assert_eq!((p3.price, p3.rating_number), (None, Some(9)));
    // P1: lines 1, 5, 9 → ratings 5 4 3, verified yes yes no.
    assert!(close(p1.mean_rating.unwrap(), 4.0) && close(p1.verified_share.unwrap(), 2.0 / 3.0));
    // P2: lines 2, 4, 21 (not 15) → 4 5 2; yes yes no.
    assert!(close(p2.mean_rating.unwrap(), 11.0 / 3.0));
    assert!(close(p2.verified_share.unwrap(), 2.0 / 3.0));
    // P7: lines 3, 10 (not 16). P3: line 8 (not 14).
    assert!(close(p7.mean_rating.unwrap(), 4.5) && close(p7.verified_share.unwrap(), 1.0));
    assert!(close(p3.mean_rating.unwrap(), 3.0) && close(p3.verified_share.unwrap(), 1.0));
    assert_eq!(x.users.keys().collect::<Vec<_>>(), ["A0", "A1", "A2"]);
    let a2 = &x.users["A2"];
    assert_eq!(a2.train_count, 2);
    assert!(close(a2.mean_rating.unwrap(), 10.0 / 3.0));
    assert!(close(a2.verified_share.unwrap(), 2.0 / 3.0));
    // Values: raw = ln(1+price) + ln(1+count); P2 is the highest, P3 the lowest.
    let raw = [
        13.99f64.ln() + 2f64.ln(),
        9.5f64.ln() + 3f64.ln(),
        3f64.ln(),
        2f64.ln(),
    ];
    let (lo, hi) = (raw[3], raw[1]);
    for (id, r) in raw.iter().enumerate() {
        assert!(close(x.value(id as u32), (r - lo) / (hi - lo)), "item {id}");
    }
}

#[test]
fn cli_reads_plain_and_gzip_alike_and_writes_features() {
    let dir = tempfile::tempdir().unwrap();
    let (plain, gz) = (dir.path().join("plain"), dir.path().join("gz"));
    let stdout = run_cli(
        &fixture("Fixture.jsonl"),
        &fixture("meta_Fixture.jsonl"),
        &plain,
    );
    assert!(
        stdout.contains("4 malformed review line(s) left out; first 4:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Fixture.jsonl:7: missing `user_id`"),
        "{stdout}"
    );
    assert!(
        stdout.contains("3 malformed metadata line(s) left out"),
        "{stdout}"
    );
    assert!(
        stdout.contains("train 6 / valid 1 / test 1 rows"),
        "{stdout}"
    );
    run_cli(
        &fixture("Fixture.jsonl.gz"),
        &fixture("meta_Fixture.jsonl.gz"),
        &gz,
    );
    for name in [
        "items.json",
        "train.csv",
        "valid.csv",
        "test.csv",
        "features.json",
    ] {
        let a = std::fs::read(plain.join(name)).unwrap();
        assert_eq!(a, std::fs::read(gz.join(name)).unwrap(), "{name}");
    }
    // The directory is a dataset, and its features read back.
    let ds = DatasetDir::discover(&plain).unwrap();
    assert_eq!(ds.read_split(Split::Train).unwrap().len(), 6);
    let f = Features::load(&plain).unwrap();
    assert_eq!(f.items.len(), 4);
    assert_eq!(f.value(1), 1.0);
    // `data features` does not silently replace the richer file.
    let o = Command::new(BIN)
        .args(["data", "features", "--data"])
        .arg(&plain)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
}

#[test]
fn gzip_fixture_is_the_plain_fixture() {
    use std::io::Read;
    for name in ["Fixture.jsonl", "meta_Fixture.jsonl"] {
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(fixture(&format!("{name}.gz"))).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, std::fs::read_to_string(fixture(name)).unwrap());
    }
}

#[test]
fn nothing_survives_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(BIN)
        .args(["data", "amazon23", "--user-k", "50", "--reviews"])
        .arg(fixture("Fixture.jsonl"))
        .arg("--meta")
        .arg(fixture("meta_Fixture.jsonl"))
        .arg("--out")
        .arg(dir.path().join("o"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("Fixture.jsonl: no review survives the window and the 50-core"),
        "{err}"
    );
    assert!(!dir.path().join("o").exists());
}

/// A dataset without prices: `data features` computes popularity from the train split alone.
#[test]
fn features_fallback_uses_the_train_split_only() {
    use sidrec::data::{DatasetFiles, InteractionRow, ItemMeta};
    let row = |u: &str, hist: &[u32], target: u32| InteractionRow {
        user_id: u.into(),
        history_item_title: hist.iter().map(|i| format!("t{i}")).collect(),
        item_title: format!("t{target}"),
        history_item_id: hist.to_vec(),
        item_id: target,
        history_item_sid: vec![],
        item_sid: String::new(),
    };
    let mut files = DatasetFiles {
        train: vec![
            row("A0", &[0], 1),
            row("A0", &[0, 1], 2),
            row("A1", &[3], 1),
        ],
        valid: vec![row("A1", &[3, 1], 0)],
        test: vec![row("A2", &[2], 3)],
        items: (0..5)
            .map(|i| (i, ItemMeta::new(format!("t{i}"), "")))
            .collect(),
        index: None,
    };
    let dir = tempfile::tempdir().unwrap();
    files.write(dir.path()).unwrap();
    let features = |force: bool| {
        let mut c = Command::new(BIN);
        c.args(["data", "features", "--data"]).arg(dir.path());
        if force {
            c.arg("--force");
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read(dir.path().join("features.json")).unwrap()
    };
    let before = features(false);
    let f = Features::load(dir.path()).unwrap();
    assert_eq!(f.source, FeatureSource::TrainPopularity);
    let counts: Vec<u64> = f.items.values().map(|i| i.train_count).collect();
    assert_eq!(counts, [0, 2, 1, 0, 0]);
    assert_eq!(f.value(1), 1.0);
    assert_eq!(f.value(0), 0.0);
    assert!(close(f.value(2), 2f64.ln() / 3f64.ln()));
    assert_eq!(f.users.keys().collect::<Vec<_>>(), ["A0", "A1"]);
    assert!(f.items.values().all(|i| i.price.is_none()));

    // Flood valid and test with item 0 and a new user: nothing in the features moves.
    files.valid.extend((0..50).map(|_| row("A9", &[4], 0)));
    files.test.extend((0..50).map(|_| row("A9", &[0], 4)));
    files.write(dir.path()).unwrap();
    assert_eq!(features(true), before);
    // The same flood in train does move them.
    files.train.extend((0..5).map(|_| row("A9", &[4], 0)));
    files.write(dir.path()).unwrap();
    assert_ne!(features(true), before);
    assert_eq!(Features::load(dir.path()).unwrap().value(0), 1.0);
}

/// On Industrial (no prices): every catalogue item gets a value, popular items the highest.
#[test]
fn features_on_industrial() {
    let Some(src) = sidrec::testing::industrial_dir() else {
        return;
    };
    let ds = DatasetDir::discover(&src).unwrap();
    let train = ds.read_split(Split::Train).unwrap();
    let items = ds.read_items().unwrap();
    let f = Features::from_train(&train, &items);
    assert_eq!(f.items.len(), items.len());
    assert_eq!(f.train_rows, train.len());
    let top = f.items.iter().max_by_key(|(_, x)| x.train_count).unwrap();
    assert_eq!(top.1.value, 1.0);
    assert!(f.items.values().all(|x| (0.0..=1.0).contains(&x.value)));
}
