//! The OS side of the sandbox: Landlock rulesets and the code that runs between fork and exec
//! of a worker. Only async-signal-safe calls (raw syscalls, no allocation) may run in the
//! forked child of a multi-threaded process, so everything is prepared in the parent and the
//! `pre_exec` hook only issues syscalls on ready-made values.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
const LANDLOCK_RULE_PATH_BENEATH: u32 = 1;
// Filesystem access rights (include/uapi/linux/landlock.h).
const EXECUTE: u64 = 1 << 0;
const WRITE_FILE: u64 = 1 << 1;
const READ_FILE: u64 = 1 << 2;
const READ_DIR: u64 = 1 << 3;
const REMOVE_DIR: u64 = 1 << 4;
const REMOVE_FILE: u64 = 1 << 5;
const MAKE_CHAR: u64 = 1 << 6;
const MAKE_DIR: u64 = 1 << 7;
const MAKE_REG: u64 = 1 << 8;
const MAKE_SOCK: u64 = 1 << 9;
const MAKE_FIFO: u64 = 1 << 10;
const MAKE_BLOCK: u64 = 1 << 11;
const MAKE_SYM: u64 = 1 << 12;
const REFER: u64 = 1 << 13; // ABI 2
const TRUNCATE: u64 = 1 << 14; // ABI 3
const IOCTL_DEV: u64 = 1 << 15; // ABI 5
const NET_BIND_TCP: u64 = 1 << 0; // ABI 4
const NET_CONNECT_TCP: u64 = 1 << 1; // ABI 4
const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0; // ABI 6
const SCOPE_SIGNAL: u64 = 1 << 1; // ABI 6
/// Rights that only make sense on a directory: a rule on a file may not name them.
const DIR_ONLY: u64 = READ_DIR
    | REMOVE_DIR
    | REMOVE_FILE
    | MAKE_CHAR
    | MAKE_DIR
    | MAKE_REG
    | MAKE_SOCK
    | MAKE_FIFO
    | MAKE_BLOCK
    | MAKE_SYM
    | REFER;
/// Reading a file or a directory and executing (the interpreter and its shared libraries).
pub const READ_EXEC: u64 = EXECUTE | READ_FILE | READ_DIR;
/// Reading and writing a device such as /dev/null.
pub const DEV_RW: u64 = READ_FILE | WRITE_FILE | TRUNCATE | IOCTL_DEV;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

/// What a ruleset enforces beyond the write rule.
pub struct LandlockExtras {
    /// TCP bind/connect denied (ABI >= 4).
    pub tcp: bool,
    /// Signals and abstract unix sockets cannot reach processes outside the sandbox (ABI >= 6):
    /// without a separate uid, this is what stops `os.kill(-1, 9)` from killing soup itself.
    pub scoped: bool,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// The kernel's Landlock ABI version, or the reason it is unavailable.
pub fn landlock_abi() -> Result<u32, String> {
    // SAFETY: documented probe call: NULL attr, size 0, VERSION flag.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENOSYS) => "the kernel has no Landlock support".into(),
            Some(libc::EOPNOTSUPP) => "Landlock is disabled at boot (add landlock to lsm=)".into(),
            _ => format!("Landlock probe failed: {e}"),
        });
    }
    Ok(r as u32)
}

/// Every write-like right this ABI knows.
fn write_rights(abi: u32) -> u64 {
    let mut fs = WRITE_FILE
        | REMOVE_DIR
        | REMOVE_FILE
        | MAKE_CHAR
        | MAKE_DIR
        | MAKE_REG
        | MAKE_SOCK
        | MAKE_FIFO
        | MAKE_BLOCK
        | MAKE_SYM;
    if abi >= 2 {
        fs |= REFER;
    }
    if abi >= 3 {
        fs |= TRUNCATE;
    }
    if abi >= 5 {
        fs |= IOCTL_DEV;
    }
    fs
}

/// A Landlock ruleset under construction; [`PreExec`] adds the program directory's rule in
/// the child (the directory may be a tmpfs mounted there) and enforces it.
pub struct Ruleset {
    pub fd: OwnedFd,
    /// Rights the ruleset handles: everything not granted by a rule is denied.
    pub handled: u64,
    pub extras: LandlockExtras,
}

