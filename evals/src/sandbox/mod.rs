//! The Python sandbox: runs untrusted model-written programs and reports what happened,
//! many in parallel, without letting one of them hurt the workbench or the machine.
//!
//! Design (measured in `examples/sandbox_bench.rs`): a pool of long-lived Python *worker*
//! processes (`worker.py`) started with the process-wide layers (own session, empty
//! environment, a private network namespace, Landlock write rules limited to the worker's
//! directory). For each program the worker forks a FRESH child — a new process, a fresh
//! directory, its own session and process group, rlimits (CPU, address space, processes,
//! file size), a separate unprivileged uid when we are root, stdin on /dev/null, captured and
//! truncated stdout/stderr — and afterwards kills every process left under that uid. Forking a
//! warm interpreter costs about a millisecond where starting `python3` costs tens, which is what
//! makes the throughput target reachable on two cores while isolation stays per program.
//! [`SandboxMode::FreshProcess`] starts one worker per program instead (what human-eval and PAL
//! do), for comparison and as a fallback.
//!
//! Where the OS refuses a layer (no root and no user namespaces, no Landlock), [`Sandbox::new`]
//! fails unless [`SandboxConfig::allow_weaker_isolation`] is set; either way
//! [`Sandbox::layers`] says what is in force, for the run record.

mod os;

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

const WORKER_PY: &str = include_str!("worker.py");

/// How programs get their process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxMode {
    /// Warm workers fork a fresh child per program (default).
    Pool,
    /// A new Python interpreter per program (the classic baseline).
    FreshProcess,
}

/// Sandbox settings. `Default` gives the limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxConfig {
    /// Interpreter to use; None finds `python3` on PATH (resolving pyenv-style shims).
    pub python: Option<PathBuf>,
    /// Programs run at once; 0 means one per CPU.
    pub workers: usize,
    pub mode: SandboxMode,
    /// Wall-clock limit per program.
    pub timeout: Duration,
    /// RLIMIT_AS per program.
    pub memory_bytes: u64,
    /// RLIMIT_NPROC per program (counts the program's own uid only when we are root).
    pub max_processes: u64,
    /// RLIMIT_FSIZE per program.
    pub max_file_bytes: u64,
    /// Bytes of stdout and of stderr kept per program.
    pub output_limit: usize,
    /// Total output after which the program is stopped with `resource_limit`.
    pub output_hard_limit: usize,
    /// When root, programs run as uids from `uid_base` up to `uid_base + 999_999` (gid alike),
    /// one per worker. These ids must belong to nobody else: the sandbox kills every process of
    /// a worker's uid after each program.
    pub uid_base: u32,
    /// Function called after the program is executed; its return value is the answer.
    /// Empty: only execute the program.
    pub entry: String,
    /// Run even when the OS refuses an isolation layer (recorded in [`IsolationLayers`]).
    pub allow_weaker_isolation: bool,
    /// Where program directories are made; None: /dev/shm when writable, else the temp dir.
    /// A RAM file system matters: on a busy ext4 disk creating and removing one directory
    /// per program cost ~3 ms, more than running the program.
    pub root_dir: Option<PathBuf>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            python: None,
            workers: 0,
            mode: SandboxMode::Pool,
            timeout: Duration::from_secs(5),
            memory_bytes: 512 << 20,
            max_processes: 16,
            max_file_bytes: 16 << 20,
            output_limit: 64 << 10,
            output_hard_limit: 8 << 20,
            uid_base: 990_000,
            entry: "solution".into(),
            allow_weaker_isolation: false,
            root_dir: None,
        }
    }
}

