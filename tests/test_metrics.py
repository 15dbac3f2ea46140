"""Tests of metrics.py: an OORL step's row and line from its named sums, and the training curves."""
import json
import sys
from types import SimpleNamespace

import pytest
import torch

import metrics


def one_step(replayed=()):
    """Two groups of G=2 (python: a pass and a fail; java: two fails), 3 tokens a row."""
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0]], dtype=torch.bool)
    rollout = SimpleNamespace(mask=mask, entropy=torch.tensor([[9.0, 9, 9], [1, 1, 1], [2, 2, 2], [3, 3, 3]]),
                              truncated=torch.tensor([False, False, True, False]))
    batch = SimpleNamespace(logp_old=torch.full((4, 3), -1.0), logp_ref=torch.full((4, 3), -1.5), mask=mask)
    exp = SimpleNamespace(
        rollout=rollout, learn=torch.tensor([True] * 4), batches=[batch], groups=[{}, {}], replayed=list(replayed),
        verdicts=[SimpleNamespace(reward=r, status="ok") for r in (1.0, 0.0, 0.0, 0.0)], gen_batches=1,
        tasks=[{"tgt_lang": lang} for lang in ("python", "python", "java", "java")],
        times=dict(time_rollout=2.0, time_reward=1.0, time_reference=0.5, time_pi_old=0.25))
    stats = dict(loss_onp=0.1, clip_frac=0.02, loss_gepo=0.69, gepo_margin=0.2, gepo_winner_var=0.01,
                 grad=torch.tensor([1.0, 0.0]), grad_norm=1.0, time_policy=[1.0, 1.0], time_preference=0.5,
                 time_optimizer=0.25)
    return exp, stats


def test_a_steps_row_is_made_of_its_named_sums():
    exp, stats = one_step(replayed=[0])
    row, grad = metrics.oorl_row(7, 1e-5, exp, stats, torch.tensor([1.0, 1.0]), {"probe_margin": 0.3}, 2, True, 1)
    assert row["step"] == 7 and row["reward"] == 0.25 and row["pass_rate"] == {"python": 0.5, "java": 0.0}
    assert row["zero_adv_share"] == 0.5 and row["truncated"] == 0.25  # the java group's rewards are all equal
    assert row["kl"] == pytest.approx(0.5)  # (log pi_old - log pi_ref) per learnt token
    assert row["entropy"] == pytest.approx((3 * 1 + 2 + 2 * 3) / 6)  # the replayed row 0 was not sampled now
    assert row["grad_cos"] == pytest.approx(2 ** -0.5) and torch.equal(grad, torch.tensor([1.0, 0.0]))
    assert row["gepo_margin"] == pytest.approx(0.1) and row["probe_margin"] == 0.3  # per group of 2
    assert row["time_update"] == pytest.approx(0.5 + 0.25 + 2.0 + 0.5 + 0.25)
    line = metrics.oorl_line(row, replayed=True, sampling_rounds=False)
    assert line.startswith("oorl step 7 | reward 0.250 | kl 0.5000") and "probe +0.300" in line
    assert "replayed 1" in line and "sampling rounds" not in line and "python 0.50 java 0.00" in line
    exp, stats = one_step()
    row, _ = metrics.oorl_row(0, 1e-5, exp, stats, None, {}, 2, False, 1)  # no KL term, a first step
    assert row["kl"] is None and row["grad_cos"] is None and row["entropy"] == pytest.approx(29 / 8)
    assert "kl - |" in metrics.oorl_line(row, False, False)


def test_plot_without_matplotlib_says_so_and_does_not_crash(tmp_path, monkeypatch, capsys):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 0, "stage": "sft", "loss": 3.0}) + "\n")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    assert metrics.plot(str(path)) is None
    assert "matplotlib is not installed" in capsys.readouterr().out
    assert not (tmp_path / "metrics.png").exists()


def test_training_curves_are_plotted_with_the_probe_margin(tmp_path):
    import matplotlib  # noqa: F401  (installed by setup.sh; the test above covers its absence)
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "stage": "sft", "loss": 3.0 - s / 10} for s in range(3)]
    rows += [{"step": s, "stage": "oorl", "reward": 0.1 * s, "kl": 0.01, "gepo_margin": 0.1, "entropy": 1.0,
              "clip_frac": 0.0, "pass_rate": {"java": 0.5}, **({"probe_margin": 0.01 * s} if s % 2 == 0 else {})}
             for s in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert metrics.plot(str(path)) == str(tmp_path / "metrics.png")
    assert (tmp_path / "metrics.png").stat().st_size > 0


def test_an_sft_line_shows_the_validation_losses_it_has():
    row = {"step": 250, "loss": 0.5, "lr": 1e-3, "tokens_per_s": 9000.0}
    assert metrics.sft_line(row) == "sft step 250 | loss 0.5000 | lr 1.00e-03 | 9000 tok/s"
    assert metrics.sft_line(dict(row, val_loss=0.25, val_loss_ir=None)).endswith("| val loss 0.2500")
    assert metrics.sft_line(dict(row, val_loss=0.25, val_loss_ir=0.75)).endswith("| val loss 0.2500 ir 0.7500")
