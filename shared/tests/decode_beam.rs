//! Constrained beam search against an exhaustive ranking of every catalogue SID.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sidrec::decode::{DecodeRequest, Decoder, Hypothesis, Mixture, Pool, ScoreMode, SearchConfig};
use sidrec::model::{ItemLookup, Mode, Qwen2, Qwen2Config};
use sidrec::trie::{SidTrie, SidVocab};
use sidrec::{ItemId, Sid, SidIndex};

const NEWLINE: u32 = 100;
const EOS: u32 = 101;
const FIRST_SID_TOKEN: u32 = 102;

/// A catalogue of `n` items with random SIDs of `levels` levels (codes < `width`); some items
/// share a SID and, with `mixed`, a few SIDs get a fourth level.
fn catalogue(rng: &mut ChaCha8Rng, n: usize, width: u32, mixed: bool) -> SidIndex {
    let mut index = SidIndex::new();
    let mut seen: HashSet<Vec<u32>> = HashSet::new();
    for id in 0..n as ItemId {
        let mut codes: Vec<u32> = (0..3).map(|_| rng.gen_range(0..width)).collect();
        if mixed && rng.gen_bool(0.2) {
            codes.push(rng.gen_range(0..3));
        }
        // A 3-level SID that is a prefix of a 4-level one is allowed (terminal with children).
        seen.insert(codes.clone());
        index.insert(id, Sid::from_codes(codes));
    }
    index
}

fn setup(index: &SidIndex, seed: u64) -> (Qwen2, Decoder) {
    let vocab = SidVocab::sequential(index, FIRST_SID_TOKEN).unwrap();
    let vocab_size = FIRST_SID_TOKEN as usize + vocab.len();
    let mut cfg = Qwen2Config::new(vocab_size, 64, 128, 2, 4, 2, true);
    cfg.max_position_embeddings = 256;
    let (_vm, model) = common::random_model(&cfg, seed);
    let decoder = Decoder::new(Arc::new(index.clone()), vocab, NEWLINE, EOS, &Device::Cpu).unwrap();
    (model, decoder)
}

/// Log-probability of each token of `seq` after `prompt` (full-vocabulary or level-normalised).
fn sequence_scores(
    model: &Qwen2,
    prompt: &[u32],
    seq: &[u32],
    level_sets: Option<&[Vec<u32>]>,
) -> Vec<f32> {
    let mut ids = prompt.to_vec();
    ids.extend_from_slice(seq);
    let logits = match model.item_lookup().filter(|_| model.has_copy_gate()) {
        None => model
            .forward_train(&common::row(&ids), None)
            .unwrap()
            .squeeze(0)
            .unwrap(),
        // The copy gate's logit, written out: at every position, where the token after it
        // repeats a level of the SID before it.
        Some(lookup) => {
            let hidden = model
                .forward_hidden(&common::row(&ids), None, Mode::Train)
                .unwrap()
                .squeeze(0)
                .unwrap();
            let copies: Vec<_> = (0..ids.len())
                .map(|t| lookup.copy_target_at(&ids, t + 1))
                .collect();
            model
                .with_copy_logits(&model.logits(&hidden).unwrap(), &hidden, &copies)
                .unwrap()
        }
    };
    let mut out = Vec::new();
    for (i, &tok) in seq.iter().enumerate() {
        let pos = prompt.len() + i - 1;
        let row = logits.get(pos).unwrap();
        let lp = match level_sets {
            None => {
                let lse = row.exp().unwrap().sum_all().unwrap().log().unwrap();
                (row.get(tok as usize).unwrap() - lse).unwrap()
            }
            Some(levels) => {
                let set = &levels[i];
                let idx = Tensor::new(set.as_slice(), &Device::Cpu).unwrap();
                let sub = row.index_select(&idx, 0).unwrap();
                let lse = sub.exp().unwrap().sum_all().unwrap().log().unwrap();
                let j = set.iter().position(|&t| t == tok).unwrap();
                (sub.get(j).unwrap() - lse).unwrap()
            }
        };
        out.push(lp.to_scalar::<f32>().unwrap());
    }
    out
}

