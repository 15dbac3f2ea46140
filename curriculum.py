"""
curriculum.py: which groups a step of OORL learns from. Two levers on the signal of a batch,
each a setting of train.py:

  filter_groups (DAPO's dynamic sampling, arXiv 2503.14476; verl's algorithm.filter_groups):
      a group whose G rewards are all equal (all pass or all fail) has no spread within it.
      Sample more prompts, keep the groups with a spread, and refill the batch to its
      prompts_per_step groups, at most max_num_gen_batches rounds of sampling a step.
  replay_successes (RLEP, arXiv 2507.07451; ExGRPO, arXiv 2510.02245): every verified
      success (reward 1) is stored with its task; when a later group of that task fails all G
      times, one of its samples is replaced by the stored success. The group then holds a
      pass and fails, with no new generation.

Neither changes the loss: both change which completions enter the batch. Both are duck-typed on
what train.py hands them (a rollout.Rollout: prompts, group_size and per-row tensors completions,
mask, truncated, entropy; a verdict: .reward), so this file imports no other project file.

    groups = with_spread([v.reward for v in verdicts], G)        # [True, False, ...] per group
    prompts, out, verdicts = fill_with_spread(rounds, G, wanted)  # rounds: [(prompts, out, verdicts)]
    replay = SuccessReplay()
    replay.record(tasks_of_rows, out.completion_lists(with_eot=True), verdicts)  # every round sampled
    replayed_rows = replay.fill(tasks_of_rows, out, verdicts, eot_id)           # the step's batch

Tests: python -m pytest tests/test_curriculum.py
"""
import dataclasses

import torch


def with_spread(rewards, group_size):
    """One bool a group (rows r // group_size): True where its rewards are not all equal, i.e.
    where a group-relative advantage is non-zero (DAPO keeps 0 < accuracy < 1)."""
    rewards = list(rewards)
    if group_size < 1 or len(rewards) % group_size:
        raise ValueError(f"{len(rewards)} rewards cannot be split into groups of {group_size}")
    groups = [rewards[i:i + group_size] for i in range(0, len(rewards), group_size)]
    return [min(g) != max(g) for g in groups]


def take_rows(rollout, rows):
    """The rollout cut to the given rows (whole groups), as a rollout of the same kind."""
    G = rollout.group_size
    index = torch.as_tensor(rows, dtype=torch.long, device=rollout.mask.device)
    return dataclasses.replace(rollout, prompts=[rollout.prompts[r // G] for r in rows[::G]],
                               completions=rollout.completions[index], mask=rollout.mask[index],
                               truncated=rollout.truncated[index], entropy=rollout.entropy[index])


def concat(rollouts):
    """Rollouts of the same group size one after the other, their per-token tensors padded to the
    widest (a padded position is masked out)."""
    width = max(r.mask.size(1) for r in rollouts)
    pad = lambda t, value: torch.nn.functional.pad(t, (0, width - t.size(1)), value=value)
    return dataclasses.replace(rollouts[0], prompts=[p for r in rollouts for p in r.prompts],
                               completions=torch.cat([pad(r.completions, 0) for r in rollouts]),
                               mask=torch.cat([pad(r.mask, False) for r in rollouts]),
                               truncated=torch.cat([r.truncated for r in rollouts]),
                               entropy=torch.cat([pad(r.entropy, 0.0) for r in rollouts]))


def fill_with_spread(rounds, group_size, wanted):
    """DAPO's refill. rounds: [(prompts, rollout, verdicts)] in the order they were sampled.
    Returns (prompts, rollout, verdicts) of `wanted` groups: the groups with a spread, first come
    first kept; if the rounds hold fewer, the first rounds' groups without a spread make up the
    number (the batch keeps its size, and REINFORCE++'s global baseline still learns from
    them), in their order of sampling."""
    spread, plain = [], []
    for i, (prompts, rollout, verdicts) in enumerate(rounds):
        if len(prompts) * group_size != len(verdicts):
            raise ValueError(f"round {i}: {len(prompts)} prompts but {len(verdicts)} verdicts for groups of {group_size}")
        for g, has_spread in enumerate(with_spread([v.reward for v in verdicts], group_size)):
            (spread if has_spread else plain).append((i, g))
    if len(spread) + len(plain) < wanted:
        raise ValueError(f"the rounds hold {len(spread) + len(plain)} groups, fewer than the {wanted} wanted")
    chosen = sorted(spread[:wanted] + plain[:max(0, wanted - len(spread))])  # in sampling order
    prompts, parts, verdicts = [], [], []
    for i, (round_prompts, rollout, round_verdicts) in enumerate(rounds):
        groups = [g for j, g in chosen if j == i]
        if not groups:
            continue
        rows = [g * group_size + k for g in groups for k in range(group_size)]
        prompts += [round_prompts[g] for g in groups]
        parts.append(take_rows(rollout, rows))
        verdicts += [round_verdicts[r] for r in rows]
    return prompts, concat(parts), verdicts


class SuccessReplay:
    """The latest verified success of each task (keyed by task id): its completion's token ids
    (end-of-text included) and its verdict."""

    def __init__(self):
        self.successes = {}

    def __len__(self):
        return len(self.successes)

    def record(self, row_tasks, completions, verdicts):
        """Store every completion whose reward is 1 (eq. 4: it passed every unit test)."""
        for task, completion, verdict in zip(row_tasks, completions, verdicts):
            if verdict.reward == 1.0:
                self.successes[task["id"]] = (list(completion), verdict)

    def fill(self, row_tasks, rollout, verdicts, eot_id):
        """In every group whose G rewards are all 0 and whose task has a stored success, that
        success replaces the group's last sample, in the rollout (tokens, mask, not truncated;
        its entropy 0: it was not sampled now) and in verdicts (a list, changed in place).
        Returns the rows replaced. pi_old of the replayed tokens is the training forward's
        (train.py computes it after this), so its ratio starts at 1 like every other row."""
        G, width = rollout.group_size, rollout.mask.size(1)
        replaced = []
        for first in range(0, len(verdicts), G):
            stored = self.successes.get(row_tasks[first]["id"])
            if stored is None or any(v.reward != 0.0 for v in verdicts[first:first + G]):
                continue
            completion, verdict = stored
            if len(completion) > width:  # sampled under a larger max_new_tokens than this rollout's
                continue
            row = first + G - 1
            rollout.completions[row] = eot_id
            rollout.completions[row, :len(completion)] = torch.as_tensor(completion, dtype=rollout.completions.dtype)
            rollout.mask[row] = False
            rollout.mask[row, :len(completion)] = True
            rollout.truncated[row] = False
            rollout.entropy[row] = 0.0
            verdicts[row] = verdict
            replaced.append(row)
        return replaced
