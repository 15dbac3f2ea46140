"""
sandbox.py: runs a command over a few files in an isolated, throw-away directory, with limits,
and returns its status and output. It knows nothing of languages, compilers or tests (reward.py
does); it only isolates.

    import sandbox
    sandbox.run(["/usr/bin/python3", "{prog}/main.py"], files=[("/tmp/x.py", "main.py")], stdin=b"1\\n")
    # Result(status='ok', stdout=b'...', stderr=b'', exit_code=0)

    python sandbox.py     # which isolation this machine gives

An RL step runs hundreds of programs written by a model that is still learning: some loop
forever, some allocate without end, a few would do worse if they could. Each runs in a sandbox
built from trusted parts, layer by layer:

  bubblewrap (`bwrap`, the sandbox under Flatpak): new user, PID, network, IPC, UTS and mount
      namespaces. The program sees a fresh root with the system directories read-only, a copy of
      its own files in /prog and two small private tmpfs, /work (its working directory and
      $HOME) and /tmp, which vanish with it: nothing it writes reaches the disk. It sees no
      other process (so not the trainer's /proc/PID/environ) and no network. It is PID 1 of its
      namespace, so when it exits the kernel kills everything it left behind.
  resource limits, set by `prlimit` inside the sandbox: address space, CPU time, file size,
      open files, processes.
  a wall-clock timeout that kills the whole sandbox, and capped stdout/stderr ("output_limit").
  a scrubbed environment: no variable of the trainer reaches the program.
  an unprivileged user: a trainer running as root starts programs as `nobody`.

Fork bombs. RLIMIT_NPROC is the one bound on processes short of cgroups, and the kernel ignores
it for root (it checks the real uid): that is why root hands programs to nobody. Set inside the
sandbox's fresh user namespace, it counts only that sandbox's processes (Linux >= 5.14 counts
per user namespace), so concurrent sandboxes do not starve each other and the user's own
processes do not count. What a bomb makes meanwhile dies with its PID namespace at the timeout.
(Older kernels count all of the user's processes, so there the limit is left unset.)

Where bubblewrap is missing or cannot create namespaces, commands run with rlimits and process
groups only, and a warning says so once: then nothing stops writes outside the working
directory, the network, or children that escape the process group.
"""
import dataclasses
import functools
import json
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
OPEN_FILES = 256           # the JVM opens its modules file, jars and a few sockets
PROCESSES = 128            # tasks (threads count) per sandbox: the JVM and node start ~20
PROBE_TIMEOUT = 10.0       # seconds for the one-time check that bubblewrap works here
SANDBOX_UID = 65534        # `nobody`: who runs the commands of a trainer running as root
# System directories first: a shim in $HOME (pyenv, nvm) cannot run in the sandbox.
SEARCH_PATH = os.pathsep.join(["/usr/local/bin", "/usr/bin", "/bin", os.environ.get("PATH", "")])
SYSTEM_DIRS = ("/usr", "/etc", "/opt", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")  # read-only


@dataclasses.dataclass(frozen=True)
class Result:
    status: str         # "ok" (exit 0), "runtime_error" (any other exit), "timeout", "output_limit"
    stdout: bytes       # at most OUTPUT_LIMIT bytes
    stderr: bytes
    exit_code: int = 0  # the command's exit code (128 + n: killed by signal n); None on a timeout


_lock = threading.Lock()
MODE = None  # "bwrap" or "rlimits": decided by check() at first use


def check():
    """Probes once whether bubblewrap works here, as the user who will run the commands."""
    global MODE
    with _lock:
        if MODE is None:
            if shutil.which("prlimit", path=SEARCH_PATH) is None:
                raise RuntimeError("sandbox.py needs `prlimit` to set resource limits: apt-get install util-linux")
            problem = "bubblewrap is not installed (apt-get install bubblewrap)"
            if shutil.which("bwrap", path=SEARCH_PATH):
                MODE = "bwrap"
                with open("/bin/true", "rb") as true:
                    for as_user in {None, _run_as()}:
                        argv = _bwrap_argv([(true.fileno(), "/prog/true")], [], None, as_user) + ["/prog/true"]
                        _, code, _, err = _spawn(argv, b"", PROBE_TIMEOUT, [true.fileno()], _environment({}), as_user)
                        if code != 0:
                            MODE, problem = None, ("bubblewrap cannot create its namespaces here (unprivileged "
                                                   f"user namespaces disabled?): {_first_lines(err.decode(), 3)}")
            if MODE is None:
                MODE = "rlimits"
                warnings.warn(f"sandbox.py: {problem}. Commands now run with resource limits and process groups "
                              "only: NO namespaces, so they can write outside their directory, reach the network "
                              "and leave escaped children behind. Do not train untrusted models like this.",
                              RuntimeWarning, stacklevel=3)
        return MODE


def run(argv, files=(), stdin=b"", timeout=2.0, memory=256 * MiB, file_size=FILE_SIZE, env=(), dirs=(),
        unprivileged=True):
    """Runs argv in a fresh sandbox and returns a Result.

    argv[0] is an absolute path (a tool outside the system directories, such as a rustup
    toolchain, is mounted read-only with the two directories above it). In argv and in env's
    values, "{prog}" stands for the directory that holds `files` ([(host path, name)], copied
    read-only) and "{name}" for each of `dirs` ([(name, host directory)], mounted writable: a
    compiler's output). env: [(name, value)] added to a scrubbed environment. memory: the
    address space of each process; timeout: seconds of wall clock (and, rounded up, of CPU).
    unprivileged: a trainer running as root runs the command as nobody."""
    as_user = _run_as() if unprivileged else None
    if check() == "bwrap":
        paths = {"{prog}": "/prog", **{"{%s}" % name: f"/{name}" for name, _ in dirs}}
        fds = [os.open(host, os.O_RDONLY | os.O_CLOEXEC) for host, _ in files]
        try:
            full = _bwrap_argv([(fd, f"/prog/{name}") for fd, (_, name) in zip(fds, files)],
                               [(host, f"/{name}") for name, host in dirs], argv[0], as_user)
            full += _limits(memory, timeout, file_size, as_user) + list(_fill(argv, paths))
            return _result(*_spawn(full, stdin, timeout, fds, _environment(dict(_fill_pairs(env, paths))), as_user))
        finally:
            for fd in fds:
                os.close(fd)
    work = tempfile.mkdtemp(prefix="oorl-run-")  # no bubblewrap: one host directory, removed after
    try:
        for host, name in files:
            shutil.copy(host, os.path.join(work, name))
        paths = {"{prog}": work, **{"{%s}" % name: host for name, host in dirs}}
        environment = {**_environment(dict(_fill_pairs(env, paths))), "HOME": work, "TMPDIR": work}
        full = _limits(memory, timeout, file_size, None) + list(_fill(argv, paths))
        return _result(*_spawn(full, stdin, timeout, [], environment, None, cwd=work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _result(status, code, out, err):
    if status is None:  # it ended by itself; bubblewrap says "killed by signal n" as 128 + n
        out_of_cpu = code in (-signal.SIGXCPU, 128 + signal.SIGXCPU)
        status = "ok" if code == 0 else "timeout" if out_of_cpu else "runtime_error"
    return Result(status, out, err, code)


def _run_as():
    """(uid, gid) of the programs: root hands them to nobody, anyone else runs them as themself."""
    return (SANDBOX_UID, SANDBOX_UID) if os.geteuid() == 0 else None


def _environment(extra):
    """The whole environment a program gets: nothing of the trainer's."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/work", "TMPDIR": "/tmp", "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8", **extra}


def _limits(memory, timeout, file_size, as_user):
    limits = [f"--as={memory}", f"--cpu={int(timeout) + 1}:{int(timeout) + 2}", f"--fsize={file_size}",
              f"--nofile={OPEN_FILES}", "--core=0"]
    kernel = tuple(int(x) for x in re.match(r"(\d+)\.(\d+)", os.uname().release).groups())
    if MODE == "bwrap" and (as_user or os.geteuid() != 0) and kernel >= (5, 14):
        limits.append(f"--nproc={PROCESSES}")  # see "Fork bombs" above
    return [shutil.which("prlimit", path=SEARCH_PATH), *limits, "--"]


def _bwrap_argv(files, binds, tool, as_user):
    """bubblewrap's command line: files [(fd, path)] are copied into the sandbox, binds [(host
    dir, dir)] mounted writable (a compiler's output); a tool outside the system directories (a
    rustup toolchain's bin/rustc) is mounted with its toolchain, for the invoking user only."""
    bwrap = shutil.which("bwrap", path=SEARCH_PATH)
    argv = [bwrap, "--unshare-all", "--unshare-user", "--as-pid-1", "--die-with-parent", "--new-session",
            "--cap-drop", "ALL", "--hostname", "sandbox"]
    if "--disable-userns" in _bwrap_options(bwrap):  # bubblewrap >= 0.8: no nested user namespace either
        argv.append("--disable-userns")
    toolchains = ()
    if tool and os.path.isabs(tool) and not as_user:
        real = os.path.realpath(tool)
        if not real.startswith(tuple(d + "/" for d in SYSTEM_DIRS)):
            toolchains = (os.path.dirname(os.path.dirname(real)),)
    for path in SYSTEM_DIRS + toolchains:
        if os.path.islink(path):  # merged /usr: /bin -> usr/bin
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev", "--dir", "/prog"]
    for directory in ("/tmp", "/work"):
        argv += (["--size", str(TMPFS_SIZE)] if "--size" in _bwrap_options(bwrap) else []) + ["--tmpfs", directory]
    for fd, path in files:
        argv += ["--perms", "0555", "--file", str(fd), path]
    for host_dir, path in binds:
        argv += ["--bind", host_dir, path]
    return argv + ["--remount-ro", "/", "--chdir", "/work", "--"]


@functools.lru_cache(maxsize=None)
def _bwrap_options(bwrap):
    """The options this bubblewrap knows (older ones lack --size and --disable-userns)."""
    return set(re.findall(r"--[a-z-]+", subprocess.run([bwrap, "--help"], capture_output=True, text=True).stdout))


def _fill(words, mapping):
    for placeholder, value in mapping.items():
        words = tuple(word.replace(placeholder, value) for word in words)
    return words


def _fill_pairs(pairs, mapping):
    return [(name, _fill((value,), mapping)[0]) for name, value in pairs]


def _spawn(argv, stdin, timeout, pass_fds, env, as_user, cwd="/"):
    """Runs argv in a new session (its own process group) with a wall-clock timeout and capped
    output. Returns (status, returncode, stdout, stderr); status is None if it ended by itself.

    bubblewrap (argv[0]) gets an --info-fd through which it tells the pid of the sandbox's
    PID 1. On a timeout that one is killed, which ends its whole PID namespace, and bwrap reaps
    it and exits. (Killing bwrap first would orphan it: a zombie for whoever is PID 1, which in
    a container may be the trainer itself, and it never reaps.)"""
    bwrap = os.path.basename(argv[0]) == "bwrap"
    info_read, info_write = os.pipe() if bwrap else (-1, -1)
    if bwrap:
        argv, pass_fds = [argv[0], "--info-fd", str(info_write), *argv[1:]], [*pass_fds, info_write]
    stdin_file = os.memfd_create("stdin")  # a file, not a pipe: no deadlock on a large input
    os.write(stdin_file, stdin)
    os.lseek(stdin_file, 0, os.SEEK_SET)
    user = dict(user=as_user[0], group=as_user[1], extra_groups=[]) if as_user else {}
    try:
        proc = subprocess.Popen(argv, stdin=stdin_file, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd=cwd, env=env, pass_fds=pass_fds, start_new_session=True, **user)
    finally:
        os.close(stdin_file)
        if bwrap:
            os.close(info_write)
    out, err, exited = proc.stdout.fileno(), proc.stderr.fileno(), os.pidfd_open(proc.pid)
    output = {out: bytearray(), err: bytearray(), info_read: bytearray()}
    status, deadline, has_exited = None, time.monotonic() + timeout, False
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
    print(f"sandbox: {mode}" + (f", commands run as uid {SANDBOX_UID}" if mode == "bwrap" and _run_as() else ""))
