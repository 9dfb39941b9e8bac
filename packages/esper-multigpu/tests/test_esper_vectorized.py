"""The vectorised loop: device mapping, parallel == serial, AMP on CPU, checkpoints, telemetry."""

import json

import pytest
import torch

from esper_multigpu.checkpoint import CheckpointError
from esper_multigpu.simic.vectorized import batch_seeds, device_labels
from esper_multigpu.telemetry import validate_file
from esper_multigpu.tolaria.env import effective_amp
from esper_multigpu.train import run_training
from parallel_core.devices import DeviceError


def quiet_log(lines):
    return lines.append


def policy_params(trainer):
    return [p.detach().clone() for p in trainer.agent.net.parameters()]


def records(path):
    return [json.loads(line) for line in open(path)]


def test_device_labels_and_seeds():
    assert device_labels(["cpu", "cpu"]) == ["cpu#0", "cpu#1"]
    assert device_labels(["cuda:0", "cuda:1"]) == ["cuda:0", "cuda:1"]
    a, sa, ua = batch_seeds(42, 3, 12, 4)
    b, _, _ = batch_seeds(42, 7, 12, 2)
    assert a[:2] == b  # an env's seed belongs to its episode, not to its batch or place
    c, _, _ = batch_seeds(42, 0, 14, 2)
    assert a[2:] == c
    assert len(set(a)) == 4 and batch_seeds(42, 4, 16, 4)[0] != a
    assert batch_seeds(42, 4, 12, 4)[1:] != (sa, ua)  # sampling/update seeds belong to the batch


def test_two_cpu_devices_equal_one(tiny_config, tmp_path):
    """`--devices cpu cpu` (two groups, two threads) gives bit-identical results to `--devices cpu`."""
    out = {}
    for name, devices in (("one", ["cpu"]), ("two", ["cpu", "cpu"])):
        lines = []
        cfg = tiny_config(
            devices=devices, n_envs=3, episodes=3, max_epochs=4, telemetry_dir=str(tmp_path / name), quiet=False
        )
        summary, trainer = run_training(cfg, log=lines.append)
        out[name] = (summary, trainer, lines)
    one, two = out["one"], out["two"]
    assert one[0]["assignment"] == {"cpu": 3}
    assert two[0]["assignment"] == {"cpu#0": 2, "cpu#1": 1}
    assert any("3 env(s) -> devices: cpu#0: 2, cpu#1: 1" in s for s in two[2])
    assert len(two[1].groups) == 2
    assert all(torch.equal(a, b) for a, b in zip(policy_params(one[1]), policy_params(two[1])))
    r1, r2 = records(tmp_path / "one" / "ppo.jsonl"), records(tmp_path / "two" / "ppo.jsonl")
    volatile = ("wall_s", "env_epochs_per_s", "devices", "assignment")

    def strip(r):
        return {k: v for k, v in r.items() if k not in volatile}

    assert [strip(r) for r in r1] == [strip(r) for r in r2]


def test_unknown_device_fails_fast(tiny_config):
    with pytest.raises(DeviceError, match="cuda"):
        run_training(tiny_config(devices=["cuda:7"]), log=lambda s: None)
    with pytest.raises(DeviceError, match="unknown device"):
        run_training(tiny_config(devices=["tpu"]), log=lambda s: None)


def test_amp_on_cpu_is_a_warned_noop(tiny_config):
    assert effective_amp("bf16", "cpu") == "off" and effective_amp("fp16", "cuda:0") == "fp16"
    with pytest.raises(ValueError, match="--amp"):
        effective_amp("int8", "cpu")
    results = {}
    for amp in ("off", "bf16", "fp16"):
        lines = []
        summary, trainer = run_training(
            tiny_config(amp=amp, episodes=1, n_envs=1), log=lines.append
        )
        env = trainer.envs[0]
        assert env.amp == "off" and env.scaler is None and env.amp_dtype is None
        assert summary["amp"] == amp and summary["amp_effective"] == {"cpu": "off"}
        results[amp] = (summary["batches"], policy_params(trainer), lines)
    assert not any("warning" in s for s in results["off"][2])
    for amp in ("bf16", "fp16"):
        assert any(f"--amp {amp} is CUDA-only" in s and "no-op" in s for s in results[amp][2])
        assert [b["mean_return"] for b in results[amp][0]] == [
            b["mean_return"] for b in results["off"][0]
        ]
        assert all(torch.equal(a, b) for a, b in zip(results[amp][1], results["off"][1]))


