"""
sandbox.py: runs a command over a few files in an isolated, throw-away directory, with limits,
and returns its status and output. It knows nothing of languages, compilers or tests (reward.py
does); it only isolates.

    import sandbox
    sandbox.check()   # "bwrap"; raises sandbox.Unavailable (saying what to install) where it cannot isolate
    sandbox.run(["/usr/bin/python3", "{prog}/main.py"], files=[("/tmp/x.py", "main.py")], stdin=b"1\\n",
                runtime=("/usr/lib/python3.11",))
    # Result(status='ok', stdout=b'...', stderr=b'', exit_code=0)

    python sandbox.py     # which isolation this machine gives

An RL step runs hundreds of programs written by a model that is still learning: some loop
forever, some allocate without end, a few would do worse if they could. The reward must also be
earned by translating: a program that hands the source it was shown to another language's
interpreter or compiler "passes" and teaches nothing. Each command runs in a sandbox built from
trusted parts, layer by layer:

  bubblewrap (`bwrap`, the sandbox under Flatpak): new PID, network, IPC, UTS and mount
      namespaces (and a user namespace, for a trainer not running as root). The command sees a
      fresh root that holds its runtime and nothing else of the system (below), a copy of its
      files in /prog and small private tmpfs, /work (its working directory and $HOME), /tmp and
      /dev/shm, which vanish with it, and a read-only /dev of its own that holds null, zero,
      full, random and urandom: no terminal, nothing whose read waits for ever. A writable
      directory it is given (run()'s dirs: a compiler's output) is a sized tmpfs too, whose
      files are copied back to the host, bounded in bytes, once it ended: nothing it writes
      reaches the disk but that copy. It sees no other process (so not the trainer's
      /proc/PID/environ) and no network. It is PID 1 of its namespace, so when it exits the
      kernel kills everything it left behind, and if its parent (bubblewrap's monitor) is gone
      and it comes to this process (a subreaper, or PID 1 of a container), it is reaped here.
  one runtime per sandbox: run(runtime=...) names the host paths the command may use (its
      interpreter, or its compiler's programs and directories: reward.py knows which), and they,
      argv[0], the shared libraries their ELF files load (found with the dynamic loader's --list,
      once per process), the symbolic links on the way to them and the loader's cache are the
      only system files mounted, read-only at their own paths (files gathered as hard links in
      a private directory tree: a few mounts rather than dozens). The mechanism is a minimal mount
      set rather than an exec allow-list (Landlock, or seccomp on execve) because it is the one
      that holds by construction: what is not mounted cannot be run, read or loaded by any
      means (a shell, posix_spawn, ctypes, a static binary written to /tmp still finds no
      python3), and it needs nothing of the kernel beyond what bubblewrap already uses. So a
      bash program has bash and no /bin/sh, python3 or g++; a Python program has python3 and its
      standard library; a compiled program has its libraries only.
  a seccomp filter (classic BPF, handed to bubblewrap with --seccomp): unshare() and clone()
      with CLONE_NEWUSER fail with EPERM, clone3() with ENOSYS (its flags are out of a filter's
      reach; libc then falls back to clone), so no sandbox makes a nested user namespace, root
      trainer or not. (bubblewrap's --disable-userns does this only inside a user namespace of
      its own, which a root trainer's sandboxes do not have.) The kernel's keyrings (add_key,
      request_key, keyctl) fail with EPERM: they belong to a uid, not to a namespace, so a key
      would outlive its sandbox. Built for x86_64 and aarch64.
  an unprivileged user: a trainer running as root runs every command, compilers included, as a
      uid of the sandbox's own (no user has it): bubblewrap runs as root, so it can mount a
      toolchain that lives under /root (rustup's) read-only, and `setpriv` then switches to that
      uid with no capabilities and no_new_privs. The command cannot read what only root may
      read (/etc/shadow, /root). A trainer not running as root runs commands as itself.
  cgroups per sandbox where the machine lets this process make them (cgroup v2, or the memory,
      cpuacct and pids controllers of cgroup v1): all of the sandbox's processes and tmpfs pages
      together stay under `memory`, the CPU time of all of its processes together counts
      against `timeout` (read every CPU_POLL seconds; past it the sandbox is killed), and its
      tasks together are at most `processes`. The sandbox's PID 1 is moved into them while it
      waits at bubblewrap's --block-fd, its command not yet started; bubblewrap's monitor, which
      reports the command's exit, stays out, so nothing the command does to its cgroup (filling
      it with pages that belong to no process, so that the OOM killer picks the smallest
      process) can kill the monitor. Without a memory cgroup the bound is the address-space
      limit times the process cap, plus the small tmpfs; without CPU accounting each process
      has its own `timeout` of CPU time, so a program that forks gets up to `processes` times
      the budget.
  resource limits, set by `prlimit`: address space, CPU time, file size, open files, processes.
  time: the command gets `timeout` seconds of CPU time (RLIMIT_CPU per process and the cgroup's
      count for the whole sandbox, so a busy machine does not make a correct program late) and a
      generous wall clock (WALL_FACTOR x timeout + WALL_SLACK: a program that sleeps), after
      which the whole sandbox is killed; stdout and stderr are capped.
  a scrubbed environment: no variable of the trainer reaches the command.

What is covered, where bubblewrap runs: delegation (starting another language's interpreter or
compiler: it is not there); nested user namespaces; reading the trainer's files, environment or
processes, root-only files, expected outputs (never in the sandbox); writing outside the
sandbox, or more than the bounded copy of its writable directories; leftovers between
sandboxes (processes, zombies, keys, IPC objects, files); the network; signals to and ptrace of
other processes; killing the sandbox's own machinery to make its verdict an infrastructure
failure; fork bombs, memory bombs (with a memory cgroup), CPU hogs and their children (with CPU
accounting), output floods, sleeping or setsid'd children, reads of a device that never end.
What is not: the machine's own bugs (a kernel or
bubblewrap escape); side channels and timing; the CPU time of the sandbox's children without
cgroup CPU accounting (see above); the shared libraries of the runtime itself, which a program
may load (ctypes, FFI) but which run nothing of another language; a program that computes its
answer in its own language by interpreting the source it was shown (that is a translation of
sorts, and no sandbox can tell).

Infrastructure failures are a status of their own, "infra_error": bubblewrap's own setup failing
(it reports the command's exit code through --json-status-fd only once the command started, so
a program cannot fake this by printing "bwrap: ..."), a cgroup that cannot be made, a process
that cannot be started. They say nothing about the program. An OOM kill in the sandbox's
memory cgroup is the program's "memory_limit" whatever else failed.

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
import atexit
import dataclasses
import functools
import itertools
import math
import os
import re
import select
import selectors
import shutil
import signal
import stat
import struct
import subprocess
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

MiB = 1 << 20
OUTPUT_LIMIT = 1 * MiB     # bytes of stdout (and of stderr) before "output_limit"
FILE_SIZE = 16 * MiB       # the largest file a command may write, unless run() is told otherwise
TMPFS_SIZE = 64 * MiB      # the size of the sandbox's /work and of its /tmp
SHM_SIZE = 16 * MiB        # the size of its /dev/shm (POSIX shared memory, semaphores)
DIRS_SIZE = 256 * MiB      # the size of each writable directory run() is given (a compiler's output)
OPEN_FILES = 256           # the JVM opens its modules file, jars and a few sockets
PROCESSES = 32             # tasks (threads count) per sandbox by default: the JVM starts 14
WALL_FACTOR, WALL_SLACK = 3, 2.0  # wall clock = 3 x the CPU time + 2 s: room for a busy machine
CPU_POLL = 0.05            # seconds between two reads of a sandbox's CPU time (its cgroup's count)
PROBE_TIMEOUT = 10.0       # seconds for the one-time check that bubblewrap works here
SANDBOX_UID_BASE = 2_000_000_000  # a root trainer runs each sandbox as a uid of its own, from here
BWRAP = "bwrap"            # the bubblewrap executable, looked up on SEARCH_PATH
USE_CGROUP = True          # False: never make cgroups (the fallback bounds on memory and CPU time apply)
ALLOW_REDUCED_ISOLATION = "OORL_ALLOW_REDUCED_ISOLATION"  # =1: the opt-in, as an environment variable
# System directories first: a shim in $HOME (pyenv, nvm) cannot run in the sandbox.
SEARCH_PATH = os.pathsep.join(["/usr/local/bin", "/usr/bin", "/bin", os.environ.get("PATH", "")])
# Every sandbox's runtime also holds these, where they exist: the loader's cache (libraries are
# found without probing directories) and glibc's locale for the LANG that _environment sets.
SYSTEM_FILES = ("/etc/ld.so.cache", "/usr/lib/locale/C.utf8", "/usr/lib/locale/locale-archive")
# The seccomp filter's numbers, per machine: the kernel's AUDIT_ARCH, the system call numbers
# of unshare, clone and clone3 (unshare and clone take their flags as the first argument), and
# those of the kernel's keyrings: add_key, request_key, keyctl.
SECCOMP_ARCHES = {"x86_64": (0xC000003E, 272, 56, 435, (248, 249, 250)),
                  "aarch64": (0xC00000B7, 97, 220, 435, (217, 218, 219))}
CLONE_NEWUSER = 0x10000000
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
_cgroup_names = itertools.count()


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
    if mode == "bwrap" and _seccomp_program() is None:
        missing.append(f"the seccomp filter (none for a {os.uname().machine} machine): sandboxed programs "
                       "can make nested user namespaces")
    if not (USE_CGROUP and _cpu_cgroup_parent()):
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
    seccomp = _seccomp_file()
    with open(true_path, "rb") as true:
        argv = _bwrap_argv(bwrap, [(true.fileno(), "/prog/true")], [], uid, (true_path,), seccomp) + ["/prog/true"]
        passed = [true.fileno()] + ([seccomp] if seccomp is not None else [])
        try:
            status, code, _, err = _spawn(argv, b"", PROBE_TIMEOUT, passed, _environment({}), bwrap)
        finally:
            if seccomp is not None:
                os.close(seccomp)
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
        cgroup = _make_cgroup(memory, processes) if USE_CGROUP else {}
    except OSError as error:
        return Result("infra_error", b"", f"sandbox.py: cannot make the sandbox's cgroup: {error}".encode(), None)
    uid = _take_uid() if os.geteuid() == 0 else None
    try:
        # the pids cgroup counts the sandbox's tasks alone; RLIMIT_NPROC counts its uid's (see "Fork bombs")
        nproc = "pids" not in cgroup and (uid is not None or (mode == "bwrap" and _nproc_counts_per_namespace()))
        limits = _limits(memory, timeout, file_size, processes if nproc else None)
        cpu = (timeout, functools.partial(_cpu_seconds, cgroup["cpu"])) if "cpu" in cgroup else None
        if mode == "bwrap":
            status, code, out, err = _run_bwrap(argv, files, stdin, timeout, limits, env, dirs, read_only, cgroup,
                                                uid, cpu, runtime, dirs_size, copy_limit)
        else:
            status, code, out, err = _run_reduced(argv, files, stdin, timeout, limits, env, dirs, read_only, cgroup,
                                                  uid, cpu)
        out_of_memory = "memory" in cgroup and _oom_killed(cgroup["memory"])
    finally:
        _remove_cgroup(cgroup)
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
    seccomp = _seccomp_file()
    passed = fds + ([seccomp] if seccomp is not None else [])
    sandbox = {"dirs": []}  # its PID 1 (a pidfd) and its writable directories (fds), once it exists

    def start(pid, block_fd):  # the sandbox is made, its command not started yet
        sandbox["pid"] = os.pidfd_open(pid)
        _join_cgroup(cgroup, pid)
        if dirs:
            _wait_until_blocked(pid, block_fd)
            for name, host in dirs:
                sandbox["dirs"].append(os.open(f"/proc/{pid}/root/{name}", os.O_RDONLY | os.O_DIRECTORY))
                _copy_in(host, sandbox["dirs"][-1], uid)

    try:
        bwrap = shutil.which(BWRAP, path=SEARCH_PATH)
        tmpfs = [(f"/{name}", dirs_size) for name, _ in dirs]
        full = (_bwrap_argv(bwrap, list(zip(fds, (f"/prog/{name}" for _, name in files))), binds, uid, runtime,
                            seccomp, tmpfs)
                + limits + list(fill(argv, paths)))
        result = _spawn(full, stdin, timeout * WALL_FACTOR + WALL_SLACK, passed,
                        _environment(dict(_fill_pairs(env, paths))), bwrap, cpu=cpu, start=start)
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
        full = _in_cgroup(cgroup) + _as_user(uid) + limits + list(fill(argv, paths))
        try:
            return _spawn(full, stdin, timeout * WALL_FACTOR + WALL_SLACK, [], environment, None, cwd=work, cpu=cpu)
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
        pause = min(2 * pause, 0.008)  # (a sandbox is made in milliseconds; more on a busy machine)
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


def _bwrap_argv(bwrap, files, binds, uid, runtime, seccomp, writable=()):
    """bubblewrap's command line, up to the limits and the command: files [(fd, path)] are
    copied into the sandbox, binds: bubblewrap's words that mount directories, runtime: the host
    paths that make up the system it sees (see _system_mounts), seccomp: the fd of the filter, or
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
    if seccomp is not None:
        argv += ["--seccomp", str(seccomp)]
    # the tools that start the command inside (they run only what the sandbox holds)
    machinery = [shutil.which(tool, path=SEARCH_PATH) for tool in ("prlimit", "setpriv")[:1 if uid is None else 2]]
    if not os.path.isdir(_trees()):  # removed meanwhile (a cleaner of old files in /tmp): made again
        _trees.cache_clear()
        _system_mounts.cache_clear()
    argv += _system_mounts(tuple(sorted({*runtime, *machinery, *SYSTEM_FILES})))
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


