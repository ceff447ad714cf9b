//! Evaluation with generation on a remote OpenAI-compatible server (vLLM, SGLang, llama.cpp's
//! server, `soup serve`): prompts are rendered here exactly as the local engine renders them
//! and sent to `/v1/completions` with the task's stop strings and greedy decoding; grading,
//! records, resume and the store stay local, so a remote run's records read like a local one's.
//!
//! How the weights under evaluation reach the server ([`AdapterRoute`]):
//! - `--remote-model NAME`: the server already knows them by that name;
//! - a `soup serve` server (its `/v1/models` entries are `owned_by: "soup"`, or `--route soup`):
//!   the composition itself is the model name (`ties:math,code:0.5,0.5`), built by the server;
//! - any other server (`--route load`): soup exports the adapter or composition as one PEFT
//!   directory ([`export`]: a CAT adapter as one adapter of rank Σ r_i, compressed by SVD when
//!   over `--max-lora-rank`) and registers it through vLLM's `POST /v1/load_lora_adapter`.

pub mod client;
pub mod export;
#[cfg(test)]
mod tests;

pub use client::{OpenAiClient, RemoteCompletion, RemoteError, RemoteModel, RetryPolicy};

use crate::engine::{Engine, EvalTarget};
use crate::lora::LoraAdapter;
use serde::{Deserialize, Serialize};
use soup_evals::generate::truncate_at_stop;
use soup_evals::{Completion, GenSettings, Generate, GenerateError};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// How a composition reaches the server when no `--remote-model` is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdapterRoute {
    /// `soup serve` when its model listing says so (`owned_by: "soup"`), else `load`.
    #[default]
    Auto,
    /// The server is `soup serve`: send the composition as the model name.
    Soup,
    /// Export a PEFT directory and register it with `POST /v1/load_lora_adapter` (vLLM).
    Load,
}

impl std::str::FromStr for AdapterRoute {
    type Err = crate::CoreError;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s.trim() {
            "auto" => Ok(AdapterRoute::Auto),
            "soup" => Ok(AdapterRoute::Soup),
            "load" => Ok(AdapterRoute::Load),
            other => Err(crate::CoreError::UnknownName {
                kind: "adapter route",
                name: other.into(),
                expected: "auto, soup or load".into(),
            }),
        }
    }
}

/// vLLM's allowed values of `--max-lora-rank`.
pub const VLLM_LORA_RANKS: [usize; 8] = [8, 16, 32, 64, 128, 256, 320, 512];

fn default_max_lora_rank() -> usize {
    64
}

/// Where an evaluation generates, as its job spec records it: the server and how to reach the
/// weights, never the API key itself (only the name of the variable that holds it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteBackend {
    /// `openai`: the only remote protocol; kept so a spec says which one it used.
    #[serde(default = "openai")]
    pub protocol: String,
    pub base_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// The name the server knows the evaluated weights by; None: found by `route`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_model: Option<String>,
    #[serde(default)]
    pub route: AdapterRoute,
    /// The server's `--max-lora-rank`: an exported adapter of higher rank is compressed by
    /// SVD to the largest allowed rank not above it.
    #[serde(default = "default_max_lora_rank")]
    pub max_lora_rank: usize,
    /// Where exported adapters are written (default `<data dir>/exports/remote`): a folder
    /// the server can read, e.g. on a shared filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_dir: Option<PathBuf>,
    /// The same folder as the server sees it, when its path differs there (a container
    /// mount); default: the local path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_lora_dir: Option<String>,
}

fn openai() -> String {
    "openai".into()
}

impl RemoteBackend {
    /// A backend with the defaults of `soup eval --backend openai`.
    pub fn new(base_url: impl Into<String>) -> Self {
        RemoteBackend {
            protocol: openai(),
            base_url: base_url.into(),
            api_key_env: None,
            concurrency: 8,
            remote_model: None,
            route: AdapterRoute::Auto,
            max_lora_rank: default_max_lora_rank(),
            lora_dir: None,
            server_lora_dir: None,
        }
    }

    pub fn client(&self) -> Result<OpenAiClient, RemoteError> {
        OpenAiClient::new(&self.base_url, self.api_key_env.as_deref())
    }
}

/// [`Generate`] on a server: each prompt of a batch is one `/v1/completions` request, up to
/// `concurrency` in flight (a bounded pool of scoped threads), results in prompt order.
pub struct RemoteGenerator<'a> {
    pub client: &'a OpenAiClient,
    /// The `model` of every request.
    pub model: String,
    pub concurrency: usize,
}

impl Generate for RemoteGenerator<'_> {
    fn generate(
        &mut self,
        prompts: &[String],
        settings: &GenSettings,
    ) -> Result<Vec<Completion>, GenerateError> {
        let t0 = Instant::now();
        let workers = self.concurrency.max(1).min(prompts.len());
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let slots: Mutex<Vec<Option<Result<RemoteCompletion, RemoteError>>>> =
            Mutex::new((0..prompts.len()).map(|_| None).collect());
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    // After a failure, no new request starts; those in flight finish.
                    if failed.load(Ordering::SeqCst) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(prompt) = prompts.get(i) else { break };
                    let r = self.client.complete(&self.model, prompt, settings);
                    if r.is_err() {
                        failed.store(true, Ordering::SeqCst);
                    }
                    if let Ok(mut slots) = slots.lock() {
                        slots[i] = Some(r);
                    }
                });
            }
        });
        let slots = slots
            .into_inner()
            .map_err(|_| GenerateError::new("a request thread panicked"))?;
        let mut out = Vec::with_capacity(prompts.len());
        for slot in slots {
            let c = match slot {
                Some(Ok(c)) => c,
                Some(Err(e)) => return Err(GenerateError::new(e)),
                // Never taken: indices are handed out in order, so every such slot comes
                // after the failed one, which returned above.
                None => continue,
            };
            out.push(Completion {
                // Servers leave the stop string out; cut again in case one does not.
                text: truncate_at_stop(&c.text, &settings.stop).to_string(),
                prompt_tokens: c.prompt_tokens.unwrap_or(0),
                output_tokens: c.completion_tokens.unwrap_or(0),
                cached: false,
            });
        }
        if out.len() != prompts.len() {
            return Err(GenerateError::new(
                "a request failed and the batch was abandoned",
            ));
        }
        tracing::debug!(
            "{} prompts on {} in {:.2}s",
            prompts.len(),
            self.client.base(),
            t0.elapsed().as_secs_f64()
        );
        Ok(out)
    }
}

