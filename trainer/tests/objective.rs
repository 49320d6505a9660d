//! The per-level softmax of `sft --sid-softmax level` trains exactly the scores fast-mode beam
//! search ranks by: a response's level loss is minus its fast beam score, for SIDs of three
//! and of four codes. Soft targets (`sft --soft-targets`) are the weighted sum of the plain
//! cross-entropies of their tokens, values and gradients.

mod common;

use candle_core::{DType, Device};
use common::ok;
use sidrec::checkpoint::Checkpoint;
use sidrec::decode::{DecodeRequest, Decoder, ScoreMode, SearchConfig};
use sidrec::model::Mode;
use sidrec::prompt;
use sidrec_trainer::train::batch::{make_batch, Example};
use sidrec_trainer::train::objective::{supervised_loss, LevelSets, LossOptions};
use sidrec_trainer::train::optim::sorted_vars;
use sidrec_trainer::train::run::load_trainable;
use sidrec_trainer::train::soft_targets::SoftTargets;

/// A synthetic dataset in `data` (`items` items, `users` users, `seed`) and a fresh
/// 300-token checkpoint of it in `init`.
fn synth_and_init(data: &str, init: &str, items: &str, users: &str, seed: &str) {
    ok(&[
        "data", "synth", "--items", items, "--users", users, "--seed", seed, "--out", data,
    ]);
    ok(&["init", "--data", data, "--out", init, "--vocab-size", "300"]);
}

#[test]
fn the_level_loss_of_a_response_is_minus_its_fast_beam_score() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ck_dir = dir.path().join("init");
    let (data, ck_dir) = (data.to_str().unwrap(), ck_dir.to_str().unwrap());
    ok(&[
        "data", "synth", "--items", "90", "--users", "60", "--seed", "3", "--out", data,
    ]);
    // The grammar SIDs of a small catalogue have three codes; give a few items a fourth, as a
    // collision policy does, so that `\n` is scored at depth 3 for some SIDs and forced for others.
    let index_path = std::path::Path::new(data).join("sid_index.json");
    let mut index: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&index_path).unwrap()).unwrap();
    for (_, sid) in index.iter_mut().take(6) {
        sid.as_array_mut().unwrap().push("<d_0>".into());
    }
    std::fs::write(&index_path, serde_json::to_string(&index).unwrap()).unwrap();
    ok(&[
        "init",
        "--data",
        data,
        "--out",
        ck_dir,
        "--vocab-size",
        "300",
    ]);
    let dev = Device::Cpu;
    let ck = Checkpoint::load(ck_dir, &dev, Some(DType::F32)).unwrap();
    let prompts = ck.prompts();
    let levels = LevelSets::new(&ck.index, &ck.tokenizer, &dev).unwrap();
    let decoder = Decoder::for_checkpoint(&ck, &dev).unwrap();
    let items: Vec<_> = ck.index.iter().map(|(i, s)| (i, s.clone())).collect();
    assert!(
        items.iter().any(|(_, s)| s.len() == 3) && items.iter().any(|(_, s)| s.len() == 4),
        "the catalogue should have SIDs of both lengths"
    );
    let history = prompts.sids(&[items[0].0, items[1].0, items[2].0]).unwrap();
    let request = prompts
        .recommend_sids(&history, &sidrec::prompt::PromptContext::default())
        .unwrap()
        .ids;
    // As many beams as items: every SID survives to the end, so each has its score.
    let cfg = SearchConfig {
        num_beams: items.len(),
        top_k: items.len(),
        mode: ScoreMode::Fast,
    };
    let reqs = [DecodeRequest {
        prompt: &request,
        exclude: &[],
    }];
    let hyps = decoder
        .beam_search(&ck.model, &reqs, &cfg)
        .unwrap()
        .remove(0);
    let opts = LossOptions {
        levels: Some(&levels),
        ..LossOptions::default()
    };
    let mut checked = [0, 0];
    for (_, sid) in &items {
        let Some(h) = hyps.iter().find(|h| &h.sid == sid) else {
            panic!("{sid} missing from the beams");
        };
        let p = prompt::sft_seqrec(prompts.style(), &history, &sid.to_string());
        let e = Example::encode(&prompts, &p, 4096).unwrap();
        assert_eq!(&e.ids[..e.prompt_len], &request[..], "one prompt path");
        let batch = make_batch(&[&e], ck.tokenizer.eos_id(), &dev).unwrap();
        let nll: f32 = supervised_loss(&ck.model, &batch, opts, Mode::Infer)
            .unwrap()
            .nll
            .to_scalar()
            .unwrap();
        assert!(
            (h.score + nll).abs() < 1e-4 * nll.abs().max(1.0),
            "{sid}: beam score {} vs level loss {nll}",
            h.score
        );
        checked[sid.len() - 3] += 1;
    }
    assert!(checked[0] > 0 && checked[1] > 0, "{checked:?}");
}

