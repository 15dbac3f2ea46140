"""
bench_kernel.py: the fused log-prob kernel's micro-benchmarks, run by bench.py
(`python bench.py --part=kernel`, `--part=gpu_compile`).

kernel: per-token log-probs from hidden states (N, d) and an LM head (V, d) by naive
log_softmax, torch.compile of it, logprobs.fused_logprobs's chunked torch path and its Triton
kernel, and Liger-Kernel's and Cut Cross-Entropy's fused losses when they are installed (pip
install liger-kernel cut-cross-entropy); time and peak memory, forward and forward + backward, of
each method whose log-probs and gradients agree with float64 ones (logprobs.disagreement). Every
measurement runs in a fresh process, so that each has its own memory high-water mark.

gpu_compile: registers, spills and shared memory of every Triton launch the dispatcher can make
(logprobs.gpu_launches), compiled ahead of time for sm_80 (A100) and sm_90 (H100) with ptxas on
any machine, no GPU needed.

    import bench_kernel
    bench_kernel.bench_kernel(shapes=[(8192, 256, 32768)])   # {"N=..,d=..,V=..": {method: figures}}
    bench_kernel.gpu_compile(90)                              # one dict per launch
"""
import contextlib
import functools
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version, PackageNotFoundError

import torch

import logprobs

ROOT = os.path.dirname(os.path.abspath(__file__))


def _naive_logprobs(hidden, weight, targets):
    """The direct way: the (N, V) logits in float32 (float64 from float64 inputs), log_softmax, gather."""
    logits = (hidden @ weight.T).to(torch.promote_types(hidden.dtype, torch.float32))
    return torch.log_softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1)


def _liger_logprobs(hidden, weight, targets):
    """Liger-Kernel's fused linear cross-entropy, per token (its loss is -log p). With inputs that
    require grad it computes their gradients during the forward: its "fwd" time includes them."""
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    return -LigerFusedLinearCrossEntropyLoss(reduction="none")(weight, hidden, targets)


def _cce_logprobs(hidden, weight, targets):
    """Cut Cross-Entropy (Wijmans et al. 2024), per token (its loss is -log p). filter_eps=None:
    by default it skips the gradient where the softmax is below a threshold, less work than exact
    gradients (the others' work)."""
    from cut_cross_entropy import linear_cross_entropy
    return -linear_cross_entropy(hidden, weight, targets, reduction="none", filter_eps=None)


# the other fused kernels, compared when installed (GPU only): method -> (module, function)
OPTIONAL_METHODS = {"liger": ("liger_kernel", _liger_logprobs), "cut cross-entropy": ("cut_cross_entropy", _cce_logprobs)}
# The versions before which a method's per-token gradients are known wrong: (distribution, version,
# why). Liger's reduction="none" scaled every row's gradient by the first row's upstream gradient.
REQUIRED_VERSIONS = {"liger": ("liger-kernel", (0, 8, 2), "its reduction='none' scales every row's gradient "
                                                          "by the first row's upstream gradient (Liger-Kernel PR #1298)")}


def _kernel_setup(methods, n, d, v, backward, threads):
    """The functions to compare, one problem (bfloat16 on a GPU, float32 on a CPU), and `call`."""
    cuda = torch.cuda.is_available()
    if threads:
        torch.set_num_threads(threads)
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    every = {"naive": lambda: _naive_logprobs,
             "torch.compile": lambda: torch.compile(_naive_logprobs),
             "torch chunked": lambda: functools.partial(logprobs.fused_logprobs, backend="torch"),
             "triton": lambda: functools.partial(logprobs.fused_logprobs, backend="triton"),
             **{method: (lambda fn=fn: fn) for method, (_, fn) in OPTIONAL_METHODS.items()}}
    fns = {method: every[method]() for method in methods}

    def problem(n, v):
        gen = torch.Generator(device).manual_seed(0)
        hidden = torch.randn(n, d, device=device, generator=gen).to(dtype).requires_grad_(backward)
        weight = (torch.randn(v, d, device=device, generator=gen) / d ** 0.5).to(dtype).requires_grad_(backward)
        targets = torch.randint(0, v, (n,), device=device, generator=gen)
        return hidden, weight, targets, torch.randn(n, device=device, generator=gen)

    def call(fn, hidden, weight, targets, grad):
        hidden.grad = weight.grad = None
        with torch.set_grad_enabled(backward):
            logp = fn(hidden, weight, targets)
            if backward:
                logp.backward(grad)
        if cuda:
            torch.cuda.synchronize()

    return fns, problem, call, cuda


