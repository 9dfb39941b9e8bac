"""Dependency levels for backward induction: sets of states that need only later levels.

* ``step``: when states start with a step count and every transition increases it,
  the states of one step form a level (processed from the last step back). Because
  states are sorted, each level is a contiguous index range.
* ``height``: the general peel-off: terminal states are level 0, and a state sits one
  level above its highest successor. Works for any DAG.
"""

from __future__ import annotations

import numpy as np

from .dag import Dag


def dependency_levels(dag: Dag, mode: str = "auto") -> list[np.ndarray]:
    """State-index arrays in processing order: each level depends only on earlier ones."""
    if mode not in ("auto", "step", "height"):
        raise ValueError(f"levels mode must be 'auto', 'step' or 'height', got {mode!r}")
    if mode == "step" and not dag.step_layered:
        raise ValueError(
            "levels 'step' needs states that start with a step count increasing on every "
            "transition; use 'auto' or 'height'"
        )
    if mode in ("auto", "step") and dag.step_layered:
        if dag.wave_bounds is not None:
            # The batched builder's waves are the steps (the successors of wave t are wave
            # t+1): no need to decode the step of every state.
            every = np.arange(len(dag), dtype=np.int64)  # one array; the levels are its slices
            return [every[a:b] for a, b in reversed(dag.wave_bounds) if b > a]
        steps = dag.steps()
        bounds = np.flatnonzero(np.diff(steps)) + 1  # sorted states: steps are non-decreasing
        starts = np.concatenate(([0], bounds))
        stops = np.concatenate((bounds, [len(dag)]))
        return [np.arange(a, b, dtype=np.int64) for a, b in zip(starts[::-1], stops[::-1])]
    return _height_levels(dag)


def _height_levels(dag: Dag) -> list[np.ndarray]:
    N = len(dag)
    height = np.zeros(N, dtype=np.int64)
    state_off = dag.state_offsets  # first outcome of each state (N+1 entries)
    succ = dag.succ
    # Reverse topological order: every successor's height is known when a state is visited.
    for i in range(N - 1, -1, -1):
        a, b = state_off[i], state_off[i + 1]
        if b > a:
            height[i] = height[succ[a:b]].max() + 1
    order = np.argsort(height, kind="stable")
    bounds = np.flatnonzero(np.diff(height[order])) + 1
    return np.split(order, bounds)
