"""
reinforce.py: the on-policy half of OORL: advantage estimators and the clipped policy loss (eq. 5).

The objective (eq. 1) is max E[R(x, y)] - beta_kl * KL(pi_theta || pi_ref), with R the binary
unit-test reward of eq. 4. A rollout gives N completions (G per prompt), their tokens, the
log-probs under the policy that sampled them (pi_old) and under the frozen SFT model (pi_ref).
All per-token tensors here are (N, T) with a bool mask (N, T) that is True on completion tokens.

Two ways to turn rewards into per-token advantages A_t (train.py's adv_estimator):

  "reinforce++" (the paper's choice, as in OpenRLHF): the KL penalty becomes a per-token reward,
      r_t = -beta_kl * (log pi_old_t - log pi_ref_t) + [t is the last completion token] * R,
      G_t = sum_{s >= t} r_s,  A = (G - mean) / (std + 1e-8) over every completion token of the batch.
      No critic and no per-prompt baseline: the global normalisation is the baseline.
  "grpo": A_i = (R_i - mean_group) / (std_group + 1e-4) for every token of completion i, and the
      KL is kept out of the reward and added to the loss instead, as the k3 estimator (kl_k3).

Both feed the same PPO-style clipped surrogate (eq. 5), rho_t = pi_theta / pi_old:

      L_OnP = - mean_t min(rho_t * A_t, clip(rho_t, 1 - eps, 1 + eps_high) * A_t)

with eps_high = eps in eq. 5; a larger eps_high is DAPO's clip-higher (arXiv 2503.14476), which
lets a token with A > 0 and a low probability grow further in one update, against entropy collapse.

    adv, _ = reinforce_pp_advantages(rewards, logp_old, logp_ref, mask, beta_kl=0.01)
    for epoch in range(ppo_epochs):
        loss, stats = policy_loss(logp, logp_old, adv, mask, clip_eps=0.2)
    # grpo instead: adv = grpo_advantages(rewards, G, mask)
    #               loss = loss + beta_kl * masked_mean(kl_k3(logp, logp_ref, mask), mask)

Under torchrun every rank holds a share of the batch's completions. "Over the batch" then means
over the union of the ranks' shares: the normalisation's mean and std and the loss's token count
are summed over the ranks (torch.distributed.all_reduce), so that N ranks compute exactly the
advantages and, once their gradients are summed, the gradient of one process on the whole batch.

Tests: python -m pytest tests/test_reinforce.py
"""
import torch
import torch.distributed as dist


def _check_tokens(mask, **tensors):
    """Clear errors for the shape mistakes a caller is likely to make."""
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor (True = a completion token), got {mask.dtype}")
    if mask.dim() != 2:
        raise ValueError(f"mask must be (N, T), got shape {tuple(mask.shape)}")
    for name, tensor in tensors.items():
        if tensor.shape != mask.shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)} but mask has {tuple(mask.shape)}: "
                             f"per-token tensors must line up with the mask")


def _as_rewards(rewards, mask):
    """rewards (a list of floats from reward.score, or a tensor) as an (N,) float tensor."""
    rewards = torch.as_tensor(rewards, dtype=torch.float32, device=mask.device)
    if rewards.shape != (mask.size(0),):
        raise ValueError(f"rewards must hold one value per completion: shape {tuple(rewards.shape)}, "
                         f"but mask has {mask.size(0)} rows")
    return rewards


def _grouped(rewards, group_size):
    """rewards (N,) as (N / G, G): row p holds the G rewards of prompt p (rollout.py's order)."""
    if group_size < 1 or rewards.numel() % group_size != 0:
        raise ValueError(f"{rewards.numel()} rewards cannot be split into groups of {group_size}: "
                         f"expected G = group_size completions for every prompt")
    return rewards.view(-1, group_size)


def _sum_over_ranks(tensor):
    """tensor summed over torchrun's ranks (itself in one process); no gradient flows through."""
    if dist.is_available() and dist.is_initialized():
        tensor = tensor.detach().clone()
        dist.all_reduce(tensor)
    return tensor


def masked_mean(values, mask, token_count=None):
    """Mean over the True entries of mask, all rows of every rank together. Differentiable: this
    rank's sum over the tokens of the whole batch (the token count is summed over the ranks), so
    that summing the ranks' gradients gives the gradient of the mean. torch.where (not a
    multiply) keeps masked-out entries out of the value and the gradient even if they hold inf
    or NaN. token_count: the whole batch's count when values hold one micro-batch of it (then no
    collective runs: ranks may hold different numbers of micro-batches), so that the micro-batches'
    values add up to the batch's mean."""
    if token_count is None:
        token_count = _sum_over_ranks(mask.sum().to(values.dtype))
    count = torch.as_tensor(token_count, dtype=values.dtype, device=values.device)
    return torch.where(mask, values, 0.0).sum() / count.clamp(min=1)


def global_masked_mean(values, mask):
    """The value of masked_mean on every rank (its sum over the ranks), without gradient: for
    statistics (the normalisation of REINFORCE++, logged figures)."""
    return _sum_over_ranks(masked_mean(values.detach(), mask))


