"""The observation vector, with a documented fixed layout.

``obs = base | slot[early] | slot[mid] | slot[late]`` where each slot block is
``lifecycle | telemetry``. Blocks of disabled slots are all zeros; the telemetry part of
an empty (DORMANT) slot is zeros. :func:`slot_slice` gives the block of a slot.
"""

from __future__ import annotations

import math

import numpy as np

from ..kasmina.blueprints import BLUEPRINT_NAMES
from ..kasmina.host import SLOT_NAMES
from ..kasmina.slot import SeedSlot, SeedStage
from ..tamiyo.signals import HISTORY, TrainingSignals

BASE_FEATURES: tuple[str, ...] = (
    "epoch_frac",
    "train_loss",
    "val_loss",
    "train_acc",
    "val_acc",
    "train_loss_delta",
    "val_loss_delta",
    "val_acc_delta",
    "plateau",  # plateau epochs / 10
    "best_val_acc",
    "host_params_log",  # log10(1 + params) / 7
    "seed_params_ratio",  # seed params / host params
    *(f"acc_hist_{i}" for i in range(HISTORY)),
    *(f"loss_hist_{i}" for i in range(HISTORY)),
)

SLOT_LIFECYCLE: tuple[str, ...] = (
    "enabled",
    "occupied",
    *(f"stage_is_{s.name.lower()}" for s in SeedStage),
    *(f"blueprint_is_{b}" for b in BLUEPRINT_NAMES),
    "seed_params_ratio",
    "contribution",
)

SLOT_TELEMETRY: tuple[str, ...] = (
    "grad_norm",  # log10(1 + norm)
    "grad_health",
    "vanishing",
    "exploding",
    "epochs_in_stage",  # / 10
    "accuracy",
    "accuracy_delta",
    "stage",  # stage code / 6
    "alpha",
    "progress",
)

SLOT_BLOCK = len(SLOT_LIFECYCLE) + len(SLOT_TELEMETRY)
OBS_DIM = len(BASE_FEATURES) + len(SLOT_NAMES) * SLOT_BLOCK


def slot_slice(name: str) -> slice:
    """The slice of the observation that belongs to slot ``name``."""
    k = SLOT_NAMES.index(name)
    start = len(BASE_FEATURES) + k * SLOT_BLOCK
    return slice(start, start + SLOT_BLOCK)


def feature_names() -> list[str]:
    """Every observation entry's name, in order (``slot.<name>.<feature>`` for slot blocks)."""
    names = list(BASE_FEATURES)
    for slot in SLOT_NAMES:
        names += [f"slot.{slot}.{f}" for f in SLOT_LIFECYCLE + SLOT_TELEMETRY]
    return names


def _pad(history: list[float], fill: float) -> list[float]:
    return [fill] * (HISTORY - len(history)) + list(history)


def base_features(sig: TrainingSignals) -> np.ndarray:
    host = max(sig.host_params, 1)
    vec = [
        sig.epoch / max(sig.max_epochs, 1),
        sig.train_loss,
        sig.val_loss,
        sig.train_acc,
        sig.val_acc,
        sig.train_loss_delta,
        sig.val_loss_delta,
        sig.val_acc_delta,
        sig.plateau_epochs / 10.0,
        sig.best_val_acc,
        math.log10(1 + sig.host_params) / 7.0,
        sig.seed_params / host,
        *_pad(sig.acc_history, 0.0),
        *_pad(sig.loss_history, sig.loss_history[0] if sig.loss_history else 0.0),
    ]
    return np.asarray(vec, dtype=np.float32)


def slot_features(slot: SeedSlot, enabled: bool, host_params: int) -> np.ndarray:
    """One slot's block: lifecycle then telemetry; zeros where there is nothing to report."""
    block = np.zeros(SLOT_BLOCK, dtype=np.float32)
    if not enabled:
        return block
    st = slot.state
    lc = np.zeros(len(SLOT_LIFECYCLE), dtype=np.float32)
    lc[0] = 1.0
    lc[2 + int(st.stage)] = 1.0
    if slot.seed is not None:
        lc[1] = 1.0
        lc[2 + len(SeedStage) + BLUEPRINT_NAMES.index(st.blueprint)] = 1.0
        lc[-2] = st.seed_params / max(host_params, 1)
        lc[-1] = st.telemetry.contribution
    block[: len(SLOT_LIFECYCLE)] = lc
    if slot.seed is not None:
        t = st.telemetry
        block[len(SLOT_LIFECYCLE) :] = (
            math.log10(1 + t.grad_norm),
            t.grad_health,
            float(t.vanishing),
            float(t.exploding),
            st.epochs_in_stage / 10.0,
            t.accuracy,
            t.accuracy_delta,
            int(st.stage) / 6.0,
            st.alpha,
            slot.progress(),
        )
    return block


def build_observation(
    signals: TrainingSignals, slots: dict[str, SeedSlot], enabled: tuple[str, ...]
) -> np.ndarray:
    """The full observation of one environment (float32, length :data:`OBS_DIM`)."""
    parts = [base_features(signals)]
    for name in SLOT_NAMES:
        parts.append(slot_features(slots[name], name in enabled, signals.host_params))
    obs = np.concatenate(parts)
    assert obs.shape == (OBS_DIM,)
    return obs
