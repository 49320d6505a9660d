//! `sid` and `sid-report` end to end: a synthesized dataset gets learned SIDs and stays
//! consistent; runs are deterministic per seed; the shipped Industrial index can be reported on.
//!
//! No real text embeddings exist in the repository, so the embeddings here are synthetic:
//! Gaussian random vectors (seeded), and for the synthesized dataset a random projection of each
//! item's title words (so items sharing words get nearby vectors).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Command;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sidrec::data::{DatasetDir, Split};
use sidrec::npy::{write_npy, Matrix};
use sidrec_trainer::data::synth::{synthesize, write, SynthConfig};

const BIN: &str = env!("CARGO_BIN_EXE_sidrec-trainer");

fn gaussian(n: usize, d: usize, seed: u64) -> Matrix {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Matrix::new(
        n,
        d,
        (0..n * d)
            .map(|_| rng.gen_range(-1.0f32..1.0) + rng.gen_range(-1.0f32..1.0))
            .collect(),
    )
}

/// Random projection of title words: each word a seeded random vector, an item the mean.
fn title_projection(titles: &[String], d: usize) -> Matrix {
    let mut words: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    let mut data = Vec::with_capacity(titles.len() * d);
    for t in titles {
        let toks: Vec<String> = t
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        let mut v = vec![0f32; d];
        for w in &toks {
            let e = words.entry(w.clone()).or_insert_with(|| {
                let seed = w.bytes().fold(1469598103934665603u64, |h, b| {
                    (h ^ b as u64).wrapping_mul(1099511628211)
                });
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                (0..d).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
            });
            v.iter_mut().zip(e.iter()).for_each(|(a, b)| *a += b);
        }
        let k = toks.len().max(1) as f32;
        data.extend(v.into_iter().map(|a| a / k));
    }
    Matrix::new(titles.len(), d, data)
}

fn run(args: &[&str], extra: &[&Path]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for p in extra {
        cmd.arg(p);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn synth_dataset(dir: &Path) -> Vec<String> {
    let ds = synthesize(
        SynthConfig {
            items: 400,
            users: 250,
            seed: 5,
        },
        false,
    )
    .unwrap();
    write(&ds, dir).unwrap();
    ds.files.items.values().map(|m| m.title.clone()).collect()
}

fn check_consistent(dir: &Path) -> sidrec::SidIndex {
    let ds = DatasetDir::discover(dir).unwrap();
    let index = ds.read_index().unwrap();
    let items = ds.read_items().unwrap();
    assert_eq!(index.len(), items.len());
    let sids: HashSet<String> = index.iter().map(|(_, s)| s.to_string()).collect();
    assert_eq!(sids.len(), index.len(), "extra-level must make SIDs unique");
    for s in Split::ALL {
        for r in ds.read_split(s).unwrap() {
            assert_eq!(r.item_sid, index.get(r.item_id).unwrap().to_string());
            let h: Vec<String> = r
                .history_item_id
                .iter()
                .map(|&i| index.get(i).unwrap().to_string())
                .collect();
            assert_eq!(r.history_item_sid, h);
        }
    }
    let info = ds.read_info().unwrap().unwrap();
    assert_eq!(info.len(), index.len());
    for l in info {
        assert_eq!(&l.sid, index.get(l.item_id).unwrap());
    }
    index
}

#[test]
fn sid_rewrites_the_dataset_consistently_and_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let titles = synth_dataset(&data);
    let emb = tmp.path().join("items.npy");
    write_npy(&emb, &title_projection(&titles, 24)).unwrap();
    let grammar = DatasetDir::discover(&data).unwrap().read_index().unwrap();

    let out = run(
        &[
            "sid",
            "--levels",
            "3",
            "--codebook-size",
            "8",
            "--seed",
            "3",
            "--data",
        ],
        &[&data, Path::new("--embeddings"), &emb],
    );
    assert!(out.contains("collision rate"), "{out}");
    assert!(out.contains("sid_index.json"), "{out}");
    let index = check_consistent(&data);
    assert_ne!(index, grammar, "the grammar SIDs were not replaced");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("sid-report.json")).unwrap())
            .unwrap();
    assert_eq!(report["method"], "rq-kmeans");
    assert_eq!(report["after"]["collision_rate"], 0.0);
    assert_eq!(report["levels"].as_array().unwrap().len(), 3);

    // Same seed into another directory: identical index; the copy is a complete dataset.
    let copy = tmp.path().join("copy");
    run(
        &[
            "sid",
            "--levels",
            "3",
            "--codebook-size",
            "8",
            "--seed",
            "3",
            "--data",
        ],
        &[
            &data,
            Path::new("--embeddings"),
            &emb,
            Path::new("--out"),
            &copy,
        ],
    );
    assert_eq!(
        std::fs::read(data.join("sid_index.json")).unwrap(),
        std::fs::read(copy.join("sid_index.json")).unwrap()
    );
    check_consistent(&copy);

    // Constrained method with balanced levels, on the copy.
    run(
        &[
            "sid",
            "--method",
            "rq-kmeans-constrained",
            "--levels",
            "2",
            "--codebook-size",
            "10",
            "--data",
        ],
        &[&copy, Path::new("--embeddings"), &emb],
    );
    let idx = check_consistent(&copy);
    let mut sizes = BTreeMap::new();
    for (_, s) in idx.iter() {
        *sizes.entry(s.codes()[0]).or_insert(0usize) += 1;
    }
    assert!(sizes.values().all(|&c| c == 40), "{sizes:?}");

    // sid-report on the result, via the CLI.
    let json = tmp.path().join("r.json");
    let out = run(
        &["sid-report", "--index"],
        &[
            &copy,
            Path::new("--embeddings"),
            &emb,
            Path::new("--json"),
            &json,
        ],
    );
    assert!(out.contains("level a: 10/10 codes used"), "{out}");
    assert!(json.is_file());

    // Wrong row count is a clear error.
    write_npy(&emb, &gaussian(3, 24, 1)).unwrap();
    let o = Command::new(BIN)
        .args(["sid", "--data"])
        .arg(&data)
        .arg("--embeddings")
        .arg(&emb)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("3 embedding rows but the dataset has 400 items"));
}

