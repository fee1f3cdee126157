"""koel.memory: the allocator policy bounds what oneDNN's caches keep when every input has a new length."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from koel.memory import _glibc

# Heap bytes in use (glibc mallinfo2) after 300 input lengths, then after 400 more new lengths: with
# unbounded caches every new length adds primitives (convolution and LSTM) that stay.
SCRIPT = r"""
import ctypes, sys
if sys.argv[1] == "koel":
    from koel.memory import tune_malloc
    tune_malloc()
import torch
import torch.nn.functional as F

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
torch.set_num_threads(1)
torch.manual_seed(0)
weight = torch.randn(32, 32, 3)
lstm = torch.nn.LSTM(16, 16, batch_first=True, bidirectional=True)
with torch.no_grad():
    for n in range(8, 708):
        if n == 308:
            before = libc.mallinfo2().uordblks
        F.conv1d(torch.randn(1, 32, n), weight, padding=1)
        lstm(torch.randn(1, n, 16))
print((libc.mallinfo2().uordblks - before) / 2**20)
"""


def _growth_mb(policy: str, **env: str) -> float:
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")
    }
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, policy], env=environ | env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(_glibc() is None, reason="mallinfo2 needs glibc (Linux)")
def test_new_input_lengths_stop_adding_cached_primitives():
    tuned = _growth_mb("koel")
    unbounded = _growth_mb("plain", ONEDNN_PRIMITIVE_CACHE_CAPACITY="1024", LRU_CACHE_CAPACITY="1024")
    assert unbounded > 10, f"the control run should grow with every new length, grew {unbounded:.1f} MB"
    assert tuned < 2, f"with koel's policy 400 new lengths added {tuned:.1f} MB to the heap"
