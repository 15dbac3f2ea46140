"""Tests of logprobs.py: the fused log-prob kernel (Triton, run in Triton's CPU interpreter here,
and the chunked torch path) against float64 references, its memory behaviour, its errors, its
self-check on a GPU (in a child process), the device it launches on, and torch.compile around it."""

import pytest
import torch

import logprobs

# The Triton backend runs on CPU tensors in Triton's interpreter (tests/conftest.py sets
# TRITON_INTERPRET=1 when there is no GPU), which is slow: its shapes are small but span several
# tiles (16 rows x 32 vocab x 16 hidden there). The torch shapes span several 2048 x 2048 chunks.
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def reference_logprobs(hidden, weight, targets, temperature, grad):
    """float64 log_softmax + gather, the entropy, and the gradients of sum(grad * logp)."""
    hidden = hidden.detach().double().requires_grad_()
    weight = weight.detach().double().requires_grad_()
    logprobs = torch.log_softmax(hidden @ weight.T / temperature, dim=-1)
    logp = logprobs.gather(1, targets[:, None]).squeeze(1)
    logp.backward(grad.double())
    entropy = -(logprobs.exp() * logprobs).sum(-1)
    return logp.detach(), entropy.detach(), hidden.grad, weight.grad


def rel_err(got, ref):
    return ((got.double() - ref.to(got.device)).abs().max() / ref.abs().max()).item()


