"""Policy interfaces and the short-name registry.

A ``MultiAgentPolicy`` is built once per (process, mission) from its spec and hands out
one ``AgentPolicy`` per agent slot. Agent policies keep per-agent state (an RNG stream,
memory); ``reset(seed)`` starts a new episode with that agent's own seed, which is what
makes results independent of which process computed the action.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np


class PolicyError(ValueError):
    """A policy spec that cannot be parsed, resolved, built or given its data."""


@dataclass(frozen=True)
class PolicyEnvInfo:
    """What a policy may know about the mission it plays (picklable)."""

    mission: str
    observation_space: Any
    action_space: Any
    num_agents: int

    @property
    def num_actions(self) -> int:
        n = getattr(self.action_space, "n", None)
        if n is None:
            raise PolicyError(f"mission {self.mission!r} has a non-discrete action space")
        return int(n)


class AgentPolicy:
    """One agent's controller: ``step(obs) -> action``; ``reset(seed)`` between episodes."""

    def step(self, obs: np.ndarray) -> int:
        raise NotImplementedError

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode; ``seed`` is this agent's own stream (use it for any randomness)."""


class MultiAgentPolicy:
    """A policy that controls any number of agents.

    Subclasses take ``(env_info, **kwargs)``; ``kw.KEY=VALUE`` in a ``-p`` spec becomes
    a keyword argument. Set ``worker_safe = False`` for policies that must stay in the
    main process (they then run in-process with one warning). ``step_batch`` is optional:
    if a subclass defines it, agents of this policy that share a process are stepped
    with one call (e.g. one batched forward pass).
    """

    worker_safe: ClassVar[bool] = True

    def __init__(self, env_info: PolicyEnvInfo, **kwargs: Any) -> None:
        if kwargs:
            raise PolicyError(
                f"{type(self).__name__} takes no options, got {', '.join('kw.' + k for k in kwargs)}"
            )
        self.env_info = env_info

    def agent_policy(self, agent_id: int) -> AgentPolicy:
        raise NotImplementedError

    def load_policy_data(self, path: str | Path) -> None:
        raise PolicyError(f"{type(self).__name__} takes no data file (got data={path})")

    # Optional batched stepping: ``step_batch(agents, obs) -> actions`` where ``agents``
    # are AgentPolicy objects this policy created and ``obs`` is stacked (n, ...).
    step_batch = None


def load_policy_data(path: str | Path) -> dict[str, Any]:
    """Read a policy data file: a torch checkpoint (``.pt``/``.pth``) or numpy ``.npz``."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise PolicyError(f"policy data file {path} does not exist")
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    import torch  # lazily: only policies with torch checkpoints pay for the import

    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PolicyError(f"cannot read policy data {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(data, dict):
        raise PolicyError(f"policy data {path} must hold a dict, got {type(data).__name__}")
    return data


# short name -> "module:Class" (strings, so torch is imported only if mlp is used)
_REGISTRY: dict[str, str | type] = {
    "random": "cogames_parallel.policies.builtin:RandomPolicy",
    "noop": "cogames_parallel.policies.builtin:NoopPolicy",
    "greedy": "cogames_parallel.policies.builtin:GreedyPolicy",
    "scripted": "cogames_parallel.policies.builtin:GreedyPolicy",
    "busy": "cogames_parallel.policies.builtin:BusyPolicy",
    "mlp": "cogames_parallel.policies.mlp:MLPPolicy",
}


def register_policy(name: str, cls: str | type) -> None:
    """Register a short name for a policy class (or its ``module:Class`` path)."""
    _REGISTRY[name] = cls


def registered_policies() -> dict[str, str]:
    """Short name -> class path of every registered policy."""
    return {
        k: v if isinstance(v, str) else f"{v.__module__}:{v.__qualname__}"
        for k, v in _REGISTRY.items()
    }


def registry_entry(name: str) -> str | type | None:
    return _REGISTRY.get(name)
