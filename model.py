"""
model.py: the GPT, in GPT-2's form for training from scratch (nanoGPT's) and in the Llama / Qwen
form a pretrained start needs (RMSNorm, rotary positions, SwiGLU, grouped-query attention, Qwen3's
QK-norm), chosen by GPTConfig; its per-token log-probs go through the fused kernel of logprobs.py.
Also the KV cache the rollout decodes with, loading Hugging Face checkpoints (GPT-2, Llama, Qwen2,
Qwen3) and our own, and the few helpers every script shares: packing prompt + completion rows,
the device / autocast set-up.

    from model import GPT, device_setup, load_checkpoint
    device, autocast = device_setup("auto")
    gpt = GPT.from_checkpoint(load_checkpoint("out/sft.pt"), device)   # or GPT.from_pretrained(DIR)
    with autocast:
        logp = gpt.sequence_logprobs([prompt_ids], [completion_ids])  # log pi(completion | prompt)

Nothing to run here: tests/test_model.py and tests/test_model_families.py test it.
"""
import math
import os
import shutil
import subprocess
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
from torch.nn import functional as F

from logprobs import fused_logprobs


# ----------------------------------------------------------------------------- GPT

@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64 for speed
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # bias in every Linear and LayerNorm, like GPT-2; False is a bit better and faster
    # The defaults below are GPT-2's form; from_pretrained sets them from a Llama or Qwen checkpoint.
    # Plain data only: checkpoints record these fields (model_args) and rebuild the model from them.
    norm: str = "layernorm"         # "layernorm" (GPT-2) | "rmsnorm" (Llama, Qwen)
    norm_eps: float = 1e-5
    position: str = "learned"       # "learned": a table of block_size positions (GPT-2) | "rope" (rotary)
    rope_theta: float = 10000.0     # the rotary base: the checkpoint's own (Qwen3: 1e6)
    mlp: str = "gelu"               # "gelu" (GPT-2) | "swiglu" (Llama, Qwen)
    intermediate_size: int = None   # the MLP's hidden width; None: 4 * n_embd
    n_kv_head: int = None           # heads of keys and values (grouped-query attention); None: n_head
    head_dim: int = None            # None: n_embd // n_head (Qwen3's heads are wider)
    qk_norm: bool = False           # Qwen3: RMSNorm of every query and key head before the rotation
    qkv_bias: bool = False          # Qwen2: biases on the query, key and value projections, none elsewhere
    tie_word_embeddings: bool = True  # the LM head is the token embedding (GPT-2, small Llamas and Qwens)

    def __post_init__(self):
        choices = dict(norm=("layernorm", "rmsnorm"), position=("learned", "rope"), mlp=("gelu", "swiglu"))
        for field, allowed in choices.items():
            if getattr(self, field) not in allowed:
                raise ValueError(f"GPTConfig.{field} must be one of {allowed}; got {getattr(self, field)!r}")
        if self.head_dim is None:
            if self.n_embd % self.n_head:
                raise ValueError(f"n_embd={self.n_embd} is not a multiple of n_head={self.n_head} (or give head_dim)")
            self.head_dim = self.n_embd // self.n_head
        self.n_kv_head = self.n_head if self.n_kv_head is None else self.n_kv_head
        if self.n_head % self.n_kv_head:
            raise ValueError(f"n_head={self.n_head} is not a multiple of n_kv_head={self.n_kv_head}")
        if self.position == "rope" and self.head_dim % 2:
            raise ValueError(f"rotary positions rotate pairs of channels: head_dim={self.head_dim} must be even")
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.n_embd


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


class RMSNorm(nn.Module):
    """x / rms(x) * weight (Llama, Qwen): LayerNorm without the mean and the bias. Computed in
    float32 and cast back before the weight, as the checkpoints' own code does, so that their
    weights give the same numbers here."""

    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def norm_layer(config, dim):
    """LayerNorm (GPT-2) or RMSNorm (Llama, Qwen), as config.norm says."""
    if config.norm == "rmsnorm":
        return RMSNorm(dim, config.norm_eps)
    return nn.LayerNorm(dim, eps=config.norm_eps, bias=config.bias)