def _kernel_memory(method, n, d, v, backward, threads):
    """Peak extra memory (MB) of one call, in a fresh process (see _kernel_isolated): the peak
    above what was held before the call (the inputs), less the gradients every method returns.
    CUDA: the caching allocator's exact peak counter, after a warm-up call. CPU: torch's CPU
    allocator keeps no peak, so we read the process's resident-set high-water mark (VmHWM),
    reset just before the call by writing 5 to /proc/self/clear_refs (Linux); the first call in a
    fresh process, so that no memory freed by an earlier call is silently reused."""
    fns, problem, call, cuda = _kernel_setup([method], n, d, v, backward, threads)
    fn, x = fns[method], problem(n, v)

    def kb(field):
        return int(re.search(field + r":\s+(\d+) kB", open("/proc/self/status").read()).group(1))

    if cuda:
        call(fn, *x)  # (torch.compile compiles here)
        x[0].grad = x[1].grad = None
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        call(fn, *x)
        peak = torch.cuda.max_memory_allocated() - before
    else:
        call(fn, *problem(64, 512))  # load the libraries and start the thread pools on a tiny problem
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = kb("VmRSS")
        call(fn, *x)
        peak = (kb("VmHWM") - before) * 1024
    returned = sum(p.grad.numel() * p.grad.element_size() for p in x[:2] if p.grad is not None)
    return max(0, peak - returned) / 2 ** 20


def _kernel_check(methods, ds, threads):
    """{method: None, or why it must not be timed}. A method's log-probs, and its gradients of
    sum(g * logp) with g of both signs (as advantages weigh log-probs), against float64 ones from
    the same inputs (logprobs.disagreement, the bounds of the kernel's own self-check), on a
    problem of N=500 and V=1000 at each width d in ds, in the benchmark's dtype; and its version
    where REQUIRED_VERSIONS names one."""
    verdicts = dict.fromkeys(methods)
    for method in set(methods) & set(REQUIRED_VERSIONS):
        distribution, minimum, why = REQUIRED_VERSIONS[method]
        try:
            installed = version(distribution)
        except PackageNotFoundError:  # (a build of another name: the check below still runs)
            continue
        if tuple(int(part) for part in re.findall(r"\d+", installed)[:3]) < minimum:
            verdicts[method] = f"{distribution} {installed} < {'.'.join(map(str, minimum))}: {why}"
    for d in ds:
        fns, problem, _, _ = _kernel_setup([m for m in methods if not verdicts[m]], 500, d, 1000, True, threads)
        inputs = problem(500, 1000)
        for method, fn in fns.items():
            try:
                why = logprobs.disagreement(fn, _naive_logprobs, *inputs, reference_dtype=torch.float64)
            except Exception as e:  # (their APIs move between versions)
                why = f"failed: {type(e).__name__}: {str(e).strip()[:200]}"
            if why:
                verdicts[method] = why if why.startswith("failed") else f"disagrees with float64 at d={d}: {why}"
    return verdicts


