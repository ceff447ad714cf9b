//! The HTTP layer over real sockets on the tiny fixture model: OpenAI's error shapes and
//! status codes, the limits (body size 413, concurrency 429, token budget 400), the API key
//! (401), and answers equal to the local generation path.

use super::*;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/reference")
}

struct Limits {
    api_key: Option<String>,
    max_tokens: usize,
    max_concurrent: usize,
    max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            api_key: None,
            max_tokens: 64,
            max_concurrent: 8,
            max_body_bytes: 1 << 20,
        }
    }
}

/// A server on the tiny model (no store) on a free port, running until the test ends.
fn start(limits: Limits) -> (SocketAddr, Arc<LoadedModel>) {
    let dev = candle_core::Device::Cpu;
    let model = Arc::new(
        soup_core::runtime::load_model_at(
            "tiny-llama",
            &fixtures().join("tiny-llama"),
            &dev,
            soup_core::device::Precision::F32,
        )
        .expect("tiny model"),
    );
    let engine = ServeEngine::new(model.clone(), None, ServeConfig::default());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || engine.run(rx));
    let state = Arc::new(AppState {
        engine: std::sync::Mutex::new(tx),
        model: model.clone(),
        base_names: vec!["tiny-llama".into(), "default".into()],
        store: None,
        store_note: None,
        api_key: limits.api_key,
        max_tokens: limits.max_tokens,
        max_body_bytes: limits.max_body_bytes,
        slots: Arc::new(Semaphore::new(limits.max_concurrent)),
        max_concurrent: limits.max_concurrent,
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(l, app(state)).await.unwrap();
        });
    });
    (addr, model)
}

/// Sends one HTTP/1.1 request and returns (status, body). Chunked bodies are returned raw.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn post(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let (status, text) = http(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    );
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}")),
    )
}

/// An error body in OpenAI's shape, with the type and param expected.
fn assert_error(body: &Value, kind: &str, param: Option<&str>) {
    let e = &body["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(e["type"], kind, "{body}");
    assert!(
        e.get("param").is_some() && e.get("code").is_some(),
        "{body}"
    );
    if let Some(p) = param {
        assert_eq!(e["param"], p, "{body}");
    }
}

#[test]
fn errors_have_openai_shape_and_status() {
    let (addr, _) = start(Limits::default());
    let (s, b) = post(
        addr,
        "/v1/completions",
        &json!({"model": "no-such", "prompt": "x"}),
    );
    assert_eq!(s, 404);
    assert_error(&b, "invalid_request_error", Some("model"));
    assert_eq!(b["error"]["code"], "model_not_found");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tiny-llama"),
        "{b}"
    );

    let (s, text) = http(addr, "POST", "/v1/completions", &[], b"{not json");
    assert_eq!(s, 400);
    assert_error(
        &serde_json::from_str(&text).unwrap(),
        "invalid_request_error",
        None,
    );

    for (body, param) in [
        (json!({"prompt": "x"}), "model"),
        (json!({"model": "default", "prompt": "x", "n": 2}), "n"),
        (
            json!({"model": "default", "prompt": "x", "max_tokens": 65}),
            "max_tokens",
        ),
        (
            json!({"model": "default", "prompt": "x", "temperature": -1}),
            "temperature",
        ),
        (
            json!({"model": "default", "prompt": "x", "top_p": 0}),
            "top_p",
        ),
        (json!({"model": "default", "prompt": 3}), "prompt"),
        (
            json!({"model": "default", "prompt": "x", "logprobs": 99}),
            "logprobs",
        ),
        (
            json!({"model": "default", "prompt": "x", "stop": 5}),
            "stop",
        ),
        (json!({"model": "default", "messages": []}), "messages"),
    ] {
        let path = if body.get("messages").is_some() {
            "/v1/chat/completions"
        } else {
            "/v1/completions"
        };
        let (s, b) = post(addr, path, &body);
        assert_eq!(s, 400, "{body} -> {b}");
        assert_error(&b, "invalid_request_error", Some(param));
    }
    // More than the model's context: refused by the engine as the client's mistake.
    let long = "word ".repeat(400);
    let (s, b) = post(
        addr,
        "/v1/completions",
        &json!({"model": "default", "prompt": long, "max_tokens": 4}),
    );
    assert_eq!(s, 400, "{b}");
    assert_error(&b, "invalid_request_error", None);

    let (s, text) = http(addr, "GET", "/v2/nothing", &[], b"");
    assert_eq!(s, 404);
    assert_error(
        &serde_json::from_str(&text).unwrap(),
        "invalid_request_error",
        None,
    );
    let (s, text) = http(addr, "GET", "/v1/completions", &[], b"");
    assert_eq!(s, 405);
    assert_error(
        &serde_json::from_str(&text).unwrap(),
        "invalid_request_error",
        None,
    );
}

