//! The job runners: training a LoRA, learning CAT weights, merging, evaluating. Each writes
//! its results to the store as it goes and returns a JSON summary (the `--json` line).

use super::data::{mix_counts, read, sample};
use super::spec::{CatJob, DataSource, EvalJob, EvalTarget, JobSpec, MergeJob, TrainJob};
use super::{Engine, JobUpdate};
use crate::error::{CoreError, Result};
use crate::lora::{peft, AdapterStack, LoraAdapter};
use crate::merge::{self, MajoritySign, MergeKind, MergeMethod, MergeOptions};
use crate::runtime::{LoadedModel, TextGenerator};
use crate::train::batch::eval_loss;
use crate::train::cat::HeldOutLoss;
use crate::train::data::{instruction_seqs, text_seqs, Formatting};
use crate::train::trainer::clear_checkpoint;
use crate::train::Trainable;
use crate::train::{
    train_loop, CatMovement, CatTrainable, JobControl, LoopConfig, LoraTrainable, TrainEvent,
    TrainSeq, TrainSummary,
};
use serde_json::json;
use soup_evals::datasets::{detect_format, parse_instructions, Format};
use soup_evals::driver::{EvalOptions, EvalRun, QuestionRecord as EvalRecord};
use soup_evals::prompts::{ChatMessage as EvalChat, Prompt, PromptStyle};
use soup_evals::sandbox::{Sandbox, SandboxConfig};
use soup_evals::task::PromptOptions;
use soup_evals::{Completion, GenSettings, Generate, GenerateError, RefScore};
use soup_store::{
    AdapterMethod, AdapterRecord, CatWeights, ModuleSpec, RecordQuery, RunId, Score, StoredQuestion,
};

/// What a finished job reports: one JSON object (printed by `--json`).
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    pub summary: serde_json::Value,
}

type Emit<'a> = dyn FnMut(JobUpdate) + 'a;

pub(super) fn run_job(
    engine: &Engine,
    id: RunId,
    spec: &JobSpec,
    ctl: &JobControl,
    emit: &mut Emit,
) -> Result<RunOutcome> {
    match spec {
        JobSpec::Train(j) => run_train(engine, id, j, ctl, emit),
        JobSpec::Cat(j) => run_cat(engine, id, j, ctl, emit),
        JobSpec::Merge(j) => run_merge(engine, j, emit),
        JobSpec::Eval(j) => run_eval(engine, id, j, ctl, emit),
    }
}

/// Loads training sequences from every source, one list per source; `per_source` picks how
/// many of each.
#[allow(clippy::too_many_arguments)]
fn training_sets(
    engine: &Engine,
    model: &LoadedModel,
    sources: &[DataSource],
    fmt: &Formatting,
    chunk_tokens: usize,
    seed: u64,
    per_source: &dyn Fn(&[usize]) -> Result<Vec<usize>>,
    emit: &mut Emit,
) -> Result<Vec<Vec<TrainSeq>>> {
    let sets = source_seqs(engine, model, sources, fmt, chunk_tokens, emit)?;
    let sizes: Vec<usize> = sets.iter().map(|s| s.len()).collect();
    let counts = per_source(&sizes)?;
    Ok(sets
        .iter()
        .zip(counts)
        .enumerate()
        .map(|(i, (set, n))| sample(set, n.max(1), seed ^ i as u64))
        .collect())
}

/// Every source's sequences, one list per source, in file order.
fn source_seqs(
    engine: &Engine,
    model: &LoadedModel,
    sources: &[DataSource],
    fmt: &Formatting,
    chunk_tokens: usize,
    emit: &mut Emit,
) -> Result<Vec<Vec<TrainSeq>>> {
    let mut sets = Vec::new();
    for src in sources {
        let (path, text) = read(engine.data_dir(), src)?;
        let format = detect_format(&text).map_err(|e| CoreError::bad_file(&path, e))?;
        let seqs = if format == Format::ManualText {
            text_seqs(&model.tokenizer, &text, chunk_tokens)?
        } else {
            let items = parse_instructions(&path, &text)?;
            let (seqs, report) = instruction_seqs(&model.tokenizer, &items, fmt)?;
            if report.truncated > 0 || report.dropped > 0 {
                emit(JobUpdate::Progress {
                    done: 0,
                    total: 0,
                    message: format!(
                        "{}: {} examples truncated to {} tokens, {} dropped (prompt alone too long)",
                        src.label(),
                        report.truncated,
                        fmt.max_len,
                        report.dropped
                    ),
                    loss: None,
                    tokens_per_s: None,
                    eta_s: None,
                });
            }
            seqs
        };
        if seqs.is_empty() {
            return Err(CoreError::bad_file(&path, "yields no training examples"));
        }
        sets.push(seqs);
    }
    Ok(sets)
}

/// [`training_sets`] as one list, sources in order.
#[allow(clippy::too_many_arguments)]
fn training_seqs(
    engine: &Engine,
    model: &LoadedModel,
    sources: &[DataSource],
    fmt: &Formatting,
    chunk_tokens: usize,
    seed: u64,
    per_source: &dyn Fn(&[usize]) -> Result<Vec<usize>>,
    emit: &mut Emit,
) -> Result<Vec<TrainSeq>> {
    let sets = training_sets(
        engine,
        model,
        sources,
        fmt,
        chunk_tokens,
        seed,
        per_source,
        emit,
    )?;
    Ok(sets.into_iter().flatten().collect())
}

