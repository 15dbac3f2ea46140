"""
Tests for reward.py: statuses in every language, the hostile suite (each attack in every language
where it can be written), the compile cache under concurrent use, and the reward of eq. 4 with
its batches (compiles shared, one bad program failing alone, verdicts as one at a time).

    python -m pytest tests/test_reward.py          # the whole file (~1-2 minutes on 2 cores)

Hostile programs are run with short timeouts; each call's wall time is printed (pytest -s) and only
checked against a generous bound, which catches hangs without timing the machine.
"""
import collections
import dataclasses
import json
import os
import random
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

import cgroups
import languages
import mounts
import reward
import sandbox
import tasks
from tasks import EOT, LANGS

TOKEN = uuid.uuid4().hex[:12]  # marks what this test run's programs try to leave behind
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLACK = 10.0                   # seconds beyond the timeout that count as a hang (generous: no timing)


def timed_execute(program, lang, stdin="", timeout=2.0):
    start = time.monotonic()
    result = reward.execute(program, lang, stdin, timeout)
    elapsed = time.monotonic() - start
    print(f"{lang:>10}: {result.status:<14} {elapsed:5.2f} s (timeout {timeout} s)")
    assert elapsed < timeout + languages.COMPILE_TIMEOUT + SLACK, f"{lang} took {elapsed:.1f} s: something hangs"
    return result


def run_all(jobs, timeout=2.0):
    """[(program, lang)] -> executions, four at a time from threads (so part of the suite runs
    concurrently, as in training)."""
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda job: timed_execute(job[0], job[1], "", timeout), jobs))


def sandbox_processes(marker="/prog/"):
    """pids of live processes whose command line contains marker (every sandboxed command does)
    and that no sandbox holds any more: no bubblewrap and no Python process (a trainer, or a test
    running beside this one) among their ancestors."""
    def parent_and_name(pid):
        with open(f"/proc/{pid}/status") as file:
            fields = dict(line.split(":\t", 1) for line in file.read().splitlines() if ":\t" in line)
        return int(fields["PPid"]), fields["Name"].strip()

    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                if marker.encode() not in file.read():
                    continue
            ancestor, held = int(pid), False
            while ancestor > 1 and not held:
                ancestor, name = parent_and_name(ancestor)
                held = name == "bwrap" or name.startswith("python")
            if not held:
                found.append(int(pid))
        except (OSError, KeyError):
            pass
    return found


def assert_nothing_left(marker="/prog/"):
    for _ in range(20):  # a killed process may take a moment to disappear
        if not sandbox_processes(marker):
            break
        time.sleep(0.1)
    assert sandbox_processes(marker) == [], f"processes outlived their sandbox ({marker})"
    assert subprocess.run(["true"]).returncode == 0, "the test process can no longer start processes"


# ----------------------------------------------------------------------------- statuses, every language

def make_task(seed, lang):
    program, tests = tasks.generate(seed)
    return {"id": f"{seed}-{lang}", "tgt_lang": lang, "tests": tests, "n_args": program.n_args,
            "reference": tasks.render(program, lang)}, program


TASK_SEED = 6  # a one-argument program: the hand-written functions below take one argument `a`

RUNTIME_ERROR_F = {
    "python": "def f(a):\n    return [a][a + 100]",
    "c": "int f(int a) {\n    return *(volatile int *)0 + a;\n}",
    "cpp": "int f(int a) {\n    throw a;\n}",
    "java": "    public static int f(int a) {\n        return a / (a - a);\n    }",
    "javascript": "function f(a) {\n    return a.b.c;\n}",
    "bash": "f() {\n    exit 3\n}",
    "php": "function f($a) {\n    throw new Exception(\"boom\");\n}",
    "rust": "fn f(a: i32) -> i32 {\n    let v: Vec<i32> = Vec::new();\n    v[a as usize + 100]\n}",
    "go": "func f(a int) int {\n\tvar s []int\n\treturn s[a+100]\n}",
    "lua": "function f(a)\n    return nil + a\nend",
}
INFINITE_LOOP_F = {
    "python": "def f(a):\n    while True:\n        a += 1",
    "c": "int f(int a) {\n    volatile int x = a;\n    while (1) x++;\n    return x;\n}",
    "cpp": "int f(int a) {\n    volatile int x = a;\n    while (1) x++;\n    return x;\n}",
    "java": "    public static int f(int a) {\n        while (true) a++;\n    }",
    "javascript": "function f(a) {\n    while (true) a++;\n}",
    "bash": "f() {\n    while true; do :; done\n}",
    "php": "function f($a) {\n    while (true) $a++;\n}",
    "rust": "fn f(mut a: i32) -> i32 {\n    loop {\n        a = std::hint::black_box(a.wrapping_add(1));\n    }\n}",
    "go": "func f(a int) int {\n\tfor {\n\t\ta++\n\t}\n}",
    "lua": "function f(a)\n    while true do a = a + 1 end\nend",
}


def wrong_program(task):
    """Another one-argument program, whose outputs differ from the task's on its tests."""
    for seed in range(TASK_SEED + 1, 1000):
        program, _ = tasks.generate(seed)
        if program.n_args != 1:
            continue
        try:
            outputs = [str(tasks.evaluate(program, (int(line),))) for line, _ in task["tests"]]
        except tasks.OutOfDomain:
            continue
        if outputs != [expected for _, expected in task["tests"]]:
            return program
    raise AssertionError("no wrong program found")


@pytest.mark.parametrize("lang", LANGS)
def test_every_status_in_every_language(lang):
    task, program = make_task(TASK_SEED, lang)
    assert program.n_args == 1
    reference = task["reference"]
    completions = [
        reference,                                 # passes
        tasks.render(wrong_program(task), lang),   # compiles, runs, prints wrong numbers
        reference + "\n)(\n",                      # a syntax error after a well-formed f
        RUNTIME_ERROR_F[lang],
        reference + EOT,                           # the end-of-text token is not part of the code
        reference,                                 # cut off at the token limit: not well formed
        "the model wrote prose instead of code",   # no f at all
    ]
    truncated = [False] * 5 + [True, False]
    verdicts = reward.score_details(completions, [task] * len(completions), truncated)
    # an infinite loop, on its own with a short timeout (it burns a core until then)
    verdicts += reward.score_details([INFINITE_LOOP_F[lang]], [task], timeout=1.0)
    statuses = [v.status for v in verdicts]
    assert statuses == ["passed", "wrong_answer", "compile_error", "runtime_error", "passed", "malformed",
                        "malformed", "timeout"], [(v.status, v.error) for v in verdicts]
    assert [v.reward for v in verdicts] == [1.0, 0, 0, 0, 1.0, 0, 0, 0]
    assert verdicts[0].passed == verdicts[0].total == len(task["tests"])
    assert verdicts[1].passed < verdicts[1].total
    assert verdicts[2].error, "a compile error carries the compiler's message"


@pytest.mark.parametrize("lang", LANGS)
def test_the_heaviest_task_runs_in_half_the_run_budget(lang):
    # RUN_TIMEOUT is what a program stuck in a loop costs every RL step, so it is small; a correct
    # translation of any task must still pass with room to spare (a busier or slower machine)
    program, tests = tasks.heaviest()
    task = {"id": "heaviest", "tgt_lang": lang, "tests": tests, "n_args": 1, "reference": tasks.render(program, lang)}
    verdict = reward.score_details([task["reference"]], [task], timeout=reward.RUN_TIMEOUT / 2)[0]
    assert verdict.status == "passed", (verdict.status, verdict.error)


