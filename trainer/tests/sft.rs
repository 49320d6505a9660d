//! SFT end to end on a tiny synthetic dataset: the loss falls, and a run killed after a save
//! or in the middle of one, then resumed, continues with exactly the losses of an uninterrupted
//! run.

mod common;

use common::ok;

use std::path::{Path, PathBuf};

fn setup(dir: &Path) -> (String, String) {
    let data = dir.join("data").to_str().unwrap().to_string();
    let ck = dir.join("init").to_str().unwrap().to_string();
    ok(&[
        "data", "synth", "--items", "120", "--users", "150", "--seed", "5", "--out", &data,
    ]);
    ok(&["init", "--data", &data, "--out", &ck, "--vocab-size", "400"]);
    (data, ck)
}

/// `init` of `data` into `dir/name` with the setup's vocabulary and one more `flag`; returns the
/// checkpoint's path and its `config.json`.
fn init_with(dir: &Path, data: &str, name: &str, flag: &str) -> (String, String) {
    let ck = dir.join(name).to_str().unwrap().to_string();
    ok(&[
        "init",
        "--data",
        data,
        "--out",
        &ck,
        "--vocab-size",
        "400",
        flag,
    ]);
    let cfg = std::fs::read_to_string(Path::new(&ck).join("config.json")).unwrap();
    (ck, cfg)
}

fn losses(out: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Some((v.get("step")?.as_u64()?, v.get("loss")?.as_f64()?))
        })
        .collect()
}

fn sft_args<'a>(data: &'a str, ck: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "sft",
        "--init",
        ck,
        "--data",
        data,
        "--out",
        out,
        "--tasks",
        "seqrec,title2sid",
        "--max-steps",
        "16",
        "--eval-every",
        "8",
        "--log-every",
        "1",
        "--batch-size",
        "16",
        "--lr",
        "3e-3",
        "--warmup",
        "2",
        "--valid-rows",
        "16",
        "--valid-beams",
        "10",
        "--epochs",
        "50",
    ]
}

