//! Qwen2 configuration, (de)serialised with HuggingFace's `config.json` keys.

use candle_core::DType;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One token id or several (HF allows either for `eos_token_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    /// A single id.
    One(u32),
    /// Several ids, any of which counts.
    Many(Vec<u32>),
}

impl TokenIds {
    /// All ids as a list.
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// A Qwen2 causal-LM configuration; the field names are HuggingFace's `config.json` keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Qwen2Config {
    /// Vocabulary size (rows of the embedding matrix).
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// MLP inner width.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (GQA); HF defaults it to `num_attention_heads`.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Longest sequence the model was trained for.
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: usize,
    /// RoPE base.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// Whether `lm_head` shares the embedding matrix (HF's Qwen2 default is `false`).
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// MLP activation; only `silu` is supported.
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    /// Always `qwen2`.
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// Storage dtype of the weights (`float32`, `bfloat16`, `float16`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch_dtype: Option<String>,
    /// Beginning-of-sequence token id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token id(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<TokenIds>,
    /// Std of the normal init of fresh weights.
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    /// Sliding-window attention switch; must be `false` (not implemented).
    #[serde(default)]
    pub use_sliding_window: bool,
    /// Sliding-window size (unused while `use_sliding_window` is false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<usize>,
    /// Layers below this use full attention when sliding windows are on (unused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_window_layers: Option<usize>,
    /// Attention dropout probability (ignored: training here runs without dropout).
    #[serde(default)]
    pub attention_dropout: f64,
    /// RoPE scaling; only `null` is supported.
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// HF model classes; written as `["Qwen2ForCausalLM"]`.
    #[serde(default = "default_architectures")]
    pub architectures: Vec<String>,
    /// Rows of the item-embedding table (catalogue items + 1) when the model adds a learned
    /// vector per history item to its input (see [`super::item_embedding`]); a sidrec extension
    /// that HF's `Qwen2ForCausalLM` does not know, so such checkpoints are not HF-loadable.
    #[serde(
        default,
        rename = "sidrec_item_embeddings",
        skip_serializing_if = "Option::is_none"
    )]
    pub item_embeddings: Option<usize>,
    /// SID levels of the copy gate (`init --copy-gate`), a sidrec extension like the item
    /// embeddings: a learned logit for writing the previous item's SID again
    /// ([`super::copy_gate`]). Such checkpoints are not HF-loadable either.
    #[serde(
        default,
        rename = "sidrec_copy_levels",
        skip_serializing_if = "Option::is_none"
    )]
    pub copy_levels: Option<usize>,
    /// Every other key of `config.json`, kept so that a save preserves it.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn default_max_position_embeddings() -> usize {
    32768
}
fn default_rope_theta() -> f64 {
    10000.0
}
fn default_rms_norm_eps() -> f64 {
    1e-6
}
fn default_hidden_act() -> String {
    "silu".to_string()
}
fn default_model_type() -> String {
    "qwen2".to_string()
}
fn default_initializer_range() -> f64 {
    0.02
}
fn default_architectures() -> Vec<String> {
    vec!["Qwen2ForCausalLM".to_string()]
}

impl Qwen2Config {
    /// A config with the given shape and HF defaults for everything else.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vocab_size: usize,
        hidden_size: usize,
        intermediate_size: usize,
        num_hidden_layers: usize,
        num_attention_heads: usize,
        num_key_value_heads: usize,
        tie_word_embeddings: bool,
    ) -> Self {
        Self {
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads: Some(num_key_value_heads),
            max_position_embeddings: 4096,
            rope_theta: default_rope_theta(),
            rms_norm_eps: default_rms_norm_eps(),
            tie_word_embeddings,
            hidden_act: default_hidden_act(),
            model_type: default_model_type(),
            torch_dtype: Some("float32".to_string()),
            bos_token_id: None,
            eos_token_id: None,
            initializer_range: default_initializer_range(),
            use_sliding_window: false,
            sliding_window: None,
            max_window_layers: None,
            attention_dropout: 0.0,
            rope_scaling: None,
            architectures: default_architectures(),
            item_embeddings: None,
            copy_levels: None,
            extra: serde_json::Map::new(),
        }
    }

    /// A from-scratch model of about 1M parameters plus `vocab_size * 128` embeddings.
    pub fn tiny(vocab_size: usize) -> Self {
        Self::new(vocab_size, 128, 512, 4, 4, 2, true)
    }

    /// A from-scratch model of about 10M parameters plus `vocab_size * 384` embeddings
    /// (hidden 384, 6 layers, 6 query and 2 key/value heads).
    pub fn base(vocab_size: usize) -> Self {
        Self::new(vocab_size, 384, 1024, 6, 6, 2, true)
    }

    /// A from-scratch model of about 22M parameters plus `vocab_size * 512` embeddings.
    pub fn small(vocab_size: usize) -> Self {
        Self::new(vocab_size, 512, 1408, 8, 8, 2, true)
    }

    /// The shape of Qwen2.5-0.5B (load its weights with `checkpoint::load`).
    pub fn qwen2_5_0_5b() -> Self {
        let mut cfg = Self::new(151936, 896, 4864, 24, 14, 2, true);
        cfg.max_position_embeddings = 32768;
        cfg.rope_theta = 1_000_000.0;
        cfg.torch_dtype = Some("bfloat16".to_string());
        cfg.bos_token_id = Some(151643);
        cfg.eos_token_id = Some(TokenIds::One(151643));
        cfg.sliding_window = Some(32768);
        cfg.max_window_layers = Some(21);
        cfg
    }

    /// Number of key/value heads, with HF's default.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Number of trainable parameters (tied embeddings counted once).
    pub fn num_parameters(&self) -> usize {
        let (h, i, kv) = (self.hidden_size, self.intermediate_size, self.kv_heads());
        let kv_dim = kv * self.head_dim();
        let attn = h * h + h + 2 * (h * kv_dim + kv_dim) + h * h;
        let layer = attn + 3 * h * i + 2 * h;
        let lm_head = if self.tie_word_embeddings {
            0
        } else {
            self.vocab_size * h
        };
        let items = self.item_embeddings.unwrap_or(0) * h;
        let copy = self.copy_levels.unwrap_or(0) * (h + 1);
        self.vocab_size * h + self.num_hidden_layers * layer + h + lm_head + items + copy
    }

    /// The dtype named by `torch_dtype`, if it names one candle supports.
    pub fn dtype(&self) -> Option<DType> {
        match self.torch_dtype.as_deref()? {
            "float32" => Some(DType::F32),
            "bfloat16" => Some(DType::BF16),
            "float16" => Some(DType::F16),
            _ => None,
        }
    }

    /// The HF `torch_dtype` name of a candle dtype.
    pub fn dtype_name(dtype: DType) -> Result<&'static str> {
        match dtype {
            DType::F32 => Ok("float32"),
            DType::BF16 => Ok("bfloat16"),
            DType::F16 => Ok("float16"),
            other => Err(Error::Invalid(format!(
                "unsupported model dtype {other:?} (use f32, bf16 or f16)"
            ))),
        }
    }

    /// Check that this config describes a model this crate can run.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(format!("invalid Qwen2 config: {m}")));
        if self.model_type != "qwen2" {
            return bad(format!(
                "model_type is {:?}, expected \"qwen2\"",
                self.model_type
            ));
        }
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.kv_heads()),
        ];
        for (name, value) in positive {
            if value == 0 {
                return bad(format!("{name} must be positive"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.kv_heads()
            ));
        }
        if self.copy_levels == Some(0) {
            return bad("sidrec_copy_levels must be positive".into());
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(format!(
                "head dim {} must be even for RoPE",
                self.head_dim()
            ));
        }
        if self.hidden_act != "silu" {
            return bad(format!(
                "hidden_act {:?} is not supported (only silu)",
                self.hidden_act
            ));
        }
        if self.use_sliding_window {
            return bad("use_sliding_window = true is not supported".to_string());
        }
        if self.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return bad("rope_scaling is not supported".to_string());
        }
        // Written so that NaN fails too.
        let theta_ok = self.rope_theta > 0.0 && self.rope_theta.is_finite();
        let eps_ok = self.rms_norm_eps >= 0.0 && self.rms_norm_eps.is_finite();
        if !theta_ok || !eps_ok {
            return bad("rope_theta must be positive and rms_norm_eps non-negative".to_string());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_the_advertised_size() {
        let tiny = Qwen2Config::tiny(1000);
        let n = tiny.num_parameters();
        assert!((1_000_000..5_000_000).contains(&n), "tiny has {n}");
        let base = Qwen2Config::base(1000);
        let n = base.num_parameters();
        assert!((8_000_000..15_000_000).contains(&n), "base has {n}");
        let small = Qwen2Config::small(1000);
        let n = small.num_parameters();
        assert!((20_000_000..40_000_000).contains(&n), "small has {n}");
        let q = Qwen2Config::qwen2_5_0_5b();
        let n = q.num_parameters();
        assert!((490_000_000..500_000_000).contains(&n), "0.5b has {n}");
        for cfg in [tiny, base, small, q] {
            cfg.validate().unwrap();
        }
    }

    #[test]
    fn parses_a_hf_config_and_keeps_unknown_keys() {
        let text = r#"{
          "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0,
          "bos_token_id": 151643, "eos_token_id": [151645, 151643], "hidden_act": "silu",
          "hidden_size": 896, "initializer_range": 0.02, "intermediate_size": 4864,
          "max_position_embeddings": 32768, "max_window_layers": 21, "model_type": "qwen2",
          "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
          "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768,
          "tie_word_embeddings": true, "torch_dtype": "bfloat16",
          "transformers_version": "4.43.1", "use_cache": true, "use_sliding_window": false,
          "vocab_size": 151936
        }"#;
        let cfg: Qwen2Config = serde_json::from_str(text).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.kv_heads(), 2);
        assert_eq!(cfg.head_dim(), 64);
        assert_eq!(cfg.dtype(), Some(DType::BF16));
        assert_eq!(
            cfg.eos_token_id.as_ref().unwrap().to_vec(),
            vec![151645, 151643]
        );
        assert_eq!(cfg.extra["transformers_version"], "4.43.1");
        let back: serde_json::Value = serde_json::to_value(&cfg).unwrap();
        assert_eq!(back["use_cache"], true);
        assert_eq!(back["model_type"], "qwen2");
        let shape = Qwen2Config::qwen2_5_0_5b();
        assert_eq!(
            (
                shape.vocab_size,
                shape.hidden_size,
                shape.num_hidden_layers,
                shape.kv_heads()
            ),
            (
                cfg.vocab_size,
                cfg.hidden_size,
                cfg.num_hidden_layers,
                cfg.kv_heads()
            )
        );
    }
}
