//! Item-ID input embeddings: where they enter, what they change, what trains, and that they
//! survive a save and load.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::{random_model, tiny_cfg};
use sidrec::model::{checkpoint as hf, ItemLookup, Mode, Qwen2};
use sidrec::sid::{Sid, SidToken};
use sidrec::trie::SidVocab;
use sidrec::SidIndex;

/// Items 1 (codes 0 1 2), 2 (0 1 3) and 3 (1 0 0); SID token id = 200 + 10·level + code.
fn lookup() -> ItemLookup {
    let mut index = SidIndex::new();
    index.insert(1, Sid::from_codes(vec![0, 1, 2]));
    index.insert(2, Sid::from_codes(vec![0, 1, 3]));
    index.insert(3, Sid::from_codes(vec![1, 0, 0]));
    let vocab = SidVocab::from_fn(&index, |t: SidToken| {
        Some(200 + 10 * t.level as u32 + t.code)
    })
    .unwrap();
    ItemLookup::new(&vocab, &index).unwrap()
}

/// "7 [item 1] 5 [item 3] 5 9 [item 2, its SID unfinished: 200 211]": item 1 ends at position
/// 3, item 3 at 7.
const IDS: [u32; 11] = [7, 200, 211, 222, 5, 201, 210, 220, 5, 200, 211];

fn model(seed: u64) -> (candle_nn::VarMap, Qwen2) {
    let mut cfg = tiny_cfg(2, true);
    cfg.item_embeddings = Some(4);
    let (varmap, model) = random_model(&cfg, seed);
    model.attach_item_lookup(lookup()).unwrap();
    (varmap, model)
}

fn ids() -> Tensor {
    Tensor::from_vec(IDS.to_vec(), (1, IDS.len()), &Device::Cpu).unwrap()
}

fn logits(model: &Qwen2, mode: Mode) -> Vec<Vec<f32>> {
    let h = model.forward_hidden(&ids(), None, mode).unwrap();
    model
        .logits(&h)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2()
        .unwrap()
}

fn table(varmap: &candle_nn::VarMap) -> Var {
    varmap.data().lock().unwrap()["model.embed_items.weight"].clone()
}

/// Move every item row (not row 0, "no item") off its zero start by 0.5; the table and the rows
/// it now holds.
fn lift_item_vectors(varmap: &candle_nn::VarMap) -> (Var, Vec<Vec<f32>>) {
    let t = table(varmap);
    let mut rows: Vec<Vec<f32>> = t.as_tensor().to_vec2().unwrap();
    rows.iter_mut()
        .skip(1)
        .for_each(|r| r.iter_mut().for_each(|x| *x += 0.5));
    t.set(&Tensor::new(rows.clone(), &Device::Cpu).unwrap())
        .unwrap();
    (t, rows)
}

#[test]
fn an_item_vector_changes_the_output_from_the_end_of_its_sid_on() {
    let (varmap, model) = model(3);
    let before = logits(&model, Mode::Infer);
    // Move item 3's row (row 3) only.
    let t = table(&varmap);
    let mut rows: Vec<Vec<f32>> = t.as_tensor().to_vec2().unwrap();
    rows[3].iter_mut().for_each(|x| *x += 0.5);
    t.set(&Tensor::new(rows, &Device::Cpu).unwrap()).unwrap();
    let after = logits(&model, Mode::Infer);
    for (pos, (b, a)) in before.iter().zip(&after).enumerate() {
        if pos < 7 {
            assert_eq!(
                b, a,
                "position {pos}, before item 3's SID ends, must not change"
            );
        } else {
            assert_ne!(b, a, "position {pos} sees item 3 and must change");
        }
    }
}

#[test]
fn only_the_rows_of_complete_prompt_items_get_gradients() {
    let (varmap, model) = model(4);
    let h = model.forward_hidden(&ids(), None, Mode::Train).unwrap();
    let loss = model.logits(&h).unwrap().sqr().unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let g: Vec<Vec<f32>> = grads
        .get(table(&varmap).as_tensor())
        .expect("the item table gets a gradient")
        .to_vec2()
        .unwrap();
    let norm = |r: &Vec<f32>| r.iter().map(|x| x * x).sum::<f32>();
    assert_eq!(norm(&g[0]), 0.0, "row 0 (no item) never trains");
    assert!(norm(&g[1]) > 0.0, "item 1 is complete in the prompt");
    assert_eq!(norm(&g[2]), 0.0, "item 2's SID is unfinished");
    assert!(norm(&g[3]) > 0.0, "item 3 is complete in the prompt");
}

