"""Tests of eval.py: pass@k against its closed form, the summaries and the ablation table on fake
results, and an end-to-end evaluation of a smoke checkpoint (its JSON keys, its reuse, --compare)."""
import json
import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import statistics
import torch

import eval as evaluation
import tasks
import tokenizer
from model import GPT, GPTConfig
from rollout import Rollout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def closed_form(n, c, k):
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def test_pass_at_k_matches_the_closed_form_on_random_cases():
    rng = random.Random(0)
    for _ in range(2000):
        n = rng.randint(1, 60)
        c, k = rng.randint(0, n), rng.randint(1, n)
        assert evaluation.pass_at_k(n, c, k) == pytest.approx(closed_form(n, c, k), abs=1e-12), (n, c, k)


@pytest.mark.parametrize("n,c,k,expected", [
    (10, 0, 1, 0.0), (10, 0, 10, 0.0),       # nothing passed: pass@k is 0 for every k
    (10, 10, 1, 1.0), (10, 10, 10, 1.0),     # everything passed
    (10, 6, 5, 1.0), (10, 1, 10, 1.0),       # n - c < k: every draw of k holds a passing sample
    (10, 3, 1, 0.3), (1, 1, 1, 1.0), (1, 0, 1, 0.0),  # pass@1 is c / n
    (5, 2, 2, 1 - 3 / 10),                   # 1 - C(3,2)/C(5,2)
])
def test_pass_at_k_edge_cases(n, c, k, expected):
    assert evaluation.pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_is_stable_for_large_n():
    # C(1000, 500) overflows a float; the product form does not need it
    assert evaluation.pass_at_k(1000, 1, 1) == pytest.approx(0.001)
    assert evaluation.pass_at_k(1000, 10, 500) == pytest.approx(closed_form(1000, 10, 500))


@pytest.mark.parametrize("n,c,k", [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)])
def test_pass_at_k_rejects_impossible_arguments(n, c, k):
    with pytest.raises(ValueError, match="pass_at_k"):
        evaluation.pass_at_k(n, c, k)


def by_task(*cs):
    """{task id: c} for a list of counts."""
    return {f"t{i}": c for i, c in enumerate(cs)}


def test_summarize_averages_tasks_then_pairs_with_the_closed_form_interval():
    counts = {"python->cpp": by_task(10, 0),        # pass@1 0.5
              "cpp->java": by_task(5, 5, 5, 5),     # pass@1 0.5
              "python->bash": by_task(0, 0),        # pass@1 0
              "python->rust": by_task(2, 4),        # held-out, pass@1 0.3
              "cpp->lua": by_task(10, 10)}          # held-out, pass@1 1.0
    groups, pairs = evaluation.summarize(counts, 10)
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
    groups, pairs = evaluation.summarize({"python->java": by_task(1), "cpp->java": by_task(0, 3)}, 4)
    assert groups["rl"]["ci95"]["pass@1"] == [None, None] and pairs["cpp->java"]["ci95"]["pass@1"][0] is not None
    assert set(groups["rl"]) == {"pass@1", "ci95", "n_pairs", "n_tasks"}  # k <= n only


def test_paired_difference_by_hand():
    a = {"python->java": by_task(3, 2, 4), "python->rust": by_task(1, 1)}
    b = {"python->java": by_task(1, 2, 1), "python->rust": by_task(0, 1), "cpp->lua": by_task(4, 4)}
    groups, pairs = evaluation.paired(a, b, 4)
    assert set(pairs) == {"python->java", "python->rust"}  # only pairs both evaluated
    d = [0.5, 0.0, 0.75]
    se = statistics.stdev(d) / math.sqrt(3)
    assert pairs["python->java"]["pass@1"] == pytest.approx(statistics.fmean(d))
    assert pairs["python->java"]["ci95"]["pass@1"] == pytest.approx([statistics.fmean(d) - 1.959964 * se,
                                                                     statistics.fmean(d) + 1.959964 * se])
    assert groups["all"]["pass@1"] == pytest.approx((statistics.fmean(d) + 0.125) / 2)
    assert groups["rl"]["n_tasks"] == 3 and groups["heldout"]["n_tasks"] == 2


def simulate(rng, n_pairs, tasks_per_pair, n, effect):
    """Counts of two checkpoints on the same random tasks: task difficulty z ~ N(mu_pair, 1.5),
    p_b = sigmoid(z), p_a = sigmoid(z + effect + task-specific noise); c ~ Binomial(n, p)."""
    mus = np.linspace(-1.5, 1.5, n_pairs)
    z = rng.normal(mus[:, None], 1.5, (n_pairs, tasks_per_pair))
    p_b = 1 / (1 + np.exp(-z))
    p_a = 1 / (1 + np.exp(-(z + effect + rng.normal(0, 0.5, z.shape))))
    c_a, c_b = rng.binomial(n, p_a), rng.binomial(n, p_b)
    pairs = [f"python->{t}" for t in (tasks.RL_TARGETS + tasks.HELDOUT_TARGETS)[1:]][:n_pairs]
    return ({pair: by_task(*map(int, c_a[i])) for i, pair in enumerate(pairs)},
            {pair: by_task(*map(int, c_b[i])) for i, pair in enumerate(pairs)})