# ----------------------------------------------------------------------------- the minimal mount set

@functools.lru_cache(maxsize=None)
def _system_mounts(runtime):
    """bubblewrap's words that make a root holding only `runtime` (a sorted tuple of host paths),
    read-only: each path, what the symbolic links on the way to it and inside it point to, and
    the shared libraries its ELF files load, recursively, and the links themselves where they
    lie outside what is mounted. Computed once per runtime and process.

    Each mount costs the sandbox ~70 us to make and to tear down, and a runtime has dozens of
    files (python3's libraries alone are ~30), so the files and links are gathered in a private
    copy of the directory tree, as hard links (no copy of their data): a mount per top-level
    directory of it, plus one per directory of the runtime. A file that this process cannot
    hard-link (another file system, or not its own file under fs.protected_hardlinks) is mounted
    on its own."""
    links, mounted, queue = {}, set(), list(runtime)
    while queue:
        loaded = []  # ELF files met in this round: the loader lists what they load
        for path in queue:
            real = _resolve(path, links)
            if real in mounted or not os.path.exists(real):
                continue
            mounted.add(real)
            if not os.path.isdir(real):
                loaded.append(real)
                continue
            for kind, inside in _walk(real):
                if kind == "file":
                    loaded.append(inside)
                elif not os.path.realpath(inside).startswith(real + "/"):  # a link out of the directory
                    queue.append(inside)
        queue = sorted(_shared_libraries(tuple(filter(_loads_libraries, loaded))))
    # nothing inside a mounted directory is mounted again, nor a link made there (the mount shows it)
    tops = sorted(path for path in mounted if not any(path.startswith(other + "/") for other in mounted))
    links = {link: target for link, target in links.items() if not any(link.startswith(top + "/") for top in tops)}
    tree, alone = tempfile.mkdtemp(prefix="root-", dir=_trees()), []
    for path in tops:  # a directory or a file that cannot be linked: an empty mount point in the tree
        _make_parents(tree + path)
        if os.path.isdir(path):
            os.mkdir(tree + path)
            alone.append(path)
            continue
        try:
            os.link(path, tree + path)
        except OSError:
            open(tree + path, "w").close()
            alone.append(path)
    for link, target in links.items():
        _make_parents(tree + link)
        os.symlink(target, tree + link)
    words = []
    for name in sorted(os.listdir(tree)):  # (/lib of a merged /usr is a link)
        top = os.path.join(tree, name)
        words += ["--symlink", os.readlink(top), f"/{name}"] if os.path.islink(top) else ["--ro-bind", top, f"/{name}"]
    for path in alone:
        words += ["--ro-bind", path, path]
    return words


