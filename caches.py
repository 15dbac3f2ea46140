"""
caches.py: the keys and values a GPT keeps while it decodes, so that a new token attends to the
tokens before it without computing them again.

KVCache holds a batch of rows: the prompts of a rollout, prefilled at once, left-padded when
they are ragged (left_padded builds them and their cache). SharedPrefixCache is the decoding
cache of G samples of each prompt: the prompt's slots once, read once for its G samples, and each
sample's own tokens in a row of its own; shared_prefix_attention is the attention of one decoded
token over both parts. model.py's attention reads them, rollout.py decodes with them, and
GPT.completion_logprobs runs a rollout's training forward through a KVCache, with gradients.

    idx, valid, cache = left_padded(model, prompts, new_tokens)   # prompts left-padded, room for new_tokens
    model.hidden_states(idx, cache, valid)                        # prefill
    cache = SharedPrefixCache(cache, G, new_tokens)               # G samples of each prompt decode from it

Nothing to run here: tests/test_caches.py tests it.
"""
from typing import NamedTuple

import torch


class KVCache:
    """Keys and values of every layer for a batch of rows: the prompts of a rollout, prefilled at
    once (rollout.py; their samples then decode through a SharedPrefixCache).

    Rows may be ragged (prompts of different lengths): every row writes to the same slots, and a
    row whose prompt is shorter is left-padded with slots marked invalid. Invalid slots are never
    attended to and do not count towards a row's positions, so each row sees exactly what a
    full forward of that row alone would see. Only the key and value heads are kept (n_kv_head:
    grouped-query attention shares them between query heads).

    dtype should be that of the keys and values the model computes (under autocast, the autocast
    dtype): a float32 cache under bf16 autocast would be cast again, whole, in every layer at
    every decoded token.

    The cache also serves the training forward of a rollout (GPT.completion_logprobs), with
    gradients: each layer has a tensor of its own, written once per forward, so that what one
    layer's attention saved for the backward pass is never overwritten by another's.
    """

    def __init__(self, config, batch_size, max_len, device, dtype=torch.float32):
        # a row's position never exceeds its slot, so this bounds every position the cache sees
        # (checked here, on the host, rather than on every decoded token on the device)
        if max_len > config.block_size:
            raise ValueError(f"KV cache of {max_len} slots > block_size {config.block_size}")
        shape = (batch_size, config.n_kv_head, max_len, config.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.valid = torch.zeros(batch_size, max_len, device=device, dtype=torch.bool)
        self.length = 0  # slots filled so far (the same for every row)

    def repeat_rows(self, g):
        """Each row repeated g times in place order (prefill a prompt once, sample G completions);
        g may be a tensor of one count per row."""
        out = KVCache.__new__(KVCache)
        out.k = [k.repeat_interleave(g, dim=0) for k in self.k]
        out.v = [v.repeat_interleave(g, dim=0) for v in self.v]
        out.valid = self.valid.repeat_interleave(g, dim=0)
        out.length = self.length
        return out


def left_padded(model, prompts, new_tokens):
    """(idx, valid, cache) for B prompts of token ids and the GPT that will read them: the prompts
    left-padded, so that every one ends at the same slot (built on the host, sent at once), and a
    KV cache with room for new_tokens more, on the model's device."""
    device = model.lm_head.weight.device
    prompt_len = max(len(p) for p in prompts)
    assert prompt_len + new_tokens <= model.config.block_size, (
        f"prompt of {prompt_len} + {new_tokens} new tokens > block_size {model.config.block_size}")
    idx = torch.tensor([[0] * (prompt_len - len(p)) + list(p) for p in prompts]).to(device)
    lengths = torch.tensor([len(p) for p in prompts]).to(device)
    valid = torch.arange(prompt_len, device=device) >= prompt_len - lengths[:, None]
    # keys and values come out of the model in the autocast dtype when autocast is on
    dtype = (torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type)
             else model.lm_head.weight.dtype)
    return idx, valid, KVCache(model.config, len(prompts), prompt_len + new_tokens, device, dtype)


class SharedPrefix(NamedTuple):
    """One layer's view of a SharedPrefixCache for one decoded token (see shared_prefix_attention)."""
    prefix_k: torch.Tensor      # (B, n_kv_head, L, head_dim): the prompts' keys, once per prompt
    prefix_v: torch.Tensor
    prefix_valid: torch.Tensor  # (B, L): False on a prompt's left padding
    own_k: torch.Tensor         # (N, n_kv_head, max_new, head_dim): the live samples' own keys
    own_v: torch.Tensor
    start: int                  # the slot of own_k this token writes
    rows: torch.Tensor          # (N,) the live samples, b * G + g: own_k's rows in order
    group_size: int


