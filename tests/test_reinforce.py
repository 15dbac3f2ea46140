"""Tests of reinforce.py: the advantage estimators and the clipped loss (eq. 5) against
hand-worked numbers, masks, groups whose rewards are all equal, and the k3 KL estimator."""
import math
import statistics

import pytest
import torch

from reinforce import (grpo_advantages, kl_k3, masked_mean, policy_loss, reinforce_pp_advantages,
                       zero_advantage_share)

T, F = True, False


def test_reinforce_pp_matches_hand_computation():
    # beta_kl = 0.1; r_t = -0.1 * (logp_old - logp_ref) + [t last] * R; G_t = sum_{s >= t} r_s
    mask = torch.tensor([[T, T, F],    # a completion that ended early: position 2 is padding
                         [T, T, T],
                         [F, T, T]])   # a mask that does not start at 0
    rewards = torch.tensor([1.0, 0.0, 0.0])
    logp_old = torch.tensor([[-1.0, -2.0, 99.0], [-1.0, -1.0, -1.0], [50.0, -1.0, -3.0]])
    logp_ref = torch.tensor([[-1.5, -2.0, -7.0], [-1.0, -2.0, -1.0], [-50.0, -1.0, -1.0]])
    # row 0: kl [0.5, 0]  -> r [-0.05, 0 + 1] -> G [0.95, 1.0]
    # row 1: kl [0, 1, 0] -> r [0, -0.1, 0]   -> G [-0.1, -0.1, 0.0]
    # row 2: kl [_, 0, -2] -> r [_, 0, 0.2]   -> G [0.2, 0.2]
    hand_returns = [[0.95, 1.0, 0.0], [-0.1, -0.1, 0.0], [0.0, 0.2, 0.2]]
    advantages, returns = reinforce_pp_advantages(rewards, logp_old, logp_ref, mask, beta_kl=0.1)
    assert torch.allclose(returns, torch.tensor(hand_returns), atol=1e-6)

    on_mask = [0.95, 1.0, -0.1, -0.1, 0.0, 0.2, 0.2]  # the masked returns, row by row
    mean, std = statistics.fmean(on_mask), statistics.pstdev(on_mask)  # population std
    expected = torch.zeros(3, 3)
    expected[mask] = torch.tensor([(g - mean) / (std + 1e-8) for g in on_mask])
    assert torch.allclose(advantages, expected, atol=1e-5)
    assert advantages[~mask].eq(0).all()
    assert masked_mean(advantages, mask).item() == pytest.approx(0.0, abs=1e-6)


def test_reinforce_pp_accepts_a_list_of_rewards():
    mask = torch.tensor([[T, T], [T, F]])
    logp = torch.zeros(2, 2)
    from_list, _ = reinforce_pp_advantages([1.0, 0.0], logp, logp, mask, beta_kl=0.05)
    from_tensor, _ = reinforce_pp_advantages(torch.tensor([1.0, 0.0]), logp, logp, mask, beta_kl=0.05)
    assert torch.equal(from_list, from_tensor)


def test_reinforce_pp_all_equal_rewards_and_no_kl_gives_zero_advantages():
    mask = torch.tensor([[T, T, T, F], [T, F, F, F], [T, T, T, T], [T, T, F, F]])
    logp = torch.randn(4, 4)
    for value in (0.0, 1.0):
        advantages, returns = reinforce_pp_advantages(torch.full((4,), value), logp, logp, mask, beta_kl=0.1)
        assert torch.equal(returns[mask], torch.full((int(mask.sum()),), value))
        assert advantages.eq(0).all()