def test_checkpoint_save_resume_equals_uninterrupted(tiny_config, tmp_path):
    full_cfg = tiny_config(n_envs=2, episodes=4)
    full, full_trainer = run_training(full_cfg, log=lambda s: None)
    ckpt = tmp_path / "ckpt.pt"
    part, _ = run_training(tiny_config(n_envs=2, episodes=2, save=str(ckpt)), log=lambda s: None)
    assert ckpt.exists() and len(part["batches"]) == 1
    lines = []
    resumed, resumed_trainer = run_training(
        tiny_config(n_envs=2, episodes=4, resume=str(ckpt), save=str(ckpt), quiet=False), log=lines.append
    )
    assert any("resumed from" in s and "2 of 4 episodes done" in s for s in lines)
    assert resumed["episodes"] == 4 and len(resumed["batches"]) == 2
    assert all(
        torch.equal(a, b)
        for a, b in zip(policy_params(full_trainer), policy_params(resumed_trainer))
    )
    assert [b["mean_return"] for b in resumed["batches"]] == [
        b["mean_return"] for b in full["batches"]
    ]
    with pytest.raises(CheckpointError, match="slots"):
        run_training(
            tiny_config(n_envs=2, episodes=4, resume=str(ckpt), slots=["early"]), log=lambda s: None
        )
    with pytest.raises(CheckpointError, match="does not exist"):
        run_training(tiny_config(resume=str(tmp_path / "missing.pt")), log=lambda s: None)


def test_telemetry_file_validates_and_covers_every_slot(tiny_config, tmp_path):
    cfg = tiny_config(
        mode="heuristic", n_envs=2, episodes=2, max_epochs=8, telemetry_dir=str(tmp_path)
    )
    summary, _ = run_training(cfg, log=lambda s: None)
    path = tmp_path / "heuristic.jsonl"
    n, errors = validate_file(path)
    assert errors == [] and n == sum(summary["telemetry_records"].values())
    recs = records(path)
    assert recs[0]["type"] == "run" and recs[-2]["type"] == "batch"
    assert recs[-1]["type"] == "end" and recs[-1]["status"] == "completed"
    assert recs[0]["amp_effective"] == {"cpu": "off"}
    slots = [r for r in recs if r["type"] == "slot"]
    assert len(slots) == 2 * 8 * 3  # envs x epochs x slots
    assert {(r["env"], r["epoch"], r["slot"]) for r in slots} == {
        (e, t, s) for e in range(2) for t in range(1, 9) for s in ("early", "mid", "late")
    }
    life = [r for r in recs if r["type"] == "lifecycle"]
    assert {r["event"] for r in life} >= {"germinated", "training"}
    assert len({r["slot"] for r in life if r["event"] == "germinated"}) >= 2


