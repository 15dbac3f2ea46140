"""
bench.py: micro-benchmarks of the hot paths: the log-prob kernel (and its ahead-of-time compile
for GPUs), rollout, reward, and the phases of one OORL step.

    python bench.py                       # all parts
    python bench.py --part=kernel         # one part: kernel | gpu_compile | rollout | reward |
                                          #           run_budget | step
    python bench.py --part=step --ckpt=out/sft.pt   # OORL steps from this SFT model
                                          # (without --ckpt: from a short SFT made for it)

kernel and gpu_compile (bench_kernel.py): the fused log-prob kernel against naive log_softmax,
torch.compile and other fused kernels, time and peak memory, at a large vocabulary's shape (on a
GPU GPT-2's: N=16384, d=768, V=50304) and at this project's (an RL step's batch of the device's
preset, config/); every Triton launch compiled ahead of time for sm_80 and sm_90 (on any
machine). rollout: decoded tokens per second. reward: programs per second against the naive way.
run_budget: the CPU seconds of a run of each language's references, against reward.RUN_TIMEOUT.
step: seconds of each phase of OORL steps (rollout, reward, the update's parts) at the CPU
preset's workload, as train.py logs them. On a CPU the GPU-only rows are skipped, and the output
says which. Every part's figures also go to out/bench.json (--json=PATH), which keeps the latest
figures of each part.
"""
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import torch

import bench_kernel
import configurator
import languages
import reward
import sandbox
import tasks

ROOT = os.path.dirname(os.path.abspath(__file__))
# This project's BPE vocabulary (prepare.py's tokenizer), a prompt's tokens (about), and the tokens
# every row of the rollout part decodes (train.py's max_new_tokens)
VOCAB_SIZE, PROMPT_TOKENS, NEW_TOKENS = 745, 150, 160


def preset(name):
    """The settings of config/<name>.py, the CPU or GPU preset: the workloads measured here."""
    return configurator.read_file(os.path.join(ROOT, "config", f"{name}.py"))


# ----------------------------------------------------------------------------- kernel (bench_kernel.py)

def kernel_shapes():
    """The kernel part's problems (N, d, V): a large vocabulary's (GPT-2's on a GPU), and this
    project's RL batch at the device's preset."""
    cuda = torch.cuda.is_available()
    rl = preset("gpu" if cuda else "cpu")
    rl_batch = (rl["prompts_per_step"] * rl["group_size"] * (PROMPT_TOKENS + NEW_TOKENS), rl["n_embd"], VOCAB_SIZE)
    return [(16384, 768, 50304) if cuda else (8192, 256, 32768), rl_batch]


# ----------------------------------------------------------------------------- reward

def _task_and_completions(name, lang):
    """A generated task in lang and four completions of it: the reference, the same with a trailing
    blank line (a distinct program that passes), a wrong answer and a syntax error."""
    program, tests = tasks.generate(name)
    reference = tasks.render(program, lang)
    wrong = reference.replace("return", "return 1 +", 1).replace("echo", "echo 1", 1)
    if lang == "rust":  # it returns its last line's value
        body, tail, close = reference.rstrip().rsplit("\n", 2)
        wrong = f"{body}\n    1 + {tail.strip()}\n{close}\n"
    task = {"tgt_lang": lang, "tests": tests, "n_args": program.n_args}
    return task, (reference, reference + "\n", wrong, reference + "\n)(\n")


def _reward_batch(lang, n_tasks=16):
    """64 completions for 16 tasks as a rollout with G = 4 gives them, duplicates included: per
    task the reference twice, a wrong answer and a syntax error (48 distinct programs)."""
    completions, batch = [], []
    for seed in range(n_tasks):
        task, (reference, _, wrong, syntax_error) = _task_and_completions(f"bench-{seed}", lang)
        completions += [reference, reference, wrong, syntax_error]
        batch += [task] * 4
    return completions, batch


