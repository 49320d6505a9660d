//! SASRec on a small synthetic dataset: the loss falls, every parameter gets a gradient, a saved
//! model scores exactly as before, candidate scores agree with the full ranking, training repeats
//! per seed, and `eval --baseline` matches `data stats`' baseline figures.

use std::path::{Path, PathBuf};

use candle_core::Device;
use clap::Parser;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sidrec::data::{DatasetDir, Split};
use sidrec_trainer::baselines::{LastItemTransition, Popularity};
use sidrec_trainer::cli::Cli;
use sidrec_trainer::data::synth::{self, SynthConfig};
use sidrec_trainer::sasrec::train::{self, batch_loss, load_examples};
use sidrec_trainer::sasrec::{SasRec, SasRecConfig, SasRecLoss, SasRecNet};

fn synth_data(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    let ds = synth::synthesize(
        SynthConfig {
            items: 150,
            users: 250,
            seed: 5,
        },
        false,
    )
    .unwrap();
    synth::write(&ds, &data).unwrap();
    data
}

fn cli(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("sidrec-trainer").chain(args.iter().copied())).unwrap()
}

fn train_args(data: &Path, out: &Path, extra: &[&str]) -> sidrec_trainer::sasrec::SasRecArgs {
    let mut args = vec![
        "sasrec",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--hidden",
        "16",
        "--batch-size",
        "128",
        "--lr",
        "0.01",
    ];
    args.extend_from_slice(extra);
    match cli(&args).command {
        sidrec_trainer::cli::Command::Sasrec(a) => a,
        other => panic!("parsed {other:?}"),
    }
}

fn epoch_losses(out: &Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["loss"].as_f64().unwrap()
        })
        .collect()
}

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap()
}

#[test]
fn every_parameter_gets_a_gradient() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth_data(dir.path());
    let ds = DatasetDir::discover(&data).unwrap();
    let items: Vec<u32> = ds.read_items().unwrap().keys().copied().collect();
    let index = items
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, i as u32))
        .collect();
    let ex = load_examples(&ds.split_path(Split::Train), &index, None).unwrap();
    let cfg = SasRecConfig {
        hidden: 8,
        num_heads: 2,
        ..SasRecConfig::reference(items.len())
    };
    let dev = Device::Cpu;
    let net = SasRecNet::init(cfg, &mut ChaCha8Rng::seed_from_u64(1), &dev).unwrap();
    let rows: Vec<usize> = (0..64).collect();
    for loss in [SasRecLoss::Bce, SasRecLoss::Ce] {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let l = batch_loss(&net, &ex, &rows, loss, &mut rng, &dev).unwrap();
        let grads = l.backward().unwrap();
        for (name, var) in net.vars() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{loss}: no gradient for {name}"));
            let mag: f32 = g.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert!(mag > 0.0, "{loss}: zero gradient for {name}");
        }
    }
}

