"""
Tests for sandbox.py: isolation alone, with system tools (python3, gcc) as the commands; the
attacks in every language are in tests/test_reward.py.

    python -m pytest tests/test_sandbox.py
"""
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid

import pytest

import sandbox

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = shutil.which("python3", path="/usr/bin:/bin")  # the system's: nobody can run it
NOBODY = 65534  # the user a root test process becomes to test an unprivileged trainer
FORK_BOMB = "#include <unistd.h>\nint main(void) {\n    for (;;) fork();\n}\n"


def test_works_for_an_unprivileged_user():
    """Users run the trainer as themselves: run, compile, and contain a fork bomb without root
    (a root test process runs this part as nobody)."""
    script = ("import json, os, sys, tempfile, sandbox\n"
              "d = tempfile.mkdtemp()\n"
              "open(d + '/bomb.c', 'w').write(sys.argv[1])\n"
              "py = sandbox.run(['/usr/bin/python3', '-c', 'print(6 * 7)'])\n"
              "cc = sandbox.run(['/usr/bin/gcc', '-o', '{out}/bomb', '{prog}/bomb.c'], [(d + '/bomb.c', 'bomb.c')],\n"
              "                 timeout=30, memory=1 << 30, dirs=[('out', d)])\n"
              "bomb = sandbox.run(['{prog}/bomb'], [(d + '/bomb', 'bomb')], timeout=1.0)\n"
              "print(json.dumps([sandbox.check(), os.getuid()] + [[r.status, r.stdout.decode()] for r in (py, cc, bomb)]))\n")
    home = tempfile.mkdtemp()
    try:
        shutil.copy(os.path.join(REPO, "sandbox.py"), home)
        os.chmod(home, 0o755)
        user = {}
        if os.geteuid() == 0:
            os.chown(home, NOBODY, NOBODY)
            user = dict(user=NOBODY, group=NOBODY, extra_groups=[])
        done = subprocess.run([PYTHON, "-c", script, FORK_BOMB], cwd=home, capture_output=True, text=True,
                              env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "TMPDIR": home}, **user)
        assert done.returncode == 0, done.stderr
        mode, uid, *results = json.loads(done.stdout)
    finally:
        shutil.rmtree(home)
    assert mode == "bwrap" and uid != 0
    assert [r[0] for r in results] == ["ok", "ok", "timeout"], results
    assert results[0][1] == "42\n"


# ----------------------------------------------------------------------------- no bubblewrap

def without_bubblewrap(monkeypatch):
    """Makes this process behave as on a machine without bubblewrap (probed afresh)."""
    monkeypatch.setattr(sandbox, "BWRAP", "bwrap-not-installed")
    monkeypatch.setattr(sandbox, "MODE", None)
    monkeypatch.setattr(sandbox, "_reduced_allowed", False)
    monkeypatch.delenv("OORL_ALLOW_REDUCED_ISOLATION", raising=False)


def test_without_bubblewrap_model_code_is_refused_unless_opted_in(monkeypatch):
    without_bubblewrap(monkeypatch)
    for _ in range(2):  # every call, not only the first
        with pytest.raises(sandbox.Unavailable, match=r"apt-get install bubblewrap.*CAP_SYS_ADMIN.*user namespaces"
                                                      r".*OORL_ALLOW_REDUCED_ISOLATION=1.*allow_reduced_isolation"):
            sandbox.check()
        with pytest.raises(sandbox.Unavailable):
            sandbox.run([PYTHON, "-c", "print('ran')"])
    monkeypatch.setenv("OORL_ALLOW_REDUCED_ISOLATION", "1")
    with pytest.warns(RuntimeWarning, match="REDUCED isolation"):
        assert sandbox.check() == "reduced"
    monkeypatch.delenv("OORL_ALLOW_REDUCED_ISOLATION")
    monkeypatch.setattr(sandbox, "MODE", None)
    sandbox.allow_reduced_isolation()
    with pytest.warns(RuntimeWarning, match="REDUCED isolation"):
        assert sandbox.check() == "reduced"
    assert sandbox.run([PYTHON, "-c", "print('ran')"]).stdout == b"ran\n"


def live_processes(marker):
    """pids of live processes whose command line contains marker."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                if marker.encode() in file.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def test_reduced_isolation_never_runs_as_root_and_kills_the_whole_tree(monkeypatch):
    without_bubblewrap(monkeypatch)
    sandbox.allow_reduced_isolation()
    with pytest.warns(RuntimeWarning):
        sandbox.check()
    marker = f"87.{uuid.uuid4().int % 10**9}"  # `sleep 87.xxx`: findable in the process table
    program = ("import os, sys\n"
               "print(os.getuid(), os.geteuid())\n"
               "for path in ('/etc/shadow', f'/proc/{os.getppid()}/environ'):\n"
               "    try:\n        open(path).read(); print('read', path)\n"
               "    except OSError:\n        pass\n"
               "try:\n    open('/root/oorl-" + marker + "', 'w').write('x'); print('wrote /root')\n"
               "except OSError:\n    pass\n"
               "if os.fork() == 0:\n    os.setsid()\n    os.execvp('sleep', ['sleep', '" + marker + "'])\n"
               "print('parent done')\n")
    result = sandbox.run([PYTHON, "-c", program], timeout=5.0)
    assert result.status == "ok", result
    uid, euid = map(int, result.stdout.split(b"\n")[0].split())
    assert uid != 0 and euid != 0, "model code ran as root"
    assert b"read" not in result.stdout and b"wrote" not in result.stdout, result.stdout
    assert not os.path.exists(f"/root/oorl-{marker}")
    assert live_processes(marker) == [], "a setsid child outlived the sandbox"
    bomb = sandbox.run([PYTHON, "-c", "import os\nwhile True:\n    try:\n        os.fork()\n"
                                      "    except OSError:\n        pass\n", marker], timeout=0.5)
    assert bomb.status in ("timeout", "runtime_error")
    assert live_processes(marker) == [], "a fork bomb's processes outlived the sandbox"


# ----------------------------------------------------------------------------- memory, per sandbox

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
        [PYTHON, "-c", program, marker], timeout=6.0, memory=memory, processes=processes))
    print(f"{attack}, cgroup {sandbox._cgroup_parent() if cgroup else None}: {result.status}, "
          f"host memory reached {reached / sandbox.MiB:.0f} MiB")
    if cgroup and sandbox._cgroup_parent():
        # (slack for the sampler: summed RSS counts a page that forked children share with
        # their parent once per child, and pages being freed between samples)
        bound = memory + 128 * sandbox.MiB
    else:
        bound = processes * memory + 2 * sandbox.TMPFS_SIZE + sandbox.SHM_SIZE
    assert reached <= bound, f"{attack} reached {reached / sandbox.MiB:.0f} MiB (bound {bound / sandbox.MiB:.0f} MiB)"
    assert live_processes(marker) == []