impl Ruleset {
    /// A ruleset that denies every write and, when `restrict_reads`, every read and execute,
    /// except what rules grant; from ABI 4 it also denies TCP bind/connect, and from ABI 6 it
    /// scopes signals and abstract unix sockets to the sandbox.
    pub fn new(abi: u32, restrict_reads: bool) -> io::Result<Ruleset> {
        let mut fs = write_rights(abi);
        if restrict_reads {
            fs |= READ_EXEC;
        }
        let net = abi >= 4;
        let scoped = abi >= 6;
        let attr = RulesetAttr {
            handled_access_fs: fs,
            handled_access_net: if net {
                NET_BIND_TCP | NET_CONNECT_TCP
            } else {
                0
            },
            scoped: if scoped {
                SCOPE_SIGNAL | SCOPE_ABSTRACT_UNIX_SOCKET
            } else {
                0
            },
        };
        // Older kernels reject a larger struct with unknown fields: pass only the prefix this
        // ABI knows.
        let size = match abi {
            0..=3 => 8,
            4 | 5 => 16,
            _ => std::mem::size_of::<RulesetAttr>(),
        };
        // SAFETY: attr is a valid landlock_ruleset_attr prefix of `size` bytes.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                &attr as *const RulesetAttr,
                size,
                0u32,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Ruleset {
            // SAFETY: the kernel just returned this fd to us.
            fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
            handled: fs,
            extras: LandlockExtras { tcp: net, scoped },
        })
    }

    /// Allow `rights` (masked to what the ruleset handles, and to file rights on a file)
    /// beneath `path`. A path that does not exist is skipped: the list of system directories
    /// is the same on every machine.
    pub fn allow(&self, path: &Path, rights: u64) -> io::Result<()> {
        let Ok(meta) = std::fs::metadata(path) else {
            return Ok(());
        };
        let mut rights = rights & self.handled;
        if !meta.is_dir() {
            rights &= !DIR_ONLY;
        }
        if rights == 0 {
            return Ok(());
        }
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))?;
        // SAFETY: valid C string.
        let dfd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        if dfd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just opened.
        let dfd = unsafe { OwnedFd::from_raw_fd(dfd) };
        // SAFETY: plain syscalls on fds we own.
        unsafe { add_rule(self.fd.as_raw_fd(), dfd.as_raw_fd(), rights) }
    }

    /// Every right this ruleset handles except executing: what the program directory gets.
    pub fn scratch_rights(&self) -> u64 {
        self.handled & !EXECUTE
    }
}

