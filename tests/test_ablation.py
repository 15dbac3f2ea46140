"""Tests of ablation.py: the plan of jobs (one shared SFT model, the order in which settings win),
the table of rows and differences with their intervals on made-up evaluations, how many seeds
resolve a difference, and a whole ablation at a tiny size."""
import json
import math
import os
import statistics
import subprocess
import sys

import pytest

import ablation
import stats
import tasks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def flag(command, key):
    values = [arg.split("=", 1)[1] for arg in command if arg.startswith(f"--{key}=")]
    return values[-1] if values else None  # the last one wins (configurator applies them in order)


def test_plan_trains_one_shared_sft_model_then_every_row_and_seed():
    jobs = ablation.plan(("sft", "rl", "rl_gepo"), (1, 2), "out/abl", "out/abl/sft/sft.pt", True,
                         ["--rl_steps=5", "--out_dir=elsewhere", "--pref_loss=dpo"], ["--n=4"])
    assert [(j["kind"], j["row"], j["seed"]) for j in jobs] == [
        ("sft", "sft", 1),
        ("eval", "sft", 1), ("train", "rl", 1), ("eval", "rl", 1), ("train", "rl_gepo", 1), ("eval", "rl_gepo", 1),
        ("eval", "sft", 2), ("train", "rl", 2), ("eval", "rl", 2), ("train", "rl_gepo", 2), ("eval", "rl_gepo", 2)]
    sft = jobs[0]["command"]
    assert "config/ablation_sft.py" in sft and flag(sft, "out_dir") == "out/abl/sft" and flag(sft, "sft_ckpt") is None
    for job in (j for j in jobs if j["kind"] == "train"):
        command = job["command"]
        # every RL run starts from the one SFT model; its own out_dir and seed win over the user's
        assert flag(command, "sft_ckpt") == "out/abl/sft/sft.pt"
        assert flag(command, "out_dir") == f"out/abl/{job['row']}_seed{job['seed']}"
        assert flag(command, "seed") == str(job["seed"]) and flag(command, "rl_steps") == "5"
        # the row's config file comes after the user's overrides, so the row's pref_loss wins
        assert command.index(f"config/ablation_{job['row']}.py") > command.index("--pref_loss=dpo")
        assert job["output"] == f"out/abl/{job['row']}_seed{job['seed']}/oorl.pt"
    sft_evals = [j for j in jobs if j["kind"] == "eval" and j["row"] == "sft"]
    # the SFT row: the same checkpoint, one evaluation per sampling seed, each in its own file
    assert [flag(j["command"], "ckpt") for j in sft_evals] == ["out/abl/sft/sft.pt"] * 2
    assert [flag(j["command"], "seed") for j in sft_evals] == ["1", "2"]
    assert len({j["output"] for j in jobs if j["kind"] == "eval"}) == 6
    assert all(flag(j["command"], "n") == "4" for j in jobs if j["kind"] == "eval")
    # an RL run's evaluation also probes it against the shared SFT model; the SFT row has no probe
    assert all(flag(j["command"], "ref_ckpt") == ("out/abl/sft/sft.pt" if j["row"] != "sft" else None)
               for j in jobs if j["kind"] == "eval")


def test_plan_without_training_the_shared_model_when_it_exists():
    jobs = ablation.plan(("rl",), (7,), "out/abl", "given/sft.pt", False, [], [])
    assert [j["kind"] for j in jobs] == ["train", "eval"]
    assert flag(jobs[0]["command"], "sft_ckpt") == "given/sft.pt"


# ----------------------------------------------------------------------------- the table

def fake_result(rl_counts, heldout_counts, n=4):
    """An eval result (as eval.py writes it) over 2 tasks of python->java and python->bash (RL
    targets) and python->rust (held-out), from per-task counts of passing samples."""
    counts = {"python->java": {"t0": rl_counts[0], "t1": rl_counts[1]},
              "python->bash": {"t0": rl_counts[2], "t1": rl_counts[3]},
              "python->rust": {"t0": heldout_counts[0], "t1": heldout_counts[1]}}
    return {"settings": {"n": n}, "counts": counts, "groups": stats.summarize(counts, n)[0]}