class Rotary(nn.Module):
    """Rotary position embedding (RoFormer, as Llama and Qwen lay it out): channel i of a query or
    key head is paired with channel i + head_dim/2, and each pair is rotated by the angle
    position * theta^(-2i/head_dim). A query-key dot product then depends on the two positions
    only through their difference. Positions are given per row: a left-padded prompt's first
    real token is at position 0, whatever slot it sits in."""

    def __init__(self, head_dim, theta):
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)  # derived: not a weight to save

    def forward(self, pos):
        """pos (B, T) -> cos, sin (B, 1, T, head_dim/2), broadcast over heads."""
        angles = pos[:, None, :, None].float() * self.inv_freq
        return angles.cos(), angles.sin()


def apply_rotary(x, cos, sin):
    """x (B, H, T, head_dim) with each (first half, second half) channel pair rotated."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention. n_kv_head < n_head is grouped-query attention: each key and
    value head serves n_head / n_kv_head query heads (a smaller KV cache)."""

    def __init__(self, config):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        q_size, kv_size = config.n_head * config.head_dim, config.n_kv_head * config.head_dim
        self.sizes = [q_size, kv_size, kv_size]
        self.c_attn = nn.Linear(config.n_embd, sum(self.sizes), bias=config.bias or config.qkv_bias)  # q, k, v at once
        self.c_proj = nn.Linear(q_size, config.n_embd, bias=config.bias)
        self.qk_norm = config.qk_norm
        if config.qk_norm:
            self.q_norm = RMSNorm(config.head_dim, config.norm_eps)
            self.k_norm = RMSNorm(config.head_dim, config.norm_eps)
        self.attn_dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, rope=None, layer_cache=None, attn_mask=None):
        B, T, _ = x.size()
        q, k, v = self.c_attn(x).split(self.sizes, dim=2)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        gqa = self.n_kv_head != self.n_head
        if isinstance(layer_cache, SharedPrefix):  # one decoded token, its prompt's slots shared
            y = shared_prefix_attention(q, k, v, layer_cache)
        elif layer_cache is None:  # plain causal attention over this chunk (training, full forward)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa,
                                               dropout_p=self.attn_dropout if self.training else 0.0)
        else:  # append this chunk to the cache, attend to everything valid so far
            cache_k, cache_v, start = layer_cache
            cache_k[:, :, start:start + T] = k
            cache_v[:, :, start:start + T] = v
            y = F.scaled_dot_product_attention(q, cache_k[:, :, :start + T], cache_v[:, :, :start + T],
                                               attn_mask=attn_mask, enable_gqa=gqa)
        y = y.transpose(1, 2).contiguous().view(B, T, self.n_head * self.head_dim)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.intermediate_size, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's own GELU, so pretrained weights match exactly
        self.c_proj = nn.Linear(config.intermediate_size, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class SwiGLU(nn.Module):
    """The gated MLP of Llama and Qwen: down(silu(gate(x)) * up(x)), gate and up in one matmul."""

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 2 * config.intermediate_size, bias=config.bias)  # gate, up
        self.c_proj = nn.Linear(config.intermediate_size, config.n_embd, bias=config.bias)  # down
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        gate, up = self.c_fc(x).chunk(2, dim=-1)
        return self.dropout(self.c_proj(F.silu(gate) * up))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = norm_layer(config, config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = norm_layer(config, config.n_embd)
        self.mlp = SwiGLU(config) if config.mlp == "swiglu" else MLP(config)

    def forward(self, x, rope=None, layer_cache=None, attn_mask=None):
        x = x + self.attn(self.ln_1(x), rope, layer_cache, attn_mask)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.vocab_size is not None and config.block_size is not None
        self.config = config
        self.transformer = nn.ModuleDict(dict(wte=nn.Embedding(config.vocab_size, config.n_embd)))
        if config.position == "learned":  # GPT-2: a learnt vector added per position
            self.transformer.wpe = nn.Embedding(config.block_size, config.n_embd)
        else:  # rotary: queries and keys are rotated by position in every layer; nothing to learn
            self.rotary = Rotary(config.head_dim, config.rope_theta)
        self.transformer.drop = nn.Dropout(config.dropout)
        self.transformer.h = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.transformer.ln_f = norm_layer(config, config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.transformer.wte.weight = self.lm_head.weight  # weight tying (GPT-2)
        self.apply(self._init_weights)
        # GPT-2 scales the residual projections by 1/sqrt(2 * n_layer) at init
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def get_num_params(self, non_embedding=True):
        """Parameter count. non_embedding: only the parameters that multiply (what flops count):
        without the position table and, when the LM head has its own matrix, without the token
        embedding (a lookup); a tied token embedding counts, once, as the LM head."""
        n_params = sum(p.numel() for p in self.parameters())
        if non_embedding:
            if self.config.position == "learned":
                n_params -= self.transformer.wpe.weight.numel()
            if not self.config.tie_word_embeddings:
                n_params -= self.transformer.wte.weight.numel()
        return n_params

    def hidden_states(self, idx, cache=None, valid=None):
        """Final (post ln_f) hidden states (B, T, n_embd) of idx (B, T).

        Without a cache: a plain causal forward from position 0. With a cache: idx continues
        the cached rows; valid (B, T) marks real tokens (False = left padding of a ragged prompt).
        """
        B, T = idx.size()
        attn_mask, layer_caches = None, [None] * self.config.n_layer
        if cache is None:
            assert T <= self.config.block_size, f"sequence of {T} tokens > block_size {self.config.block_size}"
            pos = torch.arange(T, device=idx.device).expand(B, T)
        elif isinstance(cache, SharedPrefixCache):
            assert T == 1, "a SharedPrefixCache decodes one token at a time"
            pos = (cache.prompt_tokens[cache.rows // cache.group_size] + cache.length)[:, None]
            layer_caches = [cache.layer(i) for i in range(self.config.n_layer)]
            cache.length += 1
        else:
            start = cache.length
            assert start + T <= cache.valid.size(1), "KV cache is full: allocate it with a larger max_len"
            if valid is None:
                valid = torch.ones(B, T, dtype=torch.bool, device=idx.device)
            cache.valid[:, start:start + T] = valid
            # a row's position counts only its valid tokens, so left padding does not shift it
            pos = (cache.valid[:, :start + T].cumsum(1) - 1).clamp(min=0)[:, start:]
            # query at slot start+i sees valid keys at slots <= start+i; a padding query sees
            # itself, so that no row of the mask is empty (its output is never used)
            key_slot = torch.arange(start + T, device=idx.device)[None, :]
            query_slot = start + torch.arange(T, device=idx.device)[:, None]
            attn_mask = ((key_slot <= query_slot) & cache.valid[:, None, :start + T]) | (key_slot == query_slot)
            attn_mask = attn_mask[:, None]  # (B, 1, T, start+T), broadcast over heads
            layer_caches = [(cache.k[i], cache.v[i], start) for i in range(self.config.n_layer)]
            cache.length = start + T
        x = self.transformer.wte(idx)
        rope = None
        if self.config.position == "learned":
            x = x + self.transformer.wpe(pos)
        else:
            rope = self.rotary(pos)  # computed once, used by every layer
        x = self.transformer.drop(x)
        for block, layer_cache in zip(self.transformer.h, layer_caches):
            x = block(x, rope, layer_cache, attn_mask)
        return self.transformer.ln_f(x)

    def forward(self, idx, targets=None):
        """nanoGPT's contract: with targets, logits at every position and the mean cross-entropy
        (targets of -1 are ignored); without, logits of the last position only (B, 1, V)."""
        x = self.hidden_states(idx)
        if targets is not None:
            logits = self.lm_head(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
            return logits, loss
        return self.lm_head(x[:, [-1], :]), None

    def token_logprobs(self, idx, targets, temperature=1.0):
        """log pi(targets[b, t] | idx[b, :t+1]) for every position, (B, T) float32, through
        fused_logprobs: the (B*T, V) logits are never materialised. Positions whose target is
        padding should be masked by the caller (any valid token id works as a placeholder)."""
        x = self.hidden_states(idx)
        B, T, C = x.shape
        logp = fused_logprobs(x.reshape(B * T, C), self.lm_head.weight, targets.reshape(B * T), temperature)
        return logp.view(B, T)

    def completion_logprobs(self, prompts, completions, group_size, temperature=1.0):
        """log pi(c_t | prompt, c_<t) of every token of the completions of each prompt, through
        the fused log-prob kernel: the training forward of a rollout (or of an IR group). prompts:
        B lists of token ids; completions: their completions in order, group_size of each (an
        int, or one count per prompt). Returns logp (N, W) float32 and its mask (N, W), True on
        real tokens, W the longest completion; differentiable.

        Each prompt runs once: its last position predicts the first token of every one of its
        completions, and its keys and values serve them through the KV cache (as in the rollout,
        here with gradients). A step of B prompts x G completions computes B prompts, not B*G."""
        device = self.lm_head.weight.device
        counts = torch.as_tensor(group_size, device=device)
        width = max(len(c) for c in completions)
        idx, valid, cache = left_padded(self, prompts, width - 1)
        hidden = self.hidden_states(idx, cache, valid)[:, -1:].repeat_interleave(counts, dim=0)
        targets = torch.tensor([list(c) + [0] * (width - len(c)) for c in completions]).to(device)
        if width > 1:  # (padding after a completion's end is never seen by its tokens: causal attention)
            hidden = torch.cat([hidden, self.hidden_states(targets[:, :-1], cache.repeat_rows(counts))], dim=1)
        logp = fused_logprobs(hidden.flatten(0, 1), self.lm_head.weight, targets.flatten(), temperature)
        lengths = torch.tensor([len(c) for c in completions], device=device)
        return logp.view(len(completions), width), torch.arange(width, device=device) < lengths[:, None]

    def sequence_logprobs(self, prompts, completions, temperature=1.0):
        """log pi(completion | prompt) summed over the completion's tokens, one float32 per pair
        (N,), differentiable (wrap in torch.no_grad() for the old policy or the reference).
        prompts, completions: N lists of token ids; a prompt needs at least one token. Pairs
        that follow one another with the same prompt (an IR group's responses) share its forward."""
        runs = []  # (prompt, first pair, pairs) of each run of pairs with one prompt
        for i, prompt in enumerate(prompts):
            if runs and list(prompt) == runs[-1][0] and runs[-1][1] + runs[-1][2] == i:
                runs[-1][2] += 1
            else:
                runs.append([list(prompt), i, 1])
        # runs of about the same completion width together, in chunks of about SEQUENCE_CHUNK_TOKENS:
        # each chunk is padded to its own longest completion (IRs run from ~100 to ~400 tokens),
        # its prompts to their longest, and the two together stay within the block
        width = [max(len(completions[j]) for j in range(i, i + n)) for _, i, n in runs]
        out = [None] * len(prompts)
        chunk, n_pairs, prompt_len = [], 0, 0
        for r in sorted(range(len(runs)), key=width.__getitem__) + [None]:  # (widths grow: r's is the chunk's)
            if chunk and (r is None or (n_pairs + runs[r][2]) * width[r] > SEQUENCE_CHUNK_TOKENS
                          or max(prompt_len, len(runs[r][0])) + width[r] - 1 > self.config.block_size):
                pairs = [j for c in chunk for j in range(runs[c][1], runs[c][1] + runs[c][2])]
                logp, mask = self.completion_logprobs([runs[c][0] for c in chunk], [completions[j] for j in pairs],
                                                      [runs[c][2] for c in chunk], temperature)
                for j, value in zip(pairs, torch.where(mask, logp, 0.0).sum(dim=1)):
                    out[j] = value
                chunk, n_pairs, prompt_len = [], 0, 0
            if r is not None:
                chunk.append(r)
                n_pairs += runs[r][2]
                prompt_len = max(prompt_len, len(runs[r][0]))
        return torch.stack(out)

    @classmethod
    def from_checkpoint(cls, checkpoint, device="cpu"):
        """The GPT a checkpoint dict (see load_checkpoint) holds, on device."""
        model = cls(GPTConfig(**checkpoint["model_args"]))
        # a model saved while wrapped by torch.compile names its weights "_orig_mod.<name>"
        state = {k.removeprefix("_orig_mod."): v for k, v in checkpoint["model"].items()}
        model.load_state_dict(state)
        return model.to(device)

    @classmethod
    def from_pretrained(cls, model_dir, vocab_size=None):
        """A GPT with the weights of a Hugging Face GPT-2, Llama, Qwen2 or Qwen3 checkpoint in
        model_dir (its config.json and weights; a name already in the local Hugging Face cache
        works too), read with transformers offline: the user fetches the model, nothing is
        downloaded. block_size is the checkpoint's context length. What this GPT does not compute
        (rope scaling, sliding windows, biases it has no place for, mixtures of experts) is a
        ValueError naming the setting, never a model that silently computes something else.

        vocab_size keeps only the first vocab_size token embeddings and head rows: Qwen pads its
        table beyond its tokenizer (151936 rows for 151669 tokens), and a sampled id must be one
        the tokenizer can decode (the policy is then the model's, renormalised over those ids)."""
        import transformers  # imported lazily: only this path needs it
        try:
            hf = transformers.AutoConfig.from_pretrained(model_dir, local_files_only=True)
        except (OSError, ValueError) as e:
            raise ValueError(f"{model_dir} is not a Hugging Face model directory (no readable config.json; "
                             f"nothing is downloaded, fetch the model yourself): {e}") from None
        config = config_from_hugging_face(hf, model_dir)
        if vocab_size is not None:
            if vocab_size > config.vocab_size:
                raise ValueError(f"{model_dir}: its model has {config.vocab_size} token embeddings, fewer than "
                                 f"the {vocab_size} tokens of its tokenizer")
            config.vocab_size = vocab_size
        try:
            hf_model, loading = transformers.AutoModelForCausalLM.from_pretrained(
                model_dir, local_files_only=True, output_loading_info=True)
        except (OSError, ValueError, RuntimeError) as e:  # (RuntimeError: weights of other shapes than config.json's)
            raise ValueError(f"{model_dir}: could not load its weights: {e}") from None
        model = cls(config)
        sd, sd_hf = model.state_dict(), hf_model.state_dict()
        sources, transposed = hugging_face_names(hf.model_type, config, sd)
        # Every weight of the checkpoint must have a place here, and every place a weight: an
        # unmapped one (a bias this GPT lacks) would be dropped silently, a missing one left random,
        # and the model would compute something else. transformers drops a weight its own class
        # has no place for (and reports it), so its report counts as well as our own mapping.
        used = {name for names in sources.values() for name in names}
        derived = (".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq", "rotary_emb.original_inv_freq")
        unused = sorted(k for k in set(loading["unexpected_keys"]) | (set(sd_hf) - used) if not k.endswith(derived)
                        and not (k == "lm_head.weight" and config.tie_word_embeddings))
        missing = sorted(set(loading["missing_keys"]) | (used - set(sd_hf)))
        if unused or missing:
            raise ValueError(f"{model_dir}: its weights do not match a {hf.model_type} of this GPT's form: "
                             f"weights it has no place for {unused[:5]}, weights missing {missing[:5]}")
        with torch.no_grad():
            for key, names in sources.items():
                src = torch.cat([sd_hf[name] for name in names])  # q, k, v (gate, up) stacked as we keep them
                if key.endswith(transposed):
                    src = src.t()
                if key in ("transformer.wte.weight", "lm_head.weight"):
                    src = src[:config.vocab_size]
                assert src.shape == sd[key].shape, f"{key}: {tuple(src.shape)} != {tuple(sd[key].shape)}"
                sd[key].copy_(src)
        return model

    def configure_optimizers(self, weight_decay, learning_rate, betas, device):
        """AdamW; weight decay on matrices only (not biases, norms); fused (one kernel for
        all parameters) on CUDA. device: "cpu", "cuda", "cuda:0", ... or a torch.device."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        fused = torch.device(device).type == "cuda"
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=fused)

    def flops_per_token(self, seq_len, backward=True):
        """Model flops per token for sequences of seq_len tokens, as in PaLM's appendix B: 2N for
        the matmuls of the forward (N: get_num_params(), the parameters that multiply) and
        4 L (n_head head_dim) T for attention's QK^T and AV at context T (every query head,
        grouped-query attention or not; counted whole, as PaLM does, though causal); a backward
        costs twice the forward."""
        cfg = self.config
        forward = 2 * self.get_num_params() + 4 * cfg.n_layer * cfg.n_head * cfg.head_dim * seq_len
        return 3 * forward if backward else forward

    def estimate_mfu(self, tokens, dt, seq_len=None, backward=True, peak_flops=None):
        """Model flops utilisation: the flops of `tokens` tokens in rows of seq_len (default:
        block_size, which overstates attention for shorter rows), their forward and, if
        backward, their backward, done in dt seconds, over peak_flops (default: the bf16 dense
        peak of the CUDA GPU in use, see PEAK_BF16_FLOPS; None when it is unknown)."""
        seq_len = self.config.block_size if seq_len is None else seq_len
        if peak_flops is None:
            peak_flops = peak_bf16_flops()
            if peak_flops is None:
                return None
        return self.flops_per_token(seq_len, backward) * tokens / dt / peak_flops


# ----------------------------------------------------------------------------- Hugging Face checkpoints

PRETRAINED_TYPES = ("gpt2", "llama", "qwen2", "qwen3")


def config_from_hugging_face(hf, model_dir):
    """The GPTConfig that computes what a transformers config describes, or a ValueError naming
    every setting of it this GPT does not implement."""
    if hf.model_type not in PRETRAINED_TYPES:
        raise ValueError(f"{model_dir} holds a {hf.model_type!r} model; GPT.from_pretrained loads the "
                         f"{', '.join(PRETRAINED_TYPES)} architectures (dense ones: no mixture of experts)")
    if hf.model_type == "gpt2":
        # what GPT-2's form computes: tanh GELU, plain attention scaling
        unsupported = dict(activation_function=hf.activation_function not in ("gelu_new", "gelu_pytorch_tanh"),
                           scale_attn_by_inverse_layer_idx=hf.scale_attn_by_inverse_layer_idx,
                           scale_attn_weights=not hf.scale_attn_weights)
        _refuse(hf, model_dir, unsupported)
        return GPTConfig(block_size=hf.n_positions, vocab_size=hf.vocab_size, n_layer=hf.n_layer,
                         n_head=hf.n_head, n_embd=hf.n_embd, bias=True, norm_eps=hf.layer_norm_epsilon,
                         intermediate_size=hf.n_inner, tie_word_embeddings=hf.tie_word_embeddings)
    # transformers 5 keeps rope_theta and rope_scaling in one dict, rope_parameters; 4.x apart
    rope = getattr(hf, "rope_parameters", None) or dict(getattr(hf, "rope_scaling", None) or {},
                                                        rope_theta=getattr(hf, "rope_theta", 10000.0))
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    layer_types = getattr(hf, "layer_types", None) or []
    unsupported = dict(
        rope_scaling=rope_type != "default",  # llama3, yarn, dynamic, ...: plain rotary positions only
        hidden_act=hf.hidden_act != "silu",
        # Llama and Qwen3 put a bias on all four attention projections (Qwen2 on q, k, v only, always)
        attention_bias=getattr(hf, "attention_bias", False),
        mlp_bias=getattr(hf, "mlp_bias", False),
        use_sliding_window=getattr(hf, "use_sliding_window", False),
        layer_types=any(t != "full_attention" for t in layer_types))
    _refuse(hf, model_dir, unsupported, rope_scaling=rope)
    return GPTConfig(block_size=hf.max_position_embeddings, vocab_size=hf.vocab_size,
                     n_layer=hf.num_hidden_layers, n_head=hf.num_attention_heads, n_embd=hf.hidden_size,
                     bias=False, norm="rmsnorm", norm_eps=hf.rms_norm_eps, position="rope",
                     rope_theta=float(rope["rope_theta"]), mlp="swiglu", intermediate_size=hf.intermediate_size,
                     n_kv_head=getattr(hf, "num_key_value_heads", None) or hf.num_attention_heads,
                     head_dim=getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads,
                     qk_norm=hf.model_type == "qwen3", qkv_bias=hf.model_type == "qwen2",
                     tie_word_embeddings=hf.tie_word_embeddings)


def _refuse(hf, model_dir, unsupported, **shown):
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise ValueError(f"{model_dir}: a {hf.model_type} with settings this GPT does not implement: "
                         + ", ".join(f"{k}={shown.get(k, getattr(hf, k, None))!r}" for k in bad))


def hugging_face_names(model_type, config, ours):
    """{each of our weight names (ours): the checkpoint's weight names it is made of, concatenated
    in order} and the suffixes of our weights that are the checkpoint's transposed. A tied LM head
    is the token embedding: loading one loads both."""
    ours = [k for k in ours if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if model_type == "gpt2":  # the same names; GPT-2 stores its matmuls as Conv1D (in, out), nn.Linear is (out, in)
        transposed = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
        return {k: [k] for k in ours}, transposed
    sources = {"transformer.wte.weight": ["model.embed_tokens.weight"],
               "transformer.ln_f.weight": ["model.norm.weight"]}
    for i in range(config.n_layer):
        mine, theirs = f"transformer.h.{i}.", f"model.layers.{i}."
        sources |= {mine + "ln_1.weight": [theirs + "input_layernorm.weight"],
                    mine + "attn.c_attn.weight": [theirs + f"self_attn.{p}_proj.weight" for p in "qkv"],
                    mine + "attn.c_proj.weight": [theirs + "self_attn.o_proj.weight"],
                    mine + "ln_2.weight": [theirs + "post_attention_layernorm.weight"],
                    mine + "mlp.c_fc.weight": [theirs + "mlp.gate_proj.weight", theirs + "mlp.up_proj.weight"],
                    mine + "mlp.c_proj.weight": [theirs + "mlp.down_proj.weight"]}
        if config.qkv_bias:
            sources[mine + "attn.c_attn.bias"] = [theirs + f"self_attn.{p}_proj.bias" for p in "qkv"]
        if config.qk_norm:
            sources |= {mine + "attn.q_norm.weight": [theirs + "self_attn.q_norm.weight"],
                        mine + "attn.k_norm.weight": [theirs + "self_attn.k_norm.weight"]}
    if not config.tie_word_embeddings:
        sources["lm_head.weight"] = ["lm_head.weight"]
    assert sorted(sources) == sorted(ours), sorted(set(sources) ^ set(ours))
    return sources, ()


# ----------------------------------------------------------------------------- shared helpers

# Dense bf16 tensor-core peaks from NVIDIA's data sheets, by a substring of the device name
# (first match wins: "H100 PCIe" before "H100").
PEAK_BF16_FLOPS = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}


def peak_bf16_flops():
    """The current CUDA GPU's bf16 dense peak in flop/s, or None (no GPU, or not in the table)."""
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)


def pack(prompts, completions, pad_id):
    """Prompt + completion pairs as one right-padded batch for a training forward.

    Returns CPU tensors idx (B, W-1) and targets (B, W-1), the rows without their last token and
    shifted by one (W = the longest prompt + completion), and mask (B, W-1), True where the
    target is a completion token: token_logprobs(idx, targets)[mask] are the completion's
    log-probs. pad_id fills both after each row's end (it must be a valid token id for the
    log-prob kernel; causal attention never lets it reach the real tokens before it)."""
    if len(prompts) != len(completions) or not prompts:
        raise ValueError(f"pack wants as many prompts as completions, at least one; got "
                         f"{len(prompts)} and {len(completions)}")
    for r, prompt in enumerate(prompts):
        if not prompt:
            raise ValueError(f"pair {r} has an empty prompt: its first completion token needs a token to follow")
    rows = [list(p) + list(c) for p, c in zip(prompts, completions)]
    width = max(len(row) for row in rows)
    full = torch.tensor([row + [pad_id] * (width - len(row)) for row in rows], dtype=torch.long)
    # the targets that are completion tokens: those after the prompt's last token, up to the row's end
    first = torch.tensor([len(p) - 1 for p in prompts])[:, None]
    end = torch.tensor([len(row) - 1 for row in rows])[:, None]
    target = torch.arange(width - 1)[None, :]
    return full[:, :-1], full[:, 1:], (target >= first) & (target < end)


SEQUENCE_CHUNK_TOKENS = 8192  # completion tokens (padding included) per forward of sequence_logprobs


def left_padded(model, prompts, new_tokens):
    """(idx, valid, cache) for B prompts of token ids: the prompts left-padded, so that every one
    ends at the same slot (built on the host, sent at once), and a KV cache with room for
    new_tokens more."""
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


def load_checkpoint(path):
    """A checkpoint written by train.py, on the CPU (the caller moves what belongs on a GPU; RNG
    states must stay on the CPU). weights_only=True: tensors and plain data only, so a crafted
    file cannot run code. A missing, unreadable or foreign file is a ValueError naming it."""
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint {path}: no such file")
    try:
        with warnings.catch_warnings():  # (random bytes can read as a legacy file, which torch warns of)
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # (random bytes, a truncated file, or a pickle of other objects)
        raise ValueError(f"checkpoint {path}: not a readable checkpoint ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(checkpoint, dict) or not {"model", "model_args"} <= checkpoint.keys():
        raise ValueError(f"checkpoint {path}: a torch file, but not a checkpoint of this project "
                         f"(it should be a dict with 'model' and 'model_args')")
    return checkpoint


def device_setup(device="auto", dtype="auto"):
    """(device, autocast) for a run: "auto" is cuda when torch sees a GPU, else cpu. dtype "auto"
    is bfloat16 autocast on CUDA (any "cuda:N") and float32 elsewhere; "bfloat16" asks for
    bfloat16 autocast on a CPU too (how the tests check the reduced-precision paths without a
    GPU), "float32" for none. On CUDA float32 matmuls may use TF32 (as in nanoGPT).

    A GPU that nvidia-smi lists but torch cannot use (a torch build for a newer driver, or a
    CPU-only build) is an error, for "auto" too: quietly training on the CPU instead would run
    the CPU preset for hours on a machine with a GPU."""
    if (device == "auto" or torch.device(device).type == "cuda") and not torch.cuda.is_available():
        gpus = nvidia_smi_gpus()
        if gpus:
            build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ValueError(
                f"nvidia-smi lists {len(gpus)} GPU(s) ({gpus[0]}), but this torch ({torch.__version__}, {build}) "
                f"cannot use them: its CUDA build needs a newer NVIDIA driver than this machine's (PyPI's "
                f"torch 2.13.0 is the CUDA 13 build, which needs a recent driver), or it has no CUDA at all. "
                f"Install the torch wheel matching your driver (nvidia-smi shows the CUDA version the "
                f"driver supports), e.g. `pip install torch==2.13.0 --index-url "
                f"https://download.pytorch.org/whl/cu126`, or pass --device=cpu to train on the CPU deliberately.")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device_type = torch.device(device).type
    if device_type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: torch sees no CUDA GPU here (use --device=cpu or auto)")
        if torch.device(device).index is not None:
            # Triton launches its kernels on the current CUDA device, not on the device of the
            # tensors they are given: on "cuda:1" with the current device left at 0 the fused
            # log-prob kernel would read memory of the wrong GPU (an illegal address, which
            # poisons the CUDA context for the rest of the process)
            torch.cuda.set_device(torch.device(device))
        torch.set_float32_matmul_precision("high")  # TF32 tensor cores for the float32 matmuls left
    if dtype not in ("auto", "bfloat16", "float32"):
        raise ValueError(f"dtype must be 'auto', 'bfloat16' or 'float32'; got {dtype!r}")
    if dtype == "bfloat16" or (dtype == "auto" and device_type == "cuda"):
        return device, torch.autocast(device_type, dtype=torch.bfloat16)
    return device, nullcontext()


def nvidia_smi_gpus():
    """The GPUs `nvidia-smi -L` lists ("GPU 0: NVIDIA H100 80GB HBM3 (UUID: ...)"), [] where there is
    no nvidia-smi or it fails (no driver loaded)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        done = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.startswith("GPU ")]
