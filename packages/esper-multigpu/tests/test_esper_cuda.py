"""CUDA smoke tests (marker ``cuda``; ``nox -s tests-cuda``). They skip cleanly without a GPU.

They check where tensors really are (device *index*, not just "cuda"), run ``--amp bf16``
and ``fp16`` on one and on two GPUs, and last long enough for seeds to blend, so the
counterfactual evaluations run on ``cuda:1`` too. The per-batch step runs under
``torch.cuda.set_sync_debug_mode("error")``: any host synchronisation in it fails.
"""

import json
import math
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.cuda

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
needs_two = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2+ CUDA devices")

#: fast lifecycle: germinate at once, blend after one epoch, so 5 epochs reach PROBATIONARY
FAST = dict(
    mode="heuristic",
    task="digits",
    max_epochs=5,
    env={"width": 8, "batch_size": 64},
    gates={"min_training_epochs": 1, "blend_epochs": 2},
    heuristic={"warmup_epochs": 0, "germinate_interval": 1},
)


def check_placement(trainer):
    for env in trainer.envs:
        want = torch.device(env.device)
        assert want.type == "cuda" and want.index is not None
        tensors = [*env.model.parameters(), *env.shadow.parameters(), env.x_train, env.x_val]
        assert all(t.device == want for t in tensors), env.device
        assert env.stream is not None and env.stream.device == want
        assert env.params_finite()


def run(tiny_config, tmp_path, devices, amp, n_envs):
    from esper_multigpu.telemetry import validate_file
    from esper_multigpu.train import run_training

    cfg = tiny_config(
        devices=devices, amp=amp, n_envs=n_envs, episodes=n_envs, telemetry_dir=str(tmp_path), **FAST
    )
    summary, trainer = run_training(cfg, log=print)
    assert validate_file(tmp_path / "heuristic.jsonl")[1] == []  # finite numbers only
    recs = [json.loads(line) for line in open(tmp_path / "heuristic.jsonl")]
    return summary, trainer, recs


@needs_cuda
@pytest.mark.parametrize("amp", ["off", "bf16", "fp16"])
def test_one_gpu_amp_modes(tiny_config, tmp_path, amp):
    summary, trainer, recs = run(tiny_config, tmp_path, ["cuda:0"], amp, 2)
    check_placement(trainer)
    assert summary["amp_effective"] == {"cuda:0": amp}
    assert recs[0]["amp_effective"] == {"cuda:0": amp}
    for env in trainer.envs:
        assert env.amp == amp and (env.scaler is not None) == (amp == "fp16")
    blended = [r for r in recs if r["type"] == "slot" and r["alpha"] > 0]
    assert blended and all(math.isfinite(r["contribution"]) for r in blended)
    assert summary["batches"][-1]["mean_final_val_acc"] > 0.3


@needs_two
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_two_gpus_blend_and_counterfactual_on_cuda1(tiny_config, tmp_path, amp):
    summary, trainer, recs = run(tiny_config, tmp_path, ["cuda:0", "cuda:1"], amp, 4)
    check_placement(trainer)
    assert summary["assignment"] == {"cuda:0": 2, "cuda:1": 2}
    assert summary["amp_effective"] == {"cuda:0": amp, "cuda:1": amp}
    on1 = [r for r in recs if r["type"] == "slot" and r["device"] == "cuda:1" and r["alpha"] > 0]
    assert on1, "no seed blended on cuda:1, so its counterfactual never ran there"
    assert {r["device"] for r in recs if r["type"] == "lifecycle" and r["event"] == "blending"} == {
        "cuda:0",
        "cuda:1",
    }


@needs_cuda
@pytest.mark.parametrize("amp", ["off", "bf16", "fp16"])
def test_training_step_never_syncs_with_the_host(amp):
    from esper_multigpu.config import EnvConfig
    from esper_multigpu.tolaria.env import Action, MorphoEnv
    from esper_multigpu.tolaria.tasks import DeviceData, load_digits_task

    task = load_digits_task()
    env = MorphoEnv(0, "cuda:0", DeviceData(task).on("cuda:0"), 10, config=EnvConfig(width=8), amp=amp)
    env.reset(1)
    env.begin_epoch()
    env.train_batch(0)  # lazy initialisations (scaler scale, optimizer state) happen here
    env.end_epoch()
    env.apply(Action("GERMINATE", "mid", "conv_light", "linear"))
    env.begin_epoch()
    env.train_batch(0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i in range(1, 6):
            env.train_batch(i)  # host, seed and shadow steps, finite check, scaler update
    finally:
        torch.cuda.set_sync_debug_mode("default")
    env.queue_eval()
    rec = env.finish_epoch()
    assert rec["skipped_steps"] == 0 or amp == "fp16"  # fp16 may skip an overflow step
    assert env.params_finite()


@needs_two
def test_cli_maps_envs_to_two_gpus(tmp_path):
    cmd = [
        sys.executable, "-m", "esper_multigpu", "train", "ppo", "--devices", "cuda:0", "cuda:1",
        "--n-envs", "4", "--episodes", "4", "--max-epochs", "3", "--amp", "bf16",
        "--telemetry-dir", str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    print(proc.stderr)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["assignment"] == {"cuda:0": 2, "cuda:1": 2}
    assert out["amp_effective"] == {"cuda:0": "bf16", "cuda:1": "bf16"}
    assert "4 env(s) -> devices: cuda:0: 2, cuda:1: 2" in proc.stderr
    devices = {
        json.loads(line)["device"] for line in open(tmp_path / "ppo.jsonl") if '"type":"epoch"' in line
    }
    assert devices == {"cuda:0", "cuda:1"}