def logprob_problem(N, d, V, scale, dtype=torch.float32, seed=0):
    """hidden, weight with logits of size ~scale; targets with repeats and both ends of the
    vocabulary; an upstream gradient of both signs (like advantages)."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, d, generator=gen)
    weight = torch.randn(V, d, generator=gen) * scale / d ** 0.5
    targets = torch.randint(0, V, (N,), generator=gen)
    targets[: N // 3] = targets[0]  # a third of the rows share one target
    targets[-2:] = torch.tensor([0, V - 1])
    grad = torch.randn(N, generator=gen)
    return [x.to(DEVICE) for x in (hidden.to(dtype), weight.to(dtype), targets, grad)]


@pytest.mark.parametrize("backend,N,d,V,temperature,scale", [
    ("triton", 37, 24, 203, 1.0, 1.0),    # N, V, d not multiples of the tiles; V not a power of two
    ("triton", 50, 40, 130, 0.7, 5.0),
    ("triton", 29, 16, 77, 2.0, 1e3),     # logits of size 1e3
    ("torch", 2500, 32, 4500, 1.0, 1.0),  # several chunks of rows and of vocabulary
    ("torch", 2100, 24, 2100, 0.7, 5.0),
    ("torch", 300, 16, 1500, 2.0, 1e3),
])
def test_fused_logprobs_match_float64_reference(backend, N, d, V, temperature, scale):
    hidden, weight, targets, grad = logprob_problem(N, d, V, scale)
    hidden.requires_grad_()
    weight.requires_grad_()
    logp, entropy = logprobs.fused_logprobs(hidden, weight, targets, temperature, backend=backend,
                                         return_entropy=True)
    logp.backward(grad)
    ref_logp, ref_entropy, ref_dh, ref_dw = reference_logprobs(hidden, weight, targets, temperature, grad)
    assert logp.dtype == torch.float32 and logp.shape == (N,)
    for got in (logp, entropy, hidden.grad, weight.grad):
        assert torch.isfinite(got).all()
    assert rel_err(logp, ref_logp) <= 1e-4
    assert rel_err(hidden.grad, ref_dh) <= 1e-4
    assert rel_err(weight.grad, ref_dw) <= 1e-4
    # float32 logits of size ~scale are only known to ~scale * 1e-7 * sqrt(d): so is the entropy
    assert (entropy.double() - ref_entropy.to(DEVICE)).abs().max() <= 1e-6 * max(1.0, scale / temperature) * d ** 0.5
    assert not entropy.requires_grad


@pytest.mark.parametrize("backend,dtype", [("triton", torch.float16), ("torch", torch.float16), ("torch", torch.bfloat16)]
                         # (Triton's CPU interpreter cannot do bfloat16 dots; see _check_triton_can_run)
                         + [("triton", torch.bfloat16)] * (DEVICE == "cuda"))
def test_fused_logprobs_half_precision_accumulates_in_float32(backend, dtype, monkeypatch):
    # a small grad_weight scratch, so that the vocabulary is done in several chunks
    monkeypatch.setattr(logprobs, "_GRAD_WEIGHT_SCRATCH_FLOATS", 32 * 24)
    hidden, weight, targets, grad = logprob_problem(45, 24, 150, 3.0, dtype=dtype)
    hidden.requires_grad_()
    weight.requires_grad_()
    logp = logprobs.fused_logprobs(hidden, weight, targets, 1.3, backend=backend)
    logp.backward(grad)
    ref_logp, _, ref_dh, ref_dw = reference_logprobs(hidden, weight, targets, 1.3, grad)
    assert logp.dtype == torch.float32 and hidden.grad.dtype == weight.grad.dtype == dtype
    assert rel_err(logp, ref_logp) <= 1e-4  # exact inputs, float32 accumulation
    tolerance = 2e-3 if dtype == torch.float16 else 1e-2  # dL/dz and the gradients are rounded to dtype
    assert rel_err(hidden.grad, ref_dh) <= tolerance
    assert rel_err(weight.grad, ref_dw) <= tolerance


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_fused_logprobs_frozen_weight_and_empty_batch(backend):
    hidden, weight, targets, grad = logprob_problem(20, 16, 70, 1.0)
    hidden.requires_grad_()
    logprobs.fused_logprobs(hidden, weight, targets, backend=backend).backward(grad)
    assert weight.grad is None
    assert rel_err(hidden.grad, reference_logprobs(hidden, weight, targets, 1.0, grad)[2]) <= 1e-4
    empty = logprobs.fused_logprobs(hidden[:0], weight, targets[:0], backend=backend)
    assert empty.shape == (0,) and empty.dtype == torch.float32


class LargestTensor(TorchDispatchMode):
    """Records the size in bytes of the largest tensor any torch op produces."""

    def __init__(self):
        super().__init__()
        self.nbytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        sizes = [t.numel() * t.element_size() for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        self.nbytes = max([self.nbytes] + sizes)
        return out


def test_fused_logprobs_never_build_the_logits(monkeypatch):
    """The torch path (the Triton path keeps its tiles on chip by construction; the
    interpreter, which runs it on CPUs, is too slow under a dispatch mode to check it here)."""
    monkeypatch.setattr(logprobs._ChunkedLogprobs, "chunk_sizes", staticmethod(lambda device: (256, 512)))
    N, d, V = 1000, 8, 1500
    hidden, weight, targets, grad = logprob_problem(N, d, V, 1.0)
    hidden.requires_grad_()
    weight.requires_grad_()
    with LargestTensor() as naive:  # the recorder does see the N x V logits of the direct way
        torch.log_softmax(hidden @ weight.T, -1).gather(1, targets[:, None]).squeeze(1).backward(grad)
    assert naive.nbytes >= 4 * N * V
    with LargestTensor() as fused:
        logprobs.fused_logprobs(hidden, weight, targets, backend="torch").backward(grad)
    assert fused.nbytes < N * V  # a quarter of the float32 logits


def test_fused_logprobs_refuse_bad_input():
    hidden, weight, targets, _ = logprob_problem(10, 8, 30, 1.0)
    with pytest.raises(ValueError, match=r"hidden \(N, d\) and weight \(V, d\)"):
        logprobs.fused_logprobs(hidden[None], weight, targets)
    with pytest.raises(ValueError, match=r"hidden \(N, d\) and weight \(V, d\)"):
        logprobs.fused_logprobs(hidden, weight[:, :5], targets)
    with pytest.raises(ValueError, match="integer token ids"):
        logprobs.fused_logprobs(hidden, weight, targets.float())
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 30\)"):
        logprobs.fused_logprobs(hidden, weight, torch.full_like(targets, 30))
    with pytest.raises(ValueError, match="temperature"):
        logprobs.fused_logprobs(hidden, weight, targets, temperature=0.0)
    with pytest.raises(ValueError, match="backend"):
        logprobs.fused_logprobs(hidden, weight, targets, backend="cuda")


def test_fused_logprobs_triton_on_cpu_without_interpreter_says_what_to_do(monkeypatch):
    monkeypatch.setattr(logprobs, "_TRITON_INTERPRET", False)
    hidden, weight, targets, _ = logprob_problem(10, 8, 30, 1.0)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        logprobs.fused_logprobs(hidden.cpu(), weight.cpu(), targets.cpu(), backend="triton")


@pytest.fixture
def triton_forward_calls(monkeypatch):
    """The number of forward passes the Triton kernels have made (a list, one entry per call)."""
    calls = []
    forward = logprobs._TritonLogprobs.forward

    def counted_forward(*args):
        calls.append(1)
        return forward(*args)

    monkeypatch.setattr(logprobs._TritonLogprobs, "forward", staticmethod(counted_forward))
    return calls


@pytest.mark.parametrize("wrong", ["logp", "grad_weight", "crash", None])
def test_self_check_compares_the_kernels_with_the_torch_path(triton_forward_calls, monkeypatch, wrong):
    """What the check's child process runs, here in this process on the interpreted kernels."""
    if wrong == "logp":  # a kernel whose log-probs are off by 0.3 nats
        forward = logprobs._TritonLogprobs.forward
        monkeypatch.setattr(logprobs._TritonLogprobs, "forward",
                            staticmethod(lambda *args: (lambda out: (out[0] + 0.3, out[1]))(forward(*args))))
    elif wrong == "grad_weight":  # a backward that loses a quarter of dL/dW (as a missed tile would)
        backward = logprobs._TritonLogprobs.backward
        monkeypatch.setattr(logprobs._TritonLogprobs, "backward", staticmethod(
            lambda ctx, *grads: (lambda g: (g[0], g[1] * 0.75) + g[2:])(backward(ctx, *grads))))
    elif wrong == "crash":
        monkeypatch.setattr(logprobs, "_logprobs_forward_kernel", None)  # "not subscriptable": it cannot launch
    problem = logprobs._compare_with_torch("cpu", "float32", "highest", [(37, 24, 203), (5, 24, 203)])
    expected = {"logp": "log-probs off by up to 0.3", "grad_weight": "and 0.25 of their largest value",
                "crash": "failed to run: TypeError", None: None}[wrong]
    assert problem == expected if wrong is None else expected in problem
    assert triton_forward_calls


