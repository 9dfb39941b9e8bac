"""The recurrent actor-critic: an encoder, an LSTM over epochs, four action heads and a value head."""

from __future__ import annotations

import torch
from torch import nn

from .actions import HEAD_SIZES, OPS
from .distributions import MaskedCategorical


class RecurrentActorCritic(nn.Module):
    def __init__(self, obs_dim: int, hidden: int = 128):
        super().__init__()
        self.hidden = hidden
        self.encoder = nn.Sequential(nn.Linear(obs_dim, hidden), nn.Tanh())
        self.lstm = nn.LSTM(hidden, hidden)
        self.heads = nn.ModuleDict({k: nn.Linear(hidden, n) for k, n in HEAD_SIZES.items()})
        self.value = nn.Linear(hidden, 1)
        for head in self.heads.values():  # near-uniform initial policy
            nn.init.orthogonal_(head.weight, gain=0.01)
            nn.init.zeros_(head.bias)
        nn.init.orthogonal_(self.value.weight, gain=1.0)
        nn.init.zeros_(self.value.bias)

    def initial_state(self, batch: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.zeros(1, batch, self.hidden, device=device)
        return z, z.clone()

    def forward(self, obs: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        """``obs`` (T, B, D) -> logits per head (T, B, n), values (T, B), new LSTM state."""
        z = self.encoder(obs)
        out, state = self.lstm(z, state)
        logits = {k: head(out).float() for k, head in self.heads.items()}
        return logits, self.value(out).squeeze(-1).float(), state


def factored_log_prob_entropy(logits: dict, masks: dict, actions: torch.Tensor):
    """Joint log-prob and entropy of factored actions (float32).

    ``actions`` is (..., 4) = (op, slot, blueprint, blend); ``masks['slot']`` is the slot
    mask already chosen by each sampled op. Heads that the op ignores contribute neither
    log-prob nor entropy.
    """
    op = actions[..., 0]
    d_op = MaskedCategorical(logits["op"], masks["op"])
    d_slot = MaskedCategorical(logits["slot"], masks["slot"])
    d_bp = MaskedCategorical(logits["blueprint"], masks["blueprint"])
    d_blend = MaskedCategorical(logits["blend"], masks["blend"])
    uses_slot = (op != OPS.index("WAIT")).float()
    germ = (op == OPS.index("GERMINATE")).float()
    logp = (
        d_op.log_prob(op)
        + uses_slot * d_slot.log_prob(actions[..., 1])
        + germ * (d_bp.log_prob(actions[..., 2]) + d_blend.log_prob(actions[..., 3]))
    )
    entropy = (
        d_op.entropy() + uses_slot * d_slot.entropy() + germ * (d_bp.entropy() + d_blend.entropy())
    )
    return logp, entropy


@torch.no_grad()
def sample_actions(
    logits: dict, masks: dict, generator: torch.Generator | None, greedy: bool = False
):
    """Sample (B, 4) factored actions: op first, then the slot under that op's slot mask.

    ``masks`` holds (B, 4) ``op``, (B, 4, 3) ``slot_by_op``, (B, 6) ``blueprint`` and (B, 2)
    ``blend``. Returns the actions and the slot mask actually used (B, 3), which the
    buffer stores so the update recomputes exactly the same distribution.
    """
    d_op = MaskedCategorical(logits["op"], masks["op"])
    op = d_op.mode() if greedy else d_op.sample(generator)
    slot_mask = masks["slot_by_op"][torch.arange(len(op), device=op.device), op]
    picks = [op]
    for head, mask in (
        ("slot", slot_mask),
        ("blueprint", masks["blueprint"]),
        ("blend", masks["blend"]),
    ):
        d = MaskedCategorical(logits[head], mask)
        picks.append(d.mode() if greedy else d.sample(generator))
    return torch.stack(picks, dim=-1), slot_mask
