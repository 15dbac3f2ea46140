"""End-to-end tests of train.py on a tiny world: both stages run, log what they should, and a
run that stopped part-way resumes from its last checkpoint."""
import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_DATA = ["--n_train=120", "--n_val=10", "--n_test=10", "--n_ir_groups=6", "--vocab_size=512"]


def run(*args):
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    data = tmp_path_factory.mktemp("train") / "data"
    run("prepare.py", f"--data_dir={data}", *TINY_DATA)
    return data


def metrics(out):
    with open(out / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


@pytest.mark.slow
def test_smoke_runs_both_stages_and_resumes(data_dir, tmp_path):
    out = tmp_path / "out"
    # a run that stops after 2 of its RL steps, as a killed run would (its last checkpoint: step 2)
    run("train.py", "config/smoke.py", f"--data_dir={data_dir}", f"--out_dir={out}", "--rl_steps=2")
    assert (out / "sft.pt").exists() and (out / "oorl.pt").exists()
    assert torch.load(out / "ckpt.pt", weights_only=False)["step"] == 2
    rows = metrics(out)
    assert {r["stage"] for r in rows} == {"sft", "oorl"}
    rl_rows = [r for r in rows if r["stage"] == "oorl"]
    for key in ("step", "reward", "kl", "loss_onp", "loss_gepo", "pass_rate", "entropy", "clip_frac",
                "zero_adv_share", "gepo_margin", "gepo_winner_var", "time_rollout", "time_reward",
                "time_update", "rollout_tok_per_s", "grad_norm", "grad_cos"):
        assert key in rl_rows[0], key
    assert [r["step"] for r in rl_rows] == [0, 1]
    # the first step has no previous gradient to compare with; the second one has
    assert rl_rows[0]["grad_cos"] is None and -1.0 <= rl_rows[1]["grad_cos"] <= 1.0
    assert rl_rows[1]["grad_norm"] > 0

    stdout = run("train.py", "config/smoke.py", f"--data_dir={data_dir}", f"--out_dir={out}",
                 "--rl_steps=4", "--resume=True")
    assert "resume: OORL from step 2" in stdout and "sft step" not in stdout  # SFT is not redone
    assert [r["step"] for r in metrics(out) if r["stage"] == "oorl"] == [0, 1, 2, 3]
    assert torch.load(out / "ckpt.pt", weights_only=False)["step"] == 4


def test_unknown_setting_is_refused_before_any_work(tmp_path):
    done = subprocess.run([sys.executable, "train.py", "--rl_stpes=3", f"--out_dir={tmp_path}"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode != 0 and "rl_stpes" in done.stderr and "rl_steps" in done.stderr
    assert not os.listdir(tmp_path)
