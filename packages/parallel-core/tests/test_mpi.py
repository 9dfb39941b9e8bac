"""Distributed context tests.

Tests marked ``mpi`` run under ``mpirun -n 2 python -m pytest -m mpi`` (``nox -s tests-mpi``);
the others run in the plain test session and cover the local fallback and simulation mode.
"""

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from parallel_core.mpi import LocalContext, get_context, partition


def test_partition_is_balanced_and_contiguous():
    assert partition(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert partition(2, 4) == [(0, 1), (1, 2), (2, 2), (2, 2)]
    assert partition(0, 2) == [(0, 0), (0, 0)]
    with pytest.raises(ValueError):
        partition(3, 0)


def run_python(code: str, env_extra=None, timeout=120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_", "MPI_LOCAL"))}
    env.pop("PARALLEL_CORE_SIMULATE_NODES", None)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_local_fallback_makes_no_mpi_calls():
    result = run_python(
        """
        import sys
        import numpy as np
        from parallel_core.mpi import get_context
        ctx = get_context()
        assert type(ctx).__name__ == "LocalContext", ctx
        assert (ctx.rank, ctx.size, ctx.is_root, ctx.is_distributed) == (0, 1, True, False)
        assert ctx.allgather(5) == [5] and ctx.bcast("x") == "x" and ctx.gather(1) == [1]
        assert ctx.scatter_work([1, 2, 3]) == [1, 2, 3]
        assert ctx.allgatherv(np.arange(3)).tolist() == [0, 1, 2]
        ctx.barrier()
        print("mpi4py imported:", "mpi4py" in sys.modules)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "mpi4py imported: False" in result.stdout


def test_local_fallback_without_mpi4py_installed():
    # A broken/missing mpi4py under a launcher still gives the local context.
    result = run_python(
        """
        import sys
        sys.modules["mpi4py"] = None  # import mpi4py -> ImportError
        from parallel_core.mpi import get_context
        print(type(get_context()).__name__)
        """,
        env_extra={"PMI_RANK": "0", "PMI_SIZE": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "LocalContext"


def test_local_context_interface():
    ctx = LocalContext()
    assert ctx.local_workers >= 1
    assert ctx.work_range(7) == (0, 7)
    assert ctx.allreduce_sum(3) == 3
    with ctx.abort_on_error():
        pass


SIMULATED = """
    import json, os, sys
    from parallel_core.mpi import get_context, relaunch_simulated
    code = relaunch_simulated(2)
    if code is not None:
        sys.exit(code)
    ctx = get_context()
    share = ctx.allgatherv(__import__("numpy").array([ctx.rank], dtype="int64"))
    print(json.dumps({"rank": ctx.rank, "size": ctx.size, "gathered": share.tolist(),
                      "local_workers": ctx.local_workers, "marker": os.environ["PARALLEL_CORE_SIMULATE_NODES"]}), flush=True)
"""


def test_simulation_mode_runs_k_real_ranks():
    import json

    result = run_python(SIMULATED)
    assert result.returncode == 0, result.stderr
    # two ranks share one stdout, so their lines may run together
    lines = [json.loads(obj) for obj in re.findall(r"\{[^{}]*\}", result.stdout)]
    assert sorted(line["rank"] for line in lines) == [0, 1]
    for line in lines:
        assert line["size"] == 2
        assert line["gathered"] == [0, 1]
        assert line["marker"] == "active"
        assert line["local_workers"] >= 1


def mpich_shm_files() -> set:
    shm = "/dev/shm"
    return {f for f in os.listdir(shm) if f.startswith("mpich_shm_")} if os.path.isdir(shm) else set()


def test_simulated_rank_failure_fails_the_whole_job():
    before = mpich_shm_files()
    result = run_python(
        """
        import sys
        from parallel_core.mpi import get_context, relaunch_simulated
        code = relaunch_simulated(2)
        if code is not None:
            sys.exit(code)
        ctx = get_context()
        with ctx.abort_on_error():
            if ctx.rank == 1:
                raise RuntimeError("rank one broke")
            ctx.barrier()  # rank 0 would wait here forever without the abort
        """,
        timeout=60,
    )
    # MPI_Abort skips MPICH's own clean-up of its shared-memory segment
    for name in mpich_shm_files() - before:
        os.unlink(os.path.join("/dev/shm", name))
    assert result.returncode != 0
    assert "rank one broke" in result.stderr


# ---------------------------------------------------------------- under mpirun -n 2

def mpi_ctx():
    ctx = get_context()
    if ctx.size < 2:
        pytest.skip("run under mpirun -n 2 (nox -s tests-mpi)")
    return ctx


@pytest.mark.mpi
def test_mpi_context_basics():
    ctx = mpi_ctx()
    assert ctx.is_distributed and ctx.is_root == (ctx.rank == 0)
    assert sorted(ctx.allgather(ctx.rank)) == list(range(ctx.size))
    assert ctx.local_size == ctx.size  # one machine: every rank shares the node
    assert ctx.local_workers >= 1
    assert sum(ctx.allgather(ctx.local_workers)) <= max(len(os.sched_getaffinity(0)), ctx.size) * ctx.size


@pytest.mark.mpi
def test_mpi_collectives_agree_on_every_rank():
    ctx = mpi_ctx()
    payload = ctx.bcast({"seed": 42, "rank": ctx.rank} if ctx.is_root else None)
    assert payload == {"seed": 42, "rank": 0}
    gathered = ctx.allgather(("hello", ctx.rank))
    assert gathered == [("hello", r) for r in range(ctx.size)]
    items = list(range(11))
    mine = ctx.scatter_work(items)
    assert mine == items[slice(*ctx.work_range(len(items)))]
    everyone = ctx.allgather(mine)
    assert sum(everyone, []) == items  # balanced, disjoint, in order
    assert max(map(len, everyone)) - min(map(len, everyone)) <= 1
    assert ctx.allreduce_sum(ctx.rank + 1) == ctx.size * (ctx.size + 1) // 2
    assert ctx.allreduce_sum(np.ones(3)).tolist() == [ctx.size] * 3
    views = ctx.allgather(gathered)
    assert all(v == views[0] for v in views)


@pytest.mark.mpi
@pytest.mark.parametrize("dtype", ["float64", "float32", "int64", "bool"])
def test_mpi_allgatherv_concatenates_in_rank_order(dtype):
    ctx = mpi_ctx()
    rows = ctx.rank + 1  # uneven contributions; rank 0 sends 1 row, rank 1 sends 2
    local = (np.arange(rows * 3).reshape(rows, 3) + 100 * ctx.rank).astype(dtype)
    result = ctx.allgatherv(local)
    expected = np.concatenate(
        [(np.arange((r + 1) * 3).reshape(r + 1, 3) + 100 * r).astype(dtype) for r in range(ctx.size)]
    )
    assert result.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(result, expected)
    digests = ctx.allgather(result.tobytes())
    assert all(d == digests[0] for d in digests)


@pytest.mark.mpi
def test_mpi_allgatherv_allows_empty_rank():
    ctx = mpi_ctx()
    local = np.arange(4.0) if ctx.rank == 0 else np.empty(0)
    np.testing.assert_array_equal(ctx.allgatherv(local), np.arange(4.0))