#[test]
fn sid_report_on_the_shipped_industrial_index() {
    let Some(dir) = sidrec::testing::industrial_dir() else {
        return;
    };
    let index = DatasetDir::discover(&dir).unwrap().read_index().unwrap();
    // No real embeddings ship with the data: seeded Gaussian vectors stand in.
    let tmp = tempfile::tempdir().unwrap();
    let emb = tmp.path().join("industrial.npy");
    write_npy(&emb, &gaussian(index.len(), 32, 11)).unwrap();
    let r = sidrec_trainer::sid::report_for(&dir, &emb, Some(256)).unwrap();
    // The measured facts of MINIONEREC §1.3.
    assert_eq!(r.items, 3686);
    assert_eq!(r.quantization_levels, 3);
    assert_eq!(r.before.unique_sids, 3670);
    assert_eq!(r.before.collided_groups, 15);
    assert_eq!(r.before.max_items_per_sid, 3);
    assert_eq!(r.after, r.before, "the shipped index has no dedup tokens");
    let used: Vec<usize> = r.levels.iter().map(|l| l.used_codes).collect();
    assert_eq!(used, [48, 256, 256]);
    assert!(r.reconstruction_mse < r.data_mean_square);
    assert_eq!(r.reconstruction_source, "code-means");
}

