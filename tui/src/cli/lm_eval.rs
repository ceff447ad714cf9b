//! A stored evaluation run in lm-evaluation-harness's output schema (`results_<date>.json`
//! and `samples_<task>_<date>.jsonl`, as its `EvaluationTracker` writes them), so dashboards
//! and scripts made for lm-eval read soup's runs.
//!
//! The mapping: each graded question is one sample of a `generate_until` task with the single
//! filter `none`; `resps` holds the raw generation, `filtered_resps` what soup graded (the
//! extracted program or answer), and each of soup's per-question scores is a metric field.
//! The hashes are lm-eval's: sha256 of the document as `json.dumps(doc, indent=2,
//! ensure_ascii=False)` writes it, of the prompt, and of the target; `task_hashes` is the
//! sha256 of their concatenation over the samples.

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use soup_store::{RunKind, RunRecord, Score, StoredQuestion};

/// lm-eval's `hash_string`: sha256 of the UTF-8 text, hex.
pub fn hash_string(s: &str) -> String {
    format!("{:x}", Sha256::digest(s.as_bytes()))
}

/// The two files of one run.
#[derive(Debug, Clone)]
pub struct Export {
    pub task: String,
    /// `YYYY-MM-DDTHH-MM-SS.ffffff` of the run's end (its start when unfinished).
    pub date_id: String,
    pub results: Value,
    pub samples: Vec<Value>,
}

impl Export {
    pub fn results_file(&self) -> String {
        format!("results_{}.json", self.date_id)
    }

    pub fn samples_file(&self) -> String {
        format!("samples_{}_{}.jsonl", self.task, self.date_id)
    }
}

/// lm-eval's `sanitize_model_name`.
fn sanitize_model_name(name: &str) -> String {
    let mut out = String::new();
    let mut in_run = false;
    for c in name.chars() {
        if matches!(
            c,
            '"' | '<' | '>' | ':' | '/' | '|' | '\\' | '?' | '*' | '[' | ']'
        ) {
            if !in_run {
                out.push_str("__");
            }
            in_run = true;
        } else {
            out.push(c);
            in_run = false;
        }
    }
    out
}