#[test]
fn loss_falls_and_resume_after_a_kill_continues_identically() {
    let dir = tempfile::tempdir().unwrap();
    let (data, ck) = setup(dir.path());

    let full: PathBuf = dir.path().join("full");
    ok(&sft_args(&data, &ck, full.to_str().unwrap()));
    let l = losses(&full);
    assert_eq!(l.len(), 16);
    let first: f64 = l[..3].iter().map(|x| x.1).sum::<f64>() / 3.0;
    let last: f64 = l[13..].iter().map(|x| x.1).sum::<f64>() / 3.0;
    assert!(
        last < 0.8 * first,
        "loss did not fall: {first:.3} -> {last:.3}"
    );
    assert!(Path::new(&full).join("best/sidrec.json").is_file());

    // Kill a second run once its step-8 save exists, then resume it.
    let part = dir.path().join("part");
    common::kill_after_first_save(&sft_args(&data, &ck, part.to_str().unwrap()), &part);
    assert!(
        losses(&part).len() < 16,
        "the run finished before it was killed"
    );
    let mut args = sft_args(&data, &ck, part.to_str().unwrap());
    args.push("--resume");
    let o = ok(&args);
    assert!(String::from_utf8_lossy(&o.stderr).contains("resuming at epoch"));
    let resumed = losses(&part);
    assert_eq!(resumed.len(), 16, "{resumed:?}");
    for ((s1, a), (s2, b)) in l.iter().zip(&resumed) {
        assert_eq!(s1, s2);
        assert!((a - b).abs() < 1e-5, "step {s1}: {a} vs {b}");
    }

    // Kill a third run while it writes a later checkpoint: what it leaves behind is complete
    // checkpoints (their hashes verify) and, at most, dot-named staging directories that no
    // reader takes for a checkpoint; it resumes from its last complete save.
    let cut = dir.path().join("cut");
    let left = common::kill_during_a_later_save(&sft_args(&data, &ck, cut.to_str().unwrap()), &cut);
    eprintln!("staging directories left by the kill: {left:?}");
    for entry in std::fs::read_dir(&cut).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() && !name.starts_with('.') {
            assert!(
                sidrec::checkpoint::is_complete(&path),
                "{name} is incomplete"
            );
            sidrec::checkpoint::Checkpoint::load(&path, &candle_core::Device::Cpu, None)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    let mut args = sft_args(&data, &ck, cut.to_str().unwrap());
    args.push("--resume");
    ok(&args);
    let resumed = losses(&cut);
    assert_eq!(resumed.len(), 16, "{resumed:?}");
    for ((s1, a), (s2, b)) in l.iter().zip(&resumed) {
        assert_eq!(s1, s2);
        assert!((a - b).abs() < 1e-5, "step {s1}: {a} vs {b}");
    }
}

/// Training with the fused CPU kernels follows the composite tensor ops
/// (`SIDREC_KERNELS=composite`): the same loss at every step, and checkpoints that rank the
/// test rows the same way under beam search.
#[test]
fn fused_and_composite_kernels_train_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let (data, ck) = setup(dir.path());
    let train_and_eval = |kernels: &str| {
        let run = dir.path().join(format!("run-{kernels}"));
        let out = dir.path().join(format!("eval-{kernels}"));
        let best = run.join("best");
        for args in [
            sft_args(&data, &ck, run.to_str().unwrap()),
            vec![
                "eval",
                "--checkpoint",
                best.to_str().unwrap(),
                "--data",
                &data,
                "--split",
                "test",
                "--num-beams",
                "20",
                "--limit",
                "40",
                "--out",
                out.to_str().unwrap(),
            ],
        ] {
            let o = std::process::Command::new(common::BIN)
                .args(&args)
                .env("SIDREC_KERNELS", kernels)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        let text = std::fs::read_to_string(out.join("predictions.json")).unwrap();
        let preds: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        (losses(&run), preds)
    };
    let (lf, pf) = train_and_eval("fused");
    let (lc, pc) = train_and_eval("composite");
    assert_eq!(lf.len(), 16);
    for ((s, a), (_, b)) in lf.iter().zip(&lc) {
        assert!(
            (a - b).abs() < 1e-3 * b.abs().max(1.0),
            "step {s}: loss {a} vs {b}"
        );
    }
    assert_eq!(pf.len(), 40);
    let same = pf
        .iter()
        .zip(&pc)
        .filter(|(a, b)| a["predict"] == b["predict"])
        .count();
    // The weights differ by float rounding only; a near-tie may swap two neighbours.
    assert!(same >= 38, "only {same}/40 rows ranked identically");
}

#[test]
fn freeze_llm_changes_only_the_sid_rows() {
    use candle_core::{DType, Device};
    use sidrec::checkpoint::Checkpoint;

    let dir = tempfile::tempdir().unwrap();
    let (data, ck) = setup(dir.path());
    let out = dir.path().join("frozen");
    let mut args = sft_args(&data, &ck, out.to_str().unwrap());
    let steps = args.iter().position(|a| *a == "--max-steps").unwrap() + 1;
    args[steps] = "4";
    let every = args.iter().position(|a| *a == "--eval-every").unwrap() + 1;
    args[every] = "4";
    args.push("--freeze-llm");
    // Weight decay would move frozen rows if the mask missed it.
    args.extend(["--weight-decay", "0.1"]);
    ok(&args);

    let before = Checkpoint::load(&ck, &Device::Cpu, Some(DType::F32)).unwrap();
    let after = Checkpoint::load(out.join("last"), &Device::Cpu, Some(DType::F32)).unwrap();
    let sid_rows: std::collections::BTreeSet<usize> = before
        .tokenizer
        .sid_vocab()
        .pairs()
        .into_iter()
        .map(|(_, id)| id as usize)
        .collect();
    assert!(!sid_rows.is_empty());
    let b: std::collections::BTreeMap<String, candle_core::Tensor> =
        before.model.named_tensors().into_iter().collect();
    let a: std::collections::BTreeMap<String, candle_core::Tensor> =
        after.model.named_tensors().into_iter().collect();
    assert_eq!(b.keys().collect::<Vec<_>>(), a.keys().collect::<Vec<_>>());
    let mut sid_rows_moved = 0;
    for (name, tb) in &b {
        let ta = &a[name];
        let (vb, va) = (
            tb.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            ta.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        if name.ends_with("embed_tokens.weight") || name == "lm_head.weight" {
            let cols = tb.dim(1).unwrap();
            for (r, (rb, ra)) in vb.chunks(cols).zip(va.chunks(cols)).enumerate() {
                if sid_rows.contains(&r) {
                    sid_rows_moved += usize::from(rb != ra);
                } else {
                    let same = rb.iter().zip(ra).all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "{name} row {r} (not a SID token) changed");
                }
            }
        } else {
            let same = vb.iter().zip(&va).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "frozen parameter {name} changed");
        }
    }
    assert!(
        sid_rows_moved > sid_rows.len() / 2,
        "only {sid_rows_moved} of {} SID rows were trained",
        sid_rows.len()
    );
}

