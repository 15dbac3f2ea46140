"""
languages.py: the table of languages. For each one: how a program is checked (compiled, or for
an interpreted language syntax-checked) and run in sandbox.py's sandbox, with which runtime
(the few host paths its sandbox holds), which limits, and how many programs one check takes
at once. reward.py (eq. 4) reads it; so does anything else that runs programs.

    import languages
    languages.LANGUAGES["java"]                   # Language(source='Main.java', check=(...), ...)
    languages.missing_tools("rust")               # [] where rustc is installed
    errors, result = languages.check("cpp", [source_a, source_b], staging, cache_dir)
    languages.run("cpp", staging + "/0/prog", stdin=b"3 4\n", timeout=0.5)

    python languages.py   # which languages' tools are found here (the reward's, the benchmarks'), and each runtime

A batched language's programs are checked together where the toolchain can do it in one start
(javac in one JVM, Go's in one `go build`, Python's and JavaScript's checks in one process,
bash's and PHP's in one sandbox; batch_checks.py holds those programs), each program on its own,
with its own message. Limits are per language: the JVM, V8 and Go reserve far more address space
than they use, compilers need more memory and time than programs. Time limits are CPU time (sandbox.py), so a busy machine does
not turn a correct program into a timeout.

Compilers read untrusted source but never run it: a check runs in the same kind of sandbox, as
the same unprivileged user as the programs (so `#include "/etc/shadow"` fails), holding its own
toolchain and nothing else. A warm-up, run once per cache directory, keeps what makes a
compiler start faster (precompiled harness headers for g++; for Java the batch compiler and an
archive of the classes its JVM loads), mounted read-only into later checks.
"""
import dataclasses
import functools
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading

import batch_checks
import sandbox

MiB = 1 << 20
# A check's budget: seconds of CPU time for one program, and for each further program of a
# batched check; its wall clock is sandbox.WALL_FACTOR times more, seconds rather than minutes,
# as a compiler made to wait on what never ends holds a worker that long. A program's check
# takes a small fraction of it (RESULTS.md).
COMPILE_TIMEOUT = 10.0
BATCH_TIMEOUT = 0.5
CHECK_OUTPUT = 32 * MiB     # bytes a check hands back to the host disk per program (its compiled program)
WARM_UP_OUTPUT = 128 * MiB  # and a warm-up step (a precompiled header, a class archive)
COMPILE_PROCESSES = 128    # tasks (threads count) of a compile: `go build` runs several multi-threaded tools



class InfraError(RuntimeError):
    """The machinery failed (a sandbox that did not start, a cgroup, the disk), not the program."""


# ----------------------------------------------------------------------------- the table

JVM_FLAGS = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xshare:auto", "-XX:-UsePerfData",
             "-Xss8m", "-Xmx256m", "-XX:ReservedCodeCacheSize=32m", "-XX:MaxMetaspaceSize=128m",
             "-XX:CompressedClassSpaceSize=64m")
JAVAC_JVM_FLAGS = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-XX:-UsePerfData", "-Xmx512m")
CPP_FLAGS = ("-O1", "-std=c++17")
# GNU gold links a small program in ~0.01 s where the default linker (ld.bfd) takes ~0.04 s, a
# third of a C++ program's compile (RESULTS.md); without gold in binutils, the default linker.
LINK_FLAGS = ("-fuse-ld=gold",) if shutil.which("ld.gold", path=sandbox.SEARCH_PATH) else ()


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
    runtime_extra: tuple = ()    # more of the system in both steps' sandboxes: tools (by name) and
                                 # host paths (a benchmark harness's libraries and commands)
    check_timeout: float = COMPILE_TIMEOUT  # a check's CPU seconds for its first program (and a warm-up step's)
    batch_timeout: float = BATCH_TIMEOUT    # and for each further program of a batch
    run_budget_scale: float = 1.0  # a run's CPU budget, as a multiple of the budget it is given


