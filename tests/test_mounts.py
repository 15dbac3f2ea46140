"""
Tests for mounts.py: a sandbox sees its runtime and nothing else of the system (sandbox.run with
the system's python3 as the command).

    python -m pytest tests/test_mounts.py
"""
import json

import pytest

import sandbox
from test_sandbox import PYTHON, RUNTIME


def test_a_command_sees_its_runtime_and_nothing_else_of_the_system():
    """A Python command has python3 and its standard library: no shell, no other language's
    interpreter or compiler to hand its work to. A call that names no runtime is refused."""
    program = ("import json, os\n"
               "print(json.dumps([sorted(os.listdir('/usr/bin')), [path for path in ('/bin/sh', '/usr/bin/bash',"
               " '/usr/bin/gcc', '/usr/bin/node', '/usr/bin/perl') if os.path.exists(path)]]))\n")
    result = sandbox.run([PYTHON, "-c", program], runtime=RUNTIME)
    assert result.status == "ok", result
    programs, others = json.loads(result.stdout)
    assert others == []
    # (prlimit and setpriv start the command: they run only what the sandbox holds)
    assert all(name.startswith("python3") or name in ("prlimit", "setpriv") for name in programs), programs
    with pytest.raises(TypeError, match="runtime"):
        sandbox.run([PYTHON, "-c", "print('ran')"])