def test_resume_with_a_different_policy_shape_is_a_checkpoint_error(tiny_config, tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    run_training(
        tiny_config(n_envs=1, episodes=1, max_epochs=2, save=str(ckpt)), log=lambda s: None
    )
    cfg = tiny_config(n_envs=1, episodes=2, max_epochs=2, resume=str(ckpt), ppo={"hidden": 16})
    with pytest.raises(CheckpointError, match="does not fit this run's policy"):
        run_training(cfg, log=lambda s: None)


def test_resume_after_a_partial_batch_and_on_other_envs_and_devices(tiny_config, tmp_path):
    """--episodes counts episodes: 3 episodes on 2 envs end in a partial batch; resuming to 5
    on 1 env, then to 6 on two CPU groups, trains exactly the missing episodes, and episode
    k trains the same host whatever the batch layout (its seed belongs to the episode)."""
    ckpt, tel = tmp_path / "ckpt.pt", tmp_path / "tel"
    part, _ = run_training(
        tiny_config(n_envs=2, episodes=3, save=str(ckpt), telemetry_dir=str(tel)), log=lambda s: None
    )
    assert part["episodes"] == 3 and [len(b["episodes"]) for b in part["batches"]] == [2, 1]
    state = torch.load(ckpt, weights_only=True)  # plain tensors and values only
    assert state["episodes_done"] == 3
    more, _ = run_training(
        tiny_config(n_envs=1, episodes=5, resume=str(ckpt), save=str(ckpt), telemetry_dir=str(tel)),
        log=lambda s: None,
    )
    assert more["episodes"] == 5 and more["episodes_this_run"] == 2
    assert [b["episodes"] for b in more["batches"]] == [[0, 1], [2], [3], [4]]
    last, _ = run_training(
        tiny_config(n_envs=2, episodes=6, devices=["cpu", "cpu"], resume=str(ckpt), telemetry_dir=str(tel)),
        log=lambda s: None,
    )
    assert last["episodes_this_run"] == 1 and last["batches"][-1]["episodes"] == [5]
    recs = records(tel / "ppo.jsonl")  # appended, never overwritten
    assert [r["start_episode"] for r in recs if r["type"] == "run"] == [0, 3, 5]
    assert [r["status"] for r in recs if r["type"] == "end"] == ["completed"] * 3
    assert sorted(e for r in recs if r["type"] == "batch" for e in r["episodes"]) == list(range(6))
    with pytest.raises(CheckpointError, match="already has 5 episode"):
        run_training(tiny_config(n_envs=2, episodes=5, resume=str(ckpt)), log=lambda s: None)


def test_fresh_run_moves_old_telemetry_aside(tiny_config, tmp_path):
    cfg = lambda: tiny_config(mode="fixed", n_envs=1, episodes=1, max_epochs=2, telemetry_dir=str(tmp_path))  # noqa: E731
    run_training(cfg(), log=lambda s: None)
    first = (tmp_path / "fixed.jsonl").read_text()
    run_training(cfg(), log=lambda s: None)
    assert (tmp_path / "fixed.1.jsonl").read_text() == first
    assert validate_file(tmp_path / "fixed.jsonl")[1] == []


def test_on_batch_sees_every_batch_after_its_update(tiny_config):
    """``run_training(on_batch=...)`` is called once per batch, in order, with the batch's
    record and the trainer whose policy already has that batch's PPO update."""
    seen = []

    def on_batch(record, trainer):
        seen.append((record["batch"], record["episodes"], policy_params(trainer)))

    summary, trainer = run_training(tiny_config(n_envs=2, episodes=5), log=lambda s: None, on_batch=on_batch)
    assert [(b, e) for b, e, _ in seen] == [(b["batch"], b["episodes"]) for b in summary["batches"]]
    assert [b for b, _, _ in seen] == [0, 1, 2]
    assert all(torch.equal(a, b) for a, b in zip(seen[-1][2], policy_params(trainer)))
    assert not all(torch.equal(a, b) for a, b in zip(seen[0][2], seen[-1][2]))  # updates in between


def test_first_episode_runs_the_same_hosts_as_a_run_reaching_them(tiny_config):
    """`run_training(first_episode=k)` runs episode k's host (its seed belongs to the episode),
    as a run from episode 0 does when it gets there: a validation set of the same root seed."""
    full, _ = run_training(tiny_config("fixed", n_envs=1, episodes=3), log=lambda s: None)
    shifted, _ = run_training(tiny_config("fixed", n_envs=1, episodes=1), log=lambda s: None, first_episode=2)
    assert shifted["batches"][0]["episodes"] == [2]
    assert shifted["batches"][0]["final_val_acc"] == full["batches"][2]["final_val_acc"]
    assert shifted["batches"][0]["final_val_acc"] != full["batches"][0]["final_val_acc"]
    with pytest.raises(ValueError, match="first_episode"):
        run_training(tiny_config("fixed", n_envs=1, episodes=1), log=lambda s: None, first_episode=-1)
