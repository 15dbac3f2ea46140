"""
benchmarks.py: the public code benchmarks the paper reports (MultiPL-E's HumanEval, Table 2) and
HumanEval-X (the translation task of Table 3, from its canonical solutions), read from the files
as their authors publish them and judged in our sandbox as their reference harnesses judge them,
strictly. eval.py samples completions; this file reads, assembles, judges, scores and reports.

    import benchmarks
    problems = benchmarks.read("humaneval-x/")                  # .jsonl, .jsonl.gz or .parquet, or a folder
    completion = benchmarks.cut(text, problems[0])               # a base model's text, to the end of the function
    verdicts = benchmarks.judge([(problem, completion), ...])    # [Verdict(status="passed", ...), ...]
    by_language = benchmarks.score(benchmarks.prompts("humaneval-x/"), {name: [completion, ...]}, n=1)

    python benchmarks.py PATH [PATH ...]   # the canonical solutions' pass rate per language (HumanEval-X),
                                           # or a file's completions: python benchmarks.py PATH --completions=FILE

Formats, detected from a record's fields:
  MultiPL-E (JSONL, or the Hugging Face dataset's parquet files nuprl/MultiPL-E humaneval-<lang>/
      and mbpp-<lang>/): name, language, prompt, tests, stop_tokens. A program is prompt +
      completion cut at its first stop token + "\\n" + tests.
  HumanEval-X (.jsonl or .jsonl.gz): task_id, prompt, declaration, canonical_solution, test (Go:
      import, test_setup). A program is put together as its evaluation script does (its
      process_humaneval_test): Python and C++ with its helper imports and headers, Go with its
      test_setup, Rust as declaration + prompt + completion + tests. Its Rust declarations `use`
      the rand, regex and md5 crates, which a lone rustc does not have: those lines are dropped,
      so a program that uses a crate fails to compile (Rust/91's solution uses regex, Rust/162's md5,
      the tests of Rust/38, 50 and 53 rand, 0.7's API, which Debian's rand 0.8 no longer has).

The pass rule. A program passes when it compiled, exited 0 and its tests ran to their end. The
reference harnesses check only the first two, which a completion can fool: `exit(0)` inside the
function ends the program before a single test ran. So every program ends with a step that only
runs after the last test (after main's last statement, after luaunit's run, in Go's TestMain after
the tests, in a class that calls the tests' main): it copies stdin to stdout, and each run is given
a random token of its own on stdin that the program must print last. The token is not in the
program and changes every run, so a completion cannot print it ahead of time; a completion that
reads its own stdin and exits with it is an attack on this judge itself, which no harness that
runs tests in the completion's own process can rule out. Assertions are never off: Java runs with
-ea, C# is compiled with DEBUG defined and a failed Debug.Assert throws, HumanEval-X's JavaScript
console.assert throws (Node's only prints; HumanEval-X's own script fails a program that prints
anything at all, a rule kept here for no language), C and C++ keep assert (no NDEBUG).

Each program runs in a sandbox of its own with its language's runtime as the reference harness
has it (languages.BENCHMARK_LANGUAGES), compiled in batches where the toolchain allows.
"""
import atexit
import dataclasses
import functools
import gzip
import json
import math
import os
import re
import resource
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import languages
import stats

RUN_TIMEOUT = 10.0   # seconds of CPU time for one program's tests (MultiPL-E's harness allows 15 of wall clock)
BATCH = 24           # programs per batched check: enough to share a start, small enough to keep both cores busy
WORKERS = os.cpu_count() or 1
SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")

# The benchmarks' names of languages (MultiPL-E's `language`, HumanEval-X's task_id prefix) -> ours
LANGUAGE_NAMES = {"py": "python", "python": "python", "cpp": "cpp", "c++": "cpp", "java": "java",
                  "js": "javascript", "javascript": "javascript", "ts": "typescript", "typescript": "typescript",
                  "cs": "csharp", "csharp": "csharp", "c#": "csharp", "php": "php", "sh": "bash", "bash": "bash",
                  "lua": "lua", "rs": "rust", "rust": "rust", "go": "go", "go_test.go": "go"}