@pytest.fixture
def checked_on_cpu(monkeypatch):
    """The GPU's check on this machine's interpreted kernels, starting with no verdict."""
    monkeypatch.setattr(logprobs, "SELF_CHECKED_DEVICES", ("cuda", "cpu"))
    monkeypatch.setattr(logprobs, "SELF_CHECK_ROWS", 5)
    monkeypatch.setattr(logprobs, "_triton_verdicts", {})


def test_self_check_runs_in_a_child_process_at_the_runs_shapes(checked_on_cpu, triton_forward_calls):
    ok, message = logprobs.self_check(DEVICE, torch.float32, 40, 24, 100)
    assert ok and "agree" in message and "N=40 and N=5, d=24, V=100" in message
    assert not triton_forward_calls  # the kernels ran in the child, not here
    assert list(logprobs._triton_verdicts.values()) == [True]
    hidden, weight, targets, grad = logprob_problem(37, 24, 203, 1.0)
    logprobs.fused_logprobs(hidden, weight, targets, backend="triton")
    assert len(triton_forward_calls) == 1  # the verdict holds: no second check


def test_self_check_survives_a_child_that_dies_and_falls_back_to_torch(checked_on_cpu, triton_forward_calls,
                                                                     monkeypatch, tmp_path):
    """A kernel that faults takes its process down (on a GPU, its CUDA context with it): the
    child's, so that this process goes on, on the torch path."""
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\necho 'an illegal memory access was encountered' >&2\nkill -SEGV $$\n")
    python.chmod(0o755)
    monkeypatch.setattr(logprobs.sys, "executable", str(python))
    with pytest.warns(RuntimeWarning, match="disagree with the torch path"):
        ok, message = logprobs.self_check(DEVICE, torch.float32, 40, 24, 100)
    assert not ok and "signal 11" in message and "illegal memory access" in message
    hidden, weight, targets, grad = logprob_problem(37, 24, 203, 1.0)
    hidden.requires_grad_()
    logp = logprobs.fused_logprobs(hidden, weight, targets, backend="triton")
    logp.backward(grad)
    ref_logp, _, ref_dh, _ = reference_logprobs(hidden, weight, targets, 1.0, grad)
    assert rel_err(logp, ref_logp) <= 1e-4 and rel_err(hidden.grad, ref_dh) <= 1e-4
    assert not triton_forward_calls  # the kernels never served


