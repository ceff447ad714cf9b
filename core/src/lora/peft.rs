//! PEFT's adapter format: `adapter_config.json` + `adapter_model.safetensors`.
//!
//! Import accepts what PEFT writes (tensor names with or without the `base_model.model.`
//! prefix, `target_modules` as a list or a regex, `rank_pattern`/`alpha_pattern`, rsLoRA);
//! export writes the same, so `PeftModel.from_pretrained` loads what soup produced.

use super::adapter::{lora_scale, LoraAdapter, LoraMeta, LoraPair, Module};
use crate::error::{CoreError, Result};
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// Splits `[base_model.model.]model.layers.{l}.{block}.{m}.lora_{A|B}[.default].weight` into
/// (layer, module, is_a). Returns `Ok(None)` for tensors that are not LoRA factors.
fn parse_tensor_name(name: &str) -> Result<Option<(usize, Module, bool)>> {
    let n = name.strip_prefix("base_model.model.").unwrap_or(name);
    let is_a = if n.contains(".lora_A.") {
        true
    } else if n.contains(".lora_B.") {
        false
    } else {
        return Ok(None);
    };
    let parts: Vec<&str> = n.split('.').collect();
    let pos = parts.iter().position(|p| *p == "layers").ok_or_else(|| {
        CoreError::tensor(
            name,
            "soup adapts decoder-layer projections only (not embeddings or lm_head)",
        )
    })?;
    let layer = parts
        .get(pos + 1)
        .and_then(|s| s.parse::<usize>().ok())
        .ok_or_else(|| CoreError::tensor(name, "no layer index after `layers`"))?;
    let module = parts
        .get(pos + 3)
        .ok_or_else(|| CoreError::tensor(name, "no projection name"))
        .and_then(|m| Module::parse(m).map_err(|e| CoreError::tensor(name, e.to_string())))?;
    Ok(Some((layer, module, is_a)))
}

fn full_module_name(layer: usize, m: Module) -> String {
    format!("model.layers.{layer}.{}.{}", m.block(), m.hf_name())
}

/// PEFT's `get_pattern_key`: the first pattern that matches the end of the module's name.
fn pattern_value(patterns: &Value, module_name: &str) -> Result<Option<f64>> {
    let Some(map) = patterns.as_object() else {
        return Ok(None);
    };
    for (key, v) in map {
        let re = regex::Regex::new(&format!(r"^(.*\.)?({key})$")).map_err(|e| {
            CoreError::bad_setting(
                "pattern",
                format!("{key:?} in adapter config"),
                format!("not a valid regular expression ({e})"),
            )
        })?;
        if re.is_match(module_name) {
            return Ok(v.as_f64());
        }
    }
    Ok(None)
}

