//! What a job runs on: a loaded model with its tokenizer, found from whatever the user typed
//! (a stored model name, `default`, an HF directory or a GGUF file), adapters found by stored
//! name or PEFT directory, and text generation through evals' [`Generate`] trait.

use crate::error::{CoreError, Result};
use crate::generate::{
    common_prefix_len, generate_ids, generate_queue, PrefixCache, QueueOptions, SamplingConfig,
};
use crate::lora::peft::{self, load_peft};
use crate::lora::{AdapterStack, LoraAdapter};
use crate::model::load::load_hf_weights;
use crate::model::tokenizer::{ChatMessage, SoupTokenizer};
use crate::model::Llama;
use candle_core::Device;
use soup_evals::generate::truncate_at_stop;
use soup_evals::{
    Completion, GenSettings, Generate, GenerateError, OnDone, RefScore, StreamOptions,
    StreamRequest,
};
use soup_store::{AdapterRecord, Store};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The name the embedded default model is registered under.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

/// A model ready to run: decoder, tokenizer, and where it came from.
pub struct LoadedModel {
    /// The name adapters record as their base model.
    pub name: String,
    pub source: PathBuf,
    pub model: Llama,
    pub tokenizer: SoupTokenizer,
    /// The precision its frozen weights were loaded in.
    pub precision: crate::device::Precision,
    fingerprint: std::sync::OnceLock<String>,
}

impl LoadedModel {
    /// A content hash of the files the model was loaded from, computed once (see
    /// [`model_fingerprint`]).
    pub fn fingerprint(&self) -> Result<&str> {
        if let Some(f) = self.fingerprint.get() {
            return Ok(f);
        }
        let f = model_fingerprint(&self.source)?;
        Ok(self.fingerprint.get_or_init(|| f))
    }

    /// Whether prompts go through the chat template (instruct models have one).
    pub fn is_chat(&self) -> bool {
        self.tokenizer.has_chat_template()
    }

    /// Renders chat messages with the model's template, ready for generation.
    pub fn render_chat(&self, messages: &[ChatMessage]) -> Result<String> {
        self.tokenizer.apply_chat_template(messages, true)
    }

    /// Loads and checks an adapter (stored name or PEFT directory) against this model.
    pub fn adapter(&self, store: Option<&Store>, spec: &str) -> Result<LoraAdapter> {
        let a = resolve_adapter(store, spec, self.model.device())?;
        let shape = |m| self.model.projection_shape(m);
        a.check_shapes(self.model.layers.len(), &shape)?;
        Ok(a)
    }
}

/// Where a model spec points: an HF directory or a GGUF file, and the name to record.
pub fn locate_model(
    store: Option<&Store>,
    data_dir: &Path,
    spec: &str,
) -> Result<(String, PathBuf)> {
    let path = Path::new(spec);
    if path.exists() {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| spec.to_string());
        return Ok((name, path.to_path_buf()));
    }
    if spec == "default" || spec == DEFAULT_MODEL {
        let dir = crate::model::fetch::default_model_dir(data_dir);
        if !crate::model::fetch::is_fetched(data_dir) {
            return Err(CoreError::DefaultModelMissing { dir });
        }
        return Ok((DEFAULT_MODEL.to_string(), dir));
    }
    if let Some(store) = store {
        if let Some(rec) = store.get_model(spec)? {
            return Ok((rec.name, PathBuf::from(rec.path)));
        }
    }
    Err(CoreError::NotFound {
        kind: "model",
        name: format!("{spec:?}"),
        hint: "give a model name from `soup model list`, `default`, an HF directory or a GGUF file"
            .into(),
    })
}

/// A model's config from its files alone (an HF directory's `config.json`, a GGUF file's
/// metadata), without reading its weights: enough to check an adapter's shapes at import.
pub fn model_config_at(path: &Path) -> Result<crate::model::ModelConfig> {
    if path.is_file() {
        if path.extension().and_then(|e| e.to_str()) != Some("gguf") {
            return Err(CoreError::bad_file(
                path,
                "not a model: expected an HF directory or a .gguf file",
            ));
        }
        crate::model::gguf::read_config(path)
    } else {
        crate::model::ModelConfig::from_file(&path.join("config.json"))
    }
}

