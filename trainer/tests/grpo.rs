//! GRPO: reward and advantage arithmetic against the reference's numbers, the objective on a
//! tiny in-process model (KL of an unchanged policy, one step raises a rewarded completion), and
//! the `grpo` command end to end with a kill and `--resume`.

use std::collections::HashMap;
mod common;

use common::{ok, BIN};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use sidrec::decode::Decoder;
use sidrec::decode::{DecodeRequest, ScoreMode, SearchConfig};
use sidrec::model::{ItemLookup, Mode, Qwen2, Qwen2Config};
use sidrec::tokenizer::SidTokenizer;
use sidrec::{ItemId, Sid, SidIndex};
use sidrec_trainer::grpo::loss::{grpo_loss, prepare, token_logps, LossConfig, Sequence};
use sidrec_trainer::grpo::rewards::{
    group_advantages, ranking_weights, Candidate, CfScorer, GroupTarget, ItemEmbeddings,
    RewardKind, RewardSpec, Rewarder,
};
use sidrec_trainer::grpo::rollout::{Roller, RolloutMode};
use sidrec_trainer::train::optim::{sorted_vars, AdamW, AdamWConfig, GradAccumulator};

fn cand(sid: &str, item: ItemId) -> Candidate {
    Candidate {
        sid: sid.to_string(),
        items: vec![item],
    }
}

