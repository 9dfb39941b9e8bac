"""The heuristic controller is multi-slot: every enabled slot, first empty slot, right targets."""

import torch

from esper_multigpu.kasmina.slot import SeedStage
from esper_multigpu.tamiyo.heuristic import HeuristicConfig, HeuristicController
from esper_multigpu.tolaria.env import EnvConfig, MorphoEnv
from esper_multigpu.tolaria.tasks import load_synthetic_task


def env(slots=("early", "mid", "late")):
    task = load_synthetic_task(0)
    e = MorphoEnv(
        0,
        "cpu",
        (task.x_train, task.y_train, task.x_val, task.y_val),
        task.n_classes,
        slots=slots,
        config=EnvConfig(max_epochs=10, width=8),
    )
    e.reset(5)
    return e


def set_stage(e, slot, stage, contribution=0.0, epochs=1):
    s = e.model.slots[slot]
    if s.seed is None:
        e.model.germinate(slot, "conv_light", "linear", 0, torch.Generator().manual_seed(0), 1e-3)
    s.state.stage, s.state.epochs_in_stage = stage, epochs
    s.state.alpha = 1.0 if stage == SeedStage.PROBATIONARY else 0.5
    s.state.telemetry.contribution = contribution


def test_germinates_first_empty_enabled_slot_in_order():
    h = HeuristicController(HeuristicConfig(warmup_epochs=1, germinate_interval=1))
    h.begin_batch(1, 0)
    e = env(slots=("mid", "late"))
    e.epoch = 1
    acts = h.decide(0, e)
    assert [(a.op, a.slot, a.blueprint) for a in acts] == [("GERMINATE", "mid", "conv_heavy")]
    e.apply(acts[0])
    e.epoch = 2
    assert [(a.op, a.slot) for a in h.decide(0, e)] == [("GERMINATE", "late")]


def test_heuristic_honours_the_seed_budget():
    h = HeuristicController(HeuristicConfig(warmup_epochs=1, germinate_interval=1), max_seeds=1)
    h.begin_batch(1, 0)
    e = env()
    e.epoch = 1
    e.apply(h.decide(0, e)[0])
    e.epoch = 2
    assert h.decide(0, e) == []  # one seed in the model: the budget is used
    set_stage(e, "mid", SeedStage.PROBATIONARY, contribution=-0.5, epochs=5)
    e.epoch = 3
    # culling the harmful seed frees the budget in the same decision
    assert [(a.op, a.slot) for a in h.decide(0, e)] == [("CULL", "mid"), ("GERMINATE", "late")]


def test_heuristic_germinates_only_offered_blueprints():
    h = HeuristicController(HeuristicConfig(warmup_epochs=1), blueprints=["depthwise", "attention"])
    h.begin_batch(1, 0)
    e = env()
    e.epoch = 1
    # mid prefers conv_heavy, conv_light, depthwise: the first one on offer
    assert [(a.slot, a.blueprint) for a in h.decide(0, e)] == [("mid", "depthwise")]


def test_heuristic_grows_slots_in_its_order():
    h = HeuristicController(
        HeuristicConfig(warmup_epochs=0, germinate_interval=1, slot_order=("late", "early"))
    )
    h.begin_batch(1, 0)
    e = env()
    got = []
    for epoch in (1, 2, 3):
        e.epoch = epoch
        (act,) = h.decide(0, e)
        e.apply(act)
        got.append(act.slot)
    assert got == ["late", "early", "mid"]  # the order first, then the slots it leaves out


def test_targets_resolve_to_the_right_slot():
    h = HeuristicController(HeuristicConfig(warmup_epochs=99))
    h.begin_batch(1, 0)
    e = env()
    e.epoch = 5
    set_stage(e, "early", SeedStage.BLENDING, contribution=-0.2)  # harmful while blending -> cull
    set_stage(e, "mid", SeedStage.PROBATIONARY, contribution=0.05)  # helps -> fossilise
    set_stage(
        e, "late", SeedStage.PROBATIONARY, contribution=0.0, epochs=3
    )  # probation over, no help -> cull
    acts = [(a.op, a.slot) for a in h.decide(0, e)]
    assert acts == [("CULL", "early"), ("FOSSILIZE", "mid"), ("CULL", "late")]
    for a in h.decide(0, e):
        e.apply(a)
    assert e.model.slots["mid"].stage == SeedStage.FOSSILIZED
    assert e.model.slots["early"].is_empty and e.model.slots["late"].is_empty


def test_culled_blueprint_is_not_retried_in_that_slot():
    h = HeuristicController(HeuristicConfig(warmup_epochs=0, germinate_interval=1))
    h.begin_batch(1, 0)
    e = env(slots=("early",))
    e.epoch = 1
    first = h.decide(0, e)[0]
    e.apply(first)
    set_stage(e, "early", SeedStage.BLENDING, contribution=-0.5)
    e.epoch = 2
    acts = h.decide(0, e)
    assert acts[0].op == "CULL"
    e.apply(acts[0])
    e.epoch = 3
    again = h.decide(0, e)[0]
    assert again.op == "GERMINATE" and again.blueprint != first.blueprint