def test_rows_and_differences_with_both_intervals():
    sft = [fake_result([1, 1, 0, 2], [0, 1]), fake_result([2, 1, 0, 1], [1, 1])]
    gepo = [fake_result([3, 2, 1, 2], [1, 1]), fake_result([2, 2, 1, 3], [2, 1])]
    dpo = [fake_result([2, 2, 0, 2], [1, 1]), fake_result([3, 1, 1, 2], [1, 1])]
    summary = ablation.summarize_rows([("sft", sft), ("rl_dpo", dpo), ("rl_gepo", gepo)])
    assert [r["label"] for r in summary["rows"]] == ["SFT only", "+ REINFORCE++ + DPO", "+ REINFORCE++ + GEPO"]
    assert summary["rows"][0]["rl"] == [pytest.approx((2 / 8 + 2 / 8) / 2), pytest.approx((3 / 8 + 1 / 8) / 2)]
    labels = [d["label"] for d in summary["differences"]]
    assert labels == ["+ REINFORCE++ + DPO − SFT", "+ REINFORCE++ + GEPO − SFT",
                      "+ REINFORCE++ + GEPO − + REINFORCE++ + DPO"]  # no RL-alone row here
    gepo_sft = summary["differences"][1]["rl"]
    # per task, GEPO - SFT averaged over the seeds: java t0 (2 + 0)/2/4, t1 (1 + 1)/2/4; bash t0 (1 + 1)/2/4,
    # t1 (0 + 2)/2/4: all 0.25
    assert gepo_sft["paired"]["pass@1"] == pytest.approx(0.25)
    assert gepo_sft["paired"]["ci95"] == [pytest.approx(0.25), pytest.approx(0.25)]  # no spread over tasks
    per_seed = [(8 / 16 - 4 / 16), (8 / 16 - 4 / 16)]
    assert gepo_sft["per_seed"] == pytest.approx(per_seed)
    assert gepo_sft["over_seeds"]["std"] == pytest.approx(0.0)
    heldout = summary["differences"][1]["heldout"]
    assert heldout["per_seed"] == pytest.approx([0.25 - 0.125, 0.375 - 0.25])
    assert summary["differences"][2]["paper"] == pytest.approx(0.0283)  # GEPO - DPO in the paper's Table 4
    notes = ablation.resolution_notes(summary).splitlines()
    assert len(notes) == 4 and "the paper's difference, +2.8 points" in notes[3]  # measured and paper-sized


def test_a_row_of_ones_own_is_compared_with_the_row_it_changes():
    sft = [fake_result([1, 1, 0, 2], [0, 1])]
    gepo, grpo = [fake_result([3, 2, 1, 2], [1, 1])], [fake_result([3, 3, 1, 2], [1, 2])]
    rows = [("sft", sft), ("rl_gepo", gepo), ("grpo", grpo)]
    labels = [d["label"] for d in ablation.summarize_rows(rows, [("grpo", "rl_gepo")])["differences"]]
    assert labels == ["+ REINFORCE++ + GEPO − SFT", "grpo − SFT", "grpo − + REINFORCE++ + GEPO"]
    assert "paper" not in ablation.summarize_rows(rows, [("grpo", "rl_gepo")])["differences"][2]


