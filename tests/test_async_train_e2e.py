"""End-to-end: the `agent-train` console script as a user runs it (subprocesses, real files)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent / "agent-train"


def agent_train(*args: str, cwd: Path, timeout: float = 170) -> subprocess.CompletedProcess:
    cmd = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "agent_async_train.cli"]
    return subprocess.run([*cmd, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_train_async_then_evaluate_scores_above_random(tmp_path):
    # The acceptance run: 4 agents, a small number of epochs, well under two minutes.
    res = agent_train(
        "run",
        "gemgrid",
        "--agents",
        "4",
        "--epochs",
        "8",
        "--async-learning",
        "--parallel-actions",
        "--out",
        "run",
        cwd=tmp_path,
        timeout=300,  # ~30 s on an idle 2-core machine; generous for a shared CI runner
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["greedy_score"] > summary["random_score"] + 2.0, summary
    assert (
        "training" in res.stderr and "final greedy score" in res.stderr
    )  # progress + summary on stderr
    run_dir = tmp_path / "run"
    assert (run_dir / "metrics.csv").read_text().count("\n") == 9
    assert any((run_dir / "tensorboard").iterdir())

    ev = agent_train(
        "evaluate", str(run_dir / "checkpoint.pt"), "--episodes", "10", "--quiet", cwd=tmp_path
    )
    assert ev.returncode == 0, ev.stderr
    result = json.loads(ev.stdout)
    assert result["epoch"] == 8 and result["greedy_score"] > result["random_score"] + 2.0


def test_resume_continues_from_the_checkpoint(tmp_path):
    tiny = [
        "game.max_turns=20",
        "run.episodes_per_epoch=2",
        "dqn.learning_starts=20",
        "--no-tensorboard",
        "--quiet",
    ]
    first = agent_train("run", "--epochs", "1", "--out", "r", *tiny, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    second = agent_train(
        "run", "--resume", "r/checkpoint.pt", "--epochs", "2", "--quiet", cwd=tmp_path
    )
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["env_steps"] == 80


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "tetris"], "unknown game"),
        (["run", "parallel.async=true"], "unknown config key"),
        (["evaluate", "missing.pt"], "does not exist"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, args, message):
    res = agent_train(*args, cwd=tmp_path, timeout=60)
    assert res.returncode == 2
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_corrupt_checkpoint_is_refused_and_kept(tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(b"not a checkpoint at all")
    res = agent_train("run", "--resume", str(ckpt), "--epochs", "5", cwd=tmp_path, timeout=60)
    assert res.returncode == 2 and "corrupt" in res.stderr
    assert ckpt.read_bytes() == b"not a checkpoint at all"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


@pytest.mark.slow
def test_no_arguments_runs_the_default_job(tmp_path):
    # 10,000 steps: ~10 s on an idle 2-core machine, minutes when the runner is shared
    res = agent_train(cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["agents"] == 4 and summary["greedy_score"] > summary["random_score"]
    assert Path(tmp_path / summary["run_dir"], "checkpoint.pt").is_file()


def test_sorrel_treasurehunt_trains_evaluates_and_records(tmp_path):
    pytest.importorskip("sorrel")
    opts = "game.options={world: {height: 9, width: 9}, experiment: {max_turns: 10}}"
    res = agent_train(
        "run", "sorrel:treasurehunt", opts, "--epochs", "1", "run.episodes_per_epoch=2",
        "run.eval_episodes=1", "parallel.env_workers=2", "--async-learning", "--out", "th",
        "--no-tensorboard", cwd=tmp_path, timeout=300,
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["model"] == "iRainbowModel" and summary["episodes"] == 2
    assert "sorrel treasurehunt reward" in res.stderr
    ev = agent_train(
        "evaluate", "th/checkpoint.pt", "--episodes", "1", "--record", "ep.gif", "--quiet",
        cwd=tmp_path, timeout=300,
    )
    assert ev.returncode == 0, ev.stderr
    assert (tmp_path / "ep.gif").read_bytes()[:3] == b"GIF"


def test_benchmark_quick_writes_the_modes_json(tmp_path):
    bench = Path(__file__).resolve().parents[1] / "tools" / "bench_async_train.py"
    out = tmp_path / "sub" / "bench.json"
    res = subprocess.run(
        [sys.executable, str(bench), "--quick", "--output", str(out), "--quiet"],
        capture_output=True, text=True, timeout=600,
    )
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    modes = {m["mode"]: m for m in report["modes"]}
    assert set(modes) == {"sequential", "batched_acting", "batched_training", "async", "all"}
    assert modes["sequential"]["speedup_vs_sequential"] == 1.0
    assert all(m["env_steps_per_s"] > 0 and m["updates_per_agent"] > 0 for m in modes.values())
    # every mode did the same budget and the same number of updates
    assert len({(m["env_steps"], m["updates_per_agent"]) for m in modes.values()}) == 1
    # learning is reported next to speed: final greedy score per mode over the seeds
    learning = report["learning"]
    assert learning["all_at_least_as_good_as"] == "sequential"
    assert learning["all_at_least_as_good"] is None  # one seed: no interval, undecided
    assert all(len(learning[m]["per_seed"]) == 1 for m in modes)
    assert learning["random_per_seed"] == [modes["all"]["random_score_median"]]


def test_benchmark_learning_verdict_is_a_paired_non_inferiority_test():
    spec = importlib.util.spec_from_file_location(
        "bench_async_train", Path(__file__).resolve().parents[1] / "tools" / "bench_async_train.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    d = bench.paired_difference([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 5.0, 5.0])  # differences 1, 0, 2, 1
    assert d["per_seed"] == [1.0, 0.0, 2.0, 1.0] and d["mean"] == 1.0
    half = 3.182 * (2 / 3) ** 0.5 / 2  # t(0.975, 3) x std / sqrt(n)
    assert d["ci95"] == pytest.approx([1.0 - half, 1.0 + half])
    random = [0.0, 0.0, 0.0, 0.0]
    ref = [10.0, 11.0, 9.0, 10.0]  # learns: gain 10, margin 2.5
    close = [9.5, 11.0, 9.0, 9.5]  # worse by 0 to 0.5 on every seed: within the margin
    poor = [5.0, 6.0, 4.0, 5.0]  # keeps only half of the gain
    v = bench.learning_verdict({"upstream": ref, "close": close, "poor": poor}, random, "upstream", 0.25)
    assert v["reference_beats_random"] and v["margin"] == pytest.approx(2.5)
    assert v["vs_reference"]["close"]["non_inferior"] is True
    assert v["vs_reference"]["poor"]["non_inferior"] is False
    flat = bench.learning_verdict({"upstream": random, "all": ref}, [1.0, -1.0, 1.0, -1.0], "upstream", 0.25)
    assert not flat["reference_beats_random"]  # nothing learnt to compare against: undecided
    assert flat["vs_reference"]["all"]["non_inferior"] is None