/// The training split repeated `passes[i]` times for the examples of source `i`, after the
/// validation share was taken, so no repeated example is also a validation example.
fn with_passes<T: Clone>(tagged: Vec<(usize, T)>, passes: Option<&[usize]>) -> Vec<T> {
    let mut out = Vec::new();
    for (source, seq) in tagged {
        let times = passes.and_then(|p| p.get(source).copied()).unwrap_or(1);
        out.extend(std::iter::repeat_n(seq, times));
    }
    out
}

/// Splits off a seeded validation share (none for tiny sets).
fn split_val<T: Clone>(seqs: Vec<T>, fraction: f64, seed: u64) -> (Vec<T>, Vec<T>) {
    let n_val = if seqs.len() >= 20 {
        ((seqs.len() as f64 * fraction).round() as usize).max(1)
    } else {
        0
    };
    let shuffled = sample(&seqs, seqs.len(), seed ^ 0x5EED);
    let (val, train) = shuffled.split_at(n_val);
    (train.to_vec(), val.to_vec())
}

fn progress_of(e: &TrainEvent) -> Option<JobUpdate> {
    match e {
        TrainEvent::Started {
            total_steps,
            resumed_from,
        } => Some(JobUpdate::Progress {
            done: *resumed_from as u64,
            total: *total_steps as u64,
            message: if *resumed_from > 0 {
                format!("resumed at step {resumed_from}")
            } else {
                "training".into()
            },
            loss: None,
            tokens_per_s: None,
            eta_s: None,
        }),
        TrainEvent::Step {
            step,
            total_steps,
            epoch,
            loss,
            tokens_per_s,
            eta_s,
            ..
        } => Some(JobUpdate::Progress {
            done: *step as u64,
            total: *total_steps as u64,
            message: format!("epoch {} loss {loss:.4}", epoch + 1),
            loss: Some(*loss),
            tokens_per_s: Some(*tokens_per_s),
            eta_s: Some(*eta_s),
        }),
        TrainEvent::Validation { step, val_loss } => Some(JobUpdate::Progress {
            done: *step as u64,
            total: 0,
            message: format!("validation loss {val_loss:.4}"),
            loss: None,
            tokens_per_s: None,
            eta_s: None,
        }),
        TrainEvent::Checkpoint { .. } => None,
    }
}

#[allow(clippy::too_many_arguments)]
fn run_loop(
    engine: &Engine,
    id: RunId,
    model: &LoadedModel,
    trainable: &dyn crate::train::Trainable,
    train: &[TrainSeq],
    val: &[TrainSeq],
    cfg: &LoopConfig,
    ctl: &JobControl,
    emit: &mut Emit,
) -> Result<TrainSummary> {
    let dir = engine.job_dir(id);
    let mut last_total = 0u64;
    train_loop(
        &model.model,
        trainable,
        train,
        val,
        cfg,
        Some(&dir),
        ctl,
        &mut |e| {
            if let Some(mut u) = progress_of(&e) {
                if let JobUpdate::Progress { total, .. } = &mut u {
                    if *total == 0 {
                        *total = last_total;
                    } else {
                        last_total = *total;
                    }
                }
                emit(u);
            }
        },
    )
}

fn module_specs(a: &LoraAdapter) -> Vec<ModuleSpec> {
    let mut seen = std::collections::BTreeMap::new();
    for ((_, m), p) in &a.pairs {
        seen.entry(m.hf_name()).or_insert((p.rank(), p.alpha));
    }
    seen.into_iter()
        .map(|(m, (rank, alpha))| ModuleSpec {
            module: m.to_string(),
            rank,
            alpha: alpha as f32,
        })
        .collect()
}

/// Stores an adapter (PEFT bytes + metadata); durable on return.
#[allow(clippy::too_many_arguments)]
pub(crate) fn save_adapter(
    engine: &Engine,
    adapter: &LoraAdapter,
    base_model: &str,
    method: AdapterMethod,
    parents: Vec<String>,
    mut hyperparams: serde_json::Value,
    summary: Option<&TrainSummary>,
    cat_weights: Option<CatWeights>,
    skill: Option<String>,
    dataset: Option<String>,
) -> Result<AdapterRecord> {
    let (bytes, config) = peft::to_bytes(adapter)?;
    hyperparams["peft_config"] = config;
    let rec = AdapterRecord {
        name: adapter.name.clone(),
        base_model: base_model.to_string(),
        skill,
        dataset,
        modules: module_specs(adapter),
        method,
        parents,
        hyperparams,
        loss_curve: summary.map(|s| s.loss_curve.clone()).unwrap_or_default(),
        val_loss: summary.and_then(|s| s.final_val_loss).map(|v| v as f32),
        cat_weights,
        size_bytes: bytes.len() as u64,
        created: soup_store::now_ms(),
        blob: None,
    };
    Ok(engine.store().save_adapter(&rec, &bytes)?)
}

/// Tokens trained on and the seconds it took, kept with the adapter: finished runs are the
/// only measure of this machine's training speed once the process is gone.
fn speed_json(s: &TrainSummary) -> serde_json::Value {
    json!({
        "tokens": (s.tokens_per_s * s.seconds).round(),
        "seconds": s.seconds,
        "tokens_per_s": s.tokens_per_s,
    })
}

