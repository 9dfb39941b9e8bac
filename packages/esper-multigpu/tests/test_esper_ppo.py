"""GAE against a hand computation, the PPO update, KL early stop, the observation normaliser, rewards."""

import math

import numpy as np
import pytest
import torch

from esper_multigpu.simic.buffer import RolloutBuffer, compute_gae
from esper_multigpu.simic.features import OBS_DIM
from esper_multigpu.simic.network import factored_log_prob_entropy
from esper_multigpu.simic.normalizer import RunningMeanStd
from esper_multigpu.simic.ppo import PPOAgent, PPOConfig
from esper_multigpu.simic.rewards import RewardConfig, compute_reward


def test_gae_by_hand_with_truncation_bootstrap():
    g, lam = 0.9, 0.8
    r = np.array([[1.0], [0.0], [2.0]])
    v = np.array([[0.5], [1.0], [1.5]])
    v_last = np.array([3.0])  # V(s_3): the episode was truncated, so it is bootstrapped
    d2 = 2.0 + g * 3.0 - 1.5  # 3.2
    d1 = 0.0 + g * 1.5 - 1.0  # 0.35
    d0 = 1.0 + g * 1.0 - 0.5  # 1.4
    a2 = d2
    a1 = d1 + g * lam * a2
    a0 = d0 + g * lam * a1
    adv, ret = compute_gae(r, v, v_last, np.zeros((3, 1), bool), g, lam)
    np.testing.assert_allclose(adv[:, 0], [a0, a1, a2], rtol=1e-6)
    np.testing.assert_allclose(ret[:, 0], [a0 + 0.5, a1 + 1.0, a2 + 1.5], rtol=1e-6)
    # a real termination after step 1 cuts both the bootstrap and the trace
    term = np.array([[False], [True], [False]])
    adv_t, _ = compute_gae(r, v, v_last, term, g, lam)
    assert adv_t[1, 0] == pytest.approx(0.0 - 1.0)
    assert adv_t[0, 0] == pytest.approx(d0 + g * lam * (0.0 - 1.0))


def fake_rollout(agent, T=5, N=3, seed=0):
    rng = np.random.default_rng(seed)
    buf = RolloutBuffer(T, N, OBS_DIM)
    agent.begin_batch(N, seed)
    raw = []
    for t in range(T):
        obs = rng.normal(size=(N, OBS_DIM)).astype(np.float32)
        masks = {
            "op": np.ones((N, 4), bool),
            "slot_by_op": np.ones((N, 4, 3), bool),
            "blueprint": np.ones((N, 6), bool),
            "blend": np.ones((N, 2), bool),
        }
        norm, actions, slot_mask, logp, values = agent.act(obs, masks)
        buf.add(
            norm,
            actions,
            {
                "op": masks["op"],
                "slot": slot_mask,
                "blueprint": masks["blueprint"],
                "blend": masks["blend"],
            },
            logp,
            values,
        )
        buf.set_rewards(t, (actions[:, 0] == 1).astype(np.float32))  # reward GERMINATE
        raw.append(obs)
    final = rng.normal(size=(N, OBS_DIM)).astype(np.float32)
    buf.last_values[:] = agent.value(final)
    return buf, np.concatenate(raw + [final])


def test_update_recomputes_the_sampling_distribution_and_learns():
    agent = PPOAgent(OBS_DIM, "cpu", PPOConfig(update_epochs=1, minibatch_envs=3), seed=0)
    buf, raw = fake_rollout(agent)
    # first minibatch of the first epoch: ratio == 1 exactly, so approx KL is 0
    stats = agent.update(buf, raw, seed=1)
    assert stats["approx_kl"] == pytest.approx(0.0, abs=1e-6)
    assert stats["clip_frac"] == 0.0 and not stats["kl_early_stop"]
    assert all(math.isfinite(v) for v in stats.values() if isinstance(v, float))
    # repeated updates on a batch that rewards GERMINATE make GERMINATE more likely
    agent2 = PPOAgent(
        OBS_DIM,
        "cpu",
        PPOConfig(update_epochs=8, minibatch_envs=4, target_kl=10.0, lr=3e-3, gamma=0.0),
        seed=0,
    )
    buf, raw = fake_rollout(agent2, T=8, N=4, seed=3)

    def p_germinate():
        with torch.no_grad():
            logits, _, _ = agent2.net(torch.from_numpy(buf.obs), agent2.net.initial_state(4, "cpu"))
            return torch.softmax(logits["op"], -1)[..., 1].mean().item()

    before = p_germinate()
    for i in range(4):
        agent2.update(buf, raw, seed=i)
    assert before == pytest.approx(0.25, abs=0.02)
    assert p_germinate() > before + 0.2