/// Checks that an adapter fits a model described by its config: every layer it targets
/// exists and every factor has the projection's sizes. An adapter made for another model
/// (a Qwen2 adapter on a Llama, a 7B adapter on a 135M) fails here, naming the projection.
pub fn check_adapter_fits(
    adapter: &LoraAdapter,
    cfg: &crate::model::ModelConfig,
    model: &str,
) -> Result<()> {
    adapter
        .check_shapes(cfg.num_hidden_layers, &|m| cfg.projection_shape(m))
        .map_err(|e| match e {
            CoreError::Adapter { adapter, message } => CoreError::Adapter {
                adapter,
                message: format!(
                    "{message} (checked against {model}: {}, {} layers, hidden size {})",
                    cfg.architecture, cfg.num_hidden_layers, cfg.hidden_size
                ),
            },
            other => other,
        })
}

/// The architecture a model name points to by its family (`Qwen/Qwen2-0.5B` -> Qwen2,
/// `HuggingFaceTB/SmolLM2-135M` -> Llama), when exactly one family's name is in it. Adapters
/// name their base model by hub id, which soup cannot open; the family in the name is what
/// still tells a Qwen2 adapter from a Llama one when their shapes happen to agree.
pub fn architecture_from_name(name: &str) -> Option<&'static str> {
    let lower = name.to_lowercase();
    let families: &[(&[&str], &str)] = &[
        (&["qwen"], "Qwen2ForCausalLM"),
        (&["mistral", "mixtral"], "MistralForCausalLM"),
        (&["llama", "smollm"], "LlamaForCausalLM"),
    ];
    let hits: Vec<&str> = families
        .iter()
        .filter(|(keys, _)| keys.iter().any(|k| lower.contains(k)))
        .map(|(_, arch)| *arch)
        .collect();
    match hits.as_slice() {
        [one] => Some(one),
        _ => None,
    }
}

/// Refuses an adapter whose own config names a base model of another architecture than the
/// model it is being placed on. `named_arch` is that base's architecture when soup can open
/// it, else the one its name implies ([`architecture_from_name`]).
pub fn check_adapter_architecture(
    adapter: &LoraAdapter,
    named_arch: Option<&str>,
    target: &crate::model::ModelConfig,
    target_name: &str,
) -> Result<()> {
    let named = adapter.meta.base_model.as_str();
    let Some(arch) = named_arch.or_else(|| architecture_from_name(named)) else {
        return Ok(());
    };
    if arch == target.architecture {
        return Ok(());
    }
    Err(CoreError::adapter(
        &adapter.name,
        format!(
            "it was made for {named:?} ({arch}) but {target_name} is a {}: an adapter only means something on the model it was trained on (if it really belongs to {target_name}, set base_model_name_or_path in its adapter_config.json)",
            target.architecture
        ),
    ))
}

/// Loads an HF directory or a GGUF file with its frozen weights in `precision`.
pub fn load_model_at(
    name: &str,
    path: &Path,
    device: &Device,
    precision: crate::device::Precision,
) -> Result<LoadedModel> {
    let (model, tokenizer) = if path.is_file() {
        if path.extension().and_then(|e| e.to_str()) != Some("gguf") {
            return Err(CoreError::bad_file(
                path,
                "not a model: expected an HF directory or a .gguf file",
            ));
        }
        let g = crate::model::gguf::load_gguf(path, device)?;
        (
            Llama::from_tensors(g.config, g.tensors, device)?,
            g.tokenizer,
        )
    } else {
        (
            load_hf_weights(path, device)?,
            SoupTokenizer::from_hf_dir(path)?,
        )
    };
    let model = model.with_precision(precision)?;
    if tokenizer.vocab_size() > model.cfg.vocab_size {
        return Err(CoreError::bad_file(
            path,
            format!(
                "the tokenizer has {} tokens but the model's vocabulary is {}",
                tokenizer.vocab_size(),
                model.cfg.vocab_size
            ),
        ));
    }
    Ok(LoadedModel {
        name: name.to_string(),
        source: path.to_path_buf(),
        model,
        tokenizer,
        precision,
        fingerprint: std::sync::OnceLock::new(),
    })
}

