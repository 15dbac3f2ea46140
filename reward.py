"""
reward.py: the binary reward of eq. 4 (1 if a completion is well formed, compiles inside its
task's harness and prints every test's expected output, else 0) and the Verdict that says why;
then how each language is compiled and run (in sandbox.py's sandbox), and the compile cache.

    from reward import execute, score, score_details
    score(completions, tasks)          # [1.0, 0.0, ...]: eq. 4 for a batch
    score_details(completions, tasks)  # [Verdict(reward=1.0, status='passed', ...), ...]
    with Scorer(tasks) as scorer:      # the same, for completions handed over as they come
        scorer.submit([0, 3], [completion_0, completion_3], truncated=[False, False])
    scorer.verdicts
    execute("print(input()[::-1])", "python", stdin="abc\\n")  # Execution(status='ok', stdout='cba\\n', ...)

    python reward.py      # how programs are isolated here, and which languages work

A batch pays a tool's start-up once where the tool allows, never by sharing a sandbox between
programs. A program is scored once however often it comes, and a Scorer keeps its verdicts on
disk beside the compile cache: another run's Scorer (an evaluation of the same checkpoint family,
an ablation's next row) does not run the same program on the same tests again. A language's
programs are compiled (interpreted ones: syntax-checked) together where the toolchain can do it
in one start (javac in one JVM, Go's in one `go build`, Python's and JavaScript's checks in one
process, bash's and PHP's in one sandbox), each program on its own, with its own verdict and
message. Then every program runs in a sandbox of its own.

Each language is a check (a compiler, or a syntax check for interpreted languages) and a run
command, both run in the sandbox with per-language limits: the JVM, V8 and Go reserve far more
address space than they use, compilers need more memory and time than programs. Time limits are
CPU time (sandbox.py), so a busy machine does not turn a correct program into a timeout.

Compilers read untrusted source but never run it: programs are compiled in the same sandbox, as
the same unprivileged user as the programs (so `#include "/etc/shadow"` fails), with more
memory and time. Compiled programs (and the syntax checks of interpreted languages) are cached
by (language, source) in memory and in a private directory under the system temp dir, written
atomically (built in a staging directory, then renamed) so that threads and several trainer
processes share it. Failures are cached too, compile timeouts included: the same source fails
the same way, and a compile bomb the policy keeps sampling costs one timeout. The cache also
keeps, per language, what makes its compiler start faster, mounted read-only into compiles: the
harness headers precompiled for g++; for Java the batch compiler and an archive of the classes
its JVM loads.
"""
import collections
import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import re
import shlex
import shutil
import sqlite3
import stat
import subprocess
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import sandbox
from tasks import EOT, defines_f, harness

MiB = 1 << 20
RUN_TIMEOUT = 0.5          # seconds of CPU time for one run (all of a task's tests at once; the wall
                           # clock allows sandbox.WALL_FACTOR times more). A call of a task's function
                           # executes at most tasks.MAX_STEPS statements, so every reference runs in
                           # < 0.2 s of CPU, the JVM's start included (RESULTS.md); a program stuck in
                           # a loop holds a worker this long, and there are a few in every RL step
COMPILE_TIMEOUT = 60.0     # seconds of CPU time for a compiler or syntax check
COMPILE_PROCESSES = 128    # tasks (threads count) of a compile: `go build` runs several multi-threaded tools
ERROR_LINES = 20           # lines of a compiler error kept for logging
WORKERS = len(os.sched_getaffinity(0))  # score() runs this many programs at once (share_cores)
CACHE_ENTRIES = 20000      # compiled programs kept on disk (the least recently used go first)
CACHE_BYTES = 2 << 30      # and their bytes on disk, at most
ARTIFACT_LIMIT = 16 * MiB  # the largest compiled program: a larger one is a compile error, never cached
CACHE_FORMAT = 3           # changes whenever what a cache entry means changes
VERDICT_ENTRIES = 200_000  # verdicts kept on disk for later Scorers (the oldest go first): an
                           # ablation keeps ~100,000, of a few hundred bytes each

Execution = collections.namedtuple("Execution", "status stdout stderr")


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What the reward of eq. 4 found in one completion."""
    reward: float  # eq. 4: 1.0 or 0.0
    status: str    # "passed", "wrong_answer", "malformed", or the execution status that failed
                   # ("infra_error": the machinery failed, not the program; its 0.0 is no judgement)
    passed: int    # tests whose output line was right
    total: int
    error: str     # the first lines of the compiler's message or of stderr ("" if none)
    first_failure: str = ""  # the first test it failed, "input '3 4': expected '7', got '8'" ("" if
                             # none, or it never ran)


class InfraError(RuntimeError):
    """The machinery failed (a sandbox that did not start, a cgroup, the disk), not the program."""


# ----------------------------------------------------------------------------- the reward (eq. 4)

def score(completions, tasks, truncated=None, timeout=RUN_TIMEOUT):
    """The reward of eq. 4 for each completion (a target-language function f, maybe followed by
    the end-of-text token) of its task: 1.0 if it is well formed (defines f and was not cut off
    at the token limit: truncated[i]), compiles inside the task's harness and prints every
    test's expected output, else 0.0."""
    return [verdict.reward for verdict in score_details(completions, tasks, truncated, timeout)]


