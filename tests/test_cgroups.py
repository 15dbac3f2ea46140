"""
Tests for cgroups.py: one memory bound and one CPU budget for all of a sandbox's processes
together, where a per-process bound lets an attack through (sandbox.run with the system's
python3 as the command).

    python -m pytest tests/test_cgroups.py
"""
import threading
import time
import uuid

import pytest

import cgroups
import sandbox
from test_sandbox import PYTHON, RUNTIME, live_processes

SHM_FLOOD = ("import os\nwritten = 0\n"  # files in every writable tmpfs, 16 MiB each, until refused
             "for directory in ('/dev/shm', '/dev', '/tmp', '.'):\n"
             "    for i in range(200):\n"
             "        try:\n"
             "            with open(f'{directory}/flood-{i}', 'wb') as file:\n"
             "                file.write(b'x' * (16 << 20))\n"
             "            written += 16 << 20\n"
             "        except OSError:\n"
             "            break\n"
             "print(written >> 20, 'MiB written')\n")
CHILDREN = ("import os, time\n"  # 15 children touching 200 MiB each: 3 GiB in all, each under 256 MiB
            "for _ in range(15):\n"
            "    try:\n"
            "        if os.fork() == 0:\n"
            "            block = b'x' * (200 << 20)\n"
            "            time.sleep(4)\n"
            "            os._exit(0)\n"
            "    except OSError:\n"
            "        pass\n"
            "time.sleep(4)\n")


def host_memory_reached(marker, attack):
    """Runs attack() while sampling, every 10 ms, the host memory held by the attack: the growth
    of shared memory (tmpfs pages, /proc/meminfo Shmem) plus the anonymous and shared pages of
    the processes whose command line holds marker. Returns (the attack's result, peak bytes)."""
    def shmem():
        with open("/proc/meminfo") as file:
            return 1024 * int(next(line for line in file if line.startswith("Shmem:")).split()[1])

    def processes_memory():
        total = 0
        for pid in live_processes(marker):
            try:
                with open(f"/proc/{pid}/status") as file:
                    fields = dict(line.split(":", 1) for line in file if ":" in line)
                total += 1024 * sum(int(fields.get(k, "0 kB").split()[0]) for k in ("RssAnon", "RssShmem"))
            except OSError:
                pass
        return total

    baseline, peak, done = shmem(), 0, threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, shmem() - baseline + processes_memory())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = attack()
    finally:
        done.set()
        sampler.join()
    return result, peak


@pytest.mark.parametrize("cgroup", [True, False], ids=["cgroup-where-possible", "no-cgroup"])
@pytest.mark.parametrize("attack", ["shm_flood", "children"])
def test_memory_is_bounded_per_sandbox(attack, cgroup, monkeypatch):
    """Two attacks that a per-process bound lets through: files in /dev/shm and /dev (tmpfs,
    host memory), and many children each under the address-space limit. With a memory cgroup
    the sandbox holds at most `memory` in all; without one, a sized /dev/shm, a read-only /dev
    and the process cap bound it by processes x memory plus its small tmpfs."""
    monkeypatch.setattr(sandbox, "USE_CGROUP", cgroup)
    marker = f"attack-{uuid.uuid4().hex[:12]}"
    program = SHM_FLOOD if attack == "shm_flood" else CHILDREN
    memory = 256 * sandbox.MiB
    processes = sandbox.PROCESSES if cgroup else 4  # (with a cgroup, 15 children may start: it holds them)
    result, reached = host_memory_reached(marker, lambda: sandbox.run(
        [PYTHON, "-c", program, marker], timeout=6.0, memory=memory, processes=processes, runtime=RUNTIME))
    print(f"{attack}, cgroup {cgroups.memory_parent() if cgroup else None}: {result.status}, "
          f"host memory reached {reached / sandbox.MiB:.0f} MiB")
    if cgroup and cgroups.memory_parent():
        # (slack for the sampler: summed RSS counts a page that forked children share with
        # their parent once per child, and pages being freed between samples)
        bound = memory + 128 * sandbox.MiB
    else:
        bound = processes * memory + 2 * sandbox.TMPFS_SIZE + sandbox.SHM_SIZE
    assert reached <= bound, f"{attack} reached {reached / sandbox.MiB:.0f} MiB (bound {bound / sandbox.MiB:.0f} MiB)"
    assert live_processes(marker) == []


CPU_HOG = ("import os, time\n"  # 3 children spinning 1.8 s of CPU each, the parent 1.5 s: 6.9 s in all
           "def spin(seconds):\n"
           "    end = time.process_time() + seconds\n"
           "    while time.process_time() < end:\n"
           "        pass\n"
           "for _ in range(3):\n"
           "    if os.fork() == 0:\n"
           "        spin(1.8)\n"
           "        os._exit(0)\n"
           "spin(1.5)\n"
           "for _ in range(3):\n"
           "    os.wait()\n"
           "print('done')\n")


def test_the_cpu_budget_is_the_whole_sandboxs():
    """Each process stays under its own CPU time limit; together they are far over the budget."""
    if not cgroups.cpu_parent():
        pytest.skip("no cgroup with CPU accounting here: the budget is per process (see cgroups.py)")
    result = sandbox.run([PYTHON, "-c", CPU_HOG], timeout=2.0, runtime=RUNTIME)
    assert result.status == "timeout" and result.exit_code is not None, result  # (an exit code: not the wall clock)
