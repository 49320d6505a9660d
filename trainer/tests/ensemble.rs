//! `sidrec-trainer ensemble` end to end on a small synthetic dataset: the written checkpoint
//! holds both models (the inputs untouched), `eval` and the server decode it as the library's
//! ensemble search over the source models (with equal or chosen weights), a hybrid ranker keeps
//! them, and bad input is refused by name.

mod common;

use std::path::Path;

use candle_core::Device;
use common::{fails, ok, read_json};
use sidrec::checkpoint::Checkpoint;
use sidrec::decode::{DecodeRequest, Decoder, Mixture, Pool, ScoreMode, SearchConfig};
use sidrec_server::engine::Engine;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Check that every row of eval's `preds` holds the library's search over `mix` and what
/// `engine` serves for the same prompt; returns how many rows differ from `other`'s.
fn assert_rows_decode_as(
    preds: &serde_json::Value,
    other: &serde_json::Value,
    decoder: &Decoder,
    mix: &Mixture<'_>,
    engine: &Engine,
    cfg: &SearchConfig,
) -> usize {
    let mut differ = 0;
    for (row, other) in preds
        .as_array()
        .unwrap()
        .iter()
        .zip(other.as_array().unwrap())
    {
        let prompt: Vec<u32> = serde_json::from_value(row["prompt_ids"].clone()).unwrap();
        let got: Vec<String> = serde_json::from_value(row["predict"].clone()).unwrap();
        let req = [DecodeRequest {
            prompt: &prompt,
            exclude: &[],
        }];
        let want: Vec<String> = decoder.beam_search_ensemble(mix, &req, cfg).unwrap()[0]
            .iter()
            .map(|h| h.sid.to_string())
            .collect();
        assert_eq!(got, want);
        let served: Vec<String> = engine
            .decode(&[(prompt.as_slice(), &[][..])], cfg.num_beams)
            .unwrap()[0]
            .iter()
            .map(|h| h.sid.to_string())
            .collect();
        assert_eq!(served, want, "the server decodes as eval does");
        differ += usize::from(row["predict"] != other["predict"]);
    }
    differ
}

/// `eval` of `ck` on the first 25 rows of `data` with 10 beams, plus `extra` flags, into `out`;
/// its report.
fn eval_25(data: &str, ck: &str, out: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "eval",
        "--checkpoint",
        ck,
        "--out",
        out,
        "--data",
        data,
        "--limit",
        "25",
        "--num-beams",
        "10",
    ];
    args.extend(extra);
    ok(&args);
    read_json(&Path::new(out).join("report.json"))
}

