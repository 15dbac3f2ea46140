"""
sandbox.py: runs a command over a few files in an isolated, throw-away directory, with limits,
and returns its status and output. It knows nothing of languages, compilers or tests (reward.py
does); it only isolates. The README's "The sandbox" says what it covers and what it does not.

    import sandbox
    sandbox.check()   # "bwrap"; raises sandbox.Unavailable (saying what to install) where it cannot isolate
    sandbox.run(["/usr/bin/python3", "{prog}/main.py"], files=[("/tmp/x.py", "main.py")], stdin=b"1\\n",
                runtime=("/usr/lib/python3.11",))
    # Result(status='ok', stdout=b'...', stderr=b'', exit_code=0)

    python sandbox.py     # which isolation this machine gives

Each command runs under bubblewrap (`bwrap`) in fresh PID, network, IPC, UTS and mount
namespaces. Its root holds its runtime and nothing else of the system (mounts.py), a copy of its
files in /prog, small tmpfs of its own (/work, its working directory and $HOME; /tmp; /dev/shm)
and a read-only /dev of devices whose reads never wait. A writable directory it is given (run()'s
dirs) is a sized tmpfs too, filled before the command starts and copied back, bounded, once it
ended. The command is PID 1 of its namespace, so what it leaves behind dies with it; a seccomp
filter (seccomp.py) refuses it nested user namespaces and the kernel's keyrings; no variable of
the trainer's environment reaches it; its limits are rlimits (`prlimit`) and, where this process
may make them, cgroups for the whole sandbox (cgroups.py). Its time is `timeout` seconds of CPU
time (RLIMIT_CPU per process, and the cgroup's count for all of its processes, read every
spawn.CPU_POLL seconds) and a wall clock of WALL_FACTOR x timeout + WALL_SLACK for a program that
sleeps.

The sandbox's PID 1 waits at bubblewrap's --block-fd until this process has moved it into its
cgroups and filled its writable directories; bubblewrap's monitor, which reports the command's
exit, stays out of those cgroups, so nothing the command does there can kill it. bubblewrap's
own failures (spawn.py tells them from the command's), a cgroup that cannot be made and a
process that cannot be started are "infra_error": they say nothing of the program. An OOM kill
in the sandbox's memory cgroup is the program's "memory_limit" whatever else failed.

A trainer running as root runs every command as a uid of the sandbox's own (no user has it):
bubblewrap runs as root, so it can mount a toolchain under /root (rustup's) read-only, and
`setpriv` then switches to that uid with no capabilities and no_new_privs. A trainer not running
as root runs bubblewrap in a user namespace of its own, and commands as itself.

Fork bombs. The pids cgroup bounds the sandbox's own tasks, and nothing else's. Without it,
RLIMIT_NPROC is the one bound, and the kernel ignores it for root (it checks the real uid): one
more reason root hands commands to another user. As that uid is the sandbox's own, and not
given to a new sandbox while anything of its last one remains (_take_uid), the limit counts
exactly the sandbox's processes. A trainer not running as root runs bubblewrap in a fresh user
namespace, and Linux >= 5.14 counts per user namespace, so again concurrent sandboxes do not
starve each other and the user's own processes do not count (older kernels count all of the
user's processes: there the limit is left unset). What a bomb makes meanwhile dies with its PID
namespace.

Without bubblewrap (not installed, or user namespaces blocked, as in a Docker container run as
root) check() and run() raise Unavailable: model-written code is never run unisolated unless the
user opts in with sandbox.allow_reduced_isolation() or OORL_ALLOW_REDUCED_ISOLATION=1. Reduced
isolation is rlimits, a fresh session and a throw-away directory, the cgroups where available,
and, for a trainer running as root, a uid of the sandbox's own (never root, never a real
user's), so that RLIMIT_NPROC counts exactly its processes and kill(-1) from that uid ends all of
them, setsid'd children included. It has no mount namespace, so no minimal mount set (every
program on the machine can be run: delegation is open) and no seccomp filter; it does not stop
the network, reading what every user may read, or writes to world-writable directories such as
/tmp; run as a normal user, children that leave the process group (setsid) survive unless a
cgroup holds them.
"""
import dataclasses
import functools
import math
import os
import re
import select
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
import warnings

