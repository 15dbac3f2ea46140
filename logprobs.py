"""
logprobs.py: the fused log-prob kernel. log softmax(hidden @ weight.T / T)[target] for every row,
and its gradients, without ever holding the N x V logits: Triton kernels on CUDA (or in
Triton's CPU interpreter under TRITON_INTERPRET=1), a chunked torch path everywhere else, and
a check of the kernels against the torch path on a GPU, in a child process, before they serve.

    from logprobs import fused_logprobs      # also importable as model.fused_logprobs
    logp = fused_logprobs(hidden, lm_head.weight, targets, temperature=0.8)   # (N,) float32
    ok, message = logprobs.self_check("cuda", torch.bfloat16, n_rows, d, vocab)  # at start-up
    logprobs.disagreement(method, reference, hidden, weight, targets, grad)  # None, or what differs
    logprobs.gpu_launches()   # every Triton launch a GPU can see, to compile ahead of time

model.GPT's token_logprobs and completion_logprobs call fused_logprobs, train.py calls self_check
at start-up; tests/test_logprobs.py checks both paths against the naive computation; bench_kernel.py
times them, checks every method it times with disagreement and compiles gpu_launches for GPUs.
"""
import contextlib
import json
import os
import subprocess
import sys
import warnings

import torch

try:  # optional: the GPU kernel of fused_logprobs (without it, a torch path runs everywhere)
    import triton
    import triton.language as tl
except ImportError:
    triton = None

# ----------------------------------------------------------------------------- fused log-probs
# Every RL step needs log pi(y_t | y_<t) for each completion token, under the policy, the old
# policy and the reference (the ratios of eq. 5, the KL of eq. 1, the implicit rewards of
# eqs. 6-9). The direct way, log_softmax(h @ W.T)[target], builds the N x V logits, and its
# backward builds more of the same size. What that costs depends on the vocabulary. With this
# project's own ~750-token BPE it is modest: a GPU-preset RL batch (512 rows of ~320 tokens,
# N ~ 164k) has 0.5 GB of float32 logits, beside ~20 GB of activations its 8 layers keep for
# the backward (~34 d bytes per token and layer in bf16, Korthikanti et al. 2022); the fused
# path saves that half gigabyte and some passes over memory, no more. It pays off with a
# pretrained model's vocabulary (init_from, GPT-2's V = 50k): 3.3 GB of logits at only N = 16k
# tokens, 33 GB at the same RL batch, the largest tensor in training by far (bench.py measures
# both shapes). Yet each row needs one number:
#     log p_i = z_i,t_i - lse_i,    z = h W^T / temperature,    lse_i = log sum_v exp(z_iv).
# So we stream over tiles of the vocabulary and keep, per row, a running maximum m and a running
# sum s = sum_v exp(z_iv - m), rescaled whenever m grows (the "online" log-sum-exp of flash
# attention); the target logit is picked up when its tile passes by. The backward keeps only
# lse (N floats) and recomputes the logit tiles, one extra matmul for O(N + V) memory:
#     dL/dz_iv = g_i (onehot(t_i)_v - p_iv),  p_iv = exp(z_iv - lse_i),  g = dL/d(log p)
#     dL/dh_i = (1/T) sum_v dL/dz_iv W_v,       dL/dW_v = (1/T) sum_i dL/dz_iv h_i.
# The entropy H_i = lse_i - sum_v p_iv z_iv (for logging) comes from the same pass with one more
# running sum, a = sum_v exp(z_iv - m) (z_iv - m), so that H_i = log s - a / s: measured from the
# maximum, so that a peaked distribution (lse ~ z_max, H ~ 0) loses no digits to cancellation.
# When m grows to m', every term is rescaled by exp(m - m') and its (z - m) shifts by m - m':
#     s' = s exp(m - m') + ...,    a' = (a + (m - m') s) exp(m - m') + ...
# Two implementations of one algorithm: Triton kernels (CUDA, or the CPU interpreter with
# TRITON_INTERPRET=1, which is how the tests check them) and chunked torch code (CPUs).

# triton.jit builds interpreted kernels when this is set at import time (tests on CPUs do it)
_TRITON_INTERPRET = triton is not None and os.environ.get("TRITON_INTERPRET") == "1"


