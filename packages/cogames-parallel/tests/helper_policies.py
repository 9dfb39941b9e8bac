"""Misbehaving policies for the failure tests (loaded as path/to/helper_policies.py:Class)."""

from __future__ import annotations

import os
import threading
import time

import numpy as np

from cogames_parallel.policies.base import AgentPolicy, MultiAgentPolicy


class _Counting(AgentPolicy):
    def __init__(self, fn) -> None:
        self.fn = fn
        self.t = 0

    def reset(self, seed=None) -> None:
        self.t = 0

    def step(self, obs) -> int:
        self.t += 1
        return self.fn(self.t)


class CrashPolicy(MultiAgentPolicy):
    """Raises ValueError at step ``at`` (for every agent it controls)."""

    def __init__(self, env_info, at: int = 3) -> None:
        super().__init__(env_info)
        self.at = at

    def agent_policy(self, agent_id):
        def fn(t):
            if t == self.at:
                raise ValueError(f"boom at step {t}")
            return 0

        return _Counting(fn)


class _Dying(AgentPolicy):
    def __init__(self, at: int, mod: int) -> None:
        self.at, self.mod, self.t, self.doomed = at, mod, 0, False

    def reset(self, seed=None) -> None:
        self.t = 0
        self.doomed = seed % self.mod == 0

    def step(self, obs) -> int:
        self.t += 1
        if self.doomed and self.t == self.at:
            os._exit(7)
        return 0


class DiePolicy(MultiAgentPolicy):
    """Kills its own process at step ``at`` if the agent's seed % ``mod`` == 0 (run it in a worker)."""

    def __init__(self, env_info, at: int = 2, mod: int = 1) -> None:
        super().__init__(env_info)
        self.at, self.mod = at, mod

    def agent_policy(self, agent_id):
        return _Dying(self.at, self.mod)


class SlowPolicy(MultiAgentPolicy):
    """Sleeps ``ms`` milliseconds on every ``every``-th step (only agent ``agent``, if given),
    then plays action 1."""

    def __init__(self, env_info, ms: float = 50, every: int = 1, agent: int = -1) -> None:
        super().__init__(env_info)
        self.ms, self.every, self.agent = ms, every, agent

    def agent_policy(self, agent_id):
        def fn(t):
            if t % self.every == 0 and self.agent in (-1, agent_id):
                time.sleep(self.ms / 1000)
            return 1

        return _Counting(fn)


class MainOnlyPolicy(MultiAgentPolicy):
    """Holds a lock (cannot be pickled) and says it must stay in the main process."""

    worker_safe = False

    def __init__(self, env_info) -> None:
        super().__init__(env_info)
        self.lock = threading.Lock()

    def agent_policy(self, agent_id):
        return _Counting(lambda t: (t + agent_id) % 5)


class HangPolicy(MultiAgentPolicy):
    """Never returns from step ``at`` on agent ``agent`` (a pure-Python busy loop)."""

    def __init__(self, env_info, at: int = 2, agent: int = 0) -> None:
        super().__init__(env_info)
        self.at, self.agent = at, agent

    def agent_policy(self, agent_id):
        def fn(t):
            while agent_id == self.agent and t >= self.at:
                pass
            return 1

        return _Counting(fn)


class BoxPolicy(MultiAgentPolicy):
    """Continuous actions: a float vector from the action space (for Box-action missions)."""

    def agent_policy(self, agent_id):
        space = self.env_info.action_space
        return _Counting(lambda t: np.full(space.shape, 0.25 * (agent_id + 1), dtype=space.dtype))


class _RankKiller(AgentPolicy):
    episodes = 0  # episodes started in this process

    def __init__(self, owner: KillRankPolicy, agent_id: int) -> None:
        self.owner, self.agent_id, self.t = owner, agent_id, 0

    def reset(self, seed=None) -> None:
        self.t = 0
        if self.agent_id == 0:
            _RankKiller.episodes += 1

    def step(self, obs) -> int:
        import json
        import signal

        o = self.owner
        self.t += 1
        doomed = (
            self.agent_id == 0
            and os.environ.get("PMI_RANK") == str(o.rank)
            and _RankKiller.episodes == 2
        )
        if doomed and self.t == 2:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # until rank 0 has written `count` episodes
                try:
                    note = json.loads(open(o.wait_for).read()).get("partial", "")
                    if int(note.split()[0]) >= int(o.count):
                        break
                except (OSError, ValueError, IndexError):
                    pass
                time.sleep(0.05)
            os.kill(os.getppid(), signal.SIGKILL)  # the rank; this episode worker follows it
            time.sleep(60)
        return 0


class KillRankPolicy(MultiAgentPolicy):
    """On MPI rank ``rank``, in the second episode of its episode worker, waits until the
    ``--output`` file ``wait_for`` lists ``count`` finished episodes, then SIGKILLs the rank."""

    def __init__(self, env_info, rank: int = 1, wait_for: str = "", count: int = 1) -> None:
        super().__init__(env_info)
        self.rank, self.wait_for, self.count = rank, wait_for, count

    def agent_policy(self, agent_id):
        return _RankKiller(self, agent_id)
