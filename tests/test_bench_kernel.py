"""Tests of bench_kernel.py: the ahead-of-time compile of every Triton kernel configuration for
the GPUs CI does not have (A100, H100), and the kernel part on a tiny problem, timing only the
methods that agree with float64."""
import re

import pytest

import bench_kernel
import logprobs


@pytest.mark.slow  # (twenty kernels compiled per target)
@pytest.mark.parametrize("capability", [80, 90])
def test_every_triton_kernel_configuration_compiles_for_a100_and_h100(capability):
    """PTX and cubin for sm_80 / sm_90 on this machine, without a GPU: every launch the dispatcher
    can make compiles, and fits in the target's shared memory per block."""
    rows = bench_kernel._kernel_isolated("gpu_compile", capability)  # (a process without TRITON_INTERPRET)
    assert len(rows) == len(list(logprobs.gpu_launches())) == 20
    for row in rows:
        assert row["target"] == f"sm_{capability}" and row["cubin_bytes"] > 0 and row["registers"], row
        assert row["shared"] <= bench_kernel.SHARED_MEMORY_PER_BLOCK[capability], row


@pytest.mark.slow  # (a fresh process per measurement)
def test_kernel_part_runs_on_a_tiny_problem(capsys):
    figures = bench_kernel.bench_kernel(shapes=[(300, 16, 500)], reps=1, threads=1)
    rows = figures["N=300,d=16,V=500"]
    expected = {"naive", "torch chunked"} | ({"torch.compile", "triton"} if bench_kernel.torch.cuda.is_available() else set())
    assert expected <= set(rows)
    assert all(row["fwd_ms"] > 0 and row["fwdbwd_ms"] > 0 for row in rows.values())
    if not bench_kernel.torch.cuda.is_available():
        assert "skipped: torch.compile, triton" in capsys.readouterr().out  # it says what it skipped


def _wrong_gradients(hidden, weight, targets):
    """The right log-probs, with gradients 1.5 times too large."""
    logp = bench_kernel._naive_logprobs(hidden, weight, targets)
    return logp + 0.5 * (logp - logp.detach())


def test_kernel_part_times_only_methods_that_agree_with_float64(monkeypatch, capsys):
    monkeypatch.setitem(bench_kernel.OPTIONAL_METHODS, "wrong gradients", ("os", _wrong_gradients))
    monkeypatch.setitem(bench_kernel.REQUIRED_VERSIONS, "torch chunked", ("torch", (99, 0, 0), "a known bug"))
    # in this process, where the fake method lives (bench_kernel runs each measurement in a fresh one)
    monkeypatch.setattr(bench_kernel, "_kernel_isolated", lambda function, *args: getattr(bench_kernel, function)(*args))
    figures = bench_kernel.bench_kernel(shapes=[(300, 16, 500)], reps=1, methods=["naive", "torch chunked", "wrong gradients"])
    assert set(figures["N=300,d=16,V=500"]) == {"naive"}
    out = capsys.readouterr().out
    assert f"torch chunked (torch {bench_kernel.torch.__version__} < 99.0.0: a known bug)" in out
    assert re.search(r"wrong gradients \(disagrees with float64 at d=16: log-probs off by up to \S+ nats "
                     r"\(bound 0.02\), grad hidden and grad weight by 0.5 and 0.5 of their largest value", out)
