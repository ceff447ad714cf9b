//! The Python sandbox: runs untrusted model-written programs and reports what happened,
//! many in parallel, without letting one of them hurt the workbench or the machine.
//!
//! Design (measured in `examples/sandbox_bench.rs`): a pool of long-lived Python *worker*
//! processes (`worker.py`) started with the process-wide layers: own session, empty
//! environment, private network and IPC namespaces, a private mount namespace whose /tmp is a
//! size-capped tmpfs (the only place programs write) with /dev/shm and /var/tmp covered
//! read-only, a cgroup capping memory (files in RAM included) and processes, and Landlock
//! rules under which programs read only the interpreter, its libraries and their own scratch
//! directory: not the answer key, the user's files, nor /proc of other processes. For each
//! program the worker forks a FRESH child — a new process, a fresh directory, its own session
//! and process group, rlimits (CPU, address space, processes, open files, file size), a
//! separate unprivileged uid when we are root, stdin on /dev/null, captured and truncated
//! stdout/stderr — and afterwards kills every process left under that uid. Forking a
//! warm interpreter costs about a millisecond where starting `python3` costs tens, which is what
//! makes the throughput target reachable on two cores while isolation stays per program.
//! [`SandboxMode::FreshProcess`] starts one worker per program instead (what human-eval and PAL
//! do), for comparison and as a fallback.
//!
//! The verdict comes from the worker, which user code cannot reach: the worker judges from the
//! exit status and signal, a program's own report is believed only when it is one well-formed
//! line from a process that exited cleanly, and nothing a program writes can become a sandbox
//! error: the worst it can get is its own `runtime_error`.
//!
//! Where the OS refuses a layer (no root and no user namespaces, no Landlock), [`Sandbox::new`]
//! fails unless [`SandboxConfig::allow_weaker_isolation`] is set; either way
//! [`Sandbox::layers`] says what is in force, for the run record.

mod cgroup;
mod os;

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
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
    /// RLIMIT_NPROC per program (counts the program's own uid only when we are root), and the
    /// cap of the worker's pids cgroup where there is one.
    pub max_processes: u64,
    /// RLIMIT_FSIZE per program.
    pub max_file_bytes: u64,
    /// Size of the private tmpfs that holds the program's scratch directory (its files count
    /// in RAM, so they are capped here and, with a memory cgroup, in the program's footprint).
    #[serde(default = "default_scratch_bytes")]
    pub scratch_bytes: u64,
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
            // Math programs do not fork; each process may hold `memory_bytes`, so without a
            // memory cgroup this bounds the footprint at a few times the limit.
            max_processes: 4,
            max_file_bytes: 16 << 20,
            scratch_bytes: default_scratch_bytes(),
            output_limit: 64 << 10,
            output_hard_limit: 8 << 20,
            uid_base: 990_000,
            entry: "solution".into(),
            allow_weaker_isolation: false,
            root_dir: None,
        }
    }
}

fn default_scratch_bytes() -> u64 {
    64 << 20
}

/// RLIMIT_NOFILE per program: with RLIMIT_FSIZE it bounds what unnamed RAM files (memfd) and
/// pipes can hold when no memory cgroup counts them.
const MAX_OPEN_FILES: u64 = 64;
/// What the worker itself may use inside its memory cgroup beside one program's allowance.
const WORKER_HEADROOM: u64 = 96 << 20;

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
    /// Programs read only the interpreter, its standard library and shared libraries, a few
    /// devices and their scratch directory (Landlock read rules): no answer key, no user file,
    /// no /proc of any process. False: they can read every file their uid can.
    #[serde(default)]
    pub reads_restricted: bool,
    /// The scratch directory is a private tmpfs of this many bytes, and /dev/shm and /var/tmp
    /// are empty read-only mounts (a private mount namespace). None: the scratch directory
    /// lives under `root_dir` and files a program writes there count only per file.
    #[serde(default)]
    pub private_tmpfs_bytes: Option<u64>,
    /// A private IPC namespace in which System V shared memory dies with its last user.
    #[serde(default)]
    pub ipc_namespace: bool,
    /// The worker and its programs together are capped at this many bytes of memory (files in
    /// RAM included) by a memory cgroup.
    #[serde(default)]
    pub memory_cgroup_bytes: Option<u64>,
    /// ... and at this many processes by a pids cgroup.
    #[serde(default)]
    pub pids_cgroup_max: Option<u64>,
    /// RLIMIT_NOFILE per program.
    #[serde(default)]
    pub max_open_files: u64,
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

