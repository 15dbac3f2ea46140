"""
gepo.py: Group Equivalent Preference Optimization (paper eqs. 6-9), and DPO for the ablation.

GEPO learns from groups of LLVM IRs of one C function (ir.py builds them): the winners
y_w^1..n all compute the function (they pass its tests), the losers y_l^1..m are
provably not (each fails a test). Like DPO it needs no reward model: the implicit reward of a
response is how much more likely the policy makes it than the frozen reference,

    r(x, y) = beta * (log pi_theta(y|x) - log pi_ref(y|x)),   log-probs summed over response tokens,

and the loss of a group (eq. 9) pushes the mean winner reward above the mean loser reward, while
a variance term asks the policy to prefer all equivalent winners *equally*:

    L_GEPO = -log sigmoid( mean_i r(x, y_w^i) - mean_j r(x, y_l^j) ) + lam * Var_i r(x, y_w^i)

(population variance over the winners; lam = 1 in the paper). With one winner, one loser and
lam = 0 this is exactly DPO's sigmoid loss, which dpo_loss implements for the ablation.

Groups have different numbers of winners and losers, so a batch of B groups is padded to
(B, n_max) and (B, m_max) with boolean masks; padded entries never touch the loss or its gradient.

    from gepo import group_logps, gepo_loss
    chosen, rejected, chosen_mask, rejected_mask = group_logps(model, groups)
    with torch.no_grad():  # the reference is frozen: a cache computes each IR's log-prob once per run
        ref_chosen, ref_rejected, _, _ = group_logps(ref_model, groups, cache=ref_cache)
    loss = gepo_loss(chosen, rejected, ref_chosen, ref_rejected, chosen_mask, rejected_mask)
    loss, figures = preference_loss(model, groups, ref_chosen, ref_rejected)  # the two lines above, and gepo_metrics
    print(probe(model, ref_model, held_out_groups))   # {"margin", "positive_share", "groups"}

Tests: python -m pytest tests/test_gepo.py
"""
import torch
import torch.nn.functional as F


def _check_padded(name, logps, ref_logps, mask):
    """Clear errors for the shape mistakes a caller is likely to make."""
    if mask.dtype != torch.bool:
        raise ValueError(f"{name}_mask must be a bool tensor (True = a real response), got {mask.dtype}")
    if logps.dim() != 2 or logps.shape != ref_logps.shape or logps.shape != mask.shape:
        raise ValueError(f"policy {name} log-probs {tuple(logps.shape)}, reference {tuple(ref_logps.shape)} "
                         f"and {name}_mask {tuple(mask.shape)} must all be the same (B, n) shape")
    if not mask.any(dim=1).all():
        raise ValueError(f"every group needs at least one {name} response: a row of {name}_mask is all False")


def _masked_mean(values, mask):
    """Mean over the True entries of each row. torch.where (not a multiply) keeps padding out of
    both the value and the gradient, even if the padding holds inf (inf * 0 would be NaN)."""
    return torch.where(mask, values, 0.0).sum(dim=1) / mask.sum(dim=1)


def _group_terms(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                 chosen_mask, rejected_mask, beta):
    """Per group: margin = mean winner reward - mean loser reward, and the winners' population
    variance, both (B,). The one computation behind gepo_loss and gepo_metrics."""
    _check_padded("chosen", policy_chosen_logps, ref_chosen_logps, chosen_mask)
    _check_padded("rejected", policy_rejected_logps, ref_rejected_logps, rejected_mask)
    if chosen_mask.size(0) != rejected_mask.size(0):
        raise ValueError(f"chosen and rejected must hold the same groups: batch sizes "
                         f"{chosen_mask.size(0)} and {rejected_mask.size(0)}")
    # the implicit reward of each response (eqs. 6-9): beta * log(pi_theta / pi_ref)
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)
    chosen_mean = _masked_mean(chosen_rewards, chosen_mask)
    margin = chosen_mean - _masked_mean(rejected_rewards, rejected_mask)
    # population variance (divide by n, not n - 1): a group with a single winner has variance 0
    winner_var = _masked_mean((chosen_rewards - chosen_mean[:, None]) ** 2, chosen_mask)
    return margin, winner_var