def score_details(completions, tasks, truncated=None, timeout=RUN_TIMEOUT):
    """One Verdict per completion (see score), for logging. A program is scored once however
    often it comes; the programs of a batched language are compiled (or checked) together, in
    one compiler start; then each program runs in a sandbox of its own, WORKERS at a time."""
    if len(completions) != len(tasks):
        raise ValueError(f"score: {len(completions)} completions but {len(tasks)} tasks; give one task per completion")
    truncated = [False] * len(completions) if truncated is None else list(truncated)
    if len(truncated) != len(completions):
        raise ValueError(f"score: truncated has {len(truncated)} entries for {len(completions)} completions")
    verdicts, jobs = [None] * len(completions), {}  # jobs: (lang, program, stdin) -> completion indices
    for i, (completion, task) in enumerate(zip(completions, tasks)):
        code, lang, n_tests = completion.split(EOT, 1)[0], task["tgt_lang"], len(task["tests"])
        if truncated[i]:  # cut off at the token limit: not well formed, whatever it holds
            verdicts[i] = Verdict(0.0, "malformed", 0, n_tests, "cut off at the token limit")
        elif not defines_f(code, lang):
            verdicts[i] = Verdict(0.0, "malformed", 0, n_tests, f"no function f defined in {lang}")
        else:  # every test in one process: a line of input per test, a line of output back
            stdin = "".join(line + "\n" for line, _ in task["tests"])
            jobs.setdefault((lang, harness(code, lang, task["n_args"]), stdin), []).append(i)
    by_lang = collections.defaultdict(list)
    for job in jobs:
        by_lang[job[0]].append(job)
    with ThreadPoolExecutor(max(1, min(WORKERS, len(jobs)))) as pool:

        def compile_then_run(lang, lang_jobs):  # (a language's runs queue up once it is compiled)
            if LANGUAGES[lang].batched and available(lang):
                try:
                    _compile_many(lang, [program for _, program, _ in lang_jobs])
                except (InfraError, OSError):  # each program then compiles alone, with a verdict of its own
                    pass
            return [pool.submit(execute, program, lang, stdin, timeout) for _, program, stdin in lang_jobs]

        # the batches first, a compiled language's (one long compiler run) before a checked one's
        order = sorted(by_lang, key=lambda lang: (not LANGUAGES[lang].batched, not LANGUAGES[lang].compiled))
        batches = [(by_lang[lang], pool.submit(compile_then_run, lang, by_lang[lang])) for lang in order]
        for lang_jobs, batch in batches:
            for job, run in zip(lang_jobs, batch.result()):
                for i in jobs[job]:
                    verdicts[i] = _judge(run.result(), tasks[i]["tests"])
    return verdicts


class Scorer:
    """score_details for completions that come a few at a time (rollout's on_end), scored in a
    background thread while the caller goes on (decoding the rows that have not ended): each
    batch is everything that came while the previous one was scored, so a language's programs
    still share a compiler start, and a program is scored once however often it comes, here or
    in an earlier Scorer (stored_verdicts).

        with reward.Scorer(tasks) as scorer:   # tasks: one per completion index
            out = rollout(..., on_end=lambda rows, ids, cut: scorer.submit(rows, [decode(i) for i in ids], cut))
        scorer.verdicts                         # leaving the block waits for the last batch
    """

    def __init__(self, tasks, timeout=RUN_TIMEOUT):
        self.tasks, self.timeout = tasks, timeout
        self.verdicts = [None] * len(tasks)
        self._pending, self._closed, self._error, self._seen = [], False, None, {}
        self._ready = threading.Condition()
        self._thread = threading.Thread(target=self._score_batches, name="reward.Scorer", daemon=True)
        self._thread.start()

    def submit(self, indices, completions, truncated):
        """Score completions[j] as the completion of task indices[j] (cut off at the token limit: truncated[j])."""
        if not len(indices) == len(completions) == len(truncated):
            raise ValueError(f"Scorer.submit: {len(indices)} indices, {len(completions)} completions and "
                             f"{len(truncated)} truncated flags; give one of each per completion")
        with self._ready:
            self._pending.extend(zip(indices, completions, truncated))
            self._ready.notify()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        with self._ready:
            self._closed = True
            if exc_info[0] is not None:  # (an interrupted caller does not wait for what is left)
                self._pending = []
            self._ready.notify()
        self._thread.join()
        if self._error is not None and exc_info[0] is None:
            raise self._error
        missing = [i for i, verdict in enumerate(self.verdicts) if verdict is None]
        if missing and exc_info[0] is None:
            raise ValueError(f"reward.Scorer: no completion was submitted for {len(missing)} of "
                             f"{len(self.verdicts)} tasks (the first: index {missing[0]})")

    def _score_batches(self):
        while True:
            with self._ready:
                while not self._pending and not self._closed:
                    self._ready.wait()
                if not self._pending:
                    return
                batch, self._pending = self._pending, []
            new = {}  # (task, completion, cut off) -> indices: scored once, here or in an earlier batch
            for i, completion, cut in batch:
                key = (id(self.tasks[i]), completion, cut)
                if key in self._seen:
                    self.verdicts[i] = self._seen[key]
                else:
                    new.setdefault(key, []).append(i)
            try:
                keys = {key: verdict_key(self.tasks[indices[0]], key[1], key[2], self.timeout)
                        for key, indices in new.items()}
                judged = dict(zip(new, stored_verdicts(list(keys.values()))))
                unknown = [key for key, verdict in judged.items() if verdict is None]
                verdicts = score_details([key[1] for key in unknown], [self.tasks[new[key][0]] for key in unknown],
                                         truncated=[key[2] for key in unknown], timeout=self.timeout)
                store_verdicts([keys[key] for key in unknown], verdicts)
                judged.update(zip(unknown, verdicts))
            except BaseException as error:  # raised in the caller's thread when it leaves the block
                self._error = error
                return
            for key, indices in new.items():
                self._seen[key] = judged[key]
                for i in indices:
                    self.verdicts[i] = judged[key]


# ----------------------------------------------------------------------------- stored verdicts
# A verdict is a function of the program, its task's tests, the language's commands and limits,
# the sandbox's limits and isolation, and the run's budget: all of them are the key of a verdict
# kept on disk, beside the compile cache, so that a Scorer of another run does not run a program
# again (the evaluations of an ablation sample the same program for ~60% of their tasks: the
# SFT model and its RL runs agree on most). Kept: every verdict of a program that ran or failed
# to compile. Never kept: infrastructure failures (no judgement of the program), and malformed
# completions (judged without running anything).

@contextlib.contextmanager
def _verdict_store():
    """The verdicts' SQLite database in the compile cache's private directory, open for one
    transaction. Every process of this user shares it: in WAL mode readers never wait, and a
    writer waits for another's transaction to end."""
    store = sqlite3.connect(os.path.join(_cache_root(), "verdicts.sqlite3"), timeout=60)
    try:
        store.execute("PRAGMA journal_mode=WAL")
        with store:  # (commits when the block ends)
            store.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, verdict TEXT)")
            yield store
    finally:
        store.close()


def verdict_key(task, completion, cut, timeout=RUN_TIMEOUT):
    """The key of a verdict of this completion of task (cut off at the token limit: cut) at this
    budget: a hash of all the verdict depends on."""
    limits = (sandbox.OUTPUT_LIMIT, sandbox.FILE_SIZE, sandbox.TMPFS_SIZE, sandbox.SHM_SIZE, sandbox.OPEN_FILES,
              sandbox.PROCESSES, sandbox.WALL_FACTOR, sandbox.WALL_SLACK, sandbox.check())
    lang = task["tgt_lang"]
    described = (CACHE_FORMAT, lang, LANGUAGES.get(lang), limits, timeout, bool(cut), task["n_args"],
                 [tuple(test) for test in task["tests"]], completion.split(EOT, 1)[0])
    return hashlib.sha256(repr(described).encode()).hexdigest()


