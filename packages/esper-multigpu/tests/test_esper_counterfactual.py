"""The counterfactual is functional: an alpha override for one call, no module state touched."""

import copy

import torch

from esper_multigpu.kasmina.slot import SeedStage
from esper_multigpu.tolaria.env import Action, EnvConfig, MorphoEnv
from esper_multigpu.tolaria.tasks import load_synthetic_task


def blending_env():
    task = load_synthetic_task(0)
    env = MorphoEnv(
        0,
        "cpu",
        (task.x_train, task.y_train, task.x_val, task.y_val),
        task.n_classes,
        config=EnvConfig(max_epochs=8, width=8),
    )
    env.reset(123)
    env.train_epoch()
    env.end_epoch()
    env.apply(Action("GERMINATE", "mid", "conv_light", "linear"))
    env.apply(Action("GERMINATE", "late", "depthwise", "linear"))
    while env.model.slots["mid"].stage != SeedStage.BLENDING:
        env.train_epoch()
        env.end_epoch()
    return env


def test_override_changes_nothing_and_matches_removed_seed():
    env = blending_env()
    m = env.model
    slot = m.slots["mid"]
    assert 0 < slot.state.alpha < 1
    state_before = {k: v.clone() for k, v in m.state_dict().items()}
    alpha_before = slot.state.alpha
    x = env.x_val[:32]
    m.eval()
    with torch.no_grad():
        off = m(x, alpha_override={"mid": 0.0})
        on = m(x)
    assert slot.state.alpha == alpha_before and slot.stage == SeedStage.BLENDING
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in state_before.items())
    assert not torch.allclose(off, on)
    # alpha 0 for 'mid' == the same model with the mid seed culled
    removed = copy.deepcopy(m)
    removed.slots["mid"].cull(0)
    with torch.no_grad():
        assert torch.equal(off, removed(x))


def test_env_contribution_is_accuracy_minus_counterfactual():
    env = blending_env()
    env.train_epoch()
    # measure at the alphas end_epoch will use (it advances the gates only afterwards)
    _, acc = env.evaluate()
    _, acc_cf = env.evaluate({"mid": 0.0})
    _, acc_on = env.evaluate({"mid": 1.0})
    env.end_epoch()
    tel = env.model.slots["mid"].state.telemetry
    assert env.signals.val_acc == acc
    assert tel.contribution == acc - acc_cf
    assert tel.accuracy == acc_on
    # a seed still in isolation has no contribution by definition
    env.apply(Action("GERMINATE", "early", "norm", "sigmoid"))
    env.train_epoch()
    env.end_epoch()
    assert env.model.slots["early"].state.telemetry.contribution == 0.0


def test_forward_many_equals_separate_passes_bit_for_bit():
    """The evaluation runs every counterfactual at once, sharing prefixes: each variant's
    logits are exactly those of its own forward pass."""
    env = blending_env()
    m = env.model
    m.eval()
    x = env.x_val[:48]
    overrides = [{}, {"mid": 0.0}, {"mid": 1.0}, {"late": 0.0}, {"mid": 0.0, "late": 1.0}, {}]
    with torch.no_grad():
        many = m.forward_many(x, overrides)
        for ov, logits in zip(overrides, many, strict=True):
            assert torch.equal(logits, m(x, alpha_override=ov))
