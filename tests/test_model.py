"""Tests of model.py: the GPT, its KV cache, from_pretrained, the shared helpers (pack, checkpoints,
device set-up), and the fused log-prob kernel."""
import contextlib

import pytest
import torch

import model

# ----------------------------------------------------------------------------- GPT

def tiny_gpt(seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = dict(block_size=64, vocab_size=97, n_layer=2, n_head=4, n_embd=32, dropout=0.0, bias=True)
    cfg.update(overrides)
    return model.GPT(model.GPTConfig(**cfg)).eval()


def test_forward_shapes_and_loss():
    gpt = tiny_gpt()
    idx = torch.randint(0, 97, (3, 20))
    logits, loss = gpt(idx, targets=idx)
    assert logits.shape == (3, 20, 97)
    assert abs(loss.item() - torch.log(torch.tensor(97.0)).item()) < 0.5  # near uniform at init
    logits, loss = gpt(idx)
    assert logits.shape == (3, 1, 97) and loss is None
    ignored = idx.clone()
    ignored[:, :10] = -1  # ignore_index: the loss only counts the last 10 positions
    full_logits, _ = gpt(idx, targets=idx)
    expected = torch.nn.functional.cross_entropy(full_logits[:, 10:].reshape(-1, 97), idx[:, 10:].reshape(-1))
    assert torch.allclose(gpt(idx, targets=ignored)[1], expected, atol=1e-6)
    assert gpt.get_num_params() == sum(p.numel() for p in gpt.parameters()) - 64 * 32


@pytest.mark.parametrize("bias", [True, False])
def test_kv_cache_matches_full_forward_on_ragged_batch(bias):
    """Left-padded prompts of different lengths, prefilled at once, then 30 single-token steps:
    the logits of every step equal the full forward of that row alone (float32, 1e-5)."""
    gpt = tiny_gpt(bias=bias)
    torch.manual_seed(1)
    lengths = [5, 12, 1, 9]
    steps = 30
    rows = [torch.randint(0, 97, (n + steps,)) for n in lengths]
    prompt_len = max(lengths)
    prompt = torch.zeros(len(rows), prompt_len, dtype=torch.long)
    valid = torch.zeros(len(rows), prompt_len, dtype=torch.bool)
    for b, (row, n) in enumerate(zip(rows, lengths)):
        prompt[b, prompt_len - n:] = row[:n]
        valid[b, prompt_len - n:] = True
    cache = model.KVCache(gpt.config, len(rows), prompt_len + steps, "cpu")
    with torch.no_grad():
        step_logits = [gpt(prompt, cache=cache, valid=valid)[0][:, -1]]
        for s in range(steps - 1):
            token = torch.stack([row[n + s] for row, n in zip(rows, lengths)])
            step_logits.append(gpt(token[:, None], cache=cache)[0][:, -1])
        for b, (row, n) in enumerate(zip(rows, lengths)):
            full, _ = gpt(row[None, :n + steps - 1], targets=row[None, 1:n + steps])
            for s in range(steps):
                assert torch.allclose(step_logits[s][b], full[0, n - 1 + s], atol=1e-5), (b, s)


def test_kv_cache_longer_than_block_size_is_refused_when_made():
    """Positions are bounded once, on the host, when the cache is made (not read back from the
    device at every decoded token)."""
    gpt = tiny_gpt()
    with pytest.raises(ValueError, match="65 slots > block_size 64"):
        model.KVCache(gpt.config, 2, 65, "cpu")
    model.KVCache(gpt.config, 2, 64, "cpu")


def test_kv_cache_repeat_rows_matches_separate_prefills():
    gpt = tiny_gpt()
    prompt = torch.randint(0, 97, (2, 7))
    with torch.no_grad():
        cache = model.KVCache(gpt.config, 2, 10, "cpu")
        gpt(prompt, cache=cache)
        repeated = cache.repeat_rows(3)
        next_tokens = torch.randint(0, 97, (6, 1))
        logits, _ = gpt(next_tokens, cache=repeated)
        full, _ = gpt(torch.cat([prompt.repeat_interleave(3, 0), next_tokens], 1))
    assert torch.allclose(logits, full, atol=1e-5)


def test_token_logprobs_equal_log_softmax_of_forward():
    gpt = tiny_gpt()
    idx = torch.randint(0, 97, (2, 15))
    targets = torch.randint(0, 97, (2, 15))
    logits, _ = gpt(idx, targets=targets)
    for temperature in (1.0, 0.7):
        expected = torch.log_softmax(logits / temperature, -1).gather(-1, targets[..., None])[..., 0]
        got = gpt.token_logprobs(idx, targets, temperature)
        assert got.dtype == torch.float32 and torch.allclose(got, expected, atol=1e-5)


def test_flops_per_token_counts_what_a_training_step_multiplies():
    """The PaLM count behind estimate_mfu against torch's own count of a forward and backward
    (attention through SDPA's math backend, whose matmuls the counter sees; the rest of the
    difference is biases and LayerNorms, which the count treats as matmul weights)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode
    gpt = tiny_gpt(n_layer=3, n_embd=64, vocab_size=500).train()
    B, T = 4, 48
    idx = torch.randint(0, 500, (B, T))
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        gpt(idx, targets=idx)[1].backward()
    assert abs(gpt.flops_per_token(T) * B * T / counter.get_total_flops() - 1) < 0.02
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH), torch.no_grad():
        gpt(idx, targets=idx)
    assert abs(gpt.flops_per_token(T, backward=False) * B * T / counter.get_total_flops() - 1) < 0.02
    mfu = gpt.estimate_mfu(tokens=B * T, dt=0.5, seq_len=T, peak_flops=1e12)
    assert mfu == pytest.approx(gpt.flops_per_token(T) * B * T / 0.5 / 1e12)
    assert gpt.estimate_mfu(B * T, 0.5, peak_flops=1e12) > mfu  # (attention at block_size 64 > 48)
    assert model.peak_bf16_flops() is None or torch.cuda.is_available()


def test_sample_top_p_keeps_the_nucleus_only():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    draws = {model.sample(logits, top_p=0.7, generator=torch.Generator().manual_seed(s)).item() for s in range(200)}
    assert draws == {0, 1}
    draws = {model.sample(logits, top_k=1).item() for _ in range(20)}
    assert draws == {0}


def test_from_pretrained_matches_hugging_face_logits(tmp_path):
    import transformers
    torch.manual_seed(0)
    hf_config = transformers.GPT2Config(vocab_size=101, n_positions=32, n_embd=48, n_layer=2, n_head=4)
    hf_model = transformers.GPT2LMHeadModel(hf_config).eval()
    hf_model.save_pretrained(tmp_path)
    gpt = model.GPT.from_pretrained(str(tmp_path)).eval()
    idx = torch.randint(0, 101, (2, 20))
    with torch.no_grad():
        expected = hf_model(idx).logits
        got, _ = gpt(idx, targets=idx)
    assert torch.allclose(got, expected, atol=1e-4)
    assert gpt.config.block_size == 32  # the checkpoint's own context length


def test_from_pretrained_refuses_what_is_not_a_gpt2_checkpoint(tmp_path):
    import transformers
    with pytest.raises(ValueError, match=f"{tmp_path / 'missing'} is not a Hugging Face model directory"):
        model.GPT.from_pretrained(str(tmp_path / "missing"))
    (tmp_path / "bert").mkdir()
    transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match=f"{tmp_path / 'bert'} holds a 'bert' model"):
        model.GPT.from_pretrained(str(tmp_path / "bert"))
    (tmp_path / "no_weights").mkdir()
    transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2).save_pretrained(
        tmp_path / "no_weights")
    with pytest.raises(ValueError, match=f"{tmp_path / 'no_weights'}: could not load GPT-2 weights"):
        model.GPT.from_pretrained(str(tmp_path / "no_weights"))


def test_configure_optimizers_decays_matrices_only():
    gpt = tiny_gpt()
    opt = gpt.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and all(p.dim() >= 2 for p in decayed["params"])
    assert plain["weight_decay"] == 0.0 and all(p.dim() < 2 for p in plain["params"])

# ----------------------------------------------------------------------------- shared helpers

def test_pack_right_pads_and_masks_the_completion_targets():
    idx, targets, mask = model.pack([[5, 6, 7], [8]], [[1, 2], [3, 4, 9, 9]], pad_id=0)
    assert idx.tolist() == [[5, 6, 7, 1], [8, 3, 4, 9]]
    assert targets.tolist() == [[6, 7, 1, 2], [3, 4, 9, 9]]
    assert mask.tolist() == [[False, False, True, True], [True, True, True, True]]
    assert idx.device.type == "cpu" and idx.dtype == targets.dtype == torch.long and mask.dtype == torch.bool
    idx, targets, mask = model.pack([[5, 6]], [[]], pad_id=4)  # an empty completion selects nothing
    assert not mask.any()
    with pytest.raises(ValueError, match="empty prompt"):
        model.pack([[]], [[1]], pad_id=0)
    with pytest.raises(ValueError, match="as many prompts as completions"):
        model.pack([[1]], [[1], [2]], pad_id=0)


def test_sequence_logprobs_sum_the_completion_tokens_and_are_differentiable():
    gpt = tiny_gpt()
    prompts, completions = [[5, 6, 7], [8]], [[1, 2], [3, 4, 9, 9]]
    got = gpt.sequence_logprobs(prompts, completions, temperature=0.8)
    for r, (p, c) in enumerate(zip(prompts, completions)):
        row = torch.tensor([p + c])
        logits, _ = gpt(row[:, :-1], targets=row[:, 1:])
        logps = torch.log_softmax(logits[0] / 0.8, -1).gather(1, row[0, 1:, None])[:, 0]
        assert torch.allclose(got[r], logps[len(p) - 1:].sum(), atol=1e-5)
    assert got.dtype == torch.float32 and got.shape == (2,)
    got.sum().backward()
    assert gpt.lm_head.weight.grad is not None


def test_checkpoint_round_trip_and_compiled_model_names(tmp_path):
    gpt = tiny_gpt(seed=3)
    path = tmp_path / "sft.pt"
    state = {f"_orig_mod.{k}": v for k, v in gpt.state_dict().items()}  # as saved from torch.compile
    torch.save({"model": state, "model_args": dict(block_size=64, vocab_size=97, n_layer=2, n_head=4,
                                                   n_embd=32, dropout=0.0, bias=True), "step": 7}, path)
    checkpoint = model.load_checkpoint(str(path))
    loaded = model.GPT.from_checkpoint(checkpoint, "cpu")
    idx = torch.randint(0, 97, (2, 9))
    assert torch.equal(loaded(idx)[0], gpt(idx)[0]) and checkpoint["step"] == 7


def test_load_checkpoint_refuses_missing_random_and_foreign_files(tmp_path):
    with pytest.raises(ValueError, match="nope.pt: no such file"):
        model.load_checkpoint(str(tmp_path / "nope.pt"))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(ValueError, match="garbage.pt: not a readable checkpoint"):
        model.load_checkpoint(str(garbage))
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(ValueError, match="tensor.pt: a torch file, but not a checkpoint"):
        model.load_checkpoint(str(tensor))
    crafted = tmp_path / "crafted.pt"  # an arbitrary object: weights_only refuses to unpickle it
    torch.save({"model": {}, "model_args": {}, "rng": __import__("random").Random(0)}, crafted)
    with pytest.raises(ValueError, match="crafted.pt: not a readable checkpoint"):
        model.load_checkpoint(str(crafted))


def test_device_setup_decides_by_device_type(monkeypatch):
    device, autocast = model.device_setup("cpu")
    assert device == "cpu" and isinstance(autocast, contextlib.nullcontext)
    assert model.device_setup("auto")[0] == ("cuda" if torch.cuda.is_available() else "cpu")
    precision = torch.get_float32_matmul_precision()
    try:  # a GPU machine, as CPU-only torch can pretend: "cuda:0" is CUDA too
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
        device, autocast = model.device_setup("cuda:0")
        assert device == "cuda:0" and isinstance(autocast, torch.autocast)
        assert autocast.device == "cuda" and autocast.fast_dtype == torch.bfloat16
        assert torch.get_float32_matmul_precision() == "high"  # TF32 matmuls
        assert isinstance(model.device_setup("cuda:0", dtype="float32")[1], contextlib.nullcontext)
    finally:
        torch.set_float32_matmul_precision(precision)
    device, autocast = model.device_setup("cpu", dtype="bfloat16")  # reduced precision on a CPU
    assert isinstance(autocast, torch.autocast) and autocast.device == "cpu" and autocast.fast_dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype must be"):
        model.device_setup("cpu", dtype="float16")
    if not torch.cuda.is_available():
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        with pytest.raises(ValueError, match="no CUDA GPU"):
            model.device_setup("cuda")


def test_configure_optimizers_fuses_adamw_for_any_cuda_device(monkeypatch):
    made = []
    monkeypatch.setattr(torch.optim, "AdamW", lambda groups, **kwargs: made.append(kwargs))
    gpt = tiny_gpt()
    for device, fused in (("cpu", False), ("cuda", True), ("cuda:0", True), (torch.device("cuda", 1), True)):
        gpt.configure_optimizers(0.1, 1e-3, (0.9, 0.95), device)
        assert made[-1]["fused"] is fused, device


# ----------------------------------------------------------------------------- fused log-probs
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
    logp, entropy = model.fused_logprobs(hidden, weight, targets, temperature, backend=backend,
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
    monkeypatch.setattr(model, "_GRAD_WEIGHT_SCRATCH_FLOATS", 32 * 24)
    hidden, weight, targets, grad = logprob_problem(45, 24, 150, 3.0, dtype=dtype)
    hidden.requires_grad_()
    weight.requires_grad_()
    logp = model.fused_logprobs(hidden, weight, targets, 1.3, backend=backend)
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
    model.fused_logprobs(hidden, weight, targets, backend=backend).backward(grad)
    assert weight.grad is None
    assert rel_err(hidden.grad, reference_logprobs(hidden, weight, targets, 1.0, grad)[2]) <= 1e-4
    empty = model.fused_logprobs(hidden[:0], weight, targets[:0], backend=backend)
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
    monkeypatch.setattr(model._ChunkedLogprobs, "chunk_sizes", staticmethod(lambda device: (256, 512)))
    N, d, V = 1000, 8, 1500
    hidden, weight, targets, grad = logprob_problem(N, d, V, 1.0)
    hidden.requires_grad_()
    weight.requires_grad_()
    with LargestTensor() as naive:  # the recorder does see the N x V logits of the direct way
        torch.log_softmax(hidden @ weight.T, -1).gather(1, targets[:, None]).squeeze(1).backward(grad)
    assert naive.nbytes >= 4 * N * V
    with LargestTensor() as fused:
        model.fused_logprobs(hidden, weight, targets, backend="torch").backward(grad)
    assert fused.nbytes < N * V  # a quarter of the float32 logits


def test_fused_logprobs_refuse_bad_input():
    hidden, weight, targets, _ = logprob_problem(10, 8, 30, 1.0)
    with pytest.raises(ValueError, match=r"hidden \(N, d\) and weight \(V, d\)"):
        model.fused_logprobs(hidden[None], weight, targets)
    with pytest.raises(ValueError, match=r"hidden \(N, d\) and weight \(V, d\)"):
        model.fused_logprobs(hidden, weight[:, :5], targets)
    with pytest.raises(ValueError, match="integer token ids"):
        model.fused_logprobs(hidden, weight, targets.float())
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 30\)"):
        model.fused_logprobs(hidden, weight, torch.full_like(targets, 30))
    with pytest.raises(ValueError, match="temperature"):
        model.fused_logprobs(hidden, weight, targets, temperature=0.0)
    with pytest.raises(ValueError, match="backend"):
        model.fused_logprobs(hidden, weight, targets, backend="cuda")


def test_fused_logprobs_triton_on_cpu_without_interpreter_says_what_to_do(monkeypatch):
    monkeypatch.setattr(model, "_TRITON_INTERPRET", False)
    hidden, weight, targets, _ = logprob_problem(10, 8, 30, 1.0)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        model.fused_logprobs(hidden.cpu(), weight.cpu(), targets.cpu(), backend="triton")


@pytest.fixture
def self_check_on_cpu(monkeypatch):
    """The first-use check, as on a GPU, on this machine's interpreted kernels (a small problem
    spanning several interpreter tiles)."""
    monkeypatch.setattr(model, "SELF_CHECKED_DEVICES", ("cuda", "cpu"))
    monkeypatch.setattr(model, "SELF_CHECK_SHAPE", (40, 24, 100))
    monkeypatch.setattr(model, "_triton_verdicts", {})
    calls = []
    forward = model._TritonLogprobs.forward

    def counted_forward(*args):
        calls.append(1)
        return forward(*args)

    monkeypatch.setattr(model._TritonLogprobs, "forward", staticmethod(counted_forward))
    return calls


@pytest.mark.parametrize("wrong", ["logp", "grad_weight", "crash", None])
def test_triton_first_use_self_check_falls_back_to_torch(self_check_on_cpu, monkeypatch, wrong):
    if wrong == "logp":  # a kernel whose log-probs are off by 0.3 nats
        forward = model._TritonLogprobs.forward
        monkeypatch.setattr(model._TritonLogprobs, "forward",
                            staticmethod(lambda *args: (lambda out: (out[0] + 0.3, out[1]))(forward(*args))))
    elif wrong == "grad_weight":  # a backward that loses a quarter of dL/dW (as a missed tile would)
        backward = model._TritonLogprobs.backward
        monkeypatch.setattr(model._TritonLogprobs, "backward", staticmethod(
            lambda ctx, *grads: (lambda g: (g[0], g[1] * 0.75) + g[2:])(backward(ctx, *grads))))
    elif wrong == "crash":
        monkeypatch.setattr(model, "_logprobs_forward_kernel", None)  # "not subscriptable": it cannot launch
    hidden, weight, targets, grad = logprob_problem(37, 24, 203, 1.0)
    hidden.requires_grad_()
    if wrong:
        with pytest.warns(RuntimeWarning, match="disagrees with the torch path"):
            logp = model.fused_logprobs(hidden, weight, targets, backend="triton")
    else:
        logp = model.fused_logprobs(hidden, weight, targets, backend="triton")
    calls_after_check = len(self_check_on_cpu)
    assert calls_after_check >= 1  # the check ran the kernel once
    logp.backward(grad)
    ref_logp, _, ref_dh, _ = reference_logprobs(hidden, weight, targets, 1.0, grad)
    assert rel_err(logp, ref_logp) <= 1e-4 and rel_err(hidden.grad, ref_dh) <= 1e-4  # right either way
    model.fused_logprobs(hidden, weight, targets, backend="triton")  # no second check, no second warning
    assert list(model._triton_verdicts.values()) == [wrong is None]
    # after a failed check the kernel never runs again; after a passed one it serves every call
    assert len(self_check_on_cpu) == (calls_after_check if wrong else calls_after_check + 1)
