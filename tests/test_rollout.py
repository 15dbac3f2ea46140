"""Tests of rollout.py: shapes, stopping, seeding, KV-cached log-probs that equal the training
forward's (float32), the cache in the autocast dtype, and no host reads on most decoded tokens."""
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import rollout as rollout_module

import model
from rollout import rollout

EOT = 3


def tiny_gpt():
    torch.manual_seed(0)
    cfg = model.GPTConfig(block_size=64, vocab_size=11, n_layer=2, n_head=2, n_embd=16, bias=False)
    return model.GPT(cfg).eval()


def prompts():
    return [[1, 5, 7, 2, 9], [4, 4], [8, 1, 2, 6, 6, 5, 10, 0]]


def test_rollout_logprobs_equal_training_forward_logprobs():
    gpt = tiny_gpt()
    out = rollout(gpt, prompts(), group_size=4, max_new_tokens=20, eot_id=EOT,
                  generator=torch.Generator().manual_seed(0))
    idx, targets, mask = out.sequences(pad_id=0)
    with torch.no_grad():
        train_logp = gpt.token_logprobs(idx, targets)
    assert mask.sum() == out.mask.sum()
    assert torch.allclose(train_logp[mask], out.logprobs[out.mask], atol=1e-5)
    # the masked training targets are exactly the sampled completion tokens
    assert torch.equal(targets[mask], out.completions[out.mask])


def test_rollout_temperature_logprobs_match_the_forward_at_that_temperature():
    gpt = tiny_gpt()
    out = rollout(gpt, prompts(), group_size=2, max_new_tokens=12, eot_id=EOT, temperature=0.7,
                  top_k=5, generator=torch.Generator().manual_seed(1))
    idx, targets, mask = out.sequences(pad_id=0)
    with torch.no_grad():
        train_logp = gpt.token_logprobs(idx, targets, temperature=0.7)
    assert torch.allclose(train_logp[mask], out.logprobs[out.mask], atol=1e-5)


def test_rows_stop_at_end_of_text_and_truncation_is_flagged():
    gpt = tiny_gpt()
    out = rollout(gpt, prompts(), group_size=5, max_new_tokens=15, eot_id=EOT,
                  generator=torch.Generator().manual_seed(2))
    assert out.completions.shape == (15, 15)
    for r in range(15):
        n = int(out.mask[r].sum())
        assert out.mask[r, :n].all() and not out.mask[r, n:].any()  # a prefix
        tokens = out.completions[r, :n].tolist()
        if out.truncated[r]:
            assert EOT not in tokens and n == 15
        else:
            assert tokens[-1] == EOT and EOT not in tokens[:-1]
            assert out.completion_ids(r) == tokens[:-1]


def test_rollout_is_seeded():
    gpt = tiny_gpt()
    runs = [rollout(gpt, prompts(), 3, 10, EOT, generator=torch.Generator().manual_seed(5)) for _ in range(2)]
    assert torch.equal(runs[0].completions, runs[1].completions)
    other = rollout(gpt, prompts(), 3, 10, EOT, generator=torch.Generator().manual_seed(6))
    assert not torch.equal(runs[0].completions, other.completions)


def test_greedy_rollout_equals_argmax_of_full_forwards():
    """Temperature 0 through the KV cache picks what the plain forward of the whole sequence picks."""
    gpt = tiny_gpt()
    out = rollout(gpt, [[1, 5, 7], [2]], group_size=1, max_new_tokens=10, eot_id=EOT, temperature=0.0)
    for row, prompt in enumerate([[1, 5, 7], [2]]):
        seq = torch.tensor([prompt])
        with torch.no_grad():
            for _ in range(int(out.mask[row].sum())):
                logits, _ = gpt(seq)
                seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], 1)
        assert out.completions[row, :seq.size(1) - len(prompt)].tolist() == seq[0, len(prompt):].tolist()


def test_kv_cache_is_allocated_in_the_autocast_dtype(monkeypatch):
    """Under bf16 autocast keys and values come out of c_attn in bf16: a float32 cache would be
    cast back to bf16, whole, in every layer at every step."""
    caches = []

    class RecordedCache(model.KVCache):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            caches.append(self)

    monkeypatch.setattr(rollout_module, "KVCache", RecordedCache)
    gpt = tiny_gpt()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = rollout(gpt, prompts(), group_size=2, max_new_tokens=12, eot_id=EOT,
                      generator=torch.Generator().manual_seed(3))
    assert caches and all(c.k.dtype == c.v.dtype == torch.bfloat16 for c in caches)
    idx, targets, mask = out.sequences(pad_id=0)
    with torch.no_grad():  # the float32 training forward: close, not equal (see rollout's docstring)
        train_logp = gpt.token_logprobs(idx, targets)
    assert (train_logp[mask] - out.logprobs[out.mask]).abs().max() < 0.1
    rollout(gpt, prompts(), group_size=2, max_new_tokens=4, eot_id=EOT)
    assert caches[-1].k.dtype == torch.float32  # without autocast: the weights' dtype


class HostReads(TorchDispatchMode):
    """Counts the reads of a tensor value on the host (.item(), bool(), int(): all dispatch to
    aten._local_scalar_dense), each of which makes a GPU wait for the work in flight."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func is torch.ops.aten._local_scalar_dense.default
        return func(*args, **(kwargs or {}))


def test_decoding_reads_the_host_only_every_few_tokens():
    gpt = tiny_gpt()
    never = 10  # an end-of-text id the model may sample; rows end at different steps
    for top_k, top_p in ((None, None), (5, 0.9)):
        with HostReads() as reads:
            out = rollout(gpt, prompts(), group_size=3, max_new_tokens=40, eot_id=never,
                          top_k=top_k, top_p=top_p, generator=torch.Generator().manual_seed(4))
        steps = int(out.mask.sum(1).max())
        assert reads.count <= steps // rollout_module.ALL_DONE_CHECK_EVERY + 1, (reads.count, steps)
