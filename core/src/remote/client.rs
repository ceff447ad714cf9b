//! A small blocking client for the OpenAI-compatible HTTP API that vLLM, SGLang, llama.cpp's
//! server and `soup serve` speak: `GET /v1/models`, `POST /v1/completions` and vLLM's runtime
//! adapter API `POST /v1/load_lora_adapter`.
//!
//! Why blocking (ureq) and not async: generation requests are few and long (seconds each), the
//! engine's worker is a plain thread, and a bounded pool of threads gives the concurrency a
//! server needs to batch without bringing an async runtime into the engine.
//!
//! Failures a user can act on are typed ([`RemoteError`]): a server that cannot be reached, a
//! key that is missing or refused (naming the environment variable it came from), a model the
//! server does not have (listing those it has). Overload and server errors (429, 5xx) and
//! dropped connections are retried with exponential backoff before they become errors (a
//! connection refused only twice: that is more often a wrong URL than a restarting server).

use serde_json::{json, Value};
use soup_evals::GenSettings;
use std::time::Duration;

/// Why a request to the server failed, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(
        "could not reach the server at {url}: {message} (is it running, and is --base-url right?)"
    )]
    Unreachable { url: String, message: String },
    #[error("environment variable {var} (from --api-key-env) is not set: export the server's API key in it, or drop --api-key-env for a server without a key")]
    MissingKey { var: String },
    #[error("{url}: 401 unauthorized: {}", match .var {
        Some(v) => format!("the server refused the API key in ${v} (--api-key-env {v}); check its value"),
        None => "the server wants an API key: put it in an environment variable and pass its name with --api-key-env VAR".to_string(),
    })]
    Unauthorized { url: String, var: Option<String> },
    #[error("the server at {url} has no model {model:?}; it serves: {}{hint}", if .available.is_empty() { "nothing".to_string() } else { .available.join(", ") })]
    ModelNotFound {
        url: String,
        model: String,
        available: Vec<String>,
        /// What to try next (`--remote-model NAME`, loading the adapter, ...).
        hint: String,
    },
    #[error("{url}: HTTP {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error("{url}: unexpected answer from the server: {message}")]
    BadResponse { url: String, message: String },
    #[error("the server at {url} has no runtime adapter API (HTTP {status}): start vLLM with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, or load the adapter yourself (--lora-modules NAME=PATH) and pass --remote-model NAME")]
    NoAdapterApi { url: String, status: u16 },
}

/// One entry of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteModel {
    pub id: String,
    /// `owned_by` (vLLM: "vllm"; `soup serve`: "soup").
    pub owned_by: Option<String>,
    /// vLLM names a LoRA's base model here; None for a base model.
    pub parent: Option<String>,
}

/// One completion as the server returned it.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteCompletion {
    pub text: String,
    pub prompt_tokens: Option<usize>,
    pub completion_tokens: Option<usize>,
    pub finish_reason: Option<String>,
}

/// How often and how patiently a request is retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first try (so `retries + 1` tries in all).
    pub retries: u32,
    /// The first wait; each retry doubles it, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 5,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(16),
        }
    }
}

/// A connection to one server (cheap to share between threads: ureq's agent pools
/// connections behind an `Arc`).
#[derive(Clone)]
pub struct OpenAiClient {
    /// Ends in `/v1`, no trailing slash.
    base: String,
    key: Option<String>,
    key_env: Option<String>,
    agent: ureq::Agent,
    pub retry: RetryPolicy,
}

impl std::fmt::Debug for OpenAiClient {
    // Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiClient")
            .field("base", &self.base)
            .field("key_env", &self.key_env)
            .finish()
    }
}

/// `http://host:8000`, `http://host:8000/` and `http://host:8000/v1` all name the same API
/// root, `http://host:8000/v1`.
pub fn api_root(base_url: &str) -> String {
    let trimmed = base_url.trim().trim_end_matches('/');
    if trimmed.ends_with("/v1") {
        trimmed.to_string()
    } else {
        format!("{trimmed}/v1")
    }
}

impl OpenAiClient {
    /// A client for the server at `base_url`, with the API key read from the environment
    /// variable `api_key_env` (the key itself is never stored in a job spec or printed).
    pub fn new(base_url: &str, api_key_env: Option<&str>) -> Result<Self, RemoteError> {
        let key = match api_key_env {
            Some(var) => Some(
                std::env::var(var)
                    .ok()
                    .filter(|k| !k.is_empty())
                    .ok_or_else(|| RemoteError::MissingKey { var: var.into() })?,
            ),
            None => None,
        };
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            // A long generation on a busy server can take minutes; a dead one is caught by
            // the connect timeout and the retries.
            .timeout_read(Duration::from_secs(600))
            .build();
        Ok(OpenAiClient {
            base: api_root(base_url),
            key,
            key_env: api_key_env.map(str::to_string),
            agent,
            retry: RetryPolicy::default(),
        })
    }

