import numpy as np
import pytest
import torch
from aat_helpers import run, tiny_config

from agent_async_train import checkpoint
from agent_async_train.config import Config
from agent_async_train.loop import Experiment


def params(ex: Experiment) -> list[torch.Tensor]:
    return [
        t
        for a in ex.agents
        for t in (*a.online.state_dict().values(), *a.target.state_dict().values())
    ]


def assert_same(a: Experiment, b: Experiment) -> None:
    assert a.env_steps == b.env_steps and a.rounds == b.rounds
    for p, q in zip(params(a), params(b)):
        assert torch.equal(p, q)
    for x, y in zip(a.history, b.history):
        assert x["mean_return"] == y["mean_return"] and x["loss"] == y["loss"]


def test_sequential_runs_are_bit_identical():
    a, b = run(tiny_config()), run(tiny_config())
    assert a.rounds > 0
    assert_same(a, b)
    c = run(tiny_config(run={"seed": 1}))
    assert not all(torch.equal(p, q) for p, q in zip(params(a), params(c)))


def test_threaded_training_run_equals_sequential_run():
    base = run(tiny_config())
    threaded = run(
        tiny_config(
            parallel={"parallel_training": True, "training_backend": "threads", "num_workers": 2}
        )
    )
    assert_same(base, threaded)


def test_batched_modes_follow_the_sequential_trajectory():
    base = run(tiny_config())
    fast = run(tiny_config(parallel={"parallel_actions": True, "parallel_training": True}))
    assert fast.rounds == base.rounds and fast.env_steps == base.env_steps
    # Same actions and same minibatches; float results agree to rounding.
    for p, q in zip(params(base), params(fast)):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(
    "flags",
    [
        {"async_learning": True},
        {"async_learning": True, "learner": "thread"},
        {"async_learning": True, "parallel_actions": True, "parallel_training": True},
    ],
)
def test_async_run_does_the_same_number_of_updates(flags):
    base = run(tiny_config())
    ex = run(tiny_config(parallel=flags))
    assert ex.rounds == base.rounds and ex.env_steps == base.env_steps
    assert all(a.updates == ex.rounds for a in ex.agents)
    # the thread learner lags at most one interval's rounds, learner processes parallel.max_lag
    bound = ex.schedule.slack * (1 if flags.get("learner") == "thread" else 4)
    assert all(0 <= row["policy_lag_mean"] <= bound for row in ex.history)


def test_learner_failure_propagates_out_of_the_run(monkeypatch):
    # the thread learner (the process learner's failures: test_aat_learner_process.py)
    cfg = tiny_config(parallel={"async_learning": True, "learner": "thread"})
    ex = Experiment(cfg)
    calls = {"n": 0}
    original = ex.trainer.round

    def failing_round():
        calls["n"] += 1
        if calls["n"] == 3:
            raise FloatingPointError("loss became NaN")
        return original()

    monkeypatch.setattr(ex.trainer, "round", failing_round)
    ex.start()
    with pytest.raises(FloatingPointError, match="NaN"):
        for _ in range(cfg.run.epochs):
            ex.run_epoch()
    ex.close(drain=False)
    assert ex.learner is None


def test_checkpoint_resume_is_exact(tmp_path):
    straight = run(tiny_config(run={"epochs": 3}))
    first = run(tiny_config(run={"epochs": 3}), epochs=2)
    checkpoint.save(tmp_path / "ck.pt", first)
    state = checkpoint.load(tmp_path / "ck.pt")
    resumed = Experiment(checkpoint.config_of(state))
    checkpoint.restore(resumed, state)
    assert resumed.epoch == 2
    resumed.start()
    resumed.run_epoch()
    resumed.close()
    assert_same(straight, resumed)
    for a, b in zip(straight.agents, resumed.agents):
        assert a.act_rng.random() == b.act_rng.random()
        np.testing.assert_array_equal(a.buffer.state_dict()["obs"], b.buffer.state_dict()["obs"])


def test_async_learning_beats_random_play():
    """A fixed async budget on the default game: trained agents clearly out-collect random ones."""
    cfg = Config()
    cfg.parallel.async_learning = True
    cfg.parallel.parallel_actions = True
    cfg.run.tensorboard = False
    cfg.run.seed = 3
    ex = run(cfg, epochs=8)  # 4000 environment steps
    result = ex.evaluate(episodes=20)
    greedy = np.array(result["greedy_per_agent"])
    # Random play gets ~3 gems per agent per episode; demand a wide margin for every agent.
    assert result["greedy_score"] > result["random_score"] + 2.0, result
    assert (greedy > result["random_score"] + 1.0).all(), result