def test_reinforce_pp_has_no_per_prompt_baseline():
    # Unlike grpo, a prompt whose G rewards are all 1 still gets a positive advantage when other
    # prompts of the batch fail: the baseline is the whole batch (global normalisation).
    mask = torch.ones(4, 2, dtype=torch.bool)
    logp = torch.zeros(4, 2)
    advantages, _ = reinforce_pp_advantages([1.0, 1.0, 0.0, 0.0], logp, logp, mask, beta_kl=0.0)
    assert (advantages[:2] > 0).all() and (advantages[2:] < 0).all()
    assert grpo_advantages([1.0, 1.0, 0.0, 0.0], 2, mask).eq(0).all()


def test_grpo_matches_hand_computation():
    rewards = [1, 0, 0, 1,   1, 1, 1, 1,   0, 0, 0, 1]
    mask = torch.zeros(12, 5, dtype=torch.bool)
    for row, length in enumerate([1, 5, 3, 2, 4, 4, 1, 2, 5, 3, 3, 1]):
        mask[row, :length] = True
    advantages = grpo_advantages(rewards, group_size=4, mask=mask)
    # group 0: mean 0.5, sample std sqrt(4 * 0.25 / 3) = sqrt(1/3)
    a0 = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    # group 1: all rewards equal -> 0 for every completion
    # group 2: mean 0.25, sample var (3 * 0.0625 + 0.5625) / 3 = 0.25, std 0.5
    a2 = 1 / (0.5 + 1e-4)
    per_completion = [a0, -a0, -a0, a0,   0, 0, 0, 0,   -0.25 * a2, -0.25 * a2, -0.25 * a2, 0.75 * a2]
    expected = torch.where(mask, torch.tensor(per_completion)[:, None], 0.0)
    assert torch.allclose(advantages, expected, atol=1e-5)
    assert advantages[4:8].eq(0).all()  # exactly 0, not 0 / 1e-4 noise


def test_zero_advantage_share():
    assert zero_advantage_share([1, 1, 1, 1,   0, 0, 0, 0,   1, 0, 0, 0], 4) == pytest.approx(2 / 3)
    assert zero_advantage_share(torch.tensor([1.0, 0.0, 0.0, 1.0]), 2) == 0.0


def test_kl_k3_hand_values_nonnegative_and_zero_when_equal():
    mask = torch.tensor([[T, T, T, F]])
    logp = torch.tensor([[-2.0, -1.0, -0.5, -1e4]])       # the masked entry is garbage
    logp_ref = torch.tensor([[-1.0, -2.0, -0.5, 1e4]])
    k3 = kl_k3(logp, logp_ref, mask)
    # ref - logp = 1: e - 2; ref - logp = -1: e^-1 + 1 - 1; equal: 0; masked: 0
    assert torch.allclose(k3, torch.tensor([[math.e - 2, math.exp(-1), 0.0, 0.0]]), atol=1e-6)

    torch.manual_seed(0)
    logp, logp_ref = torch.randn(8, 16) * 3, torch.randn(8, 16) * 3
    full = torch.ones(8, 16, dtype=torch.bool)
    assert (kl_k3(logp, logp_ref, full) >= 0).all()
    assert kl_k3(logp, logp.clone(), full).eq(0).all()


def test_kl_k3_gradient_pushes_policy_towards_reference():
    mask = torch.tensor([[T, T, F]])
    logp = torch.tensor([[-3.0, -0.5, 1e4]], requires_grad=True)
    logp_ref = torch.tensor([[-1.0, -1.0, -1.0]])
    kl_k3(logp, logp_ref, mask).sum().backward()
    # d/dlogp [e^(ref - logp) - (ref - logp) - 1] = 1 - e^(ref - logp)
    assert torch.allclose(logp.grad, torch.tensor([[1 - math.exp(2.0), 1 - math.exp(-0.5), 0.0]]), atol=1e-5)


