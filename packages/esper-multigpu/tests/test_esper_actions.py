"""Action masks, masked distributions and factored log-probabilities."""

import math

import numpy as np
import pytest
import torch

from esper_multigpu.kasmina.host import MorphogeneticModel
from esper_multigpu.kasmina.slot import SeedStage
from esper_multigpu.simic.actions import OPS, action_masks, decode_action, encode_action
from esper_multigpu.simic.distributions import MaskedCategorical
from esper_multigpu.simic.network import factored_log_prob_entropy, sample_actions
from esper_multigpu.tolaria.env import Action


def model(enabled=("early", "mid", "late")):
    return MorphogeneticModel(1, 4, 8, width=8, enabled_slots=enabled)


def germ(m, slot):
    m.germinate(slot, "conv_light", "linear", 1, torch.Generator().manual_seed(0), 1e-3)


def test_masks_follow_slot_states():
    m = model(enabled=("early", "late"))
    mk = action_masks(dict(m.slots), m.enabled_slots)
    assert mk["op"].tolist() == [True, True, False, False]
    assert mk["slot_by_op"][OPS.index("GERMINATE")].tolist() == [True, False, True]  # mid disabled
    germ(m, "early")
    mk = action_masks(dict(m.slots), m.enabled_slots)
    # a seed in isolation has changed nothing yet: no CULL until it blends (or is stuck)
    assert mk["op"].tolist() == [True, True, False, False]
    assert mk["slot_by_op"][1].tolist() == [False, False, True]
    s = m.slots["early"]
    s.state.stage, s.state.epochs_in_stage = SeedStage.TRAINING, 1
    assert not action_masks(dict(m.slots), m.enabled_slots)["op"][2]
    s.state.epochs_in_stage = s.gates.min_training_epochs  # still TRAINING: G2 failed, stuck
    assert action_masks(dict(m.slots), m.enabled_slots)["slot_by_op"][2].tolist() == [
        True,
        False,
        False,
    ]
    # a measured seed: CULL is the mirror of G4, only when it does not help
    s.state.stage, s.state.epochs_in_stage = SeedStage.BLENDING, 0
    s.state.telemetry.contribution = 0.0  # blending: only a seed that hurts
    assert not action_masks(dict(m.slots), m.enabled_slots)["op"][2]
    s.state.telemetry.contribution = -0.01
    mk = action_masks(dict(m.slots), m.enabled_slots)
    assert mk["op"].tolist() == [True, True, True, False]
    assert mk["slot_by_op"][2].tolist() == [True, False, False]
    # the growth budget: no GERMINATE while max_seeds seeds are in the model
    assert not action_masks(dict(m.slots), m.enabled_slots, max_seeds=1)["op"][1]
    assert action_masks(dict(m.slots), m.enabled_slots, max_seeds=2)["slot_by_op"][1].tolist() == [
        False,
        False,
        True,
    ]
    # fossilise only once the G4 gate would pass
    s.state.stage, s.state.alpha, s.state.epochs_in_stage = SeedStage.PROBATIONARY, 1.0, 1
    s.state.telemetry.contribution = -0.1
    assert not action_masks(dict(m.slots), m.enabled_slots)["op"][3]
    s.state.telemetry.contribution = 0.0  # at alpha = 1, failing G4 is enough to cull
    assert action_masks(dict(m.slots), m.enabled_slots)["op"].tolist() == [True, True, True, False]
    assert not action_masks(dict(m.slots), m.enabled_slots)["blueprint"][0]  # no noop by default
    offered = action_masks(dict(m.slots), m.enabled_slots, blueprints=["noop", "conv_heavy"])
    assert offered["blueprint"].tolist() == [True, False, False, False, False, True]
    s.state.telemetry.contribution = 0.1
    mk = action_masks(dict(m.slots), m.enabled_slots)
    assert mk["op"][3] and mk["slot_by_op"][3].tolist() == [True, False, False]
    germ(m, "late")
    assert not action_masks(dict(m.slots), m.enabled_slots)["op"][1]  # nothing empty and enabled


