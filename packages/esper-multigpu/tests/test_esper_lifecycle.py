"""Seed lifecycle: transitions, gates, straight-through isolation, per-slot optimizers, blueprints."""

import math

import pytest
import torch

from esper_multigpu.kasmina.blueprints import BLUEPRINTS, BlueprintError, build_seed
from esper_multigpu.kasmina.host import SLOT_NAMES, MorphogeneticModel
from esper_multigpu.kasmina.slot import GATES, GateError, SeedStage, blend_alpha


def model(**kw):
    m = MorphogeneticModel(in_channels=1, n_classes=4, image_size=8, width=8, **kw)
    m.reset_(torch.Generator().manual_seed(0))
    return m


def germinate(m, slot="mid", bp="conv_light", blend="linear"):
    return m.germinate(
        slot, bp, blend, epoch=1, generator=torch.Generator().manual_seed(1), lr=1e-3
    )


def healthy(slot):
    slot.state.telemetry.grad_health = 1.0


def test_full_path_to_fossilized_with_gates():
    m = model()
    slot = m.slots["mid"]
    ev = germinate(m)
    assert ev["event"] == "germinated" and slot.stage == SeedStage.GERMINATED
    assert slot.step_epoch(2)[0]["event"] == "training" and slot.stage == SeedStage.TRAINING
    # G2: not before min_training_epochs, and not with unhealthy gradients
    slot.state.telemetry.grad_health = 0.0
    for e in range(GATES.min_training_epochs + 1):
        assert slot.step_epoch(3 + e) == []
    assert slot.stage == SeedStage.TRAINING
    healthy(slot)
    assert slot.step_epoch(9)[0]["event"] == "blending"
    # G3: linear alpha 1/3, 2/3, then PROBATIONARY at 1
    assert slot.state.alpha == pytest.approx(1 / 3)
    slot.step_epoch(10)
    assert slot.state.alpha == pytest.approx(2 / 3)
    assert slot.step_epoch(11)[0]["event"] == "probationary"
    assert slot.state.alpha == 1.0 and slot.stage == SeedStage.PROBATIONARY
    # G4: needs min probation epochs and a positive contribution
    slot.state.telemetry.contribution = 0.05
    assert not slot.can_fossilize()  # 0 probation epochs so far
    slot.step_epoch(12)
    slot.state.telemetry.contribution = -0.01
    with pytest.raises(GateError, match="fossilise refused"):
        slot.fossilize(12)
    slot.state.telemetry.contribution = 0.05
    assert slot.fossilize(12)["event"] == "fossilized"
    assert slot.stage == SeedStage.FOSSILIZED and slot.optimizer is None
    assert all(not p.requires_grad for p in slot.seed_parameters())
    with pytest.raises(GateError):
        slot.cull(13)


@pytest.mark.parametrize("stage", ["GERMINATED", "TRAINING", "BLENDING", "PROBATIONARY"])
def test_cull_from_every_live_stage(stage):
    m = model()
    slot = m.slots["early"]
    germinate(m, "early")
    healthy(slot)
    epoch = 2
    while slot.stage.name != stage:
        slot.step_epoch(epoch)
        epoch += 1
    ev = slot.cull(epoch)
    assert ev["event"] == "culled" and ev["stage"] == stage
    assert slot.stage == SeedStage.DORMANT and slot.seed is None and slot.optimizer is None
    germinate(m, "early")  # the slot is usable again


def test_gate_errors():
    m = model(enabled_slots=("early", "mid"))
    with pytest.raises(GateError, match="DORMANT"):
        m.slots["early"].cull(1)
    germinate(m, "early")
    with pytest.raises(GateError, match="not DORMANT"):
        germinate(m, "early")
    with pytest.raises(ValueError, match="not enabled"):
        germinate(m, "late")
    with pytest.raises(GateError, match="only PROBATIONARY"):
        m.slots["early"].fossilize(2)