/// Longest line the Rust side accepts from a worker; a worker's answer holds at most two
/// truncated output buffers and a short message, so anything longer is a broken worker.
const MAX_WORKER_LINE: usize = 16 << 20;

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    pending: Vec<u8>,
    /// The worker's cgroup (its programs are in it too); killed whole with the worker.
    cgroup: Option<cgroup::WorkerCgroup>,
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
            if self.pending.len() > MAX_WORKER_LINE {
                return Err("the worker sent an over-long line".into());
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

    fn oom_kills(&self) -> u64 {
        self.cgroup.as_ref().map_or(0, |c| c.oom_kills())
    }

    fn kill(mut self) {
        os::kill_group(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Programs run in their own sessions: the cgroup is what finds all of them.
        if let Some(cg) = self.cgroup.take() {
            cg.kill_all();
        }
    }
}

struct Slot {
    index: usize,
    worker: Option<Worker>,
}

/// Which layers a worker is started with; probed one by one in [`Sandbox::new`].
#[derive(Clone, Default)]
struct Plan {
    is_root: bool,
    net: bool,
    ipc: bool,
    /// A private mount namespace: /tmp becomes the scratch tmpfs, /dev/shm and /var/tmp are
    /// covered read-only.
    private_tmp: bool,
    landlock: Option<u32>,
    /// Landlock also restricts reads and execution to `read_paths`.
    restrict_reads: bool,
    /// Join a cgroup (made per worker).
    cgroup: bool,
}

/// A pool of sandbox workers. `Sync`: share it by reference between threads.
pub struct Sandbox {
    cfg: SandboxConfig,
    python: PathBuf,
    /// What programs may read (with `READ_EXEC`) when reads are restricted.
    read_paths: Vec<PathBuf>,
    layers: IsolationLayers,
    root: tempfile::TempDir,
    plan: Plan,
    cgroups: Option<cgroup::Cgroups>,
    /// This sandbox's first program uid: blocks of uids are never shared between sandboxes
    /// of one process, since each worker kills every process of its uid after a program.
    first_uid: u32,
    slots: Mutex<Vec<Slot>>,
    ready: Condvar,
}

/// A worker's answer. Every field is the worker's own judgement: the program's report has
/// already been checked (or set aside) inside the worker.
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

/// The interpreter: its real path (a pyenv shim is a shell script that needs the environment
/// we are about to clear), its version, and the directories it reads its standard library and
/// extension modules from.
struct PythonInfo {
    exe: PathBuf,
    version: String,
    paths: Vec<PathBuf>,
}

/// Asks the interpreter where it lives and what it reads at start-up.
const PYTHON_INFO: &str = "import sys, json, sysconfig
v = sysconfig.get_config_vars()
paths = list(sys.path) + [v.get('LIBDIR') or '', v.get('LIBPL') or '', v.get('BINLIBDEST') or '', v.get('DESTSHARED') or '']
print(json.dumps({'exe': sys.executable, 'version': '%d.%d.%d' % sys.version_info[:3], 'paths': [p for p in paths if p]}))";

#[derive(Deserialize)]
struct WirePythonInfo {
    exe: String,
    version: String,
    paths: Vec<String>,
}

fn resolve_python(cfg: &SandboxConfig) -> Result<PythonInfo, SandboxError> {
    let exe = cfg
        .python
        .clone()
        .unwrap_or_else(|| PathBuf::from("python3"));
    let out = Command::new(&exe)
        .args(["-I", "-S", "-c", PYTHON_INFO])
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
    let info: WirePythonInfo = serde_json::from_str(text.trim()).map_err(|e| {
        SandboxError::PythonMissing(format!(
            "{} did not describe itself ({e}): {}",
            exe.display(),
            text.trim()
        ))
    })?;
    let python = if info.exe.is_empty() {
        exe
    } else {
        PathBuf::from(info.exe)
    };
    let mut parts = info
        .version
        .split('.')
        .filter_map(|p| p.parse::<u32>().ok());
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if major != 3 || minor < 9 {
        return Err(SandboxError::PythonTooOld {
            python,
            version: info.version,
        });
    }
    Ok(PythonInfo {
        exe: python,
        version: info.version,
        paths: info.paths.into_iter().map(PathBuf::from).collect(),
    })
}

/// What a program may read when reads are restricted: the interpreter, its standard library
/// and extension modules, the system's shared libraries (the loader needs them), time zone
/// data, and nothing from /home, /root, /tmp, /proc, /etc (but the loader's cache) or a data
/// directory.
fn read_paths(info: &PythonInfo) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut add = |p: PathBuf| {
        if !out.contains(&p) {
            out.push(p);
        }
    };
    add(info.exe.clone());
    if let Ok(real) = std::fs::canonicalize(&info.exe) {
        add(real);
    }
    if let Some(bin) = info.exe.parent() {
        // A virtual environment's interpreter reads pyvenv.cfg beside or above it.
        add(bin.join("pyvenv.cfg"));
        if let Some(up) = bin.parent() {
            add(up.join("pyvenv.cfg"));
        }
    }
    for p in &info.paths {
        add(p.clone());
    }
    for p in [
        "/lib",
        "/lib64",
        "/lib32",
        "/libx32",
        "/usr/lib",
        "/usr/lib64",
        "/usr/lib32",
        "/usr/libx32",
        "/etc/ld.so.cache",
        "/etc/localtime",
        "/usr/share/zoneinfo",
        "/dev/zero",
        "/dev/urandom",
        "/dev/random",
    ] {
        add(PathBuf::from(p));
    }
    out
}