#[test]
fn trains_saves_loads_scores_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth_data(dir.path());
    let out = dir.path().join("model");
    let meta = train::run(&train_args(
        &data,
        &out,
        &["--epochs", "8", "--patience", "50"],
    ))
    .unwrap();
    let losses = epoch_losses(&out);
    assert_eq!(losses.len(), 8);
    assert!(
        losses[7] < 0.9 * losses[0],
        "BCE loss did not fall: {losses:?}"
    );
    let train = meta.train.as_ref().unwrap();
    assert_eq!(train.epochs_run, 8);
    // No leftover work directories beside the model.
    let hidden: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");

    // Load, save elsewhere, load again: identical scores.
    let dev = Device::Cpu;
    let model = SasRec::load(&out, &dev).unwrap();
    // (Floats read back from JSON may differ in the last bit, so compare the identity fields.)
    assert_eq!(model.meta.version, meta.version);
    assert_eq!(model.meta.weights_sha256, meta.weights_sha256);
    assert_eq!(model.meta.items, meta.items);
    assert_eq!(model.meta.config, meta.config);
    let copy = dir.path().join("copy");
    model.save(&copy).unwrap();
    let again = SasRec::load(&copy, &dev).unwrap();
    let ds = DatasetDir::discover(&data).unwrap();
    let test = ds.read_split(Split::Test).unwrap();
    let hists: Vec<&[u32]> = test
        .iter()
        .take(20)
        .map(|r| r.history_item_id.as_slice())
        .collect();
    let a = model.score_all(&hists).unwrap();
    assert_eq!(a, again.score_all(&hists).unwrap());
    assert_eq!(a[0].len(), meta.items.len());

    // Candidate scores equal the full ranking's scores and order.
    let row = &test[0];
    let top = model.recommend(&row.history_item_id, 15).unwrap();
    let hist_s: Vec<String> = row.history_item_id.iter().map(|i| i.to_string()).collect();
    let cand_s: Vec<String> = top.iter().map(|(i, _)| i.to_string()).collect();
    let scores = model.score_candidates(&hist_s, &cand_s).unwrap();
    for ((id, full), cand) in top.iter().zip(&scores) {
        assert!((full - cand).abs() < 1e-4, "item {id}: {full} vs {cand}");
    }
    assert!(scores.windows(2).all(|w| w[0] >= w[1] - 1e-5), "{scores:?}");
    let batch = model
        .score_candidates_batch(
            &[hist_s.clone(), hist_s.clone()],
            &[cand_s.clone(), cand_s[..3].to_vec()],
        )
        .unwrap();
    assert_eq!(batch[1].len(), 3);
    assert!((batch[1][2] - scores[2]).abs() < 1e-5);
    let err = model
        .score_candidates(&hist_s, &["999999".to_string()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("999999"), "{err}");
    assert!(model.score_candidates(&[], &cand_s).is_err());

    // `eval --baseline sasrec` equals the exact full-ranking metrics on the same rows.
    let ev = dir.path().join("eval");
    sidrec_trainer::run(cli(&[
        "eval",
        "--baseline",
        "sasrec",
        "--sasrec",
        out.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        ev.to_str().unwrap(),
    ]))
    .unwrap();
    let r = report(&ev);
    assert_eq!(r["rows"].as_u64().unwrap() as usize, test.len());
    let ex = load_examples(
        &ds.split_path(Split::Test),
        &meta
            .items
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, i as u32))
            .collect(),
        None,
    )
    .unwrap();
    let exact = train::full_ranking_metrics(model.net(), &ex, 64, &dev).unwrap();
    for k in [1, 3, 5, 10, 20, 50] {
        let key = k.to_string();
        let hr = r["metrics"]["hr"][&key].as_f64().unwrap();
        let ndcg = r["metrics"]["ndcg"][&key].as_f64().unwrap();
        assert!((hr - exact.hr[&k]).abs() < 1e-12, "HR@{k}");
        assert!((ndcg - exact.ndcg[&k]).abs() < 1e-12, "NDCG@{k}");
    }
    // A trained model beats popularity on this learnable data.
    let pop = sidrec_trainer::data::stats::evaluate(
        &Popularity::fit(&ds.read_split(Split::Train).unwrap()),
        &test,
        "popularity",
    );
    assert!(exact.ndcg[&10] > pop.ndcg[&10], "{exact:?} vs {pop:?}");
}

#[test]
fn training_repeats_per_seed_and_ce_trains() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth_data(dir.path());
    let run = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let meta = train::run(&train_args(&data, &out, extra)).unwrap();
        (meta, epoch_losses(&out))
    };
    let (a, la) = run("a", &["--epochs", "2", "--seed", "7"]);
    let (b, lb) = run("b", &["--epochs", "2", "--seed", "7"]);
    assert_eq!(la, lb);
    assert_eq!(a.weights_sha256, b.weights_sha256);
    let (c, _) = run("c", &["--epochs", "2", "--seed", "8"]);
    assert_ne!(a.weights_sha256, c.weights_sha256);
    let (_, ce) = run("ce", &["--epochs", "4", "--loss", "ce", "--patience", "50"]);
    assert!(ce[3] < ce[0], "CE loss did not fall: {ce:?}");
}

#[test]
fn baseline_reports_match_data_stats() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth_data(dir.path());
    let ds = DatasetDir::discover(&data).unwrap();
    let train = ds.read_split(Split::Train).unwrap();
    let test = ds.read_split(Split::Test).unwrap();
    let expected = [
        (
            "popularity",
            sidrec_trainer::data::stats::evaluate(&Popularity::fit(&train), &test, "p"),
        ),
        (
            "transition",
            sidrec_trainer::data::stats::evaluate(&LastItemTransition::fit(&train), &test, "t"),
        ),
    ];
    for (name, want) in expected {
        let ev = dir.path().join(name);
        sidrec_trainer::run(cli(&[
            "eval",
            "--baseline",
            name,
            "--data",
            data.to_str().unwrap(),
            "--out",
            ev.to_str().unwrap(),
        ]))
        .unwrap();
        let r = report(&ev);
        assert_eq!(r["rows"].as_u64().unwrap() as usize, test.len());
        assert_eq!(r["mode"], "full-ranking");
        for k in [1, 3, 5, 10, 20, 50] {
            let key = k.to_string();
            let (hr, ndcg) = (&r["metrics"]["hr"][&key], &r["metrics"]["ndcg"][&key]);
            assert!(
                (hr.as_f64().unwrap() - want.hr[&k]).abs() < 1e-12,
                "{name} HR@{k}"
            );
            assert!(
                (ndcg.as_f64().unwrap() - want.ndcg[&k]).abs() < 1e-12,
                "{name} NDCG@{k}"
            );
        }
        assert!(ev.join("report.md").is_file() && ev.join("predictions.json").is_file());
    }
    // Without --out there is nowhere to write a popularity report.
    let err = sidrec_trainer::run(cli(&[
        "eval",
        "--baseline",
        "popularity",
        "--data",
        data.to_str().unwrap(),
    ]))
    .unwrap_err();
    assert!(err.to_string().contains("--out"), "{err}");
}
