"""
spawn.py: starts one command, a sandbox's or not, and watches it to its end: its wall clock, its
CPU budget and its output's size, past any of which it is killed. With bubblewrap it also
finds the sandbox's PID 1, holds it before its command starts for the caller to act on
(sandbox.py moves it into its cgroups and fills its writable directories), and tells
bubblewrap's own failures from the command's. sandbox.py runs every command through it.

    status, returncode, stdout, stderr = spawn.run_watched(["/usr/bin/true"], b"", 5.0, [], {}, None, 1 << 20)
"""
import os
import re
import select
import selectors
import signal
import subprocess
import time

CPU_POLL = 0.05       # seconds between two reads of a sandbox's CPU time (its cgroup's count)
START_TIMEOUT = 10.0  # seconds for bubblewrap to make a sandbox and say which process is its PID 1


def run_watched(argv, stdin, wall_clock, pass_fds, env, bwrap, output_limit, json_status=False, cwd="/",
                cpu=None, start=None):
    """Runs argv in a new session (its own process group) with a wall-clock timeout and stdout and
    stderr capped at output_limit bytes each. cpu: (seconds, a function that reads the CPU seconds the sandbox used) or None.
    Returns (status, returncode, stdout, stderr); status is None if it ended by itself, else
    "timeout" (the wall clock), "cpu_time" (the CPU seconds), "output_limit", or "infra_error"
    (it never started the command: no process, or bubblewrap's own setup failed).

    bubblewrap (the word `bwrap` of argv) gets a status fd through which it tells the pid of
    the sandbox's PID 1 and, with --json-status-fd (json_status: this bubblewrap has it), the
    command's exit code: the latter only once the command itself started, so its absence tells bubblewrap's failures from the
    command's. PID 1 waits at --block-fd, its sandbox made, until start(pid, fd number) has
    run (moved it into its cgroups, say); a start that raises OSError is the sandbox's failure.
    On a timeout PID 1 is killed, which ends its whole PID namespace, and bwrap reaps it and
    exits. (Killing bwrap first would orphan it: a zombie for whoever is PID 1, which in a
    container may be the trainer itself, and it never reaps.)"""
    info_read, info_write = os.pipe() if bwrap else (-1, -1)
    block_read, block_write = os.pipe() if bwrap else (-1, -1)
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
                elif key.fd != info_read and len(output[key.fd]) + len(data) > output_limit:
                    output[key.fd] += data[:output_limit - len(output[key.fd])]
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
    deadline = time.monotonic() + START_TIMEOUT
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