/// Modules a probe imports: if Python cannot load these under a layer, that layer is refused.
const PROBE_CODE: &str = "import math, json, fractions, decimal, statistics, random, re, datetime, collections, itertools, functools, heapq, string\nopen('probe.txt', 'w').write('ok')\n";

impl Sandbox {
    /// Start the pool: find Python, probe which isolation layers the OS grants, start workers.
    pub fn new(cfg: SandboxConfig) -> Result<Sandbox, SandboxError> {
        let is_root = os::is_root();
        let info = find_python(&cfg, is_root)?;
        let workers = if cfg.workers == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            cfg.workers
        };
        let parent = cfg.root_dir.clone().unwrap_or_else(default_root_parent);
        clean_leftover_dirs(&parent);
        let root = tempfile::Builder::new()
            .prefix(&format!("{}{}-", cgroup::PREFIX, std::process::id()))
            .tempdir_in(&parent)
            .map_err(|source| SandboxError::Dir {
                path: parent.clone(),
                source,
            })?;
        set_mode(root.path(), 0o711)?;
        // Marks the directory as ours, for the cleaning of a later start if we get killed.
        std::fs::write(root.path().join(OWNER_FILE), std::process::id().to_string()).map_err(
            |source| SandboxError::Dir {
                path: root.path().to_path_buf(),
                source,
            },
        )?;
        let mut refused = Vec::new();

