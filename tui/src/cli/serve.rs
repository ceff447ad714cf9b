//! `soup serve`: the base model, stored adapters, CAT adapters and compositions written as in
//! `soup eval --merge` behind OpenAI's HTTP API (`/v1/models`, `/v1/completions`,
//! `/v1/chat/completions`, streaming with server-sent events), so chat front-ends, agents and
//! lm-evaluation-harness can use a soup where they already are.
//!
//! HTTP runs on a single-threaded tokio runtime with axum; the model runs on its own thread
//! ([`soup_core::serve::ServeEngine`]: continuous batching per composition, round robin
//! between compositions), so a long generation never blocks the accept loop. Limits (token
//! budget, concurrent requests, body size) and the API key are checked before a request
//! reaches the engine; every error has OpenAI's shape `{"error": {message, type, param, code}}`.

use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use clap::Args;
use serde_json::{json, Value};
use soup_core::engine::EvalTarget;
use soup_core::model::tokenizer::ChatMessage;
use soup_core::runtime::LoadedModel;
use soup_core::serve::{
    Event, Finished, RequestSpec, ServeConfig, ServeEngine, Submit, TokenLogprob,
};
use soup_store::Store;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, Semaphore};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on; 0 picks a free one (the ready line on stdout says which).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// The base model: a model name (`soup model list`), `default`, an HF directory or a
    /// GGUF file.
    #[arg(long, default_value = "default")]
    model: String,
    /// Require `Authorization: Bearer KEY`, KEY read from this environment variable; without
    /// it, requests need no key (bind to 127.0.0.1 then, the default --host).
    #[arg(long, value_name = "VAR")]
    api_key_env: Option<String>,
    /// Most new tokens one request may ask for.
    #[arg(long, default_value_t = 2048)]
    max_tokens: usize,
    /// Requests served at once (waiting or running); more are refused with 429.
    #[arg(long, default_value_t = 64)]
    max_concurrent: usize,
    /// Largest request body in bytes; larger ones are refused with 413.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Rows decoded together per composition (continuous batching).
    #[arg(long, default_value_t = 16)]
    max_batch: usize,
    /// Compositions kept built; the least recently used is rebuilt when asked for again.
    #[arg(long, default_value_t = 8)]
    cache_compositions: usize,
}

/// What every handler shares.
struct AppState {
    engine: std::sync::Mutex<std::sync::mpsc::Sender<Submit>>,
    model: Arc<LoadedModel>,
    /// The names that mean the base model: its recorded name, `default`, what --model said.
    base_names: Vec<String>,
    store: Option<Arc<Store>>,
    /// Why the store is not open (another process holds it), for 404 messages.
    store_note: Option<String>,
    api_key: Option<String>,
    max_tokens: usize,
    max_body_bytes: usize,
    slots: Arc<Semaphore>,
    max_concurrent: usize,
}

type Shared = Arc<AppState>;

/// An error in OpenAI's shape with its HTTP status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

impl ApiError {
    fn invalid(param: Option<&'static str>, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            message: message.into(),
            param,
            code: None,
        }
    }

    fn with(status: StatusCode, kind: &'static str, code: &'static str, msg: String) -> Self {
        ApiError {
            status,
            kind,
            message: msg,
            param: None,
            code: Some(code),
        }
    }

    fn body(&self) -> Value {
        json!({ "error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        r.extensions_mut().insert(LogInfo {
            model: String::new(),
            prompt_tokens: 0,
            completion_tokens: 0,
            error: Some(self.message),
        });
        r
    }
}

/// What the request log line says about a response, put in its extensions by the handler.
#[derive(Debug, Clone)]
struct LogInfo {
    model: String,
    prompt_tokens: usize,
    completion_tokens: usize,
    error: Option<String>,
}

/// A streamed response logs itself when its stream ends.
#[derive(Debug, Clone)]
struct LoggedByStream;

