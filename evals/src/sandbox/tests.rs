//! Hostile-program suite: every program gets a verdict and the test process keeps running.

use super::*;

fn sandbox_with(timeout: u64, mode: SandboxMode) -> Sandbox {
    let cfg = SandboxConfig {
        workers: 2,
        timeout: Duration::from_secs(timeout),
        mode,
        allow_weaker_isolation: true,
        ..SandboxConfig::default()
    };
    Sandbox::new(cfg).expect("sandbox starts (needs python3 on PATH)")
}

fn sandbox() -> Sandbox {
    sandbox_with(3, SandboxMode::Pool)
}

fn ok_after(sb: &Sandbox) {
    let r = sb.run("def solution():\n    return 1 + 1\n").unwrap();
    assert_eq!(
        r.status,
        RunStatus::Ok,
        "sandbox unusable afterwards: {r:?}"
    );
    assert_eq!(r.value, Some(Value::Number(2.0)));
}

#[test]
fn trivial_program_returns_value() {
    let sb = sandbox();
    let r = sb
        .run("def solution():\n    print('hi')\n    return 6 * 7\n")
        .unwrap();
    assert_eq!(r.status, RunStatus::Ok, "{r:?}");
    assert_eq!(r.value, Some(Value::Number(42.0)));
    assert_eq!(r.stdout, "hi\n");
}