def _reward_step_batch(langs):
    """An RL step's completions, the CPU preset's prompts_per_step groups of group_size, the
    languages in turn: a group is the reference five times, once with a trailing blank line, a
    wrong answer and a syntax error (4 distinct programs), over and over to its size. Also the
    rewards they should get."""
    completions, batch, expected, workload = [], [], [], preset("cpu")
    for seed in range(workload["prompts_per_step"]):
        task, (reference, blank, wrong, syntax_error) = _task_and_completions(f"bench-step-{seed}",
                                                                              langs[seed % len(langs)])
        group = [(reference, 1.0)] * 5 + [(blank, 1.0), (wrong, 0.0), (syntax_error, 0.0)]
        for i in range(workload["group_size"]):
            completions.append(group[i % len(group)][0])
            expected.append(group[i % len(group)][1])
        batch += [task] * workload["group_size"]
    return completions, batch, expected


def _naive_rewards(completions, batch, compile_per_test, workers):
    """The baseline, the human-eval / MultiPL-E way: every test case runs in its own unsandboxed
    subprocess, nothing is cached or shared between completions. compile_per_test: each test
    case also compiles the program again (no cache at all); else once per completion. A run gets
    the wall clock that a sandbox gives reward.RUN_TIMEOUT (a JVM starts slower on a busy machine)."""
    wall_clock = reward.RUN_TIMEOUT * sandbox.WALL_FACTOR + sandbox.WALL_SLACK

    def words(command, directory, name):  # (a tool by its path: rustup's proxy stands for its rustc)
        filled = sandbox.fill(command, {"{src}": f"{directory}/{name}", "{prog}": directory, "{out}": directory})
        return [filled[0] if "/" in filled[0] else languages.tool(filled[0]) or filled[0], *filled[1:]]

    def one(i):
        lang, task = batch[i]["tgt_lang"], batch[i]
        spec, program = languages.LANGUAGES[lang], tasks.harness(completions[i], lang, task["n_args"])
        name = spec.source
        env = {**os.environ, **dict(spec.env)}
        directory = None
        try:
            for line, expected in task["tests"]:  # stops at the first failing test, as asserts do
                if directory is None or compile_per_test:
                    if directory:
                        shutil.rmtree(directory)
                    directory = tempfile.mkdtemp(prefix="bench-naive-")
                    with open(os.path.join(directory, name), "w") as file:
                        file.write(program)
                    compile_env = {**env, "GOCACHE": directory, "HOME": directory}
                    if spec.compiled and subprocess.run(words(languages.plain_compile(lang), directory, name),
                                                        cwd=directory, capture_output=True, env=compile_env).returncode:
                        return 0.0
                try:
                    run = subprocess.run(words(spec.run, directory, name), input=line + "\n", cwd=directory,
                                         capture_output=True, text=True, timeout=wall_clock, env=env)
                except subprocess.TimeoutExpired:
                    return 0.0
                if run.returncode or run.stdout.strip() != expected:
                    return 0.0
            return 1.0
        finally:
            if directory:
                shutil.rmtree(directory)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, range(len(completions))))


def _timed(fn):
    """(result, wall seconds, CPU seconds of the child processes: compilers, sandboxes, programs,
    {"compile": s, "run": s}: seconds inside sandboxes that compile (or check the syntax) and
    inside sandboxes that run a program, summed over the workers, so up to `cores` times the wall
    clock; a sandbox given languages.COMPILE_TIMEOUT or more is a compile)."""
    inside, lock, run_for_real = {"compile": 0.0, "run": 0.0}, threading.Lock(), sandbox.run

    def timed_run(argv, files=(), stdin=b"", timeout=2.0, *args, **kwargs):
        start = time.perf_counter()
        try:
            return run_for_real(argv, files, stdin, timeout, *args, **kwargs)
        finally:
            with lock:
                inside["compile" if timeout >= languages.COMPILE_TIMEOUT else "run"] += time.perf_counter() - start

    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    sandbox.run = timed_run
    try:
        result = fn()
    finally:
        sandbox.run = run_for_real
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return result, time.perf_counter() - start, cpu, inside