# HumanEval-X's evaluation script puts these before a Python program and before a C++ program
# (those its prompt lacks); a Go program gets an import of those of these packages it uses.
HUMANEVAL_X_PYTHON_IMPORTS = ("import math", "import re", "import sys", "import copy", "import datetime",
                              "import itertools", "import collections", "import heapq", "import statistics",
                              "import functools", "import hashlib", "import numpy", "import numpy as np",
                              "import string", "from typing import *", "from collections import *")
HUMANEVAL_X_CPP_HEADERS = ("#include<stdlib.h>", "#include<algorithm>", "#include<math.h>", "#include<stdio.h>",
                           "#include<vector>", "#include<string>", "#include<climits>", "#include<cstring>",
                           "#include<iostream>")
HUMANEVAL_X_GO_PACKAGES = ("math", "strings", "fmt", "strconv", "time", "bytes", "regexp", "sort", "math/rand",
                           "crypto/md5")
RUST_CRATE_USE = re.compile(r"^use (rand|regex|md5)\b.*;\n?", re.M)  # (no crates without cargo: see the docstring)

# The last step of a program: copy stdin (the run's token) to stdout, after the tests.
FINISH = {
    "python": "\nimport sys as benchmark_sys\nbenchmark_sys.stdout.write(benchmark_sys.stdin.read())\n",
    "javascript": '\nprocess.stdout.write(require("fs").readFileSync(0, "utf8"));\n',
    # (eval: `process` and `require` have no TypeScript types without Node's; each file a module, see languages.py)
    "typescript": "\neval('process.stdout.write(require(\"fs\").readFileSync(0, \"utf8\"))');\nexport {};\n",
    "php": '\necho file_get_contents("php://stdin");\n',
    "bash": '\nIFS= read -r benchmark_token\nprintf "%s\\n" "$benchmark_token"\n',
    # inside main, before its closing brace
    "cpp": "    { int c; while ((c = std::getchar()) != EOF) std::putchar(c); }\n",
    "rust": "    { let mut t = String::new(); std::io::Read::read_to_string(&mut std::io::stdin(), &mut t).unwrap(); "
            "print!(\"{}\", t); }\n",
}
LUA_RUN = "os.exit(lu.LuaUnit.run())"
LUA_FINISH = ("local benchmark_failures = lu.LuaUnit.run()\n"
              "if benchmark_failures == 0 then io.write(io.read(\"a\")) end\nos.exit(benchmark_failures)")
JAVA_MAIN = """
public class Main {
    public static void main(String[] args) throws Exception {
        %s.main(args);
        System.out.print(new String(System.in.readAllBytes()));
    }
}
"""
# Debug.Assert reports to the trace listeners, which in Mono print and go on: this one throws
CSHARP_MAIN = """
class BenchmarkMain {
    class Throw : System.Diagnostics.TraceListener {
        public override void Write(string message) {}
        public override void WriteLine(string message) {}
        public override void Fail(string message, string detail) { throw new System.Exception("assertion failed: " + message); }
    }
    public static void Main(string[] args) {
        System.Diagnostics.Trace.Listeners.Clear();
        System.Diagnostics.Trace.Listeners.Add(new Throw());
        Problem.Main(args);
        System.Console.Out.Write(System.Console.In.ReadToEnd());
    }
}
"""
GO_IMPORTS = '\nimport (\n    benchmark_io "io"\n    benchmark_os "os"\n    benchmark_testing "testing"\n)\n'
GO_FINISH = """
func TestMain(m *benchmark_testing.M) {
    code := m.Run()
    if code == 0 {
        benchmark_io.Copy(benchmark_os.Stdout, benchmark_os.Stdin)
    }
    benchmark_os.Exit(code)
}
"""
# Node's console.assert prints and goes on: HumanEval-X's JavaScript tests are console.assert calls
JAVASCRIPT_ASSERT = ('Object.defineProperty(console, "assert", {value: (ok, ...said) => { if (!ok) throw new Error('
                     '"assertion failed " + said.join(" ")); }, writable: false, configurable: false});\n')
# Where a base model's continuation of a HumanEval-X prompt ends: the function's closing brace at
# the start of a line (Java: the class's), or for Python the first line that is not indented
HUMANEVAL_X_END = {"python": re.compile(r"\n(?=\S)"), "default": re.compile(r"(^|\n)}[^\n]*(\n|$)")}