#[test]
fn value_kinds_and_plain_failures() {
    let sb = sandbox();
    let codes: Vec<String> = [
        "def solution():\n    return '12'\n",
        "def solution():\n    return None\n",
        "from fractions import Fraction\ndef solution():\n    return Fraction(1, 4)\n",
        "def solution(:\n    return 1\n",
        "x = 1\n",
        "def solution():\n    return 1 / 0\n",
        "def solution():\n    return 10 ** 400\n",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let r = sb.run_many(&codes).unwrap();
    assert_eq!(r[0].value, Some(Value::Text("12".into())));
    assert!(matches!(r[1].value, Some(Value::Other(ref s)) if s == "None"));
    assert_eq!(r[2].value, Some(Value::Number(0.25)), "{:?}", r[2]);
    assert_eq!(r[3].status, RunStatus::SyntaxError, "{:?}", r[3]);
    assert_eq!(r[4].status, RunStatus::NoEntry, "{:?}", r[4]);
    assert_eq!(r[5].status, RunStatus::RuntimeError, "{:?}", r[5]);
    assert!(r[5].stderr.contains("ZeroDivisionError"), "{:?}", r[5]);
    assert!(matches!(r[6].value, Some(Value::Text(ref s)) if s.starts_with("1000")));
}

#[test]
fn infinite_loop_times_out_and_group_dies() {
    let sb = sandbox_with(1, SandboxMode::Pool);
    let r = sb
        .run("def solution():\n    while True:\n        pass\n")
        .unwrap();
    assert_eq!(r.status, RunStatus::Timeout, "{r:?}");
    ok_after(&sb);
}

#[test]
fn fork_bomb_is_contained() {
    let sb = sandbox_with(2, SandboxMode::Pool);
    let r = sb
        .run("import os\ndef solution():\n    while True:\n        os.fork()\n")
        .unwrap();
    assert!(
        matches!(
            r.status,
            RunStatus::ResourceLimit | RunStatus::Timeout | RunStatus::RuntimeError
        ),
        "{r:?}"
    );
    ok_after(&sb);
    assert_no_program_processes(&sb);
}

#[test]
fn memory_bomb_hits_the_limit() {
    let sb = sandbox();
    let r = sb
        .run(
            "def solution():\n    a = []\n    while True:\n        a.append(bytearray(50 << 20))\n",
        )
        .unwrap();
    assert_eq!(r.status, RunStatus::ResourceLimit, "{r:?}");
    ok_after(&sb);
}

#[test]
fn gigabyte_of_output_is_cut() {
    let sb = sandbox();
    let r = sb
        .run("import sys\ndef solution():\n    s = 'x' * 65536\n    for _ in range(16384):\n        sys.stdout.write(s)\n    return 1\n")
        .unwrap();
    assert_eq!(r.status, RunStatus::ResourceLimit, "{r:?}");
    assert!(r.truncated);
    assert!(r.stdout.len() <= 64 << 10);
    ok_after(&sb);
}

#[test]
fn writes_stay_inside_the_program_directory() {
    let sb = sandbox();
    let outside = std::env::temp_dir().join(format!("soup-escape-{}", std::process::id()));
    let code = format!(
        "def solution():\n    open('inside.txt', 'w').write('ok')\n    open({:?}, 'w').write('escaped')\n    return 1\n",
        outside.display().to_string()
    );
    let r = sb.run(&code).unwrap();
    if sb.layers().landlock_abi.is_some() || sb.layers().separate_uid_base.is_some() {
        assert_eq!(r.status, RunStatus::RuntimeError, "{r:?}");
        assert!(r.stderr.contains("PermissionError"), "{r:?}");
        assert!(!outside.exists(), "the program wrote outside its directory");
    }
    let _ = std::fs::remove_file(&outside);
    ok_after(&sb);
}

#[test]
fn environment_is_empty_and_parent_environ_unreadable() {
    let sb = sandbox();
    let code = format!(
        "import os\ndef solution():\n    n = 0\n    for pid in (os.getppid(), {}):\n        try:\n            n += len(open('/proc/%d/environ' % pid, 'rb').read())\n        except OSError:\n            pass\n    keys = [k for k in os.environ if k != 'LC_CTYPE']\n    return '%d:%d' % (len(keys), n)\n",
        std::process::id()
    );
    let r = sb.run(&code).unwrap();
    assert_eq!(r.status, RunStatus::Ok, "{r:?}");
    let Some(Value::Text(t)) = r.value else {
        panic!("{r:?}")
    };
    // Python itself may set LC_CTYPE (PEP 538 locale coercion); nothing else may be there.
    assert!(t.starts_with("0:"), "environment leaked: {t}");
    if sb.layers().separate_uid_base.is_some() {
        assert_eq!(t, "0:0", "a parent's environment was readable");
    }
}

#[test]
fn killing_the_parent_or_everything_leaves_us_running() {
    let sb = sandbox();
    if !sb.layers().signals_contained {
        eprintln!("skipped: this OS lets programs signal our own processes");
        return;
    }
    for code in [
        "import os, signal\ndef solution():\n    os.kill(os.getppid(), signal.SIGKILL)\n    return 1\n",
        "import os, signal\ndef solution():\n    os.kill(-1, signal.SIGKILL)\n    return 1\n",
        "import os, signal\ndef solution():\n    os.killpg(os.getpgid(os.getppid()), signal.SIGKILL)\n    return 1\n",
    ] {
        let r = sb.run(code).unwrap();
        assert_ne!(r.status, RunStatus::Timeout, "{r:?}");
        ok_after(&sb);
    }
}

#[test]
fn exits_and_recursion_get_verdicts() {
    let sb = sandbox();
    let codes: Vec<String> = [
        "import sys\ndef solution():\n    sys.exit(0)\n",
        "import os\ndef solution():\n    os._exit(3)\n",
        "def f(n):\n    return f(n + 1)\ndef solution():\n    return f(0)\n",
        "import sys\nsys.setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1)\ndef solution():\n    return f(0)\n",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let r = sb.run_many(&codes).unwrap();
    assert_eq!(r[0].status, RunStatus::RuntimeError);
    assert!(r[0].message.contains("sys.exit"), "{:?}", r[0]);
    assert_eq!(r[1].status, RunStatus::RuntimeError);
    assert_eq!(r[1].exit_code, Some(3), "{:?}", r[1]);
    assert_eq!(r[2].status, RunStatus::RuntimeError);
    assert!(r[2].message.contains("RecursionError"), "{:?}", r[2]);
    assert!(
        matches!(
            r[3].status,
            RunStatus::RuntimeError | RunStatus::ResourceLimit | RunStatus::Timeout
        ),
        "{:?}",
        r[3]
    );
    ok_after(&sb);
}

#[test]
fn no_network() {
    let sb = sandbox();
    let r = sb
        .run("import socket\ndef solution():\n    socket.create_connection(('1.1.1.1', 53), timeout=1)\n    return 1\n")
        .unwrap();
    if sb.layers().network_namespace {
        assert_eq!(r.status, RunStatus::RuntimeError, "{r:?}");
    }
}

#[test]
fn escaped_background_processes_are_killed() {
    let sb = sandbox();
    let r = sb
        .run("import os, time\ndef solution():\n    if os.fork() == 0:\n        os.setsid()\n        time.sleep(60)\n        os._exit(0)\n    return 5\n")
        .unwrap();
    assert_eq!(r.value, Some(Value::Number(5.0)), "{r:?}");
    assert_no_program_processes(&sb);
}

#[test]
fn fresh_process_mode_works() {
    let sb = sandbox_with(3, SandboxMode::FreshProcess);
    let codes: Vec<String> = (0..4)
        .map(|i| format!("def solution():\n    return {i}\n"))
        .collect();
    let r = sb.run_many(&codes).unwrap();
    for (i, o) in r.iter().enumerate() {
        assert_eq!(o.value, Some(Value::Number(i as f64)), "{o:?}");
    }
}

/// No process may remain under this sandbox's program uids once a run has returned.
fn assert_no_program_processes(sb: &Sandbox) {
    let Some(first) = sb.layers().separate_uid_base else {
        return;
    };
    let uids: Vec<u32> = (first..first + sb.layers().workers as u32).collect();
    // SIGKILLed processes may take a moment to vanish from /proc.
    for _ in 0..50 {
        let alive: Vec<String> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
            .filter(|s| {
                s.lines().any(|l| {
                    l.starts_with("Uid:")
                        && l.split_whitespace()
                            .nth(1)
                            .and_then(|u| u.parse::<u32>().ok())
                            .is_some_and(|u| uids.contains(&u))
                }) && !s.contains("State:\tZ")
            })
            .collect();
        if alive.is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("program processes survived their run");
}

#[test]
fn sandbox_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Sandbox>();
}

// ---- Grading integrity: reads, the result channel, memory outside the address space ----

/// Whether this kernel offers Landlock: then reads must be restricted, and a record that says
/// otherwise is a bug, not a weaker machine.
fn kernel_has_landlock() -> bool {
    os::landlock_abi().is_ok()
}

/// A world-readable file holding gold answers, as a predictions file would.
fn answer_key() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("soup-answer-key-")
        .tempdir()
        .unwrap();
    set_mode(dir.path(), 0o755).unwrap();
    let key = dir.path().join("predictions.jsonl");
    std::fs::write(&key, "{\"id\": \"q1\", \"answer\": \"GOLD-31337\"}\n").unwrap();
    set_mode(&key, 0o644).unwrap();
    (dir, key)
}

#[test]
fn programs_cannot_read_the_answer_key_the_users_files_or_proc() {
    let sb = sandbox();
    let (_keep, key) = answer_key();
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let manifest = env!("CARGO_MANIFEST_DIR");
    // Each target is tried as a file and as a directory; the program reports what it got.
    let targets = [
        key.display().to_string(),
        key.parent().unwrap().display().to_string(),
        format!("/proc/{}/cmdline", std::process::id()),
        format!("/proc/{}/environ", std::process::id()),
        format!("/proc/{}/maps", std::process::id()),
        "/proc/1/cmdline".to_string(),
        "/proc".to_string(),
        home.clone(),
        format!("{manifest}/Cargo.toml"),
        manifest.to_string(),
        "/etc/passwd".to_string(),
    ];
    let code = format!(
        "import os\n\
         TARGETS = {targets:?}\n\
         def solution():\n\
         \x20   got = []\n\
         \x20   for t in TARGETS + ['/proc/%d/cmdline' % os.getppid(), '/proc/%d/environ' % os.getppid()]:\n\
         \x20       try:\n\
         \x20           if os.path.isdir(t):\n\
         \x20               os.listdir(t)\n\
         \x20           else:\n\
         \x20               open(t, 'rb').read(100)\n\
         \x20           got.append(t)\n\
         \x20       except OSError:\n\
         \x20           pass\n\
         \x20   return ';'.join(got)\n"
    );
    let r = sb.run(&code).unwrap();
    assert_eq!(r.status, RunStatus::Ok, "{r:?}");
    let Some(Value::Text(got)) = r.value else {
        panic!("{r:?}")
    };
    if kernel_has_landlock() {
        assert!(sb.layers().reads_restricted, "{:?}", sb.layers());
        assert_eq!(got, "", "a program read what it must not");
    } else {
        // Honest record: reads are not restricted, and the record says why.
        assert!(!sb.layers().reads_restricted);
        assert!(sb.layers().refused.iter().any(|r| r.contains("landlock")));
    }
    ok_after(&sb);
}

#[test]
fn a_program_can_still_use_the_standard_library_and_its_scratch_directory() {
    let sb = sandbox();
    let code = "import math, json, fractions, decimal, statistics, random, re, datetime, time\n\
                import collections, itertools, functools, heapq, string, hashlib, zlib, os\n\
                def solution():\n\
                \x20   open('scratch.txt', 'w').write('12')\n\
                \x20   os.mkdir('sub')\n\
                \x20   open('sub/x', 'w').write('30')\n\
                \x20   a = int(open('scratch.txt').read()) + int(open('sub/x').read())\n\
                \x20   time.localtime(); os.urandom(4); open('/dev/null', 'w').write('x')\n\
                \x20   return a + len(os.listdir('.')) - 2 + statistics.mean([0, 0])\n";
    let r = sb.run(code).unwrap();
    assert_eq!(r.status, RunStatus::Ok, "{r:?}");
    assert_eq!(r.value, Some(Value::Number(42.0)), "{r:?}");
}

/// Programs that attack the report channel, each with what an honest worker must conclude.
fn forgeries() -> Vec<(&'static str, String)> {
    let fake_ok = r#"{"status": "ok", "value_kind": "number", "value": 999}"#;
    vec![
        // A fake report line, then the real one: two lines are nobody's report.
        (
            "fake line then return",
            format!("import os\ndef solution():\n    os.write(3, b'{fake_ok}\\n')\n    return 1\n"),
        ),
        (
            "fake setup_error",
            "import os\ndef solution():\n    os.write(3, b'{\"status\": \"setup_error\", \"message\": \"PWNED-SETUP\"}\\n')\n    os._exit(0)\n".into(),
        ),
        (
            "fake worker_error",
            "import os\ndef solution():\n    os.write(3, b'{\"status\": \"worker_error\", \"message\": \"PWNED-WORKER\"}\\n')\n    os._exit(0)\n".into(),
        ),
        (
            "fake timeout",
            "import os\ndef solution():\n    os.write(3, b'{\"status\": \"timeout\", \"message\": \"PWNED\"}\\n')\n    os._exit(0)\n".into(),
        ),
        (
            "fake fields",
            "import os\ndef solution():\n    os.write(3, b'{\"status\": \"ok\", \"value_kind\": \"number\", \"value\": 1, \"stdout\": \"PWNED\", \"exit_code\": 0, \"seconds\": -1}\\n')\n    os._exit(0)\n".into(),
        ),
        (
            "mistyped value",
            "import os\ndef solution():\n    os.write(3, b'{\"status\": \"ok\", \"value_kind\": \"number\", \"value\": \"PWNED\"}\\n')\n    os._exit(0)\n".into(),
        ),
        (
            "garbage",
            "import os\ndef solution():\n    os.write(3, bytes(range(256)) * 4)\n    return 1\n".into(),
        ),
        (
            "huge line",
            "import os\ndef solution():\n    s = b'x' * (1 << 20)\n    for _ in range(3):\n        os.write(3, s)\n    return 1\n".into(),
        ),
        (
            "closed channel",
            "import os\ndef solution():\n    os.close(3)\n    return 1\n".into(),
        ),
        (
            "channel replaced by stdout",
            "import os\ndef solution():\n    os.dup2(1, 3)\n    return 1\n".into(),
        ),
        (
            "channel replaced by a file",
            "import os\ndef solution():\n    os.close(3)\n    open('x', 'w')\n    return 1\n".into(),
        ),
        (
            "every fd",
            format!("import os\ndef solution():\n    for fd in range(1025):\n        try:\n            os.write(fd, b'{fake_ok}\\n')\n        except OSError:\n            pass\n    return 1\n"),
        ),
        (
            "a child reports too",
            format!("import os, time\ndef solution():\n    if os.fork() == 0:\n        os.write(3, b'{fake_ok}\\n')\n        os._exit(0)\n    time.sleep(0.2)\n    return 1\n"),
        ),
        (
            "fake worker protocol on stdout",
            format!("import sys\ndef solution():\n    sys.stdout.write('{fake_ok}\\n')\n    return 1\n"),
        ),
    ]
}

#[test]
fn a_forged_result_channel_is_that_programs_runtime_error_and_the_run_goes_on() {
    let sb = sandbox();
    let attacks = forgeries();
    // Honest programs between the attacks: each must still get its own right answer.
    let mut codes = Vec::new();
    for (i, (_, code)) in attacks.iter().enumerate() {
        codes.push(code.clone());
        codes.push(format!("def solution():\n    return {}\n", 1000 + i));
    }
    let outcomes = sb
        .run_many(&codes)
        .expect("a forged channel must never end the run");
    for (i, (name, _)) in attacks.iter().enumerate() {
        let r = &outcomes[2 * i];
        let honest = &outcomes[2 * i + 1];
        assert_eq!(
            honest.value,
            Some(Value::Number((1000 + i) as f64)),
            "honest program after {name}: {honest:?}"
        );
        assert!(!r.message.contains("PWNED"), "{name}: {r:?}");
        assert!(!r.stdout.contains("PWNED") || *name == "fake worker protocol on stdout");
        assert_ne!(
            r.value,
            Some(Value::Number(999.0)),
            "{name} forged a value: {r:?}"
        );
        match *name {
            // Writing the worker's protocol on stdout is only output.
            "fake worker protocol on stdout" => {
                assert_eq!(r.status, RunStatus::Ok, "{name}: {r:?}");
                assert_eq!(r.value, Some(Value::Number(1.0)), "{name}: {r:?}");
            }
            _ => assert_eq!(r.status, RunStatus::RuntimeError, "{name}: {r:?}"),
        }
    }
    ok_after(&sb);
}

#[test]
fn a_flood_on_the_result_channel_hits_the_output_limit() {
    let sb = sandbox();
    let r = sb
        .run("import os\ndef solution():\n    s = b'x' * (1 << 20)\n    while True:\n        os.write(3, s)\n")
        .unwrap();
    assert_eq!(r.status, RunStatus::ResourceLimit, "{r:?}");
    ok_after(&sb);
}

#[test]
fn files_in_dev_shm_and_tmp_do_not_escape_the_limits() {
    let sb = sandbox();
    let marker = format!("soup-hostile-{}", std::process::id());
    // Writes 1 MiB pieces into files of at most 8 MiB (under the per-file limit) in `where`,
    // up to 1 GiB, stopping at the first refusal; returns the bytes written.
    let fill = |place: &str| {
        format!(
            "import os, signal\n\
             signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n\
             def solution():\n\
             \x20   total, piece = 0, b'x' * (1 << 20)\n\
             \x20   try:\n\
             \x20       for i in range(128):\n\
             \x20           with open(os.path.join({place}, '{marker}-%d' % i), 'wb') as f:\n\
             \x20               for _ in range(8):\n\
             \x20                   f.write(piece); f.flush(); total += len(piece)\n\
             \x20   except (OSError, MemoryError):\n\
             \x20       pass\n\
             \x20   return total\n"
        )
    };
    let shm = sb.run(&fill("'/dev/shm'")).unwrap();
    let tmp = sb.run(&fill("'/tmp'")).unwrap();
    let scratch = sb.run(&fill("'.'")).unwrap();
    let posix_shm = sb
        .run("from multiprocessing import shared_memory\ndef solution():\n    m = shared_memory.SharedMemory(create=True, size=256 << 20)\n    m.buf[:] = b'x' * (256 << 20)\n    return 1\n")
        .unwrap();
    let layers = sb.layers().clone();
    let total = |r: &RunOutcome| match r.value {
        Some(Value::Number(n)) => n as u64,
        _ => 0,
    };
    // Nothing reached the machine's own /dev/shm or /tmp.
    for dir in ["/dev/shm", "/tmp"] {
        let leaked: Vec<_> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&marker))
            .collect();
        for e in &leaked {
            let _ = std::fs::remove_file(e.path());
        }
        if layers.private_tmpfs_bytes.is_some() || layers.landlock_abi.is_some() {
            assert!(leaked.is_empty(), "a program wrote into the host's {dir}");
        }
    }
    if let Some(cap) = layers.private_tmpfs_bytes {
        for r in [&shm, &tmp, &scratch] {
            assert!(
                total(r) <= cap,
                "wrote {} bytes past a {cap}-byte tmpfs: {r:?}",
                total(r)
            );
        }
        assert_eq!(total(&shm), 0, "{shm:?}");
        assert!(
            total(&scratch) > 0,
            "the scratch directory must stay usable: {scratch:?}"
        );
        assert_ne!(posix_shm.status, RunStatus::Ok, "{posix_shm:?}");
    } else {
        assert!(layers.refused.iter().any(|r| r.contains("private tmpfs")));
    }
    ok_after(&sb);
}

