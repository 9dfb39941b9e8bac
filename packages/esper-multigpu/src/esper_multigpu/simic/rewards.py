"""The reward: accuracy progress, counterfactual credit for seeds, and a parameter rent.

For the action taken after epoch t, observed after epoch t+1::

    r = acc_weight     * (val_acc[t+1] - val_acc[t])
      + contrib_weight * (Phi[t+1] - Phi[t])                     counterfactual shaping
      + contrib_weight * contribution_s[t]   if the action fossilised slot s
      - rent * log(1 + seed_params / host_params)

``contribution_s`` is the counterfactual: validation accuracy minus the accuracy with
slot s's alpha forced to 0. ``Phi`` is the summed contribution of the seeds on trial
(BLENDING or PROBATIONARY). So a seed earns reward as its contribution grows while it is
blended in; culling a helpful seed gives that credit back, culling a harmful one earns
it; fossilising a seed keeps its credit (the bonus replaces its share of Phi). The
shaping term is a potential difference, so waiting with a seed on trial cannot farm
reward, and the sum over an episode is accuracy progress + the contributions banked by
fossilisation + the contributions still on trial - the rent. Fossilised seeds pay rent
for their parameters every epoch; culling a useless seed stops its rent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class RewardConfig:
    acc_weight: float = 1.0
    contrib_weight: float = 1.0
    rent: float = 0.01


def compute_reward(
    prev_val_acc: float,
    val_acc: float,
    prev_on_trial: float,
    on_trial: float,
    seed_params: int,
    host_params: int,
    fossilized_contribution: float = 0.0,
    config: RewardConfig = RewardConfig(),
) -> tuple[float, dict[str, float]]:
    """The scalar reward and its named components (for telemetry).

    ``prev_on_trial`` / ``on_trial`` are Phi before and after the step (summed
    contributions of BLENDING/PROBATIONARY seeds); ``fossilized_contribution`` is the
    contribution of the seeds the action fossilised (as measured when it was taken).
    """
    parts = {
        "accuracy": config.acc_weight * (val_acc - prev_val_acc),
        "contribution": config.contrib_weight * (on_trial - prev_on_trial),
        "fossilize": config.contrib_weight * fossilized_contribution,
        "rent": -config.rent * math.log1p(seed_params / max(host_params, 1)),
    }
    return float(sum(parts.values())), parts
