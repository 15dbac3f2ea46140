"""Puts the repository root on sys.path so that tests import the top-level files directly, and,
without CUDA, runs model.py's Triton kernels in Triton's CPU interpreter (set before any import
of triton). The fixture without_bubblewrap makes a test's process behave as on a machine without
bubblewrap."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def without_bubblewrap(monkeypatch):
    """This process as on a machine without bubblewrap (the sandbox probed afresh, no opt-in)."""
    import sandbox
    monkeypatch.setattr(sandbox, "BWRAP", "bwrap-not-installed")
    monkeypatch.setattr(sandbox, "MODE", None)
    monkeypatch.setattr(sandbox, "_reduced_allowed", False)
    monkeypatch.delenv("OORL_ALLOW_REDUCED_ISOLATION", raising=False)