/// Loads a PEFT adapter directory onto `device`.
pub fn load_peft(dir: &Path, device: &Device) -> Result<LoraAdapter> {
    let cfg_path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| CoreError::io(&cfg_path, e))?;
    let cfg: Value = serde_json::from_str(&text)
        .map_err(|e| CoreError::bad_file(&cfg_path, format!("not valid JSON: {e}")))?;
    if let Some(t) = cfg.get("peft_type").and_then(|v| v.as_str()) {
        if t != "LORA" {
            return Err(CoreError::bad_file(
                &cfg_path,
                format!("peft_type {t:?} is not LORA"),
            ));
        }
    }
    let r = cfg.get("r").and_then(|v| v.as_u64()).unwrap_or(8) as usize;
    let alpha = cfg
        .get("lora_alpha")
        .and_then(|v| v.as_f64())
        .unwrap_or(8.0);
    let use_rslora = cfg
        .get("use_rslora")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let dropout = cfg
        .get("lora_dropout")
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0);
    let base_model = cfg
        .get("base_model_name_or_path")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    let alpha_pattern = cfg.get("alpha_pattern").cloned().unwrap_or(Value::Null);

    let w_path = dir.join(WEIGHTS_FILE);
    if !w_path.exists() {
        return Err(CoreError::bad_file(
            &w_path,
            "missing (soup reads safetensors adapters; convert a .bin with PEFT first)",
        ));
    }
    let tensors = candle_core::safetensors::load(&w_path, device)
        .map_err(|e| CoreError::bad_file(&w_path, e.to_string()))?;
    let mut halves: BTreeMap<(usize, Module), (Option<Tensor>, Option<Tensor>)> = BTreeMap::new();
    for (name, t) in tensors {
        let Some((layer, m, is_a)) = parse_tensor_name(&name)? else {
            continue;
        };
        let t = t.to_dtype(DType::F32)?;
        if t.rank() != 2 {
            return Err(CoreError::tensor(
                &name,
                format!("expected a matrix, got shape {:?}", t.dims()),
            ));
        }
        let e = halves.entry((layer, m)).or_default();
        if is_a {
            e.0 = Some(t);
        } else {
            e.1 = Some(t);
        }
    }
    if halves.is_empty() {
        return Err(CoreError::bad_file(
            &w_path,
            "holds no lora_A/lora_B tensors",
        ));
    }
    let mut pairs = BTreeMap::new();
    for ((layer, m), (a, b)) in halves {
        let name = full_module_name(layer, m);
        let (Some(a), Some(b)) = (a, b) else {
            return Err(CoreError::bad_file(
                &w_path,
                format!("{name} has only one of lora_A and lora_B"),
            ));
        };
        let rank = a.dims()[0];
        if b.dims()[1] != rank {
            return Err(CoreError::tensor(
                format!("{name}.lora_B.weight"),
                format!("rank {} does not match lora_A's rank {rank}", b.dims()[1]),
            ));
        }
        let a_alpha = pattern_value(&alpha_pattern, &name)?.unwrap_or(alpha);
        pairs.insert(
            (layer, m),
            LoraPair {
                a,
                b,
                scale: lora_scale(a_alpha, rank, use_rslora),
                alpha: a_alpha,
            },
        );
    }
    let mut targets: Vec<Module> = pairs.keys().map(|(_, m)| *m).collect();
    targets.sort();
    targets.dedup();
    let name = dir
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "adapter".into());
    Ok(LoraAdapter {
        name,
        meta: LoraMeta {
            base_model,
            rank: r,
            alpha,
            use_rslora,
            dropout,
            targets,
        },
        pairs,
    })
}

/// The safetensors tensors of an adapter under PEFT's names.
pub fn peft_tensors(adapter: &LoraAdapter) -> HashMap<String, Tensor> {
    let mut out = HashMap::new();
    for (&(layer, m), p) in &adapter.pairs {
        let base = format!("base_model.model.{}", full_module_name(layer, m));
        out.insert(format!("{base}.lora_A.weight"), p.a.clone());
        out.insert(format!("{base}.lora_B.weight"), p.b.clone());
    }
    out
}

/// PEFT's `adapter_config.json` for an adapter: the most common rank and alpha as defaults,
/// exceptions in `rank_pattern`/`alpha_pattern` keyed by full module name.
pub fn peft_config(adapter: &LoraAdapter) -> Value {
    let mut rank_count: BTreeMap<usize, usize> = BTreeMap::new();
    for p in adapter.pairs.values() {
        *rank_count.entry(p.rank()).or_default() += 1;
    }
    let r = rank_count
        .iter()
        .max_by_key(|(_, c)| **c)
        .map(|(r, _)| *r)
        .unwrap_or(adapter.meta.rank);
    let alpha = adapter.meta.alpha;
    let mut rank_pattern = serde_json::Map::new();
    let mut alpha_pattern = serde_json::Map::new();
    for (&(layer, m), p) in &adapter.pairs {
        if p.rank() != r {
            rank_pattern.insert(full_module_name(layer, m), p.rank().into());
        }
        if (p.alpha - alpha).abs() > 1e-12 {
            alpha_pattern.insert(full_module_name(layer, m), p.alpha.into());
        }
    }
    let targets: Vec<&str> = adapter.modules().iter().map(|m| m.hf_name()).collect();
    json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": adapter.meta.base_model,
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": adapter.meta.dropout,
        "use_rslora": adapter.meta.use_rslora,
        "target_modules": targets,
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
        "layers_to_transform": null,
        "revision": null,
    })
}

/// Writes a PEFT adapter directory atomically (a temp dir beside `dir`, then a rename, so a
/// crash never leaves a half-written adapter) into a new or empty `dir`: a non-empty one is
/// refused, never deleted (see `crate::output`).
pub fn save_peft(adapter: &LoraAdapter, dir: &Path) -> Result<()> {
    save_peft_with(adapter, dir, &crate::output::OutputRules::default())
}

/// [`save_peft`] under the command's output rules (`--force`, its inputs, the data dir).
pub fn save_peft_with(
    adapter: &LoraAdapter,
    dir: &Path,
    rules: &crate::output::OutputRules,
) -> Result<()> {
    let staged = crate::output::StagedDir::new(dir, rules)?;
    write_peft_files(adapter, staged.path())?;
    staged.commit()?;
    Ok(())
}