def gepo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
              chosen_mask, rejected_mask, beta=0.1, lam=1.0):
    """The GEPO loss (eq. 9), averaged over the B groups of the batch.

    policy_/ref_chosen_logps (B, n_max) and policy_/ref_rejected_logps (B, m_max) are summed
    response log-probs; chosen_mask / rejected_mask (bool, same shapes) mark the real responses.
    Gradients flow into the policy log-probs; the reference ones are constants.
    """
    margin, winner_var = _group_terms(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                                      ref_rejected_logps, chosen_mask, rejected_mask, beta)
    # -log sigmoid(margin): the Bradley-Terry preference of the winners' mean over the losers'
    # mean; lam * Var: all equivalent programs should be equally preferred (eq. 9)
    return (-F.logsigmoid(margin) + lam * winner_var).mean()


@torch.no_grad()
def gepo_metrics(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                 chosen_mask, rejected_mask, beta=0.1):
    """Detached floats for the training log: mean margin (winner minus loser implicit reward),
    mean winner variance, and accuracy (share of groups whose margin is > 0)."""
    margin, winner_var = _group_terms(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                                      ref_rejected_logps, chosen_mask, rejected_mask, beta)
    return {"margin": margin.mean().item(),
            "winner_var": winner_var.mean().item(),
            "accuracy": (margin > 0).float().mean().item()}


def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    """DPO's sigmoid loss over B (winner, loser) pairs, inputs (B,): the ablation's baseline
    (GEPO with n = m = 1 and lam = 0)."""
    inputs = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    shapes = {tuple(t.shape) for t in inputs}
    if len(shapes) != 1 or policy_chosen_logps.dim() != 1:
        raise ValueError(f"dpo_loss takes four (B,) tensors of summed log-probs, got shapes {sorted(shapes)}")
    logits = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    return -F.logsigmoid(beta * logits).mean()


def encode_groups(rows, encode, eot, block_size):
    """IR groups of prepare.py's jsonl rows ({"prompt", "winners", "losers"} texts) as token ids,
    {"prompt_ids", "winner_ids", "loser_ids"}, keeping those whose prompt and longest response fit
    in block_size. Each response ends with end-of-text, so its probability of stopping counts."""
    groups = [dict(prompt_ids=encode(row["prompt"]), winner_ids=[encode(w) + [eot] for w in row["winners"]],
                   loser_ids=[encode(l) + [eot] for l in row["losers"]]) for row in rows]
    return [g for g in groups if len(g["prompt_ids"]) + max(map(len, g["winner_ids"] + g["loser_ids"])) <= block_size]


def sample_groups(groups, count, rng, pairs=False):
    """count IR groups drawn without replacement by rng (a random.Random). With pairs=True (the
    "+DPO" row of the ablation) each keeps one (winner, loser) pair, drawn afresh at every call:
    over training DPO then sees every pair of a group, as GEPO sees them all at once, rather than
    one fixed pair (the first winner is often the -O0 IR)."""
    chosen = rng.sample(groups, count)
    if pairs:
        chosen = [dict(g, winner_ids=[rng.choice(g["winner_ids"])], loser_ids=[rng.choice(g["loser_ids"])])
                  for g in chosen]
    return chosen


