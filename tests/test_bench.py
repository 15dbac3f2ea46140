"""Tests of bench.py: the ahead-of-time compile of every Triton kernel configuration for the GPUs
CI does not have (A100, H100), and each benchmark part running end to end on tiny sizes."""
import os
import subprocess
import sys

import pytest

import bench

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow  # (about 30 s per target on 2 cores)
@pytest.mark.parametrize("capability", [80, 90])
def test_every_triton_kernel_configuration_compiles_for_a100_and_h100(capability):
    """PTX and cubin for sm_80 / sm_90 on this machine, without a GPU: every launch the dispatcher
    can make compiles, and fits in the target's shared memory per block."""
    rows = bench._kernel_isolated("gpu_compile", capability)  # (a process without TRITON_INTERPRET)
    assert len(rows) == len(list(bench.gpu_kernel_configs())) == 20
    for row in rows:
        assert row["target"] == f"sm_{capability}" and row["cubin_bytes"] > 0 and row["registers"], row
        assert row["shared"] <= bench.SHARED_MEMORY_PER_BLOCK[capability], row


@pytest.mark.slow  # (six fresh processes, one per measurement: about a minute on 2 busy cores)
def test_kernel_part_runs_on_a_tiny_problem(capsys):
    figures = bench.bench_kernel(shapes=[(300, 16, 500)], reps=1, threads=1)
    rows = figures["N=300,d=16,V=500"]
    expected = {"naive", "torch chunked"} | ({"torch.compile", "triton"} if bench.torch.cuda.is_available() else set())
    assert expected <= set(rows)
    assert all(row["fwd_ms"] > 0 and row["fwdbwd_ms"] > 0 for row in rows.values())
    if not bench.torch.cuda.is_available():
        assert "skipped: torch.compile, triton" in capsys.readouterr().out  # it says what it skipped


def test_rollout_part_runs_on_a_tiny_model():
    tiny = dict(n_layer=1, n_head=2, n_embd=16, vocab_size=50, prompts=2, group_size=2, prompt_len=5, new_tokens=6)
    figures = bench.bench_rollout(size=tiny, reps=1)
    assert figures["tokens_per_s"] > 0 and figures["tokens_per_cpu_s"] > 0


def test_reward_part_runs_on_one_language():
    figures = bench.bench_reward(langs=("python",), baseline_sample=2)
    assert set(figures["python"]) == {"reward_score", "naive", "naive_compile_once"}


def test_command_line_names_every_part():
    run = subprocess.run([sys.executable, "bench.py", "--part=nope"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode and all(part in run.stderr for part in ("kernel", "gpu_compile", "rollout", "reward"))