@dataclasses.dataclass(frozen=True)
class Problem:
    name: str             # MultiPL-E's name, HumanEval-X's task_id
    language: str         # ours (LANGUAGE_NAMES)
    benchmark: str        # "multipl-e" or "humaneval-x"
    prompt: str           # what a model continues
    tests: str
    stop_tokens: tuple    # MultiPL-E's; () for HumanEval-X (HUMANEVAL_X_END)
    canonical: str = None  # HumanEval-X's canonical solution (the completion of its prompt)
    declaration: str = ""  # HumanEval-X's: the prompt's code without its docstring
    setup: str = ""        # HumanEval-X's Go test_setup (package and imports)
    source: str = ""       # the file it was read from


@dataclasses.dataclass(frozen=True)
class Verdict:
    status: str   # passed, compile_error, failed (exit code not 0), timeout, memory_limit, output_limit,
                  # incomplete (exited 0 before its tests ended), infra_error (the machinery, not the program)
    detail: str = ""


# ----------------------------------------------------------------------------- reading

def read(path):
    """The problems of a benchmark file, or of every such file under a folder, in order."""
    if os.path.isdir(path):
        files = sorted(os.path.join(folder, name) for folder, _, names in os.walk(path) for name in names
                       if name.endswith(SUFFIXES))
    elif os.path.isfile(path):
        files = [path]
    else:
        raise FileNotFoundError(f"no benchmark file or folder at {path}")
    if not files:
        raise ValueError(f"{path}: no benchmark files in it ({', '.join(SUFFIXES)})")
    problems = [to_problem(record, file) for file in files for record in records(file)]
    if not problems:
        raise ValueError(f"{path}: no records")
    return problems


def records(file):
    """The records (dicts) of a .jsonl, .jsonl.gz or .parquet file."""
    if file.endswith(".parquet"):
        import pyarrow.parquet  # (only for parquet files)
        return pyarrow.parquet.read_table(file).to_pylist()
    opened = gzip.open(file, "rt", encoding="utf-8") if file.endswith(".gz") else open(file, encoding="utf-8")
    with opened as lines:
        try:
            return [json.loads(line) for line in lines if line.strip()]
        except json.JSONDecodeError as error:
            raise ValueError(f"{file}: not JSON lines ({error})") from None


def to_problem(record, file=""):
    """A Problem from a MultiPL-E or HumanEval-X record, told apart by their fields."""
    if {"name", "language", "prompt", "tests", "stop_tokens"} <= record.keys():
        language = LANGUAGE_NAMES.get(record["language"])
        if language is None:
            raise ValueError(f"{file}: {record['name']}: language {record['language']!r} is not one of ours "
                             f"({', '.join(sorted(set(LANGUAGE_NAMES.values())))})")
        return Problem(record["name"], language, "multipl-e", record["prompt"], record["tests"],
                       tuple(record["stop_tokens"]), source=file)
    if {"task_id", "prompt", "declaration", "canonical_solution", "test"} <= record.keys():
        language = LANGUAGE_NAMES.get(record["task_id"].split("/")[0].lower())
        if language not in ("python", "cpp", "java", "javascript", "go", "rust"):
            raise ValueError(f"{file}: {record['task_id']}: not a HumanEval-X language")
        prompt, declaration = record["prompt"], record["declaration"]
        if language == "go":  # (its evaluation script drops the prompt's imports: test_setup has them)
            prompt = prompt.replace(record.get("import", ""), "")
        if language == "rust":  # its prompt is a comment: the code starts with the declaration
            declaration = RUST_CRATE_USE.sub("", declaration)
            prompt = declaration + prompt
        return Problem(record["task_id"], language, "humaneval-x", prompt, record["test"], (),
                       record["canonical_solution"], declaration, record.get("test_setup", ""), file)
    raise ValueError(f"{file}: a record with fields {sorted(record)} is neither MultiPL-E's (name, language, "
                     "prompt, tests, stop_tokens) nor HumanEval-X's (task_id, prompt, declaration, "
                     "canonical_solution, test)")


# ----------------------------------------------------------------------------- completions

def cut(text, problem):
    """A model's continuation of the prompt, cut where the reference harness cuts it: MultiPL-E
    at the first stop token; HumanEval-X after the function (HUMANEVAL_X_END)."""
    if problem.benchmark == "multipl-e":
        ends = [text.find(token) for token in problem.stop_tokens if token in text]
        return text[:min(ends)] if ends else text
    end = HUMANEVAL_X_END.get(problem.language, HUMANEVAL_X_END["default"]).search(text)
    return text[:end.end()] if end else text


