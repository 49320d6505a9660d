//! `sidrec-trainer hybrid` end to end on a small synthetic dataset: it writes a new checkpoint
//! with `hybrid.json` (the input untouched), `eval` reports the hybrid (or the pure model with
//! `--hybrid off`), choosing on a reused valid eval gives the same ranker as decoding valid
//! itself, the server ranks every row exactly as `eval` does, and bad input is refused by name.

mod common;

use std::path::Path;

use candle_core::Device;
use common::{fails, ok, read_json};

#[test]
fn hybrid_checkpoints_are_written_evaluated_and_served_alike() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (data, ck, hyb) = (p("data"), p("ck"), p("ck-hybrid"));
    ok(&[
        "data", "synth", "--items", "300", "--users", "300", "--seed", "3", "--out", &data,
    ]);
    ok(&["init", "--data", &data, "--out", &ck, "--vocab-size", "600"]);
    let meta_before = std::fs::read(Path::new(&ck).join("sidrec.json")).unwrap();

    // Choose on 80 valid rows decoded here, 50 beams: enough candidates that an untrained
    // (randomly initialised) model holds targets for the table to lift.
    let grid = ["--lambdas", "0.5,2", "--prior-strengths", "1,10"];
    let mut a = vec![
        "hybrid",
        "--checkpoint",
        &ck,
        "--data",
        &data,
        "--out",
        &hyb,
        "--valid-rows",
        "80",
        "--num-beams",
        "50",
    ];
    a.extend(grid);
    let stdout = String::from_utf8(ok(&a).stdout).unwrap();
    assert!(
        stdout.contains("chosen on valid") && stdout.contains("| 2 | 10 |"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read(Path::new(&ck).join("sidrec.json")).unwrap(),
        meta_before,
        "the input checkpoint is left alone"
    );
    assert!(!Path::new(&ck).join("hybrid.json").exists());
    let loaded = sidrec::checkpoint::Checkpoint::load(&hyb, &Device::Cpu, None).unwrap();
    let h = loaded.hybrid.clone().expect("hybrid.json loaded");
    let file = read_json(&Path::new(&hyb).join("hybrid.json"));
    assert_eq!(file["fitted_on"]["split"], "train");
    assert_eq!(file["selection"]["rows"], 80);
    assert_eq!(file["selection"]["grid"].as_array().unwrap().len(), 5);
    // On data made of item-to-item companions, the transition table helps an untrained model.
    assert!(h.lambda > 0.0, "{file}");

    // The same choice from a reused pure valid eval of the same rows.
    let valid = p("valid-eval");
    ok(&[
        "eval",
        "--checkpoint",
        &ck,
        "--data",
        &data,
        "--split",
        "valid",
        "--limit",
        "80",
        "--num-beams",
        "50",
        "--out",
        &valid,
    ]);
    let hyb2 = p("ck-hybrid-2");
    let mut a = vec![
        "hybrid",
        "--checkpoint",
        &ck,
        "--data",
        &data,
        "--out",
        &hyb2,
        "--valid-eval",
        &valid,
    ];
    a.extend(grid);
    ok(&a);
    let file2 = read_json(&Path::new(&hyb2).join("hybrid.json"));
    assert_eq!(file2["lambda"], file["lambda"]);
    assert_eq!(file2["prior_strength"], file["prior_strength"]);
    assert_eq!(file2["selection"]["chosen"], file["selection"]["chosen"]);

    // eval reports the hybrid by default, the pure model with --hybrid off.
    let (eh, ep, e0) = (p("eval-hybrid"), p("eval-off"), p("eval-pure"));
    let common = ["--data", &data, "--limit", "30", "--num-beams", "10"];
    for (c, o, extra) in [
        (&hyb, &eh, None),
        (&hyb, &ep, Some("off")),
        (&ck, &e0, None),
    ] {
        let mut a: Vec<&str> = vec!["eval", "--checkpoint", c, "--out", o];
        a.extend(common);
        if let Some(x) = extra {
            a.extend(["--hybrid", x]);
        }
        ok(&a);
    }
    let rh = read_json(&Path::new(&eh).join("report.json"));
    assert_eq!(rh["ranker"], "hybrid");
    assert_eq!(rh["hybrid"]["lambda"].as_f64().unwrap() as f32, h.lambda);
    let md = std::fs::read_to_string(Path::new(&eh).join("report.md")).unwrap();
    assert!(md.contains("ranker: hybrid"), "{md}");
    assert_eq!(
        read_json(&Path::new(&ep).join("report.json"))["ranker"],
        "model"
    );
    let preds_off = read_json(&Path::new(&ep).join("predictions.json"));
    let preds_pure = read_json(&Path::new(&e0).join("predictions.json"));
    for (a, b) in preds_off
        .as_array()
        .unwrap()
        .iter()
        .zip(preds_pure.as_array().unwrap())
    {
        assert_eq!(a["predict"], b["predict"]);
        assert!(a.get("model_scores").is_none());
    }
    let preds = read_json(&Path::new(&eh).join("predictions.json"));
    let rows = preds.as_array().unwrap();
    assert_eq!(rows.len(), 30);
    let mut reordered = 0;
    for (row, pure) in rows.iter().zip(preds_pure.as_array().unwrap()) {
        // The same SIDs, re-ordered by score; the model's scores travel with them.
        let mut a: Vec<String> = serde_json::from_value(row["predict"].clone()).unwrap();
        let mut b: Vec<String> = serde_json::from_value(pure["predict"].clone()).unwrap();
        reordered += usize::from(a != b);
        a.sort();
        b.sort();
        assert_eq!(a, b);
        let scores: Vec<f32> = serde_json::from_value(row["scores"].clone()).unwrap();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
        assert!(row["model_scores"].as_array().unwrap().len() == scores.len());
    }
    assert!(reordered > 0, "the hybrid changed no row's order");

    // The server ranks each row exactly as eval did (items, hybrid scores, model scores).
    let engine = sidrec_server::engine::Engine::load(
        Path::new(&hyb),
        "ck-hybrid",
        &Device::Cpu,
        Some(sidrec::decode::ScoreMode::Exact),
    )
    .unwrap();
    assert!(engine.hybrid.is_some());
    for row in rows {
        let history: Vec<u32> = serde_json::from_value(row["history"].clone()).unwrap();
        let prompt: Vec<u32> = serde_json::from_value(row["prompt_ids"].clone()).unwrap();
        let items: Vec<Vec<u32>> = serde_json::from_value(row["predict_items"].clone()).unwrap();
        let scores: Vec<f32> = serde_json::from_value(row["scores"].clone()).unwrap();
        let model: Vec<f32> = serde_json::from_value(row["model_scores"].clone()).unwrap();
        let hyps = engine.decode(&[(prompt.as_slice(), &[][..])], 10).unwrap();
        let served = sidrec_server::routes::recommend::rank_items(
            &engine,
            history.last().copied(),
            &[],
            10,
            &hyps[0],
        );
        // Eval lists SIDs with their items; the server the items, a SID's together.
        let got: Vec<u32> = served.iter().map(|i| i.item_id).collect();
        let want: Vec<u32> = items.iter().flatten().copied().take(10).collect();
        assert_eq!(got, want, "history {history:?}");
        let mut at = 0;
        for ((group, &score), &m) in items.iter().zip(&scores).zip(&model) {
            let Some(s) = served.get(at) else { break };
            // A SID's score is its best (first) item's.
            assert!((s.score - score).abs() < 1e-4, "{} vs {score}", s.score);
            assert!(s.model_score.is_some_and(|x| (x - m).abs() < 1e-4));
            at += group.len();
        }
    }

    // Bad input is refused, naming the flag or file.
    let e = fails(&[
        "eval",
        "--checkpoint",
        &ck,
        "--data",
        &data,
        "--limit",
        "2",
        "--hybrid",
        "on",
        "--out",
        &p("x"),
    ]);
    assert!(
        e.contains("--hybrid on") && e.contains("hybrid.json"),
        "{e}"
    );
    let e = fails(&[
        "hybrid",
        "--checkpoint",
        &ck,
        "--data",
        &data,
        "--out",
        &ck,
        "--valid-eval",
        &valid,
    ]);
    assert!(e.contains("another directory"), "{e}");
    let e = fails(&[
        "hybrid",
        "--checkpoint",
        &ck,
        "--data",
        &data,
        "--out",
        &p("y"),
        "--valid-eval",
        &e0,
    ]);
    assert!(e.contains("report.json") && e.contains("test split"), "{e}");
    let e = fails(&[
        "hybrid",
        "--checkpoint",
        &hyb,
        "--data",
        &data,
        "--out",
        &p("y"),
        "--valid-eval",
        &valid,
    ]);
    assert!(e.contains("report.json") && e.contains("version"), "{e}");
    let e = fails(&[
        "hybrid",
        "--checkpoint",
        &ck,
        "--data",
        &data,
        "--out",
        &p("y"),
        "--valid-eval",
        &valid,
        "--lambdas=-1",
    ]);
    assert!(e.contains("--lambdas"), "{e}");
    assert!(!Path::new(&p("y")).exists());
}
