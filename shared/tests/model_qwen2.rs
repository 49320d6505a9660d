//! Forward-pass tests of `sidrec::model::Qwen2`: parity with candle-transformers, padding,
//! train/infer agreement, shared-prompt beam decoding, and gradients.

mod common;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::qwen2 as ct;
use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sidrec::model::{left_padded_mask, BeamCache, Mode, Qwen2Config};
use sidrec::testing::{max_abs, max_abs_diff as max_diff};

const TOL: f32 = 1e-4;

/// Every parameter's gradient in `a` equals its gradient in `b` to 1e-3 of the largest value
/// (`what` names the case in a failure).
fn assert_same_gradients(
    varmap: &candle_nn::VarMap,
    a: &candle_core::backprop::GradStore,
    b: &candle_core::backprop::GradStore,
    what: &str,
) {
    for (name, var) in varmap.data().lock().unwrap().iter() {
        let (ga, gb) = (
            a.get(var.as_tensor()).unwrap(),
            b.get(var.as_tensor()).unwrap(),
        );
        let scale = max_abs(gb);
        let d = max_diff(ga, gb);
        assert!(
            d <= 1e-3 * scale.max(1e-3),
            "{name}{what}: gradients differ by {d} (max {scale})"
        );
    }
}

fn ct_config(cfg: &Qwen2Config) -> ct::Config {
    ct::Config {
        vocab_size: cfg.vocab_size,
        hidden_size: cfg.hidden_size,
        intermediate_size: cfg.intermediate_size,
        num_hidden_layers: cfg.num_hidden_layers,
        num_attention_heads: cfg.num_attention_heads,
        num_key_value_heads: cfg.kv_heads(),
        max_position_embeddings: cfg.max_position_embeddings,
        sliding_window: cfg.max_position_embeddings,
        max_window_layers: cfg.num_hidden_layers,
        tie_word_embeddings: cfg.tie_word_embeddings,
        rope_theta: cfg.rope_theta,
        rms_norm_eps: cfg.rms_norm_eps,
        use_sliding_window: false,
        hidden_act: candle_nn::Activation::Silu,
    }
}

#[test]
fn matches_candle_transformers_prefill_and_incremental_decode() {
    for (kv_heads, tied) in [(2, true), (4, false), (1, false)] {
        let cfg = tiny_cfg(kv_heads, tied);
        let (varmap, model) = random_model(&cfg, 7);
        // One safetensors file feeds both implementations.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        varmap.save(&path).unwrap();
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let mut reference = ct::ModelForCausalLM::new(&ct_config(&cfg), vb).unwrap();

        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let prompt = random_ids(&mut rng, 11, cfg.vocab_size);
        let want = reference
            .forward(&row(&prompt), 0)
            .unwrap()
            .i((0, 0))
            .unwrap();
        let (got, prompt_cache) = model.prefill(&row(&prompt), &[prompt.len()]).unwrap();
        let d = max_diff(&got.i(0).unwrap(), &want);
        assert!(d <= TOL, "prefill kv={kv_heads} tied={tied}: {d}");
        let d = max_diff(&alone_last_logits(&model, &prompt), &want);
        assert!(d <= TOL, "train path kv={kv_heads} tied={tied}: {d}");

        let mut beams = BeamCache::new(model.num_layers());
        for step in 0..4 {
            let tok = rng.gen_range(1..cfg.vocab_size as u32);
            let want = reference
                .forward(&row(&[tok]), prompt.len() + step)
                .unwrap()
                .i((0, 0))
                .unwrap();
            let tokens = Tensor::new(&[tok], &Device::Cpu).unwrap();
            let got = model
                .decode_step(&tokens, &prompt_cache, &mut beams, 1)
                .unwrap();
            let d = max_diff(&got.i(0).unwrap(), &want);
            assert!(d <= TOL, "decode step {step} kv={kv_heads}: {d}");
        }
    }
}