/// Writes the config and tensors of a PEFT adapter into the existing folder `dir`.
pub fn write_peft_files(adapter: &LoraAdapter, dir: &Path) -> Result<()> {
    let cfg = serde_json::to_string_pretty(&peft_config(adapter))
        .map_err(|e| CoreError::serialize(format!("the config of adapter {}", adapter.name), e))?;
    std::fs::write(dir.join(CONFIG_FILE), cfg).map_err(|e| CoreError::io(dir, e))?;
    let tensors = peft_tensors(adapter);
    candle_core::safetensors::save(&tensors, dir.join(WEIGHTS_FILE))
        .map_err(|e| CoreError::bad_file(dir.join(WEIGHTS_FILE), e.to_string()))?;
    Ok(())
}

/// Serializes an adapter to safetensors bytes (PEFT names) plus its PEFT config: the form
/// in which adapters cross into the store.
pub fn to_bytes(adapter: &LoraAdapter) -> Result<(Vec<u8>, Value)> {
    let tensors = peft_tensors(adapter);
    let bytes = safetensors::serialize(tensors.iter().map(|(k, v)| (k.clone(), v)), None)
        .map_err(|e| CoreError::adapter(&adapter.name, format!("cannot serialize: {e}")))?;
    Ok((bytes, peft_config(adapter)))
}

/// The inverse of [`to_bytes`].
pub fn from_bytes(
    name: &str,
    bytes: &[u8],
    config: &Value,
    device: &Device,
) -> Result<LoraAdapter> {
    let dir = tempfile::tempdir().map_err(|e| CoreError::io(std::env::temp_dir(), e))?;
    std::fs::write(dir.path().join(WEIGHTS_FILE), bytes)
        .map_err(|e| CoreError::io(dir.path(), e))?;
    std::fs::write(dir.path().join(CONFIG_FILE), config.to_string())
        .map_err(|e| CoreError::io(dir.path(), e))?;
    let mut a = load_peft(dir.path(), device)?;
    a.name = name.to_string();
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_names_with_and_without_prefix() {
        let (l, m, a) =
            parse_tensor_name("base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight")
                .unwrap()
                .unwrap();
        assert_eq!((l, m, a), (3, Module::Q, true));
        let (l, m, a) = parse_tensor_name("model.layers.0.mlp.down_proj.lora_B.default.weight")
            .unwrap()
            .unwrap();
        assert_eq!((l, m, a), (0, Module::Down, false));
        assert!(parse_tensor_name("model.embed_tokens.weight")
            .unwrap()
            .is_none());
        assert!(parse_tensor_name("base_model.model.lm_head.lora_A.weight").is_err());
    }

    #[test]
    fn alpha_pattern_matches_module_suffix() {
        let p = json!({"layers.1.self_attn.q_proj": 4.0});
        assert_eq!(
            pattern_value(&p, "model.layers.1.self_attn.q_proj").unwrap(),
            Some(4.0)
        );
        assert_eq!(
            pattern_value(&p, "model.layers.11.self_attn.q_proj").unwrap(),
            None
        );
    }

    #[test]
    fn save_and_load_round_trip() {
        let dev = Device::Cpu;
        let shapes = |m: Module| if m == Module::Down { (8, 16) } else { (16, 8) };
        let mut ad = LoraAdapter::init(
            "x",
            "tiny",
            &shapes,
            2,
            &[Module::Q, Module::Down],
            4,
            8.0,
            false,
            1,
            &dev,
        )
        .unwrap();
        for p in ad.pairs.values_mut() {
            p.b = Tensor::ones(p.b.dims(), DType::F32, &dev).unwrap();
        }
        ad.pairs.get_mut(&(1, Module::Q)).unwrap().alpha = 2.0;
        ad.pairs.get_mut(&(1, Module::Q)).unwrap().scale = 0.5;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("ad");
        save_peft(&ad, &out).unwrap();
        let back = load_peft(&out, &dev).unwrap();
        assert_eq!(back.pairs.len(), 4);
        assert_eq!(back.get(1, Module::Q).unwrap().scale, 0.5);
        assert_eq!(back.get(0, Module::Q).unwrap().scale, 2.0);
        let d = crate::test_support::max_abs_diff(
            &back.get(0, Module::Down).unwrap().a,
            &ad.get(0, Module::Down).unwrap().a,
        );
        assert_eq!(d, 0.0);
    }
}