pub fn run(ctx: &super::Ctx, args: ServeArgs) -> Result<()> {
    let api_key = match &args.api_key_env {
        Some(var) => Some(
            std::env::var(var)
                .ok()
                .filter(|k| !k.is_empty())
                .with_context(|| {
                    format!("--api-key-env {var}: the environment variable {var} is not set (or empty); export it with the key clients must send")
                })?,
        ),
        None => None,
    };
    for (flag, v) in [
        ("--max-tokens", args.max_tokens),
        ("--max-concurrent", args.max_concurrent),
        ("--max-body-bytes", args.max_body_bytes),
        ("--max-batch", args.max_batch),
        ("--cache-compositions", args.cache_compositions),
    ] {
        if v == 0 {
            anyhow::bail!("{flag} must be at least 1");
        }
    }
    let (store, store_note) = open_store(ctx)?;
    let device = ctx.device()?;
    let (name, path) =
        soup_core::runtime::locate_model(store.as_deref(), &ctx.data_dir, &args.model)?;
    let model = Arc::new(
        soup_core::runtime::load_model_at(&name, &path, &device, ctx.precision(&device))
            .with_context(|| format!("loading model {}", path.display()))?,
    );
    let mut base_names = vec![
        model.name.clone(),
        "default".to_string(),
        args.model.clone(),
    ];
    base_names.dedup();
    let engine = ServeEngine::new(
        model.clone(),
        store.clone(),
        ServeConfig {
            max_batch: args.max_batch,
            cache_size: args.cache_compositions,
            merge_seed: 0,
        },
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::Builder::new()
        .name("soup-serve-engine".into())
        .spawn(move || engine.run(rx))
        .context("starting the engine thread")?;
    let state = Arc::new(AppState {
        engine: std::sync::Mutex::new(tx),
        model,
        base_names,
        store,
        store_note,
        api_key,
        max_tokens: args.max_tokens,
        max_body_bytes: args.max_body_bytes,
        slots: Arc::new(Semaphore::new(args.max_concurrent)),
        max_concurrent: args.max_concurrent,
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    let served = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {}:{} (in use? pick another --port, or 0 for a free one)",
                    args.host, args.port
                )
            })?;
        let addr = listener.local_addr()?;
        let mut out = std::io::stdout();
        writeln!(out, "soup serve: listening on http://{addr}")?;
        out.flush()?;
        axum::serve(listener, app(state))
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("serving HTTP")
    });
    // Every handler has returned and the app (with its sender) is dropped: the engine
    // finishes what it holds and its loop ends.
    if worker.join().is_err() {
        anyhow::bail!("the engine thread panicked");
    }
    served?;
    eprintln!("soup serve: stopped");
    Ok(())
}

