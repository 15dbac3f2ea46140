"""Tests of stats.py: pass@k against its closed form, the summaries and the paired difference
by hand, the coverage of the 95% intervals by simulation, and the eval budget's predicted width
against the width measured by subsampling."""
import math
import random
import statistics

import numpy as np
import pytest

import stats
import tasks


def closed_form(n, c, k):
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def test_pass_at_k_matches_the_closed_form_on_random_cases():
    rng = random.Random(0)
    for _ in range(2000):
        n = rng.randint(1, 60)
        c, k = rng.randint(0, n), rng.randint(1, n)
        assert stats.pass_at_k(n, c, k) == pytest.approx(closed_form(n, c, k), abs=1e-12), (n, c, k)


@pytest.mark.parametrize("n,c,k,expected", [
    (10, 0, 1, 0.0), (10, 0, 10, 0.0),       # nothing passed: pass@k is 0 for every k
    (10, 10, 1, 1.0), (10, 10, 10, 1.0),     # everything passed
    (10, 6, 5, 1.0), (10, 1, 10, 1.0),       # n - c < k: every draw of k holds a passing sample
    (10, 3, 1, 0.3), (1, 1, 1, 1.0), (1, 0, 1, 0.0),  # pass@1 is c / n
    (5, 2, 2, 1 - 3 / 10),                   # 1 - C(3,2)/C(5,2)
])
def test_pass_at_k_edge_cases(n, c, k, expected):
    assert stats.pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_is_stable_for_large_n():
    # C(1000, 500) overflows a float; the product form does not need it
    assert stats.pass_at_k(1000, 1, 1) == pytest.approx(0.001)
    assert stats.pass_at_k(1000, 10, 500) == pytest.approx(closed_form(1000, 10, 500))


@pytest.mark.parametrize("n,c,k", [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)])
def test_pass_at_k_rejects_impossible_arguments(n, c, k):
    with pytest.raises(ValueError, match="pass_at_k"):
        stats.pass_at_k(n, c, k)


def by_task(*cs):
    """{task id: c} for a list of counts."""
    return {f"t{i}": c for i, c in enumerate(cs)}


def test_summarize_averages_tasks_then_pairs_with_the_closed_form_interval():
    counts = {"python->cpp": by_task(10, 0),        # pass@1 0.5
              "cpp->java": by_task(5, 5, 5, 5),     # pass@1 0.5
              "python->bash": by_task(0, 0),        # pass@1 0
              "python->rust": by_task(2, 4),        # held-out, pass@1 0.3
              "cpp->lua": by_task(10, 10)}          # held-out, pass@1 1.0
    groups, pairs = stats.summarize(counts, 10)
    assert groups["rl"]["pass@1"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)  # every pair weighs the same
    assert groups["rl"]["n_pairs"] == 3 and groups["rl"]["n_tasks"] == 8
    # the stratified standard error by hand: sample variances 0.5, 0, 0 over 2, 4, 2 tasks
    se = math.sqrt(0.5 / 2 + 0 + 0) / 3
    lo, hi = groups["rl"]["ci95"]["pass@1"]
    assert (lo, hi) == pytest.approx((1 / 3 - 1.959964 * se, 1 / 3 + 1.959964 * se))
    assert groups["heldout"]["pass@1"] == pytest.approx((0.3 + 1.0) / 2)
    assert groups["all"]["pass@1"] == pytest.approx((0.5 + 0.5 + 0 + 0.3 + 1.0) / 5)
    assert groups["target java"]["pass@1"] == 0.5 and groups["target lua"]["ci95"]["pass@1"] == [1.0, 1.0]
    assert set(groups) == {"all", "rl", "heldout", "target cpp", "target java", "target bash", "target rust",
                           "target lua"}
    assert pairs["python->cpp"]["pass@5"] == pytest.approx(0.5)  # 1.0 and 0.0
    assert pairs["cpp->java"]["pass@5"] == pytest.approx(closed_form(10, 5, 5))
    assert pairs["cpp->java"]["ci95"]["pass@5"] == [pytest.approx(closed_form(10, 5, 5))] * 2
    assert set(pairs["cpp->java"]["ci95"]) == {"pass@1", "pass@5", "pass@10"}