import cgroups
import mounts
import seccomp
import spawn

MiB = 1 << 20
OUTPUT_LIMIT = 1 * MiB     # bytes of stdout (and of stderr) before "output_limit"
FILE_SIZE = 16 * MiB       # the largest file a command may write, unless run() is told otherwise
TMPFS_SIZE = 64 * MiB      # the size of the sandbox's /work and of its /tmp
SHM_SIZE = 16 * MiB        # the size of its /dev/shm (POSIX shared memory, semaphores)
DIRS_SIZE = 256 * MiB      # the size of each writable directory run() is given (a compiler's output)
OPEN_FILES = 256           # the JVM opens its modules file, jars and a few sockets
PROCESSES = 32             # tasks (threads count) per sandbox by default: room for the JVM's threads
WALL_FACTOR, WALL_SLACK = 3, 2.0  # wall clock = 3 x the CPU time + 2 s: room for a busy machine
PROBE_TIMEOUT = 10.0       # seconds for the one-time check that bubblewrap works here
SANDBOX_UID_BASE = 2_000_000_000  # a root trainer runs each sandbox as a uid of its own, from here
BWRAP = "bwrap"            # the bubblewrap executable, looked up on SEARCH_PATH
USE_CGROUP = True          # False: never make cgroups (the fallback bounds on memory and CPU time apply)
ALLOW_REDUCED_ISOLATION = "OORL_ALLOW_REDUCED_ISOLATION"  # =1: the opt-in, as an environment variable
# System directories first: a shim in $HOME (pyenv, nvm) cannot run in the sandbox.
SEARCH_PATH = os.pathsep.join(["/usr/local/bin", "/usr/bin", "/bin", os.environ.get("PATH", "")])
# The number of read(), by which _wait_until_blocked sees a sandbox wait at bubblewrap's --block-fd.
READ_SYSCALL = {"x86_64": 0, "aarch64": 63}
DEVICES = ("null", "zero", "full", "random", "urandom")  # the sandbox's /dev (with /dev/shm and /dev/fd)


class Unavailable(RuntimeError):
    """No isolation here that this module will run model-written code in."""


@dataclasses.dataclass(frozen=True)
class Result:
    status: str         # "ok" (exit 0), "runtime_error" (any other exit), "timeout" (CPU time or wall
                        # clock), "output_limit" (stdout or stderr, or the files to copy back, over
                        # their bound), "memory_limit" (the sandbox's memory cgroup was full),
                        # "infra_error" (the sandbox itself failed: stderr says how; nothing ran)
    stdout: bytes       # at most OUTPUT_LIMIT bytes
    stderr: bytes
    exit_code: int = 0  # the command's exit code (128 + n: killed by signal n, so also when the whole
                        # sandbox ran out of CPU time); None when the sandbox was killed by the wall clock
                        # or the output limit, or failed (infra_error)


_lock = threading.Lock()
MODE = None              # "bwrap" or "reduced", decided by check() at first use
_reduced_allowed = False
_uids = set()            # a root trainer's sandboxes running now: their uids
_remains = {}            # uid -> pidfd of a sandbox's PID 1 that another process has yet to reap


def allow_reduced_isolation():
    """Opts in to running model-written code with reduced isolation (see the module docstring)
    where bubblewrap cannot run. The environment variable OORL_ALLOW_REDUCED_ISOLATION=1 does the
    same."""
    global _reduced_allowed
    _reduced_allowed = True