/// The data dir's store; when another soup process holds it (sled allows one process), the
/// server still runs on the base model and says what holds the store and what to do.
fn open_store(ctx: &super::Ctx) -> Result<(Option<Arc<Store>>, Option<String>)> {
    match Store::open(&ctx.data_dir) {
        Ok(s) => Ok((Some(Arc::new(s)), None)),
        Err(e @ soup_store::StoreError::Locked { .. }) => {
            let note = format!(
                "{e}. sled lets one process open a database, so stored adapters cannot be served meanwhile: quit that process and restart `soup serve`, or serve a copy (`cp -r {dir} COPY && soup serve --data-dir COPY`)",
                dir = ctx.data_dir.display()
            );
            eprintln!("warning: {note}; serving the base model only");
            Ok((None, Some(note)))
        }
        Err(e) => Err(e.into()),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    eprintln!("soup serve: shutting down (finishing requests in flight)");
}

/// The router: routes, the API key check and the per-request log line as layers.
fn app(state: Shared) -> Router {
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), check_key))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::with(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "not_found",
        format!(
            "no route {} {}: soup serve answers GET /v1/models, POST /v1/completions and POST /v1/chat/completions",
            req.method(),
            req.uri().path()
        ),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::with(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

async fn check_key(State(state): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match given {
            Some(g) if constant_time_eq(g.as_bytes(), key.as_bytes()) => {}
            Some(_) => {
                return ApiError::with(
                    StatusCode::UNAUTHORIZED,
                    "authentication_error",
                    "invalid_api_key",
                    "incorrect API key provided".into(),
                )
                .into_response()
            }
            None => {
                return ApiError::with(
                    StatusCode::UNAUTHORIZED,
                    "authentication_error",
                    "invalid_api_key",
                    "missing API key: send `Authorization: Bearer KEY`".into(),
                )
                .into_response()
            }
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let t0 = Instant::now();
    let resp = next.run(req).await;
    if resp.extensions().get::<LoggedByStream>().is_none() {
        let info = resp.extensions().get::<LogInfo>().cloned();
        log_line(&method, &path, resp.status(), info.as_ref(), t0);
    }
    resp
}

/// One line per request on stderr:
/// `soup serve: POST /v1/completions 200 model=NAME prompt_tokens=P completion_tokens=C
/// seconds=S tokens_per_s=R` (and `error="..."` when it failed).
fn log_line(method: &Method, path: &str, status: StatusCode, info: Option<&LogInfo>, t0: Instant) {
    let secs = t0.elapsed().as_secs_f64();
    let (model, p, c, err) = match info {
        Some(i) => (
            i.model.as_str(),
            i.prompt_tokens,
            i.completion_tokens,
            i.error.as_deref(),
        ),
        None => ("-", 0, 0, None),
    };
    let model = if model.is_empty() { "-" } else { model };
    let mut line = format!(
        "soup serve: {method} {path} {} model={model} prompt_tokens={p} completion_tokens={c} seconds={secs:.3} tokens_per_s={:.1}",
        status.as_u16(),
        c as f64 / secs.max(1e-9)
    );
    if let Some(e) = err {
        line.push_str(&format!(" error={e:?}"));
    }
    eprintln!("{line}");
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn new_id(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{:x}{:04x}",
        now_s(),
        N.fetch_add(1, Ordering::Relaxed) & 0xffff
    )
}

async fn list_models(State(state): State<Shared>) -> Response {
    let mut data = vec![json!({
        "id": state.model.name,
        "object": "model",
        "created": 0,
        "owned_by": "soup",
        "kind": "base",
    })];
    if let Some(store) = &state.store {
        match store.list_adapters() {
            Ok(listing) => {
                for a in listing.items {
                    data.push(json!({
                        "id": a.name,
                        "object": "model",
                        "created": a.created / 1000,
                        "owned_by": "soup",
                        "kind": if a.cat_weights.is_some() { "cat" } else { "adapter" },
                        "base_model": a.base_model,
                        "parent": state.model.name,
                    }));
                }
            }
            Err(e) => {
                return ApiError::with(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "store_error",
                    format!("cannot list adapters: {e}"),
                )
                .into_response()
            }
        }
    }
    axum::Json(json!({ "object": "list", "data": data })).into_response()
}

/// The names a request's `model` may take, for the 404 message.
fn known_models(state: &AppState) -> String {
    let mut names = vec![state.model.name.clone()];
    if let Some(store) = &state.store {
        if let Ok(l) = store.list_adapters() {
            names.extend(l.items.into_iter().map(|a| a.name));
        }
    }
    let mut msg = format!(
        "available: {} (or a composition METHOD:A,B:W1,W2 of stored adapters, e.g. ties:math,code:0.5,0.5; see GET /v1/models)",
        names.join(", ")
    );
    if let Some(note) = &state.store_note {
        msg.push_str(&format!("; stored adapters are unavailable: {note}"));
    }
    msg
}

/// What a request's `model` names: the base model, a stored (or CAT) adapter, or a
/// composition parsed exactly as `soup eval --merge` parses it.
fn resolve_model(state: &AppState, name: &str) -> Result<EvalTarget, ApiError> {
    let not_found = |what: String| ApiError {
        status: StatusCode::NOT_FOUND,
        kind: "invalid_request_error",
        message: format!("{what}; {}", known_models(state)),
        param: Some("model"),
        code: Some("model_not_found"),
    };
    if state.base_names.iter().any(|b| b == name) {
        return Ok(EvalTarget::Base);
    }
    let stored = |n: &str| -> Result<bool, ApiError> {
        match &state.store {
            Some(s) => s.get_adapter(n).map(|r| r.is_some()).map_err(|e| {
                ApiError::with(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "store_error",
                    format!("cannot read adapter {n:?}: {e}"),
                )
            }),
            None => Ok(false),
        }
    };
    if !name.contains(':') {
        if stored(name)? {
            return Ok(EvalTarget::Adapter(name.to_string()));
        }
        return Err(not_found(format!("the model {name:?} does not exist")));
    }
    let target = super::eval::parse_merge(name)
        .map_err(|e| ApiError::invalid(Some("model"), format!("model {name:?}: {e:#}")))?;
    if let EvalTarget::Merge { adapters, .. } = &target {
        for a in adapters {
            if !stored(a)? {
                return Err(not_found(format!(
                    "the composition {name:?} names {a:?}, which is not a stored adapter"
                )));
            }
        }
    }
    Ok(target)
}

/// The request body as JSON, refused with 413 past the size limit and 400 when malformed.
async fn read_json(
    state: &AppState,
    req: Request,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    let limit = state.max_body_bytes;
    let too_large = || {
        ApiError::with(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!(
                "the request body is larger than {limit} bytes (the server's --max-body-bytes)"
            ),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| too_large())?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid(None, format!("the request body is not valid JSON: {e}")))?;
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::invalid(
            None,
            "the request body must be a JSON object",
        )),
    }
}

/// The settings common to both endpoints, checked against the server's limits.
struct Common {
    model: String,
    target: EvalTarget,
    max_tokens: Option<usize>,
    temperature: f64,
    top_p: Option<f64>,
    seed: u64,
    stops: Vec<String>,
    stream: bool,
}

fn common(state: &AppState, body: &serde_json::Map<String, Value>) -> Result<Common, ApiError> {
    let model = match body.get("model") {
        Some(Value::String(s)) => s.clone(),
        _ => {
            return Err(ApiError::invalid(
                Some("model"),
                "`model` is required: the base model, a stored adapter or a composition (see GET /v1/models)",
            ))
        }
    };
    let number = |key: &'static str| -> Result<Option<f64>, ApiError> {
        match body.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(_) => Err(ApiError::invalid(
                Some(key),
                format!("`{key}` must be a number"),
            )),
        }
    };
    let max_tokens = match body
        .get("max_tokens")
        .or_else(|| body.get("max_completion_tokens"))
    {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            ApiError::invalid(
                Some("max_tokens"),
                "`max_tokens` must be a non-negative integer",
            )
        })? as usize),
    };
    if let Some(m) = max_tokens {
        if m > state.max_tokens {
            return Err(ApiError::invalid(
                Some("max_tokens"),
                format!(
                    "max_tokens {m} is above this server's limit of {} (its --max-tokens)",
                    state.max_tokens
                ),
            ));
        }
    }
    let temperature = number("temperature")?.unwrap_or(1.0);
    if !(temperature.is_finite() && (0.0..=2.0).contains(&temperature)) {
        return Err(ApiError::invalid(
            Some("temperature"),
            format!("temperature {temperature} must be in [0, 2] (0 is greedy)"),
        ));
    }
    let top_p = number("top_p")?;
    if let Some(p) = top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(ApiError::invalid(
                Some("top_p"),
                format!("top_p {p} must be in (0, 1]"),
            ));
        }
    }
    let seed = match body.get("seed") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_i64().map(|i| i as u64))
            .ok_or_else(|| ApiError::invalid(Some("seed"), "`seed` must be an integer"))?,
    };
    let stops = match body.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| {
                s.as_str().map(str::to_string).ok_or_else(|| {
                    ApiError::invalid(Some("stop"), "`stop` must be a string or a list of strings")
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ApiError::invalid(
                Some("stop"),
                "`stop` must be a string or a list of strings",
            ))
        }
    };
    match body.get("n") {
        None | Some(Value::Null) => {}
        Some(v) if v.as_u64() == Some(1) => {}
        Some(v) => {
            return Err(ApiError::invalid(
                Some("n"),
                format!("n {v}: soup serve returns one choice per prompt (n = 1); send the request again for more samples"),
            ))
        }
    }
    match body.get("best_of") {
        None | Some(Value::Null) => {}
        Some(v) if v.as_u64() == Some(1) => {}
        Some(v) => {
            return Err(ApiError::invalid(
                Some("best_of"),
                format!("best_of {v}: only 1 is supported"),
            ))
        }
    }
    let stream = matches!(body.get("stream"), Some(Value::Bool(true)));
    let target = resolve_model(state, &model)?;
    Ok(Common {
        model,
        target,
        max_tokens,
        temperature,
        top_p: top_p.filter(|&p| p < 1.0),
        seed,
        stops,
        stream,
    })
}

