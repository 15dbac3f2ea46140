"""
model.py: the GPT, in GPT-2's form for training from scratch (nanoGPT's) and in the Llama / Qwen
form a pretrained start needs (RMSNorm, rotary positions, SwiGLU, grouped-query attention, Qwen3's
QK-norm), chosen by GPTConfig; its per-token log-probs go through the fused kernel of logprobs.py.
It decodes through the caches of caches.py, is built from our checkpoints (checkpoints.py reads
them) or from a Hugging Face one (hugging_face.py maps it), and packs prompt + completion pairs
into the batch of a training forward.

    import checkpoints, ddp
    from model import GPT
    device, autocast = ddp.device_setup("auto")
    gpt = GPT.from_checkpoint(checkpoints.load("out/sft.pt"), device)   # or GPT.from_pretrained(DIR)
    with autocast:
        logp = gpt.sequence_logprobs([prompt_ids], [completion_ids])  # log pi(completion | prompt)

Nothing to run here: tests/test_model.py and tests/test_model_families.py test it.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

import hugging_face
from caches import SharedPrefix, SharedPrefixCache, left_padded, shared_prefix_attention
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

    def sequence_logprobs(self, prompts, completions, temperature=1.0, chunk_tokens=8192):
        """log pi(completion | prompt) summed over the completion's tokens, one float32 per pair
        (N,), differentiable (wrap in torch.no_grad() for the old policy or the reference).
        prompts, completions: N lists of token ids; a prompt needs at least one token. Pairs
        that follow one another with the same prompt (an IR group's responses) share its forward,
        and a forward takes about chunk_tokens completion tokens (padding included)."""
        runs = []  # (prompt, first pair, pairs) of each run of pairs with one prompt
        for i, prompt in enumerate(prompts):
            if runs and list(prompt) == runs[-1][0] and runs[-1][1] + runs[-1][2] == i:
                runs[-1][2] += 1
            else:
                runs.append([list(prompt), i, 1])
        # runs of about the same completion width together, in chunks of about chunk_tokens:
        # each chunk is padded to its own longest completion (IRs run from ~100 to ~400 tokens),
        # its prompts to their longest, and the two together stay within the block
        width = [max(len(completions[j]) for j in range(i, i + n)) for _, i, n in runs]
        out = [None] * len(prompts)
        chunk, n_pairs, prompt_len = [], 0, 0
        for r in sorted(range(len(runs)), key=width.__getitem__) + [None]:  # (widths grow: r's is the chunk's)
            if chunk and (r is None or (n_pairs + runs[r][2]) * width[r] > chunk_tokens
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
        """The GPT a checkpoint dict (checkpoints.load) holds, on device."""
        model = cls(GPTConfig(**checkpoint["model_args"]))
        # a model saved while wrapped by torch.compile names its weights "_orig_mod.<name>"
        state = {k.removeprefix("_orig_mod."): v for k, v in checkpoint["model"].items()}
        model.load_state_dict(state)
        return model.to(device)

    @classmethod
    def from_pretrained(cls, model_dir, vocab_size=None):
        """A GPT with the weights of a Hugging Face GPT-2, Llama, Qwen2 or Qwen3 checkpoint in
        model_dir, read with transformers offline (hugging_face.py maps it onto this GPT, and
        refuses by name what this GPT does not compute). block_size is the checkpoint's context
        length; vocab_size keeps the first vocab_size token ids only (those its tokenizer decodes)."""
        hf = hugging_face.read_config(model_dir)
        config = GPTConfig(**hugging_face.config_from_hugging_face(hf, model_dir, vocab_size))
        hf_weights, loading = hugging_face.read_weights(model_dir)
        model = cls(config)
        hugging_face.copy_weights(model, hf.model_type, hf_weights, loading, model_dir)
        return model

    def compile_blocks(self):
        """Each transformer block compiled by torch.compile, for shapes that vary (the tokens of
        a step's micro-batches differ from step to step); the rest stays eager, the fused log-prob
        kernel above all (its launches cannot be traced). Returns the model."""
        # a block's forward runs in a few fixed variants, each compiled once in the first steps:
        # policy or frozen reference, with or without gradients, full / prefill / one-token decode
        torch._dynamo.config.recompile_limit = 16
        for block in self.transformer.h:
            block.compile(dynamic=True)
        return self

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


# ----------------------------------------------------------------------------- a GPU's peak, a training batch

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