#[test]
fn trained_methods_run_end_to_end_and_are_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let titles = synth_dataset(&data);
    let emb = tmp.path().join("items.npy");
    write_npy(&emb, &title_projection(&titles, 24)).unwrap();
    for method in ["rq-vae", "rq-kmeans-plus"] {
        let args = [
            "--threads",
            "1",
            "sid",
            "--method",
            method,
            "--codebook-size",
            "6",
            "--epochs",
            "3",
            "--batch-size",
            "128",
            "--eval-every",
            "1",
            "--data",
        ];
        let a = tmp.path().join(format!("{method}-a"));
        let b = tmp.path().join(format!("{method}-b"));
        for out in [&a, &b] {
            let text = run(
                &args,
                &[
                    &data,
                    Path::new("--embeddings"),
                    &emb,
                    Path::new("--out"),
                    out,
                ],
            );
            assert!(text.contains("trained 3 epochs"), "{text}");
        }
        // 216 code tuples for 400 items: collisions are certain; extra-level removes them.
        let index = check_consistent(&a);
        assert!(index
            .iter()
            .all(|(_, s)| s.len() >= 3 && s.codes()[..3].iter().all(|&c| c < 6)));
        assert_eq!(
            std::fs::read(a.join("sid_index.json")).unwrap(),
            std::fs::read(b.join("sid_index.json")).unwrap(),
            "{method} is not deterministic"
        );
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(a.join("sid-report.json")).unwrap())
                .unwrap();
        assert_eq!(report["method"], method);
        assert_eq!(report["reconstruction_source"], "decoder");
        assert!(report["before"]["collision_rate"].as_f64().unwrap() > 0.0);
        assert_eq!(report["after"]["collision_rate"], 0.0);
        assert_eq!(
            report["training"]["epoch_loss"].as_array().unwrap().len(),
            3
        );
    }
    // A bad training setting is a clear error.
    let o = Command::new(BIN)
        .args(["sid", "--method", "rq-vae", "--batch-size", "0", "--data"])
        .arg(&data)
        .arg("--embeddings")
        .arg(&emb)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--batch-size"));
}

/// Share of train rows whose target's first SID code is that of the last history item.
fn train_pairs_sharing_the_first_code(dir: &Path) -> f64 {
    let ds = DatasetDir::discover(dir).unwrap();
    let index = ds.read_index().unwrap();
    let rows = ds.read_split(Split::Train).unwrap();
    let first = |id| index.get(id).unwrap().tokens().next().unwrap();
    let same = rows
        .iter()
        .filter(|r| {
            r.history_item_id
                .last()
                .is_some_and(|&h| first(h) == first(r.item_id))
        })
        .count();
    same as f64 / rows.len() as f64
}

#[test]
fn cooccurrence_vectors_joined_to_text_put_train_pairs_under_shared_prefixes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let titles = synth_dataset(&data);
    let text = tmp.path().join("text.npy");
    write_npy(&text, &title_projection(&titles, 24)).unwrap();
    let cooc = tmp.path().join("cooc.npy");
    let out = run(
        &["embed-cooc", "--dim", "8", "--data"],
        &[&data, Path::new("--out"), &cooc],
    );
    assert!(out.contains("co-occurrence vectors of 400 items"), "{out}");
    let m = sidrec::npy::read_npy(&cooc).unwrap();
    assert_eq!((m.rows, m.cols), (400, 8));
    let ids: Vec<u64> =
        serde_json::from_slice(&std::fs::read(tmp.path().join("cooc.npy.ids.json")).unwrap())
            .unwrap();
    assert_eq!(ids.len(), 400);

    let sid = |embeddings: String, out: &Path| {
        run(
            &[
                "sid",
                "--levels",
                "2",
                "--codebook-size",
                "8",
                "--method",
                "rq-kmeans-constrained",
                "--embeddings",
                &embeddings,
                "--data",
            ],
            &[&data, Path::new("--out"), out],
        );
        check_consistent(out);
        train_pairs_sharing_the_first_code(out)
    };
    let alone = sid(text.display().to_string(), &tmp.path().join("text"));
    let joined = sid(
        format!("{},{}", text.display(), cooc.display()),
        &tmp.path().join("joined"),
    );
    eprintln!("train pairs under one first code: text {alone:.3}, joined {joined:.3}");
    // Eight balanced first codes: about 1/8 of unrelated pairs share one by chance.
    assert!(
        joined > alone + 0.08,
        "train pairs under one first code: text {alone:.3}, text and co-occurrence {joined:.3}"
    );

    // More dimensions than items: refused, nothing written.
    let big = tmp.path().join("big.npy");
    let out = Command::new(BIN)
        .args(["embed-cooc", "--dim", "401", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(&big)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("number of items (400), got 401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!big.exists());

    let out = Command::new(BIN)
        .args(["sid", "--embedding-weights", "1", "--embeddings"])
        .arg(format!("{},{}", text.display(), cooc.display()))
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 values for 2 --embeddings files"));
}
