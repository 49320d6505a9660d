//! Ensembles: several models decoded together as one checkpoint.
//!
//! An ensemble checkpoint is an ordinary checkpoint (its own model, tokenizer, SID index,
//! prompts) that also stores the weights of further models trained on the same tokenizer and
//! index, listed in `ensemble.json` with each model's share of the mixture. Beam search runs
//! every model over the same prompts and beams and scores each candidate token by the models'
//! weighted mean probability ([`crate::decode::Decoder::beam_search_ensemble`]), so `eval`, the
//! hybrid ranker and the server treat it as one model. Member files are flat names in the
//! checkpoint directory (`member-1.config.json`, `member-1.safetensors`, ...), hashed in
//! `sidrec.json` like the rest.
//!
//! How the scores combine ([`Pool`], recorded in `ensemble.json`): models trained from other
//! seeds, or with and without item embeddings, err on different rows. Averaging probabilities
//! (`mean`) keeps a token that any member is sure of; averaging log-probabilities (`product`)
//! lets one doubtful member pull an item down, so the items every member ranks high come first.
//!
//! Item-free twins (`item_free_share`, format 4): models trained with item dropout also score the
//! first SID level without their item vectors, from the same weights, and take that share of
//! its mixture ([`crate::decode::Mixture::with_item_free_twins`]). Such a checkpoint may have no
//! members at all: one model beside its own twin.

use std::path::Path;

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::checkpoint::{self, Checkpoint, CheckpointMeta, META_FILE};
use crate::decode::{check_item_free_share, normalized_weights, Pool};
use crate::error::{Error, Result};
use crate::hybrid::HYBRID_FILE;
use crate::model::{checkpoint as hf, Qwen2};

/// File name of the member list inside a checkpoint directory.
pub const ENSEMBLE_FILE: &str = "ensemble.json";
/// Current `ensemble.json` format (2 added `model_weights`, 3 `pool`, 4 `item_free_share`; a
/// format-1 file has equal weights, a format-2 file pools by `mean`). Each file is written in the
/// oldest format that holds it, so that older builds read what they can decode as meant and
/// refuse the rest.
pub const ENSEMBLE_FORMAT_VERSION: u32 = 4;

/// What `ensemble.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnsembleManifest {
    /// Format of this file.
    pub format_version: u32,
    /// The members stored beside the checkpoint's own model, in decoding order.
    pub members: Vec<EnsembleMember>,
    /// Each model's share of the token mixture, the checkpoint's own model first, summing to
    /// one; absent (format 1) means equal shares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_weights: Option<Vec<f64>>,
    /// How the models' scores combine; absent (formats 1 and 2) means `mean`.
    #[serde(default, skip_serializing_if = "is_mean")]
    pub pool: Pool,
    /// The share of the mixture that the models' item-free twins take; absent (formats 1–3)
    /// means none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub item_free_share: f64,
}

fn is_zero(share: &f64) -> bool {
    *share == 0.0
}

fn is_mean(pool: &Pool) -> bool {
    *pool == Pool::Mean
}

impl EnsembleManifest {
    /// The share of every model (the checkpoint's own first), checked: one per model, positive,
    /// summing to one.
    pub fn checked_weights(&self) -> Result<Vec<f64>> {
        let models = self.members.len() + 1;
        match &self.model_weights {
            None => normalized_weights(&vec![1.0; models], models),
            Some(w) => {
                let normalized = normalized_weights(w, models)?;
                if normalized.iter().zip(w).any(|(a, b)| (a - b).abs() > 1e-6) {
                    return Err(Error::Invalid(format!("weights {w:?} do not sum to one")));
                }
                Ok(w.clone())
            }
        }
    }
}

/// One stored member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnsembleMember {
    /// Its config file in the checkpoint directory.
    pub config: String,
    /// Its single-file safetensors in the checkpoint directory.
    pub weights: String,
    /// The version of the checkpoint it was taken from (provenance only).
    pub source_version: String,
}