@functools.lru_cache(maxsize=None)
def _trees():
    """This process's directory for _system_mounts' trees, removed at its exit (and a dead
    process's, found here, at the next one's start)."""
    for name in os.listdir(tempfile.gettempdir()):
        pid = re.fullmatch(r"oorl-sandbox-roots-(\d+)-.*", name)
        if pid and not os.path.exists(f"/proc/{pid.group(1)}"):
            shutil.rmtree(os.path.join(tempfile.gettempdir(), name), ignore_errors=True)
    directory, creator = tempfile.mkdtemp(prefix=f"oorl-sandbox-roots-{os.getpid()}-"), os.getpid()
    atexit.register(lambda: os.getpid() == creator and shutil.rmtree(directory, ignore_errors=True))  # (not a fork's)
    return directory


def _make_parents(path):
    """Makes the missing directories above `path`, traversable by a root trainer's sandbox uid."""
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        _make_parents(parent)
        os.mkdir(parent)
        os.chmod(parent, 0o755)


def _resolve(path, links):
    """The real path of `path`, recording in `links` {link: target} each symbolic link met on the
    way (a /lib -> usr/lib of a merged /usr, an /etc/alternatives entry)."""
    pending, real = [part for part in path.split("/") if part], "/"
    for _ in range(256):  # (more hops than that: a loop; the path is then taken as it is)
        if not pending:
            break
        part = pending.pop(0)
        candidate = os.path.dirname(real) if part == ".." else real if part == "." else os.path.join(real, part)
        if os.path.islink(candidate):
            target = os.readlink(candidate)
            links[candidate] = target
            real = "/" if target.startswith("/") else real
            pending = [p for p in target.split("/") if p] + pending
        else:
            real = candidate
    return real


