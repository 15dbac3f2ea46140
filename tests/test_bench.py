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
