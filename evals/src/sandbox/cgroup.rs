//! A cgroup per sandbox worker, so that a program's whole footprint is capped: its processes'
//! memory, the files it writes into RAM (tmpfs, memfd, pipes' pages), and how many processes
//! it runs. rlimits alone cap each process's address space, which files in RAM escape.
//!
//! The worker joins its cgroups between fork and exec (`os::PreExec`), and every program it
//! forks inherits them. Works with cgroup v1 (a `memory` and a `pids` hierarchy) and with v2
//! where our cgroup may have children with the memory controller (a delegated subtree);
//! elsewhere [`Cgroups::find`] says why not, and the run's isolation record says so.
//!
//! Each cgroup is named `soup-sandbox-<our pid>-...`, so that a later soup can remove the ones a
//! killed soup left behind ([`Cgroups::clean_leftovers`]).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where our own cgroups are, one per controller we cap with.
#[derive(Debug, Clone)]
pub struct Cgroups {
    memory: ControllerDir,
    pids: Option<ControllerDir>,
}

#[derive(Debug, Clone)]
struct ControllerDir {
    /// Our own cgroup in this hierarchy: worker cgroups are made beneath it.
    parent: PathBuf,
    v2: bool,
}

/// One worker's cgroups; removed (after killing what is left in them) on drop.
#[derive(Debug)]
pub struct WorkerCgroup {
    memory: PathBuf,
    pids: Option<PathBuf>,
    v2: bool,
    /// The `cgroup.procs` files the worker joins.
    pub procs: Vec<CString>,
}

/// Prefix of every directory and cgroup the sandbox makes.
pub const PREFIX: &str = "soup-sandbox-";

impl Cgroups {
    /// Our memory (and pids) cgroups, if we may make children there.
    pub fn find() -> Result<Cgroups, String> {
        let text = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let mut memory = None;
        let mut pids = None;
        let mut v2_path = None;
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let path = path.trim_start_matches('/');
            if ctrls.is_empty() {
                v2_path = Some(path.to_string());
                continue;
            }
            for c in ctrls.split(',') {
                let dir = Path::new("/sys/fs/cgroup").join(ctrls).join(path);
                if c == "memory" && dir.join("memory.limit_in_bytes").exists() {
                    memory = Some(ControllerDir {
                        parent: dir.clone(),
                        v2: false,
                    });
                }
                // A root cgroup has no pids.max of its own, but its children do.
                if c == "pids" && dir.join("cgroup.procs").exists() {
                    pids = Some(ControllerDir {
                        parent: dir,
                        v2: false,
                    });
                }
            }
        }
        if memory.is_none() {
            if let Some(path) = v2_path {
                for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
                    let dir = Path::new(root).join(&path);
                    let ctrls = std::fs::read_to_string(dir.join("cgroup.subtree_control"))
                        .unwrap_or_default();
                    if ctrls.split_whitespace().any(|c| c == "memory") {
                        let has_pids = ctrls.split_whitespace().any(|c| c == "pids");
                        let d = ControllerDir {
                            parent: dir,
                            v2: true,
                        };
                        if has_pids {
                            pids = Some(d.clone());
                        }
                        memory = Some(d);
                        break;
                    }
                }
            }
        }
        let memory = memory.ok_or_else(|| {
            "no memory cgroup we may divide (cgroup v1 memory hierarchy, or a delegated cgroup v2 subtree with the memory controller)".to_string()
        })?;
        let pids = pids.filter(|p| p.v2 == memory.v2);
        Ok(Cgroups { memory, pids })
    }

    /// Our own memory cgroup, beneath which worker cgroups are made.
    #[cfg(test)]
    pub fn memory_parent(&self) -> &Path {
        &self.memory.parent
    }

    /// Whether processes are counted too (a pids controller), beside memory.
    pub fn has_pids(&self) -> bool {
        self.pids.is_some()
    }

    /// Make worker `name`'s cgroups: memory capped at `memory_bytes` (swap included where the
    /// kernel accounts it), processes at `max_pids`.
    pub fn create(
        &self,
        name: &str,
        memory_bytes: u64,
        max_pids: u64,
    ) -> Result<WorkerCgroup, String> {
        let name = format!("{PREFIX}{}-{name}", std::process::id());
        let memory = self.memory.parent.join(&name);
        let pids = if self.memory.v2 {
            None
        } else {
            self.pids.as_ref().map(|p| p.parent.join(&name))
        };
        let mut cg = WorkerCgroup {
            memory: memory.clone(),
            pids: None,
            v2: self.memory.v2,
            procs: Vec::new(),
        };
        make(&memory)?;
        let limit = memory_bytes.to_string();
        if self.memory.v2 {
            write(&memory.join("memory.max"), &limit)?;
            let _ = write(&memory.join("memory.swap.max"), "0");
            if self.pids.is_some() {
                write(&memory.join("pids.max"), &max_pids.to_string())?;
            }
        } else {
            write(&memory.join("memory.limit_in_bytes"), &limit)?;
            // Swap counts too where the kernel accounts it (the file is absent otherwise).
            let memsw = memory.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write(&memsw, &limit)?;
            }
        }
        cg.procs.push(procs_path(&memory)?);
        if let Some(p) = pids {
            make(&p)?;
            cg.pids = Some(p.clone());
            write(&p.join("pids.max"), &max_pids.to_string())?;
            cg.procs.push(procs_path(&p)?);
        }
        Ok(cg)
    }

    /// Remove cgroups a soup process that no longer runs left behind (it was killed before it
    /// could remove them): only ours by name, and only when their creating pid is gone.
    pub fn clean_leftovers(&self) {
        let mut parents = vec![self.memory.parent.clone()];
        if let Some(p) = &self.pids {
            parents.push(p.parent.clone());
        }
        for parent in parents {
            let Ok(entries) = std::fs::read_dir(&parent) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(pid) = creator_pid(&name.to_string_lossy()) else {
                    continue;
                };
                if !pid_alive(pid) {
                    kill_all(&e.path());
                    let _ = remove_cgroup(&e.path());
                }
            }
        }
    }
}