def true_difference(n_pairs, effect, rng):
    """E[p_a - p_b] over the task population of simulate, mean over pairs (by a large sample)."""
    mus = np.linspace(-1.5, 1.5, n_pairs)
    z = rng.normal(mus[:, None], 1.5, (n_pairs, 400_000))
    p_a = 1 / (1 + np.exp(-(z + effect + rng.normal(0, 0.5, z.shape))))
    return float((p_a - 1 / (1 + np.exp(-z))).mean())


def test_the_paired_interval_covers_the_true_difference_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    truth = true_difference(8, 0.4, rng)
    covered, trials = 0, 1000
    for _ in range(trials):
        a, b = simulate(rng, 8, 10, 4, 0.4)
        lo, hi = evaluation.paired(a, b, 4)[0]["all"]["ci95"]["pass@1"]
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
        lo, hi = evaluation.summarize(b, 4)[0]["all"]["ci95"]["pass@1"]
        covered += lo <= truth <= hi
    assert 0.925 <= covered / trials <= 0.97


def test_pairing_narrows_the_interval():
    a, b = simulate(np.random.default_rng(2), 8, 20, 4, 0.3)
    lo, hi = evaluation.paired(a, b, 4)[0]["all"]["ci95"]["pass@1"]
    (alo, ahi), (blo, bhi) = (evaluation.summarize(c, 4)[0]["all"]["ci95"]["pass@1"] for c in (a, b))
    # independent samples would give a width of sqrt(wa^2 + wb^2); the shared difficulty cancels
    assert hi - lo < 0.8 * math.hypot(ahi - alo, bhi - blo)


def test_the_predicted_width_matches_the_subsampled_width():
    """The variance decomposition predicts the paired interval's width at (tasks, n) choices that
    subsampling one larger evaluation measures; at a fixed number of programs, n = 1 is narrowest
    when tasks differ more than samples of one task do."""
    a, b = simulate(np.random.default_rng(3), 8, 40, 8, 0.3)
    rows, between, within = evaluation.budget_table(a, b, 8, 40)
    assert [(t, n) for t, n, _, _ in rows] == [(40, 1), (20, 2), (10, 4), (8, 5), (4, 10), (2, 20)]
    assert between > 0 and within > 0
    for t, n, measured, predicted in rows:
        if measured is not None:
            assert measured == pytest.approx(predicted, rel=0.2), (t, n)
    assert rows[-1][2] is None and rows[-2][2] is None  # n = 10 and 20 > the 8 samples evaluated
    widths = [predicted for _, _, _, predicted in rows]
    assert widths == sorted(widths)


def test_predicted_width_closed_form():
    # 2 z sqrt((between + within / n) / (P T))
    assert evaluation.predicted_width(0.04, 0.3, 16, 100, 1) == pytest.approx(2 * 1.959964 * math.sqrt(0.34 / 1600))


def test_unavailable_targets_are_dropped_with_one_message(monkeypatch, capsys):
    monkeypatch.setattr(evaluation.reward, "available", lambda lang: lang not in ("rust", "php"))
    targets, missing = evaluation.available_targets(0)
    assert missing == ["php", "rust"] and "php" not in targets and "java" in targets
    out = capsys.readouterr().out
    assert out.count("not evaluated") == 1 and "php, rust" in out
    all_tasks = [{"src_lang": "python", "tgt_lang": t, "id": t} for t in ("java", "php", "rust", "lua")]
    by_pair, too_long = evaluation.select_tasks(all_tasks, 0, lambda task: task["id"] != "lua", targets)
    assert set(by_pair) == {"python->java"} and too_long == 1


def test_first_failure_names_the_first_failing_test():
    task = {"tgt_lang": "python", "n_args": 1, "tests": [["3", "4"], ["5", "6"], ["7", "8"]]}
    wrong = "def f(a):\n    return a + 1 if a < 5 else a\n"
    assert evaluation.first_failure(task, wrong) == "input '5': expected '6', got '5'"
    assert evaluation.first_failure(task, "def f(a):\n    return a + 1\n") == ""


