//! The client and the generator against the fake server: request shape, stop strings,
//! retries, the errors a user sees, and bounded concurrency with answers kept in order.

use super::*;
use crate::fake_openai::{FakeOpenAi, Scripted};
use serde_json::Value;
use std::time::Duration;

fn echo_server() -> FakeOpenAi {
    // Answers with the prompt's last word and a stop string the client must cut off.
    FakeOpenAi::start(
        &[("base-model", "vllm")],
        Box::new(|body: &Value| {
            let p = body["prompt"].as_str().unwrap_or("");
            format!(
                "<{}>\n\nQuestion: next",
                p.split_whitespace().last().unwrap_or("")
            )
        }),
    )
}

fn fast(mut c: OpenAiClient) -> OpenAiClient {
    c.retry = RetryPolicy {
        retries: 3,
        backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
    };
    c
}

fn settings() -> GenSettings {
    GenSettings {
        max_new_tokens: 12,
        seed: 3,
        stop: vec!["\n\n".into(), "Question:".into()],
        ..Default::default()
    }
}

#[test]
fn requests_carry_prompt_stops_greedy_and_the_key() {
    let server = echo_server();
    std::env::set_var("SOUP_TEST_KEY_SHAPE", "sekrit");
    let client = fast(OpenAiClient::new(&server.url, Some("SOUP_TEST_KEY_SHAPE")).unwrap());
    let mut g = RemoteGenerator {
        client: &client,
        model: "base-model".into(),
        concurrency: 2,
    };
    let prompts: Vec<String> = (0..5).map(|i| format!("q number{i}")).collect();
    let out = g.generate(&prompts, &settings()).unwrap();
    let texts: Vec<&str> = out.iter().map(|c| c.text.as_str()).collect();
    // In prompt order, cut at the first stop string.
    assert_eq!(
        texts,
        [
            "<number0>",
            "<number1>",
            "<number2>",
            "<number3>",
            "<number4>"
        ]
    );
    assert!(out.iter().all(|c| c.output_tokens == 3 && !c.cached));
    let reqs = server.requests();
    assert_eq!(reqs.len(), 5);
    for r in &reqs {
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/v1/completions")
        );
        assert_eq!(r.header("authorization"), Some("Bearer sekrit"));
        assert_eq!(r.body["model"], "base-model");
        assert_eq!(r.body["max_tokens"], 12);
        assert_eq!(r.body["temperature"], 0.0);
        assert_eq!(r.body["seed"], 3);
        assert_eq!(r.body["stop"], serde_json::json!(["\n\n", "Question:"]));
    }
    let mut sent: Vec<&str> = reqs
        .iter()
        .map(|r| r.body["prompt"].as_str().unwrap())
        .collect();
    sent.sort();
    assert_eq!(sent, prompts.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn overload_and_server_errors_are_retried() {
    let server = echo_server();
    server.script([(503, "{\"error\":{\"message\":\"busy\"}}"), (500, "oops")]);
    server.script_full(Scripted {
        status: 429,
        body: "{}".into(),
        headers: vec![("Retry-After".into(), "0".into())],
    });
    let client = fast(OpenAiClient::new(&server.url, None).unwrap());
    let c = client
        .complete("base-model", "hello world", &settings())
        .unwrap();
    assert_eq!(c.text, "<world>\n\nQuestion: next");
    assert_eq!(
        server.requests().len(),
        4,
        "three failures, then the answer"
    );
}

#[test]
fn retries_end_with_the_last_error() {
    let server = echo_server();
    server.script([(503, "{\"error\":{\"message\":\"still busy\"}}"); 4]);
    let client = fast(OpenAiClient::new(&server.url, None).unwrap());
    let err = client
        .complete("base-model", "x", &settings())
        .unwrap_err()
        .to_string();
    assert!(err.contains("503") && err.contains("still busy"), "{err}");
    assert_eq!(server.requests().len(), 4, "one try and three retries");
}

#[test]
fn a_refused_key_names_its_variable_and_is_not_retried() {
    let server = echo_server();
    server.script([(401, "{\"error\":{\"message\":\"bad key\"}}")]);
    std::env::set_var("SOUP_TEST_KEY_401", "wrong");
    let client = fast(OpenAiClient::new(&server.url, Some("SOUP_TEST_KEY_401")).unwrap());
    let err = client.models().unwrap_err();
    assert!(matches!(err, RemoteError::Unauthorized { .. }), "{err:?}");
    assert!(err.to_string().contains("SOUP_TEST_KEY_401"), "{err}");
    assert_eq!(server.requests().len(), 1);
    // Without a key configured, the message says how to give one.
    server.script([(401, "{}")]);
    let bare = fast(OpenAiClient::new(&server.url, None).unwrap());
    let err = bare.models().unwrap_err().to_string();
    assert!(err.contains("--api-key-env"), "{err}");
}

#[test]
fn an_unknown_model_lists_what_the_server_has() {
    let server = echo_server();
    let client = fast(OpenAiClient::new(&server.url, None).unwrap());
    let err = client.complete("no-such", "x", &settings()).unwrap_err();
    match &err {
        RemoteError::ModelNotFound {
            model, available, ..
        } => {
            assert_eq!(model, "no-such");
            assert_eq!(available, &vec!["base-model".to_string()]);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("base-model"), "{err}");
}

#[test]
fn an_unreachable_server_says_so_after_retrying() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = fast(OpenAiClient::new(&format!("http://127.0.0.1:{port}"), None).unwrap());
    let err = client.models().unwrap_err();
    assert!(matches!(err, RemoteError::Unreachable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("--base-url") && text.contains(&port.to_string()),
        "{text}"
    );
}

#[test]
fn concurrency_is_used_and_bounded() {
    let server = echo_server();
    server.set_delay(Duration::from_millis(150));
    let client = OpenAiClient::new(&server.url, None).unwrap();
    let mut g = RemoteGenerator {
        client: &client,
        model: "base-model".into(),
        concurrency: 3,
    };
    let prompts: Vec<String> = (0..9).map(|i| format!("p w{i}")).collect();
    let t0 = std::time::Instant::now();
    let out = g.generate(&prompts, &settings()).unwrap();
    assert_eq!(out.len(), 9);
    assert_eq!(out[8].text, "<w8>");
    let most = server.max_in_flight();
    assert!((2..=3).contains(&most), "{most} requests in flight at once");
    // Nine requests of 150 ms, three at a time: well under the 1.35 s of one at a time.
    assert!(
        t0.elapsed() < Duration::from_millis(1300),
        "{:?}",
        t0.elapsed()
    );
}

#[test]
fn a_failed_request_fails_the_batch() {
    let server = echo_server();
    server.script([(400, "{\"error\":{\"message\":\"prompt too long\"}}")]);
    let client = fast(OpenAiClient::new(&server.url, None).unwrap());
    let mut g = RemoteGenerator {
        client: &client,
        model: "base-model".into(),
        concurrency: 1,
    };
    let prompts = vec!["a b".to_string(), "c d".to_string()];
    let err = g.generate(&prompts, &settings()).unwrap_err().to_string();
    assert!(err.contains("prompt too long"), "{err}");
}

#[test]
fn load_adapter_accepts_plain_text_and_already_loaded() {
    let server = echo_server();
    let client = fast(OpenAiClient::new(&server.url, None).unwrap());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("adapter_config.json"), "{}").unwrap();
    let path = dir.path().display().to_string();
    client.load_lora_adapter("soup-x", &path).unwrap();
    let r = &server.requests()[0];
    assert_eq!(r.path, "/v1/load_lora_adapter");
    assert_eq!(r.body["lora_name"], "soup-x");
    assert_eq!(r.body["lora_path"], path.as_str());
    assert!(client
        .models()
        .unwrap()
        .iter()
        .any(|m| m.id == "soup-x" && m.parent.as_deref() == Some("base-model")));
    server.script([(
        400,
        "{\"message\":\"The lora adapter 'soup-x' has already been loaded.\"}",
    )]);
    client.load_lora_adapter("soup-x", &path).unwrap();
    // A server without the runtime API says what to start it with.
    server.script([(404, "{\"detail\":\"Not Found\"}")]);
    let err = client
        .load_lora_adapter("soup-y", &path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("VLLM_ALLOW_RUNTIME_LORA_UPDATING"), "{err}");
}