        // Probe each refusable layer on its own so the record names the one refused.
        let probe_dir = root.path().join("probe");
        make_dir(&probe_dir)?;
        let mut sandbox = Sandbox {
            slots: Mutex::new(Vec::new()),
            ready: Condvar::new(),
            read_paths: read_paths(&info),
            python: info.exe.clone(),
            layers: IsolationLayers {
                mode: cfg.mode,
                python: info.exe.clone(),
                python_version: info.version.clone(),
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
                separate_uid_base: None,
                network_namespace: false,
                landlock_abi: None,
                landlock_tcp: false,
                signals_contained: false,
                reads_restricted: false,
                private_tmpfs_bytes: None,
                ipc_namespace: false,
                memory_cgroup_bytes: None,
                pids_cgroup_max: None,
                max_open_files: MAX_OPEN_FILES,
                refused: Vec::new(),
            },
            root,
            plan: Plan {
                is_root,
                ..Plan::default()
            },
            cgroups: None,
            first_uid: 0,
            cfg,
        };
        sandbox.cgroups = match cgroup::Cgroups::find() {
            Ok(c) => {
                c.clean_leftovers();
                Some(c)
            }
            Err(e) => {
                refused.push(format!("memory cgroup: {e}"));
                None
            }
        };
        let base = sandbox.plan.clone();
        let try_layer = |name: &str, plan: Plan, refused: &mut Vec<String>| -> bool {
            match sandbox.probe(&plan, &probe_dir) {
                Ok(()) => true,
                Err(e) => {
                    refused.push(format!("{name}: {e}"));
                    false
                }
            }
        };
        let net = try_layer(
            "network namespace",
            Plan {
                net: true,
                ..base.clone()
            },
            &mut refused,
        );
        let ipc = try_layer(
            "IPC namespace",
            Plan {
                ipc: true,
                ..base.clone()
            },
            &mut refused,
        );
        let private_tmp = try_layer(
            "private tmpfs (mount namespace)",
            Plan {
                private_tmp: true,
                ..base.clone()
            },
            &mut refused,
        );
        let mut landlock_abi = None;
        let mut reads = false;
        let mut extras = None;
        match os::landlock_abi() {
            Ok(abi) => {
                match os::Ruleset::new(abi, false) {
                    Ok(r) => extras = Some(r.extras),
                    Err(e) => refused.push(format!("landlock: cannot build a ruleset: {e}")),
                }
                if extras.is_some()
                    && try_layer(
                        "landlock",
                        Plan {
                            landlock: Some(abi),
                            ..base.clone()
                        },
                        &mut refused,
                    )
                {
                    landlock_abi = Some(abi);
                    reads = try_layer(
                        "landlock read rules (programs could read every file their uid can)",
                        Plan {
                            landlock: Some(abi),
                            restrict_reads: true,
                            ..base.clone()
                        },
                        &mut refused,
                    );
                }
            }
            Err(e) => refused.push(format!(
                "landlock: {e}; programs can read every file their uid can"
            )),
        }
        if landlock_abi.is_none() {
            extras = None;
        }
        let use_cgroup = sandbox.cgroups.is_some()
            && try_layer(
                "memory cgroup",
                Plan {
                    cgroup: true,
                    ..base.clone()
                },
                &mut refused,
            );
        if !use_cgroup {
            sandbox.cgroups = None;
        }
        let plan = Plan {
            is_root,
            net,
            ipc,
            private_tmp,
            landlock: landlock_abi,
            restrict_reads: reads,
            cgroup: use_cgroup,
        };
        if !is_root {
            refused.push(
                "separate uid: not running as root, programs run as our own uid (RLIMIT_NPROC counts all our processes; processes a program leaves in another session are not swept)".into(),
            );
        }
        let landlock_scoped = extras.as_ref().is_some_and(|e| e.scoped);
        let signals_contained = is_root || landlock_scoped;
        if !signals_contained {
            refused.push(
                "signal containment: neither root nor Landlock ABI 6; a program can signal every process of our uid, soup included".into(),
            );
        }
        if !refused.is_empty() && !sandbox.cfg.allow_weaker_isolation {
            return Err(SandboxError::LayerRefused(refused.join("; ")));
        }
        let first_uid = allocate_uids(sandbox.cfg.uid_base, workers);
        sandbox.first_uid = first_uid;
        let has_pids = sandbox.cgroups.as_ref().is_some_and(|c| c.has_pids());
        let (cg_bytes, cg_pids) = (sandbox.cgroup_bytes(), sandbox.cgroup_pids());
        let l = &mut sandbox.layers;
        l.separate_uid_base = is_root.then_some(first_uid);
        l.network_namespace = net;
        l.ipc_namespace = ipc;
        l.private_tmpfs_bytes = private_tmp.then_some(sandbox.cfg.scratch_bytes);
        l.landlock_abi = landlock_abi;
        l.landlock_tcp = extras.as_ref().is_some_and(|e| e.tcp);
        l.signals_contained = signals_contained;
        l.reads_restricted = reads;
        l.memory_cgroup_bytes = use_cgroup.then_some(cg_bytes);
        l.pids_cgroup_max = (use_cgroup && has_pids).then_some(cg_pids);
        l.refused = refused;
        sandbox.plan = plan;
        *sandbox.lock_slots() = (0..workers)
            .map(|index| Slot {
                index,
                worker: None,
            })
            .collect();
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

    /// The memory cgroup's cap: one program's address space, its scratch files, and the
    /// worker that forks it.
    fn cgroup_bytes(&self) -> u64 {
        self.cfg
            .memory_bytes
            .saturating_add(self.cfg.scratch_bytes)
            .saturating_add(WORKER_HEADROOM)
    }

