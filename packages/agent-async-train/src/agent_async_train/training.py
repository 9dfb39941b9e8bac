"""Training executors: one "round" = one gradient update for every agent, on its own buffer.

The algorithm (``DQNAgent.train_step``) is the same everywhere; these classes only decide
how a round's independent per-agent updates are executed:

* ``SerialTrainer``   one agent after another (the reference).
* ``ThreadedTrainer`` one task per agent on a thread pool; torch releases the GIL inside
  kernels, but for small MLPs the Python between kernels dominates, so on CPU this is
  usually *slower* than serial (kept for large networks and for measurement).
* ``BatchedTrainer``  all agents in one batched forward/backward: parameters are stacked
  (differentiably) along an agent axis, the MLP runs as ``baddbmm``, the summed per-agent
  losses are backpropagated (each agent's gradient depends only on its own loss), then each
  agent's own gradient clipping and own optimiser step run. Mathematically identical to
  the serial round; it measured fastest on CPU, so ``parallel_training`` uses it by default.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.adam import adam

from parallel_core.pools import make_executor

from .learners.dqn import DQNAgent


class SerialTrainer:
    """Reference executor: ``agent.train_step()`` for each agent in order."""

    def __init__(self, agents: list[DQNAgent]):
        self.agents = agents

    def round(self) -> list[float]:
        return [a.train_step() for a in self.agents]

    def close(self) -> None:
        pass


class ThreadedTrainer(SerialTrainer):
    """Each agent's ``train_step`` as a task on a pool of ``workers`` threads.

    Every agent touches only its own network, optimiser, RNG and buffer, so the result is
    identical to ``SerialTrainer`` whatever the completion order.
    """

    def __init__(self, agents: list[DQNAgent], workers: int):
        super().__init__(agents)
        # parallel-core's thread pools adopt our torch thread count (it is per OS thread).
        self._pool = make_executor(max(1, workers), kind="thread")

    def round(self) -> list[float]:
        return list(self._pool.map(DQNAgent.train_step, self.agents))

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class BatchedTrainer(SerialTrainer):
    """One batched Double DQN update for all agents (see the module docstring)."""

    def __init__(self, agents: list[DQNAgent]):
        super().__init__(agents)
        cfg = agents[0].cfg
        self.gamma, self.delta, self.clip = cfg.gamma, cfg.huber_delta, cfg.grad_clip
        mods = list(agents[0].online.net)
        self._linear_idx = [i for i, m in enumerate(mods) if isinstance(m, nn.Linear)]
        self._target_cache: list = []
        self._target_key: tuple | None = None

    def _layers(self, agent: DQNAgent, target: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
        net = (agent.target if target else agent.online).net
        return [(net[i].weight, net[i].bias) for i in self._linear_idx]

    @staticmethod
    def _forward(layers: list[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor) -> torch.Tensor:
        h = x
        for k, (w, b) in enumerate(layers):
            h = torch.baddbmm(b[:, None, :], h, w.transpose(1, 2))
            if k + 1 < len(layers):
                h = torch.relu(h)
        return h

    def _stacked(self, target: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
        per_agent = [self._layers(a, target) for a in self.agents]
        return [
            (torch.stack([p[k][0] for p in per_agent]), torch.stack([p[k][1] for p in per_agent]))
            for k in range(len(self._linear_idx))
        ]

    def _clipped_grads(self, stacked_grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each agent's ``clip_grad_norm_``, on the stacked gradients, then split per agent."""
        n = stacked_grads[0].shape[0]
        norms = torch.stack(
            [torch.linalg.vector_norm(g.reshape(n, -1), dim=1) for g in stacked_grads]
        )
        total = torch.linalg.vector_norm(norms, dim=0)  # each agent's global gradient norm
        coef = (self.clip / (total + 1e-6)).clamp(max=1.0)
        # contiguous(): the gradient of a transposed weight comes back transposed, and the fused
        # Adam kernel needs gradients laid out like their parameters.
        per_param = [
            (g * coef.view(-1, *([1] * (g.dim() - 1)))).contiguous().unbind(0)
            for g in stacked_grads
        ]
        # agent-major order, matching _params()
        return [per_param[k][i] for i in range(n) for k in range(len(stacked_grads))]

    def _params(self) -> list[torch.Tensor]:
        return [p for a in self.agents for w, b in self._layers(a, target=False) for p in (w, b)]

    def _adam_step(self, grads: list[torch.Tensor]) -> None:
        """Every agent's own Adam step, run as one fused kernel over all agents' tensors.

        Each agent keeps its own optimiser and state (moments, step counts); Adam is
        elementwise, so one fused call over the concatenated lists equals N separate steps.
        The first call goes through each optimiser so that it creates its state.
        """
        params = self._params()
        if any(p not in a.optimizer.state for a in self.agents for p in a.online.parameters()):
            for p, g in zip(params, grads):
                p.grad = g
            for a in self.agents:
                a.optimizer.step()
                a.optimizer.zero_grad(set_to_none=True)
            return
        states = [a.optimizer.state[p] for a in self.agents for p in a.online.parameters()]
        group = self.agents[0].optimizer.param_groups[0]
        beta1, beta2 = group["betas"]
        adam(
            params,
            grads,
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [],
            [s["step"] for s in states],
            fused=True,
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
        )

    def _target_stack(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        # Target nets change only at syncs (every target_update updates): restack only then.
        key = tuple(a.updates // a.cfg.target_update for a in self.agents)
        if self._target_key != key:
            self._target_cache, self._target_key = self._stacked(target=True), key
        return self._target_cache

    def round(self) -> list[float]:
        agents = self.agents
        batches = [a.buffer.sample(a.cfg.batch_size, a.sample_rng) for a in agents]
        dev = agents[0].device  # minibatches are sampled on the host, moved once per round

        def stacked(field: str, dtype: torch.dtype | None = None) -> torch.Tensor:
            return torch.as_tensor(np.stack([getattr(b, field) for b in batches])).to(dev, dtype)

        obs, next_obs = stacked("obs", torch.float32), stacked("next_obs", torch.float32)
        actions, rewards = stacked("actions"), stacked("rewards")
        not_terminal = (~stacked("terminated")).to(torch.float32)
        online = self._stacked(target=False)  # differentiable stack of each agent's own leaves
        with torch.no_grad():
            detached = [(w.detach(), b.detach()) for w, b in online]
            next_action = self._forward(detached, next_obs).argmax(dim=2, keepdim=True)
            next_q = self._forward(self._target_stack(), next_obs).gather(2, next_action).squeeze(2)
            target = rewards + self.gamma * not_terminal * next_q
        q = self._forward(online, obs).gather(2, actions[..., None]).squeeze(2)
        losses = F.huber_loss(q, target, reduction="none", delta=self.delta).mean(dim=1)
        # Gradients w.r.t. the stacked parameters: agent i's slice only depends on losses[i].
        stacked = [t for wb in online for t in wb]
        grads = torch.autograd.grad(losses.sum(), stacked)
        self._adam_step(self._clipped_grads(list(grads)))
        for a in agents:
            a.updates += 1
            if a.updates % a.cfg.target_update == 0:
                a.target.load_state_dict(a.online.state_dict())
        return losses.detach().tolist()


def make_trainer(
    agents: list[DQNAgent], parallel: bool, backend: str, workers: int
) -> SerialTrainer:
    """The executor for ``parallel.parallel_training`` / ``parallel.training_backend``."""
    if not parallel:
        return SerialTrainer(agents)
    if backend == "threads":
        return ThreadedTrainer(agents, workers)
    if backend == "batched":
        return BatchedTrainer(agents)
    raise ValueError(f"unknown training backend {backend!r}; use 'batched' or 'threads'")