# torch.compile sees fused_logprobs as one opaque call that runs eagerly, between two compiled
# graphs: traced, it would break the graph at the targets' range check below (a branch on data)
# and specialise the chunk loops and the Triton grid on N, which changes every RL step, so that
# every step would compile anew until the recompile limit sends the caller back to eager.
@torch.compiler.disable
def fused_logprobs(hidden, weight, targets, temperature=1.0, backend=None, return_entropy=False):
    """log softmax(hidden @ weight.T / temperature)[targets], one float32 per row, without ever
    holding the (N, V) logits. hidden (N, d) and weight (V, d) are differentiable; targets (N,)
    are token ids. backend: None (Triton for CUDA tensors when triton is installed, torch
    otherwise), "triton" or "torch". return_entropy=True also returns each row's entropy (N,),
    from the same pass and without gradient (for logging)."""
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.size(1) != weight.size(1):
        raise ValueError(f"fused_logprobs wants hidden (N, d) and weight (V, d); got "
                         f"{tuple(hidden.shape)} and {tuple(weight.shape)} (flatten (B, T, d) to (B*T, d))")
    if targets.shape != (hidden.size(0),) or targets.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"targets must be integer token ids of shape ({hidden.size(0)},); "
                         f"got {targets.dtype} {tuple(targets.shape)}")
    if ((targets < 0) | (targets >= weight.size(0))).any():  # (a kernel would silently read garbage)
        raise ValueError(f"targets must lie in [0, {weight.size(0)}); got [{int(targets.min())}, "
                         f"{int(targets.max())}] (replace padding by any valid id, then mask the result)")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if backend is None:
        backend = "triton" if hidden.is_cuda and triton is not None else "torch"
    if backend not in ("triton", "torch"):
        raise ValueError(f"backend must be None, 'triton' or 'torch'; got {backend!r}")
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):  # run the logits matmul in the autocast dtype, as lm_head would
        hidden = hidden.to(torch.get_autocast_dtype(device_type))
        weight = weight.to(hidden.dtype)
    elif hidden.dtype != weight.dtype:
        common = torch.promote_types(hidden.dtype, weight.dtype)
        hidden, weight = hidden.to(common), weight.to(common)
    function = _ChunkedLogprobs  # (an empty batch stays here: a Triton grid cannot be empty)
    if backend == "triton" and hidden.size(0) > 0:
        _check_triton_can_run(hidden)
        if _triton_verdict(hidden.device, hidden.dtype) is None:  # no start-up check: check at this call's shapes
            self_check(hidden.device, hidden.dtype, hidden.size(0), hidden.size(1), weight.size(0))
        if _triton_verdict(hidden.device, hidden.dtype):
            function = _TritonLogprobs
    logp, entropy = function.apply(hidden, weight, targets, float(temperature), return_entropy)
    return (logp, entropy) if return_entropy else logp


def _check_triton_can_run(hidden):
    if triton is None:
        raise RuntimeError("backend='triton' needs the triton package (pip install triton), "
                           "or use backend='torch'")
    if not hidden.is_cuda and not _TRITON_INTERPRET:
        raise RuntimeError("backend='triton' on CPU tensors needs Triton's interpreter: set the "
                           "environment variable TRITON_INTERPRET=1 before model.py (or triton) is imported")
    if _TRITON_INTERPRET and hidden.dtype == torch.bfloat16:
        raise RuntimeError("Triton's CPU interpreter computes bfloat16 dots wrongly (numpy has no "
                           "bfloat16): use float32 or float16 there, or backend='torch'")


# Before the Triton kernels serve a run on a GPU, they are compared with the torch path there, per
# device, dtype and matmul precision: log-probs, and both gradients of a loss with weights of both
# signs, on random problems at the run's shapes. train.py calls self_check at start-up with them;
# otherwise fused_logprobs calls it on its first Triton call, at that call's shapes. Two problems:
# the run's (N, d, V), whose large N makes the vocabulary one split of the forward and whose
# pretrained vocabulary (GPT-2's) comes in ~19 chunks of dL/dW in the backward, and SELF_CHECK_ROWS
# rows of the same d and V, which split the vocabulary over programs (see _TritonLogprobs). The
# check runs in a child process: a kernel that faults (an illegal memory access) leaves its CUDA
# context unusable for the rest of the process, and that must not be the trainer's. If a log-prob
# differs by more than SELF_CHECK_LOGP_NATS, or a gradient by more than SELF_CHECK_GRAD_SHARE of
# the largest reference gradient, or the kernel fails to run, a warning says so and the torch path
# serves the rest of the run. The bounds sit between what rounding gives (the kernel rounds its
# dL/dz tiles to the input dtype for the tensor cores: 9e-4 of the gradients in fp16, measured in
# the interpreter, so ~7e-3 in bf16 with its 3 fewer mantissa bits; TF32 dots: a few 1e-3 nats of
# log-prob) and what a wrong kernel gives (a missed vocabulary tile moves lse by ~0.1 nats; a race
# or a bad tile config, errors of the order of the values). The run's shapes cost a few GPU
# seconds on each path, beside the seconds that compiling the kernels takes anyway.
SELF_CHECKED_DEVICES = ("cuda",)  # on CPUs the kernels run in Triton's interpreter, for the tests
SELF_CHECK_LOGP_NATS = 2e-2
SELF_CHECK_GRAD_SHARE = 2e-2
SELF_CHECK_ROWS = 100  # (not a multiple of any tile: partial row blocks too)
SELF_CHECK_TIMEOUT = 600  # seconds for the child: importing torch and compiling the kernels included
_triton_verdicts = {}  # (device, dtype, matmul precision) -> bool, for this process