    /// The API root requests go to (`.../v1`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /v1/models`.
    pub fn models(&self) -> Result<Vec<RemoteModel>, RemoteError> {
        let url = format!("{}/models", self.base);
        let body = self.send("GET", &url, None)?;
        let v: Value = parse_json(&url, &body)?;
        let data =
            v.get("data")
                .and_then(Value::as_array)
                .ok_or_else(|| RemoteError::BadResponse {
                    url: url.clone(),
                    message: "no \"data\" list in the model listing".into(),
                })?;
        Ok(data
            .iter()
            .filter_map(|m| {
                Some(RemoteModel {
                    id: m.get("id")?.as_str()?.to_string(),
                    owned_by: m
                        .get("owned_by")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    parent: m.get("parent").and_then(Value::as_str).map(str::to_string),
                })
            })
            .collect())
    }

    /// The request body of one completion: greedy when `settings.temperature` is 0, the
    /// task's stop strings, `max_tokens`, the seed.
    pub fn completion_body(model: &str, prompt: &str, settings: &GenSettings) -> Value {
        let mut body = json!({
            "model": model,
            "prompt": prompt,
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "seed": settings.seed,
            "n": 1,
            "stream": false,
        });
        if settings.temperature > 0.0 && settings.top_p < 1.0 {
            body["top_p"] = json!(settings.top_p);
        }
        let stop: Vec<&String> = settings.stop.iter().filter(|s| !s.is_empty()).collect();
        if !stop.is_empty() {
            body["stop"] = json!(stop);
        }
        body
    }