def _walk(directory):
    """("link", path) for each symbolic link under a directory, ("file", path) for each file that
    may be an ELF executable or shared object (executable, or named *.so*)."""
    stack = [directory]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:  # unreadable: the sandbox cannot read it either
            continue
        for entry in entries:
            if entry.is_symlink():
                yield "link", entry.path
            elif entry.is_dir():
                stack.append(entry.path)
            elif entry.is_file() and (".so" in entry.name or entry.stat().st_mode & 0o111):
                yield "file", entry.path


def _segments(path):
    """[(type, offset, size)] of the program headers of a 64-bit ELF file; [] for any other file."""
    try:
        with open(path, "rb") as file:
            header = file.read(64)
            if len(header) < 64 or header[:4] != b"\x7fELF" or header[4] != 2:  # (ELFCLASS64)
                return []
            order = "<" if header[5] == 1 else ">"
            table, = struct.unpack_from(order + "Q", header, 32)  # e_phoff
            entry_size, entries = struct.unpack_from(order + "HH", header, 54)  # e_phentsize, e_phnum
            file.seek(table)
            data = file.read(entry_size * entries)
        return [(kind, offset, size) for kind, _, offset, _, _, size, _, _ in
                (struct.unpack_from(order + "IIQQQQQQ", data, i * entry_size) for i in range(entries))]
    except (OSError, struct.error):
        return []