fn train_json(name: &str, s: &TrainSummary) -> serde_json::Value {
    json!({
        "name": name,
        "final_train_loss": s.final_train_loss,
        "final_val_loss": s.final_val_loss,
        "steps": s.steps,
        "seconds": s.seconds,
        "tokens_per_s": s.tokens_per_s,
    })
}

fn run_train(
    engine: &Engine,
    id: RunId,
    job: &TrainJob,
    ctl: &JobControl,
    emit: &mut Emit,
) -> Result<RunOutcome> {
    let model = engine.model(&job.model, job.dtype)?;
    let fmt = Formatting {
        chat: model.is_chat(),
        train_on_inputs: job.train_on_inputs,
        max_len: job.max_len.min(model.model.cfg.max_position_embeddings),
        strict: job.strict,
    };
    let limit = job.limit;
    let mix = job.mix.clone();
    let per_source = move |sizes: &[usize]| -> Result<Vec<usize>> {
        let sizes: Vec<usize> = sizes
            .iter()
            .map(|&n| limit.map_or(n, |l| n.min(l)))
            .collect();
        match &mix {
            Some(r) => mix_counts(&sizes, r),
            None => Ok(sizes),
        }
    };
    let seqs = training_sets(
        engine,
        &model,
        &job.data,
        &fmt,
        job.chunk_tokens,
        job.train.seed,
        &per_source,
        emit,
    )?;
    let tagged: Vec<(usize, TrainSeq)> = seqs
        .into_iter()
        .enumerate()
        .flat_map(|(i, set)| set.into_iter().map(move |s| (i, s)))
        .collect();
    let (train, val) = split_val(tagged, job.val_fraction, job.train.seed);
    let train = with_passes(train, job.passes.as_deref());
    let val: Vec<TrainSeq> = val.into_iter().map(|(_, s)| s).collect();
    let trainable = LoraTrainable::new(
        &model.model,
        &job.name,
        &model.name,
        &job.lora,
        job.train.seed,
        job.train.dropout as f64,
    )?;
    let summary = run_loop(
        engine, id, &model, &trainable, &train, &val, &job.train, ctl, emit,
    )?;
    let adapter = trainable.adapter()?;
    let data: Vec<String> = job.data.iter().map(|d| d.label()).collect();
    // "speed": what the dashboard's recipe estimates measure this machine by.
    let hyper = json!({ "job": job, "examples": train.len(), "validation_examples": val.len(), "run": id.to_string(), "speed": speed_json(&summary) });
    save_adapter(
        engine,
        &adapter,
        &model.name,
        AdapterMethod::Trained,
        Vec::new(),
        hyper,
        Some(&summary),
        None,
        job.skill.clone(),
        Some(data.join(", ")),
    )?;
    clear_checkpoint(&engine.job_dir(id))?;
    Ok(RunOutcome {
        summary: train_json(&job.name, &summary),
    })
}

fn load_adapters(
    engine: &Engine,
    model: &LoadedModel,
    names: &[String],
) -> Result<Vec<LoraAdapter>> {
    names
        .iter()
        .map(|n| model.adapter(Some(engine.store()), n))
        .collect()
}

fn run_cat(
    engine: &Engine,
    id: RunId,
    job: &CatJob,
    ctl: &JobControl,
    emit: &mut Emit,
) -> Result<RunOutcome> {
    let model = engine.model(&job.model, job.dtype)?;
    let adapters = load_adapters(engine, &model, &job.adapters)?;
    let fmt = Formatting {
        chat: model.is_chat(),
        train_on_inputs: job.train_on_inputs,
        max_len: job.max_len.min(model.model.cfg.max_position_embeddings),
        strict: false,
    };
    let fraction = job.sample_fraction;
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Err(CoreError::bad_setting(
            "sample fraction",
            fraction,
            "must be in (0, 1]",
        ));
    }
    // The sample: the first ceil(fraction * n) of each dataset's seeded shuffle (what it
    // always was); held out: the next `heldout` of the same shuffle, never trained on.
    let sets = source_seqs(engine, &model, &job.data, &fmt, 256, emit)?;
    let mut seqs = Vec::new();
    let mut heldout = Vec::new();
    for (i, set) in sets.iter().enumerate() {
        let n = ((set.len() as f64 * fraction).ceil() as usize).clamp(1, set.len());
        let h = job.heldout.min(set.len() - n);
        let shuffled = sample(set, n + h, job.train.seed ^ i as u64);
        let (train, held) = shuffled.split_at(n);
        seqs.extend_from_slice(train);
        heldout.extend_from_slice(held);
    }
    let layers = model.model.layers.len();
    let cat = CatTrainable::new(
        adapters.clone(),
        layers,
        job.param,
        job.init,
        job.train.seed,
        model.model.device(),
    )?;
    let start = cat.weight_values()?;
    let batch = job.train.batch_size.max(1);
    let start_loss = if heldout.is_empty() {
        None
    } else {
        Some(eval_loss(&model.model, &cat.stack()?, &heldout, batch)?)
    };
    let summary = run_loop(engine, id, &model, &cat, &seqs, &[], &job.train, ctl, emit)?;
    let values = cat.weight_values()?;
    let heldout_loss = match start_loss {
        Some(start) => Some(HeldOutLoss {
            source: "unsampled skill data".into(),
            examples: heldout.len(),
            start,
            learned: eval_loss(&model.model, &cat.stack()?, &heldout, batch)?,
        }),
        None => None,
    };
    let movement = CatMovement::measure(
        &adapters,
        layers,
        job.param,
        job.init,
        &start,
        &values,
        heldout_loss,
    )?;
    emit(JobUpdate::Progress {
        done: summary.steps as u64,
        total: summary.total_steps as u64,
        message: movement.summary(),
        loss: None,
        tokens_per_s: None,
        eta_s: None,
    });
    let mut folded = merge::cat::fold_cat(&adapters, layers, &values)?;
    folded.name = job.name.clone();
    let weights = CatWeights {
        adapters: job.adapters.clone(),
        layers,
        modules: crate::lora::ALL_MODULES
            .iter()
            .map(|m| m.hf_name().to_string())
            .collect(),
        values: values.clone(),
    };
    let hyper = json!({
        "job": job,
        "examples": seqs.len(),
        "heldout_examples": heldout.len(),
        "run": id.to_string(),
        "cat_movement": movement,
        "speed": speed_json(&summary),
    });
    save_adapter(
        engine,
        &folded,
        &model.name,
        AdapterMethod::Cat,
        job.adapters.clone(),
        hyper,
        Some(&summary),
        Some(weights),
        None,
        None,
    )?;
    clear_checkpoint(&engine.job_dir(id))?;
    let mut out = train_json(&job.name, &summary);
    out["cat_weights"] = json!({ "adapters": job.adapters, "layers": layers, "modules": crate::lora::ALL_MODULES.iter().map(|m| m.hf_name()).collect::<Vec<_>>(), "values": values });
    out["cat_movement"] = json!(movement);
    Ok(RunOutcome { summary: out })
}