/// 16 candidates `<a_i>` (item i); the target is candidate `hit` (if any).
fn group16(hit: Option<usize>) -> (Vec<Candidate>, String) {
    let cands: Vec<Candidate> = (0..16)
        .map(|i| cand(&format!("<a_{i}>"), i as u32))
        .collect();
    let target = match hit {
        Some(h) => format!("<a_{h}>"),
        None => "<a_99>".to_string(),
    };
    (cands, target)
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn ranking_weights_and_rewards_match_the_reference() {
    let w = ranking_weights(16);
    assert!(close(w[0], -0.16377, 5e-6), "{}", w[0]);
    assert!(close(w[1], -0.10333, 5e-6), "{}", w[1]);
    assert!(close(w[2], -0.08189, 5e-6), "{}", w[2]);
    assert!(close(w[15], -0.04007, 5e-6), "{}", w[15]);
    assert!(close(w.iter().sum::<f64>(), -1.0, 1e-12));
    let sigma: f64 = (0..16).map(|j| 1.0 / ((j + 2) as f64).log2()).sum();
    assert!(close(sigma, 6.10600, 5e-5), "{sigma}");

    let r = |spec: &str, hit| {
        let (cands, target) = group16(hit);
        let rw = Rewarder::new(spec.parse().unwrap(), 16, None, None).unwrap();
        let t = GroupTarget {
            item: 0,
            sid: &target,
            history: &[],
        };
        rw.group(&t, &cands).unwrap()
    };
    // ranking = rule + penalty: the hit gets 1, each miss at rank i gets w_i.
    let ranking = r("ranking", Some(2));
    for (i, x) in ranking.iter().enumerate() {
        let want = if i == 2 { 1.0 } else { w[i] };
        assert!(close(*x, want, 1e-12), "rank {i}: {x} vs {want}");
    }
    // ranking_only leaves the hit at 0; a group without a hit is all zeros.
    let only = r("ranking_only", Some(2));
    assert_eq!(only[2], 0.0);
    assert!(close(only[0], w[0], 1e-12));
    assert!(r("ranking", None).iter().all(|&x| x == 0.0));
    assert_eq!(r("rule", Some(5)).iter().sum::<f64>(), 1.0);
    // Weights scale each term.
    let half = r("ranking:0.5", Some(2));
    assert!(close(half[2], 0.5, 1e-12) && close(half[0], 0.5 * w[0], 1e-12));

    // The reference's advantages (MINIONEREC.md §6.2): ranking with a hit at rank 2, and rule.
    let a = group_advantages(&ranking);
    assert!(close(a[2], 3.72, 0.01), "{}", a[2]);
    assert!(close(a[0], -0.63, 0.01), "{}", a[0]);
    let a = group_advantages(&r("rule", Some(7)));
    assert!(close(a[7], 3.75, 0.01), "{}", a[7]);
    assert!(close(a[0], -0.25, 0.01), "{}", a[0]);
}

#[test]
fn equal_rewards_give_zero_advantages() {
    assert!(group_advantages(&[0.0; 16]).iter().all(|&a| a == 0.0));
    assert!(group_advantages(&[0.7; 16]).iter().all(|&a| a == 0.0));
    let a = group_advantages(&[1.0, 0.0, 0.0, 0.0]);
    assert!(a[0] > 0.0 && a[1] < 0.0);
    assert!(close(a.iter().sum::<f64>(), 0.0, 1e-9));
}

#[test]
fn reward_specs_parse_with_clear_errors() {
    let s: RewardSpec = "ranking,cf:0.1".parse().unwrap();
    assert_eq!(
        s.terms,
        vec![(RewardKind::Ranking, 1.0), (RewardKind::Cf, 0.1)]
    );
    assert_eq!(s.to_string(), "ranking,cf:0.1");
    for (bad, needle) in [
        ("nope", "unknown reward `nope`"),
        ("rule,cf:x", "weight `x` of `cf` is not a number"),
        ("rule,rule", "`rule` appears twice"),
        ("rule,", "empty term"),
        ("semantic:inf", "must be finite"),
    ] {
        let e = bad.parse::<RewardSpec>().unwrap_err().to_string();
        assert!(e.contains(needle), "{bad}: {e}");
        assert!(e.contains("--reward"), "{bad}: {e}");
    }
    let e = Rewarder::new("semantic".parse().unwrap(), 16, None, None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--item-embeddings"), "{e}");
    assert!(Rewarder::new("cf".parse().unwrap(), 16, None, None).is_err());
}

struct FakeCf;

impl CfScorer for FakeCf {
    fn score_candidates(
        &self,
        history: &[String],
        candidates: &[String],
    ) -> sidrec_trainer::Result<Vec<f32>> {
        // Score = candidate id + history length, so both inputs are checked.
        Ok(candidates
            .iter()
            .map(|c| c.parse::<f32>().unwrap() + history.len() as f32)
            .collect())
    }
}

#[test]
fn semantic_and_cf_rewards() {
    let rows: HashMap<ItemId, Vec<f32>> = [
        (1, vec![1.0, 0.0]),
        (2, vec![0.0, 1.0]),
        (3, vec![1.0, 1.0]),
    ]
    .into_iter()
    .collect();
    let emb = Arc::new(ItemEmbeddings::from_rows("mem.npy", rows));
    let rw = Rewarder::new(
        "semantic,cf:0.1".parse().unwrap(),
        3,
        Some(emb),
        Some(Arc::new(FakeCf)),
    )
    .unwrap();
    // A collided SID that names the target counts as the target.
    let cands = vec![
        Candidate {
            sid: "<a_1>".into(),
            items: vec![0, 1],
        },
        cand("<a_2>", 2),
        cand("<a_3>", 3),
    ];
    let hist = [7, 8];
    let t = GroupTarget {
        item: 1,
        sid: "<a_1>",
        history: &hist,
    };
    let r = rw.group(&t, &cands).unwrap();
    let want = [1.0 + 0.1 * 3.0, 0.0 + 0.1 * 4.0, 0.5f64.sqrt() + 0.1 * 5.0];
    for (x, w) in r.iter().zip(want) {
        assert!(close(*x, w, 1e-6), "{r:?}");
    }
    // No history (title/description prompts): no cf term.
    let t = GroupTarget { history: &[], ..t };
    let r = rw.group(&t, &cands).unwrap();
    assert!(close(r[0], 1.0, 1e-6) && close(r[1], 0.0, 1e-6), "{r:?}");
    // An item without an embedding is an error naming the file.
    let t = GroupTarget {
        item: 9,
        sid: "<a_9>",
        history: &[],
    };
    let e = rw.group(&t, &cands).unwrap_err().to_string();
    assert!(e.contains("mem.npy") && e.contains("item 9"), "{e}");
}

/// A 2-layer model over 4 items whose SIDs share prefixes, with its tokenizer and decoder.
struct Fixture {
    tk: SidTokenizer,
    varmap: VarMap,
    model: Qwen2,
    decoder: Decoder,
    prompt: Vec<u32>,
}

fn fixture(seed: f32) -> Fixture {
    fixture_with(seed, false)
}

/// [`fixture`], with a copy gate when `copy_gate` (its weights drawn as the others', so the
/// other weights differ from `fixture`'s).
fn fixture_with(seed: f32, copy_gate: bool) -> Fixture {
    let index: SidIndex = [
        (0, Sid::from_codes(vec![1, 2])),
        (1, Sid::from_codes(vec![1, 3])),
        (2, Sid::from_codes(vec![4, 2])),
        (3, Sid::from_codes(vec![4, 5])),
    ]
    .into_iter()
    .collect();
    let texts = ["history: <a_1><b_2> <a_4><b_5>\nnext:\n<a_4><b_2>\n"; 10];
    let tk = SidTokenizer::train_bpe(texts.iter(), 280, &index).unwrap();
    let mut cfg = Qwen2Config::new(tk.vocab_size(), 32, 64, 2, 2, 1, true);
    if copy_gate {
        cfg.copy_levels = Some(2);
    }
    let varmap = VarMap::new();
    let model = Qwen2::new(
        &cfg,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .unwrap();
    // Deterministic weights (VarMap init is random): a fixed pattern scaled by `seed`.
    for (i, (_, v)) in sorted_vars(&varmap).unwrap().iter().enumerate() {
        let n = v.elem_count();
        let data: Vec<f32> = (0..n)
            .map(|j| seed * (((j * 7 + i * 13) % 17) as f32 - 8.0) / 40.0)
            .collect();
        v.set(&Tensor::from_vec(data, v.shape(), &Device::Cpu).unwrap())
            .unwrap();
    }
    if copy_gate {
        model
            .attach_item_lookup(ItemLookup::new(tk.sid_vocab(), &index).unwrap())
            .unwrap();
    }
    let decoder = Decoder::new(
        Arc::new(index),
        tk.sid_vocab().clone(),
        tk.newline_id(),
        tk.eos_id(),
        &Device::Cpu,
    )
    .unwrap();
    let prompt = tk.encode_text("history: <a_1><b_2>\nnext:\n").unwrap();
    Fixture {
        tk,
        varmap,
        model,
        decoder,
        prompt,
    }
}

fn seqs<'a>(prompt: &'a [u32], comps: &'a [Vec<u32>], adv: &[f64]) -> Vec<Sequence<'a>> {
    comps
        .iter()
        .zip(adv)
        .map(|(c, &a)| Sequence {
            prompt,
            completion: c,
            advantage: a as f32,
        })
        .collect()
}

#[test]
fn kl_is_zero_when_the_policy_is_the_reference() {
    let f = fixture(1.0);
    let other = fixture(0.5);
    let comps = vec![
        [
            f.tk.encode_text("<a_1><b_2>\n").unwrap(),
            vec![f.tk.eos_id()],
        ]
        .concat(),
        [f.tk.encode_text("<a_4>").unwrap(), vec![f.tk.eos_id()]].concat(),
    ];
    let adv = [1.0, -1.0];
    let s = seqs(&f.prompt, &comps, &adv);
    let p = prepare(&s, s.len(), f.tk.eos_id(), &Device::Cpu).unwrap();
    // Per-sequence mean, then mean over sequences: each sequence's weights sum to 1/S.
    let w = p.weights.to_vec1::<f32>().unwrap();
    let n0 = comps[0].len();
    assert!(close(w[..n0].iter().sum::<f32>() as f64, 0.5, 1e-6));
    assert!(close(w[n0..].iter().sum::<f32>() as f64, 0.5, 1e-6));
    let cfg = LossConfig {
        beta: 0.1,
        epsilon: None,
    };
    let logp = token_logps(&f.model, &p, Mode::Train).unwrap();
    let same = token_logps(&f.model, &p, Mode::Train).unwrap();
    let (loss, kl) = grpo_loss(&logp, &same, None, &p, &cfg).unwrap();
    assert!(kl.to_vec1::<f32>().unwrap().iter().all(|&k| k == 0.0));
    // Ratio 1 and zero KL: the loss is −mean(A) = 0 for these advantages.
    assert!(loss.to_scalar::<f32>().unwrap().abs() < 1e-6);
    let diff = token_logps(&other.model, &p, Mode::Train).unwrap();
    let (_, kl) = grpo_loss(&logp, &diff, None, &p, &cfg).unwrap();
    assert!(kl.to_vec1::<f32>().unwrap().iter().all(|&k| k > 0.0));
}

#[test]
fn token_logps_of_a_copy_gated_model_are_its_beam_scores() {
    let f = fixture_with(1.0, true);
    let hyps = f
        .decoder
        .beam_search(
            &f.model,
            &[DecodeRequest {
                prompt: &f.prompt,
                exclude: &[],
            }],
            &SearchConfig {
                num_beams: 4,
                top_k: 4,
                mode: ScoreMode::Exact,
            },
        )
        .unwrap();
    assert_eq!(hyps[0].len(), 4);
    let completion = |item: ItemId| {
        [
            f.decoder.item_tokens(item).unwrap(),
            vec![f.tk.newline_id(), f.tk.eos_id()],
        ]
        .concat()
    };
    for h in &hyps[0] {
        let logp = seq_logp(&f, &completion(h.items[0]));
        assert!(
            (logp - h.score).abs() < 1e-3,
            "{}: {logp} vs {}",
            h.sid,
            h.score
        );
    }
    // The repeat of the prompt's last item (0: <a_1><b_2>) is where the gate acts: with the
    // gate zeroed its log-probability changes.
    let repeat = seq_logp(&f, &completion(0));
    for (name, v) in f.varmap.data().lock().unwrap().iter() {
        if name.contains("copy_gate") {
            v.set(&v.as_tensor().zeros_like().unwrap()).unwrap();
        }
    }
    assert!((seq_logp(&f, &completion(0)) - repeat).abs() > 1e-3);
}

fn seq_logp(f: &Fixture, comp: &[u32]) -> f32 {
    let comps = [comp.to_vec()];
    let s = seqs(&f.prompt, &comps, &[0.0]);
    let p = prepare(&s, 1, f.tk.eos_id(), &Device::Cpu).unwrap();
    token_logps(&f.model, &p, Mode::Train)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn one_step_raises_the_rewarded_completion() {
    let f = fixture(1.0);
    let roller = Roller {
        decoder: f.decoder.clone(),
        mode: RolloutMode::Beam,
        num_generations: 4,
        temperature: 1.0,
    };
    let groups = roller.generate(&f.model, &f.tk, &[&f.prompt]).unwrap();
    let group = &groups[0];
    assert_eq!(group.len(), 4, "every item of the 4-item catalogue");
    for c in group {
        assert_eq!(
            &c.tokens[c.tokens.len() - 2..],
            &[f.tk.newline_id(), f.tk.eos_id()]
        );
    }
    // Reward the beam ranked last, so the step has to change the ranking's direction.
    let target = group[3].candidate.clone();
    let rw = Rewarder::new("ranking".parse().unwrap(), 4, None, None).unwrap();
    let t = GroupTarget {
        item: target.items[0],
        sid: &target.sid,
        history: &[],
    };
    let cands: Vec<Candidate> = group.iter().map(|c| c.candidate.clone()).collect();
    let adv = group_advantages(&rw.group(&t, &cands).unwrap());
    assert!(adv[3] > 0.0 && adv[..3].iter().all(|&a| a < 0.0), "{adv:?}");

    let comps: Vec<Vec<u32>> = group.iter().map(|c| c.tokens.clone()).collect();
    let before: Vec<f32> = comps.iter().map(|c| seq_logp(&f, c)).collect();
    let vars = sorted_vars(&f.varmap).unwrap();
    let mut opt = AdamW::new(vars.clone(), AdamWConfig::default()).unwrap();
    let mut acc = GradAccumulator::default();
    let s = seqs(&f.prompt, &comps, &adv);
    let p = prepare(&s, s.len(), f.tk.eos_id(), &Device::Cpu).unwrap();
    let logp = token_logps(&f.model, &p, Mode::Train).unwrap();
    let reference = logp.detach();
    let cfg = LossConfig {
        beta: 1e-3,
        epsilon: None,
    };
    let (loss, _) = grpo_loss(&logp, &reference, None, &p, &cfg).unwrap();
    acc.add(&vars, &loss.backward().unwrap()).unwrap();
    let norm = opt.step(&mut acc, 1e-2, None).unwrap();
    assert!(norm > 0.0);
    let after: Vec<f32> = comps.iter().map(|c| seq_logp(&f, c)).collect();
    assert!(after[3] > before[3], "{before:?} -> {after:?}");
    assert!(after[0] < before[0], "{before:?} -> {after:?}");
}

fn metric(out: &Path, key: &str) -> Vec<(u64, f64)> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Some((v.get("step")?.as_u64()?, v.get(key)?.as_f64()?))
        })
        .collect()
}

fn grpo_args<'a>(data: &'a str, ck: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "--threads",
        "1",
        "grpo",
        "--init",
        ck,
        "--data",
        data,
        "--out",
        out,
        "--max-steps",
        "8",
        "--eval-every",
        "4",
        "--prompts-per-step",
        "2",
        "--num-generations",
        "4",
        "--lr",
        "1e-3",
        "--valid-rows",
        "8",
        "--valid-beams",
        "10",
        "--title-history-rows",
        "20",
        "--sync-ref-every",
        "3",
        "--num-iterations",
        "2",
        // Dropout masks must come from (seed, step, micro-batch) for the resume check below.
        "--dropout",
        "0.1",
    ]
}

