//! The text encoder against an independent implementation (HF `transformers`), on
//! all-MiniLM-L6-v2. Needs the encoder files (`scripts/fetch-encoder.sh`; `scripts/test.sh`
//! fetches them): skipped without them unless `SIDREC_REQUIRE_SHARED=1`.

use candle_core::Device;
use sidrec::embed::{EncodeOptions, TextEncoder};

const SENTENCE: &str = "Stainless steel hex bolt, 1/4-20 thread. ['Pack of 50', 'Zinc plated'].";

/// Computed once with torch 2.6 + transformers 4.57 (`AutoTokenizer` + `AutoModel` on the
/// fetched directory, `padding="longest"`, `truncation=True, max_length=256`, the two sentences
/// in one batch, masked mean pooling of `last_hidden_state`, float64 printing of the f32 result).
const REF_IDS: [u32; 29] = [
    101, 18676, 3886, 2002, 2595, 10053, 1010, 1015, 1013, 1018, 1011, 2322, 11689, 1012, 1031,
    1005, 5308, 1997, 2753, 1005, 1010, 1005, 15813, 5127, 2094, 1005, 1033, 1012, 102,
];
const REF_NORM: f64 = 3.620663373477576;
const REF_FIRST16: [f64; 16] = [
    -0.21531985700130463,
    0.3792145848274231,
    -0.021666094660758972,
    0.006019150372594595,
    -0.03295997530221939,
    0.031117616221308708,
    0.2238304316997528,
    0.11128269135951996,
    0.09228120744228363,
    -0.03545838221907616,
    -0.07018136978149414,
    -0.22107982635498047,
    -0.028371719643473625,
    0.11883451789617538,
    -0.3481392562389374,
    -0.10260181128978729,
];
const REF_MORE: [(usize, f64); 4] = [
    (100, 0.2375350445508957),
    (200, 0.04241294413805008),
    (300, 0.012731993570923805),
    (383, 0.06555718183517456),
];
/// The same for `unknown item` (padded in the batch above).
const UNKNOWN_NORM: f64 = 6.927655507194293;
const UNKNOWN_FIRST4: [f64; 4] = [
    -0.6767060160636902,
    0.4612094461917877,
    -0.1817312240600586,
    0.1951281726360321,
];

fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt()
}

fn assert_close(got: f32, want: f64, what: &str) {
    assert!(
        (got as f64 - want).abs() <= 1e-5,
        "{what}: got {got}, want {want}"
    );
}

fn check_reference(v: &[f32]) {
    assert_eq!(v.len(), 384);
    for (i, &want) in REF_FIRST16.iter().enumerate() {
        assert_close(v[i], want, &format!("dim {i}"));
    }
    for &(i, want) in &REF_MORE {
        assert_close(v[i], want, &format!("dim {i}"));
    }
    assert!((norm(v) - REF_NORM).abs() <= 1e-5, "norm {}", norm(v));
}

#[test]
fn matches_transformers_mean_pooling() {
    let Some(dir) = sidrec::testing::encoder_dir() else {
        return;
    };
    let enc = TextEncoder::load(&dir, &Device::Cpu, 256).unwrap();
    assert_eq!(enc.dim(), 384);
    assert_eq!(enc.token_ids(SENTENCE).unwrap(), REF_IDS);

    // Alone, and padded in a batch with a shorter text.
    let alone = enc.encode_batch(&[SENTENCE], false).unwrap();
    check_reference(&alone);
    let both = enc
        .encode_batch(&["unknown item", SENTENCE], false)
        .unwrap();
    check_reference(&both[384..]);
    let unknown = &both[..384];
    for (i, &want) in UNKNOWN_FIRST4.iter().enumerate() {
        assert_close(unknown[i], want, &format!("unknown item dim {i}"));
    }
    assert!((norm(unknown) - UNKNOWN_NORM).abs() <= 1e-5);

    // encode_all: length-sorted batches come back in input order; normalisation gives unit rows.
    let texts = ["unknown item", SENTENCE, "a", SENTENCE];
    let mut seen = 0;
    let opts = EncodeOptions {
        batch_size: 3,
        normalize: false,
        sort_by_length: true,
        max_batch_tokens: 40,
    };
    let m = enc.encode_all(&texts, opts, |n| seen += n).unwrap();
    assert_eq!((m.rows, m.cols, seen), (4, 384, 4));
    check_reference(m.row(1));
    check_reference(m.row(3));
    assert!((norm(m.row(0)) - UNKNOWN_NORM).abs() <= 1e-5);
    let unsorted = enc
        .encode_all(
            &texts,
            EncodeOptions {
                sort_by_length: false,
                ..opts
            },
            |_| {},
        )
        .unwrap();
    for (a, b) in m.data.iter().zip(&unsorted.data) {
        assert!((a - b).abs() <= 1e-5);
    }
    let normed = enc
        .encode_all(
            &texts,
            EncodeOptions {
                normalize: true,
                ..opts
            },
            |_| {},
        )
        .unwrap();
    for i in 0..4 {
        assert!((norm(normed.row(i)) - 1.0).abs() < 1e-5);
        let scale = norm(m.row(i)) as f32;
        assert!((normed.row(i)[0] - m.row(i)[0] / scale).abs() < 1e-6);
    }
}