def test_an_interval_needs_two_tasks_in_every_pair():
    groups, pairs = stats.summarize({"python->java": by_task(1), "cpp->java": by_task(0, 3)}, 4)
    assert groups["rl"]["ci95"]["pass@1"] == [None, None] and pairs["cpp->java"]["ci95"]["pass@1"][0] is not None
    assert set(groups["rl"]) == {"pass@1", "ci95", "n_pairs", "n_tasks"}  # k <= n only


def test_paired_difference_by_hand():
    a = {"python->java": by_task(3, 2, 4), "python->rust": by_task(1, 1)}
    b = {"python->java": by_task(1, 2, 1), "python->rust": by_task(0, 1), "cpp->lua": by_task(4, 4)}
    groups, pairs = stats.paired(a, b, 4)
    assert set(pairs) == {"python->java", "python->rust"}  # only pairs both evaluated
    d = [0.5, 0.0, 0.75]
    se = statistics.stdev(d) / math.sqrt(3)
    assert pairs["python->java"]["pass@1"] == pytest.approx(statistics.fmean(d))
    assert pairs["python->java"]["ci95"]["pass@1"] == pytest.approx([statistics.fmean(d) - 1.959964 * se,
                                                                     statistics.fmean(d) + 1.959964 * se])
    assert groups["all"]["pass@1"] == pytest.approx((statistics.fmean(d) + 0.125) / 2)
    assert groups["rl"]["n_tasks"] == 3 and groups["heldout"]["n_tasks"] == 2


def pass_rates(rng, n_pairs, tasks_per_pair, effect):
    """Pair names and the true pass rates of two checkpoints on the same random tasks: task
    difficulty z ~ N(mu_pair, 1.5), p_b = sigmoid(z), p_a = sigmoid(z + effect + task-specific noise)."""
    mus = np.linspace(-1.5, 1.5, n_pairs)
    z = rng.normal(mus[:, None], 1.5, (n_pairs, tasks_per_pair))
    p_b = 1 / (1 + np.exp(-z))
    p_a = 1 / (1 + np.exp(-(z + effect + rng.normal(0, 0.5, z.shape))))
    pairs = [f"python->{t}" for t in (tasks.RL_TARGETS + tasks.HELDOUT_TARGETS)[1:]][:n_pairs]
    return pairs, p_a, p_b


def simulate(rng, n_pairs, tasks_per_pair, n, effect):
    """Counts of two checkpoints sampled independently (see pass_rates): c ~ Binomial(n, p)."""
    pairs, p_a, p_b = pass_rates(rng, n_pairs, tasks_per_pair, effect)
    c_a, c_b = rng.binomial(n, p_a), rng.binomial(n, p_b)
    return ({pair: by_task(*map(int, c_a[i])) for i, pair in enumerate(pairs)},
            {pair: by_task(*map(int, c_b[i])) for i, pair in enumerate(pairs)})


def true_difference(n_pairs, effect, rng):
    """E[p_a - p_b] over the task population of pass_rates, mean over pairs (by a large sample)."""
    _, p_a, p_b = pass_rates(rng, n_pairs, 400_000, effect)
    return float((p_a - p_b).mean())


def test_the_paired_interval_covers_the_true_difference_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    truth = true_difference(8, 0.4, rng)
    covered, trials = 0, 1000
    for _ in range(trials):
        a, b = simulate(rng, 8, 10, 4, 0.4)
        lo, hi = stats.paired(a, b, 4)[0]["all"]["ci95"]["pass@1"]
        covered += lo <= truth <= hi
    # 95% expected; the binomial sd of the coverage over 1000 trials is 0.7 points
    assert 0.925 <= covered / trials <= 0.97