def _cold_score(completions, batch):
    """_timed(reward.score) from an empty compile cache (reward.fresh_cache), whose one-time
    preparations per language (g++'s precompiled header, javac's class archive: a training run
    makes them once) are made before the clock starts."""
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as cache, reward.fresh_cache(cache):
        for lang in sorted({task["tgt_lang"] for task in batch}):
            reward.execute(languages.HELLO[lang], lang)
        return _timed(lambda: reward.score(completions, batch))


def bench_reward(langs=None, baseline_sample=8, cores=2):
    """Reward throughput on `cores` cores. Per language (None: every target language, as eval.py
    scores them), a batch of 64 completions: reward.score (the sandbox, the compile cache, one
    process for all tests, duplicates scored once, compiles batched) against the naive baseline
    (one unsandboxed subprocess per test case, nothing cached), timed on the batch's first
    `baseline_sample` completions (it is slow). Then an RL step's batch (_reward_step_batch: the
    CPU preset's, the RL targets among `langs` in turn) through reward.score. All start from an
    empty cache. Figures: programs per second of wall clock, CPU seconds per program
    (steadier on a busy machine), and the sandbox seconds of compiling and of running."""
    langs = langs or tasks.RL_TARGETS + tasks.HELDOUT_TARGETS
    all_cores, workers = os.sched_getaffinity(0), reward.WORKERS
    os.sched_setaffinity(0, sorted(all_cores)[:cores])  # the child processes inherit it
    reward.WORKERS = cores
    try:
        return _bench_reward_languages(langs, baseline_sample, cores)
    finally:
        os.sched_setaffinity(0, all_cores)
        reward.WORKERS = workers


def _bench_reward_languages(langs, baseline_sample, cores):
    completions, _ = _reward_batch("python")
    print(f"reward: {cores} cores; batch: {len(completions)} completions for 16 tasks, {len(set(completions))} "
          f"distinct; sandbox: {sandbox.check()}; compile s, run s: inside sandboxes, summed over workers")
    print(f"{'language':>10} | {'reward.score':>35} | {'naive':>18} | {'naive, compile once':>19} | speed-up (wall, CPU)")
    print(f"{'':>10} | {'programs/s  CPU s  compile s  run s':>35} | {'programs/s  CPU s':>18} | "
          f"{'programs/s  CPU s':>19} |")
    figures, step_langs = {}, []
    for lang in langs:
        if not reward.available(lang):
            print(f"{lang:>10} | unavailable")
            continue
        if lang in tasks.RL_TARGETS:
            step_langs.append(lang)
        completions, batch = _reward_batch(lang)
        rewards, wall, cpu, inside = _cold_score(completions, batch)
        assert rewards == [1.0, 1.0, 0.0, 0.0] * 16, f"{lang}: the references should pass, the rest fail"
        row = {"reward_score": (len(completions) / wall, cpu / len(completions), inside["compile"], inside["run"])}
        sample, sample_batch = completions[:baseline_sample], batch[:baseline_sample]
        for name, compile_per_test in (("naive", True), ("naive_compile_once", False)):
            if name == "naive_compile_once" and not languages.LANGUAGES[lang].compiled:
                row[name] = row["naive"]  # nothing to compile: the same baseline
                continue
            naive, wall, cpu, _ = _timed(lambda: _naive_rewards(sample, sample_batch, compile_per_test, cores))
            assert naive == rewards[:baseline_sample], f"{lang}: the baseline disagrees with reward.score"
            row[name] = (len(sample) / wall, cpu / len(sample))
        figures[lang] = row
        ours, naive, once = row["reward_score"], row["naive"], row["naive_compile_once"]
        print(f"{lang:>10} | {ours[0]:10.2f} {ours[1]:6.3f} {ours[2]:10.1f} {ours[3]:6.1f} | "
              f"{naive[0]:10.2f} {naive[1]:7.3f} | {once[0]:10.2f} {once[1]:8.3f} | "
              f"{ours[0] / naive[0]:.1f}x, {naive[1] / ours[1]:.1f}x "
              f"(vs compile once {ours[0] / once[0]:.1f}x, {once[1] / ours[1]:.1f}x)", flush=True)
    if step_langs:
        completions, batch, expected = _reward_step_batch(step_langs)
        rewards, wall, cpu, inside = _cold_score(completions, batch)
        assert rewards == expected, "the references should pass, the rest fail"
        figures["step"] = dict(seconds=wall, programs_per_s=len(completions) / wall, cpu_per_program=cpu / len(completions),
                               compile_s=inside["compile"], run_s=inside["run"])
        print(f"RL step ({len(completions)} completions, {len(set(completions))} distinct, "
              f"{', '.join(step_langs)} in turn): {wall:.2f} s, {len(completions) / wall:.1f} programs/s, "
              f"{cpu / len(completions):.3f} CPU s per program; compile {inside['compile']:.1f} s, "
              f"run {inside['run']:.1f} s", flush=True)
    return figures