/// A model with item embeddings trains (its item table moves off zero), resumes exactly and
/// evaluates through the same checkpoint loader as every other model.
#[test]
fn item_embeddings_train_resume_and_evaluate() {
    let dir = tempfile::tempdir().unwrap();
    let (data, _) = setup(dir.path());
    let (ck, cfg) = init_with(dir.path(), &data, "init-items", "--item-embeddings");
    let ck = ck.as_str();
    assert!(cfg.contains("\"sidrec_item_embeddings\": 121"), "{cfg}");

    let full = dir.path().join("full");
    let mut args = sft_args(&data, ck, full.to_str().unwrap());
    args.extend(["--history-loss"]);
    ok(&args);
    let l = losses(&full);
    assert!(
        l[13..].iter().map(|x| x.1).sum::<f64>() < 0.8 * l[..3].iter().map(|x| x.1).sum::<f64>()
    );
    let t = sidrec::model::checkpoint::load_tensors(&full.join("last"), &candle_core::Device::Cpu)
        .unwrap();
    let table = &t["model.embed_items.weight"];
    assert_eq!(table.dims()[0], 121);
    let moved: f32 = table.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
    assert!(moved > 0.0, "the item table never trained");

    // `--item-lr-scale 3`: after one step (Adam's first update is the learning rate times the
    // gradient's sign) the item table has moved exactly three times as far and every other
    // weight is the unscaled run's, bit for bit.
    let one_step = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let mut args = sft_args(&data, ck, out.to_str().unwrap());
        let steps = args.iter().position(|a| *a == "--max-steps").unwrap() + 1;
        args[steps] = "1";
        args.extend(["--history-loss"]);
        args.extend(extra);
        ok(&args);
        sidrec::model::checkpoint::load_tensors(&out.join("last"), &candle_core::Device::Cpu)
            .unwrap()
    };
    let plain = one_step("lr1", &[]);
    let scaled = one_step("lr3", &["--item-lr-scale", "3"]);
    for (name, a) in &plain {
        let b = &scaled[name];
        if name == sidrec::model::ITEM_EMBEDDINGS_VAR {
            let want = (a * 3.0).unwrap();
            let moved: f32 = a.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert!(moved > 0.0, "the item table did not move in one step");
            assert!(sidrec::testing::max_abs_diff(b, &want) < 1e-6, "{name}");
        } else {
            assert_eq!(
                a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                "{name}"
            );
        }
    }

    let part = dir.path().join("part");
    let mut args = sft_args(&data, ck, part.to_str().unwrap());
    args.extend(["--history-loss"]);
    common::kill_after_first_save(&args, &part);
    args.push("--resume");
    ok(&args);
    for ((s1, a), (_, b)) in l.iter().zip(&losses(&part)) {
        assert!((a - b).abs() < 1e-5, "step {s1}: {a} vs {b}");
    }

    let eval = dir.path().join("eval");
    ok(&[
        "eval",
        "--checkpoint",
        full.join("best").to_str().unwrap(),
        "--data",
        &data,
        "--split",
        "test",
        "--num-beams",
        "10",
        "--limit",
        "12",
        "--out",
        eval.to_str().unwrap(),
    ]);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["rows"], 12, "{report}");
    assert_eq!(report["metrics"]["invalid"], 0, "{report}");

    // The next-item head trains (its loss falls) and leaves the language-model loss's record
    // in place; a checkpoint without an item table is refused before any work, naming it.
    let aux = dir.path().join("aux");
    let mut args = sft_args(&data, ck, aux.to_str().unwrap());
    // SID histories only, so that every batch has items followed by another.
    let tasks = args.iter().position(|a| *a == "--tasks").unwrap() + 1;
    args[tasks] = "seqrec";
    args.extend(["--history-loss", "--next-item-loss", "1.0"]);
    ok(&args);
    let item_losses: Vec<f64> = std::fs::read_to_string(aux.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["next_item_loss"].as_f64()
        })
        .collect();
    assert_eq!(item_losses.len(), losses(&aux).len(), "one per logged step");
    // From ln(121) ≈ 4.8 (uniform over the items); 16 steps move it by about 0.2.
    let n = item_losses.len();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(
        mean(&item_losses[n - 4..]) < mean(&item_losses[..4]) - 0.1,
        "{item_losses:?}"
    );
    let plain = dir.path().join("plain");
    let plain_ck = dir.path().join("init");
    let mut args = sft_args(&data, plain_ck.to_str().unwrap(), plain.to_str().unwrap());
    args.extend(["--next-item-loss", "1.0"]);
    let o = std::process::Command::new(common::BIN)
        .args(&args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("--next-item-loss needs a checkpoint with item embeddings")
            && err.contains(plain_ck.to_str().unwrap()),
        "{err}"
    );
    let mut args = sft_args(&data, plain_ck.to_str().unwrap(), plain.to_str().unwrap());
    args.extend(["--item-lr-scale", "3"]);
    let err = common::fails(&args);
    assert!(
        err.contains("--item-lr-scale needs a checkpoint with item embeddings"),
        "{err}"
    );
}