#[test]
fn left_padded_rows_equal_prompts_run_alone() {
    let cfg = tiny_cfg(2, true);
    let (_vm, model) = random_model(&cfg, 3);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let prompts: Vec<Vec<u32>> = [5, 9, 1, 7]
        .iter()
        .map(|&n| random_ids(&mut rng, n, cfg.vocab_size))
        .collect();
    let (ids, lengths) = left_pad(&prompts);
    let l = ids.dim(1).unwrap();
    let (last, _) = model.prefill(&ids, &lengths).unwrap();
    let mask = left_padded_mask(&lengths, l, &Device::Cpu).unwrap();
    let all = model.forward_train(&ids, Some(&mask)).unwrap();
    let all_infer = model
        .logits(
            &model
                .forward_hidden(&ids, Some(&mask), Mode::Infer)
                .unwrap(),
        )
        .unwrap();
    for (b, p) in prompts.iter().enumerate() {
        let (alone, _) = model.prefill(&row(p), &[p.len()]).unwrap();
        let d = max_diff(&last.i(b).unwrap(), &alone.i(0).unwrap());
        assert!(d <= TOL, "prefill row {b}: {d}");
        // Every real position, not just the last, matches the unpadded run.
        let alone_all = model.forward_train(&row(p), None).unwrap().i(0).unwrap();
        let padded = all.i((b, l - p.len()..)).unwrap();
        let d = max_diff(&padded, &alone_all);
        assert!(d <= TOL, "train row {b}: {d}");
        let padded = all_infer.i((b, l - p.len()..)).unwrap();
        let d = max_diff(&padded, &alone_all);
        assert!(d <= TOL, "infer row {b}: {d}");
    }
}

#[test]
fn right_padding_also_works_on_the_training_path() {
    let cfg = tiny_cfg(2, false);
    let (_vm, model) = random_model(&cfg, 4);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let a = random_ids(&mut rng, 6, cfg.vocab_size);
    let b = random_ids(&mut rng, 3, cfg.vocab_size);
    let mut b_padded = b.clone();
    b_padded.extend([0, 0, 0]);
    let ids = Tensor::from_vec([a.clone(), b_padded].concat(), (2, 6), &Device::Cpu).unwrap();
    let mask = Tensor::from_vec(
        vec![1f32, 1., 1., 1., 1., 1., 1., 1., 1., 0., 0., 0.],
        (2, 6),
        &Device::Cpu,
    )
    .unwrap();
    let logits = model.forward_train(&ids, Some(&mask)).unwrap();
    let alone = model.forward_train(&row(&b), None).unwrap().i(0).unwrap();
    let d = max_diff(&logits.i((1, ..3)).unwrap(), &alone);
    assert!(d <= TOL, "right-padded row: {d}");
    let finite = logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(
        finite.iter().all(|x| x.is_finite()),
        "pad positions must stay finite"
    );
}

#[test]
fn inference_path_equals_training_path() {
    for (kv_heads, tied) in [(2, true), (4, false)] {
        let cfg = tiny_cfg(kv_heads, tied);
        let (_vm, model) = random_model(&cfg, 11);
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let prompts: Vec<Vec<u32>> = [8, 3, 12]
            .iter()
            .map(|&n| random_ids(&mut rng, n, cfg.vocab_size))
            .collect();
        let (ids, lengths) = left_pad(&prompts);
        let mask = left_padded_mask(&lengths, ids.dim(1).unwrap(), &Device::Cpu).unwrap();
        let train = model
            .forward_hidden(&ids, Some(&mask), Mode::Train)
            .unwrap();
        let infer = model
            .forward_hidden(&ids, Some(&mask), Mode::Infer)
            .unwrap();
        let d = max_diff(&train, &infer);
        assert!(d <= TOL, "hidden kv={kv_heads}: {d}");
        let d = max_diff(
            &model.logits(&train).unwrap(),
            &model.logits(&infer).unwrap(),
        );
        assert!(d <= TOL, "logits kv={kv_heads}: {d}");
    }
}

