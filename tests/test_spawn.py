"""
Tests for spawn.py: a command is stopped by its wall clock and by its output's size, and its
output is kept up to the cap (the system's sh as the command, no sandbox).

    python -m pytest tests/test_spawn.py
"""
import shutil
import time

import spawn

SH = shutil.which("sh", path="/usr/bin:/bin")


def test_a_flood_is_cut_at_the_cap_and_a_sleeper_at_its_wall_clock():
    status, _, out, _ = spawn.run_watched([SH, "-c", "while :; do echo flood; done"], b"", 10.0, [], {}, None, 1000)
    assert (status, len(out)) == ("output_limit", 1000)
    started = time.monotonic()
    status, code, out, _ = spawn.run_watched([SH, "-c", "echo before; sleep 30"], b"", 0.5, [], {}, None, 1000)
    assert (status, out) == ("timeout", b"before\n") and time.monotonic() - started < 10


def test_a_command_that_ends_by_itself_has_no_status_and_its_own_exit_code():
    status, code, out, err = spawn.run_watched([SH, "-c", "cat; echo oops >&2; exit 3"], b"in\n", 10.0, [], {},
                                               None, 1000)
    assert (status, code, out, err) == (None, 3, b"in\n", b"oops\n")