#[test]
fn body_size_limit_is_413() {
    let (addr, _) = start(Limits {
        max_body_bytes: 200,
        ..Default::default()
    });
    let big = json!({"model": "default", "prompt": "x".repeat(300)});
    let (s, b) = post(addr, "/v1/completions", &big);
    assert_eq!(s, 413);
    assert_error(&b, "invalid_request_error", None);
    let (s, _) = post(
        addr,
        "/v1/completions",
        &json!({"model": "default", "prompt": "x", "max_tokens": 1}),
    );
    assert_eq!(s, 200);
}

#[test]
fn api_key_is_required_when_set() {
    let (addr, _) = start(Limits {
        api_key: Some("sekret".into()),
        ..Default::default()
    });
    for headers in [vec![], vec![("Authorization", "Bearer wrong")]] {
        let (s, text) = http(addr, "GET", "/v1/models", &headers, b"");
        assert_eq!(s, 401);
        assert_error(
            &serde_json::from_str(&text).unwrap(),
            "authentication_error",
            None,
        );
    }
    let (s, text) = http(
        addr,
        "GET",
        "/v1/models",
        &[("Authorization", "Bearer sekret")],
        b"",
    );
    assert_eq!(s, 200);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "tiny-llama");
}

#[test]
fn concurrency_limit_is_429_and_frees_up() {
    let (addr, _) = start(Limits {
        max_concurrent: 1,
        max_tokens: 200,
        ..Default::default()
    });
    // A long streamed request holds the only slot while its stream is open.
    let mut held = TcpStream::connect(addr).unwrap();
    let body = json!({"model": "default", "prompt": "hello", "max_tokens": 200, "stream": true})
        .to_string();
    write!(
        held,
        "POST /v1/completions HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut first = [0u8; 12];
    held.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let (s, b) = post(
        addr,
        "/v1/completions",
        &json!({"model": "default", "prompt": "x", "max_tokens": 1}),
    );
    assert_eq!(s, 429, "{b}");
    assert_error(&b, "rate_limit_error", None);
    // Once the stream ends (or its client leaves), the slot is free again.
    let mut rest = Vec::new();
    held.read_to_end(&mut rest).unwrap();
    assert!(String::from_utf8_lossy(&rest).contains("data: [DONE]"));
    drop(held);
    let mut status = 0;
    for _ in 0..50 {
        status = post(
            addr,
            "/v1/completions",
            &json!({"model": "default", "prompt": "x", "max_tokens": 1}),
        )
        .0;
        if status == 200 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(status, 200);
}

#[test]
fn completions_answer_as_the_local_path() {
    let (addr, model) = start(Limits::default());
    let prompts = ["hello world", "one two three four five"];
    let settings = soup_evals::GenSettings {
        max_new_tokens: 10,
        stop: vec!["\n\n".into()],
        ..Default::default()
    };
    let stack = soup_core::lora::AdapterStack::base();
    let local = soup_core::runtime::TextGenerator {
        model: &model,
        stack: &stack,
        on_batch: None,
    }
    .complete(&prompts.map(String::from), &settings)
    .unwrap();
    let (s, b) = post(
        addr,
        "/v1/completions",
        &json!({"model": "tiny-llama", "prompt": prompts, "max_tokens": 10, "temperature": 0, "stop": "\n\n"}),
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["object"], "text_completion");
    for (i, c) in local.iter().enumerate() {
        assert_eq!(b["choices"][i]["index"], i);
        assert_eq!(b["choices"][i]["text"], c.text.as_str());
        let f = b["choices"][i]["finish_reason"].as_str().unwrap();
        assert!(f == "stop" || f == "length");
    }
    let total: usize = local.iter().map(|c| c.output_tokens).sum();
    assert_eq!(b["usage"]["completion_tokens"], total);
    assert_eq!(
        b["usage"]["total_tokens"],
        total + local.iter().map(|c| c.prompt_tokens).sum::<usize>()
    );

    // lm-evaluation-harness's loglikelihood request: echo, logprobs, one new token.
    let (s, b) = post(
        addr,
        "/v1/completions",
        &json!({"model": "default", "prompt": prompts[1], "max_tokens": 1, "temperature": 0, "echo": true, "logprobs": 1}),
    );
    assert_eq!(s, 200, "{b}");
    let lp = &b["choices"][0]["logprobs"];
    let n = b["usage"]["prompt_tokens"].as_u64().unwrap() as usize + 1;
    assert_eq!(lp["tokens"].as_array().unwrap().len(), n);
    assert_eq!(lp["token_logprobs"][0], Value::Null);
    for v in &lp["token_logprobs"].as_array().unwrap()[1..] {
        let v = v.as_f64().unwrap();
        assert!(v.is_finite() && v <= 0.0, "{v}");
    }
    assert_eq!(lp["top_logprobs"][1].as_object().unwrap().len(), 1);
    assert!(b["choices"][0]["text"]
        .as_str()
        .unwrap()
        .starts_with(prompts[1]));
}