def children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.mark.parametrize("lang", ["python", "bash"])
def test_a_program_stuck_in_a_loop_costs_the_reward_under_a_cpu_second(lang):
    # a few completions of every RL step loop forever: each holds one of the reward's workers for
    # the whole run budget, which is a few times what the heaviest task needs (test above), not more
    task, _ = make_task(TASK_SEED, lang)
    before = children_cpu_seconds()
    verdict = reward.score_details([INFINITE_LOOP_F[lang]], [task])[0]
    spent = children_cpu_seconds() - before
    assert verdict.status == "timeout"
    budget = reward.RUN_TIMEOUT * languages.LANGUAGES[lang].run_budget_scale
    assert spent < budget + 0.5, f"a looping {lang} program used {spent:.2f} s of CPU before it was stopped"


def test_execute_ok_and_unknown_language():
    result = reward.execute("import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))", "python",
                            "1 2\n3\n")
    assert result == reward.Execution("ok", "6\n", "")
    with pytest.raises(ValueError, match="unknown language"):
        reward.execute("print(1)", "cobol")


def test_large_input_and_output_do_not_deadlock():
    data = "".join(f"{i} {i}\n" for i in range(50000))  # ~0.5 MB each way, beyond any pipe buffer
    result = reward.execute("import sys\nfor line in sys.stdin:\n    print(sum(map(int, line.split())))",
                            "python", data, timeout=20)
    assert result.status == "ok"
    assert result.stdout.splitlines()[-1] == str(2 * 49999)


# ----------------------------------------------------------------------------- delegation: one runtime per sandbox

def python_call(program):
    """Python code that prints f(*its arguments) for the task's program: what a completion that
    does not translate hands to python3."""
    source = tasks.render(program, "python").encode().hex()
    return f"exec(bytes.fromhex('{source}')); import sys; print(f(*map(int, sys.argv[1:])))"


def cpp_program(program):
    """The task's C++ function and a main that prints f(argv[1]): what a Python completion that
    does not translate hands to g++."""
    return ("#include <algorithm>\n#include <cstdio>\n#include <cstdlib>\nusing namespace std;\n"
            + tasks.render(program, "cpp")
            + '\nint main(int argc, char **argv) { printf("%d\\n", f(atoi(argv[1]))); }\n')


# Completions of a one-argument f that hand the source to another language's interpreter or
# compiler, in each target language, the ways a policy under reward pressure may find.
DELEGATIONS = {
    "python": lambda program: (
        "import os, subprocess\n\n"
        f"CPP = bytes.fromhex('{cpp_program(program).encode().hex()}').decode()\n\n"
        "def f(a):\n"
        "    if not os.path.exists('/tmp/delegate'):\n"
        "        open('/tmp/delegate.cpp', 'w').write(CPP)\n"
        "        subprocess.run(['g++', '-o', '/tmp/delegate', '/tmp/delegate.cpp'], check=True)\n"
        "    return int(subprocess.run(['/tmp/delegate', str(a)], capture_output=True, text=True).stdout)"),
    "c": lambda program: (
        "int f(int a) {\n    char command[8192];\n"
        f'    snprintf(command, sizeof command, "python3 -c \\"{python_call(program)}\\" %d", a);\n'
        '    FILE *p = popen(command, "r");\n    int r = 0;\n    fscanf(p, "%d", &r);\n    pclose(p);\n'
        "    return r;\n}"),
    "cpp": lambda program: (
        "#include <cstdio>\n\nint f(int a) {\n    char command[8192];\n"
        f'    snprintf(command, sizeof command, "python3 -c \\"{python_call(program)}\\" %d", a);\n'
        '    FILE *p = popen(command, "r");\n    int r = 0;\n    fscanf(p, "%d", &r);\n    pclose(p);\n'
        "    return r;\n}"),
    "java": lambda program: (
        "    public static int f(int a) {\n        try {\n"
        f'            Process p = new ProcessBuilder("python3", "-c", "{python_call(program)}",\n'
        "                                           String.valueOf(a)).start();\n"
        "            return Integer.parseInt(new String(p.getInputStream().readAllBytes()).trim());\n"
        "        } catch (IOException e) {\n            throw new UncheckedIOException(e);\n        }\n    }"),
    "javascript": lambda program: (
        "function f(a) {\n"
        f'    return Number(require("child_process").execFileSync("python3", ["-c", "{python_call(program)}",\n'
        "                                                                     String(a)]));\n"
        "}"),
    "bash": lambda program: f'f() {{\n    python3 -c "{python_call(program)}" "$1"\n}}',
    # no fork at all: python3 replaces bash and reads the tests itself
    "bash-exec": lambda program: (
        "exec python3 -c \"exec(bytes.fromhex('"
        + tasks.harness(tasks.render(program, "python"), "python", 1).encode().hex() + "'))\"\nf() {\n    :\n}"),
    "php": lambda program: (
        f'function f($a) {{\n    return intval(shell_exec("python3 -c \\"{python_call(program)}\\" " . $a));\n}}'),
    "rust": lambda program: (
        "fn f(a: i32) -> i32 {\n"
        f'    let out = std::process::Command::new("python3").arg("-c").arg("{python_call(program)}")\n'
        "        .arg(a.to_string()).output().unwrap();\n"
        "    String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()\n}"),
    "go": lambda program: (  # (the harness imports bufio, fmt, os, strconv and strings: no os/exec)
        "func f(a int) int {\n\tr, w, _ := os.Pipe()\n"
        f'\tp, err := os.StartProcess("/usr/bin/python3", []string{{"python3", "-c", "{python_call(program)}", '
        "strconv.Itoa(a)}, &os.ProcAttr{Files: []*os.File{nil, w, os.Stderr}})\n"
        "\tif err != nil {\n\t\tpanic(err)\n\t}\n\tw.Close()\n\tout, _ := bufio.NewReader(r).ReadString('\\n')\n"
        "\tp.Wait()\n\tn, _ := strconv.Atoi(strings.TrimSpace(out))\n\treturn n\n}"),
    "lua": lambda program: (
        f'function f(a)\n    local p = io.popen([[python3 -c "{python_call(program)}" ]] .. a)\n'
        '    local r = tonumber(p:read("a"))\n    p:close()\n    return r\nend'),
}


@pytest.mark.parametrize("way", DELEGATIONS)
def test_a_completion_that_delegates_to_another_runtime_earns_nothing(way):
    """The reward must be earned by translating: a program that hands the source it was shown
    to python3 (or, in Python, to g++) "passes" where the other runtime is there. Only its own
    language's runtime is in a sandbox, so it fails; the honest translation passes."""
    lang = way.split("-")[0]
    task, program = make_task(TASK_SEED, lang)
    verdicts = reward.score_details([task["reference"], DELEGATIONS[way](program)], [task] * 2)
    assert [v.reward for v in verdicts] == [1.0, 0.0], [(v.status, v.error) for v in verdicts]


# ----------------------------------------------------------------------------- hostile programs