#[test]
fn grpo_runs_and_resume_after_a_kill_continues_identically() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").to_str().unwrap().to_string();
    let ck = dir.path().join("init").to_str().unwrap().to_string();
    ok(&[
        "data", "synth", "--items", "60", "--users", "80", "--seed", "5", "--out", &data,
    ]);
    ok(&["init", "--data", &data, "--out", &ck, "--vocab-size", "400"]);

    let bad = Command::new(BIN)
        .args([
            "grpo",
            "--init",
            &ck,
            "--data",
            &data,
            "--out",
            "x",
            "--reward",
            "rule,cf:oops",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("weight `oops` of `cf`"));

    let full: PathBuf = dir.path().join("full");
    ok(&grpo_args(&data, &ck, full.to_str().unwrap()));
    let loss = metric(&full, "loss");
    assert_eq!(
        loss.iter().map(|x| x.0).collect::<Vec<_>>(),
        (1..=8).collect::<Vec<_>>()
    );
    assert_eq!(metric(&full, "valid_hr10").len(), 2);
    assert!(metric(&full, "kl").iter().all(|x| x.1 >= 0.0));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(full.join("best/sidrec.json")).unwrap())
            .unwrap();
    assert_eq!(meta["stage"], "grpo");
    assert!(full.join("last/ref_model.safetensors").is_file());
    // The reward, hit-rate, KL and validation curves are drawn at each validation.
    let svg = std::fs::read_to_string(full.join("curves.svg")).unwrap();
    for key in ["reward", "hit_rate", "kl", "valid_ndcg10"] {
        assert!(svg.contains(key), "curves.svg lacks {key}");
    }

    // Without dropout the same run takes other steps: the flag is not ignored.
    let nodrop = dir.path().join("nodrop");
    let mut args = grpo_args(&data, &ck, nodrop.to_str().unwrap());
    args.truncate(args.len() - 2);
    ok(&args);
    let nodrop_loss = metric(&nodrop, "loss");
    assert!(
        loss.iter()
            .zip(&nodrop_loss)
            .any(|((_, a), (_, b))| (a - b).abs() > 1e-9),
        "{loss:?} vs {nodrop_loss:?}"
    );

    // --add-target puts the target into every group that missed it: with the ranking reward a
    // group with a hit has a positive reward sum (1 + the misses' penalties > 0), so every step's
    // mean reward is positive, while the logged hit rate stays the policy's own.
    let gt = dir.path().join("gt");
    let mut args = grpo_args(&data, &ck, gt.to_str().unwrap());
    args.push("--add-target");
    ok(&args);
    let rewards = metric(&gt, "reward");
    assert_eq!(rewards.len(), 8);
    assert!(rewards.iter().all(|r| r.1 > 0.0), "{rewards:?}");
    // ... which the same run without it does not have.
    let plain_rewards = metric(&full, "reward");
    assert!(
        plain_rewards.iter().any(|r| r.1 == 0.0),
        "{plain_rewards:?}"
    );
    assert!(
        metric(&gt, "hit_rate").iter().any(|h| h.1 < 1.0),
        "the untrained policy hit every group"
    );

    // Kill a second run once its step-4 save exists, then resume it.
    let part = dir.path().join("part");
    common::kill_after_first_save(&grpo_args(&data, &ck, part.to_str().unwrap()), &part);
    assert!(
        metric(&part, "loss").len() < 8,
        "the run finished before it was killed"
    );
    let mut args = grpo_args(&data, &ck, part.to_str().unwrap());
    args.push("--resume");
    let o = ok(&args);
    assert!(String::from_utf8_lossy(&o.stderr).contains("resuming at epoch"));
    let resumed = metric(&part, "loss");
    assert_eq!(resumed.len(), 8, "{resumed:?}");
    for ((s1, a), (s2, b)) in loss.iter().zip(&resumed) {
        assert_eq!(s1, s2);
        assert!((a - b).abs() < 1e-6, "step {s1}: {a} vs {b}");
    }
}

