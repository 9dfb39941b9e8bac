"""parallel-core behaviour that needs torch (absent from parallel-core's own test env)."""

import pytest

from parallel_core import make_executor
from parallel_core.pools import choose_start_method


def torch_threads_here(_):
    import torch

    return torch.get_num_threads()


def test_thread_pool_threads_keep_the_callers_torch_threads():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with make_executor(2, kind="thread") as pool:
            assert list(pool.map(torch_threads_here, range(4))) == [1, 1, 1, 1]
    finally:
        torch.set_num_threads(before)


def test_cpu_torch_does_not_block_fork():
    pytest.importorskip("torch")
    # importing torch on a CPU machine initialises no CUDA context, so fork stays safe
    import threading

    if threading.active_count() == 1:
        assert choose_start_method() == "fork"
