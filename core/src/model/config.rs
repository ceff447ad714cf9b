//! HF `config.json` parsing for the Llama family (Llama 2/3, Mistral, Qwen2, SmolLM).
//!
//! candle-transformers' `LlamaConfig` does not cover Qwen2's q/k/v biases, an explicit
//! `head_dim`, or the newer `rope_parameters` block, so the engine keeps its own config that
//! accepts all of them and normalizes to one shape.

use crate::error::{CoreError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Rotary embedding scaling as Llama 3.x configs carry it (`rope_type: "llama3"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// The decoder's shape and numerics, normalized from any of the supported config forms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// The HF architecture name, e.g. `LlamaForCausalLM`.
    pub architecture: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub vocab_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3RopeScaling>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Qwen2 puts biases on q, k and v.
    pub attention_bias: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

/// The serialized form: every field optional where some family leaves it out.
#[derive(Debug, Deserialize)]
struct RawConfig {
    architectures: Option<Vec<String>>,
    model_type: Option<String>,
    hidden_size: usize,
    intermediate_size: usize,
    vocab_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    rope_scaling: Option<serde_json::Value>,
    rope_parameters: Option<serde_json::Value>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<serde_json::Value>,
}

/// Upper bounds of [`ModelConfig::check_limits`], far above any released Llama-family model
/// (hidden 16384, intermediate 53248, vocab 256k, 126 layers, 128 heads).
const MAX_WIDTH: usize = 1 << 20;
const MAX_VOCAB: usize = 1 << 24;
const MAX_LAYERS: usize = 1 << 12;
/// Rotary table entries (positions x head_dim / 2): 1M positions at head_dim 128 is 2^26.
const MAX_ROPE_TABLE: usize = 1 << 28;

const SUPPORTED: &[(&str, &str)] = &[
    ("LlamaForCausalLM", "llama"),
    ("MistralForCausalLM", "mistral"),
    ("Qwen2ForCausalLM", "qwen2"),
];

impl ModelConfig {
    /// Reads and parses `config.json`, naming the file in every error.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| CoreError::io(path, e))?;
        Self::from_json(&text).map_err(|e| match e {
            CoreError::BadConfig(m) => CoreError::bad_file(path, m),
            other => other,
        })
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(text)
            .map_err(|e| CoreError::BadConfig(format!("not a valid model config: {e}")))?;
        let architecture = match (&raw.architectures, &raw.model_type) {
            (Some(a), _) if !a.is_empty() => a[0].clone(),
            (_, Some(t)) => SUPPORTED
                .iter()
                .find(|(_, mt)| mt == t)
                .map(|(a, _)| a.to_string())
                .unwrap_or_else(|| t.clone()),
            _ => {
                return Err(CoreError::BadConfig(
                    "config has neither architectures nor model_type".into(),
                ))
            }
        };
        if !SUPPORTED.iter().any(|(a, _)| *a == architecture) {
            return Err(CoreError::UnknownArchitecture(architecture));
        }
        let is_qwen2 = architecture == "Qwen2ForCausalLM";
        if raw.num_attention_heads == 0
            || !raw.hidden_size.is_multiple_of(raw.num_attention_heads) && raw.head_dim.is_none()
        {
            return Err(CoreError::BadConfig(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                raw.hidden_size, raw.num_attention_heads
            )));
        }
        let num_key_value_heads = raw.num_key_value_heads.unwrap_or(raw.num_attention_heads);
        if num_key_value_heads == 0 || !raw.num_attention_heads.is_multiple_of(num_key_value_heads)
        {
            return Err(CoreError::BadConfig(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {num_key_value_heads}",
                raw.num_attention_heads
            )));
        }
        // The newer form nests theta and scaling under `rope_parameters`.
        let params = raw.rope_parameters.as_ref();
        let rope_theta = raw
            .rope_theta
            .or_else(|| {
                params
                    .and_then(|p| p.get("rope_theta"))
                    .and_then(|v| v.as_f64())
            })
            .unwrap_or(10_000.0);
        for (k, v) in [
            ("rms_norm_eps", raw.rms_norm_eps),
            ("rope_theta", rope_theta),
        ] {
            // A zero or negative epsilon divides by zero on a zero activation; NaN logits follow.
            if !(v.is_finite() && v > 0.0) {
                return Err(CoreError::BadConfig(format!(
                    "{k} is {v}: it must be a finite positive number"
                )));
            }
        }
        let scaling = raw.rope_scaling.as_ref().or(params);
        let rope_scaling = match scaling {
            Some(s) => parse_scaling(s)?,
            None => None,
        };
        let eos_token_ids = match raw.eos_token_id {
            Some(serde_json::Value::Number(n)) => {
                n.as_u64().map(|v| vec![v as u32]).unwrap_or_default()
            }
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_u64())
                .map(|v| v as u32)
                .collect(),
            _ => Vec::new(),
        };
        let config = ModelConfig {
            head_dim: raw
                .head_dim
                .unwrap_or(raw.hidden_size / raw.num_attention_heads),
            architecture,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            vocab_size: raw.vocab_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            num_key_value_heads,
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta,
            rope_scaling,
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(4096),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            attention_bias: raw.attention_bias.unwrap_or(is_qwen2),
            bos_token_id: raw.bos_token_id,
            eos_token_ids,
        };
        config.check_limits()?;
        Ok(config)
    }

    /// Refuses sizes no real model has before anything is allocated for them: the decoder
    /// builds its rotary tables (positions x head_dim / 2) from the config alone, so a
    /// 200-byte config.json claiming 2^40 positions would otherwise ask for terabytes.
    pub fn check_limits(&self) -> Result<()> {
        let limits: [(&str, usize, usize); 7] = [
            ("hidden_size", self.hidden_size, MAX_WIDTH),
            ("intermediate_size", self.intermediate_size, MAX_WIDTH),
            ("head_dim", self.head_dim, MAX_WIDTH),
            ("vocab_size", self.vocab_size, MAX_VOCAB),
            ("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS),
            ("num_attention_heads", self.num_attention_heads, MAX_LAYERS),
            ("num_key_value_heads", self.num_key_value_heads, MAX_LAYERS),
        ];
        for (name, value, max) in limits {
            if value > max {
                return Err(CoreError::BadConfig(format!(
                    "{name} {value} is larger than any supported model (at most {max}); \
                     check the config for a corrupted value"
                )));
            }
        }
        let rope_table = self
            .max_position_embeddings
            .saturating_mul(self.head_dim / 2);
        if rope_table > MAX_ROPE_TABLE {
            return Err(CoreError::BadConfig(format!(
                "max_position_embeddings {} with head_dim {} needs rotary tables of {rope_table} \
                 entries (at most {MAX_ROPE_TABLE}); lower max_position_embeddings in the config \
                 to the context you will use",
                self.max_position_embeddings, self.head_dim
            )));
        }
        Ok(())
    }

    /// The (out_features, in_features) of a projection in every layer: what a LoRA pair on it
    /// must match (A: (r, in), B: (out, r)).
    pub fn projection_shape(&self, m: crate::lora::Module) -> (usize, usize) {
        use crate::lora::Module;
        let h = self.hidden_size;
        let qd = self.num_attention_heads * self.head_dim;
        let kvd = self.num_key_value_heads * self.head_dim;
        let i = self.intermediate_size;
        match m {
            Module::Q => (qd, h),
            Module::K | Module::V => (kvd, h),
            Module::O => (h, qd),
            Module::Gate | Module::Up => (i, h),
            Module::Down => (h, i),
        }
    }

    /// An HF-style `config.json` for this config, so converted models load in transformers too.
    pub fn to_hf_json(&self) -> serde_json::Value {
        let model_type = SUPPORTED
            .iter()
            .find(|(a, _)| *a == self.architecture)
            .map(|(_, t)| *t)
            .unwrap_or("llama");
        let mut v = serde_json::json!({
            "architectures": [self.architecture],
            "model_type": model_type,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "vocab_size": self.vocab_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.attention_bias,
            "hidden_act": "silu",
            "torch_dtype": "float32",
        });
        if let Some(b) = self.bos_token_id {
            v["bos_token_id"] = b.into();
        }
        match self.eos_token_ids.as_slice() {
            [] => {}
            [one] => v["eos_token_id"] = (*one).into(),
            many => v["eos_token_id"] = many.into(),
        }
        if let Some(s) = &self.rope_scaling {
            v["rope_scaling"] = serde_json::json!({
                "rope_type": "llama3",
                "factor": s.factor,
                "low_freq_factor": s.low_freq_factor,
                "high_freq_factor": s.high_freq_factor,
                "original_max_position_embeddings": s.original_max_position_embeddings,
            });
        }
        v
    }

    /// Rotary inverse frequencies, one per pair of head dimensions, Llama 3 scaling applied.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim;
        let base: Vec<f64> = (0..d)
            .step_by(2)
            .map(|i| 1.0 / self.rope_theta.powf(i as f64 / d as f64))
            .collect();
        let Some(s) = &self.rope_scaling else {
            return base.into_iter().map(|f| f as f32).collect();
        };
        // transformers' `_compute_llama3_parameters`.
        let old_ctx = s.original_max_position_embeddings as f64;
        let low_wavelen = old_ctx / s.low_freq_factor;
        let high_wavelen = old_ctx / s.high_freq_factor;
        base.into_iter()
            .map(|freq| {
                let wavelen = 2.0 * std::f64::consts::PI / freq;
                let scaled = if wavelen > low_wavelen {
                    freq / s.factor
                } else {
                    freq
                };
                let smooth = (old_ctx / wavelen - s.low_freq_factor)
                    / (s.high_freq_factor - s.low_freq_factor);
                let smoothed = (1.0 - smooth) * scaled / s.factor + smooth * scaled;
                let medium = wavelen >= high_wavelen && wavelen <= low_wavelen;
                (if medium { smoothed } else { scaled }) as f32
            })
            .collect()
    }
}

fn parse_scaling(v: &serde_json::Value) -> Result<Option<Llama3RopeScaling>> {
    let kind = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(|t| t.as_str())
        .unwrap_or("default");
    match kind {
        "default" => Ok(None),
        "llama3" => {
            let f = |k: &str| {
                v.get(k).and_then(|x| x.as_f64()).ok_or_else(|| {
                    CoreError::BadConfig(format!("rope scaling of type llama3 lacks {k}"))
                })
            };
            Ok(Some(Llama3RopeScaling {
                factor: f("factor")?,
                low_freq_factor: f("low_freq_factor")?,
                high_freq_factor: f("high_freq_factor")?,
                original_max_position_embeddings: f("original_max_position_embeddings")? as usize,
            }))
        }
        // BadConfig, not UnknownName: `from_file` names the config file in it.
        other => Err(CoreError::BadConfig(format!(
            "rope scaling type {other:?} is not supported (supported: default, llama3)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOL: &str = r#"{"architectures":["LlamaForCausalLM"],"hidden_size":576,"intermediate_size":1536,
        "vocab_size":49152,"num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3,
        "rms_norm_eps":1e-5,"rope_theta":100000,"max_position_embeddings":8192,"tie_word_embeddings":true,
        "bos_token_id":1,"eos_token_id":2}"#;

    #[test]
    fn classic_form() {
        let c = ModelConfig::from_json(SMOL).unwrap();
        assert_eq!(c.head_dim, 64);
        assert_eq!(c.rope_theta, 100000.0);
        assert!(c.tie_word_embeddings && !c.attention_bias);
        assert_eq!(c.eos_token_ids, vec![2]);
    }

    #[test]
    fn rope_parameters_form_and_llama3_scaling() {
        let j = r#"{"model_type":"llama","hidden_size":64,"intermediate_size":128,"vocab_size":10,
          "num_hidden_layers":1,"num_attention_heads":4,"rms_norm_eps":1e-5,
          "rope_parameters":{"rope_theta":500000.0,"rope_type":"llama3","factor":8.0,
          "low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192},
          "eos_token_id":[1,2]}"#;
        let c = ModelConfig::from_json(j).unwrap();
        assert_eq!(c.architecture, "LlamaForCausalLM");
        assert_eq!(c.rope_theta, 500000.0);
        assert_eq!(c.rope_scaling.as_ref().unwrap().factor, 8.0);
        assert_eq!(c.eos_token_ids, vec![1, 2]);
        let f = c.rope_inv_freq();
        assert_eq!(f.len(), 8);
        // The highest frequency is left alone, the lowest divided by the factor.
        assert_eq!(f[0], 1.0);
        let plain = 1.0 / 500000f64.powf(14.0 / 16.0);
        assert!((f[7] as f64 - plain / 8.0).abs() < 1e-12);
    }

    #[test]
    fn qwen2_gets_bias_and_unknown_is_refused() {
        let q = SMOL.replace("LlamaForCausalLM", "Qwen2ForCausalLM");
        assert!(ModelConfig::from_json(&q).unwrap().attention_bias);
        let g = SMOL.replace("LlamaForCausalLM", "GPT2LMHeadModel");
        assert!(matches!(
            ModelConfig::from_json(&g),
            Err(CoreError::UnknownArchitecture(_))
        ));
        let rt = ModelConfig::from_json(
            &ModelConfig::from_json(SMOL)
                .unwrap()
                .to_hf_json()
                .to_string(),
        )
        .unwrap();
        assert_eq!(rt, ModelConfig::from_json(SMOL).unwrap());
    }
}
