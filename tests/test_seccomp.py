"""
Tests for seccomp.py: no sandbox makes a nested user namespace, root trainer or not (sandbox.run
with the system's python3 as the command; the keyrings are tested in tests/test_sandbox.py, with
what a sandbox could leave to the next).

    python -m pytest tests/test_seccomp.py
"""
import os

import pytest

import sandbox
import seccomp
from test_sandbox import PYTHON, RUNTIME


NESTED_USER_NAMESPACES = (
    "import ctypes, os, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "clone, clone3 = map(int, sys.argv[1:])\n"
    "def outcome(result):\n"
    "    return 'made' if result >= 0 else os.strerror(ctypes.get_errno())\n"
    "print('unshare', outcome(libc.unshare(0x10000000)))\n"       # CLONE_NEWUSER
    "pid = libc.syscall(clone, 0x10000000 | 17, 0, 0, 0, 0)\n"     # CLONE_NEWUSER | SIGCHLD, as fork
    "if pid == 0:\n"
    "    os._exit(0)\n"
    "if pid > 0:\n"
    "    os.waitpid(pid, 0)\n"
    "print('clone', outcome(pid))\n"
    "print('clone3', outcome(libc.syscall(clone3, 0, 0)))\n")


def test_no_sandbox_makes_a_nested_user_namespace():
    """A root trainer's sandboxes have no user namespace of their own, so bubblewrap's
    --disable-userns cannot apply: the seccomp filter refuses unshare and clone with
    CLONE_NEWUSER (and clone3, whose flags it cannot read)."""
    if os.uname().machine not in seccomp.ARCHES:
        pytest.skip(f"no seccomp filter for {os.uname().machine}")
    _, _, clone, clone3, _ = seccomp.ARCHES[os.uname().machine]
    result = sandbox.run([PYTHON, "-c", NESTED_USER_NAMESPACES, str(clone), str(clone3)], runtime=RUNTIME)
    assert result.status == "ok", result
    assert result.stdout.decode().splitlines() == ["unshare Operation not permitted", "clone Operation not permitted",
                                                   "clone3 Function not implemented"]