def code_block(reply, problem):
    """The completion in a chat model's reply: its first fenced code block (the whole reply if it
    has none), from after the prompt's last line (the function's signature) where it repeats it.
    (Then cut as a base model's text is: MultiPL-E's tests close the function themselves.)"""
    block = re.search(r"```[^\n]*\n(.*?)(```|$)", reply, re.S)
    code = block.group(1) if block else reply
    signature = problem.prompt.rstrip().rsplit("\n", 1)[-1].strip()
    at = code.find(signature) if signature else -1
    return code[at + len(signature):].lstrip(" ").removeprefix("\n") if at >= 0 else code


def translation_prompt(source, target):
    """HumanEval-X as translation: the source language's solution (its declaration and canonical
    solution) shown in comments, then the target's prompt to continue."""
    shown = source.declaration + source.canonical
    comment = {"python": "#", "bash": "#"}.get(target.language, "//")
    return (f"{comment} The same function in {source.language}:\n"
            + "".join(f"{comment} {line}\n" for line in shown.strip("\n").split("\n"))
            + f"{comment} Its translation into {target.language}:\n" + target.prompt)


# ----------------------------------------------------------------------------- assembling

def assemble(problem, completion):
    """The program that tests `completion`, with the step that prints the run's token after the
    tests (FINISH): what the reference harness runs, made strict."""
    if problem.benchmark == "humaneval-x":
        return _assemble_humaneval_x(problem, completion)
    lang, program = problem.language, problem.prompt + completion + "\n" + problem.tests
    if lang == "lua":  # (in the tests alone: a completion cannot move it)
        return problem.prompt + completion + "\n" + _replace_once(problem.tests, LUA_RUN, LUA_FINISH, problem)
    if lang in ("cpp", "rust"):  # the tests end with main's closing brace
        return ('#include "multipl-e.h"\n' if lang == "cpp" else "") + _before_last_brace(program, FINISH[lang], problem)
    if lang == "java":
        return program + JAVA_MAIN % "Problem"
    if lang == "csharp":
        return program + CSHARP_MAIN
    if lang == "go":
        return _go_test(program, problem)
    return program + FINISH[lang]


def _assemble_humaneval_x(problem, completion):
    lang = problem.language
    if lang == "python":
        completion = cut(completion, problem)
        return ("\n".join(HUMANEVAL_X_PYTHON_IMPORTS) + "\n" + problem.prompt + completion + "\n" + problem.tests
                + "\n" + FINISH[lang])
    if lang == "cpp":
        headers = "".join(line + "\n" for line in HUMANEVAL_X_CPP_HEADERS if line not in problem.prompt)
        program = headers + "\n" + problem.prompt + completion + "\n" + problem.tests
        return '#include "humaneval-x.h"\n' + _before_last_brace(program, FINISH[lang], problem)
    if lang == "java":
        tests = _replace_once(problem.tests, "public class Main", "class HumanEvalTests", problem)
        return problem.prompt + completion + "\n" + tests + JAVA_MAIN % "HumanEvalTests"
    if lang == "javascript":
        return JAVASCRIPT_ASSERT + problem.prompt + completion + "\n" + problem.tests + FINISH[lang]
    if lang == "go":
        used = [f'"{package}"' for package in HUMANEVAL_X_GO_PACKAGES
                if package not in problem.setup and package.split("/")[-1] + "." in completion]
        imports = "import (\n" + "".join(f"    {package}\n" for package in used) + ")\n" if used else ""
        return _go_test(problem.setup + "\n" + imports + "\n" + problem.prompt + completion + "\n" + problem.tests,
                        problem)
    # rust: the tests are a #[cfg(test)] module of #[test] functions, run by main in their order
    # (one problem's tests are all commented out: like `cargo test`, it then runs none)
    tests = re.sub(r"/\*.*?\*/", "", problem.tests, flags=re.S).replace("#[cfg(test)]", "")
    attribute = r"#\[test\](?:\s|//[^\n]*)*fn\s+"  # (a comment may come between)
    names = re.findall(attribute + r"(\w+)", tests)
    tests = re.sub(attribute, "pub fn ", tests)
    module = re.search(r"mod\s+(\w+)", tests)
    calls = "".join(f"    {module.group(1)}::{name}();\n" for name in names)
    return problem.prompt + completion + tests + "\nfn main() {\n" + calls + FINISH["rust"] + "}\n"