def self_check(device, dtype, n_rows, d, vocab):
    """Check the Triton kernels against the torch path on `device` for inputs of `dtype` (what the
    kernel sees: bfloat16 under bf16 autocast), in a child process, at a run's shapes: n_rows, the
    most rows one fused_logprobs call of the run gets (e.g. an update's tokens), d and vocab, the
    model's width and vocabulary. Returns (ok, message). The verdict holds for this process: when
    ok is False, a warning says so and fused_logprobs uses the torch path on that device and dtype."""
    device = torch.device(device)
    if device.type not in SELF_CHECKED_DEVICES or triton is None:
        return True, f"fused_logprobs: the torch path serves {device}: nothing to check"
    if device.type == "cuda" and device.index is None:  # (tensors name their GPU: so does the verdict)
        device = torch.device("cuda", torch.cuda.current_device())
    problems = _self_check_problems(n_rows, d, vocab)
    code = (f"import json, logprobs; print(json.dumps(logprobs._compare_with_torch({str(device)!r}, "
            f"{str(dtype).removeprefix('torch.')!r}, {torch.get_float32_matmul_precision()!r}, {problems!r})))")
    try:
        child = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(os.path.abspath(__file__)),
                               capture_output=True, text=True, timeout=SELF_CHECK_TIMEOUT)
        if child.returncode == 0:
            problem = json.loads(child.stdout.strip().splitlines()[-1])
        else:
            ended = f"signal {-child.returncode}" if child.returncode < 0 else f"exit status {child.returncode}"
            problem = f"its process ended with {ended}: {child.stderr.strip()[-2000:]}"
    except subprocess.TimeoutExpired:
        problem = f"its process ran for more than {SELF_CHECK_TIMEOUT} s"
    _triton_verdicts[(str(device), dtype, _dot_precision())] = problem is None
    shapes = " and ".join(f"N={n}" for n, _, _ in problems) + f", d={d}, V={vocab}"
    if problem is None:
        return True, f"fused_logprobs: the Triton kernels agree with the torch path on {device} in {dtype} at {shapes}"
    message = (f"\n{'!' * 80}\nfused_logprobs: the Triton kernels disagree with the torch path on {device} in "
               f"{dtype} at {shapes}: {problem}.\nThe torch path computes every log-prob of this run "
               f"instead (correct, slower). Please report this with your GPU, torch and triton versions."
               f"\n{'!' * 80}")
    warnings.warn(message, RuntimeWarning, stacklevel=2)
    return False, message


def _self_check_problems(n_rows, d, vocab):
    """The (N, d, V) problems of the check: the run's, and a few rows at its d and V."""
    return [(n_rows, d, vocab), (min(n_rows, SELF_CHECK_ROWS), d, vocab)]


def _triton_verdict(device, dtype):
    """Whether the Triton kernels may serve inputs of dtype on device: True or False once checked
    (True where nothing is checked), None before the check."""
    if device.type not in SELF_CHECKED_DEVICES:
        return True
    return _triton_verdicts.get((str(device), dtype, _dot_precision()))


def _compare_with_torch(device, dtype, precision, problems):
    """The check itself, in the child process of self_check: None when both paths agree on every
    (N, d, V) problem, else what is wrong."""
    torch.set_float32_matmul_precision(precision)
    device, dtype = torch.device(device), getattr(torch, dtype)
    try:
        for N, d, V in problems:
            gen = torch.Generator(device).manual_seed(0)
            hidden = torch.randn(N, d, device=device, generator=gen).to(dtype)
            weight = (3 * torch.randn(V, d, device=device, generator=gen) / d ** 0.5).to(dtype)
            targets = torch.randint(0, V, (N,), device=device, generator=gen)
            targets[-2:] = torch.tensor([0, V - 1], device=device)  # both ends of the vocabulary
            grad = torch.randn(N, device=device, generator=gen)  # weights of both signs, like advantages
            problem = disagreement(lambda h, w, t: _TritonLogprobs.apply(h, w, t, 1.0, False)[0],
                                   lambda h, w, t: _ChunkedLogprobs.apply(h, w, t, 1.0, False)[0],
                                   hidden, weight, targets, grad)
            if problem:
                return f"at N={N}: {problem}"
    except Exception as e:  # (a kernel that does not compile or launch for this GPU)
        return f"it failed to run: {type(e).__name__}: {e}"
    return None


