"""
stats.py: the statistics behind every figure eval.py and ablation.py report. pass@k from n
samples (the unbiased estimator), its 95% interval over tasks, the paired difference of two
checkpoints task by task, and the eval budget: how wide the paired interval is for a choice of
(tasks per pair, samples per task) at a fixed number of programs.

    python -m pytest tests/test_stats.py     # the estimator against its closed form, the
                                             # intervals' coverage by simulation

The budget: for pass@1 at a fixed number of programs, more tasks with fewer samples each give
the narrower interval. The per-task variance of a paired difference has two parts (see
variance_components): "between", the spread of the true difference over tasks, which only more
tasks average away, and "within", the binomial noise of one sample of each model, which more
samples per task also average away. predicted_width turns them into the width of the interval;
budget_table (eval.py --budget) measures it by subsampling an evaluation that has more tasks and
samples than the choice needs, and prints both. eval.py samples both checkpoints with the same
seeds, so both work from per-sample outcomes and keep sample j of one paired with sample j of
the other.
"""
import math
import random
import statistics

import tasks

KS = (1, 5, 10)          # the pass@k reported (those with k <= n)
Z95 = 1.959964           # the normal quantile of a two-sided 95% interval
GROUPS = (("all", tasks.RL_TARGETS + tasks.HELDOUT_TARGETS), ("rl", tasks.RL_TARGETS),
          ("heldout", tasks.HELDOUT_TARGETS))


# ----------------------------------------------------------------------------- pass@k and its intervals

