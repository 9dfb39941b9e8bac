"""Bridges between the game interface and PettingZoo's ``ParallelEnv``.

* ``PettingZooGame`` turns any ``ParallelEnv`` with ``Box`` observations and ``Discrete``
  actions (same sizes for every agent) into a game, so its agents can be trained here.
* ``GemGridParallelEnv`` exposes GemGrid as a ``ParallelEnv`` (useful for other tooling,
  and it lets the tests check the adapter against the native game).
"""

from __future__ import annotations

import functools

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from .base import GameError, StepResult
from .gemgrid import GemGrid


class PettingZooGame:
    """A ``ParallelEnv`` seen through the array-based game interface.

    Agents that leave the episode early get zero observations and ``alive=False`` until the
    episode ends. PettingZoo moves are resolved by the env itself, so ``execution`` is
    ``"simultaneous"``. ``get_state`` is empty: the loop reseeds every episode from the run
    seed, which makes resuming exact for any env whose ``reset(seed=...)`` is deterministic.
    """

    execution = "simultaneous"

    def __init__(self, env: ParallelEnv, reward_name: str | None = None):
        self.env = env
        # What the summaries call the score: the env's own reward, named after the env.
        env_name = getattr(env, "metadata", {}).get("name") or type(env).__name__
        self.reward_name = reward_name or f"{env_name} reward"
        self.agents = list(env.possible_agents)
        if not self.agents:
            raise GameError("the PettingZoo env has no possible_agents")
        self.num_agents = len(self.agents)
        obs_spaces = [env.observation_space(a) for a in self.agents]
        act_spaces = [env.action_space(a) for a in self.agents]
        if not all(isinstance(s, spaces.Box) for s in obs_spaces) or not all(
            isinstance(s, spaces.Discrete) for s in act_spaces
        ):
            raise GameError("PettingZoo games need Box observation and Discrete action spaces")
        dims = {int(np.prod(s.shape)) for s in obs_spaces}
        n_actions = {int(s.n) for s in act_spaces}
        if len(dims) != 1 or len(n_actions) != 1:
            raise GameError(
                "PettingZoo games need the same observation and action size for every agent"
            )
        self.obs_dim = dims.pop()
        self.num_actions = n_actions.pop()
        self.obs_dtype = np.dtype(obs_spaces[0].dtype)
        self._alive = np.ones(self.num_agents, dtype=bool)

    def _stack(self, obs: dict) -> np.ndarray:
        out = np.zeros((self.num_agents, self.obs_dim), dtype=self.obs_dtype)
        for i, a in enumerate(self.agents):
            if a in obs:
                out[i] = np.asarray(obs[a]).reshape(-1)
        return out

    def reset(self, seed: int | None = None) -> np.ndarray:
        obs, _ = self.env.reset(seed=seed)
        self._alive = np.array([a in obs for a in self.agents])
        return self._stack(obs)

    def step(self, actions: np.ndarray) -> StepResult:
        alive = self._alive.copy()
        action_dict = {a: int(actions[i]) for i, a in enumerate(self.agents) if alive[i]}
        obs, rew, term, trunc, info = self.env.step(action_dict)
        live = set(self.env.agents)
        self._alive = np.array([a in live for a in self.agents])
        return StepResult(
            obs=self._stack(obs),
            rewards=np.array([rew.get(a, 0.0) for a in self.agents], dtype=np.float32),
            terminated=np.array(
                [bool(term.get(a, not alive[i])) for i, a in enumerate(self.agents)]
            ),
            truncated=np.array([bool(trunc.get(a, False)) for a in self.agents]),
            alive=alive,
            info={"env_info": info},
        )

    def get_state(self) -> dict:
        return {}

    def set_state(self, state: dict) -> None:
        pass


class GemGridParallelEnv(ParallelEnv):
    """GemGrid with the PettingZoo ``ParallelEnv`` API (agents ``agent_0`` ... ``agent_{N-1}``)."""

    metadata = {"name": "gemgrid_v0", "render_modes": []}

    def __init__(self, **gemgrid_kwargs):
        self.game = GemGrid(**gemgrid_kwargs)
        self.possible_agents = [f"agent_{i}" for i in range(self.game.num_agents)]
        self.agents = []

    @functools.cache  # noqa: B019 - PettingZoo expects the same space object every call
    def observation_space(self, agent):
        return spaces.Box(0, 1, shape=(self.game.obs_dim,), dtype=np.uint8)

    @functools.cache  # noqa: B019
    def action_space(self, agent):
        return spaces.Discrete(self.game.num_actions)

    def reset(self, seed=None, options=None):
        obs = self.game.reset(seed)
        self.agents = list(self.possible_agents)
        return {a: obs[i] for i, a in enumerate(self.agents)}, {a: {} for a in self.agents}

    def step(self, actions):
        acts = np.array([actions[a] for a in self.possible_agents], dtype=np.int64)
        res = self.game.step(acts)
        names = self.possible_agents
        out = (
            {a: res.obs[i] for i, a in enumerate(names)},
            {a: float(res.rewards[i]) for i, a in enumerate(names)},
            {a: bool(res.terminated[i]) for i, a in enumerate(names)},
            {a: bool(res.truncated[i]) for i, a in enumerate(names)},
            {a: {} for a in names},
        )
        if res.done:
            self.agents = []
        return out


def gemgrid_pz(**kwargs) -> PettingZooGame:
    """GemGrid through the PettingZoo API (``gemgrid-pettingzoo``)."""
    return PettingZooGame(GemGridParallelEnv(**kwargs), reward_name="gems")


def pursuit(n_pursuers: int = 8, max_cycles: int = 500, **kwargs) -> PettingZooGame:
    """PettingZoo SISL ``pursuit_v5`` (``pursuit``): pursuers catch evaders, reward per catch.

    PettingZoo imports pygame for this env (the ``pursuit`` extra). ``game.agents`` sets
    ``n_pursuers``; ``game.options`` are the env's own keyword arguments.
    """
    try:
        from pettingzoo.sisl import pursuit_v5
    except ImportError as err:
        raise GameError(
            f"pursuit needs pygame ({err}): pip install 'agent-async-train[pursuit]'"
        ) from err
    env = pursuit_v5.parallel_env(n_pursuers=n_pursuers, max_cycles=max_cycles, **kwargs)
    return PettingZooGame(env, reward_name="pursuit reward")
