"""
reward.py: the binary reward of eq. 4 (1 if a completion is well formed, compiles inside its
task's harness and prints every test's expected output, else 0) and the Verdict that says why;
the Scorer, the compile cache and the verdicts kept on disk. How each language is compiled and
run is languages.py's table.

    from reward import execute, score, score_details
    score(completions, tasks)          # [1.0, 0.0, ...]: eq. 4 for a batch
    score_details(completions, tasks)  # [Verdict(reward=1.0, status='passed', ...), ...]
    with Scorer(tasks) as scorer:      # the same, for completions handed over as they come
        scorer.submit([0, 3], [completion_0, completion_3], truncated=[False, False])
    scorer.verdicts
    execute("print(input()[::-1])", "python", stdin="abc\\n")  # Execution(status='ok', stdout='cba\\n', ...)

    python reward.py      # how programs are isolated here, and which languages work

A batch pays a tool's start-up once where the tool allows, never by sharing a sandbox between
programs: a language's programs are compiled (interpreted ones: syntax-checked) together where
its toolchain can (languages.py), each with its own verdict and message; then every program
runs in a sandbox of its own. A program is scored once however often it comes, and a Scorer
keeps its verdicts on disk beside the compile cache: another run's Scorer (an evaluation of the
same checkpoint family, an ablation's next row) does not run the same program on the same
tests again.

Compiled programs (and the syntax checks of interpreted languages) are cached by (language,
source) in memory and in a private directory under the system temp dir, written atomically
(built in a staging directory, then renamed) so that threads and several trainer processes
share it. Failures are cached too, CPU-time timeouts included: the same source fails the same
way, and a compile bomb the policy keeps sampling costs one timeout; a wall-clock timeout is not
(a busy machine, maybe). Each entry's message is capped (ERROR_LINES, ERROR_CHARS) and the
whole cache bounded (CACHE_ENTRIES, CACHE_BYTES). The same directory keeps, per language, what
the language's warm-up makes (languages.warm_up).
"""
import collections
import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import sqlite3
import stat
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import languages
import sandbox
from languages import LANGUAGES, InfraError
from tasks import EOT, defines_f, harness

MiB = 1 << 20
RUN_TIMEOUT = 0.5          # seconds of CPU time for one run (all of a task's tests at once; the wall
                           # clock allows sandbox.WALL_FACTOR times more). A call of a task's function
                           # executes at most tasks.MAX_STEPS statements, so every reference runs in
                           # < 0.2 s of CPU, the JVM's start included (RESULTS.md); a program stuck in
                           # a loop holds a worker this long, and there are a few in every RL step
ERROR_LINES = 20           # lines of a compiler error or of stderr kept for logging
ERROR_CHARS = 2000         # and characters at most (one line can be a megabyte)
FAILURE_CHARS = 300        # characters of a verdict's first_failure at most (the program's line in it)
WORKERS = len(os.sched_getaffinity(0))  # score() runs this many programs at once (share_cores)
CACHE_ENTRIES = 20000      # compiled programs kept on disk (the least recently used go first)
CACHE_BYTES = 2 << 30      # and their bytes on disk, at most
ARTIFACT_LIMIT = 16 * MiB  # the largest compiled program: a larger one is a compile error, never cached
CACHE_FORMAT = 4           # changes whenever what a cache entry means changes
VERDICT_ENTRIES = 200_000  # verdicts kept on disk for later Scorers (the oldest go first): an
                           # ablation keeps ~100,000, of a few hundred bytes each