/// Standard error of the mean with the sample standard deviation (lm-eval's `mean_stderr`);
/// None below two values.
fn mean_stderr(xs: &[f64]) -> Option<f64> {
    let n = xs.len();
    if n < 2 {
        return None;
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    Some((var / n as f64).sqrt())
}

/// Builds both files from a finished evaluation run, its records (any order) and scores.
pub fn build(run: &RunRecord, records: &[StoredQuestion], scores: &[Score]) -> Result<Export> {
    if run.kind != RunKind::Eval {
        bail!(
            "run {} is not an evaluation: only `soup eval` runs (and a recipe's evaluations) export to lm-eval's format",
            run.id
        );
    }
    let spec = &run.spec;
    let task = spec["task"]
        .as_str()
        .context("the run's spec names no task")?
        .to_string();
    let model = spec["model"].as_str().unwrap_or("?");
    let target: soup_core::engine::EvalTarget = serde_json::from_value(spec["target"].clone())
        .context("the run's spec has no readable target")?;
    let model_name = match &target {
        soup_core::engine::EvalTarget::Base => model.to_string(),
        t => format!("{model}+{}", t.label()),
    };
    let shots = spec["shots"].as_u64().unwrap_or(0);
    let seed = spec["seed"].as_u64().unwrap_or(0);
    let gen_kwargs = json!({
        "max_gen_toks": spec["max_new_tokens"],
        "do_sample": false,
        "temperature": 0.0,
    });
    let mut records: Vec<&StoredQuestion> = records.iter().collect();
    records.sort_by_key(|r| r.index);

    let mut samples = Vec::with_capacity(records.len());
    let mut hash_chain = String::new();
    let mut per_metric: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for r in &records {
        let d = &r.detail;
        let text = |k: &str| d.get(k).and_then(Value::as_str).map(str::to_string);
        let prompt = text("prompt").unwrap_or_default();
        let raw = text("raw_output").unwrap_or_default();
        let graded = text("extracted").unwrap_or_else(|| raw.clone());
        let gold = text("gold").unwrap_or_default();
        let doc = json!({ "id": r.id, "answer": gold });
        let doc_json = serde_json::to_string_pretty(&doc)?;
        let doc_hash = hash_string(&doc_json);
        let prompt_hash = hash_string(&prompt);
        let target_hash = hash_string(&gold);
        hash_chain.push_str(&doc_hash);
        hash_chain.push_str(&prompt_hash);
        hash_chain.push_str(&target_hash);
        let mut sample = Map::new();
        sample.insert("doc_id".into(), json!(r.index));
        sample.insert("doc".into(), doc);
        sample.insert("target".into(), json!(gold));
        sample.insert(
            "arguments".into(),
            json!({ "gen_args_0": { "arg_0": prompt, "arg_1": gen_kwargs } }),
        );
        sample.insert("resps".into(), json!([[raw]]));
        sample.insert("filtered_resps".into(), json!([graded]));
        sample.insert("filter".into(), json!("none"));
        sample.insert("metrics".into(), json!(r.scores.keys().collect::<Vec<_>>()));
        sample.insert("doc_hash".into(), json!(doc_hash));
        sample.insert("prompt_hash".into(), json!(prompt_hash));
        sample.insert("target_hash".into(), json!(target_hash));
        for (metric, v) in &r.scores {
            sample.insert(metric.clone(), json!(v));
            per_metric.entry(metric.clone()).or_default().push(*v);
        }
        samples.push(Value::Object(sample));
    }

    let mut task_results = Map::new();
    task_results.insert("alias".into(), json!(task));
    task_results.insert("name".into(), json!(task));
    task_results.insert("sample_len".into(), json!(records.len()));
    let mut higher = Map::new();
    let mut metric_list = Vec::new();
    for s in scores {
        task_results.insert(format!("{},none", s.metric), json!(s.value));
        let stderr = per_metric
            .get(&s.metric)
            .and_then(|xs| mean_stderr(xs))
            .map_or(json!("N/A"), |e| json!(e));
        task_results.insert(format!("{}_stderr,none", s.metric), stderr);
        higher.insert(s.metric.clone(), json!(true));
        metric_list
            .push(json!({ "metric": s.metric, "aggregation": "mean", "higher_is_better": true }));
    }
    let n = records.len();
    let start = run.started.unwrap_or(run.created);
    let end = run.finished.unwrap_or(start);
    let date_id = crate::format::file_date_id(end);
    let data = match &spec["data"] {
        Value::Object(o) => o
            .values()
            .next()
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string(),
        other => other.to_string(),
    };
    let model_args = format!(
        "model={model},target={},dtype={}",
        target.label(),
        spec["dtype"].as_str().unwrap_or("?")
    );
    let backend = spec.get("remote").filter(|r| !r.is_null());
    let results = json!({
        "results": { task.clone(): task_results },
        "group_subtasks": { task.clone(): [] },
        "configs": { task.clone(): {
            "task": task,
            "dataset_path": data,
            "output_type": "generate_until",
            "num_fewshot": shots,
            "generation_kwargs": gen_kwargs,
            "repeats": 1,
            "metric_list": metric_list,
            "metadata": { "version": 1.0, "soup_run": run.id.to_string() },
        }},
        "versions": { task.clone(): 1.0 },
        "n-shot": { task.clone(): shots },
        "higher_is_better": { task.clone(): higher },
        "n-samples": { task.clone(): { "original": spec["limit"].as_u64().map_or(n as u64, |l| l.max(n as u64)), "effective": n } },
        "config": {
            "model": "soup",
            "model_args": model_args,
            "batch_size": spec["batch_size"],
            "batch_sizes": [],
            "device": null,
            "use_cache": null,
            "limit": spec["limit"],
            "bootstrap_iters": 1000,
            "gen_kwargs": gen_kwargs,
            "random_seed": seed,
            "numpy_seed": seed,
            "torch_seed": seed,
            "fewshot_seed": seed,
            "backend": backend.map_or(json!("local"), |b| json!({
                "protocol": b["protocol"], "base_url": b["base_url"]
            })),
        },
        "git_hash": null,
        "date": run.created as f64 / 1000.0,
        "task_hashes": { task.clone(): hash_string(&hash_chain) },
        "model_source": "soup",
        "model_name": model_name,
        "model_name_sanitized": sanitize_model_name(&model_name),
        "system_instruction": null,
        "system_instruction_sha": null,
        "fewshot_as_multiturn": false,
        "chat_template": null,
        "chat_template_sha": null,
        "start_time": start as f64 / 1000.0,
        "end_time": end as f64 / 1000.0,
        "total_evaluation_time_seconds": format!("{}", end.saturating_sub(start) as f64 / 1000.0),
    });
    Ok(Export {
        task,
        date_id,
        results,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_names_match_lm_eval() {
        // hashlib.sha256("abc".encode()).hexdigest()
        assert_eq!(
            hash_string("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(sanitize_model_name("org/model:v1|x"), "org__model__v1__x");
        // json.dumps({"answer": "7", "id": "q1"}, indent=2, ensure_ascii=False)
        let doc = json!({"id": "q1", "answer": "7"});
        assert_eq!(
            serde_json::to_string_pretty(&doc).unwrap(),
            "{\n  \"answer\": \"7\",\n  \"id\": \"q1\"\n}"
        );
        assert_eq!(mean_stderr(&[1.0]), None);
        let e = mean_stderr(&[0.0, 1.0, 1.0, 0.0]).unwrap();
        assert!((e - (1.0f64 / 3.0 / 4.0).sqrt()).abs() < 1e-12, "{e}");
    }
}
