"""empo-distributed: EMPO Phase 1 (state DAG + human policy prior) on hybrid MPI + local processes.

Public API (names mirror EMPO)::

    from empo_distributed import compute_human_policy_prior, get_dag, load_prior

Names are imported on first use, so ``empo-prior`` answers argument errors before the
numerical modules load.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Dag": ".dag",
    "build_dag": ".dag",
    "get_dag": ".dag",
    "GoalSet": ".goals",
    "PossibleGoal": ".goals",
    "PossibleGoalGenerator": ".goals",
    "enumerate_goals": ".goals",
    "MemoryLimitError": ".memory",
    "Phase1Params": ".phase1",
    "HumanPolicyPrior": ".prior",
    "PriorFileError": ".prior",
    "load_prior": ".prior",
    "compute_human_policy_prior": ".solver",
    "WorldError": ".world_model",
    "WorldModel": ".world_model",
    "joint_actions": ".world_model",
    "GridWorld": ".worlds",
    "list_worlds": ".worlds",
    "load_world": ".worlds",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'empo_distributed' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