VERDICT_BYTES = 256 * MiB  # and their bytes, at most (each entry is capped: ERROR_CHARS, FAILURE_CHARS)

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
    decided: bool = dataclasses.field(default=True, compare=False)  # False where the machine, not
                             # the program, decided it: no toolchain, the sandbox failed, a wall
                             # clock ran out (the machine may be busy); never kept for later runs.
                             # (Not compared: two verdicts that judge alike are equal.)


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
            return [pool.submit(_execution, program, lang, stdin, timeout) for _, program, stdin in lang_jobs]

        # the batches first, a compiled language's (one long compiler run) before a checked one's
        order = sorted(by_lang, key=lambda lang: (not LANGUAGES[lang].batched, not LANGUAGES[lang].compiled))
        batches = [(by_lang[lang], pool.submit(compile_then_run, lang, by_lang[lang])) for lang in order]
        for lang_jobs, batch in batches:
            for job, run in zip(lang_jobs, batch.result()):
                for i in jobs[job]:
                    verdicts[i] = _judge(*run.result(), tasks[i]["tests"])
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
# SFT model and its RL runs agree on most). Kept: every verdict the program decided, by running
# or failing to compile. Never kept: what the machine decided (Verdict.decided: no toolchain,
# an infrastructure failure, a wall clock run out on a machine that may be busy), and malformed
# completions (judged without running anything). Each verdict's text is capped (ERROR_CHARS,
# FAILURE_CHARS), and the store holds VERDICT_ENTRIES and VERDICT_BYTES at most.

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
              sandbox.PROCESSES, sandbox.WALL_FACTOR, sandbox.WALL_SLACK, sandbox.check(), languages.COMPILE_TIMEOUT,
              languages.CHECK_OUTPUT)
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
    """Keeps each verdict that the program decided under its key (verdict_key), then drops the
    oldest beyond VERDICT_ENTRIES, and beyond VERDICT_BYTES (down to nine tenths of it)."""
    kept = [(key, json.dumps(dataclasses.astuple(dataclasses.replace(
                v, error=_capped(v.error, ERROR_CHARS), first_failure=_capped(v.first_failure, FAILURE_CHARS)))))
            for key, v in zip(keys, verdicts) if v.decided and v.status not in ("infra_error", "unavailable", "malformed")]
    if not kept:
        return
    with _verdict_store() as store:
        store.executemany("INSERT OR REPLACE INTO verdicts VALUES (?, ?)", kept)
        store.execute("DELETE FROM verdicts WHERE rowid <= (SELECT max(rowid) FROM verdicts) - ?", (VERDICT_ENTRIES,))
        size, rows = store.execute("SELECT total(length(key) + length(verdict)), count(*) FROM verdicts").fetchone()
        if size > VERDICT_BYTES:
            store.execute("DELETE FROM verdicts WHERE rowid IN (SELECT rowid FROM verdicts ORDER BY rowid LIMIT ?)",
                          (rows - int(rows * 0.9 * VERDICT_BYTES / size),))


def _capped(text, limit):
    """text, cut to `limit` characters (marked) if longer."""
    return text if len(text) <= limit else text[:limit - 15] + " [... cut off]"


