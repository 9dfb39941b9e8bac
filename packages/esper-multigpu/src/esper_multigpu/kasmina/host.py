"""The host CNN and the morphogenetic model that threads three seed slots through it."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import SLOT_NAMES
from .slot import GATES, Gates, SeedSlot, SeedStage

__all__ = ["SLOT_NAMES", "HostCNN", "MorphogeneticModel", "init_host_"]


class HostCNN(nn.Module):
    """Three conv stages; the slots sit after each stage (full, 1/2 and 1/4 resolution)."""

    def __init__(self, in_channels: int, n_classes: int, image_size: int, width: int = 16):
        super().__init__()
        w = width
        self.stage1 = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()
        )
        self.stage2 = nn.Sequential(
            nn.Conv2d(w, 2 * w, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.stage3 = nn.Sequential(
            nn.Conv2d(2 * w, 4 * w, 3, padding=1, bias=False),
            nn.BatchNorm2d(4 * w),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(4 * w, n_classes)
        #: (channels, (H, W)) of the features each slot sees
        self.slot_shapes = {
            "early": (w, (image_size, image_size)),
            "mid": (2 * w, (image_size // 2, image_size // 2)),
            "late": (4 * w, (image_size // 4, image_size // 4)),
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The host alone (no slots): what the paired fixed host computes."""
        h = self.stage3(self.stage2(self.stage1(x)))
        return self.head(h.mean(dim=(2, 3)))


def init_host_(host: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise ``host`` in place from ``generator`` (kaiming-uniform weights, zero biases).

    In place, so a persistent per-environment model keeps its device allocations between
    episodes; from a private generator, so the draw does not depend on torch's global RNG.
    """
    with torch.no_grad():
        for m in host.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                fan_in = m.weight[0].numel()
                bound = (
                    math.sqrt(6.0 / fan_in) / math.sqrt(2.0)
                    if isinstance(m, nn.Linear)
                    else math.sqrt(6.0 / fan_in)
                )
                m.weight.copy_(
                    torch.empty(m.weight.shape).uniform_(-bound, bound, generator=generator)
                )
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.weight.fill_(1.0)
                m.bias.zero_()


class MorphogeneticModel(nn.Module):
    """A :class:`HostCNN` with a :class:`SeedSlot` after each of its three stages.

    ``forward(x, alpha_override={"mid": 0.0})`` evaluates the model as if the ``mid``
    seed were switched off, without changing any module state (the counterfactual).
    All three slots exist; only ``enabled_slots`` may germinate.
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        image_size: int,
        width: int = 16,
        enabled_slots: tuple[str, ...] = SLOT_NAMES,
        gates: Gates = GATES,
    ):
        super().__init__()
        unknown = [s for s in enabled_slots if s not in SLOT_NAMES]
        if unknown:
            raise ValueError(f"unknown slot(s) {unknown}; choose from {', '.join(SLOT_NAMES)}")
        if image_size % 4:
            raise ValueError(f"image size must be divisible by 4, got {image_size}")
        # module construction draws from torch's global RNG; fork it so we leave it untouched
        with torch.random.fork_rng(devices=[]):
            self.host = HostCNN(in_channels, n_classes, image_size, width)
        self.slots = nn.ModuleDict(
            {name: SeedSlot(name, *self.host.slot_shapes[name], gates=gates) for name in SLOT_NAMES}
        )
        self.enabled_slots = tuple(s for s in SLOT_NAMES if s in enabled_slots)

    def forward(
        self, x: torch.Tensor, alpha_override: dict[str, float] | None = None
    ) -> torch.Tensor:
        ov = alpha_override or {}
        h = self.host.stage1(x)
        h = self.slots["early"](h, ov.get("early"))
        h = self.host.stage2(h)
        h = self.slots["mid"](h, ov.get("mid"))
        h = self.host.stage3(h)
        h = self.slots["late"](h, ov.get("late"))
        return self.host.head(h.mean(dim=(2, 3)))

    def forward_many(
        self, x: torch.Tensor, overrides: list[dict[str, float]]
    ) -> list[torch.Tensor]:
        """``[self(x, alpha_override=o) for o in overrides]`` with each shared prefix run
        once: variants that agree on every slot up to a point share the stages before it
        (the same operations on the same inputs, so the same values bit for bit). The
        counterfactual of a ``late`` seed then costs its slot and the head, not a pass."""
        steps = (self.host.stage1, "early", self.host.stage2, "mid", self.host.stage3, "late")
        out: list[torch.Tensor | None] = [None] * len(overrides)

        def run(h: torch.Tensor, i: int, group: list[int]) -> None:
            while i < len(steps) and not isinstance(steps[i], str):
                h = steps[i](h)
                i += 1
            if i == len(steps):
                logits = self.host.head(h.mean(dim=(2, 3)))
                for k in group:
                    out[k] = logits
                return
            by_alpha: dict[float | None, list[int]] = {}
            for k in group:
                by_alpha.setdefault(overrides[k].get(steps[i]), []).append(k)
            for alpha, sub in by_alpha.items():
                run(self.slots[steps[i]](h, alpha), i + 1, sub)

        run(x, 0, list(range(len(overrides))))
        return out

    @property
    def device(self) -> torch.device:
        return self.host.head.weight.device

    def host_parameters(self) -> list[nn.Parameter]:
        return list(self.host.parameters())

    def host_param_count(self) -> int:
        return sum(p.numel() for p in self.host.parameters())

    def seed_count(self) -> int:
        """Seeds in the model now: live or fossilised."""
        return sum(1 for s in self.slots.values() if s.is_live or s.stage == SeedStage.FOSSILIZED)

    def seed_param_count(self) -> int:
        return sum(s.state.seed_params for s in self.slots.values() if s.seed is not None)

    def reset_(self, generator: torch.Generator) -> None:
        """A fresh host (same allocations) and empty slots, for the next episode."""
        init_host_(self.host, generator)
        for slot in self.slots.values():
            slot.clear()

    def germinate(
        self,
        slot: str,
        blueprint: str,
        blend: str,
        epoch: int,
        generator: torch.Generator,
        lr: float,
    ) -> dict:
        if slot not in self.enabled_slots:
            raise ValueError(
                f"slot {slot!r} is not enabled (enabled: {', '.join(self.enabled_slots)})"
            )
        return self.slots[slot].germinate(
            blueprint, blend, epoch, generator, lr, device=self.device
        )

    def stages(self) -> dict[str, SeedStage]:
        return {name: slot.stage for name, slot in self.slots.items()}
