"""
Tests for sandbox.py: isolation alone, with system tools (python3, gcc) as the commands (gcc's
runtime as languages.py finds it); the attacks in every language are in tests/test_reward.py,
the cgroups', the mount set's and the seccomp filter's own in tests/test_cgroups.py,
tests/test_mounts.py and tests/test_seccomp.py.

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
import warnings

import pytest

import cgroups
import languages
import mounts
import sandbox
import seccomp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = shutil.which("python3", path="/usr/bin:/bin")  # the system's: nobody can run it
STDLIB = subprocess.run([PYTHON, "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
                        capture_output=True, text=True).stdout.strip()
RUNTIME = (STDLIB,)  # with PYTHON itself (argv[0]): what a Python command needs
NOBODY = 65534  # the user a root test process becomes to test an unprivileged trainer
FORK_BOMB = "#include <unistd.h>\nint main(void) {\n    for (;;) fork();\n}\n"


def test_works_for_an_unprivileged_user():
    """Users run the trainer as themselves: run, compile, and contain a fork bomb without root
    (a root test process runs this part as nobody)."""
    script = ("import json, os, sys, tempfile, sandbox\n"
              "d = tempfile.mkdtemp()\n"
              "open(d + '/bomb.c', 'w').write(sys.argv[1])\n"
              "python, gcc, libc = json.loads(sys.argv[2])\n"
              "py = sandbox.run(['/usr/bin/python3', '-c', 'print(6 * 7)'], runtime=python)\n"
              "cc = sandbox.run(['/usr/bin/gcc', '-o', '{out}/bomb', '{prog}/bomb.c'], [(d + '/bomb.c', 'bomb.c')],\n"
              "                 timeout=30, memory=1 << 30, dirs=[('out', d)], runtime=gcc)\n"
              "bomb = sandbox.run(['{prog}/bomb'], [(d + '/bomb', 'bomb')], timeout=1.0, runtime=libc)\n"
              "print(json.dumps([sandbox.check(), os.getuid()] + [[r.status, r.stdout.decode()] for r in (py, cc, bomb)]))\n")
    home = tempfile.mkdtemp()
    try:
        for room in ("sandbox.py", "cgroups.py", "mounts.py", "seccomp.py", "spawn.py"):
            shutil.copy(os.path.join(REPO, room), home)
        os.chmod(home, 0o755)
        user = {}
        if os.geteuid() == 0:
            os.chown(home, NOBODY, NOBODY)
            user = dict(user=NOBODY, group=NOBODY, extra_groups=[])
        runtimes = json.dumps([RUNTIME, languages.runtime("c", "check"), languages.runtime("c", "run")])
        done = subprocess.run([PYTHON, "-c", script, FORK_BOMB, runtimes], cwd=home, capture_output=True, text=True,
                              env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "TMPDIR": home}, **user)
        assert done.returncode == 0, done.stderr
        mode, uid, *results = json.loads(done.stdout)
    finally:
        shutil.rmtree(home)
    assert mode == "bwrap" and uid != 0
    assert [r[0] for r in results] == ["ok", "ok", "timeout"], results
    assert results[0][1] == "42\n"


# ----------------------------------------------------------------------------- no bubblewrap

def test_without_bubblewrap_model_code_is_refused_unless_opted_in(monkeypatch, without_bubblewrap):
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


def test_reduced_isolation_never_runs_as_root_and_kills_the_whole_tree(monkeypatch, without_bubblewrap):
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


# ----------------------------------------------------------------------------- infrastructure failures

def test_only_the_sandboxs_own_failures_are_infra_errors(monkeypatch):
    """bubblewrap failing to set up and a cgroup that cannot be made are "infra_error"; a command
    that prints what bubblewrap prints when it fails is the command's own failure."""
    sandbox.check()  # (bubblewrap probed before it fails)
    fake = sandbox.run([PYTHON, "-c", "import sys\nsys.stderr.write(\"bwrap: Can't find source path /x\\n\")\n"
                                      "sys.exit(1)\n"], runtime=RUNTIME)
    assert fake.status == "runtime_error", fake
    system_mounts = mounts.system_mounts
    monkeypatch.setattr(mounts, "system_mounts",
                        lambda runtime, loader: [*system_mounts(runtime, loader), "--ro-bind", "/oorl-missing", "/x"])
    broken = sandbox.run([PYTHON, "-c", "print('ran')"], runtime=RUNTIME)
    assert broken.status == "infra_error" and broken.exit_code is None and b"bwrap" in broken.stderr, broken
    monkeypatch.undo()

    def refuse(memory, processes):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cgroups, "make", refuse)
    assert sandbox.run([PYTHON, "-c", "print('ran')"], runtime=RUNTIME).status == "infra_error"