/// The manifest of the checkpoint in `dir`, when it is an ensemble. Only a file that
/// `sidrec.json` lists (and so hash-verified) counts, as for `hybrid.json`.
pub fn read_manifest(dir: &Path, meta: &CheckpointMeta) -> Result<Option<EnsembleManifest>> {
    let path = dir.join(ENSEMBLE_FILE);
    if !meta.files.contains_key(ENSEMBLE_FILE) {
        if path.exists() {
            return Err(Error::Invalid(format!(
                "{}: not listed in {META_FILE}, so not verified; write ensembles with \
                 `sidrec-trainer ensemble`",
                path.display()
            )));
        }
        return Ok(None);
    }
    let manifest: EnsembleManifest = crate::io::read_json(&path, "an ensemble manifest")?;
    if manifest.format_version > ENSEMBLE_FORMAT_VERSION {
        return Err(Error::Invalid(format!(
            "{}: format {} is newer than this build understands ({ENSEMBLE_FORMAT_VERSION})",
            path.display(),
            manifest.format_version
        )));
    }
    if manifest.members.is_empty() && manifest.item_free_share == 0.0 {
        return Err(Error::Invalid(format!(
            "{}: no members and no item-free share",
            path.display()
        )));
    }
    check_item_free_share(manifest.item_free_share)
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    manifest
        .checked_weights()
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    for m in &manifest.members {
        for name in [&m.config, &m.weights] {
            if !meta.files.contains_key(name) {
                return Err(Error::Invalid(format!(
                    "{}: member file `{name}` is not a verified file of the checkpoint",
                    path.display()
                )));
            }
        }
    }
    Ok(Some(manifest))
}

/// Load the members `manifest` lists from `dir` onto `device` (weights in `dtype`, or as
/// stored).
pub fn load_members(
    dir: &Path,
    manifest: &EnsembleManifest,
    dtype: Option<DType>,
    device: &Device,
) -> Result<Vec<Qwen2>> {
    manifest
        .members
        .iter()
        .map(|m| hf::load_files(&dir.join(&m.config), &dir.join(&m.weights), dtype, device))
        .collect()
}