#[test]
fn unnamed_ram_files_are_capped_by_the_footprint() {
    let sb = sandbox();
    // memfd files live in RAM outside the address space: 1 MiB pieces, 8 MiB per file, as
    // many files as the program may open, up to 2 GiB.
    let code = "import os, signal\n\
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n\
                def solution():\n\
                \x20   total, piece, fds = 0, b'x' * (1 << 20), []\n\
                \x20   try:\n\
                \x20       while total < (2 << 30):\n\
                \x20           fd = os.memfd_create('x')\n\
                \x20           fds.append(fd)\n\
                \x20           for _ in range(8):\n\
                \x20               os.write(fd, piece); total += len(piece)\n\
                \x20   except (OSError, MemoryError):\n\
                \x20       pass\n\
                \x20   return total\n";
    let r = sb.run(code).unwrap();
    let layers = sb.layers().clone();
    let written = match r.value {
        Some(Value::Number(n)) => n as u64,
        _ => 0,
    };
    if let Some(cap) = layers.memory_cgroup_bytes {
        assert!(
            r.status == RunStatus::ResourceLimit || written <= cap,
            "{written} bytes in RAM files past a {cap}-byte cgroup: {r:?}"
        );
    } else {
        assert!(written <= MAX_OPEN_FILES * (8 << 20), "{r:?}");
        assert!(layers.refused.iter().any(|r| r.contains("memory cgroup")));
    }
    ok_after(&sb);
}

