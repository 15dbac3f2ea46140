"""
reward.py: how each language is compiled and run (in sandbox.py's sandbox), the compile cache,
and the binary reward of eq. 4 (1 if a completion is well formed, compiles and passes every test).

    from reward import execute, score
    execute("print(input()[::-1])", "python", stdin="abc\\n")  # Execution(status='ok', stdout='cba\\n', ...)
    score(completions, tasks)                                 # [1.0, 0.0, ...]: eq. 4, in parallel

    python reward.py      # how programs are isolated here, and which languages work

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
harness headers precompiled for g++, an archive of javac's own classes for the JVM.
"""
import collections
import dataclasses
import hashlib
import os
import shutil
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
RUN_TIMEOUT = 2.0          # seconds of CPU time for one run (all of a task's tests at once; the wall
                           # clock allows sandbox.WALL_FACTOR times more): the references take < 0.5 s
                           # even on the JVM, and a program stuck in a loop holds a worker this long
COMPILE_TIMEOUT = 60.0     # seconds of CPU time for a compiler or syntax check
COMPILE_PROCESSES = 128    # tasks (threads count) of a compile: `go build` runs several multi-threaded tools
ERROR_LINES = 20           # lines of a compiler error kept for logging
WORKERS = len(os.sched_getaffinity(0))  # score() runs this many programs at once (share_cores)
CACHE_ENTRIES = 20000      # compiled programs kept on disk (the least recently used go first)
CACHE_FORMAT = 2           # changes whenever what a cache entry means changes

# JVM start-up dominates a tiny program: C1 only, the serial GC, class-data sharing, no perf file.
JVM_FLAGS = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xshare:auto", "-XX:-UsePerfData",
             "-Xss8m", "-Xmx256m", "-XX:ReservedCodeCacheSize=32m", "-XX:MaxMetaspaceSize=128m",
             "-XX:CompressedClassSpaceSize=64m")
JAVAC_FLAGS = ("-J-XX:TieredStopAtLevel=1", "-J-XX:+UseSerialGC", "-J-XX:-UsePerfData", "-J-Xmx512m",
               "-proc:none", "-encoding", "UTF-8", "-nowarn")
CPP_FLAGS = ("-O1", "-std=c++17")
PYTHON_CHECK = "import sys; compile(open(sys.argv[1], 'rb').read(), sys.argv[1], 'exec')"


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
    memory: int = 256 * MiB      # address space of a run (small, so that a memory bomb fails fast)
    compile_memory: int = 2048 * MiB
    env: tuple = ()              # extra (name, value) pairs in the environment of both steps
    warm_up: tuple = ()          # ({file: text}, command, product): run once per cache, it leaves
                                 # {cache}/product, which then makes every check start faster


