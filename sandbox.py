"""
sandbox.py: runs a command over a few files in an isolated, throw-away directory, with limits,
and returns its status and output. It knows nothing of languages, compilers or tests (reward.py
does); it only isolates.

    import sandbox
    sandbox.check()   # "bwrap"; raises sandbox.Unavailable (saying what to install) where it cannot isolate
    sandbox.run(["/usr/bin/python3", "{prog}/main.py"], files=[("/tmp/x.py", "main.py")], stdin=b"1\\n")
    # Result(status='ok', stdout=b'...', stderr=b'', exit_code=0)

    python sandbox.py     # which isolation this machine gives

An RL step runs hundreds of programs written by a model that is still learning: some loop
forever, some allocate without end, a few would do worse if they could. Each runs in a sandbox
built from trusted parts, layer by layer:

  bubblewrap (`bwrap`, the sandbox under Flatpak): new PID, network, IPC, UTS and mount
      namespaces (and a user namespace, for a trainer not running as root). The command sees a fresh root with the system directories read-only, a copy of
      its files in /prog and small private tmpfs, /work (its working directory and $HOME), /tmp
      and /dev/shm, which vanish with it (/dev itself is read-only): nothing it writes reaches
      the disk. It sees no other process (so not the trainer's /proc/PID/environ) and no
      network. It is PID 1 of its namespace, so when it exits the kernel kills everything it
      left behind.
  an unprivileged user: a trainer running as root runs every command, compilers included, as a
      uid of the sandbox's own (no user has it): bubblewrap runs as root, so it can mount a
      toolchain that lives under /root (rustup's) read-only, and `setpriv` then switches to that
      uid with no capabilities and no_new_privs. The command cannot read what only root may
      read (/etc/shadow, /root). A trainer not running as root runs commands as itself.
  a memory cgroup per sandbox where the machine lets this process make one (cgroup v2, or the
      memory controller of cgroup v1): all of the sandbox's processes and tmpfs pages together
      stay under `memory`. Without one, the bound is the address-space limit times the process
      cap, plus the small tmpfs.
  resource limits, set by `prlimit`: address space, CPU time, file size, open files, processes.
  time: the command gets `timeout` seconds of CPU time (RLIMIT_CPU, so a busy machine does not
      make a correct program late) and a generous wall clock (WALL_FACTOR x timeout +
      WALL_SLACK: a program that sleeps), after which the whole sandbox is killed; stdout and
      stderr are capped.
  a scrubbed environment: no variable of the trainer reaches the command.

Fork bombs. RLIMIT_NPROC is the one bound on processes short of cgroups, and the kernel ignores
it for root (it checks the real uid): one more reason root hands commands to another user. As
that uid is the sandbox's own, the limit counts exactly the sandbox's processes. A trainer not
running as root runs bubblewrap in a fresh user namespace, and Linux >= 5.14 counts per user
namespace, so again concurrent sandboxes do not starve each other and the user's own processes
do not count (older kernels count all of the user's processes: there the limit is left unset).
What a bomb makes meanwhile dies with its PID namespace.

Without bubblewrap (not installed, or user namespaces blocked, as in a Docker container run as
root) check() and run() raise Unavailable: model-written code is never run unisolated unless the
user opts in with sandbox.allow_reduced_isolation() or OORL_ALLOW_REDUCED_ISOLATION=1. Reduced
isolation is rlimits, a fresh session and a throw-away directory, and, for a trainer running as
root, a uid of the sandbox's own (never root, never a real user's), so that RLIMIT_NPROC counts
exactly its processes and kill(-1) from that uid ends all of them, setsid'd children included.
It does not stop the network, reading what every user may read, or writes to world-writable
directories such as /tmp; run as a normal user, children that leave the process group (setsid) survive unless
a memory cgroup holds them.
"""
import dataclasses
import functools
import itertools
import json
import math
import os
import re
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import warnings