#[test]
fn training_and_inference_passes_agree_and_prefill_uses_the_items() {
    let (_, model) = model(5);
    let train = logits(&model, Mode::Train);
    let infer = logits(&model, Mode::Infer);
    for (t, i) in train.iter().zip(&infer) {
        for (a, b) in t.iter().zip(i) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }
    let (pre, _) = model.prefill(&ids(), &[IDS.len()]).unwrap();
    let pre: Vec<f32> = pre.squeeze(0).unwrap().to_vec1().unwrap();
    for (a, b) in pre.iter().zip(infer.last().unwrap()) {
        assert!((a - b).abs() < 1e-4, "prefill {a} vs full pass {b}");
    }
}

#[test]
fn a_model_with_item_embeddings_needs_its_lookup() {
    let mut cfg = tiny_cfg(2, true);
    cfg.item_embeddings = Some(4);
    let (_, model) = random_model(&cfg, 6);
    let err = model
        .forward_hidden(&ids(), None, Mode::Infer)
        .unwrap_err()
        .to_string();
    assert!(err.contains("item lookup"), "{err}");
    // A lookup of another catalogue size is refused.
    cfg.item_embeddings = Some(9);
    let (_, other) = random_model(&cfg, 6);
    let err = other.attach_item_lookup(lookup()).unwrap_err().to_string();
    assert!(err.contains("9 rows"), "{err}");
    // Models without item embeddings ignore a lookup.
    let (_, plain) = random_model(&tiny_cfg(2, true), 6);
    plain.attach_item_lookup(lookup()).unwrap();
    assert!(!plain.has_item_embeddings());
}

#[test]
fn save_and_load_keep_the_item_table() {
    let (_, model) = model(7);
    let dir = tempfile::tempdir().unwrap();
    hf::save(&model, dir.path()).unwrap();
    let cfg = hf::load_config(dir.path()).unwrap();
    assert_eq!(cfg.item_embeddings, Some(4));
    let loaded = hf::load(dir.path(), Some(DType::F32), &Device::Cpu).unwrap();
    loaded.attach_item_lookup(lookup()).unwrap();
    assert_eq!(logits(&model, Mode::Infer), logits(&loaded, Mode::Infer));
}

/// The padding-free training pass (what SFT's loss runs) sees the item vectors too.
#[test]
fn the_padding_free_training_pass_uses_the_items() {
    let (varmap, model) = model(8);
    // Row 0 is IDS; row 1 is its last 6 tokens, left-padded with 0.
    let n = IDS.len();
    let mut ids = IDS.to_vec();
    ids.extend(std::iter::repeat_n(0, n - 6));
    ids.extend(&IDS[n - 6..]);
    let mut mask = vec![1u32; n];
    mask.extend(std::iter::repeat_n(0, n - 6));
    mask.extend(std::iter::repeat_n(1, 6));
    let ids_t = Tensor::from_vec(ids, (2, n), &Device::Cpu).unwrap();
    let mask_t = Tensor::from_vec(mask.clone(), (2, n), &Device::Cpu).unwrap();
    let real: Vec<u32> = (0..2 * n as u32)
        .filter(|&i| mask[i as usize] == 1)
        .collect();
    let positions = Tensor::new(real.as_slice(), &Device::Cpu).unwrap();
    let at = model
        .forward_hidden_at(&ids_t, Some(&mask_t), &positions, Mode::Train)
        .unwrap();
    let full = model
        .forward_hidden(&ids_t, Some(&mask_t), Mode::Infer)
        .unwrap()
        .reshape((2 * n, 64))
        .unwrap()
        .index_select(&positions, 0)
        .unwrap();
    let diff: f32 = (&at - &full)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(diff < 1e-4, "padding-free pass differs by {diff}");
    let grads = at.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let g: Vec<Vec<f32>> = grads
        .get(table(&varmap).as_tensor())
        .expect("the item table gets a gradient in the padding-free pass")
        .to_vec2()
        .unwrap();
    assert!(g[1].iter().any(|&x| x != 0.0) && g[3].iter().any(|&x| x != 0.0));
    assert!(g[0].iter().all(|&x| x == 0.0) && g[2].iter().all(|&x| x == 0.0));
}