/// Write the ensemble of `primary` and `members` to `dst` (atomically, as every checkpoint):
/// `primary`'s files (verified copies) with the members' configs and weights and
/// `ensemble.json` added, under a new version. `model_weights` are the models' relative shares
/// of the mixture (`primary` first; `None`: equal), combined by `pool`, with `item_free_share`
/// of it given to the models' item-free twins (then `members` may be empty, and every model
/// needs item embeddings). Members must share
/// `primary`'s tokenizer, SID index and prompt tokens; none may itself be an ensemble, and
/// `primary` may not carry a hybrid ranker (its λ was chosen for the model alone: run
/// `sidrec-trainer hybrid` on the ensemble instead).
pub fn write(
    primary: &Checkpoint,
    members: &[Checkpoint],
    model_weights: Option<&[f64]>,
    pool: Pool,
    item_free_share: f64,
    dst: &Path,
) -> Result<CheckpointMeta> {
    if members.is_empty() && item_free_share == 0.0 {
        return Err(Error::Invalid(
            "an ensemble needs at least one member besides the checkpoint, or an item-free \
             share"
                .into(),
        ));
    }
    check_item_free_share(item_free_share)?;
    if item_free_share > 0.0 {
        for ck in std::iter::once(primary).chain(members) {
            if !ck.model.has_item_embeddings() {
                return Err(Error::Invalid(format!(
                    "{} has no item embeddings, so no item-free twin: the share needs models \
                     trained with `init --item-embeddings` (and `sft --item-dropout`)",
                    ck.dir.display()
                )));
            }
        }
    }
    let models = members.len() + 1;
    let shares = normalized_weights(model_weights.unwrap_or(&vec![1.0; models]), models)?;
    if primary.hybrid.is_some() {
        return Err(Error::Invalid(format!(
            "{} has a {HYBRID_FILE}, tuned for that model alone: build the ensemble from the \
             checkpoint without it, then run `sidrec-trainer hybrid` on the ensemble",
            primary.dir.display()
        )));
    }
    for ck in std::iter::once(primary).chain(members) {
        if !ck.members.is_empty() {
            return Err(Error::Invalid(format!(
                "{} is already an ensemble; list its members' own checkpoints instead",
                ck.dir.display()
            )));
        }
    }
    let mut files = Vec::new();
    let mut listed = Vec::new();
    for (i, m) in members.iter().enumerate() {
        primary.check_ensemble_member(m)?;
        let weights = hf::weight_files(&m.dir)?;
        let [weights] = weights.as_slice() else {
            return Err(Error::Invalid(format!(
                "{}: sharded weights cannot join an ensemble",
                m.dir.display()
            )));
        };
        let entry = EnsembleMember {
            config: format!("member-{}.config.json", i + 1),
            weights: format!("member-{}.safetensors", i + 1),
            source_version: m.meta.version.clone(),
        };
        for (name, from) in [
            (&entry.config, m.dir.join(hf::CONFIG_FILE)),
            (&entry.weights, weights.clone()),
        ] {
            let bytes = std::fs::read(&from).map_err(|e| Error::io(&from, e))?;
            // The member was verified when it was loaded; the bytes stored must be those.
            let file_name = from.file_name().map(|f| f.to_string_lossy().into_owned());
            let want = file_name.as_ref().and_then(|f| m.meta.files.get(f));
            if want.is_some_and(|w| *w != format!("{:x}", Sha256::digest(&bytes))) {
                return Err(Error::Invalid(format!(
                    "{}: changed since it was loaded",
                    from.display()
                )));
            }
            files.push((name.clone(), bytes));
        }
        listed.push(entry);
    }
    let manifest = EnsembleManifest {
        format_version: match (pool, item_free_share > 0.0) {
            (_, true) => ENSEMBLE_FORMAT_VERSION,
            (Pool::Product, false) => 3,
            (Pool::Mean, false) => 2,
        },
        members: listed,
        model_weights: Some(shares),
        pool,
        item_free_share,
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Invalid(e.to_string()))?;
    files.push((ENSEMBLE_FILE.to_string(), json));
    let mut metrics = primary.meta.metrics.clone();
    if let Some(obj) = metrics.as_object_mut() {
        obj.insert(
            "ensemble_of".into(),
            std::iter::once(&primary.meta.version)
                .chain(members.iter().map(|m| &m.meta.version))
                .cloned()
                .collect::<Vec<_>>()
                .into(),
        );
    }
    checkpoint::derive(&primary.dir, dst, &files, metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(model_weights: Option<Vec<f64>>) -> EnsembleManifest {
        let member = |i: usize| EnsembleMember {
            config: format!("member-{i}.config.json"),
            weights: format!("member-{i}.safetensors"),
            source_version: format!("v{i}"),
        };
        EnsembleManifest {
            format_version: ENSEMBLE_FORMAT_VERSION,
            members: vec![member(1), member(2)],
            model_weights,
            pool: Pool::Mean,
            item_free_share: 0.0,
        }
    }

    #[test]
    fn model_weights_default_to_equal_and_must_fit_the_models() {
        // A format-1 file has no weights: equal shares.
        let v1: EnsembleManifest = serde_json::from_str(
            r#"{"format_version": 1, "members": [
                {"config": "member-1.config.json", "weights": "member-1.safetensors", "source_version": "a"}]}"#,
        )
        .unwrap();
        assert_eq!(v1.checked_weights().unwrap(), vec![0.5, 0.5]);
        assert_eq!(manifest(None).checked_weights().unwrap().len(), 3);
        let ok = manifest(Some(vec![0.5, 0.25, 0.25]));
        assert_eq!(ok.checked_weights().unwrap(), vec![0.5, 0.25, 0.25]);
        for (bad, why) in [
            (vec![0.5, 0.5], "2 mixture weights for 3 models"),
            (vec![0.5, 0.5, 0.5], "do not sum to one"),
            (vec![1.0, 0.0, 0.0], "not a positive finite number"),
        ] {
            let err = manifest(Some(bad)).checked_weights().unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
        }
    }

    #[test]
    fn pool_defaults_to_mean_and_is_written_only_when_it_is_product() {
        let v2: EnsembleManifest = serde_json::from_str(
            r#"{"format_version": 2, "members": [
                {"config": "member-1.config.json", "weights": "member-1.safetensors", "source_version": "a"}],
                "model_weights": [0.5, 0.5]}"#,
        )
        .unwrap();
        assert_eq!(v2.pool, Pool::Mean);
        let mean = serde_json::to_value(manifest(None)).unwrap();
        assert!(mean.get("pool").is_none(), "{mean}");
        let product = EnsembleManifest {
            pool: Pool::Product,
            ..manifest(None)
        };
        let json = serde_json::to_value(&product).unwrap();
        assert_eq!(json["pool"], "product");
        let back: EnsembleManifest = serde_json::from_value(json).unwrap();
        assert_eq!(back.pool, Pool::Product);
        assert!(serde_json::from_str::<EnsembleManifest>(
            r#"{"format_version": 3, "members": [], "pool": "max"}"#
        )
        .is_err());
    }

    #[test]
    fn item_free_share_defaults_to_none_and_is_written_only_when_set() {
        let v3: EnsembleManifest = serde_json::from_str(
            r#"{"format_version": 3, "members": [
                {"config": "member-1.config.json", "weights": "member-1.safetensors", "source_version": "a"}],
                "model_weights": [0.5, 0.5], "pool": "product"}"#,
        )
        .unwrap();
        assert_eq!(v3.item_free_share, 0.0);
        let plain = serde_json::to_value(manifest(None)).unwrap();
        assert!(plain.get("item_free_share").is_none(), "{plain}");
        let twins = EnsembleManifest {
            item_free_share: 0.4,
            ..manifest(None)
        };
        let json = serde_json::to_value(&twins).unwrap();
        assert_eq!(json["item_free_share"], 0.4);
        let back: EnsembleManifest = serde_json::from_value(json).unwrap();
        assert_eq!(back.item_free_share, 0.4);
    }
}
