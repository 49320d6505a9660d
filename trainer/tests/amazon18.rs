//! `data amazon18` on a small hand-made Amazon-2018 fixture, with every expected value derived by
//! hand below.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use serde_json::json;
use sidrec::data::{DatasetDir, Split};
use sidrec_trainer::data::amazon18::{process, Amazon18Options};

const BIN: &str = env!("CARGO_BIN_EXE_sidrec-trainer");
/// 2017-03-20T09:06:40Z; every in-window review is a few seconds after it.
const B: i64 = 1_490_000_000;

fn meta_lines() -> Vec<serde_json::Value> {
    let long: Vec<&str> = vec!["word"; 21];
    vec![
        // Entities in the title; HTML in the description list; a 2018 `category` field that the
        // reference never reads.
        json!({"asin": "I1", "title": "Kestrel &quot;Pro&quot; Brad Nails &amp; Staples",
               "description": ["<b>Strong</b> nails &amp; staples", "Pack of  100"],
               "brand": "Kestrel", "category": ["Industrial & Scientific", "Fasteners"]}),
        // Spaces then quotes stripped; empty description; "by\n" brand prefix.
        json!({"asin": "I2", "title": "  \"Safety Glasses, Clear\"  ", "description": [],
               "brand": "by\nClearSight "}),
        // `<span id` → invalid.
        json!({"asin": "I3", "title": "Glue <span id=\"x\">Stick</span>", "brand": "X"}),
        // 21 words → invalid.
        json!({"asin": "I4", "title": long.join(" ")}),
        json!({"asin": "I5", "title": "Hex Bolts 1/4 Inch",
               "description": ["Zinc&nbsp;plated", "It's <i>tough</i>"]}),
        json!({"asin": "I6", "title": "Wood Glue"}),
        json!({"asin": "I7", "title": "Caulk Gun"}),
        // No title at all → invalid (never reviewed anyway).
        json!({"asin": "I8", "brand": "Y"}),
    ]
}

fn review(user: &str, asin: &str, time: i64) -> serde_json::Value {
    json!({"reviewerID": user, "asin": asin, "unixReviewTime": time, "overall": 5.0})
}

fn review_lines() -> Vec<serde_json::Value> {
    vec![
        review("U1", "I1", B + 100),       // r1
        review("U2", "I2", B + 50),        // r2
        review("U1", "I2", B + 300),       // r3
        review("U1", "I1", 1_470_000_000), // r4: 2016-07-31, before the 2017-01 start
        review("U2", "I1", B + 400),       // r5
        review("U3", "I3", B + 10),        // r6: item without a valid title
        review("U3", "I5", B + 500),       // r7: out of time order in the file
        review("U3", "I1", B + 200),       // r8
        review("U4", "I7", B + 30),        // r9: I7 has 1 review → removed in pass 1
        review("U4", "I6", B + 40),        // r10: U4 then has 1 → removed in pass 2
        review("U5", "I6", B + 60),        // r11: I6 then has 1 → removed in pass 3
        review("U5", "I5", B + 70),        // r12
        review("U5", "I1", B + 700),       // r13
        review("U2", "I4", B + 20),        // r14: item with a 21-word title
        review("U1", "I1", B + 800),       // r15: duplicate (U1, I1), kept
        review("U5", "I2", B + 800),       // r16: same time as r15 (stable sort)
    ]
}

fn write_lines(path: &Path, lines: &[serde_json::Value], gz: bool) {
    let mut text = String::new();
    for l in lines {
        text.push_str(&l.to_string());
        text.push('\n');
    }
    if gz {
        let f = std::fs::File::create(path).unwrap();
        let mut enc = flate2::write::GzEncoder::new(f, flate2::Compression::default());
        enc.write_all(text.as_bytes()).unwrap();
        enc.finish().unwrap();
    } else {
        std::fs::write(path, text).unwrap();
    }
}

fn opts(min_items: usize) -> Amazon18Options {
    Amazon18Options {
        k: 2,
        start: (2017, 1),
        end: (2017, 12),
        min_items,
    }
}

const T1: &str = "Kestrel \"Pro\" Brad Nails & Staples";
const T2: &str = "Safety Glasses, Clear";
const T5: &str = "Hex Bolts 1/4 Inch";