def check():
    """"bwrap" where bubblewrap works here (probed once, as run() will use it), else "reduced" if
    the user opted in (one warning), else raises Unavailable saying what to do. Takes well under
    a second where bubblewrap works, at most PROBE_TIMEOUT seconds. Warns once, by name, of a
    mechanism this machine lacks (the seccomp filter, the whole-sandbox CPU budget)."""
    global MODE
    with _lock:
        if MODE is None:
            if shutil.which("prlimit", path=SEARCH_PATH) is None or shutil.which("setpriv", path=SEARCH_PATH) is None:
                raise Unavailable("sandbox.py needs `prlimit` and `setpriv` (apt-get install util-linux)")
            problem = _bwrap_problem(BWRAP)
            if problem is None:
                MODE = "bwrap"
            elif not (_reduced_allowed or os.environ.get(ALLOW_REDUCED_ISOLATION) == "1"):
                raise Unavailable(
                    f"sandbox.py will not run model-written code here: {problem}. Install bubblewrap "
                    "(apt-get install bubblewrap) and let it create namespaces (run as root it needs "
                    "CAP_SYS_ADMIN, which a Docker container has with --cap-add SYS_ADMIN; run as another "
                    "user it needs unprivileged user namespaces: sysctl kernel.unprivileged_userns_clone=1, "
                    "or kernel.apparmor_restrict_unprivileged_userns=0), or accept REDUCED isolation (no "
                    f"namespaces) explicitly: {ALLOW_REDUCED_ISOLATION}=1 in the environment, or "
                    "sandbox.allow_reduced_isolation() in Python.")
            else:
                MODE = "reduced"
                warnings.warn(f"sandbox.py: {problem}. Model-written code runs with REDUCED isolation, as "
                              f"opted in: rlimits, a fresh session and directory, {_who()}; NO namespaces, so "
                              "it can reach the network, read what every user may read and write to /tmp, and "
                              "no minimal mount set or seccomp filter, so it can run any program on the machine "
                              "(another language's interpreter included).", RuntimeWarning, stacklevel=3)
            missing = _missing_mechanisms(MODE)
            if missing:
                warnings.warn(f"sandbox.py: not available here: {'; '.join(missing)}.", RuntimeWarning, stacklevel=3)
        return MODE


def _missing_mechanisms(mode):
    """What this machine does not give, by name (each with what stays open)."""
    missing = []
    if mode == "bwrap" and seccomp.filter_program() is None:
        missing.append(f"the seccomp filter (none for a {os.uname().machine} machine): sandboxed programs "
                       "can make nested user namespaces")
    if not (USE_CGROUP and cgroups.cpu_parent()):
        missing.append("the whole-sandbox CPU budget (no cgroup with CPU accounting here): each process has "
                       "its own CPU time limit, so a program's children add to it")
    return missing


def _who():
    return "a uid of their own (not root)" if os.geteuid() == 0 else "your user"


@functools.lru_cache(maxsize=None)
def _bwrap_problem(bwrap_name):
    """None if bubblewrap runs a command here, as run() will run it; else why not."""
    bwrap = shutil.which(bwrap_name, path=SEARCH_PATH)
    if bwrap is None:
        return "bubblewrap is not installed"
    uid = SANDBOX_UID_BASE + (os.getpid() % 1_000_000) * 1000 + 999 if os.geteuid() == 0 else None
    true_path = shutil.which("true", path=SEARCH_PATH)
    seccomp_fd = seccomp.filter_fd()
    with open(true_path, "rb") as true:
        argv = _bwrap_argv(bwrap, [(true.fileno(), "/prog/true")], [], uid, (true_path,), seccomp_fd) + ["/prog/true"]
        passed = [true.fileno()] + ([seccomp_fd] if seccomp_fd is not None else [])
        try:
            status, code, _, err = spawn.run_watched(argv, b"", PROBE_TIMEOUT, passed, _environment({}), bwrap,
                                                     OUTPUT_LIMIT, "--json-status-fd" in _bwrap_options(bwrap))
        finally:
            if seccomp_fd is not None:
                os.close(seccomp_fd)
    if status or code:
        return f"bubblewrap cannot create its namespaces here: {first_lines(err.decode(), 3) or status}"
    return None


# ----------------------------------------------------------------------------- run