/// Per token, `log(Σ_k w_k p_k)` (`Pool::Mean`) or `Σ_k w_k log p_k` (`Pool::Product`) of the
/// members' log-probabilities (`per_model[k][i]`) with weights `w` summing to one: the
/// ensemble's token score, written out directly (one model: its own log-probabilities).
fn mixture(per_model: &[Vec<f32>], weights: &[f64], pool: Pool) -> Vec<f32> {
    (0..per_model[0].len())
        .map(|i| {
            let terms = per_model.iter().zip(weights);
            match pool {
                Pool::Mean => terms
                    .map(|(lp, w)| w * f64::from(lp[i]).exp())
                    .sum::<f64>()
                    .ln() as f32,
                Pool::Product => terms.map(|(lp, w)| w * f64::from(lp[i])).sum::<f64>() as f32,
            }
        })
        .collect()
}

/// The sequence score of `mix` from each model's token log-probabilities (`per_model[k][i]`):
/// the first token pooled over every model, the later ones over the models without their
/// item-free twins, which score the first level only.
fn pooled(mix: &Mixture<'_>, per_model: &[Vec<f32>]) -> f32 {
    let first = mixture(per_model, mix.weights(), mix.pool())[0];
    let kept = per_model.len() - mix.twins();
    let later = mixture(&per_model[..kept], &mix.later_weights(), mix.pool());
    first + later[1..].iter().sum::<f32>()
}

/// A search whose beam is wider than the catalogue's `distinct` SIDs: it keeps every prefix, so
/// its scores are exact.
fn as_wide_as_the_catalogue(distinct: usize, mode: ScoreMode) -> SearchConfig {
    SearchConfig {
        num_beams: distinct + 5,
        top_k: distinct + 5,
        mode,
    }
}

/// `model` alone, as a mixture of one.
fn alone(model: &Qwen2) -> Mixture<'_> {
    Mixture::equal(vec![model]).unwrap()
}

/// Every distinct SID of the catalogue with its exact (or fast) score under the ensemble `mix`
/// (one model: its own score), best first.
fn exhaustive(
    mix: &Mixture<'_>,
    decoder: &Decoder,
    prompt: &[u32],
    mode: ScoreMode,
    exclude: &[ItemId],
) -> Vec<(Sid, f32)> {
    let trie: &SidTrie = decoder.trie();
    let excluded: HashSet<ItemId> = exclude.iter().copied().collect();
    let mut out = Vec::new();
    for (sid, items) in trie.paths() {
        if items.iter().all(|i| excluded.contains(i)) {
            continue;
        }
        let first = items[0];
        let toks = decoder.item_tokens(first).unwrap();
        let score: f32 = match mode {
            ScoreMode::Exact => {
                let mut seq = toks.clone();
                seq.extend([NEWLINE, EOS]);
                let per_model: Vec<Vec<f32>> = mix
                    .models()
                    .iter()
                    .map(|m| sequence_scores(m, prompt, &seq, None))
                    .collect();
                pooled(mix, &per_model)
            }
            ScoreMode::Fast => {
                // Level d normalises over that level's tokens, plus `\n` where SIDs end at d.
                let levels: Vec<Vec<u32>> = (0..toks.len())
                    .map(|d| {
                        let mut set = trie.level_tokens(d).to_vec();
                        if (0..trie.num_nodes(d) as u32).any(|u| trie.is_terminal(d, u)) {
                            set.push(NEWLINE);
                        }
                        set
                    })
                    .collect();
                let mut seq = toks.clone();
                let mut sets = levels.clone();
                if toks.len() < trie.num_levels() {
                    seq.push(NEWLINE);
                    let mut set = trie.level_tokens(toks.len()).to_vec();
                    set.push(NEWLINE);
                    sets.push(set);
                }
                let per_model: Vec<Vec<f32>> = mix
                    .models()
                    .iter()
                    .map(|m| sequence_scores(m, prompt, &seq, Some(&sets)))
                    .collect();
                pooled(mix, &per_model)
            }
        };
        out.push((sid, score));
    }
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

fn assert_matches_exhaustive(hyps: &[Hypothesis], expected: &[(Sid, f32)]) {
    assert_eq!(
        hyps.len(),
        expected.len(),
        "one hypothesis per distinct SID"
    );
    for (i, (h, (sid, score))) in hyps.iter().zip(expected).enumerate() {
        assert!(
            (h.score - score).abs() < 2e-3,
            "rank {i}: score {} vs {}",
            h.score,
            score
        );
        if &h.sid != sid {
            // Only a numerical near-tie may swap neighbours.
            let other = expected
                .iter()
                .find(|(s, _)| s == &h.sid)
                .expect("SID in catalogue");
            assert!(
                (other.1 - score).abs() < 2e-3,
                "rank {i}: {} vs {}",
                h.sid,
                sid
            );
        }
    }
}

#[test]
fn beam_search_equals_exhaustive_ranking_in_both_modes() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for mixed in [false, true] {
        let index = catalogue(&mut rng, 150, 6, mixed);
        let (model, decoder) = setup(&index, 11);
        let distinct = decoder.trie().paths().count();
        let prompt: Vec<u32> = (0..9).map(|_| rng.gen_range(0..100)).collect();
        for mode in [ScoreMode::Exact, ScoreMode::Fast] {
            let cfg = as_wide_as_the_catalogue(distinct, mode);
            let got = decoder
                .beam_search(
                    &model,
                    &[DecodeRequest {
                        prompt: &prompt,
                        exclude: &[],
                    }],
                    &cfg,
                )
                .unwrap();
            let expected = exhaustive(&alone(&model), &decoder, &prompt, mode, &[]);
            assert_matches_exhaustive(&got[0], &expected);
            for h in &got[0] {
                assert_eq!(decoder.trie().lookup(&h.sid).unwrap(), h.items.as_slice());
            }
        }
    }
}