class SharedPrefixCache:
    """The decoding cache of G samples of each of B prompts (rollout.py): the prompts' keys and
    values once (`prefix`, a KVCache of B rows, prefilled), and the keys and values of each
    sample's own tokens in a row of its own. Decoding a token is memory-bound: it reads every
    cached key and value once, and a prompt is most of what its samples attend to. Kept once, it
    is read once for its G samples, not from G copies, and never copied when samples that have
    ended leave the batch (select_rows moves the samples' own slots only). Each sample still sees
    exactly its prompt's valid slots and its own tokens, as a forward of that row alone would."""

    def __init__(self, prefix, group_size, max_new):
        n_rows, (_, n_kv_head, _, head_dim) = prefix.valid.size(0) * group_size, prefix.k[0].shape
        self.k = [k.new_zeros(n_rows, n_kv_head, max_new, head_dim) for k in prefix.k]
        self.v = [v.new_zeros(n_rows, n_kv_head, max_new, head_dim) for v in prefix.v]
        self.length = 0  # own slots written so far (the same for every sample)
        self.prefix, self.group_size = prefix, group_size
        self.rows = torch.arange(n_rows, device=prefix.valid.device)  # the live samples, b * G + g
        # a sample's first token takes the position after its prompt's real tokens
        self.prompt_tokens = prefix.valid[:, :prefix.length].sum(1)

    def layer(self, i):
        length = self.prefix.length
        return SharedPrefix(self.prefix.k[i][:, :, :length], self.prefix.v[i][:, :, :length],
                            self.prefix.valid[:, :length], self.k[i], self.v[i], self.length, self.rows,
                            self.group_size)

    def select_rows(self, keep):
        """Only the live samples keep (a bool mask over them) selects; only written slots are copied."""
        out = SharedPrefixCache.__new__(SharedPrefixCache)
        out.prefix, out.group_size, out.prompt_tokens = self.prefix, self.group_size, self.prompt_tokens
        out.rows, out.length = self.rows[keep], self.length
        out.k, out.v = [], []
        for kept, cached in ((out.k, self.k), (out.v, self.v)):
            for x in cached:
                kept.append(x.new_empty(len(out.rows), *x.shape[1:]))
                kept[-1][:, :, :self.length] = x[keep, :, :self.length]
        return out


def shared_prefix_attention(q, k, v, cache):
    """Causal attention of one new token per live sample over its prompt's slots (shared by the
    G samples of a prompt) and its own tokens so far, k and v (N, n_kv_head, 1, head_dim) among
    them: the scores of both parts in one softmax, in float32 as scaled_dot_product_attention
    keeps them, then the two weighted sums added. q (N, n_head, 1, head_dim) -> the same shape."""
    cache.own_k[:, :, cache.start:cache.start + 1] = k
    cache.own_v[:, :, cache.start:cache.start + 1] = v
    own_k, own_v = cache.own_k[:, :, :cache.start + 1], cache.own_v[:, :, :cache.start + 1]
    N, n_head, _, head_dim = q.shape
    B, n_kv_head, L, _ = cache.prefix_k.shape
    G, per_kv = cache.group_size, n_head // n_kv_head

    def by_prompt(x):  # (N, n_head, X) -> (B, n_kv_head, G * per_kv, X): a prompt's queries together
        full = x.new_zeros(B * G, n_head, x.size(-1)).index_copy(0, cache.rows, x)  # (samples that ended: 0)
        return full.view(B, G, n_kv_head, per_kv, -1).transpose(1, 2).reshape(B, n_kv_head, G * per_kv, -1)

    def by_sample(x):  # the inverse, for the live samples
        return x.view(B, n_kv_head, G, per_kv, -1).transpose(1, 2).reshape(B * G, n_head, -1)[cache.rows]

    with torch.autocast(q.device.type, enabled=False):
        scale = head_dim ** -0.5
        prefix_scores = float32_products(by_prompt(q[:, :, 0]), cache.prefix_k.transpose(-1, -2)) * scale
        prefix_scores = prefix_scores.masked_fill(~cache.prefix_valid[:, None, None, :], float("-inf"))
        own_scores = float32_products(q.view(N, n_kv_head, per_kv, head_dim), own_k.transpose(-1, -2)) * scale
        weights = torch.cat([by_sample(prefix_scores), own_scores.view(N, n_head, -1)], dim=-1).softmax(-1)
        # (a GPU multiplies the weights in the values' dtype, as its fused attention does)
        weights = weights.to(v.dtype) if v.is_cuda else weights
        prefix_weights, own_weights = weights.split([L, weights.size(-1) - L], dim=-1)
        y = by_sample(float32_products(by_prompt(prefix_weights), cache.prefix_v))
        y = y + float32_products(own_weights.view(N, n_kv_head, per_kv, -1), own_v).view(N, n_head, head_dim)
    return y.to(q.dtype)[:, :, None]


def float32_products(a, b):
    """a @ b (batched over the leading dimensions) in float32, from inputs in any float dtype:
    on CUDA bf16 / fp16 inputs stay as they are and the matmul writes float32 (out_dtype); elsewhere
    they are cast first (a CPU runs the CPU preset in float32, where this casts nothing)."""
    if a.is_cuda and a.dtype in (torch.bfloat16, torch.float16):
        out = torch.bmm(a.flatten(0, -3), b.flatten(0, -3), out_dtype=torch.float32)
        return out.view(*a.shape[:-1], b.size(-1))
    return a.float() @ b.float()
