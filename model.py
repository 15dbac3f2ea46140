"""
model.py: a small GPT (nanoGPT-like) with a KV cache, whose per-token log-probs go through the
fused kernel of logprobs.py, and the few helpers every script shares: packing prompt + completion rows, loading checkpoints (ours and a
Hugging Face GPT-2's), and the device / autocast set-up.

    from model import GPT, device_setup, load_checkpoint
    device, autocast = device_setup("auto")
    gpt = GPT.from_checkpoint(load_checkpoint("out/sft.pt"), device)
    with autocast:
        logp = gpt.sequence_logprobs([prompt_ids], [completion_ids])  # log pi(completion | prompt)

Nothing to run here: tests/test_model.py tests it.
"""
import math
import os
from contextlib import nullcontext
from dataclasses import dataclass

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
    bias: bool = True  # bias in Linears and LayerNorms, like GPT-2; False is a bit better and faster


class KVCache:
    """Keys and values of every layer for a batch of rows that decode together.

    Rows may be ragged (prompts of different lengths): every row writes to the same slots, and a
    row whose prompt is shorter is left-padded with slots marked invalid. Invalid slots are never
    attended to and do not count towards a row's positions, so each row sees exactly what a
    full forward of that row alone would see.

    dtype should be that of the keys and values the model computes (under autocast, the autocast
    dtype): a float32 cache under bf16 autocast would be cast again, whole, in every layer at
    every decoded token.
    """

    def __init__(self, config, batch_size, max_len, device, dtype=torch.float32):
        # a row's position never exceeds its slot, so this bounds every position the cache sees
        # (checked here, on the host, rather than on every decoded token on the device)
        if max_len > config.block_size:
            raise ValueError(f"KV cache of {max_len} slots > block_size {config.block_size}")
        head_dim = config.n_embd // config.n_head
        shape = (config.n_layer, batch_size, config.n_head, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.valid = torch.zeros(batch_size, max_len, device=device, dtype=torch.bool)
        self.length = 0  # slots filled so far (the same for every row)

    def repeat_rows(self, g):
        """Each row repeated g times in place order (prefill a prompt once, sample G completions)."""
        out = KVCache.__new__(KVCache)
        out.k = self.k.repeat_interleave(g, dim=1)
        out.v = self.v.repeat_interleave(g, dim=1)
        out.valid = self.valid.repeat_interleave(g, dim=0)
        out.length = self.length
        return out


class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head

    def forward(self, x, layer_cache=None, attn_mask=None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if layer_cache is None:  # plain causal attention over this chunk (training, full forward)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               dropout_p=self.attn_dropout if self.training else 0.0)
        else:  # append this chunk to the cache, attend to everything valid so far
            cache_k, cache_v, start = layer_cache
            cache_k[:, :, start:start + T] = k
            cache_v[:, :, start:start + T] = v
            y = F.scaled_dot_product_attention(q, cache_k[:, :, :start + T], cache_v[:, :, :start + T],
                                               attn_mask=attn_mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's own GELU, so pretrained weights match exactly
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, layer_cache=None, attn_mask=None):
        x = x + self.attn(self.ln_1(x), layer_cache, attn_mask)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.vocab_size is not None and config.block_size is not None
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
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
        """Parameter count; the position embeddings are subtracted by default, the token
        embeddings are not (they are tied to the LM head, so they do count as compute)."""
        n_params = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n_params -= self.transformer.wpe.weight.numel()
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
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block, layer_cache in zip(self.transformer.h, layer_caches):
            x = block(x, layer_cache, attn_mask)
        return self.transformer.ln_f(x)

    def forward(self, idx, targets=None, cache=None, valid=None):
        """nanoGPT's contract: with targets, logits at every position and the mean cross-entropy
        (targets of -1 are ignored); without, logits of the last position only (B, 1, V)."""
        x = self.hidden_states(idx, cache, valid)
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

    def sequence_logprobs(self, prompts, completions, temperature=1.0):
        """log pi(completion | prompt) summed over the completion's tokens, one float32 per pair
        (N,), differentiable (wrap in torch.no_grad() for the old policy or the reference).
        prompts, completions: N lists of token ids; a prompt needs at least one token."""
        idx, targets, mask = pack(prompts, completions, pad_id=0)
        device = self.lm_head.weight.device
        token_logps = self.token_logprobs(idx.to(device), targets.to(device), temperature)
        return torch.where(mask.to(device), token_logps, 0.0).sum(dim=1)

    @classmethod
    def from_checkpoint(cls, checkpoint, device="cpu"):
        """The GPT a checkpoint dict (see load_checkpoint) holds, on device."""
        model = cls(GPTConfig(**checkpoint["model_args"]))
        # a model saved while wrapped by torch.compile names its weights "_orig_mod.<name>"
        state = {k.removeprefix("_orig_mod."): v for k, v in checkpoint["model"].items()}
        model.load_state_dict(state)
        return model.to(device)

    @classmethod
    def from_pretrained(cls, model_dir):
        """A GPT with the weights of a Hugging Face GPT-2-family checkpoint in model_dir (its
        config.json and weights; a name already in the local Hugging Face cache works too).
        Nothing is downloaded: the user fetches the model. block_size is the checkpoint's."""
        import transformers  # imported lazily: only this path needs it
        try:
            hf = transformers.AutoConfig.from_pretrained(model_dir, local_files_only=True)
        except (OSError, ValueError) as e:
            raise ValueError(f"{model_dir} is not a Hugging Face model directory (no readable config.json; "
                             f"nothing is downloaded, fetch the model yourself): {e}") from None
        if hf.model_type != "gpt2":
            raise ValueError(f"{model_dir} holds a {hf.model_type!r} model; GPT.from_pretrained loads "
                             f"the GPT-2 architecture only (model_type 'gpt2')")
        # what this GPT computes: tanh GELU, 4x MLP, LayerNorm eps 1e-5, plain attention scaling
        unsupported = {k: v for k, v in dict(
            activation_function=hf.activation_function not in ("gelu_new", "gelu_pytorch_tanh"),
            n_inner=hf.n_inner not in (None, 4 * hf.n_embd),
            layer_norm_epsilon=hf.layer_norm_epsilon != 1e-5,
            scale_attn_by_inverse_layer_idx=hf.scale_attn_by_inverse_layer_idx,
            scale_attn_weights=not hf.scale_attn_weights).items() if v}
        if unsupported:
            raise ValueError(f"{model_dir}: GPT-2 variant with settings this GPT does not implement: "
                             + ", ".join(f"{k}={getattr(hf, k)!r}" for k in unsupported))
        try:
            hf_model = transformers.GPT2LMHeadModel.from_pretrained(model_dir, local_files_only=True)
        except (OSError, ValueError) as e:
            raise ValueError(f"{model_dir}: could not load GPT-2 weights: {e}") from None
        config = GPTConfig(block_size=hf.n_positions, vocab_size=hf.vocab_size, n_layer=hf.n_layer,
                           n_head=hf.n_head, n_embd=hf.n_embd, bias=True)
        model = cls(config)
        sd, sd_hf = model.state_dict(), hf_model.state_dict()
        # Hugging Face GPT-2 stores these as Conv1D (in, out): transpose them into nn.Linear (out, in)
        transposed = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
        keys = [k for k in sd_hf if not k.endswith((".attn.masked_bias", ".attn.bias"))]
        if sorted(keys) != sorted(sd):
            raise ValueError(f"{model_dir}: its weights do not match a GPT-2: missing "
                             f"{sorted(set(sd) - set(keys))[:5]}, unexpected {sorted(set(keys) - set(sd))[:5]}")
        with torch.no_grad():
            for k in keys:
                src = sd_hf[k].t() if k.endswith(transposed) else sd_hf[k]
                assert src.shape == sd[k].shape, f"{k}: {tuple(src.shape)} != {tuple(sd[k].shape)}"
                sd[k].copy_(src)
        return model

    def configure_optimizers(self, weight_decay, learning_rate, betas, device):
        """AdamW; weight decay on matrices only (not biases, LayerNorms); fused (one kernel for
        all parameters) on CUDA. device: "cpu", "cuda", "cuda:0", ... or a torch.device."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        fused = torch.device(device).type == "cuda"
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=fused)

    def flops_per_token(self, seq_len, backward=True):
        """Model flops per token for sequences of seq_len tokens, as in PaLM's appendix B: 2N for
        the matmuls of the forward (N: parameters that multiply, so the tied token embedding
        counts once, as the LM head, and the position embedding not at all) and 4 L d T for
        attention's QK^T and AV at context T (counted whole, as PaLM does, though causal); a
        backward costs twice the forward."""
        cfg = self.config
        forward = 2 * self.get_num_params() + 4 * cfg.n_layer * cfg.n_embd * seq_len
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


# Dense bf16 tensor-core peaks from NVIDIA's data sheets, by a substring of the device name
# (first match wins: "H100 PCIe" before "H100").
PEAK_BF16_FLOPS = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}


def peak_bf16_flops():
    """The current CUDA GPU's bf16 dense peak in flop/s, or None (no GPU, or not in the table)."""
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)


def sample(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """One token id per row of logits (B, V): temperature, then top-k, then nucleus (top-p)."""
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cumulative - sorted_logits.softmax(-1) > top_p  # keep the smallest set reaching top_p
        logits = logits.masked_fill(drop_sorted.scatter(1, order, drop_sorted), float("-inf"))
    # torch.multinomial(probs, 1) draws exactly this (the same numbers from the same generator),
    # but first checks probs on the host, which stalls a GPU at every decoded token: argmax of
    # p / q with q ~ Exp(1) is a draw from p (the exponential race, the Gumbel-max trick exp'd)
    probs = F.softmax(logits, dim=-1)
    race = torch.empty_like(probs).exponential_(1.0, generator=generator)
    return (probs / race).argmax(dim=-1)


# ----------------------------------------------------------------------------- shared helpers

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
    rows = [list(p) + list(c) for p, c in zip(prompts, completions)]
    width = max(len(row) for row in rows)
    full = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width - 1, dtype=torch.bool)
    for r, (row, prompt) in enumerate(zip(rows, prompts)):
        if not prompt:
            raise ValueError(f"pair {r} has an empty prompt: its first completion token needs a token to follow")
        full[r, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[r, len(prompt) - 1:len(row) - 1] = True  # the targets that are completion tokens
    return full[:, :-1], full[:, 1:], mask


def load_checkpoint(path):
    """A checkpoint written by train.py, on the CPU (the caller moves what belongs on a GPU; RNG
    states must stay on the CPU). weights_only=True: tensors and plain data only, so a crafted
    file cannot run code. A missing, unreadable or foreign file is a ValueError naming it."""
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint {path}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # (random bytes, a truncated file, or a pickle of other objects)
        raise ValueError(f"checkpoint {path}: not a readable checkpoint ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(checkpoint, dict) or not {"model", "model_args"} <= checkpoint.keys():
        raise ValueError(f"checkpoint {path}: a torch file, but not a checkpoint of this project "
                         f"(it should be a dict with 'model' and 'model_args')")
    return checkpoint


def device_setup(device="auto", dtype="auto"):
    """(device, autocast) for a run: "auto" is cuda when a GPU is visible, else cpu. dtype "auto"
    is bfloat16 autocast on CUDA (any "cuda:N") and float32 elsewhere; "bfloat16" asks for
    bfloat16 autocast on a CPU too (how the tests check the reduced-precision paths without a
    GPU), "float32" for none. On CUDA float32 matmuls may use TF32 (as in nanoGPT)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device_type = torch.device(device).type
    if device_type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: torch sees no CUDA GPU here (use --device=cpu or auto)")
        torch.set_float32_matmul_precision("high")  # TF32 tensor cores for the float32 matmuls left
    if dtype not in ("auto", "bfloat16", "float32"):
        raise ValueError(f"dtype must be 'auto', 'bfloat16' or 'float32'; got {dtype!r}")
    if dtype == "bfloat16" or (dtype == "auto" and device_type == "cuda"):
        return device, torch.autocast(device_type, dtype=torch.bfloat16)
    return device, nullcontext()