#[test]
fn ensembles_are_written_evaluated_and_served_as_the_members_mixture() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (data, other_data) = (p("data"), p("other-data"));
    let (a, b, c, ens) = (p("a"), p("b"), p("c"), p("ens"));
    ok(&[
        "data", "synth", "--items", "200", "--users", "200", "--seed", "3", "--out", &data,
    ]);
    ok(&[
        "data",
        "synth",
        "--items",
        "150",
        "--users",
        "150",
        "--seed",
        "4",
        "--out",
        &other_data,
    ]);
    // Two models on one tokenizer and index (other weights), a third on other data.
    for (out, seed, d) in [(&a, "1", &data), (&b, "2", &data), (&c, "1", &other_data)] {
        ok(&[
            "init",
            "--data",
            d,
            "--out",
            out,
            "--vocab-size",
            "600",
            "--seed",
            seed,
        ]);
    }
    // `ensemble --checkpoint a --members b [extra] --out out`, its stdout.
    let write_ensemble = |extra: &[&str], out: &str| {
        let mut args = vec!["ensemble", "--checkpoint", &a, "--members", &b];
        args.extend(extra);
        args.extend(["--out", out]);
        String::from_utf8(ok(&args).stdout).unwrap()
    };
    let meta_before = std::fs::read(Path::new(&a).join("sidrec.json")).unwrap();
    let stdout = write_ensemble(&[], &ens);
    assert!(stdout.contains("an ensemble of 2 models"), "{stdout}");
    assert_eq!(
        std::fs::read(Path::new(&a).join("sidrec.json")).unwrap(),
        meta_before,
        "the input checkpoint is left alone"
    );
    let manifest = read_json(&Path::new(&ens).join("ensemble.json"));
    let source_b = read_json(&Path::new(&b).join("sidrec.json"));
    assert_eq!(
        manifest["members"][0]["source_version"],
        source_b["version"]
    );

    let loaded = Checkpoint::load(&ens, &Device::Cpu, None).unwrap();
    assert_eq!(loaded.models().len(), 2);
    let ck_a = Checkpoint::load(&a, &Device::Cpu, None).unwrap();
    let ck_b = Checkpoint::load(&b, &Device::Cpu, None).unwrap();

    // eval decodes the ensemble; every row equals the library's ensemble search over the two
    // source checkpoints, and some row differs from the first model alone.
    let (e_ens, e_a) = (p("eval-ens"), p("eval-a"));
    let eval_with = |ck: &str, out: &str, extra: &[&str]| {
        eval_25(&data, ck, out, extra);
    };
    let eval_to = |ck: &str, out: &str| eval_with(ck, out, &[]);
    eval_to(&ens, &e_ens);
    eval_to(&a, &e_a);
    let report = read_json(&Path::new(&e_ens).join("report.json"));
    assert_eq!(report["models"], 2);
    let md = std::fs::read_to_string(Path::new(&e_ens).join("report.md")).unwrap();
    assert!(md.contains("an ensemble of 2 models"), "{md}");
    assert_eq!(read_json(&Path::new(&e_a).join("report.json"))["models"], 1);
    let preds = read_json(&Path::new(&e_ens).join("predictions.json"));
    let preds_a = read_json(&Path::new(&e_a).join("predictions.json"));
    let decoder = Decoder::for_checkpoint(&ck_a, &Device::Cpu).unwrap();
    let cfg = SearchConfig {
        num_beams: 10,
        top_k: 10,
        mode: ScoreMode::Exact,
    };
    let serve = |dir: &str| {
        Engine::load(Path::new(dir), dir, &Device::Cpu, Some(ScoreMode::Exact)).unwrap()
    };
    let engine = serve(&ens);
    assert_eq!(engine.num_models(), 2);
    assert_eq!(
        engine.num_parameters,
        2 * ck_a.model.config().num_parameters()
    );
    let equal = Mixture::equal(vec![&ck_a.model, &ck_b.model]).unwrap();
    let differ = assert_rows_decode_as(&preds, &preds_a, &decoder, &equal, &engine, &cfg);
    assert!(differ > 0, "the member changed no row");
    assert!(read_json(&Path::new(&e_a).join("report.json"))
        .get("model_weights")
        .is_none());
    assert_eq!(report["model_weights"], serde_json::json!([0.5, 0.5]));

    // Chosen weights: stored divided by their sum, reported by eval and the server, and
    // decoded as the library's weighted mixture, which is not the equal one.
    let weighted = p("ens-weighted");
    let stdout = write_ensemble(&["--weights", "1,3"], &weighted);
    assert!(stdout.contains("weights 0.250 / 0.750"), "{stdout}");
    let shares = serde_json::json!([0.25, 0.75]);
    assert_eq!(
        read_json(&Path::new(&weighted).join("ensemble.json"))["model_weights"],
        shares
    );
    let e_w = p("eval-weighted");
    eval_to(&weighted, &e_w);
    assert_eq!(
        read_json(&Path::new(&e_w).join("report.json"))["model_weights"],
        shares
    );
    let engine_w = serve(&weighted);
    assert_eq!(engine_w.model_weights(), &[0.25, 0.75]);
    let mix = Mixture::weighted(vec![&ck_a.model, &ck_b.model], vec![1.0, 3.0]).unwrap();
    let preds_w = read_json(&Path::new(&e_w).join("predictions.json"));
    let moved = assert_rows_decode_as(&preds_w, &preds, &decoder, &mix, &engine_w, &cfg);
    assert!(moved > 0, "the weights changed no row");

    // Pooled by product: recorded (format 3; a mean ensemble stays format 2 without the field),
    // reported, served, and decoded as the library's product, which is not the mean; `eval
    // --pool mean` decodes the same checkpoint as the mean ensemble.
    assert_eq!(manifest["format_version"], 2);
    assert!(manifest.get("pool").is_none(), "{manifest}");
    assert_eq!(report["pool"], "mean");
    let product = p("ens-product");
    let stdout = write_ensemble(&["--pool", "product"], &product);
    assert!(stdout.contains("pooled by product"), "{stdout}");
    let product_manifest = read_json(&Path::new(&product).join("ensemble.json"));
    assert_eq!(product_manifest["pool"], "product");
    assert_eq!(product_manifest["format_version"], 3);
    let e_p = p("eval-product");
    eval_to(&product, &e_p);
    assert_eq!(
        read_json(&Path::new(&e_p).join("report.json"))["pool"],
        "product"
    );
    let engine_p = serve(&product);
    assert_eq!(engine_p.pool(), Pool::Product);
    let preds_p = read_json(&Path::new(&e_p).join("predictions.json"));
    let product_mix = equal.clone().pooled(Pool::Product);
    let moved = assert_rows_decode_as(&preds_p, &preds, &decoder, &product_mix, &engine_p, &cfg);
    assert!(moved > 0, "the product ranked every row as the mean");
    let e_pm = p("eval-product-as-mean");
    eval_with(&product, &e_pm, &["--pool", "mean"]);
    let lists = |preds: &serde_json::Value| -> Vec<serde_json::Value> {
        preds
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["predict"].clone())
            .collect()
    };
    assert_eq!(
        lists(&read_json(&Path::new(&e_pm).join("predictions.json"))),
        lists(&preds),
        "--pool mean decodes the product ensemble as the mean one"
    );
    let err = fails(&[
        "ensemble",
        "--checkpoint",
        &a,
        "--members",
        &b,
        "--pool",
        "max",
        "--out",
        &p("bad-pool"),
    ]);
    assert!(err.contains("unknown pool `max`"), "{err}");

    // A hybrid ranker tuned on the ensemble keeps every model.
    let hyb = p("ens-hybrid");
    ok(&[
        "hybrid",
        "--checkpoint",
        &ens,
        "--data",
        &data,
        "--out",
        &hyb,
        "--valid-rows",
        "20",
        "--num-beams",
        "10",
        "--lambdas",
        "0.5",
        "--prior-strengths",
        "10",
    ]);
    let loaded = Checkpoint::load(&hyb, &Device::Cpu, None).unwrap();
    assert_eq!(loaded.models().len(), 2);
    assert!(loaded.hybrid.is_some());

    // Bad input is refused, naming the cause; nothing is written.
    let y = p("y");
    let e = fails(&["ensemble", "--checkpoint", &a, "--members", &c, "--out", &y]);
    assert!(
        e.contains("cannot join an ensemble") && e.contains(".json differ"),
        "{e}"
    );
    let e = fails(&[
        "ensemble",
        "--checkpoint",
        &ens,
        "--members",
        &b,
        "--out",
        &y,
    ]);
    assert!(e.contains("already an ensemble"), "{e}");
    let e = fails(&["ensemble", "--checkpoint", &a, "--members", &b, "--out", &a]);
    assert!(e.contains("another directory"), "{e}");
    let e = fails(&[
        "ensemble",
        "--checkpoint",
        &hyb,
        "--members",
        &b,
        "--out",
        &y,
    ]);
    assert!(e.contains("hybrid.json"), "{e}");
    let e = fails(&["ensemble", "--checkpoint", &a, "--out", &y]);
    assert!(e.contains("--members"), "{e}");
    for (bad, why) in [
        ("1", "1 mixture weights for 2 models"),
        ("1,0", "not a positive finite number"),
        ("1,inf", "not a positive finite number"),
    ] {
        let e = fails(&[
            "ensemble",
            "--checkpoint",
            &a,
            "--members",
            &b,
            "--weights",
            bad,
            "--out",
            &y,
        ]);
        assert!(e.contains("--weights") && e.contains(why), "{bad}: {e}");
    }
    assert!(!Path::new(&y).exists());
    let e = fails(&[
        "sft",
        "--init",
        &ens,
        "--data",
        &data,
        "--out",
        &y,
        "--max-steps",
        "1",
    ]);
    assert!(e.contains("is an ensemble"), "{e}");

    // A tampered member and an unlisted ensemble.json are refused at load.
    let tampered = dir.path().join("tampered");
    copy_dir(Path::new(&ens), &tampered);
    let weights = tampered.join("member-1.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&weights, bytes).unwrap();
    let err = Checkpoint::load(&tampered, &Device::Cpu, None).unwrap_err();
    assert!(err.to_string().contains("sha256 mismatch"), "{err}");
    let unlisted = dir.path().join("unlisted");
    copy_dir(Path::new(&a), &unlisted);
    std::fs::copy(
        Path::new(&ens).join("ensemble.json"),
        unlisted.join("ensemble.json"),
    )
    .unwrap();
    let err = Checkpoint::load(&unlisted, &Device::Cpu, None).unwrap_err();
    assert!(err.to_string().contains("not listed"), "{err}");
}

