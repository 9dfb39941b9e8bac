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


@pytest.mark.parametrize(("batched", "learners"), [(False, 1), (True, 1), (False, 2), (True, 2)])
def test_deterministic_learner_process_is_bit_identical_to_sequential(batched, learners):
    extra = {"parallel_actions": True, "parallel_training": True} if batched else {}
    base = run(tiny_config(parallel=extra))
    proc = run(process_cfg(deterministic=True, learners=learners, **extra))
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


def test_async_learner_processes_keep_the_replay_ratio_and_own_disjoint_agents():
    cfg = process_cfg(learners=2)
    ex = Experiment(cfg).start()
    try:
        assert isinstance(ex.learner, ProcessLearner)
        pids = {p.pid for p in ex.learner.processes}
        assert len(pids) == 2 and os.getpid() not in pids
        assert [list(lp.owned) for lp in ex.learner._learners] == [[0, 1], [2]]
        for _ in range(2):
            ex.run_epoch()
            lag = ex.schedule.allowed(ex.env_steps) - ex.learner.rounds
            assert 0 <= lag <= ex.learner.slack  # bounded: never ahead, never far behind
    finally:
        ex.close()
    assert ex.rounds == ex.schedule.allowed(ex.env_steps)  # close() drained the due rounds
    assert all(a.updates == ex.rounds for a in ex.agents)


@pytest.mark.parametrize("learners", [1, 2])
def test_a_learner_exception_is_reported_in_the_main_process(monkeypatch, learners):
    from agent_async_train import training

    def boom(self):
        if self.agents[-1].agent_id == 2:  # the last agent's owner fails (K=2: the second)
            raise ValueError("exploding gradient in the learner")
        return [a.train_step() for a in self.agents]

    monkeypatch.setattr(training.SerialTrainer, "round", boom)  # inherited by the forked learner
    ex = Experiment(process_cfg(learners=learners)).start()
    t0 = time.perf_counter()
    where = "the learner process" if learners == 1 else r"learner process 1 \(agent 2\)"
    with pytest.raises(LearnerError, match=f"{where} failed: .*exploding gradient in the learner"):
        for _ in range(5):
            ex.run_epoch()
    assert time.perf_counter() - t0 < 60
    ex.close(drain=False)
    assert not ex.agents[0].online.training or True
    assert ex.learner is None


@pytest.mark.parametrize("learners", [1, 2])
def test_a_killed_learner_is_reported_within_a_bounded_time(learners):
    ex = Experiment(process_cfg(deterministic=True, learners=learners)).start()
    victim = ex.learner.processes[-1]
    os.kill(victim.pid, signal.SIGKILL)
    t0 = time.perf_counter()
    with pytest.raises(LearnerError, match="died"):
        for _ in range(5):
            ex.run_epoch()
    assert time.perf_counter() - t0 < 30  # the collector never blocks forever
    processes = ex.learner.processes
    ex.close(drain=False)
    assert not any(p.is_alive() for p in processes)  # the other learner is stopped too


def test_checkpoint_from_learner_processes_resumes_exactly(tmp_path):
    cfg = process_cfg(deterministic=True, learners=2)
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
