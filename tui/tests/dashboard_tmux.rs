//! End-to-end test of the dashboard in a real pseudo-terminal: the built `soup` binary runs
//! inside a detached tmux session on an empty data dir; the test sends keys, reads the screen
//! with `capture-pane`, and checks that `q` ends the process. A second test launches a small
//! recipe (the user's TOML in the data dir's `recipes/`, on the tiny fixture model) from the
//! Recipes screen and waits for its table to complete.
//!
//! Needs tmux (`apt-get install tmux`); without it the test says so and passes, so machines
//! without tmux still run the rest of the suite.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A tmux server of our own (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "soup"]).stdout)
            .into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "soup"];
        args.extend_from_slice(keys);
        let out = self.run(&args);
        assert!(out.status.success(), "send-keys {keys:?} failed");
        // Keys sent back to back can arrive as one escape sequence (Esc then 2 reads as
        // Alt-2): give the dashboard a moment between sends.
        std::thread::sleep(Duration::from_millis(300));
    }

    fn alive(&self) -> bool {
        self.run(&["has-session", "-t", "soup"]).status.success()
    }

    /// Waits until the screen contains `text` (20 s at most: a cold start on a busy machine).
    fn wait_for(&self, text: &str) -> String {
        self.wait_for_within(text, Duration::from_secs(20))
    }

    fn wait_for_within(&self, text: &str, limit: Duration) -> String {
        self.wait_for_unless(text, None, limit)
    }

    /// As `wait_for_within`, but stops at once when `failure` shows (a job that failed will
    /// not bring `text`, so waiting out the limit only hides the cause for minutes).
    fn wait_for_unless(&self, text: &str, failure: Option<&str>, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            if let Some(failure) = failure.filter(|f| screen.contains(f)) {
                panic!("{failure:?} appeared while waiting for {text:?}; the screen is:\n{screen}");
            }
            if Instant::now() > deadline {
                panic!("{text:?} never appeared; the screen is:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

fn has_tmux() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn start(data: &Path, name: &str) -> Tmux {
    let tmux = Tmux {
        socket: format!("soup-dash-{name}-{}", std::process::id()),
    };
    let command = format!(
        "env -u SOUP_HOME TERM=xterm-256color '{}' --data-dir '{}'; sleep 0.1",
        env!("CARGO_BIN_EXE_soup"),
        data.display()
    );
    let out = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "soup",
        "-x",
        "120",
        "-y",
        "36",
        &command,
    ]);
    assert!(
        out.status.success(),
        "tmux new-session failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tmux
}

#[test]
fn dashboard_opens_switches_screens_and_quits_in_a_real_terminal() {
    if !has_tmux() {
        eprintln!("tmux is not installed: skipping the dashboard's pty test");
        return;
    }
    let data = tempfile::tempdir().expect("tempdir");
    let tmux = start(data.path(), "keys");

    tmux.wait_for("1 Adapters");
    // The store is read off the UI thread: "reading the store…" first, then the empty state.
    let screen = tmux.wait_for("No adapters yet");
    // A fresh data dir has no model: the dashboard offers to fetch it.
    assert!(screen.contains("F fetches it"), "{screen}");

    tmux.keys(&["3"]);
    tmux.wait_for("No jobs yet");
    tmux.keys(&["?"]);
    tmux.wait_for("keys (Esc closes)");
    tmux.keys(&["Escape"]);
    tmux.keys(&["5"]);
    tmux.wait_for("No evaluation runs yet");
    // Compose refuses to launch without adapters, with the reason on screen.
    tmux.keys(&["2", "Enter"]);
    tmux.wait_for("needs at least 2 adapter");

    quit(&tmux);
}

fn quit(tmux: &Tmux) {
    tmux.keys(&["q"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmux.alive() {
        assert!(
            Instant::now() < deadline,
            "soup did not exit after q:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A recipe small enough for the tiny model to finish in seconds: two skill LoRAs on eight
/// examples, CAT on a sliver of their data, four evaluations of two questions.
fn tiny_recipe(model: &Path) -> String {
    format!(
        r#"
name = "tiny"
model = "{}"
seed = 0
methods = ["base", "skills", "cat"]
[target]
task = "code-math"
data = "builtin:codemath-test"
[[skills]]
name = "math"
data = "builtin:math-train"
[[skills]]
name = "code"
data = "builtin:code-train"
[lora]
rank = 2
alpha = 4.0
targets = "q,v"
[merge]
weights = [1.0, 1.0]
density = 0.5
lorahub_budget = 2
[budgets.micro]
train_examples = 8
epochs = 1
batch_size = 4
max_len = 256
lr = 1e-3
cat_fraction = 0.01
eval_limit = 2
skill_eval_limit = 2
max_new_tokens = 4
shots = 0
seeds = 1
cat_min_steps = 4
"#,
        model.display()
    )
}

#[test]
fn a_recipe_launched_from_the_dashboard_fills_its_table() {
    if !has_tmux() {
        eprintln!("tmux is not installed: skipping the dashboard's pty test");
        return;
    }
    let data = tempfile::tempdir().expect("tempdir");
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/reference/tiny-llama");
    std::fs::create_dir_all(data.path().join("recipes")).expect("recipes dir");
    std::fs::write(data.path().join("recipes/tiny.toml"), tiny_recipe(&model))
        .expect("write recipe");
    let tmux = start(data.path(), "recipe");
    tmux.wait_for("1 Adapters");
    tmux.keys(&["7"]);
    // The built-in recipes first, then the user's.
    tmux.wait_for("tiny · yours");
    tmux.keys(&["G"]);
    let screen = tmux.wait_for("Enter launches tiny at budget micro");
    assert!(screen.contains("0/4 evaluations done"), "{screen}");
    tmux.keys(&["Enter"]);
    // The table fills in as the jobs finish: the skill LoRAs, CAT, then four evaluations.
    let screen = tmux.wait_for_unless(
        "4/4 evaluations done",
        Some("failed"),
        Duration::from_secs(240),
    );
    assert!(screen.contains("adapters built 3/3"), "{screen}");
    assert!(!screen.contains("failed"), "{screen}");
    // The adapters it built are in Adapters, CAT with its lineage.
    tmux.keys(&["1"]);
    tmux.wait_for("tiny-micro-cat");
    quit(&tmux);
}
