"""Tests of gepo.py: the GEPO loss against hand-worked numbers, its DPO special case, padding
masks, the variance term, the logging metrics, group_logps against a direct computation, and the
IR-equivalence probe on a tiny GPT."""
import math

import pytest
import torch
import torch.nn.functional as F

import gepo
from gepo import dpo_loss, gepo_loss, gepo_metrics, group_logps, preference_loss, probe
from model import GPT, GPTConfig, pack

GARBAGE = 1e6  # what padding entries hold in these tests: huge, so any leak shows


def two_hand_groups():
    """Two groups, padded to n_max = 2 winners and m_max = 2 losers, with beta = 0.5.

    Group 0: winners pi - ref = [1, -1]  -> rewards [0.5, -0.5], mean 0, population var 0.25
             loser   pi - ref = [-1]     -> reward  -0.5;   margin 0 - (-0.5) = 0.5
             loss = -log sigmoid(0.5) + lam * 0.25 = log(1 + e^-0.5) + 0.25 lam
    Group 1: winner  pi - ref = [0]      -> reward  0, var 0
             losers  pi - ref = [0, 4]   -> rewards [0, 2], mean 1;   margin -1
             loss = -log sigmoid(-1) = log(1 + e)
    """
    policy_chosen = torch.tensor([[-1.0, -3.0], [-2.0, GARBAGE]])
    ref_chosen = torch.tensor([[-2.0, -2.0], [-2.0, -GARBAGE]])
    policy_rejected = torch.tensor([[-4.0, GARBAGE], [-1.0, 3.0]])
    ref_rejected = torch.tensor([[-3.0, GARBAGE], [-1.0, -1.0]])
    chosen_mask = torch.tensor([[True, True], [True, False]])
    rejected_mask = torch.tensor([[True, False], [True, True]])
    return policy_chosen, policy_rejected, ref_chosen, ref_rejected, chosen_mask, rejected_mask


def test_gepo_loss_matches_hand_computation():
    args = two_hand_groups()
    group0 = math.log(1 + math.exp(-0.5))  # 0.4740769842
    group1 = math.log(1 + math.e)          # 1.3132616875
    loss = gepo_loss(*args, beta=0.5, lam=1.0)
    assert loss.item() == pytest.approx((group0 + 0.25 + group1) / 2, abs=1e-6)  # 1.0186693359
    loss_no_var = gepo_loss(*args, beta=0.5, lam=0.0)
    assert loss_no_var.item() == pytest.approx((group0 + group1) / 2, abs=1e-6)


def test_gepo_metrics_match_hand_computation():
    metrics = gepo_metrics(*two_hand_groups(), beta=0.5)
    assert metrics["margin"] == pytest.approx((0.5 - 1.0) / 2)
    assert metrics["winner_var"] == pytest.approx((0.25 + 0.0) / 2)
    assert metrics["accuracy"] == pytest.approx(0.5)  # group 0 margin > 0, group 1 margin < 0
    assert all(isinstance(v, float) for v in metrics.values())


def test_dpo_loss_matches_hand_computation():
    # beta * ((pi_w - ref_w) - (pi_l - ref_l)) = 0.1 * (2 - (-3)) = 0.5 -> log(1 + e^-0.5)
    loss = dpo_loss(torch.tensor([-1.0]), torch.tensor([-6.0]), torch.tensor([-3.0]), torch.tensor([-3.0]), beta=0.1)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-0.5)), abs=1e-6)


def test_gepo_with_one_winner_one_loser_and_no_variance_is_dpo():
    torch.manual_seed(0)
    pc, pr, rc, rr = (torch.randn(7) * 5 for _ in range(4))
    ones = torch.ones(7, 1, dtype=torch.bool)
    gepo = gepo_loss(pc[:, None], pr[:, None], rc[:, None], rr[:, None], ones, ones, beta=0.3, lam=0.0)
    dpo = dpo_loss(pc, pr, rc, rr, beta=0.3)
    assert torch.allclose(gepo, dpo, atol=1e-6)
    # and with lam > 0 still DPO: the variance of a single winner is 0
    gepo_lam = gepo_loss(pc[:, None], pr[:, None], rc[:, None], rr[:, None], ones, ones, beta=0.3, lam=5.0)
    assert torch.allclose(gepo_lam, dpo, atol=1e-6)


def random_padded_batch(seed, n_max=4, m_max=3, B=5):
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(1, n_max + 1, (B,), generator=g)
    m = torch.randint(1, m_max + 1, (B,), generator=g)
    chosen_mask = torch.arange(n_max)[None, :] < n[:, None]
    rejected_mask = torch.arange(m_max)[None, :] < m[:, None]
    logps = [torch.randn(B, w, generator=g) * 10 - 30 for w in (n_max, m_max, n_max, m_max)]
    return logps, chosen_mask, rejected_mask