#[test]
fn the_copy_gate_scores_beams_and_samples_as_the_whole_row_pass_does() {
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    for mixed in [false, true] {
        let index = catalogue(&mut rng, 120, 5, mixed);
        let vocab = SidVocab::sequential(&index, FIRST_SID_TOKEN).unwrap();
        let mut cfg = Qwen2Config::new(
            FIRST_SID_TOKEN as usize + vocab.len(),
            64,
            128,
            2,
            4,
            2,
            true,
        );
        cfg.max_position_embeddings = 256;
        cfg.copy_levels = Some(index.max_levels());
        // Random gate weights, so that the gate moves every score.
        let (vm, model) = common::random_model(&cfg, 5);
        model
            .attach_item_lookup(ItemLookup::new(&vocab, &index).unwrap())
            .unwrap();
        let decoder =
            Decoder::new(Arc::new(index.clone()), vocab, NEWLINE, EOS, &Device::Cpu).unwrap();
        let distinct = decoder.trie().paths().count();
        // A prompt that ends with an item's SID and a few other tokens, as a history does.
        let last = decoder.item_tokens(3).unwrap();
        let mut prompt: Vec<u32> = (0..5).map(|_| rng.gen_range(0..100)).collect();
        prompt.extend(&last);
        prompt.extend([7, 8]);
        for mode in [ScoreMode::Exact, ScoreMode::Fast] {
            let req = [DecodeRequest {
                prompt: &prompt,
                exclude: &[],
            }];
            let got = decoder
                .beam_search(&model, &req, &as_wide_as_the_catalogue(distinct, mode))
                .unwrap();
            let expected = exhaustive(&alone(&model), &decoder, &prompt, mode, &[]);
            assert_matches_exhaustive(&got[0], &expected);
            // Sampled SIDs carry the same scores as the exhaustive ones.
            let drawn = decoder.sample(&model, &req, 20, 1.0, mode).unwrap();
            for h in &drawn[0] {
                let (_, score) = expected.iter().find(|(s, _)| s == &h.sid).unwrap();
                assert!(
                    (h.score - score).abs() < 2e-3,
                    "{}: {} vs {score}",
                    h.sid,
                    h.score
                );
            }
        }
        // The gate moves the repeat's score: the same model with the gate zeroed scores it
        // otherwise.
        let with_gate = exhaustive(&alone(&model), &decoder, &prompt, ScoreMode::Exact, &[]);
        for (name, var) in vm.data().lock().unwrap().iter() {
            if name.contains("copy_gate") {
                var.set(&var.as_tensor().zeros_like().unwrap()).unwrap();
            }
        }
        let without = exhaustive(&alone(&model), &decoder, &prompt, ScoreMode::Exact, &[]);
        let repeat = index.get(3).unwrap().clone();
        let score_of = |list: &[(Sid, f32)]| list.iter().find(|(s, _)| s == &repeat).unwrap().1;
        assert!((score_of(&with_gate) - score_of(&without)).abs() > 1e-3);
    }
}

