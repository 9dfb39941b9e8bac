"""Phase 1 against values computed by hand on tiny worlds, and against the scalar oracle."""

import math

import numpy as np
import pytest
from empo_reference import reference_prior
from empo_test_worlds import (
    ChainWorld,
    Goals,
    coin,
    needs_partner_still,
    robot_blocks,
    slow_forward,
)

from empo_distributed import compute_human_policy_prior, load_world
from empo_distributed.phase1 import Phase1Params


def solve(world, places, **kw):
    return compute_human_policy_prior(world, world.human_agent_indices, Goals(places), **kw)


def test_goal_reached_in_one_step():
    world = ChainWorld(max_steps=1)
    prior = solve(world, [1], beta_h=10.0)
    go = 1.0 / (1.0 + math.exp(-10.0))  # softmax of Q = [0, 1]
    stay = math.exp(-10.0) / (1.0 + math.exp(-10.0))
    np.testing.assert_allclose(prior((0, 0), 0, 0), [stay, go], rtol=1e-14)
    assert prior.value((0, 0), 0, 0) == pytest.approx(go, rel=1e-14)
    assert prior((1, 1), 0, 0) is None  # terminal: no policy
    assert prior.value((1, 1), 0, 0) == 0.0


def test_goal_already_achieved_means_stay_and_zero_value():
    world = ChainWorld(max_steps=2)
    prior = solve(world, [1], beta_h=10.0)
    np.testing.assert_array_equal(prior((1, 1), 0, 0), [1.0, 0.0])
    assert prior.value((1, 1), 0, 0) == 0.0


def test_discounting_gamma_over_two_steps():
    world = ChainWorld(max_steps=2)
    prior = solve(world, [2], beta_h=math.inf, gamma_h=0.9)
    # V(1,1) = 1 (one step from the goal); V(1,0) = 0; Q(0,0) = [0, 0.9 * 1].
    assert prior.value((1, 1), 0, 0) == 1.0
    assert prior.value((1, 0), 0, 0) == 0.0
    np.testing.assert_array_equal(prior((1, 0), 0, 0), [0.5, 0.5])  # exact tie at 0
    assert prior.value((0, 0), 0, 0) == pytest.approx(0.9, rel=1e-14)
    # Finite beta: V(1,1) = s, Q(0,0) = [0, 0.9 s], V(0,0) = pi_go * 0.9 s.
    prior = solve(world, [2], beta_h=10.0, gamma_h=0.9)
    s = 1 / (1 + math.exp(-10))
    pi_go = 1 / (1 + math.exp(-10 * 0.9 * s))
    assert prior.value((0, 0), 0, 0) == pytest.approx(pi_go * 0.9 * s, rel=1e-13)


def test_durations_discount_each_outcome():
    world = ChainWorld(max_steps=2, rule=slow_forward)
    prior = solve(world, [2], beta_h=math.inf, rho_h=0.5)
    # From (1,1) forward reaches the goal (y = 1, no discount); from (0,0) forward reaches
    # (1,1) after 2 time units: Q = exp(-0.5 * 2) * 1.
    assert prior.value((0, 0), 0, 0) == pytest.approx(math.exp(-1.0), rel=1e-14)


def test_no_discount_factor_when_rho_is_zero():
    world = ChainWorld(max_steps=3)
    prior = solve(world, [3], beta_h=math.inf)
    assert prior.value((0, 0), 0, 0) == 1.0  # exactly: no exp() factor at all


@pytest.mark.parametrize(
    "optimistic, expect_pi, expect_v", [(False, [0.5, 0.5], 0.0), (True, [0.0, 1.0], 1.0)]
)
def test_optimistic_vs_pessimistic_robot(optimistic, expect_pi, expect_v):
    world = ChainWorld(n_agents=2, robots=(1,), max_steps=1, rule=robot_blocks)
    prior = solve(world, [1], beta_h=math.inf, optimistic=optimistic)
    np.testing.assert_array_equal(prior((0, 0, 0), 0, 0), expect_pi)
    assert prior.value((0, 0, 0), 0, 0) == expect_v


def test_beta_inf_is_uniform_over_exact_ties():
    world = ChainWorld(n_actions=3, max_steps=1)  # actions 1 and 2 both reach the goal
    prior = solve(world, [1], beta_h=math.inf)
    np.testing.assert_array_equal(prior((0, 0), 0, 0), [0.0, 0.5, 0.5])
    assert prior.value((0, 0), 0, 0) == 1.0


def test_two_humans_uniform_belief_about_each_other():
    world = ChainWorld(n_agents=2, humans=(0, 1), max_steps=1, rule=needs_partner_still)
    prior = solve(world, [1], beta_h=math.inf)
    # Q(go) = 1/2 * 1 (partner stays) + 1/2 * 0 (partner goes) = 0.5 > Q(stay) = 0.
    for h in (0, 1):
        np.testing.assert_array_equal(
            prior((0, 0, 0), h, h), [0.0, 1.0]
        )  # goal id h: human h's goal
        assert prior.value((0, 0, 0), h, h) == 0.5
    assert prior.goal_ids.tolist() == [0, 1] and prior.goal_humans.tolist() == [0, 1]


