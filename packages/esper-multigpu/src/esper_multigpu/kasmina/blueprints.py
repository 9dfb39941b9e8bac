"""Blueprint registry: the small modules a slot can grow.

Every seed is *residual*: it computes a delta ``d(h)`` with the same shape as its input
feature map, and the slot adds ``alpha * d(h)`` to the host's features. The last layer of
each delta is zero-initialised, so a freshly germinated seed changes nothing until it
has learned something. Shapes are checked at germination with a dummy forward pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import BLUEPRINT_NAMES as _CONFIG_BLUEPRINTS


class BlueprintError(ValueError):
    """A blueprint that does not exist or does not fit the slot it was asked for."""


class NoopSeed(nn.Module):
    """No parameters, no change: the control blueprint."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(h)


class NormSeed(nn.Module):
    """A learned, zero-initialised affine map of the group-normalised features."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels, affine=False)
        self.scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.shift = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(h) * self.scale + self.shift


class AttentionSeed(nn.Module):
    """Multi-head self-attention over spatial positions.

    Feature maps larger than ``max_tokens`` positions are average-pooled first and the
    result upsampled back, so attention costs O(max_tokens^2), not O((HW)^2), in the
    high-resolution ``early`` slot.
    """

    def __init__(self, channels: int, heads: int = 4, max_tokens: int = 64):
        super().__init__()
        if channels % heads:
            raise BlueprintError(
                f"attention needs channels divisible by {heads} heads, got {channels}"
            )
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

        self.max_tokens = max_tokens

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = h.shape
        z = self.norm(h)
        stride = 1
        while (
            (hh // stride) * (ww // stride) > self.max_tokens
            and hh % (2 * stride) == 0
            and ww % (2 * stride) == 0
        ):
            stride *= 2
        if stride > 1:
            z = F.avg_pool2d(z, stride)
        ph, pw = z.shape[-2:]
        tokens = z.flatten(2).transpose(1, 2)  # (B, tokens, C)
        mixed, _ = self.attn(tokens, tokens, tokens, need_weights=False)
        out = self.out(mixed).transpose(1, 2).reshape(b, c, ph, pw)
        return F.interpolate(out, size=(hh, ww), mode="nearest") if stride > 1 else out


class DepthwiseSeed(nn.Module):
    """Depthwise 3x3 then pointwise 1x1 (a MobileNet block)."""

    def __init__(self, channels: int):
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.pointwise = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.pointwise.weight)
        nn.init.zeros_(self.pointwise.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.pointwise(torch.relu(self.depthwise(h)))


class ConvLightSeed(nn.Module):
    """One 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.relu(h))


class ConvHeavySeed(nn.Module):
    """Two 3x3 convolutions with a normalisation between them."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.norm(self.conv1(h))))


def _groups(channels: int) -> int:
    for g in (8, 4, 2):
        if channels % g == 0:
            return g
    return 1


#: name -> factory(channels) -> module; the order fixes the blueprint index used by the policy.
BLUEPRINTS: dict[str, Callable[[int], nn.Module]] = {
    "noop": lambda c: NoopSeed(),
    "norm": NormSeed,
    "attention": AttentionSeed,
    "depthwise": DepthwiseSeed,
    "conv_light": ConvLightSeed,
    "conv_heavy": ConvHeavySeed,
}
BLUEPRINT_NAMES: tuple[str, ...] = tuple(BLUEPRINTS)
assert BLUEPRINT_NAMES == _CONFIG_BLUEPRINTS, "config.BLUEPRINT_NAMES must list the registry in order"


def build_seed(
    name: str,
    channels: int,
    spatial: tuple[int, int],
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Build blueprint ``name`` for a slot with ``channels`` x ``spatial`` features, on the CPU.

    Parameters not zero-initialised by the blueprint are re-drawn from ``generator`` so
    germination is reproducible without touching torch's global RNG. Raises
    :class:`BlueprintError` when the blueprint is unknown or its output shape differs
    from its input (the germination shape check).
    """
    if name not in BLUEPRINTS:
        raise BlueprintError(f"unknown blueprint {name!r}; choose from {', '.join(BLUEPRINTS)}")
    module = BLUEPRINTS[name](channels)
    if generator is not None:
        reinit_(module, generator)
    probe = torch.zeros(2, channels, *spatial)
    with torch.no_grad():
        out = module(probe)
    if out.shape != probe.shape:
        raise BlueprintError(
            f"blueprint {name!r} maps {tuple(probe.shape[1:])} to {tuple(out.shape[1:])}; "
            "a seed must keep its slot's shape"
        )
    return module


def reinit_(module: nn.Module, generator: torch.Generator) -> None:
    """Redraw every non-zero weight matrix/kernel of ``module`` from ``generator`` (in place).

    Zero-initialised tensors (the residual output layers) and 1-d tensors (biases, norm
    affines) keep their constructor values, so the zero-delta property survives.
    """
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() < 2 or not torch.any(p != 0):
                continue
            fan_in = p[0].numel()
            bound = (6.0 / fan_in) ** 0.5 / 2**0.5  # kaiming-uniform with a=sqrt(5)-ish scale
            p.copy_(torch.empty(p.shape).uniform_(-bound, bound, generator=generator))
