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


class _Grouped(AgentPolicy):
    """Deterministic; steps every agent of its policy in one ``step_group`` call."""

    def __init__(self, env_info, log: str | None) -> None:
        super().__init__(env_info)
        self.log, self.t = log, 0

    def _act(self, agent_id: int, obs) -> Action:
        names = ("noop", "move_east", "move_south", "move_west", "move_north")
        return Action(name=names[(agent_id + self.t + len(obs.tokens)) % len(names)])

    def step(self, obs):
        self.t += 1
        return self._act(obs.agent_id, obs)

    def can_step_group(self, policies) -> bool:
        return True

    def step_group(self, observations):
        import os

        self.t += 1
        if self.log:
            with open(self.log, "a") as f:
                f.write(f"{os.getpid()} {len(observations)}\n")
        return [self._act(i, obs) for i, obs in observations]


class GroupPolicy(MultiAgentPolicy):
    """Upstream's batched interface (``can_step_group``/``step_group``); ``kw.log=FILE``
    records one line (pid, agents) per call."""

    def __init__(self, policy_env_info, device: str = "cpu", log: str | None = None) -> None:
        super().__init__(policy_env_info, device=device)
        self.handle = None
        self.log = log

    def agent_policy(self, agent_id: int) -> AgentPolicy:
        if self.handle is None:  # one handle for all agents: the group shares its clock
            self.handle = _Grouped(self._policy_env_info, self.log)
        return self.handle


class _DieOnce(AgentPolicy):
    def __init__(self, env_info, flag: str) -> None:
        super().__init__(env_info)
        self.flag, self.t = flag, 0

    def step(self, obs):
        import os

        self.t += 1
        if self.t == 3:
            try:
                os.close(os.open(self.flag, os.O_CREAT | os.O_EXCL))  # only the first one
            except FileExistsError:
                pass
            else:
                os._exit(7)
        return Action(name="noop")


class DieOncePolicy(MultiAgentPolicy):
    """The first process to reach step 3 exits with code 7 (``kw.flag=FILE`` marks it done)."""

    def __init__(self, policy_env_info, device: str = "cpu", flag: str = "") -> None:
        super().__init__(policy_env_info, device=device)
        self.flag = flag

    def agent_policy(self, agent_id: int) -> AgentPolicy:
        return _DieOnce(self._policy_env_info, self.flag)
