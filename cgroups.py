"""
cgroups.py: the cgroups of one sandbox, which bound all of its processes together: its memory
(its tmpfs pages included), its CPU time and its number of tasks. sandbox.py makes them before a
sandbox starts, moves the sandbox's PID 1 into them before its command starts, reads them while
it runs and removes them after; `python sandbox.py` says which this machine gives.

    cgroup = cgroups.make(memory=256 << 20, processes=32)  # {"memory": (version, path), "cpu": ..., "pids": ...}
    cgroups.join(cgroup, pid)       # before the command starts: what it starts is born there
    cgroups.cpu_seconds(cgroup["cpu"]), cgroups.oom_killed(cgroup["memory"])
    cgroups.remove(cgroup)          # kills what is left in them

Each controller is used where this process may make cgroups of it (cgroup v2, or v1's memory,
cpuacct and pids); one it cannot use is left out of make()'s dict, and sandbox.py's rlimits
bound what it would have.
"""
import functools
import itertools
import os
import re
import signal
import tempfile
import time

_names = itertools.count()


@functools.lru_cache(maxsize=None)
def memory_parent():
    """(version, directory) in which this process can make a memory cgroup per sandbox, or None.
    cgroup v2: a directory "oorl-sandbox" beside the root's children, where the root offers the
    memory controller and lets us enable it (as root on a host; a container's or a user's own
    cgroup holds processes, so it cannot), and the pids controller with it where offered.
    cgroup v1: a child of our own memory cgroup."""
    try:
        for fields in _mounts():
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
                    try:  # (the pids controller is welcome, not needed: see pids_parent)
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
def cpu_parent():
    """(version, directory) in which this process can make a cgroup per sandbox that counts its
    CPU time, or None: on cgroup v2 the memory cgroup's parent (every v2 cgroup counts its CPU
    time in cpu.stat), on cgroup v1 a child of our own cgroup of the cpuacct controller."""
    memory = memory_parent()
    if memory and memory[0] == 2:
        return memory
    parent = _v1_parent("cpuacct")
    return (1, parent) if parent else None


@functools.lru_cache(maxsize=None)
def pids_parent():
    """(version, directory) in which this process can make a cgroup per sandbox that bounds its
    number of tasks, or None: on cgroup v2 the memory cgroup's parent where it enabled pids, on
    cgroup v1 a child of our own cgroup of the pids controller."""
    memory = memory_parent()
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
        for fields in _mounts():
            mount_point, fstype, options = fields[4], fields[fields.index("-") + 1], fields[-1]
            if fstype == "cgroup" and controller in options.split(","):
                parent = os.path.normpath(mount_point + next(p for c, p in own.items() if controller in c.split(",")))
                os.rmdir(tempfile.mkdtemp(prefix=f"oorl-probe-{os.getpid()}-", dir=parent))
                return parent
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    return None


def _mounts():
    with open("/proc/self/mountinfo") as file:
        return [line.split() for line in file]


def make(memory, processes):
    """{"memory": (version, path), "cpu": ..., "pids": ...}: the fresh cgroups of one sandbox (one
    directory for all on cgroup v2), the memory one holding `memory` bytes at most, swap
    included, the CPU one counting its CPU time, the pids one holding `processes` tasks at most;
    without the ones this process cannot make. Raises OSError (having removed what it made)
    where making one fails."""
    name, made = f"sandbox-{os.getpid()}-{next(_names)}", {}
    try:
        for kind, found in (("memory", memory_parent()), ("cpu", cpu_parent()),
                            ("pids", pids_parent())):
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
        remove(made)
        raise
    return made


def join(cgroup, pid):
    """Moves the process `pid` (the sandbox's PID 1, before its command starts) into the
    sandbox's cgroups: what it starts is born there. bubblewrap's monitor, its parent, stays
    out, so that nothing the command does to its cgroups (filling its memory with pages no
    process owns, so that the OOM killer picks the smallest process) can kill the monitor."""
    for path in sorted({path for _, path in cgroup.values()}):
        with open(os.path.join(path, "cgroup.procs"), "w") as file:
            file.write(str(pid))


def join_words(cgroup):
    """The words that move the rest of a command line into the cgroups before it starts (reduced
    isolation: no monitor to keep out of them)."""
    if not cgroup:
        return []
    procs = " ".join(sorted({os.path.join(path, "cgroup.procs") for _, path in cgroup.values()}))
    return ["/bin/sh", "-c", 'for procs in $0; do echo 0 > "$procs" || exit; done; exec "$@"', procs]


def cpu_seconds(cpu):
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


def oom_killed(memory):
    version, path = memory
    try:
        with open(os.path.join(path, "memory.events" if version == 2 else "memory.oom_control")) as file:
            counts = dict(line.split() for line in file if line.strip())
        return int(counts.get("oom_kill", 0)) > 0
    except (OSError, ValueError):
        return False


def remove(cgroup):
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