def _loads_libraries(path):
    """True for an ELF file that the dynamic loader links (one with a PT_DYNAMIC segment): the
    others (static programs, data) it cannot list, and may crash on."""
    return any(kind == 2 for kind, _, _ in _segments(path))


def _shared_libraries(paths):
    """The shared libraries the dynamic loader loads for each of `paths`, the loader included."""
    loader = _loader()
    if loader is None or not paths:
        return set()

    def listed(path):  # (the loader's --list traces the loading; it runs none of the file's code)
        done = subprocess.run([loader, "--list", path], capture_output=True, text=True, env={"LC_ALL": "C"})
        return re.findall(r"^\s+(?:\S+ => )?(/\S+) \(0x", done.stdout, re.MULTILINE)

    with ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        return {library for found in pool.map(listed, paths) for library in found} | {loader}


@functools.lru_cache(maxsize=None)
def _loader():
    """The dynamic loader (the PT_INTERP of `true`), or None (a machine of static programs)."""
    true = os.path.realpath(shutil.which("true", path=SEARCH_PATH))
    for kind, offset, size in _segments(true):
        if kind == 3:
            with open(true, "rb") as file:
                file.seek(offset)
                return file.read(size).rstrip(b"\0").decode()
    return None


# ----------------------------------------------------------------------------- no nested user namespaces

@functools.lru_cache(maxsize=None)
def _seccomp_program():
    """The seccomp filter (classic BPF, as bubblewrap's --seccomp reads it) for this machine, or
    None where SECCOMP_ARCHES does not know it. unshare() and clone() with CLONE_NEWUSER in their
    flags fail with EPERM; clone3() fails with ENOSYS, as on a kernel without it, since its flags
    lie in memory a filter cannot read (libc then falls back to clone); add_key(), request_key()
    and keyctl() fail with EPERM, as container runtimes' default profiles have them: the
    kernel's keyrings belong to a uid, not to a sandbox, so a key would outlive its sandbox and
    reach the next one of that uid (or any, opened to all); system calls of another ABI (i386
    through int 0x80, x86-64's x32: their numbers differ) fail with ENOSYS; the rest are
    allowed."""
    if os.uname().machine not in SECCOMP_ARCHES:
        return None
    arch, unshare, clone, clone3, (add_key, request_key, keyctl) = SECCOMP_ARCHES[os.uname().machine]
    load, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|JGE|JSET|K, BPF_RET|K
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38  # SECCOMP_RET_ALLOW, _ERRNO | errno
    program = [  # (code, jump if true, jump if false, k); jumps count the instructions skipped
        (load, 0, 0, 4),                  # 0: seccomp_data.arch
        (jeq, 1, 0, arch),                # 1
        (ret, 0, 0, enosys),              # 2: another ABI
        (load, 0, 0, 0),                  # 3: seccomp_data.nr
        (jge, 0, 1, 0x40000000),          # 4: __X32_SYSCALL_BIT
        (ret, 0, 0, enosys),              # 5
        (jeq, 0, 1, clone3),              # 6
        (ret, 0, 0, enosys),              # 7
        (jeq, 2, 0, add_key),             # 8: -> 11
        (jeq, 1, 0, request_key),         # 9: -> 11
        (jeq, 0, 1, keyctl),              # 10: -> 11, else 12
        (ret, 0, 0, eperm),               # 11
        (jeq, 1, 0, unshare),             # 12: -> 14
        (jeq, 0, 3, clone),               # 13: -> 14, else 17
        (load, 0, 0, 16),                 # 14: the low 32 bits of args[0], the flags
        (jset, 0, 1, CLONE_NEWUSER),      # 15
        (ret, 0, 0, eperm),               # 16
        (ret, 0, 0, allow),               # 17
    ]
    return b"".join(struct.pack("=HBBI", *instruction) for instruction in program)


def _seccomp_file():
    """A fresh fd holding the filter (bubblewrap reads it to the end, so none is shared), or None."""
    program = _seccomp_program()
    if program is None:
        return None
    fd = os.memfd_create("seccomp")
    os.write(fd, program)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


# ----------------------------------------------------------------------------- cgroups: memory and CPU time

