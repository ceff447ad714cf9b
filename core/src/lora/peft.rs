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

/// What a tensor of a PEFT weights file is, by its name.
#[derive(Debug, PartialEq)]
enum TensorKind {
    /// A LoRA factor of one projection: (layer, module, is_a).
    Factor(usize, Module, bool),
}

/// Parses `[base_model.model.]model.layers.{l}.{block}.{m}.lora_{A|B}[.{adapter}].weight`.
/// Every other tensor is refused with the PEFT feature it belongs to: a tensor soup skipped
/// would change what the adapter computes (DoRA's magnitudes, a bias on lora_B, saved
/// modules), so an adapter is either applied whole or not at all.
fn parse_tensor_name(name: &str) -> Result<TensorKind> {
    let refuse = |why: &str| Err(CoreError::tensor(name, why.to_string()));
    if name.contains("lora_magnitude_vector") {
        return refuse("DoRA's magnitude vector (use_dora): soup applies plain LoRA only and would compute a different adapter; merge it into a plain LoRA with PEFT first");
    }
    if name.contains("modules_to_save") {
        return refuse("a full copy of a module (modules_to_save): soup applies LoRA factors only and would drop it");
    }
    if name.contains("lora_embedding_") {
        return refuse("LoRA on the embedding: soup adapts decoder-layer projections only");
    }
    if name.contains("trainable_tokens") {
        return refuse("trainable token embeddings (trainable_token_indices): soup adapts decoder-layer projections only");
    }
    let n = name.strip_prefix("base_model.model.").unwrap_or(name);
    let is_a = if n.contains(".lora_A.") {
        true
    } else if n.contains(".lora_B.") {
        false
    } else {
        return refuse("not a lora_A/lora_B factor that soup knows: it would be ignored, so the adapter is refused rather than applied in part");
    };
    if n.ends_with(".bias") {
        return refuse(
            "a bias on a LoRA factor (lora_bias): soup's LoRA has none and would drop it",
        );
    }
    if !n.ends_with(".weight") {
        return refuse("a LoRA factor's name must end in .weight");
    }
    let parts: Vec<&str> = n.split('.').collect();
    let Some(pos) = parts.iter().position(|p| *p == "layers") else {
        return refuse("soup adapts decoder-layer projections only (not embeddings or lm_head)");
    };
    if pos != 1 || parts[0] != "model" {
        return refuse("expected model.layers.N...: soup adapts Llama-family decoder layers only");
    }
    let layer = parts
        .get(pos + 1)
        .and_then(|s| s.parse::<usize>().ok())
        .ok_or_else(|| CoreError::tensor(name, "no layer index after `layers`"))?;
    let block = parts
        .get(pos + 2)
        .ok_or_else(|| CoreError::tensor(name, "no block name"))?;
    let module = parts
        .get(pos + 3)
        .ok_or_else(|| CoreError::tensor(name, "no projection name"))
        .and_then(|m| Module::parse(m).map_err(|e| CoreError::tensor(name, e.to_string())))?;
    if *block != module.block() {
        return Err(CoreError::tensor(
            name,
            format!(
                "{} lives in {}, not {block}",
                module.hf_name(),
                module.block()
            ),
        ));
    }
    // lora_A.weight, or lora_A.<adapter name>.weight as PEFT's state dicts name them.
    let rest = parts.len() - (pos + 4);
    if rest != 2 && rest != 3 {
        return refuse("expected lora_A.weight or lora_A.<adapter>.weight after the projection");
    }
    Ok(TensorKind::Factor(layer, module, is_a))
}

fn full_module_name(layer: usize, m: Module) -> String {
    format!("model.layers.{layer}.{}.{}", m.block(), m.hf_name())
}

/// PEFT's `get_pattern_key`: the first pattern that matches the end of the module's name.
/// Values are checked when the config is read ([`PeftSettings::parse`]).
fn pattern_value(patterns: &serde_json::Map<String, Value>, module_name: &str) -> Option<f64> {
    for (key, v) in patterns {
        // Keys were compiled once in `PeftSettings::parse`, so this cannot fail there.
        let Ok(re) = pattern_regex(key) else {
            continue;
        };
        if re.is_match(module_name) {
            return v.as_f64();
        }
    }
    None
}

fn pattern_regex(key: &str) -> std::result::Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!(r"^(.*\.)?({key})$"))
}

