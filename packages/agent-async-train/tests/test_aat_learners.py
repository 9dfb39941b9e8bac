import copy

import numpy as np
import pytest
import torch

from agent_async_train.buffers import Batch
from agent_async_train.config import DQNConfig
from agent_async_train.learners import check_independent, make_agents


def agents(n=3, **cfg):
    return make_agents(
        n, 10, 5, np.float32, DQNConfig(hidden=[8], batch_size=4, **cfg), np.random.SeedSequence(7)
    )


def test_agents_share_nothing_and_the_check_catches_sharing():
    ag = agents()
    check_independent(ag)
    # Different initial weights (independent generators), same architecture.
    assert not torch.equal(ag[0].online.net[0].weight, ag[1].online.net[0].weight)
    ag[1].buffer = ag[0].buffer
    with pytest.raises(AssertionError, match="share one buffer"):
        check_independent(ag)
    ag = agents()
    ag[2].online.net[0].weight = ag[0].online.net[0].weight  # tied parameter
    with pytest.raises(AssertionError, match="share parameter"):
        check_independent(ag)


def test_no_global_rng_is_used():
    torch.manual_seed(0)
    np.random.seed(0)
    a = agents()
    torch.manual_seed(123)
    np.random.seed(123)
    b = agents()
    for x, y in zip(a, b):
        for p, q in zip(x.online.parameters(), y.online.parameters()):
            assert torch.equal(p, q)
        assert x.explore(0.5) == y.explore(0.5)


def test_double_dqn_target_bootstraps_through_truncation_not_termination():
    (agent,) = agents(1, gamma=0.5)
    obs = np.zeros((2, 10), np.float32)
    nxt = np.ones((2, 10), np.float32)
    batch = Batch(
        obs,
        np.array([1, 1]),
        np.array([1.0, 1.0], np.float32),
        nxt,
        np.array([True, False]),
        np.array([False, True]),
    )
    with torch.no_grad():
        q_next_online = agent.online(torch.ones(10))
        a_star = int(q_next_online.argmax())
        q_next_target = float(agent.target(torch.ones(10))[a_star])
        q = float(agent.online(torch.zeros(10))[1])
    targets = torch.tensor(
        [1.0, 1.0 + 0.5 * q_next_target]
    )  # terminated: no bootstrap; truncated: bootstrap
    expected = torch.nn.functional.huber_loss(torch.tensor([q, q]), targets)
    assert torch.allclose(agent.loss(batch), expected)


def test_train_step_changes_only_its_own_agent():
    ag = agents(2, learning_starts=0)
    rng = np.random.default_rng(0)
    for a in ag:
        for _ in range(10):
            a.buffer.add(rng.random(10), rng.integers(5), 1.0, rng.random(10), False, False)
    before = copy.deepcopy([a.online.state_dict() for a in ag])
    ag[0].train_step()
    assert ag[0].updates == 1 and ag[1].updates == 0
    assert not torch.equal(before[0]["net.0.weight"], ag[0].online.state_dict()["net.0.weight"])
    assert torch.equal(before[1]["net.0.weight"], ag[1].online.state_dict()["net.0.weight"])