@functools.lru_cache(maxsize=None)
def _cgroup_parent():
    """(version, directory) in which this process can make a memory cgroup per sandbox, or None.
    cgroup v2: a directory "oorl-sandbox" beside the root's children, where the root offers the
    memory controller and lets us enable it (as root on a host; a container's or a user's own
    cgroup holds processes, so it cannot), and the pids controller with it where offered.
    cgroup v1: a child of our own memory cgroup."""
    try:
        for fields in _cgroup_mounts():
            mount_point, fstype = fields[4], fields[fields.index("-") + 1]
            if fstype == "cgroup2":
                with open(os.path.join(mount_point, "cgroup.controllers")) as file:
                    offered = file.read().split()
                if "memory" not in offered:
                    continue
                parent = os.path.join(mount_point, "oorl-sandbox")
                os.makedirs(parent, exist_ok=True)
                for directory in (mount_point, parent):
                    with open(os.path.join(directory, "cgroup.subtree_control"), "w") as file:
                        file.write("+memory")
                    try:  # (the pids controller is welcome, not needed: see _pids_cgroup_parent)
                        if "pids" in offered:
                            with open(os.path.join(directory, "cgroup.subtree_control"), "w") as file:
                                file.write("+pids")
                    except OSError:
                        pass
                return 2, parent
    except (OSError, ValueError, IndexError):
        return None
    parent = _v1_parent("memory")
    return (1, parent) if parent else None


@functools.lru_cache(maxsize=None)
def _cpu_cgroup_parent():
    """(version, directory) in which this process can make a cgroup per sandbox that counts its
    CPU time, or None: on cgroup v2 the memory cgroup's parent (every v2 cgroup counts its CPU
    time in cpu.stat), on cgroup v1 a child of our own cgroup of the cpuacct controller."""
    memory = _cgroup_parent()
    if memory and memory[0] == 2:
        return memory
    parent = _v1_parent("cpuacct")
    return (1, parent) if parent else None


@functools.lru_cache(maxsize=None)
def _pids_cgroup_parent():
    """(version, directory) in which this process can make a cgroup per sandbox that bounds its
    number of tasks, or None: on cgroup v2 the memory cgroup's parent where it enabled pids, on
    cgroup v1 a child of our own cgroup of the pids controller."""
    memory = _cgroup_parent()
    if memory and memory[0] == 2:
        with open(os.path.join(memory[1], "cgroup.subtree_control")) as file:
            return memory if "pids" in file.read().split() else None
    parent = _v1_parent("pids")
    return (1, parent) if parent else None


def _v1_parent(controller):
    """Our own cgroup in the cgroup v1 hierarchy of `controller`, if this process can make
    children there (probed), else None."""
    try:
        with open("/proc/self/cgroup") as file:
            own = {controllers: path for _, controllers, path in (line.rstrip("\n").split(":", 2) for line in file)}
        for fields in _cgroup_mounts():
            mount_point, fstype, options = fields[4], fields[fields.index("-") + 1], fields[-1]
            if fstype == "cgroup" and controller in options.split(","):
                parent = os.path.normpath(mount_point + next(p for c, p in own.items() if controller in c.split(",")))
                os.rmdir(tempfile.mkdtemp(prefix=f"oorl-probe-{os.getpid()}-", dir=parent))
                return parent
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    return None


def _cgroup_mounts():
    with open("/proc/self/mountinfo") as file:
        return [line.split() for line in file]


def _make_cgroup(memory, processes):
    """{"memory": (version, path), "cpu": ..., "pids": ...}: the fresh cgroups of one sandbox (one
    directory for all on cgroup v2), the memory one holding `memory` bytes at most, swap
    included, the CPU one counting its CPU time, the pids one holding `processes` tasks at most;
    without the ones this process cannot make. Raises OSError (having removed what it made)
    where making one fails."""
    name, made = f"sandbox-{os.getpid()}-{next(_cgroup_names)}", {}
    try:
        for kind, found in (("memory", _cgroup_parent()), ("cpu", _cpu_cgroup_parent()),
                            ("pids", _pids_cgroup_parent())):
            if found:
                version, parent = found
                made[kind] = version, os.path.join(parent, name)
                if made[kind] not in [made[other] for other in made if other != kind]:
                    os.mkdir(made[kind][1])
        settings = []
        if "memory" in made:
            version, path = made["memory"]
            settings += [(path, setting, value) for setting, value in (
                {"memory.max": memory, "memory.swap.max": 0} if version == 2 else
                {"memory.limit_in_bytes": memory, "memory.memsw.limit_in_bytes": memory}).items()]
        if "pids" in made:
            settings.append((made["pids"][1], "pids.max", processes))
        for path, setting, value in settings:
            if os.path.exists(os.path.join(path, setting)):  # swap accounting may be off
                with open(os.path.join(path, setting), "w") as file:
                    file.write(str(value))
    except OSError:
        _remove_cgroup(made)
        raise
    return made


def _join_cgroup(cgroup, pid):
    """Moves the process `pid` (the sandbox's PID 1, before its command starts) into the
    sandbox's cgroups: what it starts is born there. bubblewrap's monitor, its parent, stays
    out, so that nothing the command does to its cgroups (filling its memory with pages no
    process owns, so that the OOM killer picks the smallest process) can kill the monitor."""
    for path in sorted({path for _, path in cgroup.values()}):
        with open(os.path.join(path, "cgroup.procs"), "w") as file:
            file.write(str(pid))