fn merge_method(
    method: &MergeKind,
    density: Option<f64>,
    svd_rank: Option<usize>,
    sign: Option<&str>,
    seed: u64,
) -> Result<MergeMethod> {
    let opts = MergeOptions {
        density,
        majority_sign: match sign {
            Some(s) => MajoritySign::parse(s)?,
            None => MajoritySign::Total,
        },
        svd_rank,
        svd_clamp: None,
        seed,
    };
    method.method(&opts)
}

/// The base model a merge without `--model` is recorded under: the first one its adapters
/// name. PEFT adapters built on a model made from a config name none, and a merge never needs
/// one, so then the record says so rather than failing.
fn merged_base_model(adapters: &[LoraAdapter]) -> String {
    adapters
        .iter()
        .map(|a| a.meta.base_model.trim())
        .find(|b| !b.is_empty())
        .unwrap_or(UNKNOWN_BASE)
        .to_string()
}

/// What a merged adapter records as its base when none of its inputs names one.
pub const UNKNOWN_BASE: &str = "unknown";

/// What a merge's `--out` must not harm: its input directories and the data dir.
pub fn merge_output_rules(engine: &Engine, job: &MergeJob) -> crate::output::OutputRules {
    crate::output::OutputRules::new(job.out_force)
        .data_dir(engine.data_dir())
        .existing_inputs(&job.adapters)
}

fn run_merge(engine: &Engine, job: &MergeJob, emit: &mut Emit) -> Result<RunOutcome> {
    if let Some(out) = &job.out {
        // Before any work or any stored adapter: a refused --out fails the run at once.
        crate::output::check_dir(out, &merge_output_rules(engine, job))?;
    }
    let store = engine.store();
    let device = engine.device().clone();
    let (adapters, base_model) = match &job.model {
        Some(m) => {
            let model = engine.model(m, job.dtype)?;
            (
                load_adapters(engine, &model, &job.adapters)?,
                model.name.clone(),
            )
        }
        None => {
            let a: Vec<LoraAdapter> = job
                .adapters
                .iter()
                .map(|n| crate::runtime::resolve_adapter(Some(store), n, &device))
                .collect::<Result<_>>()?;
            let base = merged_base_model(&a);
            (a, base)
        }
    };
    let (mut merged, weights, search) = if job.method == MergeKind::LoraHub {
        let model_spec = job.model.as_deref().ok_or_else(|| {
            CoreError::missing(
                "LoraHub",
                "--model and --data: it searches weights by the model's loss on a few examples",
            )
        })?;
        let model = engine.model(model_spec, job.dtype)?;
        let fmt = Formatting {
            chat: model.is_chat(),
            train_on_inputs: false,
            max_len: 512,
            strict: false,
        };
        let per = |s: &[usize]| Ok(s.iter().map(|&n| n.min(5)).collect());
        let examples = training_seqs(engine, &model, &job.data, &fmt, 256, job.seed, &per, emit)?;
        let cfg = merge::lorahub::LoraHubConfig {
            budget: job.budget.unwrap_or(40),
            seed: job.seed,
            ..Default::default()
        };
        let budget = cfg.budget;
        let mut evals = 0u64;
        let res = merge::lorahub::lorahub_search(adapters.len(), &cfg, &mut |w| {
            // LoraHub's own composition: the weight on both A and B (not PEFT's sqrt split).
            let m = merge::lorahub::lorahub_merge(&adapters, w)?;
            evals += 1;
            let loss = eval_loss(&model.model, &AdapterStack::single(m), &examples, 8)?;
            emit(JobUpdate::Progress {
                done: evals,
                total: budget as u64,
                message: format!("LoraHub evaluation {evals}: loss {loss:.4}"),
                loss: Some(loss),
                tokens_per_s: None,
                eta_s: None,
            });
            Ok(loss)
        })?;
        let m = merge::lorahub::lorahub_merge(&adapters, &res.weights)?;
        (
            m,
            res.weights.clone(),
            Some(
                json!({ "loss": res.loss, "objective": res.objective, "evaluations": res.evaluations }),
            ),
        )
    } else {
        let method = merge_method(
            &job.method,
            job.density,
            job.svd_rank,
            job.majority_sign_method.as_deref(),
            job.seed,
        )?;
        (
            merge::merge(&method, &adapters, &job.weights)?,
            job.weights.clone(),
            None,
        )
    };
    merged.name = job.name.clone();
    let hyper = json!({ "job": job, "weights": weights, "search": search });
    save_adapter(
        engine,
        &merged,
        &base_model,
        AdapterMethod::Merge,
        job.adapters.clone(),
        hyper,
        None,
        None,
        None,
        None,
    )?;
    if let Some(out) = &job.out {
        peft::save_peft_with(&merged, out, &merge_output_rules(engine, job))?;
    }
    Ok(RunOutcome {
        summary: json!({ "name": job.name, "method": job.method, "weights": weights, "rank": merge::config_rank(&merged), "out": job.out, "search": search }),
    })
}