def test_a_mechanism_the_machine_lacks_is_named_once(monkeypatch):
    monkeypatch.setattr(sandbox, "MODE", None)
    monkeypatch.setattr(seccomp, "filter_program", lambda: None)
    monkeypatch.setattr(cgroups, "cpu_parent", lambda: None)
    with pytest.warns(RuntimeWarning, match="the seccomp filter.*the whole-sandbox CPU budget"):
        assert sandbox.check() == "bwrap"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sandbox.check() == "bwrap"


# ----------------------------------------------------------------------------- the machinery out of the program's reach

# Fills every writable tmpfs (/tmp, /work: pages that belong to no process) in 4 KiB writes
# until refused: a program far smaller than bubblewrap's monitor, so that the OOM killer of a
# cgroup holding both would pick the monitor.
FILL_TMPFS = r"""
#include <fcntl.h>
#include <unistd.h>
static char page[4096];
int main(void) {
    const char *names[] = {"/tmp/a", "/tmp/b", "/tmp/c", "/tmp/d", "/work/a", "/work/b", "/work/c", "/work/d"};
    for (int i = 0; i < 8; i++) {
        int fd = open(names[i], O_WRONLY | O_CREAT, 0600);
        while (write(fd, page, sizeof page) == sizeof page)
            ;
        close(fd);
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def tmpfs_filler():
    """FILL_TMPFS built static (it needs no library in the sandbox)."""
    with tempfile.TemporaryDirectory() as scratch:
        with open(os.path.join(scratch, "fill.c"), "w") as file:
            file.write(FILL_TMPFS)
        subprocess.run(["gcc", "-static", "-O1", "-o", os.path.join(scratch, "fill"), os.path.join(scratch, "fill.c")],
                       check=True)
        yield os.path.join(scratch, "fill")


def test_a_program_cannot_make_its_verdict_an_infra_error(tmpfs_filler):
    """A program that fills its memory cgroup with pages no process owns, being smaller than
    bubblewrap's monitor, gets its own verdict: the monitor is not in its cgroup."""
    for _ in range(3):
        result = sandbox.run(["{prog}/fill"], [(tmpfs_filler, "fill")], timeout=2.0, memory=32 * sandbox.MiB,
                             runtime=())
        assert result.status == ("memory_limit" if cgroups.memory_parent() else "ok"), result


KEY_SYSCALLS = {"x86_64": (248, 249, 250), "aarch64": (217, 218, 219)}  # add_key, request_key, keyctl
KEYS = ("import ctypes, os, sys\n"  # add_key, request_key, keyctl(KEYCTL_READ), as sys.argv says
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "add_key, request_key, keyctl = map(int, sys.argv[1:4])\n"
        "def said(result):\n"
        "    return str(result) if result >= 0 else os.strerror(ctypes.get_errno())\n"
        "if sys.argv[4] == 'add':\n"
        "    secret = b'oorl-secret'\n"
        "    key = libc.syscall(add_key, b'user', b'oorl-left', secret, len(secret), -4)\n"  # the user keyring
        "    print('add_key', said(key))\n"
        "    if key >= 0:\n"
        "        print('setperm', said(libc.syscall(keyctl, 5, key, 0x3f3f3f3f)))\n"  # KEYCTL_SETPERM: all
        "else:\n"
        "    key = libc.syscall(request_key, b'user', b'oorl-left', None, 0)\n"
        "    print('request_key', said(key))\n"
        "    buffer = ctypes.create_string_buffer(64)\n"
        "    print('read', said(libc.syscall(keyctl, 11, key, buffer, 64)), buffer.value)\n")  # KEYCTL_READ