def group_logps(model, groups, device=None, cache=None):
    """Summed response log-probs of every winner and loser of a batch of IR groups, in one forward.

    groups: B dicts {"prompt_ids": [int], "winner_ids": [[int]], "loser_ids": [[int]]}, already
    tokenized (each response ends with the end-of-text id, so its probability of stopping counts).
    model: anything with sequence_logprobs(prompts, completions) -> (N,) summed completion
    log-probs, e.g. model.GPT (one packed forward through the fused log-prob kernel).
    Differentiable when called with grad enabled; wrap the reference model's call in torch.no_grad().

    Returns chosen (B, n_max), rejected (B, m_max), chosen_mask, rejected_mask, ready for gepo_loss,
    on `device` (None: the model's; with a cache, the CPU's).

    cache: a dict kept by the caller for a frozen model (the reference), {(prompt, response): log-prob}:
    only the sequences it lacks are computed, so each IR costs one reference forward per run.
    """
    if not groups:
        raise ValueError("group_logps needs at least one group")
    # Flatten every (prompt, response) pair of the batch into one list of sequences, remembering
    # where each goes back: (is_winner, group index, index within the group's winners/losers).
    prompts, responses, places = [], [], []
    for g, group in enumerate(groups):
        if not group["prompt_ids"]:
            raise ValueError(f"group {g} has an empty prompt: the first response token needs a token to follow")
        for is_winner, key in ((True, "winner_ids"), (False, "loser_ids")):
            if not group[key]:
                raise ValueError(f"group {g} has no {key}: GEPO needs at least one winner and one loser per group")
            for k, response in enumerate(group[key]):
                if not response:
                    raise ValueError(f"group {g}: {key}[{k}] is empty (it should at least hold end-of-text)")
                prompts.append(list(group["prompt_ids"]))
                responses.append(list(response))
                places.append((is_winner, g, k))
    if cache is None:
        sequence_logps = model.sequence_logprobs(prompts, responses)  # log pi(y|x), (N,)
    else:
        keys = [(tuple(p), tuple(r)) for p, r in zip(prompts, responses)]
        missing = list(dict.fromkeys(key for key in keys if key not in cache))  # each distinct one once
        if missing:
            values = model.sequence_logprobs([list(p) for p, _ in missing], [list(r) for _, r in missing])
            cache.update(zip(missing, values.detach().float().cpu().tolist()))
        sequence_logps = torch.tensor([cache[key] for key in keys], dtype=torch.float32, device=device)
    if device is not None:
        sequence_logps = sequence_logps.to(device)

    # Scatter the sequences back to the padded (B, n_max) / (B, m_max) layout of gepo_loss.
    # index_put (not in-place) keeps the autograd graph simple: padding entries are plain zeros.
    device, B = sequence_logps.device, len(groups)
    outputs = []
    for is_winner, key in ((True, "winner_ids"), (False, "loser_ids")):
        rows = [row for row, place in enumerate(places) if place[0] == is_winner]
        group_index = torch.tensor([places[row][1] for row in rows], device=device)
        slot_index = torch.tensor([places[row][2] for row in rows], device=device)
        width = max(len(group[key]) for group in groups)
        values = sequence_logps.new_zeros(B, width).index_put((group_index, slot_index), sequence_logps[rows])
        mask = torch.zeros(B, width, dtype=torch.bool, device=device)
        mask[group_index, slot_index] = True
        outputs.append((values, mask))
    (chosen, chosen_mask), (rejected, rejected_mask) = outputs
    return chosen, rejected, chosen_mask, rejected_mask


def preference_loss(policy, groups, ref_chosen, ref_rejected, kind="gepo", beta=0.1, lam=1.0, device=None):
    """The policy's preference loss on a batch of IR groups, given their reference log-probs:
    GEPO (eqs. 6-9) over whole groups, or (kind="dpo") DPO on their single pairs; and
    gepo_metrics' figures of the batch."""
    chosen, rejected, chosen_mask, rejected_mask = group_logps(policy, groups, device)
    args = (chosen, rejected, ref_chosen, ref_rejected, chosen_mask, rejected_mask)
    if kind == "dpo":
        loss = dpo_loss(chosen[:, 0], rejected[:, 0], ref_chosen[:, 0], ref_rejected[:, 0], beta=beta)
    else:
        loss = gepo_loss(*args, beta=beta, lam=lam)
    return loss, gepo_metrics(*args, beta=beta)


@torch.no_grad()
def probe(policy, reference, groups, beta=0.1, batch_groups=8):
    """The IR-equivalence probe: how much more does the policy prefer equivalent IRs over
    inequivalent ones than its reference does? On groups never trained on, per group the GEPO
    margin mean_i r(x, y_w^i) - mean_j r(x, y_l^j) with r = beta * log(pi_policy / pi_ref) (eqs.
    6-9); returns {"margin": its mean over groups, "positive_share": the share of groups where it is
    > 0, "groups": how many}. The reference against itself gives margin 0. Both models are put in
    eval mode (no dropout) for the probe and given back in the mode they were in.
    """
    if not groups:
        raise ValueError("probe needs at least one IR group")
    modes = (policy.training, reference.training)
    policy.eval(), reference.eval()
    margins = []
    for start in range(0, len(groups), batch_groups):
        batch = groups[start:start + batch_groups]
        chosen, rejected, chosen_mask, rejected_mask = group_logps(policy, batch)
        ref_chosen, ref_rejected, _, _ = group_logps(reference, batch, chosen.device)
        margin, _ = _group_terms(chosen, rejected, ref_chosen, ref_rejected, chosen_mask, rejected_mask, beta)
        margins.append(margin.float().cpu())
    policy.train(modes[0]), reference.train(modes[1])
    margin = torch.cat(margins)
    return {"margin": margin.mean().item(), "positive_share": (margin > 0).float().mean().item(), "groups": len(groups)}
