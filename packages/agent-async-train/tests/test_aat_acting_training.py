import numpy as np
import pytest
import torch

from agent_async_train.acting import BatchedActor, LoopActor, make_snapshot
from agent_async_train.config import DQNConfig
from agent_async_train.learners import make_agents
from agent_async_train.training import BatchedTrainer, SerialTrainer, ThreadedTrainer


def population(seed=0, n=4, dim=12):
    return make_agents(
        n,
        dim,
        5,
        np.float32,
        DQNConfig(hidden=[16, 16], batch_size=8, target_update=3),
        np.random.SeedSequence(seed),
    )


def filled(seed=0):
    ag = population(seed)
    rng = np.random.default_rng(seed)
    for a in ag:
        for _ in range(50):
            a.buffer.add(
                rng.random(12),
                rng.integers(5),
                rng.random(),
                rng.random(12),
                rng.random() < 0.2,
                rng.random() < 0.1,
            )
    return ag


@pytest.mark.parametrize("method", ["bmm", "vmap"])
def test_batched_actions_equal_per_agent_loop(method):
    a1, a2 = population(), population()  # identical agents (same seeds), separate RNG state
    loop, batched = LoopActor(a1), BatchedActor(a2, method)
    rng = np.random.default_rng(1)
    for step in range(300):
        obs = rng.random((4, 12)).astype(np.float32)
        eps = max(0.0, 1.0 - step / 150)
        snap = make_snapshot(a2, 0)
        torch.testing.assert_close(loop.q_values(obs, None), batched.q_values(obs, snap))
        np.testing.assert_array_equal(loop.act(obs, eps, None), batched.act(obs, eps, snap))
        np.testing.assert_array_equal(loop.greedy(obs, None), batched.greedy(obs, snap))
    # the loop actor acting from a snapshot equals acting from the live nets
    obs = rng.random((4, 12)).astype(np.float32)
    torch.testing.assert_close(
        loop.q_values(obs, make_snapshot(a1, 0)), loop.q_values(obs, None), rtol=0, atol=0
    )


def test_snapshot_is_isolated_from_training():
    ag = filled()
    snap = make_snapshot(ag, 0)
    w = snap.stacked["net.0.weight"].clone()
    SerialTrainer(ag).round()
    assert torch.equal(snap.stacked["net.0.weight"], w)
    assert not torch.equal(make_snapshot(ag, 1).stacked["net.0.weight"], w)
    assert (
        snap.per_agent[2]["net.0.weight"].data_ptr() == snap.stacked["net.0.weight"][2].data_ptr()
    )


def test_threaded_training_is_bit_identical_to_serial():
    a, b = filled(), filled()
    serial, threaded = SerialTrainer(a), ThreadedTrainer(b, workers=2)
    for _ in range(5):
        assert serial.round() == threaded.round()
    threaded.close()
    for x, y in zip(a, b):
        for p, q in zip(x.online.parameters(), y.online.parameters()):
            assert torch.equal(p, q)


def test_batched_training_matches_serial():
    a, b = filled(), filled()
    serial, batched = SerialTrainer(a), BatchedTrainer(b)
    for _ in range(6):  # crosses a target-network sync (target_update=3)
        np.testing.assert_allclose(serial.round(), batched.round(), rtol=1e-5, atol=1e-7)
    for x, y in zip(a, b):
        assert x.updates == y.updates == 6
        for p, q in zip(
            [*x.online.parameters(), *x.target.parameters()],
            [*y.online.parameters(), *y.target.parameters()],
        ):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)
        # each agent keeps its own optimiser state
        assert all(s["step"] == 6 for s in y.optimizer.state.values())


def test_batched_training_gradient_of_one_agent_ignores_the_others():
    a = filled()
    b = filled()  # identical agents (same seeds)
    # Poison agent 3's buffer in b: agents 0-2 must train exactly as in a.
    b[3].buffer._buf.rewards[:] = 1e6
    BatchedTrainer(a).round()
    BatchedTrainer(b).round()
    for i in range(3):
        for p, q in zip(a[i].online.parameters(), b[i].online.parameters()):
            assert torch.equal(p, q)


def test_snapshot_layout_matches_stack_module_state():
    from torch.func import stack_module_state

    ag = population()
    reference, _ = stack_module_state([a.online for a in ag])
    snap = make_snapshot(ag, 7)
    assert snap.version == 7 and list(snap.stacked) == list(reference)
    for name, value in reference.items():
        assert torch.equal(snap.stacked[name], value.detach())
        assert not snap.stacked[name].requires_grad