#[test]
fn max_history_is_recorded_and_cuts_what_eval_decodes() {
    let dir = tempfile::tempdir().unwrap();
    let (data, ck) = setup(dir.path());
    let out = dir.path().join("short");
    let mut args = sft_args(&data, &ck, out.to_str().unwrap());
    let steps = args.iter().position(|a| *a == "--max-steps").unwrap() + 1;
    args[steps] = "4";
    args.extend(["--history-loss", "--max-history", "1"]);
    ok(&args);
    let meta = std::fs::read_to_string(out.join("last/sidrec.json")).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
    assert_eq!(meta["max_history"], 1, "{meta}");

    let history_items = |eval: &Path| -> Vec<usize> {
        let p: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(eval.join("predictions.json")).unwrap())
                .unwrap();
        p.as_array()
            .unwrap()
            .iter()
            .map(|r| r["input"].as_str().unwrap().matches("<a_").count())
            .collect()
    };
    let last = out.join("last");
    let last = last.to_str().unwrap();
    let eval = |name: &str, extra: &[&str]| -> PathBuf {
        let e = dir.path().join(name);
        let mut a = vec![
            "eval",
            "--checkpoint",
            last,
            "--data",
            &data,
            "--split",
            "test",
            "--num-beams",
            "5",
            "--limit",
            "12",
            "--out",
        ];
        a.push(e.to_str().unwrap());
        a.extend(extra);
        ok(&a);
        e
    };
    let cut = eval("eval-cut", &[]);
    assert!(history_items(&cut).iter().all(|&n| n == 1));
    let report = std::fs::read_to_string(cut.join("report.md")).unwrap();
    assert!(
        report.contains("history cut to its last 1 item\n"),
        "{report}"
    );
    // `--max-history 0` overrides the checkpoint's limit: the whole history again.
    let whole = eval("eval-whole", &["--max-history", "0"]);
    assert!(history_items(&whole).iter().any(|&n| n > 1));
}

/// `--item-window 1` trains differently from whole rows (the first step's loss already
/// differs: the same batch, other attention), records the window and a history limit of one
/// item in the checkpoint, and further SFT of that checkpoint keeps the window; 0 is refused.
#[test]
fn an_item_window_is_recorded_changes_training_and_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (data, ck) = setup(dir.path());
    let run = |name: &str, init: &str, extra: &[&str]| -> PathBuf {
        let out = dir.path().join(name);
        let mut args = sft_args(&data, init, out.to_str().unwrap());
        let steps = args.iter().position(|a| *a == "--max-steps").unwrap() + 1;
        args[steps] = "3";
        let tasks = args.iter().position(|a| *a == "--tasks").unwrap() + 1;
        args[tasks] = "seqrec";
        args.push("--history-loss");
        args.extend(extra);
        ok(&args);
        out
    };
    let meta = |out: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.join("last/sidrec.json")).unwrap())
            .unwrap()
    };
    let windowed = run("windowed", &ck, &["--item-window", "1"]);
    let whole = run("whole", &ck, &[]);
    assert_eq!(meta(&windowed)["item_window"], 1);
    assert_eq!(meta(&windowed)["max_history"], 1);
    assert!(meta(&whole).get("item_window").is_none());
    let (w, p) = (losses(&windowed), losses(&whole));
    assert_eq!(w[0].0, p[0].0);
    assert!((w[0].1 - p[0].1).abs() > 1e-4, "{w:?} {p:?}");

    let further = run("further", windowed.join("last").to_str().unwrap(), &[]);
    assert_eq!(meta(&further)["item_window"], 1);

    let out = dir.path().join("zero");
    let mut args = sft_args(&data, &ck, out.to_str().unwrap());
    args.extend(["--item-window", "0"]);
    let o = std::process::Command::new(common::BIN)
        .args(&args)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--item-window must be at least 1"), "{err}");
}