def _go_test(program, problem):
    """A Go test file with TestMain, which prints the token once every test passed."""
    package = re.search(r"^package \w+[^\n]*\n", program, re.M)
    if package is None:
        raise ValueError(f"{problem.name}: no package clause in the program")
    return program[:package.end()] + GO_IMPORTS + program[package.end():] + GO_FINISH


def _before_last_brace(program, statement, problem):
    at = program.rstrip().rfind("}")
    if at < 0 or program[at + 1:].strip():
        raise ValueError(f"{problem.name}: its tests do not end with main's closing brace")
    return program[:at] + statement + program[at:]


def _replace_once(text, old, new, problem):
    if text.count(old) != 1:
        raise ValueError(f"{problem.name}: expected its tests to hold {old!r} once")
    return text.replace(old, new)


# ----------------------------------------------------------------------------- judging

def judge(jobs, timeout=RUN_TIMEOUT, workers=WORKERS):
    """Verdicts, in order, on [(problem, completion)]: each program compiled (in batches where its
    toolchain allows) and run in a sandbox of its own. Identical programs are judged once."""
    sources = [assemble(problem, completion) for problem, completion in jobs]
    unique = {}  # (language, source) -> index into verdicts of the unique programs
    for (problem, _), source in zip(jobs, sources):
        unique.setdefault((problem.language, source), len(unique))
    for lang in {lang for lang, _ in unique}:
        if missing := languages.missing_tools(lang, benchmark=True):
            raise RuntimeError(f"cannot judge {lang}: missing {', '.join(missing)} "
                               f"(apt-get install {languages.BENCHMARK_LANGUAGES[lang].package}; or bash setup.sh)")
    verdicts = [None] * len(unique)
    root = tempfile.mkdtemp(prefix="oorl-benchmarks-")
    try:
        groups = []  # (language, [(unique index, source)]) compiled together
        for lang in sorted({lang for lang, _ in unique}):
            mine = [(i, source) for (l, source), i in unique.items() if l == lang]
            size = BATCH if languages.BENCHMARK_LANGUAGES[lang].batched else 1
            size = min(size, max(1, math.ceil(len(mine) / workers)))  # at least as many batches as workers
            groups += [(lang, mine[start:start + size]) for start in range(0, len(mine), size)]
        with ThreadPoolExecutor(workers) as pool:
            for done in [pool.submit(_judge_group, *group, os.path.join(root, str(n)), _cache_dir(), timeout, verdicts)
                         for n, group in enumerate(groups)]:
                done.result()  # (a worker's exception, raised here)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return [verdicts[unique[problem.language, source]] for (problem, _), source in zip(jobs, sources)]


@functools.lru_cache(maxsize=None)
def _cache_dir():
    """This process's directory for the toolchains' warm-ups (languages.warm_up runs once per
    process and cache), removed at its exit."""
    directory, creator = tempfile.mkdtemp(prefix="oorl-benchmarks-cache-"), os.getpid()
    os.chmod(directory, 0o755)  # (read by the sandboxes' own user)
    atexit.register(lambda: os.getpid() == creator and shutil.rmtree(directory, ignore_errors=True))
    return directory


def _judge_group(lang, programs, staging, cache_dir, timeout, verdicts):
    """Compiles one batch and runs what compiled; retries alone a program the batch gave no verdict."""
    os.makedirs(staging)
    errors, _ = languages.check(lang, [source for _, source in programs], staging, cache_dir, benchmark=True)
    for k, ((i, source), error) in enumerate(zip(programs, errors)):
        prog = os.path.join(staging, str(k), "prog")
        if error is None and len(programs) > 1:  # a batch stopped before it: alone
            alone = os.path.join(staging, f"alone-{k}")
            os.makedirs(alone)
            error = languages.check(lang, [source], alone, cache_dir, benchmark=True)[0][0]
            prog = os.path.join(alone, "0", "prog")
        if error is None:
            verdicts[i] = Verdict("infra_error", "the compiler gave no verdict")
        elif error:
            verdicts[i] = Verdict("compile_error", error[:2000])
        else:
            verdicts[i] = _run(lang, prog, timeout)


