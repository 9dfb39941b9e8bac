"""CUDA smoke tests (marker ``cuda``; ``nox -s tests-cuda``). They skip cleanly without a GPU."""

import json
import math
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.cuda

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
needs_two = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2+ CUDA devices")


@needs_cuda
@pytest.mark.parametrize("amp", ["off", "bf16", "fp16"])
def test_tiny_ppo_on_cuda0(tiny_config, amp, tmp_path):
    from esper_multigpu.telemetry import validate_file
    from esper_multigpu.train import run_training

    cfg = tiny_config(
        devices=["cuda:0"],
        amp=amp,
        n_envs=2,
        episodes=2,
        max_epochs=5,
        task="digits",
        env={"width": 16, "batch_size": 64},
        telemetry_dir=str(tmp_path),
    )
    lines = []
    summary, trainer = run_training(cfg, log=lines.append)
    print("\n".join(lines))
    print(json.dumps(summary["batches"]))
    # the sink rejects non-finite numbers, so a valid file means finite losses and telemetry
    assert validate_file(tmp_path / "ppo.jsonl")[1] == []
    recs = [json.loads(line) for line in open(tmp_path / "ppo.jsonl")]
    assert {r["device"] for r in recs if r["type"] == "epoch"} == {"cuda:0"}
    # seeds were germinated and trained under this AMP mode (per-slot optimizers + scaler)
    assert any(r["type"] == "lifecycle" and r["event"] == "germinated" for r in recs)
    for env in trainer.envs:
        assert env.amp == amp and env.stream is not None
        assert all(p.device.type == "cuda" for p in env.model.parameters())
        assert env.params_finite()
        assert (env.scaler is not None) == (amp == "fp16")
        assert math.isfinite(env.signals.train_loss) and math.isfinite(env.signals.val_loss)
    assert all(
        p.device.type == "cuda" and torch.isfinite(p).all() for p in trainer.agent.net.parameters()
    )
    assert all(math.isfinite(b["mean_return"]) for b in summary["batches"])
    assert summary["batches"][-1]["mean_final_val_acc"] > 0.5


@needs_two
def test_cli_maps_envs_to_two_gpus(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "esper_multigpu",
        "train",
        "ppo",
        "--devices",
        "cuda:0",
        "cuda:1",
        "--n-envs",
        "4",
        "--episodes",
        "4",
        "--max-epochs",
        "3",
        "--quiet",
        "--telemetry-dir",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    print(proc.stderr)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["assignment"] == {"cuda:0": 2, "cuda:1": 2}
    assert "4 env(s) -> devices: cuda:0: 2, cuda:1: 2" in proc.stderr
    devices = {
        json.loads(line)["device"]
        for line in open(tmp_path / "ppo.jsonl")
        if '"type":"epoch"' in line
    }
    assert devices == {"cuda:0", "cuda:1"}
