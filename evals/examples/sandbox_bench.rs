//! Sandbox throughput: trivial programs per second on N workers (default 2), three ways:
//!
//! 1. `bare fresh process`: what human-eval and PAL do, one `python3 -I -S -c` per program, in
//!    a fresh temp directory, with an empty environment, its own session, rlimits and (as root)
//!    another uid, waited on with a timeout — but no output caps, no network namespace, no
//!    Landlock, no stray-process sweep.
//! 2. `FreshProcess`: our sandbox with every layer, one new worker interpreter per program.
//! 3. `Pool`: our sandbox with every layer, warm workers forking a fresh child per program.
//!
//! Run: `cargo run --release -p soup-evals --example sandbox_bench -- [PROGRAMS] [WORKERS]`.
//! Reports figures; asserts nothing about speed.

use soup_evals::sandbox::{RunStatus, Sandbox, SandboxConfig, SandboxMode};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn bare(python: &std::path::Path, programs: &[String], workers: usize, uid: Option<u32>) -> usize {
    let next = AtomicUsize::new(0);
    let ok = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= programs.len() {
                    break;
                }
                let Ok(dir) = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir())
                else {
                    continue;
                };
                if let Some(u) = uid {
                    let _ = std::os::unix::fs::chown(dir.path(), Some(u), Some(u));
                }
                let code = format!("{}\nprint(solution())\n", programs[i]);
                let mut cmd = Command::new(python);
                cmd.args(["-I", "-S", "-c", &code])
                    .env_clear()
                    .current_dir(dir.path())
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                if let Some(u) = uid {
                    cmd.uid(u).gid(u);
                }
                // SAFETY: setsid and setrlimit are async-signal-safe.
                unsafe {
                    cmd.pre_exec(|| {
                        libc::setsid();
                        for (res, v) in [
                            (libc::RLIMIT_AS, 512u64 << 20),
                            (libc::RLIMIT_CPU, 6),
                            (libc::RLIMIT_FSIZE, 16 << 20),
                        ] {
                            let l = libc::rlimit {
                                rlim_cur: v,
                                rlim_max: v,
                            };
                            libc::setrlimit(res, &l);
                        }
                        Ok(())
                    });
                }
                let Ok(mut child) = cmd.spawn() else { continue };
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    match child.try_wait() {
                        Ok(Some(st)) => {
                            if st.success() {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            break;
                        }
                        Ok(None) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_micros(500))
                        }
                        _ => {
                            let _ = child.kill();
                            let _ = child.wait();
                            break;
                        }
                    }
                }
            });
        }
    });
    ok.into_inner()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(600);
    let workers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let programs: Vec<String> = (0..n)
        .map(|i| format!("def solution():\n    a = {i}\n    b = a * 2 + 1\n    return b\n"))
        .collect();
    // Fresh processes are slow: a smaller sample gives the rate.
    let fresh_n = n.min(200);
    let mut python = None;
    for mode in [SandboxMode::FreshProcess, SandboxMode::Pool] {
        let cfg = SandboxConfig {
            workers,
            mode,
            allow_weaker_isolation: true,
            ..SandboxConfig::default()
        };
        let sandbox = match Sandbox::new(cfg) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("cannot start the sandbox: {e}");
                std::process::exit(1);
            }
        };
        let l = sandbox.layers().clone();
        if python.is_none() {
            println!(
                "python {} ({}), layers: uid {:?}, netns {}, landlock {:?}, refused {:?}",
                l.python.display(),
                l.python_version,
                l.separate_uid_base,
                l.network_namespace,
                l.landlock_abi,
                l.refused
            );
            let uid = l.separate_uid_base.map(|u| u + 500);
            let t = Instant::now();
            let ok = bare(&l.python, &programs[..fresh_n], workers, uid);
            let secs = t.elapsed().as_secs_f64();
            println!(
                "bare fresh process: {fresh_n} programs, {workers} workers, {secs:.2} s, {:.0} programs/s ({ok} ok)",
                fresh_n as f64 / secs
            );
            python = Some(l.python.clone());
        }
        let count = if mode == SandboxMode::FreshProcess {
            fresh_n
        } else {
            n
        };
        let t = Instant::now();
        let outcomes = match sandbox.run_many(&programs[..count]) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("sandbox failed: {e}");
                std::process::exit(1);
            }
        };
        let secs = t.elapsed().as_secs_f64();
        let ok = outcomes
            .iter()
            .filter(|o| o.status == RunStatus::Ok)
            .count();
        println!(
            "{mode:?}: {count} programs, {workers} workers, {secs:.2} s, {:.0} programs/s ({ok} ok)",
            count as f64 / secs
        );
    }
}
