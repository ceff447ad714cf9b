//! `soup serve` driven by a real client: the `openai` Python package (pinned in
//! tests/requirements.txt, installed by .ci/run) runs tests/serve_openai.py against the debug
//! binary on the tiny fixture model, with stored adapters, a CAT adapter and a composition;
//! greedy answers must equal the local `soup generate` answers. Then SIGTERM: requests in
//! flight finish, the server exits 0, and every request left its log line.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The local answer of `soup generate` (greedy) as (text, new tokens).
fn local(
    data: &Path,
    model: &str,
    adapter: Option<&str>,
    prompt: &str,
    max: usize,
    chat: bool,
) -> (String, u64) {
    let max_s = max.to_string();
    let mut args = vec![
        "generate",
        "--model",
        model,
        "--prompt",
        prompt,
        "--max-new-tokens",
        &max_s,
        "--json",
    ];
    if let Some(a) = adapter {
        args.extend(["--adapter", a]);
    }
    if chat {
        args.push("--chat");
    }
    let v = last_json(&ok(data, &args));
    (
        v["text"].as_str().unwrap().to_string(),
        v["new_tokens"].as_u64().unwrap(),
    )
}

#[test]
fn openai_client_against_soup_serve() {
    // Never skipped: without the package this test fails and says how to install it.
    let probe = Command::new("python3")
        .args(["-c", "import openai"])
        .output()
        .expect("python3 is needed by the serve test");
    assert!(
        probe.status.success(),
        "the `openai` Python package is missing: `python3 -m pip install -r tests/requirements.txt` (.ci/run installs it)\n{}",
        text(&probe.stderr)
    );

    let data = tempfile::tempdir().unwrap();
    let model = model();
    for (dir, name) in [("adapter-a", "math"), ("adapter-b", "code")] {
        ok(
            data.path(),
            &["adapter", "import", &fixture(dir), "--name", name],
        );
    }
    ok(
        data.path(),
        &[
            "train",
            "cat",
            "--model",
            &model,
            "--adapters",
            "math,code",
            "--data",
            "builtin:math-train",
            "--name",
            "mathcode",
            "--sample-fraction",
            "0.01",
            "--max-steps",
            "2",
            "--batch-size",
            "2",
        ],
    );
    // The composition served on the fly must answer as the same merge stored and used
    // locally.
    ok(
        data.path(),
        &[
            "merge",
            "--method",
            "linear",
            "--weights",
            "0.5,0.5",
            "math",
            "code",
            "--name",
            "lin",
        ],
    );

    let prompts = ["The answer is", "one two three four five six"];
    let mut greedy = Vec::new();
    for (served, adapter) in [
        ("tiny-llama", None),
        ("math", Some("math")),
        ("mathcode", Some("mathcode")),
        ("linear:math,code:0.5,0.5", Some("lin")),
    ] {
        for p in prompts {
            let (expected, n) = local(data.path(), &model, adapter, p, 12, false);
            greedy.push(serde_json::json!({
                "model": served, "prompt": p, "max_tokens": 12,
                "expected": expected, "new_tokens": n,
            }));
        }
    }
    let (chat_expected, _) = local(data.path(), &model, None, "Say hi", 10, true);

    let mut server = Command::new(env!("CARGO_BIN_EXE_soup"))
        .args(["--data-dir"])
        .arg(data.path())
        .args([
            "serve",
            "--model",
            &model,
            "--port",
            "0",
            "--api-key-env",
            "SOUP_SERVE_TEST_KEY",
        ])
        .env("SOUP_SERVE_TEST_KEY", "test-key")
        .env_remove("SOUP_HOME")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start soup serve");
    let mut stdout = BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("soup serve: listening on ")
        .unwrap_or_else(|| {
            let _ = server.kill();
            let mut err = String::new();
            let _ = server.stderr.take().unwrap().read_to_string(&mut err);
            panic!("no ready line, got {line:?}\n{err}")
        })
        .to_string();
    let spec = serde_json::json!({
        "base_url": format!("{url}/v1"),
        "api_key": "test-key",
        "base": "tiny-llama",
        "adapters": ["math", "code", "mathcode", "lin"],
        "greedy": greedy,
        "chat": { "prompt": "Say hi", "max_tokens": 10, "expected": chat_expected },
    });
    let spec_path = data.path().join("spec.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/serve_openai.py");
    let client = Command::new("python3")
        .arg(&script)
        .arg(&spec_path)
        .output()
        .unwrap();

    // SIGTERM with a request in flight: it finishes, then the server exits with status 0.
    let addr = url.trim_start_matches("http://").to_string();
    let mut inflight = std::net::TcpStream::connect(&addr).unwrap();
    let body = serde_json::json!({
        "model": "tiny-llama", "prompt": "count on", "max_tokens": 60, "stream": true,
    })
    .to_string();
    write!(
        inflight,
        "POST /v1/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer test-key\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut head = [0u8; 12];
    inflight.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let pid = server.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let mut rest = String::new();
    inflight.read_to_string(&mut rest).unwrap();
    assert!(
        rest.contains("data: [DONE]"),
        "the request in flight was cut: {rest}"
    );
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = server.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            let _ = server.kill();
            panic!("soup serve did not stop within 60 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    server
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(
        client.status.success(),
        "the openai client checks failed:\n{}{}\nserver log:\n{log}",
        text(&client.stdout),
        text(&client.stderr)
    );
    assert!(
        text(&client.stdout).contains("checks held"),
        "{}",
        text(&client.stdout)
    );
    assert!(
        status.success(),
        "soup serve exited with {status:?} after SIGTERM\n{log}"
    );
    // One log line per request, with its model, token counts and speed.
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("soup serve: POST /v1/completions 200 "))
        .collect();
    assert!(lines.len() >= 2 * greedy.len(), "{log}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("model=linear:math,code:0.5,0.5 ") && l.contains("tokens_per_s=")),
        "{log}"
    );
    assert!(log.contains("soup serve: GET /v1/models 401 "), "{log}");
    assert!(
        log.contains("soup serve: POST /v1/completions 404 model=- "),
        "{log}"
    );
}

#[test]
fn serve_refuses_a_missing_key_variable_and_a_busy_port() {
    let data = tempfile::tempdir().unwrap();
    let model = model();
    let err = fails(
        data.path(),
        &[
            "serve",
            "--model",
            &model,
            "--port",
            "0",
            "--api-key-env",
            "SOUP_NO_SUCH_VAR_FOR_TEST",
        ],
    );
    assert!(
        err.contains("SOUP_NO_SUCH_VAR_FOR_TEST") && err.contains("not set"),
        "{err}"
    );
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    let err = fails(data.path(), &["serve", "--model", &model, "--port", &port]);
    assert!(
        err.contains("cannot listen") && err.contains("--port"),
        "{err}"
    );
}