MEMORY_BOMBS = {
    "python": "blocks = []\nwhile True:\n    blocks.append(bytearray(1 << 24))\n",
    "c": "#include <stdlib.h>\n#include <string.h>\nint main(void) {\n    for (;;) {\n"
         "        char *p = malloc(1 << 24);\n        if (!p) return 1;\n        memset(p, 1, 1 << 24);\n    }\n}\n",
    "cpp": "#include <vector>\nint main() {\n    std::vector<std::vector<char>> blocks;\n"
           "    for (;;) blocks.emplace_back(1 << 24, 'x');\n}\n",
    "java": "import java.util.*;\npublic class Main {\n    public static void main(String[] args) {\n"
            "        List<long[]> blocks = new ArrayList<>();\n        while (true) blocks.add(new long[1 << 21]);\n    }\n}\n",
    "javascript": "const blocks = [];\nwhile (true) blocks.push(new Float64Array(1 << 21).fill(1));\n",
    "bash": "s=x\nwhile :; do s=$s$s; done\n",  # (builtins only: a bash sandbox holds no other command)
    "php": "<?php\n$blocks = [];\nwhile (true) $blocks[] = str_repeat('x', 1 << 24);\n",
    "rust": "fn main() {\n    let mut blocks = Vec::new();\n    loop {\n        blocks.push(vec![1u8; 1 << 24]);\n    }\n}\n",
    "go": "package main\n\nfunc main() {\n\tvar blocks [][]byte\n\tfor {\n\t\tb := make([]byte, 1<<24)\n"
          "\t\tfor i := range b {\n\t\t\tb[i] = 1\n\t\t}\n\t\tblocks = append(blocks, b)\n\t}\n}\n",
    "lua": "local blocks = {}\nwhile true do\n    blocks[#blocks + 1] = string.rep('x', 1 << 24) .. #blocks\nend\n",
}
OUTPUT_FLOODS = {
    "python": "while True:\n    print('y' * 1000)\n",
    "c": "#include <stdio.h>\nint main(void) {\n    for (;;) puts(\"yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\");\n}\n",
    "cpp": "#include <iostream>\nint main() {\n    for (;;) std::cout << \"yyyyyyyyyyyyyyyyyyyyyyyyyyyy\\n\";\n}\n",
    "java": "public class Main {\n    public static void main(String[] args) {\n"
            "        while (true) System.out.println(\"yyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\");\n    }\n}\n",
    "javascript": "const line = 'y'.repeat(1000) + '\\n';\nfunction flood() {\n"
                  "    while (process.stdout.write(line)) {}\n    process.stdout.once('drain', flood);\n}\nflood();\n",
    "bash": "while true; do echo yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy; done\n",
    "php": "<?php\nwhile (true) echo str_repeat('y', 1000), \"\\n\";\n",
    "rust": "fn main() {\n    loop {\n        println!(\"yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\");\n    }\n}\n",
    "go": "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfor {\n\t\tfmt.Println(\"yyyyyyyyyyyyyyyyyyyyyyyyyyy\")\n\t}\n}\n",
    "lua": "while true do\n    print(string.rep('y', 1000))\nend\n",
}


def test_sandbox_is_bubblewrap():
    """The hostile suite below relies on the namespaces: bubblewrap must work where tests run."""
    assert sandbox.check() == "bwrap"


@pytest.mark.slow
def test_memory_bombs_fail_and_output_floods_are_cut_in_every_language():
    jobs = [(MEMORY_BOMBS[lang], lang) for lang in LANGS] + [(OUTPUT_FLOODS[lang], lang) for lang in LANGS]
    results = run_all(jobs, timeout=10.0)
    for (_, lang), result in zip(jobs[:len(LANGS)], results[:len(LANGS)]):
        assert result.status == "runtime_error", f"memory bomb in {lang}: {result.status} {result.stderr[-300:]}"
    for (_, lang), result in zip(jobs[len(LANGS):], results[len(LANGS):]):
        assert result.status == "output_limit", f"output flood in {lang}: {result.status}"
        assert len(result.stdout.encode()) == sandbox.OUTPUT_LIMIT
    assert_nothing_left()


FORK_BOMBS = {
    "python": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
    "c": "#include <unistd.h>\nint main(void) {\n    for (;;) fork();\n}\n",
    "bash": "bomb() { bomb | bomb & }\nbomb\nwhile :; do :; done\n",
    "javascript": "const { spawn } = require('child_process');\n"
                  "while (true) { try { spawn(process.execPath, [__filename], { detached: true }); } catch (e) {} }\n",
}


def test_fork_bombs_are_contained_and_killed():
    before = len(os.listdir("/proc"))
    results = run_all([(program, lang) for lang, program in FORK_BOMBS.items()], timeout=1.5)
    for lang, result in zip(FORK_BOMBS, results):
        assert result.status in ("timeout", "runtime_error"), f"fork bomb in {lang}: {result.status}"
    assert_nothing_left()
    assert len(os.listdir("/proc")) < before + 50, "processes are piling up"


def write_attempts(lang, paths):
    """A program that tries to write a file at each path (~ is the program's $HOME)."""
    quoted = ", ".join(json.dumps(p) for p in paths)
    return {
        "python": f"import os\nfor path in [{quoted}]:\n    try:\n"
                  f"        open(os.path.expanduser(path), 'w').write('x')\n        print('wrote', path)\n"
                  f"    except OSError as error:\n        print('refused', path, error)\n",
        "c": "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\nint main(void) {\n"
             f"    const char *paths[] = {{{quoted}}};\n    char full[4096];\n"
             "    for (unsigned i = 0; i < sizeof paths / sizeof *paths; i++) {\n"
             "        if (paths[i][0] == '~') snprintf(full, sizeof full, \"%s%s\", getenv(\"HOME\"), paths[i] + 1);\n"
             "        else snprintf(full, sizeof full, \"%s\", paths[i]);\n"
             "        FILE *f = fopen(full, \"w\");\n        if (f) { fputs(\"x\", f); fclose(f); puts(full); }\n    }\n"
             "    return 0;\n}\n",
        "bash": "for path in " + " ".join(p.replace("~", "$HOME") if p.startswith("~") else p for p in paths)
                + "; do\n    echo x > \"$path\" && echo wrote \"$path\"\ndone\n",
        "javascript": f"const fs = require('fs');\nfor (const path of [{quoted}]) {{\n"
                      "    try { fs.writeFileSync(path.replace(/^~/, process.env.HOME), 'x'); console.log('wrote', path); }\n"
                      "    catch (e) { console.log('refused', path); }\n}\n",
        "php": f"<?php\nforeach ([{quoted}] as $path) {{\n"
               "    if (@file_put_contents(str_replace('~', getenv('HOME'), $path), 'x') !== false) echo \"wrote $path\\n\";\n}\n",
        "lua": f"for _, path in ipairs({{{quoted}}}) do\n"
               "    local f = io.open((path:gsub('^~', os.getenv('HOME'))), 'w')\n"
               "    if f then f:write('x'); f:close(); print('wrote', path) end\nend\n",
    }[lang]


def test_writes_outside_the_working_directory_never_reach_the_host():
    home = os.path.expanduser("~")
    targets = {lang: [f"{tempfile.gettempdir()}/oorl-{TOKEN}-{lang}-tmp", f"~/oorl-{TOKEN}-{lang}-home",
                      f"{home}/oorl-{TOKEN}-{lang}-realhome", f"{REPO}/oorl-{TOKEN}-{lang}-repo",
                      f"/oorl-{TOKEN}-{lang}-root"]
               for lang in ("python", "c", "bash", "javascript", "php", "lua")}
    results = run_all([(write_attempts(lang, paths), lang) for lang, paths in targets.items()])
    for lang, result in zip(targets, results):
        assert result.status in ("ok", "runtime_error"), (lang, result)
        for path in targets[lang]:
            assert not os.path.exists(path.replace("~", home)), f"{lang} wrote {path} on the host"
    assert "wrote" in results[0].stdout, "the program may write inside its sandbox (its /tmp and $HOME)"
    leftovers = [name for name in os.listdir(tempfile.gettempdir()) if TOKEN in name]
    assert leftovers == []
    assert_nothing_left()