def partner_stays(state, h, action):
    """A believed-others policy: the other human always stays."""
    return [(1.0, [0, 0])]


@pytest.mark.parametrize("workers", [1, 2])
def test_user_believed_others_policy(workers, monkeypatch):
    monkeypatch.setattr("empo_distributed.phase1._LocalRunner.MIN_PARALLEL_WORK", 1)
    monkeypatch.setattr("empo_distributed.phase1._LocalRunner.MIN_CHUNK", 1)
    world = ChainWorld(n_agents=2, humans=(0, 1), max_steps=2, rule=needs_partner_still)
    prior = solve(
        world, [1], beta_h=math.inf, believed_others_policy=partner_stays, workers=workers
    )
    assert prior.value((0, 0, 0), 0, 0) == 1.0
    assert prior.value((1, 0, 1), 0, 0) == 1.0
    assert (prior.timings["phase1_parallel_batches"] > 0) == (workers > 1)


def test_stochastic_outcomes():
    world = ChainWorld(max_steps=2, rule=coin)
    prior = solve(world, [1], beta_h=math.inf)
    assert prior.value((1, 0), 0, 0) == 0.25
    assert prior.value((0, 0), 0, 0) == 0.25 + 0.75 * 0.25


def test_marginal_is_goal_weighted():
    world = ChainWorld(n_actions=3, max_steps=1, rule=lambda p, a: [(1.0, (p[0] + a[0],))])
    gen = type(
        "G",
        (),
        {
            "generate": lambda self, s, h: iter(
                [
                    (Goals([1]).generate(s, h).__next__()[0], 3.0),
                    (Goals([2]).generate(s, h).__next__()[0], 1.0),
                ]
            )
        },
    )()
    prior = compute_human_policy_prior(world, [0], gen, beta_h=math.inf)
    np.testing.assert_array_equal(prior((0, 0), 0, 0), [0, 1, 0])
    np.testing.assert_array_equal(prior((0, 0), 0, 1), [0, 0, 1])
    np.testing.assert_allclose(prior((0, 0), 0), [0, 0.75, 0.25])


def test_goal_ids_from_generator_triples():
    class Triples:
        def generate(self, state, h):
            yield Goals([1]).generate(state, h).__next__()[0], 40, 1.0
            yield Goals([0]).generate(state, h).__next__()[0], 7, 1.0

    world = ChainWorld(max_steps=1)
    prior = compute_human_policy_prior(world, [0], Triples(), beta_h=math.inf)
    assert prior.goal_ids.tolist() == [40, 7]
    np.testing.assert_array_equal(prior((0, 0), 0, 40), [0.0, 1.0])


def test_parameter_errors():
    with pytest.raises(ValueError, match="gamma_h or rho_h"):
        Phase1Params.make(gamma_h=0.9, rho_h=0.1)
    with pytest.raises(ValueError, match="gamma_h must be in"):
        Phase1Params.make(gamma_h=1.5)
    with pytest.raises(ValueError, match="beta_h must be"):
        Phase1Params.make(beta_h=-1)


def _compare_with_reference(world, prior, P, V, goals, rtol=1e-12, atol=1e-13):
    checked = 0
    for (s, h, gi), v in V.items():
        col = prior.goal_column(h, goals[h][gi])
        assert prior.values[prior.state_to_idx[s], col] == pytest.approx(v, rel=rtol, abs=atol)
        if (s, h, gi) in P:
            np.testing.assert_allclose(
                prior.policy[prior.state_to_idx[s], col], P[(s, h, gi)], rtol=rtol, atol=atol
            )
            checked += 1
    assert len(prior) == len({s for s, _, _ in V})
    return checked


@pytest.mark.parametrize(
    "name, max_steps, kw",
    [
        ("contest", None, dict(beta_h=10.0, gamma_h=0.9)),
        ("small", None, dict(beta_h=5.0, optimistic=True)),
        ("tiny", None, dict(beta_h=math.inf, gamma_h=0.8)),
        ("two_humans", 2, dict(beta_h=3.0, rho_h=0.2)),
    ],
)
def test_matches_scalar_reference_on_gridworlds(name, max_steps, kw):
    world = load_world(name, max_steps)
    gen = world.goal_generator()
    prior = compute_human_policy_prior(world, world.human_agent_indices, gen, **kw)
    P, V, goals = reference_prior(
        world,
        world.human_agent_indices,
        gen,
        beta=kw["beta_h"],
        gamma=kw.get("gamma_h"),
        rho=kw.get("rho_h"),
        optimistic=kw.get("optimistic", False),
    )
    assert _compare_with_reference(world, prior, P, V, goals) > 0


def test_float32_storage_close_to_float64():
    world = load_world("small")
    gen = world.goal_generator()
    p64 = compute_human_policy_prior(world, [0], gen, gamma_h=0.9)
    p32 = compute_human_policy_prior(world, [0], gen, gamma_h=0.9, dtype="float32")
    assert p32.values.dtype == np.float32 and p32.policy.dtype == np.float32
    np.testing.assert_allclose(p32.values, p64.values, atol=1e-5)
