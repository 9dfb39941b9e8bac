"""Serial, local workers and different level groupings give bit-identical priors."""

import math

import numpy as np
import pytest

from empo_distributed import build_dag, compute_human_policy_prior, load_world
from empo_distributed.dag import WaveExpander
from empo_distributed.phase1 import LevelKernel


def same(a, b):
    assert a.states == b.states
    np.testing.assert_array_equal(a.terminal, b.terminal)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.policy, b.policy)  # NaN rows compare equal
    np.testing.assert_array_equal(a.goal_ids, b.goal_ids)


@pytest.mark.parametrize(
    "name, steps, kw",
    [
        ("small", None, dict(beta_h=10.0, gamma_h=0.9)),
        ("two_humans", 3, dict(beta_h=math.inf, optimistic=True)),
    ],
)
def test_workers_equal_serial(name, steps, kw, monkeypatch):
    # Force real multi-chunk work even on these small worlds.
    monkeypatch.setattr(WaveExpander, "MIN_CHUNK", 4)
    monkeypatch.setattr("empo_distributed.phase1._LocalRunner.MIN_CHUNK", 2)
    monkeypatch.setattr("empo_distributed.phase1._LocalRunner.MIN_PARALLEL_WORK", 1)
    world = load_world(name, steps)
    gen = world.goal_generator()
    serial = compute_human_policy_prior(world, world.human_agent_indices, gen, **kw)
    par = compute_human_policy_prior(world, world.human_agent_indices, gen, workers=2, **kw)
    assert par.timings["phase1_parallel_batches"] > 0  # the workers really ran
    same(serial, par)


def test_levels_and_batches_do_not_change_results(monkeypatch):
    world = load_world("medium", 5)
    gen = world.goal_generator()
    base = compute_human_policy_prior(world, [0], gen, gamma_h=0.95)
    height = compute_human_policy_prior(world, [0], gen, gamma_h=0.95, levels="height")
    monkeypatch.setattr(LevelKernel, "__init__", _tiny_batches(LevelKernel.__init__))
    batched = compute_human_policy_prior(world, [0], gen, gamma_h=0.95)
    same(base, height)
    same(base, batched)


def _tiny_batches(init):
    def wrapped(self, *a, **k):
        init(self, *a, **k)
        self.batch = 3

    return wrapped


