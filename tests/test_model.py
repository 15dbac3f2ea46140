"""Tests of model.py: the GPT in GPT-2's form, its KV cache, from_pretrained on GPT-2, the shared
helpers (pack, checkpoints, device set-up); the Llama / Qwen forms have tests/test_model_families.py,
the fused log-prob kernel tests/test_logprobs.py."""
import contextlib
import os

import pytest
import torch

import model

# ----------------------------------------------------------------------------- GPT

def tiny_gpt(seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = dict(block_size=64, vocab_size=97, n_layer=2, n_head=4, n_embd=32, dropout=0.0, bias=True)
    cfg.update(overrides)
    return model.GPT(model.GPTConfig(**cfg)).eval()


# the Llama / Qwen form from scratch: rotary positions, RMSNorm, SwiGLU, grouped-query attention, QK-norm
ROTARY = dict(norm="rmsnorm", position="rope", mlp="swiglu", n_kv_head=2, head_dim=12, qk_norm=True,
              qkv_bias=True, bias=False, intermediate_size=40, tie_word_embeddings=False)


def cached_logits(gpt, idx, cache, valid=None):
    """Logits of the last position of idx, which continues the cached rows."""
    return gpt.lm_head(gpt.hidden_states(idx, cache, valid))[:, -1]


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


@pytest.mark.parametrize("form", [dict(bias=True), dict(bias=False), ROTARY])
def test_kv_cache_matches_full_forward_on_ragged_batch(form):
    """Left-padded prompts of different lengths, prefilled at once, then 30 single-token steps:
    the logits of every step equal the full forward of that row alone (float32, 1e-5). With
    rotary positions, each row's positions count from its own first token."""
    gpt = tiny_gpt(**form)
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
        step_logits = [cached_logits(gpt, prompt, cache, valid)]
        for s in range(steps - 1):
            token = torch.stack([row[n + s] for row, n in zip(rows, lengths)])
            step_logits.append(cached_logits(gpt, token[:, None], cache))
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


@pytest.mark.parametrize("form", [{}, ROTARY])
def test_kv_cache_repeat_rows_matches_separate_prefills(form):
    gpt = tiny_gpt(**form)
    prompt = torch.randint(0, 97, (2, 7))
    with torch.no_grad():
        cache = model.KVCache(gpt.config, 2, 10, "cpu")
        gpt.hidden_states(prompt, cache)
        repeated = cache.repeat_rows(3)
        next_tokens = torch.randint(0, 97, (6, 1))
        logits = cached_logits(gpt, next_tokens, repeated)
        full, _ = gpt(torch.cat([prompt.repeat_interleave(3, 0), next_tokens], 1))
    assert torch.allclose(logits, full[:, -1], atol=1e-5)


@pytest.mark.parametrize("form", [dict(bias=True), ROTARY])
def test_shared_prefix_cache_decodes_each_sample_as_its_full_forward(form):
    """Ragged prompts prefilled once, G=3 samples of each decoding their own tokens over the
    shared prompt slots, samples leaving the batch on the way (with rows of every prompt gone):
    every sample's logits at every step equal the full forward of its prompt and tokens alone."""
    gpt, G, steps = tiny_gpt(**form), 3, 12
    torch.manual_seed(2)
    lengths = [5, 11, 1]
    prompts = [torch.randint(0, 97, (n,)) for n in lengths]
    tokens = torch.randint(0, 97, (len(prompts) * G, steps))
    leave_after = {4: [0, 4, 5], 8: [1, 7]}  # step -> samples (b * G + g) that leave after it
    with torch.no_grad():
        idx, valid, prefix = model.left_padded(gpt, [p.tolist() for p in prompts], 0)
        first = cached_logits(gpt, idx, prefix, valid).repeat_interleave(G, 0)
        cache = model.SharedPrefixCache(prefix, G, steps)
        live, logits = torch.arange(len(prompts) * G), {}
        for s in range(steps):
            for r, row in zip(live.tolist(), cached_logits(gpt, tokens[live, s, None], cache)):
                logits[r, s] = row
            if s in leave_after:
                keep = ~torch.isin(live, torch.tensor(leave_after[s]))
                live, cache = live[keep], cache.select_rows(keep)
        for (r, s), got in logits.items():
            full, _ = gpt(torch.cat([prompts[r // G], tokens[r, :s + 1]])[None])
            assert torch.allclose(got, full[0, -1], atol=1e-5), (r, s)
        for r in range(len(prompts) * G):
            full, _ = gpt(prompts[r // G][None])
            assert torch.allclose(first[r], full[0, -1], atol=1e-5)


def test_token_logprobs_equal_log_softmax_of_forward():
    gpt = tiny_gpt()
    idx = torch.randint(0, 97, (2, 15))
    targets = torch.randint(0, 97, (2, 15))
    logits, _ = gpt(idx, targets=targets)
    for temperature in (1.0, 0.7):
        expected = torch.log_softmax(logits / temperature, -1).gather(-1, targets[..., None])[..., 0]
        got = gpt.token_logprobs(idx, targets, temperature)
        assert got.dtype == torch.float32 and torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("form", [{}, ROTARY])
def test_flops_per_token_counts_what_a_training_step_multiplies(form):
    """The PaLM count behind estimate_mfu against torch's own count of a forward and backward
    (attention through SDPA's math backend, whose matmuls the counter sees; the rest of the
    difference is biases and norms, which the count treats as matmul weights). In the rotary
    form the token embedding is a lookup (its head is its own matrix) and attention runs over
    every query head, however few key and value heads there are."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode
    gpt = tiny_gpt(n_layer=3, n_embd=64, vocab_size=500, **form).train()
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


@pytest.mark.parametrize("variant", [{}, dict(n_inner=80, layer_norm_epsilon=1e-6, tie_word_embeddings=False)])
def test_from_pretrained_matches_hugging_face_logits(tmp_path, variant):
    """GPT-2, and a variant with another MLP width, LayerNorm epsilon and an untied head."""
    import transformers
    torch.manual_seed(0)
    hf_config = transformers.GPT2Config(vocab_size=101, n_positions=32, n_embd=48, n_layer=2, n_head=4, **variant)
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
    with pytest.raises(ValueError, match=f"{tmp_path / 'bert'} holds a 'bert' model; .* loads the gpt2, llama"):
        model.GPT.from_pretrained(str(tmp_path / "bert"))
    (tmp_path / "no_weights").mkdir()
    transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2).save_pretrained(
        tmp_path / "no_weights")
    with pytest.raises(ValueError, match=f"{tmp_path / 'no_weights'}: could not load its weights"):
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


def test_a_rotary_model_round_trips_through_a_checkpoint_of_plain_data(tmp_path):
    """model_args is vars(config): plain data that torch.load(weights_only=True) reads back, and
    the GPT it rebuilds computes what the saved one did (its rotary table is derived, not saved)."""
    gpt = tiny_gpt(seed=4, **ROTARY)
    args = vars(gpt.config)
    assert all(isinstance(v, (int, float, str, bool)) for v in args.values()), args
    assert not any("rotary" in k for k in gpt.state_dict())
    torch.save({"model": gpt.state_dict(), "model_args": args}, tmp_path / "rope.pt")
    loaded = model.GPT.from_checkpoint(model.load_checkpoint(str(tmp_path / "rope.pt"))).eval()
    idx = torch.randint(0, 97, (2, 9))
    assert loaded.config == gpt.config and torch.equal(loaded(idx)[0], gpt(idx)[0])


def test_config_resolves_its_defaults_and_refuses_what_it_cannot_build():
    config = model.GPTConfig(n_embd=64, n_head=4)
    assert (config.head_dim, config.n_kv_head, config.intermediate_size) == (16, 4, 256)
    for bad, match in [(dict(norm="batchnorm"), "norm must be one of"), (dict(position="alibi"), "position"),
                       (dict(mlp="relu"), "mlp"), (dict(n_kv_head=3), "not a multiple of n_kv_head=3"),
                       (dict(n_embd=66), "not a multiple of n_head"),
                       (dict(position="rope", head_dim=15), "head_dim=15 must be even")]:
        with pytest.raises(ValueError, match=match):
            model.GPTConfig(**{**dict(n_embd=64, n_head=4), **bad})


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
    if not model.nvidia_smi_gpus():
        assert model.device_setup("auto")[0] == ("cuda" if torch.cuda.is_available() else "cpu")
    precision = torch.get_float32_matmul_precision()
    try:  # a GPU machine, as CPU-only torch can pretend: "cuda:0" is CUDA too
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
        monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
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
    if not torch.cuda.is_available() and not model.nvidia_smi_gpus():
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        with pytest.raises(ValueError, match="no CUDA GPU"):
            model.device_setup("cuda")


def test_device_setup_makes_a_numbered_gpu_the_current_one(monkeypatch):
    """Triton launches its kernels on the current CUDA device, whatever device the tensors are on:
    --device=cuda:1 must make GPU 1 current, or the log-prob kernel reads another GPU's memory."""
    made_current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", made_current.append)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    precision = torch.get_float32_matmul_precision()
    try:
        model.device_setup("cuda:1")
        assert made_current == [torch.device("cuda", 1)]
        model.device_setup("cuda")  # no index: the current device stays (torchrun's rank sets its own)
        assert made_current == [torch.device("cuda", 1)]
    finally:
        torch.set_float32_matmul_precision(precision)


def fake_nvidia_smi(tmp_path, monkeypatch, output, exit_code=0):
    """An nvidia-smi first on PATH that prints output (whatever its arguments) and exits with exit_code."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "nvidia-smi"
    script.write_text(f"#!/bin/sh\ncat <<'END'\n{output}END\nexit {exit_code}\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_a_gpu_that_torch_cannot_use_stops_the_run_instead_of_a_quiet_cpu_one(tmp_path, monkeypatch):
    """PyPI's torch 2.13.0 is a CUDA 13 build: on an older driver torch sees no GPU, and "auto"
    would train the CPU preset on the CPU of a GPU machine. nvidia-smi tells."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    fake_nvidia_smi(tmp_path, monkeypatch, "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0b1c)\n")
    assert model.nvidia_smi_gpus() == ["GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0b1c)"]
    for device in ("auto", "cuda", "cuda:1"):
        with pytest.raises(ValueError) as error:
            model.device_setup(device)
        message = str(error.value)
        assert "nvidia-smi lists 1 GPU(s) (GPU 0: NVIDIA H100" in message and torch.__version__ in message
        assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126" in message
        assert "--device=cpu" in message
    assert model.device_setup("cpu")[0] == "cpu"  # the CPU, asked for deliberately
    # nvidia-smi present but no GPU to talk to (no driver loaded): nothing to say, the CPU it is
    fake_nvidia_smi(tmp_path, monkeypatch, "NVIDIA-SMI has failed because it couldn't communicate with "
                                           "the NVIDIA driver.\n", exit_code=9)
    assert model.nvidia_smi_gpus() == [] and model.device_setup("auto")[0] == "cpu"


def test_configure_optimizers_fuses_adamw_for_any_cuda_device(monkeypatch):
    made = []
    monkeypatch.setattr(torch.optim, "AdamW", lambda groups, **kwargs: made.append(kwargs))
    gpt = tiny_gpt()
    for device, fused in (("cpu", False), ("cuda", True), ("cuda:0", True), (torch.device("cuda", 1), True)):
        gpt.configure_optimizers(0.1, 1e-3, (0.9, 0.95), device)
        assert made[-1]["fused"] is fused, device


def test_sequence_logprobs_share_prompts_and_chunk_by_width_without_changing_a_value(monkeypatch):
    """Pairs that follow one another with one prompt (an IR group) share its forward, and runs of
    about the same width go through in chunks: every summed log-prob (and its gradient) equals
    that of the pairs padded together and run whole."""
    torch.manual_seed(0)
    gpt = model.GPT(model.GPTConfig(block_size=64, vocab_size=40, n_layer=2, n_head=2, n_embd=32))
    gen = torch.Generator().manual_seed(1)
    ids = lambda n: torch.randint(0, 40, (n,), generator=gen).tolist()
    prompts, completions = [], []
    for prompt_len, sizes in ((5, (3, 9, 2)), (9, (14,)), (2, (1, 6)), (5, (4, 4))):  # the last prompt recurs
        prompt = ids(prompt_len) if prompt_len != 5 or not prompts else prompts[0]
        for size in sizes:
            prompts.append(prompt)
            completions.append(ids(size))
    monkeypatch.setattr(model, "SEQUENCE_CHUNK_TOKENS", 20)  # several chunks
    chunked = gpt.sequence_logprobs(prompts, completions)
    (chunked * torch.arange(1.0, len(prompts) + 1)).sum().backward()
    grads = [p.grad.clone() for p in gpt.parameters()]
    gpt.zero_grad()
    idx, targets, mask = model.pack(prompts, completions, pad_id=0)
    whole = torch.where(mask, gpt.token_logprobs(idx, targets), 0.0).sum(1)
    (whole * torch.arange(1.0, len(prompts) + 1)).sum().backward()
    assert torch.allclose(chunked, whole, atol=1e-5)
    assert all(torch.allclose(g, p.grad, atol=1e-5) for g, p in zip(grads, gpt.parameters()))


def test_sequence_logprobs_never_pads_a_chunk_past_the_block_size():
    """Every pair fits the block, but the longest prompt padded with the longest completion of
    another pair would not: such runs go into chunks of their own, and the values are those of
    each pair run alone."""
    torch.manual_seed(0)
    gpt = model.GPT(model.GPTConfig(block_size=32, vocab_size=40, n_layer=2, n_head=2, n_embd=32))
    gen = torch.Generator().manual_seed(2)
    ids = lambda n: torch.randint(0, 40, (n,), generator=gen).tolist()
    prompts = [ids(24), ids(24), ids(4), ids(4)]
    completions = [ids(8), ids(6), ids(28), ids(3)]  # 24 + 8 and 4 + 28 fit 32; 24 + 28 would not
    together = gpt.sequence_logprobs(prompts, completions)
    alone = torch.cat([gpt.sequence_logprobs([p], [c]) for p, c in zip(prompts, completions)])
    assert torch.allclose(together, alone, atol=1e-5)
