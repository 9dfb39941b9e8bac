"""Upstream-style (mettagrid) policies for the real-mission tests: -p class=upstream_helpers.X
with this directory on PYTHONPATH."""

from __future__ import annotations

from mettagrid.policy.policy import AgentPolicy, MultiAgentPolicy
from mettagrid.simulator import Action


class _Hang(AgentPolicy):
    def __init__(self, env_info, at: int) -> None:
        super().__init__(env_info)
        self.at, self.t = at, 0

    def step(self, obs):
        self.t += 1
        while self.t >= self.at:  # never returns
            pass
        return Action(name="noop")


class HangPolicy(MultiAgentPolicy):
    """Every agent stops returning at step ``at``."""

    def __init__(self, policy_env_info, device: str = "cpu", at: str = "3") -> None:
        super().__init__(policy_env_info, device=device)
        self.at = int(at)

    def agent_policy(self, agent_id: int) -> AgentPolicy:
        return _Hang(self._policy_env_info, self.at)


class _Crash(AgentPolicy):
    def step(self, obs):
        raise ValueError("boom from a real-mission policy")


class CrashPolicy(MultiAgentPolicy):
    def __init__(self, policy_env_info, device: str = "cpu") -> None:
        super().__init__(policy_env_info, device=device)

    def agent_policy(self, agent_id: int) -> AgentPolicy:
        return _Crash(self._policy_env_info)