def test_children_that_call_setsid_and_sleep_do_not_outlive_the_program():
    marker = f"86.{int(TOKEN, 16) % 10**9}"  # `sleep 86.xxx`: findable in the process table
    programs = {
        # (each sleeps with its own runtime, the one program its sandbox holds; bash has no setsid builtin)
        "python": "import os, sys\nif os.fork() == 0:\n    os.setsid()\n"
                  f"    os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep({marker})'])\n"
                  "print('parent done')\n",
        "c": "#include <stdio.h>\n#include <unistd.h>\nint main(int argc, char **argv) {\n"
             "    if (argc > 1) { sleep(86); return 0; }\n"
             f"    if (fork() == 0) {{ setsid(); execl(\"/proc/self/exe\", \"main\", \"{marker}\", (char *)0); }}\n"
             "    puts(\"parent done\");\n    return 0;\n}\n",
        "bash": f"bash -c 'read -t {marker} <> <(:)' &\ndisown -a\necho parent done\n",
    }
    results = run_all([(program, lang) for lang, program in programs.items()], timeout=3.0)
    for lang, result in zip(programs, results):
        assert result.status == "ok" and "parent done" in result.stdout, (lang, result)
    assert_nothing_left(marker)


def test_programs_see_nothing_of_the_trainers_environment(monkeypatch):
    secret = f"secret-{TOKEN}"
    monkeypatch.setenv("OORL_TEST_SECRET", secret)
    programs = {
        "python": "import glob, os\nprint(dict(os.environ))\nfor path in glob.glob('/proc/*/environ'):\n"
                  "    try:\n        print(path, open(path, 'rb').read())\n    except OSError:\n        pass\n",
        "bash": "export -p\nfor path in /proc/*/environ; do\n"  # (builtins only: a bash sandbox holds no other command)
                "    [ -r \"$path\" ] && while IFS= read -r -d '' item; do echo \"$item\"; done < \"$path\"\ndone\n",
        "c": "#include <stdio.h>\n#include <unistd.h>\nextern char **environ;\nint main(void) {\n"
             "    for (char **e = environ; *e; e++) puts(*e);\n    char path[64]; int c;\n"
             "    snprintf(path, sizeof path, \"/proc/%d/environ\", (int)getppid());\n"
             "    FILE *f = fopen(path, \"r\");\n    if (f) while ((c = fgetc(f)) != EOF) putchar(c ? c : '\\n');\n    return 0;\n}\n",
        "javascript": "const fs = require('fs');\nconsole.log(JSON.stringify(process.env));\n"
                      "for (const pid of fs.readdirSync('/proc').filter(p => /^\\d+$/.test(p))) {\n"
                      "    try { console.log(fs.readFileSync(`/proc/${pid}/environ`, 'utf8')); } catch (e) {}\n}\n",
        "php": "<?php\nprint_r(getenv());\nforeach (glob('/proc/*/environ') as $path) echo @file_get_contents($path), \"\\n\";\n",
    }
    with open("/proc/self/environ", "rb") as file:  # the trainer's own start-up environment
        items = [item.decode().split("=", 1) for item in file.read().split(b"\0") if b"=" in item]
    sandbox_values = sandbox._environment({}).values()
    distinctive = {value for _, value in items  # values the sandbox could not have made up itself
                   if len(value) >= 8 and not any(value in allowed for allowed in sandbox_values)}
    assert distinctive, "the test needs some distinctive variable to look for"
    results = run_all([(program, lang) for lang, program in programs.items()])
    for lang, result in zip(programs, results):
        output = result.stdout + result.stderr
        assert result.status == "ok", (lang, result)
        assert secret not in output, f"{lang} read the secret"
        leaked = [value for value in distinctive if value in output]
        assert leaked == [], f"{lang} saw the trainer's environment: {leaked}"


def test_programs_cannot_reach_a_listener_on_localhost():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    programs = {
        "python": f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
                  f"s.sendall(b'{TOKEN}')\nprint('connected')\n",
        "bash": f"exec 3<>/dev/tcp/127.0.0.1/{port} && echo {TOKEN} >&3 && echo connected\n",
        "c": "#include <arpa/inet.h>\n#include <stdio.h>\n#include <sys/socket.h>\n#include <unistd.h>\n"
             "int main(void) {\n    int s = socket(AF_INET, SOCK_STREAM, 0);\n"
             f"    struct sockaddr_in a = {{.sin_family = AF_INET, .sin_port = htons({port})}};\n"
             "    inet_pton(AF_INET, \"127.0.0.1\", &a.sin_addr);\n"
             "    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) { perror(\"connect\"); return 1; }\n"
             f"    write(s, \"{TOKEN}\", 12);\n    puts(\"connected\");\n    return 0;\n}}\n",
        "javascript": f"const s = require('net').connect({port}, '127.0.0.1');\n"
                      f"s.on('connect', () => {{ s.write('{TOKEN}'); console.log('connected'); s.end(); }});\n"
                      "s.on('error', e => { console.error(e.message); process.exit(1); });\n",
        "php": f"<?php\n$s = @fsockopen('127.0.0.1', {port}, $errno, $errstr, 1);\n"
               f"if ($s) {{ fwrite($s, '{TOKEN}'); echo \"connected\\n\"; }} else {{ exit(1); }}\n",
    }
    try:
        results = run_all([(program, lang) for lang, program in programs.items()])
        for lang, result in zip(programs, results):
            assert "connected" not in result.stdout, f"{lang} reached the listener"
            assert result.status == "runtime_error", (lang, result)
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody ever connected
    finally:
        listener.close()


def test_without_bubblewrap_execute_refuses_or_with_the_opt_in_still_limits(monkeypatch, without_bubblewrap):
    monkeypatch.setattr(reward, "_availability", {})
    with pytest.raises(sandbox.Unavailable):  # not "unavailable" for one language: nothing runs
        reward.execute("print(6 * 7)", "python")
    monkeypatch.setenv("OORL_ALLOW_REDUCED_ISOLATION", "1")
    with pytest.warns(RuntimeWarning, match="REDUCED isolation"):
        assert reward.execute("print(6 * 7)", "python").stdout == "42\n"
    assert reward.execute("while True: pass", "python", timeout=1.0).status == "timeout"
    assert reward.execute("while True: print('y' * 1000)", "python").status == "output_limit"
    assert reward.execute("x = bytearray(1 << 30)", "python").status == "runtime_error"
    program = f'#include <stdio.h>\nint main(void) {{ puts("reduced {TOKEN}"); return 0; }}\n'
    assert reward.execute(program, "c").stdout == f"reduced {TOKEN}\n"  # compiled, cached and run as another uid
    assert [n for n in os.listdir(tempfile.gettempdir()) if n.startswith("oorl-run-")] == []