def test_padding_changes_neither_loss_nor_gradient():
    logps, chosen_mask, rejected_mask = random_padded_batch(1)
    results = []
    for fill in (0.0, GARBAGE, -GARBAGE):
        inputs = []
        # opposite signs in policy and reference, so pi - ref on padding is +-2 * fill
        for t, mask, sign in zip(logps, (chosen_mask, rejected_mask, chosen_mask, rejected_mask), (1, -1, -1, 1)):
            inputs.append(torch.where(mask, t, sign * fill).requires_grad_(True))
        loss = gepo_loss(*inputs, chosen_mask, rejected_mask, beta=0.2, lam=1.0)
        loss.backward()
        results.append((loss.detach(), [t.grad for t in inputs]))
        for t, mask in zip(inputs, (chosen_mask, rejected_mask)):
            assert torch.all(t.grad[~mask] == 0), "padding entries received gradient"
    assert torch.isfinite(results[0][0])
    for loss, grads in results[1:]:
        assert torch.equal(loss, results[0][0])
        for grad, grad0 in zip(grads, results[0][1]):
            assert torch.equal(grad, grad0)


def test_padded_batch_equals_mean_of_unpadded_groups():
    logps, chosen_mask, rejected_mask = random_padded_batch(2)
    batched = gepo_loss(*logps, chosen_mask, rejected_mask, beta=0.2, lam=0.7)
    per_group = []
    for b in range(chosen_mask.size(0)):
        c, r = chosen_mask[b], rejected_mask[b]
        one = [logps[0][b, c], logps[1][b, r], logps[2][b, c], logps[3][b, r]]
        per_group.append(gepo_loss(*(t[None] for t in one), c[c][None], r[r][None], beta=0.2, lam=0.7))
    assert torch.allclose(batched, torch.stack(per_group).mean(), atol=1e-6)
    # the masks really vary in this batch, so the check above exercises padding
    assert chosen_mask.sum(1).unique().numel() > 1 and rejected_mask.sum(1).unique().numel() > 1


def test_lam_adds_the_winner_variance_and_pulls_winners_together():
    logps, chosen_mask, rejected_mask = random_padded_batch(3)
    metrics = gepo_metrics(*logps, chosen_mask, rejected_mask, beta=0.2)
    base = gepo_loss(*logps, chosen_mask, rejected_mask, beta=0.2, lam=0.0)
    with_var = gepo_loss(*logps, chosen_mask, rejected_mask, beta=0.2, lam=2.0)
    assert metrics["winner_var"] > 0
    assert with_var.item() == pytest.approx(base.item() + 2.0 * metrics["winner_var"], rel=1e-5)

    def winner_spread_after_steps(lam):
        chosen = logps[0].clone().requires_grad_(True)
        for _ in range(20):
            loss = gepo_loss(chosen, logps[1], logps[2], logps[3], chosen_mask, rejected_mask, beta=0.2, lam=lam)
            (grad,) = torch.autograd.grad(loss, chosen)
            chosen = (chosen - 5.0 * grad).detach().requires_grad_(True)
        return gepo_metrics(chosen, logps[1], logps[2], logps[3], chosen_mask, rejected_mask, beta=0.2)["winner_var"]

    # lam = 0: every winner of a group gets the same gradient, so their spread never changes;
    # lam > 0: the variance term pulls equivalent winners towards the same implicit reward
    assert winner_spread_after_steps(0.0) == pytest.approx(metrics["winner_var"], rel=1e-4)
    assert winner_spread_after_steps(1.0) < 0.5 * metrics["winner_var"]


def test_gepo_rejects_bad_input():
    args = list(two_hand_groups())
    with pytest.raises(ValueError, match="bool"):
        gepo_loss(*args[:4], args[4].float(), args[5])
    empty = args[5].clone()
    empty[1] = False
    with pytest.raises(ValueError, match="at least one rejected"):
        gepo_loss(*args[:5], empty)
    with pytest.raises(ValueError, match="same"):
        gepo_loss(args[0][:, :1], *args[1:])
    with pytest.raises(ValueError, match=r"\(B,\)"):
        dpo_loss(torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.zeros(2))


# ----------------------------------------------------------------------------- group_logps