@pytest.mark.parametrize("comparisons", ["[['grpo', 'rl']]", "[['rl_gepo']]"])
def test_comparisons_must_name_pairs_of_rows(comparisons):
    done = subprocess.run([sys.executable, "ablation.py", f"--comparisons={comparisons}", "--rows=['sft', 'rl_gepo']"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode != 0 and "--comparisons" in done.stderr and "ablation:" not in done.stdout


def test_over_seeds_uses_the_t_interval():
    result = ablation.over_seeds([0.10, 0.20, 0.30])
    half = 4.303 * 0.1 / math.sqrt(3)
    assert result["mean"] == pytest.approx(0.2) and result["std"] == pytest.approx(0.1)
    assert result["ci95"] == [pytest.approx(0.2 - half), pytest.approx(0.2 + half)]
    assert ablation.over_seeds([0.5]) == {"mean": 0.5, "std": None, "ci95": [None, None]}
    assert ablation.t975(1000) == pytest.approx(1.962, abs=1e-3)  # the expansion beyond the table


def test_seeds_to_resolve_is_the_fewest_that_exclude_zero():
    seed_var, eval_var, diff = 0.02 ** 2, 0.01 ** 2, 0.015
    seeds = ablation.seeds_to_resolve(diff, seed_var, eval_var)
    half = lambda s, factor=1.0: ablation.t975(s - 1) * math.sqrt((seed_var - eval_var + eval_var / factor) / s)
    assert half(seeds) < diff <= half(seeds - 1)
    more_tasks = ablation.seeds_to_resolve(diff, seed_var, eval_var, task_factor=4.0)
    assert more_tasks < seeds and half(more_tasks, 4.0) < diff
    assert ablation.seeds_to_resolve(0.0, seed_var, eval_var) is None


def test_the_markdown_table_and_the_chart(tmp_path):
    sft = [fake_result([1, 1, 0, 2], [0, 1]), fake_result([2, 1, 0, 1], [1, 1]), fake_result([1, 1, 1, 1], [0, 0])]
    rl = [fake_result([2, 1, 1, 2], [1, 1]), fake_result([2, 2, 1, 1], [1, 2]), fake_result([1, 2, 2, 2], [0, 1])]
    summary = ablation.summarize_rows([("sft", sft), ("rl", rl)])
    table = ablation.ablation_table(summary).splitlines()
    rl_values = [100 * v for v in summary["rows"][1]["rl"]]
    expected = f"{statistics.fmean(rl_values):.1f} ± {statistics.stdev(rl_values):.1f}"
    assert any(line.startswith(f"| + REINFORCE++ | 3 | {expected} |") for line in table)
    assert table[2].endswith("| - |")  # no IR probe in these results
    rows = ablation.summarize_rows([("sft", sft), ("rl", [dict(r, ir_probe={"margin": m, "positive_share": s})
                                                          for r, m, s in zip(rl, (0.01, 0.03, 0.02), (0.6, 0.8, 0.7))])])
    assert ablation.ablation_table(rows).splitlines()[3].endswith("| +0.020 ± 0.010 (70%) |")
    difference = next(line for line in table if line.startswith("| + REINFORCE++ − SFT | 3 |"))
    paired = summary["differences"][0]["rl"]["paired"]
    assert f"{100 * paired['pass@1']:+.1f} [{100 * paired['ci95'][0]:+.1f}, {100 * paired['ci95'][1]:+.1f}]" in difference
    per_target = next(line for line in table if line.startswith("| + REINFORCE++ |") and line.count("|") > 6)
    java = [100 * v for v in summary["rows"][1]["per_target"]["java"]]  # 3/8, 4/8, 3/8
    cells = [cell.strip() for cell in per_target.strip("|").split("|")]
    assert cells[1 + (tasks.RL_TARGETS + tasks.HELDOUT_TARGETS).index("java")] == \
        f"{statistics.fmean(java):.1f} ± {statistics.stdev(java):.1f}"
    notes = ablation.resolution_notes(summary)
    assert "seeds to exclude 0" in notes
    import matplotlib  # noqa: F401
    assert ablation.plot_ablation(summary, str(tmp_path / "a.png")) == str(tmp_path / "a.png")


TINY_DATA = ["--n_train=120", "--n_val=10", "--n_test=10", "--n_ir_groups=6", "--vocab_size=512"]  # as in test_eval.py


@pytest.mark.slow
def test_a_tiny_ablation_end_to_end(tmp_path):
    data, out = tmp_path / "data", tmp_path / "ablation"
    subprocess.run([sys.executable, "prepare.py", f"--data_dir={data}", *TINY_DATA], cwd=ROOT, check=True,
                   capture_output=True)
    command = [sys.executable, "ablation.py", f"--out_dir={out}", "--seeds=[1, 2]", "--rows=['sft', 'rl_gepo']",
               f"--train_args=config/smoke.py --data_dir={data} --sft_steps=10 --rl_steps=1",
               "--eval_args=--n=2 --max_tasks_per_pair=1 --max_new_tokens=16"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (out / "sft" / "sft.pt").exists() and (out / "rl_gepo_seed2" / "oorl.pt").exists()
    table = (out / "ablation.md").read_text()
    assert "| SFT only | 2 |" in table and "| + REINFORCE++ + GEPO | 2 |" in table
    assert "| + REINFORCE++ + GEPO − SFT | 2 |" in table
    summary = json.loads((out / "ablation.json").read_text())
    assert [row["label"] for row in summary["rows"]] == ["SFT only", "+ REINFORCE++ + GEPO"]
    assert all(len(row["rl"]) == 2 and all(0.0 <= v <= 1.0 for v in row["rl"]) for row in summary["rows"])
    # a second run reuses every checkpoint and evaluation
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout.count("reusing") == 2
