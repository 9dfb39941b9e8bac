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

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

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
        # Each pool thread adopts our torch thread count (it is per OS thread; see learner_thread).
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, workers),
            thread_name_prefix="train",
            initializer=torch.set_num_threads,
            initargs=(torch.get_num_threads(),),
        )

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

    def _clip_each(self, agents: list[DQNAgent]) -> None:
        """``clip_grad_norm_`` applied to each agent separately, with two fused kernels."""
        grads = [[p.grad for p in a.online.parameters()] for a in agents]
        flat = [g for gs in grads for g in gs]
        norms = torch.stack(torch._foreach_norm(flat)).view(len(agents), -1)
        total = torch.linalg.vector_norm(norms, dim=1)  # each agent's global grad norm
        coef = (self.clip / (total + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_(flat, [coef[i] for i, gs in enumerate(grads) for _ in gs])

    def _target_stack(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        # Target nets change only at syncs (every target_update updates): restack only then.
        key = tuple(a.updates // a.cfg.target_update for a in self.agents)
        if self._target_key != key:
            self._target_cache, self._target_key = self._stacked(target=True), key
        return self._target_cache

    def round(self) -> list[float]:
        agents = self.agents
        batches = [a.buffer.sample(a.cfg.batch_size, a.sample_rng) for a in agents]
        obs = torch.as_tensor(np.stack([b.obs for b in batches])).to(torch.float32)
        next_obs = torch.as_tensor(np.stack([b.next_obs for b in batches])).to(torch.float32)
        actions = torch.as_tensor(np.stack([b.actions for b in batches]))
        rewards = torch.as_tensor(np.stack([b.rewards for b in batches]))
        not_terminal = torch.as_tensor(~np.stack([b.terminated for b in batches])).to(torch.float32)
        online = self._stacked(target=False)  # differentiable stack of each agent's own leaves
        with torch.no_grad():
            detached = [(w.detach(), b.detach()) for w, b in online]
            next_action = self._forward(detached, next_obs).argmax(dim=2, keepdim=True)
            next_q = self._forward(self._target_stack(), next_obs).gather(2, next_action).squeeze(2)
            target = rewards + self.gamma * not_terminal * next_q
        q = self._forward(online, obs).gather(2, actions[..., None]).squeeze(2)
        losses = F.huber_loss(q, target, reduction="none", delta=self.delta).mean(dim=1)
        for a in agents:
            for p in a.online.parameters():
                p.grad = None
        losses.sum().backward()  # agent i's gradient only depends on losses[i]
        self._clip_each(agents)
        for a in agents:
            a.optimizer.step()
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
