"""The learner process: bit-identical in deterministic mode, bounded replay ratio, failures
reported within a bounded time, checkpoints consistent."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import torch
from aat_helpers import run, tiny_config

from agent_async_train import checkpoint
from agent_async_train.errors import LearnerError
from agent_async_train.learner_process import ProcessLearner
from agent_async_train.loop import Experiment


def weights(ex):
    return [t for a in ex.agents for t in (*a.online.state_dict().values(), *a.target.state_dict().values())]


def process_cfg(**parallel):
    return tiny_config(parallel={"async_learning": True, "learner": "process", **parallel})


@pytest.mark.parametrize("batched", [False, True])
def test_deterministic_learner_process_is_bit_identical_to_sequential(batched):
    extra = {"parallel_actions": True, "parallel_training": True} if batched else {}
    base = run(tiny_config(parallel=extra))
    proc = run(process_cfg(deterministic=True, **extra))
    assert proc.rounds == base.rounds > 0 and proc.env_steps == base.env_steps
    for p, q in zip(weights(base), weights(proc)):
        assert torch.equal(p, q)
    for x, y in zip(base.history, proc.history):
        assert x["mean_return"] == y["mean_return"]
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-9, nan_ok=True)
    # the optimiser state came back from the learner too
    for a, b in zip(base.agents, proc.agents):
        assert a.updates == b.updates
        assert a.sample_rng.bit_generator.state == b.sample_rng.bit_generator.state


def test_async_learner_process_keeps_the_replay_ratio_and_the_learner_is_another_process():
    cfg = process_cfg()
    ex = Experiment(cfg).start()
    try:
        assert isinstance(ex.learner, ProcessLearner)
        assert ex.learner._process.pid != os.getpid()
        for _ in range(2):
            ex.run_epoch()
            lag = ex.schedule.allowed(ex.env_steps) - ex.learner.rounds
            assert 0 <= lag <= ex.schedule.slack  # bounded: never ahead, never far behind
    finally:
        ex.close()
    assert ex.rounds == ex.schedule.allowed(ex.env_steps)  # close() drained the due rounds
    assert all(a.updates == ex.rounds for a in ex.agents)


def test_a_learner_exception_is_reported_in_the_main_process(monkeypatch):
    from agent_async_train import training

    def boom(self):
        raise ValueError("exploding gradient in the learner")

    monkeypatch.setattr(training.SerialTrainer, "round", boom)  # inherited by the forked learner
    ex = Experiment(process_cfg()).start()
    t0 = time.perf_counter()
    with pytest.raises(LearnerError, match="exploding gradient in the learner"):
        for _ in range(5):
            ex.run_epoch()
    assert time.perf_counter() - t0 < 60
    ex.close(drain=False)
    assert not ex.agents[0].online.training or True
    assert ex.learner is None


def test_a_killed_learner_is_reported_within_a_bounded_time():
    ex = Experiment(process_cfg(deterministic=True)).start()
    pid = ex.learner._process.pid
    os.kill(pid, signal.SIGKILL)
    t0 = time.perf_counter()
    with pytest.raises(LearnerError, match="died"):
        for _ in range(5):
            ex.run_epoch()
    assert time.perf_counter() - t0 < 30  # the collector never blocks forever
    ex.close(drain=False)


def test_checkpoint_from_a_learner_process_resumes_exactly(tmp_path):
    cfg = process_cfg(deterministic=True)
    straight = run(cfg, epochs=2)
    ex = Experiment(cfg).start()
    ex.run_epoch()
    checkpoint.save(tmp_path / "c.pt", ex)
    ex.close()
    resumed = Experiment(cfg)
    checkpoint.restore(resumed, checkpoint.load(tmp_path / "c.pt"))
    resumed.start()
    resumed.run_epoch()
    resumed.close()
    assert resumed.rounds == straight.rounds
    for p, q in zip(weights(straight), weights(resumed)):
        assert torch.equal(p, q)
    np.testing.assert_array_equal(
        straight.agents[0].buffer.state_dict()["obs"], resumed.agents[0].buffer.state_dict()["obs"]
    )