/// What soup does with each field of PEFT's `LoraConfig` (PEFT 0.21). Fields not listed are
/// refused unless they hold an empty value (null, false, {}, [], ""), since soup cannot know
/// whether a field it has never seen changes what the adapter computes.
enum Field {
    /// Bookkeeping, training-only or initialization-only: no effect on the adapter's output.
    Harmless,
    /// Read and applied exactly (r, lora_alpha, use_rslora, the patterns, ...).
    Supported,
    /// A feature soup does not implement: refused unless the field holds its default (an
    /// empty value, or `default` when given).
    Unsupported {
        feature: &'static str,
        default: Option<fn(&Value) -> bool>,
    },
}

fn field_rule(name: &str) -> Option<Field> {
    use Field::*;
    let unsupported = |feature| Unsupported {
        feature,
        default: None,
    };
    Some(match name {
        "peft_type"
        | "task_type"
        | "peft_version"
        | "revision"
        | "inference_mode"
        | "auto_mapping"
        | "layers_pattern"
        | "qalora_group_size"
        | "megatron_core"
        | "ensure_weight_tying"
        | "loftq_config"
        | "eva_config"
        | "corda_config" => Harmless,
        // PEFT resets fan_in_fan_out to false for nn.Linear, which every Llama projection is;
        // the factors' shapes are checked against the model either way.
        "fan_in_fan_out" => Harmless,
        "lora_dropout"
        | "base_model_name_or_path"
        | "r"
        | "lora_alpha"
        | "use_rslora"
        | "rank_pattern"
        | "alpha_pattern"
        | "target_modules"
        | "exclude_modules"
        | "layers_to_transform"
        | "init_lora_weights" => Supported,
        "use_dora" => unsupported("DoRA (use_dora)"),
        "lora_bias" => unsupported("a bias on lora_B (lora_bias)"),
        "bias" => Unsupported {
            feature: "trained biases of the base model (bias other than \"none\")",
            default: Some(|v| v.is_null() || v.as_str() == Some("none")),
        },
        "modules_to_save" => {
            unsupported("modules_to_save (full copies of modules, which soup would drop)")
        }
        "trainable_token_indices" => unsupported("trainable tokens (trainable_token_indices)"),
        "layer_replication" => unsupported("layer replication (layer_replication)"),
        "use_qalora" => unsupported("QA-LoRA (use_qalora)"),
        "megatron_config" => unsupported("Megatron parallel layers (megatron_config)"),
        "alora_invocation_tokens" => unsupported("activated LoRA (alora_invocation_tokens)"),
        "arrow_config" => unsupported("Arrow routing (arrow_config)"),
        "target_parameters" => unsupported("LoRA on parameters (target_parameters)"),
        "use_bdlora" => unsupported("BD-LoRA (use_bdlora)"),
        "velora_config" => unsupported("VeLoRA (velora_config)"),
        "monteclora_config" => unsupported("MonteCLoRA (monteclora_config)"),
        "kasa_config" => unsupported("KaSA (kasa_config)"),
        "lora_ga_config" => unsupported("LoRA-GA (lora_ga_config)"),
        // Very old PEFT configs.
        "enable_lora" => unsupported("merged QKV LoRA (enable_lora)"),
        "merge_weights" => Harmless,
        _ => return None,
    })
}

/// null, false, 0-free empties: what an unused optional field holds.
fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// An `adapter_config.json` read and checked: every field soup does not apply exactly is
/// refused by name before a tensor is read.
#[derive(Debug)]
struct PeftSettings {
    r: usize,
    alpha: f64,
    use_rslora: bool,
    dropout: f64,
    /// None when the config names none (PEFT writes null for a model built from a config).
    base_model: Option<String>,
    rank_pattern: serde_json::Map<String, Value>,
    alpha_pattern: serde_json::Map<String, Value>,
    layers_to_transform: Option<Vec<usize>>,
    targets: Targets,
    exclude: Targets,
}

/// PEFT's `target_modules`/`exclude_modules`: a regex matched against the whole module name,
/// or names matched against its end; `all-linear` takes every projection.
#[derive(Debug)]
enum Targets {
    Any,
    Regex(regex::Regex),
    Names(Vec<String>),
}

impl Targets {
    fn parse(field: &str, v: Option<&Value>, empty: Targets) -> std::result::Result<Self, String> {
        match v {
            None | Some(Value::Null) => Ok(empty),
            Some(Value::String(s)) if s == "all-linear" => Ok(Targets::Any),
            Some(Value::String(s)) => regex::Regex::new(&format!("^(?:{s})$"))
                .map(Targets::Regex)
                .map_err(|e| format!("`{field}` {s:?} is not a valid regular expression ({e})")),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("`{field}` must list module names, found {x}"))
                })
                .collect::<std::result::Result<_, _>>()
                .map(Targets::Names),
            Some(other) => Err(format!(
                "`{field}` must be a list of module names or a regular expression, found {other}"
            )),
        }
    }

    fn selects(&self, module_name: &str) -> bool {
        match self {
            Targets::Any => true,
            Targets::Regex(re) => re.is_match(module_name),
            Targets::Names(ns) => ns
                .iter()
                .any(|n| module_name == n || module_name.ends_with(&format!(".{n}"))),
        }
    }
}