def test_kl_early_stop():
    agent = PPOAgent(
        OBS_DIM,
        "cpu",
        PPOConfig(update_epochs=10, minibatch_envs=1, target_kl=1e-9, lr=1e-2),
        seed=0,
    )
    buf, raw = fake_rollout(agent)
    stats = agent.update(buf, raw, seed=0)
    assert stats["kl_early_stop"] and stats["update_epochs_run"] == 1


def test_running_mean_std_matches_numpy():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(300, 5))
    rms = RunningMeanStd(5, epsilon=0.0)
    rms.count = 0.0
    for chunk in np.array_split(data, 7):
        if rms.count == 0:
            rms.mean, rms.var, rms.count = chunk.mean(0), chunk.var(0), len(chunk)
        else:
            rms.update(chunk)
    np.testing.assert_allclose(rms.mean, data.mean(0), rtol=1e-10)
    np.testing.assert_allclose(rms.var, data.var(0), rtol=1e-10)
    z = rms.normalize(data)
    assert abs(z.mean()) < 1e-6 and np.abs(z).max() <= rms.clip


def test_reward_components():
    cfg = RewardConfig(added_weight=2.0, rent=0.1)
    r, parts = compute_reward(0.01, 0.04, seed_params=100, host_params=100, config=cfg)
    assert parts["added"] == pytest.approx(2 * 0.03)
    assert parts["rent"] == pytest.approx(-0.1 * math.log(2))
    assert r == pytest.approx(sum(parts.values()))


def test_reward_telescopes_to_final_added_accuracy_minus_rent():
    """Over an episode the return is the final gap over the fixed host minus the rent paid:
    no step can farm reward by itself (keeping a seed on trial, fossilising)."""
    cfg = RewardConfig(added_weight=1.0, rent=0.01)
    gaps = [0.0, 0.0, 0.02, 0.05, 0.04, 0.06]
    params = [0, 50, 50, 50, 50, 50]
    total = sum(
        compute_reward(gaps[t], gaps[t + 1], params[t + 1], 100, cfg)[0] for t in range(len(gaps) - 1)
    )
    rent = sum(0.01 * math.log1p(p / 100) for p in params[1:])
    assert total == pytest.approx(gaps[-1] - rent)
    # waiting with no seed: exactly zero
    assert compute_reward(0.0, 0.0, 0, 100, cfg)[0] == 0.0


def test_reward_scaler_divides_by_the_std_of_discounted_returns():
    """CleanRL's NormalizeReward over whole episodes: the batch's discounted returns enter
    the running statistics first, then every reward is divided by their std (no mean is
    subtracted: signs and waiting's exact 0 survive)."""
    from esper_multigpu.simic.normalizer import RewardScaler

    g = 0.5
    r = np.array([[0.0, 0.02], [0.01, -0.04], [0.03, 0.0]])  # (T=3, N=2)
    returns = [0.0, 0.02, 0.01, -0.04 + g * 0.02, 0.03 + g * 0.01, g * (-0.04 + g * 0.02)]
    scaler = RewardScaler(gamma=g)
    scaled = scaler.scale(r)
    # the running statistics start from the wrapper's prior: variance 1 with weight 1e-4
    n, prior = len(returns), 1e-4
    mean = np.mean(returns)
    var = (prior * 1.0 + n * np.var(returns) + mean**2 * prior * n / (prior + n)) / (prior + n)
    std = np.sqrt(var + 1e-8)
    np.testing.assert_allclose(scaled, r / std, rtol=1e-4)
    assert scaled[0, 0] == 0.0 and np.all(np.sign(scaled) == np.sign(r))
    # the statistics carry over to the next batch and through a checkpoint
    again = RewardScaler(gamma=0.9)
    again.load_state_dict(scaler.state_dict())
    np.testing.assert_array_equal(again.scale(r), scaler.scale(r))