def _kernel_times(methods, n, d, v, backward, threads, reps):
    """Median milliseconds per call of each method on one problem, in one process. The methods
    take turns, round after round, so that a machine whose load drifts treats them alike."""
    fns, problem, call, cuda = _kernel_setup(methods, n, d, v, backward, threads)
    x = problem(n, v)
    times = {method: [] for method in methods}
    for turn in range(reps + 1):  # turn 0 warms up (and compiles)
        for method in methods:
            start = time.perf_counter()
            call(fns[method], *x)
            if turn:
                times[method].append(1000 * (time.perf_counter() - start))
    return {method: sorted(t)[len(t) // 2] for method, t in times.items()}


def _kernel_isolated(function, *args):
    """bench_kernel.<function>(*args) in a fresh Python process (its own memory high-water mark)."""
    code = f"import json, bench_kernel; print(json.dumps(bench_kernel.{function}{args!r}))"
    env = {k: val for k, val in os.environ.items() if k != "TRITON_INTERPRET"}  # the real kernels
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env)
    if run.returncode:
        raise RuntimeError(f"kernel bench {function}{args} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def bench_kernel(shapes, reps=None, threads=None, methods=None):
    """Per-token log-probs from hidden (N, d) and W (V, d), at each (N, d, V) of shapes: naive, torch.compile(naive) (GPU),
    the chunked torch path and the Triton kernel (GPU) of logprobs.fused_logprobs; the forward
    alone (under no_grad, as for the old policy and the reference) and forward + backward.
    threads: torch's CPU threads (default: torch's own choice). methods: the methods to compare
    (default: the device's, and the installed OPTIONAL_METHODS on a GPU); each is checked
    against float64 once (_kernel_check) and skipped, with the reason, if it disagrees. Prints a
    table; returns {"N=..,d=..,V=..": {method: {fwd_ms, fwd_mb, fwdbwd_ms, fwdbwd_mb, and the
    fwdbwd time and memory ratios vs naive and torch.compile}}}."""
    cuda = torch.cuda.is_available()
    reps = reps or (10 if cuda else 3)
    skipped = []
    if methods is None:
        methods = ["naive", "torch.compile", "torch chunked", "triton"] if cuda else ["naive", "torch chunked"]
        optional = {m: importlib.util.find_spec(module) is not None for m, (module, _) in OPTIONAL_METHODS.items()}
        methods += [m for m, installed in optional.items() if installed and cuda]
        skipped += [f"{m} (not installed)" for m, installed in optional.items() if not installed and cuda]
    device = f"cuda ({torch.cuda.get_device_name()}), bfloat16" if cuda else f"cpu ({threads or torch.get_num_threads()} threads), float32"
    print(f"kernel: log-probs of N tokens from hidden (N, d) and W (V, d); {device}; time = median of {reps} "
          f"calls, the methods taking turns;\n  extra MB = peak memory of one call beyond the inputs and the "
          f"returned gradients ({'cuda max_memory_allocated' if cuda else 'RSS high-water mark'}, a fresh process each)")
    if not cuda:
        print("  skipped: torch.compile, triton, liger, cut cross-entropy: GPU only (on CPUs Triton runs in "
              "its interpreter, for tests)")
    verdicts = _kernel_isolated("_kernel_check", methods, sorted({d for _, d, _ in shapes}), threads)
    skipped += [f"{method} ({why})" for method, why in verdicts.items() if why]
    methods = [method for method in methods if not verdicts[method]]
    if skipped:
        print(f"  skipped: {', '.join(skipped)}")
    print(f"{'N':>6} {'d':>5} {'V':>7} | {'method':<17} | {'fwd ms':>8} {'fwd MB':>8} | {'f+b ms':>8} {'f+b MB':>8} | "
          f"{'f+b time, mem vs naive':>22} | {'vs torch.compile':>16} | {'f+b MB / fp32 logits':>20}")
    figures = {}
    for n, d, v in shapes:
        fwd_ms = _kernel_isolated("_kernel_times", methods, n, d, v, False, threads, reps)
        both_ms = _kernel_isolated("_kernel_times", methods, n, d, v, True, threads, reps)
        rows = figures[f"N={n},d={d},V={v}"] = {}
        for method in methods:
            rows[method] = dict(fwd_ms=fwd_ms[method], fwdbwd_ms=both_ms[method],
                                fwd_mb=_kernel_isolated("_kernel_memory", method, n, d, v, False, threads),
                                fwdbwd_mb=_kernel_isolated("_kernel_memory", method, n, d, v, True, threads))
        for method, row in rows.items():
            shown = {}
            for base in ("naive", "torch.compile"):
                if base in rows:
                    shown[base] = (row["fwdbwd_ms"] / rows[base]["fwdbwd_ms"], row["fwdbwd_mb"] / max(rows[base]["fwdbwd_mb"], 1e-9))
                    row[f"fwdbwd_vs_{base}"] = dict(time=shown[base][0], memory=shown[base][1])
            vs_compile = "{:5.2f}x, {:6.1%}".format(*shown["torch.compile"]) if "torch.compile" in shown else "-"
            print(f"{n:>6} {d:>5} {v:>7} | {method:<17} | {row['fwd_ms']:8.1f} {row['fwd_mb']:8.1f} | "
                  f"{row['fwdbwd_ms']:8.1f} {row['fwdbwd_mb']:8.1f} | {shown['naive'][0]:8.2f}x, {shown['naive'][1]:9.1%} | "
                  f"{vs_compile:>16} | {row['fwdbwd_mb'] / (4 * n * v / 2 ** 20):20.2%}", flush=True)
    return figures


# ----------------------------------------------------------------------------- ahead-of-time GPU compile

# The largest shared memory one block may use (opt-in), in bytes: A100 (sm_80) and H100 (sm_90).
SHARED_MEMORY_PER_BLOCK = {80: 163 * 1024, 90: 227 * 1024}


def gpu_compile(capability):
    """Compiles every launch of logprobs.gpu_launches for a CUDA GPU of this compute capability
    (80, 90) to PTX and cubin, with ptxas, on this machine: no GPU needed. Pointers and d get the
    16-divisibility that torch's allocations and this project's widths give (the specialisation
    Triton makes at run time). Returns one dict per launch: kernel, dtype, target, registers,
    spills (bytes stored + loaded), shared (bytes), fits (shared memory within the target's
    per-block limit). Must run without TRITON_INTERPRET (see _kernel_isolated)."""
    return [_compile_one(capability, *launch) for launch in logprobs.gpu_launches()]


def _compile_one(capability, name, fn, dtype, signature, constexprs, options):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    full = dict(signature, **{k: "constexpr" for k in constexprs})
    aligned = {(fn.arg_names.index(k),): [["tt.divisibility", 16]] for k in full if k.endswith("_ptr") or k == "D"}
    target = GPUTarget("cuda", capability, 32)
    parsed = triton.compiler.make_backend(target).parse_options(options)
    log = io.StringIO()
    # Triton prints ptxas -v (registers, spills) when asked; always_compile: never a cache hit
    with triton.knobs.nvidia.scope(), triton.knobs.compilation.scope(), contextlib.redirect_stdout(log):
        triton.knobs.nvidia.dump_ptxas_log = True
        triton.knobs.compilation.always_compile = True
        compiled = triton.compile(ASTSource(fn, full, constexprs, aligned), target=target, options=parsed.__dict__)
    text = log.getvalue()
    registers = re.search(r"Used (\d+) registers", text)
    spills = [int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", text)]
    shared = compiled.metadata.shared
    return dict(kernel=name, dtype=dtype, target=f"sm_{capability}",
                registers=int(registers.group(1)) if registers else None,
                spills=sum(spills), shared=shared, fits=shared <= SHARED_MEMORY_PER_BLOCK[capability],
                cubin_bytes=len(compiled.asm["cubin"]))


def bench_gpu_compile(capabilities=(80, 90)):
    """Prints the table of gpu_compile for sm_80 (A100) and sm_90 (H100); returns its rows."""
    with ThreadPoolExecutor(len(capabilities)) as pool:  # one process per target, side by side
        rows = sum(pool.map(lambda capability: _kernel_isolated("gpu_compile", capability), capabilities), [])
    print("gpu_compile: every Triton launch of logprobs.fused_logprobs on a GPU (logprobs.gpu_launches), compiled "
          "ahead of time (PTX and cubin, no GPU needed)")
    print(f"{'kernel':<16} {'dtype':<9} {'target':<6} | {'registers':>9} {'spills B':>8} | {'shared B':>8} "
          f"{'limit B':>8} | fits")
    for row in rows:
        limit = SHARED_MEMORY_PER_BLOCK[int(row["target"][3:])]
        print(f"{row['kernel']:<16} {row['dtype']:<9} {row['target']:<6} | {row['registers']!s:>9} "
              f"{row['spills']:>8} | {row['shared']:>8} {limit:>8} | {'yes' if row['fits'] else 'NO'}")
    return rows