def disagreement(method, reference, hidden, weight, targets, grad, reference_dtype=None):
    """None when two ways of computing per-token log-probs, functions (hidden, weight, targets) ->
    (N,), agree on these inputs, else what differs: the log-probs by more than
    SELF_CHECK_LOGP_NATS, or a gradient of sum(grad * log p) (hidden's, weight's) by more than
    SELF_CHECK_GRAD_SHARE of the reference's largest value. Each gets leaf copies of hidden and
    weight of its own; the reference's in reference_dtype when given (bench_kernel.py: float64)."""
    compared = torch.promote_types(reference_dtype or hidden.dtype, torch.float32)
    results = []
    for function, dtype in ((method, hidden.dtype), (reference, reference_dtype or hidden.dtype)):
        h, w = (x.detach().to(dtype).requires_grad_() for x in (hidden, weight))
        logp = function(h, w, targets)
        logp.backward(grad.to(logp.dtype))
        results.append([x.detach().to(compared) for x in (logp, h.grad, w.grad)])
    (logp, dh, dw), (ref_logp, ref_dh, ref_dw) = results
    logp_error = (logp - ref_logp).abs().max().item()
    grad_errors = [((g - r).abs().max() / r.abs().max()).item() for g, r in ((dh, ref_dh), (dw, ref_dw))]
    if logp_error <= SELF_CHECK_LOGP_NATS and all(error <= SELF_CHECK_GRAD_SHARE for error in grad_errors):  # (NaN: no)
        return None
    return (f"log-probs off by up to {logp_error:.3g} nats (bound {SELF_CHECK_LOGP_NATS}), grad hidden and "
            f"grad weight by {grad_errors[0]:.2g} and {grad_errors[1]:.2g} of their largest value "
            f"(bound {SELF_CHECK_GRAD_SHARE})")


class _ChunkedLogprobs(torch.autograd.Function):
    """The algorithm above in plain torch, over chunks of rows x vocabulary, all in float32.
    On a CPU a chunk of 2048 x 2048 logits (16 MB) stays in the last-level cache between the
    matmul that makes it and the exp/sum passes over it, where the naive version streams
    gigabytes through memory for each pass: that pays for the extra matmul of the backward.
    (Smaller chunks mean more, smaller torch ops, each a thread synchronisation.)"""

    @staticmethod
    def chunk_sizes(device):
        return (2048, 2048) if device.type == "cpu" else (4096, 8192)

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, with_entropy):
        N, V = hidden.size(0), weight.size(0)
        rows_per_chunk, vocab_per_chunk = _ChunkedLogprobs.chunk_sizes(hidden.device)
        with torch.autocast(hidden.device.type, enabled=False):
            scaled = hidden.float() / temperature  # z = (h / T) W^T: 1/T is applied once, to N x d
            lse = torch.empty(N, device=hidden.device)
            target_logit = torch.empty(N, device=hidden.device)
            entropy = torch.empty(N, device=hidden.device) if with_entropy else None
            for r0 in range(0, N, rows_per_chunk):
                h, t = scaled[r0:r0 + rows_per_chunk], targets[r0:r0 + rows_per_chunk]
                running_max = torch.full((len(h),), float("-inf"), device=h.device)
                running_sum, running_zsum, picked = (torch.zeros(len(h), device=h.device) for _ in range(3))
                for v0 in range(0, V, vocab_per_chunk):
                    w = weight[v0:v0 + vocab_per_chunk].float()
                    z = h @ w.T
                    local = t - v0  # the target's column in this chunk, if it is in this chunk
                    here = (local >= 0) & (local < len(w))
                    picked = torch.where(here, z.gather(1, local.clamp(0, len(w) - 1)[:, None]).squeeze(1), picked)
                    new_max = torch.maximum(running_max, z.amax(dim=1))
                    rescale = torch.exp(running_max - new_max)  # 0 on the first chunk (exp(-inf))
                    z -= new_max[:, None]  # (in place: one chunk-sized buffer less)
                    p = z.exp() if with_entropy else z.exp_()
                    if with_entropy:  # (before running_sum moves on; on the first chunk m = -inf, s = 0)
                        moved = torch.where(running_sum > 0, running_max - new_max, 0.0) * running_sum
                        running_zsum = (running_zsum + moved) * rescale + torch.linalg.vecdot(p, z)
                    running_sum = running_sum * rescale + p.sum(dim=1)
                    running_max = new_max
                lse[r0:r0 + len(h)] = running_max + running_sum.log()
                target_logit[r0:r0 + len(h)] = picked
                if with_entropy:
                    entropy[r0:r0 + len(h)] = running_sum.log() - running_zsum / running_sum
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.temperature = temperature
        if with_entropy:
            ctx.mark_non_differentiable(entropy)
        return target_logit - lse, entropy

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):
        hidden, weight, targets, lse = ctx.saved_tensors
        temperature = ctx.temperature
        N, V = hidden.size(0), weight.size(0)
        rows_per_chunk, vocab_per_chunk = _ChunkedLogprobs.chunk_sizes(hidden.device)
        with torch.autocast(hidden.device.type, enabled=False):
            scaled = hidden.float() / temperature
            g = grad_logp.float()
            grad_hidden = torch.zeros(N, hidden.size(1), device=hidden.device)
            grad_weight = torch.zeros(V, hidden.size(1), device=hidden.device)
            for r0 in range(0, N, rows_per_chunk):
                h, t = scaled[r0:r0 + rows_per_chunk], targets[r0:r0 + rows_per_chunk]
                g_rows = g[r0:r0 + len(h), None]
                for v0 in range(0, V, vocab_per_chunk):
                    w = weight[v0:v0 + vocab_per_chunk].float()
                    # dL/dz = g (onehot - p), with p = exp(z - lse) recomputed in place
                    dz = (h @ w.T).sub_(lse[r0:r0 + len(h), None]).exp_().mul_(-g_rows)
                    local = t - v0  # add g where the target is in this chunk (0 elsewhere)
                    here = (local >= 0) & (local < len(w))
                    dz.scatter_add_(1, local.clamp(0, len(w) - 1)[:, None], g_rows * here[:, None])
                    if ctx.needs_input_grad[0]:
                        grad_hidden[r0:r0 + len(h)].addmm_(dz, w)
                    if ctx.needs_input_grad[1]:
                        grad_weight[v0:v0 + len(w)].addmm_(dz.T, h)
            grad_hidden /= temperature  # (grad_weight got its 1/T from `scaled`)
        return (grad_hidden.to(hidden.dtype) if ctx.needs_input_grad[0] else None,
                grad_weight.to(weight.dtype) if ctx.needs_input_grad[1] else None, None, None, None)