def stored_verdicts(keys):
    """The Verdict an earlier Scorer kept under each key (verdict_key), or None."""
    if not keys:
        return []
    with _verdict_store() as store:
        rows = [store.execute("SELECT verdict FROM verdicts WHERE key = ?", (key,)).fetchone() for key in keys]
    return [None if row is None else Verdict(*json.loads(row[0])) for row in rows]


def store_verdicts(keys, verdicts):
    """Keeps each verdict that judged a program under its key (verdict_key)."""
    kept = [(key, json.dumps(dataclasses.astuple(v))) for key, v in zip(keys, verdicts)
            if v.status not in ("infra_error", "malformed")]
    if not kept:
        return
    with _verdict_store() as store:
        store.executemany("INSERT OR REPLACE INTO verdicts VALUES (?, ?)", kept)
        store.execute("DELETE FROM verdicts WHERE rowid <= (SELECT max(rowid) FROM verdicts) - ?", (VERDICT_ENTRIES,))


def _judge(execution, tests):
    expected = [output.strip() for _, output in tests]
    lines = [line.strip() for line in execution.stdout.rstrip().splitlines()]
    passed = sum(got == want for got, want in zip(lines, expected))
    if execution.status == "ok" and passed == len(tests) == len(lines):
        return Verdict(1.0, "passed", passed, len(tests), "")
    status = "wrong_answer" if execution.status == "ok" else execution.status
    return Verdict(0.0, status, passed, len(tests), sandbox.first_lines(execution.stderr, ERROR_LINES),
                   _first_failure(status, tests, lines))


def _first_failure(status, tests, lines):
    """The first test whose output line is wrong, as Verdict.first_failure says."""
    if status in ("compile_error", "unavailable", "infra_error"):  # it never ran
        return ""
    for t, (line, want) in enumerate(tests):
        got = lines[t] if t < len(lines) else "(nothing)"
        if got != want.strip():
            return f"input {line!r}: expected {want.strip()!r}, got {got!r}"
    return f"{len(lines)} lines printed for {len(tests)} tests" if len(lines) != len(tests) else ""


def share_cores(processes_on_this_machine):
    """Give this process its share of the machine's cores for compiling and running programs
    (WORKERS): N torchrun ranks on one machine would otherwise each run as many programs at once
    as there are cores."""
    global WORKERS
    WORKERS = max(1, len(os.sched_getaffinity(0)) // processes_on_this_machine)


# ----------------------------------------------------------------------------- execute

def execute(program, lang, stdin="", timeout=RUN_TIMEOUT):
    """Compiles (if `lang` needs it) and runs a complete program in the sandbox, feeding it
    `stdin`. Returns Execution(status, stdout, stderr); status is one of "ok", "compile_error"
    (stderr: the first lines of the compiler's message), "runtime_error" (a non-zero exit),
    "timeout", "output_limit", "unavailable" (no working toolchain here) or "infra_error" (the
    sandbox, a cgroup or the disk failed: it says nothing of the program, and is never cached). Raises
    sandbox.Unavailable where the sandbox cannot isolate (see sandbox.check)."""
    if not isinstance(program, str) or not isinstance(stdin, str):
        raise TypeError("execute(program, lang, stdin): program and stdin must be str")
    if not available(lang):
        return Execution("unavailable", "", f"no working {lang} toolchain here "
                                            f"(apt-get install {LANGUAGES[lang].package})")
    return _execute(program, lang, stdin, timeout)


def _execute(program, lang, stdin, timeout):
    spec = LANGUAGES[lang]
    command = sandbox.fill(spec.run, {"{src}": "{prog}/" + spec.source})
    try:
        for attempt in range(2):
            directory, error = _artifact(lang, program)
            if error is not None:
                return Execution("compile_error", "", error)
            try:
                prog = os.path.join(directory, "prog")
                files = [(os.path.join(prog, name), name) for name in sorted(os.listdir(prog))]
                result = _in_sandbox(command, files, stdin.encode(), timeout, spec.memory, spec.env,
                                     _runtime(lang, "run"))
                break
            except FileNotFoundError:  # another process pruned the entry just now: compile it again
                with _lock:
                    _memory_cache.pop(_cache_key(lang, program), None)
                if attempt:
                    raise
    except (InfraError, OSError) as error:  # the sandbox, a cgroup or the disk failed: no verdict on the program
        return Execution("infra_error", "", f"{type(error).__name__}: {error}")
    status = "runtime_error" if result.status == "memory_limit" else result.status  # a memory bomb is a crash
    return Execution(status, result.stdout.decode("utf-8", "replace"), result.stderr.decode("utf-8", "replace"))


# ----------------------------------------------------------------------------- languages

# JVM start-up dominates a tiny program: C1 only, the serial GC, class-data sharing, no perf file.
JVM_FLAGS = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xshare:auto", "-XX:-UsePerfData",
             "-Xss8m", "-Xmx256m", "-XX:ReservedCodeCacheSize=32m", "-XX:MaxMetaspaceSize=128m",
             "-XX:CompressedClassSpaceSize=64m")
JAVAC_JVM_FLAGS = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-XX:-UsePerfData", "-Xmx512m")
CPP_FLAGS = ("-O1", "-std=c++17")
# GNU gold links a small program in ~0.01 s where the default linker (ld.bfd) takes ~0.04 s, a
# third of a C++ program's compile (RESULTS.md); without gold in binutils, the default linker.
LINK_FLAGS = ("-fuse-ld=gold",) if shutil.which("ld.gold", path=sandbox.SEARCH_PATH) else ()

