# soup sandbox worker ("zygote"). Started by soup-evals with the process-wide isolation layers
# already applied (own session, empty environment, namespaces, cgroup, Landlock rules).
# It reads one JSON request per line on stdin, forks a FRESH child per program, and writes
# one JSON response per line on stdout. The child gets a fresh directory, its own session and
# process group, rlimits, a separate unprivileged uid (when we are root), stdin on /dev/null,
# captured stdout/stderr, and nothing else open. The worker never runs untrusted code itself,
# and after each program it kills every process left under the program's uid.
#
# The verdict is the worker's, not the program's. The child tells the worker on a set-up pipe,
# closed before any program code runs, that its process is ready; after that, all the program
# side can send is one report line on fd 3, which the worker believes only when it is a single
# well-formed line (known status, typed value, bounded size) from a child that exited with 0.
# Anything else a program writes there makes its own runtime_error; nothing it writes can
# become a set-up failure or a worker error, or change the exit status, output or timing the
# worker reports.
import os, sys, gc, json, time, signal, selectors, traceback, resource, errno, shutil, fcntl

CFG = json.loads(sys.argv[1])
if CFG.get("preload", True):
    # Small C-backed modules programs import constantly, loaded once so forked children start
    # warm. Heavier ones (decimal, statistics, random) would make every fork dearer (page
    # tables, copy-on-write) for the few programs that use them.
    import math, itertools, functools, collections, operator
ROOT = CFG["root"]
UID = CFG["uid"]
ENTRY = CFG["entry"]
OUT_CAP = CFG["out_cap"]
HARD_CAP = CFG["hard_cap"]
RES_ERRNOS = {errno.EFBIG, errno.EAGAIN, errno.ENOMEM, errno.EMFILE, errno.ENFILE,
              errno.ENOSPC, errno.EDQUOT}
HAS_PIDFD = hasattr(os, "pidfd_open")
# What a program's report may say: the verdicts a program can earn by its own behaviour.
PROGRAM_STATUSES = {"ok", "no_entry", "syntax_error", "runtime_error", "resource_limit"}
REPORT_CAP = 1 << 20      # bytes kept from the report channel
REPORT_LINE_CAP = 128 << 10  # longest report line believed


def reap():
    while True:
        try:
            p, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if p == 0:
            return


def have_children():
    """Reap exited children; True when some child is still alive.

    The worker is a child subreaper, so every process a program leaves behind, whatever its
    session or group, ends up as a descendant of a direct child of the worker: no children
    means no strays, and the kill below (a fork) can be skipped."""
    while True:
        try:
            p, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if p == 0:
            return True


def kill_strays(force=False):
    """Kill every process running as the program uid (escaped process groups included)."""
    if UID < 0:
        return
    if not force and CFG.get("subreaper") and not have_children():
        return
    pid = os.fork()
    if pid == 0:
        try:
            os.setuid(UID)
            os.kill(-1, signal.SIGKILL)
        except BaseException:
            pass
        os._exit(0)
    os.waitpid(pid, 0)
    reap()


def short_exc(e):
    try:
        return "".join(traceback.format_exception_only(type(e), e)).strip()[:2000]
    except BaseException:
        return type(e).__name__


def encode(v):
    if isinstance(v, bool):
        return {"value_kind": "number", "value": float(v)}
    if isinstance(v, int):
        try:
            return {"value_kind": "number", "value": float(v)}
        except OverflowError:
            try:
                return {"value_kind": "text", "value": str(v)[:4096]}
            except BaseException:
                return {"value_kind": "other", "value": "<int too large>"}
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            return {"value_kind": "other", "value": repr(v)}
        return {"value_kind": "number", "value": v}
    if isinstance(v, str):
        return {"value_kind": "text", "value": v[:4096]}
    try:
        f = float(v)
        if f == f and f not in (float("inf"), float("-inf")):
            return {"value_kind": "number", "value": f}
    except BaseException:
        pass
    try:
        r = repr(v)[:4096]
    except BaseException:
        r = "<%s>" % type(v).__name__
    return {"value_kind": "other", "value": r}