def test_pass_matrix_puts_rl_and_heldout_targets_apart():
    _, pairs = evaluation.summarize({"python->java": by_task(3, 5), "cpp->java": by_task(1, 1), "cpp->go": by_task(10, 10)}, 10)
    text = evaluation.pass_matrix(pairs, "title")
    _, header, python_row, cpp_row = text.splitlines()
    assert header.index("php") < header.index("|") < header.index("rust")
    assert python_row.split()[:5] == ["python", "-", "-", "40±20", "-"]
    assert cpp_row.split("|")[1].split() == ["-", "100±0", "-"]


# ----------------------------------------------------------------------------- plots

def test_plot_without_matplotlib_says_so_and_does_not_crash(tmp_path, monkeypatch, capsys):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(json.dumps({"step": 0, "stage": "sft", "loss": 3.0}) + "\n")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    assert evaluation.plot_metrics(str(metrics)) is None
    assert "matplotlib is not installed" in capsys.readouterr().out
    assert not (tmp_path / "metrics.png").exists()


def test_training_curves_are_plotted_with_the_probe_margin(tmp_path):
    import matplotlib  # noqa: F401  (installed by setup.sh; the test above covers its absence)
    metrics = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "stage": "sft", "loss": 3.0 - s / 10} for s in range(3)]
    rows += [{"step": s, "stage": "oorl", "reward": 0.1 * s, "kl": 0.01, "gepo_margin": 0.1, "entropy": 1.0,
              "clip_frac": 0.0, "pass_rate": {"java": 0.5}, **({"probe_margin": 0.01 * s} if s % 2 == 0 else {})}
             for s in range(3)]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert evaluation.plot_metrics(str(metrics)) == str(tmp_path / "metrics.png")
    assert (tmp_path / "metrics.png").stat().st_size > 0


# ----------------------------------------------------------------------------- end to end

# prepare.py overrides for a tiny world: 120 training programs, 10 per eval split, a few IR groups
TINY_DATA = ["--n_train=120", "--n_val=10", "--n_test=10", "--n_ir_groups=6", "--vocab_size=512"]