def run(argv, files=(), stdin=b"", timeout=2.0, memory=256 * MiB, processes=PROCESSES, file_size=FILE_SIZE,
        env=(), dirs=(), read_only=(), runtime=None, dirs_size=DIRS_SIZE, copy_limit=FILE_SIZE):
    """Runs argv in a fresh sandbox and returns a Result. Raises Unavailable (see check).

    runtime: the host paths (executables, files, directories) that are the command's system:
    with argv[0] and their shared libraries, the only ones mounted (read-only, at their own
    paths). Required where bubblewrap runs (a sandbox holds one language's runtime, by
    construction); reduced isolation cannot restrict them. argv[0] is an absolute path. In argv
    and in env's values, "{prog}" stands for the directory that holds `files` ([(host path,
    name)], copied read-only) and "{name}" for each of `dirs` ([(name, host directory)],
    writable: a compiler's output) and of `read_only` (the same, read-only). Each of `dirs` is a
    tmpfs of the sandbox, `dirs_size` bytes at most (and in its memory), that holds a copy of
    the host directory's files; when the command ends, the regular files it holds are copied
    back, `copy_limit` bytes at most in all, so that a command reaches the host disk through
    that copy alone (a file that would pass the bound is left out, and the status is then
    "output_limit"). env: [(name, value)] added to
    a scrubbed environment. timeout: seconds of CPU time, all of the sandbox's processes
    together where a cgroup counts them (the wall clock allows WALL_FACTOR times more); memory:
    the whole sandbox's memory where a cgroup holds it, and each process's address space;
    processes: the most tasks (threads count) at once."""
    mode = check()
    if mode == "bwrap" and runtime is None:
        raise TypeError("sandbox.run() needs runtime=(host paths): the interpreter or compiler files the "
                        "command may use; nothing else of the system is mounted")
    try:
        cgroup = cgroups.make(memory, processes) if USE_CGROUP else {}
    except OSError as error:
        return Result("infra_error", b"", f"sandbox.py: cannot make the sandbox's cgroup: {error}".encode(), None)
    uid = _take_uid() if os.geteuid() == 0 else None
    try:
        # the pids cgroup counts the sandbox's tasks alone; RLIMIT_NPROC counts its uid's (see "Fork bombs")
        nproc = "pids" not in cgroup and (uid is not None or (mode == "bwrap" and _nproc_counts_per_namespace()))
        limits = _limits(memory, timeout, file_size, processes if nproc else None)
        cpu = (timeout, functools.partial(cgroups.cpu_seconds, cgroup["cpu"])) if "cpu" in cgroup else None
        if mode == "bwrap":
            status, code, out, err = _run_bwrap(argv, files, stdin, timeout, limits, env, dirs, read_only, cgroup,
                                                uid, cpu, runtime, dirs_size, copy_limit)
        else:
            status, code, out, err = _run_reduced(argv, files, stdin, timeout, limits, env, dirs, read_only, cgroup,
                                                  uid, cpu)
        out_of_memory = "memory" in cgroup and cgroups.oom_killed(cgroup["memory"])
    finally:
        cgroups.remove(cgroup)
        if uid is not None:
            with _lock:
                _uids.discard(uid)
    if status == "cpu_time":  # the whole sandbox's CPU time ran out (an exit code: not the wall clock)
        return Result("timeout", out, err, code)
    if status == "infra_error" and out_of_memory:  # the OOM killer acted on what the command did
        return Result("memory_limit", out, err, None)
    killed_by_us = status is not None
    if status is None:  # it ended by itself; bubblewrap says "killed by signal n" as 128 + n
        # Out of CPU time: SIGXCPU at the soft limit, or SIGKILL at the hard one (the sandbox's
        # PID 1 ignores SIGXCPU; a SIGKILL it sent itself is counted here too).
        killed_by = -code if code < 0 else code - 128 if code > 128 else None
        status = ("ok" if code == 0 else "memory_limit" if out_of_memory
                  else "timeout" if killed_by in (signal.SIGXCPU, signal.SIGKILL) else "runtime_error")
    return Result(status, out, err, None if killed_by_us else code)