class TinyCausalLM(torch.nn.Module):
    """A stand-in for model.GPT: the hidden state at t is the mean of the embeddings of
    tokens 0..t (causal), then a linear head. token_logprobs and sequence_logprobs have GPT's
    contract (this sequence_logprobs packs every pair with model.pack: the direct way, which
    GPT's shares a prompt's forward between its responses to match)."""

    def __init__(self, vocab_size=13, n_embd=8):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(vocab_size, n_embd)
        self.head = torch.nn.Linear(n_embd, vocab_size)

    def token_logprobs(self, idx, targets):
        positions = torch.arange(1, idx.size(1) + 1, dtype=torch.float32)
        hidden = self.embed(idx).cumsum(dim=1) / positions[None, :, None]
        logp = F.log_softmax(self.head(hidden), dim=-1)
        return logp.gather(-1, targets[..., None]).squeeze(-1)

    def sequence_logprobs(self, prompts, completions):
        idx, targets, mask = pack(prompts, completions, pad_id=0)
        return torch.where(mask, self.token_logprobs(idx, targets), 0.0).sum(dim=1)

    def direct_sequence_logp(self, prompt, response):
        """log pi(response | prompt), one token at a time, recomputing the prefix each step:
        shares no padding or indexing logic with group_logps."""
        total = torch.zeros(())
        prefix = list(prompt)
        for token in response:
            hidden = self.embed(torch.tensor(prefix)).mean(dim=0)
            total = total + F.log_softmax(self.head(hidden), dim=-1)[token]
            prefix.append(token)
        return total


def ir_groups():
    return [
        {"prompt_ids": [1, 2, 3], "winner_ids": [[4, 5, 0], [6, 0], [7, 7, 7, 0]], "loser_ids": [[4, 6, 0]]},
        {"prompt_ids": [9], "winner_ids": [[2, 0]], "loser_ids": [[3, 0], [8, 8, 0]]},
        {"prompt_ids": [5, 5, 11, 12, 2], "winner_ids": [[1, 0], [10, 12, 0]], "loser_ids": [[0]]},
    ]


def test_group_logps_equals_direct_per_sequence_computation():
    lm, groups = TinyCausalLM(), ir_groups()
    chosen, rejected, chosen_mask, rejected_mask = group_logps(lm, groups)
    assert chosen.shape == chosen_mask.shape == (3, 3)
    assert rejected.shape == rejected_mask.shape == (3, 2)
    assert chosen_mask.tolist() == [[True, True, True], [True, False, False], [True, True, False]]
    assert rejected_mask.tolist() == [[True, False], [True, True], [True, False]]
    for b, group in enumerate(groups):
        for values, key in ((chosen, "winner_ids"), (rejected, "loser_ids")):
            for k, response in enumerate(group[key]):
                expected = lm.direct_sequence_logp(group["prompt_ids"], response)
                assert values[b, k].item() == pytest.approx(expected.item(), abs=1e-5)
    assert torch.all(chosen[~chosen_mask] == 0) and torch.all(rejected[~rejected_mask] == 0)


def test_group_logps_gradient_equals_direct_gradient():
    lm, groups = TinyCausalLM(), ir_groups()
    chosen, rejected, chosen_mask, rejected_mask = group_logps(lm, groups)
    with torch.no_grad():
        ref_chosen, ref_rejected = chosen - 1.0, rejected + 0.5  # any constants will do
    gepo_loss(chosen, rejected, ref_chosen, ref_rejected, chosen_mask, rejected_mask, beta=0.5).backward()
    batched_grad = lm.head.weight.grad.clone()

    lm.zero_grad()
    direct = [[torch.stack([lm.direct_sequence_logp(g["prompt_ids"], y) for y in g[key]]) for g in groups]
              for key in ("winner_ids", "loser_ids")]
    per_group = []
    for b in range(len(groups)):
        c, r = direct[0][b], direct[1][b]
        ref_c, ref_r = ref_chosen[b, :len(c)], ref_rejected[b, :len(r)]
        all_c, all_r = torch.ones(1, len(c), dtype=torch.bool), torch.ones(1, len(r), dtype=torch.bool)
        per_group.append(gepo_loss(c[None], r[None], ref_c[None], ref_r[None], all_c, all_r, beta=0.5))
    torch.stack(per_group).mean().backward()
    assert torch.allclose(batched_grad, lm.head.weight.grad, atol=1e-5)


def test_preference_loss_is_gepo_over_groups_or_dpo_over_their_first_pair():
    """What train.py's update calls: the policy's group log-probs, then GEPO (eq. 9) over whole
    groups or DPO on each group's first (winner, loser) pair, with the batch's figures."""
    lm, groups = TinyCausalLM(), ir_groups()
    chosen, rejected, chosen_mask, rejected_mask = group_logps(lm, groups)
    with torch.no_grad():  # (not a constant offset: the winners' rewards differ, GEPO is not DPO)
        ref_chosen, ref_rejected = 0.9 * chosen - 1.0, 1.1 * rejected + 0.5
    args = (chosen, rejected, ref_chosen, ref_rejected, chosen_mask, rejected_mask)
    loss, figures = preference_loss(lm, groups, ref_chosen, ref_rejected, "gepo", beta=0.5, lam=0.7)
    assert loss.item() == pytest.approx(gepo_loss(*args, beta=0.5, lam=0.7).item(), abs=1e-6) and loss.requires_grad
    assert figures == pytest.approx(gepo_metrics(*args, beta=0.5))
    loss, _ = preference_loss(lm, groups, ref_chosen, ref_rejected, "dpo", beta=0.5)
    expected = dpo_loss(chosen[:, 0], rejected[:, 0], ref_chosen[:, 0], ref_rejected[:, 0], beta=0.5)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6) and expected.item() != pytest.approx(
        gepo_loss(*args, beta=0.5, lam=0.7).item())