def test_masked_categorical():
    logits = torch.tensor([[5.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[False, True, True, False]])
    d = MaskedCategorical(logits, mask)
    g = torch.Generator().manual_seed(0)
    samples = torch.stack([d.sample(g) for _ in range(200)])
    assert set(samples.flatten().tolist()) <= {1, 2}
    assert d.entropy().item() == pytest.approx(math.log(2))
    assert d.log_prob(torch.tensor([1])).item() == pytest.approx(math.log(0.5))
    assert d.probs[0, 0].item() == 0.0 and d.logits.dtype == torch.float32
    with pytest.raises(ValueError, match="at least one action"):
        MaskedCategorical(logits, torch.zeros_like(mask))
    half = MaskedCategorical(logits.half(), mask)
    assert half.log_probs.dtype == torch.float32


def test_factored_log_prob_ignores_irrelevant_heads():
    torch.manual_seed(0)
    logits = {
        "op": torch.randn(2, 4),
        "slot": torch.randn(2, 3),
        "blueprint": torch.randn(2, 6),
        "blend": torch.randn(2, 2),
    }
    masks = {
        "op": torch.ones(2, 4, dtype=torch.bool),
        "slot": torch.ones(2, 3, dtype=torch.bool),
        "blueprint": torch.ones(2, 6, dtype=torch.bool),
        "blend": torch.ones(2, 2, dtype=torch.bool),
    }
    actions = torch.tensor([[0, 2, 5, 1], [1, 2, 5, 1]])  # WAIT, GERMINATE
    logp, ent = factored_log_prob_entropy(logits, masks, actions)
    lsm = {k: torch.log_softmax(v, -1) for k, v in logits.items()}
    assert logp[0].item() == pytest.approx(lsm["op"][0, 0].item())
    expect = lsm["op"][1, 1] + lsm["slot"][1, 2] + lsm["blueprint"][1, 5] + lsm["blend"][1, 1]
    assert logp[1].item() == pytest.approx(expect.item())
    assert ent[0].item() == pytest.approx(
        MaskedCategorical(logits["op"][:1], masks["op"][:1]).entropy().item()
    )


def test_sampling_respects_conditional_slot_masks():
    n = 64
    logits = {
        "op": torch.zeros(n, 4),
        "slot": torch.zeros(n, 3),
        "blueprint": torch.zeros(n, 6),
        "blend": torch.zeros(n, 2),
    }
    slot_by_op = torch.zeros(n, 4, 3, dtype=torch.bool)
    slot_by_op[:, 0] = True
    slot_by_op[:, 1, 2] = True  # germinate only into late
    slot_by_op[:, 2, 0] = True  # cull only early
    masks = {
        "op": torch.tensor([True, True, True, False]).expand(n, 4),
        "slot_by_op": slot_by_op,
        "blueprint": torch.ones(n, 6, dtype=torch.bool),
        "blend": torch.ones(n, 2, dtype=torch.bool),
    }
    acts, used = sample_actions(logits, masks, torch.Generator().manual_seed(1))
    assert (acts[:, 0] != 3).all()
    assert (acts[acts[:, 0] == 1, 1] == 2).all() and (acts[acts[:, 0] == 2, 1] == 0).all()
    assert torch.equal(used, slot_by_op[torch.arange(n), acts[:, 0]])


def test_encode_decode_roundtrip():
    for a in (
        Action("WAIT"),
        Action("GERMINATE", "mid", "attention", "sigmoid"),
        Action("CULL", "late"),
        Action("FOSSILIZE", "early"),
    ):
        b = decode_action(*encode_action(a))
        assert (b.op, b.slot) == (a.op, a.slot)
        if a.op == "GERMINATE":
            assert (b.blueprint, b.blend) == (a.blueprint, a.blend)
    assert np.array_equal(
        action_masks(dict(model().slots), ("early",))["slot_by_op"][1], [True, False, False]
    )