/// A model's tokenizer (with its chat template) without its weights: what rendering prompts
/// for a remote server needs. A GGUF file keeps its tokenizer among its tensors, so it is
/// loaded whole.
pub fn load_tokenizer_at(path: &Path) -> Result<SoupTokenizer> {
    if path.is_file() {
        return Ok(
            load_model_at("gguf", path, &Device::Cpu, crate::device::Precision::F32)?.tokenizer,
        );
    }
    SoupTokenizer::from_hf_dir(path)
}

/// A sha256 over a model's content: the GGUF file, or an HF directory's files (config,
/// tokenizer, weights; in name order, each name hashed with its bytes). The generation cache
/// keys answers by it, so a model replaced at the same path never serves stale answers.
pub fn model_fingerprint(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let files: Vec<PathBuf> = if path.is_file() {
        vec![path.to_path_buf()]
    } else {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| CoreError::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| matches!(e, "json" | "safetensors" | "model" | "jinja"))
            })
            .collect();
        files.sort();
        files
    };
    let mut hasher = Sha256::new();
    for f in &files {
        if let Some(n) = f.file_name() {
            hasher.update(n.to_string_lossy().as_bytes());
        }
        let mut file = std::fs::File::open(f).map_err(|e| CoreError::io(f, e))?;
        std::io::copy(&mut file, &mut hasher).map_err(|e| CoreError::io(f, e))?;
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// Where an adapter spec points, without loading it: a PEFT directory (None) or a stored
/// adapter (its record); neither is an error that says where adapters are listed.
pub fn locate_adapter(store: Option<&Store>, spec: &str) -> Result<Option<AdapterRecord>> {
    if Path::new(spec).join(peft::CONFIG_FILE).exists() {
        return Ok(None);
    }
    let Some(store) = store else {
        return Err(CoreError::adapter(spec, "no such PEFT directory"));
    };
    store
        .get_adapter(spec)
        .map_err(|e| CoreError::adapter(spec, e.to_string()))?
        .map(Some)
        .ok_or_else(|| {
            CoreError::adapter(
                spec,
                "neither a PEFT directory nor a stored adapter (see `soup adapter list`)",
            )
        })
}

/// Finds an adapter: a PEFT directory on disk, else a stored adapter by name.
pub fn resolve_adapter(store: Option<&Store>, spec: &str, device: &Device) -> Result<LoraAdapter> {
    let (Some(store), Some(rec)) = (store, locate_adapter(store, spec)?) else {
        return load_peft(Path::new(spec), device);
    };
    let bytes = store.adapter_blob(spec).map_err(|e| {
        if e.is_item_damage() {
            // Already names the adapter and says what to do; kept typed so callers that go
            // through many adapters (export) can skip this one and go on.
            CoreError::Store(e)
        } else {
            CoreError::adapter(spec, e.to_string())
        }
    })?;
    let config = rec
        .hyperparams
        .get("peft_config")
        .cloned()
        .ok_or_else(|| CoreError::adapter(spec, "stored without its PEFT config"))?;
    let mut adapter = peft::from_bytes(spec, &bytes, &config, device)?;
    // The record's base model is the one checked at import (the config may name none).
    if adapter.meta.base_model.is_empty() {
        adapter.meta.base_model = rec.base_model.clone();
    }
    Ok(adapter)
}

/// Whether a stop string shows in the decoded tail of the new tokens: the rule every
/// generation path uses (evaluation, `soup serve`), so a stop split across tokens is seen and
/// all paths end a row after the same token.
pub fn stop_in_tail(tok: &SoupTokenizer, new: &[u32], stops: &[String]) -> bool {
    if stops.is_empty() {
        return false;
    }
    let tail = &new[new.len().saturating_sub(16)..];
    match tok.decode(tail, false) {
        Ok(text) => stops
            .iter()
            .any(|s| !s.is_empty() && text.contains(s.as_str())),
        Err(_) => false,
    }
}

/// Generation through a loaded model and a fixed adapter stack: evals' view of the model.
pub struct TextGenerator<'a> {
    pub model: &'a LoadedModel,
    pub stack: &'a AdapterStack,
    /// Called after each batch with (prompts done, seconds): progress for long evaluations.
    pub on_batch: Option<&'a mut dyn FnMut(usize, f64)>,
}