def test_blend_schedules():
    for s in ("linear", "sigmoid"):
        assert blend_alpha(s, 0.0) == pytest.approx(0.0) and blend_alpha(s, 1.0) == pytest.approx(
            1.0
        )
        vals = [blend_alpha(s, p / 10) for p in range(11)]
        assert all(b > a for a, b in zip(vals, vals[1:]))
    assert blend_alpha("sigmoid", 0.5) == pytest.approx(0.5)
    assert blend_alpha("sigmoid", 0.2) < blend_alpha("linear", 0.2)
    with pytest.raises(ValueError, match="unknown blend"):
        blend_alpha("cubic", 0.5)


def test_training_is_straight_through_and_isolated():
    m = model()
    germinate(m, "mid", "conv_light")
    slot = m.slots["mid"]
    with torch.no_grad():  # make the seed non-trivial so isolation is really tested
        slot.seed.conv.weight.normal_(generator=torch.Generator().manual_seed(3))
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    m.eval()
    out = m(x)
    assert torch.equal(out, m(x, alpha_override={"mid": 0.0}))  # forward value == host alone
    assert not torch.allclose(out, m(x, alpha_override={"mid": 1.0}))
    out.sum().backward()
    assert slot.seed.conv.weight.grad is not None and slot.seed.conv.weight.grad.abs().sum() > 0
    host_grad = m.host.stage2[0].weight.grad.clone()
    # the host's gradient is exactly what it would be without the seed
    m2 = model()
    m2.load_state_dict({k: v for k, v in m.state_dict().items() if "slots" not in k}, strict=False)
    m2.eval()
    m2(x).sum().backward()
    assert torch.equal(host_grad, m2.host.stage2[0].weight.grad)


def test_per_slot_optimizers_created_and_dropped():
    m = model()
    host_params = {id(p) for p in m.host_parameters()}
    germinate(m, "early", "conv_light")
    germinate(m, "late", "depthwise")
    for name in ("early", "late"):
        slot = m.slots[name]
        opt_params = [p for g in slot.optimizer.param_groups for p in g["params"]]
        assert {id(p) for p in opt_params} == {id(p) for p in slot.seed_parameters()}
        assert not ({id(p) for p in opt_params} & host_params)
    m.slots["early"].cull(2)
    assert m.slots["early"].optimizer is None and m.slots["late"].optimizer is not None
    germinate(m, "mid", "noop")
    assert m.slots["mid"].optimizer is None and m.slots["mid"].state.seed_params == 0


@pytest.mark.parametrize("name", list(BLUEPRINTS))
def test_every_blueprint_fits_every_slot_and_starts_at_zero(name):
    m = model()
    for slot in SLOT_NAMES:
        channels, spatial = m.host.slot_shapes[slot]
        seed = build_seed(name, channels, spatial, torch.Generator().manual_seed(0))
        h = torch.randn(2, channels, *spatial)
        assert torch.equal(seed(h), torch.zeros_like(h))  # zero-initialised residual


def test_blueprint_shape_check_at_germination(monkeypatch):
    class Shrink(torch.nn.Module):
        def forward(self, h):
            return h[:, :1]

    monkeypatch.setitem(BLUEPRINTS, "shrink", lambda c: Shrink())
    with pytest.raises(BlueprintError, match="must keep its slot's shape"):
        build_seed("shrink", 8, (4, 4))
    with pytest.raises(BlueprintError, match="unknown blueprint 'nope'"):
        build_seed("nope", 8, (4, 4))
    with pytest.raises(BlueprintError, match="divisible by 4 heads"):
        build_seed("attention", 6, (4, 4))


def test_reset_reinitialises_in_place_and_deterministically():
    m = model()
    ptr = m.host.stage2[0].weight.data_ptr()
    germinate(m)
    m.reset_(torch.Generator().manual_seed(7))
    a = [p.clone() for p in m.host_parameters()]
    assert all(s.stage == SeedStage.DORMANT for s in m.slots.values())
    m.reset_(torch.Generator().manual_seed(7))
    assert all(torch.equal(x, y) for x, y in zip(a, m.host_parameters()))
    assert m.host.stage2[0].weight.data_ptr() == ptr  # same allocation
    assert math.isfinite(sum(float(p.detach().sum()) for p in m.parameters()))