/// `--eval-every 0` validates once, at the last step, even when the run spans several epochs
/// (whose ends validate otherwise), and still writes `best` and `last`.
#[test]
fn eval_every_zero_validates_only_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let (data, ck) = setup(dir.path());
    let validated = |every: &str| -> (Vec<u64>, u64) {
        let out = dir.path().join(format!("every-{every}"));
        let mut args = sft_args(&data, &ck, out.to_str().unwrap());
        let steps = args.iter().position(|a| *a == "--max-steps").unwrap() + 1;
        args[steps] = "20";
        // 473 examples: 8 steps an epoch.
        let batch = args.iter().position(|a| *a == "--batch-size").unwrap() + 1;
        args[batch] = "64";
        let at = args.iter().position(|a| *a == "--eval-every").unwrap() + 1;
        args[at] = every;
        let tasks = args.iter().position(|a| *a == "--tasks").unwrap() + 1;
        args[tasks] = "seqrec";
        args.extend(["--drop-covered-rows", "--history-loss"]);
        ok(&args);
        assert!(out.join("best").is_dir() && out.join("last").is_dir());
        let records: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let steps = records
            .iter()
            .filter(|r| r.get("valid_ndcg10").is_some())
            .map(|r| r["step"].as_u64().unwrap())
            .collect();
        let epochs = records
            .iter()
            .filter_map(|r| r.get("epoch")?.as_u64())
            .max();
        (steps, epochs.unwrap())
    };
    let (every_100, epochs) = validated("100");
    assert!(epochs >= 2, "20 steps should span three epochs");
    assert!(
        every_100 == [8, 16, 20],
        "epoch ends and the last step validate: {every_100:?}"
    );
    let (every_0, _) = validated("0");
    assert_eq!(every_0, [20]);
}

#[test]
fn a_copy_gate_trains_and_is_decoded_with() {
    let dir = tempfile::tempdir().unwrap();
    let (data, _) = setup(dir.path());
    // Without item embeddings: the gate finds the SIDs it copies through the lookup alone.
    let (ck, cfg) = init_with(dir.path(), &data, "init-copy", "--copy-gate");
    let ck = ck.as_str();
    assert!(cfg.contains("\"sidrec_copy_levels\""), "{cfg}");
    let gate = |dir: &Path| -> f32 {
        let t = sidrec::model::checkpoint::load_tensors(dir, &candle_core::Device::Cpu).unwrap();
        ["model.copy_gate.weight", "model.copy_gate.bias"]
            .iter()
            .map(|n| {
                t[*n]
                    .abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            })
            .sum()
    };
    assert_eq!(gate(Path::new(ck)), 0.0, "a fresh gate is zero");

    let out = dir.path().join("copy");
    let mut args = sft_args(&data, ck, out.to_str().unwrap());
    let tasks = args.iter().position(|a| *a == "--tasks").unwrap() + 1;
    args[tasks] = "seqrec";
    args.extend(["--history-loss"]);
    ok(&args);
    // The data's users buy consumables again, so the gate has repeats to learn from.
    assert!(gate(&out.join("last")) > 0.0, "the copy gate never trained");
    for mode in ["exact", "fast"] {
        let ev = dir.path().join(format!("eval-{mode}"));
        ok(&[
            "eval",
            "--checkpoint",
            out.join("last").to_str().unwrap(),
            "--data",
            &data,
            "--split",
            "test",
            "--num-beams",
            "10",
            "--limit",
            "20",
            "--mode",
            mode,
            "--out",
            ev.to_str().unwrap(),
        ]);
        assert!(ev.join("report.json").is_file());
    }

    // The per-level softmax has no place for the gate's logit: refused by name.
    let refused = dir.path().join("level");
    let mut args = sft_args(&data, ck, refused.to_str().unwrap());
    args.extend(["--sid-softmax", "level"]);
    let err = common::fails(&args);
    assert!(err.contains("copy gate"), "{err}");
}