def _in_cgroup(cgroup):
    """The words that move the rest of a command line into the cgroups before it starts (reduced
    isolation: no monitor to keep out of them)."""
    if not cgroup:
        return []
    procs = " ".join(sorted({os.path.join(path, "cgroup.procs") for _, path in cgroup.values()}))
    return ["/bin/sh", "-c", 'for procs in $0; do echo 0 > "$procs" || exit; done; exec "$@"', procs]


def _cpu_seconds(cpu):
    """The CPU time used so far by the processes of the cgroup `cpu` (version, path), in seconds."""
    version, path = cpu
    try:
        with open(os.path.join(path, "cpu.stat" if version == 2 else "cpuacct.usage")) as file:
            text = file.read()
    except OSError:
        return 0.0
    if version == 2:
        return int(re.search(r"usage_usec (\d+)", text).group(1)) / 1e6
    return int(text) / 1e9


def _oom_killed(memory):
    version, path = memory
    try:
        with open(os.path.join(path, "memory.events" if version == 2 else "memory.oom_control")) as file:
            counts = dict(line.split() for line in file if line.strip())
        return int(counts.get("oom_kill", 0)) > 0
    except (OSError, ValueError):
        return False


def _remove_cgroup(cgroup):
    """Kills whatever is left in the sandbox's cgroups, then removes them."""
    for path in sorted({path for _, path in cgroup.values()}):
        for _ in range(100):
            try:
                with open(os.path.join(path, "cgroup.procs")) as file:
                    pids = [int(pid) for pid in file.read().split()]
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError:  # still busy: its processes are dying
                time.sleep(0.01)


# ----------------------------------------------------------------------------- spawning and killing

def fill(words, mapping):
    """words with every placeholder of mapping ("{prog}": "/prog", ...) replaced (reward.py's too)."""
    for placeholder, value in mapping.items():
        words = tuple(word.replace(placeholder, value) for word in words)
    return words


def _fill_pairs(pairs, mapping):
    return [(name, fill((value,), mapping)[0]) for name, value in pairs]


