"""Action selection for all agents: a per-agent loop, or one batched forward pass.

Acting reads *policy snapshots*: immutable, versioned copies of every agent's online
parameters, stacked along a leading agent axis (the layout of
``torch.func.stack_module_state``). The background learner publishes a new snapshot by
swapping one reference, so the acting thread never sees a half-updated network.

Both actors consume each agent's acting RNG in the same way (``DQNAgent.explore``), so for
the same Q-values they return the same actions.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .learners.dqn import DQNAgent


@dataclass(frozen=True)
class PolicySnapshot:
    """Every agent's online parameters at learner version ``version``.

    ``stacked[name]`` has shape ``(num_agents, *param.shape)``; ``per_agent[i][name]`` are
    views of agent ``i``'s slice (no extra copy, built on first use by the loop actor).
    """

    version: int
    stacked: dict[str, torch.Tensor]

    @functools.cached_property
    def per_agent(self) -> tuple[dict[str, torch.Tensor], ...]:
        n = next(iter(self.stacked.values())).shape[0]
        return tuple({k: v[i] for k, v in self.stacked.items()} for i in range(n))


@torch.no_grad()
def make_snapshot(agents: list[DQNAgent], version: int) -> PolicySnapshot:
    """Copy the agents' current online parameters into a new snapshot.

    Same result as ``torch.func.stack_module_state`` (detached), with one ``torch.stack``
    per parameter name and no module traversal: the learner does this after every round.
    """
    named = [a.named_params for a in agents]
    return PolicySnapshot(
        version,
        {name: torch.stack([n[k][1] for n in named]) for k, (name, _) in enumerate(named[0])},
    )


def _linear_layers(agent: DQNAgent) -> list[tuple[str, bool]]:
    """QNetwork's linear layers in order, with whether a ReLU follows each."""
    mods = list(agent.online.net)
    return [
        (f"net.{i}", i + 1 < len(mods) and isinstance(mods[i + 1], nn.ReLU))
        for i, m in enumerate(mods)
        if isinstance(m, nn.Linear)
    ]


def _as_float(obs: np.ndarray, device: torch.device) -> torch.Tensor:
    """Observations as float32 on the agents' device (one host-to-device copy per step)."""
    return torch.as_tensor(obs).to(device, torch.float32)


class LoopActor:
    """The reference: one agent after another, a forward pass only when acting greedily."""

    def __init__(self, agents: list[DQNAgent]):
        self.agents = agents
        self.device = agents[0].device
        self._layers = _linear_layers(agents[0])

    @torch.no_grad()
    def q_values(self, obs: np.ndarray, snapshot: PolicySnapshot | None) -> torch.Tensor:
        x = _as_float(obs, self.device)
        return torch.stack([self._q(i, x[i], snapshot) for i in range(len(self.agents))])

    def _q(self, i: int, x: torch.Tensor, snapshot: PolicySnapshot | None) -> torch.Tensor:
        if snapshot is None:  # live parameters (synchronous mode only)
            return self.agents[i].online(x)
        # The snapshot's tensors through the same F.linear calls as QNetwork.forward (so the
        # result is bit-identical), never through the live modules a learner thread trains.
        p = snapshot.per_agent[i]
        for name, relu in self._layers:
            x = F.linear(x, p[name + ".weight"], p[name + ".bias"])
            if relu:
                x = torch.relu(x)
        return x

    @torch.no_grad()
    def act(self, obs: np.ndarray, epsilon: float, snapshot: PolicySnapshot | None) -> np.ndarray:
        actions = np.empty(len(self.agents), dtype=np.int64)
        x = None
        for i, agent in enumerate(self.agents):
            a = agent.explore(epsilon)
            if a is None:
                if x is None:
                    x = _as_float(obs, self.device)
                a = int(self._q(i, x[i], snapshot).argmax())
            actions[i] = a
        return actions

    @torch.no_grad()
    def greedy(self, obs: np.ndarray, snapshot: PolicySnapshot | None) -> np.ndarray:
        return self.q_values(obs, snapshot).argmax(dim=1).cpu().numpy()


class BatchedActor:
    """All agents' Q-values in one forward pass over their independent (stacked) parameters.

    ``method="bmm"`` runs the MLP as batched matrix products (``baddbmm``) over the agent
    axis; ``method="vmap"`` maps ``functional_call`` over the stacked parameters with
    ``torch.vmap`` and works for any network. Both give the same actions as ``LoopActor``;
    ``bmm`` is the default because it measured several times faster for these small nets.
    """

    def __init__(self, agents: list[DQNAgent], method: str = "bmm"):
        if method not in ("bmm", "vmap"):
            raise ValueError(f"method must be 'bmm' or 'vmap', got {method!r}")
        self.agents = agents
        self.method = method
        self.device = agents[0].device
        template = copy.deepcopy(agents[0].online).to("meta")
        self._vmapped = torch.vmap(lambda p, x: functional_call(template, p, (x,)))
        self._layers = _linear_layers(agents[0])

    @torch.no_grad()
    def q_values(self, obs: np.ndarray, snapshot: PolicySnapshot) -> torch.Tensor:
        x = _as_float(obs, self.device)
        if self.method == "vmap":
            return self._vmapped(snapshot.stacked, x)
        h = x[:, None, :]  # (N, 1, in)
        p = snapshot.stacked
        for name, relu in self._layers:
            h = torch.baddbmm(p[name + ".bias"][:, None, :], h, p[name + ".weight"].transpose(1, 2))
            if relu:
                h = torch.relu(h)
        return h[:, 0, :]

    def act(self, obs: np.ndarray, epsilon: float, snapshot: PolicySnapshot) -> np.ndarray:
        q = self.q_values(obs, snapshot)
        greedy = q.argmax(dim=1).tolist()
        actions = np.empty(len(self.agents), dtype=np.int64)
        for i, agent in enumerate(self.agents):
            a = agent.explore(epsilon)  # same RNG draws, in the same order, as LoopActor
            actions[i] = greedy[i] if a is None else a
        return actions

    def greedy(self, obs: np.ndarray, snapshot: PolicySnapshot) -> np.ndarray:
        return self.q_values(obs, snapshot).argmax(dim=1).cpu().numpy()
