"""Tests of model.py: the GPT, its KV cache, from_pretrained, the shared helpers (pack, checkpoints,
device set-up); the fused log-prob kernel has tests/test_logprobs.py."""
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