impl WorkerCgroup {
    /// How many times the kernel's OOM killer ran in this cgroup: a rise while a program ran
    /// means the program went over its footprint.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        std::fs::read_to_string(self.memory.join(file))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Kill every process in the worker's cgroups (the worker and anything a program left).
    pub fn kill_all(&self) {
        kill_all(&self.memory);
        if let Some(p) = &self.pids {
            kill_all(p);
        }
    }
}

impl Drop for WorkerCgroup {
    fn drop(&mut self) {
        self.kill_all();
        let _ = remove_cgroup(&self.memory);
        if let Some(p) = &self.pids {
            let _ = remove_cgroup(p);
        }
    }
}

/// The pid in a `soup-sandbox-<pid>-...` name.
pub fn creator_pid(name: &str) -> Option<i32> {
    name.strip_prefix(PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
        .filter(|p| *p > 0)
}

/// Whether a process with this pid exists (EPERM: it exists, as another user).
pub fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks existence.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn kill_all(dir: &Path) {
    for _ in 0..20 {
        let pids: Vec<i32> = std::fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .filter(|p| *p > 0)
            .collect();
        if pids.is_empty() {
            return;
        }
        for p in pids {
            // SAFETY: plain kill(2) of a process in our own cgroup.
            unsafe {
                libc::kill(p, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// rmdir, retried while the kernel finishes tearing down killed processes.
fn remove_cgroup(dir: &Path) -> std::io::Result<()> {
    let mut last = Ok(());
    for _ in 0..40 {
        last = std::fs::remove_dir(dir);
        match &last {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    last
}

fn make(dir: &Path) -> Result<(), String> {
    std::fs::create_dir(dir).map_err(|e| format!("cannot create cgroup {}: {e}", dir.display()))
}

fn write(file: &Path, value: &str) -> Result<(), String> {
    std::fs::write(file, value).map_err(|e| format!("cannot write {}: {e}", file.display()))
}

fn procs_path(dir: &Path) -> Result<CString, String> {
    CString::new(dir.join("cgroup.procs").as_os_str().as_bytes())
        .map_err(|_| format!("cgroup path {} has a NUL byte", dir.display()))
}
