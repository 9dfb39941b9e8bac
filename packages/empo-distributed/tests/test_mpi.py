"""Run under ``mpirun -n 2 python -m pytest -m mpi`` (nox -s tests-mpi): real ranks, in-process."""

import math
import os

import numpy as np
import pytest

from empo_distributed import build_dag, compute_human_policy_prior, load_world
from empo_distributed.dag import WaveExpander

pytestmark = pytest.mark.mpi


@pytest.fixture(autouse=True)
def _split_small_waves(monkeypatch):
    """These worlds are small: waves from 8 states on are split across the ranks (the
    first few are expanded whole by every rank), so both DAG paths run; the achieved
    matrix is computed in chunks of 50 states."""
    monkeypatch.setattr("empo_distributed.dag.REPLICATE_WAVE", 8)
    monkeypatch.setattr("empo_distributed.solver.ACHIEVED_CHUNK", 50)  # several per rank


def _ctx():
    from parallel_core.mpi import LocalContext, get_context

    ctx = get_context()
    if not ctx.is_distributed:
        pytest.skip("needs >= 2 MPI ranks (nox -s tests-mpi)")
    return ctx, LocalContext()


@pytest.mark.parametrize(
    "name, steps, kw",
    [
        ("small", None, dict(beta_h=10.0, gamma_h=0.9)),
        ("two_humans", 3, dict(beta_h=math.inf, optimistic=True)),
    ],
)
def test_mpi_ranks_equal_serial(name, steps, kw):
    ctx, local = _ctx()
    world = load_world(name, steps)
    gen = world.goal_generator()
    dist = compute_human_policy_prior(world, world.human_agent_indices, gen, ctx=ctx, **kw)
    serial = compute_human_policy_prior(world, world.human_agent_indices, gen, ctx=local, **kw)
    assert dist.states == serial.states
    np.testing.assert_array_equal(dist.values, serial.values)
    if ctx.is_root:  # policies are gathered where they are written: rank 0
        np.testing.assert_array_equal(dist.policy, serial.policy)
    else:
        assert dist.policy is None
        with pytest.raises(RuntimeError, match="holds no policies"):
            dist(dist.states[0], dist.human_agent_indices[0])
    # every rank ends with the same full values
    gathered = ctx.allgather(dist.values.tobytes())
    assert all(g == gathered[0] for g in gathered)
    everywhere = compute_human_policy_prior(
        world, world.human_agent_indices, gen, ctx=ctx, policy_on="all", **kw
    )
    np.testing.assert_array_equal(everywhere.policy, serial.policy)


def test_mpi_ranks_with_local_workers_equal_serial(monkeypatch):
    ctx, local = _ctx()
    monkeypatch.setattr(WaveExpander, "MIN_CHUNK", 4)
    monkeypatch.setattr("empo_distributed.phase1._LocalRunner.MIN_CHUNK", 2)
    monkeypatch.setattr("empo_distributed.phase1._LocalRunner.MIN_PARALLEL_WORK", 1)
    world = load_world("small")
    gen = world.goal_generator()
    dist = compute_human_policy_prior(
        world, [0], gen, ctx=ctx, workers=2, gamma_h=0.8, policy_on="all"
    )
    serial = compute_human_policy_prior(world, [0], gen, ctx=local, gamma_h=0.8)
    np.testing.assert_array_equal(dist.values, serial.values)
    np.testing.assert_array_equal(dist.policy, serial.policy)


def test_mpi_dag_identical_on_all_ranks():
    ctx, _ = _ctx()
    dag = build_dag(load_world("contest"), ctx=ctx)
    digest = (tuple(dag.states), dag.succ.tobytes(), dag.probs.tobytes())
    assert all(d == digest for d in ctx.allgather(digest))