#[test]
fn truncates_to_max_length() {
    let Some(dir) = sidrec::testing::encoder_dir() else {
        return;
    };
    let enc = TextEncoder::load(&dir, &Device::Cpu, 8).unwrap();
    let ids = enc.token_ids(SENTENCE).unwrap();
    assert_eq!(ids.len(), 8);
    assert_eq!((ids[0], ids[7]), (101, 102));
    let long = "word ".repeat(400);
    let m = enc
        .encode_all(&[long.as_str(), "short"], EncodeOptions::default(), |_| {})
        .unwrap();
    assert_eq!(m.rows, 2);
    assert!(TextEncoder::load(&dir, &Device::Cpu, 100_000).is_err());
}

/// candle-transformers' BERT on one padded batch, pooled by the masked mean: the forward pass
/// `TextEncoder` ran before it had its own, kept here as the reference.
fn candle_reference(dir: &std::path::Path, enc: &TextEncoder, texts: &[&str]) -> Vec<Vec<f32>> {
    use candle_core::{DType, Tensor};
    use candle_transformers::models::bert::{BertModel, Config};

    let dev = Device::Cpu;
    let cfg: Config =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            DType::F32,
            &dev,
        )
        .unwrap()
    };
    let model = BertModel::load(vb, &cfg).unwrap();
    let encodings = enc.tokenizer().encode_batch(texts.to_vec(), true).unwrap();
    let len = encodings[0].len();
    let grab = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| {
        let flat: Vec<u32> = encodings.iter().flat_map(|e| f(e).to_vec()).collect();
        Tensor::from_vec(flat, (texts.len(), len), &dev).unwrap()
    };
    let ids = grab(&|e| e.get_ids());
    let types = grab(&|e| e.get_type_ids());
    let mask = grab(&|e| e.get_attention_mask());
    let hidden = model.forward(&ids, &types, Some(&mask)).unwrap();
    let mask = mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
    let summed = hidden.broadcast_mul(&mask).unwrap().sum(1).unwrap();
    let pooled = summed.broadcast_div(&mask.sum(1).unwrap()).unwrap();
    pooled.to_vec2::<f32>().unwrap()
}

#[test]
fn packed_forward_matches_candle_transformers_on_industrial_texts() {
    let (Some(dir), Some(data)) = (
        sidrec::testing::encoder_dir(),
        sidrec::testing::industrial_dir(),
    ) else {
        return;
    };
    let items = sidrec::data::DatasetDir::discover(&data)
        .unwrap()
        .read_items()
        .unwrap();
    let (_, all) = sidrec::embed::item_texts(&items);
    // Every 61st item: short titles and long descriptions, many cut at the 64-token limit.
    let mut texts: Vec<&str> = all
        .iter()
        .step_by(61)
        .take(40)
        .map(|t| t.as_str())
        .collect();
    texts.extend(["a", "unknown item", SENTENCE]);
    let enc = TextEncoder::load(&dir, &Device::Cpu, 64).unwrap();
    let lens: Vec<usize> = texts
        .iter()
        .map(|t| enc.token_ids(t).unwrap().len())
        .collect();
    assert!(lens.iter().filter(|&&l| l == 64).count() >= 5, "{lens:?}");
    assert!(lens.iter().any(|&l| l < 16), "{lens:?}");

    let want = candle_reference(&dir, &enc, &texts);
    // Several packed batches of different compositions, in input and in length order.
    for (batch_size, sort_by_length) in [(7, false), (64, true)] {
        let opts = EncodeOptions {
            batch_size,
            normalize: false,
            sort_by_length,
            max_batch_tokens: 1024,
        };
        let got = enc.encode_all(&texts, opts, |_| {}).unwrap();
        for (i, w) in want.iter().enumerate() {
            let g = got.row(i);
            let diff = g
                .iter()
                .zip(w)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            let dot: f64 = g.iter().zip(w).map(|(&a, &b)| a as f64 * b as f64).sum();
            let cos = dot / (norm(g) * norm(w));
            assert!(
                diff <= 1e-5 && cos >= 0.999_999,
                "text {i} ({} tokens): max |diff| {diff}, cosine {cos}",
                lens[i]
            );
        }
    }
}