#[test]
fn fixture_matches_hand_derivation() {
    let dir = tempfile::tempdir().unwrap();
    let (reviews, meta) = (
        dir.path().join("Fix_5.json.gz"),
        dir.path().join("meta_Fix.json"),
    );
    write_lines(&reviews, &review_lines(), true);
    write_lines(&meta, &meta_lines(), false);
    let out_dir = dir.path().join("out");
    let out = Command::new(BIN)
        .args([
            "data", "amazon18", "--user-k", "2", "--start", "2017-01", "--end", "2017-12",
        ])
        .args(["--min-items", "1", "--reviews"])
        .arg(&reviews)
        .arg("--meta")
        .arg(&meta)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("wrote {}", out_dir.join("train.csv").display())),
        "{stdout}"
    );

    // Library view: the k-core passes.
    //   pass 1 (r4 out of window; I3, I4 without valid titles): I7 has 1 review → removed.
    //   pass 2: U4 is left with r10 only → removed (a user removed only on the second pass).
    //   pass 3: I6 is left with r11 only → removed (an item removed only on the third pass).
    //   pass 4: U1 3, U2 2, U3 2, U5 3; I1 5, I2 3, I5 2 → nothing removed.
    let res = process(&reviews, &meta, &opts(1)).unwrap();
    let p = &res.report.passes;
    assert_eq!(p.len(), 4);
    assert_eq!((p[0].users, p[0].items, p[0].reviews), (5, 5, 13));
    assert_eq!(p[0].removed_items, ["I7"]);
    assert!(p[0].removed_users.is_empty());
    assert_eq!(p[1].removed_users, ["U4"]);
    assert!(p[1].removed_items.is_empty());
    assert_eq!(p[2].removed_items, ["I6"]);
    assert!(p[2].removed_users.is_empty());
    assert_eq!((p[3].users, p[3].items, p[3].reviews), (4, 3, 10));
    assert!(p[3].removed_users.is_empty() && p[3].removed_items.is_empty());
    // Users by first appearance: U1, U2, U3, U5. Items by first encounter walking users in that
    // order, each sorted by time: U1 → I1 (0), I2 (1); U3 → I5 (2).
    assert_eq!(res.report.user_ids, ["U1", "U2", "U3", "U5"]);
    assert_eq!(res.report.item_asins, ["I1", "I2", "I5"]);
    assert_eq!(res.report.start_year, 2017);
    assert_eq!(res.report.valid_titles, 5); // I1 I2 I5 I6 I7

    // Files as written.
    let ds = DatasetDir::discover(&out_dir).unwrap();
    assert!(ds.index.is_none());
    let items = ds.read_items().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[&0].title, T1);
    assert_eq!(
        items[&0].description,
        "['Strong nails & staples', 'Pack of 100']"
    );
    assert_eq!(items[&0].extra["brand"], "Kestrel");
    assert_eq!(items[&0].extra["categories"], "");
    assert_eq!(items[&1].title, T2);
    assert_eq!(items[&1].description, "");
    assert_eq!(items[&1].extra["brand"], "ClearSight");
    assert_eq!(items[&2].title, T5);
    assert_eq!(items[&2].description, "['Zinc plated', \"It's tough\"]");
    assert_eq!(items[&2].extra["brand"], "");

    // Sequences: A0 = U1: I1@100 I2@300 I1@800; A1 = U2: I2@50 I1@400; A2 = U3: I1@200 I5@500;
    // A3 = U5: I5@70 I1@700 I2@800. Samples sorted by target time (stable, so A0's @800 sample
    // precedes A3's): @300 @400 @500 @700 | @800 (A0) | @800 (A3). M = 6: int(4.8) = 4,
    // int(5.4) = 5 → 4 / 1 / 1.
    let train = ds.read_split(Split::Train).unwrap();
    let valid = ds.read_split(Split::Valid).unwrap();
    let test = ds.read_split(Split::Test).unwrap();
    let summary = |rows: &[sidrec::data::InteractionRow]| {
        rows.iter()
            .map(|r| (r.user_id.clone(), r.history_item_id.clone(), r.item_id))
            .collect::<Vec<_>>()
    };
    let s = |u: &str, h: &[u32], t: u32| (u.to_string(), h.to_vec(), t);
    assert_eq!(
        summary(&train),
        [
            s("A0", &[0], 1),
            s("A1", &[1], 0),
            s("A2", &[0], 2),
            s("A3", &[2], 0)
        ]
    );
    assert_eq!(summary(&valid), [s("A0", &[0, 1], 0)]);
    assert_eq!(summary(&test), [s("A3", &[2, 0], 1)]);
    assert_eq!(valid[0].history_item_title, [T1, T2]);
    assert_eq!(valid[0].item_title, T1);
    assert_eq!(test[0].history_item_title, [T5, T1]);
    for r in train.iter().chain(&valid).chain(&test) {
        assert!(r.history_item_sid.is_empty());
        assert_eq!(r.item_sid, "");
    }
    let csv = std::fs::read_to_string(out_dir.join("test.csv")).unwrap();
    assert!(csv.ends_with(",[],\n"), "{csv}");
}

#[test]
fn too_few_items_moves_the_start_back_to_1996() {
    let dir = tempfile::tempdir().unwrap();
    let (reviews, meta) = (dir.path().join("r.json"), dir.path().join("m.json"));
    write_lines(&reviews, &review_lines(), false);
    write_lines(&meta, &meta_lines(), false);
    // 3 items < 4: the start steps back a year at a time; from 2016 on r4 is in the window, but
    // the count stays 3, so it goes on until st_year = 1996.
    let res = process(&reviews, &meta, &opts(4)).unwrap();
    assert_eq!(res.report.start_year, 1996);
    assert_eq!(res.report.items, 3);
    assert_eq!(res.report.interactions, 11);
    // U1 gains its 2016 review (I1, first in time): 4 events → 3 samples; 7 samples in all.
    let n = res.files.train.len() + res.files.valid.len() + res.files.test.len();
    assert_eq!(n, 7);
    assert_eq!((res.files.train.len(), res.files.valid.len()), (5, 1));
    assert_eq!(res.files.train[0].user_id, "A0");
    assert_eq!(res.files.train[0].history_item_id, [0]);
    assert_eq!(res.files.train[0].item_id, 0);
}