def _run(lang, prog, timeout):
    """One run with its own token on stdin; passed only if the program printed it last."""
    for _ in range(2):  # (an infrastructure failure is retried once)
        token = secrets.token_hex(16)
        result = languages.run(lang, prog, (token + "\n").encode(), timeout, benchmark=True)
        if result.status != "infra_error":
            break
    said = (result.stderr + result.stdout).decode("utf-8", "replace")[-2000:]
    if result.status != "ok":
        return Verdict("failed" if result.status == "runtime_error" else result.status, said)
    if not result.stdout.rstrip().endswith(token.encode()):
        return Verdict("incomplete", "exited 0 before its tests ran to their end\n" + said)
    return Verdict("passed")


# ----------------------------------------------------------------------------- scoring and report

def prompts(path, translate_from=""):
    """{problem name: (problem, the prompt a model continues)}: the benchmark's own prompts, or
    (translate_from, a HumanEval-X file) HumanEval-X's problems put as translations from that
    file's language into each other one."""
    problems = read(path)
    if not translate_from:
        return {p.name: (p, p.prompt) for p in problems}
    sources = {p.name.split("/")[-1]: p for p in read(translate_from)}
    if any(p.canonical is None for p in [*problems, *sources.values()]):
        raise ValueError("translate_from makes translations of HumanEval-X problems: both files must be HumanEval-X's")
    return {p.name: (p, translation_prompt(sources[p.name.split("/")[-1]], p)) for p in problems
            if p.name.split("/")[-1] in sources and p.language != sources[p.name.split("/")[-1]].language}


def read_completions(path, names):
    """{problem name: [completion, ...]} of a JSONL file of {"name" or "task_id", "completion"}
    lines (completions made elsewhere), every name one of `names`."""
    samples = {}
    for line in records(path):
        name = line.get("name", line.get("task_id"))
        if not isinstance(line.get("completion"), str):
            raise ValueError(f'{path}: a line without a "completion" string: {str(line)[:200]}')
        if name not in names:
            raise ValueError(f"{path}: {name!r} is not a problem of this benchmark")
        samples.setdefault(name, []).append(line["completion"])
    if not samples:
        raise ValueError(f"{path}: no completions")
    return samples


def score(prompts, samples, n, too_long=()):
    """pass@k per language of each problem's first n samples, judged (judge): {language:
    {"pass@k" (percent), "ci95", "problems", "outcomes" (per problem, 1 a pass), "statuses"}}, k
    in stats.KS up to n; a problem of too_long (its prompt does not fit the model) scores 0 n times."""
    jobs = [(prompts[name][0], completion) for name in samples for completion in samples[name][:n]]
    verdicts = iter(judge(jobs))
    by_language = {}
    for name in prompts:
        if name not in samples and name not in too_long:
            continue
        entry = by_language.setdefault(prompts[name][0].language, dict(outcomes={}, statuses={}))
        statuses = ["prompt_too_long"] * n if name in too_long else [next(verdicts).status for _ in range(n)]
        entry["outcomes"][name] = [int(status == "passed") for status in statuses]
        for status in statuses:
            entry["statuses"][status] = entry["statuses"].get(status, 0) + 1
    for entry in by_language.values():
        entry["problems"] = len(entry["outcomes"])
        for k in [k for k in stats.KS if k <= n]:
            value, ci = stats.estimate({"all": [stats.pass_at_k(n, sum(o), k) for o in entry["outcomes"].values()]})
            entry[f"pass@{k}"], entry.setdefault("ci95", {})[f"pass@{k}"] = 100 * value, [
                None if x is None else 100 * x for x in ci]
    return by_language


