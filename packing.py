"""
packing.py: the update's micro-batches. A step of OORL learns from B prompts with G completions
each; its forwards (pi_old, pi_ref, and pi_theta in every PPO epoch) take them a few prompts at a
time, each prompt read once for its G completions (GPT.completion_logprobs), so that a forward
holds about micro_batch_tokens tokens whatever B and G are.

    batches = micro_batches(prompt_ids, completions, group_size, micro_batch_tokens)
    for b, (logp, mask) in zip(batches, logprobs_of(model, batches, group_size, temperature)):
        ...   # b.rows: where b's completions are in the rollout; logp, mask: (len(b.rows), W)

A micro-batch is padded to its longest completion, and completions end anywhere up to
max_new_tokens: prompts whose completions are about as long go together. The loss of a
micro-batch is divided by the whole batch's token count (reinforce.policy_loss's token_count),
so the micro-batches' losses and gradients add up to the batch's (tests/test_reinforce.py).

Duck-typed on the model (completion_logprobs), this file imports no other project file.
"""
import dataclasses

import torch


@dataclasses.dataclass
class MicroBatch:
    """Prompts with their G completions each, as GPT.completion_logprobs computes them. The
    per-token tensors are (rows, W), W the longest completion here; mask: the tokens learnt from."""
    prompts: list            # token ids of each prompt
    completions: list        # token ids of their completions, G each (end-of-text included)
    rows: list               # where those completions are in the rollout
    mask: torch.Tensor = None
    logp_old: torch.Tensor = None  # log pi_old of each token
    logp_ref: torch.Tensor = None  # log pi_ref
    advantages: torch.Tensor = None


def micro_batches(prompt_ids, completions, group_size, micro_batch_tokens):
    """The prompts, each with its group_size completions (completions: one list of token ids per
    row, a prompt's G rows together), in micro-batches of about micro_batch_tokens tokens: the
    prompts by the width of their longest completion, cut where the next one would not fit (a
    prompt alone may be over)."""
    G = group_size
    width = [max(map(len, completions[b * G:(b + 1) * G])) for b in range(len(prompt_ids))]
    cuts, current = [], []
    for b in sorted(range(len(prompt_ids)), key=width.__getitem__):
        prompt_width = max(len(prompt_ids[i]) for i in current + [b])
        if current and (len(current) + 1) * (prompt_width + G * width[b]) > micro_batch_tokens:
            cuts.append(current)
            current = []
        current.append(b)
    cuts.append(current)
    rows = [[b * G + g for b in cut for g in range(G)] for cut in cuts]
    return [MicroBatch([prompt_ids[b] for b in cut], [completions[r] for r in rs], rs) for cut, rs in zip(cuts, rows)]


@torch.no_grad()
def logprobs_of(model, batches, group_size, temperature):
    """(log-probs, mask) of every micro-batch's completion tokens under model, float32."""
    return [model.completion_logprobs(b.prompts, b.completions, group_size, temperature) for b in batches]