/// A model with item embeddings beside its item-free twin (`--item-free-share`, no members):
/// recorded as format 4, reported by eval, served, and decoded as the library's mixture of the
/// model and its twin ([`Qwen2::without_item_vectors`]) at the chosen share; `eval --item-free-share 0`
/// decodes the model alone, and a share the models cannot take is refused by name.
#[test]
fn item_free_twins_are_written_evaluated_and_served_beside_their_model() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (data, init, plain, trained, twins) =
        (p("data"), p("init"), p("plain"), p("trained"), p("twins"));
    ok(&[
        "data", "synth", "--items", "120", "--users", "150", "--seed", "5", "--out", &data,
    ]);
    ok(&[
        "init",
        "--data",
        &data,
        "--out",
        &init,
        "--vocab-size",
        "400",
        "--item-embeddings",
    ]);
    ok(&[
        "init",
        "--data",
        &data,
        "--out",
        &plain,
        "--vocab-size",
        "400",
    ]);
    // A few steps at a high rate move the item table off its zero start, so the twin differs.
    ok(&[
        "sft",
        "--init",
        &init,
        "--data",
        &data,
        "--out",
        &trained,
        "--tasks",
        "seqrec",
        "--history-loss",
        "--max-steps",
        "8",
        "--eval-every",
        "100",
        "--batch-size",
        "16",
        "--lr",
        "1e-2",
        "--item-lr-scale",
        "3",
        "--item-dropout",
        "0.3",
        "--valid-rows",
        "8",
        "--valid-beams",
        "5",
    ]);
    let model = Path::new(&trained).join("last");
    let model = model.to_str().unwrap();
    let stdout = String::from_utf8(
        ok(&[
            "ensemble",
            "--checkpoint",
            model,
            "--pool",
            "product",
            "--item-free-share",
            "0.4",
            "--out",
            &twins,
        ])
        .stdout,
    )
    .unwrap();
    assert!(
        stdout.contains("one model, pooled by product, item-free twins at share 0.4"),
        "{stdout}"
    );
    let manifest = read_json(&Path::new(&twins).join("ensemble.json"));
    assert_eq!(manifest["format_version"], 4);
    assert_eq!(manifest["item_free_share"], 0.4);
    assert_eq!(manifest["members"], serde_json::json!([]));

    let eval = |ck: &str, out: &str, extra: &[&str]| eval_25(&data, ck, out, extra);
    let (e_twins, e_alone, e_model) = (p("eval-twins"), p("eval-alone"), p("eval-model"));
    let report = eval(&twins, &e_twins, &[]);
    assert_eq!(report["item_free_share"], 0.4);
    assert_eq!(report["pool"], "product");
    let md = std::fs::read_to_string(Path::new(&e_twins).join("report.md")).unwrap();
    assert!(md.contains("item-free twins at share 0.4"), "{md}");
    assert!(eval(&twins, &e_alone, &["--item-free-share", "0"])
        .get("item_free_share")
        .is_none());
    eval(model, &e_model, &[]);

    let ck = Checkpoint::load(&twins, &Device::Cpu, None).unwrap();
    assert_eq!(ck.item_free_share, 0.4);
    let twin = ck.model.without_item_vectors().unwrap();
    let mix = Mixture::equal(vec![&ck.model])
        .unwrap()
        .pooled(Pool::Product)
        .with_item_free_twins(vec![&twin], 0.4)
        .unwrap();
    let stored = ck.mixture().unwrap();
    assert_eq!(
        stored.weights(),
        &[0.6, 0.4],
        "the model keeps 1 − share, its twin the share"
    );
    assert_eq!(stored.twins(), 1);
    assert_eq!(stored.later_weights(), vec![1.0]);
    let decoder = Decoder::for_checkpoint(&ck, &Device::Cpu).unwrap();
    let cfg = SearchConfig {
        num_beams: 10,
        top_k: 10,
        mode: ScoreMode::Exact,
    };
    let engine = Engine::load(
        Path::new(&twins),
        &twins,
        &Device::Cpu,
        Some(ScoreMode::Exact),
    )
    .unwrap();
    assert_eq!(engine.item_free_share(), 0.4);
    assert_eq!(engine.num_models(), 1);
    let preds = read_json(&Path::new(&e_twins).join("predictions.json"));
    let preds_model = read_json(&Path::new(&e_model).join("predictions.json"));
    let moved = assert_rows_decode_as(&preds, &preds_model, &decoder, &mix, &engine, &cfg);
    assert!(moved > 0, "the twin changed no row");
    assert_eq!(
        read_json(&Path::new(&e_alone).join("predictions.json")),
        preds_model,
        "--item-free-share 0 decodes the model alone"
    );

    // Refused by name: a model without item vectors, a share outside [0, 1), and eval's
    // override on such a model. Nothing is written.
    let y = p("y");
    let e = fails(&[
        "ensemble",
        "--checkpoint",
        &plain,
        "--item-free-share",
        "0.4",
        "--out",
        &y,
    ]);
    assert!(e.contains("has no item embeddings"), "{e}");
    for bad in ["1", "-0.1", "NaN"] {
        let share = format!("--item-free-share={bad}");
        let e = fails(&["ensemble", "--checkpoint", model, &share, "--out", &y]);
        assert!(e.contains("outside [0, 1)"), "{bad}: {e}");
    }
    assert!(!Path::new(&y).exists());
    let mut args = vec![
        "eval",
        "--checkpoint",
        &plain,
        "--data",
        &data,
        "--limit",
        "5",
        "--item-free-share",
        "0.4",
        "--out",
    ];
    args.push(&y);
    let e = fails(&args);
    assert!(
        e.contains("--item-free-share") && e.contains("no item vectors"),
        "{e}"
    );
}