    /// The pids cgroup's cap: the program's processes, the worker, and the worker's helper
    /// that sweeps strays.
    fn cgroup_pids(&self) -> u64 {
        self.cfg.max_processes.saturating_add(2)
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

    /// Everything the forked child must do before it becomes `python`, for `plan`, with
    /// `host_dir` as the scratch directory when there is no private tmpfs. The ruleset and the
    /// cgroup must outlive the spawn.
    fn prepare(&self, plan: &Plan, host_dir: &Path, name: &str) -> Result<Prepared, String> {
        let private = plan.private_tmp;
        let scratch = if private {
            PathBuf::from("/tmp")
        } else {
            host_dir.to_path_buf()
        };
        let needs_ns = plan.net || plan.ipc || private;
        let namespaces = os::Namespaces {
            user: (needs_ns && !plan.is_root).then(os::UserMaps::ours),
            net: plan.net,
            ipc: plan
                .ipc
                .then(|| std::ffi::CString::new("/proc/sys/kernel/shm_rmid_forced"))
                .transpose()
                .map_err(|e| e.to_string())?,
            mount: if private {
                Some(
                    os::MountPlan::new(
                        &scratch,
                        self.cfg.scratch_bytes,
                        &[
                            Path::new("/dev/shm"),
                            Path::new("/var/tmp"),
                            Path::new("/run/shm"),
                        ],
                    )
                    .ok_or("a mount path has a NUL byte")?,
                )
            } else {
                None
            },
        };
        let ruleset = match plan.landlock {
            Some(abi) => {
                let r = os::Ruleset::new(abi, plan.restrict_reads)
                    .map_err(|e| format!("landlock ruleset: {e}"))?;
                if plan.restrict_reads {
                    for p in &self.read_paths {
                        r.allow(p, os::READ_EXEC)
                            .map_err(|e| format!("landlock rule for {}: {e}", p.display()))?;
                    }
                }
                r.allow(Path::new("/dev/null"), os::DEV_RW)
                    .map_err(|e| format!("landlock rule for /dev/null: {e}"))?;
                Some(r)
            }
            None => None,
        };
        // Unique within the process: sandboxes of one process may start side by side.
        static MADE: AtomicUsize = AtomicUsize::new(0);
        let name = format!("{}-{name}", MADE.fetch_add(1, Ordering::Relaxed));
        let cgroup = match (&self.cgroups, plan.cgroup) {
            (Some(c), true) => Some(c.create(&name, self.cgroup_bytes(), self.cgroup_pids())?),
            _ => None,
        };
        let landlock = match &ruleset {
            Some(r) => Some((
                r.fd.as_raw_fd(),
                std::ffi::CString::new(scratch.as_os_str().as_bytes())
                    .map_err(|_| "the scratch path has a NUL byte".to_string())?,
                r.scratch_rights(),
            )),
            None => None,
        };
        let pre = os::PreExec {
            namespaces,
            cgroup_procs: cgroup.as_ref().map(|c| c.procs.clone()).unwrap_or_default(),
            landlock,
        };
        Ok(Prepared {
            pre,
            ruleset,
            cgroup,
            scratch,
        })
    }

    /// Start `python` with the layers of `plan` and run [`PROBE_CODE`] to learn whether the OS
    /// grants them and CPython still starts under them.
    fn probe(&self, plan: &Plan, dir: &Path) -> Result<(), String> {
        let prepared = self.prepare(plan, dir, "probe")?;
        let Prepared {
            pre,
            ruleset,
            cgroup,
            ..
        } = prepared;
        let mut cmd = Command::new(&self.python);
        cmd.args(["-I", "-S", "-c", PROBE_CODE])
            .env_clear()
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: async-signal-safe syscalls only.
        unsafe {
            cmd.pre_exec(move || pre.apply());
        }
        let out = cmd.output();
        drop(ruleset);
        drop(cgroup);
        let _ = std::fs::remove_file(dir.join("probe.txt"));
        match out {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => {
                let err = String::from_utf8_lossy(&o.stderr);
                let last = err.trim().lines().last().unwrap_or("").to_string();
                Err(format!("probe exited with {}: {last}", o.status))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn spawn_worker(&self, index: usize) -> Result<Worker, SandboxError> {
        let dir = self.root.path().join(format!("w{index}"));
        if !dir.exists() {
            make_dir(&dir)?;
        }
        let uid: i64 = if self.plan.is_root {
            i64::from(self.first_uid) + index as i64
        } else {
            -1
        };
        let name = format!("w{index}");
        let Prepared {
            pre,
            ruleset,
            cgroup,
            scratch,
        } = self
            .prepare(&self.plan, &dir, &name)
            .map_err(SandboxError::Spawn)?;
        let wcfg = serde_json::json!({
            "root": scratch,
            "uid": uid,
            "entry": self.cfg.entry,
            "timeout": self.cfg.timeout.as_secs_f64(),
            "cpu": cpu_limit(self.cfg.timeout),
            "mem": self.cfg.memory_bytes,
            "nproc": self.cfg.max_processes,
            "fsize": self.cfg.max_file_bytes,
            "nofile": MAX_OPEN_FILES,
            "out_cap": self.cfg.output_limit,
            "hard_cap": self.cfg.output_hard_limit,
            // Set by `PreExec::apply`; lets the worker skip the stray-killing fork when no
            // process outlived the program.
            "subreaper": true,
            // A warm pool preloads common modules once; a one-shot worker would only pay for
            // them on every program.
            "preload": self.cfg.mode == SandboxMode::Pool,
        });
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
        drop(ruleset);
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            return Err(SandboxError::Spawn("worker pipes missing".into()));
        };
        let mut worker = Worker {
            child,
            stdin,
            stdout,
            pending: Vec::new(),
            cgroup,
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

    /// A live worker for `slot`, starting one when there is none or it died.
    fn live_worker(&self, slot: &mut Slot) -> Result<Worker, SandboxError> {
        match slot.worker.take() {
            Some(mut w) => match w.child.try_wait() {
                Ok(None) => Ok(w),
                _ => {
                    w.kill();
                    self.spawn_worker(slot.index)
                }
            },
            None => self.spawn_worker(slot.index),
        }
    }

    fn run_in(&self, slot: &mut Slot, code: &str) -> Result<RunOutcome, SandboxError> {
        // A set-up failure happens before the program's code runs; it may come from a worker
        // that an earlier program damaged, so it is retried once on a fresh worker before it
        // counts as the sandbox's own failure.
        let mut setup_failures = 0;
        loop {
            match self.run_once(slot, code)? {
                Attempt::Done(outcome) => return Ok(outcome),
                Attempt::SetupFailed(message) => {
                    setup_failures += 1;
                    if setup_failures >= 2 {
                        return Err(SandboxError::Setup(message));
                    }
                }
            }
        }
    }

    fn run_once(&self, slot: &mut Slot, code: &str) -> Result<Attempt, SandboxError> {
        let mut worker = self.live_worker(slot)?;
        let request = serde_json::json!({ "code": code }).to_string() + "\n";
        let started = Instant::now();
        let oom_before = worker.oom_kills();
        let deadline = started + self.cfg.timeout + Duration::from_secs(10);
        let answer = worker
            .stdin
            .write_all(request.as_bytes())
            .and_then(|()| worker.stdin.flush())
            .map_err(|e| format!("cannot send the program: {e}"))
            .and_then(|()| worker.read_line(deadline));
        let oom = worker.oom_kills() > oom_before;
        let lost = |why: String, worker: Worker, slot: &mut Slot| {
            // The worker died, hung or answered nonsense (a program that killed it, the OOM
            // killer choosing it, or a bug): the program gets a verdict, the slot a fresh
            // worker.
            worker.kill();
            if self.cfg.mode == SandboxMode::Pool {
                slot.worker = Some(self.spawn_worker(slot.index)?);
            }
            let (status, message) = if oom {
                (RunStatus::ResourceLimit, self.oom_message())
            } else {
                (
                    RunStatus::RuntimeError,
                    format!("the sandbox worker was lost while running the program ({why}); it was restarted"),
                )
            };
            Ok(Attempt::Done(RunOutcome {
                status,
                value: None,
                message,
                stdout: String::new(),
                stderr: String::new(),
                truncated: false,
                exit_code: None,
                signal: None,
                seconds: started.elapsed().as_secs_f64(),
            }))
        };
        let line = match answer {
            Ok(line) => line,
            Err(why) => return lost(why, worker, slot),
        };
        let wire = match serde_json::from_slice::<WireOutcome>(&line) {
            Ok(w) => w,
            Err(e) => return lost(format!("unreadable answer: {e}"), worker, slot),
        };
        let outcome = match to_outcome(wire) {
            WorkerAnswer::Outcome(o) => o,
            WorkerAnswer::SetupFailed(message) => {
                worker.kill();
                return Ok(Attempt::SetupFailed(message));
            }
            WorkerAnswer::Broken(why) => return lost(why, worker, slot),
        };
        match self.cfg.mode {
            SandboxMode::Pool => slot.worker = Some(worker),
            SandboxMode::FreshProcess => {
                drop(worker.stdin);
                let _ = worker.child.wait();
                if let Some(cg) = worker.cgroup.take() {
                    cg.kill_all();
                }
            }
        }
        let mut outcome = outcome;
        if oom && outcome.status != RunStatus::Timeout {
            outcome.status = RunStatus::ResourceLimit;
            outcome.message = self.oom_message();
            outcome.value = None;
        }
        Ok(Attempt::Done(outcome))
    }

    fn oom_message(&self) -> String {
        format!(
            "memory limit reached: the program's processes and the files it kept in RAM went over {} bytes together",
            self.cgroup_bytes()
        )
    }
}

/// What a forked worker needs, prepared in the parent.
struct Prepared {
    pre: os::PreExec,
    /// Keeps the ruleset fd open until the child has exec'd.
    ruleset: Option<os::Ruleset>,
    cgroup: Option<cgroup::WorkerCgroup>,
    /// The program directory's parent as the worker sees it.
    scratch: PathBuf,
}

/// One try at running a program.
enum Attempt {
    Done(RunOutcome),
    /// The worker could not set the program's process up (no program code ran).
    SetupFailed(String),
}

/// How the Rust side reads a worker's answer.
enum WorkerAnswer {
    Outcome(RunOutcome),
    SetupFailed(String),
    /// Not an answer the worker gives: restart it, and the program gets a runtime error.
    Broken(String),
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

/// Longest message kept from a worker answer.
const MAX_MESSAGE: usize = 2000;

fn to_outcome(w: WireOutcome) -> WorkerAnswer {
    let status = match w.status.as_str() {
        "ok" => RunStatus::Ok,
        "no_entry" => RunStatus::NoEntry,
        "syntax_error" => RunStatus::SyntaxError,
        "runtime_error" => RunStatus::RuntimeError,
        "timeout" => RunStatus::Timeout,
        "resource_limit" => RunStatus::ResourceLimit,
        "setup_error" => return WorkerAnswer::SetupFailed(truncate(w.message, MAX_MESSAGE)),
        "worker_error" => {
            return WorkerAnswer::Broken(format!(
                "worker error: {}",
                truncate(w.message, MAX_MESSAGE)
            ))
        }
        other => {
            return WorkerAnswer::Broken(format!(
                "unknown status {:?}",
                truncate(other.to_string(), 40)
            ))
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
    WorkerAnswer::Outcome(RunOutcome {
        status,
        value: if status == RunStatus::Ok { value } else { None },
        message: truncate(w.message, MAX_MESSAGE),
        stdout: w.stdout,
        stderr: w.stderr,
        truncated: w.truncated,
        exit_code: w.exit_code,
        signal: w.signal,
        seconds: w.seconds,
    })
}

/// `s` cut to at most `max` bytes on a character boundary.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Names the process that made a sandbox directory, for the cleaning of later starts.
const OWNER_FILE: &str = "soup.pid";

/// Remove `soup-sandbox-*` directories under `parent` that a soup process killed before it
/// could clean up left behind: only directories owned by our uid, marked with their creator's
/// pid, whose creator no longer runs.
fn clean_leftover_dirs(parent: &Path) {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with(cgroup::PREFIX) {
            continue;
        }
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != me {
            continue;
        }
        let Some(pid) = std::fs::read_to_string(path.join(OWNER_FILE))
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
            .filter(|p| *p > 0)
        else {
            continue;
        };
        if !cgroup::pid_alive(pid) {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
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
fn find_python(cfg: &SandboxConfig, is_root: bool) -> Result<PythonInfo, SandboxError> {
    if cfg.python.is_some() {
        let info = resolve_python(cfg)?;
        if is_root && !readable_as(&info.exe, cfg.uid_base) {
            return Err(SandboxError::PythonUnreadable {
                python: info.exe,
                uid: cfg.uid_base,
            });
        }
        return Ok(info);
    }
    let mut first_err = None;
    for candidate in ["python3", "/usr/bin/python3", "/usr/local/bin/python3"] {
        let c = SandboxConfig {
            python: Some(PathBuf::from(candidate)),
            ..cfg.clone()
        };
        match resolve_python(&c) {
            Ok(info) => {
                if !is_root || readable_as(&info.exe, cfg.uid_base) {
                    return Ok(info);
                }
                first_err.get_or_insert(SandboxError::PythonUnreadable {
                    python: info.exe,
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

#[cfg(test)]
mod tests;