def _spawn(argv, stdin, wall_clock, pass_fds, env, bwrap, cwd="/", cpu=None, start=None):
    """Runs argv in a new session (its own process group) with a wall-clock timeout and capped
    output. cpu: (seconds, a function that reads the CPU seconds the sandbox used) or None.
    Returns (status, returncode, stdout, stderr); status is None if it ended by itself, else
    "timeout" (the wall clock), "cpu_time" (the CPU seconds), "output_limit", or "infra_error"
    (it never started the command: no process, or bubblewrap's own setup failed).

    bubblewrap (the word `bwrap` of argv) gets a status fd through which it tells the pid of
    the sandbox's PID 1 and, with --json-status-fd, the command's exit code: the latter only
    once the command itself started, so its absence tells bubblewrap's failures from the
    command's. PID 1 waits at --block-fd, its sandbox made, until start(pid, fd number) has
    run (moved it into its cgroups, say); a start that raises OSError is the sandbox's failure.
    On a timeout PID 1 is killed, which ends its whole PID namespace, and bwrap reaps it and
    exits. (Killing bwrap first would orphan it: a zombie for whoever is PID 1, which in a
    container may be the trainer itself, and it never reaps.)"""
    info_read, info_write = os.pipe() if bwrap else (-1, -1)
    block_read, block_write = os.pipe() if bwrap else (-1, -1)
    json_status = bwrap and "--json-status-fd" in _bwrap_options(bwrap)  # (bubblewrap >= 0.5)
    if bwrap:
        at = argv.index(bwrap) + 1
        option = "--json-status-fd" if json_status else "--info-fd"
        argv = [*argv[:at], option, str(info_write), "--block-fd", str(block_read), *argv[at:]]
        pass_fds = [*pass_fds, info_write, block_read]
    stdin_file = os.memfd_create("stdin")  # a file, not a pipe: no deadlock on a large input
    os.write(stdin_file, stdin)
    os.lseek(stdin_file, 0, os.SEEK_SET)
    try:
        proc = subprocess.Popen(argv, stdin=stdin_file, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd=cwd, env=env, pass_fds=pass_fds, start_new_session=True)
    except OSError as error:  # the machine refused a process (pids, memory, file descriptors)
        if bwrap:
            for fd in (info_read, block_write):
                os.close(fd)
        return "infra_error", None, b"", f"sandbox.py: cannot start the sandbox: {error}".encode()
    finally:
        os.close(stdin_file)
        if bwrap:
            for fd in (info_write, block_read):
                os.close(fd)
    out, err, exited = proc.stdout.fileno(), proc.stderr.fileno(), os.pidfd_open(proc.pid)
    output = {out: bytearray(), err: bytearray(), info_read: bytearray()}
    status, failure = None, b""
    if bwrap:
        try:
            _start_sandbox(proc, info_read, output[info_read], block_read, start)
        except OSError as error:  # (bubblewrap failing meanwhile, its PID 1 gone, included: it says why below)
            failure = f"sandbox.py: cannot start the sandbox: {error}\n".encode()
            _kill_sandbox(proc, output[info_read])
        finally:
            os.close(block_write)
    deadline, has_exited = time.monotonic() + wall_clock, False
    with selectors.DefaultSelector() as selector:
        for fd in (out, err, exited) + ((info_read,) if bwrap else ()):
            selector.register(fd, selectors.EVENT_READ)
        while status is None and len(selector.get_map()) > (0 if has_exited else 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0 and not has_exited:
                status = "timeout"
                break
            if cpu and not has_exited and cpu[1]() > cpu[0]:
                status = "cpu_time"
                break
            # After the exit only what is already in the pipes is read: a child that escaped
            # (possible without namespaces) and holds them open must not hold us up.
            events = selector.select(0 if has_exited else min(remaining, CPU_POLL) if cpu else remaining)
            if not events and has_exited:
                break
            for key, _ in events:
                if key.fd == exited:
                    has_exited = True
                    selector.unregister(exited)
                elif not (data := os.read(key.fd, 65536)):
                    selector.unregister(key.fd)
                elif key.fd != info_read and len(output[key.fd]) + len(data) > OUTPUT_LIMIT:
                    output[key.fd] += data[:OUTPUT_LIMIT - len(output[key.fd])]
                    status = "output_limit"
                else:
                    output[key.fd] += data
        if status in ("timeout", "cpu_time", "output_limit") and bwrap:
            _kill_sandbox(proc, output[info_read])
    try:  # the whole group, before reaping (its id cannot be reused while the leader is a zombie)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    os.close(exited)
    if bwrap:
        os.close(info_read)
    proc.stdout.close()
    proc.stderr.close()
    reported = b'"exit-code"' if json_status else b'"child-pid"'
    if failure or bwrap and status is None and reported not in output[info_read]:
        status = "infra_error"
    return status, proc.returncode, bytes(output[out]), failure + bytes(output[err])


def _start_sandbox(proc, info_read, info, block_fd, start):
    """Reads bubblewrap's status fd until it tells the pid of the sandbox's PID 1 (bubblewrap
    writes it as soon as the sandbox exists; end of file: bubblewrap failed first, which the
    caller finds out), checks that it is bubblewrap's child, and runs start on it."""
    deadline = time.monotonic() + PROBE_TIMEOUT
    while b"child-pid" not in info:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise OSError("bubblewrap did not say which process is the sandbox's")
        if select.select([info_read], [], [], remaining)[0]:
            data = os.read(info_read, 4096)
            if not data:
                return
            info += data
    while not re.search(rb'"child-pid":\s*\d+\D', info):  # (the number whole)
        if not select.select([info_read], [], [], 1.0)[0] or not (data := os.read(info_read, 4096)):
            break
        info += data
    pid = int(re.search(rb'"child-pid":\s*(\d+)', info).group(1))
    with open(f"/proc/{pid}/status") as file:
        if int(re.search(r"PPid:\s+(\d+)", file.read()).group(1)) != proc.pid:
            raise OSError("the sandbox's PID 1 is not bubblewrap's child")
    if start:
        start(pid, block_fd)


def _kill_sandbox(proc, info):
    """Kills the PID 1 of bwrap's sandbox (pid from bwrap's status fd) and lets bwrap reap it.
    Through a pidfd, checked to be bwrap's child, so that a reused pid is never hit."""
    try:
        pid = int(re.search(rb'"child-pid":\s*(\d+)', info).group(1))
        pidfd = os.pidfd_open(pid)
    except (AttributeError, ProcessLookupError):
        return  # bwrap failed before starting a sandbox, or it is gone already
    try:
        with open(f"/proc/{pid}/status") as file:
            if int(re.search(r"PPid:\s+(\d+)", file.read()).group(1)) == proc.pid:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                proc.wait(timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        pass  # gone meanwhile, or bwrap is stuck: the caller kills its process group
    finally:
        os.close(pidfd)


def first_lines(text, n):
    """The first n lines of text, stripped: what a message keeps of a long output."""
    return "\n".join(text.strip().splitlines()[:n])


if __name__ == "__main__":
    mode = check()
    memory, cpu, pids = ((_cgroup_parent(), _cpu_cgroup_parent(), _pids_cgroup_parent()) if USE_CGROUP
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
        f"active ({os.uname().machine})" if bwrap and _seccomp_program() else
        "UNAVAILABLE (reduced isolation)" if not bwrap else f"UNAVAILABLE (no filter for {os.uname().machine})"))