def test_first_triton_call_without_a_start_up_check_checks_at_its_shapes(checked_on_cpu, triton_forward_calls,
                                                                       monkeypatch):
    checks = []

    def recorded_check(device, dtype, n_rows, d, vocab):
        checks.append((str(device), dtype, n_rows, d, vocab))
        logprobs._triton_verdicts[(str(device), dtype, logprobs._dot_precision())] = True
    monkeypatch.setattr(logprobs, "self_check", recorded_check)
    hidden, weight, targets, _ = logprob_problem(37, 24, 203, 1.0)
    logprobs.fused_logprobs(hidden, weight, targets, backend="triton")
    logprobs.fused_logprobs(hidden[:20], weight, targets[:20], backend="triton")
    assert checks == [(str(hidden.device), torch.float32, 37, 24, 203)]
    assert len(triton_forward_calls) == 2


def naive_logprobs(hidden, weight, targets):
    return torch.log_softmax(hidden @ weight.T, dim=-1).gather(1, targets[:, None]).squeeze(1)


def test_disagreement_passes_a_right_method_and_names_what_a_wrong_one_gets_wrong():
    """The self-check's comparison, and bench_kernel.py's against float64: every log-prob, both gradients."""
    hidden, weight, targets, grad = logprob_problem(300, 16, 500, 1.0)
    chunked = lambda h, w, t: logprobs.fused_logprobs(h, w, t, backend="torch")
    assert logprobs.disagreement(chunked, naive_logprobs, hidden, weight, targets, grad, torch.float64) is None

    def shifted(h, w, t):  # log-probs off by 0.1 nats
        return naive_logprobs(h, w, t) + 0.1
    assert "log-probs off by up to 0.1 nats" in logprobs.disagreement(shifted, naive_logprobs, hidden, weight,
                                                                      targets, grad, torch.float64)

    def nan_weight_gradient(h, w, t):  # right log-probs and grad hidden; NaN in grad weight
        w.register_hook(lambda g: g * float("nan"))
        return naive_logprobs(h, w, t)
    problem = logprobs.disagreement(nan_weight_gradient, naive_logprobs, hidden, weight, targets, grad)
    assert problem and "grad hidden and grad weight by 0 and nan" in problem