def make_checkpoint(path, data_dir, seed):
    """A checkpoint as train.py writes one (model, model_args, config, stage, tokenizer record),
    of a tiny random GPT: its completions are nonsense, which is all the plumbing needs."""
    enc = tokenizer.load(str(data_dir))
    torch.manual_seed(seed)
    args = dict(block_size=512, vocab_size=enc.n_vocab, n_layer=1, n_head=2, n_embd=32, dropout=0.0)
    torch.save(dict(model=GPT(GPTConfig(**args)).state_dict(), model_args=args, stage="sft", tokenizer=enc.record(),
                    config=dict(data_dir=str(data_dir), max_new_tokens=16, gepo_beta=0.1)), path)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    """Tiny data, two tiny checkpoints and a held-out IR groups file: (data_dir, a.pt, b.pt)."""
    tmp = tmp_path_factory.mktemp("eval")
    data = tmp / "data"
    done = subprocess.run([sys.executable, "prepare.py", f"--data_dir={data}", *TINY_DATA], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (data / "probe_groups.jsonl").write_text("".join((data / "ir_groups.jsonl").read_text().splitlines(True)[:3]))
    make_checkpoint(tmp / "a.pt", data, 0)
    make_checkpoint(tmp / "b.pt", data, 1)
    return data, tmp / "a.pt", tmp / "b.pt"


def run_eval(*args):
    done = subprocess.run([sys.executable, "eval.py", *args], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


FIGURE = {"pass@1", "ci95", "n_pairs", "n_tasks"}


@pytest.mark.slow
def test_eval_end_to_end_json_compare_probe_and_show(tiny_world):
    data, a, b = tiny_world
    args = [f"--ckpt={a}", "--n=2", "--max_tasks_per_pair=2", "--max_new_tokens=16", "--probe_groups=probe_groups.jsonl"]
    stdout = run_eval(*args, f"--compare={b}", "--show=3")
    result = json.loads(a.with_suffix(".eval.json").read_text())
    assert set(result) == {"ckpt", "ckpt_mtime", "settings", "groups", "pairs", "not_evaluated", "statuses", "counts",
                           "examples", "seconds", "ir_probe", "difference"}
    pairs = {f"{s}->{t}" for s in tasks.SOURCE_LANGS for t in tasks.RL_TARGETS + tasks.HELDOUT_TARGETS if s != t}
    assert set(result["pairs"]) == set(result["counts"]) == pairs and result["not_evaluated"] == []
    assert {"all", "rl", "heldout", "target java", "target lua"} <= set(result["groups"])
    for figure in list(result["groups"].values()) + list(result["pairs"].values()):
        assert set(figure) == FIGURE and set(figure["ci95"]) == {"pass@1"}
        lo, hi = figure["ci95"]["pass@1"]
        assert 0.0 <= lo <= figure["pass@1"] <= hi <= 1.0
    assert all(len(by_task) == 2 for by_task in result["counts"].values())
    assert sum(result["statuses"].values()) == 2 * 2 * len(pairs)
    difference = result["difference"]
    assert difference["compared_with"] == str(b) and set(difference["groups"]) == set(result["groups"])
    assert set(difference["groups"]["rl"]) == FIGURE
    probe = result["ir_probe"]
    assert probe["groups"] == 3 and probe["reference"] == str(b) and 0.0 <= probe["positive_share"] <= 1.0
    assert len(result["examples"]) == 3
    assert set(result["examples"][0]) == {"pair", "task", "source", "completion", "verdict", "passed", "total", "error"}
    for text in ("source \\ target", "rl: pass@1", "paired difference", "IR probe on 3 held-out groups",
                 "--- source", "--- completion", "target lua: pass@1"):
        assert text in stdout, text

    # the same settings again: both JSONs are reused; --ref_ckpt sets the probe's reference alone
    stdout = run_eval(*args, f"--ref_ckpt={a}")
    assert "reusing" in stdout and "margin +0.0000, positive in 0%" in stdout  # a model against itself

    # greedy decoding: one sample at temperature 0
    run_eval(*args, "--greedy=True", f"--out_json={a.parent / 'greedy.json'}")
    greedy = json.loads((a.parent / "greedy.json").read_text())
    assert greedy["settings"]["n"] == 1 and greedy["settings"]["temperature"] == 0.0


@pytest.mark.slow
def test_a_checkpoint_that_runs_code_when_loaded_is_refused(tiny_world, tmp_path):
    """weights_only=True: a pickle that would call a function on load is an error, and runs nothing."""
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model": {}, "model_args": {}, "config": Payload()}, tmp_path / "evil.pt")
    done = subprocess.run([sys.executable, "eval.py", f"--ckpt={tmp_path / 'evil.pt'}"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode != 0 and "evil.pt" in done.stderr and not marker.exists()


def test_a_file_of_random_bytes_is_one_line_naming_it(tmp_path):
    (tmp_path / "noise.pt").write_bytes(os.urandom(4096))
    done = subprocess.run([sys.executable, "eval.py", f"--ckpt={tmp_path / 'noise.pt'}", "--reuse=False"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "noise.pt" in done.stderr


@pytest.mark.slow
def test_an_oracle_that_samples_the_reference_once_in_five_scores_a_fifth(tiny_world, monkeypatch):
    """The whole pipeline (tokenizer, decoding, the real reward.py, counting, pass@k) on known
    answers: sample 0 of every task is its reference translation, the others are nonsense, so
    pass@1 is exactly 1/5 and pass@5 exactly 1 on every pair."""
    data, a, _ = tiny_world
    enc = tokenizer.load(str(data))
    with open(data / "tasks_test.jsonl") as f:
        reference_of = {tuple(enc.encode(t["prompt"])): t["reference"] for t in map(json.loads, f)}

    def oracle(model, prompts, group_size, max_new_tokens, eot_id, *args):
        rows = [enc.encode(reference_of[tuple(p)] if g == 0 else "nonsense") + [eot_id]
                for p in prompts for g in range(group_size)]
        width = max(map(len, rows))
        completions = torch.full((len(rows), width), eot_id)
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for r, row in enumerate(rows):
            completions[r, :len(row)], mask[r, :len(row)] = torch.tensor(row), True
        zeros = torch.zeros(len(rows), width)
        return Rollout([list(p) for p in prompts], group_size, completions, mask, zeros,
                       torch.zeros(len(rows), dtype=torch.bool), zeros)

    monkeypatch.setattr(evaluation, "rollout", oracle)
    config = dict(split="test", n=5, temperature=0.8, greedy=False, top_k=None, top_p=None, max_new_tokens=0,
                  max_tasks_per_pair=2, seed=0, data_dir="", batch_size=20, show=0)
    result = evaluation.evaluate(str(a), config)
    for pair, p in result["pairs"].items():
        assert p["n_tasks"] == 2, pair
        assert p["pass@1"] == pytest.approx(1 / 5) and p["pass@5"] == pytest.approx(1.0), pair
        assert p["ci95"]["pass@1"] == [pytest.approx(0.2), pytest.approx(0.2)]  # no variance at all
    assert result["groups"]["rl"]["pass@1"] == pytest.approx(1 / 5)
    assert result["groups"]["heldout"]["pass@5"] == pytest.approx(1.0)
    assert len(result["pairs"]) == 16 and result["statuses"] == {"passed": 2 * 16, "malformed": 2 * 4 * 16}
