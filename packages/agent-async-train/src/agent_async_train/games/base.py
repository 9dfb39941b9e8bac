"""The small interface every game implements, so users can plug in their own.

A *game* is a multi-agent environment with a fixed set of ``num_agents`` agents that all
act every turn. Everything crossing the interface is a numpy array with the agent as the
leading axis, so the experiment loop never touches Python objects per agent or per cell:

* ``reset(seed) -> obs``                         obs: ``(num_agents, obs_dim)``, dtype ``obs_dtype``
* ``step(actions) -> StepResult``                actions: ``(num_agents,)`` int64 in ``[0, num_actions)``
* ``get_state() / set_state(state)``             a picklable snapshot (RNG included) for exact resume

``StepResult.terminated`` (the agent reached a terminal state: do not bootstrap) and
``StepResult.truncated`` (the episode was cut by a time limit: do bootstrap) are kept apart
because Double DQN treats them differently. ``StepResult.alive`` marks agents that were
still in the episode before this step; the loop stores transitions only for them. The episode
is over when every agent is terminated or truncated.

``execution`` says how the game applies one turn's actions: ``"sequential"`` (agent 0 moves,
then agent 1 sees the result, ...) or ``"simultaneous"`` (all moves resolved together).
Acting, i.e. *choosing* the actions, is always done for all agents at once from the same
observation; only their *execution* differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import GameError  # noqa: F401 - re-exported: games raise it


@dataclass
class StepResult:
    """What one turn returns; every array has the agent as its first axis."""

    obs: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    alive: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        """True once no agent is left in the episode."""
        return bool(np.all(self.terminated | self.truncated | ~self.alive))


@runtime_checkable
class Game(Protocol):
    """Structural interface of a game (see the module docstring)."""

    num_agents: int
    obs_dim: int
    num_actions: int
    obs_dtype: np.dtype
    execution: str

    def reset(self, seed: int | None = None) -> np.ndarray: ...

    def step(self, actions: np.ndarray) -> StepResult: ...

    def get_state(self) -> dict: ...

    def set_state(self, state: dict) -> None: ...