def bench_run_budget(n_programs=50, langs=None):
    """What a translation's run costs against reward.RUN_TIMEOUT, the CPU budget that a program
    stuck in a loop uses up every time: the CPU seconds (_timed's, every process of the sandbox)
    of scoring each language's reference for the programs of seeds 0..n_programs-1, and for
    tasks.heaviest(), the costliest program the generator's rules allow. Each is scored once
    first, so that what is measured is its run (its compile is cached then)."""
    print(f"run budget: reward.RUN_TIMEOUT = {reward.RUN_TIMEOUT} s of CPU; CPU s of a run of each reference "
          f"({n_programs} generated programs) and of tasks.heaviest()")
    print(f"{'language':>10} | {'median':>7} {'max':>7} | {'heaviest':>8} | budget / max")
    programs = [tasks.generate(seed) for seed in range(n_programs)] + [tasks.heaviest()]
    figures = {}
    for lang in langs or tasks.LANGS:
        if not reward.available(lang):
            print(f"{lang:>10} | unavailable")
            continue
        costs = []
        for program, tests in programs:
            reference, task = tasks.render(program, lang), {"tgt_lang": lang, "tests": tests, "n_args": program.n_args}
            reward.score([reference], [task])
            [verdict], _, cpu, _ = _timed(lambda: reward.score_details([reference], [task]))
            assert verdict.status == "passed", f"{lang}: a reference failed: {verdict}"
            costs.append(cpu)
        references, heaviest = sorted(costs[:-1]), costs[-1]
        figures[lang] = dict(median=references[len(references) // 2], max=references[-1], heaviest=heaviest)
        print(f"{lang:>10} | {figures[lang]['median']:7.3f} {references[-1]:7.3f} | {heaviest:8.3f} | "
              f"{reward.RUN_TIMEOUT / max(references[-1], heaviest):.1f}x", flush=True)
    return figures


# ----------------------------------------------------------------------------- rollout

def bench_rollout(size_overrides=None, reps=3, threads=None):
    """Decoded tokens per second of rollout.py with random weights and no early stop: the model
    and a step's prompts x completions of the CPU preset (config/cpu.py) on a CPU, of the GPU
    preset on CUDA (under bf16 autocast, as train.py runs it); prompts of PROMPT_TOKENS, every
    row decoding NEW_TOKENS. size_overrides: of n_layer, n_head, n_embd, vocab_size, prompts,
    group_size, prompt_len, new_tokens (e.g. tiny ones for a test). Also reports
    tokens per CPU-second of this process (CPU only), which a busy machine disturbs less."""
    from ddp import device_setup
    from model import GPT, GPTConfig
    from rollout import rollout
    device, autocast = device_setup("auto")
    if threads:
        torch.set_num_threads(threads)
    run = preset("gpu" if device == "cuda" else "cpu")
    size = dict(n_layer=run["n_layer"], n_head=run["n_head"], n_embd=run["n_embd"], prompts=run["prompts_per_step"],
                group_size=run["group_size"], vocab_size=VOCAB_SIZE, prompt_len=PROMPT_TOKENS, new_tokens=NEW_TOKENS)
    size.update(size_overrides or {})
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(block_size=size["prompt_len"] + size["new_tokens"], vocab_size=size["vocab_size"],
                        n_layer=size["n_layer"], n_head=size["n_head"], n_embd=size["n_embd"], bias=False))
    gpt = gpt.to(device).eval()
    batch = [torch.randint(1, size["vocab_size"], (size["prompt_len"],)).tolist() for _ in range(size["prompts"])]
    walls, cpus = [], []
    for _ in range(reps + 1):  # the first call warms up
        wall, cpu = time.perf_counter(), time.process_time()
        with autocast:  # eot_id=0 is never sampled: rows only stop at new_tokens
            rollout(gpt, batch, size["group_size"], size["new_tokens"], eot_id=0,
                    generator=torch.Generator(device).manual_seed(0))
        if device == "cuda":
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    tokens = size["prompts"] * size["group_size"] * size["new_tokens"]
    best, best_cpu = min(walls[1:]), min(cpus[1:])
    per_cpu_s = f", {tokens / best_cpu:.0f} tokens per CPU-second" if device == "cpu" else ""
    print(f"rollout on {device}{' (bf16 autocast)' if device == 'cuda' else f' ({torch.get_num_threads()} threads)'}: "
          f"{size['prompts']} prompts of {size['prompt_len']} tokens x {size['group_size']} samples x "
          f"{size['new_tokens']} new tokens, {gpt.get_num_params() / 1e6:.2f}M params: best of {reps} "
          f"{best:.2f} s, {tokens / best:.0f} tokens/s{per_cpu_s}")
    return {"seconds": best, "tokens_per_s": tokens / best, "tokens_per_cpu_s": tokens / best_cpu}


# ----------------------------------------------------------------------------- one OORL step

# (label, metrics.jsonl key) of each phase of a step as train.py logs it, the update's parts under it
STEP_PHASES = [("rollout", "time_rollout"), ("reward, after decoding", "time_reward"), ("update", "time_update"),
               ("  reference log-probs", "time_reference"), ("  pi_old log-probs", "time_pi_old"),
               ("  policy fwd+bwd", "time_policy"), ("  preference loss fwd+bwd", "time_preference"),
               ("  optimizer, grad sum, clip", "time_optimizer"), ("step: rollout+reward+update", "time_step")]


def bench_step(ckpt="", steps=2, sft_steps=300, data_dir="data"):
    """Seconds of each phase of OORL steps at the CPU preset's workload, from the SFT checkpoint
    ckpt (none: a short SFT of sft_steps made for it, whose poorer completions fail sooner than a
    trained model's, so that its reward figures mean less): `python train.py --preset=cpu
    --sft_ckpt=... --rl_steps=steps` in a subprocess, and the phase times it logs in
    metrics.jsonl. It runs with a TMPDIR of its own: an empty compile cache and no verdicts kept
    by earlier runs (reward.stored_verdicts), so the first step also pays what a run pays once
    (compiles, caches). Prints a table; returns {"command", "steps": [one dict of seconds per
    step (step_figures)]}."""
    data_dir = os.path.abspath(data_dir)
    with tempfile.TemporaryDirectory(prefix="bench-step-") as tmp:
        if not ckpt:
            print(f"step: no --ckpt: a short SFT of {sft_steps} steps first (a trained model's completions "
                  f"take longer to score: the reward figures are a lower bound)", flush=True)
            subprocess.run([sys.executable, "train.py", "--preset=cpu", "--rl_steps=0", f"--sft_steps={sft_steps}",
                            f"--data_dir={data_dir}", f"--out_dir={tmp}/sft"], cwd=ROOT, check=True)
            ckpt = os.path.join(tmp, "sft", "sft.pt")
        command = ["train.py", "--preset=cpu", f"--sft_ckpt={os.path.abspath(ckpt)}", f"--rl_steps={steps}",
                   "--probe_interval=0", f"--data_dir={data_dir}", f"--out_dir={tmp}/rl"]
        subprocess.run([sys.executable] + command, cwd=ROOT, check=True, env=dict(os.environ, TMPDIR=tmp))
        with open(os.path.join(tmp, "rl", "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f]
    figures = {"command": "python " + " ".join(command), "steps": step_figures(rows)}
    print(step_table(figures["steps"]))
    print("reward per language (compile vs run, programs/s): python bench.py --part=reward")
    return figures


def step_figures(rows):
    """The phase times (seconds) of each OORL row of train.py's metrics.jsonl: its time_* keys
    (time_policy: one figure per PPO epoch) and their sum over rollout, reward and update
    (time_step)."""
    steps = []
    for row in rows:
        if row.get("stage") != "oorl":
            continue
        step = {key: row[key] for _, key in STEP_PHASES if key in row}
        step["time_step"] = sum(step.get(key, 0.0) for key in ("time_rollout", "time_reward", "time_update"))
        steps.append(step)
    return steps


def step_table(steps):
    """step_figures as a table: a line per phase (and per PPO epoch), a column per step."""
    epochs = max((len(step.get("time_policy", [])) for step in steps), default=0)
    workload = preset("cpu")
    lines = [f"step: seconds per phase of OORL steps at the CPU preset's workload (config/cpu.py: "
             f"{workload['prompts_per_step']} prompts x {workload['group_size']} completions, train.py's defaults "
             f"for the rest)",
             f"{'phase':<30}" + "".join(f"{f'step {i}':>9}" for i in range(len(steps)))]
    for label, key in STEP_PHASES:
        if key == "time_policy":  # one line per epoch
            for epoch in range(epochs):
                cells = [step[key][epoch] if epoch < len(step.get(key, [])) else None for step in steps]
                lines.append(f"{f'{label}, epoch {epoch + 1}':<30}" + "".join(_seconds(c) for c in cells))
        else:
            lines.append(f"{label:<30}" + "".join(_seconds(step.get(key)) for step in steps))
    return "\n".join(lines)


def _seconds(value):
    return f"{'-':>9}" if value is None else f"{value:9.2f}"


def _save_figures(path, figures):
    """Adds this run's figures, by part, to the JSON file at path, which keeps the latest of each part."""
    saved = {}
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
    saved.update(figures)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(saved, f, indent=1)


PARTS = {"kernel": lambda options: bench_kernel.bench_kernel(kernel_shapes()),
         "gpu_compile": lambda options: bench_kernel.bench_gpu_compile(),
         "rollout": lambda options: bench_rollout(), "reward": lambda options: bench_reward(),
         "run_budget": lambda options: bench_run_budget(),
         "step": lambda options: bench_step(ckpt=options["ckpt"])}

if __name__ == "__main__":
    options = dict(part="all", ckpt="", json="out/bench.json")
    usage = f"usage: python bench.py [--part={'|'.join(PARTS)}|all] [--ckpt=SFT_CHECKPOINT] [--json=PATH]"
    for arg in sys.argv[1:]:
        key, _, value = arg.removeprefix("--").partition("=")
        if not arg.startswith("--") or key not in options or (key == "part" and value not in list(PARTS) + ["all"]):
            raise SystemExit(f"{usage}, not {arg!r}")
        options[key] = value
    figures = {}
    for name, run in PARTS.items():
        if options["part"] in (name, "all"):
            print(f"=== {name}")
            figures[name] = run(options)
    _save_figures(options["json"], figures)
    print(f"figures: {options['json']}")