@pytest.mark.parametrize("failure", ["bubblewrap", "cgroup"])
def test_an_infrastructure_failure_is_a_verdict_of_its_own_and_never_cached(failure, monkeypatch):
    """A sandbox that does not start says nothing of the program: "infra_error" (which the trainer
    leaves out of the advantages), one verdict per completion still, and the next try runs it."""
    task, _ = make_task(TASK_SEED, "python")
    program = task["reference"] + f"\n# {TOKEN} {failure}\n"  # a new source: its check is not cached yet
    assert reward.available("python")  # (bubblewrap probed, and python's hello-world run, before it fails)
    if failure == "bubblewrap":  # bubblewrap's own setup fails: a mount of a missing path
        system_mounts = mounts.system_mounts
        monkeypatch.setattr(mounts, "system_mounts", lambda runtime, loader: [
            *system_mounts(runtime, loader), "--ro-bind", f"/oorl-missing-{TOKEN}", "/x"])
    else:
        def refuse(memory, processes):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(cgroups, "make", refuse)
    verdicts = reward.score_details([program, "no code at all"], [task] * 2)
    assert [(v.status, v.reward) for v in verdicts] == [("infra_error", 0.0), ("malformed", 0.0)], verdicts
    monkeypatch.undo()
    assert reward.score_details([program], [task])[0].status == "passed"


# ----------------------------------------------------------------------------- cache, toolchains

def test_compilers_cannot_read_root_only_files():
    """Compilers read untrusted source: an include of /etc/shadow must not put it in an error."""
    with open("/etc/shadow") as file:  # (the test runs as root, as CI does)
        secret = file.readline().strip()
    assert secret
    programs = {"c": '#include "/etc/shadow"\nint main(void) { return 0; }\n',
                "cpp": '#include "/etc/shadow"\nint main() { return 0; }\n',
                "rust": 'fn main() {\n    print!("{}", include_str!("/etc/shadow"));\n}\n'}
    results = run_all([(program, lang) for lang, program in programs.items()])
    for lang, result in zip(programs, results):
        assert result.status == "compile_error", (lang, result)
        assert secret not in result.stdout + result.stderr, f"{lang}'s compiler read /etc/shadow"


def test_compile_failures_are_cached_timeouts_included(monkeypatch):
    """A compile that runs out of CPU time fails again, so it is compiled once: a compile bomb
    that the policy keeps sampling costs one timeout."""
    monkeypatch.setitem(languages.LANGUAGES, "cpp", dataclasses.replace(languages.LANGUAGES["cpp"], check_timeout=1.0))
    bomb = ("constexpr long spin() {\n    long s = 0;\n"
            "    for (long i = 0; i < 200000; ++i)\n        for (long j = 0; j < 200000; ++j) s += i ^ j;\n"
            "    return s;\n}\n"
            f"static_assert(spin() != 7, \"spin\");\nint main() {{ return 0; }}\n// {TOKEN}\n")
    # (TOKEN whole makes the source new to this run: the cache in the temp dir outlives runs)
    # not C++: an unknown name (the prefix keeps it a name: TOKEN alone can be all digits, a number)
    broken = f"int main() {{ return undeclared_{TOKEN}; }}\n"
    assert reward.available("cpp")
    compiles = []
    compile_for_real = reward._compile
    monkeypatch.setattr(reward, "_compile", lambda *args: compiles.append(args) or compile_for_real(*args))
    first = [reward.execute(bomb, "cpp"), reward.execute(broken, "cpp")]
    assert [r.status for r in first] == ["compile_error"] * 2, first
    # (g++ reports its cc1plus killed at the CPU limit; a compiler killed outright, "out of CPU time")
    assert re.search("out of CPU time|CPU time limit", first[0].stderr) and len(compiles) == 2, first[0].stderr
    reward._memory_cache.clear()  # as a fresh process would: found on disk
    assert [reward.execute(bomb, "cpp"), reward.execute(broken, "cpp")] == first
    assert len(compiles) == 2, "a failed compile ran again"



def test_compiled_once_then_cached_in_memory_and_on_disk(monkeypatch):
    program = f'#include <stdio.h>\nint main(void) {{ puts("{TOKEN}"); return 0; }}\n'
    assert reward.available("c")  # (its hello-world program is compiled before counting starts)
    compiles = []
    compile_for_real = reward._compile
    monkeypatch.setattr(reward, "_compile", lambda *args: compiles.append(args) or compile_for_real(*args))
    with ThreadPoolExecutor(6) as pool:  # six threads ask for the same new program at once
        results = list(pool.map(lambda _: reward.execute(program, "c"), range(6)))
    assert {r.stdout for r in results} == {TOKEN + "\n"} and len(compiles) == 1
    reward._memory_cache.clear()  # as a fresh process would: found on disk, not compiled again
    assert reward.execute(program, "c").stdout == TOKEN + "\n" and len(compiles) == 1
    entry = os.path.join(reward._cache_root(), reward._cache_key("c", program))
    assert os.listdir(os.path.join(entry, "prog")) == ["main"]
    assert oct(os.stat(reward._cache_root()).st_mode & 0o777) == "0o700"


@pytest.mark.slow
def test_several_processes_share_the_cache_safely():
    program = f'fn main() {{ println!("{TOKEN}"); }}\n'
    script = f"import reward; print(reward.execute({program!r}, 'rust').stdout, end='')"
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    assert [p.communicate()[0] for p in procs] == [TOKEN + "\n"] * 3
    entries = [n for n in os.listdir(reward._cache_root()) if n == reward._cache_key("rust", program)]
    assert len(entries) == 1


def test_missing_toolchain_is_unavailable_with_one_warning(monkeypatch):
    monkeypatch.setattr(languages, "_tool_paths", {**languages._tool_paths, "lua5.4": None})
    monkeypatch.setattr(reward, "_availability", {})
    monkeypatch.setattr(reward, "_warned", set())
    with pytest.warns(RuntimeWarning, match=r"apt-get install lua5\.4") as caught:
        first = reward.execute("print(1)", "lua")
        second = reward.execute("print(2)", "lua")
    assert first.status == second.status == "unavailable"
    assert len([w for w in caught if "lua" in str(w.message)]) == 1
    assert not reward.available("lua")
    assert reward.available("python")
    with pytest.raises(ValueError):
        reward.available("klingon")


# ----------------------------------------------------------------------------- the reward (eq. 4)

def test_references_score_one_and_corruptions_zero():
    batch, corrupted = [], []
    for seed in range(2):
        for lang in tasks.RL_TARGETS:
            task, _ = make_task(seed, lang)
            batch.append(task)
            corrupted.append(task["reference"].replace("return", "return 1 +", 1).replace("echo", "echo 1", 1))
    assert reward.score([t["reference"] + EOT for t in batch], batch) == [1.0] * len(batch)
    # the first return gets "1 +": a wrong answer (or, in bash, a wrong echo) everywhere
    assert reward.score(corrupted, batch) == [0.0] * len(batch)


def test_identical_programs_run_once(monkeypatch):
    tasks_ = [make_task(seed, "python")[0] for seed in (0, 1)]
    completions = [tasks_[0]["reference"]] * 5 + [tasks_[1]["reference"]] * 3 + ["no code"] * 2
    batch = [tasks_[0]] * 5 + [tasks_[1]] * 3 + [tasks_[1]] * 2
    runs = []
    execution = reward._execution  # (what score_details runs for each program)
    monkeypatch.setattr(reward, "_execution", lambda *args: runs.append(args) or execution(*args))
    assert reward.score(completions, batch) == [1.0] * 8 + [0.0] * 2
    assert len(runs) == 2