def test_the_single_checkpoint_interval_covers_the_true_pass_rate_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    z = rng.normal(np.linspace(-1.5, 1.5, 8)[:, None], 1.5, (8, 400_000))
    truth = float((1 / (1 + np.exp(-z))).mean())
    covered, trials = 0, 1000
    for _ in range(trials):
        _, b = simulate(rng, 8, 10, 4, 0.0)
        lo, hi = stats.summarize(b, 4)[0]["all"]["ci95"]["pass@1"]
        covered += lo <= truth <= hi
    assert 0.925 <= covered / trials <= 0.97


def test_pairing_narrows_the_interval():
    a, b = simulate(np.random.default_rng(2), 8, 20, 4, 0.3)
    lo, hi = stats.paired(a, b, 4)[0]["all"]["ci95"]["pass@1"]
    (alo, ahi), (blo, bhi) = (stats.summarize(c, 4)[0]["all"]["ci95"]["pass@1"] for c in (a, b))
    # independent samples would give a width of sqrt(wa^2 + wb^2); the shared difficulty cancels
    assert hi - lo < 0.8 * math.hypot(ahi - alo, bhi - blo)


def simulate_outcomes(rng, n_pairs, tasks_per_pair, n, effect):
    """Per-sample outcomes {pair: {task: "0110"}} of two checkpoints sampled with the same seeds
    (see pass_rates): sample j of both decided by one shared uniform draw (x = u < p), so that
    similar models mostly agree."""
    pairs, p_a, p_b = pass_rates(rng, n_pairs, tasks_per_pair, effect)
    u = rng.random((n_pairs, tasks_per_pair, n))

    def strings(p):
        return {pair: {f"t{j}": "".join("1" if x else "0" for x in u[i, j] < p[i, j, None])
                       for j in range(tasks_per_pair)} for i, pair in enumerate(pairs)}
    return strings(p_a), strings(p_b)


def overall_difference(a, b, n):
    def counts(outcomes):
        return {pair: {t: o.count("1") for t, o in by_task.items()} for pair, by_task in outcomes.items()}
    return stats.paired(counts(a), counts(b), n)[0]["all"]


def test_the_predicted_width_matches_the_subsampled_width_and_the_true_spread():
    """The variance decomposition of one evaluation predicts the paired interval's width at other
    (tasks, n) choices; subsampling it measures them, keeping sample j of both checkpoints paired;
    and both match the spread of the difference over many fresh evaluations of that size, which
    the shared draws make narrower than independent sampling would (the old decomposition, which
    took the two checkpoints' samples as independent, predicted it twice too wide here)."""
    rng = np.random.default_rng(3)
    a, b = simulate_outcomes(rng, 8, 40, 8, 0.3)
    rows, between, within = stats.budget_table(a, b, 40)
    assert [(t, n) for t, n, _, _ in rows] == [(40, 1), (20, 2), (10, 4), (8, 5), (4, 10), (2, 20)]
    assert between > 0 and within > 0
    for t, n, measured, predicted in rows:
        if measured is not None:
            assert measured == pytest.approx(predicted, rel=0.2), (t, n)
    assert rows[-1][2] is None and rows[-2][2] is None  # n = 10 and 20 > the 8 samples evaluated
    fresh = [overall_difference(*simulate_outcomes(rng, 8, 20, 2, 0.3), 2)["pass@1"] for _ in range(400)]
    true_width = 2 * 1.959964 * statistics.stdev(fresh)
    assert rows[1][3] == pytest.approx(true_width, rel=0.2)
    widths = [predicted for _, _, _, predicted in rows]
    assert widths == sorted(widths)


def test_predicted_width_closed_form():
    # 2 z sqrt((between + within / n) / (P T))
    assert stats.predicted_width(0.04, 0.3, 16, 100, 1) == pytest.approx(2 * 1.959964 * math.sqrt(0.34 / 1600))