/// One prompt of a completions request: its token ids and its text (for `echo`).
struct PromptIn {
    ids: Vec<u32>,
    text: String,
}

/// `prompt` as OpenAI takes it: a string, a list of strings, a list of token ids or a list
/// of such lists. Text is tokenized as the local evaluation path tokenizes prompt text.
fn prompts(state: &AppState, v: Option<&Value>) -> Result<Vec<PromptIn>, ApiError> {
    let tok = &state.model.tokenizer;
    let bad = || {
        ApiError::invalid(
            Some("prompt"),
            "`prompt` must be a string, a list of strings, a list of token ids or a list of lists of token ids",
        )
    };
    let text = |s: &str| -> Result<PromptIn, ApiError> {
        let ids = tok
            .encode(s, true)
            .map_err(|e| ApiError::invalid(Some("prompt"), e.to_string()))?;
        Ok(PromptIn {
            ids,
            text: s.to_string(),
        })
    };
    let ids = |a: &[Value]| -> Result<PromptIn, ApiError> {
        let ids: Vec<u32> = a
            .iter()
            .map(|x| {
                x.as_u64()
                    .and_then(|i| u32::try_from(i).ok())
                    .ok_or_else(bad)
            })
            .collect::<Result<_, _>>()?;
        let vocab = state.model.model.cfg.vocab_size;
        if let Some(t) = ids.iter().find(|&&t| t as usize >= vocab) {
            return Err(ApiError::invalid(
                Some("prompt"),
                format!("token id {t} is outside the vocabulary ({vocab} tokens)"),
            ));
        }
        let text = tok
            .decode(&ids, false)
            .map_err(|e| ApiError::invalid(Some("prompt"), e.to_string()))?;
        Ok(PromptIn { ids, text })
    };
    let out = match v {
        Some(Value::String(s)) => vec![text(s)?],
        Some(Value::Array(a)) if a.is_empty() => return Err(bad()),
        Some(Value::Array(a)) if a.iter().all(Value::is_number) => vec![ids(a)?],
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => text(s),
                Value::Array(t) => ids(t),
                _ => Err(bad()),
            })
            .collect::<Result<_, _>>()?,
        None => return Err(ApiError::invalid(Some("prompt"), "`prompt` is required")),
        _ => return Err(bad()),
    };
    if let Some(i) = out.iter().position(|p| p.ids.is_empty()) {
        return Err(ApiError::invalid(
            Some("prompt"),
            format!("prompt {i} is empty after tokenization"),
        ));
    }
    Ok(out)
}