/// The isolation actually in force, recorded with every run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsolationLayers {
    pub mode: SandboxMode,
    pub python: PathBuf,
    pub python_version: String,
    pub workers: usize,
    /// Directory under which program directories were made.
    pub root_dir: PathBuf,
    pub wall_timeout_s: f64,
    pub cpu_limit_s: u64,
    pub memory_bytes: u64,
    pub max_processes: u64,
    pub max_file_bytes: u64,
    pub output_limit: usize,
    /// Always true: a fresh directory per program, own process group killed whole,
    /// empty environment, stdin on /dev/null.
    pub fresh_dir_per_program: bool,
    pub process_group: bool,
    pub empty_environment: bool,
    pub stdin_closed: bool,
    /// uid programs run as when separate from ours (root only); None: our own uid.
    pub separate_uid_base: Option<u32>,
    pub network_namespace: bool,
    /// Landlock ABI in force (writes only inside the program's worker directory).
    pub landlock_abi: Option<u32>,
    /// Landlock also forbids TCP bind/connect (ABI >= 4).
    pub landlock_tcp: bool,
    /// Programs cannot signal processes outside the sandbox: by uid (root) or by Landlock
    /// scoping (ABI >= 6). Without it a program's `os.kill(-1, 9)` can kill soup.
    pub signals_contained: bool,
    /// Layers the OS refused, with the reason.
    pub refused: Vec<String>,
}

/// A value returned by `solution()`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Value {
    /// int, float, bool, Decimal, Fraction: anything `float()` accepts.
    Number(f64),
    /// A string (graders may still parse a number out of it).
    Text(String),
    /// Anything else, as its repr.
    Other(String),
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Ok,
    /// The program ran but defined no entry function.
    NoEntry,
    SyntaxError,
    RuntimeError,
    Timeout,
    ResourceLimit,
}

/// Everything known about one program's run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunOutcome {
    pub status: RunStatus,
    pub value: Option<Value>,
    /// One-line explanation for anything but Ok.
    pub message: String,
    pub stdout: String,
    pub stderr: String,
    /// stdout or stderr was cut at the output limit.
    pub truncated: bool,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub seconds: f64,
}

/// Why the sandbox cannot run programs at all (per-program failures are [`RunOutcome`]s).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("python3 was not found ({0}); install CPython 3.9+ (e.g. `apt-get install python3`) or set the sandbox's python path")]
    PythonMissing(String),
    #[error("{python}: Python {version} is too old; the sandbox needs CPython 3.9 or newer")]
    PythonTooOld { python: PathBuf, version: String },
    #[error("{python}: its standard library cannot be read by the unprivileged uid {uid} that programs run as (is it under /root?); install a system python3 (e.g. `apt-get install python3`) or set the sandbox's python path to one readable by all users")]
    PythonUnreadable { python: PathBuf, uid: u32 },
    #[error("the OS refused an isolation layer: {0}; run as root or enable unprivileged user namespaces, or allow weaker isolation explicitly (it is then recorded in the run)")]
    LayerRefused(String),
    #[error("cannot prepare the sandbox directory {path}: {source}; check that the temp directory is writable")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start a sandbox worker: {0}")]
    Spawn(String),
    #[error("sandbox setup failed inside the worker: {0}")]
    Setup(String),
    #[error("sandbox internal error: {0}")]
    Internal(String),
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    pending: Vec<u8>,
}