impl TextGenerator<'_> {
    /// Generates for already-rendered prompt strings; returns only the new text of each.
    pub fn complete(
        &mut self,
        prompts: &[String],
        settings: &GenSettings,
    ) -> Result<Vec<Completion>> {
        let t0 = Instant::now();
        let tok = &self.model.tokenizer;
        let encoded: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| tok.encode(p, true))
            .collect::<Result<_>>()?;
        let cfg = SamplingConfig {
            max_new_tokens: settings.max_new_tokens,
            temperature: settings.temperature,
            top_p: (settings.top_p < 1.0).then_some(settings.top_p),
            seed: settings.seed,
        };
        // Stop strings are checked on the decoded tail, so a stop split across tokens is seen.
        let stops = &settings.stop;
        let mut should_stop = |_row: usize, new: &[u32]| -> bool { stop_in_tail(tok, new, stops) };
        let outs = generate_ids(
            &self.model.model,
            self.stack,
            &encoded,
            &cfg,
            &tok.eos_ids(),
            tok.pad_id(),
            &mut should_stop,
        )?;
        let mut completions = Vec::with_capacity(outs.len());
        for (ids, prompt) in outs.iter().zip(&encoded) {
            let text = tok.decode(ids, true)?;
            completions.push(Completion {
                text: truncate_at_stop(&text, stops).to_string(),
                prompt_tokens: prompt.len(),
                output_tokens: ids.len(),
                cached: false,
            });
        }
        if let Some(cb) = self.on_batch.as_mut() {
            cb(prompts.len(), t0.elapsed().as_secs_f64());
        }
        Ok(completions)
    }
}

impl TextGenerator<'_> {
    /// Decodes a queue of questions (see [`Generate::generate_stream`]). `known[i]`, when
    /// given, is question i's completion already (from a cache): it is not generated again,
    /// only its reference is scored. The prompts' shared prefix is prefilled once (with
    /// `opts.prefix_cache`) and serves both generation and the references' scores (scored
    /// only with `score_refs`); a generated question's reference is scored on its prompt's
    /// prefill, so its prompt runs once.
    pub fn stream(
        &mut self,
        requests: &[StreamRequest],
        known: &[Option<Completion>],
        score_refs: bool,
        settings: &GenSettings,
        opts: &StreamOptions,
        on_done: &mut OnDone<'_>,
    ) -> std::result::Result<(), GenerateError> {
        let model = self.model;
        let stack = self.stack;
        let tok = &model.tokenizer;
        let err = GenerateError::new;
        let encoded: Vec<Vec<u32>> = requests
            .iter()
            .map(|r| tok.encode(&r.prompt, true))
            .collect::<Result<_>>()
            .map_err(err)?;
        let prefix = if opts.prefix_cache {
            let views: Vec<&[u32]> = encoded.iter().map(|e| e.as_slice()).collect();
            let n = common_prefix_len(&views);
            if n > 0 {
                let t0 = Instant::now();
                let p = PrefixCache::build(&model.model, stack, &encoded[0][..n]).map_err(err)?;
                tracing::debug!(
                    "prefilled a shared prefix of {n} tokens in {:.2} s",
                    t0.elapsed().as_secs_f64()
                );
                Some(p)
            } else {
                None
            }
        } else {
            None
        };
        let batch = opts.batch_size.max(1);
        let mut scorer = RefScorer {
            model,
            stack,
            prefix: prefix.as_ref(),
            requests,
            // Only cached answers' references are the scorer's: the decoder scores the others.
            scored: known
                .iter()
                .map(|k| {
                    if score_refs && k.is_some() {
                        None
                    } else {
                        Some(None)
                    }
                })
                .collect(),
            batch,
        };
        // Questions answered already: only their references are scored.
        let mut todo = Vec::with_capacity(requests.len());
        for (i, k) in known.iter().enumerate() {
            match k {
                Some(c) => {
                    let r = scorer.score(i).map_err(err)?;
                    if !on_done(i, c.clone(), r)? {
                        return Ok(());
                    }
                }
                None => todo.push(i),
            }
        }
        let prompts: Vec<Vec<u32>> = todo.iter().map(|&i| encoded[i].clone()).collect();
        // The others' references are scored by the decoder, on their prompts' prefill.
        let references: Vec<Option<Vec<u32>>> = todo
            .iter()
            .map(|&i| match &requests[i].reference {
                Some(a) if score_refs => tok.encode(a, false).map(Some),
                _ => Ok(None),
            })
            .collect::<Result<_>>()
            .map_err(err)?;
        let cfg = SamplingConfig {
            max_new_tokens: settings.max_new_tokens,
            temperature: settings.temperature,
            top_p: (settings.top_p < 1.0).then_some(settings.top_p),
            seed: settings.seed,
        };
        let qopts = QueueOptions {
            max_batch: batch,
            refill: opts.continuous,
            prefix: prefix.as_ref(),
            references: Some(&references),
        };
        // Stop strings are checked on the decoded tail, so a stop split across tokens is seen.
        let mut should_stop =
            |row: usize, new: &[u32]| -> bool { stop_in_tail(tok, new, &requests[todo[row]].stop) };
        let mut failed: Option<GenerateError> = None;
        let mut t_last = Instant::now();
        let on_batch = &mut self.on_batch;
        let mut finished = |row: usize, ids: Vec<u32>, r: Option<RefScore>| -> Result<bool> {
            let i = todo[row];
            let text = tok.decode(&ids, true)?;
            let c = Completion {
                text: truncate_at_stop(&text, &requests[i].stop).to_string(),
                prompt_tokens: encoded[i].len(),
                output_tokens: ids.len(),
                cached: false,
            };
            if let Some(cb) = on_batch.as_mut() {
                cb(1, t_last.elapsed().as_secs_f64());
                t_last = Instant::now();
            }
            match on_done(i, c, r) {
                Ok(go) => Ok(go),
                Err(e) => {
                    failed = Some(e);
                    Ok(false)
                }
            }
        };
        generate_queue(
            &model.model,
            stack,
            &prompts,
            &cfg,
            &qopts,
            &tok.eos_ids(),
            tok.pad_id(),
            &mut should_stop,
            &mut finished,
        )
        .map_err(err)?;
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Scores the references of a stream's questions answered already (from the cache) lazily, a
/// batch at a time in queue order, after the shared prefix: the question that needs its score
/// first, with the next unscored ones.
struct RefScorer<'a> {
    model: &'a LoadedModel,
    stack: &'a AdapterStack,
    prefix: Option<&'a PrefixCache>,
    requests: &'a [StreamRequest],
    /// Outer None: not scored yet.
    scored: Vec<Option<Option<RefScore>>>,
    batch: usize,
}

