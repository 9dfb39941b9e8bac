"""Possible goals, goal generators and the goal-ID system.

EMPO identifies goals by object equality/hash; Python's ``hash`` is salted per process,
so it cannot name a goal across ranks or worker processes. Here every goal gets an
integer ``goal_id``: sequential in first-seen order (humans in ``human_agent_indices``
order; states in the canonical DAG order; goals in the order the generator yields
them), the same on every rank because every rank runs the same deterministic generator
over the same ordered states. A generator may instead yield ``(goal, goal_id, weight)``
to choose the ids itself.

A generator may yield different goals in different states (EMPO calls it in every
state): :func:`enumerate_goals_per_state` then makes one column per distinct goal (by
equality, as EMPO's dicts do) and records which goals, with which weights, each state
has. A generator with ``state_independent = True`` is asked once, at the root.
"""

from __future__ import annotations

import contextlib
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


def _items(generator, state, human: int):
    for item in _generate(generator, state, human):
        if len(item) == 3:
            goal, goal_id, weight = item
            yield goal, int(goal_id), float(weight)
        elif len(item) == 2:
            goal, weight = item
            yield goal, None, float(weight)
        else:
            raise ValueError(
                f"goal generator must yield (goal, weight) or (goal, goal_id, weight), got {item!r}"
            )


def enumerate_goals_per_state(
    generator, states: Sequence, terminal: np.ndarray, human_agent_indices: Sequence[int]
) -> tuple[list[GoalSet], np.ndarray]:
    """Goals of every non-terminal state: ``(goal_sets, weights)``.

    ``goal_sets``: one column per distinct goal of each human (first-seen order over
    ``states``); ``weights``: ``(N, columns)`` float64, the generator's weight of that goal
    in that state, 0 where the state does not generate it (terminal rows are all 0).
    """
    per_human: list[dict] = []
    rows: list[list[tuple[int, int, float]]] = []  # per human: (state, local column, weight)
    explicit: list[dict] = []
    for h in human_agent_indices:
        index: dict = {}
        found: list = []
        ids: dict = {}
        for i, state in enumerate(states):
            if terminal[i]:
                continue
            for goal, goal_id, weight in _items(generator, state, h):
                col = index.get(goal)
                if col is None:
                    col = index[goal] = len(index)
                    if goal_id is not None:
                        ids[col] = goal_id
                found.append((i, col, weight))
        if not index:
            raise ValueError(f"goal generator yielded no goals for human {h}")
        per_human.append(index)
        rows.append(found)
        explicit.append(ids)
    out: list[GoalSet] = []
    next_id = 0
    seen: set[int] = set()
    for h, index, ids in zip(human_agent_indices, per_human, explicit):
        goals = list(index)  # dicts keep insertion (first-seen) order
        gids = []
        for col, goal in enumerate(goals):
            goal_id = ids.get(col, next_id)
            if goal_id in seen:
                raise ValueError(f"goal id {goal_id} is used twice; goal ids must be unique")
            seen.add(goal_id)
            next_id = max(next_id, goal_id + 1)
            with contextlib.suppress(AttributeError):
                goal.goal_id = goal_id
            gids.append(goal_id)
        out.append(GoalSet(h, tuple(goals), np.asarray(gids, dtype=np.int64), np.ones(len(goals))))
    weights = np.zeros((len(states), sum(len(gs) for gs in out)))
    c0 = 0
    for gs, found in zip(out, rows):
        if found:
            arr = np.asarray(found, dtype=np.float64)
            weights[arr[:, 0].astype(np.int64), c0 + arr[:, 1].astype(np.int64)] = arr[:, 2]
        c0 += len(gs)
    return out, weights


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