    /// `POST /v1/completions` for one prompt. A 404 that names the model becomes
    /// [`RemoteError::ModelNotFound`] with the server's list.
    pub fn complete(
        &self,
        model: &str,
        prompt: &str,
        settings: &GenSettings,
    ) -> Result<RemoteCompletion, RemoteError> {
        let url = format!("{}/completions", self.base);
        let body = Self::completion_body(model, prompt, settings);
        let text = match self.send("POST", &url, Some(&body)) {
            Ok(t) => t,
            Err(RemoteError::Status {
                status: 404 | 400,
                message,
                ..
            }) if message.contains(model) || message.to_lowercase().contains("model") => {
                let available = self
                    .models()
                    .map(|ms| ms.into_iter().map(|m| m.id).collect())
                    .unwrap_or_default();
                return Err(RemoteError::ModelNotFound {
                    url: self.base.clone(),
                    model: model.into(),
                    available,
                    hint: format!(" (the server said: {message})"),
                });
            }
            Err(e) => return Err(e),
        };
        let v = parse_json(&url, &text)?;
        let choice = v
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
            .ok_or_else(|| RemoteError::BadResponse {
                url: url.clone(),
                message: "no choices in the completion".into(),
            })?;
        let out =
            choice
                .get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| RemoteError::BadResponse {
                    url: url.clone(),
                    message: "the first choice has no \"text\"".into(),
                })?;
        let usage = |k: &str| {
            v.get("usage")
                .and_then(|u| u.get(k))
                .and_then(Value::as_u64)
                .map(|n| n as usize)
        };
        Ok(RemoteCompletion {
            text: out.to_string(),
            prompt_tokens: usage("prompt_tokens"),
            completion_tokens: usage("completion_tokens"),
            finish_reason: choice
                .get("finish_reason")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }

    /// vLLM's `POST /v1/load_lora_adapter`: registers the PEFT directory at `path` (a path
    /// the *server* can read) under `name`. An adapter already loaded under that name is not
    /// an error (the name is derived from the adapter's content).
    pub fn load_lora_adapter(&self, name: &str, path: &str) -> Result<(), RemoteError> {
        let url = format!("{}/load_lora_adapter", self.base);
        let body = json!({ "lora_name": name, "lora_path": path });
        match self.send("POST", &url, Some(&body)) {
            Ok(_) => Ok(()),
            Err(RemoteError::Status {
                status: 400 | 409,
                message,
                ..
            }) if message.contains("already") => Ok(()),
            Err(RemoteError::Status {
                status: status @ (404 | 405),
                ..
            }) => Err(RemoteError::NoAdapterApi { url, status }),
            Err(e) => Err(e),
        }
    }

    /// One request with retries: 429, 5xx and transport failures are retried after a growing
    /// wait (the server's `Retry-After` when it gives one); anything else fails at once.
    fn send(&self, method: &str, url: &str, body: Option<&Value>) -> Result<String, RemoteError> {
        let mut wait = self.retry.backoff;
        let mut attempt = 0;
        loop {
            let mut refused = false;
            let mut req = self.agent.request(method, url);
            if let Some(k) = &self.key {
                req = req.set("Authorization", &format!("Bearer {k}"));
            }
            let result = match body {
                Some(b) => req.send_json(b.clone()),
                None => req.call(),
            };
            let (err, retry_after) = match result {
                Ok(resp) => {
                    return resp.into_string().map_err(|e| RemoteError::BadResponse {
                        url: url.into(),
                        message: format!("could not read the body: {e}"),
                    })
                }
                Err(ureq::Error::Status(status, resp)) => {
                    let retry_after = resp
                        .header("Retry-After")
                        .and_then(|s| s.trim().parse::<f64>().ok())
                        .filter(|s| s.is_finite() && *s >= 0.0)
                        .map(|s| Duration::from_secs_f64(s.min(60.0)));
                    let message = error_message(resp.into_string().unwrap_or_default());
                    let err = if status == 401 {
                        RemoteError::Unauthorized {
                            url: url.into(),
                            var: self.key_env.clone(),
                        }
                    } else {
                        RemoteError::Status {
                            url: url.into(),
                            status,
                            message,
                        }
                    };
                    if status != 429 && status < 500 {
                        return Err(err);
                    }
                    (err, retry_after)
                }
                Err(ureq::Error::Transport(t)) => {
                    // Nothing listening or no such host is more often a wrong --base-url than
                    // a server restarting: two quick retries, not the full patience.
                    refused = matches!(
                        t.kind(),
                        ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns
                    );
                    (
                        RemoteError::Unreachable {
                            url: url.into(),
                            message: t.to_string(),
                        },
                        None,
                    )
                }
            };
            let limit = if refused {
                self.retry.retries.min(2)
            } else {
                self.retry.retries
            };
            if attempt >= limit {
                return Err(err);
            }
            attempt += 1;
            let pause = retry_after.unwrap_or(wait);
            tracing::warn!("{err}; retry {attempt}/{limit} in {pause:?}");
            std::thread::sleep(pause);
            wait = (wait * 2).min(self.retry.max_backoff);
        }
    }
}

fn parse_json(url: &str, text: &str) -> Result<Value, RemoteError> {
    serde_json::from_str(text).map_err(|e| RemoteError::BadResponse {
        url: url.into(),
        message: format!(
            "not JSON ({e}): {}",
            text.chars().take(200).collect::<String>()
        ),
    })
}

/// The message of an error body: OpenAI's `{"error": {"message"}}`, FastAPI's `{"detail"}`,
/// vLLM's `{"message"}`, else the text itself (shortened).
fn error_message(body: String) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(&body) {
        let candidates = [
            v.pointer("/error/message"),
            v.get("error").filter(|e| e.is_string()),
            v.get("message"),
            v.get("detail"),
        ];
        for c in candidates.into_iter().flatten() {
            if let Some(s) = c.as_str() {
                return s.to_string();
            }
            if !c.is_null() {
                return c.to_string();
            }
        }
    }
    let short: String = body.chars().take(300).collect();
    if short.trim().is_empty() {
        "(empty body)".into()
    } else {
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_root_accepts_common_spellings() {
        for url in [
            "http://h:8000",
            "http://h:8000/",
            "http://h:8000/v1",
            "http://h:8000/v1/",
        ] {
            assert_eq!(api_root(url), "http://h:8000/v1", "{url}");
        }
    }

    #[test]
    fn error_messages_are_found_in_each_shape() {
        assert_eq!(
            error_message(r#"{"error":{"message":"boom","type":"x"}}"#.into()),
            "boom"
        );
        assert_eq!(error_message(r#"{"detail":"nope"}"#.into()), "nope");
        assert_eq!(error_message(r#"{"message":"m","code":400}"#.into()), "m");
        assert_eq!(error_message("plain".into()), "plain");
        assert_eq!(error_message(String::new()), "(empty body)");
    }

    #[test]
    fn greedy_body_has_stops_and_no_top_p() {
        let s = GenSettings {
            max_new_tokens: 7,
            stop: vec!["\n\n".into(), String::new()],
            ..Default::default()
        };
        let b = OpenAiClient::completion_body("m", "p", &s);
        assert_eq!(b["max_tokens"], 7);
        assert_eq!(b["temperature"], 0.0);
        assert_eq!(b["stop"], json!(["\n\n"]));
        assert!(b.get("top_p").is_none());
        let b = OpenAiClient::completion_body("m", "p", &GenSettings::default());
        assert!(b.get("stop").is_none(), "no empty stop list: {b}");
    }

    #[test]
    fn missing_key_names_the_variable() {
        let err = OpenAiClient::new("http://h", Some("SOUP_TEST_SURELY_UNSET_KEY_VAR"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("SOUP_TEST_SURELY_UNSET_KEY_VAR"), "{err}");
    }
}