impl Worker {
    /// Read one line, giving up at `deadline`.
    fn read_line(&mut self, deadline: Instant) -> Result<Vec<u8>, String> {
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                let rest = self.pending.split_off(i + 1);
                let mut line = std::mem::replace(&mut self.pending, rest);
                line.pop();
                return Ok(line);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err("the worker did not answer in time".into());
            }
            let fd = self.stdout.as_raw_fd();
            match os::poll_readable(fd, deadline - now) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => return Err(format!("poll failed: {e}")),
            }
            let mut buf = [0u8; 65536];
            // SAFETY: reading into a local buffer from a fd we own.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(format!("read failed: {e}"));
            }
            if n == 0 {
                return Err("the worker exited".into());
            }
            self.pending.extend_from_slice(&buf[..n as usize]);
        }
    }

    fn kill(mut self) {
        os::kill_group(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Slot {
    index: usize,
    worker: Option<Worker>,
}

/// A pool of sandbox workers. `Sync`: share it by reference between threads.
pub struct Sandbox {
    cfg: SandboxConfig,
    python: PathBuf,
    layers: IsolationLayers,
    root: tempfile::TempDir,
    landlock_abi: Option<u32>,
    netns: NetChoice,
    uid_separate: bool,
    /// This sandbox's first program uid: blocks of uids are never shared between sandboxes
    /// of one process, since each worker kills every process of its uid after a program.
    first_uid: u32,
    slots: Mutex<Vec<Slot>>,
    ready: Condvar,
}

#[derive(Clone, Copy)]
enum NetChoice {
    None,
    Root,
    User,
}

#[derive(Deserialize)]
struct WireOutcome {
    status: String,
    #[serde(default)]
    value_kind: Option<String>,
    #[serde(default)]
    value: Option<serde_json::Value>,
    #[serde(default)]
    message: String,
    #[serde(default)]
    stdout: String,
    #[serde(default)]
    stderr: String,
    #[serde(default)]
    truncated: bool,
    #[serde(default)]
    exit_code: Option<i32>,
    #[serde(default)]
    signal: Option<i32>,
    #[serde(default)]
    seconds: f64,
}

/// Find the real interpreter behind `python3` (a pyenv shim is a shell script that needs the
/// environment we are about to clear) and its version.
fn resolve_python(cfg: &SandboxConfig) -> Result<(PathBuf, String), SandboxError> {
    let exe = cfg
        .python
        .clone()
        .unwrap_or_else(|| PathBuf::from("python3"));
    let out = Command::new(&exe)
        .args([
            "-I",
            "-S",
            "-c",
            "import sys; print(sys.executable); print('%d.%d.%d' % sys.version_info[:3])",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| SandboxError::PythonMissing(format!("{}: {e}", exe.display())))?;
    if !out.status.success() {
        return Err(SandboxError::PythonMissing(format!(
            "{} exited with {}: {}",
            exe.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let real = lines.next().filter(|l| !l.is_empty()).map(PathBuf::from);
    let version = lines.next().unwrap_or("").to_string();
    let python = real.unwrap_or(exe);
    let mut parts = version.split('.').filter_map(|p| p.parse::<u32>().ok());
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if major != 3 || minor < 9 {
        return Err(SandboxError::PythonTooOld { python, version });
    }
    Ok((python, version))
}

impl Sandbox {
    /// Start the pool: find Python, probe which isolation layers the OS grants, start workers.
    pub fn new(cfg: SandboxConfig) -> Result<Sandbox, SandboxError> {
        let is_root = os::is_root();
        let (python, python_version) = find_python(&cfg, is_root)?;
        let workers = if cfg.workers == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            cfg.workers
        };
        let parent = cfg.root_dir.clone().unwrap_or_else(default_root_parent);
        let root = tempfile::Builder::new()
            .prefix("soup-sandbox-")
            .tempdir_in(&parent)
            .map_err(|source| SandboxError::Dir {
                path: parent.clone(),
                source,
            })?;
        set_mode(root.path(), 0o711)?;
        let mut refused = Vec::new();

        // Probe each refusable layer on its own so the record names the one refused.
        let probe_dir = root.path().join("probe");
        make_dir(&probe_dir)?;
        let netns = if is_root {
            NetChoice::Root
        } else {
            NetChoice::User
        };
        let netns = match probe(&python, &probe_dir, None, netns) {
            Ok(()) => netns,
            Err(e) => {
                refused.push(format!("network namespace: {e}"));
                NetChoice::None
            }
        };
        let mut landlock_tcp = false;
        let mut landlock_scoped = false;
        let landlock_abi = match os::landlock_abi() {
            Ok(abi) => match os::landlock_write_only_beneath(&probe_dir, abi) {
                Ok((fd, extras)) => {
                    match probe(&python, &probe_dir, Some(fd.as_raw_fd()), NetChoice::None) {
                        Ok(()) => {
                            landlock_tcp = extras.tcp;
                            landlock_scoped = extras.scoped;
                            Some(abi)
                        }
                        Err(e) => {
                            refused.push(format!("landlock: {e}"));
                            None
                        }
                    }
                }
                Err(e) => {
                    refused.push(format!("landlock: cannot build a ruleset: {e}"));
                    None
                }
            },
            Err(e) => {
                refused.push(format!("landlock: {e}"));
                None
            }
        };
        if !is_root {
            refused.push(
                "separate uid: not running as root, programs run as our own uid (RLIMIT_NPROC counts all our processes; processes a program leaves in another session are not swept)".into(),
            );
        }
        let signals_contained = is_root || landlock_scoped;
        if !signals_contained {
            refused.push(
                "signal containment: neither root nor Landlock ABI 6; a program can signal every process of our uid, soup included".into(),
            );
        }
        if !refused.is_empty() && !cfg.allow_weaker_isolation {
            return Err(SandboxError::LayerRefused(refused.join("; ")));
        }
        let first_uid = allocate_uids(cfg.uid_base, workers);
        let layers = IsolationLayers {
            mode: cfg.mode,
            python: python.clone(),
            python_version,
            workers,
            root_dir: root.path().to_path_buf(),
            wall_timeout_s: cfg.timeout.as_secs_f64(),
            cpu_limit_s: cpu_limit(cfg.timeout),
            memory_bytes: cfg.memory_bytes,
            max_processes: cfg.max_processes,
            max_file_bytes: cfg.max_file_bytes,
            output_limit: cfg.output_limit,
            fresh_dir_per_program: true,
            process_group: true,
            empty_environment: true,
            stdin_closed: true,
            separate_uid_base: is_root.then_some(first_uid),
            network_namespace: !matches!(netns, NetChoice::None),
            landlock_abi,
            landlock_tcp,
            signals_contained,
            refused,
        };
        let sandbox = Sandbox {
            slots: Mutex::new(
                (0..workers)
                    .map(|index| Slot {
                        index,
                        worker: None,
                    })
                    .collect(),
            ),
            ready: Condvar::new(),
            python,
            layers,
            root,
            landlock_abi,
            netns,
            uid_separate: is_root,
            first_uid,
            cfg,
        };
        if sandbox.cfg.mode == SandboxMode::Pool {
            let mut slots = sandbox.lock_slots();
            for slot in slots.iter_mut() {
                slot.worker = Some(sandbox.spawn_worker(slot.index)?);
            }
        }
        Ok(sandbox)
    }

    /// The isolation in force; store it with the run.
    pub fn layers(&self) -> &IsolationLayers {
        &self.layers
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.cfg
    }

    fn lock_slots(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        // A panic while holding the lock leaves the slots usable: recover the guard.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn checkout(&self) -> Slot {
        let mut slots = self.lock_slots();
        loop {
            if let Some(slot) = slots.pop() {
                return slot;
            }
            slots = self.ready.wait(slots).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn checkin(&self, slot: Slot) {
        self.lock_slots().push(slot);
        self.ready.notify_one();
    }

    fn spawn_worker(&self, index: usize) -> Result<Worker, SandboxError> {
        let dir = self.root.path().join(format!("w{index}"));
        if !dir.exists() {
            make_dir(&dir)?;
        }
        let uid: i64 = if self.uid_separate {
            i64::from(self.first_uid) + index as i64
        } else {
            -1
        };
        let wcfg = serde_json::json!({
            "root": dir,
            "uid": uid,
            "entry": self.cfg.entry,
            "timeout": self.cfg.timeout.as_secs_f64(),
            "cpu": cpu_limit(self.cfg.timeout),
            "mem": self.cfg.memory_bytes,
            "nproc": self.cfg.max_processes,
            "fsize": self.cfg.max_file_bytes,
            "out_cap": self.cfg.output_limit,
            "hard_cap": self.cfg.output_hard_limit,
            // Set by `PreExec::apply`; lets the worker skip the stray-killing fork when no
            // process outlived the program.
            "subreaper": true,
            // A warm pool preloads common modules once; a one-shot worker would only pay for
            // them on every program.
            "preload": self.cfg.mode == SandboxMode::Pool,
        });
        let landlock = match self.landlock_abi {
            Some(abi) => Some(
                os::landlock_write_only_beneath(&dir, abi)
                    .map_err(|e| SandboxError::Spawn(format!("landlock ruleset: {e}")))?
                    .0,
            ),
            None => None,
        };
        let pre = os::PreExec {
            landlock_fd: landlock.as_ref().map(|fd| fd.as_raw_fd()),
            netns: netns_for(self.netns),
        };
        let mut cmd = Command::new(&self.python);
        cmd.args(["-I", "-S", "-c", WORKER_PY])
            .arg(wcfg.to_string())
            .env_clear()
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // SAFETY: `apply` only makes async-signal-safe syscalls on values prepared above.
        unsafe {
            cmd.pre_exec(move || pre.apply());
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| SandboxError::Spawn(format!("{}: {e}", self.python.display())))?;
        drop(landlock);
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            return Err(SandboxError::Spawn("worker pipes missing".into()));
        };
        let mut worker = Worker {
            child,
            stdin,
            stdout,
            pending: Vec::new(),
        };
        match worker.read_line(Instant::now() + Duration::from_secs(30)) {
            Ok(line) if line.starts_with(b"{\"ready\"") => Ok(worker),
            Ok(line) => {
                worker.kill();
                Err(SandboxError::Spawn(format!(
                    "unexpected handshake: {}",
                    String::from_utf8_lossy(&line)
                )))
            }
            Err(e) => {
                worker.kill();
                Err(SandboxError::Spawn(format!("worker did not start: {e}")))
            }
        }
    }

    /// Run one program and report; sandbox failures (not program failures) are errors.
    pub fn run(&self, code: &str) -> Result<RunOutcome, SandboxError> {
        let mut slot = self.checkout();
        let result = self.run_in(&mut slot, code);
        self.checkin(slot);
        result
    }

    /// Run many programs on all workers at once; results in input order.
    pub fn run_many(&self, codes: &[String]) -> Result<Vec<RunOutcome>, SandboxError> {
        let n = codes.len();
        let threads = self.layers.workers.min(n);
        if threads <= 1 {
            return codes.iter().map(|c| self.run(c)).collect();
        }
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<Result<RunOutcome, SandboxError>>>> =
            Mutex::new((0..n).map(|_| None).collect());
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let r = self.run(&codes[i]);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                });
            }
        });
        results
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(SandboxError::Internal("a run was lost".into()))))
            .collect()
    }

    fn run_in(&self, slot: &mut Slot, code: &str) -> Result<RunOutcome, SandboxError> {
        let mut worker = match slot.worker.take() {
            Some(mut w) => match w.child.try_wait() {
                Ok(None) => w,
                _ => {
                    w.kill();
                    self.spawn_worker(slot.index)?
                }
            },
            None => self.spawn_worker(slot.index)?,
        };
        let request = serde_json::json!({ "code": code }).to_string() + "\n";
        let started = Instant::now();
        let deadline = started + self.cfg.timeout + Duration::from_secs(10);
        let answer = worker
            .stdin
            .write_all(request.as_bytes())
            .and_then(|()| worker.stdin.flush())
            .map_err(|e| format!("cannot send the program: {e}"))
            .and_then(|()| worker.read_line(deadline));
        let line = match answer {
            Ok(line) => line,
            Err(why) => {
                // The worker died or hung (a program that killed its parent, or a bug): the
                // program gets a runtime error and the slot a fresh worker.
                worker.kill();
                if self.cfg.mode == SandboxMode::Pool {
                    slot.worker = Some(self.spawn_worker(slot.index)?);
                }
                return Ok(RunOutcome {
                    status: RunStatus::RuntimeError,
                    value: None,
                    message: format!("the sandbox worker was lost while running the program ({why}); it was restarted"),
                    stdout: String::new(),
                    stderr: String::new(),
                    truncated: false,
                    exit_code: None,
                    signal: None,
                    seconds: started.elapsed().as_secs_f64(),
                });
            }
        };
        match self.cfg.mode {
            SandboxMode::Pool => slot.worker = Some(worker),
            SandboxMode::FreshProcess => {
                drop(worker.stdin);
                let _ = worker.child.wait();
            }
        }
        let wire: WireOutcome = serde_json::from_slice(&line).map_err(|e| {
            SandboxError::Internal(format!(
                "bad worker answer ({e}): {}",
                String::from_utf8_lossy(&line)
            ))
        })?;
        to_outcome(wire)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let mut slots = self.lock_slots();
        for slot in slots.iter_mut() {
            if let Some(w) = slot.worker.take() {
                w.kill();
            }
        }
    }
}