#[test]
fn ensemble_search_ranks_by_the_members_pooled_token_probabilities() {
    let mut rng = ChaCha8Rng::seed_from_u64(19);
    let index = catalogue(&mut rng, 120, 6, true);
    let (first, decoder) = setup(&index, 11);
    let (second, _) = setup(&index, 12);
    let (third, _) = setup(&index, 13);
    let distinct = decoder.trie().paths().count();
    let prompt: Vec<u32> = (0..7).map(|_| rng.gen_range(0..100)).collect();
    let req = [DecodeRequest {
        prompt: &prompt,
        exclude: &[],
    }];
    for mode in [ScoreMode::Exact, ScoreMode::Fast] {
        let cfg = as_wide_as_the_catalogue(distinct, mode);
        let members = vec![&first, &second, &third];
        let equal = Mixture::equal(members.clone()).unwrap();
        let weighted = Mixture::weighted(members, vec![0.5, 6.0, 1.5]).unwrap();
        assert_eq!(weighted.weights(), &[0.0625, 0.75, 0.1875]);
        let product = equal.clone().pooled(Pool::Product);
        let weighted_product = weighted.clone().pooled(Pool::Product);
        let mut top10 = Vec::new();
        for mix in [&equal, &weighted, &product, &weighted_product] {
            let got = decoder.beam_search_ensemble(mix, &req, &cfg).unwrap();
            let expected = exhaustive(mix, &decoder, &prompt, mode, &[]);
            assert_matches_exhaustive(&got[0], &expected);
            top10.push(
                expected
                    .iter()
                    .take(10)
                    .map(|(s, _)| s.clone())
                    .collect::<Vec<_>>(),
            );
        }
        // The mixture is not any single member's ranking, and the weights move it.
        let first_alone = exhaustive(&alone(&first), &decoder, &prompt, mode, &[]);
        let first_alone: Vec<Sid> = first_alone
            .iter()
            .take(10)
            .map(|(s, _)| s.clone())
            .collect();
        assert_ne!(
            top10[0], first_alone,
            "{mode}: members too alike for the test to tell a mixture from one model"
        );
        assert_ne!(top10[0], top10[1], "{mode}: the weights changed nothing");
        assert_ne!(top10[0], top10[2], "{mode}: the product ranks as the mean");
        assert_ne!(
            top10[2], top10[3],
            "{mode}: the weights changed nothing in the product"
        );
    }
}

