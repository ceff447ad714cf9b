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
const WRITE_FILE: u64 = 1 << 1;
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
const NET_BIND_TCP: u64 = 1 << 0; // ABI 4
const NET_CONNECT_TCP: u64 = 1 << 1; // ABI 4
const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0; // ABI 6
const SCOPE_SIGNAL: u64 = 1 << 1; // ABI 6

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

/// A Landlock ruleset that forbids all writes except beneath `dir` (and, from ABI 4, all TCP
/// bind/connect). Reads stay allowed: Python must read its standard library.
/// From ABI 6 it also scopes signals and abstract unix sockets to the sandbox.
pub fn landlock_write_only_beneath(dir: &Path, abi: u32) -> io::Result<(OwnedFd, LandlockExtras)> {
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
    // Older kernels reject a larger struct with unknown fields: pass only the prefix this ABI
    // knows.
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
    // SAFETY: the kernel just returned this fd to us.
    let ruleset = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let cdir = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))?;
    // SAFETY: valid C string.
    let dfd = unsafe { libc::open(cdir.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if dfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened.
    let dfd = unsafe { OwnedFd::from_raw_fd(dfd) };
    let rule = PathBeneathAttr {
        allowed_access: fs,
        parent_fd: dfd.as_raw_fd(),
    };
    // SAFETY: valid ruleset fd and rule struct.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset.as_raw_fd(),
            LANDLOCK_RULE_PATH_BENEATH,
            &rule as *const PathBeneathAttr,
            0u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((ruleset, LandlockExtras { tcp: net, scoped }))
}

/// What the forked child must do before exec'ing the worker. Built in the parent.
pub struct PreExec {
    pub landlock_fd: Option<i32>,
    pub netns: NetNs,
}

/// How to get a private network namespace.
pub enum NetNs {
    None,
    /// We are root: a plain `unshare(CLONE_NEWNET)`.
    Root,
    /// Not root: a user namespace first, mapping our own uid/gid, then the network namespace.
    User {
        uid_map: CString,
        gid_map: CString,
        uid_map_line: Vec<u8>,
        gid_map_line: Vec<u8>,
        setgroups: CString,
    },
}

impl NetNs {
    pub fn user() -> NetNs {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        NetNs::User {
            uid_map: CString::new("/proc/self/uid_map").unwrap_or_default(),
            gid_map: CString::new("/proc/self/gid_map").unwrap_or_default(),
            uid_map_line: format!("{uid} {uid} 1\n").into_bytes(),
            gid_map_line: format!("{gid} {gid} 1\n").into_bytes(),
            setgroups: CString::new("/proc/self/setgroups").unwrap_or_default(),
        }
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
        match &self.netns {
            NetNs::None => {}
            NetNs::Root => check(libc::unshare(libc::CLONE_NEWNET))?,
            NetNs::User {
                uid_map,
                gid_map,
                uid_map_line,
                gid_map_line,
                setgroups,
            } => {
                check(libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET))?;
                write_file(setgroups, b"deny")?;
                write_file(uid_map, uid_map_line)?;
                write_file(gid_map, gid_map_line)?;
            }
        }
        if let Some(fd) = self.landlock_fd {
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            if libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) < 0 {
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