def test_mpi_user_believed_others_policy_equals_serial():
    from empo_test_worlds import ChainWorld, Goals, needs_partner_still
    from test_phase1_exact import partner_stays

    ctx, local = _ctx()
    world = ChainWorld(n_agents=2, humans=(0, 1), max_steps=3, rule=needs_partner_still)
    kw = dict(believed_others_policy=partner_stays, beta_h=10.0, gamma_h=0.9)
    dist = compute_human_policy_prior(world, [0, 1], Goals([1, 2]), ctx=ctx, policy_on="all", **kw)
    serial = compute_human_policy_prior(world, [0, 1], Goals([1, 2]), ctx=local, **kw)
    np.testing.assert_array_equal(dist.values, serial.values)
    np.testing.assert_array_equal(dist.policy, serial.policy)
    assert dist.value((0, 0, 0), 0, 0) == serial.value((0, 0, 0), 0, 0) > 0


def test_mpi_upstream_kind_worlds_equal_serial():
    """Durations, per-state goals and two humans (issue 12 item 1) on real ranks."""
    from test_upstream_exact import _solve

    ctx, local = _ctx()
    for case in ("durations", "goals_per_state", "two_humans"):
        dist, _ = _solve(case, ctx=ctx, policy_on="all")
        serial, _ = _solve(case, ctx=local)
        np.testing.assert_array_equal(dist.values, serial.values)
        np.testing.assert_array_equal(dist.policy, serial.policy)
        np.testing.assert_array_equal(dist.goal_ids, serial.goal_ids)


def _interleaved_levels(state):
    return 2 * state[0] + state[1] % 2  # increases along every transition; not contiguous


def test_mpi_policies_gathered_on_rank0_equal_serial():
    """The final gather to rank 0: contiguous level slices (step levels, also with
    ``release_dag``) and index lists (levels whose states interleave)."""
    ctx, local = _ctx()
    world = load_world("medium", 5)
    gen = world.goal_generator()
    serial = compute_human_policy_prior(world, [0], gen, ctx=local, gamma_h=0.9)
    for kw in (dict(), dict(release_dag=True), dict(level_fct=_interleaved_levels)):
        dist = compute_human_policy_prior(world, [0], gen, ctx=ctx, gamma_h=0.9, **kw)
        np.testing.assert_array_equal(dist.values, serial.values)
        if ctx.is_root:
            np.testing.assert_array_equal(dist.policy, serial.policy)


def test_mpi_partitioned_dag_keeps_each_ranks_own_transitions():
    """``partitioned=True`` (what ``release_dag`` solves use): a rank holds exactly the
    rows of the states it expanded (the others have no outcomes), the states, terminal
    flags and outcome count of the whole DAG, and Phase 1 on it equals serial."""
    ctx, local = _ctx()
    world = load_world("medium", 5)
    full = build_dag(world, ctx=local)
    part = build_dag(world, ctx=ctx, partitioned=True)
    K = full.num_joint_actions
    assert np.array_equal(part.states.keys, full.states.keys)
    np.testing.assert_array_equal(part.terminal, full.terminal)
    assert part.num_outcomes == full.num_outcomes
    mine = np.zeros(len(full), dtype=bool)
    for lo, hi in part.partition[2]:
        mine[lo:hi] = True
    assert 0 < mine.sum() < len(full)  # split waves: this rank does not own everything
    counts, full_counts = part.counts.reshape(-1, K), full.counts.reshape(-1, K)
    np.testing.assert_array_equal(counts[mine], full_counts[mine])
    assert not counts[~mine].any()
    rows = np.concatenate(
        [np.arange(full.state_offsets[i], full.state_offsets[i + 1]) for i in np.flatnonzero(mine)]
    )
    np.testing.assert_array_equal(part.succ, full.succ[rows])
    np.testing.assert_array_equal(part.prob_table[part.prob_idx], full.probs[rows])
    gen = world.goal_generator()
    serial = compute_human_policy_prior(world, [0], gen, ctx=local, gamma_h=0.9)
    dist = compute_human_policy_prior(
        world, [0], gen, ctx=ctx, gamma_h=0.9, dag=part, policy_on="all"
    )
    np.testing.assert_array_equal(dist.values, serial.values)
    np.testing.assert_array_equal(dist.policy, serial.policy)
    with pytest.raises(ValueError, match="partitioned DAG needs step levels"):
        compute_human_policy_prior(
            world,
            [0],
            gen,
            ctx=ctx,
            dag=build_dag(world, ctx=ctx, partitioned=True),
            levels="height",
        )


