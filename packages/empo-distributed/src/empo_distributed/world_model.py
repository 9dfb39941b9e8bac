"""The EMPO ``WorldModel`` protocol: what a world must offer to be solved here.

Any object with these members plugs in unchanged (EMPO's own ``WorldModel``
subclasses already do). Nothing here is imported by a world; it documents and checks
the contract.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Sequence
from typing import Protocol, runtime_checkable


class WorldError(ValueError):
    """The world model breaks the contract (bad probabilities, a cycle, a bad map file)."""


@runtime_checkable
class WorldModel(Protocol):
    """A finite-horizon multi-agent world with explicit, hashable states.

    * ``get_state()`` / ``set_state(s)`` / ``reset()``: states are hashable, comparable
      tuples (the DAG orders them; step-layered worlds put the step count first).
    * ``transition_probabilities(state, actions)``: ``[(prob, successor), ...]`` for
      the joint action ``actions`` (one action per agent), or ``None`` when ``state`` is
      terminal. An outcome may carry a third element, its duration (default 1), used
      for discounting ``exp(-rho * duration)``.
    * ``agents`` (list), ``action_space.n`` (actions per agent, same for every agent),
      ``human_agent_indices`` and ``robot_agent_indices``.
    """

    agents: Sequence
    human_agent_indices: Sequence[int]
    robot_agent_indices: Sequence[int]

    def get_state(self) -> Hashable: ...

    def set_state(self, state) -> None: ...

    def reset(self, *args, **kwargs): ...

    def transition_probabilities(self, state, actions) -> list | None: ...


def num_actions(world_model) -> int:
    """Actions per agent (``world_model.action_space.n``)."""
    return int(world_model.action_space.n)


def joint_actions(n_agents: int, n_actions: int) -> list[list[int]]:
    """Every joint action, indexed ``k = sum(a_i * nA**i)`` (agent 0 least significant)."""
    # itertools.product varies the LAST position fastest; reverse so agent 0 varies fastest.
    return [list(reversed(p)) for p in itertools.product(range(n_actions), repeat=n_agents)]


def root_state(world_model):
    """The initial state: ``reset()`` then ``get_state()`` (EMPO's convention)."""
    world_model.reset()
    return world_model.get_state()