def _run_bwrap(argv, files, stdin, timeout, limits, env, dirs, read_only, cgroup, uid, cpu, runtime, dirs_size,
               copy_limit):
    paths = {"{prog}": "/prog", **{"{%s}" % name: f"/{name}" for name, _ in [*dirs, *read_only]}}
    binds = [("--ro-bind", host, f"/{name}") for name, host in read_only]
    if not argv[0].startswith("{"):  # a host program (not one in /prog): part of the runtime
        runtime = (*runtime, argv[0])
    fds = [os.open(host, os.O_RDONLY | os.O_CLOEXEC) for host, _ in files]
    seccomp_fd = seccomp.filter_fd()
    passed = fds + ([seccomp_fd] if seccomp_fd is not None else [])
    sandbox = {"dirs": []}  # its PID 1 (a pidfd) and its writable directories (fds), once it exists

    def start(pid, block_fd):  # the sandbox is made, its command not started yet
        sandbox["pid"] = os.pidfd_open(pid)
        cgroups.join(cgroup, pid)
        if dirs:
            _wait_until_blocked(pid, block_fd)
            for name, host in dirs:
                sandbox["dirs"].append(os.open(f"/proc/{pid}/root/{name}", os.O_RDONLY | os.O_DIRECTORY))
                _copy_in(host, sandbox["dirs"][-1], uid)

    try:
        bwrap = shutil.which(BWRAP, path=SEARCH_PATH)
        tmpfs = [(f"/{name}", dirs_size) for name, _ in dirs]
        full = (_bwrap_argv(bwrap, list(zip(fds, (f"/prog/{name}" for _, name in files))), binds, uid, runtime,
                            seccomp_fd, tmpfs)
                + limits + list(fill(argv, paths)))
        result = spawn.run_watched(full, stdin, timeout * WALL_FACTOR + WALL_SLACK, passed,
                                   _environment(dict(_fill_pairs(env, paths))), bwrap, OUTPUT_LIMIT,
                                   "--json-status-fd" in _bwrap_options(bwrap), cpu=cpu, start=start)
        if "pid" in sandbox and not _reap(sandbox.pop("pid"), uid) and dirs:
            return "infra_error", None, b"", b"sandbox.py: the sandbox's PID 1 outlived it\n"
        budget, left_out = copy_limit, []
        for (_, host), directory in zip(dirs, sandbox["dirs"]):
            budget = _copy_out(directory, host, budget, left_out)
        if left_out:  # more than the command may hand back: its own doing, as an output flood is
            status, code, out, err = result
            return "output_limit", code, out, err + (
                f"sandbox.py: not copied back (the command may hand back {copy_limit / MiB:.1f} MiB): "
                + ", ".join(left_out[:5]) + "\n").encode()
        return result
    finally:
        for fd in passed + sandbox["dirs"]:
            os.close(fd)
        if "pid" in sandbox:  # (an error on the way)
            _reap(sandbox["pid"], uid)