def _judge(execution, decided, tests):
    expected = [output.strip() for _, output in tests]
    lines = [line.strip() for line in execution.stdout.rstrip().splitlines()]
    passed = sum(got == want for got, want in zip(lines, expected))
    if execution.status == "ok" and passed == len(tests) == len(lines):
        return Verdict(1.0, "passed", passed, len(tests), "")
    status = "wrong_answer" if execution.status == "ok" else execution.status
    error = _capped(sandbox.first_lines(execution.stderr, ERROR_LINES), ERROR_CHARS)
    return Verdict(0.0, status, passed, len(tests), error, _capped(_first_failure(status, tests, lines), FAILURE_CHARS),
                   decided)


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
    `stdin`, within `timeout` seconds of CPU time (times the language's run_budget_scale).
    Returns Execution(status, stdout, stderr); status is one of "ok", "compile_error"
    (stderr: the first lines of the compiler's message), "runtime_error" (a non-zero exit),
    "timeout", "output_limit", "unavailable" (no working toolchain here) or "infra_error" (the
    sandbox, a cgroup or the disk failed: it says nothing of the program, and is never cached). Raises
    sandbox.Unavailable where the sandbox cannot isolate (see sandbox.check)."""
    return _execution(program, lang, stdin, timeout)[0]


def _execution(program, lang, stdin, timeout):
    """execute's Execution, and whether the program decided it (see Verdict.decided)."""
    if not isinstance(program, str) or not isinstance(stdin, str):
        raise TypeError("execute(program, lang, stdin): program and stdin must be str")
    if not available(lang):
        return Execution("unavailable", "", f"no working {lang} toolchain here "
                                            f"(apt-get install {LANGUAGES[lang].package})"), False
    return _execute(program, lang, stdin, timeout)


def _execute(program, lang, stdin, timeout):
    try:
        for attempt in range(2):
            directory, error, cached = _artifact(lang, program)
            if error is not None:  # (not cached: the compiler's wall clock ran out, or its warm-up failed)
                return Execution("compile_error", "", error), cached
            try:
                result = languages.run(lang, os.path.join(directory, "prog"), stdin.encode(),
                                       timeout * LANGUAGES[lang].run_budget_scale)
                break
            except FileNotFoundError:  # another process pruned the entry just now: compile it again
                with _lock:
                    _memory_cache.pop(_cache_key(lang, program), None)
                if attempt:
                    raise
    except (InfraError, OSError) as error:  # the sandbox, a cgroup or the disk failed: no verdict on the program
        return Execution("infra_error", "", f"{type(error).__name__}: {error}"), False
    status = "runtime_error" if result.status == "memory_limit" else result.status  # a memory bomb is a crash
    decided = status != "infra_error" and not (status == "timeout" and result.exit_code is None)  # (the wall clock)
    out, err = result.stdout.decode("utf-8", "replace"), result.stderr.decode("utf-8", "replace")
    return Execution(status, out, err), decided



# ----------------------------------------------------------------------------- toolchains

_lock = threading.Lock()
_warned, _tool_paths, _availability = set(), {}, {}


def _warn_once(message):
    with _lock:
        if message in _warned:
            return
        _warned.add(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def available(lang):
    """True if `lang`'s toolchain is installed and a hello-world program runs in the sandbox.
    Otherwise warns once, naming the Debian package, and `execute` answers "unavailable"."""
    missing = languages.missing_tools(lang)  # (an unknown language: ValueError)
    with _lock:
        if lang in _availability:
            return _availability[lang]
    package = LANGUAGES[lang].package
    if missing:
        _warn_once(f"reward.py: {lang} is unavailable: {', '.join(missing)} not found. Install it with "
                   f"`apt-get install {package}`; until then every {lang} program gets status 'unavailable'.")
        works = False
    else:
        hello, _ = _execute(languages.HELLO[lang], lang, "", languages.COMPILE_TIMEOUT)
        if "timed out" in hello.stderr or hello.status in ("timeout", "infra_error"):
            return True  # out of wall clock on a very busy machine, maybe, or the sandbox failed: ask again next time
        works = hello.status == "ok" and hello.stdout == "ok\n"
        if not works:
            _warn_once(f"reward.py: {lang} is unavailable: a hello-world program failed in the sandbox "
                       f"({hello.status}: {sandbox.first_lines(hello.stderr, 5)}). Check the {package} installation.")
    with _lock:
        _availability[lang] = works
    return works



# ----------------------------------------------------------------------------- compile once, cache

_memory_cache = collections.OrderedDict()  # key -> (cache entry directory, compiler error or None)
_compiling = {}                            # key -> Lock held by the one thread compiling it
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


@contextlib.contextmanager
def fresh_cache(directory):
    """Within the block, programs are compiled, warmed up for and judged as if for the first time:
    the compile cache and the kept verdicts are in `directory` (empty, yours, mode 700), and what
    this process remembers of the usual ones is set aside until the block ends. For measuring what
    a run pays once (bench.py), with no other thread scoring meanwhile."""
    global _cache_dir
    with _lock:
        usual, remembered = _cache_dir, collections.OrderedDict(_memory_cache)
        _cache_dir = directory
        _memory_cache.clear()
    try:
        yield directory
    finally:
        with _lock:
            _cache_dir = usual
            _memory_cache.clear()
            _memory_cache.update(remembered)


def _cache_key(lang, source):
    # CACHE_FORMAT is part of the key: an entry written under other rules (compilers running as
    # the trainer's user, failures not cached, compilers seeing the whole system) is never read back
    described = (CACHE_FORMAT, LANGUAGES[lang].check, LANGUAGES[lang].check_timeout, languages.CHECK_OUTPUT, source)
    return f"{lang}-" + hashlib.sha256(repr(described).encode()).hexdigest()[:40]


def _artifact(lang, source):
    """(directory, error, cached) of this source's cache entry: from memory, from disk, or
    compiled now; cached is False for a source given no entry (_compile's `left`: its error
    says why, the machine's doing, not the program's). One thread compiles a given source; the
    others wait for it."""
    key = _cache_key(lang, source)
    with _lock:
        lock = _compiling.setdefault(key, threading.Lock())
    with lock:
        try:
            with _lock:
                if key in _memory_cache and os.path.isdir(_memory_cache[key][0]):
                    _memory_cache.move_to_end(key)
                    return (*_memory_cache[key], True)
            directory = os.path.join(_cache_root(), key)
            if os.path.isdir(directory):
                os.utime(directory)  # recently used: pruning keeps it
            elif left := _compile(lang, [source]):
                return directory, left[source], False
            try:
                with open(os.path.join(directory, "error.txt")) as file:
                    artifact = directory, file.read()
            except FileNotFoundError:
                artifact = directory, None
            with _lock:
                _memory_cache[key] = artifact
                if len(_memory_cache) > CACHE_ENTRIES:
                    _memory_cache.popitem(last=False)
            return (*artifact, True)
        finally:
            with _lock:
                _compiling.pop(key, None)


def _compile(lang, sources):
    """Compiles (or checks) `sources` in one sandbox (languages.check): all of them for a batched
    language, else a list of one, in a staging directory whose parts are renamed at once to
    their cache entries, so that other threads and processes see a whole entry or none,
    failures included. Returns {source: why} for the sources given no entry: the compiler ran
    out of wall clock, or a batch stopped before them (a compile bomb used its CPU time, say).
    Raises InfraError (and writes no entry) if the sandbox failed. A program over ARTIFACT_LIMIT
    is a cached failure."""
    global _new_entries, _new_bytes
    cache_dir = os.path.join(_cache_root(), f".{lang}")
    os.makedirs(cache_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".staging-", dir=_cache_root())
    try:
        errors, result = languages.check(lang, sources, staging, cache_dir)
        if result is not None and result.status == "infra_error":  # the sandbox failed, not the compiler
            raise InfraError(result.stderr.decode("utf-8", "replace").strip())
        if result is None:  # the language's warm-up failed: every source's error, none cached
            return dict(zip(sources, errors))
        left = {}
        for i, (source, error) in enumerate(zip(sources, errors)):
            if error is None:
                # out of wall clock, not of CPU time: a machine too busy, maybe; not cached
                wall_clock = LANGUAGES[lang].check_timeout * sandbox.WALL_FACTOR + sandbox.WALL_SLACK
                left[source] = ("its batch stopped before it" if len(sources) > 1 else
                                f"the compiler timed out after {wall_clock:.0f} s of wall clock")
                continue
            # Failures are cached too, CPU-time timeouts included: a compile that ran out of CPU
            # time will again (a compile bomb the policy keeps sampling costs a worker one timeout).
            part = os.path.join(staging, str(i))
            error = _capped(sandbox.first_lines(error, ERROR_LINES), ERROR_CHARS)
            prog = os.path.join(part, "prog")
            size = _tree_size(prog)
            if size > ARTIFACT_LIMIT:  # the verdict is cached, the artifact never is
                shutil.rmtree(prog)
                error = (f"the compiled program is {size / MiB:.1f} MiB, over the "
                         f"{ARTIFACT_LIMIT / MiB:.0f} MiB limit")
            if error:
                with open(os.path.join(part, "error.txt"), "w") as file:
                    file.write(error)
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

