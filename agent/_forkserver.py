"""The Runi Agent's fork server: a tiny single-threaded process that clones isolated slices.

Run as a *script* (``python -I -S _forkserver.py FD``) by agent/_launcher.py before the agent
imports anything heavy, so every clone copies a ~10 MiB process with one thread instead of the
agent (research/agent.md: fork of a 1 GiB threaded parent costs 40 ms and may deadlock). It imports
only the standard library and never the ``runink`` package. It reads launch requests (marshal: the
agent and the server are the same interpreter, and it is ~10x cheaper than JSON here) from a
SOCK_SEQPACKET socket and answers ``{"id", "pid", "cgroup"}``; it reports every child's raw wait
status as ``{"op": "exit", "pid", "status"}``. Per slice it makes the slice's cgroup with its
limits and raw-clones the slice init into it (PID 1 of a new pid namespace, plus
user/mount/uts/ipc/net namespaces), writes uid/gid maps and the v1 ``cgroup.procs`` from the
parent while the child waits on a pipe, then the init sets up mounts (its own /proc and /tmp,
detached bind trees the server cut with open_tree, secrets), hostname and lo, spawns the step
with umask 0002 and reaps until the step exits, forwarding SIGTERM/SIGINT/SIGHUP/SIGQUIT to it.
Zygotes (``{"op": "zygotes"}``) take the clone off the launch path: inits cloned ahead of time
(namespaces made, / rprivate, /proc mounted, lo up, each already in a cgroup of its own) wait on
a socket; a launch sends one the request, writes its maps and the slice's limits into its cgroup
while it wakes up, then sends "go" with the fds. Moving a task into a cgroup waits for an RCU grace period when no
move happened for a while (3.7-8 ms, measured): zygotes move while parked, off the launch path,
and a clone joins the cgroup2 part with CLONE_INTO_CGROUP where the kernel has it.
Each init reports the status it is about to exit with on its own pipe (a zygote: its socket)
before exiting, so the exit report does not wait for the kernel to tear its namespaces down.
A parked zygote copies ahead the pages the first released inits were seen to write, so its
launch path takes no copy-on-write faults (`prefault`, `hot_pages`).
"""

from __future__ import annotations

import base64
import ctypes
import errno
import fcntl
import gc
import json
import marshal
import os
import platform
import select
import signal
import socket
import struct
import sys
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
SYS_CLONE = {"x86_64": 56, "aarch64": 220}[platform.machine()]
SYS_CLONE3 = 435  # asm-generic, every architecture (5.3+); CLONE_INTO_CGROUP since 5.7
CLONE_INTO_CGROUP = 0x200000000
# The new mount API has one syscall number on every architecture (asm-generic since 5.2).
SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442
OPEN_TREE_CLONE, AT_EMPTY_PATH, AT_RECURSIVE, MOVE_MOUNT_F_EMPTY_PATH = 1, 0x1000, 0x8000, 4
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 1, 2, 4
# Files and directories a step creates are group-writable: siblings of one herd share datasets.
STEP_UMASK = 0o002
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
PR_SET_PDEATHSIG = 1
MADV_POPULATE_WRITE = 23
PAGE = os.sysconf("SC_PAGE_SIZE")
NS_ALL = ("user", "pid", "mnt", "uts", "ipc")
ZYGOTE_IDLE = 0.002
LEARN = 2
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1)
# Python ignores these; an ignored disposition survives exec, so the step must get them back.
RESET_IN_STEP = (signal.SIGPIPE, signal.SIGXFSZ, *FORWARDED)

libc = ctypes.CDLL(None, use_errno=True)
# clone through PyDLL: it keeps the GIL across the call, so the child never starts without it.
pylibc = ctypes.PyDLL(None, use_errno=True)
libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
libc.unshare.argtypes = [ctypes.c_int]
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
# lo-only netns made ahead for `network: none`: joining one before the clone replaces the clone's
# NEWNET (the kernel's netns set-up) and the child's lo ioctls on the launch path.
SPARE_NETNS = 2
libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
pylibc.syscall.restype = ctypes.c_long


def _oserror(what: str) -> OSError:
    e = ctypes.get_errno()
    return OSError(e, f"{what}: {os.strerror(e)}")


def mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    enc = [None if x is None else x.encode() for x in (src, target, fstype)]
    if libc.mount(enc[0], enc[1], enc[2], flags, None if data is None else data.encode()) != 0:
        raise _oserror(f"mount {target}")


def setns(fd: int, nstype: int) -> None:
    if libc.setns(fd, nstype) != 0:
        raise _oserror("setns")


def open_tree(path: str, readonly: bool) -> int:
    """A detached copy of the mount tree at *path* (we are real root in the host's mount ns).

    The slice init attaches it with `move_mount`: it never has to resolve *path* itself, which
    its ephemeral UID may not be allowed to (a checkout under /root, a state dir under 0700).
    """
    flags = OPEN_TREE_CLONE | os.O_CLOEXEC | AT_RECURSIVE
    fd = int(pylibc.syscall(SYS_OPEN_TREE, -100, path.encode(), flags))
    if fd < 0:
        raise _oserror(f"open_tree {path}")
    # struct mount_attr {attr_set, attr_clr, propagation, userns_fd}
    attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (MOUNT_ATTR_RDONLY if readonly else 0)
    attr = struct.pack("=QQQQ", attr_set, 0, MS_PRIVATE, 0)
    rc = pylibc.syscall(SYS_MOUNT_SETATTR, fd, b"", AT_EMPTY_PATH | AT_RECURSIVE, attr, len(attr))
    if rc != 0:
        err = _oserror(f"mount_setattr {path}")
        os.close(fd)
        raise err
    return fd