def _run_reduced(argv, files, stdin, timeout, limits, env, dirs, read_only, cgroup, uid, cpu):
    """No namespaces: a fresh directory on the host, removed after. As root the command runs as
    a uid of its own, which copies of `dirs` (and of `read_only`) inside that directory belong to."""
    work = tempfile.mkdtemp(prefix="oorl-run-")
    try:
        for host, name in files:
            shutil.copy(host, os.path.join(work, name))
        paths = {"{prog}": work}
        for name, host in [*dirs, *read_only]:
            paths["{%s}" % name] = host if uid is None else shutil.copytree(host, os.path.join(work, name))
        if uid is not None:
            _give(work, uid)
        environment = {**_environment(dict(_fill_pairs(env, paths))), "HOME": work, "TMPDIR": work}
        full = cgroups.join_words(cgroup) + _as_user(uid) + limits + list(fill(argv, paths))
        try:
            return spawn.run_watched(full, stdin, timeout * WALL_FACTOR + WALL_SLACK, [], environment, None,
                                     OUTPUT_LIMIT, cwd=work, cpu=cpu)
        finally:
            if uid is not None:
                _kill_uid(uid)  # everything it started, setsid'd children too
                for name, host in dirs:  # what the command wrote, back to the caller's directories
                    shutil.copytree(os.path.join(work, name), host, dirs_exist_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _take_uid():
    """A uid that no user and no other sandbox has, nor anything left of one (see _reap): this
    process's sandboxes are told apart by a slot, other processes' by their pid (two trainers
    clash only if their pids agree modulo a million)."""
    with _lock:
        for left, pidfd in list(_remains.items()):
            try:
                signal.pidfd_send_signal(pidfd, 0)
            except ProcessLookupError:  # reaped at last: its uid is free
                os.close(_remains.pop(left))
        taken = {uid % 1000 for uid in (*_uids, *_remains)}
        slot = min(set(range(999)) - taken)  # (999: check()'s probe)
        uid = SANDBOX_UID_BASE + (os.getpid() % 1_000_000) * 1000 + slot
        _uids.add(uid)
    return uid


def _reap(pidfd, uid):
    """Ends the sandbox's PID 1 (the pidfd) if anything is left of it once bubblewrap is gone,
    and waits (PROBE_TIMEOUT seconds at most) for its end, which empties its pid namespace.
    bubblewrap reaps it, but if bubblewrap itself died first, it goes to the nearest subreaper,
    which may be this process (a trainer that is PID 1 of a container, or a subreaper): then it
    is reaped here, as a zombie would otherwise stay for good. Elsewhere (another reaper has
    it) its uid is not given to a new sandbox until it is gone (_take_uid). Returns whether
    it ended (nothing of the sandbox runs any more)."""
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:  # gone: bubblewrap reaped it
        os.close(pidfd)
        return True
    ended = bool(select.select([pidfd], [], [], PROBE_TIMEOUT)[0])  # (a pidfd reads once its process ended)
    try:
        if ended and os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG):
            os.close(pidfd)
            return True
    except ChildProcessError:  # not ours to reap
        pass
    if uid is not None:
        with _lock:
            _remains[uid] = pidfd
    else:
        os.close(pidfd)
    return ended


def _wait_until_blocked(pid, block_fd):
    """Waits (PROBE_TIMEOUT seconds at most) until the sandbox's PID 1 reads bubblewrap's
    --block-fd: its mounts are all made, and its command has not started."""
    read = READ_SYSCALL.get(os.uname().machine)
    if read is None:
        raise OSError(f"no read system call number known for a {os.uname().machine} machine")
    blocked, deadline, pause = f"{read} {hex(block_fd)} ", time.monotonic() + PROBE_TIMEOUT, 0.0005
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/syscall") as file:
            if file.read().startswith(blocked):
                return
        time.sleep(pause)
        pause = min(2 * pause, 0.008)  # (first reads soon, then fewer: a busy machine is slower)
    raise OSError("the sandbox was not ready in time")


def _copy_in(host, directory, uid):
    """Copies the files under the host directory into the sandbox's writable directory (the fd
    `directory`, before the command starts), as the command's own files."""
    target = f"/proc/self/fd/{directory}"
    shutil.copytree(host, target, symlinks=True, dirs_exist_ok=True)
    if uid is not None:
        for root, subdirectories, names in os.walk(target):
            os.chown(root, uid, uid)
            for name in subdirectories + names:
                os.chown(os.path.join(root, name), uid, uid, follow_symlinks=False)


def _copy_out(directory, host, budget, left_out):
    """Copies the regular files of the sandbox's writable directory (the fd `directory`, once
    the command ended: nothing can change them now) back to the host directory, `budget` bytes
    at most: a file that would pass it is left out (its path and why appended to left_out), as
    is one the host cannot take (a directory where the host has a file); links, pipes and the
    like are skipped. A file the host has as it was copied in (its size and time, as copytree
    keeps them) is not copied again. Returns what is left of the budget."""
    for root, _, names, root_fd in os.fwalk(".", dir_fd=directory):
        for name in sorted(names):
            path, info = os.path.join(host, root, name), os.stat(name, dir_fd=root_fd, follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode):
                continue
            try:
                kept = os.stat(path, follow_symlinks=False)
                if (kept.st_size, kept.st_mtime_ns) == (info.st_size, info.st_mtime_ns):
                    continue
            except FileNotFoundError:
                pass
            except OSError as error:
                left_out.append(f"{os.path.normpath(os.path.join(root, name))} ({error.strerror})")
                continue
            if info.st_size > budget:
                left_out.append(f"{os.path.normpath(os.path.join(root, name))} ({info.st_size / MiB:.1f} MiB)")
                continue
            budget -= info.st_size
            source = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=root_fd)
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as target:
                    os.chmod(target.fileno(), info.st_mode & 0o755)
                    copied = 0
                    while copied < info.st_size and (sent := os.sendfile(target.fileno(), source, copied,
                                                                         info.st_size - copied)):
                        copied += sent
            except OSError as error:
                left_out.append(f"{os.path.normpath(os.path.join(root, name))} ({error.strerror})")
            finally:
                os.close(source)
    return budget


