//! Loading and saving HuggingFace Qwen2 checkpoint directories.
//!
//! A directory holds `config.json` and either `model.safetensors` or a sharded
//! `model.safetensors.index.json` with its shards. Saved directories load in HF `transformers`
//! (`AutoModelForCausalLM.from_pretrained`): HF names, `model_type: qwen2`, and the
//! safetensors `format: pt` metadata that `transformers` insists on.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use super::config::Qwen2Config;
use super::qwen2::Qwen2;
use crate::{Error, Result};

/// Name of the config file in a checkpoint directory.
pub const CONFIG_FILE: &str = "config.json";
/// Name of the single-file weights.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Name of the shard index of sharded weights.
pub const WEIGHTS_INDEX_FILE: &str = "model.safetensors.index.json";

fn at(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{}: {e}", path.display()))
}

/// Read and validate `config.json` of a checkpoint directory.
pub fn load_config(dir: &Path) -> Result<Qwen2Config> {
    read_config(&dir.join(CONFIG_FILE))
}

/// Read and validate a Qwen2 config file.
pub fn read_config(path: &Path) -> Result<Qwen2Config> {
    let cfg: Qwen2Config = crate::io::read_json(path, "a Qwen2 config")?;
    cfg.validate().map_err(|e| at(path, e))?;
    Ok(cfg)
}

/// The weight files of a checkpoint directory (one file, or the shards of the index).
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join(WEIGHTS_FILE);
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join(WEIGHTS_INDEX_FILE);
    if !index.is_file() {
        return Err(Error::Invalid(format!(
            "{}: no {WEIGHTS_FILE} or {WEIGHTS_INDEX_FILE}",
            dir.display()
        )));
    }
    let json: serde_json::Value = crate::io::read_json(&index, "a safetensors index")?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| at(&index, "missing \"weight_map\" object"))?;
    let mut shards = BTreeSet::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| at(&index, format!("shard of {tensor:?} is not a string")))?;
        // A shard name is a plain file name: never let an index point outside its directory.
        if file.is_empty() || file.contains(['/', '\\']) || file == "." || file == ".." {
            return Err(at(&index, format!("bad shard file name {file:?}")));
        }
        shards.insert(file.to_string());
    }
    if shards.is_empty() {
        return Err(at(&index, "empty weight_map"));
    }
    Ok(shards.into_iter().map(|f| dir.join(f)).collect())
}

/// Read all tensors of a checkpoint directory as stored (no dtype conversion).
pub fn load_tensors(dir: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let mut all = HashMap::new();
    for path in weight_files(dir)? {
        for (name, t) in read_safetensors(&path, device)? {
            if all.insert(name.clone(), t).is_some() {
                return Err(at(&path, format!("tensor {name:?} appears in two shards")));
            }
        }
    }
    Ok(all)
}

/// The tensors of one safetensors file, as stored.
fn read_safetensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| at(path, e))
}

/// An inference model of `cfg` from `tensors`, in `dtype` (default: the config's
/// `torch_dtype`, else f32); errors name `source`.
fn build(
    cfg: &Qwen2Config,
    tensors: HashMap<String, Tensor>,
    dtype: Option<DType>,
    device: &Device,
    source: &Path,
) -> Result<Qwen2> {
    let dtype = dtype.or_else(|| cfg.dtype()).unwrap_or(DType::F32);
    let vb = VarBuilder::from_tensors(tensors, dtype, device);
    Qwen2::new(cfg, vb).map_err(|e| at(source, e))
}

/// Load a checkpoint directory for inference, in `dtype` (default: its `torch_dtype`, else f32).
pub fn load(dir: &Path, dtype: Option<DType>, device: &Device) -> Result<Qwen2> {
    let cfg = load_config(dir)?;
    build(&cfg, load_tensors(dir, device)?, dtype, device, dir)
}

/// Load a model from one config file and one single-file safetensors (the layout of an
/// ensemble member stored inside another checkpoint), for inference.
pub fn load_files(
    config: &Path,
    weights: &Path,
    dtype: Option<DType>,
    device: &Device,
) -> Result<Qwen2> {
    let cfg = read_config(config)?;
    build(
        &cfg,
        read_safetensors(weights, device)?,
        dtype,
        device,
        weights,
    )
}

/// Overwrite every variable of `varmap` with the checkpoint's tensor of the same name.
///
/// Build the model from `VarBuilder::from_varmap` first (which creates the variables), then call
/// this to start training from a checkpoint. Missing tensors and shape mismatches are errors.
pub fn load_into_varmap(dir: &Path, varmap: &VarMap) -> Result<()> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::Invalid("VarMap lock poisoned".to_string()))?;
    let device = match data.values().next() {
        Some(var) => var.device().clone(),
        None => return Ok(()),
    };
    let tensors = load_tensors(dir, &device)?;
    for (name, var) in data.iter() {
        let t = tensors
            .get(name)
            .ok_or_else(|| at(dir, format!("checkpoint has no tensor {name:?}")))?;
        if t.dims() != var.dims() {
            return Err(at(
                dir,
                format!(
                    "tensor {name:?} has shape {:?}, the model wants {:?}",
                    t.dims(),
                    var.dims()
                ),
            ));
        }
        var.set(&t.to_dtype(var.dtype())?)
            .map_err(|e| at(dir, format!("{name}: {e}")))?;
    }
    Ok(())
}

/// Save `model` as an HF checkpoint directory (`config.json` + `model.safetensors`).
///
/// Each file is written atomically; tied models do not write `lm_head.weight`.
pub fn save(model: &Qwen2, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut cfg = model.config().clone();
    cfg.torch_dtype = Some(Qwen2Config::dtype_name(model.dtype())?.to_string());
    cfg.model_type = "qwen2".to_string();
    cfg.architectures = vec!["Qwen2ForCausalLM".to_string()];
    let config_path = dir.join(CONFIG_FILE);
    let mut json = serde_json::to_vec_pretty(&cfg).map_err(|e| at(&config_path, e))?;
    json.push(b'\n');

    let weights_path = dir.join(WEIGHTS_FILE);
    let tensors = model
        .named_tensors()
        .into_iter()
        .map(|(n, t)| Ok((n, t.contiguous()?)))
        .collect::<Result<Vec<_>>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes =
        safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(metadata))
            .map_err(|e| at(&weights_path, e))?;

    crate::io::write_bytes_atomic(&weights_path, &bytes)?;
    crate::io::write_bytes_atomic(&config_path, &json)
}
