import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from parallel_core import SerialExecutor, WorkerError, make_executor, parallel_map
from parallel_core.pools import ProcessPool, choose_start_method


def square(x):
    return x * x


def slow_identity(x):
    # later items finish first, so completion order differs from input order
    time.sleep(0.002 * (20 - x))
    return x


def fail_on_three(x):
    if x == 3:
        raise ValueError("three is not allowed")
    return x


def die(x):
    os._exit(13)


def thread_settings(_):
    from threadpoolctl import threadpool_info

    return os.environ.get("OMP_NUM_THREADS"), {info["num_threads"] for info in threadpool_info()}


def test_parallel_map_keeps_input_order():
    items = list(range(20))
    assert parallel_map(slow_identity, items, workers=2, chunksize=1) == items


def test_parallel_equals_serial():
    items = list(range(101))
    assert parallel_map(square, items, workers=2) == parallel_map(square, items, workers=1)
    assert parallel_map(square, items, workers=2) == [x * x for x in items]


def test_empty_and_single_item():
    assert parallel_map(square, [], workers=2) == []
    assert parallel_map(square, [7], workers=2) == [49]


def test_worker_exception_carries_item_and_traceback():
    with pytest.raises(WorkerError) as info:
        parallel_map(fail_on_three, range(8), workers=2, chunksize=1)
    message = str(info.value)
    assert "item 3 failed: ValueError: three is not allowed" in message
    assert "fail_on_three" in message  # the worker's traceback names the function


def test_serial_mode_raises_the_same_error():
    with pytest.raises(WorkerError, match="item 3 failed: ValueError"):
        parallel_map(fail_on_three, range(8), workers=1)


def test_dead_worker_is_reported():
    with pytest.raises(WorkerError, match="worker process died"):
        parallel_map(die, range(4), workers=2)


def test_unpicklable_function_falls_back_to_serial_with_one_warning():
    offset = 5
    with pytest.warns(RuntimeWarning, match="runs serially.*cannot be pickled") as record:
        result = parallel_map(lambda x: x + offset, range(6), workers=2)
    assert result == [5, 6, 7, 8, 9, 10]
    assert len(record) == 1


def test_unpicklable_items_fall_back_to_serial():
    items = [threading.Lock(), threading.Lock()]
    with pytest.warns(RuntimeWarning, match="items cannot be pickled"):
        assert parallel_map(type, items, workers=2) == [type(items[0])] * 2


def test_workers_run_one_blas_thread():
    results = parallel_map(thread_settings, range(2), workers=2, chunksize=1)
    for omp, counts in results:
        assert omp == "1"
        assert counts <= {1}


def test_start_method_fork_without_threads_forkserver_with_threads():
    if sys.platform != "linux":
        pytest.skip("fork is only chosen on Linux")
    if threading.active_count() == 1:
        assert choose_start_method() == "fork"
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait)
    helper.start()
    try:
        assert choose_start_method() in ("forkserver", "spawn")
        # and a pool made now still works
        assert parallel_map(square, range(6), workers=2) == [x * x for x in range(6)]
    finally:
        stop.set()
        helper.join()


def test_start_method_avoids_fork_after_cuda_init(monkeypatch):
    class FakeCuda:
        @staticmethod
        def is_initialized():
            return True

    class FakeTorch:
        cuda = FakeCuda

    monkeypatch.setitem(sys.modules, "torch", FakeTorch)
    assert choose_start_method() != "fork"


def test_make_executor_serial_and_pool():
    calls = []
    with make_executor(1, initializer=calls.append, initargs=("init",)) as ex:
        assert isinstance(ex, SerialExecutor)
        assert ex.submit(square, 4).result() == 16
        failing = ex.submit(fail_on_three, 3)
        assert isinstance(failing.exception(), ValueError)
    assert calls == ["init"]
    with make_executor(2) as ex:
        assert isinstance(ex, ProcessPool)
        assert [f.result() for f in [ex.submit(square, i) for i in range(5)]] == [0, 1, 4, 9, 16]
    with make_executor(2, kind="thread") as ex:
        assert ex.submit(square, 3).result() == 9


def test_ctrl_c_leaves_no_orphans(tmp_path):
    script = tmp_path / "long_map.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, sys, time
            from parallel_core import make_executor

            def nap(x):
                time.sleep(60)

            if __name__ == "__main__":
                with make_executor(2) as pool:
                    futures = [pool.submit(nap, i) for i in range(4)]
                    pids = [p.pid for p in pool._processes.values()]
                    print(" ".join(map(str, pids)), flush=True)
                    [f.result() for f in futures]
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=20)
    assert proc.returncode != 0
    deadline = time.time() + 10
    alive = pids
    while alive and time.time() < deadline:
        alive = [pid for pid in pids if _alive(pid)]
        time.sleep(0.1)
    assert alive == [], f"worker processes {alive} outlived Ctrl-C"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False

