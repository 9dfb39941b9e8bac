"""Independent Double DQN learners: one network, target network, optimiser, buffer and RNGs each.

Nothing is shared between agents: ``check_independent`` proves it (distinct buffers,
parameter storages that do not overlap, distinct optimisers and generators).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..buffers import Batch, ThreadSafeBuffer
from ..config import DQNConfig


def skip_optimizer_dynamo_import() -> int:
    """Let torch's optimisers run without importing ``torch._dynamo`` (CLI processes only).

    ``Optimizer.add_param_group``, ``zero_grad``, ``state_dict`` and ``load_state_dict`` are
    wrapped by ``torch._compile._disable_dynamo``, which imports ``torch._dynamo`` on first
    call only to exclude them from ``torch.compile`` tracing: as many CPU seconds as
    importing torch itself, in every process that builds an optimiser. The CLI never
    compiles, so it pre-sets the wrapper's cache to the plain function (what the wrapper
    calls once dynamo is imported, minus the tracing guard). Returns how many methods were
    set; 0 (nothing changed) if dynamo is already imported or torch's wrapper differs.
    """
    import sys

    if "torch._dynamo" in sys.modules:
        return 0
    try:
        from torch._compile import _disable_dynamo

        probe = _disable_dynamo(lambda: None).__code__
    except (ImportError, AttributeError):  # another torch: leave it alone
        return 0
    count = 0
    for cls in (torch.optim.Optimizer, *torch.optim.Optimizer.__subclasses__()):
        for method in vars(cls).values():
            fn = getattr(method, "__wrapped__", None)
            if getattr(method, "__code__", None) is probe and fn is not None:
                if getattr(fn, "__dynamo_disable", None) is None:
                    fn.__dynamo_disable = fn
                    count += 1
    return count


def _seed_from(ss: np.random.SeedSequence) -> int:
    return int(ss.generate_state(1, dtype=np.uint64)[0] % (2**63 - 1))


class QNetwork(nn.Module):
    """A ReLU MLP ``obs -> Q(obs, .)``, initialised from a private ``torch.Generator``."""

    def __init__(
        self, obs_dim: int, num_actions: int, hidden, generator: torch.Generator | None = None
    ):
        super().__init__()
        dims = [obs_dim, *hidden, num_actions]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            # Built on the meta device so that nn.Linear's default init never touches the global RNG.
            layers.append(nn.Linear(a, b, device="meta"))
            if i < len(dims) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)
        if generator is not None:
            self.to_empty(device="cpu")
            self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        # Same distribution as nn.Linear's default (uniform +-1/sqrt(fan_in)), private RNG.
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                bound = 1.0 / math.sqrt(layer.in_features)
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


class DQNAgent:
    """One independent Double DQN learner.

    Args:
        agent_id: index of the agent in the game.
        obs_dim, num_actions: sizes from the game.
        cfg: hyper-parameters.
        seed_seq: this agent's own ``SeedSequence``; it is spawned into the init generator, the
            acting RNG (epsilon-greedy) and the sampling RNG (minibatches), so acting in one
            thread and learning in another never share a generator.
        buffer: this agent's own replay buffer.
    """

    def __init__(
        self,
        agent_id: int,
        obs_dim: int,
        num_actions: int,
        cfg: DQNConfig,
        seed_seq: np.random.SeedSequence,
        buffer: ThreadSafeBuffer,
        device: str | torch.device = "cpu",
    ):
        self.agent_id = agent_id
        self.device = torch.device(device)
        self.num_actions = num_actions
        self.cfg = cfg
        init_ss, act_ss, sample_ss = seed_seq.spawn(3)
        self.generator = torch.Generator().manual_seed(_seed_from(init_ss))
        # Initialised on the CPU from the private generator, then moved: the same initial
        # weights on every device.
        self.online = QNetwork(obs_dim, num_actions, cfg.hidden, self.generator).to(self.device)
        self.target = copy.deepcopy(self.online)
        # The Parameter objects live as long as the agent (updates and loads are in place).
        self.named_params = list(self.online.named_parameters())
        self.target.requires_grad_(False)
        # The fused kernel is ~3x faster than the default per-tensor Adam for these small nets.
        self.optimizer = torch.optim.Adam(self.online.parameters(), lr=cfg.lr, fused=True)
        self.act_rng = np.random.default_rng(act_ss)
        self.sample_rng = np.random.default_rng(sample_ss)
        self.buffer = buffer
        self.updates = 0

    # -- acting -----------------------------------------------------------------------
    def explore(self, epsilon: float) -> int | None:
        """Epsilon-greedy coin flip on the acting RNG: a random action, or None for greedy.

        The loop actor and the batched actor both call this once per agent and turn, so both
        consume the RNG identically and pick identical actions.
        """
        if self.act_rng.random() < epsilon:
            return int(self.act_rng.integers(self.num_actions))
        return None

    # -- learning ---------------------------------------------------------------------
    def loss(self, batch: Batch) -> torch.Tensor:
        """Double DQN Huber loss: the online net picks a', the target net evaluates it."""
        dev = self.device
        obs = torch.as_tensor(batch.obs).to(dev, torch.float32)
        next_obs = torch.as_tensor(batch.next_obs).to(dev, torch.float32)
        actions = torch.as_tensor(batch.actions).to(dev)
        rewards = torch.as_tensor(batch.rewards).to(dev)
        # Only a true terminal state stops bootstrapping; a time-limit truncation does not.
        not_terminal = torch.as_tensor(~batch.terminated).to(dev, torch.float32)
        with torch.no_grad():
            next_action = self.online(next_obs).argmax(dim=1, keepdim=True)
            next_q = self.target(next_obs).gather(1, next_action).squeeze(1)
            target = rewards + self.cfg.gamma * not_terminal * next_q
        q = self.online(obs).gather(1, actions[:, None]).squeeze(1)
        return F.huber_loss(q, target, delta=self.cfg.huber_delta)

    def train_step(self) -> float:
        """One gradient update on a minibatch from this agent's own buffer; returns the loss."""
        batch = self.buffer.sample(self.cfg.batch_size, self.sample_rng)
        loss = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.online.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.updates += 1
        if self.updates % self.cfg.target_update == 0:
            self.target.load_state_dict(self.online.state_dict())
        return float(loss.detach())

    # -- checkpoints ------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "online": copy.deepcopy(self.online.state_dict()),
            "target": copy.deepcopy(self.target.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "updates": self.updates,
            "generator": self.generator.get_state(),
            "act_rng": self.act_rng.bit_generator.state,
            "sample_rng": self.sample_rng.bit_generator.state,
            "buffer": self.buffer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = int(state["updates"])
        self.generator.set_state(state["generator"])
        self.act_rng.bit_generator.state = state["act_rng"]
        self.sample_rng.bit_generator.state = state["sample_rng"]
        self.buffer.load_state_dict(state["buffer"])


def make_agents(
    num_agents: int,
    obs_dim: int,
    num_actions: int,
    obs_dtype,
    cfg: DQNConfig,
    seed_seq: np.random.SeedSequence,
    device: str = "cpu",
) -> list[DQNAgent]:
    """``num_agents`` independent learners on ``device``, each with its own buffer and seed."""
    return [
        DQNAgent(
            i,
            obs_dim,
            num_actions,
            cfg,
            ss,
            ThreadSafeBuffer(cfg.buffer_size, obs_dim, obs_dtype),
            device,
        )
        for i, ss in enumerate(seed_seq.spawn(num_agents))
    ]


def _storage_span(t: torch.Tensor) -> tuple[int, int]:
    start = t.untyped_storage().data_ptr()
    return start, start + t.untyped_storage().nbytes()


def check_independent(agents: list[DQNAgent]) -> None:
    """Raise ``AssertionError`` if any two agents share a buffer, memory, optimiser or RNG."""
    spans: list[tuple[int, int, int]] = []
    for a in agents:
        for net in (a.online, a.target):
            for t in [*net.parameters(), *net.buffers()]:
                s, e = _storage_span(t)
                spans.append((s, e, a.agent_id))
        for group in a.optimizer.state.values():
            for t in group.values():
                if isinstance(t, torch.Tensor) and t.numel() > 1:
                    s, e = _storage_span(t)
                    spans.append((s, e, a.agent_id))
    spans.sort()
    reach, owner = -1, -1  # sweep: furthest end seen so far and whose memory it is
    for start, end, agent_id in spans:
        if start < reach and agent_id != owner:
            raise AssertionError(f"agents {owner} and {agent_id} share parameter/optimiser memory")
        if end > reach:
            reach, owner = end, agent_id
    for kind, get in (
        ("buffer", lambda a: a.buffer),
        ("optimizer", lambda a: a.optimizer),
        ("torch generator", lambda a: a.generator),
        ("acting RNG", lambda a: a.act_rng),
        ("sampling RNG", lambda a: a.sample_rng),
        ("online network", lambda a: a.online),
        ("target network", lambda a: a.target),
    ):
        ids = [id(get(a)) for a in agents]
        if len(set(ids)) != len(ids):
            raise AssertionError(f"two agents share one {kind}")
