"""Tests of rollout.py: shapes, stopping, seeding, sampling, a KV-cached decode that samples from
the log-probs the training forward computes (float32; and under bf16 autocast, with the LM head as
the fused kernel computes it), the cache in the autocast dtype, no host reads on most decoded
tokens and host transfers that do not grow with the number of rows."""
import random

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import rollout as rollout_module

import caches
import model
from rollout import rollout, sample

EOT = 3


def tiny_gpt(**form):
    torch.manual_seed(0)
    cfg = model.GPTConfig(**{**dict(block_size=64, vocab_size=11, n_layer=2, n_head=2, n_embd=16, bias=False), **form})
    return model.GPT(cfg).eval()


ROTARY = dict(norm="rmsnorm", position="rope", mlp="swiglu", n_head=4, n_kv_head=2, qk_norm=True, qkv_bias=True,
              tie_word_embeddings=False)


def sequences(out):
    """The rollout's prompt + completion rows, right-padded, as the padded training forward reads
    them: (idx, targets, mask), token_logprobs(idx, targets)[mask] the sampled tokens' log-probs."""
    completions = out.completion_lists(with_eot=True)
    return model.pack([out.prompts[r // out.group_size] for r in range(len(completions))], completions, pad_id=0)


def prompts():
    return [[1, 5, 7, 2, 9], [4, 4], [8, 1, 2, 6, 6, 5, 10, 0]]


def sampled_logprobs(monkeypatch, *args, temperature=1.0, **kwargs):
    """rollout(*args, **kwargs) and the log-probs at `temperature` of every sampled token under the
    logits the sampler was given, (rows, max_new_tokens), 0 after a row's end."""
    drawn = []

    def recording_sample(logits, temperature_, top_k, top_p, generator, rows, n_rows):
        token = sample(logits, temperature_, top_k, top_p, generator, rows, n_rows)
        full = torch.zeros(n_rows)  # (rows that have ended leave the batch)
        full[rows] = torch.log_softmax(logits / temperature, -1).gather(1, token[:, None])[:, 0]
        drawn.append(full)
        return token

    monkeypatch.setattr(rollout_module, "sample", recording_sample)
    out = rollout(*args, temperature=temperature, **kwargs)
    logp = torch.zeros(out.mask.shape)
    logp[:, :len(drawn)] = torch.stack(drawn, 1)
    return out, torch.where(out.mask, logp, 0.0)


@pytest.mark.parametrize("form", [{}, ROTARY])
def test_rollout_samples_from_the_training_forwards_logprobs(monkeypatch, form):
    """The KV-cached decode of ragged prompts (left-padded; rotary positions counted per row)
    draws each token from the log-probs the training forward gives it."""
    gpt = tiny_gpt(**form)
    out, logp = sampled_logprobs(monkeypatch, gpt, prompts(), group_size=4, max_new_tokens=20, eot_id=EOT,
                                 generator=torch.Generator().manual_seed(0))
    idx, targets, mask = sequences(out)
    with torch.no_grad():
        train_logp = gpt.token_logprobs(idx, targets)
    assert mask.sum() == out.mask.sum()
    assert torch.allclose(train_logp[mask], logp[out.mask], atol=1e-5)
    # the masked training targets are exactly the sampled completion tokens
    assert torch.equal(targets[mask], out.completions[out.mask])


def test_rollout_temperature_logprobs_match_the_forward_at_that_temperature(monkeypatch):
    gpt = tiny_gpt()
    out, logp = sampled_logprobs(monkeypatch, gpt, prompts(), group_size=2, max_new_tokens=12, eot_id=EOT,
                                 temperature=0.7, top_k=5, generator=torch.Generator().manual_seed(1))
    idx, targets, mask = sequences(out)
    with torch.no_grad():
        train_logp = gpt.token_logprobs(idx, targets, temperature=0.7)
    assert torch.allclose(train_logp[mask], logp[out.mask], atol=1e-5)


def test_under_bf16_autocast_the_rollout_samples_from_the_kernels_head(monkeypatch):
    """Under bf16 autocast the training forward's log-probs come from the fused kernel: bf16 inputs,
    float32 products. A decode whose LM head rounds its logits to bf16 samples from another policy
    (off by up to ~1e-2 nats here, with a head as sharp as a trained model's); one whose head
    computes as the kernel does differs only by the blocks' own rounding."""
    gpt = tiny_gpt()
    with torch.no_grad():
        gpt.lm_head.weight.mul_(10)  # logits of a few nats, as a trained model gives
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, logp = sampled_logprobs(monkeypatch, gpt, prompts(), group_size=4, max_new_tokens=30, eot_id=EOT,
                                     generator=torch.Generator().manual_seed(3))
        idx, targets, mask = sequences(out)
        with torch.no_grad():
            train_logp = gpt.token_logprobs(idx, targets)
    difference = (train_logp[mask] - logp[out.mask]).abs()
    assert difference.max() < 2e-3 and difference.mean() < 1e-4, (difference.max(), difference.mean())


def test_sample_top_p_keeps_the_nucleus_only():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    draws = {sample(logits, top_p=0.7, generator=torch.Generator().manual_seed(s)).item() for s in range(200)}
    assert draws == {0, 1}
    draws = {sample(logits, top_k=1).item() for _ in range(20)}
    assert draws == {0}


def test_sample_draws_each_token_with_its_probability_and_never_an_impossible_one():
    probs = torch.tensor([0.0, 0.5, 0.3, 0.0, 0.15, 0.05, 0.0])
    for temperature in (1.0, 0.5):
        expected = probs ** (1 / temperature) / (probs ** (1 / temperature)).sum()
        draws = sample(torch.log(probs).expand(40000, -1), temperature, generator=torch.Generator().manual_seed(0))
        frequency = torch.bincount(draws, minlength=len(probs)) / len(draws)
        assert frequency[probs == 0].sum() == 0
        assert (frequency - expected).abs().max() < 0.012, (frequency, expected)  # ~4.8 standard errors


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
            assert out.completion_lists()[r] == tokens[:-1]
        assert out.completion_lists(with_eot=True)[r] == tokens


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
    made = []

    class RecordedCache(caches.KVCache):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(caches, "KVCache", RecordedCache)
    gpt = tiny_gpt()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rollout(gpt, prompts(), group_size=2, max_new_tokens=12, eot_id=EOT, generator=torch.Generator().manual_seed(3))
    assert made and all(k.dtype == v.dtype == torch.bfloat16 for c in made for k, v in zip(c.k, c.v))
    rollout(gpt, prompts(), group_size=2, max_new_tokens=4, eot_id=EOT)
    assert made[-1].k[0].dtype == torch.float32  # without autocast: the weights' dtype


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


class HostTransfers(TorchFunctionMode):
    """Counts the calls that copy between host and device: tensors made from Python data on a
    device, .to(), .cpu(), .tolist(), .item() and bool() (on a GPU each is a copy and a wait)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += (func in (torch.Tensor.to, torch.Tensor.cpu, torch.Tensor.tolist, torch.Tensor.item,
                                torch.Tensor.__bool__)
                       or func is torch.tensor and (kwargs or {}).get("device") is not None)
        return func(*args, **(kwargs or {}))


def test_host_transfers_do_not_grow_with_the_number_of_rows():
    """Prompts go to the device at once, and the completions (with their lengths) come back in one
    transfer for decoding and one for the training rows: never one per prompt or per row."""
    gpt = tiny_gpt()
    counts = []
    for batch in (prompts()[:1], prompts() * 4):
        with HostTransfers() as decoding:
            out = rollout(gpt, batch, group_size=3, max_new_tokens=6, eot_id=EOT,
                          generator=torch.Generator().manual_seed(7))
        with HostTransfers() as reading:
            out.completion_lists()
        with HostTransfers() as packing:
            sequences(out)
        counts.append((decoding.count, reading.count, packing.count))
    assert counts[0] == counts[1] and counts[0][1] == 1, counts


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_completion_logprobs_equal_the_padded_training_forward(dtype):
    """The training forward of a rollout runs each prompt once and shares its keys and values with
    its G completions: the same log-probs, and the same gradients, as every prompt + completion row
    padded to the longest and run whole (model.pack, token_logprobs), for ragged prompts."""
    torch.manual_seed(0)
    gen = random.Random(0)
    gpt = model.GPT(model.GPTConfig(block_size=64, vocab_size=50, n_layer=2, n_head=2, n_embd=32))
    G = 3
    prompts = [[gen.randrange(50) for _ in range(gen.randint(1, 12))] for _ in range(4)]
    completions = [[gen.randrange(50) for _ in range(gen.randint(1, 9))] for _ in range(len(prompts) * G)]
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16")
    with autocast:
        logp, mask = gpt.completion_logprobs(prompts, completions, G)
    assert mask.sum(1).tolist() == [len(c) for c in completions]
    shared = logp[mask]
    shared.sum().backward()
    grads = [p.grad.clone() for p in gpt.parameters()]
    gpt.zero_grad()
    idx, targets, padded_mask = model.pack([prompts[r // G] for r in range(len(completions))], completions, pad_id=0)
    with autocast:
        padded = gpt.token_logprobs(idx, targets)[padded_mask]
    padded.sum().backward()
    tolerance = 1e-5 if dtype == "float32" else 5e-2  # (bf16: attention over other shapes rounds otherwise)
    assert torch.allclose(shared, padded, atol=tolerance)
    for g, p in zip(grads, gpt.parameters()):
        assert torch.allclose(g, p.grad, atol=tolerance * 10, rtol=tolerance * 10)


def test_rows_that_end_leave_the_batch_without_changing_any_sample(monkeypatch):
    """Every few tokens the rows that have ended leave the decoding batch; each row still draws the
    random numbers it would draw in the whole batch, so the rollout is the one of a batch that
    decodes every row to the end (checked with the check period set past max_new_tokens)."""
    gpt = tiny_gpt()
    run = lambda: rollout(gpt, prompts(), group_size=6, max_new_tokens=40, eot_id=EOT, temperature=1.5,
                          generator=torch.Generator().manual_seed(1))
    compacted = run()
    lengths = compacted.mask.sum(1)
    assert lengths.min() < rollout_module.ALL_DONE_CHECK_EVERY < lengths.max()  # rows did leave early
    monkeypatch.setattr(rollout_module, "ALL_DONE_CHECK_EVERY", 1000)
    whole = run()
    assert torch.equal(compacted.completions, whole.completions) and torch.equal(compacted.mask, whole.mask)
    assert torch.allclose(compacted.entropy, whole.entropy)


def test_each_row_is_handed_over_once_as_soon_as_it_has_ended(monkeypatch):
    """on_end receives every row exactly once, with the completion and truncation the finished
    rollout reports for it; rows that end early come at the check after their end-of-text, before
    the rollout is over (so that the reward can score them while the others decode)."""
    gpt = tiny_gpt()
    handed = []  # (decoding steps taken when the row came, row, completion, truncated)
    steps = []
    logits = rollout_module.next_token_logits
    monkeypatch.setattr(rollout_module, "next_token_logits", lambda *a, **k: steps.append(1) or logits(*a, **k))
    out = rollout(gpt, prompts(), group_size=6, max_new_tokens=40, eot_id=EOT, temperature=1.5,
                  generator=torch.Generator().manual_seed(1),
                  on_end=lambda rows, ids, cut: handed.extend((len(steps), *row) for row in zip(rows, ids, cut)))
    assert sorted(row for _, row, _, _ in handed) == list(range(len(out.mask)))
    lists, truncated = out.completion_lists(), out.truncated.tolist()
    for when, row, ids, cut in handed:
        assert ids == lists[row] and cut == truncated[row]
        if not cut:  # handed over at the first check after its end-of-text (a decoding step is one call)
            check = (len(ids) // rollout_module.ALL_DONE_CHECK_EVERY + 1) * rollout_module.ALL_DONE_CHECK_EVERY
            assert when <= check, (row, len(ids), when)
    assert min(when for when, *_ in handed) < max(when for when, *_ in handed)  # not all at the end