def child(req, d, out_w, err_w, res_w, setup_w):
    mypid = os.getpid()
    # Bound now, before the program runs: a program that monkeypatches json or os cannot
    # change how its result is reported.
    getpid, write, dumps = os.getpid, os.write, json.dumps

    def emit(obj):
        if getpid() != mypid:  # a fork of the program: only the program itself reports
            return
        try:
            write(3, (dumps(obj) + "\n").encode())
        except BaseException:
            pass

    def flush():
        for s in (sys.stdout, sys.stderr):
            try:
                s.flush()
            except BaseException:
                pass

    try:
        # Above the fds about to be replaced, so no dup2 below can overwrite it.
        setup_w = fcntl.fcntl(setup_w, fcntl.F_DUPFD, 10)
    except BaseException:
        os._exit(72)
    try:
        os.setsid()
        devnull = os.open("/dev/null", os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.dup2(res_w, 3)
        os.closerange(4, setup_w)
        cpu = CFG["cpu"]
        nofile = CFG.get("nofile", 64)
        for lim, soft, hard in ((resource.RLIMIT_AS, CFG["mem"], CFG["mem"]),
                                (resource.RLIMIT_CPU, cpu, cpu + 1),
                                (resource.RLIMIT_FSIZE, CFG["fsize"], CFG["fsize"]),
                                (resource.RLIMIT_NPROC, CFG["nproc"], CFG["nproc"]),
                                (resource.RLIMIT_NOFILE, nofile, nofile),
                                (resource.RLIMIT_CORE, 0, 0)):
            resource.setrlimit(lim, (soft, hard))
        if UID >= 0:
            os.setgroups([])
            os.setgid(UID)
            os.setuid(UID)
        os.chdir(d)
        sys.argv = ["solution.py"]
        os.write(setup_w, b"R")
    except BaseException as e:
        try:
            os.write(setup_w, b"E" + short_exc(e).encode("utf-8", "replace")[:2000])
        except BaseException:
            pass
        os._exit(70)
    # From here on program code may run: the set-up channel is gone.
    os.closerange(4, 65536)

    try:
        code = compile(req["code"], "solution.py", "exec")
    except BaseException as e:
        emit({"status": "syntax_error", "message": short_exc(e)})
        os._exit(0)
    ns = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(code, ns)
        r = {}
        if ENTRY:
            f = ns.get(ENTRY)
            if not callable(f):
                flush()
                emit({"status": "no_entry",
                      "message": "the program defines no %s() function" % ENTRY})
                os._exit(0)
            r = encode(f())
        flush()
        r["status"] = "ok"
        emit(r)
    except SystemExit as e:
        flush()
        emit({"status": "runtime_error",
              "message": "the program called sys.exit(%r) instead of returning" % (e.code,)})
    except MemoryError:
        flush()
        emit({"status": "resource_limit", "message": "MemoryError: memory limit reached"})
    except OSError as e:
        try:
            traceback.print_exc()
        except BaseException:
            pass
        flush()
        st = "resource_limit" if e.errno in RES_ERRNOS else "runtime_error"
        emit({"status": st, "message": short_exc(e)})
    except BaseException as e:
        try:
            traceback.print_exc()
        except BaseException:
            pass
        flush()
        emit({"status": "runtime_error", "message": short_exc(e)})
    os._exit(0)


def read_report(buf, overflowed):
    """The program's report, checked; None when it is not exactly what the child writes."""
    if overflowed or buf.count(b"\n") != 1 or not buf.endswith(b"\n"):
        return None
    line = bytes(buf[:-1])
    if len(line) > REPORT_LINE_CAP:
        return None
    try:
        r = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(r, dict) or set(r) - {"status", "message", "value_kind", "value"}:
        return None
    st, msg = r.get("status"), r.get("message", "")
    kind, value = r.get("value_kind"), r.get("value")
    if st not in PROGRAM_STATUSES or not isinstance(msg, str):
        return None
    if st == "ok":
        if kind == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return None
            try:
                value = float(value)
            except (OverflowError, ValueError):
                return None
            if value != value or value in (float("inf"), float("-inf")):
                return None
        elif kind in ("text", "other"):
            if not isinstance(value, str) or len(value) > 4096:
                return None
        elif kind is not None or value is not None:
            return None
    elif kind is not None or value is not None:
        return None
    return {"status": st, "message": msg[:2000], "value_kind": kind, "value": value}


def run_one(req, seq):
    t0 = time.monotonic()
    timeout = float(req.get("timeout", CFG["timeout"]))
    d = os.path.join(ROOT, "p%d" % seq)
    shutil.rmtree(d, ignore_errors=True)
    os.mkdir(d, 0o700)
    if UID >= 0:
        os.chown(d, UID, UID)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    res_r, res_w = os.pipe()
    setup_r, setup_w = os.pipe()
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        try:
            child(req, d, out_w, err_w, res_w, setup_w)
        finally:
            os._exit(71)
    os.close(out_w)
    os.close(err_w)
    os.close(res_w)
    os.close(setup_w)
    pfd = os.pidfd_open(pid) if HAS_PIDFD else None
    sel = selectors.DefaultSelector()
    for fd in (out_r, err_r, res_r, setup_r):
        sel.register(fd, selectors.EVENT_READ)
    if pfd is not None:
        sel.register(pfd, selectors.EVENT_READ)
    bufs = {out_r: bytearray(), err_r: bytearray(), res_r: bytearray(), setup_r: bytearray()}
    st = {"total": 0, "truncated": False, "overflow": False, "report_overflow": False}

    def absorb(fd, data):
        if fd == setup_r:
            if len(bufs[setup_r]) < 4096:
                bufs[setup_r] += data
            return
        if fd == res_r:
            # Report bytes count toward the output cap too: a program cannot spin on them.
            st["total"] += len(data)
            if len(bufs[res_r]) + len(data) <= REPORT_CAP:
                bufs[res_r] += data
            else:
                st["report_overflow"] = True
            if st["total"] > HARD_CAP:
                st["overflow"] = True
            return
        st["total"] += len(data)
        room = OUT_CAP - len(bufs[fd])
        if room > 0:
            bufs[fd] += data[:room]
        if len(data) > max(room, 0):
            st["truncated"] = True
        if st["total"] > HARD_CAP:
            st["overflow"] = True

    def read_some(fd):
        try:
            data = os.read(fd, 65536)
        except (BlockingIOError, InterruptedError):
            return True
        if not data:
            return False
        absorb(fd, data)
        return True

    wst = None
    timed_out = False
    deadline = t0 + timeout
    while wst is None:
        rem = deadline - time.monotonic()
        if rem <= 0:
            timed_out = True
            break
        wait = rem if pfd is not None else min(rem, 0.005)
        exited = False
        for key, _ in sel.select(wait):
            if key.fd == pfd:
                exited = True
            elif not read_some(key.fd):
                sel.unregister(key.fd)
        if st["overflow"]:
            break
        if exited or pfd is None:
            p, s = os.waitpid(pid, os.WNOHANG)
            if p == pid:
                wst = s
    if wst is None:
        for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
            try:
                kill()
            except OSError:
                pass
        _, wst = os.waitpid(pid, 0)
    seconds = time.monotonic() - t0
    if UID < 0:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
    kill_strays()
    for fd in (out_r, err_r, res_r, setup_r):
        os.set_blocking(fd, False)
        while not st["overflow"]:
            try:
                data = os.read(fd, 65536)
            except (BlockingIOError, InterruptedError):
                break
            if not data:
                break
            absorb(fd, data)
        os.close(fd)
    sel.close()
    if pfd is not None:
        os.close(pfd)
    shutil.rmtree(d, ignore_errors=True)
    reap()

    setup = bytes(bufs[setup_r])
    sig = os.WTERMSIG(wst) if os.WIFSIGNALED(wst) else None
    code = os.WEXITSTATUS(wst) if os.WIFEXITED(wst) else None
    out = {"value_kind": None, "value": None, "message": ""}
    if timed_out:
        out.update(status="timeout", message="wall-clock timeout after %.1f s" % timeout)
    elif st["overflow"]:
        out.update(status="resource_limit",
                   message="the program wrote more than %d bytes of output" % HARD_CAP)
    elif setup != b"R":
        # No program code ran: the only verdict that is the worker's own failure.
        why = setup[1:].decode("utf-8", "replace") if setup[:1] == b"E" else (
            "the process died during set-up (status %s, signal %s)" % (code, sig))
        return {"status": "setup_error", "message": why[:2000]}
    elif sig == signal.SIGXCPU:
        out.update(status="timeout", message="CPU time limit reached")
    elif sig == signal.SIGXFSZ:
        out.update(status="resource_limit", message="file size limit reached")
    elif sig is not None:
        extra = " (often a stack overflow from deep recursion)" if sig == signal.SIGSEGV else ""
        out.update(status="runtime_error",
                   message="the program was killed by signal %d%s" % (sig, extra))
    elif code != 0:
        out.update(status="runtime_error",
                   message="the program exited with status %s before returning" % code)
    else:
        report = read_report(bufs[res_r], st["report_overflow"])
        if report is None:
            out.update(status="runtime_error",
                       message="the program left no well-formed result: it wrote to, closed "
                               "or replaced the sandbox's result channel, or exited early")
        else:
            out.update(report)
    out.update(stdout=bytes(bufs[out_r]).decode("utf-8", "replace"),
               stderr=bytes(bufs[err_r]).decode("utf-8", "replace"),
               truncated=st["truncated"], exit_code=code, signal=sig, seconds=seconds)
    return out


def main():
    kill_strays(force=True)
    reap()
    sys.stdout.write(json.dumps({"ready": True, "pid": os.getpid(),
                                 "version": sys.version.split()[0], "pidfd": HAS_PIDFD}) + "\n")
    sys.stdout.flush()
    # Objects alive now are never collected: keeps the collector from touching (and so
    # copying) their pages in every forked child.
    gc.freeze()
    seq = 0
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        seq += 1
        try:
            req = json.loads(line)
            out = run_one(req, seq)
        except BaseException as e:
            out = {"status": "worker_error", "message": short_exc(e)}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    kill_strays(force=True)


main()