def test_dag_workers_equal_serial(monkeypatch):
    monkeypatch.setattr(WaveExpander, "MIN_CHUNK", 4)
    world = load_world("small")
    a, b = build_dag(world), build_dag(world, workers=2)
    assert a.states == b.states
    for name in ("terminal", "sk_offsets", "probs", "succ"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_vectorised_dag_with_workers_equals_serial(monkeypatch):
    """Built-in worlds: local workers expand chunks of big waves; same arrays as serial."""
    from empo_distributed import dag as dag_module

    world = load_world("medium", 6)
    serial = build_dag(world)
    monkeypatch.setattr(dag_module, "BATCH_STATES", 32)  # many chunks ...
    monkeypatch.setattr(dag_module, "POOL_MIN_WAVE", 64)  # ... and the pool starts
    started = []
    real = dag_module._maybe_pool


    def recording(*args):
        pool = real(*args)
        started.append(pool is not None)
        return pool

    monkeypatch.setattr(dag_module, "_maybe_pool", recording)
    parallel = build_dag(world, workers=2)
    assert any(started)
    assert parallel.states == serial.states
    for name in ("terminal", "counts", "state_offsets", "prob_idx", "prob_table", "succ"):
        np.testing.assert_array_equal(getattr(parallel, name), getattr(serial, name), err_msg=name)


@pytest.mark.parametrize("workers", [1, 2])
def test_release_dag_gives_identical_priors(workers, monkeypatch):
    """``release_dag`` (what the CLI uses) hands back the transitions of finished levels
    during Phase 1: same numbers, and the DAG keeps its states and sizes only."""
    monkeypatch.setattr("empo_distributed.phase1._LocalRunner.MIN_PARALLEL_WORK", 1)
    monkeypatch.setattr("empo_distributed.phase1.SCRATCH_ELEMENTS", 64)  # many kernel batches
    world = load_world("large", 6)  # 1,892 states: levels span whole pages of transitions
    gen = world.goal_generator()
    kept = compute_human_policy_prior(world, [0], gen, gamma_h=0.9, workers=workers)
    released = compute_human_policy_prior(
        world, [0], gen, gamma_h=0.9, workers=workers, release_dag=True
    )
    same(kept, released)
    assert released.dag.succ is None and kept.dag.succ is not None
    assert released.dag.num_outcomes == kept.dag.num_outcomes
    if workers > 1:
        assert released.timings["phase1_parallel_batches"] > 0


def test_phase1_pool_starts_only_when_the_remaining_work_pays(monkeypatch):
    """A batch goes to the workers from MIN_PARALLEL_WORK elements on, but the pool only
    starts when the levels left hold POOL_START_BATCHES such batches (measured tuning)."""
    from empo_distributed.phase1 import _LocalRunner

    world = load_world("small")
    gen = world.goal_generator()
    monkeypatch.setattr(_LocalRunner, "MIN_PARALLEL_WORK", 1)
    monkeypatch.setattr(_LocalRunner, "MIN_CHUNK", 2)
    monkeypatch.setattr(_LocalRunner, "POOL_START_BATCHES", 10**9)  # never worth starting
    kept_serial = compute_human_policy_prior(world, [0], gen, workers=2)
    assert kept_serial.timings["phase1_parallel_batches"] == 0
    monkeypatch.setattr(_LocalRunner, "POOL_START_BATCHES", 25)
    pooled = compute_human_policy_prior(world, [0], gen, workers=2)
    assert pooled.timings["phase1_parallel_batches"] > 0
    same(kept_serial, pooled)


@pytest.mark.parametrize("block", [1, 7])
def test_states_computed_before_the_value_rows_arrive_need_none_of_them(block):
    """MPI Phase 1 computes first the states none of whose successors is a value row still
    in flight from another rank (``_ValueRows.split_ready``), then the others. Decided
    per state (``block=1``): exactly those, for step levels (every successor lies in the
    previous level), most of them; per block of the kernel's batch size (what MPI does):
    whole blocks, each ready one needing none of the rows."""
    from empo_distributed.levels import dependency_levels
    from empo_distributed.phase1 import _ValueRows
    from parallel_core.mpi import partition

    dag = build_dag(load_world("medium"))
    levels = dependency_levels(dag)
    ready_total = 0
    for later, level in zip(levels, levels[1:]):
        lo, hi = int(later[0]), int(later[-1]) + 1
        for a, b in partition(hi - lo, 2):
            rows = _ValueRows.__new__(_ValueRows)
            rows.own, rows.lo, rows.hi = (lo + a, lo + b), lo, hi
            idx = level[~dag.terminal[level]]
            ready, rest = rows.split_ready(dag, idx, block)
            assert sorted(ready.tolist() + rest.tolist()) == idx.tolist()
            for i, needs_none in [(i, True) for i in ready] + [(i, False) for i in rest]:
                s = dag.succ[dag.state_offsets[i] : dag.state_offsets[i + 1]]
                inside = bool(np.all((s >= lo + a) & (s < lo + b)))
                assert inside == needs_none if block == 1 else (inside or not needs_none)
            whole = [set(idx[k : k + block].tolist()) for k in range(0, len(idx), block)]
            assert all(blk <= set(ready.tolist()) or blk <= set(rest.tolist()) for blk in whole)
            ready_total += len(ready)
    assert ready_total > 0.5 * int((~dag.terminal[np.concatenate(levels[1:])]).sum())


def test_kernel_sums_outcomes_in_order_whatever_the_pairs_hold():
    """The kernel's outcome sum, on hand-made arrays: a pair with two outcomes, one with
    none (the sum then starts from zeros), a successor whose goal is achieved (y = 1),
    and states given in any order (a batch that is not a contiguous range)."""
    from empo_distributed.phase1 import KernelMeta, Phase1Params

    meta = KernelMeta(1, 2, (0,), (), ((0, 1),), Phase1Params())
    V = np.array([[0.0], [0.0], [0.25], [0.5]])
    arrays = {
        "counts": np.array([2, 0, 1, 1, 0, 0, 0, 0], dtype=np.uint8),  # states 0, 1: 2 pairs each
        "state_offsets": np.array([0, 2, 4, 4, 4], dtype=np.uint32),
        "succ": np.array([2, 3, 2, 3], dtype=np.int32),
        "prob_table": np.array([0.75, 0.25, 1.0]),
        "prob_idx": np.array([0, 1, 2, 2], dtype=np.uint8),
        "achieved": np.array([[False], [False], [False], [True]]),
        "V": V,
        "P": np.zeros((4, 1, 2)),
    }
    kernel = LevelKernel(arrays, meta)
    E = kernel._expected(np.array([1, 0]))  # (joint actions, states, goals)
    np.testing.assert_array_equal(E[:, :, 0].T, [[0.25, 1.0], [0.75 * 0.25 + 0.25 * 1.0, 0.0]])
    kernel.compute(np.array([1, 0]))
    by_range = LevelKernel({**arrays, "V": V.copy(), "P": np.zeros((4, 1, 2))}, meta)
    by_range.compute(np.array([0, 1]))
    np.testing.assert_array_equal(arrays["V"], by_range.a["V"])
    np.testing.assert_array_equal(arrays["P"], by_range.a["P"])
    assert arrays["V"][1, 0] > arrays["V"][0, 0] > 0


def test_wait_until_polls_until_done_then_sleeps(monkeypatch):
    """MPI waits poll a done() test (which makes the messages progress) and sleep between
    polls once the short spin is over, instead of burning the core like MPI_Waitall."""
    from empo_distributed import exchange

    calls, sleeps = [], []
    monkeypatch.setattr(exchange, "SPIN_S", 0.0)
    monkeypatch.setattr(exchange.time, "sleep", sleeps.append)
    exchange.wait_until(lambda: calls.append(1) or len(calls) >= 8)
    assert len(calls) == 8
    assert sleeps == [5e-5, 1e-4, 2e-4, 4e-4, 8e-4, 1e-3]  # doubling, capped at PAUSE_MAX_S
    exchange.wait_until(lambda: True)  # already done: no sleep
    assert len(sleeps) == 6


@pytest.mark.parametrize("workers", [1, 2])
def test_policy_on_none_keeps_only_the_root_row(workers, monkeypatch):
    """``policy_on="none"`` (the CLI without ``--output``): the same values and root
    marginal, no policy array, and a query of another state says why it cannot answer."""
    monkeypatch.setattr("empo_distributed.phase1._LocalRunner.MIN_PARALLEL_WORK", 1)
    monkeypatch.setattr("empo_distributed.phase1.SCRATCH_ELEMENTS", 64)  # many kernel batches
    world = load_world("two_humans", 3)
    gen = world.goal_generator()
    full = compute_human_policy_prior(world, [0, 1], gen, gamma_h=0.9, workers=workers)
    none = compute_human_policy_prior(
        world, [0, 1], gen, gamma_h=0.9, workers=workers, policy_on="none", release_dag=True
    )
    assert none.policy is None
    np.testing.assert_array_equal(none.values, full.values)
    np.testing.assert_array_equal(none.root_policy, full.policy[0])
    for h in (0, 1):
        np.testing.assert_array_equal(none(none.states[0], h), full(full.states[0], h))
    other = int(np.flatnonzero(~none.terminal[1:])[0]) + 1
    with pytest.raises(RuntimeError, match="only the root"):
        none(none.states[other], 0)
    with pytest.raises(ValueError, match="holds no policies"):
        none.save("unused.npz")