fn to_outcome(w: WireOutcome) -> Result<RunOutcome, SandboxError> {
    let status = match w.status.as_str() {
        "ok" => RunStatus::Ok,
        "no_entry" => RunStatus::NoEntry,
        "syntax_error" => RunStatus::SyntaxError,
        "runtime_error" => RunStatus::RuntimeError,
        "timeout" => RunStatus::Timeout,
        "resource_limit" => RunStatus::ResourceLimit,
        "setup_error" => return Err(SandboxError::Setup(w.message)),
        other => {
            return Err(SandboxError::Internal(format!(
                "worker reported {other}: {}",
                w.message
            )))
        }
    };
    let value = match (w.value_kind.as_deref(), w.value) {
        (Some("number"), Some(v)) => v.as_f64().map(Value::Number),
        (Some("text"), Some(serde_json::Value::String(s))) => Some(Value::Text(s)),
        (Some(_), Some(v)) => Some(Value::Other(match v {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        })),
        _ => None,
    };
    Ok(RunOutcome {
        status,
        value,
        message: w.message,
        stdout: w.stdout,
        stderr: w.stderr,
        truncated: w.truncated,
        exit_code: w.exit_code,
        signal: w.signal,
        seconds: w.seconds,
    })
}

/// A block of `n` program uids unique within this process: `base + (pid % 1000) * 1000` onward,
/// so two soup processes rarely share one either.
fn allocate_uids(base: u32, n: usize) -> u32 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let offset = NEXT.fetch_add(n, Ordering::Relaxed) % 1000;
    base.saturating_add((std::process::id() % 1000) * 1000)
        .saturating_add(offset as u32)
}

