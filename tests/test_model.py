"""Tests of model.py: the GPT in GPT-2's form, from_pretrained on GPT-2, checkpoints' models, pack;
the Llama / Qwen forms have tests/test_model_families.py, the decoding caches tests/test_caches.py,
the fused log-prob kernel tests/test_logprobs.py."""
import pytest
import torch

import checkpoints
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
    checkpoint = checkpoints.load(str(path))
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
    loaded = model.GPT.from_checkpoint(checkpoints.load(str(tmp_path / "rope.pt"))).eval()
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


def test_configure_optimizers_fuses_adamw_for_any_cuda_device(monkeypatch):
    made = []
    monkeypatch.setattr(torch.optim, "AdamW", lambda groups, **kwargs: made.append(kwargs))
    gpt = tiny_gpt()
    for device, fused in (("cpu", False), ("cuda", True), ("cuda:0", True), (torch.device("cuda", 1), True)):
        gpt.configure_optimizers(0.1, 1e-3, (0.9, 0.95), device)
        assert made[-1]["fused"] is fused, device


def test_sequence_logprobs_share_prompts_and_chunk_by_width_without_changing_a_value():
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
    chunked = gpt.sequence_logprobs(prompts, completions, chunk_tokens=20)  # several chunks
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