def test_mpi_release_dag_with_local_workers_equals_serial(monkeypatch):
    """The partitioned DAG (release_dag) with the Phase 1 pool on each rank, two humans."""
    ctx, local = _ctx()
    monkeypatch.setattr("empo_distributed.phase1._LocalRunner.MIN_CHUNK", 2)
    monkeypatch.setattr("empo_distributed.phase1._LocalRunner.MIN_PARALLEL_WORK", 1)
    world = load_world("two_humans", 3)
    gen = world.goal_generator()
    kw = dict(beta_h=math.inf, optimistic=True)
    serial = compute_human_policy_prior(world, world.human_agent_indices, gen, ctx=local, **kw)
    dist = compute_human_policy_prior(
        world,
        world.human_agent_indices,
        gen,
        ctx=ctx,
        workers=2,
        release_dag=True,
        policy_on="all",
        **kw,
    )
    np.testing.assert_array_equal(dist.values, serial.values)
    np.testing.assert_array_equal(dist.policy, serial.policy)


def test_mpi_memory_guard_stops_every_rank_in_phase1():
    """One rank's memory verdict after a Phase 1 level (it travels beside the value rows)
    stops every rank with that rank's message, never a hang."""
    from empo_distributed.memory import MemoryLimitError

    ctx, _ = _ctx()
    world = load_world("medium", 5)
    with pytest.raises(MemoryLimitError, match=r"after Phase 1 level 2 of \d+: rank 1 is full"):
        compute_human_policy_prior(
            world,
            [0],
            world.goal_generator(),
            ctx=ctx,
            memory_guard=_rank1_full_at(ctx, "after Phase 1 level 2 "),
            release_dag=True,
        )
    assert ctx.allgather("alive") == ["alive"] * ctx.size  # every rank got here


def _rank1_full_at(ctx, where_prefix: str):
    """A memory guard that finds rank 1 full at the check whose text starts with ``where_prefix``."""
    from empo_distributed.memory import MemoryGuard

    class OneRankGuard(MemoryGuard):
        active = True

        def _problem(self, where, extra):
            if ctx.rank == 1 and where.startswith(where_prefix):
                return f"stopped {where}: rank 1 is full"
            return None

    return OneRankGuard(None, ctx)


def test_mpi_memory_guard_stops_every_rank_in_a_dag_wave():
    """One rank's memory verdict in a DAG wave (it travels with the wave's keys, no
    meeting of its own) stops every rank with that rank's message, never a hang."""
    from empo_distributed.memory import MemoryLimitError

    ctx, _ = _ctx()
    world = load_world("medium", 5)
    guard = _rank1_full_at(ctx, "in DAG wave 4 ")
    with pytest.raises(MemoryLimitError, match=r"in DAG wave 4 \(\d+ states so far\): rank 1 is full"):
        build_dag(world, ctx=ctx, memory_guard=guard, partitioned=True)
    assert ctx.allgather("alive") == ["alive"] * ctx.size