def move_mount(fd: int, target: str) -> None:
    rc = pylibc.syscall(SYS_MOVE_MOUNT, fd, b"", -100, target.encode(), MOVE_MOUNT_F_EMPTY_PATH)
    if rc != 0:
        raise _oserror(f"move_mount {target}")


def raw_clone(flags: int) -> int:
    """fork()-like clone with namespace flags: returns 0 in the child, the pid in the parent."""
    pid = int(pylibc.syscall(SYS_CLONE, flags | signal.SIGCHLD, None, None, None, 0))
    if pid < 0:
        raise _oserror("clone")
    return pid


_clone3_ok = True  # until the kernel says it has no clone3 or no CLONE_INTO_CGROUP


def clone_into(flags: int, cgroup_fd: int) -> int:
    """`raw_clone` whose child starts in the cgroup2 directory *cgroup_fd*: no migration, so no
    wait for an RCU grace period. Returns -1 where the kernel cannot (then clone and move)."""
    global _clone3_ok
    if not _clone3_ok:
        return -1
    # struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size,
    # tls, set_tid, set_tid_size, cgroup (CLONE_ARGS_SIZE_VER2). No stack: fork-like.
    args = ctypes.create_string_buffer(
        struct.pack(
            "=11Q", flags | CLONE_INTO_CGROUP, 0, 0, 0, signal.SIGCHLD, 0, 0, 0, 0, 0, cgroup_fd
        )
    )
    pid = int(pylibc.syscall(SYS_CLONE3, args, ctypes.c_size_t(88)))
    if pid < 0:
        err = ctypes.get_errno()
        if err in (errno.ENOSYS, errno.EINVAL, errno.E2BIG):
            _clone3_ok = False
            return -1
        raise _oserror("clone3")
    return pid


def _cgroup_dirs(cg: dict[str, Any], name: str) -> list[str]:
    return [os.path.join(base, name) for base in cg["bases"]]


def _cgroup_make(cg: dict[str, Any], name: str) -> list[str]:
    """The directories of cgroup *name* under the plan's bases (made if missing)."""
    dirs = _cgroup_dirs(cg, name)
    for d in dirs:
        try:  # noqa: SIM105 - keep the fork server's imports minimal
            os.mkdir(d)
        except FileExistsError:
            pass
    return dirs


def _cgroup_writes(dirs: list[str], cg: dict[str, Any]) -> None:
    """A slice's limits (agent/_cgroups.py `limit_writes`); an optional file may be missing."""
    for i, file, value, required in cg.get("writes") or []:
        try:
            _write_value(os.path.join(dirs[i], file), value)
        except OSError as e:
            if required:
                raise OSError(e.errno, f"cgroup {dirs[i]}/{file} = {value}: {e.strerror}") from e


def _cgroup_rmdir(dirs: list[str]) -> None:
    """Remove an emptied cgroup. Right after its last task was reaped a hierarchy may still
    count it as populated for a moment (EBUSY): retried for up to ~50 ms, then left to the
    agent's sweep."""
    for d in dirs:
        for _ in range(50):
            try:
                os.rmdir(d)
            except OSError as e:
                if e.errno == errno.EBUSY:
                    select.select([], [], [], 0.001)
                    continue
            break


def _writable_maps(pid: int) -> list[tuple[int, int]]:
    """(start, end) of *pid*'s private writable mappings, except the kernel's own."""
    with open(f"/proc/{pid}/maps", "rb") as f:
        maps = f.read().splitlines()
    out = []
    for line in maps:
        fields = line.split()
        perms = fields[1]
        if not perms.startswith(b"rw") or perms[3:4] != b"p":
            continue
        if len(fields) > 5 and fields[5].startswith(b"[v"):  # [vvar], [vdso], [vsyscall]
            continue
        start, end = (int(x, 16) for x in fields[0].split(b"-"))
        out.append((start, end))
    return out


def prefault(runs: list[tuple[int, int]]) -> None:
    """Take our own copy of the pages in *runs* ((first page, count)) now (MADV_POPULATE_WRITE).

    A zygote shares its memory copy-on-write with the fork server: left alone, each page the
    interpreter writes on the launch path (reference counts, frames) costs a COW fault then,
    hundreds per launch (~0.3 ms). Only the pages a released init was seen to write (`hot_pages`)
    are copied: copying all ~8 MiB would cost that much memory per running slice. A range
    no longer mapped, or a kernel without the advice (< 5.14), just keeps the faults."""
    for first, count in runs:
        libc.madvise(
            ctypes.c_void_p(first * PAGE), ctypes.c_size_t(count * PAGE), MADV_POPULATE_WRITE
        )