/// Generation with the store's cache in front: identical (model content, dtype, adapters,
/// prompt, settings) is answered from the cache, and the completion says so.
struct CachedGenerator<'a> {
    inner: TextGenerator<'a>,
    store: &'a soup_store::Store,
    identity: String,
    hits: usize,
}

impl CachedGenerator<'_> {
    /// The cached answer under `key`, if any (a cache that cannot be read is a miss).
    fn lookup(&self, key: &[u8; 32]) -> Option<Completion> {
        let e = self.store.gen_cache_get(key).ok().flatten()?;
        Some(Completion {
            text: e.output,
            prompt_tokens: e.prompt_tokens as usize,
            output_tokens: e.output_tokens as usize,
            cached: true,
        })
    }
}

/// Stores a fresh answer in the generation cache (a failed write only costs a later miss).
fn remember(store: &soup_store::Store, key: &[u8; 32], c: &Completion) {
    let entry = soup_store::GenCacheEntry {
        output: c.text.clone(),
        prompt_tokens: c.prompt_tokens as u32,
        output_tokens: c.output_tokens as u32,
        created: soup_store::now_ms(),
    };
    let _ = store.gen_cache_put(key, &entry);
}

impl Generate for CachedGenerator<'_> {
    fn generate(
        &mut self,
        prompts: &[String],
        settings: &GenSettings,
    ) -> std::result::Result<Vec<Completion>, GenerateError> {
        let settings_json = serde_json::to_string(settings).map_err(GenerateError::new)?;
        let keys: Vec<[u8; 32]> = prompts
            .iter()
            .map(|p| {
                soup_store::gen_cache_key(&[
                    self.identity.as_bytes(),
                    settings_json.as_bytes(),
                    p.as_bytes(),
                ])
            })
            .collect();
        let mut out: Vec<Option<Completion>> = keys.iter().map(|k| self.lookup(k)).collect();
        let missing: Vec<usize> = (0..prompts.len()).filter(|&i| out[i].is_none()).collect();
        self.hits += prompts.len() - missing.len();
        if !missing.is_empty() {
            let todo: Vec<String> = missing.iter().map(|&i| prompts[i].clone()).collect();
            let fresh = self
                .inner
                .complete(&todo, settings)
                .map_err(GenerateError::new)?;
            for (&i, c) in missing.iter().zip(fresh) {
                remember(self.store, &keys[i], &c);
                out[i] = Some(c);
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// The queue decoder behind the same cache: answers found in the cache are handed over
    /// at once (their references still scored), the others decoded and stored as they finish.
    fn generate_stream(
        &mut self,
        requests: &[soup_evals::StreamRequest],
        settings: &GenSettings,
        opts: &soup_evals::StreamOptions,
        on_done: &mut soup_evals::OnDone<'_>,
    ) -> Option<std::result::Result<(), GenerateError>> {
        // Each question's key is the one a batch of questions with its stop strings used.
        let mut keys = Vec::with_capacity(requests.len());
        for r in requests {
            let row = GenSettings {
                stop: r.stop.clone(),
                ..settings.clone()
            };
            let settings_json = match serde_json::to_string(&row) {
                Ok(j) => j,
                Err(e) => return Some(Err(GenerateError::new(e))),
            };
            keys.push(soup_store::gen_cache_key(&[
                self.identity.as_bytes(),
                settings_json.as_bytes(),
                r.prompt.as_bytes(),
            ]));
        }
        let known: Vec<Option<Completion>> = keys.iter().map(|k| self.lookup(k)).collect();
        self.hits += known.iter().filter(|k| k.is_some()).count();
        let store = self.store;
        let mut store_fresh = |i: usize,
                               c: Completion,
                               r: Option<RefScore>|
         -> std::result::Result<bool, GenerateError> {
            if !c.cached {
                remember(store, &keys[i], &c);
            }
            on_done(i, c, r)
        };
        Some(
            self.inner
                .stream(requests, &known, true, settings, opts, &mut store_fresh),
        )
    }

    /// Scored with the weights that generate (never cached: it is one forward per question).
    fn reference_logprobs(
        &mut self,
        pairs: &[(String, String)],
    ) -> std::result::Result<Option<Vec<Option<RefScore>>>, GenerateError> {
        super::loglik::reference_logprobs(self.inner.model, self.inner.stack, pairs, 8)
            .map(Some)
            .map_err(GenerateError::new)
    }
}

/// A stable identity of the weights an evaluation runs with, for the generation cache: the
/// model's content hash and precision, and the adapters' content hashes.
fn weights_identity(engine: &Engine, model: &LoadedModel, target: &EvalTarget) -> Result<String> {
    let blob = |name: &str| {
        engine
            .store()
            .get_adapter(name)
            .ok()
            .flatten()
            .and_then(|r| r.blob)
            .map(|b| b.sha256)
            .unwrap_or_else(|| format!("path:{name}"))
    };
    let t = match target {
        EvalTarget::Base => "base".to_string(),
        EvalTarget::Adapter(a) => format!("adapter:{}", blob(a)),
        EvalTarget::Merge {
            method,
            adapters,
            weights,
        } => {
            let shas: Vec<String> = adapters.iter().map(|a| blob(a)).collect();
            format!("merge:{method}:{shas:?}:{weights:?}")
        }
    };
    Ok(format!(
        "model:{}|dtype:{}|{t}",
        model.fingerprint()?,
        model.precision.name()
    ))
}

/// The store's record of a graded question: its index fields and the grader's record whole.
fn to_store_record(run: RunId, index: u64, r: &EvalRecord) -> Result<StoredQuestion> {
    Ok(StoredQuestion {
        run,
        index,
        id: r.id.clone(),
        verdict: r.verdict_label(),
        scores: r.scores.clone(),
        detail: serde_json::to_value(r)
            .map_err(|e| CoreError::serialize(format!("the record of question {}", r.id), e))?,
    })
}

/// Every stored record of a run, paged from the store in question order.
pub(crate) fn every_record(
    store: &soup_store::Store,
    run: RunId,
) -> Result<Vec<soup_store::StoredQuestion>> {
    let mut out = Vec::new();
    let mut query = RecordQuery {
        limit: 500,
        ..Default::default()
    };
    loop {
        let page = store.records_page(run, &query)?;
        out.extend(page.items);
        match page.next {
            Some(next) => query.from = next,
            None => return Ok(out),
        }
    }
}

/// Every record a run already has (resume), read back as the grader wrote it.
fn previous_records(store: &soup_store::Store, run: RunId) -> Result<Vec<EvalRecord>> {
    every_record(store, run)?
        .into_iter()
        .map(|r| {
            serde_json::from_value(r.detail).map_err(|source| CoreError::UnreadableRecord {
                run: run.to_string(),
                index: r.index,
                id: r.id.clone(),
                source,
            })
        })
        .collect()
}

/// The chat form of a prompt, through the model's template.
pub(crate) fn render_chat(
    tokenizer: &crate::model::tokenizer::SoupTokenizer,
    p: &Prompt,
) -> std::result::Result<String, GenerateError> {
    let msgs: Vec<crate::model::tokenizer::ChatMessage> = p
        .messages
        .iter()
        .map(|m: &EvalChat| {
            crate::model::tokenizer::ChatMessage::new(m.role.clone(), m.content.clone())
        })
        .collect();
    tokenizer
        .apply_chat_template(&msgs, true)
        .map_err(GenerateError::new)
}

/// The adapter stack an evaluation target runs with: none, one adapter (stored, CAT or a PEFT
/// directory), or a merge built from its adapters with the evaluation's merge settings.
/// `soup serve` builds its compositions here too, so a composition served answers as the same
/// composition evaluated locally.
pub fn target_stack(
    model: &LoadedModel,
    store: Option<&soup_store::Store>,
    target: &EvalTarget,
    seed: u64,
) -> Result<AdapterStack> {
    Ok(match target {
        EvalTarget::Base => AdapterStack::base(),
        EvalTarget::Adapter(a) => AdapterStack::single(model.adapter(store, a)?),
        EvalTarget::Merge {
            method,
            adapters,
            weights,
        } => {
            let ads = adapters
                .iter()
                .map(|n| model.adapter(store, n))
                .collect::<Result<Vec<_>>>()?;
            let m = merge_method(method, Some(0.5), None, None, seed)?;
            AdapterStack::single(merge::merge(&m, &ads, weights)?)
        }
    })
}

fn run_eval(
    engine: &Engine,
    id: RunId,
    job: &EvalJob,
    ctl: &JobControl,
    emit: &mut Emit,
) -> Result<RunOutcome> {
    // The run's records, the finished ones and those to come, are scored by one grader: the
    // one its spec names (checked before the model loads, for either backend).
    let current = job.task.grader_version();
    if job.grader != Some(current) {
        return Err(CoreError::GraderChanged {
            id: id.to_string(),
            task: job.task.name(),
            recorded: job
                .grader
                .map_or("no recorded version".into(), |v| format!("version {v}")),
            current,
        });
    }
    if let Some(remote) = &job.remote {
        return run_eval_remote(engine, id, job, remote, ctl, emit);
    }
    let model = engine.model(&job.model, job.dtype)?;
    let store = engine.store();
    let stack = target_stack(&model, Some(store), &job.target, job.seed)?;
    let style = prompt_style(job, model.is_chat(), &model.name);
    let mut generator = CachedGenerator {
        inner: TextGenerator {
            model: &model,
            stack: &stack,
            on_batch: None,
        },
        store,
        identity: weights_identity(engine, &model, &job.target)?,
        hits: 0,
    };
    let render = |p: &Prompt| render_chat(&model.tokenizer, p);
    let side = GenerationSide {
        style,
        render: &render,
        dtype: Some(model.precision.name().to_string()),
        batch_size: job.batch_size,
    };
    let mut summary = grade_eval(engine, id, job, ctl, emit, &mut generator, side)?;
    summary["cache_hits"] = json!(generator.hits);
    summary["dtype"] = json!(model.precision.name());
    Ok(RunOutcome { summary })
}

/// Chat when asked (default: when the model is an instruct model) and the model has a
/// template; otherwise the plain form, recorded as such, with its stop strings.
fn prompt_style(job: &EvalJob, has_template: bool, model_name: &str) -> PromptStyle {
    let style = if job.chat.unwrap_or(has_template) && has_template {
        PromptStyle::Chat
    } else {
        PromptStyle::Plain
    };
    if job.chat == Some(true) && style == PromptStyle::Plain {
        tracing::warn!(
            "model {model_name} has no chat template: the evaluation uses the plain prompt form (recorded as plain)"
        );
    }
    style
}

/// What differs between generating here and on a server: how prompts are rendered (the same
/// template either way), the dtype the records note, the batch the driver hands over.
struct GenerationSide<'a> {
    style: PromptStyle,
    render: &'a dyn Fn(&Prompt) -> std::result::Result<String, GenerateError>,
    dtype: Option<String>,
    batch_size: usize,
}

/// The evaluation loop shared by both backends: loads the task's data, generates through
/// `generator`, grades (sandbox here), stores every record as it is graded, then the scores
/// with bootstrap intervals. Returns the run's summary.
fn grade_eval(
    engine: &Engine,
    id: RunId,
    job: &EvalJob,
    ctl: &JobControl,
    emit: &mut Emit,
    generator: &mut dyn Generate,
    side: GenerationSide<'_>,
) -> Result<serde_json::Value> {
    let store = engine.store();
    let (path, text) = read(engine.data_dir(), &job.data)?;
    let data = job.task.load(&path, &text)?;
    let previous = previous_records(store, id)?;
    let mut next_index = previous.len() as u64;
    // How many questions the run covers, for progress and ETA.
    let total = job.limit.map_or(data.len(), |l| l.min(data.len())) as u64;
    let t0 = std::time::Instant::now();
    let mut done_now = 0u64;
    let mut sink =
        |r: &EvalRecord| -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
            store.put_record(&to_store_record(id, next_index, r)?)?;
            next_index += 1;
            done_now += 1;
            let rate = done_now as f64 / t0.elapsed().as_secs_f64().max(1e-9);
            emit(JobUpdate::Progress {
                done: next_index,
                total,
                message: format!(
                    "question {} {}",
                    r.id,
                    if r.correct { "correct" } else { "not correct" }
                ),
                loss: None,
                tokens_per_s: None,
                eta_s: Some(total.saturating_sub(next_index) as f64 / rate),
            });
            Ok(())
        };
    let sandbox = if job.task.info().needs_sandbox {
        Some(Sandbox::new(SandboxConfig {
            allow_weaker_isolation: true,
            ..Default::default()
        })?)
    } else {
        None
    };
    let mut run = EvalRun {
        generator,
        sandbox: sandbox.as_ref(),
        style: side.style,
        render_chat: side.render,
        prompt: PromptOptions { shots: job.shots },
        dtype: side.dtype,
        opts: EvalOptions {
            settings: GenSettings {
                max_new_tokens: job.max_new_tokens,
                seed: job.seed,
                ..Default::default()
            },
            batch_size: side.batch_size,
            limit: job.limit,
            sample_seed: job.sample_seed,
            cancel: Some(ctl.cancel.clone()),
            static_batches: false,
        },
        previous: &previous,
        sink: &mut sink,
    };
    let summary = data.evaluate(&mut run)?;
    if summary.cancelled {
        return Err(CoreError::Cancelled);
    }
    // Scores with 95 % intervals (Wilson for right/wrong scores, else the bootstrap), from
    // every record of the run (resumed ones too).
    let records = previous_records(store, id)?;
    let mut scores = Vec::new();
    for metric in summary.scores.keys() {
        let vals: Vec<f64> = records
            .iter()
            .filter_map(|r| r.scores.get(metric).copied())
            .collect();
        let ci = soup_evals::stats::score_interval95(&vals, job.seed);
        scores.push(Score {
            run: id,
            metric: metric.clone(),
            value: ci.mean,
            ci_low: ci.low,
            ci_high: ci.high,
            n: vals.len() as u64,
        });
    }
    store.put_scores(&scores)?;
    let scores_json: serde_json::Map<String, serde_json::Value> = scores
        .iter()
        .map(|s| {
            (
                s.metric.clone(),
                json!({ "value": s.value, "ci95": [s.ci_low, s.ci_high], "n": s.n }),
            )
        })
        .collect();
    Ok(json!({
        "run": id.to_string(),
        "task": job.task.name(),
        "target": job.target.label(),
        "n": records.len(),
        "headline": summary.headline,
        "scores": scores_json,
        "verdicts": summary.verdicts,
        "resumed": summary.resumed,
        "cache_hits": 0,
        "prompt_style": side.style,
    }))
}