# The checks of a batched language (Language.batched) take the programs' directories. In each
# one they leave error.txt (the message) if the program fails, then an empty file "done".
# javac's own JVM compiles each program alone, as the javac command would, one after another:
# the JVM starts once and javac's code is warm after the first program.
JAVAC_MANY = """\
import java.io.*;
import javax.tools.*;

class Javac {
    public static void main(String[] dirs) throws IOException {
        JavaCompiler javac = ToolProvider.getSystemJavaCompiler();
        for (String dir : dirs) {
            ByteArrayOutputStream said = new ByteArrayOutputStream();
            if (javac.run(null, said, said, "-proc:none", "-encoding", "UTF-8", "-nowarn",
                          "-d", dir + "/prog", dir + "/Main.java") != 0)
                try (OutputStream error = new FileOutputStream(dir + "/error.txt")) { said.writeTo(error); }
            new FileOutputStream(dir + "/done").close();
        }
    }
}
"""
PYTHON_CHECK_MANY = """\
import sys, traceback
for d in sys.argv[1:]:
    try:
        compile(open(d + '/prog/main.py', 'rb').read(), d + '/prog/main.py', 'exec')
    except Exception as error:
        open(d + '/error.txt', 'w').write(''.join(traceback.format_exception_only(error)))
    open(d + '/done', 'w').close()
"""
# as `node --check` does: the source compiled as the body of CommonJS's module function
JAVASCRIPT_CHECK_MANY = """\
const fs = require("fs"), vm = require("vm");
for (const dir of process.argv.slice(1)) {
    const file = dir + "/prog/main.js";
    try {
        vm.compileFunction(fs.readFileSync(file, "utf8"), ["exports", "require", "module", "__filename", "__dirname"],
                           {filename: file});
    } catch (error) {
        fs.writeFileSync(dir + "/error.txt", String(error.stack).split("\\n    at ")[0]);
    }
    fs.writeFileSync(dir + "/done", "");
}
"""
# `bash -n` and `php -l` check one file: one child per program, without a shell (none is in the sandbox)
BASH_CHECK_MANY = 'for d; do e=$("$BASH" -n "$d/prog/main.sh" 2>&1) || printf "%s\\n" "$e" > "$d/error.txt"; : > "$d/done"; done'
PHP_CHECK_MANY = """\
foreach (array_slice($argv, 1) as $dir) {
    $lint = proc_open([PHP_BINARY, "-n", "-l", "$dir/prog/main.php"], [1 => ["pipe", "w"], 2 => ["pipe", "w"]], $pipes);
    $said = stream_get_contents($pipes[2]) . stream_get_contents($pipes[1]);
    if (proc_close($lint) != 0) file_put_contents("$dir/error.txt", $said);
    touch("$dir/done");
}
"""
# go stops a whole build at a program it cannot load (an unknown import), and builds a package
# that is not main without making a program: `go list` finds those first, and the others are
# built by one `go build`, whose messages come under a "# <package>" line each. A program given
# neither a binary nor a message is left to a build of its own.
GO_BUILD_MANY = """\
package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

func main() {
	os.Chdir(filepath.Dir(os.Args[1])) // the programs' directories are siblings
	list := []string{"list", "-e", "-json"}
	for _, dir := range os.Args[1:] {
		list = append(list, "./"+filepath.Base(dir))
	}
	said, _ := exec.Command("go", list...).Output()
	decoder, dirOf := json.NewDecoder(strings.NewReader(string(said))), map[string]string{}
	build := []string{"build", "-ldflags=-s -w", "-o", "bin/"} // -s -w: no symbol table nor DWARF to link
	for decoder.More() {
		var found struct {
			Dir, ImportPath, Name string
			Error           *struct{ Err string }
			DepsErrors      []struct{ Err string }
		}
		if decoder.Decode(&found) != nil {
			return
		}
		dir := filepath.Base(found.Dir)
		if found.Error != nil {
			finish(dir, found.Error.Err+"\\n")
		} else if len(found.DepsErrors) > 0 {
			finish(dir, found.DepsErrors[0].Err+"\\n")
		} else if found.Name != "main" { // go build would make no program of it
			finish(dir, "package "+found.Name+" is not a main package\\n")
		} else {
			dirOf[found.ImportPath] = dir
			build = append(build, "./"+dir)
		}
	}
	if len(dirOf) == 0 {
		return
	}
	said, _ = exec.Command("go", build...).CombinedOutput()
	messages, owner := map[string]string{}, ""
	for _, line := range strings.SplitAfter(string(said), "\\n") {
		if header := strings.TrimPrefix(line, "# "); header != line {
			owner = dirOf[strings.TrimSpace(header)]
		} else if owner != "" {
			messages[owner] += strings.TrimPrefix(line, owner+"/")
		}
	}
	left := false
	for _, dir := range dirOf {
		if os.Rename(filepath.Join("bin", dir), filepath.Join(dir, "prog", "main")) == nil {
			finish(dir, "")
		} else if message, failed := messages[dir]; failed {
			finish(dir, message)
		} else {
			left = true
		}
	}
	if left { // go's words name no program: alone, a program fails with them
		os.Stderr.Write(said)
		os.Exit(1)
	}
}

func finish(dir, message string) {
	if message != "" {
		os.WriteFile(filepath.Join(dir, "error.txt"), []byte(message), 0o644)
	}
	os.WriteFile(filepath.Join(dir, "done"), nil, 0o644)
}
"""


@dataclasses.dataclass(frozen=True)
class Language:
    """How one language is checked and run. A command's first word is a tool (looked up on
    SEARCH_PATH) or a path. Placeholders: {src} the source file, {out} the compiler's output
    directory, {prog} the directory of what runs (the compiled program, or the source), {cache}
    a directory kept between compiles (read-only to them)."""
    source: str                  # the source file's name (Java: the public class must be Main)
    check: tuple                 # compile, or (interpreted languages) check the syntax
    run: tuple
    package: str                 # the Debian package that provides the toolchain
    compiled: bool = True        # False: the check writes nothing and the source itself runs
    batched: bool = False        # True: the check takes many programs' directories (see _compile)
    memory: int = 256 * MiB      # address space of a run (small, so that a memory bomb fails fast)
    compile_memory: int = 2048 * MiB
    env: tuple = ()              # extra (name, value) pairs in the environment of both steps
    warm_up: tuple = ()          # ({file: text}, ((command, products), ...)): run once per cache in
                                 # {out}, which holds the files; after each command its products
                                 # move to {cache}, where they make every check start faster