def fresh_cache(monkeypatch, directory):
    """An empty compile cache (its warm-ups included) for the rest of the test."""
    os.makedirs(directory, mode=0o700)
    monkeypatch.setattr(reward, "_cache_dir", str(directory))
    monkeypatch.setattr(reward, "_memory_cache", collections.OrderedDict())
    monkeypatch.setattr(languages, "_warmed_up", set())


def counting_compiles(monkeypatch):
    """The sources of each _compile call from now on, as a list of lists."""
    compiles = []
    compile_for_real = reward._compile
    monkeypatch.setattr(reward, "_compile", lambda lang, sources: compiles.append(list(sources))
                        or compile_for_real(lang, sources))
    return compiles


def test_a_program_that_fails_in_a_batch_compile_fails_alone(monkeypatch):
    """Four Java programs compiled in one javac start: the one with a syntax error gets a
    compile_error with its own message, the others pass."""
    batch = [make_task(seed, "java")[0] for seed in range(4)]
    completions = [task["reference"] + f"\n    // {TOKEN} {i}" for i, task in enumerate(batch)]  # not cached yet
    completions[2] = completions[2].replace("return", "return )(", 1)
    assert reward.available("java")
    compiles = counting_compiles(monkeypatch)
    verdicts = reward.score_details(completions, batch)
    assert [v.status for v in verdicts] == ["passed", "passed", "compile_error", "passed"], verdicts
    assert "Main.java" in verdicts[2].error and "return )(" in verdicts[2].error, verdicts[2].error
    assert [len(sources) for sources in compiles] == [4], "compiled in one batch"


def test_what_a_batch_left_unfinished_is_compiled_alone(monkeypatch):
    """A batched check that stops early (as after a compile bomb took its CPU time) leaves the
    programs it did not reach to be compiled one by one: each still gets its own verdict."""
    spec = languages.LANGUAGES["python"]
    stops = spec.check[:-1] + (spec.check[-1] + "    raise SystemExit(1)  # after the first program\n",)
    monkeypatch.setitem(languages.LANGUAGES, "python", dataclasses.replace(spec, check=stops))
    batch = [make_task(seed, "python")[0] for seed in range(3)]
    completions = [task["reference"] + f"\n# {TOKEN}" for task in batch]
    completions[1] += "\n)("
    assert reward.available("python")  # (its hello-world program is compiled before counting starts)
    compiles = counting_compiles(monkeypatch)
    verdicts = reward.score_details(completions, batch)
    assert [v.status for v in verdicts] == ["passed", "compile_error", "passed"], verdicts
    assert [len(sources) for sources in compiles] == [3, 1, 1]


def mutations(task):
    """A task's reference and the ways a completion goes wrong: a wrong answer, a syntax error."""
    reference = task["reference"]
    return [reference, reference.replace("return", "return 1 +", 1).replace("echo", "echo 1", 1),
            reference + "\n)(\n"]


def test_a_batch_judges_as_one_program_at_a_time(tmp_path, monkeypatch):
    """The batched path (compiles shared, duplicates merged) gives each completion the verdict it
    gets scored alone, from an empty cache each: references, wrong answers, syntax errors and
    infinite loops in every RL target language."""
    completions, batch = [], []
    for lang in tasks.RL_TARGETS:
        comment = "#" if lang in ("python", "bash") else "//"
        for seed in (0, TASK_SEED):
            task, _ = make_task(seed, lang)
            for completion in mutations(task):
                completions.append(f"{completion}\n{comment} {TOKEN}")
                batch.append(task)
        completions.append(INFINITE_LOOP_F[lang])
        batch.append(task)
    fresh_cache(monkeypatch, tmp_path / "batched")
    together = reward.score_details(completions, batch, timeout=1.0)
    fresh_cache(monkeypatch, tmp_path / "alone")
    alone = [reward.score_details([completion], [task], timeout=1.0)[0] for completion, task in zip(completions, batch)]
    assert together == alone
    assert {v.status for v in together} == {"passed", "wrong_answer", "compile_error", "timeout"}


def test_go_builds_a_batch_in_one_start_and_judges_as_one_program_at_a_time(tmp_path, monkeypatch):
    """One `go build` for a batch of Go completions, each judged as if built alone: references,
    wrong answers, syntax errors, an infinite loop."""
    completions, batch = [], []
    for seed in (0, 1, TASK_SEED):
        task, _ = make_task(seed, "go")
        completions += [f"{completion}\n// {TOKEN}" for completion in mutations(task)]
        batch += [task] * 3
    completions.append(INFINITE_LOOP_F["go"])
    batch.append(task)
    assert reward.available("go")  # (its hello-world program and the warm-up: not counted)
    fresh_cache(monkeypatch, tmp_path / "batched")
    compiles = counting_compiles(monkeypatch)
    together = reward.score_details(completions, batch, timeout=1.0)
    assert [len(sources) for sources in compiles] == [len(completions)], "built in one batch"
    fresh_cache(monkeypatch, tmp_path / "alone")
    alone = [reward.score_details([completion], [task], timeout=1.0)[0] for completion, task in zip(completions, batch)]
    assert together == alone
    assert [v.status for v in together] == ["passed", "wrong_answer", "compile_error"] * 3 + ["timeout"]
    assert "main.go:" in together[2].error and "syntax error" in together[2].error, together[2]


def test_a_go_program_that_stops_a_whole_go_build_fails_alone(tmp_path, monkeypatch):
    """An import go cannot find stops `go build` before it builds anything, and a package that is
    not main builds to no program: go-build-many leaves them out of the shared build, and every
    program (one without main, good ones too) gets the verdict it gets built alone."""
    hello = languages.HELLO["go"]
    programs = [hello, hello.replace('"fmt"', '"fmt"\nimport "no/such/package"'), hello.replace("package main", "package other"),
                hello.replace("func main", "func start"), hello.replace('"ok"', '"ok, too"')]
    assert reward.available("go")
    fresh_cache(monkeypatch, tmp_path / "cache")
    compiles = counting_compiles(monkeypatch)
    reward._compile_many("go", programs)
    assert [len(sources) for sources in compiles] == [len(programs)]
    errors = [reward._artifact("go", program)[1] for program in programs]
    assert [error is None for error in errors] == [True, False, False, False, True], errors
    assert "no/such/package" in errors[1]
    alone = [reward.execute(program, "go").status for program in programs]
    assert alone == ["ok", "compile_error", "compile_error", "compile_error", "ok"]


def test_rust_integers_wrap_on_overflow():
    """rustc runs at opt-level=0 for speed, with overflow checks off: i32 arithmetic wraps, as
    it does at higher levels, rather than panicking."""
    program = "fn main() {\n    let mut line = String::new();\n    std::io::stdin().read_line(&mut line).unwrap();\n" \
              "    let a: i32 = line.trim().parse().unwrap();\n    println!(\"{}\", a + 1);\n}\n"
    assert reward.execute(program, "rust", stdin="2147483647\n") == ("ok", "-2147483648\n", "")


