//! Output paths, names and disk faults through the `soup` binary: no `--out` deletes what soup
//! did not write, the grader never empties its own input, names that would break folders or
//! terminals are refused where they enter, a full disk gives a clear error (no hang, nothing
//! half-committed), and one damaged tensor file loses only its adapter.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every file under `dir` with its bytes, to show that nothing changed.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn copy_dir(from: &str, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn run_count(cwd: &Path, data: &Path) -> usize {
    let out = ok_in(cwd, data, &["runs", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_default();
    v.as_array().map_or(0, |a| a.len())
}

#[test]
fn no_out_deletes_what_soup_did_not_write() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let data = tmp.path().join("data");
    copy_dir(&fixture("adapter-a"), &work.join("a"));
    copy_dir(&fixture("adapter-b"), &work.join("b"));
    std::fs::write(work.join("notes.txt"), "mine").unwrap();
    std::fs::create_dir_all(work.join("full")).unwrap();
    std::fs::write(work.join("full/keep.txt"), "keep").unwrap();
    let before = snapshot(&work);
    let merge = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "merge",
            "--method",
            "linear",
            "--weights",
            "0.5,0.5",
            "--out",
            out,
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["a", "b"]);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let data_s = data.display().to_string();
    let db_s = data.join("db").display().to_string();
    for (out, extra, says) in [
        (".", &[][..], "current directory"),
        (".", &["--force"][..], "current directory"),
        ("..", &["--force"][..], "current directory"),
        ("a", &["--force"][..], "one of the inputs"),
        ("a/..", &["--force"][..], "current directory"),
        ("full", &[][..], "not empty"),
        ("notes.txt", &[][..], "is a file"),
        (data_s.as_str(), &["--force"][..], "data dir"),
        (db_s.as_str(), &["--force"][..], "data dir"),
        ("/", &["--force"][..], "root"),
    ] {
        let args = merge(out, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = fails_in(&work, &data, &args);
        assert!(err.contains(says), "--out {out} {extra:?}: {err}");
    }
    // Refused before a run was recorded, and every file as it was.
    assert_eq!(run_count(&work, &data), 0);
    assert_eq!(snapshot(&work), before);

    // A new folder is written; the same folder again is refused, then replaced with --force.
    ok_in(
        &work,
        &data,
        &merge("merged", &["--name", "m1"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(work.join("merged/adapter_config.json").is_file());
    let err = fails_in(&work, &data, &["adapter", "export", "m1", "--out", "full"]);
    assert!(
        err.contains("not empty") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(work.join("full/keep.txt")).unwrap(),
        "keep"
    );
    ok_in(
        &work,
        &data,
        &["adapter", "export", "m1", "--out", "full", "--force"],
    );
    assert!(work.join("full/adapter_config.json").is_file());
    assert!(!work.join("full/keep.txt").exists());
    let err = fails_in(&work, &data, &["adapter", "export", "m1", "--out", "."]);
    assert!(err.contains("current directory"), "{err}");
    // `soup export` and `soup data generate` obey the same rules.
    let err = fails_in(&work, &data, &["export", "--json", "merged"]);
    assert!(err.contains("not empty"), "{err}");
    let err = fails_in(&work, &data, &["export", "--json", "."]);
    assert!(err.contains("current directory"), "{err}");
    let err = fails_in(
        &work,
        &data,
        &["data", "generate", "manual-qa", "--out", "merged"],
    );
    assert!(err.contains("not empty"), "{err}");
    assert!(work.join("merged/adapter_config.json").is_file());
    assert!(work.join("a/adapter_config.json").is_file() && work.join("notes.txt").is_file());
    // No temporary siblings left behind by the refusals.
    let leftovers: Vec<String> = std::fs::read_dir(&work)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[cfg(unix)]
#[test]
fn grade_never_writes_over_its_predictions() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let pred = tmp.path().join("pred.jsonl");
    let line = "{\"id\":\"1\",\"output\":\"x\",\"answer\":\"x\"}\n";
    std::fs::write(&pred, line).unwrap();
    let hard = tmp.path().join("sub/hard.jsonl");
    std::fs::create_dir_all(hard.parent().unwrap()).unwrap();
    std::fs::hard_link(&pred, &hard).unwrap();
    let sym = tmp.path().join("sym.jsonl");
    std::os::unix::fs::symlink(&pred, &sym).unwrap();
    let pred_s = pred.display().to_string();
    for out in [&hard, &sym, &tmp.path().join("sub/../pred.jsonl")] {
        let err = fails_in(
            tmp.path(),
            &data,
            &[
                "grade",
                "manual-qa",
                "--predictions",
                &pred_s,
                "--out",
                out.to_str().unwrap(),
            ],
        );
        assert!(err.contains("itself"), "{err}");
        assert_eq!(std::fs::read_to_string(&pred).unwrap(), line);
    }
    // A failed grading leaves an existing --out file as it was.
    let out = tmp.path().join("graded.jsonl");
    std::fs::write(&out, "earlier results\n").unwrap();
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "not json\n").unwrap();
    fails_in(
        tmp.path(),
        &data,
        &[
            "grade",
            "manual-qa",
            "--predictions",
            bad.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "earlier results\n");
    ok_in(
        tmp.path(),
        &data,
        &[
            "grade",
            "manual-qa",
            "--predictions",
            &pred_s,
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(std::fs::read_to_string(&out).unwrap().contains("\"em\""));
}

#[test]
fn names_are_refused_where_they_enter_and_export_folders_stay_distinct() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let a = fixture("adapter-a");
    let b = fixture("adapter-b");
    let long = "x".repeat(200);
    for name in [
        "a/b",
        "a\nb",
        "..",
        ".hidden",
        "",
        "tab\there",
        long.as_str(),
    ] {
        let err = fails_in(
            tmp.path(),
            &data,
            &["adapter", "import", &a, "--name", name],
        );
        assert!(err.contains("invalid adapter"), "{name:?}: {err}");
        let err = fails_in(
            tmp.path(),
            &data,
            &[
                "merge",
                "--method",
                "linear",
                "--weights",
                "0.5,0.5",
                "--name",
                name,
                &a,
                &b,
            ],
        );
        assert!(err.contains("invalid adapter"), "{name:?}: {err}");
        let err = fails_in(
            tmp.path(),
            &data,
            &[
                "train",
                "lora",
                "--model",
                &fixture("tiny-llama"),
                "--data",
                "builtin:math-train",
                "--name",
                name,
            ],
        );
        assert!(err.contains("invalid adapter"), "{name:?}: {err}");
        let err = fails_in(
            tmp.path(),
            &data,
            &["model", "import", &fixture("tiny-llama"), "--name", name],
        );
        assert!(err.contains("invalid model"), "{name:?}: {err}");
    }
    assert_eq!(run_count(tmp.path(), &data), 0);
    // Names that differ only in what a folder name cannot hold export to distinct folders.
    for name in ["a_b", "a-b", "A_b"] {
        ok_in(
            tmp.path(),
            &data,
            &["adapter", "import", &a, "--name", name],
        );
    }
    let dump = tmp.path().join("dump");
    ok_in(
        tmp.path(),
        &data,
        &["export", "--json", dump.to_str().unwrap()],
    );
    let folders: Vec<String> = std::fs::read_dir(dump.join("adapters"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(folders.len(), 3, "{folders:?}");
}

#[test]
fn a_damaged_tensor_file_loses_only_its_adapter() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    ok_in(
        tmp.path(),
        &data,
        &["adapter", "import", &fixture("adapter-a"), "--name", "good"],
    );
    ok_in(
        tmp.path(),
        &data,
        &["adapter", "import", &fixture("adapter-c"), "--name", "bad"],
    );
    let show = ok_in(tmp.path(), &data, &["adapter", "show", "bad", "--json"]);
    let v: serde_json::Value = serde_json::from_str(show.trim()).unwrap();
    let file = data.join("tensors").join(format!(
        "{}.safetensors",
        v["blob"]["sha256"].as_str().unwrap()
    ));
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();

    let list = ok_in(tmp.path(), &data, &["adapter", "list"]);
    assert!(list.contains("good") && list.contains("bad"), "{list}");
    ok_in(tmp.path(), &data, &["runs", "list"]);
    let err = fails_in(
        tmp.path(),
        &data,
        &["adapter", "export", "bad", "--out", "bad-out"],
    );
    assert!(
        err.contains("adapter `bad`") && err.contains("damaged"),
        "{err}"
    );
    ok_in(
        tmp.path(),
        &data,
        &["adapter", "export", "good", "--out", "good-out"],
    );
    let out = soup_in(tmp.path(), &data, &["export", "--json", "dump"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("adapter `bad`"),
        "{}",
        text(&out.stderr)
    );
    assert!(tmp
        .path()
        .join("dump/adapters/good/adapter_config.json")
        .is_file());
    assert!(!tmp.path().join("dump/adapters/bad").exists());
    ok_in(tmp.path(), &data, &["adapter", "delete", "bad"]);
}

/// The real thing: the data dir on a 4 MiB tmpfs in a private mount namespace, filled up
/// until an import cannot fit. This test needs `unshare` (util-linux) and unprivileged user
/// namespaces; it fails, never skips, when they are missing (CI installs util-linux).
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_gives_a_clear_error_and_no_hang() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let soup = env!("CARGO_BIN_EXE_soup");
    let (a, b) = (fixture("adapter-a"), fixture("adapter-b"));
    let script = format!(
        r#"set -u
mount -t tmpfs -o size=4m none "{mnt}" || {{ echo "MOUNT FAILED"; exit 90; }}
d="{mnt}/data"
"{soup}" --data-dir "$d" adapter import "{a}" --name a >/dev/null || {{ echo "FIRST IMPORT FAILED"; exit 91; }}
avail=$(df -k "{mnt}" | awk 'NR==2{{print $4}}')
dd if=/dev/zero of="{mnt}/fill" bs=1k count=$((avail - 1500)) 2>/dev/null
timeout 60 "{soup}" --data-dir "$d" adapter import "{b}" --name b 2>"{mnt}/err"
echo "IMPORT RC=$?"
cat "{mnt}/err"
timeout 60 "{soup}" --data-dir "$d" adapter list --json 2>&1 | tail -1 | sed 's/^/LIST /'
rm -f "{mnt}/fill"
timeout 60 "{soup}" --data-dir "$d" adapter import "{b}" --name b >/dev/null 2>&1
echo "AFTER RC=$?"
"#,
        mnt = mnt.display(),
    );
    let out = Command::new("unshare")
        .args(["-rm", "sh", "-c", &script])
        .output()
        .expect("`unshare` (util-linux) is needed for this test: install util-linux");
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("AFTER RC="),
        "the tmpfs could not be set up (unshare -rm needs user namespaces): {stdout}\n{stderr}"
    );
    assert!(
        !stdout.contains("IMPORT RC=124"),
        "the import hung: {stdout}"
    );
    assert!(
        !stdout.contains("IMPORT RC=0"),
        "the import should not fit: {stdout}"
    );
    assert!(
        stdout.contains("is full") && stdout.contains("/data") && stdout.contains("bytes needed"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("afresh") && !stdout.contains("damaged"),
        "{stdout}"
    );
    // Nothing half-committed: the store lists `a` only, then takes `b` once there is room.
    let list = stdout
        .lines()
        .find_map(|l| l.strip_prefix("LIST "))
        .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(list).unwrap_or_default();
    let names: Vec<&str> = v
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["a"], "{stdout}");
    assert!(stdout.contains("AFTER RC=0"), "{stdout}");
}