/// An evaluation whose generation runs on an OpenAI-compatible server. Only the tokenizer is
/// loaded here (for the chat template: the prompt text is rendered as the local engine
/// renders it); answers are not cached, since a server's weights behind a name can change.
fn run_eval_remote(
    engine: &Engine,
    id: RunId,
    job: &EvalJob,
    remote: &crate::remote::RemoteBackend,
    ctl: &JobControl,
    emit: &mut Emit,
) -> Result<RunOutcome> {
    let (model_name, model_path) =
        crate::runtime::locate_model(Some(engine.store()), engine.data_dir(), &job.model)?;
    let tokenizer = crate::runtime::load_tokenizer_at(&model_path)?;
    let client = remote.client()?;
    // The adapter the server is given when it must load one: built here on the CPU (a merge
    // is merged here, a CAT adapter is already one folded adapter), checked against the model.
    let build = || -> Result<LoraAdapter> {
        let cfg = crate::runtime::model_config_at(&model_path)?;
        let load = |spec: &str| -> Result<LoraAdapter> {
            let a = crate::runtime::resolve_adapter(
                Some(engine.store()),
                spec,
                &candle_core::Device::Cpu,
            )?;
            crate::runtime::check_adapter_fits(&a, &cfg, &model_name)?;
            Ok(a)
        };
        match &job.target {
            EvalTarget::Base => Err(CoreError::Internal(
                "the base model is not exported as an adapter".into(),
            )),
            EvalTarget::Adapter(a) => load(a),
            EvalTarget::Merge {
                method,
                adapters,
                weights,
            } => {
                let ads = adapters
                    .iter()
                    .map(|a| load(a))
                    .collect::<Result<Vec<_>>>()?;
                let m = merge_method(method, Some(0.5), None, None, job.seed)?;
                merge::merge(&m, &ads, weights)
            }
        }
    };
    let placed =
        crate::remote::place_target(engine, &client, remote, &job.target, &model_name, &build)?;
    tracing::info!(
        "evaluating {} on {} as model {:?}",
        job.target.label(),
        client.base(),
        placed.model
    );
    let style = prompt_style(job, tokenizer.has_chat_template(), &model_name);
    let mut generator = crate::remote::RemoteGenerator {
        client: &client,
        model: placed.model.clone(),
        concurrency: remote.concurrency,
    };
    let render = |p: &Prompt| render_chat(&tokenizer, p);
    let side = GenerationSide {
        style,
        render: &render,
        // The server's precision is not known here.
        dtype: None,
        // A batch big enough to keep every allowed request in flight.
        batch_size: job.batch_size.max(remote.concurrency),
    };
    let mut summary = grade_eval(engine, id, job, ctl, emit, &mut generator, side)?;
    // The run's last progress line says where the answers came from and, for an exported
    // adapter, what fitting the server's rank cost (`soup runs show` prints it).
    let n = summary["n"].as_u64().unwrap_or(0);
    let mut message = format!("answers from {} as model {}", client.base(), placed.model);
    if let Some(e) = &placed.export {
        message.push_str(&format!(
            " (exported rank {} from {}, relative Frobenius error {:.6})",
            e.fit.rank, e.fit.source_rank, e.fit.relative_frobenius_error
        ));
    }
    emit(JobUpdate::Progress {
        done: n,
        total: n,
        message,
        loss: None,
        tokens_per_s: None,
        eta_s: None,
    });
    summary["backend"] = json!({
        "protocol": remote.protocol,
        "base_url": remote.base_url,
        "model": placed.model,
        "route": placed.route,
        "export": placed.export,
    });
    Ok(RunOutcome { summary })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Passes repeat a source's training examples, never its validation share.
    #[test]
    fn passes_repeat_training_examples_after_the_validation_split() {
        let tagged: Vec<(usize, u32)> = (0..40).map(|i| (usize::from(i >= 30), i)).collect();
        let (train, val) = split_val(tagged, 0.25, 3);
        let val: Vec<u32> = val.into_iter().map(|(_, s)| s).collect();
        assert_eq!(val.len(), 10);
        let kept_b = train.iter().filter(|(src, _)| *src == 1).count();
        let kept_a = train.len() - kept_b;
        let train = with_passes(train, Some(&[1, 4]));
        assert!(
            train.iter().all(|s| !val.contains(s)),
            "a validation example is trained on"
        );
        assert_eq!(train.len(), kept_a + 4 * kept_b);
        for s in 30..40u32 {
            let times = train.iter().filter(|&&t| t == s).count();
            assert!(
                times == 0 || times == 4,
                "example {s} repeated {times} times"
            );
        }
        assert_eq!(with_passes(vec![(0, 1u32), (1, 2)], None), vec![1, 2]);
    }
}