# Triton. Both kernels work on tiles of BLOCK_N rows x BLOCK_V vocabulary entries; a logit tile
# is a matmul over d in steps of BLOCK_D with tl.dot, accumulated in float32 (bf16/fp16 inputs
# run on the tensor cores; fp32 inputs use IEEE fp32 unless torch allows TF32 matmuls).

def _triton_tiles(dtype, on_gpu):
    """(BLOCK_N, BLOCK_V, BLOCK_D, num_warps, num_stages) for inputs of this dtype (every GPU
    choice is in gpu_launches, which CI compiles for sm_80 and sm_90 ahead of time)."""
    if not on_gpu:  # the interpreter: small tiles, so that small test shapes span many
        return 16, 32, 16, 1, 1
    # Chosen so that both kernels fit in the registers (ptxas -v for sm_90 reports no spills, or
    # 64 bytes); not yet timed on a GPU: triton.autotune over a few such shapes is the next step.
    if dtype == torch.float32:  # IEEE fp32 dots run on the CUDA cores: smaller tiles
        return 64, 64, 32, 8, 2
    # a tensor-core tile; BLOCK_D = 32, not 64: the backward holds its dL/dz tile meanwhile
    return 128, 128, 32, 8, 3


BACKWARD_GROUP_ROWS = 8  # row blocks per group of the backward's programs (see its kernel)


def _dot_precision():
    return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"