/// An exported adapter as the run records it: where it was written, the path the server was
/// given, the name it was registered under, and what fitting its rank cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportRecord {
    pub name: String,
    pub path: PathBuf,
    pub server_path: String,
    #[serde(flatten)]
    pub fit: export::FitReport,
}

/// How the evaluated weights were found on the server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Placement {
    /// The `model` of every request.
    pub model: String,
    /// `given` (--remote-model), `base`, `soup` (the composition by name) or `load` (exported
    /// and registered).
    pub route: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportRecord>,
}

/// The composition as `soup eval --merge` and `soup serve` spell it: `METHOD:A,B:W1,W2`.
pub fn composition_name(target: &EvalTarget) -> Option<String> {
    match target {
        EvalTarget::Base => None,
        EvalTarget::Adapter(a) => Some(a.clone()),
        EvalTarget::Merge {
            method,
            adapters,
            weights,
        } => {
            let w: Vec<String> = weights.iter().map(|w| w.to_string()).collect();
            Some(format!("{method}:{}:{}", adapters.join(","), w.join(",")))
        }
    }
}

/// Finds or puts the weights of `job.target` on the server: `--remote-model` as given; the
/// base model from the server's listing; a composition by name on `soup serve`; otherwise the
/// adapter `build` makes, exported at a rank the server accepts and registered through
/// `/v1/load_lora_adapter`.
pub fn place_target(
    engine: &Engine,
    client: &OpenAiClient,
    remote: &RemoteBackend,
    target: &EvalTarget,
    local_model_name: &str,
    build: &dyn Fn() -> crate::Result<LoraAdapter>,
) -> crate::Result<Placement> {
    if let Some(name) = &remote.remote_model {
        return Ok(Placement {
            model: name.clone(),
            route: "given",
            export: None,
        });
    }
    // Asked first: an unreachable server or a refused key fails here, before any question.
    let models = client.models()?;
    let is_soup = match remote.route {
        AdapterRoute::Soup => true,
        AdapterRoute::Load => false,
        AdapterRoute::Auto => models.iter().any(|m| m.owned_by.as_deref() == Some("soup")),
    };
    if let (true, Some(name)) = (is_soup, composition_name(target)) {
        return Ok(Placement {
            model: name,
            route: "soup",
            export: None,
        });
    }
    if *target == EvalTarget::Base {
        return Ok(Placement {
            model: base_model(client, &models, local_model_name)?,
            route: "base",
            export: None,
        });
    }
    let adapter = build()?;
    let fitted = export::fit_to_rank(&adapter, remote.max_lora_rank)?;
    if fitted.report.compressed {
        tracing::warn!(
            "{}: rank {} is over the server's --max-lora-rank {}: compressed by SVD to rank {}, relative Frobenius error {:.4} (worst projection {:.4})",
            target.label(),
            fitted.report.source_rank,
            remote.max_lora_rank,
            fitted.report.rank,
            fitted.report.relative_frobenius_error,
            fitted.report.max_projection_error
        );
    }
    let root = remote
        .lora_dir
        .clone()
        .unwrap_or_else(|| engine.data_dir().join("exports").join("remote"));
    let (name, dir) = export::write_for_server(&fitted.adapter, &root)?;
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let server_path = match &remote.server_lora_dir {
        Some(d) => format!("{}/{name}", d.trim_end_matches('/')),
        None => dir.display().to_string(),
    };
    if !models.iter().any(|m| m.id == name) {
        client.load_lora_adapter(&name, &server_path)?;
    }
    Ok(Placement {
        model: name.clone(),
        route: "load",
        export: Some(ExportRecord {
            name,
            path: dir,
            server_path,
            fit: fitted.report,
        }),
    })
}

/// The server's base model: its one model without a parent, or the one named like the local
/// model when it has several.
fn base_model(
    client: &OpenAiClient,
    models: &[RemoteModel],
    local_model_name: &str,
) -> crate::Result<String> {
    let roots: Vec<&RemoteModel> = models.iter().filter(|m| m.parent.is_none()).collect();
    if let [one] = roots.as_slice() {
        return Ok(one.id.clone());
    }
    if let Some(m) = roots
        .iter()
        .find(|m| m.id == local_model_name || m.id.rsplit('/').next() == Some(local_model_name))
    {
        return Ok(m.id.clone());
    }
    Err(RemoteError::ModelNotFound {
        url: client.base().into(),
        model: local_model_name.into(),
        available: models.iter().map(|m| m.id.clone()).collect(),
        hint: "; name the base model with --remote-model NAME".into(),
    }
    .into())
}
