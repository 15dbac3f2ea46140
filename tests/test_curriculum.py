"""Tests of curriculum.py: DAPO's refill keeps only groups whose rewards differ and still holds
the batch's number of groups, in sampling order, rollout and verdicts aligned; a replayed
success enters only a group that failed every sample, and only with a stored success of its task."""
from dataclasses import dataclass

import pytest
import torch

from curriculum import SuccessReplay, fill_with_spread, with_spread
from rollout import Rollout

EOT = 0


@dataclass
class Verdict:
    reward: float
    status: str = "wrong_answer"


def make_round(name, rewards, group_size, width=6):
    """A round of len(rewards) / G prompts named name0, name1, ...: row r's completion is
    [r + 1] * (r % 3 + 1) then end-of-text, so every row is recognisable after a cut."""
    n = len(rewards)
    prompts = [({"id": f"{name}{g}"}, [100 + g]) for g in range(n // group_size)]
    completions = torch.full((n, width), EOT)
    mask = torch.zeros(n, width, dtype=torch.bool)
    for r in range(n):
        length = r % 3 + 1
        completions[r, :length] = r + 1
        mask[r, :length + 1] = True  # the end-of-text counts
    out = Rollout([ids for _, ids in prompts], group_size, completions, mask, torch.zeros(n, dtype=torch.bool),
                  torch.rand(n, width))
    verdicts = [Verdict(r, "passed" if r == 1.0 else "wrong_answer") for r in rewards]
    return prompts, out, verdicts


def test_with_spread_marks_groups_whose_rewards_differ():
    assert with_spread([1, 1, 0, 0, 0, 1, 1, 1], 2) == [False, False, True, False]
    with pytest.raises(ValueError, match="groups of 3"):
        with_spread([1, 0, 1, 0], 3)


def test_a_refilled_batch_holds_only_groups_with_a_spread_and_the_batch_size():
    G = 2
    first = make_round("a", [1, 1, 0, 1, 0, 0, 1, 0], G)   # groups a0 all pass, a1 spread, a2 all fail, a3 spread
    second = make_round("b", [0, 0, 1, 0, 1, 1, 0, 1], G)  # b0 all fail, b1 spread, b2 all pass, b3 spread
    prompts, out, verdicts = fill_with_spread([first, second], G, wanted=4)
    assert [task["id"] for task, _ in prompts] == ["a1", "a3", "b1", "b3"]
    assert len(verdicts) == 8 and all(with_spread([v.reward for v in verdicts], G))
    # the rollout follows: its rows are those of the kept groups, tensors and prompts alike
    assert out.prompts == [[101], [103], [100 + 1], [100 + 3]]
    expected_rows = [(first, 2), (first, 3), (first, 6), (first, 7), (second, 2), (second, 3), (second, 6), (second, 7)]
    for row, (round_, source) in enumerate(expected_rows):
        assert torch.equal(out.completions[row], round_[1].completions[source])
        assert torch.equal(out.mask[row], round_[1].mask[source])
        assert verdicts[row] is round_[2][source]


def test_too_few_groups_with_a_spread_are_made_up_by_the_first_rounds_others():
    G = 2
    first = make_round("a", [1, 1, 0, 1, 0, 0], G)
    second = make_round("b", [0, 0, 1, 1, 1, 0], G)
    prompts, out, verdicts = fill_with_spread([first, second], G, wanted=3)
    assert [task["id"] for task, _ in prompts] == ["a0", "a1", "b2"]  # two with a spread, then a0
    assert out.mask.shape[0] == len(verdicts) == 6
    with pytest.raises(ValueError, match="fewer than"):
        fill_with_spread([first], G, wanted=4)


def test_rounds_of_different_widths_are_padded_and_masked():
    G = 2
    first = make_round("a", [1, 0], G, width=4)
    second = make_round("b", [0, 1], G, width=7)
    _, out, _ = fill_with_spread([first, second], G, wanted=2)
    assert out.completions.shape == out.mask.shape == out.entropy.shape == (4, 7)
    assert not out.mask[:2, 4:].any() and torch.equal(out.mask[:2, :4], first[1].mask)


def test_a_replayed_success_enters_only_an_all_fail_group_of_its_task():
    G = 3
    replay = SuccessReplay()
    success = [7, 8, 9, EOT]
    replay.record([{"id": "t0"}, {"id": "t1"}], [success, [5, EOT]], [Verdict(1.0, "passed"), Verdict(0.0)])
    assert len(replay) == 1  # a failure is never stored
    # groups: t0 all fail (replayed), t1 all fail but nothing stored, t0 again with a pass (left alone)
    prompts, out, verdicts = make_round("x", [0, 0, 0, 0, 0, 0, 0, 1, 0], G)
    row_tasks = [{"id": task} for task in ("t0", "t1", "t0") for _ in range(G)]
    before = out.completions.clone(), out.mask.clone(), list(verdicts)
    assert replay.fill(row_tasks, out, verdicts, EOT) == [2]
    assert out.completions[2].tolist() == success + [EOT, EOT] and out.mask[2].tolist() == [True] * 4 + [False] * 2
    assert verdicts[2].reward == 1.0 and not out.truncated[2]
    unchanged = [r for r in range(9) if r != 2]
    assert torch.equal(out.completions[unchanged], before[0][unchanged])
    assert torch.equal(out.mask[unchanged], before[1][unchanged])
    assert [verdicts[r] for r in unchanged] == [before[2][r] for r in unchanged]
    # the group now has a spread: its advantage is no longer zero
    assert with_spread([v.reward for v in verdicts], G) == [True, False, True]


def test_a_stored_success_longer_than_the_rollout_is_not_replayed():
    replay = SuccessReplay()
    replay.record([{"id": "x0"}], [[1] * 10 + [EOT]], [Verdict(1.0, "passed")])
    _, out, verdicts = make_round("x", [0, 0], 2, width=6)
    assert replay.fill([{"id": "x0"}] * 2, out, verdicts, EOT) == []