def report(result, other=None):
    """pass@1 per language with its 95% interval and the average over languages, as the paper's
    Table 2 (result: eval.py's, {"ckpt", "benchmark": score's, "prompt_too_long", "settings"});
    with `other`, the paired difference per language (problem by problem)."""
    lines = [f"pass@1 (%) [95% interval] of {result['ckpt']} on {result['settings']['benchmark']}"
             + (f" (translated from {result['settings']['translate_from']})" if result["settings"]["translate_from"] else "")]
    for lang, entry in sorted(result["benchmark"].items()):
        lo, hi = entry["ci95"]["pass@1"]
        line = f"{lang:>12}: {entry['pass@1']:5.1f} [{lo if lo is None else f'{lo:.1f}'}, {hi if hi is None else f'{hi:.1f}'}]"
        line += f"  ({entry['problems']} problems)" + "".join(
            f"  {key} {entry[key]:.1f}" for key in entry if key.startswith("pass@") and key != "pass@1")
        if other and lang in other["benchmark"]:
            a, b = entry["outcomes"], other["benchmark"][lang]["outcomes"]
            differences = [statistics.fmean(a[p]) - statistics.fmean(b[p]) for p in a if p in b]
            value, (lo, hi) = stats.estimate({"all": differences}, -1.0, 1.0)
            line += f"  vs {other['ckpt']}: {100 * value:+.1f}"
            line += f" [{100 * lo:+.1f}, {100 * hi:+.1f}]" if lo is not None else ""
        lines.append(line)
    lines.append(f"{'average':>12}: {statistics.fmean(e['pass@1'] for e in result['benchmark'].values()):5.1f}")
    if result["prompt_too_long"]:
        lines.append(f"{result['prompt_too_long']} prompts do not fit the model's block with max_new_tokens: scored 0")
    statuses = {}
    for entry in result["benchmark"].values():
        for status, count in entry["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    lines.append("outcomes: " + ", ".join(f"{status} {count}" for status, count in sorted(statuses.items(), key=lambda kv: -kv[1])))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command line

# A check of the harness where a benchmark has no solutions (MultiPL-E): a completion that
# compiles in any problem of its language and throws when called. Every one of these programs must
# compile and fail: one that passes would be a harness whose tests do not run.
STUBS = {"python": "    raise NotImplementedError\n", "cpp": "    throw 0;", "java": "        throw new RuntimeException();",
         "csharp": "        throw new Exception();", "javascript": "  throw new Error();\n}",
         "typescript": "  throw new Error();\n}", "php": "    throw new Exception();\n}", "bash": "    return 1",
         "lua": "    error('stub')\nend", "rust": "    panic!()", "go": "    panic(0)\n}\n"}


def main(argv):
    """Scores the canonical solutions of the HumanEval-X files given (or, with --completions=FILE,
    those completions; with --stubs, STUBS), one language after another, and prints the pass rate
    and the programs judged per second of each, with every program's verdict that is not the
    expected one (passed; with --stubs, failed) named."""
    completions = [arg.split("=", 1)[1] for arg in argv if arg.startswith("--completions=")]
    stubs = "--stubs" in argv
    paths = [arg for arg in argv if not arg.startswith("--")]
    if not paths:
        sys.exit(__doc__)
    problems = [problem for path in paths for problem in read(path)]
    if completions:
        by_name = {problem.name: problem for problem in problems}
        jobs = [(by_name[name], completion) for name, mine in read_completions(completions[0], by_name).items()
                for completion in mine]
    elif stubs:
        jobs = [(problem, STUBS[problem.language]) for problem in problems if problem.benchmark == "multipl-e"]
    else:
        jobs = [(problem, problem.canonical) for problem in problems if problem.canonical is not None]
        if not jobs:
            sys.exit("no canonical solutions in these files (MultiPL-E has none): give --completions=FILE")
    # CPU seconds: of every process the sandboxes ran (compilers, programs), a busy machine's
    # wall clock aside
    print(f"{'language':>10} {'passed':>9} {'pass %':>7} {'seconds':>8} {'programs/s':>10} {'CPU s':>7}")
    started = time.perf_counter()
    for lang in sorted({problem.language for problem, _ in jobs}):
        mine, start, cpu = [job for job in jobs if job[0].language == lang], time.perf_counter(), _children_cpu()
        verdicts = judge(mine)
        seconds, passed = time.perf_counter() - start, sum(verdict.status == "passed" for verdict in verdicts)
        print(f"{lang:>10} {passed:>4}/{len(mine):<4} {100 * passed / len(mine):>7.1f} {seconds:>8.1f} "
              f"{len(mine) / seconds:>10.1f} {_children_cpu() - cpu:>7.1f}")
        for (problem, _), verdict in zip(mine, verdicts):
            if verdict.status != ("failed" if stubs else "passed"):
                print(f"           {problem.name}: {verdict.status}: "
                      f"{' | '.join(verdict.detail.strip().splitlines()[:3])[:300]}")
    total = time.perf_counter() - started
    print(f"{len(jobs)} programs in {total:.1f} s ({len(jobs) / total:.1f} programs/s, {WORKERS} workers), "
          f"{_children_cpu():.1f} CPU seconds")


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main(sys.argv[1:])
