"""``--device cuda:N`` (marker ``cuda``; ``nox -s tests-cuda``). They skip cleanly without a GPU.

They check where tensors really are (device *index*), that batched acting and training on
the GPU equal their per-agent references, that the deterministic learner process on the
GPU (started by forkserver, since the collector has initialised CUDA) is bit-identical to
the sequential loop on the GPU, that a CPU and a GPU run start from the same weights, and
the CLI end to end: train on the GPU, evaluate and resume the checkpoint on the CPU.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from aat_helpers import run, tiny_config

from agent_async_train.acting import BatchedActor, LoopActor, make_snapshot
from agent_async_train.config import DQNConfig
from agent_async_train.learners import make_agents
from agent_async_train.training import BatchedTrainer, SerialTrainer

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CUDA = "cuda:0"


def population(device: str, seed: int = 0, n: int = 4, dim: int = 12):
    cfg = DQNConfig(hidden=[32, 32], batch_size=16, target_update=3)
    agents = make_agents(n, dim, 5, np.float32, cfg, np.random.SeedSequence(seed), device)
    rng = np.random.default_rng(seed)
    for a in agents:
        for _ in range(64):
            a.buffer.add(
                rng.random(dim), rng.integers(5), rng.random(), rng.random(dim),
                rng.random() < 0.2, rng.random() < 0.1,
            )
    return agents


def all_tensors(agent):
    state = [s for group in agent.optimizer.state.values() for s in group.values()]
    return [*agent.online.parameters(), *agent.target.parameters(), *state]


def test_agents_snapshots_and_optimiser_state_live_on_the_requested_device():
    cfg = tiny_config(
        parallel={"parallel_actions": True, "parallel_training": True}, run={"device": CUDA}
    )
    ex = run(cfg, epochs=1)
    assert ex.rounds > 0
    want = torch.device(CUDA)
    for agent in ex.agents:
        tensors = all_tensors(agent)
        assert tensors and all(t.device == want for t in tensors if isinstance(t, torch.Tensor))
    snap = make_snapshot(ex.agents, ex.rounds)
    assert all(t.device == want for t in snap.stacked.values())


def test_cpu_and_gpu_agents_start_from_the_same_weights():
    cpu, gpu = population("cpu"), population(CUDA)
    for a, b in zip(cpu, gpu):
        for p, q in zip(a.online.parameters(), b.online.parameters()):
            assert q.device.type == "cuda"
            assert torch.equal(p, q.cpu())


def test_batched_acting_on_the_gpu_equals_the_per_agent_loop():
    a1, a2 = population(CUDA), population(CUDA)
    loop, batched = LoopActor(a1), BatchedActor(a2)
    rng = np.random.default_rng(3)
    for step in range(100):
        obs = rng.random((4, 12)).astype(np.float32)
        snap = make_snapshot(a2, 0)
        torch.testing.assert_close(loop.q_values(obs, None), batched.q_values(obs, snap))
        eps = max(0.0, 1.0 - step / 50)
        np.testing.assert_array_equal(loop.act(obs, eps, None), batched.act(obs, eps, snap))
        greedy = batched.greedy(obs, snap)
        assert isinstance(greedy, np.ndarray)
        np.testing.assert_array_equal(loop.greedy(obs, None), greedy)


def test_batched_training_on_the_gpu_equals_serial_training():
    serial, batched = population(CUDA), population(CUDA)
    t1, t2 = SerialTrainer(serial), BatchedTrainer(batched)
    for _ in range(8):  # crosses target syncs (target_update=3)
        np.testing.assert_allclose(t1.round(), t2.round(), rtol=1e-4, atol=1e-6)
    for a, b in zip(serial, batched):
        for p, q in zip(a.online.parameters(), b.online.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_one_update_on_the_gpu_matches_the_cpu():
    cpu, gpu = population("cpu"), population(CUDA)
    for a, b in zip(cpu, gpu):
        a.train_step(), b.train_step()  # same buffer rows, same sampling RNG
        for p, q in zip(a.online.parameters(), b.online.parameters()):
            torch.testing.assert_close(p, q.cpu(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("batched", [False, True])
def test_deterministic_learner_process_on_the_gpu_is_bit_identical_to_sequential(batched):
    extra = {"parallel_actions": True, "parallel_training": True} if batched else {}
    base = run(tiny_config(parallel=extra, run={"device": CUDA}))
    proc = run(
        tiny_config(
            parallel={"async_learning": True, "learner": "process", "deterministic": True, **extra},
            run={"device": CUDA},
        )
    )
    assert proc.rounds == base.rounds > 0
    for a, b in zip(base.agents, proc.agents):
        assert b.online.net[0].weight.device == torch.device(CUDA)
        for p, q in zip(a.online.parameters(), b.online.parameters()):
            assert torch.equal(p, q)
    assert [h["mean_return"] for h in base.history] == [h["mean_return"] for h in proc.history]


def cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "agent_async_train.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_cli_trains_on_the_gpu_then_evaluates_and_resumes_on_the_cpu(tmp_path):
    out = tmp_path / "run"
    common = ["--quiet", "--no-tensorboard", "game.size=7", "game.max_turns=30", "run.episodes_per_epoch=3"]
    res = cli("run", "gemgrid", "--epochs", "2", "--all-parallel", "--device", CUDA, "--out", str(out), *common)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["epochs"] == 2 and summary["env_steps"] > 0
    assert json.loads((out / "config.json").read_text())["run"]["device"] == CUDA
    ckpt = str(out / "checkpoint.pt")
    ev = cli("evaluate", ckpt, "--episodes", "2", "--device", "cpu", "--quiet")
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["episodes"] == 2
    again = cli("run", "--resume", ckpt, "--epochs", "3", "--device", "cpu", "--quiet", "--no-tensorboard")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["epochs"] == 3


def test_a_device_index_that_does_not_exist_is_one_line_exit_2():
    res = cli("run", "--epochs", "1", "--device", f"cuda:{torch.cuda.device_count()}", "--quiet")
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0
    assert "visible" in res.stderr and "cuda:0" in res.stderr