/// Holds one of the server's concurrent-request slots; 429 when none is free.
fn take_slots(state: &AppState, n: usize) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    if n > state.max_concurrent {
        return Err(ApiError::invalid(
            Some("prompt"),
            format!(
                "{n} prompts in one request, more than this server serves at once ({}, its --max-concurrent); split the request",
                state.max_concurrent
            ),
        ));
    }
    let n32 = u32::try_from(n).unwrap_or(u32::MAX);
    state.slots.clone().try_acquire_many_owned(n32).map_err(|_| {
        ApiError::with(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "rate_limit_exceeded",
            format!(
                "the server is serving its limit of {} concurrent prompts (--max-concurrent); retry shortly",
                state.max_concurrent
            ),
        )
    })
}

/// Events of one prompt, tagged with its index, into the handler's channel; closed when
/// the handler (or the stream, when its client hangs up) drops the receiver.
struct ChannelSink {
    tx: mpsc::UnboundedSender<(usize, Event)>,
    index: usize,
}

impl soup_core::serve::EventSink for ChannelSink {
    fn send(&mut self, event: Event) -> bool {
        self.tx.send((self.index, event)).is_ok()
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Hands the prompts to the engine; their events arrive tagged with the prompt's index.
fn submit(
    state: &AppState,
    c: &Common,
    specs: Vec<RequestSpec>,
) -> Result<mpsc::UnboundedReceiver<(usize, Event)>, ApiError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let engine = state
        .engine
        .lock()
        .map_err(|_| {
            ApiError::with(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "engine_gone",
                "the engine stopped".into(),
            )
        })?
        .clone();
    for (i, spec) in specs.into_iter().enumerate() {
        let tx = tx.clone();
        let sent = engine.send(Submit {
            key: c.model.clone(),
            target: c.target.clone(),
            spec,
            sink: Box::new(ChannelSink { tx, index: i }),
        });
        if sent.is_err() {
            return Err(ApiError::with(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "shutting_down",
                "the server is shutting down".into(),
            ));
        }
    }
    Ok(rx)
}

fn engine_error(e: soup_core::serve::ServeError) -> ApiError {
    if e.invalid_request {
        ApiError::invalid(None, e.message)
    } else {
        ApiError::with(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "generation_failed",
            e.message,
        )
    }
}

/// Waits for every prompt's result.
async fn collect(
    mut rx: mpsc::UnboundedReceiver<(usize, Event)>,
    n: usize,
) -> Result<Vec<Finished>, ApiError> {
    let mut out: Vec<Option<Finished>> = vec![None; n];
    let mut left = n;
    while left > 0 {
        match rx.recv().await {
            Some((i, Event::Done(f))) => {
                out[i] = Some(f);
                left -= 1;
            }
            Some((_, Event::Failed(e))) => return Err(engine_error(e)),
            Some((_, Event::Delta(_))) => {}
            None => {
                return Err(ApiError::with(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "engine_gone",
                    "the engine stopped before answering".into(),
                ))
            }
        }
    }
    Ok(out.into_iter().flatten().collect())
}

fn usage(done: &[Finished]) -> Value {
    let p: usize = done.iter().map(|f| f.prompt_tokens).sum();
    let c: usize = done.iter().map(|f| f.completion_tokens).sum();
    json!({ "prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c })
}

/// OpenAI's legacy `logprobs` object: tokens, their log-probabilities, the top
/// alternatives and each token's character offset in the choice's text.
fn logprobs_json(tokens: &[&TokenLogprob], start: usize) -> Value {
    let mut offset = start;
    let mut offsets = Vec::with_capacity(tokens.len());
    for t in tokens {
        offsets.push(offset);
        offset += t.text.chars().count();
    }
    json!({
        "tokens": tokens.iter().map(|t| t.text.clone()).collect::<Vec<_>>(),
        "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
        "top_logprobs": tokens.iter().map(|t| {
            if t.logprob.is_none() {
                Value::Null
            } else {
                // Two tokens may print alike (partial characters): keep the likelier.
                let mut top = serde_json::Map::new();
                for (s, v) in &t.top {
                    top.entry(s.clone()).or_insert_with(|| json!(v));
                }
                Value::Object(top)
            }
        }).collect::<Vec<_>>(),
        "text_offset": offsets,
    })
}

fn with_log(mut r: Response, model: &str, done: &[Finished]) -> Response {
    r.extensions_mut().insert(LogInfo {
        model: model.to_string(),
        prompt_tokens: done.iter().map(|f| f.prompt_tokens).sum(),
        completion_tokens: done.iter().map(|f| f.completion_tokens).sum(),
        error: None,
    });
    r
}

/// Most tokens a prompt may still generate within the model's context.
fn room(state: &AppState, prompt: usize) -> usize {
    state
        .model
        .model
        .cfg
        .max_position_embeddings
        .saturating_sub(prompt)
}

async fn completions(State(state): State<Shared>, req: Request) -> Response {
    match completions_inner(state, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn completions_inner(state: Shared, req: Request) -> Result<Response, ApiError> {
    let body = read_json(&state, req).await?;
    let c = common(&state, &body)?;
    let echo = matches!(body.get("echo"), Some(Value::Bool(true)));
    let logprobs = match body.get("logprobs") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(k) if k <= 20 => Some(k as usize),
            _ => {
                return Err(ApiError::invalid(
                    Some("logprobs"),
                    "`logprobs` must be an integer from 0 to 20",
                ))
            }
        },
    };
    let ps = prompts(&state, body.get("prompt"))?;
    // OpenAI's default for completions.
    let max_new = c.max_tokens.unwrap_or(16);
    let specs: Vec<RequestSpec> = ps
        .iter()
        .map(|p| RequestSpec {
            prompt: p.ids.clone(),
            max_new_tokens: max_new,
            temperature: c.temperature,
            top_p: c.top_p,
            seed: c.seed,
            stops: c.stops.clone(),
            logprobs,
            prompt_logprobs: echo && logprobs.is_some(),
        })
        .collect();
    let permit = take_slots(&state, specs.len())?;
    let rx = submit(&state, &c, specs)?;
    let id = new_id("cmpl");
    let created = now_s();
    if c.stream {
        let echoes: Vec<Option<String>> = ps.iter().map(|p| echo.then(|| p.text.clone())).collect();
        let model = c.model.clone();
        let chunk = move |i: usize, text: &str, finish: Option<&str>| {
            json!({
                "id": id, "object": "text_completion", "created": created, "model": model,
                "choices": [{ "index": i, "text": text, "logprobs": null, "finish_reason": finish }],
            })
        };
        return Ok(stream_response(
            rx,
            ps.len(),
            c.model.clone(),
            "/v1/completions",
            permit,
            echoes,
            chunk,
        ));
    }
    let done = collect(rx, ps.len()).await?;
    drop(permit);
    let choices: Vec<Value> = done
        .iter()
        .zip(&ps)
        .enumerate()
        .map(|(i, (f, p))| {
            let text = if echo {
                format!("{}{}", p.text, f.text)
            } else {
                f.text.clone()
            };
            let lp = logprobs.map(|_| {
                let toks: Vec<&TokenLogprob> = if echo {
                    f.prompt_logprobs.iter().chain(&f.logprobs).collect()
                } else {
                    f.logprobs.iter().collect()
                };
                logprobs_json(&toks, 0)
            });
            json!({
                "index": i,
                "text": text,
                "logprobs": lp,
                "finish_reason": f.finish_reason.as_str(),
            })
        })
        .collect();
    let r = axum::Json(json!({
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": c.model,
        "choices": choices,
        "usage": usage(&done),
    }))
    .into_response();
    Ok(with_log(r, &c.model, &done))
}

async fn chat_completions(State(state): State<Shared>, req: Request) -> Response {
    match chat_inner(state, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// A message's content: a string, or OpenAI's list of parts (text parts joined).
fn message_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => Some(String::new()),
        Value::Array(parts) => parts
            .iter()
            .map(|p| {
                if p.get("type").and_then(Value::as_str) == Some("text") {
                    p.get("text").and_then(Value::as_str).map(str::to_string)
                } else {
                    None
                }
            })
            .collect::<Option<Vec<_>>>()
            .map(|t| t.concat()),
        _ => None,
    }
}

async fn chat_inner(state: Shared, req: Request) -> Result<Response, ApiError> {
    let body = read_json(&state, req).await?;
    let c = common(&state, &body)?;
    let msgs = body
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                Some("messages"),
                "`messages` must be a non-empty list of {role, content}",
            )
        })?;
    let mut messages = Vec::with_capacity(msgs.len());
    for m in msgs {
        let role = m.get("role").and_then(Value::as_str);
        let content = m.get("content").and_then(message_text);
        match (role, content) {
            (Some(r), Some(t)) => messages.push(ChatMessage::new(r, t)),
            _ => {
                return Err(ApiError::invalid(
                    Some("messages"),
                    "each message needs a string `role` and a `content` (a string or a list of text parts)",
                ))
            }
        }
    }
    if !state.model.is_chat() {
        return Err(ApiError::invalid(
            Some("messages"),
            format!(
                "model {} has no chat template: use POST /v1/completions with a plain prompt",
                state.model.name
            ),
        ));
    }
    let rendered = state
        .model
        .render_chat(&messages)
        .map_err(|e| ApiError::invalid(Some("messages"), e.to_string()))?;
    // Tokenized as the local evaluation path tokenizes a rendered chat prompt.
    let ids = state
        .model
        .tokenizer
        .encode(&rendered, true)
        .map_err(|e| ApiError::invalid(Some("messages"), e.to_string()))?;
    let max_new = c
        .max_tokens
        .unwrap_or_else(|| state.max_tokens.min(room(&state, ids.len())));
    let spec = RequestSpec {
        prompt: ids,
        max_new_tokens: max_new,
        temperature: c.temperature,
        top_p: c.top_p,
        seed: c.seed,
        stops: c.stops.clone(),
        logprobs: None,
        prompt_logprobs: false,
    };
    let permit = take_slots(&state, 1)?;
    let rx = submit(&state, &c, vec![spec])?;
    let id = new_id("chatcmpl");
    let created = now_s();
    if c.stream {
        let model = c.model.clone();
        let chunk = move |i: usize, text: &str, finish: Option<&str>| {
            let delta = if finish.is_some() {
                json!({})
            } else {
                json!({ "role": "assistant", "content": text })
            };
            json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{ "index": i, "delta": delta, "logprobs": null, "finish_reason": finish }],
            })
        };
        return Ok(stream_response(
            rx,
            1,
            c.model.clone(),
            "/v1/chat/completions",
            permit,
            vec![None],
            chunk,
        ));
    }
    let done = collect(rx, 1).await?;
    drop(permit);
    let f = &done[0];
    let r = axum::Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": c.model,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": f.text },
            "logprobs": null,
            "finish_reason": f.finish_reason.as_str(),
        }],
        "usage": usage(&done),
    }))
    .into_response();
    Ok(with_log(r, &c.model, &done))
}

