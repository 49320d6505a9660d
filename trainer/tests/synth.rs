//! `data synth`: determinism, the reference's sample/split rules, readable titles, and a dataset
//! whose sequential signal a last-item-transition ranker can find.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use sidrec::data::{DatasetDir, Split};
use sidrec_trainer::data::samples::{build_and_split, split_boundaries, MAX_HISTORY};
use sidrec_trainer::data::stats;
use sidrec_trainer::data::synth::{synthesize, write, SynthConfig, SEQ_LEN};

const BIN: &str = env!("CARGO_BIN_EXE_sidrec-trainer");

fn small(seed: u64) -> SynthConfig {
    SynthConfig {
        items: 300,
        users: 200,
        seed,
    }
}

fn run_synth(dir: &std::path::Path, seed: u64) -> String {
    let out = Command::new(BIN)
        .args([
            "data", "synth", "--items", "300", "--users", "200", "--seed",
        ])
        .arg(seed.to_string())
        .arg("--out")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read_all(dir: &std::path::Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        files.insert(
            p.file_name().unwrap().to_string_lossy().into_owned(),
            std::fs::read(&p).unwrap(),
        );
    }
    files
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let d = tempfile::tempdir().unwrap();
    let (a, b, c) = (d.path().join("a"), d.path().join("b"), d.path().join("c"));
    let stdout = run_synth(&a, 7);
    run_synth(&b, 7);
    run_synth(&c, 8);
    for name in [
        "train.csv",
        "valid.csv",
        "test.csv",
        "items.json",
        "sid_index.json",
        "info.txt",
    ] {
        assert!(
            stdout.contains(&format!("wrote {}", a.join(name).display())),
            "{stdout}"
        );
    }
    let (fa, fb, fc) = (read_all(&a), read_all(&b), read_all(&c));
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    assert_eq!(fa, fb, "same seed must give identical files");
    for name in ["train.csv", "items.json"] {
        assert_ne!(fa[name], fc[name], "{name} should change with the seed");
    }
}

#[test]
fn samples_follow_the_reference_rules() {
    let ds = synthesize(small(1), false).unwrap();
    let f = &ds.files;
    let m = f.train.len() + f.valid.len() + f.test.len();
    let expected: usize = ds.users.iter().map(|u| u.events.len() - 1).sum();
    assert_eq!(m, expected, "one sample per position t >= 1");
    let (train_end, valid_end) = split_boundaries(m);
    assert_eq!(train_end, (m as f64 * 0.8) as usize);
    assert_eq!(f.train.len(), train_end);
    assert_eq!(f.valid.len(), valid_end - train_end);
    assert_eq!(f.test.len(), m - valid_end);

    for u in &ds.users {
        assert!((SEQ_LEN.0..=SEQ_LEN.1).contains(&u.events.len()));
        assert!(
            u.events.windows(2).all(|w| w[0].1 < w[1].1),
            "times increase"
        );
    }
    // Every row is a window of its user's sequence ending right before the target.
    let by_user: BTreeMap<&str, &Vec<(u32, i64)>> = ds
        .users
        .iter()
        .map(|u| (u.user_id.as_str(), &u.events))
        .collect();
    let index = f.index.as_ref().unwrap();
    for r in f.train.iter().chain(&f.valid).chain(&f.test) {
        assert!((1..=MAX_HISTORY).contains(&r.history_item_id.len()));
        let ev = by_user[r.user_id.as_str()];
        let ids: Vec<u32> = ev.iter().map(|e| e.0).collect();
        let n = r.history_item_id.len();
        let found = (n..ids.len()).any(|t| {
            ids[t] == r.item_id
                && ids[t - n..t] == r.history_item_id[..]
                && (t - n == 0 || n == MAX_HISTORY)
        });
        assert!(
            found,
            "row of {} is not a window of its sequence",
            r.user_id
        );
        assert_eq!(r.item_sid, index.get(r.item_id).unwrap().to_string());
        assert_eq!(r.item_title, f.items[&r.item_id].title);
    }
    // The global split is temporal: target times never decrease across train → valid → test.
    let s = build_and_split(&ds.users);
    let times: Vec<i64> = s
        .train
        .iter()
        .chain(&s.valid)
        .chain(&s.test)
        .map(|x| x.timestamp)
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn titles_are_readable_and_unique() {
    let ds = synthesize(
        SynthConfig {
            items: 1500,
            users: 10,
            seed: 5,
        },
        false,
    )
    .unwrap();
    let titles: Vec<&str> = ds.files.items.values().map(|m| m.title.as_str()).collect();
    let unique: BTreeSet<&str> = titles.iter().copied().collect();
    assert_eq!(unique.len(), titles.len(), "titles are unique");
    for t in &titles {
        assert!(
            !t.contains('{') && !t.contains('}') && !t.contains("  "),
            "{t}"
        );
        let words = t.split(' ').count();
        assert!((3..=20).contains(&words), "{t}");
        assert!(t.chars().next().unwrap().is_uppercase(), "{t}");
    }
    for m in ds.files.items.values() {
        assert!(m.description.starts_with("['") && m.description.ends_with("']"));
        assert!(m.extra["brand"]
            .as_str()
            .is_some_and(|b| m.title.starts_with(b)));
    }
    // Some brand sells in several categories.
    let mut cats: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in ds.files.items.values() {
        let cat = m.extra["categories"]
            .as_str()
            .unwrap()
            .split(',')
            .nth(1)
            .unwrap()
            .to_string();
        cats.entry(m.extra["brand"].as_str().unwrap().to_string())
            .or_default()
            .insert(cat);
    }
    assert!(cats.values().any(|c| c.len() >= 3));
    let sids: BTreeSet<String> = ds
        .files
        .index
        .as_ref()
        .unwrap()
        .iter()
        .map(|(_, s)| s.to_string())
        .collect();
    assert_eq!(sids.len(), 1500, "grammar SIDs are unique");
    println!("{}", titles[..8].join("\n"));
}

/// On the default synthetic dataset, the last-item-transition ranker beats popularity by at
/// least 2x in HR@10 on the test split.
#[test]
fn transitions_beat_popularity_twice_on_the_default_dataset() {
    let ds = synthesize(SynthConfig::default(), false).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(&ds, dir.path()).unwrap();
    let s = stats::compute(dir.path(), Split::Test).unwrap();
    let hr10 = |name: &str| s.baseline(name).unwrap().hr[&10];
    let (pop, trans) = (hr10("popularity"), hr10("last-item-transition"));
    println!("{}", stats::render(&s));
    println!("HR@10 popularity {pop:.4}, last-item-transition {trans:.4}");
    assert!(trans >= 2.0 * pop, "HR@10 {trans} vs popularity {pop}");
    assert!(pop > 0.0);
    let ds_dir = DatasetDir::discover(dir.path()).unwrap();
    assert!(ds_dir.index.is_some() && ds_dir.info.is_some());
}
