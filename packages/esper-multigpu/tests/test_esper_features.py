"""Observation layout: documented dimension, per-slot slices in early/mid/late order, zero padding."""

import numpy as np
import torch

from esper_multigpu.kasmina.host import SLOT_NAMES, MorphogeneticModel
from esper_multigpu.kasmina.slot import SeedStage
from esper_multigpu.simic.features import (
    BASE_FEATURES,
    OBS_DIM,
    SLOT_BLOCK,
    SLOT_LIFECYCLE,
    SLOT_TELEMETRY,
    build_observation,
    feature_names,
    slot_slice,
)
from esper_multigpu.tamiyo.signals import TrainingSignals


def test_documented_dimension():
    # docs/esper-multigpu.md: 22 base + 3 slots x (17 lifecycle + 10 telemetry) = 103
    assert len(BASE_FEATURES) == 22
    assert len(SLOT_LIFECYCLE) == 17 and len(SLOT_TELEMETRY) == 10
    assert SLOT_BLOCK == 27 and OBS_DIM == 103 == len(feature_names())
    assert [slot_slice(s).start for s in SLOT_NAMES] == [22, 49, 76]
    assert slot_slice("late").stop == OBS_DIM


def signals():
    s = TrainingSignals(max_epochs=10)
    s.host_params = 1000
    s.update(1, 1.5, 0.4, 1.4, 0.45)
    s.update(2, 1.0, 0.6, 1.1, 0.55)
    return s


def test_each_slot_slice_belongs_to_its_slot():
    m = MorphogeneticModel(1, 4, 8, width=8, enabled_slots=("early", "mid"))
    m.germinate("early", "conv_light", "linear", 1, torch.Generator().manual_seed(0), 1e-3)
    early = m.slots["early"]
    early.state.stage = SeedStage.BLENDING
    early.state.alpha = 0.5
    early.state.epochs_in_stage = 3
    t = early.state.telemetry
    t.grad_norm, t.grad_health, t.vanishing, t.exploding = 9.0, 0.75, False, True
    t.accuracy, t.accuracy_delta, t.contribution = 0.6, 0.02, 0.04
    obs = build_observation(signals(), dict(m.slots), m.enabled_slots)
    names = feature_names()
    e = dict(zip(names[slot_slice("early")], obs[slot_slice("early")]))
    assert e["slot.early.enabled"] == 1 and e["slot.early.occupied"] == 1
    assert e["slot.early.stage_is_blending"] == 1 and e["slot.early.blueprint_is_conv_light"] == 1
    assert e["slot.early.grad_norm"] == np.float32(1.0)  # log10(1 + 9)
    assert e["slot.early.grad_health"] == np.float32(0.75) and e["slot.early.exploding"] == 1
    assert e["slot.early.alpha"] == np.float32(0.5) and e[
        "slot.early.epochs_in_stage"
    ] == np.float32(0.3)
    assert e["slot.early.accuracy"] == np.float32(0.6) and e[
        "slot.early.contribution"
    ] == np.float32(0.04)
    assert e["slot.early.stage"] == np.float32(3 / 6)
    # mid: enabled but empty -> enabled flag + DORMANT one-hot, telemetry zero-padded
    mid = obs[slot_slice("mid")]
    assert mid[0] == 1 and mid[2 + int(SeedStage.DORMANT)] == 1 and mid.sum() == 2
    # late: disabled -> all zeros
    assert not obs[slot_slice("late")].any()
    # changing only early's telemetry changes only early's slice
    t.grad_health = 0.25
    obs2 = build_observation(signals(), dict(m.slots), m.enabled_slots)
    changed = np.flatnonzero(obs != obs2)
    assert len(changed) == 1 and slot_slice("early").start <= changed[0] < slot_slice("early").stop
    # the same seed in 'late' lands in late's slice, not early's
    m3 = MorphogeneticModel(1, 4, 8, width=8)
    m3.germinate("late", "conv_light", "linear", 1, torch.Generator().manual_seed(0), 1e-3)
    obs3 = build_observation(signals(), dict(m3.slots), m3.enabled_slots)
    assert obs3[slot_slice("late")][1] == 1 and obs3[slot_slice("early")][1] == 0


def test_base_features_and_histories():
    obs = build_observation(signals(), dict(MorphogeneticModel(1, 4, 8, width=8).slots), SLOT_NAMES)
    base = dict(zip(BASE_FEATURES, obs[: len(BASE_FEATURES)]))
    assert base["epoch_frac"] == np.float32(0.2) and base["val_acc"] == np.float32(0.55)
    assert base["val_acc_delta"] == np.float32(0.55 - 0.45)
    assert [base[f"acc_hist_{i}"] for i in range(5)] == [
        0,
        0,
        0,
        np.float32(0.45),
        np.float32(0.55),
    ]
    assert obs.dtype == np.float32 and obs.shape == (OBS_DIM,)
