//! Tests: a small OpenAI-compatible HTTP server on 127.0.0.1 that answers `/v1/models`,
//! `/v1/completions` and `/v1/load_lora_adapter` with canned replies and records every request,
//! so the remote backend's request shape, retries, errors and concurrency are checked without
//! a model server or the network. Scripted replies (a 503, a 401, ...) are served first, in
//! order, before the default behaviour.

use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    /// The JSON body, or Null.
    pub body: Value,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == &name.to_lowercase())
            .map(|(_, v)| v.as_str())
    }
}

/// A reply served instead of the default one.
#[derive(Debug, Clone)]
pub struct Scripted {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

/// What completions answer: the request body in, the text out.
pub type Completer = Box<dyn Fn(&Value) -> String + Send + Sync>;

struct State {
    requests: Mutex<Vec<Recorded>>,
    script: Mutex<VecDeque<Scripted>>,
    models: Mutex<Vec<Value>>,
    completer: Completer,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    delay_ms: AtomicU64,
    stop: AtomicBool,
}

/// The running server; stops when dropped.
pub struct FakeOpenAi {
    pub url: String,
    addr: std::net::SocketAddr,
    state: Arc<State>,
}

impl FakeOpenAi {
    /// A server listing `models` (ids; `owned_by` as given) whose completions are
    /// `completer(request body)`.
    pub fn start(models: &[(&str, &str)], completer: Completer) -> FakeOpenAi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            requests: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            models: Mutex::new(
                models
                    .iter()
                    .map(|(id, owner)| json!({"id": id, "object": "model", "owned_by": owner, "parent": null}))
                    .collect(),
            ),
            completer,
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            delay_ms: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = serve(&st, conn);
                });
            }
        });
        FakeOpenAi {
            url: format!("http://{addr}"),
            addr,
            state,
        }
    }

    /// Replies served first, in order, before the default behaviour.
    pub fn script(&self, replies: impl IntoIterator<Item = (u16, &'static str)>) {
        let mut s = self.state.script.lock().unwrap();
        for (status, body) in replies {
            s.push_back(Scripted {
                status,
                body: body.into(),
                headers: Vec::new(),
            });
        }
    }

    pub fn script_full(&self, reply: Scripted) {
        self.state.script.lock().unwrap().push_back(reply);
    }

    /// Every completion waits this long (to see requests overlap).
    pub fn set_delay(&self, d: Duration) {
        self.state
            .delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The most completion requests that were in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(st: &State, stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let k = k.trim().to_lowercase();
            let v = v.trim().to_string();
            if k == "content-length" {
                length = v.parse().unwrap_or(0);
            }
            headers.push((k, v));
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    st.requests.lock().unwrap().push(Recorded {
        method: method.clone(),
        path: path.clone(),
        headers,
        body: body.clone(),
    });
    let scripted = st.script.lock().unwrap().pop_front();
    let (status, text, extra) = match scripted {
        Some(s) => (s.status, s.body, s.headers),
        None => default_reply(st, &method, &path, &body),
    };
    let mut out = stream;
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        text.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

fn default_reply(
    st: &State,
    method: &str,
    path: &str,
    body: &Value,
) -> (u16, String, Vec<(String, String)>) {
    match (method, path) {
        ("GET", "/v1/models") => {
            let data = st.models.lock().unwrap().clone();
            (
                200,
                json!({"object": "list", "data": data}).to_string(),
                Vec::new(),
            )
        }
        ("POST", "/v1/completions") => {
            let now = st.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            st.max_in_flight.fetch_max(now, Ordering::SeqCst);
            let model = body["model"].as_str().unwrap_or("");
            let known = st
                .models
                .lock()
                .unwrap()
                .iter()
                .any(|m| m["id"] == model || m["owned_by"] == "soup");
            std::thread::sleep(Duration::from_millis(st.delay_ms.load(Ordering::SeqCst)));
            st.in_flight.fetch_sub(1, Ordering::SeqCst);
            if !known {
                let msg = format!("The model `{model}` does not exist.");
                return (
                    404,
                    json!({"error": {"message": msg, "type": "NotFoundError", "code": 404}})
                        .to_string(),
                    Vec::new(),
                );
            }
            let text = (st.completer)(body);
            (
                200,
                json!({
                    "id": "cmpl-1", "object": "text_completion", "model": model,
                    "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": null}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
                })
                .to_string(),
                Vec::new(),
            )
        }
        ("POST", "/v1/load_lora_adapter") => {
            let name = body["lora_name"].as_str().unwrap_or("").to_string();
            let path = body["lora_path"].as_str().unwrap_or("");
            if !std::path::Path::new(path)
                .join("adapter_config.json")
                .exists()
            {
                return (
                    400,
                    json!({"message": format!("no adapter at {path}")}).to_string(),
                    Vec::new(),
                );
            }
            let mut models = st.models.lock().unwrap();
            let parent = models
                .first()
                .map(|m| m["id"].clone())
                .unwrap_or(Value::Null);
            models
                .push(json!({"id": name, "object": "model", "owned_by": "vllm", "parent": parent}));
            (
                200,
                format!("Success: LoRA adapter '{name}' added successfully."),
                Vec::new(),
            )
        }
        _ => (404, json!({"detail": "Not Found"}).to_string(), Vec::new()),
    }
}