#[test]
fn subset_logits_equal_full_logits_columns() {
    let cfg = tiny_cfg(2, false);
    let (_vm, model) = random_model(&cfg, 13);
    let ids = row(&[5, 6, 7, 8]);
    let (hidden, _) = model.prefill_hidden(&ids, &[4]).unwrap();
    let full = model.logits(&hidden).unwrap();
    let subset = Tensor::new(&[3u32, 250, 17], &Device::Cpu).unwrap();
    let part = model.logits_for(&hidden, &subset).unwrap();
    assert_eq!(part.dims(), &[1, 3]);
    let d = max_diff(&part, &full.index_select(&subset, 1).unwrap());
    assert!(d <= TOL, "{d}");
    assert_eq!(
        model.lm_head_weight().dims(),
        &[cfg.vocab_size, cfg.hidden_size]
    );
}

/// Prefill + decode steps with arbitrary in-prompt beam reorders (repeats allowed) equal the
/// from-scratch training-path logits of every beam's full token sequence.
#[test]
fn shared_prompt_beam_decoding_matches_from_scratch() {
    for (kv_heads, nb) in [(2, 4), (4, 3), (1, 1)] {
        let cfg = tiny_cfg(kv_heads, true);
        let (_vm, model) = random_model(&cfg, 21);
        let mut rng = ChaCha8Rng::seed_from_u64(22);
        let prompts: Vec<Vec<u32>> = [6, 2, 9]
            .iter()
            .map(|&n| random_ids(&mut rng, n, cfg.vocab_size))
            .collect();
        let (ids, lengths) = left_pad(&prompts);
        let (first, prompt_cache) = model.prefill(&ids, &lengths).unwrap();
        for (b, p) in prompts.iter().enumerate() {
            let d = max_diff(&first.i(b).unwrap(), &alone_last_logits(&model, p));
            assert!(d <= TOL, "prefill {b}: {d}");
        }
        let n = prompts.len() * nb;
        let mut seqs: Vec<Vec<u32>> = (0..n).map(|r| prompts[r / nb].clone()).collect();
        let mut beams = BeamCache::new(model.num_layers());
        for step in 0..5 {
            if step > 0 {
                let parents: Vec<u32> = (0..n)
                    .map(|r| ((r / nb) * nb + rng.gen_range(0..nb)) as u32)
                    .collect();
                beams
                    .reorder(&Tensor::new(parents.as_slice(), &Device::Cpu).unwrap())
                    .unwrap();
                seqs = parents.iter().map(|&p| seqs[p as usize].clone()).collect();
            }
            let toks = random_ids(&mut rng, n, cfg.vocab_size);
            for (s, &t) in seqs.iter_mut().zip(&toks) {
                s.push(t);
            }
            let tokens = Tensor::new(toks.as_slice(), &Device::Cpu).unwrap();
            let logits = model
                .decode_step(&tokens, &prompt_cache, &mut beams, nb)
                .unwrap();
            assert_eq!(logits.dims(), &[n, cfg.vocab_size]);
            assert_eq!(beams.len(), step + 1);
            for (r, s) in seqs.iter().enumerate() {
                let d = max_diff(&logits.i(r).unwrap(), &alone_last_logits(&model, s));
                assert!(d <= TOL, "kv={kv_heads} nb={nb} step {step} row {r}: {d}");
            }
        }
    }
}

#[test]
fn decode_step_rejects_inconsistent_shapes() {
    let cfg = tiny_cfg(2, true);
    let (_vm, model) = random_model(&cfg, 1);
    let (ids, lengths) = left_pad(&[vec![1, 2, 3], vec![4]]);
    let (_, cache) = model.prefill(&ids, &lengths).unwrap();
    let mut beams = BeamCache::new(model.num_layers());
    let tokens = Tensor::new(&[1u32, 2, 3], &Device::Cpu).unwrap();
    assert!(model.decode_step(&tokens, &cache, &mut beams, 2).is_err());
    assert!(model.prefill(&ids, &[3, 0]).is_err());
    assert!(model.prefill(&ids, &[4, 1]).is_err());
}