def test_mpi_policy_on_none_sends_only_the_root_row():
    """No policy rows travel when nothing is written: the root's row reaches rank 0 and
    the values equal serial's on every rank."""
    ctx, local = _ctx()
    world = load_world("large", 6)
    gen = world.goal_generator()
    dist = compute_human_policy_prior(
        world, [0], gen, ctx=ctx, gamma_h=0.9, policy_on="none", release_dag=True
    )
    serial = compute_human_policy_prior(world, [0], gen, ctx=local, gamma_h=0.9)
    assert dist.policy is None
    np.testing.assert_array_equal(dist.values, serial.values)
    if ctx.is_root:
        np.testing.assert_array_equal(dist(dist.states[0], 0), serial(serial.states[0], 0))
    else:
        assert dist.root_policy is None
    # a root computed by another rank (a level_fct level holding more states) is sent over
    from empo_distributed.phase1 import _root_row

    P = np.full((3, 2, 5), float(ctx.rank))
    row = _root_row(ctx, P, ctx.size - 1)
    if ctx.is_root:
        np.testing.assert_array_equal(row, np.full((2, 5), float(ctx.size - 1)))
    else:
        assert row is None


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("policy_on", ["root", "all", "none"])
@pytest.mark.parametrize("share", [True, False])
def test_mpi_ranks_on_one_node_share_the_policies(share, policy_on, workers, monkeypatch):
    """Ranks on one node write their policy rows into one node-shared array (no policy row
    travels); without sharing (what ranks of different nodes, real or simulated, do)
    the rows travel as messages. Same arrays as serial either way, with the Phase 1
    pool too (forked workers write the shared array in place)."""
    from empo_distributed import node_shared

    ctx, local = _ctx()
    if not share:
        monkeypatch.setattr(node_shared, "node_comm", lambda ctx: None)
    if workers > 1:
        monkeypatch.setattr("empo_distributed.phase1._LocalRunner.MIN_CHUNK", 2)
        monkeypatch.setattr("empo_distributed.phase1._LocalRunner.MIN_PARALLEL_WORK", 1)
    made, posted = [], []
    create, post = node_shared.NodeArray.create, phase1_module()._post_policy_rows

    def spy_create(*a, **k):
        made.append(create(*a, **k))
        return made[-1]

    def spy_post(ctx, P, todo, split, requests, direct=frozenset()):
        n = len(requests)
        out = post(ctx, P, todo, split, requests, direct)
        posted.append(len(requests) - n)
        return out

    monkeypatch.setattr(node_shared.NodeArray, "create", spy_create)
    monkeypatch.setattr(phase1_module(), "_post_policy_rows", spy_post)
    world = load_world("medium", 5)
    gen = world.goal_generator()
    serial = compute_human_policy_prior(world, [0], gen, ctx=local, gamma_h=0.9)
    dist = compute_human_policy_prior(
        world, [0], gen, ctx=ctx, gamma_h=0.9, policy_on=policy_on, workers=workers, release_dag=True
    )
    np.testing.assert_array_equal(dist.values, serial.values)
    if policy_on == "all" or (policy_on == "root" and ctx.is_root):
        np.testing.assert_array_equal(dist.policy, serial.policy)
    else:
        assert dist.policy is None
    assert (dist.timings["phase1_parallel_batches"] > 0) == (workers > 1)
    shared = share and policy_on != "none"
    assert len(made) == (1 if shared else 0) and all(m is not None for m in made)
    if shared:
        assert not os.path.exists(made[0].path)  # the name went once every rank mapped it
        assert not any(posted)  # no policy row travelled
    elif policy_on == "root" and workers == 1:
        assert any(posted)


def phase1_module():
    import empo_distributed.phase1 as phase1

    return phase1


def test_mpi_node_array_falls_back_together_and_leaves_no_file(monkeypatch):
    """If one rank cannot map the node's array, every rank gets None (the message path)
    and the file is gone; a mapped array outlives the call, and rows one rank wrote are
    visible to the others after ``sync``."""
    from empo_distributed import node_shared

    ctx, _ = _ctx()
    comm = node_shared.node_comm(ctx)
    if comm is None:
        pytest.skip("the ranks do not share a node")
    before = set(os.listdir("/dev/shm"))
    node = node_shared.NodeArray.create(comm, (comm.size, 3), np.float64)
    node.array[comm.rank] = comm.rank + 1.0
    node.sync()
    np.testing.assert_array_equal(node.array[:, 2], np.arange(1.0, comm.size + 1))
    node.close()
    real = np.memmap

    def fails_on_rank1(*a, **k):
        if comm.rank == 1:
            raise OSError("no mapping for you")
        return real(*a, **k)

    monkeypatch.setattr(node_shared.np, "memmap", fails_on_rank1)
    assert node_shared.NodeArray.create(comm, (4, 3), np.float64) is None
    assert not {n for n in set(os.listdir("/dev/shm")) - before if n.startswith("empo-node-")}