LANGUAGES = {
    # -S: no site module, the slower part of the interpreter's start (the harness needs only sys)
    "python": Language("main.py", ("python3", "-I", "-S", "-c", batch_checks.PYTHON_CHECK_MANY), ("python3", "-I", "-S", "{src}"),
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
    # The JVM's start-up is most of javac's time on a small program: JAVAC_MANY compiles a batch
    # in one JVM. Its warm-up compiles it into a jar and archives the classes it loads (AppCDS), which
    # halves that start-up again; a missing or stale archive is silently ignored.
    "java": Language("Main.java", ("java", *JAVAC_JVM_FLAGS, "-XX:SharedArchiveFile={cache}/javac-many.jsa",
                                   "-cp", "{cache}/javac-many.jar", "Javac"),
                     ("java", *JVM_FLAGS, "-cp", "{prog}", "Main"), "default-jdk-headless", batched=True,
                     memory=1536 * MiB, compile_memory=3072 * MiB,
                     warm_up=({"Javac.java": batch_checks.JAVAC_MANY,
                               "warm/Main.java": "public class Main { public static void main(String[] a) {} }\n"},
                              ((("javac", *(f"-J{flag}" for flag in JAVAC_JVM_FLAGS), "-d", "{out}", "{out}/Javac.java"),
                                ()),
                               (("jar", *(f"-J{flag}" for flag in JAVAC_JVM_FLAGS), "--create", "--file",
                                 "{out}/javac-many.jar", "-C", "{out}", "Javac.class"), ("javac-many.jar",)),
                               (("java", *JAVAC_JVM_FLAGS, "-XX:ArchiveClassesAtExit={out}/javac-many.jsa", "-cp",
                                 "{cache}/javac-many.jar", "Javac", "{out}/warm"), ("javac-many.jsa",))))),
    "javascript": Language("main.js", ("node", "-e", batch_checks.JAVASCRIPT_CHECK_MANY),
                           ("node", "--max-old-space-size=256", "{src}"), "nodejs", compiled=False, batched=True,
                           memory=1536 * MiB),
    # bash computes its arithmetic by parsing strings, an order of magnitude slower than the
    # others: twice the budget keeps the costliest task it may be given (tasks.heaviest) as far
    # inside its budget as the other languages' are (RESULTS.md, "the run budget")
    "bash": Language("main.sh", ("bash", "-c", batch_checks.BASH_CHECK_MANY, "bash"), ("bash", "{src}"), "bash", compiled=False,
                     batched=True, run_budget_scale=2.0),
    # -n: no php.ini, nor the extensions it loads (the harness needs none)
    "php": Language("main.php", ("php", "-n", "-r", batch_checks.PHP_CHECK_MANY),
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
                   warm_up=({"go-build-many.go": batch_checks.GO_BUILD_MANY},
                            ((("go", "build", "-o", "{out}/go-build-many", "{out}/go-build-many.go"), ("go-build-many",)),))),
    "lua": Language("main.lua", ("luac5.4", "-p", "{src}"), ("lua5.4", "{src}"), "lua5.4", compiled=False),
}
# The command a user would type to compile one program, where the table's check does more: no
# batch, nothing from a warm-up (plain_compile). The benchmarks' naive baseline runs them.
PLAIN_COMPILES = {
    "cpp": ("g++", *CPP_FLAGS, *LINK_FLAGS, "-o", "{out}/main", "{src}"),
    "java": ("javac", "-d", "{out}", "{src}"),
    "go": ("go", "build", "-o", "{out}/main", "{src}"),
}
# ----------------------------------------------------------------------------- the benchmarks' table

# Public benchmarks (benchmarks.py) are judged as their reference harnesses judge them, with the
# libraries and commands those harnesses have: MultiPL-E's (Java with assertions on and javatuples,
# C# with DEBUG defined, Lua with luaunit, Go as `go test`, Bash with the usual text commands) and
# HumanEval-X's (Go with testify, C++ with Boost and OpenSSL's md5, Python with numpy). Each
# program still runs in a sandbox of its own that holds its language's runtime and nothing else:
# these runtimes are wider than the reward's, never another language's interpreter or compiler.
TYPESCRIPT = "/usr/share/nodejs/typescript"
MCS = "/usr/lib/mono/4.5/mcs.exe"
JAVATUPLES = "/usr/share/java/javatuples.jar"
GOPATH = "/usr/share/gocode"  # Debian's Go sources: testify and what it imports
# MultiPL-E's Bash harness runs in a full system: its problems' programs use these commands
SHELL_COMMANDS = ("cat", "cut", "date", "echo", "expr", "factor", "fold", "head", "od", "paste", "printf", "rev",
                  "seq", "sort", "tac", "tail", "tr", "uniq", "wc", "basename", "dirname", "tee", "shuf", "numfmt",
                  "sed", "grep", "awk", "bc", "xargs")
GO_TEST_ENV = (("CGO_ENABLED", "0"), ("GOPROXY", "off"), ("GOTOOLCHAIN", "local"), ("GOTELEMETRY", "off"),
               ("GO111MODULE", "off"), ("GOPATH", GOPATH), ("GOMAXPROCS", "2"), ("GOCACHE_START", "{cache}/gocache"))
# Parsing the headers is most of g++'s time on a benchmark's program: each program's first line
# includes the one of these that its benchmark's programs all include (benchmarks.py), whose
# precompiled form the warm-up makes.
CPP_PRELUDES = {"multipl-e.h": "#include <bits/stdc++.h>\n",
                "humaneval-x.h": "".join(f"#include <{name}>\n" for name in (
                    "cstdio", "stdlib.h", "algorithm", "math.h", "stdio.h", "vector", "string", "climits", "cstring",
                    "iostream"))}

BENCHMARK_LANGUAGES = {
    **{lang: LANGUAGES[lang] for lang in ("javascript", "lua")},
    # with site (no -S): the interpreter's dist-packages, where HumanEval-X's numpy is
    "python": dataclasses.replace(LANGUAGES["python"], run=("python3", "-I", "{src}"), package="python3-numpy"),
    # Boost's headers come with the toolchain's include directory; -lcrypto: OpenSSL's md5
    "cpp": Language("main.cpp", ("g++", "-std=c++17", "-O1", *LINK_FLAGS, "-I{cache}", "-o", "{out}/main", "{src}",
                                 "-lcrypto"), ("{prog}/main",), "g++ libboost-dev libssl-dev",
                    warm_up=(CPP_PRELUDES, tuple((("g++", "-std=c++17", "-O1", "-x", "c++-header", "-o", f"{{out}}/{name}.gch",
                                                   f"{{out}}/{name}"), (name, f"{name}.gch")) for name in CPP_PRELUDES)),
                    check_timeout=30.0),  # (the warm-up precompiles <bits/stdc++.h>)
    "java": dataclasses.replace(
        LANGUAGES["java"], check=(*LANGUAGES["java"].check[:-4], f"-Djavac.classpath={JAVATUPLES}",
                                  *LANGUAGES["java"].check[-4:]),
        run=("java", *JVM_FLAGS, "-ea", "-cp", f"{{prog}}:{JAVATUPLES}", "Main"),
        package="default-jdk-headless libjavatuples-java", runtime_extra=(JAVATUPLES,)),
    "typescript": Language("main.ts", ("node", "-e", batch_checks.TYPESCRIPT_CHECK_MANY % TYPESCRIPT), ("node", "{prog}/main.js"),
                           "nodejs node-typescript", batched=True, memory=1536 * MiB, runtime_extra=(TYPESCRIPT,),
                           check_timeout=30.0),  # (tsc's start: the TypeScript compiler loaded and its libraries read)
    # (mcs takes a word that begins with / for an option, as /out: is: the source comes in through -recurse:)
    "csharp": Language("main.cs", ("mono", MCS, "-nologo", "-d:DEBUG", "-r:System.Numerics.dll",
                                   "-main:BenchmarkMain", "-out:{out}/main.exe", "-recurse:{src}"),
                       ("mono", "{prog}/main.exe"), "mono-mcs mono-runtime", memory=1024 * MiB,
                       # (libmono-native: the class libraries' file and system calls, which mono loads by name)
                       runtime_extra=("/usr/lib/mono", "/etc/mono", "/usr/lib/libmono-native.so")),
    "php": dataclasses.replace(LANGUAGES["php"], run=("php", "-d", "display_errors=stderr", "{src}")),
    "bash": dataclasses.replace(LANGUAGES["bash"], runtime_extra=SHELL_COMMANDS),
    # overflow checks and debug assertions on, as rustc's and cargo's default (debug) builds have them
    "rust": Language("main.rs", ("rustc", "--edition", "2021", "-A", "warnings", "-C", "opt-level=0", "-C", "debuginfo=0",
                                 "-C", "strip=symbols", "-o", "{out}/main", "{src}"), ("{prog}/main",), "rustc"),
    "go": Language("main_test.go", ("{cache}/go-test-many",), ("{prog}/main",), "golang-go golang-github-stretchr-testify-dev",
                   batched=True, memory=1024 * MiB, env=GO_TEST_ENV, runtime_extra=(GOPATH,),
                   warm_up=({"go-test-many.go": batch_checks.GO_TEST_MANY, "warm/main_test.go": batch_checks.GO_TEST_WARM},
                            ((("go", "build", "-o", "{out}/go-test-many", "{out}/go-test-many.go"), ("go-test-many",)),
                             (("{cache}/go-test-many", "-keep", "{out}/warm"), ("gocache",)))),
                   check_timeout=60.0, batch_timeout=3.0),  # the warm-up builds testify; a test program links it
    "lua": dataclasses.replace(LANGUAGES["lua"], runtime_extra=("/usr/share/lua/5.4/luaunit.lua",),
                               package="lua5.4 lua-unit"),
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
_tool_paths = {}


def tool(name):
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


def table(benchmark=False):
    """The table of languages: the reward's, or (benchmark=True) the public benchmarks'."""
    return BENCHMARK_LANGUAGES if benchmark else LANGUAGES


def tools(lang, benchmark=False):
    """The tools that `lang`'s commands start, by name."""
    spec = table(benchmark)[lang]
    commands = [spec.check, spec.run, *(command for command, _ in (spec.warm_up or ({}, ()))[1])]
    return list(dict.fromkeys(command[0] for command in commands if command[0][0] != "{"))


def plain_compile(lang):
    """The command a user would type to compile one program of a compiled language `lang` ({src}
    the source, {out} the output directory): PLAIN_COMPILES', or the table's check."""
    if not LANGUAGES[lang].compiled:
        raise ValueError(f"{lang} is not compiled: its source runs as it is")
    return PLAIN_COMPILES.get(lang, LANGUAGES[lang].check)


def missing_tools(lang, benchmark=False):
    """The tools (and, for a benchmark, the harness's files) of `lang` that are not installed
    here (empty when all are)."""
    if lang not in table(benchmark):
        raise ValueError(f"unknown language {lang!r}; known: {', '.join(table(benchmark))}")
    files = [path for path in table(benchmark)[lang].runtime_extra if path.startswith("/") and not os.path.exists(path)]
    return [name for name in tools(lang, benchmark) if tool(name) is None] + files


def in_sandbox(command, files, stdin, timeout, memory, env, runtime, out_dir=None, cache_dir=None, copy_limit=0):
    """Runs a Language command in a fresh sandbox that holds `runtime` (see runtime): {src} is
    the source among `files` ([(host path, name)]); out_dir, a host directory copied into a
    tmpfs of the sandbox at {out} (as large as its memory) and `copy_limit` bytes of it copied
    back, and cache_dir, read-only at {cache}, are a compile's (which also gets more processes
    and larger files)."""
    executable = command[0] if command[0][0] == "{" else tool(command[0])
    dirs = [("out", out_dir)] if out_dir else []
    read_only = [("cache", cache_dir)] if cache_dir else []
    compiling = bool(dirs or read_only)
    processes, file_size = (COMPILE_PROCESSES, 256 * MiB) if compiling else (sandbox.PROCESSES, sandbox.FILE_SIZE)
    return sandbox.run((executable, *command[1:]), files, stdin, timeout, memory, processes, file_size, env, dirs,
                       read_only, runtime, dirs_size=memory, copy_limit=copy_limit)


# ----------------------------------------------------------------------------- one runtime per sandbox

# A sandbox holds its own language's runtime and nothing else executable (sandbox.run mounts
# these paths, their shared libraries and nothing more of the system), so a program earns its
# reward by being a translation: it cannot hand the source it was shown to another language's
# interpreter or compiler. Each tool is asked where its files are, once per process.

@functools.lru_cache(maxsize=None)
def runtime(lang, step, benchmark=False):
    """The host paths that `step` ("check" or "run") of `lang` may use in its sandbox: the
    interpreter and what it loads, or the compiler's toolchain, or (a compiled program's run)
    only the shared libraries that the toolchain links programs with. (first: the command's
    executable.) A benchmark's language also holds its Language.runtime_extra."""
    spec = table(benchmark)[lang]
    command = getattr(spec, step)
    first = tool(command[0]) if command[0][0] != "{" else None
    extra = tuple(path if path.startswith("/") else tool(path) for path in spec.runtime_extra)
    return (*_runtime(lang, step, spec, first, benchmark), *(path for path in extra if path))


def _runtime(lang, step, spec, first, benchmark):
    if lang == "python":  # the interpreter and its standard library: not even /bin/sh (a benchmark's: numpy too)
        return (first, *_ask(first, "-I", "-c", "import sysconfig; print(sysconfig.get_path('stdlib')); "
                                              "print(sysconfig.get_path('platstdlib'))").split(),
                *(_ask(first, "-I", "-c", "import numpy, os; print(os.path.dirname(numpy.__file__))").split()
                  if benchmark else ()))
    if lang == "bash":
        # bash alone: tasks.harness reads with `read`, and the functions tasks.render writes use
        # only `local`, `echo`, `[` and arithmetic, all builtins, so a translation needs no
        # external command (a short named list would go here if it did)
        return (first,)
    if lang in ("javascript", "lua", "typescript", "csharp"):  # node, lua5.4 (luac5.4 for the check): single
        return (first,)  # executables (typescript's compiler and mono's class libraries: their runtime_extra)
    if lang == "php":  # php -n reads no php.ini: php alone; else also its php.ini, the .ini files
        # it scans, the extensions they load and the time zone database (Debian's PHP reads the
        # system's for the default time zone)
        if "-n" in getattr(spec, step):
            return (first,)
        return (first, *_ask(first, "-r", 'echo php_ini_loaded_file(), "\\n", PHP_CONFIG_FILE_SCAN_DIR, "\\n", '
                                        'ini_get("extension_dir");').split(), "/usr/share/zoneinfo")
    if lang == "java":  # the JDK that the command (java, javac) belongs to
        return (first, os.path.dirname(os.path.dirname(os.path.realpath(first))))
    if lang == "go":  # its GOROOT to build (CGO_ENABLED=0: no C toolchain); programs are static
        return (tool("go"), _ask(tool("go"), "env", "GOROOT")) if step == "check" else ()
    if lang == "rust":  # its sysroot (rustc, std, rust-lld) and the C compiler driver it links with, `cc`
        linker, libraries = _rust_linker(tool("rustc"))
        files, shared = _cc_toolchain(linker, "c", libraries)
        return (first, _ask(first, "--print", "sysroot"), *files) if step == "check" else shared
    files, shared = _cc_toolchain(tool(spec.check[0]), "c++" if lang == "cpp" else "c",
                                  tuple(word for word in spec.check if word.startswith("-l")))
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
    binutils = [_ask(driver, f"-print-prog-name={name}") for name in ("as", "ld", *(("ld.gold",) if LINK_FLAGS else ()))]
    files = [driver, *programs, *inputs, os.path.dirname(_ask(driver, "-print-libgcc-file-name")),
             *(path if os.path.isabs(path) else shutil.which(path, path=SEARCH_PATH) for path in binutils if path)]
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
    return linker or tool("gcc"), tuple(word for word in words if word.startswith("-l"))


# ----------------------------------------------------------------------------- check and run

_warmed_up = set()   # (language, cache directory) whose warm_up this process has seen to
_warming = {}        # language -> Lock held by the thread warming it up


def check(lang, sources, staging, cache_dir=None, benchmark=False):
    """Compiles (or checks) `sources` in one sandbox: all of them for a batched language, else a
    list of one. Each program gets staging/<i>/ with its source, and prog/ with what runs (the
    compiled program, or the source itself). Returns (errors, result): errors[i] is the
    compiler's message on sources[i] ("" if it compiled), or None where the check gave no
    verdict on it (a batch stopped before it, or made more than it may copy back; the sandbox
    ran out of wall clock); result is the sandbox's sandbox.Result. A language whose check
    reads {cache} is warmed up first (the warm-up's failure is every source's error).
    benchmark: with the benchmarks' table."""
    spec = table(benchmark)[lang]
    if "{cache}" in " ".join(spec.check):
        if why := warm_up(lang, cache_dir, benchmark):
            return [why] * len(sources), None
    name = spec.source if spec.compiled else "prog/" + spec.source  # prog/: what runs, the output or the source
    for i, source in enumerate(sources):
        os.makedirs(os.path.join(staging, str(i), "prog"))
        with open(os.path.join(staging, str(i), name), "w") as file:
            file.write(source)
    if spec.batched:
        command = (*spec.check, *(f"{{out}}/{i}" for i in range(len(sources))))
    else:
        command = sandbox.fill(spec.check, {"{out}": "{out}/0/prog", "{src}": "{out}/0/" + name})
    result = in_sandbox(command, [], b"", spec.check_timeout + spec.batch_timeout * (len(sources) - 1),
                        spec.compile_memory, spec.env, runtime(lang, "check", benchmark), staging, cache_dir,
                        CHECK_OUTPUT * len(sources))
    errors = []
    for i in range(len(sources)):
        part = os.path.join(staging, str(i))
        if result.status == "output_limit" and len(sources) > 1:
            error = None  # what the batch made, too large to copy back whole: each program alone says whose
        elif os.path.exists(os.path.join(part, "done")):  # a batched check's verdict on this program
            try:
                with open(os.path.join(part, "error.txt"), errors="replace") as file:
                    error = file.read() or "the compiler failed"
            except FileNotFoundError:
                error = ""
        elif len(sources) > 1 or result.status in ("infra_error",) or (
                result.status == "timeout" and result.exit_code is None):
            error = None  # no verdict on this program: a batch stopped before it, or out of wall clock
        elif result.status == "timeout":
            error = f"the compiler ran out of CPU time ({spec.check_timeout:.0f} s)"
        elif result.status != "ok":
            error = (result.stderr + result.stdout).decode("utf-8", "replace") or \
                f"the compiler failed ({result.status}, exit code {result.exit_code})"
        else:
            error = ""
        if error:  # the message names the program's files as if it had been compiled alone, wherever it was
            error = error.replace(f"/out/{i}/prog/", "").replace(f"/out/{i}/", "")
        errors.append(error)
    return errors, result


def run(lang, prog_dir, stdin=b"", timeout=1.0, benchmark=False):
    """Runs what `check` left in prog_dir (a compiled program, or the source) with `lang`'s run
    command in a fresh sandbox that holds its runtime: a sandbox.Result."""
    spec = table(benchmark)[lang]
    command = sandbox.fill(spec.run, {"{src}": "{prog}/" + spec.source})
    files = [(os.path.join(prog_dir, name), name) for name in sorted(os.listdir(prog_dir))]
    return in_sandbox(command, files, stdin, timeout, spec.memory, spec.env, runtime(lang, "run", benchmark))


def warm_up(lang, cache_dir, benchmark=False):
    """Runs the language's warm_up once per cache: not again in this process, nor where another
    process made all its products. The other threads wait for it, as a check may need what it
    makes. Returns why it failed, or None."""
    spec = table(benchmark)[lang]
    files, steps = spec.warm_up or ({}, ())
    products = [os.path.join(cache_dir, product) for _, made in steps for product in made]
    with _lock:
        lock = _warming.setdefault(lang, threading.Lock())
    with lock:
        if (lang, cache_dir) in _warmed_up or all(map(os.path.exists, products)):
            _warmed_up.add((lang, cache_dir))
            return None
        staging = tempfile.mkdtemp(prefix=".staging-", dir=os.path.dirname(cache_dir))
        try:
            for name, text in files.items():
                os.makedirs(os.path.dirname(os.path.join(staging, name)), exist_ok=True)
                with open(os.path.join(staging, name), "w") as file:
                    file.write(text)
            for command, made in steps:
                result = in_sandbox(command, [], b"", spec.check_timeout, spec.compile_memory, spec.env,
                                    runtime(lang, "check", benchmark), staging, cache_dir, WARM_UP_OUTPUT)
                if result.status == "infra_error":
                    raise InfraError(result.stderr.decode("utf-8", "replace").strip())
                if result.status != "ok":
                    return (f"preparing the {lang} compiler failed ({' '.join(command[:2])}: {result.status}): "
                            + sandbox.first_lines((result.stderr + result.stdout).decode("utf-8", "replace"), 5))
                for product in made:
                    os.replace(os.path.join(staging, product), os.path.join(cache_dir, product))
            _warmed_up.add((lang, cache_dir))
        finally:
            shutil.rmtree(staging, ignore_errors=True)



if __name__ == "__main__":
    print(f"sandbox: {sandbox.check()}")
    for benchmark in (False, True):
        print("the public benchmarks' harnesses:" if benchmark else "the reward's languages:")
        for language, spec in table(benchmark).items():
            missing = missing_tools(language, benchmark)
            found = f"missing {', '.join(missing)} (apt-get install {spec.package})" if missing else "found"
            run_paths = ' '.join(map(str, runtime(language, 'run', benchmark))) or '(none: static)'
            print(f"{language:>10}: {found}; runtime: {run_paths}")