/// Every trainable tensor gets a non-zero gradient through the training path (a fused op
/// without backward would leave some at zero or missing).
#[test]
fn every_parameter_receives_a_gradient() {
    for tied in [true, false] {
        let cfg = tiny_cfg(2, tied);
        let (varmap, model) = random_model(&cfg, 31);
        let mut rng = ChaCha8Rng::seed_from_u64(32);
        let prompts: Vec<Vec<u32>> = [7, 4]
            .iter()
            .map(|&n| random_ids(&mut rng, n, cfg.vocab_size))
            .collect();
        let (ids, lengths) = left_pad(&prompts);
        let l = ids.dim(1).unwrap();
        let mask = left_padded_mask(&lengths, l, &Device::Cpu).unwrap();
        let logits = model.forward_train(&ids, Some(&mask)).unwrap();
        // Next-token loss on the real positions of row 0 (unpadded) only.
        let inputs = logits.i((0, ..l - 1)).unwrap();
        let targets = ids.i((0, 1..)).unwrap();
        let loss = candle_nn::loss::cross_entropy(&inputs, &targets).unwrap();
        let grads = loss.backward().unwrap();
        let vars = varmap.data().lock().unwrap();
        assert_eq!(
            vars.len(),
            model.named_tensors().len(),
            "one variable per HF tensor"
        );
        for (name, var) in vars.iter() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient (tied={tied})"));
            let norm = g
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                norm.is_finite() && norm > 0.0,
                "{name}: gradient {norm} (tied={tied})"
            );
        }
    }
}

#[test]
fn bf16_model_runs_and_stays_close_to_f32() {
    let cfg = tiny_cfg(2, true);
    let (_vm, model) = random_model(&cfg, 41);
    let tensors: std::collections::HashMap<String, Tensor> =
        model.named_tensors().into_iter().collect();
    let vb = VarBuilder::from_tensors(tensors, DType::BF16, &Device::Cpu);
    let half = sidrec::model::Qwen2::new(&cfg, vb).unwrap();
    assert_eq!(half.dtype(), DType::BF16);
    let (ids, lengths) = left_pad(&[vec![3, 4, 5, 6], vec![9, 10]]);
    let (a, cache_a) = model.prefill(&ids, &lengths).unwrap();
    let (b, cache_b) = half.prefill(&ids, &lengths).unwrap();
    assert_eq!(b.dtype(), DType::F32);
    let scale = a
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(max_diff(&a, &b) < 0.1 * scale, "bf16 prefill far from f32");
    let tokens = Tensor::new(&[1u32, 2, 3, 4], &Device::Cpu).unwrap();
    let mut beams_a = BeamCache::new(model.num_layers());
    let mut beams_b = BeamCache::new(half.num_layers());
    let a = model
        .decode_step(&tokens, &cache_a, &mut beams_a, 2)
        .unwrap();
    let b = half
        .decode_step(&tokens, &cache_b, &mut beams_b, 2)
        .unwrap();
    assert!(max_diff(&a, &b) < 0.1 * scale, "bf16 decode far from f32");
    let train = half.forward_train(&ids, None).unwrap();
    assert_eq!(train.dtype(), DType::F32);
}

