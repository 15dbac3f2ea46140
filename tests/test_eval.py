"""Tests of eval.py: pass@k against its closed form, the summaries and the ablation table on fake
results, and an end-to-end evaluation of a smoke checkpoint (its JSON keys, its reuse, --compare)."""
import json
import math
import os
import random
import subprocess
import sys

import pytest
import torch

import eval as evaluation
import tasks
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


def test_summarize_averages_tasks_then_pairs():
    counts = {"python->cpp": [10, 0],        # pass@1 0.5
              "cpp->java": [5, 5, 5, 5],     # pass@1 0.5
              "python->bash": [0, 0],        # pass@1 0
              "python->rust": [2, 4],        # held-out, pass@1 0.3
              "cpp->lua": [10]}              # held-out, pass@1 1.0
    summary = evaluation.summarize(counts, 10)
    assert set(summary["pairs"]) == {"python->cpp", "cpp->java", "python->bash"}
    assert summary["pass@1"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)  # every pair weighs the same
    assert summary["pairs"]["cpp->java"]["n_tasks"] == 4
    assert summary["pairs"]["python->cpp"]["pass@5"] == pytest.approx(0.5)  # 1.0 and 0.0
    assert summary["pairs"]["cpp->java"]["pass@5"] == pytest.approx(closed_form(10, 5, 5))
    assert set(summary["pass@k"]) == {"1", "5", "10"}
    assert set(summary["heldout"]["pairs"]) == {"python->rust", "cpp->lua"}
    assert summary["heldout"]["pass@1"] == pytest.approx((0.3 + 1.0) / 2)
    assert summary["heldout"]["pass@k"]["10"] == pytest.approx(1.0)


def test_summarize_reports_only_k_up_to_n():
    summary = evaluation.summarize({"python->java": [1, 0, 1]}, 4)
    assert set(summary["pass@k"]) == {"1"}
    assert set(summary["pairs"]["python->java"]) == {"pass@1", "n_tasks"}


def fake_result(rl, heldout, per_target=None):
    """An eval result whose pairs give the requested pass@1 figures."""
    per_target = per_target or {}
    pairs = {f"python->{t}": {"pass@1": per_target.get(t, rl)} for t in tasks.RL_TARGETS}
    held = {f"python->{t}": {"pass@1": per_target.get(t, heldout)} for t in tasks.HELDOUT_TARGETS}
    return {"pass@1": rl, "pairs": pairs, "heldout": {"pass@1": heldout, "pairs": held}}


def test_ablation_table_renders_means_and_stds():
    rows = [("SFT only", [fake_result(0.10, 0.05), fake_result(0.20, 0.05), fake_result(0.30, 0.05)]),
            ("+ REINFORCE++ + GEPO", [fake_result(0.40, 0.10, {"java": 0.5}), fake_result(0.50, 0.30, {"java": 0.7})]),
            ("one seed", [fake_result(0.125, 0.25)])]
    table = evaluation.ablation_table(evaluation.ablation_summary(rows)).splitlines()
    # 10, 20, 30 %: mean 20, sample std 10; 5, 5, 5 %: std 0
    assert "| SFT only | 3 | 20.0 ± 10.0 | 5.0 ± 0.0 |" in table
    # 40, 50 %: mean 45, std 7.1; 10, 30 %: mean 20, std 14.1
    assert "| + REINFORCE++ + GEPO | 2 | 45.0 ± 7.1 | 20.0 ± 14.1 |" in table
    assert "| one seed | 1 | 12.5 | 25.0 |" in table
    per_target = next(line for line in table if line.startswith("| + REINFORCE++ + GEPO |") and line.count("|") > 6)
    cells = [cell.strip() for cell in per_target.strip("|").split("|")]
    columns = tasks.RL_TARGETS + tasks.HELDOUT_TARGETS
    assert cells[1 + columns.index("java")] == "60.0 ± 14.1"
    assert cells[1 + columns.index("python")] == "45.0 ± 7.1"
    assert cells[1 + columns.index("lua")] == "20.0 ± 14.1"


def test_pass_matrix_puts_rl_and_heldout_targets_apart():
    result = evaluation.summarize({"python->java": [3], "cpp->java": [1], "cpp->go": [10]}, 10)
    text = evaluation.pass_matrix(result)
    header, python_row, cpp_row, mean_row = text.splitlines()
    assert header.index("php") < header.index("|") < header.index("rust")
    assert python_row.split()[:5] == ["python", "-", "-", "30.0", "-"]
    assert cpp_row.split("|")[1].split() == ["-", "100.0", "-"]
    assert mean_row.split()[3] == "20.0"


# ----------------------------------------------------------------------------- plots

def test_plots_without_matplotlib_say_so_and_do_not_crash(tmp_path, monkeypatch, capsys):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(json.dumps({"step": 0, "stage": "sft", "loss": 3.0}) + "\n")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    assert evaluation.plot_metrics(str(metrics)) is None
    assert evaluation.plot_ablation([], str(tmp_path / "ablation.png")) is None
    assert "matplotlib is not installed" in capsys.readouterr().out
    assert not (tmp_path / "metrics.png").exists()


