"""Tests of caches.py: a KV-cached decode of ragged, left-padded prompts, a cache's rows repeated,
and G samples decoding over their prompt's shared slots, each equal to the full forward of its
row alone (in GPT-2's form and in the rotary Llama / Qwen form)."""
import pytest
import torch

import caches
from test_model import ROTARY, tiny_gpt


def cached_logits(gpt, idx, cache, valid=None):
    """Logits of the last position of idx, which continues the cached rows."""
    return gpt.lm_head(gpt.hidden_states(idx, cache, valid))[:, -1]


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
    cache = caches.KVCache(gpt.config, len(rows), prompt_len + steps, "cpu")
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
        caches.KVCache(gpt.config, 2, 65, "cpu")
    caches.KVCache(gpt.config, 2, 64, "cpu")


@pytest.mark.parametrize("form", [{}, ROTARY])
def test_kv_cache_repeat_rows_matches_separate_prefills(form):
    gpt = tiny_gpt(**form)
    prompt = torch.randint(0, 97, (2, 7))
    with torch.no_grad():
        cache = caches.KVCache(gpt.config, 2, 10, "cpu")
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
        idx, valid, prefix = caches.left_padded(gpt, [p.tolist() for p in prompts], 0)
        first = cached_logits(gpt, idx, prefix, valid).repeat_interleave(G, 0)
        cache = caches.SharedPrefixCache(prefix, G, steps)
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