@torch.no_grad()
def reinforce_pp_advantages(rewards, logp_old, logp_ref, mask, beta_kl):
    """REINFORCE++ advantages. Returns (advantages, returns), both (N, T) and 0 off the mask.

    rewards (N,): the eq. 4 reward of each completion; logp_old, logp_ref (N, T): log-probs of
    the sampled tokens under the sampling policy and the frozen reference.
    """
    _check_tokens(mask, logp_old=logp_old, logp_ref=logp_ref)
    rewards = _as_rewards(rewards, mask)
    if not mask.any(dim=1).all():
        raise ValueError("every completion needs at least one token (a row of mask is all False): "
                         "there is no last token to put its reward on")
    # The KL term of eq. 1 as a per-token reward: log pi_old - log pi_ref at the sampled token is
    # an unbiased estimate of KL(pi_old || pi_ref) at that step (the "k1" estimator).
    token_rewards = torch.where(mask, -beta_kl * (logp_old - logp_ref), 0.0)
    # The unit-test reward arrives once, on the last completion token (the end-of-text, or the
    # last token of a cut-off completion). Flipping finds the last True of each row.
    N, T = mask.shape
    last = T - 1 - mask.flip(1).long().argmax(dim=1)
    token_rewards[torch.arange(N, device=mask.device), last] += rewards
    # G_t = sum_{s >= t} r_s (no discount, like OpenRLHF): a reversed cumulative sum
    returns = torch.where(mask, token_rewards.flip(1).cumsum(1).flip(1), 0.0)
    # Global normalisation over every completion token of the batch, with the population std
    # (the batch holds thousands of tokens, so n vs n - 1 makes no difference; OpenRLHF does the same).
    mean = global_masked_mean(returns, mask)
    std = global_masked_mean((returns - mean) ** 2, mask).sqrt()
    advantages = torch.where(mask, (returns - mean) / (std + 1e-8), 0.0)
    return advantages, returns


@torch.no_grad()
def grpo_advantages(rewards, group_size, mask):
    """GRPO advantages (N, T): A_i = (R_i - mean_group) / (std_group + 1e-4) on every token of
    completion i, 0 off the mask. Completions are grouped in rollout.py's order (row r belongs
    to prompt r // group_size).

    std_group is the *sample* std (divide by G - 1), as in the reference implementations of
    GRPO (DeepSeekMath's, TRL's GRPOTrainer, OpenRLHF's group_norm all use torch.std's default),
    so numbers compare with theirs. Against the population std it only scales every advantage by
    the same sqrt(G / (G - 1)). A group whose G rewards are all equal gets A = 0: it teaches nothing.
    """
    _check_tokens(mask)
    rewards = _as_rewards(rewards, mask)
    if group_size < 2:
        raise ValueError(f"grpo needs group_size >= 2 completions per prompt to compare, got {group_size}")
    grouped = _grouped(rewards, group_size)
    normalised = (grouped - grouped.mean(dim=1, keepdim=True)) / (grouped.std(dim=1, keepdim=True) + 1e-4)
    return torch.where(mask, normalised.reshape(-1, 1), 0.0)


def zero_advantage_share(rewards, group_size):
    """Share of prompts whose G rewards are all equal (all pass or all fail): under grpo they
    give no learning signal, and a share near 1 says the task is too easy or too hard."""
    grouped = _grouped(torch.as_tensor(rewards, dtype=torch.float32), group_size)
    return (grouped == grouped[:, :1]).all(dim=1).float().mean().item()


def kl_k3(logp, logp_ref, mask):
    """Per-token k3 estimate of KL(pi_theta || pi_ref) (Schulman, "Approximating KL divergence"):
    exp(ref - logp) - (ref - logp) - 1. Unbiased for tokens sampled from pi_theta, always >= 0,
    and differentiable in logp: the grpo option adds beta_kl * its masked mean to the loss.
    Masked-out positions are exactly 0 (log ratio 0 gives e^0 - 0 - 1)."""
    _check_tokens(mask, logp=logp, logp_ref=logp_ref)
    log_ratio = torch.where(mask, logp_ref - logp, 0.0)
    return torch.exp(log_ratio) - log_ratio - 1


def policy_loss(logp, logp_old, advantages, mask, clip_eps=0.2, token_count=None, clip_eps_high=None):
    """The clipped surrogate of eq. 5. Returns (loss, stats).

    logp (N, T): log pi_theta of the sampled tokens (with grad); logp_old: the same under the
    policy that sampled them; advantages (N, T) from one of the estimators above.
    stats: "clip_frac" (share of tokens where the clip is active, i.e. their gradient is 0) and
    "approx_kl" (k3 estimate of KL(pi_old || pi_theta), how far the update has moved), floats.
    token_count: for a micro-batch, the whole batch's number of completion tokens (see
    masked_mean); the loss and both stats are then this micro-batch's share, to be summed.
    clip_eps_high: the upper clip, ratio <= 1 + clip_eps_high (None: clip_eps, eq. 5's symmetric clip).
    """
    _check_tokens(mask, logp=logp, logp_old=logp_old, advantages=advantages)
    clip_eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    log_ratio = torch.where(mask, logp - logp_old, 0.0)
    ratio = torch.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps_high) * advantages
    # The pessimistic (smaller) of the two: once the ratio has moved more than eps in the
    # direction the advantage favours, the clipped term wins and that token's gradient is 0.
    per_token = -torch.min(unclipped, clipped)
    # Reduced token-level over the whole batch (sum over all completion tokens / their number),
    # like DAPO, rather than a mean per completion then over completions: every token weighs the
    # same, so the tokens of long completions are not down-weighted.
    loss = masked_mean(per_token, mask, token_count)

    with torch.no_grad():
        clip_active = ((ratio > 1.0 + clip_eps_high) & (advantages > 0)) | ((ratio < 1.0 - clip_eps) & (advantages < 0))
        share = global_masked_mean if token_count is None else masked_mean
        extra = () if token_count is None else (token_count,)
        stats = {"clip_frac": share(clip_active.float(), mask, *extra).item(),
                 "approx_kl": share(ratio - 1 - log_ratio, mask, *extra).item()}
    return loss, stats