LANGUAGES = {
    # -S: no site module, the slower part of the interpreter's start (the harness needs only sys)
    "python": Language("main.py", ("python3", "-I", "-S", "-c", PYTHON_CHECK_MANY), ("python3", "-I", "-S", "{src}"),
                       "python3", compiled=False, batched=True),
    "c": Language("main.c", ("gcc", "-O1", *LINK_FLAGS, "-o", "{out}/main", "{src}", "-lm"), ("{prog}/main",), "gcc"),
    # Parsing <iostream> is most of g++'s time on a small program: the headers of tasks.harness
    # are precompiled once and force-included. Not batched: g++ runs its compiler and its linker
    # once per program however it is called, and one call for many measured no worthwhile gain.
    "cpp": Language("main.cpp", ("g++", *CPP_FLAGS, *LINK_FLAGS, "-include", "{cache}/prelude.h", "-o", "{out}/main", "{src}"),
                    ("{prog}/main",), "g++",
                    warm_up=({"prelude.h": "#include <algorithm>\n#include <cstdlib>\n#include <iostream>\n"},
                             ((("g++", *CPP_FLAGS, "-x", "c++-header", "-o", "{out}/prelude.h.gch", "{out}/prelude.h"),
                               ("prelude.h", "prelude.h.gch")),))),
    # The JVM's start-up is most of javac's time on a small program: JAVAC_MANY compiles a batch in
    # one JVM. Its warm-up compiles it into a jar and archives the classes it loads (AppCDS), which
    # halves that start-up again; a missing or stale archive is silently ignored.
    "java": Language("Main.java", ("java", *JAVAC_JVM_FLAGS, "-XX:SharedArchiveFile={cache}/javac-many.jsa",
                                   "-cp", "{cache}/javac-many.jar", "Javac"),
                     ("java", *JVM_FLAGS, "-cp", "{prog}", "Main"), "default-jdk-headless", batched=True,
                     memory=1536 * MiB, compile_memory=3072 * MiB,
                     warm_up=({"Javac.java": JAVAC_MANY,
                               "warm/Main.java": "public class Main { public static void main(String[] a) {} }\n"},
                              ((("javac", *(f"-J{flag}" for flag in JAVAC_JVM_FLAGS), "-d", "{out}", "{out}/Javac.java"),
                                ()),
                               (("jar", *(f"-J{flag}" for flag in JAVAC_JVM_FLAGS), "--create", "--file",
                                 "{out}/javac-many.jar", "-C", "{out}", "Javac.class"), ("javac-many.jar",)),
                               (("java", *JAVAC_JVM_FLAGS, "-XX:ArchiveClassesAtExit={out}/javac-many.jsa", "-cp",
                                 "{cache}/javac-many.jar", "Javac", "{out}/warm"), ("javac-many.jsa",))))),
    "javascript": Language("main.js", ("node", "-e", JAVASCRIPT_CHECK_MANY),
                           ("node", "--max-old-space-size=256", "{src}"), "nodejs", compiled=False, batched=True,
                           memory=1536 * MiB),
    "bash": Language("main.sh", ("bash", "-c", BASH_CHECK_MANY, "bash"), ("bash", "{src}"), "bash", compiled=False,
                     batched=True),
    # -n: no php.ini, nor the extensions it loads (the harness needs none)
    "php": Language("main.php", ("php", "-n", "-r", PHP_CHECK_MANY),
                    ("php", "-n", "-d", "display_errors=stderr", "-d", "memory_limit=256M", "{src}"), "php-cli",
                    compiled=False, batched=True),
    # opt-level=0 compiles in ~0.13 s of CPU against ~0.20 at 1 (RESULTS.md); with overflow checks
    # and debug assertions off (opt-level 1's defaults) integers wrap on overflow at any level
    "rust": Language("main.rs", ("rustc", "--edition", "2021", "-C", "opt-level=0", "-C", "overflow-checks=off",
                                 "-C", "debug-assertions=off", "-C", "debuginfo=0", "-C", "strip=symbols",
                                 "-o", "{out}/main", "{src}"), ("{prog}/main",), "rustc"),
    # CGO_ENABLED=0: cgo would run the C compiler with flags taken from the source.
    # GO_BUILD_MANY (built by the warm-up) links a batch's programs in one `go build`.
    "go": Language("main.go", ("{cache}/go-build-many",), ("{prog}/main",), "golang-go", batched=True,
                   memory=1024 * MiB,  # the Go runtime reserves ~700 MiB of address space at start
                   env=(("CGO_ENABLED", "0"), ("GOPROXY", "off"), ("GOTOOLCHAIN", "local"),
                        ("GOTELEMETRY", "off"), ("GO111MODULE", "off"), ("GOMAXPROCS", "2")),
                   warm_up=({"go-build-many.go": GO_BUILD_MANY},
                            ((("go", "build", "-o", "{out}/go-build-many", "{out}/go-build-many.go"), ("go-build-many",)),))),
    "lua": Language("main.lua", ("luac5.4", "-p", "{src}"), ("lua5.4", "{src}"), "lua5.4", compiled=False),
}
TOOL_ALTERNATIVES = {"gcc": ("gcc", "clang"), "g++": ("g++", "clang++")}
# Programs that print "ok": available() runs one per language in the sandbox, once.
HELLO = {
    "python": 'print("ok")\n',
    "c": '#include <stdio.h>\nint main(void) { puts("ok"); return 0; }\n',
    "cpp": '#include <iostream>\nint main() { std::cout << "ok" << std::endl; }\n',
    "java": 'public class Main { public static void main(String[] a) { System.out.println("ok"); } }\n',
    "javascript": 'console.log("ok");\n',
    "bash": "echo ok\n",
    "php": '<?php echo "ok\\n";\n',
    "rust": 'fn main() { println!("ok"); }\n',
    "go": 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("ok") }\n',
    "lua": 'print("ok")\n',
}
SEARCH_PATH = sandbox.SEARCH_PATH  # where tools are looked up (system directories first)
# Tools are asked where their files are with nothing of the trainer's environment, as the sandbox runs them.
ASK_ENVIRONMENT = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C"}

# ----------------------------------------------------------------------------- toolchains

_lock = threading.Lock()
_warned, _tool_paths, _availability = set(), {}, {}


