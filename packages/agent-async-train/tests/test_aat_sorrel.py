"""sorrel's own games: the loop follows sorrel's run_experiment, parallel collection is exact,
checkpoints resume exactly, and the CLI trains, evaluates and records them."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

pytest.importorskip("sorrel")

from agent_async_train.cli import main  # noqa: E402
from agent_async_train.config import Config  # noqa: E402
from agent_async_train.sorrel_run import (  # noqa: E402
    SorrelExperiment,
    _rng_state,
    _set_rng_state,
    seeded_model_init,
)

TINY = {"world": {"height": 7, "width": 7}, "experiment": {"max_turns": 8}}


def tiny_cfg(**parallel) -> Config:
    cfg = Config()
    cfg.game.name = "sorrel:treasurehunt"
    cfg.game.options = copy.deepcopy(TINY)
    cfg.run.episodes_per_epoch = 4
    cfg.run.eval_episodes = 2
    cfg.run.tensorboard = False
    for k, v in parallel.items():
        setattr(cfg.parallel, k, v)
    return cfg


def model_state(agents) -> list:
    out = []
    for a in agents:
        m = a.model
        mem = m.memory
        out.append(
            (
                {k: v.clone() for k, v in m.state_dict().items()},
                m.epsilon,
                mem.idx,
                mem.size,
                mem.states.copy(),
                mem.actions.copy(),
                mem.rewards.copy(),
                mem.dones.copy(),
            )
        )
    return out


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x[0].keys() == y[0].keys()
        for k in x[0]:
            assert torch.equal(x[0][k], y[0][k]), k
        assert x[1:4] == y[1:4]
        for u, v in zip(x[4:], y[4:]):
            np.testing.assert_array_equal(u, v)


def test_layers_off_follow_sorrels_own_run_experiment_step_for_step(tmp_path):
    # Enough episodes for several train steps (the IQN trains once its memory holds a batch).
    cfg = tiny_cfg()
    cfg.run.episodes_per_epoch = 12
    ours = SorrelExperiment(cfg)
    rng = _rng_state()
    # a second build with the same seed: sorrel's models get their weights from the run seed
    upstream_env = SorrelExperiment(cfg).env
    assert_same(model_state(ours.agents), model_state(upstream_env.agents))
    ours.run_epoch()
    _set_rng_state(rng)
    upstream_env.config.experiment.epochs = cfg.run.episodes_per_epoch - 1  # it runs epochs + 1
    upstream_env.run_experiment(animate=False, logging=False, output_dir=tmp_path)
    assert_same(model_state(ours.agents), model_state(upstream_env.agents))
    assert ours.agents[0].model.memory.size > 64  # the models did train (loss was computed)
    assert ours.history[-1]["loss"] != 0.0


def test_model_weights_come_from_the_run_seed_and_differ_between_agents_and_seeds():
    def weights(seed):
        cfg = tiny_cfg()
        cfg.run.seed = seed
        return [torch.cat([p.flatten() for p in a.model.parameters()]) for a in SorrelExperiment(cfg).agents]

    first, again, other = weights(0), weights(0), weights(1)
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    assert not torch.equal(first[0], first[1])  # each agent its own spawned seed
    assert not any(torch.equal(x, y) for x, y in zip(first, other))
    before = torch.random.seed
    with seeded_model_init(0, 9):
        pass
    assert torch.random.seed is before  # the original is back after the build


@pytest.mark.parametrize("async_learning", [False, True])
def test_parallel_collection_in_processes_equals_in_process(async_learning):
    cfg = tiny_cfg(env_workers=2, async_learning=async_learning)
    a = SorrelExperiment(cfg)
    b = SorrelExperiment(cfg)
    for x, y in zip(a.agents, b.agents):  # same starting weights for both
        y.model.load_state_dict(x.model.state_dict())
    rng = _rng_state()
    a.start(in_process=False)
    try:
        a.run_epoch()
        a.run_epoch()
    finally:
        a.close()
    _set_rng_state(rng)
    b.start(in_process=True)
    try:
        b.run_epoch()
        b.run_epoch()
    finally:
        b.close()
    assert a.episodes == b.episodes == 8
    assert_same(model_state(a.agents), model_state(b.agents))
    assert a.history[-1]["mean_return"] == b.history[-1]["mean_return"]


def test_checkpoint_resume_is_exact(tmp_path):
    from agent_async_train.checkpoint import load
    from agent_async_train.sorrel_run import save_checkpoint

    cfg = tiny_cfg(env_workers=2, async_learning=True)
    straight = SorrelExperiment(cfg).start(in_process=True)
    straight.run_epoch()
    save_checkpoint(tmp_path / "c.pt", straight)
    straight.run_epoch()
    straight.close()

    # the same first epoch, then resume from the file in a fresh experiment
    state = load(tmp_path / "c.pt")
    resumed = SorrelExperiment(cfg)
    resumed.restore(state)
    resumed.start(in_process=True)
    resumed.run_epoch()
    resumed.close()
    assert resumed.episodes == straight.episodes == 8
    assert_same(model_state(resumed.agents), model_state(straight.agents))


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--parallel-actions", "does not apply to sorrel games"),
        ("--parallel-training", "does not apply to sorrel games"),
        ("--async-learning", "set parallel.env_workers"),
        ("--device=cuda:0", "sorrel's examples build their models on the CPU"),
    ],
)
def test_layers_that_do_not_apply_are_refused(flag, message, tmp_path, capsys):
    code = main(["run", "sorrel:treasurehunt", flag, "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_cli_trains_evaluates_resumes_and_records(tmp_path, capsys):
    opts = "game.options={world: {height: 7, width: 7}, experiment: {max_turns: 8}}"
    out = tmp_path / "th"
    common = ["run.episodes_per_epoch=2", "run.eval_episodes=1", "--no-tensorboard", "--quiet"]
    code = main(["run", "sorrel:treasurehunt", opts, "--epochs", "1", "--out", str(out),
                 "parallel.env_workers=2", "--async-learning", *common])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["model"] == "iRainbowModel" and summary["agents"] == 2
    assert summary["reward_name"] == "sorrel treasurehunt reward" and summary["episodes"] == 2
    code = main(["run", "--resume", str(out / "checkpoint.pt"), "--epochs", "2", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out)["episodes"] == 4
    gif = tmp_path / "episode.gif"
    code = main(["evaluate", str(out / "checkpoint.pt"), "--episodes", "1", "--record", str(gif)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    assert result["epoch"] == 2 and result["recording"] == str(gif)
    assert gif.read_bytes()[:6] in (b"GIF89a", b"GIF87a")
    assert "sorrel treasurehunt reward" in captured.err


def test_bulk_replay_writes_what_sorrels_add_writes_row_by_row():
    from sorrel.buffers import Buffer

    from agent_async_train.sorrel_run import _bulk_add

    rng = np.random.default_rng(0)
    row_by_row, bulk = (Buffer(5, (3,), n_frames=2, hidden=(2,)) for _ in range(2))
    for n in (3, 4, 0, 7):  # wraps the 5-row ring, twice within one episode at the end
        rows = {
            "states": rng.random((n, 3), dtype=np.float32),
            "actions": rng.integers(0, 4, n),
            "rewards": rng.random(n, dtype=np.float32),
            "dones": (rng.random(n) < 0.3).astype(np.float32),
            "extra": {"hidden": rng.integers(0, 9, (n, 2))},
        }
        for t in range(n):
            row_by_row.add(rows["states"][t], rows["actions"][t], rows["rewards"][t],
                           rows["dones"][t], hidden=rows["extra"]["hidden"][t])
        _bulk_add(bulk, rows)
        row_by_row.add_empty()
        bulk.add_empty()
        assert (bulk.idx, bulk.size) == (row_by_row.idx, row_by_row.size)
        for field in ("states", "actions", "rewards", "dones"):
            np.testing.assert_array_equal(getattr(bulk, field), getattr(row_by_row, field))
        np.testing.assert_array_equal(bulk.extra_data["hidden"], row_by_row.extra_data["hidden"])


class _SubmitSpy:
    """Wraps the collection pool: records what each collected episode was played with."""

    def __init__(self, experiment):
        from agent_async_train.sorrel_run import collect_episode

        self._pool, self._collect, self._ex, self.played = experiment._pool, collect_episode, experiment, {}

    def submit(self, fn, *args):
        if fn is self._collect:  # (episode, weights, epsilons): weights after ex.episodes train steps
            episode, _, epsilons = args
            self.played[episode] = (list(epsilons), self._ex.episodes)
        return self._pool.submit(fn, *args)

    def __getattr__(self, name):
        return getattr(self._pool, name)


@pytest.mark.parametrize("async_learning, lags", [(False, {0, 1}), (True, {2, 3})])
def test_parallel_collection_runs_the_loops_algorithm_with_a_stated_policy_lag(async_learning, lags):
    # `all` and parallel collection vs the loop on the same seed: the same number of sorrel
    # train steps per agent, the same epsilon for every episode, the same memory positions and
    # epsilons afterwards; what differs is only which weights play an episode (and the RNG draws).
    cfg = tiny_cfg()
    cfg.run.episodes_per_epoch = 10
    loop = SorrelExperiment(cfg)
    loop_eps, original = [], loop.upstream_episode

    def recorded():
        loop_eps.append([a.model.epsilon for a in loop.agents])
        return original()

    loop.upstream_episode = recorded
    loop.run_epoch()

    cfg.parallel.env_workers, cfg.parallel.async_learning = 2, async_learning
    par = SorrelExperiment(cfg).start(in_process=True)
    par._pool = spy = _SubmitSpy(par)
    try:
        par.run_epoch()
    finally:
        par.close()
    assert par.episodes == loop.episodes == 10 and sorted(spy.played) == list(range(10))
    for e, (epsilons, trained) in spy.played.items():
        assert epsilons == pytest.approx(loop_eps[e], rel=1e-12)
        assert e - trained in (lags if e >= 2 else {0, 1})  # round 1 has nothing to lag behind
    for a, b in zip(loop.agents, par.agents):
        steps = [[s["step"] for s in m.optimizer.state.values()] for m in (a.model, b.model)]
        assert steps[0] == steps[1] and steps[0] and all(n > 0 for n in steps[0])
        assert a.model.epsilon == b.model.epsilon
        assert (a.model.memory.idx, a.model.memory.size) == (b.model.memory.idx, b.model.memory.size)
