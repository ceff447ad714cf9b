//! Hostile-program suite: every program gets a verdict and the test process keeps running.

use super::*;

fn sandbox() -> Sandbox {
    let cfg = SandboxConfig {
        workers: 2,
        timeout: Duration::from_secs(3),
        allow_weaker_isolation: true,
        ..SandboxConfig::default()
    };
    Sandbox::new(cfg).expect("sandbox starts (needs python3 on PATH)")
}

#[test]
fn trivial_program_returns_value() {
    let sb = sandbox();
    eprintln!("layers: {:?}", sb.layers());
    let r = sb.run("def solution():\n    print('hi')\n    return 6 * 7\n").unwrap();
    assert_eq!(r.status, RunStatus::Ok, "{r:?}");
    assert_eq!(r.value, Some(Value::Number(42.0)));
    assert_eq!(r.stdout, "hi\n");
}