impl PeftSettings {
    /// Errors are messages about one named field; the caller adds the file.
    fn parse(cfg: &Value) -> std::result::Result<Self, String> {
        let obj = cfg
            .as_object()
            .ok_or("must be a JSON object of LoRA settings")?;
        for (k, v) in obj {
            match field_rule(k) {
                Some(Field::Harmless) | Some(Field::Supported) => {}
                Some(Field::Unsupported { feature, default }) => {
                    let is_default = default.map(|d| d(v)).unwrap_or_else(|| is_empty_value(v));
                    if !is_default {
                        return Err(format!(
                            "uses {feature} (`{k}`: {v}), which soup does not implement: applying it as plain LoRA would compute a different adapter, so it is refused"
                        ));
                    }
                }
                None if is_empty_value(v) => {}
                None => {
                    return Err(format!(
                        "field `{k}` ({v}) is not a LoRA setting soup knows: it may change what the adapter computes, so soup refuses it rather than guess"
                    ))
                }
            }
        }
        if let Some(t) = obj.get("peft_type") {
            if t.as_str() != Some("LORA") {
                return Err(format!("peft_type {t} is not LORA"));
            }
        }
        if let Some(init) = obj.get("init_lora_weights") {
            match init {
                Value::Null | Value::Bool(_) => {}
                Value::String(s) if matches!(s.as_str(), "gaussian" | "eva") => {}
                Value::String(s) => {
                    return Err(format!(
                        "`init_lora_weights` is {s:?}: an initialization soup does not know or one that changes the base model's weights (PiSSA, OLoRA, LoftQ, CorDA...); save it with PEFT's path_initial_model_for_weight_conversion to get a plain LoRA"
                    ))
                }
                other => return Err(format!("`init_lora_weights` {other} is not a boolean or a name")),
            }
        }
        let r = match obj.get("r") {
            None => 8,
            Some(v) => match v.as_u64() {
                Some(r) if r > 0 => r as usize,
                _ => {
                    return Err(format!(
                        "`r` is {v}: it must be a whole number of at least 1"
                    ))
                }
            },
        };
        let alpha = match obj.get("lora_alpha") {
            None => 8.0,
            Some(v) => positive_number("lora_alpha", v)?,
        };
        let use_rslora = match obj.get("use_rslora") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => return Err(format!("`use_rslora` is {v}: it must be true or false")),
        };
        // Training-only: any number is harmless to what the adapter computes.
        let dropout = match obj.get("lora_dropout") {
            None | Some(Value::Null) => 0.0,
            Some(v) => v
                .as_f64()
                .ok_or_else(|| format!("`lora_dropout` is {v}: it must be a number"))?,
        };
        let base_model = match obj.get("base_model_name_or_path") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => {
                return Err(format!(
                    "`base_model_name_or_path` is {v}: it must be a name or null"
                ))
            }
        };
        let pattern = |field: &str| -> std::result::Result<serde_json::Map<String, Value>, String> {
            match obj.get(field) {
                None | Some(Value::Null) => Ok(Default::default()),
                Some(Value::Object(m)) => {
                    for (key, v) in m {
                        pattern_regex(key).map_err(|e| {
                            format!("`{field}` key {key:?} is not a valid regular expression ({e})")
                        })?;
                        if field == "rank_pattern" {
                            if v.as_u64().is_none_or(|r| r == 0) {
                                return Err(format!(
                                    "`rank_pattern` gives {key:?} rank {v}: it must be a whole number of at least 1"
                                ));
                            }
                        } else {
                            positive_number(&format!("alpha_pattern {key:?}"), v)?;
                        }
                    }
                    Ok(m.clone())
                }
                Some(v) => Err(format!("`{field}` is {v}: it must be an object")),
            }
        };
        let rank_pattern = pattern("rank_pattern")?;
        let alpha_pattern = pattern("alpha_pattern")?;
        let layers_to_transform = match obj.get("layers_to_transform") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let list: Vec<&Value> = match v {
                    Value::Array(a) => a.iter().collect(),
                    one => vec![one],
                };
                Some(
                    list.iter()
                        .map(|x| {
                            x.as_u64().map(|l| l as usize).ok_or_else(|| {
                                format!("`layers_to_transform` is {v}: it must list layer numbers")
                            })
                        })
                        .collect::<std::result::Result<_, _>>()?,
                )
            }
        };
        let targets = Targets::parse("target_modules", obj.get("target_modules"), Targets::Any)?;
        let exclude = Targets::parse(
            "exclude_modules",
            obj.get("exclude_modules"),
            Targets::Names(Vec::new()),
        )?;
        Ok(PeftSettings {
            r,
            alpha,
            use_rslora,
            dropout,
            base_model,
            rank_pattern,
            alpha_pattern,
            layers_to_transform,
            targets,
            exclude,
        })
    }

    /// Why PEFT would not put a LoRA on this module, if it would not (its factors in the file
    /// would then be ignored by PEFT, and applying them would compute something else).
    fn not_targeted(&self, layer: usize, module_name: &str) -> Option<String> {
        if let Some(ls) = &self.layers_to_transform {
            if !ls.contains(&layer) {
                return Some(format!(
                    "layer {layer} is not in layers_to_transform {ls:?}"
                ));
            }
        }
        if !self.targets.selects(module_name) {
            return Some("target_modules does not select it".into());
        }
        if self.exclude.selects(module_name) {
            return Some("exclude_modules excludes it".into());
        }
        None
    }
}