def _warn_once(message):
    with _lock:
        if message in _warned:
            return
        _warned.add(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def _tool(name):
    """The absolute path of a tool, or None. A rustup proxy is replaced by the real rustc of its
    default toolchain, which needs no $HOME."""
    if name not in _tool_paths:
        found = (shutil.which(n, path=SEARCH_PATH) for n in TOOL_ALTERNATIVES.get(name, (name,)))
        path = next(filter(None, found), None)
        if path and os.path.basename(os.path.realpath(path)) == "rustup":
            sysroot = subprocess.run([path, "--print", "sysroot"], capture_output=True, text=True).stdout.strip()
            path = os.path.join(sysroot, "bin", name) if sysroot else None
        _tool_paths[name] = path
    return _tool_paths[name]


def _tools(lang):
    spec = LANGUAGES[lang]
    commands = [spec.check, spec.run, *(command for command, _ in (spec.warm_up or ({}, ()))[1])]
    return list(dict.fromkeys(command[0] for command in commands if command[0][0] != "{"))


def available(lang):
    """True if `lang`'s toolchain is installed and a hello-world program runs in the sandbox.
    Otherwise warns once, naming the Debian package, and `execute` answers "unavailable"."""
    if lang not in LANGUAGES:
        raise ValueError(f"unknown language {lang!r}; known: {', '.join(LANGUAGES)}")
    with _lock:
        if lang in _availability:
            return _availability[lang]
    package, missing = LANGUAGES[lang].package, [t for t in _tools(lang) if _tool(t) is None]
    if missing:
        _warn_once(f"reward.py: {lang} is unavailable: {', '.join(missing)} not found. Install it with "
                   f"`apt-get install {package}`; until then every {lang} program gets status 'unavailable'.")
        works = False
    else:
        hello = _execute(HELLO[lang], lang, "", COMPILE_TIMEOUT)
        if "timed out" in hello.stderr or hello.status in ("timeout", "infra_error"):
            return True  # out of wall clock on a very busy machine, maybe, or the sandbox failed: ask again next time
        works = hello.status == "ok" and hello.stdout == "ok\n"
        if not works:
            _warn_once(f"reward.py: {lang} is unavailable: a hello-world program failed in the sandbox "
                       f"({hello.status}: {sandbox.first_lines(hello.stderr, 5)}). Check the {package} installation.")
    with _lock:
        _availability[lang] = works
    return works


def _in_sandbox(command, files, stdin, timeout, memory, env, runtime, out_dir=None, cache_dir=None):
    """Runs a Language command in a fresh sandbox that holds `runtime` (see _runtime): {src} is
    the source among `files` ([(host path, name)]); out_dir, a host directory mounted writable at
    {out}, and cache_dir, read-only at {cache}, are a compile's (which also gets more processes
    and larger files)."""
    tool = command[0] if command[0][0] == "{" else _tool(command[0])
    dirs = [("out", out_dir)] if out_dir else []
    read_only = [("cache", cache_dir)] if cache_dir else []
    compiling = bool(dirs or read_only)
    processes, file_size = (COMPILE_PROCESSES, 256 * MiB) if compiling else (sandbox.PROCESSES, sandbox.FILE_SIZE)
    return sandbox.run((tool, *command[1:]), files, stdin, timeout, memory, processes, file_size, env, dirs,
                       read_only, runtime)


# ----------------------------------------------------------------------------- one runtime per sandbox

# A sandbox holds its own language's runtime and nothing else executable (sandbox.run mounts
# these paths, their shared libraries and nothing more of the system), so a program earns its
# reward by being a translation: it cannot hand the source it was shown to another language's
# interpreter or compiler. Each tool is asked where its files are, once per process.

@functools.lru_cache(maxsize=None)
def _runtime(lang, step):
    """The host paths that `step` ("check" or "run") of `lang` may use in its sandbox: the
    interpreter and what it loads, or the compiler's toolchain, or (a compiled program's run)
    only the shared libraries that the toolchain links programs with."""
    tool = _tool(getattr(LANGUAGES[lang], step)[0]) if getattr(LANGUAGES[lang], step)[0][0] != "{" else None
    if lang == "python":  # the interpreter and its standard library: not even /bin/sh
        return (tool, *_ask(tool, "-I", "-c", "import sysconfig; print(sysconfig.get_path('stdlib')); "
                                              "print(sysconfig.get_path('platstdlib'))").split())
    if lang == "bash":
        # bash alone: tasks.harness reads with `read`, and the functions tasks.render writes use
        # only `local`, `echo`, `[` and arithmetic, all builtins, so a translation needs no
        # external command (a short named list would go here if it did)
        return (tool,)
    if lang in ("javascript", "lua"):  # node, lua5.4 (luac5.4 for the check): single executables
        return (tool,)
    if lang == "php":  # php -n reads no php.ini: php alone; else also its php.ini, the .ini files
        # it scans, the extensions they load and the time zone database (Debian's PHP reads the
        # system's for the default time zone)
        if "-n" in getattr(LANGUAGES[lang], step):
            return (tool,)
        return (tool, *_ask(tool, "-r", 'echo php_ini_loaded_file(), "\\n", PHP_CONFIG_FILE_SCAN_DIR, "\\n", '
                                        'ini_get("extension_dir");').split(), "/usr/share/zoneinfo")
    if lang == "java":  # the JDK that the tool (java, javac) belongs to
        return (tool, os.path.dirname(os.path.dirname(os.path.realpath(tool))))
    if lang == "go":  # its GOROOT to build (CGO_ENABLED=0: no C toolchain); programs are static
        return (_tool("go"), _ask(_tool("go"), "env", "GOROOT")) if step == "check" else ()
    if lang == "rust":  # its sysroot (rustc, std, rust-lld) and the C compiler driver it links with, `cc`
        linker, libraries = _rust_linker(_tool("rustc"))
        files, shared = _cc_toolchain(linker, "c", libraries)
        return (tool, _ask(tool, "--print", "sysroot"), *files) if step == "check" else shared
    files, shared = _cc_toolchain(_tool(LANGUAGES[lang].check[0]), "c++" if lang == "cpp" else "c",
                                  tuple(word for word in LANGUAGES[lang].check if word.startswith("-l")))
    return files if step == "check" else shared


def _ask(*argv):
    """What a tool prints, or "" if it cannot run."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, env=ASK_ENVIRONMENT).stdout.strip()
    except (OSError, TypeError):  # (TypeError: the tool is missing, its path None)
        return ""


@functools.lru_cache(maxsize=None)
def _cc_toolchain(driver, language, libraries):
    """(files, shared libraries) of a C or C++ compiler driver: itself, the programs it runs, its
    header and library directories and what its linker reads; among the latter, the shared
    libraries that a program it links loads. Found by linking an empty program on the host with
    -v (which names the programs and the header directories) and the linker's -t (which names
    each file it opens)."""
    with tempfile.TemporaryDirectory() as scratch:
        source = os.path.join(scratch, "empty")
        with open(source, "w") as file:
            file.write("int main(void) { return 0; }\n")
        try:
            done = subprocess.run([driver, "-v", "-Wl,-t", "-x", language, source, "-o", f"{scratch}/a.out",
                                   *libraries], capture_output=True, text=True, env=ASK_ENVIRONMENT)
        except (OSError, TypeError):  # (TypeError: no driver here, its path None)
            return (), ()
    lines = (done.stdout + done.stderr).splitlines()
    programs = [line.split()[0].strip('"') for line in lines if line.startswith((" /", ' "/'))]  # and header dirs
    inputs = [path for line in lines if line.startswith(("/", "(/", "-l")) for path in re.findall(r"/[^\s()]+", line)]
    # the link above ran the default linker, which reads the same files as gold; gold itself too
    tools = [_ask(driver, f"-print-prog-name={name}") for name in ("as", "ld", *(("ld.gold",) if LINK_FLAGS else ()))]
    files = [driver, *programs, *inputs, os.path.dirname(_ask(driver, "-print-libgcc-file-name")),
             *(tool if os.path.isabs(tool) else shutil.which(tool, path=SEARCH_PATH) for tool in tools if tool)]
    files = tuple(sorted({path for path in files if path and not path.startswith(scratch) and os.path.exists(path)}))
    return files, tuple(path for path in files if ".so" in os.path.basename(path) and _is_elf(path))


def _is_elf(path):
    with open(path, "rb") as file:
        return file.read(4) == b"\x7fELF"


@functools.lru_cache(maxsize=None)
def _rust_linker(rustc):
    """(linker, its -l words) with which rustc links a program: from the command line it prints
    (`--print link-args`) while building one on the host."""
    with tempfile.TemporaryDirectory() as scratch:
        with open(os.path.join(scratch, "main.rs"), "w") as file:
            file.write("fn main() {}\n")
        printed = _ask(rustc, "--print", "link-args", "-o", f"{scratch}/main", f"{scratch}/main.rs")
    words = [word for word in shlex.split(printed) if "=" not in word or word.startswith("-")]
    linker = shutil.which(words[0], path=SEARCH_PATH) if words else None
    return linker or _tool("gcc"), tuple(word for word in words if word.startswith("-l"))


# ----------------------------------------------------------------------------- compile once, cache

_memory_cache = collections.OrderedDict()  # key -> (cache entry directory, compiler error or None)
_compiling = {}                            # key -> Lock held by the one thread compiling it
_warmed_up = set()                         # languages whose warm_up this process has seen to
_warming = {}                              # language -> Lock held by the thread warming it up
_cache_dir = None
_new_entries = 0                           # entries this process added to the disk cache
_new_bytes = 0                             # and their bytes since it last pruned it


def _cache_root():
    """A directory under the system temp dir, private to this user (created 0700, checked; made
    again if someone removed it meanwhile)."""
    global _cache_dir
    if _cache_dir is None or not os.path.isdir(_cache_dir):
        root = _cache_dir or os.path.join(tempfile.gettempdir(), f"oorl-reward-cache-{os.geteuid()}")
        os.makedirs(root, mode=0o700, exist_ok=True)
        info = os.lstat(root)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
            raise RuntimeError(f"the compile cache {root} must be a directory of yours with mode 700 "
                               "(another user may have made it): remove it and run again")
        _cache_dir = root
    return _cache_dir


def _cache_key(lang, source):
    # CACHE_FORMAT is part of the key: an entry written under other rules (compilers running as
    # the trainer's user, failures not cached, compilers seeing the whole system) is never read back
    return f"{lang}-" + hashlib.sha256(repr((CACHE_FORMAT, LANGUAGES[lang].check, source)).encode()).hexdigest()[:40]


def _artifact(lang, source):
    """(directory, error) of this source's cache entry: from memory, from disk, or compiled now.
    One thread compiles a given source; the others wait for it."""
    key = _cache_key(lang, source)
    with _lock:
        lock = _compiling.setdefault(key, threading.Lock())
    with lock:
        try:
            with _lock:
                if key in _memory_cache and os.path.isdir(_memory_cache[key][0]):
                    _memory_cache.move_to_end(key)
                    return _memory_cache[key]
            directory = os.path.join(_cache_root(), key)
            if os.path.isdir(directory):
                os.utime(directory)  # recently used: pruning keeps it
            elif left := _compile(lang, [source]):
                return directory, left[source]
            try:
                with open(os.path.join(directory, "error.txt")) as file:
                    artifact = directory, file.read()
            except FileNotFoundError:
                artifact = directory, None
            with _lock:
                _memory_cache[key] = artifact
                if len(_memory_cache) > CACHE_ENTRIES:
                    _memory_cache.popitem(last=False)
            return artifact
        finally:
            with _lock:
                _compiling.pop(key, None)


def _compile(lang, sources):
    """Compiles (or checks) `sources` in one sandbox: all of them for a batched language, else a
    list of one. Each program gets a directory of its own in a staging directory (its source,
    prog/ with what runs, error.txt if it failed), renamed at once to its cache entry, so that
    other threads and processes see a whole entry or none, failures included. Returns {source:
    why} for the sources given no entry: the compiler ran out of wall clock, its warm-up failed,
    or a batch stopped before them (a compile bomb used its CPU time, say). Raises InfraError (and
    writes no entry) if the sandbox failed. A program over ARTIFACT_LIMIT is a cached failure."""
    global _new_entries, _new_bytes
    spec = LANGUAGES[lang]
    cache_dir = None
    if "{cache}" in " ".join(spec.check):
        cache_dir = os.path.join(_cache_root(), f".{lang}")
        os.makedirs(cache_dir, exist_ok=True)
        if why := _warm_up(lang, cache_dir):
            return dict.fromkeys(sources, why)
    staging = tempfile.mkdtemp(prefix=".staging-", dir=_cache_root())
    try:
        name = spec.source if spec.compiled else "prog/" + spec.source  # prog/: what runs, the output or the source
        for i, source in enumerate(sources):
            os.makedirs(os.path.join(staging, str(i), "prog"))
            with open(os.path.join(staging, str(i), name), "w") as file:
                file.write(source)
        if spec.batched:
            command = (*spec.check, *(f"{{out}}/{i}" for i in range(len(sources))))
        else:
            command = sandbox.fill(spec.check, {"{out}": "{out}/0/prog", "{src}": "{out}/0/" + name})
        result = _in_sandbox(command, [], b"", COMPILE_TIMEOUT, spec.compile_memory, spec.env,
                             _runtime(lang, "check"), staging, cache_dir)
        if result.status == "infra_error":  # the sandbox failed, not the compiler: nothing is cached
            raise InfraError(result.stderr.decode("utf-8", "replace").strip())
        left = {}
        for i, source in enumerate(sources):
            part = os.path.join(staging, str(i))
            if os.path.exists(os.path.join(part, "done")):  # a batched check's verdict on this program
                failed, error = os.path.exists(os.path.join(part, "error.txt")), ""
                if failed:
                    with open(os.path.join(part, "error.txt"), errors="replace") as file:
                        error = file.read()
            elif len(sources) > 1:
                left[source] = "its batch stopped before it"
                continue
            elif result.status == "timeout" and result.exit_code is None:
                # out of wall clock, not of CPU time: a machine too busy, maybe; not cached
                left[source] = f"the compiler timed out after {COMPILE_TIMEOUT * sandbox.WALL_FACTOR:.0f} s of wall clock"
                continue
            else:
                # Failures are cached too, CPU-time timeouts included: a compile that ran out of CPU
                # time will again (a compile bomb the policy keeps sampling costs a worker one timeout).
                failed = result.status != "ok"
                error = (f"the compiler ran out of CPU time ({COMPILE_TIMEOUT:.0f} s)" if result.status == "timeout"
                         else (result.stderr + result.stdout).decode("utf-8", "replace"))
            # the message names the program's files as if it had been compiled alone, wherever it was
            error = sandbox.first_lines(error.replace(f"/out/{i}/prog/", "").replace(f"/out/{i}/", ""), ERROR_LINES)
            prog = os.path.join(part, "prog")
            size = _tree_size(prog)
            if size > ARTIFACT_LIMIT:  # the verdict is cached, the artifact never is
                shutil.rmtree(prog)
                failed, error = True, (f"the compiled program is {size / MiB:.1f} MiB, over the "
                                       f"{ARTIFACT_LIMIT / MiB:.0f} MiB limit")
            if failed:
                with open(os.path.join(part, "error.txt"), "w") as file:
                    file.write(error or f"the compiler failed ({result.status}, exit code {result.exit_code})")
            try:
                os.rename(part, os.path.join(_cache_root(), _cache_key(lang, source)))
            except OSError:  # another process finished the same source first: its entry is as good
                continue
            _new_entries, _new_bytes = _new_entries + 1, _new_bytes + min(size, ARTIFACT_LIMIT)
            # pruned every 1000 entries, and whenever they add 10% of CACHE_BYTES (its overshoot at most)
            if _new_entries % 1000 == 0 or _new_bytes > CACHE_BYTES // 10:
                _new_bytes = 0
                _prune_cache()
        return left
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _compile_many(lang, sources):
    """Gives every source a cache entry: those without one compiled in one batch (one compiler
    start for all), then any the batch did not reach alone, so that no program decides another's
    verdict."""
    missing = [s for s in dict.fromkeys(sources) if not os.path.isdir(os.path.join(_cache_root(), _cache_key(lang, s)))]
    for source in _compile(lang, missing) if len(missing) > 1 else missing:
        _artifact(lang, source)


def _warm_up(lang, cache_dir):
    """Runs the language's warm_up once per cache: not again in this process, nor where another
    process made all its products. The other threads wait for it, as a check may need what it
    makes. Returns why it failed, or None."""
    files, steps = LANGUAGES[lang].warm_up or ({}, ())
    products = [os.path.join(cache_dir, product) for _, made in steps for product in made]
    with _lock:
        lock = _warming.setdefault(lang, threading.Lock())
    with lock:
        if lang in _warmed_up or all(map(os.path.exists, products)):
            _warmed_up.add(lang)
            return None
        staging = tempfile.mkdtemp(prefix=".staging-", dir=_cache_root())
        try:
            for name, text in files.items():
                os.makedirs(os.path.dirname(os.path.join(staging, name)), exist_ok=True)
                with open(os.path.join(staging, name), "w") as file:
                    file.write(text)
            for command, made in steps:
                result = _in_sandbox(command, [], b"", COMPILE_TIMEOUT, LANGUAGES[lang].compile_memory,
                                     LANGUAGES[lang].env, _runtime(lang, "check"), staging, cache_dir)
                if result.status == "infra_error":
                    raise InfraError(result.stderr.decode("utf-8", "replace").strip())
                if result.status != "ok":
                    return (f"preparing the {lang} compiler failed ({' '.join(command[:2])}: {result.status}): "
                            + sandbox.first_lines((result.stderr + result.stdout).decode("utf-8", "replace"), 5))
                for product in made:
                    os.replace(os.path.join(staging, product), os.path.join(cache_dir, product))
            _warmed_up.add(lang)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _prune_cache():
    """Keeps the most recently used entries on disk, CACHE_ENTRIES of them and CACHE_BYTES at most
    (never drops one used in the last ten minutes: another process may be about to run it), and
    drops abandoned staging directories."""
    now, entries = time.time(), []
    for entry in os.scandir(_cache_root()):
        try:
            entries.append((entry.stat().st_mtime, entry))
        except FileNotFoundError:  # another thread or process renamed or removed it meanwhile
            continue
    entries.sort(key=lambda item: item[0])
    programs = [(mtime, e) for mtime, e in entries if not e.name.startswith(".")]
    stale = [(mtime, e) for mtime, e in entries if e.name.startswith(".staging-") and mtime < now - 3600]
    kept_bytes, old = 0, []
    for rank, (mtime, entry) in enumerate(reversed(programs)):  # the most recently used first
        kept_bytes += _tree_size(entry.path)
        if rank >= CACHE_ENTRIES or kept_bytes > CACHE_BYTES:
            old.append((mtime, entry))
    for mtime, entry in stale + old:
        if mtime < now - 600:
            shutil.rmtree(entry.path, ignore_errors=True)


def _tree_size(path):
    """The bytes of the files under a directory (those that vanish meanwhile count nothing)."""
    total = 0
    for root, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return total


if __name__ == "__main__":
    print(f"sandbox: {sandbox.check()}")
    print(f"compile cache: {_cache_root()}")
    for language in LANGUAGES:
        start = time.time()
        works = available(language)
        print(f"{language:>10}: {'works' if works else 'UNAVAILABLE'} ({time.time() - start:.2f} s for hello world)")
