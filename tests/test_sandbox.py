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

import sandbox

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = shutil.which("python3", path="/usr/bin:/bin")  # the system's: nobody can run it
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
              "bomb = sandbox.run(['{prog}/bomb'], [(d + '/bomb', 'bomb')], timeout=2.0)\n"
              "print(json.dumps([sandbox.check(), os.getuid()] + [[r.status, r.stdout.decode()] for r in (py, cc, bomb)]))\n")
    home = tempfile.mkdtemp()
    try:
        shutil.copy(os.path.join(REPO, "sandbox.py"), home)
        os.chmod(home, 0o755)
        user = {}
        if os.geteuid() == 0:
            os.chown(home, sandbox.SANDBOX_UID, sandbox.SANDBOX_UID)
            user = dict(user=sandbox.SANDBOX_UID, group=sandbox.SANDBOX_UID, extra_groups=[])
        done = subprocess.run([PYTHON, "-c", script, FORK_BOMB], cwd=home, capture_output=True, text=True,
                              env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "TMPDIR": home}, **user)
        assert done.returncode == 0, done.stderr
        mode, uid, *results = json.loads(done.stdout)
    finally:
        shutil.rmtree(home)
    assert mode == "bwrap" and uid != 0
    assert [r[0] for r in results] == ["ok", "ok", "timeout"], results
    assert results[0][1] == "42\n"