/// A model trained with the per-level softmax records it, and `eval` then scores beams in fast
/// mode unless told otherwise.
#[test]
fn a_level_trained_checkpoint_is_evaluated_in_fast_mode_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (data, init, run) = (p("data"), p("init"), p("run"));
    synth_and_init(&data, &init, "60", "60", "4");
    ok(&[
        "sft",
        "--init",
        &init,
        "--data",
        &data,
        "--out",
        &run,
        "--tasks",
        "seqrec",
        "--history-loss",
        "--sid-softmax",
        "level",
        "--max-steps",
        "3",
        "--batch-size",
        "8",
        "--valid-rows",
        "4",
        "--valid-beams",
        "5",
    ]);
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(std::path::Path::new(&run).join("last/sidrec.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["score_mode"], "fast", "{meta}");
    let init_meta = std::fs::read_to_string(std::path::Path::new(&init).join("sidrec.json"));
    assert!(
        !init_meta.unwrap().contains("score_mode"),
        "absent means exact"
    );
    let eval = |extra: &[&str], out: &str| -> serde_json::Value {
        let mut args = vec![
            "eval",
            "--checkpoint",
            "",
            "--data",
            &data,
            "--split",
            "test",
            "--num-beams",
            "5",
            "--limit",
            "4",
            "--out",
            out,
        ];
        let ck = format!("{run}/last");
        args[2] = &ck;
        args.extend(extra);
        ok(&args);
        serde_json::from_str(
            &std::fs::read_to_string(std::path::Path::new(out).join("report.json")).unwrap(),
        )
        .unwrap()
    };
    assert_eq!(eval(&[], &p("eval-default"))["mode"], "fast");
    assert_eq!(
        eval(&["--mode", "exact"], &p("eval-exact"))["mode"],
        "exact"
    );
}

/// The soft-target loss of a batch equals the plain (fused-kernel) cross-entropy of a batch in
/// which each supervised position is repeated once per token of its target distribution and
/// weighted by that token's share: value and every gradient. At α = 0 it is the plain loss.
#[test]
fn soft_targets_are_the_weighted_plain_losses_of_their_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (data, init) = (p("data"), p("init"));
    synth_and_init(&data, &init, "60", "40", "5");
    let dev = Device::Cpu;
    let (ck, varmap) = load_trainable(std::path::Path::new(&init), &dev).unwrap();
    let vars = sorted_vars(&varmap).unwrap();
    let prompts = ck.prompts();
    let items: Vec<_> = ck.index.iter().map(|(i, _)| i).collect();
    // Rows over a few items, so that previous items have several counted companions.
    let rows: Vec<Vec<sidrec::ItemId>> = (0..12)
        .map(|r| {
            (0..4)
                .map(|j| items[(r * 3 + j * (r % 4 + 1)) % 7])
                .collect()
        })
        .collect();
    let examples: Vec<Example> = rows
        .iter()
        .map(|row| {
            let history = prompts.sids(&row[..row.len() - 1]).unwrap();
            let target = prompts.sids(&row[row.len() - 1..]).unwrap();
            let p = prompt::sft_seqrec(prompts.style(), &history, &target[0]);
            Example::encode(&prompts, &p, 4096).unwrap()
        })
        .collect();
    let refs: Vec<&Example> = examples.iter().collect();
    let batch = make_batch(&refs, ck.tokenizer.eos_id(), &dev).unwrap();
    let vocab = ck.tokenizer.sid_vocab().clone();
    let v = ck.model.config().vocab_size;

    let soft_loss = |alpha: f32| {
        let targets = SoftTargets::from_examples(&examples, vocab.clone(), alpha).unwrap();
        let opts = LossOptions {
            soft: Some(&targets),
            ..LossOptions::default()
        };
        let loss = supervised_loss(&ck.model, &batch, opts, Mode::Train).unwrap();
        (
            targets.dense(&batch, v).unwrap(),
            loss.nll,
            loss.soft.unwrap(),
        )
    };
    let grads_of = |loss: &candle_core::Tensor| {
        let g = loss.backward().unwrap();
        vars.iter()
            .map(|(n, var)| {
                (
                    n.clone(),
                    g.get(var.as_tensor())
                        .map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap()),
                )
            })
            .collect::<Vec<_>>()
    };
    let plain = supervised_loss(&ck.model, &batch, LossOptions::default(), Mode::Train)
        .unwrap()
        .nll;
    let close = |a: f32, b: f32, what: &str| {
        assert!(
            (a - b).abs() <= 2e-4 * a.abs().max(b.abs()).max(1.0),
            "{what}: {a} against {b}"
        );
    };
    let same_grads = |a: &[(String, Option<Vec<f32>>)], b: &[(String, Option<Vec<f32>>)]| {
        let mut compared = 0;
        for ((name, ga), (_, gb)) in a.iter().zip(b) {
            let (Some(ga), Some(gb)) = (ga, gb) else {
                assert_eq!(ga.is_some(), gb.is_some(), "{name}");
                continue;
            };
            let scale = ga.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-3);
            for (x, y) in ga.iter().zip(gb) {
                assert!((x - y).abs() <= 1e-3 * scale, "{name}: {x} against {y}");
            }
            compared += 1;
        }
        assert!(compared > 5, "{compared} gradients compared");
    };

    // α = 0: the plain loss, and the reported NLL is the plain NLL at any α.
    let (_, nll0, soft0) = soft_loss(0.0);
    let plain_value: f32 = plain.to_scalar().unwrap();
    close(soft0.to_scalar().unwrap(), plain_value, "loss at α = 0");
    close(nll0.to_scalar().unwrap(), plain_value, "reported NLL");
    same_grads(&grads_of(&soft0), &grads_of(&plain));

    // α = 0.7: the repeated, weighted batch through the fused kernel.
    let (q, nll, soft) = soft_loss(0.7);
    close(
        nll.to_scalar().unwrap(),
        plain_value,
        "reported NLL at α = 0.7",
    );
    let q = q.to_vec2::<f32>().unwrap();
    let positions = batch.positions.to_vec1::<u32>().unwrap();
    let (mut pos, mut tgt, mut w) = (Vec::new(), Vec::new(), Vec::new());
    let mut spread = 0;
    for (i, row) in q.iter().enumerate() {
        let cells: Vec<(usize, f32)> = row
            .iter()
            .copied()
            .enumerate()
            .filter(|&(_, x)| x > 0.0)
            .collect();
        spread += usize::from(cells.len() > 1);
        for (t, x) in cells {
            pos.push(positions[i]);
            tgt.push(t as u32);
            w.push(x);
        }
    }
    assert!(spread >= 5, "only {spread} positions have soft targets");
    let n = pos.len();
    let expanded = sidrec_trainer::train::batch::Batch {
        ids: batch.ids.clone(),
        mask: batch.mask.clone(),
        positions: candle_core::Tensor::from_vec(pos, n, &dev).unwrap(),
        targets: candle_core::Tensor::from_vec(tgt, n, &dev).unwrap(),
        example_of: vec![0; n],
        tokens: batch.tokens,
        supervised: n,
    };
    let weights = candle_core::Tensor::from_vec(w, n, &dev).unwrap();
    let opts = LossOptions {
        token_weights: Some(&weights),
        ..LossOptions::default()
    };
    let reference = supervised_loss(&ck.model, &expanded, opts, Mode::Train)
        .unwrap()
        .nll;
    close(
        soft.to_scalar().unwrap(),
        reference.to_scalar().unwrap(),
        "loss at α = 0.7",
    );
    same_grads(&grads_of(&soft), &grads_of(&reference));
}