#[test]
fn truncated_histories_are_newest_suffixes_with_the_row_target() {
    use sidrec::checkpoint::Checkpoint;
    use sidrec::data::dataset::{DatasetDir, Split};
    use sidrec_trainer::grpo::data::{RlDataBuilder, RlTask};

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").to_str().unwrap().to_string();
    let ck = dir.path().join("init").to_str().unwrap().to_string();
    ok(&[
        "data", "synth", "--items", "40", "--users", "30", "--seed", "3", "--out", &data,
    ]);
    ok(&["init", "--data", &data, "--out", &ck, "--vocab-size", "300"]);
    let c = Checkpoint::load(&ck, &Device::Cpu, Some(DType::F32)).unwrap();
    let rows = DatasetDir::discover(&data)
        .unwrap()
        .read_split(Split::Train)
        .unwrap();
    let build = |extra: usize, seed: u64| {
        RlDataBuilder {
            prompts: c.prompts(),
            contexts: &sidrec_trainer::data::features::RowContexts::none(),
            items: &c.items,
            category: "items".into(),
            max_prompt_len: 512,
            title_history_rows: 0,
            seed,
            truncated_histories: extra,
        }
        .build(&rows, &[RlTask::SeqRec])
        .unwrap()
    };
    let plain = build(0, 1);
    assert_eq!(plain.len(), rows.len());
    let aug = build(2, 1);
    let want: usize = rows
        .iter()
        .map(|r| 1 + r.history_item_id.len().saturating_sub(1).min(2))
        .sum();
    assert_eq!(aug.len(), want);
    assert!(
        want > rows.len(),
        "the fixture has no history of length ≥ 2"
    );
    // Row by row: the full prompt, then its cut copies: distinct, strictly shorter suffixes of
    // the history with the same target.
    let mut i = 0;
    for (r, full) in rows.iter().zip(&plain) {
        assert_eq!(aug[i].history, r.history_item_id);
        assert_eq!(aug[i].prompt, full.prompt);
        let n = r.history_item_id.len().saturating_sub(1).min(2);
        let mut lens = Vec::new();
        for e in &aug[i + 1..i + 1 + n] {
            assert_eq!(e.target, r.item_id);
            let m = e.history.len();
            assert!(m >= 1 && m < r.history_item_id.len());
            assert_eq!(
                e.history[..],
                r.history_item_id[r.history_item_id.len() - m..]
            );
            assert!(e.prompt.len() < aug[i].prompt.len());
            lens.push(m);
        }
        lens.dedup();
        assert_eq!(lens.len(), n, "lengths repeat: {lens:?}");
        i += 1 + n;
    }
    // Same seed, same cuts; another seed cuts elsewhere.
    let again = build(2, 1);
    assert!(aug.iter().zip(&again).all(|(a, b)| a.prompt == b.prompt));
    let other = build(2, 2);
    assert!(aug.iter().zip(&other).any(|(a, b)| a.prompt != b.prompt));
}
