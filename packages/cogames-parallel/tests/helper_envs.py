"""Small PettingZoo envs for the robustness tests (loaded as -m path/to/helper_envs.py)."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv


class TinyEnv(ParallelEnv):
    """Two agents; reward = the first action component; ``continuous`` gives Box actions."""

    metadata = {"name": "tiny"}

    def __init__(self, continuous: bool = False, close_raises: bool = False, length: int = 6):
        self.possible_agents = ["a0", "a1"]
        self.continuous, self.close_raises, self.length = continuous, close_raises, length
        self.t = 0

    def observation_space(self, agent):
        return spaces.Box(0.0, 1.0, (3,), np.float32)

    def action_space(self, agent):
        if self.continuous:
            return spaces.Box(-1.0, 1.0, (2,), np.float32)
        return spaces.Discrete(3)

    def reset(self, seed=None, options=None):
        self.agents = list(self.possible_agents)
        self.t = 0
        return {a: np.zeros(3, np.float32) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions):
        self.t += 1
        rew = {a: float(np.asarray(actions[a], dtype=np.float64).reshape(-1)[0]) for a in actions}
        done = self.t >= self.length
        obs = {a: np.full(3, self.t / self.length, np.float32) for a in self.agents}
        term = {a: done for a in self.agents}
        trunc = {a: False for a in self.agents}
        if done:
            self.agents = []
        return obs, rew, term, trunc, {a: {} for a in actions}

    def close(self):
        if self.close_raises:
            raise RuntimeError("close failed")


def kwargs_only(**kwargs):
    """A PettingZoo-style ``env(**kwargs)`` factory that rejects every keyword."""
    if kwargs:
        raise TypeError(f"unexpected keyword arguments {sorted(kwargs)}")
    return TinyEnv()


def continuous():
    return TinyEnv(continuous=True)


def close_raises():
    return TinyEnv(close_raises=True)
