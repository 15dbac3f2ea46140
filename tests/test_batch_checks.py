"""Tests of batch_checks.py: each interpreted language's batch check keeps its contract, run here
directly by the host's interpreter (the compiled languages' checks, built by their warm-ups, are
tested through languages.check and reward.py)."""
import os
import subprocess

import pytest

import batch_checks

PROGRAMS = {  # (file, a good program, a broken one, the command that runs SCRIPT over directories)
    "python": ("main.py", 'print("ok")\n', "print(\n", lambda script: ["python3", "-I", "-S", "-c", script]),
    "javascript": ("main.js", 'console.log("ok");\n', "console.log(;\n", lambda script: ["node", "-e", script]),
    "bash": ("main.sh", "echo ok\n", "if then\n", lambda script: ["bash", "-c", script, "bash"]),
    "php": ("main.php", '<?php echo "ok";\n', "<?php echo (;\n", lambda script: ["php", "-n", "-r", script]),
}
SCRIPTS = {"python": batch_checks.PYTHON_CHECK_MANY, "javascript": batch_checks.JAVASCRIPT_CHECK_MANY,
           "bash": batch_checks.BASH_CHECK_MANY, "php": batch_checks.PHP_CHECK_MANY}


@pytest.mark.parametrize("lang", sorted(PROGRAMS))
def test_every_directory_is_done_and_only_the_broken_one_has_a_message(lang, tmp_path):
    name, good, broken, command = PROGRAMS[lang]
    dirs = []
    for i, source in enumerate([good, broken, good]):
        os.makedirs(tmp_path / str(i) / "prog")
        (tmp_path / str(i) / "prog" / name).write_text(source)
        dirs.append(str(tmp_path / str(i)))
    subprocess.run(command(SCRIPTS[lang]) + dirs, check=True, timeout=60, capture_output=True)
    assert [os.path.exists(os.path.join(d, "done")) for d in dirs] == [True] * 3
    assert [os.path.exists(os.path.join(d, "error.txt")) for d in dirs] == [False, True, False]
    assert open(os.path.join(dirs[1], "error.txt")).read().strip(), "the broken program's message is empty"
