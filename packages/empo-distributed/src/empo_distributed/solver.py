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
from .goals import achieved_matrix, enumerate_goals
from .levels import dependency_levels
from .phase1 import Phase1Params, backward_induction
from .prior import HumanPolicyPrior


def compute_achieved(dag: Dag, goal_sets, ctx) -> np.ndarray:
    """``(N, goals)`` bool; each rank evaluates its block of states, then ``Allgatherv``."""
    lo, hi = ctx.work_range(len(dag))
    arr = dag.state_array()
    parts = [
        achieved_matrix(gs, dag.states[lo:hi], arr[lo:hi] if arr is not None else None)
        for gs in goal_sets
    ]
    mine = np.concatenate(parts, axis=1) if parts else np.zeros((hi - lo, 0), dtype=bool)
    if ctx.is_distributed:
        return ctx.allgatherv(mine.astype(np.uint8)).astype(bool)
    return mine


def compute_human_policy_prior(
    world_model,
    human_agent_indices,
    possible_goal_generator,
    believed_others_policy=None,
    beta_h: float = 10.0,
    gamma_h: float | None = None,
    rho_h: float | None = None,
    optimistic: bool = False,
    *,
    workers: int = 1,
    ctx=None,
    dtype: str = "float64",
    levels: str = "auto",
    dag: Dag | None = None,
    max_states: int | None = None,
    on_phase: Callable[[str, int, int], None] | None = None,
) -> HumanPolicyPrior:
    """Phase 1 of EMPO: the goal-conditioned Boltzmann policy of every human, state and goal.

    Arguments mirror EMPO's function. ``believed_others_policy(state, h, action)`` returns
    ``[(prob, action_profile), ...]`` over the other humans' actions (full-length profiles;
    the entries of ``h`` and the robots are ignored); default: uniform. It must be
    picklable (a module-level function) when ``workers > 1``. ``gamma_h`` is the per-step
    discount (``rho_h = -ln gamma_h``); give at most one of the two.

    ``on_phase(phase, done, total)`` reports progress ("dag": waves/states, "phase1":
    levels). The returned prior has ``.dag`` (the :class:`Dag`) and ``.timings``.
    """
    from parallel_core.mpi import get_context

    ctx = ctx if ctx is not None else get_context()
    params = Phase1Params.make(beta_h, gamma_h, rho_h, optimistic, dtype)
    t0 = time.perf_counter()
    if dag is None:
        dag = build_dag(
            world_model,
            workers=workers,
            ctx=ctx,
            progress=(lambda w, n: on_phase("dag", w, n)) if on_phase else None,
            max_states=max_states,
        )
    t_dag = time.perf_counter() - t0
    if on_phase:
        on_phase("end", 0, 0)

    t1 = time.perf_counter()
    humans = list(human_agent_indices)
    robots = list(getattr(world_model, "robot_agent_indices", []))
    overlap = set(humans) & set(robots)
    if overlap:
        raise ValueError(f"agents {sorted(overlap)} are listed as both humans and robots")
    goal_sets = enumerate_goals(possible_goal_generator, dag.states[0], humans)
    achieved = compute_achieved(dag, goal_sets, ctx)
    lv = dependency_levels(dag, levels)
    t_goals = time.perf_counter() - t1

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
        progress=(lambda d, n: on_phase("phase1", d, n)) if on_phase else None,
    )
    if on_phase:
        on_phase("end", 0, 0)
    goals = [g for gs in goal_sets for g in gs.goals]
    labels = [g.label() if hasattr(g, "label") else repr(g) for g in goals]
    meta = {
        "beta_h": params.beta_h if np.isfinite(params.beta_h) else "inf",
        "rho_h": params.rho_h,
        "gamma_h": float(np.exp(-params.rho_h)),
        "optimistic": params.optimistic,
        "dtype": params.dtype,
        "num_actions": dag.num_actions,
        "num_agents": dag.num_agents,
        "human_agent_indices": humans,
        "robot_agent_indices": robots,
        "levels": len(lv),
        "level_mode": "step" if (levels != "height" and dag.step_layered) else "height",
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
    )
    prior.dag = dag
    prior.timings = {
        "dag_s": t_dag,
        "goals_levels_s": t_goals,
        "phase1_s": t_bi["phase1_s"],
        "exchange_s": t_bi["exchange_s"],
        "phase1_parallel_batches": t_bi["parallel_batches"],
    }
    return prior