#[test]
fn item_free_twins_take_their_share_of_every_models_weight() {
    let mut rng = ChaCha8Rng::seed_from_u64(29);
    let index = catalogue(&mut rng, 40, 5, false);
    let (first, decoder) = setup(&index, 1);
    let (second, _) = setup(&index, 2);
    // Models without item vectors stand in for twins: the mixture only places them.
    let (t1, _) = setup(&index, 3);
    let (t2, _) = setup(&index, 4);
    let base = Mixture::weighted(vec![&first, &second], vec![1.0, 3.0])
        .unwrap()
        .pooled(Pool::Product);
    let mixed = base
        .clone()
        .with_item_free_twins(vec![&t1, &t2], 0.4)
        .unwrap();
    let want = [0.15, 0.45, 0.1, 0.3];
    assert!(
        mixed
            .weights()
            .iter()
            .zip(want)
            .all(|(a, b)| (a - b).abs() < 1e-12),
        "{:?}",
        mixed.weights()
    );
    assert_eq!(mixed.models().len(), 4);
    assert_eq!(mixed.twins(), 2);
    assert!(std::ptr::eq(mixed.models()[2], &t1) && std::ptr::eq(mixed.models()[3], &t2));
    assert_eq!(mixed.pool(), Pool::Product);
    // After the first level the models score alone, at their own shares.
    assert_eq!(mixed.later_weights(), base.weights());
    assert!(mixed
        .clone()
        .with_item_free_twins(vec![&t1, &t2, &t1, &t2], 0.4)
        .is_err());
    // Beam search scores the first token by all four and the rest by the two models: with
    // beams as wide as the catalogue it ranks every SID as the exhaustive scores do, and the
    // twins move the ranking.
    let distinct = decoder.trie().paths().count();
    let prompt: Vec<u32> = (0..6).map(|_| rng.gen_range(0..100)).collect();
    let req = [DecodeRequest {
        prompt: &prompt,
        exclude: &[],
    }];
    for mode in [ScoreMode::Exact, ScoreMode::Fast] {
        let cfg = as_wide_as_the_catalogue(distinct, mode);
        let got = decoder.beam_search_ensemble(&mixed, &req, &cfg).unwrap();
        let expected = exhaustive(&mixed, &decoder, &prompt, mode, &[]);
        assert_matches_exhaustive(&got[0], &expected);
        let without = exhaustive(&base, &decoder, &prompt, mode, &[]);
        assert_ne!(
            expected.iter().map(|(s, _)| s).collect::<Vec<_>>(),
            without.iter().map(|(s, _)| s).collect::<Vec<_>>(),
            "{mode}: the twins changed no rank"
        );
    }
    let same = base.clone().with_item_free_twins(vec![], 0.0).unwrap();
    assert_eq!(same.weights(), base.weights());
    for (twins, share, why) in [
        (vec![&t1, &t2], 1.0, "outside [0, 1)"),
        (vec![&t1, &t2], -0.1, "outside [0, 1)"),
        (vec![&t1, &t2], f64::NAN, "outside [0, 1)"),
        (vec![&t1], 0.4, "1 item-free twins for 2 models"),
    ] {
        let err = base
            .clone()
            .with_item_free_twins(twins, share)
            .unwrap_err()
            .to_string();
        assert!(err.contains(why), "{share}: {err}");
    }
}

#[test]
fn ensemble_of_one_model_twice_is_that_model_and_batches_like_it() {
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let index = catalogue(&mut rng, 200, 7, true);
    let (model, decoder) = setup(&index, 5);
    let prompts: Vec<Vec<u32>> = [3usize, 9, 5]
        .iter()
        .map(|&n| (0..n).map(|_| rng.gen_range(0..100)).collect())
        .collect();
    let exclude: Vec<ItemId> = (0..30).collect();
    let reqs: Vec<DecodeRequest> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| DecodeRequest {
            prompt: p,
            exclude: if i == 2 { &exclude } else { &[] },
        })
        .collect();
    let cfg = SearchConfig {
        num_beams: 12,
        top_k: 12,
        mode: ScoreMode::Exact,
    };
    let alone = decoder.beam_search(&model, &reqs, &cfg).unwrap();
    let twice = decoder
        .beam_search_ensemble(&Mixture::equal(vec![&model, &model]).unwrap(), &reqs, &cfg)
        .unwrap();
    for (a, t) in alone.iter().zip(&twice) {
        assert_eq!(a.len(), t.len());
        for (x, y) in a.iter().zip(t) {
            assert_eq!(x.sid, y.sid);
            assert!(
                (x.score - y.score).abs() < 1e-4,
                "{} vs {}",
                x.score,
                y.score
            );
        }
    }
    for h in &twice[2] {
        assert!(
            h.items.iter().any(|i| !exclude.contains(i)),
            "{} is excluded",
            h.sid
        );
    }
    assert!(Mixture::equal(Vec::new()).is_err());
    for bad in [
        vec![1.0],
        vec![1.0, 0.0],
        vec![1.0, -2.0],
        vec![1.0, f64::NAN],
    ] {
        assert!(
            Mixture::weighted(vec![&model, &model], bad.clone()).is_err(),
            "{bad:?}"
        );
    }
}