def test_group_logps_rejects_groups_without_winners_or_losers():
    lm = TinyCausalLM()
    with pytest.raises(ValueError, match="no loser_ids"):
        group_logps(lm, [{"prompt_ids": [1], "winner_ids": [[2, 0]], "loser_ids": []}])
    with pytest.raises(ValueError, match="empty prompt"):
        group_logps(lm, [{"prompt_ids": [], "winner_ids": [[2, 0]], "loser_ids": [[3]]}])
    with pytest.raises(ValueError, match="at least one group"):
        group_logps(lm, [])


# ----------------------------------------------------------------------------- the IR probe

def tiny_gpt(seed):
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=32, vocab_size=13, n_layer=1, n_head=2, n_embd=16)).eval()


def test_probe_of_a_model_against_itself_is_zero():
    model = tiny_gpt(0)
    result = probe(model, model, ir_groups(), beta=0.1)
    assert result == {"margin": 0.0, "positive_share": 0.0, "groups": 3}


def test_probe_matches_the_direct_margin_and_does_not_depend_on_batching():
    policy, reference, groups = tiny_gpt(1), tiny_gpt(2), ir_groups()
    with torch.no_grad():
        chosen, rejected, chosen_mask, rejected_mask = group_logps(policy, groups)
        ref_chosen, ref_rejected, _, _ = group_logps(reference, groups)
    margins = []  # eqs. 6-9 by hand, group by group
    for b, group in enumerate(groups):
        n, m = len(group["winner_ids"]), len(group["loser_ids"])
        winners = 0.5 * (chosen[b, :n] - ref_chosen[b, :n]).mean()
        losers = 0.5 * (rejected[b, :m] - ref_rejected[b, :m]).mean()
        margins.append((winners - losers).item())
    for batch_groups in (1, 2, 8):
        result = probe(policy, reference, groups, beta=0.5, batch_groups=batch_groups)
        assert result["margin"] == pytest.approx(sum(margins) / 3, abs=1e-5)
        assert result["positive_share"] == pytest.approx(sum(m > 0 for m in margins) / 3)
        assert result["groups"] == 3


def test_probe_restores_training_mode_and_rejects_no_groups():
    policy, reference = tiny_gpt(1).train(), tiny_gpt(2)
    probe(policy, reference, ir_groups())
    assert policy.training and not reference.training
    with pytest.raises(ValueError, match="at least one"):
        probe(policy, reference, [])


def test_probe_margin_rises_as_gepo_trains_the_policy():
    """A few GEPO steps on some groups raise the probe's margin on those groups above 0 (the
    reference is the starting point, so the margin starts at exactly 0)."""
    reference, policy = tiny_gpt(3), tiny_gpt(3)
    reference.requires_grad_(False)
    groups = ir_groups()
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
    with torch.no_grad():
        ref_chosen, ref_rejected, _, _ = group_logps(reference, groups)
    for _ in range(10):
        chosen, rejected, chosen_mask, rejected_mask = group_logps(policy, groups)
        loss = gepo_loss(chosen, rejected, ref_chosen, ref_rejected, chosen_mask, rejected_mask, beta=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    result = probe(policy, reference, groups, beta=0.1)
    assert result["margin"] > 0.05 and result["positive_share"] == 1.0


def test_sample_groups_draws_a_fresh_dpo_pair_each_time():
    """The "+DPO" row must not keep each group's first winner and first loser: over many draws
    every (winner, loser) pair of a group comes up; GEPO (pairs=False) keeps whole groups."""
    import random
    group = dict(prompt_ids=[1], winner_ids=[[2], [3], [4]], loser_ids=[[5], [6]])
    rng = random.Random(0)
    seen = set()
    for _ in range(200):
        (drawn,) = gepo.sample_groups([group], 1, rng, pairs=True)
        assert len(drawn["winner_ids"]) == 1 and len(drawn["loser_ids"]) == 1
        seen.add((drawn["winner_ids"][0][0], drawn["loser_ids"][0][0]))
    assert seen == {(w, l) for w in (2, 3, 4) for l in (5, 6)}
    assert gepo.sample_groups([group], 1, rng) == [group]