fn default_root_parent() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let writable = std::fs::metadata(shm).is_ok_and(|m| m.is_dir())
        && tempfile::Builder::new()
            .prefix("soup-probe-")
            .tempdir_in(shm)
            .is_ok();
    if writable {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn cpu_limit(timeout: Duration) -> u64 {
    timeout.as_secs_f64().ceil() as u64 + 1
}

fn netns_for(c: NetChoice) -> os::NetNs {
    match c {
        NetChoice::None => os::NetNs::None,
        NetChoice::Root => os::NetNs::Root,
        NetChoice::User => os::NetNs::user(),
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), SandboxError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        SandboxError::Dir {
            path: path.to_path_buf(),
            source,
        }
    })
}

fn make_dir(path: &Path) -> Result<(), SandboxError> {
    std::fs::create_dir_all(path).map_err(|source| SandboxError::Dir {
        path: path.to_path_buf(),
        source,
    })?;
    // Traversable by the program uids, writable only by us: programs write in their own
    // subdirectory, which the worker creates and hands to their uid.
    set_mode(path, 0o711)
}

/// The configured interpreter, or else the first of `python3` on PATH, /usr/bin/python3 and
/// /usr/local/bin/python3 that runs and — when we are root, since programs then run as another
/// uid — whose standard library that uid can read (a pyenv Python under /root is not).
fn find_python(cfg: &SandboxConfig, is_root: bool) -> Result<(PathBuf, String), SandboxError> {
    if cfg.python.is_some() {
        let (p, v) = resolve_python(cfg)?;
        if is_root && !readable_as(&p, cfg.uid_base) {
            return Err(SandboxError::PythonUnreadable {
                python: p,
                uid: cfg.uid_base,
            });
        }
        return Ok((p, v));
    }
    let mut first_err = None;
    for candidate in ["python3", "/usr/bin/python3", "/usr/local/bin/python3"] {
        let c = SandboxConfig {
            python: Some(PathBuf::from(candidate)),
            ..cfg.clone()
        };
        match resolve_python(&c) {
            Ok((p, v)) => {
                if !is_root || readable_as(&p, cfg.uid_base) {
                    return Ok((p, v));
                }
                first_err.get_or_insert(SandboxError::PythonUnreadable {
                    python: p,
                    uid: cfg.uid_base,
                });
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or_else(|| SandboxError::PythonMissing("no candidate".into())))
}

/// Whether `python` can start and import from its standard library as `uid`.
fn readable_as(python: &Path, uid: u32) -> bool {
    Command::new(python)
        .args(["-I", "-S", "-c", "import fractions, json"])
        .env_clear()
        .current_dir("/")
        .uid(uid)
        .gid(uid)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Start `python -c pass` with one layer to learn whether the OS grants it.
fn probe(
    python: &Path,
    dir: &Path,
    landlock_fd: Option<i32>,
    net: NetChoice,
) -> Result<(), String> {
    let pre = os::PreExec {
        landlock_fd,
        netns: netns_for(net),
    };
    let mut cmd = Command::new(python);
    cmd.args(["-I", "-S", "-c", "pass"])
        .env_clear()
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: async-signal-safe syscalls only.
    unsafe {
        cmd.pre_exec(move || pre.apply());
    }
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("probe exited with {s}")),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests;