def test_policy_loss_clipping_by_hand():
    # eps = 0.2, so the trust region is ratio in [0.8, 1.2]
    ratios = [1.1, 1.5, 0.5, 0.5, 1.5, 1.0]
    adv = [2.0, 1.0, 1.0, -1.0, -1.0, 7.0]
    # token 0: inside the range                -> term 1.1 * 2 = 2.2, gradient flows
    # token 1: A > 0, ratio above 1 + eps      -> clipped: 1.2 * 1 = 1.2, gradient 0
    # token 2: A > 0, ratio below 1 - eps      -> min(0.5, 0.8) = 0.5 unclipped, gradient flows
    # token 3: A < 0, ratio below 1 - eps      -> min(-0.5, -0.8) = -0.8 clipped, gradient 0
    # token 4: A < 0, ratio above 1 + eps      -> min(-1.5, -1.2) = -1.5 unclipped, gradient flows
    # token 5: masked out (padding)
    mask = torch.tensor([[T, T, T, T, T, F]])
    logp_old = torch.tensor([[-2.0, -1.0, -3.0, -0.5, -4.0, 0.0]])
    logp = (logp_old + torch.log(torch.tensor([ratios]))).detach()
    logp[0, 5] = 1e4  # garbage on the padding: exp would overflow if it were used
    logp.requires_grad_(True)
    loss, stats = policy_loss(logp, logp_old, torch.tensor([adv]), mask, clip_eps=0.2)
    assert loss.item() == pytest.approx(-(2.2 + 1.2 + 0.5 - 0.8 - 1.5) / 5, abs=1e-6)  # -0.32
    loss.backward()
    # d loss / d logp_t = -ratio_t * A_t / 5 where unclipped, 0 where clipped or masked
    assert torch.allclose(logp.grad, torch.tensor([[-2.2 / 5, 0.0, -0.5 / 5, 0.0, 1.5 / 5, 0.0]]), atol=1e-6)
    assert stats["clip_frac"] == pytest.approx(2 / 5)
    k3 = [r - 1 - math.log(r) for r in ratios[:5]]  # KL(old || new) estimate per token
    assert stats["approx_kl"] == pytest.approx(sum(k3) / 5, abs=1e-6)  # 0.1160108


def test_clip_higher_widens_only_the_upper_clip():
    # the tokens of test_policy_loss_clipping_by_hand, with eps = 0.2 below and 0.6 above: the
    # ratio range is [0.8, 1.6]; token 1 (ratio 1.5, A > 0) is no longer clipped, token 3
    # (ratio 0.5, A < 0) still is, and token 4 (ratio 1.5, A < 0) was never clipped
    ratios = [1.1, 1.5, 0.5, 0.5, 1.5]
    adv = torch.tensor([[2.0, 1.0, 1.0, -1.0, -1.0]])
    mask = torch.ones(1, 5, dtype=torch.bool)
    logp_old = torch.tensor([[-2.0, -1.0, -3.0, -0.5, -4.0]])
    logp = (logp_old + torch.log(torch.tensor([ratios]))).requires_grad_(True)
    loss, stats = policy_loss(logp, logp_old, adv, mask, clip_eps=0.2, clip_eps_high=0.6)
    assert loss.item() == pytest.approx(-(2.2 + 1.5 + 0.5 - 0.8 - 1.5) / 5, abs=1e-6)
    loss.backward()
    assert torch.allclose(logp.grad, torch.tensor([[-2.2 / 5, -1.5 / 5, -0.5 / 5, 0.0, 1.5 / 5]]), atol=1e-6)
    assert stats["clip_frac"] == pytest.approx(1 / 5)
    # past the wider bound the upper clip acts again; the lower bound is clip_eps's whatever clip_eps_high
    logp_far = (logp_old + torch.log(torch.tensor([[1.1, 1.7, 0.5, 0.7, 1.5]]))).requires_grad_(True)
    loss, stats = policy_loss(logp_far, logp_old, adv, mask, clip_eps=0.2, clip_eps_high=0.6)
    assert loss.item() == pytest.approx(-(2.2 + 1.6 + 0.5 - 0.8 - 1.5) / 5, abs=1e-6)
    assert stats["clip_frac"] == pytest.approx(2 / 5)
    # None is eq. 5's symmetric clip
    same = [policy_loss(logp.detach(), logp_old, adv, mask, 0.2, clip_eps_high=high)[0].item() for high in (None, 0.2)]
    assert same[0] == same[1] == pytest.approx(-(2.2 + 1.2 + 0.5 - 0.8 - 1.5) / 5, abs=1e-6)


