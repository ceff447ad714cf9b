//! Weight loading from an HF directory: `model.safetensors`, or the shards that
//! `model.safetensors.index.json` lists, memory-mapped while they are read.

use super::config::ModelConfig;
use super::llama::Llama;
use crate::error::{CoreError, Result};
use candle_core::{Device, Tensor};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// The safetensors files of an HF directory, shards in index order.
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if !index.exists() {
        return Err(CoreError::bad_file(
            dir,
            "holds neither model.safetensors nor model.safetensors.index.json",
        ));
    }
    let text = std::fs::read_to_string(&index).map_err(|e| CoreError::io(&index, e))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| CoreError::bad_file(&index, format!("not valid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| CoreError::bad_file(&index, "no weight_map object"))?;
    let files: BTreeSet<&str> = map.values().filter_map(|f| f.as_str()).collect();
    let files: Vec<PathBuf> = files.into_iter().map(|f| dir.join(f)).collect();
    for f in &files {
        if !f.exists() {
            return Err(CoreError::bad_file(
                f,
                "listed in model.safetensors.index.json but missing",
            ));
        }
    }
    Ok(files)
}

/// Reads every tensor of the files (memory-mapped) onto `device`.
pub fn read_safetensors(files: &[PathBuf], device: &Device) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for f in files {
        // SAFETY: the file is only read; soup never writes a model file in place (it writes a
        // temp dir and renames), so the mapping does not change under us.
        let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(f) }
            .map_err(|e| CoreError::bad_file(f, format!("not a readable safetensors file: {e}")))?;
        for (name, _) in st.tensors() {
            let t = st
                .load(&name, device)
                .map_err(|e| CoreError::bad_file(f, format!("tensor {name}: {e}")))?;
            check_finite(f, &name, &t)?;
            out.insert(name, t);
        }
    }
    Ok(out)
}

/// Refuses a weight holding NaN or Inf, naming the file and the tensor: such a model computes
/// NaN logits for every input (see [`super::finite`]).
pub fn check_finite(file: &Path, name: &str, t: &Tensor) -> Result<()> {
    let c = super::finite::non_finite(t)?;
    if c.is_clean() {
        return Ok(());
    }
    Err(CoreError::bad_file(
        file,
        format!(
            "tensor {name} holds {}: the file is damaged or was saved from a diverged run, and every output computed with it would be NaN; re-download or re-convert it",
            c.describe()
        ),
    ))
}

/// Loads the decoder of an HF directory (no tokenizer).
pub fn load_hf_weights(dir: &Path, device: &Device) -> Result<Llama> {
    let cfg = ModelConfig::from_file(&dir.join("config.json"))?;
    let files = safetensors_files(dir)?;
    let tensors = read_safetensors(&files, device)?;
    Llama::from_tensors(cfg, tensors, device)
}