def hot_pages(pid: int) -> list[tuple[int, int]]:
    """The pages a released init (*pid*, waiting for us) has its own copy of, as (first page,
    count) runs: what it wrote since its clone, so what `prefault` should copy ahead in the
    next zygotes. Read by the server: the init's /proc files are root's, not its uid's."""
    runs: list[tuple[int, int]] = []
    fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    try:
        for start, end in _writable_maps(pid):
            first = start // PAGE
            data = os.pread(fd, (end - start) // PAGE * 8, first * 8)
            for i, (entry,) in enumerate(struct.iter_unpack("=Q", data)):
                # present and exclusively mapped: a COW copy of our own (or never shared)
                if entry >> 63 & 1 and entry >> 56 & 1:
                    if runs and runs[-1][0] + runs[-1][1] == first + i:
                        runs[-1] = (runs[-1][0], runs[-1][1] + 1)
                    else:
                        runs.append((first + i, 1))
    finally:
        os.close(fd)
    return runs


def _lo_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH22x", b"lo", 0))
        flags = struct.unpack("16sH22x", ifr)[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def _write_status(fd: int, status: dict[str, Any]) -> None:
    if fd >= 0:
        os.write(fd, json.dumps(status).encode())


def _report(report_fd: int, code: int, learn: bool = False) -> None:
    """Tell the server how this init is about to exit (the raw wait status it will see).

    Sent before the init's exit tears down its pid, mount and net namespaces (~0.4 ms on the
    reported path, phase 4 trace): the server forwards it at once and ignores the later reap.
    With *learn*, wait until the server has read which pages we wrote (`hot_pages`)."""
    if report_fd < 0:
        return
    try:
        os.write(report_fd, struct.pack("=i", (code & 0xFF) << 8))
        if learn:
            os.read(report_fd, 1)
    except OSError:
        pass  # the server is gone (agent restart): the status file says it all


_step_pid = 0
_pending_signals: list[int] = []


def _forward(signum: int, _frame: object) -> None:
    """A slice init's handler: pass the signal on to its step, or hold it until it starts."""
    if _step_pid:
        try:  # noqa: SIM105 - keep the fork server's imports minimal
            os.kill(_step_pid, signum)
        except ProcessLookupError:
            pass
    else:
        _pending_signals.append(signum)


def _forward_signals() -> None:
    for signum in FORWARDED:
        signal.signal(signum, _forward)


def _slice_init(req: dict[str, Any], sync_r: int, status_fd: int, report_fd: int = -1) -> int:
    """Runs as PID 1 of the slice. Returns the exit code for os._exit.

    *sync_r* < 0: a released zygote (already set up as far as it could be, maps written).
    *report_fd*: where the step's end is reported early (`_report`), or -1."""
    if sync_r >= 0:
        if os.read(sync_r, 1) != b"1":
            return 125  # the parent failed to set us up and is about to kill us
        os.close(sync_r)
    ns = req["ns"]
    if ns.get("user"):
        os.setgroups([])
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    if ns.get("mnt"):
        premounted = sync_r < 0
        if not premounted:
            mount(None, "/", None, MS_REC | MS_PRIVATE, None)
        for tree_fd, target in req.get("_bind_fds", []):
            move_mount(tree_fd, target)
            os.close(tree_fd)
        if ns.get("pid") and not premounted:
            mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
        if req.get("private_tmp", True):
            mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
        secrets = req.get("secrets") or {}
        sdir = req.get("secrets_dir")
        if sdir and secrets:
            flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
            mount("tmpfs", sdir, "tmpfs", flags, "mode=0500,size=4m")
            for name, b64 in secrets.items():
                # "secret/key" names become a directory per secret, as in a Secret's volume.
                parts = name.split("/")
                if any(p in ("", ".", "..") for p in parts):
                    raise ValueError(f"bad secret file name {name!r}")
                if len(parts) > 1:
                    os.makedirs(os.path.join(sdir, *parts[:-1]), 0o500, exist_ok=True)
                path = os.path.join(sdir, *parts)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
                try:
                    os.write(fd, base64.b64decode(b64))
                finally:
                    os.close(fd)
            mount(None, sdir, None, MS_REMOUNT | MS_RDONLY | flags, "mode=0500")
    if ns.get("uts"):
        name = req["hostname"].encode()
        if libc.sethostname(name, len(name)) != 0:
            raise _oserror("sethostname")
    if req.get("net") == "none" and not req.get("_lo_ready"):
        _lo_up()
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(req["_stdout_fd"], 1)
    os.dup2(req["_stderr_fd"], 2)
    if req.get("cwd"):
        os.chdir(req["cwd"])

    global _step_pid
    if not req.get("_signals_ready"):
        _forward_signals()
    os.umask(STEP_UMASK)
    try:
        step_pid = _step_pid = os.posix_spawnp(
            req["argv"][0], req["argv"], req["env"], setsigdef=RESET_IN_STEP, setsigmask=()
        )
    except OSError as e:
        os.write(2, f"runink: cannot start {req['argv'][0]!r}: {e.strerror}\n".encode())
        _write_status(status_fd, {"error": f"{e.strerror}: {req['argv'][0]}", "exit": 127})
        _report(report_fd, 127)
        return 127
    for signum in _pending_signals:
        os.kill(step_pid, signum)
    # The step owns the log pipes now; our copies would only delay the agent seeing EOF.
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(req["_stdout_fd"])
    os.close(req["_stderr_fd"])
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 0
        if pid == step_pid:
            break
    # When PID 1 exits the kernel SIGKILLs whatever else is left in the namespace.
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        _write_status(status_fd, {"signal": sig})
        code = 128 + sig
    else:
        code = os.waitstatus_to_exitcode(status)
        _write_status(status_fd, {"exit": code})
    # A zygote made before the server knew which pages to copy ahead lets it look (~1 ms, off
    # the reported path, twice per fork server).
    _report(report_fd, code, bool(req.get("_learn")))
    return code


def _open_log(path: str | None) -> tuple[int, int]:
    """(write end, keep-open read end) of a log FIFO, or /dev/null twice."""
    if not path:
        fd = os.open("/dev/null", os.O_WRONLY)
        return fd, os.dup(fd)
    # A read end kept open by the slice init means the step never gets EPIPE while the agent
    # restarts; it blocks on a full pipe until the new agent reopens the FIFO.
    keep = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    return os.open(path, os.O_WRONLY), keep


def refill_spare_netns(spare: list[int], host_netns: int) -> None:
    """Make lo-only netns until there are `SPARE_NETNS` (each held by an fd); called when idle."""
    while len(spare) < SPARE_NETNS:
        if libc.unshare(CLONE_NEWNET) != 0:
            return  # launches fall back to CLONE_NEWNET
        try:
            fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                _lo_up()
            except OSError:
                os.close(fd)
                raise
        finally:
            setns(host_netns, CLONE_NEWNET)
        spare.append(fd)


def launch(
    req: dict[str, Any],
    host_netns: int,
    spare: list[int] | None = None,
    server_fds: tuple[int, ...] = (),
) -> tuple[int, int]:
    """Clone and set up one slice; returns its init's pid and the read end of its early exit
    report (`_report`). Every other fd opened here is closed. The init closes *server_fds*
    (the server's own: the agent's channel, other slices' reports, parked zygotes' sockets)."""
    opened: list[int] = []
    if req.get("net", "host") == "none" and spare:
        # The slice takes the netns (the fd goes once the clone holds it).
        opened.append(spare.pop())
        req["_spare_netns"] = opened[-1]
    # Other slices' spare netns too: this init must not keep them alive.
    req["_close_in_child"] = [*server_fds, *(spare or ())]
    try:
        return _launch(req, host_netns, opened)
    finally:
        for fd in opened:
            os.close(fd)


def _launch(req: dict[str, Any], host_netns: int, opened: list[int]) -> tuple[int, int]:
    ns = req["ns"]
    flags = 0
    for key, bit in (
        ("user", CLONE_NEWUSER),
        ("pid", CLONE_NEWPID),
        ("mnt", CLONE_NEWNS),
        ("uts", CLONE_NEWUTS),
        ("ipc", CLONE_NEWIPC),
    ):
        if ns.get(key):
            flags |= bit
    if req.get("net", "host") == "none" and "_spare_netns" not in req:
        flags |= CLONE_NEWNET
    out_w, out_keep = _open_log(req.get("stdout"))
    opened += [out_w, out_keep]
    err_w, err_keep = _open_log(req.get("stderr"))
    opened += [err_w, err_keep]
    status_fd = -1
    if req.get("status_path"):
        status_fd = os.open(req["status_path"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        opened.append(status_fd)
    req["_stdout_fd"], req["_stderr_fd"] = out_w, err_w
    sync_r, sync_w = os.pipe()
    opened += [sync_r, sync_w]
    binds: list[tuple[int, str]] = []
    for bind in req.get("binds") or []:
        fd = open_tree(bind["src"], bool(bind.get("ro", True)))
        opened.append(fd)
        binds.append((fd, bind["dst"]))
    req["_bind_fds"] = binds
    cg = req.get("cgroup")
    req["_cgroup_dirs"], req["_cgroup_fd"], req["_cgroup_name"] = [], -1, None
    if cg:
        dirs = _cgroup_make(cg, cg["name"])
        req["_cgroup_dirs"], req["_cgroup_name"] = dirs, cg["name"]
        _cgroup_writes(dirs, cg)
        if cg.get("v2", -1) >= 0:
            req["_cgroup_fd"] = os.open(dirs[cg["v2"]], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            opened.append(req["_cgroup_fd"])
    report_r, report_w = os.pipe()
    opened.append(report_w)
    try:
        return _clone(req, host_netns, flags, sync_r, sync_w, status_fd, report_r, report_w)
    except BaseException:
        os.close(report_r)
        raise


def _clone(
    req: dict[str, Any],
    host_netns: int,
    flags: int,
    sync_r: int,
    sync_w: int,
    status_fd: int,
    report_r: int,
    report_w: int,
) -> tuple[int, int]:
    ns = req["ns"]
    net = req.get("net", "host")
    spare_fd = req.pop("_spare_netns", -1)
    joined = False
    try:
        if spare_fd >= 0:
            setns(spare_fd, CLONE_NEWNET)
            joined = True
            req["_lo_ready"] = True
        elif net == "isolated":
            # Join the pooled netns for the clone only; the fork server returns to the host's.
            nsfd = os.open(req["netns_path"], os.O_RDONLY)
            try:
                setns(nsfd, CLONE_NEWNET)
                joined = True
            finally:
                os.close(nsfd)
        cgroup_fd = req["_cgroup_fd"]
        pid = clone_into(flags, cgroup_fd) if cgroup_fd >= 0 else -1
        joined_v2 = pid >= 0
        if pid < 0:
            pid = raw_clone(flags)
        if pid == 0:
            code = 126
            try:
                ctypes.pythonapi.PyOS_AfterFork_Child()
                signal.set_wakeup_fd(-1)  # the server's wake-up pipe is not ours to write
                for fd in (sync_w, report_r, *req["_close_in_child"]):
                    os.close(fd)
                if cgroup_fd >= 0:
                    os.close(cgroup_fd)
                code = _slice_init(req, sync_r, status_fd, report_w)
            except BaseException as e:  # noqa: BLE001 - the child must never return into the server
                try:
                    os.write(2, f"runink: slice set-up failed: {e}\n".encode())
                    _write_status(status_fd, {"error": f"set-up failed: {e}", "exit": 126})
                finally:
                    os._exit(126)
            os._exit(code)
    finally:
        if joined:
            setns(host_netns, CLONE_NEWNET)
    try:
        if ns.get("user"):
            uid, gid = int(req["uid"]), int(req["gid"])
            _write_maps(pid, uid, gid)
        v2 = req["cgroup"].get("v2", -1) if req.get("cgroup") else -1
        for i, d in enumerate(req["_cgroup_dirs"]):
            if not (joined_v2 and i == v2):
                _write_pid(os.path.join(d, "cgroup.procs"), pid)
        os.write(sync_w, b"1")
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        raise
    return pid, report_r


class Zygotes:
    """Slice inits cloned ahead of time, per network mode, each parked on its own socket.

    A zygote has every namespace of a default slice (user, pid, mnt, uts, ipc; net for
    ``none``), / made rprivate, its own /proc and (``none``) lo up. Configured with cgroup
    bases, each sits in a cgroup of its own below them (``<prefix><serial>``), which becomes
    its slice's cgroup: the launch writes the limits there, and the reply names it. It has no
    uid/gid map yet: the gid is the herd's, known at launch only, and the parent writes both
    maps (two small writes, to files opened while it was parked) as it releases it. Unused zygotes die with the server
    (PDEATHSIG, EOF on their socket) and are killed by `clear`; their cgroups go with them.
    """

    def __init__(self) -> None:
        self.size = 0
        self.kinds: tuple[str, ...] = ()
        self.cgroup: dict[str, Any] | None = None  # {"bases", "v2", "prefix"}
        self.serial = 0
        self.ready: dict[str, list[tuple[int, socket.socket]]] = {}
        self.pids: set[int] = set()  # parked (never reported to the agent)
        self.cgroup_of: dict[int, str] = {}  # parked (or failed to release) -> its cgroup
        # uid_map and gid_map of each parked zygote, opened while it waits: a launch only
        # writes them (open() of a /proc/PID file was half of the ~140 us the maps took).
        self.map_fds: dict[int, tuple[int, int]] = {}
        # Pages a released init wrote (`hot_pages`), learnt from the first LEARN releases of
        # zygotes made without it (`unlearnt`); later zygotes copy them ahead (`prefault`).
        self.hot: list[tuple[int, int]] | None = None
        self.hot_set: set[int] = set()
        self.learnt = 0
        self.unlearnt: set[int] = set()
        self.unlearning: set[int] = set()  # released with "_learn": waiting for `learn`

    def should_learn(self, pid: int) -> bool:
        return pid in self.unlearnt and self.learnt < LEARN

    def learn(self, pid: int) -> None:
        self.unlearning.discard(pid)
        self.learnt += 1
        try:
            seen = hot_pages(pid)
        except OSError:
            return  # it died meanwhile (killed): learn from the next one
        for first, count in seen:
            self.hot_set.update(range(first, first + count))
        runs: list[tuple[int, int]] = []
        for page in sorted(self.hot_set):
            if runs and runs[-1][0] + runs[-1][1] == page:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
            else:
                runs.append((page, 1))
        self.hot = runs

    def configure(self, msg: dict[str, Any], close_in_child: list[int]) -> None:
        self.clear()
        self.size = int(msg.get("size", 0))
        self.kinds = tuple(k for k in msg.get("kinds", ("none",)) if k in ("none", "host"))
        self.cgroup = msg.get("cgroup") or None
        self.refill(close_in_child)

    def eligible(self, req: dict[str, Any]) -> bool:
        ns = req["ns"]
        return all(ns.get(k) for k in NS_ALL) and req.get("net", "host") in self.kinds

    def fds(self) -> list[int]:
        """The server's fds for parked zygotes (sockets, map files): no slice init keeps them."""
        out = [z.fileno() for pool in self.ready.values() for _, z in pool]
        for uid_fd, gid_fd in self.map_fds.values():
            out += (uid_fd, gid_fd)
        return out

    def take(self, net: str) -> tuple[int, socket.socket, str | None] | None:
        """A parked zygote for *net* and the name of its cgroup, now the caller's; its map
        files are in `map_fds` until `release_maps`."""
        pool = self.ready.get(net)
        if not pool:
            return None
        pid, zsock = pool.pop(0)  # the oldest: most likely done with its own set-up
        self.pids.discard(pid)
        return pid, zsock, self.cgroup_of.pop(pid, None)

    def release_maps(self, pid: int) -> None:
        for fd in self.map_fds.pop(pid, ()):
            os.close(fd)

    def failed(self, zyg: tuple[int, socket.socket, str | None]) -> None:
        """A zygote that could not be released (and was killed): reaped and removed as parked."""
        self.pids.add(zyg[0])
        if zyg[2] is not None:
            self.cgroup_of[zyg[0]] = zyg[2]

    def dead(self, pid: int) -> None:
        """A parked zygote was reaped: forget it and remove its (now empty) cgroup."""
        self.pids.discard(pid)
        self.release_maps(pid)
        for pool in self.ready.values():
            pool[:] = [z for z in pool if z[0] != pid]
        name = self.cgroup_of.pop(pid, None)
        if name is not None and self.cgroup is not None:
            _cgroup_rmdir(_cgroup_dirs(self.cgroup, name))

    def low(self) -> bool:
        return any(len(self.ready.get(k, ())) < self.size for k in self.kinds)

    def refill(self, close_in_child: list[int], most: int = 1 << 30) -> None:
        for kind in self.kinds:
            pool = self.ready.setdefault(kind, [])
            while len(pool) < self.size and most > 0:
                most -= 1
                try:
                    pool.append(self._make(kind, close_in_child))
                except OSError as e:
                    # Launches fall back to a clone each; say why once per attempt.
                    os.write(2, f"runink forkserver: cannot make a zygote: {e}\n".encode())
                    return
                self.pids.add(pool[-1][0])
                if self.hot is None:
                    self.unlearnt.add(pool[-1][0])

    def _make(self, net: str, close_in_child: list[int]) -> tuple[int, socket.socket]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            dirs: list[str] = []
            name = None
            cgroup_fd = pid = -1
            if self.cgroup is not None:
                self.serial += 1
                name = f"{self.cgroup['prefix']}{self.serial}"
                dirs = _cgroup_make(self.cgroup, name)
                if self.cgroup.get("v2", -1) >= 0:
                    v2dir = dirs[self.cgroup["v2"]]
                    cgroup_fd = os.open(v2dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            # Only what must come with the clone (PID 1 of a pid ns owned by the new user ns):
            # the child unshares the rest itself, so making the mount table copy and the
            # netns costs the zygote's time, not the server's (which may owe an exit report).
            try:
                flags = CLONE_NEWUSER | CLONE_NEWPID
                pid = clone_into(flags, cgroup_fd) if cgroup_fd >= 0 else -1
                joined_v2 = pid >= 0
                if pid < 0:
                    pid = raw_clone(flags)
            finally:
                if cgroup_fd >= 0 and pid != 0:
                    os.close(cgroup_fd)
        except OSError:
            ours.close()
            theirs.close()
            if dirs:
                _cgroup_rmdir(dirs)
            raise
        if pid == 0:
            code = 126
            try:
                ctypes.pythonapi.PyOS_AfterFork_Child()
                signal.set_wakeup_fd(-1)
                for fd in (*close_in_child, *self.fds()):
                    os.close(fd)
                if cgroup_fd >= 0:
                    os.close(cgroup_fd)
                ours.close()
                code = _zygote(theirs, net, self.hot)
            except BaseException as e:  # noqa: BLE001 - the child must never return into the server
                try:
                    os.write(2, f"runink: zygote failed: {e}\n".encode())
                finally:
                    os._exit(126)
            os._exit(code)
        theirs.close()
        # Parked from here on: if anything below fails, it is reaped as one (`dead`).
        self.pids.add(pid)
        if name is not None:
            self.cgroup_of[pid] = name
        try:
            self.map_fds[pid] = (
                os.open(f"/proc/{pid}/uid_map", os.O_WRONLY | os.O_CLOEXEC),
                os.open(f"/proc/{pid}/gid_map", os.O_WRONLY | os.O_CLOEXEC),
            )
            # Moved while parked, off the launch path (the move may wait for a grace period).
            for i, d in enumerate(dirs):
                if not (joined_v2 and i == self.cgroup["v2"]):  # type: ignore[index]
                    _write_pid(os.path.join(d, "cgroup.procs"), pid)
        except BaseException:
            os.kill(pid, signal.SIGKILL)
            ours.close()
            raise
        return pid, ours

    def clear(self) -> None:
        """Kill every parked zygote, reap it and remove its cgroup (unreported to the agent)."""
        for pool in self.ready.values():
            for pid, zsock in pool:
                zsock.close()
                try:  # noqa: SIM105 - keep the fork server's imports minimal
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for pid in list(self.pids):
            try:  # noqa: SIM105 - keep the fork server's imports minimal
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass  # reaped already by the loop
            self.dead(pid)
        self.ready.clear()
        self.unlearnt.clear()


def _zygote(sock: socket.socket, net: str, hot: list[tuple[int, int]] | None) -> int:
    """A parked slice init: set up what needs no request, then wait for one (or EOF)."""
    # Die with the server while parked; a released slice must outlive it (agent restarts).
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # Owned by our new user ns, as the clone flags would have made them.
    flags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | (CLONE_NEWNET if net == "none" else 0)
    if libc.unshare(flags) != 0:
        raise _oserror("unshare")
    mount(None, "/", None, MS_REC | MS_PRIVATE, None)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    if net == "none":
        _lo_up()
    _forward_signals()  # a signal while parked is held for the step, as in a cloned init
    if hot is not None:
        prefault(hot)
    try:
        data = sock.recv(1 << 22)
    except OSError:
        return 0
    if not data:
        return 0  # the server went away or cleared the pool
    libc.prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0)
    req = marshal.loads(data)
    # The server writes our maps and cgroup limits meanwhile; "go" brings the fds.
    go, fds, _flags, _addr = socket.recv_fds(sock, 16, 64)
    if go != b"g":
        return 0  # the server failed to set us up (it kills us) or went away
    for fd in fds:
        os.set_inheritable(fd, False)  # only dup2'd stdout/stderr reach the step
    out_w, _out_keep, err_w, _err_keep = fds[:4]
    rest = fds[4:]
    status_fd = rest.pop(0) if req.get("_has_status") else -1
    req["_stdout_fd"], req["_stderr_fd"] = out_w, err_w
    req["_bind_fds"] = list(zip(rest, [b["dst"] for b in req.get("binds") or []], strict=True))
    req["_lo_ready"] = req["_signals_ready"] = True
    # The socket stays open: the step's end is reported on it (`_report`).
    return _slice_init(req, -1, status_fd, sock.fileno())


def _write_maps(pid: int, uid: int, gid: int) -> None:
    """Root of the slice's user ns is *uid*/*gid* on the host. os.open, not open(): a text-mode
    open() costs ~160 us more per file in this -I -S interpreter (measured)."""
    for name, host_id in (("uid_map", uid), ("gid_map", gid)):
        fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY)
        try:
            os.write(fd, f"0 {host_id} 1\n".encode())
        finally:
            os.close(fd)


def _write_value(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _write_pid(procs: str, pid: int) -> None:
    _write_value(procs, str(pid))


def launch_zygote(
    req: dict[str, Any],
    zyg: tuple[int, socket.socket, str | None],
    parked_in: dict[str, Any] | None,
    map_fds: tuple[int, int] | None = None,
) -> int:
    """Release a parked zygote with *req*: the request, then (while the zygote wakes up and
    reads it) its maps, cgroup limits and fds, then "go" with the fds.

    A zygote parked in a cgroup under the request's bases (*parked_in*) keeps it: only the
    limits are written. Otherwise it moves into a cgroup made for the request (slower: a move).
    The zygote's socket stays open on success (the caller reads the early exit report on it)."""
    pid, zsock, parked_cgroup = zyg
    opened: list[int] = []
    try:
        uid, gid = int(req["uid"]), int(req["gid"])
        req["_has_status"] = bool(req.get("status_path"))
        zsock.send(marshal.dumps(req))
        if map_fds is not None:
            os.write(map_fds[0], f"0 {uid} 1\n".encode())
            os.write(map_fds[1], f"0 {gid} 1\n".encode())
        else:
            _write_maps(pid, uid, gid)
        cg = req.get("cgroup")
        if parked_cgroup is not None and parked_in is not None:
            if cg and cg["bases"] != parked_in["bases"]:
                raise OSError(0, "the request's cgroup is not under the zygotes' parents")
            req["_cgroup_name"] = parked_cgroup
            if cg:
                _cgroup_writes(_cgroup_dirs(parked_in, parked_cgroup), cg)
        elif cg:
            dirs = _cgroup_make(cg, cg["name"])
            req["_cgroup_name"] = cg["name"]
            _cgroup_writes(dirs, cg)
            for d in dirs:
                _write_pid(os.path.join(d, "cgroup.procs"), pid)
        for path in (req.get("stdout"), req.get("stderr")):
            opened += _open_log(path)
        if req.get("status_path"):
            opened.append(os.open(req["status_path"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        for bind in req.get("binds") or []:
            opened.append(open_tree(bind["src"], bool(bind.get("ro", True))))
        socket.send_fds(zsock, [b"g"], opened)
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        zsock.close()
        raise
    finally:
        for fd in opened:
            os.close(fd)
    return pid


def serve(sock: socket.socket) -> None:
    # No cyclic GC here or in the slice inits: a collection would touch (and so copy-on-write
    # fault) every object page shared with the children. This process allocates little.
    gc.disable()
    gc.freeze()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda _s, _f: None)
    host_netns = os.open("/proc/self/ns/net", os.O_RDONLY)
    spare: list[int] = []
    refill_spare_netns(spare, host_netns)
    zygotes = Zygotes()
    os.set_inheritable(sock.fileno(), False)  # no slice may hold the agent's channel
    # Early exit reports: the fd each running init reports its step's end on (a pipe, or a
    # released zygote's socket), by fd and by init pid. An init reported that way is in
    # `reported` until the server reaps it, silently.
    reports: dict[int, tuple[int, socket.socket | None]] = {}
    report_of: dict[int, int] = {}
    reported: set[int] = set()

    def server_fds() -> list[int]:
        """The server's own fds, which every slice init closes first."""
        return [sock.fileno(), wake_r, wake_w, host_netns, *reports, *zygotes.fds()]

    def inherited() -> list[int]:
        """What a new zygote closes (it closes the parked ones' fds itself)."""
        return [sock.fileno(), wake_r, wake_w, host_netns, *reports, *spare]

    def send(msg: dict[str, Any]) -> None:
        sock.send(marshal.dumps(msg))

    def forget_report(fd: int) -> int:
        pid, owner = reports.pop(fd)
        del report_of[pid]
        if owner is not None:
            owner.close()
        else:
            os.close(fd)
        return pid

    def read_report(fd: int) -> None:
        try:
            data = os.read(fd, 16)
        except OSError:
            data = b""
        if len(data) == 4 and reports[fd][0] in zygotes.unlearning:
            pid = reports[fd][0]
            send({"op": "exit", "pid": pid, "status": struct.unpack("=i", data)[0]})
            reported.add(pid)
            zygotes.learn(pid)
            # The init waits for this (or EOF) to exit.
            try:  # noqa: SIM105 - keep the fork server's imports minimal
                os.write(fd, b"k")
            except OSError:
                pass
            forget_report(fd)
            return
        pid = forget_report(fd)
        if len(data) == 4:
            send({"op": "exit", "pid": pid, "status": struct.unpack("=i", data)[0]})
            reported.add(pid)
        # else EOF (the init died without reporting): its reap reports it.

    def reap() -> bool:
        """Report every exited slice init; True when at least one was reported."""
        reported_now = False
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return reported_now
            if pid == 0:
                return reported_now
            if pid in zygotes.pids:
                zygotes.dead(pid)  # a parked zygote died (killed, or one that failed)
                continue
            if pid in reported:
                reported.discard(pid)  # its step's end went out before the init's exit
                continue
            if pid in report_of:
                forget_report(report_of[pid])  # exited before we read (or without) a report
            send({"op": "exit", "pid": pid, "status": status})
            reported_now = True

    while True:
        # Zygotes are made only when nothing happened for ZYGOTE_IDLE s: making one costs the
        # server a clone and the machine a process set-up, which would otherwise compete with
        # the slice just launched and delay its exit report.
        timeout = ZYGOTE_IDLE if zygotes.low() else None
        try:
            ready = select.select([sock.fileno(), wake_r, *reports], [], [], timeout)[0]
        except InterruptedError:
            continue
        if not ready:
            zygotes.refill(inherited(), most=1)
            # Our own pages are copy-on-write with the new zygote's: take them back now rather
            # than one fault at a time while releasing the next zygote.
            continue
        for fd in ready:
            if fd in reports:
                read_report(fd)
        if wake_r in ready:
            try:
                while os.read(wake_r, 256):
                    pass
            except BlockingIOError:
                pass
            reap()
        if sock.fileno() in ready:
            data = sock.recv(1 << 22)
            if not data:
                # The agent went away. Slices keep running (their inits are reparented); the
                # restarted agent re-attaches through its state dir and a new fork server.
                zygotes.clear()
                return
            req = marshal.loads(data)
            if req.get("op") == "zygotes":
                zygotes.configure(req, inherited())
                continue
            try:
                zyg = zygotes.take(req.get("net", "host")) if zygotes.eligible(req) else None
                if zyg is not None:
                    if zygotes.should_learn(zyg[0]):
                        req["_learn"] = True
                        zygotes.unlearning.add(zyg[0])
                    zygotes.unlearnt.discard(zyg[0])
                    try:
                        maps = zygotes.map_fds.get(zyg[0])
                        try:
                            pid = launch_zygote(req, zyg, zygotes.cgroup, maps)
                        finally:
                            zygotes.release_maps(zyg[0])
                        report_fd, owner = zyg[1].fileno(), zyg[1]
                    except OSError:
                        zygotes.failed(zyg)  # killed: its exit is not the agent's business
                        # e.g. a dead zygote, or a memory limit below what it uses: clone one
                        pid, report_fd = launch(req, host_netns, spare, tuple(server_fds()))
                        owner = None
                    except BaseException:
                        zygotes.failed(zyg)
                        raise
                else:
                    pid, report_fd = launch(req, host_netns, spare, tuple(server_fds()))
                    owner = None
            except OSError as e:
                send({"id": req["id"], "error": str(e), "errno": e.errno or 0})
            except (KeyError, ValueError, TypeError) as e:
                send({"id": req["id"], "error": f"bad request: {e!r}", "errno": 0})
            else:
                reports[report_fd] = (pid, owner)
                report_of[pid] = report_fd
                send({"id": req["id"], "pid": pid, "cgroup": req.get("_cgroup_name")})
            reap()
            refill_spare_netns(spare, host_netns)


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    sock.setblocking(True)
    serve(sock)


if __name__ == "__main__":
    main()
