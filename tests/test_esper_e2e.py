"""End-to-end: the `esper` CLI as a user runs it (the issue's "Done when" commands), offline, on CPU."""

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("esper_multigpu")

from esper_multigpu.telemetry import validate_file  # noqa: E402


def esper(*args, cwd, timeout=300):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "esper_multigpu", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def lifecycle(path):
    return [r for r in map(json.loads, open(path)) if r["type"] == "lifecycle"]


def test_ppo_one_episode_on_cpu_with_three_slots(tmp_path):
    proc = esper(
        "train",
        "ppo",
        "--devices",
        "cpu",
        "--episodes",
        "1",
        "--max-epochs",
        "10",
        "--slots",
        "early",
        "mid",
        "late",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["mode"] == "ppo" and out["episodes"] == 1 and out["assignment"] == {"cpu": 1}
    assert "1 env(s) -> devices: cpu: 1" in proc.stderr and "batch 1/1" in proc.stderr
    tel = tmp_path / "esper-telemetry" / "ppo.jsonl"
    n, errors = validate_file(tel)
    assert errors == [] and n == sum(out["telemetry_records"].values())
    assert out["telemetry_records"]["slot"] == 10 * 3
    assert out["batches"][0]["mean_final_val_acc"] > 0.5  # digits: it learns something real


def test_heuristic_grows_seeds_in_several_slots(tmp_path):
    proc = esper("train", "heuristic", "--slots", "early", "mid", "late", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["mode"] == "heuristic" and out["max_epochs"] == 25
    tel = tmp_path / "esper-telemetry" / "heuristic.jsonl"
    assert validate_file(tel)[1] == []
    germinated = {r["slot"] for r in lifecycle(tel) if r["event"] == "germinated"}
    assert len(germinated) > 1, germinated
    assert out["batches"][0]["mean_final_val_acc"] > 0.8


@pytest.mark.skipif(torch.cuda.device_count() >= 2, reason="this machine has two GPUs")
def test_two_gpus_requested_without_them_exits_2(tmp_path):
    proc = esper("train", "ppo", "--devices", "cuda:0", "cuda:1", cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("esper: error: requested cuda:")
    visible = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    assert f"visible devices: {', '.join(visible)}" in proc.stderr
    assert proc.stdout == "" and not (tmp_path / "esper-telemetry").exists()


def test_telemetry_validate_command_and_help(tmp_path):
    proc = esper("--help", cwd=tmp_path, timeout=60)
    assert proc.returncode == 0 and "examples:" in proc.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"schema": "esper.telemetry/0", "type": "run"}\n')
    proc = esper("telemetry", "validate", str(bad), cwd=tmp_path, timeout=60)
    assert proc.returncode == 1 and "expected 'esper.telemetry/1'" in proc.stderr


@pytest.mark.slow
def test_no_arguments_runs_the_default_job(tmp_path):
    proc = esper(cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert (
        out["mode"] == "ppo"
        and out["episodes"] == 2
        and out["n_envs"] == 2
        and out["max_epochs"] == 12
    )
    assert validate_file(tmp_path / "esper-telemetry" / "ppo.jsonl")[1] == []