def test_gpu_launches_name_every_argument_of_the_kernels():
    """What CI compiles ahead of time (tests/test_bench_kernel.py) is what the dispatcher launches: every
    argument typed or constant, with the dispatcher's GPU tiles, for each dtype and gradient set."""
    launches = list(logprobs.gpu_launches())
    assert len(launches) == 4 * (2 + 3)  # fp32 IEEE and TF32, bf16, fp16: 2 forwards, 3 backwards
    for name, kernel, dtype, signature, constexprs, options in launches:
        assert list(signature) + list(constexprs) == kernel.arg_names, name
        tiles = logprobs._triton_tiles(getattr(torch, {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
                                               [dtype.split("/")[0]]), on_gpu=True)
        assert (constexprs["BLOCK_N"], constexprs["BLOCK_V"], constexprs["BLOCK_D"], options["num_warps"],
                options["num_stages"]) == tiles


def test_self_check_problems_take_the_paths_a_run_takes():
    """On an H100 (132 SMs) in bf16: a GPU-preset update (N=163840, V=745) makes one vocabulary
    split, a few rows several; GPT-2's vocabulary comes in many dL/dW chunks."""
    BLOCK_N, BLOCK_V, _, _, _ = logprobs._triton_tiles(torch.bfloat16, on_gpu=True)
    (run, few) = logprobs._self_check_problems(163840, 512, 745)
    assert logprobs._vocabulary_splits(run[0], 745, BLOCK_N, BLOCK_V, 4 * 132)[1] == 1
    assert logprobs._vocabulary_splits(few[0], 745, BLOCK_N, BLOCK_V, 4 * 132)[1] > 1
    assert 50304 / logprobs._grad_weight_chunk(50304, 768, BLOCK_V, torch.bfloat16) > 10


class EnteredDevices:
    """Stands for torch.cuda.device: records the device each `with` makes current."""
    entered = []

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        EnteredDevices.entered.append(self.device)

    def __exit__(self, *exc):
        EnteredDevices.entered.pop()


def test_triton_launches_on_the_tensors_device(monkeypatch):
    """Triton launches on the current CUDA device, not on the tensors': every launch runs inside
    _launching_on(the tensors' device), which makes that device current on CUDA."""
    monkeypatch.setattr(torch.cuda, "device", EnteredDevices)
    with logprobs._launching_on(torch.device("cuda:1")):
        assert EnteredDevices.entered == [torch.device("cuda:1")]
    with logprobs._launching_on(torch.device("cpu")):  # (nothing to make current)
        assert EnteredDevices.entered == []

    launches = []  # the devices current at each launch
    monkeypatch.setattr(logprobs, "_launching_on", EnteredDevices)

    class RecordedKernel:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            launches.append(list(EnteredDevices.entered))
            return self.kernel[grid]
    for name in ("_logprobs_forward_kernel", "_logprobs_backward_kernel"):
        monkeypatch.setattr(logprobs, name, RecordedKernel(getattr(logprobs, name)))
    hidden, weight, targets, grad = logprob_problem(37, 24, 203, 1.0)
    hidden.requires_grad_()
    logprobs.fused_logprobs(hidden, weight, targets, backend="triton").backward(grad)
    assert launches == [[hidden.device], [hidden.device]]  # the forward's, the backward's


def score_tokens(x, proj, weight, targets):
    """A stand-in for GPT.token_logprobs: a layer, then fused_logprobs, then a reshape."""
    hidden = torch.tanh(x @ proj)
    return logprobs.fused_logprobs(hidden.reshape(-1, hidden.size(-1)), weight, targets.reshape(-1)).view(targets.shape)


@pytest.mark.parametrize("dynamic,most_graphs", [(None, 4), (True, 2)])
def test_compiled_caller_does_not_recompile_for_every_new_batch_shape(dynamic, most_graphs):
    """Under torch.compile, fused_logprobs is one opaque call between two graphs: a compiled
    caller fed six batch shapes (an RL step's N changes every step) compiles each graph once, or
    twice without dynamic=True (the second shape marks the sizes dynamic)."""
    import torch._dynamo
    torch._dynamo.reset()
    graphs = []

    def counting_backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward
    compiled = torch.compile(score_tokens, backend=counting_backend, dynamic=dynamic)
    gen = torch.Generator().manual_seed(0)
    proj, weight = torch.randn(16, 16, generator=gen), torch.randn(50, 16, generator=gen, requires_grad=True)
    for B, T in [(2, 5), (3, 7), (2, 9), (4, 11), (5, 6), (3, 13)]:
        x = torch.randn(B, T, 16, generator=gen, requires_grad=True)
        targets = torch.randint(0, 50, (B, T), generator=gen)
        logp = compiled(x, proj, weight, targets)
        assert torch.allclose(logp, score_tokens(x, proj, weight, targets))
        logp.sum().backward()
    assert len(graphs) <= most_graphs