fn positive_number(field: &str, v: &Value) -> std::result::Result<f64, String> {
    match v.as_f64() {
        Some(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!(
            "`{field}` is {v}: it must be a positive number (the LoRA update is scaled by alpha / r)"
        )),
    }
}

/// Loads a PEFT adapter directory onto `device`, checking everything that can be checked
/// without the base model: the config's fields (see [`field_rule`]), every tensor's name,
/// shape, rank (against `r` and `rank_pattern`) and finiteness, and that each projection's
/// factors agree in size across layers. [`LoraAdapter::check_shapes`] checks them against a
/// model. `meta.base_model` is empty when the config names none.
pub fn load_peft(dir: &Path, device: &Device) -> Result<LoraAdapter> {
    let cfg_path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| CoreError::io(&cfg_path, e))?;
    let cfg: Value = serde_json::from_str(&text)
        .map_err(|e| CoreError::bad_file(&cfg_path, format!("not valid JSON: {e}")))?;
    let set = PeftSettings::parse(&cfg).map_err(|m| CoreError::bad_file(&cfg_path, m))?;

    let w_path = dir.join(WEIGHTS_FILE);
    if !w_path.exists() {
        return Err(CoreError::bad_file(
            &w_path,
            "missing (soup reads safetensors adapters; convert a .bin with PEFT first)",
        ));
    }
    let tensors = candle_core::safetensors::load(&w_path, device)
        .map_err(|e| CoreError::bad_file(&w_path, e.to_string()))?;
    let in_file = |e: CoreError| match e {
        CoreError::Tensor { name, message } => {
            CoreError::bad_file(&w_path, format!("tensor {name}: {message}"))
        }
        other => other,
    };
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    // Per (layer, projection): the A and B factors found so far, with their tensor names.
    type Half = Option<(String, Tensor)>;
    let mut halves: BTreeMap<(usize, Module), (Half, Half)> = BTreeMap::new();
    for name in names {
        let t = &tensors[name];
        let TensorKind::Factor(layer, m, is_a) = parse_tensor_name(name).map_err(in_file)?;
        if !t.dtype().is_float() {
            return Err(in_file(CoreError::tensor(
                name,
                format!("has dtype {:?}: LoRA factors are floats", t.dtype()),
            )));
        }
        if t.rank() != 2 {
            return Err(in_file(CoreError::tensor(
                name,
                format!("expected a matrix, got shape {:?}", t.dims()),
            )));
        }
        let bad = crate::model::finite::non_finite(t)?;
        if !bad.is_clean() {
            return Err(in_file(CoreError::tensor(
                name,
                format!(
                    "holds {}: the adapter is damaged or was saved from a diverged run, and every output computed with it would be NaN",
                    bad.describe()
                ),
            )));
        }
        let module_name = full_module_name(layer, m);
        if let Some(why) = set.not_targeted(layer, &module_name) {
            return Err(in_file(CoreError::tensor(
                name,
                format!("PEFT would not load it ({why}): the file and its config disagree"),
            )));
        }
        let e = halves.entry((layer, m)).or_default();
        let slot = if is_a { &mut e.0 } else { &mut e.1 };
        if let Some((other, _)) = slot {
            return Err(in_file(CoreError::tensor(
                name,
                format!("is the same factor as {other}: the file holds two adapters' weights"),
            )));
        }
        *slot = Some((name.clone(), t.to_dtype(DType::F32)?));
    }
    if halves.is_empty() {
        return Err(CoreError::bad_file(
            &w_path,
            "holds no lora_A/lora_B tensors",
        ));
    }
    let mut pairs = BTreeMap::new();
    // (in, out) of each projection's first pair, which every layer's must match.
    let mut sizes: BTreeMap<Module, (usize, usize, String)> = BTreeMap::new();
    for ((layer, m), (a, b)) in halves {
        let name = full_module_name(layer, m);
        let (Some((a_name, a)), Some((b_name, b))) = (a, b) else {
            return Err(CoreError::bad_file(
                &w_path,
                format!("{name} has only one of lora_A and lora_B"),
            ));
        };
        let (rank, a_in) = a.dims2()?;
        let (b_out, b_rank) = b.dims2()?;
        if rank == 0 {
            return Err(CoreError::bad_file(
                &w_path,
                format!("tensor {a_name} has rank 0 (shape {:?})", a.dims()),
            ));
        }
        if b_rank != rank {
            return Err(CoreError::bad_file(
                &w_path,
                format!("tensor {b_name}: rank {b_rank} does not match {a_name}'s rank {rank}"),
            ));
        }
        let (want, from) = match pattern_value(&set.rank_pattern, &name) {
            Some(r) => (r as usize, "rank_pattern"),
            None => (set.r, "r"),
        };
        if rank != want {
            return Err(CoreError::bad_file(
                &w_path,
                format!(
                    "tensor {a_name} has rank {rank} but the config's `{from}` says {want} for {name}: the config and the weights disagree"
                ),
            ));
        }
        match sizes.get(&m) {
            Some((i, o, first)) if (*i, *o) != (a_in, b_out) => {
                return Err(CoreError::bad_file(
                    &w_path,
                    format!(
                        "{name} maps {a_in} -> {b_out} features but {first} maps {i} -> {o}: every layer's {} has one shape",
                        m.hf_name()
                    ),
                ));
            }
            Some(_) => {}
            None => {
                sizes.insert(m, (a_in, b_out, name.clone()));
            }
        }
        let a_alpha = pattern_value(&set.alpha_pattern, &name).unwrap_or(set.alpha);
        pairs.insert(
            (layer, m),
            LoraPair {
                a,
                b,
                scale: lora_scale(a_alpha, rank, set.use_rslora),
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
            base_model: set.base_model.unwrap_or_default(),
            rank: set.r,
            alpha: set.alpha,
            use_rslora: set.use_rslora,
            dropout: set.dropout,
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
        let k = parse_tensor_name("base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight")
            .unwrap();
        assert_eq!(k, TensorKind::Factor(3, Module::Q, true));
        let k = parse_tensor_name("model.layers.0.mlp.down_proj.lora_B.default.weight").unwrap();
        assert_eq!(k, TensorKind::Factor(0, Module::Down, false));
        for (bad, why) in [
            ("model.embed_tokens.weight", "not a lora_A/lora_B factor"),
            (
                "base_model.model.lm_head.lora_A.weight",
                "decoder-layer projections only",
            ),
            (
                "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector",
                "DoRA",
            ),
            (
                "base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias",
                "lora_bias",
            ),
            (
                "base_model.model.lm_head.modules_to_save.default.weight",
                "modules_to_save",
            ),
            (
                "base_model.model.model.layers.0.mlp.q_proj.lora_A.weight",
                "lives in self_attn",
            ),
            (
                "base_model.model.model.layers.x.mlp.up_proj.lora_A.weight",
                "layer index",
            ),
            (
                "base_model.model.transformer.layers.0.mlp.up_proj.lora_A.weight",
                "model.layers",
            ),
        ] {
            let err = parse_tensor_name(bad).unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn alpha_pattern_matches_module_suffix() {
        let p = json!({"layers.1.self_attn.q_proj": 4.0});
        let p = p.as_object().unwrap();
        assert_eq!(
            pattern_value(p, "model.layers.1.self_attn.q_proj"),
            Some(4.0)
        );
        assert_eq!(pattern_value(p, "model.layers.11.self_attn.q_proj"), None);
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

    /// A valid two-layer PEFT adapter on q_proj (8 -> 8) and down_proj (16 -> 8), rank 4, as
    /// PEFT writes it: the config and the tensors, to be spoiled one way at a time.
    fn valid_peft() -> (Value, HashMap<String, Tensor>) {
        let dev = Device::Cpu;
        let cfg = json!({
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": "tiny",
            "r": 4, "lora_alpha": 8, "lora_dropout": 0.05, "use_rslora": false,
            "target_modules": ["q_proj", "down_proj"], "rank_pattern": {}, "alpha_pattern": {},
            "bias": "none", "fan_in_fan_out": false, "init_lora_weights": true,
            "modules_to_save": null, "layers_to_transform": null, "use_dora": false,
            "lora_bias": false, "trainable_token_indices": null, "inference_mode": true,
            "peft_version": "0.21.2", "qalora_group_size": 16, "use_qalora": false,
        });
        let mut t = HashMap::new();
        for l in 0..2 {
            for (m, (out_f, in_f)) in [("self_attn.q_proj", (8, 8)), ("mlp.down_proj", (8, 16))] {
                let p = format!("base_model.model.model.layers.{l}.{m}");
                let a = Tensor::randn(0f32, 1., (4, in_f), &dev).unwrap();
                let b = Tensor::randn(0f32, 1., (out_f, 4), &dev).unwrap();
                t.insert(format!("{p}.lora_A.weight"), a);
                t.insert(format!("{p}.lora_B.weight"), b);
            }
        }
        (cfg, t)
    }

    fn write_peft(cfg: &Value, t: &HashMap<String, Tensor>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), cfg.to_string()).unwrap();
        candle_core::safetensors::save(t, dir.path().join(WEIGHTS_FILE)).unwrap();
        dir
    }

    fn load_err(cfg: &Value, t: &HashMap<String, Tensor>) -> String {
        let dir = write_peft(cfg, t);
        match load_peft(dir.path(), &Device::Cpu) {
            Ok(_) => panic!("loaded although it should be refused: {cfg}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_valid_adapter_loads_and_a_null_base_model_reads_as_none() {
        let (mut cfg, t) = valid_peft();
        let dir = write_peft(&cfg, &t);
        let a = load_peft(dir.path(), &Device::Cpu).unwrap();
        assert_eq!(a.pairs.len(), 4);
        assert_eq!(a.meta.base_model, "tiny");
        assert_eq!(a.get(1, Module::Down).unwrap().scale, 2.0);
        // What PEFT writes for a model built from a config.
        cfg["base_model_name_or_path"] = Value::Null;
        let dir = write_peft(&cfg, &t);
        assert_eq!(
            load_peft(dir.path(), &Device::Cpu).unwrap().meta.base_model,
            ""
        );
    }

    /// Every PEFT feature soup does not apply exactly is refused by name, never applied as
    /// plain LoRA; settings that do not change the output are accepted.
    #[test]
    fn unsupported_peft_features_are_refused_by_name() {
        let refused: &[(&str, Value, &str)] = &[
            ("use_dora", json!(true), "DoRA"),
            ("lora_bias", json!(true), "lora_bias"),
            ("bias", json!("all"), "bias"),
            ("bias", json!("lora_only"), "bias"),
            ("modules_to_save", json!(["lm_head"]), "modules_to_save"),
            (
                "trainable_token_indices",
                json!([3, 4]),
                "trainable_token_indices",
            ),
            ("layer_replication", json!([[0, 2]]), "layer_replication"),
            ("use_qalora", json!(true), "use_qalora"),
            ("megatron_config", json!({"x": 1}), "megatron_config"),
            (
                "alora_invocation_tokens",
                json!([5]),
                "alora_invocation_tokens",
            ),
            ("arrow_config", json!({"top_k": 2}), "arrow_config"),
            (
                "target_parameters",
                json!(["experts.w1"]),
                "target_parameters",
            ),
            ("use_bdlora", json!(true), "use_bdlora"),
            ("kasa_config", json!({}), ""),
            ("lora_ga_config", json!({"a": 1}), "lora_ga_config"),
            ("init_lora_weights", json!("pissa"), "init_lora_weights"),
            ("init_lora_weights", json!("olora"), "init_lora_weights"),
            ("init_lora_weights", json!("loftq"), "init_lora_weights"),
            ("init_lora_weights", json!(3), "init_lora_weights"),
            ("some_future_switch", json!(true), "some_future_switch"),
            ("some_future_scale", json!(0.5), "some_future_scale"),
            ("peft_type", json!("IA3"), "IA3"),
        ];
        for (field, value, named) in refused {
            let (mut cfg, t) = valid_peft();
            cfg[*field] = value.clone();
            let dir = write_peft(&cfg, &t);
            let res = load_peft(dir.path(), &Device::Cpu);
            if named.is_empty() {
                // An empty config object means the feature is off.
                assert!(res.is_ok(), "{field} = {value}: {:?}", res.err());
                continue;
            }
            let err = res
                .err()
                .unwrap_or_else(|| panic!("{field} = {value} was accepted"));
            let err = err.to_string();
            assert!(
                err.contains(named) && err.contains(CONFIG_FILE),
                "{field}: {err}"
            );
        }
        let accepted: &[(&str, Value)] = &[
            ("fan_in_fan_out", json!(true)),
            ("init_lora_weights", json!("gaussian")),
            ("init_lora_weights", json!(false)),
            ("loftq_config", json!({})),
            ("some_future_switch", json!(false)),
            ("some_future_list", json!(null)),
            ("modules_to_save", json!([])),
            ("bias", json!("none")),
            ("target_modules", json!("all-linear")),
            ("target_modules", json!(r".*\.(q_proj|down_proj)")),
            ("layers_to_transform", json!([0, 1])),
        ];
        for (field, value) in accepted {
            let (mut cfg, t) = valid_peft();
            cfg[*field] = value.clone();
            let dir = write_peft(&cfg, &t);
            if let Err(e) = load_peft(dir.path(), &Device::Cpu) {
                panic!("{field} = {value} refused: {e}");
            }
        }
    }

    /// `r`, `rank_pattern`, `lora_alpha`, `alpha_pattern` and the other settings are checked
    /// for type and range and against the tensors, naming the field.
    #[test]
    fn ranks_and_alphas_are_checked_against_the_tensors() {
        let cases: &[(&str, Value, &str)] = &[
            ("r", json!(0), "`r` is 0"),
            ("r", json!("four"), "`r` is \"four\""),
            ("r", json!(-4), "`r` is -4"),
            ("r", json!(4.5), "`r` is 4.5"),
            ("r", json!(8), "`r` says 8"),
            (
                "rank_pattern",
                json!({"layers.1.mlp.down_proj": 2}),
                "`rank_pattern` says 2",
            ),
            ("rank_pattern", json!({"down_proj": 0}), "rank_pattern"),
            (
                "rank_pattern",
                json!({"(": 4}),
                "not a valid regular expression",
            ),
            ("rank_pattern", json!([4]), "rank_pattern"),
            ("lora_alpha", json!(0), "`lora_alpha` is 0"),
            ("lora_alpha", json!(-16), "`lora_alpha` is -16"),
            ("lora_alpha", json!("16"), "`lora_alpha`"),
            ("alpha_pattern", json!({"q_proj": 0}), "alpha_pattern"),
            ("alpha_pattern", json!({"q_proj": -1.5}), "alpha_pattern"),
            ("use_rslora", json!("yes"), "use_rslora"),
            ("lora_dropout", json!("high"), "lora_dropout"),
            (
                "base_model_name_or_path",
                json!(7),
                "base_model_name_or_path",
            ),
            (
                "target_modules",
                json!(["v_proj"]),
                "target_modules does not select",
            ),
            ("target_modules", json!(7), "target_modules"),
            ("layers_to_transform", json!([0]), "layers_to_transform"),
            ("exclude_modules", json!(["q_proj"]), "exclude_modules"),
        ];
        for (field, value, named) in cases {
            let (mut cfg, t) = valid_peft();
            cfg[*field] = value.clone();
            let err = load_err(&cfg, &t);
            assert!(err.contains(named), "{field} = {value}: {err}");
        }
        // A correct rank_pattern is applied: layer 1's down_proj at rank 2.
        let (mut cfg, mut t) = valid_peft();
        cfg["rank_pattern"] = json!({"model.layers.1.mlp.down_proj": 2});
        let p = "base_model.model.model.layers.1.mlp.down_proj";
        let a = t[&format!("{p}.lora_A.weight")].narrow(0, 0, 2).unwrap();
        let b = t[&format!("{p}.lora_B.weight")].narrow(1, 0, 2).unwrap();
        t.insert(format!("{p}.lora_A.weight"), a.contiguous().unwrap());
        t.insert(format!("{p}.lora_B.weight"), b.contiguous().unwrap());
        let dir = write_peft(&cfg, &t);
        let ad = load_peft(dir.path(), &Device::Cpu).unwrap();
        assert_eq!(ad.get(1, Module::Down).unwrap().rank(), 2);
        assert_eq!(ad.get(1, Module::Down).unwrap().scale, 4.0);
        assert_eq!(ad.get(0, Module::Down).unwrap().scale, 2.0);
    }

    /// rsLoRA scales by alpha / sqrt(r) (PEFT's `LoraLayer.update_layer`): alpha 8 at rank 4
    /// is 4.0, not 2.0; with an alpha_pattern of 6 on q_proj, 3.0.
    #[test]
    fn rslora_scales_exactly_as_peft() {
        let (mut cfg, t) = valid_peft();
        cfg["use_rslora"] = json!(true);
        cfg["alpha_pattern"] = json!({"q_proj": 6});
        let dir = write_peft(&cfg, &t);
        let ad = load_peft(dir.path(), &Device::Cpu).unwrap();
        assert_eq!(ad.get(0, Module::Down).unwrap().scale, 4.0);
        assert_eq!(ad.get(1, Module::Q).unwrap().scale, 3.0);
    }

    /// Every tensor is a LoRA factor of a projection soup knows, of a consistent shape, and
    /// finite; otherwise the adapter is refused naming the tensor.
    #[test]
    fn tensors_are_checked_by_name_shape_and_value() {
        let dev = Device::Cpu;
        let q0 = "base_model.model.model.layers.0.self_attn.q_proj";
        type Spoil = Box<dyn Fn(&mut HashMap<String, Tensor>)>;
        let add = |name: &'static str, t: Tensor| -> Spoil {
            Box::new(move |m: &mut HashMap<String, Tensor>| {
                m.insert(name.to_string(), t.clone());
            })
        };
        let set = |name: String, t: Tensor| -> Spoil {
            Box::new(move |m: &mut HashMap<String, Tensor>| {
                m.insert(name.clone(), t.clone());
            })
        };
        let mut nan = vec![0.5f32; 32];
        nan[5] = f32::NAN;
        let mut inf = vec![0.5f32; 32];
        inf[31] = f32::NEG_INFINITY;
        let cases: Vec<(Spoil, &str)> = vec![
            (
                add(
                    "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector",
                    Tensor::ones(8, DType::F32, &dev).unwrap(),
                ),
                "DoRA",
            ),
            (
                add(
                    "base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias",
                    Tensor::ones(8, DType::F32, &dev).unwrap(),
                ),
                "lora_bias",
            ),
            (
                add(
                    "base_model.model.lm_head.modules_to_save.default.weight",
                    Tensor::ones((4, 8), DType::F32, &dev).unwrap(),
                ),
                "modules_to_save",
            ),
            (
                add(
                    "base_model.model.model.embed_tokens.weight",
                    Tensor::ones((4, 8), DType::F32, &dev).unwrap(),
                ),
                "model.embed_tokens.weight",
            ),
            (
                add(
                    "model.layers.0.self_attn.q_proj.lora_A.weight",
                    Tensor::ones((4, 8), DType::F32, &dev).unwrap(),
                ),
                "same factor",
            ),
            (
                set(
                    format!("{q0}.lora_A.weight"),
                    Tensor::from_vec(nan, (4, 8), &dev).unwrap(),
                ),
                "1 NaN",
            ),
            (
                set(
                    format!("{q0}.lora_B.weight"),
                    Tensor::from_vec(inf, (8, 4), &dev)
                        .unwrap()
                        .to_dtype(DType::BF16)
                        .unwrap(),
                ),
                "1 infinite",
            ),
            (
                set(
                    format!("{q0}.lora_A.weight"),
                    Tensor::ones(32, DType::F32, &dev).unwrap(),
                ),
                "expected a matrix",
            ),
            (
                set(
                    format!("{q0}.lora_B.weight"),
                    Tensor::ones((8, 3), DType::F32, &dev).unwrap(),
                ),
                "rank 3 does not match",
            ),
            (
                set(
                    format!("{q0}.lora_A.weight"),
                    Tensor::ones((4, 12), DType::F32, &dev).unwrap(),
                ),
                "every layer's q_proj has one shape",
            ),
            (
                set(
                    format!("{q0}.lora_A.weight"),
                    Tensor::ones((4, 8), DType::U8, &dev).unwrap(),
                ),
                "LoRA factors are floats",
            ),
            (
                Box::new(move |m: &mut HashMap<String, Tensor>| {
                    m.remove(&format!("{q0}.lora_B.weight"));
                }),
                "only one of lora_A and lora_B",
            ),
        ];
        for (i, (spoil, named)) in cases.into_iter().enumerate() {
            let (cfg, mut t) = valid_peft();
            spoil(&mut t);
            let err = load_err(&cfg, &t);
            assert!(
                err.contains(named) && err.contains(WEIGHTS_FILE),
                "case {i}: {err}"
            );
        }
    }
}