def test_plots_are_written(tmp_path):
    import matplotlib  # noqa: F401  (installed by setup.sh; the test above covers its absence)
    metrics = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "stage": "sft", "loss": 3.0 - s / 10} for s in range(3)]
    rows += [{"step": s, "stage": "oorl", "reward": 0.1 * s, "kl": 0.01, "gepo_margin": 0.1, "entropy": 1.0,
              "clip_frac": 0.0, "pass_rate": {"java": 0.5}} for s in range(3)]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert evaluation.plot_file(str(metrics)) == str(tmp_path / "metrics.png")
    summary = evaluation.ablation_summary([("SFT only", [fake_result(0.1, 0.0), fake_result(0.2, 0.1)])])
    (tmp_path / "ablation.json").write_text(json.dumps({"rows": summary}))
    assert evaluation.plot_file(str(tmp_path / "ablation.json")) == str(tmp_path / "ablation.png")
    assert (tmp_path / "metrics.png").stat().st_size > 0 and (tmp_path / "ablation.png").stat().st_size > 0


# ----------------------------------------------------------------------------- end to end

# prepare.py overrides for a tiny world: 120 training programs, 10 per eval split, a few IR groups
TINY_DATA = ["--n_train=120", "--n_val=10", "--n_test=10", "--n_ir_groups=6", "--vocab_size=512"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """Tiny data and a smoke run on it (config/smoke.py, one RL step): (data_dir, out_dir).
    (A session-wide fixture in conftest.py could share this with other test files.)"""
    tmp = tmp_path_factory.mktemp("eval")
    data, out = tmp / "data", tmp / "out"
    for command in (["prepare.py", f"--data_dir={data}", *TINY_DATA],
                    ["train.py", "config/smoke.py", f"--out_dir={out}", f"--data_dir={data}", "--rl_steps=1"]):
        done = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return data, out


def run_eval(*args):
    done = subprocess.run([sys.executable, "eval.py", *args], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.slow
def test_eval_end_to_end_on_the_smoke_checkpoint(smoke_run):
    _, out = smoke_run
    args = [f"--ckpt={out / 'oorl.pt'}", "--n=5", "--max_tasks_per_pair=1", "--max_new_tokens=32"]
    stdout = run_eval(*args)
    assert "source \\ target" in stdout and "RL targets: pass@1" in stdout and "eta" in stdout
    with open(out / "oorl.eval.json") as f:
        result = json.load(f)
    for key in ("pass@1", "pass@k", "pairs", "heldout", "split", "n", "temperature", "ckpt"):
        assert key in result, key
    assert 0.0 <= result["pass@1"] <= 1.0 and 0.0 <= result["heldout"]["pass@1"] <= 1.0
    assert set(result["pass@k"]) == {"1", "5"}  # k <= n only
    assert result["split"] == "test" and result["n"] == 5 and result["temperature"] == 0.8
    expected_pairs = {f"{s}->{t}" for s in tasks.SOURCE_LANGS for t in tasks.RL_TARGETS if s != t}
    assert set(result["pairs"]) == expected_pairs
    assert set(result["heldout"]["pairs"]) == {f"{s}->{t}" for s in tasks.SOURCE_LANGS for t in tasks.HELDOUT_TARGETS}
    assert all(p["n_tasks"] == 1 and set(p) == {"pass@1", "pass@5", "n_tasks"} for p in result["pairs"].values())
    assert sum(result["statuses"].values()) == 5 * len(expected_pairs | set(result["heldout"]["pairs"]))

    # the same settings again: the JSON is reused, not recomputed; --compare evaluates the SFT model
    stdout = run_eval(*args, f"--compare={out / 'sft.pt'}")
    assert "reusing" in stdout and "difference in pass@1" in stdout
    assert (out / "sft.eval.json").exists()

    # greedy decoding: one sample at temperature 0, pass@1 only
    run_eval(*args, "--greedy=True", f"--out_json={out / 'greedy.json'}")
    with open(out / "greedy.json") as f:
        greedy = json.load(f)
    assert greedy["n"] == 1 and greedy["temperature"] == 0.0 and set(greedy["pass@k"]) == {"1"}


@pytest.mark.slow
def test_an_oracle_that_samples_the_reference_once_in_five_scores_a_fifth(smoke_run, monkeypatch):
    """The whole pipeline (tokenizer, decoding, the real reward.py, counting, pass@k) on known
    answers: sample 0 of every task is its reference translation, the others are nonsense, so
    pass@1 is exactly 1/5 and pass@5 exactly 1 on every pair."""
    data, out = smoke_run
    enc = tasks.load_tokenizer(str(data))
    with open(data / "tasks_test.jsonl") as f:
        reference_of = {tuple(enc.encode(t["prompt"], allowed_special="all")): t["reference"]
                        for t in map(json.loads, f)}

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
                  max_tasks_per_pair=2, seed=0, data_dir="", batch_size=20)
    result = evaluation.evaluate(str(out / "sft.pt"), config, "cpu")
    for pairs in (result["pairs"], result["heldout"]["pairs"]):
        for pair, p in pairs.items():
            assert p["n_tasks"] == 2, pair
            assert p["pass@1"] == pytest.approx(1 / 5) and p["pass@5"] == pytest.approx(1.0), pair
    assert result["pass@1"] == pytest.approx(1 / 5) and result["heldout"]["pass@k"]["5"] == pytest.approx(1.0)
    n_pairs = len(result["pairs"]) + len(result["heldout"]["pairs"])
    assert n_pairs == 16 and result["statuses"] == {"passed": 2 * n_pairs, "malformed": 2 * 4 * n_pairs}
