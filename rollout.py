"""
rollout.py: sample G completions for each of B prompts with the KV cache (the "rollout" of RL).

Each prompt is prefilled once; its cache is then copied to its G rows, and all B*G rows decode
together, one token per step, until every row has written end-of-text (checked every few tokens)
or max_new_tokens. Prompts of different lengths are left-padded inside the cache (see
model.KVCache), so each row computes exactly what a forward pass of that row alone would.

The returned log-probs are those of the sampled tokens at the sampling temperature,
log softmax(logits / T)[token], without the top-k / top-p truncation: the pi_old of the ratio in
eq. 5, as the loss evaluates pi_theta at the same temperature. They equal the training forward's
(model.token_logprobs) in float32 only: under bf16 autocast the decode runs in bf16 through the
KV cache and the training forward through the fused kernel, and the two differ (on a CPU with a
tiny model: 0.0025 on average, up to 0.06), so a reduced-precision run recomputes pi_old with
the training forward before the update.

    from rollout import rollout
    out = rollout(model, [prompt_ids, ...], group_size=8, max_new_tokens=128, eot_id=eot)
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model import KVCache, pack, sample

# Reading a tensor on the host (bool(done.all())) makes a GPU wait for the step in flight and
# leaves it idle while the next is launched, so the loop does it only every few tokens. Rows that
# end meanwhile decode on, masked out: at most ALL_DONE_CHECK_EVERY - 1 wasted steps (and draws
# from the generator) per rollout. No other value is read on the host while decoding.
ALL_DONE_CHECK_EVERY = 8


@dataclass
class Rollout:
    prompts: list            # B lists of prompt token ids
    group_size: int          # G: row r belongs to prompt r // G
    completions: torch.Tensor  # (B*G, max_new_tokens) sampled ids; after end-of-text: eot_id
    mask: torch.Tensor       # (B*G, max_new_tokens) True on completion tokens (end-of-text included)
    logprobs: torch.Tensor   # (B*G, max_new_tokens) float32 log pi_old of each sampled token (0 off mask)
    truncated: torch.Tensor  # (B*G,) True where no end-of-text came within max_new_tokens
    entropy: torch.Tensor    # (B*G, max_new_tokens) entropy of pi_old at each sampled position (for logging)

    def completion_ids(self, row):
        """The tokens of one completion, end-of-text excluded."""
        ids = self.completions[row][self.mask[row]].tolist()
        return ids if self.truncated[row] else ids[:-1]

    def sequences(self, pad_id):
        """Right-padded prompt + completion rows for a training forward: returns idx, targets
        (idx shifted by one) and a mask over targets that selects the completion tokens, so that
        model.token_logprobs(idx, targets)[mask] lines up with self.logprobs[self.mask]."""
        completions = [self.completions[r][self.mask[r]].tolist() for r in range(len(self.completions))]
        prompts = [self.prompts[r // self.group_size] for r in range(len(completions))]
        device = self.completions.device
        return tuple(t.to(device) for t in pack(prompts, completions, pad_id))


@torch.no_grad()
def rollout(model, prompts, group_size, max_new_tokens, eot_id, temperature=1.0, top_k=None,
            top_p=None, generator=None):
    """G = group_size samples for each prompt (lists of token ids). generator seeds the sampling."""
    device = model.lm_head.weight.device
    B, G = len(prompts), group_size
    prompt_len = max(len(p) for p in prompts)
    assert prompt_len + max_new_tokens <= model.config.block_size, (
        f"prompt of {prompt_len} + {max_new_tokens} new tokens > block_size {model.config.block_size}")
    idx = torch.zeros(B, prompt_len, dtype=torch.long, device=device)
    valid = torch.zeros(B, prompt_len, dtype=torch.bool, device=device)
    for b, p in enumerate(prompts):  # left padding: every prompt ends at the same slot
        idx[b, prompt_len - len(p):] = torch.tensor(p, device=device)
        valid[b, prompt_len - len(p):] = True

    # keys and values come out of the model in the autocast dtype when autocast is on
    cache_dtype = (torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type)
                   else model.lm_head.weight.dtype)
    prompt_cache = KVCache(model.config, B, prompt_len + max_new_tokens, device, cache_dtype)
    logits, _ = model(idx, cache=prompt_cache, valid=valid)  # prefill: once per prompt
    cache = prompt_cache.repeat_rows(G)
    logits = logits[:, -1].float().repeat_interleave(G, dim=0)

    completions = torch.full((B * G, max_new_tokens), eot_id, dtype=torch.long, device=device)
    logprobs = torch.zeros(B * G, max_new_tokens, device=device)
    mask = torch.zeros(B * G, max_new_tokens, dtype=torch.bool, device=device)
    entropy = torch.zeros(B * G, max_new_tokens, device=device)
    done = torch.zeros(B * G, dtype=torch.bool, device=device)
    for t in range(max_new_tokens):
        token = sample(logits, temperature, top_k, top_p, generator)
        token = torch.where(done, torch.full_like(token, eot_id), token)
        pi_old = F.log_softmax(logits / max(temperature, 1e-6), dim=-1)  # greedy (T=0) scores at T->0
        logprobs[:, t] = torch.where(done, 0.0, pi_old.gather(1, token[:, None])[:, 0])
        entropy[:, t] = torch.where(done, 0.0, -(pi_old.exp() * pi_old).nan_to_num().sum(-1))
        completions[:, t] = token
        mask[:, t] = ~done
        done |= token == eot_id
        if t == max_new_tokens - 1 or (t + 1) % ALL_DONE_CHECK_EVERY == 0 and bool(done.all()):
            break
        logits, _ = model(token[:, None], cache=cache)
        logits = logits[:, -1].float()
    return Rollout(prompts=[list(p) for p in prompts], group_size=G, completions=completions,
                   mask=mask, logprobs=logprobs, truncated=~done, entropy=entropy)
