//! Helpers shared by the tests that drive the `soup` binary: the committed fixtures and
//! running the binary in a temporary data dir. Each test file uses only some of them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The committed tiny model, PEFT adapters and transformers' figures.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/reference")
}

pub fn fixture(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

pub fn model() -> String {
    fixture("tiny-llama")
}

fn command(data: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_soup"));
    c.arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("SOUP_HOME");
    c
}

/// Runs `soup --data-dir DATA ARGS...`.
pub fn soup(data: &Path, args: &[&str]) -> Output {
    command(data, args).output().expect("run soup")
}

/// Runs `soup --data-dir DATA ARGS...` in `cwd`.
pub fn soup_in(cwd: &Path, data: &Path, args: &[&str]) -> Output {
    command(data, args)
        .current_dir(cwd)
        .output()
        .expect("run soup")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts success and returns stdout.
pub fn succeeded(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "soup {args:?} failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Asserts failure and returns stderr.
pub fn failed(args: &[&str], out: Output) -> String {
    assert!(
        !out.status.success(),
        "soup {args:?} should have failed\nstdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

pub fn ok(data: &Path, args: &[&str]) -> String {
    succeeded(args, soup(data, args))
}

pub fn fails(data: &Path, args: &[&str]) -> String {
    failed(args, soup(data, args))
}

pub fn ok_in(cwd: &Path, data: &Path, args: &[&str]) -> String {
    succeeded(args, soup_in(cwd, data, args))
}

pub fn fails_in(cwd: &Path, data: &Path, args: &[&str]) -> String {
    failed(args, soup_in(cwd, data, args))
}

/// The last stdout line as JSON.
pub fn last_json(stdout: &str) -> serde_json::Value {
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}
