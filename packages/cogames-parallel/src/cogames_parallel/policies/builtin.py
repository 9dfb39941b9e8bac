"""Built-in policies: random, noop, greedy (scripted) and busy (CPU-heavy, for benchmarks)."""

from __future__ import annotations

import zlib

import numpy as np

from cogames_parallel.missions.gridworld import MOVES, decode_observation
from cogames_parallel.policies.base import AgentPolicy, MultiAgentPolicy, PolicyEnvInfo, PolicyError


class _RandomAgent(AgentPolicy):
    def __init__(self, space) -> None:
        self.space = space
        self.n = getattr(space, "n", None)
        self.rng = np.random.default_rng(0)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        if self.n is None:
            self.space.seed(int(self.rng.integers(2**31)))

    def step(self, obs):
        if self.n is not None:
            return int(self.rng.integers(self.n))
        return self.space.sample()


class RandomPolicy(MultiAgentPolicy):
    """Uniformly random actions from each agent's own seeded RNG stream."""

    def agent_policy(self, agent_id: int) -> AgentPolicy:
        return _RandomAgent(self.env_info.action_space)


class _NoopAgent(AgentPolicy):
    def step(self, obs) -> int:
        return 0


class NoopPolicy(MultiAgentPolicy):
    """Always action 0 (stand still on the built-in missions)."""

    def agent_policy(self, agent_id: int) -> AgentPolicy:
        return _NoopAgent()


class _GreedyAgent(AgentPolicy):
    """Walk to the nearest visible resource; carry to the target; explore otherwise."""

    def __init__(self, explore_turn: float) -> None:
        self.explore_turn = explore_turn
        self.rng = np.random.default_rng(0)
        self.heading = 1

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.heading = int(self.rng.integers(1, 5))

    @staticmethod
    def _toward(oy: int, ox: int, free: np.ndarray) -> int:
        """Action that shrinks the larger axis of (oy, ox) first, if that cell is free."""
        vert = 2 if oy > 0 else 1
        horiz = 4 if ox > 0 else 3
        order = (vert, horiz) if abs(oy) >= abs(ox) else (horiz, vert)
        for a in order:
            if (a in (1, 2) and oy == 0) or (a in (3, 4) and ox == 0):
                continue
            if free[a]:
                return a
        return 0

    def step(self, obs) -> int:
        win, extra = decode_observation(obs)
        r = win.shape[1] // 2
        blocked = (win[0] > 0.5) | (win[2] > 0.5) | (win[3] > 0.5)
        free = np.array([True] + [not blocked[r + dy, r + dx] for dy, dx in MOVES[1:]])
        carrying = extra[0] > 0.5
        if carrying:
            ty, tx = np.nonzero(win[2] > 0.5)
            if ty.size:
                oy, ox = int(ty[0]) - r, int(tx[0]) - r
                if abs(oy) + abs(ox) <= 1:
                    return 0  # next to the target: deliver / wait for partners
            else:
                # target out of view: head along the signed offset features
                oy, ox = int(round(extra[1] * 1000)), int(round(extra[2] * 1000))
            a = self._toward(oy, ox, free)
            if a:
                return a
        else:
            ry, rx = np.nonzero(win[1] > 0.5)
            if ry.size:
                dist = np.abs(ry - r) + np.abs(rx - r)
                k = int(np.argmin(dist))  # first minimum in row-major order: deterministic
                a = self._toward(int(ry[k]) - r, int(rx[k]) - r, free)
                if a:
                    return a
        # explore: keep a heading, turn when blocked or now and then
        if not free[self.heading] or self.rng.random() < self.explore_turn:
            options = np.flatnonzero(free[1:]) + 1
            if options.size == 0:
                return 0
            self.heading = int(self.rng.choice(options))
        return self.heading


class GreedyPolicy(MultiAgentPolicy):
    """Scripted greedy policy for the built-in missions (``kw.explore_turn=P``)."""

    def __init__(self, env_info: PolicyEnvInfo, explore_turn: float = 0.1) -> None:
        super().__init__(env_info)
        shape = getattr(env_info.observation_space, "shape", None)
        try:
            decode_observation(np.zeros(shape or (0,), dtype=np.float32))
        except ValueError as exc:
            raise PolicyError(f"greedy only plays built-in cogames missions: {exc}") from None
        self.explore_turn = float(explore_turn)

    def agent_policy(self, agent_id: int) -> AgentPolicy:
        return _GreedyAgent(self.explore_turn)


def busy_work(seed: int, work: int) -> int:
    """``work`` rounds of a 64-bit integer mix in pure Python: deterministic, holds the GIL."""
    h = seed & 0xFFFFFFFFFFFFFFFF
    for i in range(work):
        h = (h * 6364136223846793005 + 1442695040888963407 + i) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 29
    return h


class _BusyAgent(AgentPolicy):
    def __init__(self, n: int, work: int) -> None:
        self.n, self.work = n, work

    def step(self, obs) -> int:
        # crc32, not hash(): Python's bytes hash is salted per process
        seed = zlib.crc32(np.ascontiguousarray(obs).tobytes())
        return busy_work(seed, self.work) % self.n


class BusyPolicy(MultiAgentPolicy):
    """CPU-heavy deterministic policy for benchmarks: ``kw.work=N`` integer rounds per action.

    The action is a hash of the observation after ``N`` pure-Python rounds, so the cost
    is real interpreter work that threads cannot overlap (the GIL) but processes can.
    """

    def __init__(self, env_info: PolicyEnvInfo, work: int = 20000) -> None:
        super().__init__(env_info)
        if int(work) < 0:
            raise PolicyError(f"busy: kw.work must be >= 0, got {work}")
        self.work = int(work)

    def agent_policy(self, agent_id: int) -> AgentPolicy:
        return _BusyAgent(self.env_info.num_actions, self.work)