/// Server-sent events: one `data: {chunk}` per delta, a closing chunk with each choice's
/// finish reason, then `data: [DONE]`. An error after the stream began is sent as a
/// `data: {"error": ...}` event (the status line is already out). Logs the request at its end.
fn stream_response(
    mut rx: mpsc::UnboundedReceiver<(usize, Event)>,
    n: usize,
    model: String,
    path: &'static str,
    permit: tokio::sync::OwnedSemaphorePermit,
    echoes: Vec<Option<String>>,
    chunk: impl Fn(usize, &str, Option<&str>) -> Value + Send + 'static,
) -> Response {
    let t0 = Instant::now();
    let stream = async_stream(move |out: mpsc::UnboundedSender<String>| async move {
        let _permit = permit;
        let send = |v: &Value| out.send(format!("data: {v}\n\n")).is_ok();
        for (i, e) in echoes.iter().enumerate() {
            if let Some(text) = e {
                if !send(&chunk(i, text, None)) {
                    return;
                }
            }
        }
        let mut left = n;
        let (mut p, mut c) = (0, 0);
        let mut error = None;
        while left > 0 {
            // A client that hung up ends the wait at once: dropping `rx` tells the engine.
            let next = tokio::select! {
                m = rx.recv() => m,
                _ = out.closed() => return,
            };
            match next {
                Some((i, Event::Delta(t))) => {
                    if !send(&chunk(i, &t, None)) {
                        return;
                    }
                }
                Some((i, Event::Done(f))) => {
                    p += f.prompt_tokens;
                    c += f.completion_tokens;
                    left -= 1;
                    if !send(&chunk(i, "", Some(f.finish_reason.as_str()))) {
                        return;
                    }
                }
                Some((_, Event::Failed(e))) => {
                    let e = engine_error(e);
                    send(&e.body());
                    error = Some(e.message);
                    break;
                }
                None => {
                    error = Some("the engine stopped before answering".to_string());
                    break;
                }
            }
        }
        let _ = out.send("data: [DONE]\n\n".to_string());
        let info = LogInfo {
            model,
            prompt_tokens: p,
            completion_tokens: c,
            error,
        };
        log_line(&Method::POST, path, StatusCode::OK, Some(&info), t0);
    });
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r.extensions_mut().insert(LoggedByStream);
    r
}

/// A stream of strings fed by a task: the task writes into the sender, the body reads the
/// receiver; when the client goes away the receiver drops and the task's sends fail.
fn async_stream<F, Fut>(
    f: F,
) -> impl futures::Stream<Item = Result<String, std::convert::Infallible>> + Send + 'static
where
    F: FnOnce(mpsc::UnboundedSender<String>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(f(tx));
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|s| (Ok(s), rx)) },
    )
}

#[cfg(test)]
mod tests;