impl RefScorer<'_> {
    fn score(&mut self, i: usize) -> Result<Option<RefScore>> {
        if let Some(done) = self.scored.get(i).copied().flatten() {
            return Ok(done);
        }
        // i and the next unscored questions that have a reference.
        let mut group = Vec::with_capacity(self.batch);
        for j in i..self.requests.len() {
            if group.len() >= self.batch {
                break;
            }
            if self.scored[j].is_some() {
                continue;
            }
            if self.requests[j].reference.is_none() {
                self.scored[j] = Some(None);
                continue;
            }
            group.push(j);
        }
        let pairs: Vec<(String, String)> = group
            .iter()
            .filter_map(|&j| {
                let r = &self.requests[j];
                r.reference.clone().map(|a| (r.prompt.clone(), a))
            })
            .collect();
        if !pairs.is_empty() {
            let got = crate::engine::loglik::reference_logprobs_after(
                self.model,
                self.stack,
                self.prefix,
                &pairs,
                self.batch,
            )?;
            for (j, v) in group.iter().zip(got) {
                self.scored[*j] = Some(v);
            }
        }
        Ok(self.scored.get(i).copied().flatten().flatten())
    }
}

impl Generate for TextGenerator<'_> {
    fn generate(
        &mut self,
        prompts: &[String],
        settings: &GenSettings,
    ) -> std::result::Result<Vec<Completion>, GenerateError> {
        self.complete(prompts, settings).map_err(GenerateError::new)
    }

    fn generate_stream(
        &mut self,
        requests: &[StreamRequest],
        settings: &GenSettings,
        opts: &StreamOptions,
        on_done: &mut OnDone<'_>,
    ) -> Option<std::result::Result<(), GenerateError>> {
        // As `generate` does, without reference scores (see `reference_logprobs`).
        let known = vec![None; requests.len()];
        Some(self.stream(requests, &known, false, settings, opts, on_done))
    }
}
