"""The reward credits only what growth adds; non-finite steps are skipped and counted."""

import math

import pytest
import torch

from esper_multigpu.config import EnvConfig, RewardConfig
from esper_multigpu.kasmina.slot import SeedStage
from esper_multigpu.simic.rewards import compute_reward
from esper_multigpu.tolaria.env import Action, MorphoEnv
from esper_multigpu.tolaria.tasks import load_synthetic_task


def make_env(x_train=None, width=8):
    task = load_synthetic_task(0)
    data = (task.x_train if x_train is None else x_train, task.y_train, task.x_val, task.y_val)
    env = MorphoEnv(0, "cpu", data, task.n_classes, config=EnvConfig(max_epochs=10, width=width))
    env.reset(7)
    return env


def epoch(env):
    env.train_epoch()
    return env.end_epoch()


def test_useless_seed_earns_exactly_nothing():
    """A noop seed goes through the whole lifecycle to FOSSILIZED; the grown model stays the
    fixed host bit for bit, so every step's reward is exactly 0 (no params, no rent)."""
    env = make_env()
    epoch(env)
    env.apply(Action("GERMINATE", "mid", "noop", "linear"))
    prev, rewards = env.added_accuracy, []
    for _ in range(8):
        epoch(env)
        slot = env.model.slots["mid"]
        if slot.stage == SeedStage.PROBATIONARY and slot.state.epochs_in_stage >= 1:
            slot.state.telemetry.contribution = 1.0  # even a gamed "contribution" earns nothing
            env.apply(Action("FOSSILIZE", "mid"))
        r, _ = compute_reward(prev, env.added_accuracy, env.model.seed_param_count(), 1000)
        rewards.append(r)
        prev = env.added_accuracy
    assert env.model.slots["mid"].stage == SeedStage.FOSSILIZED
    assert rewards == [0.0] * 8
    for a, b in zip(env.model.host.parameters(), env.shadow.parameters()):
        assert torch.equal(a, b)


def test_shadow_is_the_fixed_host_retrained_for_the_same_epochs():
    """The paired fixed host forked at germination equals, bit for bit, a host that never grew."""
    fixed, grown = make_env(), make_env()
    for e in range(1, 6):
        epoch(fixed)
        epoch(grown)
        if e == 2:
            grown.apply(Action("GERMINATE", "late", "conv_heavy", "linear"))
    assert grown.model.slots["late"].stage in (SeedStage.BLENDING, SeedStage.PROBATIONARY)
    for a, b in zip(fixed.model.host.parameters(), grown.shadow.parameters()):
        assert torch.equal(a, b)
    assert grown.shadow_acc == fixed.signals.val_acc
    assert grown.added_accuracy == grown.signals.val_acc - fixed.signals.val_acc
    # the seed's parameters pay rent every epoch
    _, parts = compute_reward(0.0, 0.0, grown.model.seed_param_count(), 1000, RewardConfig(rent=0.01))
    assert parts["rent"] == pytest.approx(-0.01 * math.log1p(grown.model.seed_param_count() / 1000))


def test_non_finite_loss_is_skipped_and_counted():
    task = load_synthetic_task(0)
    x = task.x_train.clone()
    x[5] = float("nan")  # one poisoned sample: the batch holding it has a NaN loss
    env = make_env(x_train=x)
    before = [p.detach().clone() for p in env.model.parameters()]
    rec = epoch(env)
    assert rec["skipped_steps"] == 1 and env.skipped_steps == 1
    assert env.params_finite()
    assert any(not torch.equal(a, b) for a, b in zip(before, env.model.parameters()))
    env.apply(Action("GERMINATE", "mid", "conv_light", "linear"))
    rec = epoch(env)  # seeds and the shadow skip the poisoned batch too
    assert rec["skipped_steps"] == 1 and env.params_finite()
    assert all(torch.isfinite(p).all() for p in env.shadow.parameters())
    assert math.isfinite(env.signals.train_loss)


def test_loss_scaler_path_runs_without_skips():
    """The fp16 path (per-env GradScaler, unscale before clipping, fused step with found_inf)
    exercised on the CPU with a CPU GradScaler."""
    env = make_env()
    env.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    epoch(env)
    env.apply(Action("GERMINATE", "mid", "conv_light", "linear"))
    rec = epoch(env)
    assert rec["skipped_steps"] == 0 and env.params_finite() and env.has_shadow
    assert env.shadow_scaler is not None
    assert env.scaler.get_scale() >= 2.0**10


def test_linear_rent_charges_every_parameter_the_same():
    log, lin = RewardConfig(rent=0.01), RewardConfig(rent=0.01, rent_shape="linear")
    # a seed as big as the host: log rent 0.01 * log 2, linear 0.01 * 1
    assert compute_reward(0.0, 0.0, 100, 100, log)[0] == pytest.approx(-0.01 * math.log(2))
    assert compute_reward(0.0, 0.0, 100, 100, lin)[0] == pytest.approx(-0.01)
    # four times the parameters: four times the linear rent, ~2.3x the log rent
    assert compute_reward(0.0, 0.0, 400, 100, lin)[1]["rent"] == pytest.approx(4 * -0.01)
    assert compute_reward(0.0, 0.1, 0, 100, lin)[0] == pytest.approx(0.1)  # no seed, no rent
