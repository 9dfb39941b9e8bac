"""A torch MLP policy that loads its weights from a file, and a behaviour-cloning trainer.

Checkpoint format (``torch.save`` of a dict): ``{"format": "cogames-mlp-v1", "obs_dim",
"hidden", "n_actions", "state_dict"}``. ``cogames imitate`` writes one by cloning a
scripted policy, so ``-p class=mlp,data=FILE`` has a real network to load.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cogames_parallel.policies.base import (
    AgentPolicy,
    MultiAgentPolicy,
    PolicyEnvInfo,
    PolicyError,
    load_policy_data,
)

FORMAT = "cogames-mlp-v1"


def make_network(obs_dim: int, hidden: int, n_actions: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(obs_dim, hidden),
        nn.Tanh(),
        nn.Linear(hidden, hidden),
        nn.Tanh(),
        nn.Linear(hidden, n_actions),
    )


class _MLPAgent(AgentPolicy):
    def __init__(self, owner: MLPPolicy) -> None:
        self.owner = owner
        self.rng = np.random.default_rng(0)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)

    def step(self, obs) -> int:
        return int(self.owner.step_batch([self], np.asarray(obs)[None])[0])


class MLPPolicy(MultiAgentPolicy):
    """MLP over the flat observation; greedy argmax, or sampling with ``kw.sample=true``.

    Needs ``data=FILE`` (a checkpoint written by ``cogames imitate`` or :func:`save_mlp`).
    Agents of this policy in one process share a single batched forward pass.
    """

    def __init__(self, env_info: PolicyEnvInfo, sample: bool = False) -> None:
        super().__init__(env_info)
        # One intra-op thread: inference batches are tiny, and a fixed thread count keeps
        # float results identical whichever process runs the policy.
        torch.set_num_threads(1)
        self.sample = bool(sample)
        self.net: nn.Module | None = None
        self.obs_dim = int(np.prod(env_info.observation_space.shape))

    def load_policy_data(self, path: str | Path) -> None:
        data = load_policy_data(path)
        if data.get("format") != FORMAT:
            raise PolicyError(
                f"{path} is not a {FORMAT} checkpoint (write one with `cogames imitate`)"
            )
        if (
            int(data["obs_dim"]) != self.obs_dim
            or int(data["n_actions"]) != self.env_info.num_actions
        ):
            raise PolicyError(
                f"{path} was trained for obs_dim={data['obs_dim']}, n_actions={data['n_actions']}; "
                f"mission {self.env_info.mission!r} has obs_dim={self.obs_dim}, "
                f"n_actions={self.env_info.num_actions}"
            )
        net = make_network(self.obs_dim, int(data["hidden"]), int(data["n_actions"]))
        net.load_state_dict(data["state_dict"])
        self.net = net.eval()

    def agent_policy(self, agent_id: int) -> AgentPolicy:
        if self.net is None:
            raise PolicyError(
                "mlp needs weights: -p class=mlp,data=FILE (make one with `cogames imitate`)"
            )
        return _MLPAgent(self)

    def step_batch(self, agents: Sequence[AgentPolicy], obs: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.asarray(obs, dtype=np.float32).reshape(len(agents), -1))
        with torch.inference_mode():
            logits = self.net(x).double().numpy()
        if not self.sample:
            return logits.argmax(axis=1)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        # each agent samples from its own stream
        return np.array([a.rng.choice(p.shape[1], p=pi) for a, pi in zip(agents, p)])


def save_mlp(path: str | Path, net: nn.Module, obs_dim: int, hidden: int, n_actions: int) -> None:
    """Write a checkpoint atomically (a crash never leaves half a file)."""
    from parallel_core.io import atomic_write

    payload: dict[str, Any] = {
        "format": FORMAT,
        "obs_dim": obs_dim,
        "hidden": hidden,
        "n_actions": n_actions,
        "state_dict": {k: v.detach().clone() for k, v in net.state_dict().items()},
    }
    with atomic_write(path, mode="wb") as f:
        torch.save(payload, f)


def behaviour_clone(
    observations: np.ndarray,
    actions: np.ndarray,
    n_actions: int,
    hidden: int = 64,
    epochs: int = 30,
    seed: int = 0,
    lr: float = 3e-3,
) -> tuple[nn.Module, float]:
    """Fit an MLP to (observation, action) pairs with cross-entropy; returns (net, accuracy)."""
    torch.manual_seed(seed)
    x = torch.from_numpy(observations.astype(np.float32))
    y = torch.from_numpy(actions.astype(np.int64))
    net = make_network(x.shape[1], hidden, n_actions)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 256):
            idx = perm[i : i + 256]
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = float((net(x).argmax(1) == y).float().mean())
    return net.eval(), acc