#[test]
fn dropout_is_seeded_and_only_in_training() {
    let cfg = tiny_cfg(2, true);
    let (_vm, model) = random_model(&cfg, 21);
    let mut rng = ChaCha8Rng::seed_from_u64(22);
    let ids = Tensor::new(random_ids(&mut rng, 9, cfg.vocab_size), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let run = |mode: Mode, seed: u64| {
        model.seed_dropout(seed);
        model.forward_hidden(&ids, None, mode).unwrap()
    };
    let plain = run(Mode::Train, 1);
    model.set_dropout(0.3).unwrap();
    let a = run(Mode::Train, 1);
    let b = run(Mode::Train, 1);
    let c = run(Mode::Train, 2);
    assert_eq!(max_diff(&a, &b), 0.0, "same seed, same masks");
    assert!(max_diff(&a, &c) > 1e-3, "another seed, other masks");
    assert!(
        max_diff(&a, &plain) > 1e-3,
        "dropout changes the training pass"
    );
    // Inference never drops.
    let infer = run(Mode::Infer, 3);
    assert!(max_diff(&infer, &plain) <= TOL);
    assert!(model.set_dropout(1.0).is_err());
    model.set_dropout(0.0).unwrap();
    assert_eq!(max_diff(&run(Mode::Train, 5), &plain), 0.0);
}

#[test]
fn grouped_completions_equal_each_sequence_run_alone_with_the_same_gradients() {
    for kv_heads in [1, 4] {
        let cfg = tiny_cfg(kv_heads, false);
        let (varmap, model) = random_model(&cfg, 41);
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let prompts: Vec<Vec<u32>> = [5, 9, 3]
            .iter()
            .map(|&n| random_ids(&mut rng, n, cfg.vocab_size))
            .collect();
        // Rows continue prompts out of order, with completions of 1, 3 and 4 tokens.
        let prompt_of = [0usize, 0, 1, 1, 1, 2, 0];
        let comp_lens = [4usize, 3, 4, 1, 4, 3, 4];
        let comps: Vec<Vec<u32>> = comp_lens
            .iter()
            .map(|&n| random_ids(&mut rng, n, cfg.vocab_size))
            .collect();
        let (pids, lengths) = left_pad(&prompts);
        let s = 4;
        let mut flat = Vec::new();
        for c in &comps {
            flat.extend_from_slice(c);
            flat.extend(std::iter::repeat_n(0u32, s - c.len()));
        }
        let cids = Tensor::from_vec(flat, (comps.len(), s), &Device::Cpu).unwrap();
        let vars: Vec<_> = {
            let data = varmap.data().lock().unwrap();
            let mut v: Vec<_> = data.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };

        for mode in [Mode::Train, Mode::Infer] {
            let grouped = model
                .forward_grouped_hidden(&pids, &lengths, &cids, &prompt_of, mode)
                .unwrap();
            assert_eq!(grouped.dims(), &[comps.len(), s, cfg.hidden_size]);
            // Log-probability of every real completion token, both ways.
            let mut loss_grouped: Option<Tensor> = None;
            let mut loss_alone: Option<Tensor> = None;
            let add = |acc: &mut Option<Tensor>, t: Tensor| {
                *acc = Some(match acc.take() {
                    None => t,
                    Some(a) => (a + t).unwrap(),
                });
            };
            for (r, c) in comps.iter().enumerate() {
                let p = &prompts[prompt_of[r]];
                let full: Vec<u32> = [p.as_slice(), c.as_slice()].concat();
                let alone = model.forward_hidden(&row(&full), None, mode).unwrap();
                // Positions p-1 .. p+len-2 score the completion tokens.
                let alone = alone.i((0, p.len() - 1..p.len() - 1 + c.len())).unwrap();
                let mine = grouped.i((r, ..c.len())).unwrap();
                let d = max_diff(&mine, &alone);
                assert!(d <= TOL, "row {r} kv_heads {kv_heads} {mode:?}: {d}");
                let targets = Tensor::new(c.as_slice(), &Device::Cpu).unwrap();
                let lp = |h: &Tensor| {
                    let logp = candle_nn::ops::log_softmax(&model.logits(h).unwrap(), 1).unwrap();
                    logp.gather(&targets.unsqueeze(1).unwrap(), 1)
                        .unwrap()
                        .sum_all()
                        .unwrap()
                };
                add(&mut loss_grouped, lp(&mine));
                add(&mut loss_alone, lp(&alone));
            }
            if mode == Mode::Infer {
                continue;
            }
            let g1 = loss_grouped.unwrap().backward().unwrap();
            let g2 = loss_alone.unwrap().backward().unwrap();
            for (name, var) in &vars {
                let a = g1
                    .get(var.as_tensor())
                    .unwrap_or_else(|| panic!("{name}: no grad"));
                let b = g2.get(var.as_tensor()).unwrap();
                let scale = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
                let scale = scale.to_scalar::<f32>().unwrap().max(1.0);
                let d = max_diff(a, b) / scale;
                assert!(
                    d <= 1e-4,
                    "{name} kv_heads {kv_heads}: relative grad diff {d}"
                );
            }
        }
    }

    // Shapes that cannot match are refused, not broadcast.
    let cfg = tiny_cfg(2, true);
    let (_vm, model) = random_model(&cfg, 1);
    let (pids, lengths) = left_pad(&[vec![3, 4], vec![5]]);
    let cids = Tensor::from_vec(vec![1u32, 2, 3, 4], (2, 2), &Device::Cpu).unwrap();
    assert!(model
        .forward_grouped_hidden(&pids, &lengths, &cids, &[0, 2], Mode::Train)
        .is_err());
    assert!(model
        .forward_grouped_hidden(&pids, &lengths[..1], &cids, &[0, 1], Mode::Train)
        .is_err());
}

/// Logits and the gradient of every parameter from the fused CPU kernels equal those of the
/// composite tensor-op path, with left padding, GQA and MHA, tied and untied heads; and
/// shared-prompt beam decoding agrees step by step.
#[test]
fn fused_kernels_equal_the_composite_path_values_and_gradients() {
    for (kv_heads, tied) in [(2, true), (4, false)] {
        let cfg = tiny_cfg(kv_heads, tied);
        let (varmap, model) = random_model(&cfg, 41);
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let prompts: Vec<Vec<u32>> = [9, 5, 1]
            .iter()
            .map(|&n| random_ids(&mut rng, n, cfg.vocab_size))
            .collect();
        let (ids, lengths) = left_pad(&prompts);
        let l = ids.dim(1).unwrap();
        let mask = left_padded_mask(&lengths, l, &Device::Cpu).unwrap();
        let run = |fused: bool| {
            model.set_fused_kernels(fused);
            let logits = model.forward_train(&ids, Some(&mask)).unwrap();
            let inputs = logits.i((0, ..l - 1)).unwrap();
            let targets = ids.i((0, 1..)).unwrap();
            let loss = (candle_nn::loss::cross_entropy(&inputs, &targets).unwrap()
                + candle_nn::loss::cross_entropy(
                    &logits.i((1, l - 3..l - 1)).unwrap(),
                    &ids.i((1, l - 2..)).unwrap(),
                )
                .unwrap())
            .unwrap();
            (logits, loss.backward().unwrap())
        };
        let (lf, gf) = run(true);
        let (lc, gc) = run(false);
        let d = max_diff(&lf, &lc);
        assert!(d <= TOL, "logits kv={kv_heads}: {d}");
        assert_same_gradients(&varmap, &gf, &gc, &format!(" kv={kv_heads}"));

        // Beam decoding: prefill then three steps of 2 beams per prompt.
        let decode = |fused: bool| {
            model.set_fused_kernels(fused);
            let (first, cache) = model.prefill(&ids, &lengths).unwrap();
            let mut beams = BeamCache::new(model.num_layers());
            let mut out = vec![first];
            for step in 0..3u32 {
                let tokens: Vec<u32> = (0..6)
                    .map(|r| 1 + (r * 7 + step * 3) % (cfg.vocab_size as u32 - 1))
                    .collect();
                let tokens = Tensor::new(tokens.as_slice(), &Device::Cpu).unwrap();
                out.push(model.decode_step(&tokens, &cache, &mut beams, 2).unwrap());
            }
            out
        };
        for (i, (a, b)) in decode(true).iter().zip(decode(false)).enumerate() {
            let d = max_diff(a, &b);
            assert!(d <= TOL, "decode step {i} kv={kv_heads}: {d}");
        }
        model.set_fused_kernels(true);
    }
}

/// The loss rows of a padded batch (`forward_hidden_at`) from the fused pass, which runs on the
/// real tokens only, equal the composite pass over the padded batch, values and every
/// parameter's gradient, with padding on either side; a padding position is refused.
#[test]
fn hidden_states_at_positions_skip_padding_and_match_the_composite_path() {
    let cfg = tiny_cfg(2, true);
    let (varmap, model) = random_model(&cfg, 43);
    let mut rng = ChaCha8Rng::seed_from_u64(44);
    // Row 0 full, row 1 left-padded by 3, row 2 right-padded by 5, row 3 padded both sides.
    let l = 8;
    let flags: Vec<u32> = [
        [1, 1, 1, 1, 1, 1, 1, 1],
        [0, 0, 0, 1, 1, 1, 1, 1],
        [1, 1, 1, 0, 0, 0, 0, 0],
        [0, 1, 1, 1, 1, 0, 0, 0],
    ]
    .concat();
    let ids = Tensor::from_vec(
        random_ids(&mut rng, 4 * l, cfg.vocab_size),
        (4, l),
        &Device::Cpu,
    )
    .unwrap();
    let mask = Tensor::from_vec(flags.clone(), (4, l), &Device::Cpu).unwrap();
    let positions: Vec<u32> = vec![0, 5, 7, 11, 15, 16, 18, 25, 28];
    let targets: Vec<u32> = random_ids(&mut rng, positions.len(), cfg.vocab_size);
    let positions = Tensor::new(positions.as_slice(), &Device::Cpu).unwrap();
    let targets = Tensor::new(targets.as_slice(), &Device::Cpu).unwrap();
    let run = |fused: bool| {
        model.set_fused_kernels(fused);
        let hidden = model
            .forward_hidden_at(&ids, Some(&mask), &positions, Mode::Train)
            .unwrap();
        let logits = model.logits(&hidden).unwrap();
        let loss = candle_nn::loss::cross_entropy(&logits, &targets).unwrap();
        (hidden, loss.backward().unwrap())
    };
    let (hf, gf) = run(true);
    let (hc, gc) = run(false);
    assert_eq!(hf.dims(), [9, cfg.hidden_size]);
    let d = max_diff(&hf, &hc);
    assert!(d <= TOL, "hidden states differ by {d}");
    assert_same_gradients(&varmap, &gf, &gc, "");
    for fused in [true, false] {
        model.set_fused_kernels(fused);
        // Flat position 8 is row 1's first token, which is padding.
        let pad = Tensor::new(&[8u32], &Device::Cpu).unwrap();
        let err = model
            .forward_hidden_at(&ids, Some(&mask), &pad, Mode::Train)
            .unwrap_err()
            .to_string();
        assert!(err.contains("position 8"), "{err}");
    }
    model.set_fused_kernels(true);
}

/// A whole-row pass with an item window of one item: a SID being written sees the previous
/// item and the header, never an item three back, whose tokens can reach it through neither
/// of the two layers, in training and in inference-mode passes alike; the fused pass equals
/// the composite one (values and gradients, padded rows); prompt decoding ignores the window.
#[test]
fn an_item_window_hides_older_items_from_whole_row_passes() {
    use sidrec::model::ItemWindow;
    use sidrec::sid::{Sid, SidToken};
    use sidrec::trie::SidVocab;
    use sidrec::SidIndex;

    // Items' SIDs as token ids 100 + 10·level + code.
    let mut index = SidIndex::new();
    for (item, codes) in [
        (1, [0, 1, 2]),
        (2, [1, 0, 0]),
        (3, [2, 1, 1]),
        (4, [0, 1, 3]),
    ] {
        index.insert(item, Sid::from_codes(codes.to_vec()));
    }
    let vocab = SidVocab::from_fn(&index, |t: SidToken| {
        Some(100 + 10 * t.level as u32 + t.code)
    })
    .unwrap();
    // header | item | sep | item | sep | item | sep sep | target
    let row_with = |first: [u32; 3]| -> Vec<u32> {
        [
            &[7, 8][..],
            &first,
            &[5],
            &[101, 110, 120],
            &[5],
            &[102, 111, 121],
            &[6, 9],
            &[100, 111, 123],
        ]
        .concat()
    };
    let (a, b) = (row_with([100, 111, 122]), row_with([101, 110, 120]));
    let l = a.len();
    let target = (l - 3..l).map(|p| p as u32).collect::<Vec<_>>();
    let cfg = tiny_cfg(2, true);
    let (varmap, windowed) = random_model(&cfg, 45);
    windowed
        .set_item_window(ItemWindow::new(vocab.clone(), 1))
        .unwrap();
    assert!(windowed.set_item_window(ItemWindow::new(vocab, 1)).is_err());
    let (_, plain) = random_model(&cfg, 45);
    let at = |model: &sidrec::model::Qwen2, ids: &[u32], mode: Mode| {
        let pos = Tensor::new(target.as_slice(), &Device::Cpu).unwrap();
        model
            .forward_hidden_at(&row(ids), None, &pos, mode)
            .unwrap()
    };
    for fused in [true, false] {
        windowed.set_fused_kernels(fused);
        plain.set_fused_kernels(fused);
        let d = max_diff(
            &at(&windowed, &a, Mode::Train),
            &at(&windowed, &b, Mode::Train),
        );
        assert!(
            d <= 1e-6,
            "fused {fused}: the first item reached the target ({d})"
        );
        let d = max_diff(&at(&plain, &a, Mode::Train), &at(&plain, &b, Mode::Train));
        assert!(
            d > 1e-3,
            "fused {fused}: without a window the first item matters"
        );
        let d = max_diff(
            &at(&windowed, &a, Mode::Infer),
            &at(&windowed, &b, Mode::Infer),
        );
        assert!(
            d <= 1e-5,
            "fused {fused}: an inference pass saw the first item ({d})"
        );
    }
    // Prompt decoding runs the prompt as given, window or not.
    let (wp, _) = windowed.prefill(&row(&a), &[l]).unwrap();
    let (pp, _) = plain.prefill(&row(&a), &[l]).unwrap();
    let d = max_diff(&wp, &pp);
    assert!(d <= TOL, "prefill differs by {d}");

    // A padded batch: row 0 left-padded by 2, row 1 right-padded by 1.
    let width = l + 2;
    let mut ids = vec![0u32; 2];
    ids.extend_from_slice(&a);
    ids.extend_from_slice(&b[..l]);
    ids.extend([0u32; 2]);
    let flags: Vec<u32> = ids
        .iter()
        .enumerate()
        .map(|(i, _)| u32::from(!(i < 2 || i >= width + l)))
        .collect();
    let ids = Tensor::from_vec(ids, (2, width), &Device::Cpu).unwrap();
    let mask = Tensor::from_vec(flags, (2, width), &Device::Cpu).unwrap();
    let positions: Vec<u32> = (4..width as u32)
        .chain(width as u32 + 3..2 * width as u32 - 2)
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(46);
    let targets = random_ids(&mut rng, positions.len(), cfg.vocab_size);
    let positions = Tensor::new(positions.as_slice(), &Device::Cpu).unwrap();
    let targets = Tensor::new(targets.as_slice(), &Device::Cpu).unwrap();
    let run = |fused: bool| {
        windowed.set_fused_kernels(fused);
        let hidden = windowed
            .forward_hidden_at(&ids, Some(&mask), &positions, Mode::Train)
            .unwrap();
        let logits = windowed.logits(&hidden).unwrap();
        let loss = candle_nn::loss::cross_entropy(&logits, &targets).unwrap();
        (hidden, loss.backward().unwrap())
    };
    let (hf, gf) = run(true);
    let (hc, gc) = run(false);
    let d = max_diff(&hf, &hc);
    assert!(d <= TOL, "hidden states differ by {d}");
    assert_same_gradients(&varmap, &gf, &gc, "");
    windowed.set_fused_kernels(true);
}
