"""The reward: accuracy progress, counterfactual credit for seeds, and a parameter rent.

For the action taken after epoch t, observed after epoch t+1::

    r = acc_weight  * (val_acc[t+1] - val_acc[t])
      + contrib_weight * sum over BLENDING/PROBATIONARY seeds of contribution_s[t+1]
      - rent * log(1 + seed_params / host_params)
      + fossilize_bonus * contribution_s      (when the action fossilised slot s)

``contribution_s`` is the counterfactual: validation accuracy minus the accuracy with
slot s's alpha forced to 0. A seed earns reward while it is on trial and measurably
helps, earns a one-off bonus when it is fossilised (its contribution at that moment),
and pays rent for its parameters every epoch, fossilised or not; culling a useless seed
stops the rent. Fossilised seeds are not credited again each epoch: the host co-adapts
with them, so their counterfactual keeps growing without any new decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class RewardConfig:
    acc_weight: float = 10.0
    contrib_weight: float = 5.0
    rent: float = 0.05
    fossilize_bonus: float = 5.0


def compute_reward(
    prev_val_acc: float,
    val_acc: float,
    contributions: dict[str, float],
    seed_params: int,
    host_params: int,
    fossilized_contribution: float | None = None,
    config: RewardConfig = RewardConfig(),
) -> tuple[float, dict[str, float]]:
    """The scalar reward and its named components (for telemetry)."""
    parts = {
        "accuracy": config.acc_weight * (val_acc - prev_val_acc),
        "contribution": config.contrib_weight * sum(contributions.values()),
        "rent": -config.rent * math.log1p(seed_params / max(host_params, 1)),
        "fossilize": config.fossilize_bonus * fossilized_contribution
        if fossilized_contribution is not None
        else 0.0,
    }
    return float(sum(parts.values())), parts