#[test]
fn batched_equals_one_by_one_and_exclusions_hold() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let index = catalogue(&mut rng, 300, 8, true);
    let (model, decoder) = setup(&index, 5);
    let prompts: Vec<Vec<u32>> = [4usize, 11, 7, 1]
        .iter()
        .map(|&n| (0..n).map(|_| rng.gen_range(0..100)).collect())
        .collect();
    let exclude: Vec<ItemId> = (0..40).collect();
    let reqs: Vec<DecodeRequest> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| DecodeRequest {
            prompt: p,
            exclude: if i == 1 { &exclude } else { &[] },
        })
        .collect();
    for mode in [ScoreMode::Exact, ScoreMode::Fast] {
        let cfg = SearchConfig {
            num_beams: 20,
            top_k: 10,
            mode,
        };
        let batched = decoder.beam_search(&model, &reqs, &cfg).unwrap();
        for (i, req) in reqs.iter().enumerate() {
            let alone = decoder
                .beam_search(&model, std::slice::from_ref(req), &cfg)
                .unwrap();
            assert_eq!(batched[i].len(), 10);
            for (a, b) in batched[i].iter().zip(&alone[0]) {
                assert_eq!(a.sid, b.sid, "prompt {i}");
                assert!((a.score - b.score).abs() < 1e-3);
            }
        }
        // Excluded items never come back, unless they share their SID with a kept item.
        let excluded: HashSet<ItemId> = exclude.iter().copied().collect();
        for h in &batched[1] {
            assert!(
                h.items.iter().any(|i| !excluded.contains(i)),
                "{} excluded",
                h.sid
            );
        }
        // And the excluded search is the unexcluded ranking with those SIDs removed.
        let full = decoder
            .beam_search(
                &model,
                &[DecodeRequest {
                    prompt: &prompts[1],
                    exclude: &[],
                }],
                &SearchConfig {
                    num_beams: 400,
                    top_k: 400,
                    mode,
                },
            )
            .unwrap();
        let kept: Vec<&Sid> = full[0]
            .iter()
            .filter(|h| h.items.iter().any(|i| !excluded.contains(i)))
            .map(|h| &h.sid)
            .take(10)
            .collect();
        let wide = decoder
            .beam_search(
                &model,
                &[DecodeRequest {
                    prompt: &prompts[1],
                    exclude: &exclude,
                }],
                &SearchConfig {
                    num_beams: 400,
                    top_k: 10,
                    mode,
                },
            )
            .unwrap();
        assert_eq!(wide[0].iter().map(|h| &h.sid).collect::<Vec<_>>(), kept);
    }
}

#[test]
fn sampler_draws_only_catalogue_sids_and_respects_exclusions() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let index = catalogue(&mut rng, 120, 5, true);
    let (model, decoder) = setup(&index, 2);
    let prompt: Vec<u32> = (0..6).map(|_| rng.gen_range(0..100)).collect();
    let best = decoder
        .beam_search(
            &model,
            &[DecodeRequest {
                prompt: &prompt,
                exclude: &[],
            }],
            &SearchConfig {
                num_beams: 200,
                top_k: 1,
                mode: ScoreMode::Exact,
            },
        )
        .unwrap();
    let exclude: Vec<ItemId> = best[0][0].items.clone();
    let samples = decoder
        .sample(
            &model,
            &[DecodeRequest {
                prompt: &prompt,
                exclude: &exclude,
            }],
            64,
            1.0,
            ScoreMode::Exact,
        )
        .unwrap();
    assert_eq!(samples[0].len(), 64);
    let exhaustive = exhaustive(&alone(&model), &decoder, &prompt, ScoreMode::Exact, &[]);
    for h in &samples[0] {
        assert!(decoder.trie().lookup(&h.sid).is_some());
        assert_ne!(h.sid, best[0][0].sid, "excluded SID sampled");
        let exp = exhaustive.iter().find(|(s, _)| s == &h.sid).unwrap().1;
        assert!(
            (h.score - exp).abs() < 2e-3,
            "sample score is the sequence log-prob"
        );
    }
    // A very low temperature is greedy decoding, which is beam search with one beam.
    let cold = decoder
        .sample(
            &model,
            &[DecodeRequest {
                prompt: &prompt,
                exclude: &exclude,
            }],
            16,
            1e-4,
            ScoreMode::Exact,
        )
        .unwrap();
    let greedy = decoder
        .beam_search(
            &model,
            &[DecodeRequest {
                prompt: &prompt,
                exclude: &exclude,
            }],
            &SearchConfig {
                num_beams: 1,
                top_k: 1,
                mode: ScoreMode::Exact,
            },
        )
        .unwrap();
    assert!(cold[0].iter().all(|h| h.sid == greedy[0][0].sid));
}