if triton is not None:

    @triton.jit
    def _logit_tile(hidden_ptr, weight_ptr, rows, cols, N, V, D, inv_temperature,
                    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
                    DOT_PRECISION: tl.constexpr):
        """z = hidden[rows] @ weight[cols].T / T for one (BLOCK_N, BLOCK_V) tile, in float32."""
        acc = tl.zeros((BLOCK_N, BLOCK_V), dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D)
            h = tl.load(hidden_ptr + rows[:, None] * D + ds[None, :],
                        mask=(rows[:, None] < N) & (ds[None, :] < D), other=0.0)
            w_t = tl.load(weight_ptr + cols[None, :] * D + ds[:, None],  # W^T tile, (BLOCK_D, BLOCK_V)
                          mask=(cols[None, :] < V) & (ds[:, None] < D), other=0.0)
            acc = tl.dot(h, w_t, acc, input_precision=DOT_PRECISION)
        return acc * inv_temperature

    @triton.jit
    def _logprobs_forward_kernel(hidden_ptr, weight_ptr, targets_ptr, partial_ptr,
                                 N, V, D, vocab_per_split, inv_temperature,
                                 BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
                                 DOT_PRECISION: tl.constexpr, WITH_ENTROPY: tl.constexpr):
        """Program (i, s): rows i*BLOCK_N.. over split s of the vocabulary. Writes per row the
        split's running max m, s = sum exp(z - m), the target logit (0 when the target lies in
        another split) and a = sum exp(z - m) (z - m) to partial[0..3, s, row]; the wrapper
        merges the splits."""
        split, n_splits = tl.program_id(1), tl.num_programs(1)
        rows = (tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
        targets = tl.load(targets_ptr + rows, mask=rows < N, other=-1)
        running_max = tl.full((BLOCK_N,), float("-inf"), dtype=tl.float32)
        running_sum = tl.zeros((BLOCK_N,), dtype=tl.float32)
        running_zsum = tl.zeros((BLOCK_N,), dtype=tl.float32)
        target_logit = tl.zeros((BLOCK_N,), dtype=tl.float32)
        vocab_start = split * vocab_per_split
        vocab_end = tl.minimum(vocab_start + vocab_per_split, V)
        for v0 in range(vocab_start, vocab_end, BLOCK_V):
            cols = (v0 + tl.arange(0, BLOCK_V)).to(tl.int64)
            in_split = cols[None, :] < vocab_end
            z = _logit_tile(hidden_ptr, weight_ptr, rows, cols, N, V, D, inv_temperature,
                            BLOCK_N, BLOCK_V, BLOCK_D, DOT_PRECISION)
            z = tl.where(in_split, z, float("-inf"))
            new_max = tl.maximum(running_max, tl.max(z, axis=1))
            rescale = tl.exp(running_max - new_max)  # 0 on the first tile (exp(-inf))
            p = tl.exp(z - new_max[:, None])
            if WITH_ENTROPY:  # (before running_sum moves on; on the first tile m = -inf, s = 0)
                moved = tl.where(running_sum > 0, running_max - new_max, 0.0) * running_sum
                z_from_max = tl.where(in_split, z - new_max[:, None], 0.0)
                running_zsum = (running_zsum + moved) * rescale + tl.sum(p * z_from_max, axis=1)
            running_sum = running_sum * rescale + tl.sum(p, axis=1)
            target_logit += tl.sum(tl.where(cols[None, :] == targets[:, None], z, 0.0), axis=1)
            running_max = new_max
        out, plane, row_ok = partial_ptr + split * N + rows, n_splits * N, rows < N
        tl.store(out, running_max, mask=row_ok)
        tl.store(out + plane, running_sum, mask=row_ok)
        tl.store(out + 2 * plane, target_logit, mask=row_ok)
        if WITH_ENTROPY:
            tl.store(out + 3 * plane, running_zsum, mask=row_ok)

    @triton.jit
    def _logprobs_backward_kernel(hidden_ptr, weight_ptr, targets_ptr, lse_ptr, grad_ptr,
                                  grad_hidden_ptr, grad_weight_ptr,
                                  N, V, D, vocab_start, vocab_end, inv_temperature,
                                  BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
                                  GROUP_ROWS: tl.constexpr, DOT_PRECISION: tl.constexpr,
                                  COMPUTE_DH: tl.constexpr, COMPUTE_DW: tl.constexpr):
        """Program p: one (rows, vocabulary) tile of [vocab_start, vocab_end). It recomputes the
        logits, forms dL/dz (the tile never leaves the chip) and adds its share of both gradients.

        No races: tile (i, j) contributes dz_ij @ W_j to grad_hidden[rows i] and dz_ij^T @ h_i
        to grad_weight[vocab j], and other tiles add to the same rows, so every addition is a
        float32 tl.atomic_add (the hardware adds atomically in L2; "relaxed": only the sum
        matters, not the order, which makes the last bits vary from run to run). Holding a
        whole row block of grad_hidden (BLOCK_N x d) in registers instead does not fit for d
        in the hundreds. Programs are numbered in groups of GROUP_ROWS row blocks (as in
        Triton's matmul tutorial), so the programs running together share W and h tiles in L2
        and spread their atomics over many rows of both gradients."""
        pid = tl.program_id(0)
        n_row_blocks = tl.cdiv(N, BLOCK_N)
        n_vocab_blocks = tl.cdiv(vocab_end - vocab_start, BLOCK_V)
        per_group = GROUP_ROWS * n_vocab_blocks
        first_row_block = (pid // per_group) * GROUP_ROWS
        group_size = tl.minimum(n_row_blocks - first_row_block, GROUP_ROWS)
        row_block = first_row_block + (pid % per_group) % group_size
        vocab_block = (pid % per_group) // group_size
        rows = (row_block * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
        cols = (vocab_start + vocab_block * BLOCK_V + tl.arange(0, BLOCK_V)).to(tl.int64)
        row_ok, col_ok = rows < N, cols < vocab_end

        z = _logit_tile(hidden_ptr, weight_ptr, rows, cols, N, V, D, inv_temperature,
                        BLOCK_N, BLOCK_V, BLOCK_D, DOT_PRECISION)
        lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
        g = tl.load(grad_ptr + rows, mask=row_ok, other=0.0)  # rows past N get g = 0, so dz = 0
        targets = tl.load(targets_ptr + rows, mask=row_ok, other=-1)
        onehot = tl.where(cols[None, :] == targets[:, None], 1.0, 0.0)
        dz = g[:, None] * (onehot - tl.exp(z - lse[:, None])) * inv_temperature  # 1/T of dz/dh, dz/dW
        dz = tl.where(col_ok[None, :], dz, 0.0).to(hidden_ptr.dtype.element_ty)  # tensor-core operand

        for d0 in range(0, D, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D)
            if COMPUTE_DH:
                w = tl.load(weight_ptr + cols[:, None] * D + ds[None, :],
                            mask=col_ok[:, None] & (ds[None, :] < D), other=0.0)
                tl.atomic_add(grad_hidden_ptr + rows[:, None] * D + ds[None, :],
                              tl.dot(dz, w, input_precision=DOT_PRECISION),
                              mask=row_ok[:, None] & (ds[None, :] < D), sem="relaxed")
            if COMPUTE_DW:
                h = tl.load(hidden_ptr + rows[:, None] * D + ds[None, :],
                            mask=row_ok[:, None] & (ds[None, :] < D), other=0.0)
                tl.atomic_add(grad_weight_ptr + (cols - vocab_start)[:, None] * D + ds[None, :],
                              tl.dot(tl.trans(dz), h, input_precision=DOT_PRECISION),
                              mask=col_ok[:, None] & (ds[None, :] < D), sem="relaxed")


# The backward's float32 accumulator for grad_weight holds at most this many floats (8 MB); a
# larger vocabulary of bf16/fp16 weights is done in chunks that reuse it (fp32 weights
# accumulate straight into their gradient). grad_hidden's accumulator is N x d float32.
_GRAD_WEIGHT_SCRATCH_FLOATS = 2 ** 21


def _vocabulary_splits(N, V, BLOCK_N, BLOCK_V, programs_wanted):
    """(vocabulary tiles per split, number of splits) of the forward. Few rows (a preference
    batch, a short sequence) would leave most of the GPU idle with one program per row block, so
    the vocabulary is also split over programs, each writing partial sums, until about
    programs_wanted programs run; many rows (an update's tokens) make one split."""
    row_blocks, vocab_tiles = triton.cdiv(N, BLOCK_N), triton.cdiv(V, BLOCK_V)
    tiles_per_split = triton.cdiv(vocab_tiles, min(vocab_tiles, triton.cdiv(programs_wanted, row_blocks)))
    return tiles_per_split, triton.cdiv(vocab_tiles, tiles_per_split)  # (no split is empty)


def _grad_weight_chunk(V, D, BLOCK_V, dtype):
    """Vocabulary rows per launch of the backward: all for fp32 weights, else what the scratch holds."""
    return V if dtype == torch.float32 else max(BLOCK_V, _GRAD_WEIGHT_SCRATCH_FLOATS // D // BLOCK_V * BLOCK_V)


def _launching_on(device):
    """Triton launches a kernel on the current CUDA device, whatever device its tensors are on: on
    another GPU (--device=cuda:1, with cuda:0 current) it reads addresses that are not there."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


class _TritonLogprobs(torch.autograd.Function):

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, with_entropy):
        hidden, weight, targets = hidden.contiguous(), weight.contiguous(), targets.contiguous()
        (N, D), V = hidden.shape, weight.size(0)
        BLOCK_N, BLOCK_V, BLOCK_D, num_warps, num_stages = _triton_tiles(hidden.dtype, hidden.is_cuda)
        # (The interpreter runs programs one by one: a few splits there keep the merge tested.)
        wanted = 4 * (torch.cuda.get_device_properties(hidden.device).multi_processor_count
                      if hidden.is_cuda else 1)
        row_blocks = triton.cdiv(N, BLOCK_N)
        tiles_per_split, n_splits = _vocabulary_splits(N, V, BLOCK_N, BLOCK_V, wanted)
        partial = torch.empty(4, n_splits, N, device=hidden.device)
        with _launching_on(hidden.device):
            _logprobs_forward_kernel[(row_blocks, n_splits)](
                hidden, weight, targets, partial, N, V, D, tiles_per_split * BLOCK_V, 1.0 / temperature,
                BLOCK_N=BLOCK_N, BLOCK_V=BLOCK_V, BLOCK_D=BLOCK_D, DOT_PRECISION=_dot_precision(),
                WITH_ENTROPY=with_entropy, num_warps=num_warps, num_stages=num_stages)
        # merge the splits: the same rescaling to a common maximum as inside the kernel
        split_max, split_sum, split_target, split_zsum = partial
        row_max = split_max.amax(dim=0)
        rescale = torch.exp(split_max - row_max)
        total = (split_sum * rescale).sum(dim=0)
        lse = row_max + total.log()
        logp = split_target.sum(dim=0) - lse
        entropy = None
        if with_entropy:
            entropy = total.log() - ((split_zsum + (split_max - row_max) * split_sum) * rescale).sum(dim=0) / total
            ctx.mark_non_differentiable(entropy)
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.temperature = temperature
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):
        hidden, weight, targets, lse = ctx.saved_tensors
        (N, D), V = hidden.shape, weight.size(0)
        need_dh, need_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        BLOCK_N, BLOCK_V, BLOCK_D, num_warps, num_stages = _triton_tiles(hidden.dtype, hidden.is_cuda)
        grad_logp = grad_logp.float().contiguous()  # (the grad of a .sum() is an expanded view)
        grad_hidden = torch.zeros(N, D, device=hidden.device) if need_dh else None
        grad_weight = torch.zeros_like(weight) if need_dw else None
        in_place = weight.dtype == torch.float32
        chunk = _grad_weight_chunk(V, D, BLOCK_V, weight.dtype)
        scratch = torch.empty(min(chunk, V), D, device=hidden.device) if need_dw and not in_place else None
        weight_acc = None
        for v0 in range(0, V, chunk):
            v1 = min(V, v0 + chunk)
            if need_dw:
                weight_acc = grad_weight[v0:v1] if in_place else scratch[:v1 - v0].zero_()
            grid = (triton.cdiv(N, BLOCK_N) * triton.cdiv(v1 - v0, BLOCK_V),)
            with _launching_on(hidden.device):
                _logprobs_backward_kernel[grid](
                    hidden, weight, targets, lse, grad_logp,
                    grad_hidden if need_dh else lse, weight_acc if need_dw else lse,  # (lse: unused)
                    N, V, D, v0, v1, 1.0 / ctx.temperature,
                    BLOCK_N=BLOCK_N, BLOCK_V=BLOCK_V, BLOCK_D=BLOCK_D, GROUP_ROWS=BACKWARD_GROUP_ROWS,
                    DOT_PRECISION=_dot_precision(), COMPUTE_DH=need_dh, COMPUTE_DW=need_dw,
                    num_warps=num_warps, num_stages=num_stages)
            if need_dw and not in_place:
                grad_weight[v0:v1] = weight_acc
        if need_dh:
            grad_hidden = grad_hidden.to(hidden.dtype)
        return grad_hidden, grad_weight, None, None, None


# ----------------------------------------------------------------------------- ahead-of-time compile

def gpu_launches():
    """Every launch of a Triton kernel that fused_logprobs can make on a CUDA GPU, as
    triton.compile takes it, so that it can be compiled without one (bench.py --part=gpu_compile,
    tests/test_bench_kernel.py): the forward with and without entropy, the backward for each set of
    gradients, for fp32 (IEEE or, when torch allows it, TF32 dots), bf16 and fp16 inputs, with
    _triton_tiles' GPU tiles. Yields (name, kernel, dtype, signature, constexprs, options): the
    Triton type of each argument, the compile-time constants and the launch options."""
    for dtype, name in {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.items():
        BLOCK_N, BLOCK_V, BLOCK_D, num_warps, num_stages = _triton_tiles(dtype, on_gpu=True)
        tiles = dict(BLOCK_N=BLOCK_N, BLOCK_V=BLOCK_V, BLOCK_D=BLOCK_D)
        options = dict(num_warps=num_warps, num_stages=num_stages)
        inputs = dict(hidden_ptr=f"*{name}", weight_ptr=f"*{name}", targets_ptr="*i64")
        forward = dict(inputs, partial_ptr="*fp32", N="i32", V="i32", D="i32", vocab_per_split="i32",
                       inv_temperature="fp32")
        backward = dict(inputs, lse_ptr="*fp32", grad_ptr="*fp32", grad_hidden_ptr="*fp32", grad_weight_ptr="*fp32",
                        N="i32", V="i32", D="i32", vocab_start="i32", vocab_end="i32", inv_temperature="fp32")
        # (the dot precision only changes fp32 dots; 16-bit ones run on the tensor cores either way)
        for precision in (("ieee", "tf32") if dtype == torch.float32 else ("ieee",)):
            label = f"{name}/{precision}" if dtype == torch.float32 else name
            for entropy in (False, True):
                yield ("forward" + " +entropy" * entropy, _logprobs_forward_kernel, label, forward,
                       dict(tiles, DOT_PRECISION=precision, WITH_ENTROPY=entropy), options)
            for dh, dw in ((True, True), (True, False), (False, True)):
                yield (f"backward {'dh' * dh}{'+' * (dh and dw)}{'dw' * dw}", _logprobs_backward_kernel, label,
                       backward, dict(tiles, GROUP_ROWS=BACKWARD_GROUP_ROWS, DOT_PRECISION=precision,
                                      COMPUTE_DH=dh, COMPUTE_DW=dw), options)