#[test]
fn a_fork_bomb_that_allocates_ends_in_a_verdict_and_honest_programs_still_pass() {
    let sb = sandbox_with(3, SandboxMode::Pool);
    let codes: Vec<String> = vec![
        "def solution():\n    return 1\n".into(),
        "import os\ndef solution():\n    a = []\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass\n        a.append(bytearray(64 << 20))\n".into(),
        "def solution():\n    return 2\n".into(),
        "import os\ndef solution():\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass\n".into(),
        "def solution():\n    return 3\n".into(),
    ];
    let r = sb.run_many(&codes).unwrap();
    for (i, want) in [(0, 1.0), (2, 2.0), (4, 3.0)] {
        assert_eq!(r[i].value, Some(Value::Number(want)), "{:?}", r[i]);
    }
    for i in [1, 3] {
        assert!(
            matches!(
                r[i].status,
                RunStatus::ResourceLimit | RunStatus::Timeout | RunStatus::RuntimeError
            ),
            "{:?}",
            r[i]
        );
    }
    ok_after(&sb);
    assert_no_program_processes(&sb);
}

#[test]
fn the_record_names_every_layer_this_machine_grants() {
    let sb = sandbox();
    let l = sb.layers();
    eprintln!("isolation on this machine: {l:#?}");
    assert_eq!(l.max_open_files, MAX_OPEN_FILES);
    if kernel_has_landlock() {
        assert!(l.landlock_abi.is_some(), "{l:?}");
        assert!(l.reads_restricted, "{l:?}");
    }
    // Each layer is either in force or named among the refused ones.
    let named = |what: &str| l.refused.iter().any(|r| r.contains(what));
    assert!(
        l.private_tmpfs_bytes.is_some() || named("private tmpfs"),
        "{l:?}"
    );
    assert!(l.ipc_namespace || named("IPC namespace"), "{l:?}");
    assert!(
        l.memory_cgroup_bytes.is_some() || named("memory cgroup"),
        "{l:?}"
    );
    assert!(l.network_namespace || named("network namespace"), "{l:?}");
    // Old records, written before these fields existed, still load.
    let mut v = serde_json::to_value(l).unwrap();
    let obj = v.as_object_mut().unwrap();
    for k in [
        "reads_restricted",
        "private_tmpfs_bytes",
        "ipc_namespace",
        "memory_cgroup_bytes",
        "pids_cgroup_max",
        "max_open_files",
    ] {
        obj.remove(k);
    }
    let old: IsolationLayers = serde_json::from_value(v).unwrap();
    assert!(!old.reads_restricted);
}

