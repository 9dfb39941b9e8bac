"""The EMPO-compatible entry point: world model in, :class:`HumanPolicyPrior` out.

``compute_human_policy_prior`` = DAG (:mod:`.dag`) -> goal ids (:mod:`.goals`) ->
achieved matrix -> dependency levels (:mod:`.levels`) -> backward induction
(:mod:`.phase1`). The execution layer is picked by two arguments: ``workers`` (local
processes per rank) and ``ctx`` (a ``parallel_core.mpi`` context; MPI when launched
under ``mpirun`` with more than one rank, else a zero-cost local context).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from .dag import Dag, build_dag
from .goals import GoalSet, achieved_matrix, enumerate_goals, enumerate_goals_per_state
from .levels import dependency_levels
from .phase1 import Phase1Params, backward_induction
from .prior import HumanPolicyPrior

ACHIEVED_CHUNK = 65536  # states decoded at a time: ~2 MB of rows, kept in cache


def compute_achieved(dag: Dag, goal_sets, ctx) -> np.ndarray:
    """``(N, goals)`` bool; each rank evaluates its block of states (a compact state table
    decoded chunk by chunk), then one ``Allgatherv`` straight into the result."""
    from .exchange import allgatherv_in_place

    N = len(dag)
    G = sum(len(gs) for gs in goal_sets)
    lo, hi = ctx.work_range(N)
    out = np.empty((N, G), dtype=bool)
    mine = out[lo:hi]
    table = hasattr(dag.states, "array")  # a StateTable: decode this rank's block in chunks
    arr = None if table else dag.state_array()
    step = ACHIEVED_CHUNK if table else max(1, hi - lo)
    for a in range(lo, hi, step):
        b = min(hi, a + step)
        states = dag.states[a:b]
        rows = states.array() if table else (arr[a:b] if arr is not None else None)
        c = 0
        for gs in goal_sets:
            mine[a - lo : b - lo, c : c + len(gs)] = achieved_matrix(gs, states, rows)
            c += len(gs)
    if ctx.is_distributed:
        from parallel_core.mpi import partition

        allgatherv_in_place(ctx, out, [stop - start for start, stop in partition(N, ctx.size)])
    return out


# EMPO keyword arguments this implementation cannot honour: refused, never ignored.
_REFUSED = {
    "use_disk_slicing": "disk slicing is not implemented: the DAG is held in compact arrays "
    "(use more MPI ranks, --dtype float32 or a memory_guard instead)",
    "disk_cache_dir": "disk slicing (and its cache folder) is not implemented",
    "use_compression": "disk slicing (and its compression) is not implemented",
    "archive_dir": "archiving value slices to disk is not implemented; save the prior instead "
    "(HumanPolicyPrior.save)",
    "return_attainment_cache": "the attainment cache is EMPO's Phase 2 structure; "
    "prior.achieved holds the (state, goal) achievement matrix instead",
}


def compute_human_policy_prior(
    world_model,
    human_agent_indices,
    possible_goal_generator=None,
    believed_others_policy=None,
    beta_h: float = 10.0,
    gamma_h: float | None = None,
    rho_h: float | None = None,
    optimistic: bool = False,
    *,
    workers: int | None = None,
    ctx=None,
    dtype: str = "float64",
    levels: str = "auto",
    dag: Dag | None = None,
    max_states: int | None = None,
    on_phase: Callable[[str, int, int], None] | None = None,
    memory_guard=None,
    robots=None,
    policy_on: str = "root",
    release_dag: bool = False,
    parallel: bool = False,
    num_workers: int | None = None,
    level_fct: Callable | None = None,
    return_Vh: bool = False,
    quiet: bool = False,
    progress_callback: Callable[[int, int], None] | None = None,
    use_float16: bool = False,
    min_free_memory_fraction: float = 0.0,
    memory_check_interval: int | None = None,
    memory_pause_duration: float = 0.0,
    memory_profile: bool = False,
    use_attainment_cache: bool = True,
    **refused,
) -> HumanPolicyPrior:
    """Phase 1 of EMPO: the goal-conditioned Boltzmann policy of every human, state and goal.

    Arguments mirror EMPO's function. ``possible_goal_generator`` defaults to the world's
    ``possible_goal_generator`` (as in EMPO); it may yield different goals in different
    states. ``believed_others_policy(state, h, action)`` returns
    ``[(prob, action_profile), ...]`` over the other humans' actions (full-length profiles;
    the entries of ``h`` and the robots are ignored); default: uniform. It must be
    picklable (a module-level function) when ``workers > 1``. ``gamma_h`` is the per-step
    discount (``rho_h = -ln gamma_h``); give at most one of the two. Durations come from
    the world's ``transition_durations`` (EMPO) when ``rho_h > 0``.

    Robots are, as in EMPO, all agents not in ``human_agent_indices`` (``robots`` overrides).
    Under MPI the policies end on rank 0 only (``policy_on="all"``: on every rank); the
    other ranks' priors have ``policy = None`` but the full values. ``policy_on="none"``
    (every mode; the CLI without ``--output``): no policy is kept but the root's
    (``prior(root, h)`` on rank 0), the same values, less memory and no policy traffic. ``release_dag=True``
    gives the memory of the transitions back while Phase 1 runs (``prior.dag`` then keeps
    only states, terminal flags and sizes): about half the peak memory of a large world.

    EMPO's keyword arguments keep their meaning: ``parallel``/``num_workers`` (local
    worker processes; ``workers`` is this package's name), ``level_fct`` (state -> level,
    higher levels first; checked against every transition), ``return_Vh`` (also return
    ``{state: {h: {goal: V}}}`` with the non-zero values), ``quiet`` (this function prints
    nothing anyway), ``progress_callback(done_states, total_states)``, ``use_float16``
    (transition probabilities stored as float16; default False here, True in EMPO),
    ``min_free_memory_fraction``/``memory_pause_duration`` (stop with
    :class:`~empo_distributed.memory.MemoryLimitError` when memory runs low, after one
    pause; checked after every wave and level, which is what ``memory_check_interval``
    becomes), ``memory_profile`` (peak RSS in ``prior.timings``), ``use_attainment_cache``
    (accepted; the achievement matrix is always kept). Disk slicing, archives and
    ``return_attainment_cache`` are refused with a ``ValueError`` saying why.

    ``on_phase(phase, done, total)`` reports progress ("dag": waves/states, "phase1":
    levels). The returned prior has ``.dag`` (the :class:`Dag`) and ``.timings``.
    """
    from parallel_core.mpi import get_context

    from .memory import MemoryGuard, peak_rss, release_free_memory

    for name, value in refused.items():
        if name not in _REFUSED:
            raise TypeError(f"compute_human_policy_prior() got an unexpected keyword argument {name!r}")
        if value not in (None, False):
            raise ValueError(f"{name}={value!r} cannot apply: {_REFUSED[name]}")
    if workers is None:
        workers = (num_workers or get_context().local_workers) if parallel else 1
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if possible_goal_generator is None:
        possible_goal_generator = getattr(world_model, "possible_goal_generator", None)
        if possible_goal_generator is None:
            raise ValueError(
                "possible_goal_generator must be given, or set as world_model.possible_goal_generator"
            )
    ctx = ctx if ctx is not None else get_context()
    params = Phase1Params.make(beta_h, gamma_h, rho_h, optimistic, dtype)
    if memory_guard is None and (min_free_memory_fraction or 0) > 0:
        memory_guard = MemoryGuard(None, ctx, min_free_memory_fraction, memory_pause_duration)
    from .timing import CLOCK

    CLOCK.reset()
    t0 = time.perf_counter()
    c0 = time.process_time()
    if dag is None:
        dag = build_dag(
            world_model,
            workers=workers,
            ctx=ctx,
            progress=(lambda w, n: on_phase("dag", w, n)) if on_phase else None,
            max_states=max_states,
            durations=params.rho_h > 0,
            memory_guard=memory_guard,
            # MPI: the transitions of a state are read only by the rank that computes its
            # step level, so with step levels each rank keeps (and builds) its share only;
            # release_dag says that the caller does not want the transitions afterwards.
            partitioned=release_dag and level_fct is None and levels != "height",
        )
    if use_float16:
        dag.round_probs_float16()  # EMPO's meaning: probabilities to ~3 digits
    t_dag = time.perf_counter() - t0
    cpu_dag = time.process_time() - c0
    if on_phase:
        on_phase("end", 0, 0)

    t1 = time.perf_counter()
    c1 = time.process_time()
    humans = list(human_agent_indices)
    n_agents = len(world_model.agents)
    if robots is None:
        robots = [i for i in range(n_agents) if i not in humans]
    robots = list(robots)
    overlap = set(humans) & set(robots)
    if overlap:
        raise ValueError(f"agents {sorted(overlap)} are listed as both humans and robots")
    state_weights = None
    if getattr(possible_goal_generator, "state_independent", False):
        goal_sets = enumerate_goals(possible_goal_generator, dag.states[0], humans)
    else:  # EMPO asks the generator in every state: so do we (ids stable on every rank)
        goal_sets, state_weights = enumerate_goals_per_state(
            possible_goal_generator, dag.states, dag.terminal, humans
        )
        if (state_weights[~dag.terminal] > 0).all():
            fixed = state_weights[~dag.terminal]
            if (fixed == fixed[:1]).all():  # the same goals and weights everywhere
                goal_sets = [
                    GoalSet(gs.human, gs.goals, gs.ids, fixed[0, c0:c1])
                    for gs, (c0, c1) in zip(goal_sets, _columns(goal_sets))
                ]
                state_weights = None
    achieved = compute_achieved(dag, goal_sets, ctx)
    if level_fct is not None:
        lv = levels_from_function(dag, level_fct)
    else:
        lv = dependency_levels(dag, levels)
    if state_weights is not None or not hasattr(dag.states, "array"):
        # per-state goal tables, state tuples decoded at once: give their memory back (a
        # compact state table decodes in small chunks: nothing worth a trim, ~3 ms)
        release_free_memory()
    t_goals = time.perf_counter() - t1
    cpu_goals = time.process_time() - c1
    c2 = time.process_time()

    total_states = len(dag)
    done_levels = np.cumsum([len(x) for x in lv]) if lv else []

    def phase1_progress(d, n):
        if on_phase:
            on_phase("phase1", d, n)
        if progress_callback is not None:
            progress_callback(int(done_levels[d - 1]), total_states)

    V, P, t_bi = backward_induction(
        dag,
        goal_sets,
        params,
        lv,
        achieved,
        robots=robots,
        workers=workers,
        ctx=ctx,
        believed_others_policy=believed_others_policy,
        progress=phase1_progress if (on_phase or progress_callback) else None,
        active=state_weights > 0 if state_weights is not None else None,
        memory_guard=memory_guard,
        policy_on=policy_on,
        release_dag=release_dag,
    )
    cpu_phase1 = time.process_time() - c2
    if on_phase:
        on_phase("end", 0, 0)
    goals = [g for gs in goal_sets for g in gs.goals]
    labels = [goal_label(g) for g in goals]
    meta = {
        "beta_h": params.beta_h if np.isfinite(params.beta_h) else "inf",
        "rho_h": params.rho_h,
        "gamma_h": float(np.exp(-params.rho_h)),
        "optimistic": params.optimistic,
        "dtype": params.dtype,
        "use_float16": bool(use_float16),
        "num_actions": dag.num_actions,
        "num_agents": dag.num_agents,
        "human_agent_indices": humans,
        "robot_agent_indices": robots,
        "levels": len(lv),
        "level_mode": "level_fct"
        if level_fct is not None
        else ("step" if (levels != "height" and dag.step_layered) else "height"),
        "goals_per_state": state_weights is not None,
        "goal_labels": labels,
    }
    prior = HumanPolicyPrior(
        dag.states,
        dag.terminal,
        P,
        V,
        np.concatenate([gs.ids for gs in goal_sets]),
        np.concatenate([np.full(len(gs), gs.human) for gs in goal_sets]),
        np.concatenate([gs.weights for gs in goal_sets]),
        meta,
        goals,
        state_goal_weights=state_weights,
    )
    prior.root_policy = t_bi["root_policy"]
    prior.dag = dag
    prior._index = dag.state_to_idx  # reuse the DAG's index: no second dict of states
    prior.achieved = achieved
    prior.timings = {
        "dag_s": t_dag,
        "goals_levels_s": t_goals,
        "phase1_s": t_bi["phase1_s"],
        "exchange_s": t_bi["exchange_s"],
        "phase1_parallel_batches": t_bi["parallel_batches"],
        # CPU seconds of this process (not its local workers), and of the parts inside
        "dag_cpu_s": cpu_dag,
        "goals_levels_cpu_s": cpu_goals,
        "phase1_cpu_s": cpu_phase1,
        "parts": CLOCK.report(),
    }
    if memory_profile:
        prior.timings["peak_rss_bytes"] = peak_rss()
    if return_Vh:
        return prior, values_dict(prior)
    return prior


def goal_label(goal) -> str:
    """A readable, stable label: ``label()``, a custom ``repr``, else class + simple fields."""
    if hasattr(goal, "label"):
        return str(goal.label())
    if type(goal).__repr__ is not object.__repr__:
        return repr(goal)
    simple = (int, float, str, bool, tuple, type(None))
    fields = {
        k: (v.tolist() if hasattr(v, "tolist") else v)
        for k, v in sorted(vars(goal).items())
        if not k.startswith("_") and (isinstance(v, simple) or hasattr(v, "tolist"))
    } if hasattr(goal, "__dict__") else {}
    inner = ", ".join(f"{k}={v!r}" for k, v in fields.items())
    return f"{type(goal).__name__}({inner})"


def _columns(goal_sets) -> list[tuple[int, int]]:
    out, c = [], 0
    for gs in goal_sets:
        out.append((c, c + len(gs)))
        c += len(gs)
    return out


def levels_from_function(dag: Dag, level_fct) -> list[np.ndarray]:
    """EMPO's ``level_fct``: group states by ``level_fct(state)``, higher levels first.

    Every transition must lead to a strictly higher level (else the order would be wrong);
    a ``ValueError`` names the first offending transition.
    """
    lv = np.fromiter((level_fct(s) for s in dag.states), dtype=np.int64, count=len(dag))
    per_state = np.diff(dag.state_offsets)
    src = np.repeat(np.arange(len(dag), dtype=np.int64), per_state)
    bad = np.flatnonzero(lv[dag.succ] <= lv[src])
    if bad.size:
        o = int(bad[0])
        raise ValueError(
            f"level_fct must increase along every transition: state {dag.states[src[o]]!r} "
            f"(level {lv[src[o]]}) leads to {dag.states[dag.succ[o]]!r} (level {lv[dag.succ[o]]})"
        )
    order = np.argsort(-lv, kind="stable")
    bounds = np.flatnonzero(np.diff(lv[order])) + 1
    return np.split(order, bounds)


def values_dict(prior: HumanPolicyPrior) -> dict:
    """EMPO's ``return_Vh`` value: ``{state: {h: {goal: V}}}`` with the non-zero values only."""
    out: dict = {}
    goals = prior.goals
    rows, cols = np.nonzero(prior.values)
    for i, c in zip(rows.tolist(), cols.tolist()):
        h = int(prior.goal_humans[c])
        out.setdefault(prior.states[i], {}).setdefault(h, {})[goals[c]] = float(prior.values[i, c])
    return out
