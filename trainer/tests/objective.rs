//! The per-level softmax of `sft --sid-softmax level` trains exactly the scores fast-mode beam
//! search ranks by: a response's level loss is minus its fast beam score, for SIDs of three
//! and of four codes.

mod common;

use candle_core::{DType, Device};
use common::ok;
use sidrec::checkpoint::Checkpoint;
use sidrec::decode::{DecodeRequest, Decoder, ScoreMode, SearchConfig};
use sidrec::model::Mode;
use sidrec::prompt;
use sidrec_trainer::train::batch::{make_batch, Example};
use sidrec_trainer::train::objective::{supervised_loss, LevelSets, LossOptions};

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
    ok(&[
        "data", "synth", "--items", "60", "--users", "60", "--seed", "4", "--out", &data,
    ]);
    ok(&[
        "init",
        "--data",
        &data,
        "--out",
        &init,
        "--vocab-size",
        "300",
    ]);
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
