"""Integration tests run torch on one thread, restored afterwards.

MiniLM is small: on a busy, shared CPU, one thread is many times faster than several
spin-waiting OpenMP threads, and the results are the same.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="package", autouse=True)
def _one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