#[test]
fn fewer_sids_than_beams_and_bad_configs() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let index = catalogue(&mut rng, 10, 3, false);
    let (model, decoder) = setup(&index, 1);
    let distinct = decoder.trie().paths().count();
    let prompt = [1u32, 2, 3];
    let req = [DecodeRequest {
        prompt: &prompt,
        exclude: &[],
    }];
    let got = decoder
        .beam_search(
            &model,
            &req,
            &SearchConfig {
                num_beams: 50,
                top_k: 50,
                mode: ScoreMode::Exact,
            },
        )
        .unwrap();
    assert_eq!(got[0].len(), distinct);
    let bad = SearchConfig {
        num_beams: 5,
        top_k: 6,
        mode: ScoreMode::Fast,
    };
    assert!(decoder.beam_search(&model, &req, &bad).is_err());
    let empty: [u32; 0] = [];
    assert!(decoder
        .beam_search(
            &model,
            &[DecodeRequest {
                prompt: &empty,
                exclude: &[]
            }],
            &SearchConfig {
                num_beams: 5,
                top_k: 5,
                mode: ScoreMode::Fast
            }
        )
        .is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn every_result_is_a_distinct_catalogue_sid(seed in any::<u64>(), n in 1usize..120, width in 2u32..7, mixed in any::<bool>(), beams in 1usize..40) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let index = catalogue(&mut rng, n, width, mixed);
        let (model, decoder) = setup(&index, seed ^ 1);
        let distinct = decoder.trie().paths().count();
        let prompts: Vec<Vec<u32>> = (0..3).map(|i| (0..(2 + i * 3)).map(|_| rng.gen_range(0..100)).collect()).collect();
        let reqs: Vec<DecodeRequest> = prompts.iter().map(|p| DecodeRequest { prompt: p, exclude: &[] }).collect();
        for mode in [ScoreMode::Exact, ScoreMode::Fast] {
            let out = decoder.beam_search(&model, &reqs, &SearchConfig { num_beams: beams, top_k: beams, mode }).unwrap();
            for hyps in out {
                prop_assert_eq!(hyps.len(), beams.min(distinct));
                let mut seen = HashSet::new();
                for w in hyps.windows(2) {
                    prop_assert!(w[0].score >= w[1].score);
                }
                for h in hyps {
                    prop_assert!(seen.insert(h.sid.clone()), "repeated {}", h.sid);
                    let items = decoder.trie().lookup(&h.sid);
                    prop_assert!(items.is_some());
                    let expected: Vec<ItemId> = index.iter().filter(|(_, s)| **s == h.sid).map(|(i, _)| i).collect();
                    prop_assert_eq!(h.items.clone(), expected);
                }
            }
        }
    }
}

#[test]
fn level_scores_use_only_the_level_tokens() {
    // Sanity check of the test's own fast-mode reference on one SID.
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let index = catalogue(&mut rng, 20, 4, false);
    let (model, decoder) = setup(&index, 3);
    let prompt = [5u32, 6, 7];
    let toks = decoder.item_tokens(0).unwrap();
    let sets: Vec<Vec<u32>> = (0..3)
        .map(|d| decoder.trie().level_tokens(d).to_vec())
        .collect();
    let fast = sequence_scores(&model, &prompt, &toks, Some(&sets));
    let exact = sequence_scores(&model, &prompt, &toks, None);
    for (f, e) in fast.iter().zip(&exact) {
        assert!(
            f >= e,
            "normalising over fewer tokens can only raise log-probs"
        );
    }
}
