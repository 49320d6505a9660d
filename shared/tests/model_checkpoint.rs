//! Checkpoint round trips: save → load (single file and sharded), tied and untied heads.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::*;
use sidrec::model::{checkpoint, Qwen2, Qwen2Config};

fn logits_bits(model: &Qwen2) -> Vec<u32> {
    let (ids, lengths) = left_pad(&[vec![5, 6, 7, 8, 9], vec![10, 11]]);
    let all = model.forward_train(&ids, None).unwrap();
    let (last, _) = model.prefill(&ids, &lengths).unwrap();
    [all.flatten_all().unwrap(), last.flatten_all().unwrap()]
        .iter()
        .flat_map(|t| t.to_vec1::<f32>().unwrap())
        .map(f32::to_bits)
        .collect()
}

#[test]
fn save_load_round_trip_is_bit_identical() {
    for tied in [true, false] {
        let cfg = tiny_cfg(2, tied);
        let (_vm, model) = random_model(&cfg, 51);
        let dir = tempfile::tempdir().unwrap();
        checkpoint::save(&model, dir.path()).unwrap();

        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["model_type"], "qwen2");
        assert_eq!(config["architectures"][0], "Qwen2ForCausalLM");
        assert_eq!(config["torch_dtype"], "float32");
        assert_eq!(config["tie_word_embeddings"], tied);

        let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let format = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("format").cloned());
        assert_eq!(
            format.as_deref(),
            Some("pt"),
            "transformers requires format=pt"
        );
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let names: Vec<String> = st.names().into_iter().map(String::from).collect();
        assert_eq!(names.contains(&"lm_head.weight".to_string()), !tied);
        assert!(names.contains(&"model.layers.1.self_attn.q_proj.bias".to_string()));
        assert!(!names.contains(&"model.layers.1.self_attn.o_proj.bias".to_string()));
        assert_eq!(names.len(), 2 + usize::from(!tied) + 2 * 12);

        let loaded = checkpoint::load(dir.path(), None, &Device::Cpu).unwrap();
        assert_eq!(loaded.config(), model.config());
        assert_eq!(logits_bits(&loaded), logits_bits(&model), "tied={tied}");

        // Training from a checkpoint: fresh VarMap model, then overwrite its variables.
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let fresh = Qwen2::new(&cfg, vb).unwrap();
        checkpoint::load_into_varmap(dir.path(), &varmap).unwrap();
        assert_eq!(
            logits_bits(&fresh),
            logits_bits(&model),
            "varmap tied={tied}"
        );

        let no_temp_files = std::fs::read_dir(dir.path())
            .unwrap()
            .all(|e| !e.unwrap().file_name().to_string_lossy().starts_with('.'));
        assert!(no_temp_files);
    }
}

#[test]
fn sharded_checkpoint_loads() {
    let cfg = tiny_cfg(2, false);
    let (_vm, model) = random_model(&cfg, 52);
    let dir = tempfile::tempdir().unwrap();
    checkpoint::save(&model, dir.path()).unwrap();
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();

    let names = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    let mut shards: [HashMap<String, Tensor>; 2] = Default::default();
    let mut weight_map = serde_json::Map::new();
    for (i, (name, t)) in model.named_tensors().into_iter().enumerate() {
        let shard = usize::from(i * 2 >= model.named_tensors().len());
        weight_map.insert(name.clone(), names[shard].into());
        shards[shard].insert(name, t);
    }
    for (shard, file) in shards.iter().zip(names) {
        candle_core::safetensors::save(shard, dir.path().join(file)).unwrap();
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();

    assert_eq!(checkpoint::weight_files(dir.path()).unwrap().len(), 2);
    let loaded = checkpoint::load(dir.path(), None, &Device::Cpu).unwrap();
    assert_eq!(logits_bits(&loaded), logits_bits(&model));

    // A missing shard is an error naming that shard.
    std::fs::remove_file(dir.path().join(names[1])).unwrap();
    let err = checkpoint::load(dir.path(), None, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains(names[1]), "{err}");
}

#[test]
fn bf16_save_records_the_dtype() {
    let cfg = tiny_cfg(2, true);
    let (_vm, model) = random_model(&cfg, 53);
    let dir = tempfile::tempdir().unwrap();
    checkpoint::save(&model, dir.path()).unwrap();
    let half = checkpoint::load(dir.path(), Some(DType::BF16), &Device::Cpu).unwrap();
    let out = tempfile::tempdir().unwrap();
    checkpoint::save(&half, out.path()).unwrap();
    let cfg2 = checkpoint::load_config(out.path()).unwrap();
    assert_eq!(cfg2.torch_dtype.as_deref(), Some("bfloat16"));
    let again = checkpoint::load(out.path(), None, &Device::Cpu).unwrap();
    assert_eq!(again.dtype(), DType::BF16);
    assert_eq!(logits_bits(&again), logits_bits(&half));
}

#[test]
fn bad_checkpoints_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = checkpoint::load(dir.path(), None, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("config.json"), "{err}");

    std::fs::write(dir.path().join("config.json"), "{\"vocab_size\": 3,").unwrap();
    let err = checkpoint::load(dir.path(), None, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("config.json"), "{err}");

    let cfg = Qwen2Config::new(10, 8, 16, 1, 2, 1, true);
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_vec(&cfg).unwrap(),
    )
    .unwrap();
    let err = checkpoint::load(dir.path(), None, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");

    std::fs::write(dir.path().join("model.safetensors"), b"not safetensors").unwrap();
    let err = checkpoint::load(dir.path(), None, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");

    // Untied config without lm_head.weight: missing tensor error.
    let mut untied = cfg.clone();
    untied.tie_word_embeddings = false;
    let (_vm, model) = random_model(&cfg, 1);
    checkpoint::save(&model, dir.path()).unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_vec(&untied).unwrap(),
    )
    .unwrap();
    let err = checkpoint::load(dir.path(), None, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("lm_head"), "{err}");
}
