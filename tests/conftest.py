"""Puts the repository root on sys.path so that tests import the top-level files directly, and,
without CUDA, runs model.py's Triton kernels in Triton's CPU interpreter (set before any import
of triton)."""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