HONEST_THREADS = ("import threading\n"  # 4 tasks at once: the interpreter and 3 threads
                  "done = []\n"
                  "threads = [threading.Thread(target=done.append, args=(i,)) for i in range(3)]\n"
                  "for thread in threads:\n    thread.start()\n"
                  "for thread in threads:\n    thread.join()\n"
                  "print(sorted(done))\n")
SUBREAPER_TRAINER = """
import ctypes, json, sys
import sandbox
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: as a trainer that is PID 1 of a container
python, stdlib, filler, keys, honest, numbers = sys.argv[1:]
statuses = [sandbox.run(["{prog}/fill"], [(filler, "fill")], timeout=2.0, memory=32 << 20, processes=6,
                        runtime=()).status for _ in range(8)]
added = sandbox.run([python, "-c", keys, *numbers.split(), "add"], processes=6, runtime=(stdlib,))
found = sandbox.run([python, "-c", keys, *numbers.split(), "find"], processes=6, runtime=(stdlib,))
after = sandbox.run([python, "-c", honest], processes=6, runtime=(stdlib,))
print(json.dumps([statuses, added.stdout.decode(), found.stdout.decode(), after.status, after.stdout.decode()]))
"""


def test_nothing_of_a_sandbox_reaches_the_next_one(tmpfs_filler):
    """In a trainer that is a subreaper (orphans come to it, as to PID 1 of a container), eight
    sandboxes that fill their memory, then one that leaves a key in its user's keyring (opened
    to all), then an honest program of 4 tasks in the same slot, with 6 tasks allowed: no
    zombie counts against it, and the key was never made."""
    numbers = " ".join(map(str, KEY_SYSCALLS[os.uname().machine]))
    done = subprocess.run([PYTHON, "-c", SUBREAPER_TRAINER, PYTHON, STDLIB, tmpfs_filler, KEYS, HONEST_THREADS,
                           numbers], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    statuses, added, found, status, printed = json.loads(done.stdout)
    assert "infra_error" not in statuses, statuses
    assert added.split("\n")[0] == "add_key Operation not permitted", added
    assert "oorl-secret" not in found and found.split("\n")[0] == "request_key Operation not permitted", found
    assert (status, printed) == ("ok", "[0, 1, 2]\n")


def test_a_compilers_output_reaches_the_host_disk_only_through_the_bounded_copy():
    """rustc writes its object file beside its output: a program of one large static array
    makes it write hundreds of MiB. The output directory is a tmpfs of the sandbox, and what
    comes back to the host directory is bounded (copy_limit, by default FILE_SIZE)."""
    with tempfile.TemporaryDirectory() as out:
        with open(os.path.join(out, "main.rs"), "w") as file:
            file.write("static BIG: [u8; 200 << 20] = [1; 200 << 20];\nfn main() { println!(\"{}\", BIG[12345]); }\n")
        reached, done = 0, threading.Event()

        def sample():
            nonlocal reached
            while not done.is_set():
                reached = max(reached, sum(os.path.getsize(os.path.join(out, name)) for name in os.listdir(out)
                                           if os.path.isfile(os.path.join(out, name))))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            result = sandbox.run([languages.tool("rustc"), "-C", "opt-level=0", "-o", "{out}/main", "{out}/main.rs"],
                                 timeout=30, memory=2 << 30, processes=64, file_size=1 << 30,
                                 dirs=[("out", out)], runtime=languages.runtime("rust", "check"))
        finally:
            done.set()
            sampler.join()
        print(f"{result.status}: the host directory reached {reached / sandbox.MiB:.0f} MiB")
        assert reached <= sandbox.FILE_SIZE, f"{reached / sandbox.MiB:.0f} MiB reached the host disk"
        assert os.path.exists(os.path.join(out, "main.rs"))  # (what was there stays)