/// # Safety
/// Async-signal-safe: one syscall on a stack value.
unsafe fn add_rule(ruleset: i32, dir: i32, rights: u64) -> io::Result<()> {
    let rule = PathBeneathAttr {
        allowed_access: rights,
        parent_fd: dir,
    };
    let r = libc::syscall(
        libc::SYS_landlock_add_rule,
        ruleset,
        LANDLOCK_RULE_PATH_BENEATH,
        &rule as *const PathBeneathAttr,
        0u32,
    );
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What the forked child must do before exec'ing the worker. Built in the parent.
pub struct PreExec {
    pub namespaces: Namespaces,
    /// Cgroup `cgroup.procs` files the worker joins (its programs inherit them).
    pub cgroup_procs: Vec<CString>,
    /// A ruleset, and the directory (opened in the child, after the mounts) that programs may
    /// write in, with its rights.
    pub landlock: Option<(i32, CString, u64)>,
}

/// The namespaces a worker gets. Not root: a user namespace first, mapping our own uid/gid.
#[derive(Default)]
pub struct Namespaces {
    pub user: Option<UserMaps>,
    pub net: bool,
    /// A private IPC namespace where System V shared memory dies with its last user.
    pub ipc: Option<CString>,
    pub mount: Option<MountPlan>,
}

/// The uid/gid maps of a user namespace that maps our own ids.
pub struct UserMaps {
    uid_map: CString,
    gid_map: CString,
    uid_map_line: Vec<u8>,
    gid_map_line: Vec<u8>,
    setgroups: CString,
}

impl UserMaps {
    pub fn ours() -> UserMaps {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        UserMaps {
            uid_map: CString::new("/proc/self/uid_map").unwrap_or_default(),
            gid_map: CString::new("/proc/self/gid_map").unwrap_or_default(),
            uid_map_line: format!("{uid} {uid} 1\n").into_bytes(),
            gid_map_line: format!("{gid} {gid} 1\n").into_bytes(),
            setgroups: CString::new("/proc/self/setgroups").unwrap_or_default(),
        }
    }
}

/// A private mount namespace: `scratch` becomes a size-capped tmpfs (the programs' only
/// writable place, counted in RAM but bounded), and each of `covers` (/dev/shm, /tmp,
/// /var/tmp ...) an empty read-only tmpfs, so nothing a program writes outside its scratch
/// can land in shared RAM.
pub struct MountPlan {
    pub scratch: CString,
    pub scratch_options: CString,
    pub covers: Vec<CString>,
    root: CString,
    tmpfs: CString,
    cover_options: CString,
}

impl MountPlan {
    /// `scratch` must exist; `covers` that do not exist or equal `scratch` are left out.
    pub fn new(scratch: &Path, bytes: u64, covers: &[&Path]) -> Option<MountPlan> {
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).ok();
        let covers = covers
            .iter()
            .filter(|p| **p != scratch && std::fs::metadata(p).is_ok_and(|m| m.is_dir()))
            .filter_map(|p| c(p))
            .collect();
        Some(MountPlan {
            scratch: c(scratch)?,
            scratch_options: CString::new(format!("size={bytes},nr_inodes=4096,mode=0711")).ok()?,
            covers,
            root: c(Path::new("/"))?,
            tmpfs: c(Path::new("tmpfs"))?,
            cover_options: CString::new("size=4096,nr_inodes=16,mode=0755").ok()?,
        })
    }

    /// # Safety
    /// Between fork and exec only; syscalls on prepared strings.
    unsafe fn apply(&self) -> io::Result<()> {
        // Nothing mounted here may propagate back to the host.
        check(libc::mount(
            std::ptr::null(),
            self.root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        for cover in &self.covers {
            check(libc::mount(
                self.tmpfs.as_ptr(),
                cover.as_ptr(),
                self.tmpfs.as_ptr(),
                flags | libc::MS_RDONLY,
                self.cover_options.as_ptr().cast(),
            ))?;
        }
        check(libc::mount(
            self.tmpfs.as_ptr(),
            self.scratch.as_ptr(),
            self.tmpfs.as_ptr(),
            flags,
            self.scratch_options.as_ptr().cast(),
        ))?;
        check(libc::chdir(self.scratch.as_ptr()))
    }
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// # Safety
/// `path` must be a valid C string; only async-signal-safe syscalls are made.
unsafe fn write_file(path: &CString, data: &[u8]) -> io::Result<()> {
    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
    check(fd)?;
    let n = libc::write(fd, data.as_ptr().cast(), data.len());
    libc::close(fd);
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl PreExec {
    /// Runs in the forked child before exec. Async-signal-safe: syscalls only.
    ///
    /// # Safety
    /// Must only be called between fork and exec.
    pub unsafe fn apply(&self) -> io::Result<()> {
        // Own session and process group, so the whole tree can be killed at once.
        check(libc::setsid())?;
        // Orphans of a program re-parent to the worker, which reaps them.
        check(libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))?;
        // Join the cgroups first, while /sys is still reachable: memory and processes of the
        // worker and every program it forks are counted and capped there.
        for procs in &self.cgroup_procs {
            write_file(procs, b"0")?;
        }
        let ns = &self.namespaces;
        let mut flags = 0;
        if ns.user.is_some() {
            flags |= libc::CLONE_NEWUSER;
        }
        if ns.net {
            flags |= libc::CLONE_NEWNET;
        }
        if ns.ipc.is_some() {
            flags |= libc::CLONE_NEWIPC;
        }
        if ns.mount.is_some() {
            flags |= libc::CLONE_NEWNS;
        }
        if flags != 0 {
            check(libc::unshare(flags))?;
        }
        if let Some(m) = &ns.user {
            write_file(&m.setgroups, b"deny")?;
            write_file(&m.uid_map, &m.uid_map_line)?;
            write_file(&m.gid_map, &m.gid_map_line)?;
        }
        if let Some(rmid) = &ns.ipc {
            // System V segments are destroyed when their last user detaches or exits, so a
            // program cannot park memory there for after it was killed.
            write_file(rmid, b"1")?;
        }
        if let Some(m) = &ns.mount {
            m.apply()?;
        }
        if let Some((ruleset, scratch, rights)) = &self.landlock {
            let dfd = libc::open(scratch.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
            check(dfd)?;
            let added = add_rule(*ruleset, dfd, *rights);
            libc::close(dfd);
            added?;
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            if libc::syscall(libc::SYS_landlock_restrict_self, *ruleset, 0u32) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// Whether this process runs as root (then programs run as a separate unprivileged uid).
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Wait up to `deadline` for `fd` to be readable. Returns false on timeout.
pub fn poll_readable(fd: i32, timeout: std::time::Duration) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    loop {
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(r > 0);
    }
}

/// Kill a whole process group.
pub fn kill_group(pgid: u32) {
    // SAFETY: plain kill(2); failure (already dead) is fine.
    unsafe {
        libc::kill(-(pgid as i32), libc::SIGKILL);
    }
}
