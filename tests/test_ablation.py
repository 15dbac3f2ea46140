"""Tests of ablation.py: the plan of jobs (one shared SFT model, the order in which settings win)
and a whole ablation at a tiny size. The table itself is tested in test_eval.py."""
import json
import os
import subprocess
import sys

import pytest

import ablation

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


def test_plan_without_training_the_shared_model_when_it_exists():
    jobs = ablation.plan(("rl",), (7,), "out/abl", "given/sft.pt", False, [], [])
    assert [j["kind"] for j in jobs] == ["train", "eval"]
    assert flag(jobs[0]["command"], "sft_ckpt") == "given/sft.pt"


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
    summary = json.loads((out / "ablation.json").read_text())
    assert [row["label"] for row in summary["rows"]] == ["SFT only", "+ REINFORCE++ + GEPO"]
    assert all(len(row["rl"]) == 2 and all(0.0 <= v <= 1.0 for v in row["rl"]) for row in summary["rows"])
    # a second run reuses every checkpoint and evaluation
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout.count("reusing") == 2