/// Item dropout removes whole item vectors in training passes only, each by its own seeded
/// draw, and leaves everything else of the pass as it was.
#[test]
fn item_dropout_leaves_out_whole_vectors_in_training_only() {
    let (varmap, model) = model(9);
    let (t, rows) = lift_item_vectors(&varmap);
    // The four passes a draw can give: items 1 and 3 of IDS each kept or left out.
    let mut expected = Vec::new();
    for (keep1, keep3) in [(true, true), (true, false), (false, true), (false, false)] {
        let mut r = rows.clone();
        if !keep1 {
            r[1].iter_mut().for_each(|x| *x = 0.0);
        }
        if !keep3 {
            r[3].iter_mut().for_each(|x| *x = 0.0);
        }
        t.set(&Tensor::new(r, &Device::Cpu).unwrap()).unwrap();
        expected.push(logits(&model, Mode::Infer));
    }
    t.set(&Tensor::new(rows, &Device::Cpu).unwrap()).unwrap();
    let close = |a: &Vec<Vec<f32>>, b: &Vec<Vec<f32>>| {
        a.iter()
            .flatten()
            .zip(b.iter().flatten())
            .all(|(x, y)| (x - y).abs() < 1e-4)
    };

    model.set_item_dropout(0.5).unwrap();
    let mut seen = [0usize; 4];
    for seed in 0..24 {
        model.seed_dropout(seed);
        let train = logits(&model, Mode::Train);
        let which = expected
            .iter()
            .position(|e| close(e, &train))
            .unwrap_or_else(|| panic!("seed {seed}: a pass with part of a vector left out"));
        seen[which] += 1;
        model.seed_dropout(seed);
        assert!(
            close(&train, &logits(&model, Mode::Train)),
            "same seed, same draw"
        );
    }
    assert!(
        seen.iter().all(|&n| n > 0),
        "every combination is drawn: {seen:?}"
    );
    // Inference always adds every vector.
    assert!(close(&logits(&model, Mode::Infer), &expected[0]));

    model.set_item_dropout(0.0).unwrap();
    model.seed_dropout(3);
    assert!(close(&logits(&model, Mode::Train), &expected[0]));
    assert!(model.set_item_dropout(1.0).is_err());
    let (_, plain) = random_model(&tiny_cfg(2, true), 6);
    let err = plain.set_item_dropout(0.2).unwrap_err().to_string();
    assert!(err.contains("item embeddings"), "{err}");
}

#[test]
fn an_item_free_twin_reads_prompts_as_if_every_vector_were_left_out_and_shares_the_weights() {
    let (varmap, model) = model(10);
    let (t, rows) = lift_item_vectors(&varmap);
    let with_vectors = logits(&model, Mode::Infer);
    let twin = model.without_item_vectors().unwrap();
    let twin_logits = logits(&twin, Mode::Infer);
    assert_ne!(twin_logits, with_vectors, "the vectors must matter here");
    // The model with every vector zeroed is what the twin reads, in every pass it offers.
    t.set(&t.as_tensor().zeros_like().unwrap()).unwrap();
    assert_eq!(twin_logits, logits(&model, Mode::Infer));
    let (pre, _) = twin.prefill(&ids(), &[IDS.len()]).unwrap();
    let (pre_zeroed, _) = model.prefill(&ids(), &[IDS.len()]).unwrap();
    assert_eq!(
        pre.to_vec2::<f32>().unwrap(),
        pre_zeroed.to_vec2::<f32>().unwrap()
    );
    // The twin holds the model's weights, not a copy: training the model moves it too.
    t.set(&Tensor::new(rows, &Device::Cpu).unwrap()).unwrap();
    let embed = varmap.data().lock().unwrap()["model.embed_tokens.weight"].clone();
    embed.set(&(embed.as_tensor() * 1.5).unwrap()).unwrap();
    assert_ne!(logits(&twin, Mode::Infer), twin_logits);
    // Only a model with item vectors has a twin.
    let (_, plain) = random_model(&tiny_cfg(2, true), 6);
    let err = plain.without_item_vectors().unwrap_err().to_string();
    assert!(err.contains("no item vectors"), "{err}");
}