def test_policy_loss_at_ratio_one_is_token_level_mean_of_advantages():
    # one completion of 1 token (A = 3), one of 3 tokens (A = 1): the token-level mean weighs
    # every token equally, -(3 + 1 + 1 + 1) / 4 = -1.5 (a per-completion mean would give -2)
    mask = torch.tensor([[T, F, F], [T, T, T]])
    advantages = torch.tensor([[3.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    logp_old = torch.randn(2, 3)
    logp = logp_old.clone().requires_grad_(True)
    loss, stats = policy_loss(logp, logp_old, advantages, mask)
    assert loss.item() == pytest.approx(-1.5)
    assert stats == {"clip_frac": 0.0, "approx_kl": 0.0}
    loss.backward()
    assert torch.allclose(logp.grad, torch.where(mask, -advantages / 4, 0.0))


def test_bad_input_gets_clear_errors():
    mask = torch.ones(4, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="groups of 3"):
        grpo_advantages([1, 0, 1, 0], 3, mask)
    with pytest.raises(ValueError, match="group_size >= 2"):
        grpo_advantages([1, 0, 1, 0], 1, mask)
    with pytest.raises(ValueError, match="one value per completion"):
        reinforce_pp_advantages([1.0, 0.0], torch.zeros(4, 3), torch.zeros(4, 3), mask, beta_kl=0.1)
    with pytest.raises(ValueError, match="bool"):
        policy_loss(torch.zeros(4, 3), torch.zeros(4, 3), torch.zeros(4, 3), mask.float())
    with pytest.raises(ValueError, match="line up"):
        kl_k3(torch.zeros(4, 2), torch.zeros(4, 3), mask)
    empty_row = mask.clone()
    empty_row[2] = False
    with pytest.raises(ValueError, match="at least one token"):
        reinforce_pp_advantages([1.0, 0.0, 1.0, 0.0], torch.zeros(4, 3), torch.zeros(4, 3), empty_row, beta_kl=0.1)


def test_micro_batches_add_up_to_the_batch_loss_and_statistics():
    """The update accumulates the loss over micro-batches of the batch, each padded to its own
    width: with the batch's token count as denominator, their losses, gradients and clip shares
    add up to those of the whole batch at once."""
    torch.manual_seed(0)
    N, T = 6, 9
    lengths = torch.tensor([9, 2, 5, 7, 1, 4])
    mask = torch.arange(T) < lengths[:, None]
    logp = torch.randn(N, T, requires_grad=True)
    logp_old = (logp.detach() + 0.3 * torch.randn(N, T))
    advantages = torch.randn(N, T)
    whole, stats = policy_loss(logp, logp_old, advantages, mask, 0.2)
    (grad_whole,) = torch.autograd.grad(whole, logp)
    total, clip, grad_parts = 0.0, 0.0, torch.zeros(N, T)
    for rows in ([1, 4, 5], [0, 2, 3]):
        width = int(lengths[rows].max())
        part = logp[rows, :width]
        loss, part_stats = policy_loss(part, logp_old[rows, :width], advantages[rows, :width], mask[rows, :width],
                                       0.2, token_count=int(mask.sum()))
        (grad,) = torch.autograd.grad(loss, logp)
        total, clip, grad_parts = total + loss.item(), clip + part_stats["clip_frac"], grad_parts + grad
    assert total == pytest.approx(whole.item(), abs=1e-6)
    assert clip == pytest.approx(stats["clip_frac"], abs=1e-6) and stats["clip_frac"] > 0
    assert torch.allclose(grad_parts, grad_whole, atol=1e-7)