MiB = 1 << 20
OUTPUT_LIMIT = 1 * MiB     # bytes of stdout (and of stderr) before "output_limit"
FILE_SIZE = 16 * MiB       # the largest file a command may write, unless run() is told otherwise
TMPFS_SIZE = 64 * MiB      # the size of the sandbox's /work and of its /tmp
SHM_SIZE = 16 * MiB        # the size of its /dev/shm (POSIX shared memory, semaphores)
OPEN_FILES = 256           # the JVM opens its modules file, jars and a few sockets
PROCESSES = 32             # tasks (threads count) per sandbox by default: the JVM starts 14
WALL_FACTOR, WALL_SLACK = 3, 2.0  # wall clock = 3 x the CPU time + 2 s: room for a busy machine
PROBE_TIMEOUT = 10.0       # seconds for the one-time check that bubblewrap works here
SANDBOX_UID_BASE = 2_000_000_000  # a root trainer runs each sandbox as a uid of its own, from here
BWRAP = "bwrap"            # the bubblewrap executable, looked up on SEARCH_PATH
USE_CGROUP = True          # False: never make a memory cgroup (the fallback bound applies)
ALLOW_REDUCED_ISOLATION = "OORL_ALLOW_REDUCED_ISOLATION"  # =1: the opt-in, as an environment variable
# System directories first: a shim in $HOME (pyenv, nvm) cannot run in the sandbox.
SEARCH_PATH = os.pathsep.join(["/usr/local/bin", "/usr/bin", "/bin", os.environ.get("PATH", "")])
SYSTEM_DIRS = ("/usr", "/etc", "/opt", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")  # read-only


class Unavailable(RuntimeError):
    """No isolation here that this module will run model-written code in."""


@dataclasses.dataclass(frozen=True)
class Result:
    status: str         # "ok" (exit 0), "runtime_error" (any other exit), "timeout" (CPU time or wall
                        # clock), "output_limit", "memory_limit" (the sandbox's memory cgroup was full)
    stdout: bytes       # at most OUTPUT_LIMIT bytes
    stderr: bytes
    exit_code: int = 0  # the command's exit code (128 + n: killed by signal n); None when the sandbox
                        # was killed (wall clock, output limit)


_lock = threading.Lock()
MODE = None              # "bwrap" or "reduced", decided by check() at first use
_reduced_allowed = False
_uids = set()            # a root trainer's sandboxes running now: their uids
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
    a second where bubblewrap works, at most PROBE_TIMEOUT seconds."""
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
                              "it can reach the network, read what every user may read and write to /tmp.",
                              RuntimeWarning, stacklevel=3)
        return MODE


def _who():
    return "a uid of their own (not root)" if os.geteuid() == 0 else "your user"


@functools.lru_cache(maxsize=None)
def _bwrap_problem(bwrap_name):
    """None if bubblewrap runs a command here, as run() will run it; else why not."""
    bwrap = shutil.which(bwrap_name, path=SEARCH_PATH)
    if bwrap is None:
        return "bubblewrap is not installed"
    uid = SANDBOX_UID_BASE + (os.getpid() % 1_000_000) * 1000 + 999 if os.geteuid() == 0 else None
    with open("/bin/true", "rb") as true:
        argv = _bwrap_argv(bwrap, [(true.fileno(), "/prog/true")], [], uid) + ["/prog/true"]
        status, code, _, err = _spawn(argv, b"", PROBE_TIMEOUT, [true.fileno()], _environment({}), bwrap)
    if status or code:
        return f"bubblewrap cannot create its namespaces here: {_first_lines(err.decode(), 3) or status}"
    return None


# ----------------------------------------------------------------------------- run

def run(argv, files=(), stdin=b"", timeout=2.0, memory=256 * MiB, processes=PROCESSES, file_size=FILE_SIZE,
        env=(), dirs=(), read_only=()):
    """Runs argv in a fresh sandbox and returns a Result. Raises Unavailable (see check).

    argv[0] is an absolute path (a tool outside the system directories, such as a rustup
    toolchain's bin/rustc, is mounted read-only with the two directories above it). In argv and
    in env's values, "{prog}" stands for the directory that holds `files` ([(host path, name)],
    copied read-only) and "{name}" for each of `dirs` ([(name, host directory)], writable: a
    compiler's output) and of `read_only` (the same, read-only). env: [(name, value)] added to a
    scrubbed environment. timeout: seconds of CPU time (the wall clock allows WALL_FACTOR times
    more); memory: the whole sandbox's memory where a cgroup holds it, and each process's
    address space; processes: the most tasks (threads count) at once."""
    mode = check()
    cgroup = _make_cgroup(memory) if USE_CGROUP else None
    uid = _take_uid() if os.geteuid() == 0 else None
    try:
        limits = _limits(memory, timeout, file_size, processes if uid is not None or (
            mode == "bwrap" and _nproc_counts_per_namespace()) else None)
        sandboxed = _run_bwrap if mode == "bwrap" else _run_reduced
        status, code, out, err = sandboxed(argv, files, stdin, timeout, limits, env, dirs, read_only, cgroup, uid)
        out_of_memory = cgroup is not None and _oom_killed(cgroup)
        killed_by_us = status is not None
    finally:
        if cgroup:
            _remove_cgroup(cgroup)
        if uid is not None:
            with _lock:
                _uids.discard(uid)
    if status is None:  # it ended by itself; bubblewrap says "killed by signal n" as 128 + n
        # Out of CPU time: SIGXCPU at the soft limit, or SIGKILL at the hard one (the sandbox's
        # PID 1 ignores SIGXCPU; a SIGKILL it sent itself is counted here too).
        killed_by = -code if code < 0 else code - 128 if code > 128 else None
        status = ("ok" if code == 0 else "memory_limit" if out_of_memory
                  else "timeout" if killed_by in (signal.SIGXCPU, signal.SIGKILL) else "runtime_error")
    return Result(status, out, err, None if killed_by_us else code)


def _run_bwrap(argv, files, stdin, timeout, limits, env, dirs, read_only, cgroup, uid):
    paths = {"{prog}": "/prog", **{"{%s}" % name: f"/{name}" for name, _ in [*dirs, *read_only]}}
    for _, host in dirs:
        if uid is not None:
            _give(host, uid)
    binds = [("--bind", host, f"/{name}") for name, host in dirs]
    binds += [("--ro-bind", host, f"/{name}") for name, host in read_only]
    toolchain = _toolchain(argv[0])
    if toolchain:  # its parents made traversable (bubblewrap makes them with mode 700)
        parents = [os.path.dirname(toolchain)]
        while parents[-1] != "/":
            parents.append(os.path.dirname(parents[-1]))
        binds += [("--perms", "0755", "--dir", path) for path in reversed(parents[:-1])]
        binds.append(("--ro-bind", toolchain, toolchain))
    fds = [os.open(host, os.O_RDONLY | os.O_CLOEXEC) for host, _ in files]
    try:
        bwrap = shutil.which(BWRAP, path=SEARCH_PATH)
        full = (_in_cgroup(cgroup) + _bwrap_argv(bwrap, list(zip(fds, (f"/prog/{name}" for _, name in files))),
                                                 binds, uid)
                + limits + list(_fill(argv, paths)))
        return _spawn(full, stdin, timeout * WALL_FACTOR + WALL_SLACK, fds,
                      _environment(dict(_fill_pairs(env, paths))), bwrap)
    finally:
        for fd in fds:
            os.close(fd)


def _run_reduced(argv, files, stdin, timeout, limits, env, dirs, read_only, cgroup, uid):
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
        full = _in_cgroup(cgroup) + _as_user(uid) + limits + list(_fill(argv, paths))
        try:
            return _spawn(full, stdin, timeout * WALL_FACTOR + WALL_SLACK, [], environment, None, cwd=work)
        finally:
            if uid is not None:
                _kill_uid(uid)  # everything it started, setsid'd children too
                for name, host in dirs:  # what the command wrote, back to the caller's directories
                    shutil.copytree(os.path.join(work, name), host, dirs_exist_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _take_uid():
    """A uid that no user and no other sandbox has: this process's sandboxes are told apart by
    a slot, other processes' by their pid (two trainers clash only if their pids agree modulo
    a million)."""
    with _lock:
        slot = min(set(range(999)) - {uid % 1000 for uid in _uids})  # (999: check()'s probe)
        uid = SANDBOX_UID_BASE + (os.getpid() % 1_000_000) * 1000 + slot
        _uids.add(uid)
    return uid


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


def _toolchain(tool):
    """The toolchain directory to mount for a tool outside the system directories, or None."""
    if not tool or not os.path.isabs(tool):
        return None
    real = os.path.realpath(tool)
    if real.startswith(tuple(d + "/" for d in SYSTEM_DIRS)):
        return None
    return os.path.dirname(os.path.dirname(real))


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


def _bwrap_argv(bwrap, files, binds, uid):
    """bubblewrap's command line, up to the limits and the command: files [(fd, path)] are
    copied into the sandbox, binds: bubblewrap's words that mount directories. uid: where a root
    trainer runs it, bubblewrap runs as root without a user namespace (so it can mount what
    only root reaches, a toolchain under /root) and hands the command to `uid`; anyone else
    runs it in a user namespace of their own."""
    namespaces = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    if uid is None:
        namespaces += ["--unshare-user", "--cap-drop", "ALL"]
        if "--disable-userns" in _bwrap_options(bwrap):  # bubblewrap >= 0.8: no nested user namespace either
            namespaces.append("--disable-userns")
    else:  # just what setpriv needs to switch users, and gives up with them
        namespaces += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
    argv = [bwrap, *namespaces, "--as-pid-1", "--die-with-parent", "--new-session", "--hostname", "sandbox"]
    for path in SYSTEM_DIRS:
        if os.path.islink(path):  # merged /usr: /bin -> usr/bin
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev", "--dir", "/prog"]
    sized = "--size" in _bwrap_options(bwrap)
    for directory, size in (("/tmp", TMPFS_SIZE), ("/work", TMPFS_SIZE), ("/dev/shm", SHM_SIZE)):
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
    """The options this bubblewrap knows (older ones lack --size and --disable-userns)."""
    return set(re.findall(r"--[a-z-]+", subprocess.run([bwrap, "--help"], capture_output=True, text=True).stdout))


# ----------------------------------------------------------------------------- memory cgroups

@functools.lru_cache(maxsize=None)
def _cgroup_parent():
    """(version, directory) in which this process can make a memory cgroup per sandbox, or None.
    cgroup v2: a directory "oorl-sandbox" beside the root's children, where the root offers the
    memory controller and lets us enable it (as root on a host; a container's or a user's own
    cgroup holds processes, so it cannot). cgroup v1: a child of our own memory cgroup."""
    try:
        with open("/proc/self/cgroup") as file:
            own = {controllers: path for _, controllers, path in (line.rstrip("\n").split(":", 2) for line in file)}
        with open("/proc/self/mountinfo") as file:
            mounts = [line.split() for line in file]
        for fields in mounts:
            mount_point, fstype, options = fields[4], fields[fields.index("-") + 1], fields[-1]
            if fstype == "cgroup2":
                with open(os.path.join(mount_point, "cgroup.controllers")) as file:
                    if "memory" not in file.read().split():
                        continue
                parent = os.path.join(mount_point, "oorl-sandbox")
                os.makedirs(parent, exist_ok=True)
                for directory in (mount_point, parent):
                    with open(os.path.join(directory, "cgroup.subtree_control"), "w") as file:
                        file.write("+memory")
                return 2, parent
            if fstype == "cgroup" and "memory" in options.split(","):
                path = next(p for c, p in own.items() if "memory" in c.split(","))
                parent = mount_point + path
                probe = tempfile.mkdtemp(prefix=f"oorl-probe-{os.getpid()}-", dir=parent)
                os.rmdir(probe)
                return 1, parent
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    return None


def _make_cgroup(memory):
    """(version, path) of a fresh memory cgroup that holds `memory` bytes at most, swap
    included, or None where this process cannot make one."""
    found = _cgroup_parent()
    if found is None:
        return None
    version, parent = found
    path = os.path.join(parent, f"sandbox-{os.getpid()}-{next(_cgroup_names)}")
    try:
        os.mkdir(path)
        settings = ({"memory.max": memory, "memory.swap.max": 0} if version == 2 else
                    {"memory.limit_in_bytes": memory, "memory.memsw.limit_in_bytes": memory})
        for name, value in settings.items():
            if os.path.exists(os.path.join(path, name)):  # swap accounting may be off
                with open(os.path.join(path, name), "w") as file:
                    file.write(str(value))
    except OSError:
        _remove_cgroup((version, path))
        return None
    return version, path


def _in_cgroup(cgroup):
    """The words that move the rest of a command line into the cgroup before it starts."""
    if cgroup is None:
        return []
    return ["/bin/sh", "-c", 'echo 0 > "$0" && exec "$@"', os.path.join(cgroup[1], "cgroup.procs")]


def _oom_killed(cgroup):
    version, path = cgroup
    try:
        with open(os.path.join(path, "memory.events" if version == 2 else "memory.oom_control")) as file:
            counts = dict(line.split() for line in file if line.strip())
        return int(counts.get("oom_kill", 0)) > 0
    except (OSError, ValueError):
        return False


def _remove_cgroup(cgroup):
    """Kills whatever is left in the cgroup, then removes it."""
    path = cgroup[1]
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
            return
        except FileNotFoundError:
            return
        except OSError:  # still busy: its processes are dying
            time.sleep(0.01)


# ----------------------------------------------------------------------------- spawning and killing

def _fill(words, mapping):
    for placeholder, value in mapping.items():
        words = tuple(word.replace(placeholder, value) for word in words)
    return words


def _fill_pairs(pairs, mapping):
    return [(name, _fill((value,), mapping)[0]) for name, value in pairs]


def _spawn(argv, stdin, wall_clock, pass_fds, env, bwrap, cwd="/"):
    """Runs argv in a new session (its own process group) with a wall-clock timeout and capped
    output. Returns (status, returncode, stdout, stderr); status is None if it ended by itself.

    bubblewrap (the word `bwrap` of argv, after the words that set the cgroup and the user)
    gets an --info-fd through which it tells the pid of the sandbox's PID 1. On a timeout that one is killed, which ends its whole PID namespace, and bwrap reaps
    it and exits. (Killing bwrap first would orphan it: a zombie for whoever is PID 1, which in
    a container may be the trainer itself, and it never reaps.)"""
    info_read, info_write = os.pipe() if bwrap else (-1, -1)
    if bwrap:
        at = argv.index(bwrap) + 1
        argv, pass_fds = [*argv[:at], "--info-fd", str(info_write), *argv[at:]], [*pass_fds, info_write]
    stdin_file = os.memfd_create("stdin")  # a file, not a pipe: no deadlock on a large input
    os.write(stdin_file, stdin)
    os.lseek(stdin_file, 0, os.SEEK_SET)
    try:
        proc = subprocess.Popen(argv, stdin=stdin_file, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd=cwd, env=env, pass_fds=pass_fds, start_new_session=True)
    finally:
        os.close(stdin_file)
        if bwrap:
            os.close(info_write)
    out, err, exited = proc.stdout.fileno(), proc.stderr.fileno(), os.pidfd_open(proc.pid)
    output = {out: bytearray(), err: bytearray(), info_read: bytearray()}
    status, deadline, has_exited = None, time.monotonic() + wall_clock, False
    with selectors.DefaultSelector() as selector:
        for fd in (out, err, exited) + ((info_read,) if bwrap else ()):
            selector.register(fd, selectors.EVENT_READ)
        while status is None and len(selector.get_map()) > (0 if has_exited else 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0 and not has_exited:
                status = "timeout"
                break
            # After the exit only what is already in the pipes is read: a child that escaped
            # (possible without namespaces) and holds them open must not hold us up.
            events = selector.select(0 if has_exited else remaining)
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
        if status and bwrap:  # bwrap writes its info as soon as the sandbox exists
            while info_read in selector.get_map() and selector.select(1.0) and (data := os.read(info_read, 4096)):
                output[info_read] += data
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
    return status, proc.returncode, bytes(output[out]), bytes(output[err])


def _kill_sandbox(proc, info):
    """Kills the PID 1 of bwrap's sandbox (pid from bwrap's --info-fd JSON) and lets bwrap reap
    it. Through a pidfd, checked to be bwrap's child, so that a reused pid is never hit."""
    try:
        pid = json.loads(info)["child-pid"]
        pidfd = os.pidfd_open(pid)
    except (ValueError, KeyError, ProcessLookupError):
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


def _first_lines(text, n):
    return "\n".join(text.strip().splitlines()[:n])


if __name__ == "__main__":
    mode = check()
    cgroup = _cgroup_parent() if USE_CGROUP else None
    print(f"sandbox: {mode}, commands run as {_who()}")
    print("memory cgroup per sandbox: " + (f"v{cgroup[0]}, under {cgroup[1]}" if cgroup else
                                            "none (bounded by the address-space limit x the process cap)"))
