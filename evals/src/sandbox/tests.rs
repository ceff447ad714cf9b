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