def test_anneal_lr_entropy_schedule_and_reward_scale_reported():
    cfg = PPOConfig(update_epochs=1, lr=1e-3, anneal_lr=True, ent_coef=0.05, ent_coef_final=0.01, norm_reward=True)
    agent = PPOAgent(OBS_DIM, "cpu", cfg, seed=0)
    buf, raw = fake_rollout(agent)
    stats = agent.update(buf, raw, seed=1, progress=0.25)
    assert stats["lr"] == pytest.approx(0.75e-3)
    assert agent.optimizer.param_groups[0]["lr"] == pytest.approx(0.75e-3)
    assert stats["ent_coef"] == pytest.approx(0.05 - 0.04 * 0.25)
    assert stats["reward_scale"] == pytest.approx(agent.reward_scaler.std) and stats["reward_scale"] != 1.0
    assert "reward_scaler" in agent.state_dict()


def test_choices_only_averages_over_steps_with_a_choice():
    """Steps whose only legal op is WAIT carry no choice: with ``choices_only`` the entropy
    (and policy loss) are means over the other steps."""
    cfg = PPOConfig(update_epochs=1, minibatch_envs=3, choices_only=True)
    agent = PPOAgent(OBS_DIM, "cpu", cfg, seed=0)
    buf, raw = fake_rollout(agent)
    buf.mask_op[1:4] = [True, False, False, False]  # steps 1..3 of every env: WAIT only
    buf.actions[1:4, :, 0] = 0
    with torch.no_grad():
        logits, _, _ = agent.net(torch.from_numpy(buf.obs), agent.net.initial_state(3, "cpu"))
        masks = {
            "op": torch.from_numpy(buf.mask_op),
            "slot": torch.from_numpy(buf.mask_slot),
            "blueprint": torch.from_numpy(buf.mask_blueprint),
            "blend": torch.from_numpy(buf.mask_blend),
        }
        _, entropy = factored_log_prob_entropy(logits, masks, torch.from_numpy(buf.actions))
    choice = buf.mask_op.sum(-1) > 1
    stats = agent.update(buf, raw, seed=1)
    assert stats["entropy"] == pytest.approx(entropy[torch.from_numpy(choice)].mean().item(), rel=1e-5)
    assert entropy[~torch.from_numpy(choice)].abs().max() == 0  # a forced WAIT has no entropy


@pytest.mark.parametrize("norm_adv, center", [(True, True), (False, True), (True, False)])
def test_norm_adv_off_keeps_the_critic_baseline(norm_adv, center):
    """With ``norm_adv`` the first minibatch's surrogate (ratio 1) is minus the mean of the
    standardised advantages, 0; without it, minus the mean GAE advantage, so a batch that did
    worse than the critic expected is pushed away from what it did; ``norm_adv_center=False``
    keeps that sign and only divides by the advantages' std."""
    cfg = PPOConfig(update_epochs=1, minibatch_envs=3, norm_adv=norm_adv, norm_adv_center=center)
    agent = PPOAgent(OBS_DIM, "cpu", cfg, seed=0)
    buf, raw = fake_rollout(agent)
    buf.rewards[:] = -1.0  # everything went worse than the untrained critic's ~0
    adv, _ = compute_gae(buf.rewards, buf.values, buf.last_values, buf.terminated, cfg.gamma, cfg.gae_lambda)
    stats = agent.update(buf, raw, seed=1)
    if not norm_adv:
        expected = -adv.mean()
    else:
        expected = 0.0 if center else -adv.mean() / adv.std(ddof=1)
    assert stats["policy_loss"] == pytest.approx(expected, abs=1e-4)
    assert (norm_adv and center) or stats["policy_loss"] > 1.0
