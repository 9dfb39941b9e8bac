"""Possible goals, goal generators and the goal-ID system.

EMPO identifies goals by object equality/hash; Python's ``hash`` is salted per process,
so it cannot name a goal across ranks or worker processes. Here every goal gets an
integer ``goal_id``: sequential in generator order (humans in ``human_agent_indices``
order, goals in the order their generator yields them), the same on every rank because
every rank runs the same deterministic generator. A generator may instead yield
``(goal, goal_id, weight)`` to choose the ids itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np


class PossibleGoal:
    """A goal a human may pursue: ``is_achieved(state) -> 0/1``.

    Subclasses may also define ``achieved_mask(states: np.ndarray) -> bool array`` for
    worlds whose states are rows of an integer array; the solver then evaluates the goal
    on all states at once instead of one Python call per state.
    """

    goal_id: int | None = None

    def is_achieved(self, state) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def label(self) -> str:
        """A short human-readable description stored in the prior file."""
        return repr(self)


class PossibleGoalGenerator:
    """Yields ``(goal, weight)`` or ``(goal, goal_id, weight)`` for a human in a state."""

    def generate(self, state, human_agent_index: int) -> Iterator[tuple]:  # pragma: no cover
        raise NotImplementedError


@dataclass(frozen=True)
class GoalSet:
    """The goals of one human: objects, integer ids and weights, in column order."""

    human: int
    goals: tuple
    ids: np.ndarray
    weights: np.ndarray

    def __len__(self) -> int:
        return len(self.goals)

    def column(self, goal) -> int:
        """Column of ``goal`` (a goal object, or an integer goal id)."""
        goal_id = goal if isinstance(goal, (int, np.integer)) else getattr(goal, "goal_id", None)
        if goal_id is not None:
            hits = np.flatnonzero(self.ids == int(goal_id))
            if hits.size:
                return int(hits[0])
        for i, g in enumerate(self.goals):
            if g == goal:
                return i
        raise KeyError(f"goal {goal!r} is not a goal of human {self.human}")


def _generate(generator, state, human: int):
    gen = generator.generate if hasattr(generator, "generate") else generator
    return gen(state, human)


def enumerate_goals(generator, state, human_agent_indices: Sequence[int]) -> list[GoalSet]:
    """Assign goal ids for every human by running ``generator`` once on ``state``.

    Phase 1 treats the goal set of each human as fixed (the one generated for the root
    state), which is what the vectorised backward induction needs: values are arrays
    indexed by (state, goal column).
    """
    out: list[GoalSet] = []
    next_id = 0
    seen: set[int] = set()
    for h in human_agent_indices:
        goals, ids, weights = [], [], []
        for item in _generate(generator, state, h):
            if len(item) == 3:
                goal, goal_id, weight = item
                goal_id = int(goal_id)
            elif len(item) == 2:
                goal, weight = item
                goal_id = next_id
            else:
                raise ValueError(
                    f"goal generator must yield (goal, weight) or (goal, goal_id, weight), got {item!r}"
                )
            if goal_id in seen:
                raise ValueError(f"goal id {goal_id} is used twice; goal ids must be unique")
            seen.add(goal_id)
            next_id = max(next_id, goal_id + 1)
            try:
                goal.goal_id = goal_id
            except AttributeError:  # frozen/slotted goal objects keep their own identity
                pass
            goals.append(goal)
            ids.append(goal_id)
            weights.append(float(weight))
        if not goals:
            raise ValueError(f"goal generator yielded no goals for human {h}")
        out.append(GoalSet(h, tuple(goals), np.asarray(ids, dtype=np.int64), np.asarray(weights)))
    return out


def achieved_matrix(
    goal_set: GoalSet, states: Sequence, state_array: np.ndarray | None
) -> np.ndarray:
    """Boolean ``(len(states), len(goals))``: is goal g achieved in state s."""
    out = np.zeros((len(states), len(goal_set)), dtype=bool)
    for j, goal in enumerate(goal_set.goals):
        if state_array is not None and hasattr(goal, "achieved_mask"):
            out[:, j] = goal.achieved_mask(state_array)
        else:
            out[:, j] = [bool(goal.is_achieved(s)) for s in states]
    return out
