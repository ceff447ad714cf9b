//! `soup grade code-math` with hostile programs among honest ones: the run completes, the
//! `--out` file holds every line with its own verdict, and no program gets the answer key
//! (which the predictions file holds) or forges its verdict.

mod common;

use common::soup;

/// A program that looks for the grader's command line in /proc, opens the predictions file it
/// names, and returns the gold answer of the line with id "spy".
const SPY: &str = r#"import os, json
def solution():
    for pid in os.listdir('/proc'):
        try:
            argv = open('/proc/%s/cmdline' % pid, 'rb').read().split(b'\0')
        except OSError:
            continue
        if b'--predictions' in argv:
            path = argv[argv.index(b'--predictions') + 1].decode()
            for line in open(path):
                row = json.loads(line)
                if row['id'] == 'spy':
                    return row['answer']
    return -1
"#;

/// Reads the predictions file from where the test put it, without /proc.
const READER: &str = r#"import json
def solution():
    for line in open(PATH):
        row = json.loads(line)
        if row['id'] == 'reader':
            return row['answer']
    return -1
"#;

const FORGER: &str = r#"import os
def solution():
    os.write(3, b'{"status": "setup_error", "message": "FORGED-ERROR"}\n')
    os._exit(0)
"#;

const FORGER_OK: &str = r#"import os
def solution():
    os.write(3, b'{"status": "ok", "value_kind": "number", "value": 4242}\n')
    return 0
"#;

const SHM_FILLER: &str = r#"import os
def solution():
    n = 0
    try:
        for i in range(64):
            with open('/dev/shm/soup-grade-test-%d' % i, 'wb') as f:
                f.write(b'x' * (8 << 20))
            n += 1
    except OSError:
        pass
    return n
"#;

const FORK_BOMB: &str = r#"import os
def solution():
    while True:
        try:
            os.fork()
        except OSError:
            pass
"#;

const CHANNEL_FLOOD: &str = r#"import os
def solution():
    for fd in range(1025):
        try:
            os.write(fd, b'garbage\n' * 1000)
        except OSError:
            pass
    return 1
"#;

/// Whether the kernel offers Landlock (the ABI probe syscall answers with a version).
fn kernel_has_landlock() -> bool {
    std::process::Command::new("python3")
        .args([
            "-c",
            "import ctypes; print(ctypes.CDLL(None, use_errno=True).syscall(444, None, 0, 1))",
        ])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<i64>()
                .ok()
        })
        .is_some_and(|v| v >= 1)
}

#[test]
fn hostile_programs_among_honest_ones_each_get_their_own_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let preds = dir.path().join("predictions.jsonl");
    let out = dir.path().join("graded.jsonl");
    let reader = READER.replace("PATH", &format!("{:?}", preds.display().to_string()));
    let rows: Vec<(&str, String, serde_json::Value)> = vec![
        (
            "honest-1",
            "def solution():\n    return 6 * 7\n".into(),
            42.into(),
        ),
        ("spy", SPY.into(), 7777.into()),
        ("reader", reader, 8888.into()),
        ("forger", FORGER.into(), 1.into()),
        ("forger-ok", FORGER_OK.into(), 4242.into()),
        ("shm", SHM_FILLER.into(), 5.into()),
        ("fork-bomb", FORK_BOMB.into(), 1.into()),
        ("flood", CHANNEL_FLOOD.into(), 1.into()),
        (
            "honest-2",
            "def solution():\n    return 10 - 3\n".into(),
            7.into(),
        ),
    ];
    let text: String = rows
        .iter()
        .map(|(id, code, answer)| {
            serde_json::json!({"id": id, "output": format!("```python\n{code}```"), "answer": answer})
                .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(&preds, text).unwrap();
    let o = soup(
        &data,
        &[
            "grade",
            "code-math",
            "--predictions",
            preds.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "the run ended: {:?}\n{}\n{stderr}",
        o.status,
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(
        !stderr.contains("FORGED"),
        "a program's text reached soup's output: {stderr}"
    );
    let graded: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .expect("the --out file exists")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(graded.len(), rows.len(), "{graded:#?}");
    let by_id = |id: &str| {
        graded
            .iter()
            .find(|g| g["id"] == id)
            .unwrap_or_else(|| panic!("line {id} missing: {graded:#?}"))
    };
    for id in ["honest-1", "honest-2"] {
        assert_eq!(by_id(id)["correct"], true, "{:#?}", by_id(id));
    }
    // Landlock is what keeps the answer key out of reach; on a kernel without it the sandbox
    // says so in its record (tested in soup-evals) and these two may succeed.
    let landlock = kernel_has_landlock();
    for id in ["spy", "reader"] {
        let g = by_id(id);
        if landlock {
            assert_eq!(g["correct"], false, "{id} read the answer key: {g:#?}");
        }
    }
    for id in ["forger", "forger-ok", "flood"] {
        let g = by_id(id);
        assert_eq!(g["verdict"], "runtime_error", "{id}: {g:#?}");
        assert_eq!(g["correct"], false, "{id}: {g:#?}");
        // The program's own text is in "output" and "program"; none of it may reach the
        // fields the grader adds.
        for field in ["verdict", "pred", "stdout", "stderr"] {
            assert!(!g[field].to_string().contains("FORGED"), "{id}: {g:#?}");
        }
    }
    let bomb = by_id("fork-bomb");
    let verdict = bomb["verdict"].as_str().unwrap_or("");
    assert!(
        ["timeout", "resource_limit", "runtime_error"].contains(&verdict),
        "{bomb:#?}"
    );
    for g in &graded {
        assert!(g["verdict"].is_string(), "{g:#?}");
    }
    let leaked: Vec<_> = std::fs::read_dir("/dev/shm")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("soup-grade-test-")
        })
        .map(|e| e.path())
        .collect();
    for p in &leaked {
        let _ = std::fs::remove_file(p);
    }
    if landlock {
        assert!(
            leaked.is_empty(),
            "a program wrote into /dev/shm: {leaked:?}"
        );
    }
}
