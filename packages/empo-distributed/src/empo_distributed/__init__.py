"""empo-distributed: EMPO Phase 1 (state DAG + human policy prior) on hybrid MPI + local processes.

Public API (names mirror EMPO)::

    from empo_distributed import compute_human_policy_prior, get_dag, load_prior
"""

from .dag import Dag, build_dag, get_dag
from .goals import GoalSet, PossibleGoal, PossibleGoalGenerator, enumerate_goals
from .phase1 import Phase1Params
from .memory import MemoryLimitError
from .prior import HumanPolicyPrior, PriorFileError, load_prior
from .solver import compute_human_policy_prior
from .world_model import WorldError, WorldModel, joint_actions
from .worlds import GridWorld, list_worlds, load_world

__all__ = [
    "Dag",
    "GoalSet",
    "GridWorld",
    "HumanPolicyPrior",
    "MemoryLimitError",
    "Phase1Params",
    "PossibleGoal",
    "PossibleGoalGenerator",
    "PriorFileError",
    "WorldError",
    "WorldModel",
    "build_dag",
    "compute_human_policy_prior",
    "enumerate_goals",
    "get_dag",
    "joint_actions",
    "list_worlds",
    "load_prior",
    "load_world",
]