def _kill_uid(uid):
    """Kills every process of `uid`: kill(-1) sent by that uid reaches exactly them. Repeated
    until none is left (a fork bomb may be forking meanwhile)."""
    for _ in range(50):
        subprocess.run(_as_user(uid) + ["/bin/sh", "-c", "kill -KILL -1"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, env=_environment({}))
        if not any(_owner(pid) == uid for pid in filter(str.isdigit, os.listdir("/proc"))):
            return
        time.sleep(0.02)


def _owner(pid):
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def _give(path, uid):
    """Makes a writable directory the command's: chown, recursively the first time."""
    if os.stat(path).st_uid == uid:
        return
    os.chown(path, uid, uid)
    for root, directories, names in os.walk(path):
        for name in directories + names:
            os.chown(os.path.join(root, name), uid, uid, follow_symlinks=False)


def _as_user(uid):
    """The words that start the rest of a command line as `uid` (none: as ourselves)."""
    if uid is None:
        return []
    return [shutil.which("setpriv", path=SEARCH_PATH), f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
            "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--"]


def _environment(extra):
    """The whole environment a command gets: nothing of the trainer's."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/work", "TMPDIR": "/tmp", "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8", **extra}


def _nproc_counts_per_namespace():
    kernel = tuple(int(x) for x in re.match(r"(\d+)\.(\d+)", os.uname().release).groups())
    return kernel >= (5, 14)  # see "Fork bombs" above


def _limits(memory, timeout, file_size, processes):
    cpu = math.ceil(timeout)  # RLIMIT_CPU counts whole seconds: SIGXCPU at the soft limit, SIGKILL at the hard
    limits = [f"--as={memory}", f"--cpu={cpu}:{cpu + 1}", f"--fsize={file_size}", f"--nofile={OPEN_FILES}",
              "--core=0"]
    if processes is not None:
        limits.append(f"--nproc={processes}")
    return [shutil.which("prlimit", path=SEARCH_PATH), *limits, "--"]


def _bwrap_argv(bwrap, files, binds, uid, runtime, seccomp_fd, writable=()):
    """bubblewrap's command line, up to the limits and the command: files [(fd, path)] are
    copied into the sandbox, binds: bubblewrap's words that mount directories, runtime: the host
    paths that make up the system it sees (mounts.py), seccomp_fd: the fd of the filter, or
    None, writable: [(path, size)] of further tmpfs (run()'s dirs). uid: where a root trainer
    runs it, bubblewrap runs as root without a user namespace (so it can mount what only root
    reaches, a toolchain under /root) and hands the command to `uid`; anyone else runs it in a
    user namespace of their own."""
    namespaces = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    if uid is None:
        namespaces += ["--unshare-user", "--cap-drop", "ALL"]
        if "--disable-userns" in _bwrap_options(bwrap):  # bubblewrap >= 0.8: no nested user namespace either
            namespaces.append("--disable-userns")
    else:  # just what setpriv needs to switch users, and gives up with them
        namespaces += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
    argv = [bwrap, *namespaces, "--as-pid-1", "--die-with-parent", "--new-session", "--hostname", "sandbox"]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    # the tools that start the command inside (they run only what the sandbox holds)
    machinery = [shutil.which(tool, path=SEARCH_PATH) for tool in ("prlimit", "setpriv")[:1 if uid is None else 2]]
    argv += mounts.system_mounts({*runtime, *machinery}, mounts.loader(shutil.which("true", path=SEARCH_PATH)))
    # A /dev of its own holding the devices that never block (bubblewrap's --dev would add a
    # terminal and a pseudo-terminal multiplexer, whose reads wait for ever): a compiler told to
    # read one (`#include "/dev/ptmx"`) finds nothing to wait on.
    argv += ["--proc", "/proc", "--tmpfs", "/dev"]
    for device in DEVICES:
        argv += ["--dev-bind", f"/dev/{device}", f"/dev/{device}"]
    for link, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        argv += ["--symlink", target, f"/dev/{link}"]
    argv += ["--dir", "/prog"]
    sized = "--size" in _bwrap_options(bwrap)
    for directory, size in (("/tmp", TMPFS_SIZE), ("/work", TMPFS_SIZE), ("/dev/shm", SHM_SIZE), *writable):
        argv += (["--size", str(size)] if sized else []) + ["--tmpfs", directory]
        if uid is not None:
            argv += ["--chmod", "1777", directory]  # (made by root: writable by the command's uid)
    for fd, path in files:
        argv += ["--perms", "0555", "--file", str(fd), path]
    for words in binds:
        argv += words
    # /dev is a tmpfs as large as the host's memory: read-only, it holds nothing but device nodes
    argv += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/work", "--"]
    return argv + _as_user(uid)


@functools.lru_cache(maxsize=None)
def _bwrap_options(bwrap):
    """The options this bubblewrap knows (older ones lack --size, --disable-userns, --json-status-fd)."""
    return set(re.findall(r"--[a-z-]+", subprocess.run([bwrap, "--help"], capture_output=True, text=True).stdout))


# ----------------------------------------------------------------------------- placeholders, messages

def fill(words, mapping):
    """words with every placeholder of mapping ("{prog}": "/prog", ...) replaced (reward.py's too)."""
    for placeholder, value in mapping.items():
        words = tuple(word.replace(placeholder, value) for word in words)
    return words


def _fill_pairs(pairs, mapping):
    return [(name, fill((value,), mapping)[0]) for name, value in pairs]


def first_lines(text, n):
    """The first n lines of text, stripped: what a message keeps of a long output."""
    return "\n".join(text.strip().splitlines()[:n])


if __name__ == "__main__":
    mode = check()
    memory, cpu, pids = ((cgroups.memory_parent(), cgroups.cpu_parent(), cgroups.pids_parent()) if USE_CGROUP
                         else (None, None, None))
    bwrap = mode == "bwrap"
    print(f"sandbox: {mode}, commands run as {_who()}")
    print("memory cgroup per sandbox: " + (f"v{memory[0]}, under {memory[1]}" if memory else
                                            "none (bounded by the address-space limit x the process cap)"))
    print("CPU budget for the whole sandbox: " + (f"v{cpu[0]} cgroup, under {cpu[1]}" if cpu else
                                                  "UNAVAILABLE (no cgroup counts CPU time: RLIMIT_CPU per process)"))
    print("process cap for the whole sandbox: " + (f"v{pids[0]} pids cgroup, under {pids[1]}" if pids else
                                                   "RLIMIT_NPROC (counts its uid's processes)"))
    print("bubblewrap's monitor outside the sandbox's cgroups (its PID 1 joins them before the command starts): "
          + ("active" if bwrap else "no monitor (reduced isolation)"))
    print("minimal mount set (one runtime per sandbox): " + ("active" if bwrap else
                                                             "UNAVAILABLE (reduced isolation has no mount namespace)"))
    print(f"/dev: {', '.join(DEVICES)}, shm, fd (no terminal)" if bwrap else "/dev: the host's (reduced isolation)")
    print("writable directories (dirs): " + ("a tmpfs of the sandbox each, its regular files copied back, bounded"
                                             if bwrap and os.uname().machine in READ_SYSCALL else
                                             "the host's, copied (reduced isolation)" if not bwrap else
                                             f"UNAVAILABLE (no read system call number for {os.uname().machine})"))
    print("seccomp filter (no nested user namespaces, no kernel keyrings): " + (
        f"active ({os.uname().machine})" if bwrap and seccomp.filter_program() else
        "UNAVAILABLE (reduced isolation)" if not bwrap else f"UNAVAILABLE (no filter for {os.uname().machine})"))
