//! Sandbox throughput: trivial programs per second, one fresh Python process per program (what
//! human-eval and PAL do) against the pool of forking workers, same isolation layers in both.
//!
//! Run: `cargo run --release -p soup-evals --example sandbox_bench -- [PROGRAMS] [WORKERS]`
//! (defaults 400 programs, 2 workers). Reports figures; asserts nothing about speed.

use soup_evals::sandbox::{RunStatus, Sandbox, SandboxConfig, SandboxMode};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(400);
    let workers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let programs: Vec<String> = (0..n)
        .map(|i| format!("def solution():\n    a = {i}\n    b = a * 2 + 1\n    return b\n"))
        .collect();
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
        // Fresh-process mode runs fewer programs: it is slow and the rate is what matters.
        let count = if mode == SandboxMode::FreshProcess {
            n.min(200)
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
        let l = sandbox.layers();
        println!(
            "{mode:?}: {count} programs, {workers} workers, {secs:.2} s, {:.0} programs/s ({ok} ok); layers: uid {:?}, netns {}, landlock {:?}, refused {:?}",
            count as f64 / secs,
            l.separate_uid_base,
            l.network_namespace,
            l.landlock_abi,
            l.refused
        );
    }
}
