"""The reward: accuracy *added* over the paired fixed host, minus a rent on parameters.

For the action taken after epoch t, observed after epoch t+1::

    gap[t] = val_acc[t] - shadow_acc[t]        the grown model above the paired fixed host
    r      = added_weight * (gap[t+1] - gap[t])
           - rent * log(1 + seed_params[t+1] / host_params)     (rent_shape "log")
           - rent * seed_params[t+1] / host_params              (rent_shape "linear")

The shadow is the host this episode would have had without any seed: forked from the
host (weights and optimizer state) at the first germination and trained on the same
batches (tolaria/env.py). Before the first germination the two are the same model, so
``gap = 0`` and waiting earns exactly 0. The shaping is a potential difference, so an
episode's return is ``added_weight * gap[T] - total rent``: what growth added to the
final accuracy, paid for by the parameters it cost. Nothing else earns reward. A seed
the host merely came to depend on (a large *ablation* contribution) earns nothing unless
the model is better than the fixed host; a useless seed earns at most 0 and pays rent;
fossilising or keeping a seed on trial earns nothing by itself.

The ``log`` rent (default) is gentle on big seeds: a seed 4x the size pays ~2.5x the
rent. The ``linear`` rent charges every parameter the same, so the cheaper of two seeds
that add the same accuracy earns clearly more (the learning benchmark uses it).
"""

from __future__ import annotations

import math

from ..config import RewardConfig

__all__ = ["RewardConfig", "compute_reward", "rent"]


def rent(seed_params: int, host_params: int, config: RewardConfig | None = None) -> float:
    """The per-epoch rent of ``seed_params`` added parameters."""
    config = config or RewardConfig()
    ratio = seed_params / max(host_params, 1)
    return config.rent * (ratio if config.rent_shape == "linear" else math.log1p(ratio))


def compute_reward(
    prev_gap: float,
    gap: float,
    seed_params: int,
    host_params: int,
    config: RewardConfig | None = None,
) -> tuple[float, dict[str, float]]:
    """The scalar reward and its named components (for telemetry).

    ``prev_gap`` / ``gap`` are the accuracy above the paired fixed host before and after
    the step; ``seed_params`` are the seed parameters alive (or fossilised) after it.
    """
    config = config or RewardConfig()
    parts = {
        "added": config.added_weight * (gap - prev_gap),
        "rent": -rent(seed_params, host_params, config),
    }
    return float(sum(parts.values())), parts
