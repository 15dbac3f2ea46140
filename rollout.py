"""
rollout.py: sample G completions for each of B prompts with the KV cache (the "rollout" of RL),
and the sampling rule it draws tokens by.

Each prompt is prefilled once; its keys and values then serve its G rows without being copied
(caches.SharedPrefixCache), and all B*G rows decode together, one token per step, until every row
has written end-of-text (checked every few tokens) or max_new_tokens. Prompts of different
lengths are left-padded inside the cache (see caches.KVCache), so each row computes exactly what
a forward pass of that row alone would.

Tokens are drawn from softmax(logits / T) (then top-k / top-p), with the LM head computed as the
training forward's fused log-prob kernel computes it (see next_token_logits): the rows are drawn
from pi_old of eq. 5, up to the rounding by which a KV-cached decode through the blocks differs
from a full forward under bf16 autocast. train.py still takes pi_old from the training forward,
so that the ratio starts each step at exactly 1.

The training forward of a rollout (model.GPT.completion_logprobs) takes the same path with
gradients: each prompt runs once and its keys and values serve its G completions.

    from rollout import rollout
    out = rollout(model, [prompt_ids, ...], group_size=8, max_new_tokens=128, eot_id=eot)
    texts = [tok.decode(ids) for ids in out.completion_lists()]
    logp, mask = model.completion_logprobs(out.prompts, out.completion_lists(with_eot=True), 8)
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from caches import SharedPrefixCache, left_padded

# Reading a tensor on the host makes a GPU wait for the step in flight and leaves it idle while
# the next is launched, so the loop does it only every few tokens: then the rows that have ended
# leave the batch (completions end anywhere up to max_new_tokens, and most end early: decoding
# them on would spend most of a rollout on finished rows). Rows that end between two checks
# decode on, masked out, for at most ALL_DONE_CHECK_EVERY - 1 steps. No other value is read on
# the host while decoding.
ALL_DONE_CHECK_EVERY = 8


@dataclass
class Rollout:
    prompts: list            # B lists of prompt token ids
    group_size: int          # G: row r belongs to prompt r // G
    completions: torch.Tensor  # (B*G, max_new_tokens) sampled ids; after end-of-text: eot_id
    mask: torch.Tensor       # (B*G, max_new_tokens) True on completion tokens (end-of-text included)
    truncated: torch.Tensor  # (B*G,) True where no end-of-text came within max_new_tokens
    entropy: torch.Tensor    # (B*G, max_new_tokens) entropy of pi_old at T (before top-k / top-p) per token, for logging

    def completion_lists(self, with_eot=False):
        """Every row's completion as a list of token ids, in one host transfer for the whole
        rollout: with_eot=False what decoding needs (the end-of-text left out), True what the
        mask selects (end-of-text included where one came, as the training forward scores it)."""
        return token_lists(self.completions, self.mask, self.truncated, with_eot)


def token_lists(completions, mask, truncated, with_eot=False):
    """Rows of completions as lists of token ids (see Rollout.completion_lists), in one host transfer."""
    lengths = mask.sum(1, keepdim=True)
    if not with_eot:
        lengths = lengths - (~truncated[:, None]).long()
    rows = torch.cat([lengths, completions], dim=1).tolist()  # (one copy for both)
    return [row[1:1 + row[0]] for row in rows]


def sample(logits, temperature=1.0, top_k=None, top_p=None, generator=None, rows=None, n_rows=None):
    """One token id per row of logits (B, V): temperature, then top-k, then nucleus (top-p).
    rows (B,) of n_rows: the logits are those rows of a batch of n_rows, and each draws the random
    numbers it would draw in the whole batch (a row's sample does not depend on which rows are left)."""
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
    # Inverse transform sampling: the first token whose cumulative probability passes u * total,
    # u ~ U(0, 1), one random number a row. torch.multinomial(probs, 1) draws the same way but
    # first checks probs on the host, which stalls a GPU at every decoded token; a race of one
    # exponential per vocabulary entry (Gumbel-max) avoids that too, at V random numbers a row
    # (~20x slower on a CPU: RESULTS.md). A token of probability 0 is never drawn: its
    # cumulative sum equals the one before it.
    cumulative = F.softmax(logits, dim=-1).cumsum(dim=-1)
    u = torch.rand(cumulative.size(0) if rows is None else n_rows, 1, generator=generator, device=logits.device)
    u = u if rows is None else u[rows]
    return torch.searchsorted(cumulative, u * cumulative[:, -1:], right=True).squeeze(1)


def as_kernel_input(x):
    """x in float32, rounded first as fused_logprobs (logprobs.py) rounds its inputs: to the
    autocast dtype under autocast (it then multiplies them in float32)."""
    if torch.is_autocast_enabled(x.device.type):
        x = x.to(torch.get_autocast_dtype(x.device.type))
    return x.float()


def next_token_logits(model, head, idx, cache, valid=None):
    """(B, V) float32 logits after the last token of idx, which continues the cached rows;
    head = as_kernel_input(model.lm_head.weight), made once per rollout.

    The LM head is computed as the fused log-prob kernel computes it (inputs in the autocast
    dtype, products accumulated in float32, outside autocast). Under autocast nn.Linear would
    round each logit to bf16 (up to 0.4% of it: hundredths of a nat for a confident model), and
    rows would be drawn from another policy than the pi_old of eq. 5. Sampling from pi_old's own
    numbers removes that mismatch instead of correcting for it by importance sampling, and costs
    nearly nothing: the head is one V x d matmul per token, the layers many d x d ones. The
    inputs are rounded first because the kernel rounds them: a float32 head on unrounded inputs
    differs from it as much as a bf16 one. (Bf16 values are exact in TF32: on CUDA, TF32 matmuls
    compute the same products.)"""
    hidden = as_kernel_input(model.hidden_states(idx, cache, valid)[:, -1])
    with torch.autocast(hidden.device.type, enabled=False):
        return F.linear(hidden, head)


@torch.no_grad()
def rollout(model, prompts, group_size, max_new_tokens, eot_id, temperature=1.0, top_k=None,
            top_p=None, generator=None, on_end=None):
    """G = group_size samples for each prompt (lists of token ids). generator seeds the sampling.

    on_end(rows, completions, truncated), if given, receives each row as soon as it is final
    (at the check after its end-of-text, or at the end): the row indices, their completions as
    completion_lists() gives them, and whether each was cut off. The reward can then score the
    rows that ended early while the others decode (reward.Scorer): rows end anywhere up to
    max_new_tokens, and a GPU would otherwise wait for the CPU's compilers after every rollout."""
    device = model.lm_head.weight.device
    B, G = len(prompts), group_size
    idx, valid, cache = left_padded(model, prompts, max_new_tokens)
    head = as_kernel_input(model.lm_head.weight)
    logits = next_token_logits(model, head, idx, cache, valid)  # prefill: once per prompt
    cache = SharedPrefixCache(cache, G, max_new_tokens)  # each prompt's slots serve its G rows
    logits = logits.repeat_interleave(G, dim=0)

    completions = torch.full((B * G, max_new_tokens), eot_id, dtype=torch.long, device=device)
    mask = torch.zeros(B * G, max_new_tokens, dtype=torch.bool, device=device)
    entropy = torch.zeros(B * G, max_new_tokens, device=device)
    done = torch.zeros(B * G, dtype=torch.bool, device=device)
    live = torch.arange(B * G, device=device)  # the rows still in the batch (and in the cache)
    handed = torch.zeros(B * G, dtype=torch.bool, device=device)  # rows given to on_end

    def hand_over(rows):
        handed[rows] = True
        on_end(rows.tolist(), token_lists(completions[rows], mask[rows], ~done[rows]), (~done[rows]).tolist())

    for t in range(max_new_tokens):
        token = sample(logits, temperature, top_k, top_p, generator, live, B * G)
        ended = done[live]
        token = torch.where(ended, torch.full_like(token, eot_id), token)
        logp = F.log_softmax(logits / max(temperature, 1e-6), dim=-1)  # greedy (T=0) scores at T->0
        entropy[live, t] = torch.where(ended, 0.0, -(logp.exp() * logp).nan_to_num().sum(-1))
        completions[live, t] = token
        mask[live, t] = ~ended
        done[live] = ended | (token == eot_id)
        if t == max_new_tokens - 1:
            break
        if (t + 1) % ALL_DONE_CHECK_EVERY == 0:
            going = ~done[live]
            if on_end is not None and bool((~going & ~handed[live]).any()):
                hand_over(live[~going & ~handed[live]])
            left = int(going.sum())
            if left == 0:
                break
            if left < len(live):
                # (at least two rows stay: torch.compile specialises a batch of one, and would
                # compile the model anew for the last row of a rollout)
                going[(~going).nonzero()[:max(0, 2 - left), 0]] = True
                live, token, cache = live[going], token[going], cache.select_rows(going)
        logits = next_token_logits(model, head, token[:, None], cache)
    if on_end is not None and not bool(handed.all()):
        hand_over((~handed).nonzero()[:, 0])
    return Rollout(prompts=[list(p) for p in prompts], group_size=G, completions=completions,
                   mask=mask, truncated=~done, entropy=entropy)