def test_duplicates_are_compiled_and_run_once_and_judged_alike(monkeypatch):
    java, python = make_task(0, "java")[0], make_task(0, "python")[0]
    programs = {java["reference"] + f"\n    // {TOKEN} dup": java, java["reference"] + f"\n    // {TOKEN} other": java,
                python["reference"] + f"\n# {TOKEN} dup": python}
    completions = [c for c in programs for _ in range(3)]
    batch = [programs[c] for c in completions]
    assert reward.available("java") and reward.available("python")  # (their hello-world programs: not counted)
    runs = []
    execution = reward._execution  # (what score_details runs for each program)
    monkeypatch.setattr(reward, "_execution", lambda *args: runs.append(args) or execution(*args))
    compiles = counting_compiles(monkeypatch)
    verdicts = reward.score_details(completions, batch)
    assert len(runs) == 3 and sorted(map(len, compiles)) == [1, 2]  # (Python's one check, Java's batch of two)
    assert all(verdicts[i] == verdicts[i - i % 3] for i in range(len(verdicts)))
    assert [v.reward for v in verdicts] == [1.0] * 9


def test_a_verdict_names_the_first_failing_test():
    task, _ = make_task(0, "python")
    seven = "def f(a, b=0, c=0):\n    return 7"
    passed, failed, not_compiled = reward.score_details([task["reference"], seven, seven + "\n)("], [task] * 3)
    line, expected = next((line, out) for line, out in task["tests"] if out != "7")
    assert failed.first_failure == f"input {line!r}: expected {expected!r}, got '7'"
    assert passed.first_failure == not_compiled.first_failure == ""


def test_bad_input_is_refused_with_a_clear_message():
    task, _ = make_task(0, "python")
    with pytest.raises(ValueError, match="one task per completion"):
        reward.score(["def f(a, b):\n    return a"], [task, task])
    with pytest.raises(ValueError, match="truncated"):
        reward.score(["def f(a, b):\n    return a"], [task], truncated=[False, True])


def test_cache_pruning_survives_entries_vanishing_under_it(tmp_path, monkeypatch):
    """Pruning lists the cache and then stats each entry: another thread's staging directory can
    be renamed away in between (this crashed a training run). Old entries beyond the cap go, a
    vanished one is skipped, recent ones stay."""
    for name in ("old-1", "old-2", "new-1", ".staging-gone"):
        (tmp_path / name).mkdir()
    for name in ("old-1", "old-2"):
        os.utime(tmp_path / name, (time.time() - 7200, time.time() - 7200))
    listed = list(os.scandir(tmp_path))  # listed now; one of them then disappears
    (tmp_path / ".staging-gone").rmdir()
    monkeypatch.setattr(reward, "_cache_dir", str(tmp_path))
    monkeypatch.setattr(reward, "CACHE_ENTRIES", 1)
    real_scandir = os.scandir
    monkeypatch.setattr(reward.os, "scandir",
                        lambda path=".": iter(listed) if path == str(tmp_path) else real_scandir(path))
    reward._prune_cache()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new-1"]


def test_an_oversized_program_is_a_compile_error_and_never_reaches_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(reward, "_cache_dir", str(tmp_path))  # a cache of its own, to walk
    monkeypatch.setattr(languages, "_warmed_up", set())
    task, _ = make_task(TASK_SEED, "cpp")
    completion = f"char big[60 << 20] = {{1}};  // {TOKEN}\n\n" + task["reference"]  # a 60 MiB binary
    verdict = reward.score_details([completion], [task])[0]
    assert (verdict.status, verdict.reward) == ("compile_error", 0.0) and "MiB" in verdict.error, verdict
    for entry in os.scandir(tmp_path):  # (the compiled programs: not the toolchain's own .cpp files)
        for root, _, names in os.walk(entry.path) if not entry.name.startswith(".") else ():
            for name in names:
                path = os.path.join(root, name)
                assert os.path.getsize(path) <= reward.ARTIFACT_LIMIT, f"{path} is over the limit"


def test_cache_pruning_keeps_it_under_its_bytes(tmp_path, monkeypatch):
    """The least recently used entries go once the entries hold more than CACHE_BYTES."""
    for hours, name in ((3, "oldest"), (2, "older"), (1, "recent")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "main").write_bytes(b"x" * 1000)
        os.utime(tmp_path / name, (time.time() - 3600 * hours,) * 2)
    monkeypatch.setattr(reward, "_cache_dir", str(tmp_path))
    monkeypatch.setattr(reward, "CACHE_BYTES", 2500)
    reward._prune_cache()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["older", "recent"]