def pass_at_k(n, c, k):
    """Unbiased pass@k from n samples of which c passed: 1 - C(n-c, k) / C(n, k), the chance that
    k samples drawn from the n without replacement include a passing one. Written as the product
    C(n-c, k) / C(n, k) = prod_{i=n-c+1..n} (1 - k / i), which never forms huge binomials."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every draw of k samples contains a passing one
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def estimate(values_by_pair, low=0.0, high=1.0):
    """(value, [lo, hi]) of a group of pairs, from one number per task ({pair: [per-task values]}):
    the mean over pairs of the mean over each pair's tasks, with a 95% interval.

    Why the standard error and not a bootstrap: the figure is a stratified mean (tasks drawn within
    each pair, pairs weighed equally), whose variance has the closed form sum_p s_p^2 / T_p / P^2
    (s_p^2: the sample variance of the per-task values of pair p, T_p its tasks). The per-task
    values already hold the sampling noise of the n completions, so this one formula covers both
    sources of variance. A stratified bootstrap over tasks estimates the same variance (times
    (T-1)/T), with resampling noise and a seed of its own; the closed form is exact, instant and
    testable (tests/test_stats.py checks its coverage by simulation). The interval is normal
    (z = 1.96), clipped to [low, high]; it needs 2 tasks in every pair (else [None, None])."""
    pairs = [v for v in values_by_pair.values() if v]
    if not pairs:
        return None, [None, None]
    value = statistics.fmean(statistics.fmean(v) for v in pairs)
    if min(map(len, pairs)) < 2:
        return value, [None, None]
    se = math.sqrt(sum(statistics.variance(v) / len(v) for v in pairs)) / len(pairs)
    return value, [max(low, value - Z95 * se), min(high, value + Z95 * se)]


def group_pairs(pairs):
    """The groups reported: all pairs, RL targets, held-out targets, and each target language."""
    groups = {name: [p for p in pairs if p.split("->")[1] in targets] for name, targets in GROUPS}
    for target in tasks.RL_TARGETS + tasks.HELDOUT_TARGETS:
        groups[f"target {target}"] = [p for p in pairs if p.split("->")[1] == target]
    return {name: members for name, members in groups.items() if members}


def tabulate(values, low, high):
    """values {"pass@k": {pair: [per-task values]}} -> (groups, pairs), each entry
    {"pass@k": value, ..., "ci95": {"pass@k": [lo, hi], ...}, "n_pairs", "n_tasks"}."""
    some = next(iter(values.values()))

    def entry(members):
        figure = {"ci95": {}}
        for key, by_pair in values.items():
            figure[key], figure["ci95"][key] = estimate({p: by_pair[p] for p in members}, low, high)
        return dict(figure, n_pairs=len(members), n_tasks=sum(len(some[p]) for p in members))

    return ({name: entry(members) for name, members in group_pairs(sorted(some)).items()},
            {pair: entry([pair]) for pair in sorted(some)})


def summarize(counts, n_samples):
    """The "groups" and "pairs" entries of the .eval.json from counts {pair: {task id: c}}:
    pass@k for the k in KS with k <= n, each with its 95% interval (see tabulate)."""
    return tabulate({f"pass@{k}": {pair: [pass_at_k(n_samples, c, k) for c in by_task.values()]
                                   for pair, by_task in counts.items()}
                     for k in KS if k <= n_samples}, 0.0, 1.0)


def paired(a_counts, b_counts, n_samples):
    """The paired difference a - b of every pass@k, task by task over the tasks both evaluated:
    (groups, pairs) as in summarize, values in [-1, 1]. Pairing removes the between-task variance
    that both checkpoints share (an easy task is easy for both), which is most of it: the interval
    of the difference is much narrower than the two separate intervals suggest."""
    common = {pair: [t for t in a_counts[pair] if t in b_counts[pair]] for pair in a_counts.keys() & b_counts.keys()}
    return tabulate({f"pass@{k}": {pair: [pass_at_k(n_samples, a_counts[pair][t], k) - pass_at_k(n_samples, b_counts[pair][t], k)
                                          for t in tasks_of] for pair, tasks_of in common.items() if tasks_of}
                     for k in KS if k <= n_samples}, -1.0, 1.0)


# ----------------------------------------------------------------------------- the eval budget

def variance_components(a_outcomes, b_outcomes):
    """Per-task variance of the paired pass@1 difference, split into what more tasks average away
    and what more samples per task do, from per-sample outcomes {pair: {task id: "0110"}} (sample
    j of one checkpoint was drawn with the same seed as sample j of the other): between = Var over
    tasks of the true p_a - p_b, within = Var of one sample's difference x_a - x_b, which is
    p_a (1 - p_a) + p_b (1 - p_b) less twice their covariance: two similar models fed the same
    random draws often write the same program, and the shared seeds cancel that part of the noise.
    Both pooled within pairs; within is the per-task sample variance of the n differences, so it
    needs n >= 2."""
    total, within, weight, n_samples = 0.0, 0.0, 0, None
    for pair in a_outcomes.keys() & b_outcomes.keys():
        common = [t for t in a_outcomes[pair] if t in b_outcomes[pair]]
        if len(common) < 2:
            continue
        diffs = [[int(x) - int(y) for x, y in zip(a_outcomes[pair][t], b_outcomes[pair][t])] for t in common]
        n_samples = len(diffs[0])
        if n_samples < 2:
            raise ValueError("variance_components needs n >= 2 samples per task to separate the two sources")
        total += statistics.variance([statistics.fmean(d) for d in diffs]) * len(common)
        within += sum(statistics.variance(d) for d in diffs)
        weight += len(common)
    if not weight:
        raise ValueError("variance_components needs two tasks in some pair evaluated by both checkpoints")
    within /= weight
    return max(0.0, total / weight - within / n_samples), within


def predicted_width(between, within, n_pairs, tasks_per_pair, n_samples):
    """Width of the paired 95% interval of the overall pass@1 difference with T tasks per pair and
    n samples per task: 2 z sqrt((between + within / n) / (P T)). At a fixed number of programs
    P T n, between / (P T) shrinks only with more tasks: n = 1 is best unless tasks run out."""
    return 2 * Z95 * math.sqrt((between + within / n_samples) / (n_pairs * tasks_per_pair))


def subsampled_width(a_outcomes, b_outcomes, tasks_per_pair, n_sub, draws=200, rng=None):
    """The measured width of the paired pass@1 interval at (tasks_per_pair, n_sub), from an
    evaluation with more of both: each draw keeps a random tasks_per_pair of every pair's tasks
    and n_sub of each task's samples, the same tasks and the same sample indices (so the same
    seeds) for both checkpoints; returns the mean width over the draws."""
    rng = rng or random.Random(0)
    widths = []
    for _ in range(draws):
        sub_a, sub_b = {}, {}
        for pair in a_outcomes.keys() & b_outcomes.keys():
            common = [t for t in a_outcomes[pair] if t in b_outcomes[pair]]
            chosen = rng.sample(common, min(tasks_per_pair, len(common)))
            kept = {t: rng.sample(range(len(a_outcomes[pair][t])), n_sub) for t in chosen}
            sub_a[pair] = {t: sum(int(a_outcomes[pair][t][j]) for j in kept[t]) for t in chosen}
            sub_b[pair] = {t: sum(int(b_outcomes[pair][t][j]) for j in kept[t]) for t in chosen}
        lo, hi = paired(sub_a, sub_b, n_sub)[0]["all"]["ci95"]["pass@1"]
        widths.append(hi - lo)
    return statistics.fmean(widths)


def budget_table(a_outcomes, b_outcomes, programs_per_pair):
    """Rows (tasks per pair, n, measured width or None, predicted width) for n = 1, 2, 4, 5, 10, ...
    with tasks x n = programs_per_pair, from per-sample outcomes (see variance_components);
    measured where the evaluation has enough tasks and samples."""
    between, within = variance_components(a_outcomes, b_outcomes)
    common_pairs = a_outcomes.keys() & b_outcomes.keys()
    n_samples = min(len(o) for p in common_pairs for o in a_outcomes[p].values())
    most_tasks = min(len(a_outcomes[p]) for p in common_pairs)
    rows = []
    for n_sub in (1, 2, 4, 5, 10, 20):
        tasks_per_pair = programs_per_pair // n_sub
        if tasks_per_pair < 2:
            break
        measured = (subsampled_width(a_outcomes, b_outcomes, tasks_per_pair, n_sub)
                    if n_sub <= n_samples and tasks_per_pair <= most_tasks else None)
        rows.append((tasks_per_pair, n_sub, measured, predicted_width(between, within, len(common_pairs),
                                                                       tasks_per_pair, n_sub)))
    return rows, between, within