LANGUAGES = {
    "python": Language("main.py", ("python3", "-I", "-c", PYTHON_CHECK, "{src}"), ("python3", "-I", "{src}"),
                       "python3", compiled=False),
    "c": Language("main.c", ("gcc", "-O1", "-o", "{out}/main", "{src}", "-lm"), ("{prog}/main",), "gcc"),
    # Parsing <iostream> is most of g++'s time on a small program: the headers of tasks.harness
    # are precompiled once and force-included (g++ parses them as usual if the .gch is unusable).
    "cpp": Language("main.cpp", ("g++", *CPP_FLAGS, "-include", "{cache}/prelude.h", "-o", "{out}/main", "{src}"),
                    ("{prog}/main",), "g++",
                    warm_up=({"prelude.h": "#include <algorithm>\n#include <cstdlib>\n#include <iostream>\n"},
                             ("g++", *CPP_FLAGS, "-x", "c++-header", "-o", "{out}/prelude.h.gch", "{cache}/prelude.h"),
                             "prelude.h.gch")),
    # javac's start-up is loading its own classes: an archive of them (AppCDS) made once halves it;
    # a missing or stale archive is silently ignored.
    "java": Language("Main.java", ("javac", *JAVAC_FLAGS, "-J-XX:SharedArchiveFile={cache}/javac.jsa",
                                   "-d", "{out}", "{src}"),
                     ("java", *JVM_FLAGS, "-cp", "{prog}", "Main"), "default-jdk-headless",
                     memory=1536 * MiB, compile_memory=3072 * MiB,
                     warm_up=({"Warm.java": "class Warm { public static void main(String[] a) {} }\n"},
                              ("javac", *JAVAC_FLAGS, "-J-XX:ArchiveClassesAtExit={out}/javac.jsa", "-d", "{out}",
                               "{cache}/Warm.java"), "javac.jsa")),
    "javascript": Language("main.js", ("node", "--check", "{src}"), ("node", "--max-old-space-size=256", "{src}"),
                           "nodejs", compiled=False, memory=1536 * MiB),
    "bash": Language("main.sh", ("bash", "-n", "{src}"), ("bash", "{src}"), "bash", compiled=False),
    "php": Language("main.php", ("php", "-l", "{src}"),
                    ("php", "-d", "display_errors=stderr", "-d", "memory_limit=256M", "{src}"), "php-cli",
                    compiled=False),
    "rust": Language("main.rs", ("rustc", "--edition", "2021", "-C", "opt-level=1", "-C", "debuginfo=0",
                                 "-C", "strip=symbols", "-o", "{out}/main", "{src}"), ("{prog}/main",), "rustc"),
    # CGO_ENABLED=0: cgo would run the C compiler with flags taken from the source.
    "go": Language("main.go", ("go", "build", "-o", "{out}/main", "{src}"), ("{prog}/main",), "golang-go",
                   memory=1024 * MiB,  # the Go runtime reserves ~700 MiB of address space at start
                   env=(("CGO_ENABLED", "0"), ("GOPROXY", "off"), ("GOTOOLCHAIN", "local"),
                        ("GOTELEMETRY", "off"), ("GO111MODULE", "off"), ("GOMAXPROCS", "2"))),
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

Execution = collections.namedtuple("Execution", "status stdout stderr")


@dataclasses.dataclass(frozen=True)
class Verdict:
    reward: float  # eq. 4: 1.0 or 0.0
    status: str    # "passed", "wrong_answer", "malformed", or the execution status that failed
    passed: int    # tests whose output line was right
    total: int
    error: str     # the first lines of the compiler's message or of stderr ("" if none)


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
    return [command[0] for command in (LANGUAGES[lang].check, LANGUAGES[lang].run) if command[0][0] != "{"]


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
        if "timed out" in hello.stderr or hello.status == "timeout":
            return True  # out of wall clock on a very busy machine, maybe: ask again next time
        works = hello.status == "ok" and hello.stdout == "ok\n"
        if not works:
            _warn_once(f"reward.py: {lang} is unavailable: a hello-world program failed in the sandbox "
                       f"({hello.status}: {_first_lines(hello.stderr, 5)}). Check the {package} installation.")
    with _lock:
        _availability[lang] = works
    return works


def _first_lines(text, n=ERROR_LINES):
    return "\n".join(text.strip().splitlines()[:n])


def _fill(words, mapping):
    for placeholder, value in mapping.items():
        words = tuple(word.replace(placeholder, value) for word in words)
    return words


def _in_sandbox(command, files, stdin, timeout, memory, env, out_dir=None, cache_dir=None):
    """Runs a Language command in a fresh sandbox: {src} is the source among `files` ([(host
    path, name)]); out_dir, a host directory mounted writable at {out}, and cache_dir, read-only
    at {cache}, are a compile's (which also gets more processes and larger files)."""
    tool = command[0] if command[0][0] == "{" else _tool(command[0])
    dirs = [("out", out_dir)] if out_dir else []
    read_only = [("cache", cache_dir)] if cache_dir else []
    compiling = bool(dirs or read_only)
    processes, file_size = (COMPILE_PROCESSES, 256 * MiB) if compiling else (sandbox.PROCESSES, sandbox.FILE_SIZE)
    return sandbox.run((tool, *command[1:]), files, stdin, timeout, memory, processes, file_size, env, dirs,
                       read_only)


# ----------------------------------------------------------------------------- compile once, cache

_memory_cache = collections.OrderedDict()  # key -> (cache entry directory, compiler error or None)
_compiling = {}                            # key -> Lock held by the one thread compiling it
_warmed_up = set()                         # languages whose warm_up this process has seen to
_cache_dir = None
_new_entries = 0                           # entries this process added to the disk cache


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
    # the trainer's user, failures not cached) is never read back
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
            elif not _compile(lang, source, directory):
                return directory, f"the compiler timed out after {COMPILE_TIMEOUT * sandbox.WALL_FACTOR:.0f} s " \
                                  "of wall clock"
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


def _compile(lang, source, directory):
    """Compiles (or checks) into a staging directory, then renames it to `directory` at once, so
    that other threads and processes see a whole entry or none, failures included (error.txt).
    Returns False (and writes no entry) if the compiler ran out of wall clock."""
    global _new_entries
    spec = LANGUAGES[lang]
    staging = tempfile.mkdtemp(prefix=".staging-", dir=_cache_root())
    try:
        prog = os.path.join(staging, "prog")  # what runs: the compiler's output, or the source
        os.mkdir(prog)
        source_path = os.path.join(staging if spec.compiled else prog, spec.source)
        with open(source_path, "w") as file:
            file.write(source)
        cache_dir = None
        if "{cache}" in " ".join(spec.check):
            cache_dir = os.path.join(_cache_root(), f".{lang}")
            os.makedirs(cache_dir, exist_ok=True)
            _warm_up(lang, cache_dir)
        command = _fill(spec.check, {"{src}": "{prog}/" + spec.source})
        result = _in_sandbox(command, [(source_path, spec.source)], b"", COMPILE_TIMEOUT, spec.compile_memory,
                             spec.env, prog if spec.compiled else None, cache_dir)
        if result.status == "timeout" and result.exit_code is None:
            return  # out of wall clock, not of CPU time: a machine too busy, maybe; not cached
        # Failures are cached too, CPU-time timeouts included: a compile that ran out of CPU time
        # will again (a compile bomb the policy keeps sampling costs a worker one timeout).
        if result.status == "timeout":
            error = f"the compiler ran out of CPU time ({COMPILE_TIMEOUT:.0f} s)"
        else:
            error = _first_lines((result.stderr + result.stdout).decode("utf-8", "replace"))
        if result.status != "ok":
            with open(os.path.join(staging, "error.txt"), "w") as file:
                file.write(error or f"the compiler failed ({result.status}, exit code {result.exit_code})")
        try:
            os.rename(staging, directory)
        except OSError:  # another process finished the same source first: its entry is as good
            return True
        _new_entries += 1
        if _new_entries % 1000 == 0:
            _prune_cache()
        return True
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _warm_up(lang, cache_dir):
    """Runs the language's warm_up once per cache (per process, and not at all when another
    process did it already). Its files appear at once; the product when it is complete."""
    files, command, product = LANGUAGES[lang].warm_up or ({}, None, None)
    with _lock:
        if not command or lang in _warmed_up:
            return
        _warmed_up.add(lang)
    if os.path.exists(os.path.join(cache_dir, product)):
        return
    staging = tempfile.mkdtemp(prefix=".staging-", dir=_cache_root())
    try:
        for name, text in files.items():
            with open(os.path.join(staging, name), "w") as file:
                file.write(text)
            os.replace(os.path.join(staging, name), os.path.join(cache_dir, name))
        result = _in_sandbox(command, [], b"", COMPILE_TIMEOUT, LANGUAGES[lang].compile_memory,
                             LANGUAGES[lang].env, staging, cache_dir)
        if result.status == "ok":
            os.replace(os.path.join(staging, product), os.path.join(cache_dir, product))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _prune_cache():
    """Keeps the CACHE_ENTRIES most recently used entries on disk (never one used in the last ten
    minutes: another process may be about to run it) and drops abandoned staging directories."""
    now, entries = time.time(), []
    for entry in os.scandir(_cache_root()):
        try:
            entries.append((entry.stat().st_mtime, entry))
        except FileNotFoundError:  # another thread or process renamed or removed it meanwhile
            continue
    entries.sort(key=lambda item: item[0])
    programs = [(mtime, e) for mtime, e in entries if not e.name.startswith(".")]
    stale = [(mtime, e) for mtime, e in entries if e.name.startswith(".staging-") and mtime < now - 3600]
    for mtime, entry in stale + programs[:max(0, len(programs) - CACHE_ENTRIES)]:
        if mtime < now - 600:
            shutil.rmtree(entry.path, ignore_errors=True)


# ----------------------------------------------------------------------------- execute

def execute(program, lang, stdin="", timeout=RUN_TIMEOUT):
    """Compiles (if `lang` needs it) and runs a complete program in the sandbox, feeding it
    `stdin`. Returns Execution(status, stdout, stderr); status is one of "ok", "compile_error"
    (stderr: the first lines of the compiler's message), "runtime_error" (a non-zero exit),
    "timeout", "output_limit" or "unavailable" (no working toolchain here). Raises
    sandbox.Unavailable where the sandbox cannot isolate (see sandbox.check)."""
    if not isinstance(program, str) or not isinstance(stdin, str):
        raise TypeError("execute(program, lang, stdin): program and stdin must be str")
    if not available(lang):
        return Execution("unavailable", "", f"no working {lang} toolchain here "
                                            f"(apt-get install {LANGUAGES[lang].package})")
    return _execute(program, lang, stdin, timeout)


def _execute(program, lang, stdin, timeout):
    spec = LANGUAGES[lang]
    command = _fill(spec.run, {"{src}": "{prog}/" + spec.source})
    for attempt in range(2):
        directory, error = _artifact(lang, program)
        if error is not None:
            return Execution("compile_error", "", error)
        try:
            prog = os.path.join(directory, "prog")
            files = [(os.path.join(prog, name), name) for name in sorted(os.listdir(prog))]
            result = _in_sandbox(command, files, stdin.encode(), timeout, spec.memory, spec.env)
            break
        except FileNotFoundError:  # another process pruned the entry just now: compile it again
            with _lock:
                _memory_cache.pop(_cache_key(lang, program), None)
            if attempt:
                raise
    status = "runtime_error" if result.status == "memory_limit" else result.status  # a memory bomb is a crash
    return Execution(status, result.stdout.decode("utf-8", "replace"), result.stderr.decode("utf-8", "replace"))


# ----------------------------------------------------------------------------- the reward (eq. 4)

def share_cores(processes_on_this_machine):
    """Give this process its share of the machine's cores for compiling and running programs
    (WORKERS): N torchrun ranks on one machine would otherwise each run as many programs at once
    as there are cores."""
    global WORKERS
    WORKERS = max(1, len(os.sched_getaffinity(0)) // processes_on_this_machine)


def score_details(completions, tasks, truncated=None, timeout=RUN_TIMEOUT):
    """One Verdict per completion (see score), for logging. Identical programs run once; the
    others run in parallel, WORKERS at a time."""
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
    with ThreadPoolExecutor(max(1, min(WORKERS, len(jobs)))) as pool:
        executions = pool.map(lambda job: execute(job[1], job[0], job[2], timeout), jobs)
        for execution, indices in zip(executions, jobs.values()):
            for i in indices:
                verdicts[i] = _judge(execution, tasks[i]["tests"])
    return verdicts


def _judge(execution, tests):
    expected = [output.strip() for _, output in tests]
    lines = [line.strip() for line in execution.stdout.rstrip().splitlines()]
    passed = sum(got == want for got, want in zip(lines, expected))
    if execution.status != "ok":
        return Verdict(0.0, execution.status, passed, len(tests), _first_lines(execution.stderr))
    if passed == len(tests) == len(lines):
        return Verdict(1.0, "passed", passed, len(tests), "")
    return Verdict(0.0, "wrong_answer", passed, len(tests), _first_lines(execution.stderr))


def score(completions, tasks, truncated=None, timeout=RUN_TIMEOUT):
    """The reward of eq. 4 for each completion (a target-language function f, maybe followed by
    the end-of-text token) of its task: 1.0 if it is well formed (defines f and was not cut off
    at the token limit: truncated[i]), compiles inside the task's harness and prints every
    test's expected output, else 0.0."""
    return [verdict.reward for verdict in score_details(completions, tasks, truncated, timeout)]


if __name__ == "__main__":
    print(f"sandbox: {sandbox.check()}")
    print(f"compile cache: {_cache_root()}")
    for language in LANGUAGES:
        start = time.time()
        works = available(language)
        print(f"{language:>10}: {'works' if works else 'UNAVAILABLE'} ({time.time() - start:.2f} s for hello world)")