def test_share_cores_gives_each_local_rank_its_share_and_at_least_one():
    cores = len(os.sched_getaffinity(0))
    saved = reward.WORKERS
    try:
        reward.share_cores(1)
        assert reward.WORKERS == cores
        reward.share_cores(2)
        assert reward.WORKERS == max(1, cores // 2)
        reward.share_cores(4 * cores)
        assert reward.WORKERS == 1
    finally:
        reward.WORKERS = saved


def test_a_scorer_fed_piece_by_piece_judges_as_score_details_does(monkeypatch):
    """reward.Scorer (completions handed over as rollout rows end, scored in the background) gives
    every completion the verdict score_details gives the whole batch: real programs in several
    languages, passing, wrong, broken and cut off, handed over in pieces while the earlier pieces
    are being scored; a program that comes again in a later piece is not run again."""
    completions, batch, truncated = [], [], []
    for lang in ("python", "cpp", "java", "bash"):
        comment = "#" if lang in ("python", "bash") else "//"
        task, _ = make_task(TASK_SEED, lang)
        for completion in mutations(task):
            for copy in range(2):  # (the copies land in different pieces)
                completions.append(f"{completion}\n{comment} {TOKEN} scorer")
                batch.append(task)
                truncated.append(False)
        completions.append(task["reference"])
        batch.append(task)
        truncated.append(True)  # cut off at the token limit: 0 whatever it holds
    whole = reward.score_details(completions, batch, truncated)
    runs = []
    execution = reward._execution  # (what score_details runs for each program)
    monkeypatch.setattr(reward, "_execution", lambda *args: runs.append(args) or execution(*args))
    order = list(range(len(completions)))
    random.Random(0).shuffle(order)
    with reward.Scorer(batch) as scorer:
        for start in range(0, len(order), 5):
            piece = order[start:start + 5]
            scorer.submit(piece, [completions[i] for i in piece], [truncated[i] for i in piece])
            time.sleep(0.2)  # (the next piece comes while this one is scored)
    assert scorer.verdicts == whole
    assert {v.status for v in whole} == {"passed", "wrong_answer", "compile_error", "malformed"}
    assert len(runs) == len({(task["tgt_lang"], c) for c, task, cut in zip(completions, batch, truncated) if not cut})


def test_a_scorer_refuses_bad_input_and_passes_on_a_scoring_error(monkeypatch):
    task, _ = make_task(0, "python")
    with pytest.raises(ValueError, match="no completion was submitted for 1 of 2"):
        with reward.Scorer([task, task]) as scorer:
            scorer.submit([0], [task["reference"]], [False])
    with pytest.raises(ValueError, match="2 indices, 2 completions and 1 truncated"):
        with reward.Scorer([task, task]) as scorer:
            scorer.submit([0, 1], [task["reference"]] * 2, [False])

    def failing(*args, **kwargs):
        raise OSError("No space left on device")
    monkeypatch.setattr(reward, "score_details", failing)
    with pytest.raises(OSError, match="No space left"):
        with reward.Scorer([task]) as scorer:
            scorer.submit([0], [task["reference"]], [False])


def test_a_later_scorer_takes_a_kept_verdict_for_the_same_program_tests_and_budget(monkeypatch, tmp_path):
    """A Scorer keeps its verdicts on disk (reward.store_verdicts), and a later Scorer (another
    run, another process) does not run those programs again: the same verdicts, no run. A kept
    verdict serves only the same program on the same tests with the same budget; infrastructure
    failures and malformed completions are never kept; at most VERDICT_ENTRIES are."""
    fresh_cache(monkeypatch, tmp_path / "cache")
    task, _ = make_task(TASK_SEED, "python")
    completions = [f"{completion}\n# {TOKEN} kept" for completion in mutations(task)] + ["no function here"]
    runs = []
    execution = reward._execution
    monkeypatch.setattr(reward, "_execution", lambda *args: runs.append(args[0]) or execution(*args))

    def scored(batch, completions, timeout=reward.RUN_TIMEOUT):
        with reward.Scorer(batch, timeout) as scorer:
            scorer.submit(range(len(completions)), completions, [False] * len(completions))
        return scorer.verdicts

    first = scored([task] * 4, completions)
    assert [v.status for v in first] == ["passed", "wrong_answer", "compile_error", "malformed"]
    assert len(runs) == 3
    assert scored([task] * 4, completions) == first and len(runs) == 3  # (no run)
    changed = dict(task, tests=[(line, str(int(out) + 1)) for line, out in task["tests"]])
    assert scored([changed], completions[:1])[0].status == "wrong_answer" and len(runs) == 4
    assert scored([task], completions[:1], timeout=1.0) == first[:1] and len(runs) == 5

    # an infrastructure failure says nothing of the program: the next Scorer runs it
    new = [f"{task['reference']}\n# {TOKEN} infra"]
    score_details = reward.score_details
    monkeypatch.setattr(reward, "score_details", lambda completions, tasks, **kw: [
        reward.Verdict(0.0, "infra_error", 0, len(t["tests"]), "the sandbox did not start") for t in tasks])
    assert scored([task], new)[0].status == "infra_error"
    monkeypatch.setattr(reward, "score_details", score_details)
    assert scored([task], new)[0].status == "passed" and len(runs) == 6

    monkeypatch.setattr(reward, "VERDICT_ENTRIES", 2)
    reward.store_verdicts([reward.verdict_key(task, f"{task['reference']}\n# {TOKEN} {i}", False) for i in range(3)],
                          [first[0]] * 3)
    with reward._verdict_store() as store:
        assert store.execute("SELECT count(*) FROM verdicts").fetchone()[0] == 2


# ----------------------------------------------------------------------------- only the program's own verdicts, bounded

def scored_by_a_scorer(task, completion):
    with reward.Scorer([task]) as scorer:
        scorer.submit([0], [completion], [False])
    return scorer.verdicts[0]


def test_a_compile_finds_no_terminal_to_wait_on(monkeypatch, tmp_path):
    """A compiler told to read a pseudo-terminal or a terminal (`#include "/dev/ptmx"`) would
    wait for ever: the sandbox has neither, so the compile fails at once, its wall clock unused."""
    fresh_cache(monkeypatch, tmp_path / "cache")
    monkeypatch.setattr(languages, "COMPILE_TIMEOUT", 1.0)  # (a wall clock of seconds: what waits fails fast)
    task, _ = make_task(TASK_SEED, "c")
    for device in ("/dev/ptmx", "/dev/tty"):
        verdict = scored_by_a_scorer(task, f'#include "{device}"\n{task["reference"]}\n// {TOKEN}')
        assert verdict.status == "compile_error" and "No such file" in verdict.error, verdict


def test_a_compile_out_of_wall_clock_is_neither_cached_nor_kept(monkeypatch, tmp_path):
    """A wall clock that runs out says the machine was busy (or the compiler waited on what never
    ends), not that the program is wrong: the verdict says so (decided False), and neither the
    compile cache nor the verdict store keeps it, so the next Scorer compiles again. (A wall
    clock of 5 ms plays the busy machine.)"""
    fresh_cache(monkeypatch, tmp_path / "cache")
    task, _ = make_task(TASK_SEED, "c")
    completion = f'{task["reference"]}\n// {TOKEN}'
    assert reward.available("c")
    monkeypatch.setattr(sandbox, "WALL_FACTOR", 0)
    monkeypatch.setattr(sandbox, "WALL_SLACK", 0.005)  # (gcc can compile it in under 50 ms)
    compiles = counting_compiles(monkeypatch)
    for attempt in (1, 2):
        verdict = scored_by_a_scorer(task, completion)
        assert verdict.status == "compile_error" and "wall clock" in verdict.error, verdict
        assert reward.stored_verdicts([reward.verdict_key(task, completion, False)]) == [None]
        assert len(compiles) == attempt, "a wall-clock timeout was cached"
        assert not verdict.decided


def test_a_megabyte_of_output_keeps_a_bounded_verdict(monkeypatch, tmp_path):
    """A short completion that prints a megabyte line to stdout and to stderr: its verdict's
    error and first_failure are capped, and the store as a whole holds VERDICT_BYTES at most."""
    fresh_cache(monkeypatch, tmp_path / "cache")
    task, _ = make_task(TASK_SEED, "python")
    completion = f"{task['reference']}\nimport sys\nsys.stderr.write('e' * 10**6)\nprint('x' * 10**6)  # {TOKEN}"
    verdict = scored_by_a_scorer(task, completion)
    assert verdict.status == "wrong_answer", verdict.status
    assert len(verdict.error) <= 2000 and len(verdict.first_failure) <= 2000, (len(verdict.error),
                                                                             len(verdict.first_failure))
    with reward._verdict_store() as store:
        (size,), = store.execute("SELECT length(verdict) FROM verdicts").fetchall()
    assert size < 5000, size
    monkeypatch.setattr(reward, "VERDICT_BYTES", 20 * size)
    keys = [reward.verdict_key(task, f"{completion}\n# {i}", False) for i in range(100)]
    reward.store_verdicts(keys, [verdict] * 100)
    with reward._verdict_store() as store:
        (total, rows), = store.execute("SELECT total(length(key) + length(verdict)), count(*) FROM verdicts").fetchall()
    assert total <= reward.VERDICT_BYTES and 0 < rows < 100, (total, rows)
    assert reward.stored_verdicts(keys[-1:]) == [verdict]  # (the newest kept)


def test_an_unavailable_verdict_is_never_kept(monkeypatch, tmp_path):
    """A toolchain missing (or failing its check) here says nothing of the program: the next
    Scorer, the toolchain working again, judges it."""
    fresh_cache(monkeypatch, tmp_path / "cache")
    task, _ = make_task(TASK_SEED, "lua")
    monkeypatch.setattr(languages, "_tool_paths", {**languages._tool_paths, "lua5.4": None})
    monkeypatch.setattr(reward, "_availability", {})
    with pytest.warns(RuntimeWarning, match="lua"):
        assert scored_by_a_scorer(task, task["reference"]).status == "unavailable"
    assert reward.stored_verdicts([reward.verdict_key(task, task["reference"], False)]) == [None]
    monkeypatch.undo()
    monkeypatch.setattr(reward, "_cache_dir", str(tmp_path / "cache"))  # (the same store, lua back)
    assert scored_by_a_scorer(task, task["reference"]).status == "passed"