#[test]
fn leftovers_of_a_killed_run_are_cleaned_on_the_next_start() {
    let parent = tempfile::tempdir().unwrap();
    // A pid that ran and is gone.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let make = |name: &str, pid: Option<u32>| {
        let d = parent.path().join(name);
        std::fs::create_dir_all(d.join("w0/p1")).unwrap();
        std::fs::write(d.join("w0/p1/junk"), vec![0u8; 4096]).unwrap();
        if let Some(pid) = pid {
            std::fs::write(d.join(OWNER_FILE), pid.to_string()).unwrap();
        }
        d
    };
    let gone = make(&format!("soup-sandbox-{dead}-abc"), Some(dead));
    let alive = make("soup-sandbox-live-xyz", Some(std::process::id()));
    let unmarked = make("soup-sandbox-unmarked", None);
    let other = make("not-soup-dir", Some(dead));
    let leftover_cgroup = cgroup::Cgroups::find().ok().and_then(|c| {
        let d = c
            .memory_parent()
            .join(format!("{}{dead}-0-w0", cgroup::PREFIX));
        std::fs::create_dir(&d).ok().map(|()| d)
    });
    let sb = Sandbox::new(SandboxConfig {
        workers: 1,
        allow_weaker_isolation: true,
        root_dir: Some(parent.path().to_path_buf()),
        ..SandboxConfig::default()
    })
    .unwrap();
    assert!(!gone.exists(), "a dead soup's directory was kept");
    assert!(alive.exists() && unmarked.exists() && other.exists());
    if let Some(d) = leftover_cgroup {
        assert!(!d.exists(), "a dead soup's cgroup was kept");
    }
    ok_after(&sb);
}
